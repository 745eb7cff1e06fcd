//! Disk use of the node's directories, counted as `du` counts it: allocated blocks, the
//! directories' own included.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
}
