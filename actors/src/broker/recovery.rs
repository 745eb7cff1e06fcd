//! Opening a segment after a stop or a crash: every record is validated. A damaged tail of the
//! last segment with nothing intact behind it is the one write a crash interrupted (never
//! acknowledged) and is cut off; damage with an intact record behind it, or in an earlier
//! segment, is acknowledged data and an error naming the partition and offset.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::log::LogConfig;
use super::record::{decode_record, find_record, record_len, RECORD_HEADER_BYTES};
use super::segment::{io_err, segment_path, Segment};
use crate::error::{ActorError, Result};

/// Opens the segment starting at `base`, validating its records (`is_last`: the active one).
pub(super) fn recover_segment(
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
