//! The durable, segmented, append-only log behind one broker partition (IO only, no actor).
//!
//! A partition directory holds segment files named by the offset of their first record, and a
//! `consumers` file with each consumer's committed offset. A record on disk is
//! `len u32 | crc32 u32 | offset u64 | payload`, little-endian, the CRC covering offset and payload.
//! Records become readable by consumers only once they are durable (fsynced), so a consumer never
//! sees a record that a crash could take back. Whole segments behind the lowest committed offset
//! are deleted, and the active segment is rolled once its consumed part is worth deleting
//! ([`PartitionLog::reclaim`]), so consumed records do not linger on disk: what a partition
//! holds is what is unconsumed plus less than one segment.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::consumers;
use super::record::{encode_record, RECORD_HEADER_BYTES};
use super::recovery::recover_segment;
use super::segment::{io_err, Segment};
use crate::error::{ActorError, Result};
use telemetry_storage::disk::is_out_of_space;

/// Default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;
/// Default bound of a partition's unconsumed bytes (`--partition-max-bytes`): beyond it appends
/// are refused, retryably, until the collector catches up.
pub const DEFAULT_MAX_UNCONSUMED_BYTES: u64 = 256 << 20;

/// Default consumed bytes at the head of the active segment that make it roll, so that they can
/// be deleted once the consumer passes the rest.
pub const DEFAULT_RECLAIM_BYTES: u64 = 256 << 10;

/// Default age after which a fully consumed active segment rolls whatever its size (a slow
/// partition's consumed records are deleted within this time too).
pub const DEFAULT_RECLAIM_AGE: Duration = Duration::from_secs(30);

/// Limits of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Appends are refused (retryably) while this many bytes are not yet consumed.
    pub max_unconsumed_bytes: u64,
    /// A record larger than this is refused permanently (it could never fit a fetch).
    pub max_record_bytes: u64,
    /// The active segment rolls once this many of its bytes are consumed.
    pub reclaim_bytes: u64,
    /// A fully consumed active segment this old rolls whatever its size.
    pub reclaim_age: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_unconsumed_bytes: DEFAULT_MAX_UNCONSUMED_BYTES,
            max_record_bytes: 8 << 20,
            reclaim_bytes: DEFAULT_RECLAIM_BYTES,
            reclaim_age: DEFAULT_RECLAIM_AGE,
        }
    }
}

/// Why an append was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendRefusal {
    /// Too many unconsumed bytes: retry after the consumer catches up.
    Full {
        /// Bytes not yet consumed.
        unconsumed: u64,
        /// The configured bound.
        limit: u64,
    },
    /// The data volume is full (below the free-space reserve, or a write failed with ENOSPC or
    /// EDQUOT): retry once space is freed; nothing was written.
    DiskFull {
        /// What is full, for the producer's log.
        reason: String,
    },
    /// The record is bigger than any record the log accepts: do not retry as is.
    TooLarge {
        /// Size of the refused record.
        bytes: u64,
        /// The configured bound.
        limit: u64,
    },
}

/// One partition's log.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    durable: u64,
    consumers: BTreeMap<String, u64>,
}

fn disk_full(path: &Path, e: &std::io::Error) -> AppendRefusal {
    AppendRefusal::DiskFull {
        reason: format!("{}: {e}", path.display()),
    }
}

