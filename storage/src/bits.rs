//! Bit-level writer and reader for the chunk codec (most significant bit first).

use crate::{Result, StorageError};

/// Appends bit fields to a byte vector.
#[derive(Debug, Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Pending bits, left-aligned; `used < 64` always.
    acc: u64,
    used: u32,
}

impl BitWriter {
    /// A writer that appends after the bytes already in `buf`.
    pub fn new(buf: Vec<u8>) -> Self {
        Self {
            buf,
            acc: 0,
            used: 0,
        }
    }

    /// Writes the low `n` bits of `v` (`n` ≤ 64).
    #[inline]
    pub fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let free = 64 - self.used;
        if n < free {
            self.acc |= v << (free - n);
            self.used += n;
        } else {
            let spill = n - free;
            self.acc |= v >> spill;
            self.buf.extend_from_slice(&self.acc.to_be_bytes());
            self.acc = if spill == 0 { 0 } else { v << (64 - spill) };
            self.used = spill;
        }
    }

    /// Flushes the last partial byte (zero-padded) and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let bytes = self.used.div_ceil(8) as usize;
        self.buf.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
        self.buf
    }
}

/// Reads bit fields written by [`BitWriter`]; reading past the end is an error, never a panic.
#[derive(Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    next: usize,
    /// Unread bits, left-aligned; bits past `avail` are either the stream's next bits or zero.
    buf: u64,
    avail: u32,
}

fn truncated() -> StorageError {
    StorageError::Corrupt {
        what: "chunk",
        detail: "bit stream ends early".into(),
    }
}

impl<'a> BitReader<'a> {
    /// A reader over `data`, starting at its first bit.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Tops `buf` up to at least 57 bits while data remains.
    #[inline]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.next..self.next + 8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            self.buf |= u64::from_be_bytes(a) >> self.avail;
            let bytes = (63 - self.avail) / 8;
            self.next += bytes as usize;
            self.avail += bytes * 8;
        } else {
            while self.avail <= 56 {
                let Some(&b) = self.data.get(self.next) else {
                    break;
                };
                self.buf |= u64::from(b) << (56 - self.avail);
                self.next += 1;
                self.avail += 8;
            }
        }
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.avail -= n;
    }

    /// Reads `n` bits (`n` ≤ 56).
    #[inline]
    pub fn read(&mut self, n: u32) -> Result<u64> {
        debug_assert!(n <= 56);
        if n == 0 {
            return Ok(0);
        }
        if self.avail < n {
            self.refill();
            if self.avail < n {
                return Err(truncated());
            }
        }
        let v = self.buf >> (64 - n);
        self.consume(n);
        Ok(v)
    }

    /// Reads `n` bits (`n` ≤ 64).
    #[inline]
    pub fn read_wide(&mut self, n: u32) -> Result<u64> {
        if n <= 56 {
            return self.read(n);
        }
        let hi = self.read(n - 32)?;
        let lo = self.read(32)?;
        Ok((hi << 32) | lo)
    }

    /// The next bits, left-aligned, with at least `n` (≤ 57) of them loaded if the stream has
    /// them; bits past the stream's end read as zero, so [`skip`](Self::skip) must confirm
    /// what a decision on them consumes.
    #[inline]
    pub fn peek(&mut self, n: u32) -> u64 {
        if self.avail < n {
            self.refill();
        }
        self.buf
    }

    /// Consumes `n` (≤ 57) bits after a [`peek`](Self::peek) of at least `n`.
    #[inline]
    pub fn skip(&mut self, n: u32) -> Result<()> {
        if n > self.avail {
            return Err(truncated());
        }
        self.consume(n);
        Ok(())
    }

    /// Counts (and consumes) up to `max` (≤ 8) leading one bits and the zero that ends them.
    #[inline]
    pub fn ones(&mut self, max: u32) -> Result<u32> {
        if self.avail <= max {
            self.refill();
        }
        let n = self.buf.leading_ones().min(max);
        let consumed = if n < max { n + 1 } else { n };
        if consumed > self.avail {
            return Err(truncated());
        }
        self.consume(consumed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fields_round_trip(fields in prop::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::default();
            for &(v, n) in &fields {
                w.write(v, n);
            }
            let bytes = w.finish();
            let total: u32 = fields.iter().map(|f| f.1).sum();
            prop_assert_eq!(bytes.len(), total.div_ceil(8) as usize);
            let mut r = BitReader::new(&bytes);
            for &(v, n) in &fields {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read_wide(n).expect("in range"), v & mask);
            }
        }
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let mut w = BitWriter::default();
        w.write(0b101, 3);
        let bytes = w.finish();
        assert_eq!(bytes, [0b1010_0000]);
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.ones(4).expect("ones"), 1);
        assert_eq!(r.read(6).expect("padding"), 0b100000);
        assert!(r.read(1).is_err());
        assert!(BitReader::new(&[]).ones(4).is_err());
        assert!(BitReader::new(&[0xff]).read_wide(64).is_err());
    }
}
