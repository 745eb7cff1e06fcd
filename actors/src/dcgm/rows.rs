//! Reading a whole DCGM CSV: each record becomes a parsed row or a rejection with its line and
//! reason — unreadable records and records over [`MAX_CSV_LINE_BYTES`](super::MAX_CSV_LINE_BYTES)
//! included — so every reader (streamer, ingest, bench) counts rejects the same way.

use std::collections::VecDeque;
use std::io::Read;

use telemetry_storage::GpuInfo;

use super::csv::{open_reader, HeaderError, Row, RowError, RowParser};
use super::lines::LineLimit;

/// A record that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Line of the record in the input (1 = the header).
    pub line: u64,
    /// Short reason label (`bad_value`, `line_too_long`, `unreadable_row`, …).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

impl RowError {
    /// This error as the rejection of the record on `line`.
    pub fn at(self, line: u64) -> Rejected {
        Rejected {
            line,
            reason: self.reason,
            detail: self.detail,
        }
    }
}

/// The records of a DCGM CSV, one at a time.
#[derive(Debug)]
pub struct CsvRows<R> {
    rdr: csv::Reader<LineLimit<R>>,
    parser: RowParser,
    rec: csv::StringRecord,
    overlong: VecDeque<u64>,
    /// Dropped over-long lines the CSV parser has not passed yet (see [`CsvRows::physical`]).
    unshifted: VecDeque<u64>,
    done: bool,
}

impl<R: Read> CsvRows<R> {
    /// Reads and validates the header; the error says which required columns are missing.
    pub fn open(input: R) -> Result<Self, HeaderError> {
        let (rdr, cols) = open_reader(input)?;
        Ok(Self {
            rdr,
            parser: RowParser::new(cols),
            rec: csv::StringRecord::new(),
            overlong: VecDeque::new(),
            unshifted: VecDeque::new(),
            done: false,
        })
    }

    /// The next record: a row with its GPU and line, or why it was skipped; `None` at the end
    /// (or after a read error of the input, which is reported once as `unreadable_row`).
    #[allow(clippy::should_implement_trait)] // rows borrow the reader, so this is no Iterator
    pub fn next(&mut self) -> Option<Result<(Row<'_>, &GpuInfo, u64), Rejected>> {
        if let Some(line) = self.take_overlong() {
            return Some(Err(line));
        }
        if self.done {
            return None;
        }
        let before = self.rdr.position().line();
        let read = self.rdr.read_record(&mut self.rec);
        if self.rdr.get_ref().has_overlong() {
            let dropped = self.rdr.get_mut().take_overlong();
            self.unshifted.extend(&dropped);
            self.overlong.extend(dropped);
        }
        match read {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return self.take_overlong().map(Err);
            }
            Err(e) => {
                self.done = e.is_io_error();
                let line = self.physical(e.position().map_or(before, |p| p.line()));
                return Some(Err(Rejected {
                    line,
                    reason: "unreadable_row",
                    detail: e.to_string(),
                }));
            }
        }
        let line = self.physical(self.rec.position().map_or(before, |p| p.line()));
        Some(match self.parser.parse(&self.rec) {
            Ok((row, gpu)) => Ok((row, gpu, line)),
            Err(e) => Err(e.at(line)),
        })
    }

    /// The input line a record starts on. The CSV parser places a record on the line after the
    /// previous one, not counting the empty lines it skipped before it (each dropped over-long
    /// line became one), so the record starts after the run of dropped lines beginning there.
    fn physical(&mut self, csv_line: u64) -> u64 {
        while self.unshifted.front().is_some_and(|d| *d < csv_line) {
            self.unshifted.pop_front();
        }
        let mut line = csv_line;
        while self.unshifted.front() == Some(&line) {
            self.unshifted.pop_front();
            line += 1;
        }
        line
    }

    fn take_overlong(&mut self) -> Option<Rejected> {
        self.overlong.pop_front().map(|line| Rejected {
            line,
            reason: "line_too_long",
            detail: format!(
                "record over the length limit of {} bytes",
                super::MAX_CSV_LINE_BYTES
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value\n";

    #[test]
    fn rows_and_rejects_come_with_their_lines() {
        let long = "x".repeat(super::super::MAX_CSV_LINE_BYTES + 10);
        let text = format!(
            "{HEADER}2025-07-18T20:42:34Z,T,0,nvidia0,GPU-1,H100,h,61\n\
             2025-07-18T20:42:34Z,T,0,nvidia0,GPU-1,H100,h,hot\n\
             {long}\n\
             2025-07-18T20:42:35Z,T,0,nvidia0,GPU-1,H100,h,62\n\
             {long}\n\
             {long}\n\
             2025-07-18T20:42:36Z,T,0,nvidia0,GPU-1,H100,h,63\n"
        );
        let mut rows = CsvRows::open(text.as_bytes()).expect("header");
        let mut seen = Vec::new();
        while let Some(r) = rows.next() {
            seen.push(match r {
                Ok((row, gpu, line)) => {
                    (line, format!("{} {} {}", gpu.uuid, row.metric, row.value))
                }
                Err(e) => (e.line, e.reason.to_string()),
            });
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                (2, "GPU-1 T 61".to_string()),
                (3, "bad_value".to_string()),
                (4, "line_too_long".to_string()),
                (5, "GPU-1 T 62".to_string()),
                (6, "line_too_long".to_string()),
                (7, "line_too_long".to_string()),
                (8, "GPU-1 T 63".to_string()),
            ]
        );
        assert!(CsvRows::open("a,b\n1,2\n".as_bytes()).is_err());
    }
}
