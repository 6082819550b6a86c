//! The work tree's size limit (SPEC section 15, `REPOBOX_MAX_TREE_SIZE`): checked
//! before the commit, so a job whose agent filled the tree (a build's output, a
//! downloaded data set, a sparse file of terabytes) fails and pushes nothing.
//!
//! Apparent size (`st_size`), not disk usage: a sparse file counts at its length, as it
//! would in a commit. Symlinks count as their own size and are never followed; the
//! work tree's `.git` entry (a file naming the mirror) is left out.

use std::io;
use std::path::Path;

/// The apparent size of the files under `root`, or `None` as soon as it is over
/// `limit` (the walk stops there).
pub fn within(root: &Path, limit: u64) -> io::Result<Option<u64>> {
    let mut total: u64 = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if dir == root && entry.file_name() == ".git" {
                continue;
            }
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
                if total > limit {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_apparent_sizes_and_stops_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 500]).unwrap();
        std::fs::write(dir.path().join(".git"), vec![0u8; 10_000]).unwrap();
        assert_eq!(within(dir.path(), 2000).unwrap(), Some(1500));
        // A sparse file counts at its length.
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 40).unwrap();
        assert_eq!(within(dir.path(), 1 << 30).unwrap(), None);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let size = within(dir.path(), 10_000).unwrap().unwrap();
        assert!(size < 10_000, "{size}");
    }
}
