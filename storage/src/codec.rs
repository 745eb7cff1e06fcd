//! The chunk codec: one series' samples of one bucket, compressed.
//!
//! Layout: `format u8 | coding u8 | level u8 | count varint | first ts zigzag varint |
//! span varint | bits`. The bit stream holds the first value, then per sample a timestamp as a
//! delta-of-delta (Gorilla's classes, widened for milliseconds) and a value, coded one of two ways:
//!
//! - **scaled integers** (`coding = 1 + d`): every value is an integer after multiplying by `10^d`
//!   (DCGM reports integers and fixed-decimal floats), stored as zigzag deltas with a reusable
//!   bit width. Decoding divides by `10^d`, which gives back the exact `f64`: the encoder checks
//!   that round trip for every value and falls back otherwise.
//! - **XOR** (`coding = 0`, Gorilla): each value's bits XOR the previous one's, with a reusable
//!   window of meaningful bits. Works for any `f64` (NaN, infinities, -0.0).
//!
//! The encoder tries both when the values allow scaling and keeps the shorter.

use crate::bits::{BitReader, BitWriter};
use crate::{Result, StorageError, Timestamp};

/// A sample of one series: time and value.
pub type Sample = (Timestamp, f64);

/// Version byte of the chunk format.
pub const CHUNK_FORMAT: u8 = 1;
/// Level of a sealed chunk: the whole bucket in one chunk (levels below are tiered parts).
pub const LEVEL_SEALED: u8 = u8::MAX;
/// Most decimals the scaled-integer coding tries.
pub const MAX_DECIMALS: u8 = 9;
/// Largest sample count a chunk header may claim (a corrupt count is refused, not allocated).
pub const MAX_CHUNK_SAMPLES: u32 = 1 << 26;

const POW10: [f64; MAX_DECIMALS as usize + 1] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Integers beyond this are not exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// How a chunk's values are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Gorilla XOR of the IEEE bits.
    Xor,
    /// Integers after scaling by `10^d`, delta coded.
    Scaled(u8),
}

/// What the fixed part of a chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Samples in the chunk (at least one).
    pub count: u32,
    /// Time of the first sample.
    pub first: Timestamp,
    /// Time of the last sample.
    pub last: Timestamp,
    /// Tier level: 0 for a checkpoint's part, [`LEVEL_SEALED`] for a sealed bucket.
    pub level: u8,
    /// Value coding.
    pub coding: Coding,
    body: usize,
}

fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what: "chunk",
        detail: detail.into(),
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| corrupt("header ends early"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

fn scaled(v: f64, d: u8) -> Option<i64> {
    let p = POW10[usize::from(d)];
    let r = (v * p).round();
    // Also refuses NaN, whose comparisons are all false.
    if r.is_nan() || r.abs() > MAX_EXACT {
        return None;
    }
    let i = r as i64;
    (unscaled(i, d).to_bits() == v.to_bits()).then_some(i)
}

#[inline]
fn unscaled(i: i64, d: u8) -> f64 {
    if d == 0 {
        i as f64
    } else {
        i as f64 / POW10[usize::from(d)]
    }
}

/// The fewest decimals that represent every value exactly, if any do.
pub fn decimals(samples: &[Sample]) -> Option<u8> {
    let mut d = 0u8;
    for &(_, v) in samples {
        while scaled(v, d).is_none() {
            d += 1;
            if d > MAX_DECIMALS {
                return None;
            }
        }
    }
    Some(d)
}

/// Encodes samples (non-empty, strictly increasing in time) with the shorter of the two codings.
pub fn encode(samples: &[Sample], level: u8) -> Vec<u8> {
    let xor = encode_with(samples, level, Coding::Xor);
    match decimals(samples).and_then(|d| encode_with(samples, level, Coding::Scaled(d))) {
        Some(s) if xor.as_ref().is_none_or(|x| s.len() <= x.len()) => s,
        _ => xor.unwrap_or_default(),
    }
}

/// Encodes with one coding; `None` when `samples` is empty or the values do not fit the coding.
pub fn encode_with(samples: &[Sample], level: u8, coding: Coding) -> Option<Vec<u8>> {
    let (&(first, v0), rest) = samples.split_first()?;
    let last = samples.last().map_or(first, |s| s.0);
    let mut head = Vec::with_capacity(16 + samples.len());
    head.push(CHUNK_FORMAT);
    head.push(match coding {
        Coding::Xor => 0,
        Coding::Scaled(d) => 1 + d,
    });
    head.push(level);
    put_varint(&mut head, samples.len() as u64);
    put_varint(&mut head, zigzag(first));
    put_varint(&mut head, last.wrapping_sub(first) as u64);
    let mut w = BitWriter::new(head);
    let mut ts = TsEncoder::new(first);
    match coding {
        Coding::Xor => {
            let mut enc = XorEncoder::new(v0, &mut w);
            for &(t, v) in rest {
                ts.put(t, &mut w);
                enc.put(v, &mut w);
            }
        }
        Coding::Scaled(d) => {
            let mut enc = IntEncoder::default();
            enc.put(scaled(v0, d)?, &mut w);
            for &(t, v) in rest {
                ts.put(t, &mut w);
                enc.put(scaled(v, d)?, &mut w);
            }
        }
    }
    Some(w.finish())
}

struct TsEncoder {
    prev: i64,
    delta: i64,
}

impl TsEncoder {
    fn new(first: i64) -> Self {
        Self {
            prev: first,
            delta: 0,
        }
    }

    #[inline]
    fn put(&mut self, t: i64, w: &mut BitWriter) {
        let delta = t.wrapping_sub(self.prev);
        let zz = zigzag(delta.wrapping_sub(self.delta));
        match zz {
            0 => w.write(0, 1),
            z if z < 1 << 7 => w.write((0b10 << 7) | z, 9),
            z if z < 1 << 9 => w.write((0b110 << 9) | z, 12),
            z if z < 1 << 12 => w.write((0b1110 << 12) | z, 16),
            z => {
                w.write(0b1111, 4);
                w.write(z, 64);
            }
        }
        self.prev = t;
        self.delta = delta;
    }
}

struct XorEncoder {
    prev: u64,
    /// Leading and trailing zeros of the reusable window; `None` before the first window.
    window: Option<(u32, u32)>,
}

impl XorEncoder {
    fn new(v0: f64, w: &mut BitWriter) -> Self {
        w.write(v0.to_bits(), 64);
        Self {
            prev: v0.to_bits(),
            window: None,
        }
    }

    #[inline]
    fn put(&mut self, v: f64, w: &mut BitWriter) {
        let bits = v.to_bits();
        let x = bits ^ self.prev;
        self.prev = bits;
        if x == 0 {
            w.write(0, 1);
            return;
        }
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match self.window {
            Some((pl, pt)) if lead >= pl && trail >= pt => {
                w.write(0b10, 2);
                w.write(x >> pt, 64 - pl - pt);
            }
            _ => {
                let len = 64 - lead - trail;
                w.write(
                    (0b11 << 11) | (u64::from(lead) << 6) | u64::from(len - 1),
                    13,
                );
                w.write(x >> trail, len);
                self.window = Some((lead, trail));
            }
        }
    }
}

#[derive(Default)]
struct IntEncoder {
    prev: i64,
    width: u32,
}

impl IntEncoder {
    #[inline]
    fn put(&mut self, v: i64, w: &mut BitWriter) {
        let zz = zigzag(v.wrapping_sub(self.prev));
        self.prev = v;
        if zz == 0 {
            w.write(0, 1);
            return;
        }
        let need = 64 - zz.leading_zeros();
        if self.width > 0 && need <= self.width && need + 8 > self.width {
            w.write(0b10, 2);
            w.write(zz, self.width);
        } else {
            w.write((0b11 << 6) | u64::from(need - 1), 8);
            w.write(zz, need);
            self.width = need;
        }
    }
}

/// Reads a chunk's header.
pub fn header(bytes: &[u8]) -> Result<ChunkHeader> {
    let [format, coding, level, ..] = *bytes else {
        return Err(corrupt("shorter than its header"));
    };
    if format != CHUNK_FORMAT {
        return Err(corrupt(format!("unknown format {format}")));
    }
    let coding = match coding {
        0 => Coding::Xor,
        c if c - 1 <= MAX_DECIMALS => Coding::Scaled(c - 1),
        c => return Err(corrupt(format!("unknown coding {c}"))),
    };
    let mut pos = 3;
    let count = get_varint(bytes, &mut pos)?;
    if count == 0 || count > u64::from(MAX_CHUNK_SAMPLES) {
        return Err(corrupt(format!("sample count {count}")));
    }
    let first = unzigzag(get_varint(bytes, &mut pos)?);
    let span = get_varint(bytes, &mut pos)?;
    let last = first
        .checked_add_unsigned(span)
        .ok_or_else(|| corrupt("span overflows"))?;
    Ok(ChunkHeader {
        count: count as u32,
        first,
        last,
        level,
        coding,
        body: pos,
    })
}

/// Delta-of-delta timestamps: each must be later than the one before.
struct TimeDecoder {
    ts: Timestamp,
    delta: i64,
}

impl TimeDecoder {
    #[inline]
    fn next(&mut self, r: &mut BitReader<'_>) -> Result<Timestamp> {
        // One peek decides the common codes (a regular interval is a single 0 bit): prefix
        // 0, 10 + 7 bits, 110 + 9 bits, 1110 + 12 bits, 1111 + 64 bits.
        let b = r.peek(16);
        let zz = if b >> 63 == 0 {
            r.skip(1)?;
            0
        } else if b >> 62 == 0b10 {
            r.skip(9)?;
            (b >> 55) & 0x7F
        } else if b >> 61 == 0b110 {
            r.skip(12)?;
            (b >> 52) & 0x1FF
        } else if b >> 60 == 0b1110 {
            r.skip(16)?;
            (b >> 48) & 0xFFF
        } else {
            r.skip(4)?;
            r.read_wide(64)?
        };
        self.delta = self.delta.wrapping_add(unzigzag(zz));
        let t = self.ts.wrapping_add(self.delta);
        if self.delta <= 0 || t <= self.ts {
            return Err(corrupt("timestamps not increasing"));
        }
        self.ts = t;
        Ok(t)
    }
}

/// Gorilla XOR values: the bits that changed, in a window reused while it fits.
struct XorDecoder {
    prev: u64,
    lead: u32,
    len: u32,
}

impl XorDecoder {
    fn start(r: &mut BitReader<'_>) -> Result<Self> {
        Ok(Self {
            prev: r.read_wide(64)?,
            lead: 0,
            len: 0,
        })
    }

    #[inline]
    fn next(&mut self, r: &mut BitReader<'_>) -> Result<u64> {
        match r.ones(2)? {
            0 => {}
            1 if self.len > 0 => self.prev ^= r.read_wide(self.len)? << (64 - self.lead - self.len),
            1 => return Err(corrupt("window reused before it was set")),
            _ => {
                let hdr = r.read(11)? as u32;
                self.lead = hdr >> 6;
                self.len = (hdr & 63) + 1;
                if self.lead + self.len > 64 {
                    return Err(corrupt("xor window out of range"));
                }
                self.prev ^= r.read_wide(self.len)? << (64 - self.lead - self.len);
            }
        }
        Ok(self.prev)
    }
}

/// Scaled integers: zigzag deltas in a bit width reused while it fits.
struct IntDecoder {
    prev: i64,
    width: u32,
}

impl IntDecoder {
    #[inline]
    fn next(&mut self, r: &mut BitReader<'_>) -> Result<i64> {
        let b = r.peek(2);
        let zz = if b >> 63 == 0 {
            r.skip(1)?;
            0
        } else if b >> 62 == 0b10 {
            r.skip(2)?;
            if self.width == 0 {
                return Err(corrupt("width reused before it was set"));
            }
            r.read_wide(self.width)?
        } else {
            r.skip(2)?;
            self.width = r.read(6)? as u32 + 1;
            r.read_wide(self.width)?
        };
        self.prev = self.prev.wrapping_add(unzigzag(zz));
        Ok(self.prev)
    }
}

/// Decodes a chunk, appending its samples to `out`; any inconsistency is an error.
pub fn decode_into(bytes: &[u8], out: &mut Vec<Sample>) -> Result<ChunkHeader> {
    decode_window(bytes, Timestamp::MIN, Timestamp::MAX, out)
}

/// Decodes the samples of a chunk inside `[from, end]`, appending them to `out`. A chunk whose
/// header shows no overlap is not decoded, and decoding stops at the first sample after `end`.
pub fn decode_window(
    bytes: &[u8],
    from: Timestamp,
    end: Timestamp,
    out: &mut Vec<Sample>,
) -> Result<ChunkHeader> {
    let h = header(bytes)?;
    if h.last < from || h.first > end {
        return Ok(h);
    }
    let body = bytes.get(h.body..).unwrap_or_default();
    // Every sample after the first takes at least two bits, so a lying count cannot over-allocate.
    let plausible = (body.len() * 4 + 1).min(h.count as usize);
    out.reserve(plausible);
    let mut r = BitReader::new(body);
    let mut times = TimeDecoder {
        ts: h.first,
        delta: 0,
    };
    let mut push = |t: Timestamp, v: f64| {
        if t >= from {
            out.push((t, v));
        }
    };
    let mut complete = true;
    match h.coding {
        Coding::Xor => {
            let mut values = XorDecoder::start(&mut r)?;
            push(h.first, f64::from_bits(values.prev));
            for _ in 1..h.count {
                let t = times.next(&mut r)?;
                if t > end {
                    complete = false;
                    break;
                }
                push(t, f64::from_bits(values.next(&mut r)?));
            }
        }
        Coding::Scaled(d) => {
            let mut values = IntDecoder { prev: 0, width: 0 };
            push(h.first, unscaled(values.next(&mut r)?, d));
            for _ in 1..h.count {
                let t = times.next(&mut r)?;
                if t > end {
                    complete = false;
                    break;
                }
                push(t, unscaled(values.next(&mut r)?, d));
            }
        }
    }
    let ts = times.ts;
    if complete && ts != h.last {
        return Err(corrupt("last timestamp does not match the header"));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[Sample]) -> Vec<u8> {
        let bytes = encode(samples, 3);
        let mut out = Vec::new();
        let h = decode_into(&bytes, &mut out).expect("decodes");
        assert_eq!(h.count as usize, samples.len());
        assert_eq!(h.level, 3);
        assert_eq!(out.len(), samples.len());
        for (a, b) in out.iter().zip(samples) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
        bytes
    }

    fn strictly_increasing(mut ts: Vec<i64>) -> Vec<i64> {
        ts.sort_unstable();
        ts.dedup();
        ts
    }

    proptest! {
        #[test]
        fn any_floats_round_trip(
            ts in prop::collection::vec(-(1i64 << 60)..(1i64 << 60), 1..300),
            bits in prop::collection::vec(any::<u64>(), 300),
        ) {
            let ts = strictly_increasing(ts);
            let samples: Vec<Sample> = ts.iter().zip(&bits).map(|(&t, &b)| (t, f64::from_bits(b))).collect();
            round_trip(&samples);
        }

        #[test]
        fn decimal_values_round_trip(
            start in -(1i64 << 45)..(1i64 << 45),
            steps in prop::collection::vec((1i64..5000, -100_000i64..100_000, 0u8..4), 1..300),
        ) {
            let mut t = start;
            let samples: Vec<Sample> = steps.iter().map(|&(dt, v, d)| {
                t += dt;
                (t, v as f64 / POW10[usize::from(d)])
            }).collect();
            let bytes = round_trip(&samples);
            prop_assert!(matches!(header(&bytes).expect("header").coding, Coding::Scaled(_)));
        }

        #[test]
        fn windowed_decoding_is_a_filter(
            steps in prop::collection::vec((1i64..3000, -50i64..50), 1..200),
            from in 0i64..300_000, len in 0i64..300_000,
        ) {
            let mut t = 0;
            let samples: Vec<Sample> = steps.iter().map(|&(dt, v)| { t += dt; (t, v as f64) }).collect();
            let bytes = encode(&samples, 0);
            let mut out = Vec::new();
            decode_window(&bytes, from, from + len, &mut out).expect("decodes");
            let want: Vec<Sample> = samples.iter().copied().filter(|s| s.0 >= from && s.0 <= from + len).collect();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            let _ = decode_into(&bytes, &mut out);
        }
    }

    #[test]
    fn golden_scaled_chunk() {
        // Expected bytes computed by an independent Python transcription of the format.
        // 1 s scrapes of a temperature: 60, 60, 61, 61 °C.
        let s = [(1000, 60.0), (2000, 60.0), (3000, 61.0), (4000, 61.0)];
        let bytes = encode(&s, LEVEL_SEALED);
        assert_eq!(
            bytes,
            [1, 1, 255, 4, 208, 15, 184, 23, 198, 241, 207, 160, 64, 128]
        );
        assert_eq!(round_trip(&s).len(), 14);
    }

    #[test]
    fn golden_xor_chunk() {
        // Expected bytes computed by an independent Python transcription of the format.
        let s = [(0, 0.1 + 0.2), (1, f64::NAN), (2, -0.0)];
        let bytes = encode(&s, 0);
        assert_eq!(header(&bytes).expect("header").coding, Coding::Xor);
        assert_eq!(
            bytes,
            [
                1, 0, 0, 3, 0, 2, 63, 211, 51, 51, 51, 51, 51, 52, 129, 97, 242, 1, 89, 153, 153,
                153, 153, 153, 172, 6, 127, 252
            ]
        );
    }

    #[test]
    fn fixed_decimals_pick_scaled_coding_and_stay_small() {
        // Power in watts with three decimals (as parsed from text), one sample a second for an hour.
        let samples: Vec<Sample> = (0..3600)
            .map(|i| {
                (
                    1_752_871_354_000 + i * 1000,
                    (250_000 + (i * 7919) % 8000) as f64 / 1000.0,
                )
            })
            .collect();
        let bytes = round_trip(&samples);
        let h = header(&bytes).expect("header");
        assert_eq!(h.coding, Coding::Scaled(3));
        let xor = encode_with(&samples, 0, Coding::Xor).expect("xor");
        assert!(bytes.len() < xor.len(), "{} vs {}", bytes.len(), xor.len());
        // Uniform noise over 8,000 steps needs 13 bits a value, plus the coding and timestamp bits.
        assert!(bytes.len() < 3600 * 5 / 2, "{} bytes", bytes.len());
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let s = [(1000, 60.0), (2000, 61.0)];
        let good = encode(&s, 0);
        let mut out = Vec::new();
        for cut in 0..good.len() - 1 {
            assert!(decode_into(&good[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(decode_into(&bad, &mut out).is_err());
        let mut huge = vec![1, 0, 0];
        put_varint(&mut huge, u64::from(MAX_CHUNK_SAMPLES) + 1);
        assert!(header(&huge).is_err());
    }
}