impl PartitionLog {
    /// Opens or creates the log in `dir`, validating every record and truncating a torn tail.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let seg = recover_segment(&dir, base, is_last, &config)?;
            if let Some(prev) = segments.last() {
                let prev: &Segment = prev;
                if prev.end_offset() != base {
                    return Err(ActorError::CorruptLog {
                        dir: dir.clone(),
                        offset: prev.end_offset(),
                        detail: format!("gap: next segment starts at offset {base}"),
                    });
                }
            }
            segments.push(seg);
        }
        let mut log = Self {
            consumers: consumers::load(&dir)?,
            dir,
            config,
            segments,
            durable: 0,
        };
        if log.segments.is_empty() {
            let base = log.consumers.values().copied().max().unwrap_or(0);
            log.segments.push(Segment::create(&log.dir, base)?);
        }
        log.durable = log.next_offset();
        let (first, next) = (log.first_offset(), log.next_offset());
        for (name, off) in log.consumers.iter_mut() {
            if *off > next || *off < first {
                tracing::warn!(consumer = %name, committed = *off, first, next, "committed offset outside the log, clamped");
                *off = (*off).clamp(first, next);
            }
        }
        Ok(log)
    }

    /// Offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end_offset)
    }

    /// Lowest offset still held (everything before it was trimmed).
    pub fn first_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    /// Records below this offset are durable and readable.
    pub fn durable_offset(&self) -> u64 {
        self.durable
    }

    /// The offset a consumer resumes from (the first offset held if it never committed).
    pub fn committed(&self, consumer: &str) -> u64 {
        self.consumers
            .get(consumer)
            .copied()
            .unwrap_or_else(|| self.first_offset())
    }

    fn low_watermark(&self) -> u64 {
        self.consumers
            .values()
            .copied()
            .min()
            .unwrap_or_else(|| self.first_offset())
    }

    /// Bytes held at or after the lowest committed offset.
    pub fn unconsumed_bytes(&self) -> u64 {
        let low = self.low_watermark();
        self.segments
            .iter()
            .filter(|s| s.end_offset() > low)
            .map(|s| match low.checked_sub(s.base) {
                Some(i) if i > 0 => s.size - s.positions.get(i as usize).copied().unwrap_or(s.size),
                _ => s.size,
            })
            .sum()
    }

    /// Bytes of all segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Checks whether an append of `bytes` would be accepted right now.
    pub fn check_append(&self, bytes: u64) -> std::result::Result<(), AppendRefusal> {
        if bytes > self.config.max_record_bytes {
            return Err(AppendRefusal::TooLarge {
                bytes,
                limit: self.config.max_record_bytes,
            });
        }
        let unconsumed = self.unconsumed_bytes();
        if unconsumed + bytes + RECORD_HEADER_BYTES > self.config.max_unconsumed_bytes {
            return Err(AppendRefusal::Full {
                unconsumed,
                limit: self.config.max_unconsumed_bytes,
            });
        }
        Ok(())
    }

    /// Writes a record (not yet durable: see [`PartitionLog::sync_handle`]) and returns its offset.
    pub fn append(&mut self, payload: &[u8]) -> Result<std::result::Result<u64, AppendRefusal>> {
        if let Err(refusal) = self.check_append(payload.len() as u64) {
            return Ok(Err(refusal));
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.size >= self.config.segment_bytes)
        {
            match self.roll() {
                Err(ActorError::Io { path, source }) if is_out_of_space(&source) => {
                    return Ok(Err(disk_full(&path, &source)));
                }
                other => other?,
            }
        }
        let offset = self.next_offset();
        let Some(seg) = self.segments.last_mut() else {
            return Err(ActorError::Internal("log has no segment".into()));
        };
        let rec = encode_record(offset, payload);
        if let Err(e) = seg.file.write_all(&rec) {
            // Leave no half record behind a failed write: later appends would land after it.
            let _ = seg.file.set_len(seg.size);
            if is_out_of_space(&e) {
                return Ok(Err(disk_full(&seg.path, &e)));
            }
            return Err(io_err(&seg.path, e));
        }
        seg.positions.push(seg.size);
        seg.size += rec.len() as u64;
        Ok(Ok(offset))
    }

    fn roll(&mut self) -> Result<()> {
        if let Some(seg) = self.segments.last() {
            seg.file.sync_data().map_err(|e| io_err(&seg.path, e))?;
        }
        self.durable = self.next_offset();
        let seg = Segment::create(&self.dir, self.next_offset())?;
        self.segments.push(seg);
        Ok(())
    }

    /// A handle to fsync outside the actor, and the offset that is durable once it returns.
    pub fn sync_handle(&self) -> Result<(File, PathBuf, u64)> {
        let seg = self
            .segments
            .last()
            .ok_or_else(|| ActorError::Internal("log has no segment".into()))?;
        let file = seg.file.try_clone().map_err(|e| io_err(&seg.path, e))?;
        Ok((file, seg.path.clone(), self.next_offset()))
    }

    /// Records that everything below `upto` is durable.
    pub fn mark_durable(&mut self, upto: u64) {
        self.durable = self.durable.max(upto.min(self.next_offset()));
    }

    /// Appends and fsyncs in one call (tests and tools; the actor pipelines the fsync).
    pub fn append_sync(
        &mut self,
        payload: &[u8],
    ) -> Result<std::result::Result<u64, AppendRefusal>> {
        let res = self.append(payload)?;
        let (file, path, upto) = self.sync_handle()?;
        file.sync_data().map_err(|e| io_err(&path, e))?;
        self.mark_durable(upto);
        Ok(res)
    }

    /// Reads durable records from `from`, at least one if any, stopping before `max_bytes`.
    pub fn read(&self, from: u64, max_bytes: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut offset = from.max(self.first_offset());
        while offset < self.durable {
            let Some(seg) = self.segments.iter().rev().find(|s| s.base <= offset) else {
                break;
            };
            let idx = (offset - seg.base) as usize;
            let Some(&pos) = seg.positions.get(idx) else {
                break;
            };
            let end = seg.positions.get(idx + 1).copied().unwrap_or(seg.size);
            let len = end - pos - RECORD_HEADER_BYTES;
            if !out.is_empty() && bytes + len > max_bytes {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            seg.file
                .read_exact_at(&mut payload, pos + RECORD_HEADER_BYTES)
                .map_err(|e| io_err(&seg.path, e))?;
            bytes += len;
            out.push((offset, payload));
            offset += 1;
        }
        Ok(out)
    }

    /// Durably records that `consumer` processed everything below `offset`, then trims.
    pub fn commit(&mut self, consumer: &str, offset: u64) -> Result<()> {
        let offset = offset.min(self.durable);
        if self.consumers.get(consumer) == Some(&offset) {
            return Ok(());
        }
        let before = self.consumers.insert(consumer.to_string(), offset);
        if let Err(e) = consumers::store(&self.dir, &self.consumers) {
            // Not durable: forget it, so that the same commit is written again next time.
            match before {
                Some(b) => self.consumers.insert(consumer.to_string(), b),
                None => self.consumers.remove(consumer),
            };
            return Err(e);
        }
        self.reclaim(Instant::now(), false)
    }

    /// Rolls the active segment when its consumed part is worth deleting — at least
    /// `reclaim_bytes` consumed, or everything consumed and the segment older than `reclaim_age`
    /// (or `closing`) — then deletes every segment the consumers have passed.
    pub fn reclaim(&mut self, now: Instant, closing: bool) -> Result<()> {
        let low = self.low_watermark();
        let due = self.segments.last().is_some_and(|active| {
            if active.positions.is_empty() || low < active.base {
                return false;
            }
            let all = low >= active.end_offset();
            let consumed = match active.positions.get((low - active.base) as usize) {
                Some(&pos) => pos,
                None => active.size,
            };
            consumed >= self.config.reclaim_bytes
                || (all
                    && (closing || now.duration_since(active.opened) >= self.config.reclaim_age))
        });
        if due {
            self.roll()?;
        }
        self.trim()
    }

    /// Deletes whole segments that every consumer has passed; the active segment always stays.
    fn trim(&mut self) -> Result<()> {
        let low = self.low_watermark();
        while self.segments.len() > 1 && self.segments[0].end_offset() <= low {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, e))?;
        }
        Ok(())
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::segment::segment_path;
    use std::fs::OpenOptions;

    fn small() -> LogConfig {
        LogConfig {
            segment_bytes: 100,
            max_unconsumed_bytes: 1000,
            max_record_bytes: 200,
            reclaim_bytes: 1 << 20,
            reclaim_age: Duration::from_secs(3600),
        }
    }

    fn payloads(log: &PartitionLog, from: u64) -> Vec<(u64, Vec<u8>)> {
        log.read(from, u64::MAX).expect("read")
    }

    #[test]
    fn append_is_invisible_until_durable_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), small()).expect("open");
        assert_eq!(log.append(b"a").expect("io"), Ok(0));
        assert!(payloads(&log, 0).is_empty(), "not durable yet");
        let (f, _, upto) = log.sync_handle().expect("handle");
        f.sync_data().expect("sync");
        log.mark_durable(upto);
        assert_eq!(payloads(&log, 0), vec![(0, b"a".to_vec())]);
        assert_eq!(log.append_sync(b"bb").expect("io"), Ok(1));
        assert_eq!(payloads(&log, 1), vec![(1, b"bb".to_vec())]);
    }

    #[test]
    fn commit_replay_and_trim_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), small()).expect("open");
        for i in 0..20u8 {
            assert_eq!(log.append_sync(&[i; 30]).expect("io"), Ok(u64::from(i)));
        }
        assert!(log.segment_count() > 3);
        log.commit("c", 12).expect("commit");
        assert!(
            log.first_offset() > 0 && log.first_offset() <= 12,
            "trimmed whole segments only"
        );
        let segments = log.segment_count();
        drop(log);
        let log = PartitionLog::open(dir.path(), small()).expect("reopen");
        assert_eq!(log.segment_count(), segments);
        assert_eq!(log.committed("c"), 12);
        let replay = payloads(&log, log.committed("c"));
        assert_eq!(
            replay.iter().map(|r| r.0).collect::<Vec<_>>(),
            (12..20).collect::<Vec<_>>()
        );
        assert_eq!(replay[0].1, vec![12u8; 30]);
        // Reads respect the byte budget but always return at least one record.
        assert_eq!(log.read(12, 1).expect("read").len(), 1);
        assert_eq!(log.read(12, 60).expect("read").len(), 2);
    }

    #[test]
    fn consumed_bytes_are_reclaimed_by_size_age_and_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 1 << 20,
            reclaim_bytes: 200,
            ..small()
        };
        let mut log = PartitionLog::open(dir.path(), config).expect("open");
        for i in 0..10u8 {
            log.append_sync(&[i; 34]).expect("io").expect("accepted");
        }
        // 50-byte records: 150 consumed bytes stay, 250 roll the active segment.
        log.commit("c", 3).expect("commit");
        assert_eq!(log.segment_count(), 1);
        log.commit("c", 5).expect("commit");
        assert_eq!(log.segment_count(), 2, "rolled at 250 consumed bytes");
        assert_eq!(log.first_offset(), 0, "records 5..10 are not consumed yet");
        log.commit("c", 10).expect("commit");
        assert_eq!((log.segment_count(), log.first_offset()), (1, 10));
        assert_eq!(log.disk_bytes(), 0);
        // Fully consumed but small: kept until it is old enough, or the log closes.
        log.append_sync(&[1; 34]).expect("io").expect("accepted");
        log.commit("c", 11).expect("commit");
        assert_eq!(log.disk_bytes(), 50);
        let now = Instant::now();
        log.reclaim(now, false).expect("reclaim");
        assert_eq!(log.disk_bytes(), 50);
        log.reclaim(now + Duration::from_secs(3601), false)
            .expect("reclaim");
        assert_eq!((log.disk_bytes(), log.first_offset()), (0, 11));
        log.append_sync(&[2; 34]).expect("io").expect("accepted");
        log.reclaim(now, true).expect("reclaim");
        assert_eq!(
            log.disk_bytes(),
            50,
            "unconsumed records are never reclaimed"
        );
        log.commit("c", 12).expect("commit");
        log.reclaim(now, true).expect("reclaim");
        assert_eq!(log.disk_bytes(), 0);
        drop(log);
        let mut log = PartitionLog::open(dir.path(), small()).expect("reopen");
        assert_eq!((log.next_offset(), log.committed("c")), (12, 12));
        assert_eq!(log.append_sync(b"x").expect("io"), Ok(12));
    }

    #[test]
    fn refuses_past_the_bound_until_consumed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), small()).expect("open");
        let mut n = 0;
        loop {
            match log.append_sync(&[7u8; 100]).expect("io") {
                Ok(_) => n += 1,
                Err(AppendRefusal::Full { unconsumed, limit }) => {
                    assert!(unconsumed + 116 > limit);
                    break;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(n, 8, "8 records of 116 bytes fit 1000");
        assert!(matches!(
            log.append(&[0u8; 201]).expect("io"),
            Err(AppendRefusal::TooLarge { .. })
        ));
        log.commit("c", n).expect("commit");
        assert_eq!(log.append_sync(&[1u8; 100]).expect("io"), Ok(n));
    }

    #[test]
    fn torn_tail_is_truncated_and_middle_corruption_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), small()).expect("open");
        for i in 0..6u8 {
            log.append_sync(&[i; 40]).expect("io").expect("accepted");
        }
        let last = segment_path(dir.path(), log.segments.last().expect("seg").base);
        drop(log);
        // Half a record at the end: a crash mid-append.
        let mut f = OpenOptions::new().append(true).open(&last).expect("open");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("write");
        drop(f);
        let mut log = PartitionLog::open(dir.path(), small()).expect("reopen");
        assert_eq!(log.next_offset(), 6);
        assert_eq!(log.append_sync(b"x").expect("io"), Ok(6));
        drop(log);
        // Flip a payload byte in the first segment: acknowledged data, so opening must fail.
        let first = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&first).expect("read");
        bytes[20] ^= 0xff;
        fs::write(&first, bytes).expect("write");
        match PartitionLog::open(dir.path(), small()) {
            Err(ActorError::CorruptLog { offset, .. }) => assert_eq!(offset, 0),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("corruption not detected"),
        }
    }

    #[test]
    fn damage_with_intact_records_behind_it_is_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
        for i in 0..3u8 {
            log.append_sync(&[i; 40]).expect("io").expect("accepted");
        }
        drop(log);
        let seg = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&seg).expect("read");
        // The length field of record 1: its end is lost, record 2 is intact behind it.
        bytes[56] ^= 0x10;
        fs::write(&seg, bytes).expect("write");
        match PartitionLog::open(dir.path(), LogConfig::default()) {
            Err(ActorError::CorruptLog { offset, .. }) => assert_eq!(offset, 1),
            Err(e) => panic!("wrong error {e}"),
            Ok(l) => panic!("damage truncated silently to {} records", l.next_offset()),
        }
    }
}
