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
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ActorError, Result};
use telemetry_storage::disk::is_out_of_space;

/// Bytes of a record header: length, CRC and offset.
pub const RECORD_HEADER_BYTES: u64 = 16;

/// Default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;

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
            max_unconsumed_bytes: 256 << 20,
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

struct Segment {
    base: u64,
    path: PathBuf,
    file: File,
    /// File position of each record, indexed by `offset - base`.
    positions: Vec<u64>,
    size: u64,
    /// When this process opened or created it (the age that [`LogConfig::reclaim_age`] counts).
    opened: Instant,
}

impl Segment {
    fn end_offset(&self) -> u64 {
        self.base + self.positions.len() as u64
    }
}

/// One partition's log.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    durable: u64,
    consumers: BTreeMap<String, u64>,
}

fn io_err(path: &Path, e: std::io::Error) -> ActorError {
    ActorError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn disk_full(path: &Path, e: &std::io::Error) -> AppendRefusal {
    AppendRefusal::DiskFull {
        reason: format!("{}: {e}", path.display()),
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Why bytes are not the record expected at an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than a header.
    #[error("truncated header")]
    TruncatedHeader,
    /// The header names another offset.
    #[error("record carries offset {0}")]
    WrongOffset(u64),
    /// The header claims more than any record may hold.
    #[error("record length {0} over the limit")]
    TooLong(u64),
    /// Fewer bytes than the header claims.
    #[error("record of {0} bytes is cut short")]
    Truncated(u64),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// Total length (header included) of the record at the start of `bytes`, from its header alone.
pub fn record_len(bytes: &[u8], expected: u64, max_record_bytes: u64) -> Result<u64, RecordError> {
    let header = bytes
        .get(..RECORD_HEADER_BYTES as usize)
        .ok_or(RecordError::TruncatedHeader)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[0..4]);
    let len = u64::from(u32::from_le_bytes(len));
    let mut off = [0u8; 8];
    off.copy_from_slice(&header[8..16]);
    let offset = u64::from_le_bytes(off);
    if offset != expected {
        return Err(RecordError::WrongOffset(offset));
    }
    if len > max_record_bytes {
        return Err(RecordError::TooLong(len));
    }
    Ok(RECORD_HEADER_BYTES + len)
}

/// The payload of the record at offset `expected` at the start of `bytes` and the record's
/// total length, checksum verified.
pub fn decode_record(
    bytes: &[u8],
    expected: u64,
    max_record_bytes: u64,
) -> Result<(&[u8], u64), RecordError> {
    let total = record_len(bytes, expected, max_record_bytes)?;
    let record = bytes
        .get(..total as usize)
        .ok_or(RecordError::Truncated(total))?;
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&record[4..8]);
    let payload = &record[RECORD_HEADER_BYTES as usize..];
    if crc(expected, payload) != u32::from_le_bytes(sum) {
        return Err(RecordError::Checksum);
    }
    Ok((payload, total))
}

/// The bytes of the record at `offset`: length, checksum, offset (little-endian), payload.
pub fn encode_record(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(RECORD_HEADER_BYTES as usize + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc(offset, payload).to_le_bytes());
    rec.extend_from_slice(&offset.to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// Position of an intact record for offset `expected` anywhere in `bytes` (the search for
/// acknowledged records behind damage).
pub fn find_record(bytes: &[u8], expected: u64, max_record_bytes: u64) -> Option<usize> {
    let needle = expected.to_le_bytes();
    (0..bytes.len().saturating_sub(RECORD_HEADER_BYTES as usize - 1)).find(|&i| {
        bytes.get(i + 8..i + 16) == Some(&needle[..])
            && decode_record(&bytes[i..], expected, max_record_bytes).is_ok()
    })
}

fn crc(offset: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_le_bytes());
    h.update(payload);
    h.finalize()
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
            let seg = Self::recover_segment(&dir, base, is_last, &config)?;
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
            consumers: Self::load_consumers(&dir)?,
            dir,
            config,
            segments,
            durable: 0,
        };
        if log.segments.is_empty() {
            let base = log.consumers.values().copied().max().unwrap_or(0);
            log.segments.push(log.create_segment(base)?);
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

    fn recover_segment(
        dir: &Path,
        base: u64,
        is_last: bool,
        config: &LogConfig,
    ) -> Result<Segment> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let mut positions = Vec::new();
        let mut pos = 0u64;
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        let mut record = Vec::new();
        let bad = loop {
            if pos == len {
                break None;
            }
            let expected = base + positions.len() as u64;
            let head_len = RECORD_HEADER_BYTES.min(len - pos) as usize;
            file.read_exact_at(&mut header[..head_len], pos)
                .map_err(|e| io_err(&path, e))?;
            let want = match record_len(&header[..head_len], expected, config.max_record_bytes) {
                Ok(n) if n <= len - pos => n,
                Ok(n) => break Some(format!("record of {n} bytes runs past the segment")),
                Err(e) => break Some(e.to_string()),
            };
            record.resize(want as usize, 0);
            file.read_exact_at(&mut record, pos)
                .map_err(|e| io_err(&path, e))?;
            if let Err(e) = decode_record(&record, expected, config.max_record_bytes) {
                break Some(e.to_string());
            }
            positions.push(pos);
            pos += want;
        };
        if let Some(detail) = bad {
            let offset = base + positions.len() as u64;
            let intact_after = !is_last || {
                let mut rest = vec![0u8; (len - pos) as usize];
                file.read_exact_at(&mut rest, pos)
                    .map_err(|e| io_err(&path, e))?;
                find_record(&rest, offset + 1, config.max_record_bytes).is_some()
            };
            if intact_after {
                // Records after the damaged one were written after it, so it was acknowledged.
                return Err(ActorError::CorruptLog {
                    dir: dir.to_path_buf(),
                    offset,
                    detail,
                });
            }
            // A torn tail is the one record a crash interrupted; it was never acknowledged.
            tracing::warn!(segment = %path.display(), offset, %detail, dropped_bytes = len - pos, "truncating torn tail of partition log");
            file.set_len(pos).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        Ok(Segment {
            base,
            path,
            file,
            positions,
            size: pos,
            opened: Instant::now(),
        })
    }

    fn create_segment(&self, base: u64) -> Result<Segment> {
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        sync_dir(&self.dir)?;
        Ok(Segment {
            base,
            path,
            file,
            positions: Vec::new(),
            size: 0,
            opened: Instant::now(),
        })
    }

    fn consumers_path(dir: &Path) -> PathBuf {
        dir.join("consumers")
    }

    fn load_consumers(dir: &Path) -> Result<BTreeMap<String, u64>> {
        let path = Self::consumers_path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_err(&path, e)),
        };
        let mut out = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let parsed = line
                .rsplit_once(' ')
                .and_then(|(name, off)| Some((name.to_string(), off.parse::<u64>().ok()?)));
            match parsed {
                Some((name, off)) => {
                    out.insert(name, off);
                }
                None => {
                    return Err(ActorError::CorruptLog {
                        dir: dir.to_path_buf(),
                        offset: 0,
                        detail: format!("consumers file line {}: {line:?}", n + 1),
                    })
                }
            }
        }
        Ok(out)
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
        let seg = self.create_segment(self.next_offset())?;
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
        let path = Self::consumers_path(&self.dir);
        let tmp = path.with_extension("tmp");
        let text: String = self
            .consumers
            .iter()
            .map(|(n, o)| format!("{n} {o}\n"))
            .collect();
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write().and_then(|()| File::open(&self.dir)?.sync_all()) {
            // Not durable: forget it, so that the same commit is written again next time.
            match before {
                Some(b) => self.consumers.insert(consumer.to_string(), b),
                None => self.consumers.remove(consumer),
            };
            return Err(io_err(&path, e));
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

    proptest::proptest! {
        /// Records decode to what was encoded; any single flipped bit is detected; arbitrary
        /// bytes decode to an error, never a panic or an allocation they claim.
        #[test]
        fn record_decoding(
            offset in 0u64..1 << 40,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            flip in 0usize..2400,
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let rec = encode_record(offset, &payload);
            let decoded = decode_record(&rec, offset, 1 << 20);
            proptest::prop_assert_eq!(decoded, Ok((&payload[..], rec.len() as u64)));
            let mut bad = rec.clone();
            let bit = flip % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert!(decode_record(&bad, offset, 1 << 20).is_err());
            proptest::prop_assert!(decode_record(&rec[..rec.len() - 1], offset, 1 << 20).is_err());
            let _ = decode_record(&garbage, offset, 1 << 20);
            let mut behind = garbage.clone();
            behind.extend_from_slice(&rec);
            proptest::prop_assert!(find_record(&behind, offset, 1 << 20).is_some());
        }
    }
}
