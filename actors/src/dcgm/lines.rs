//! A reader that bounds how long one CSV record may be, so a file without newlines (or with a
//! stray quote that would make the rest of the file one field) cannot make the CSV parser
//! buffer without limit.
//!
//! Records are passed on whole or not at all: a record longer than the limit is replaced by an
//! empty line (which the CSV parser skips, so line numbers stay right) and reported through
//! [`LineLimit::take_overlong`]. Quotes are followed per physical line, so a newline inside a
//! quoted field does not end the record; when an over-long record is dropped, reading resumes
//! at the next physical line, so a stray quote costs one line rather than the rest of the file.

use std::io::{self, Read};

/// Longest CSV record accepted, in bytes (a DCGM row is about 460 bytes).
pub const MAX_CSV_LINE_BYTES: usize = 64 << 10;
/// Capacity of the reader's buffer: several records at the limit.
const BUFFER_BYTES: usize = 4 * MAX_CSV_LINE_BYTES;

/// Wraps `R`, passing on records of at most `max` bytes (newline excluded).
pub struct LineLimit<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    skipping: bool,
    /// Bytes at the front of the buffer known to be whole records within the limit; a record
    /// can be handed out in pieces, and only its start may be scanned for quotes.
    validated: usize,
    max: usize,
    /// Physical lines passed on or dropped so far (the number of the next one, from 0).
    lines: u64,
    overlong: Vec<u64>,
}

impl<R> std::fmt::Debug for LineLimit<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineLimit")
            .field("max", &self.max)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl<R: Read> LineLimit<R> {
    /// Records up to [`MAX_CSV_LINE_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_CSV_LINE_BYTES)
    }

    /// Records up to `max` bytes.
    pub fn with_max(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: vec![0; (max + 1).max(BUFFER_BYTES)].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            skipping: false,
            validated: 0,
            max,
            lines: 0,
            overlong: Vec::new(),
        }
    }

    /// 1-based numbers of the physical lines dropped as over-long since the last call (the
    /// first line of the file is 1).
    pub fn take_overlong(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.overlong)
    }

    /// Whether any dropped line waits in [`LineLimit::take_overlong`].
    pub fn has_overlong(&self) -> bool {
        !self.overlong.is_empty()
    }

    /// Reads more into the buffer; false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Ok(true);
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Bytes at the front of the buffer that make whole records within the limit (stopping
    /// once `want` is reached), and whether the record after them is known to be over-long.
    fn whole_records(&self, want: usize) -> (usize, bool) {
        let avail = &self.buf[self.start..self.end];
        let (mut done, mut pos, mut in_quotes) = (0, 0, false);
        while let Some(i) = memchr::memchr(b'\n', &avail[pos..]) {
            let line = &avail[pos..pos + i];
            if memchr::memchr_iter(b'"', line).count() % 2 == 1 {
                in_quotes = !in_quotes;
            }
            pos += i + 1;
            if pos - done - 1 > self.max {
                return (done, true);
            }
            if !in_quotes {
                done = pos;
                if done >= want {
                    break;
                }
            }
        }
        if done == 0 && avail.len() - done > self.max {
            return (0, true);
        }
        if done == 0 && self.eof {
            // The last record of a file without a final newline.
            return (avail.len(), false);
        }
        (done, false)
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.fill()? {
                return Ok(0);
            }
            if self.skipping {
                match memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                    Some(i) => {
                        self.start += i + 1;
                        self.skipping = false;
                        out[0] = b'\n';
                        return Ok(1);
                    }
                    None => {
                        self.start = self.end;
                        continue;
                    }
                }
            }
            let (ready, overlong) = match self.validated {
                0 => self.whole_records(out.len()),
                v => (v, false),
            };
            if ready > 0 {
                let n = ready.min(out.len());
                self.validated = ready - n;
                let chunk = &self.buf[self.start..self.start + n];
                out[..n].copy_from_slice(chunk);
                self.lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
                self.start += n;
                return Ok(n);
            }
            if overlong {
                self.lines += 1;
                self.overlong.push(self.lines);
                self.skipping = true;
                continue;
            }
            if !self.fill()? && self.start == self.end {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything through a limit of `max` with reads of `chunk` bytes.
    fn through(input: &str, max: usize, chunk: usize) -> (String, Vec<u64>) {
        let mut r = LineLimit::with_max(input.as_bytes(), max);
        let (mut out, mut buf) = (Vec::new(), vec![0; chunk]);
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (String::from_utf8(out).expect("utf-8"), r.take_overlong())
    }

    #[test]
    fn drops_only_the_long_records() {
        let cases: &[(&str, &str, &[u64])] = &[
            ("ab\ncd\n", "ab\ncd\n", &[]),
            ("ab\ncd", "ab\ncd", &[]),
            ("ab\n0123456789\ncd\n", "ab\n\ncd\n", &[2]),
            ("0123456789", "", &[1]),
            ("0123456789\n", "\n", &[1]),
            ("abcdefgh\n", "abcdefgh\n", &[]),
            ("abcdefghi\nx\n", "\nx\n", &[1]),
            // A quoted newline keeps the record going; within the limit it passes whole.
            ("\"a\nb\"\nc\n", "\"a\nb\"\nc\n", &[]),
            // A stray quote would swallow the rest: the line is dropped, reading resumes.
            ("\"abc\nd\nefgh\nij\n", "\nd\nefgh\nij\n", &[1]),
        ];
        for (input, want, dropped) in cases {
            for chunk in [1, 3, 64] {
                let (got, over) = through(input, 8, chunk);
                assert_eq!(&got, want, "{input:?} chunk {chunk}");
                assert_eq!(&over, dropped, "{input:?} chunk {chunk}");
            }
        }
    }

    proptest::proptest! {
        /// Records within the limit pass unchanged whatever the read sizes, quoted fields with
        /// doubled quotes and newlines included; anything else is dropped only as whole lines.
        #[test]
        fn records_within_the_limit_pass_unchanged(
            records in proptest::collection::vec(
                proptest::collection::vec("[a-z0-9]{0,6}|\"([a-z,\n]|\"\"){0,6}\"", 1..4), 0..40),
            chunk in 1usize..700,
        ) {
            let text: String = records.iter().map(|r| r.join(",") + "\n").collect();
            let max = records.iter().map(|r| r.join(",").len()).max().unwrap_or(0);
            let (got, over) = through(&text, max, chunk);
            proptest::prop_assert_eq!(got, text);
            proptest::prop_assert!(over.is_empty());
        }
    }

    #[test]
    fn a_file_without_newlines_is_read_in_bounded_memory() {
        let big = "x".repeat(3 * BUFFER_BYTES);
        let input = format!("a,b\n{big}\nc,d\n");
        let (got, over) = through(&input, MAX_CSV_LINE_BYTES, 8192);
        assert_eq!(got, "a,b\n\nc,d\n");
        assert_eq!(over, vec![2]);
    }
}
