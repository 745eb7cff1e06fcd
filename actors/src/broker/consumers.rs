//! The `consumers` file of a partition: one `name offset` line per consumer, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::segment::io_err;
use crate::error::{ActorError, Result};

fn consumers_path(dir: &Path) -> PathBuf {
    dir.join("consumers")
}

/// The committed offsets in `dir` (none when the file does not exist yet).
pub(super) fn load(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let path = consumers_path(dir);
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

/// Durably replaces the committed offsets in `dir`; on error the old file is intact.
pub(super) fn store(dir: &Path, consumers: &BTreeMap<String, u64>) -> Result<()> {
    let path = consumers_path(dir);
    let tmp = path.with_extension("tmp");
    let text: String = consumers
        .iter()
        .map(|(n, o)| format!("{n} {o}\n"))
        .collect();
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_err(&path, e))
}
