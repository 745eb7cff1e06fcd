//! Disk use and free space of the node's data volume.
//!
//! [`allocated_bytes`] counts a tree as `du` does (allocated blocks, the directories' own
//! included). [`DiskGuard`] says whether the data volume has room for new data: it is full while
//! free space is below the reserve (`--min-free-disk`) or after a write failed with ENOSPC or
//! EDQUOT, until a later check finds the reserve free again. A full disk is a state, not a
//! failure: appends are refused retryably, reads go on, and nothing written is dropped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Default free space kept in reserve on the data volume: below it the node takes no new data,
/// so that what it already accepted can still be checkpointed, committed and trimmed.
pub const DEFAULT_MIN_FREE_DISK: u64 = 100 << 20;

/// After a write failed for lack of space, the disk counts as full until at least this much (or
/// the reserve, if larger) is free again, so a volume at its very end does not flap.
pub const OUT_OF_SPACE_HEADROOM: u64 = 32 << 20;

/// How often the node measures the free space of its data volume.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether an I/O error means the volume (or the user's quota) is out of space.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    ) || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// The data volume's room for new data, shared by the broker partitions, the store and the API.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    full: AtomicBool,
    /// Set by an ENOSPC/EDQUOT: clearing then needs [`OUT_OF_SPACE_HEADROOM`].
    hit_the_end: AtomicBool,
    free: AtomicU64,
    reason: Mutex<Option<String>>,
}

impl DiskGuard {
    /// A guard of the volume holding `dir`, keeping `min_free` bytes in reserve.
    pub fn new(dir: impl Into<PathBuf>, min_free: u64) -> Self {
        Self {
            dir: dir.into(),
            min_free,
            full: AtomicBool::new(false),
            hit_the_end: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            reason: Mutex::new(None),
        }
    }

    /// True while new data must be refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Why the disk counts as full, while it does.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bytes available to this process on the volume at the last check.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Acquire)
    }

    /// The reserve.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Measures the free space and updates the state (one log line per transition). A volume
    /// that cannot be measured keeps its last state.
    pub fn check(&self) {
        let stat = match rustix::fs::statvfs(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "free disk space not measured");
                return;
            }
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.free.store(free, Ordering::Release);
        let needed = if self.hit_the_end.load(Ordering::Acquire) {
            self.min_free.max(OUT_OF_SPACE_HEADROOM)
        } else {
            self.min_free
        };
        if free < self.min_free {
            self.set_full(format!(
                "disk full: {free} bytes free on the data volume, below the reserve of {} (--min-free-disk)",
                self.min_free
            ));
        } else if free < needed {
            // Still full after ENOSPC: keep the reason that says so.
        } else if self.full.swap(false, Ordering::AcqRel) {
            self.hit_the_end.store(false, Ordering::Release);
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(free, reserve = self.min_free, dir = %self.dir.display(), "disk has room again: taking new data");
        }
    }

    /// Records that a write failed for lack of space (ENOSPC, EDQUOT).
    pub fn out_of_space(&self, what: &str, e: &std::io::Error) {
        self.hit_the_end.store(true, Ordering::Release);
        self.set_full(format!("disk full: {what}: {e}"));
    }

    fn set_full(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = %self.dir.display(), %reason, "refusing new data until space is freed (reads go on)");
        }
        *r = Some(reason);
    }
}

/// Bytes allocated on disk under `path` (files and directories, recursively; symlinks are not
/// followed). Entries that vanish or cannot be read while walking count as 0.
pub fn allocated_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    own + entries
        .flatten()
        .map(|e| allocated_bytes(&e.path()))
        .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_blocks_of_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = allocated_bytes(dir.path());
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 10_000]).expect("write");
        let sparse = std::fs::File::create(dir.path().join("sparse")).expect("create");
        sparse.set_len(1 << 30).expect("set_len");
        let total = allocated_bytes(dir.path());
        assert!(total >= empty + 10_000, "{total}");
        assert!(
            total < 1 << 20,
            "a sparse file's hole is not counted: {total}"
        );
        assert_eq!(allocated_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn full_below_the_reserve_or_after_enospc_until_a_check_finds_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roomy = DiskGuard::new(dir.path(), 0);
        roomy.check();
        assert!(!roomy.is_full() && roomy.free_bytes() > 0);
        let enospc = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(is_out_of_space(&enospc));
        assert!(!is_out_of_space(&std::io::Error::other("x")));
        roomy.out_of_space("append", &enospc);
        assert!(roomy.is_full());
        assert!(roomy.reason().is_some_and(|r| r.contains("append")));
        roomy.check();
        assert!(!roomy.is_full() && roomy.reason().is_none());
        let tight = DiskGuard::new(dir.path(), u64::MAX);
        tight.check();
        assert!(tight.is_full());
        assert!(tight
            .reason()
            .is_some_and(|r| r.contains("--min-free-disk")));
    }
}
