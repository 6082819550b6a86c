//! Parked work trees: a few used, scrubbed trees per mirror, kept so that the next job
//! on the repository gets a tree by renaming one and checking out the difference, not by
//! writing every file again.
//!
//! A parked tree lives in slot `<workdir>/mirrors/<key>.parked/<n>`, its git metadata in
//! `<mirror>/worktrees/.parked-<n>` (job trees never have a name starting with a dot),
//! with a detached `HEAD` and no branch. Slots are only claimed and filled under the
//! mirror's file lock. A slot with half its parts missing is deleted on sight.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{BranchType, Repository};

use super::scrub::{self, Stamp};

/// How many parked trees each mirror keeps unless configured otherwise.
pub const DEFAULT_PARKED_TREES: usize = 2;

/// File in a tree's metadata dir whose ctime marks when the tree was handed to a job
/// (or, once parked, when it was parked).
pub(super) const STAMP_FILE: &str = "repobox-stamp";

/// The parking slots of one mirror.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    /// `<workdir>/mirrors/<key>.parked`
    dir: PathBuf,
    /// The bare mirror, whose `worktrees/` holds the metadata.
    mirror: PathBuf,
    limit: usize,
}

impl Pool {
    pub(super) fn new(mirror: &Path, limit: usize) -> Pool {
        Pool {
            dir: mirror.with_extension("parked"),
            mirror: mirror.to_path_buf(),
            limit,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.limit > 0
    }

    fn slot(&self, n: usize) -> (PathBuf, PathBuf) {
        (
            self.dir.join(n.to_string()),
            self.mirror.join("worktrees").join(format!(".parked-{n}")),
        )
    }

    /// Moves the scrubbed tree `name` at `path` into a free slot, detaching it from its
    /// job branch (which is deleted). Call under the mirror lock. `Ok(false)` when every
    /// slot is taken; on error nothing is left in a slot (the caller deletes the tree).
    pub(super) fn park(&self, repo: &Repository, name: &str, path: &Path) -> Result<bool, String> {
        let Some(n) = (0..self.limit).find(|&n| {
            let (tree, meta) = self.slot(n);
            !tree.exists() && !meta.exists()
        }) else {
            return Ok(false);
        };
        let result = self.move_in(repo, name, path, n);
        if result.is_err() {
            self.discard(n);
        }
        result.map(|()| true)
    }

    fn move_in(&self, repo: &Repository, name: &str, path: &Path, n: usize) -> Result<(), String> {
        let (tree, meta) = self.slot(n);
        let branch = format!("{}{name}", super::worktree::JOB_BRANCH_PREFIX);
        let head = repo
            .find_branch(&branch, BranchType::Local)
            .ok()
            .and_then(|b| b.get().target())
            .ok_or_else(|| format!("job branch {branch} is missing"))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("create slot dir: {e}"))?;
        let job_meta = self.mirror.join("worktrees").join(name);
        std::fs::rename(&job_meta, &meta).map_err(|e| format!("move metadata: {e}"))?;
        std::fs::rename(path, &tree).map_err(|e| format!("move tree: {e}"))?;
        std::fs::write(meta.join("HEAD"), format!("{head}\n"))
            .map_err(|e| format!("detach HEAD: {e}"))?;
        link(&meta, &tree)?;
        repo.find_branch(&branch, BranchType::Local)
            .and_then(|mut b| b.delete())
            .map_err(|e| format!("delete job branch: {e}"))
    }

    /// Moves a parked tree to `path` as work tree `name` (its `HEAD` still detached at
    /// the previous job's commit). Call under the mirror lock. Returns when the tree
    /// was parked, or `None` when no slot holds a tree. Broken slots are deleted.
    pub(super) fn take(&self, name: &str, path: &Path) -> Option<Stamp> {
        for n in 0..self.limit {
            let (tree, meta) = self.slot(n);
            match (tree.exists(), meta.exists()) {
                (false, false) => continue,
                (true, true) => {}
                _ => {
                    self.discard(n);
                    continue;
                }
            }
            match self.move_out(name, path, n) {
                Ok(stamp) => return Some(stamp),
                Err(_) => {
                    self.discard(n);
                    let _ = scrub::remove_all(path);
                    let _ = scrub::remove_all(&self.mirror.join("worktrees").join(name));
                }
            }
        }
        None
    }

    fn move_out(&self, name: &str, path: &Path, n: usize) -> Result<Stamp, String> {
        let (tree, meta) = self.slot(n);
        let parked = scrub::read_stamp(&meta.join(STAMP_FILE))
            .map_err(|e| format!("read parking stamp: {e}"))?;
        let job_meta = self.mirror.join("worktrees").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("create trees dir: {e}"))?;
        }
        std::fs::rename(&meta, &job_meta).map_err(|e| format!("move metadata: {e}"))?;
        std::fs::rename(&tree, path).map_err(|e| format!("move tree: {e}"))?;
        link(&job_meta, path)?;
        Ok(parked)
    }

    /// Deletes whatever is in slot `n`.
    fn discard(&self, n: usize) {
        let (tree, meta) = self.slot(n);
        let _ = scrub::remove_all(&tree);
        let _ = scrub::remove_all(&meta);
    }
}

/// Points the work tree at `tree` and its metadata dir `meta` at each other: the
/// metadata's `gitdir` file and the tree's `.git` file. Whatever the agent left at
/// `.git` (a different pointer, a directory, a symlink) is removed first.
fn link(meta: &Path, tree: &Path) -> Result<(), String> {
    let mut gitdir = tree.join(".git").as_os_str().as_bytes().to_vec();
    gitdir.push(b'\n');
    std::fs::write(meta.join("gitdir"), gitdir).map_err(|e| format!("write gitdir: {e}"))?;
    scrub::remove_entry_at(tree, ".git")?;
    let mut dot_git = b"gitdir: ".to_vec();
    dot_git.extend_from_slice(meta.as_os_str().as_bytes());
    dot_git.push(b'\n');
    // `create_new` (O_EXCL) fails rather than write through anything planted meanwhile.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tree.join(".git"))
        .and_then(|mut f| f.write_all(&dot_git))
        .map_err(|e| format!("write .git: {e}"))
}
