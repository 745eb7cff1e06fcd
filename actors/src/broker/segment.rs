//! A segment file of a partition log: named by the offset of its first record, appended to at
//! its end, with the file position of every record it holds.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{ActorError, Result};

/// One segment file and what the log knows of it.
pub(super) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
    /// File position of each record, indexed by `offset - base`.
    pub positions: Vec<u64>,
    pub size: u64,
    /// When this process opened or created it (the age that `LogConfig::reclaim_age` counts).
    pub opened: Instant,
}

impl Segment {
    /// Offset the record after this segment's last one gets.
    pub fn end_offset(&self) -> u64 {
        self.base + self.positions.len() as u64
    }

    /// Creates an empty segment starting at `base` (durably: the directory is fsynced).
    pub fn create(dir: &Path, base: u64) -> Result<Segment> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        sync_dir(dir)?;
        Ok(Segment {
            base,
            path,
            file,
            positions: Vec::new(),
            size: 0,
            opened: Instant::now(),
        })
    }
}

/// The file of the segment starting at `base`.
pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The error of a file operation, naming the file.
pub(super) fn io_err(path: &Path, e: std::io::Error) -> ActorError {
    ActorError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Makes the directory's entries (created, renamed files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}
