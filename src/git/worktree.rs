//! Job work trees: a linked work tree of a bare mirror at `<workdir>/trees/<job_id>`,
//! on its own branch `repobox-job/<job_id>`. The agent edits plain files there; this
//! module lists what changed, commits it and pushes the branch.
//!
//! A work tree shares the mirror's objects, so creating one costs only a checkout. Its
//! metadata (`HEAD`, `index`) lives in `<mirror>/worktrees/<job_id>`, which the sandbox
//! binds read-only.
//!
//! `WorkTree::remove` parks the tree for the next job of the same repository (see
//! `pool`) after scrubbing what the job changed (see `scrub`); taking a parked tree
//! checks out the new base over it, and the result must show no change at all, not
//! even an ignored file, or it is deleted and a fresh tree made instead.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{
    BranchType, Commit, Diff, DiffFindOptions, DiffOptions, ErrorCode, IndexAddOption, ObjectType,
    Oid, Patch, PushOptions, Repository, Signature, StatusOptions, Time, Tree, TreeWalkMode,
    TreeWalkResult, WorktreeAddOptions, WorktreePruneOptions,
};

use super::mirror::{lock_exclusive, sanitize_component};
use super::pool::{Pool, STAMP_FILE};
use super::scrub::{self, Expected, Stamp, Tracked};
use super::transport::{self, AuthAttempts};
use super::{Credentials, GitError};

/// Prefix of the local branch each job works on.
pub(super) const JOB_BRANCH_PREFIX: &str = "repobox-job/";

/// A checked-out job work tree. `remove` parks it for reuse; dropping it without
/// `remove` (an error path, a panic) deletes it, best effort, since its state is then
/// not known.
#[derive(Debug)]
pub struct WorkTree {
    path: PathBuf,
    git_dir: PathBuf,
    mirror: PathBuf,
    /// Worktree name in the mirror, also the last part of the branch name.
    name: String,
    base: Oid,
    removed: bool,
    pool: Pool,
    lock_path: PathBuf,
    /// When the tree was handed to the job; `None` until it is ready.
    handed_over: Option<Stamp>,
}

/// Where a mirror's work trees go and how they are parked.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// `<workdir>/trees`
    pub(super) trees: PathBuf,
    pub(super) pool: Pool,
    /// The mirror's lock file.
    pub(super) lock_path: PathBuf,
}

/// A commit made by `WorkTree::commit_all`, with its diff statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub files: Vec<FileChange>,
    pub additions: usize,
    pub deletions: usize,
}

/// Lines added and deleted in one file of a commit (0/0 for binary files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub additions: usize,
    pub deletions: usize,
}

/// Creates the work tree for `job_id` from the bare mirror `repo`, replacing a leftover
/// one of the same job: a parked tree when one is available and comes out clean, a
/// fresh checkout otherwise. `lock` is the mirror lock, held by the caller.
pub(super) fn add(
    repo: &Repository,
    layout: &Layout,
    job_id: &str,
    base_sha: &str,
    lock: std::fs::File,
) -> Result<WorkTree, GitError> {
    let name = sanitize_component(job_id);
    let path = layout.trees.join(&name);
    remove_leftover(repo, &name, &path)?;
    let base = Oid::from_str(base_sha)
        .map_err(|_| GitError::Other(format!("not a commit id: {base_sha:?}")))?;
    let commit = repo
        .find_commit(base)
        .map_err(|e| GitError::other(&format!("commit {base_sha} is not in the mirror"), e))?;
    let mut lock = Some(lock);
    if layout.pool.enabled()
        && let Some(parked) = layout.pool.take(&name, &path)
    {
        let branch = repo.branch(&branch_name(&name), &commit, true);
        // The tree is this job's now: the rest happens without holding up the mirror.
        lock = None;
        let mut tree = WorkTree::new(repo, layout, &name, &path, base);
        if branch.is_ok() && tree.reset(parked).is_ok() {
            return Ok(tree);
        }
        drop(tree); // deletes it
    }
    let _lock = match lock {
        Some(lock) => lock,
        None => lock_exclusive(&layout.lock_path)?,
    };
    add_fresh(repo, layout, &name, &path, &commit)
}

/// Creates a new linked work tree for `name` at `path`, checked out at `commit`.
fn add_fresh(
    repo: &Repository,
    layout: &Layout,
    name: &str,
    path: &Path,
    commit: &Commit<'_>,
) -> Result<WorkTree, GitError> {
    remove_leftover(repo, name, path)?;
    // libgit2's own checkout inside `git_worktree_add` cannot be tuned and is about
    // twice as slow as ours, so the tree is created on an empty commit and then
    // checked out at the base.
    let placeholder = empty_commit(repo)?;
    let mut branch = repo
        .branch(&branch_name(name), &placeholder, true)
        .map_err(|e| GitError::other("create job branch", e))?;
    std::fs::create_dir_all(&layout.trees)
        .map_err(|e| GitError::other(&format!("create {}", layout.trees.display()), e))?;
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(branch.get()));
    repo.worktree(name, path, Some(&opts))
        .map_err(|e| GitError::other("add work tree", e))?;
    // From here on a failure drops `tree`, which removes the half-made work tree.
    let mut tree = WorkTree::new(repo, layout, name, path, commit.id());
    let tree_repo = tree.open()?;
    branch
        .get_mut()
        .set_target(commit.id(), "repobox: job base")
        .map_err(|e| GitError::other("point job branch at base", e))?;
    checkout_base(&tree_repo, commit)?;
    tree.hand_over()?;
    Ok(tree)
}

/// A commit with an empty tree and fixed metadata (so always the same id), written to
/// the mirror once.
fn empty_commit(repo: &Repository) -> Result<Commit<'_>, GitError> {
    let to_err = |e| GitError::other("write placeholder commit", e);
    let tree_id = repo
        .treebuilder(None)
        .and_then(|b| b.write())
        .map_err(to_err)?;
    let tree = repo.find_tree(tree_id).map_err(to_err)?;
    let sig = Signature::new("repobox", "repobox@localhost", &Time::new(0, 0)).map_err(to_err)?;
    let id = repo
        .commit(None, &sig, &sig, "repobox: empty work tree\n", &tree, &[])
        .map_err(to_err)?;
    repo.find_commit(id).map_err(to_err)
}

/// Writes every file of `commit` into the (empty) work tree and its index. Content
/// filters (end-of-line conversion, `ident`) only run when the tree has a
/// `.gitattributes`: the attribute lookup per file costs a `realpath` and makes the
/// checkout about 40% slower, for nothing when no attribute is set.
fn checkout_base(tree_repo: &Repository, commit: &Commit<'_>) -> Result<(), GitError> {
    let tree = commit
        .tree()
        .map_err(|e| GitError::other("read base tree", e))?;
    let mut opts = CheckoutBuilder::new();
    opts.force()
        .disable_filters(!needs_filters(tree_repo, &tree));
    tree_repo
        .checkout_head(Some(&mut opts))
        .map_err(|e| GitError::other("check out base", e))
}

/// Whether checking out `tree` could transform content: any `.gitattributes` in it, or
/// an end-of-line setting in the configuration.
fn needs_filters(repo: &Repository, tree: &Tree<'_>) -> bool {
    let eol_config = needs_filters_in_config(repo);
    let mut found = false;
    let walked = tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        if entry.name_bytes() == b".gitattributes" {
            found = true;
            TreeWalkResult::Abort
        } else {
            TreeWalkResult::Ok
        }
    });
    eol_config || found || walked.is_err()
}

fn is_attributes_file(path: &[u8]) -> bool {
    path == b".gitattributes" || path.ends_with(b"/.gitattributes")
}

/// Whether settings outside the tree could transform content: end-of-line conversion,
/// an attributes file in the configuration or in the mirror's `info/`.
fn needs_filters_in_config(repo: &Repository) -> bool {
    let config = repo.config().is_ok_and(|c| {
        c.get_string("core.autocrlf").is_ok_and(|v| v != "false")
            || c.get_string("core.eol").is_ok()
            || c.get_path("core.attributesfile").is_ok()
    });
    config || repo.commondir().join("info/attributes").exists()
}

fn branch_name(name: &str) -> String {
    format!("{JOB_BRANCH_PREFIX}{name}")
}

/// Removes what a crashed runner may have left for `name`: the worktree metadata, the
/// directory and the branch.
fn remove_leftover(repo: &Repository, name: &str, path: &Path) -> Result<(), GitError> {
    // The directory first, with our own symlink-safe deletion rather than libgit2's.
    remove_dir_if_present(path)?;
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = WorktreePruneOptions::new();
        opts.valid(true).locked(true).working_tree(false);
        wt.prune(Some(&mut opts))
            .map_err(|e| GitError::other("prune work tree", e))?;
    }
    remove_dir_if_present(&repo.path().join("worktrees").join(name))?;
    match repo.find_branch(&branch_name(name), BranchType::Local) {
        Ok(mut branch) => branch
            .delete()
            .map_err(|e| GitError::other("delete job branch", e)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(GitError::other("find job branch", e)),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), GitError> {
    scrub::remove_all(path).map_err(|e| GitError::other(&format!("remove {}", path.display()), e))
}

/// Fails unless the tree shows no difference at all from `HEAD`: nothing modified,
/// staged, untracked or ignored.
fn verify_clean(repo: &Repository) -> Result<(), GitError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(true)
        .recurse_ignored_dirs(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| GitError::other("status of reused tree", e))?;
    if statuses.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = statuses
        .iter()
        .take(5)
        .map(|s| format!("{:?} {}", s.status(), s.path().unwrap_or("?")))
        .collect();
    Err(GitError::Other(format!(
        "reused work tree is not clean: {}",
        shown.join(", ")
    )))
}

/// Appends to `out` the repo-relative paths of the files, symlinks and submodules that
/// differ between trees `old` and `new` (at `prefix`), skipping subtrees with equal ids:
/// what moving a checkout from one commit to the other has to write or delete. (libgit2's
/// tree diff reads every subtree, which costs more than the rest of a reset.)
fn differing_paths(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
    prefix: &mut Vec<u8>,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), git2::Error> {
    let entries = |tree: Option<&Tree<'_>>| -> BTreeMap<Vec<u8>, (Oid, i32)> {
        tree.map(|t| {
            t.iter()
                .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
                .collect()
        })
        .unwrap_or_default()
    };
    let (old, new) = (entries(old), entries(new));
    let names: BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    let is_tree = |mode: i32| mode == i32::from(git2::FileMode::Tree);
    for name in names {
        let (a, b) = (old.get(name), new.get(name));
        if a == b {
            continue;
        }
        let len = prefix.len();
        if len > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name);
        let subtree = |side: Option<&(Oid, i32)>| match side {
            Some(&(id, mode)) if is_tree(mode) => repo.find_tree(id).map(Some),
            _ => Ok(None),
        };
        let (ta, tb) = (subtree(a)?, subtree(b)?);
        let leaf = |side: Option<&(Oid, i32)>| side.is_some_and(|&(_, mode)| !is_tree(mode));
        if leaf(a) || leaf(b) {
            out.push(prefix.clone());
        }
        if ta.is_some() || tb.is_some() {
            differing_paths(repo, ta.as_ref(), tb.as_ref(), prefix, out)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// Brings a clean checkout up to `new` for `paths` (from `differing_paths`), files and
/// index, by writing just those files: libgit2's checkout, even limited to a few
/// paths, costs as much as the whole verification of the tree. Handles plain files and
/// symlinks without content filters; `Ok(false)` (nothing changed) leaves anything
/// else (a submodule, a `.gitattributes`, an end-of-line setting) to libgit2.
fn apply_paths(
    repo: &Repository,
    workdir: &Path,
    new: &Tree<'_>,
    paths: &[Vec<u8>],
) -> Result<bool, GitError> {
    let to_err = |e| GitError::other("update reused tree", e);
    let mut index = repo.index().map_err(to_err)?;
    // The index holds the old tree; a `.gitattributes` added by the new one is a path.
    if needs_filters_in_config(repo) || index.iter().any(|e| is_attributes_file(&e.path)) {
        return Ok(false);
    }
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    for p in paths {
        let rel = Path::new(OsStr::from_bytes(p));
        if is_attributes_file(p) || index.get_path(rel, 0).is_some_and(|e| e.mode == 0o160000) {
            return Ok(false);
        }
        match new.get_path(rel) {
            Ok(entry) if [0o100644, 0o100755, 0o120000].contains(&entry.filemode()) => {
                writes.push((rel, entry.id(), entry.filemode()));
            }
            Ok(_) => return Ok(false),
            Err(e) if e.code() == ErrorCode::NotFound => deletes.push(rel),
            Err(e) => return Err(to_err(e)),
        }
    }
    for rel in deletes {
        remove_in_tree(workdir, rel)?;
        match index.remove_path(rel) {
            Err(e) if e.code() != ErrorCode::NotFound => return Err(to_err(e)),
            _ => {}
        }
        // Directories left empty go, as in a checkout.
        let mut dir = workdir.join(rel);
        while dir.pop() && dir != workdir && std::fs::remove_dir(&dir).is_ok() {}
    }
    for (rel, id, mode) in writes {
        let full = workdir.join(rel);
        remove_in_tree(workdir, rel)?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| GitError::other(&format!("create {}", parent.display()), e))?;
        }
        let blob = repo.find_blob(id).map_err(to_err)?;
        let written = if mode == 0o120000 {
            std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), &full)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if mode == 0o100755 { 0o755 } else { 0o644 })
                .open(&full)
                .and_then(|mut f| f.write_all(blob.content()))
        };
        written.map_err(|e| GitError::other(&format!("write {}", full.display()), e))?;
        index.add_path(rel).map_err(to_err)?;
    }
    index.write().map_err(to_err)?;
    Ok(true)
}

/// Removes whatever is at `rel` in the tree (absent is fine), never following a symlink.
fn remove_in_tree(workdir: &Path, rel: &Path) -> Result<(), GitError> {
    let full = workdir.join(rel);
    let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
        return Ok(());
    };
    if std::fs::symlink_metadata(parent).is_err() {
        return Ok(());
    }
    scrub::remove_entry_at(parent, &name.to_string_lossy())
        .map_err(|e| GitError::Other(format!("remove {}: {e}", full.display())))
}

/// Fails unless the index holds `tree`: compared at `only` these paths when the rest is
/// known to match, else as a whole (writing the index's tree costs a read of every
/// subtree).
fn index_matches(
    repo: &Repository,
    tree: &Tree<'_>,
    only: Option<&[Vec<u8>]>,
) -> Result<(), GitError> {
    let mut index = repo.index().map_err(|e| GitError::other("read index", e))?;
    let same = match only {
        Some(paths) => paths.iter().all(|p| {
            let rel = Path::new(OsStr::from_bytes(p));
            let staged = index.get_path(rel, 0).map(|e| (e.id, e.mode));
            let wanted = tree
                .get_path(rel)
                .ok()
                .and_then(|e| u32::try_from(e.filemode()).ok().map(|m| (e.id(), m)));
            staged == wanted
        }),
        None => {
            index
                .write_tree()
                .map_err(|e| GitError::other("index tree", e))?
                == tree.id()
        }
    };
    if index.has_conflicts() || !same {
        return Err(GitError::Other(
            "reused work tree: index differs from base".into(),
        ));
    }
    Ok(())
}

/// Fails unless the files of a reused tree are exactly its index's, unchanged since it
/// was written (see `scrub::verify`): what `git status` with untracked and ignored
/// files would report clean, plus the modes, links and file types it does not look at.
fn verify_reused(repo: &Repository, path: &Path, parked: Stamp) -> Result<(), GitError> {
    let index = repo.index().map_err(|e| GitError::other("read index", e))?;
    let index_mtime = std::fs::metadata(repo.path().join("index"))
        .map(|m| (m.mtime(), m.mtime_nsec()))
        .map_err(|e| GitError::other("stat index", e))?;
    let mut expected = HashMap::with_capacity(index.len());
    let mut racy = Vec::new();
    let mut attributes = false;
    for entry in index.iter() {
        attributes |= is_attributes_file(&entry.path);
        let kind = match entry.mode {
            0o100755 => Tracked::File { executable: true },
            0o100644 => Tracked::File { executable: false },
            0o120000 => Tracked::Symlink,
            0o160000 => Tracked::Gitlink,
            other => return Err(GitError::Other(format!("index mode {other:o}"))),
        };
        let mtime = (entry.mtime.seconds(), entry.mtime.nanoseconds());
        // Written in the same clock tick as the index: equal stat data does not prove
        // equal content (git's "racily clean" case), so these are compared by content.
        if (i64::from(mtime.0), i64::from(mtime.1)) >= index_mtime {
            racy.push((entry.path.clone(), entry.id, kind));
        }
        expected.insert(
            entry.path,
            Expected {
                kind,
                ino: entry.ino,
                size: entry.file_size,
                ctime: (entry.ctime.seconds(), entry.ctime.nanoseconds()),
                mtime,
            },
        );
    }
    scrub::verify(path, &expected, parked)
        .map_err(|e| GitError::Other(format!("reused work tree: {e}")))?;
    // Without content filters a file's blob id is the hash of its bytes, which is much
    // cheaper to get than a status of the path.
    let filters = attributes || needs_filters_in_config(repo);
    for (p, id, kind) in racy {
        let rel = Path::new(OsStr::from_bytes(&p));
        let full = path.join(rel);
        let same = match kind {
            Tracked::File { .. } if !filters => {
                Oid::hash_file(ObjectType::Blob, &full).is_ok_and(|actual| actual == id)
            }
            Tracked::Symlink => std::fs::read_link(&full).is_ok_and(|target| {
                Oid::hash_object(ObjectType::Blob, target.as_os_str().as_bytes())
                    .is_ok_and(|actual| actual == id)
            }),
            _ => repo.status_file(rel).is_ok_and(|status| status.is_empty()),
        };
        if !same {
            return Err(GitError::Other(format!(
                "reused work tree: {} changed",
                rel.display()
            )));
        }
    }
    Ok(())
}

impl WorkTree {
    fn new(repo: &Repository, layout: &Layout, name: &str, path: &Path, base: Oid) -> WorkTree {
        WorkTree {
            path: path.to_path_buf(),
            git_dir: repo.path().join("worktrees").join(name),
            mirror: repo.path().to_path_buf(),
            name: name.to_owned(),
            base,
            removed: false,
            pool: layout.pool.clone(),
            lock_path: layout.lock_path.clone(),
            handed_over: None,
        }
    }

    /// Marks the moment the tree goes to the job: whatever changes after it is the
    /// job's doing and is scrubbed before the tree is reused.
    fn hand_over(&mut self) -> Result<(), GitError> {
        let stamp = scrub::stamp(&self.git_dir.join(STAMP_FILE))
            .map_err(|e| GitError::other("write hand-over stamp", e))?;
        self.handed_over = Some(stamp);
        Ok(())
    }

    /// Turns a tree just taken from the pool (parked at `parked`: a clean checkout of
    /// its detached `HEAD`, the previous job's commit) into a checkout of the base, by
    /// writing only the paths that differ between the two commits, then verifies it.
    fn reset(&mut self, parked: Stamp) -> Result<(), GitError> {
        let repo = self.open()?;
        let old = repo
            .head()
            .and_then(|h| h.peel_to_tree())
            .map_err(|e| GitError::other("read parked commit", e))?;
        let new = repo
            .find_commit(self.base)
            .and_then(|c| c.tree())
            .map_err(|e| GitError::other("read base tree", e))?;
        let mut paths = Vec::new();
        differing_paths(&repo, Some(&old), Some(&new), &mut Vec::new(), &mut paths)
            .map_err(|e| GitError::other("diff parked and base", e))?;
        // A parked index holds exactly the parked commit (checked when it was parked,
        // and the agent cannot write the metadata), so after writing `paths` only they
        // can differ from the base. libgit2's checkout gets the full comparison.
        let only = paths.is_empty() || apply_paths(&repo, &self.path, &new, &paths)?;
        if !only {
            let mut opts = CheckoutBuilder::new();
            opts.force()
                .recreate_missing(true)
                .disable_pathspec_match(true)
                .disable_filters(!needs_filters(&repo, &new));
            for p in &paths {
                opts.path(Path::new(OsStr::from_bytes(p)));
            }
            repo.checkout_tree(new.as_object(), Some(&mut opts))
                .map_err(|e| GitError::other("check out base", e))?;
        }
        repo.set_head(&format!("refs/heads/{}", self.branch()))
            .map_err(|e| GitError::other("attach job branch", e))?;
        index_matches(&repo, &new, only.then_some(paths.as_slice()))?;
        verify_reused(&repo, &self.path, parked)?;
        self.hand_over()
    }

    /// Scrubs the tree, checks its `HEAD` out again over it (removing untracked and
    /// ignored files) and moves it into a free parking slot; `Ok(false)` when it cannot
    /// be parked (pool off or full, tree refused or not clean) and must be deleted.
    fn park(&self) -> Result<bool, GitError> {
        let Some(handed_over) = self.handed_over.filter(|_| self.pool.enabled()) else {
            return Ok(false);
        };
        if scrub::scrub(&self.path, handed_over).is_err() {
            return Ok(false);
        }
        let repo = self.open()?;
        let head = repo
            .head()
            .and_then(|h| h.peel_to_tree())
            .map_err(|e| GitError::other("read job commit", e))?;
        let mut opts = CheckoutBuilder::new();
        opts.force()
            .recreate_missing(true)
            .remove_untracked(true)
            .remove_ignored(true)
            .disable_filters(!needs_filters(&repo, &head));
        if repo.checkout_head(Some(&mut opts)).is_err() || verify_clean(&repo).is_err() {
            return Ok(false);
        }
        // Directories changed after this get their flags and attributes checked again
        // when the tree is taken.
        scrub::stamp(&self.git_dir.join(STAMP_FILE))
            .map_err(|e| GitError::other("write parking stamp", e))?;
        let _lock = lock_exclusive(&self.lock_path)?;
        let mirror =
            Repository::open_bare(&self.mirror).map_err(|e| GitError::other("open mirror", e))?;
        Ok(self
            .pool
            .park(&mirror, &self.name, &self.path)
            .unwrap_or(false))
    }

    /// The checked-out files.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The git dir the tree's `.git` file points to (`<mirror>/worktrees/<job_id>`). Git
    /// inside the tree also reads the mirror itself (its `commondir`).
    pub fn git_dir(&self) -> PathBuf {
        self.git_dir.clone()
    }

    /// The local branch the job commits on, e.g. `repobox-job/01J...`.
    pub fn branch(&self) -> String {
        branch_name(&self.name)
    }

    /// Repo-relative paths that differ from the base commit: added, modified, deleted
    /// or renamed (both names), including untracked files that `.gitignore` admits.
    pub fn changed_paths(&self) -> Result<Vec<String>, GitError> {
        let repo = self.open()?;
        let base_tree = repo
            .find_commit(self.base)
            .and_then(|c| c.tree())
            .map_err(|e| GitError::other("read base commit", e))?;
        let mut opts = DiffOptions::new();
        opts.include_untracked(true).recurse_untracked_dirs(true);
        let mut diff = repo
            .diff_tree_to_workdir_with_index(Some(&base_tree), Some(&mut opts))
            .map_err(|e| GitError::other("diff work tree", e))?;
        find_renames(&mut diff, true)?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path() {
                    paths.insert(p.to_string_lossy().into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Stages everything (like `git add -A`, honouring `.gitignore`) and commits on the
    /// job branch with `author` as author and committer. `None` when nothing changed.
    pub fn commit_all(
        &self,
        author_name: &str,
        author_email: &str,
        message: &str,
    ) -> Result<Option<CommitInfo>, GitError> {
        let repo = self.open()?;
        let tree_id = stage_all(&repo)?;
        let parent = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| GitError::other("read job branch", e))?;
        if parent.tree_id() == tree_id {
            return Ok(None);
        }
        let sig = Signature::now(author_name, author_email)
            .map_err(|e| GitError::other("commit author", e))?;
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| GitError::other("read staged tree", e))?;
        let message = git2::message_prettify(message, None)
            .map_err(|e| GitError::other("commit message", e))?;
        let oid = repo
            .commit(Some("HEAD"), &sig, &sig, &message, &tree, &[&parent])
            .map_err(|e| GitError::other("commit", e))?;
        let parent_tree = parent
            .tree()
            .map_err(|e| GitError::other("read parent tree", e))?;
        let mut diff = repo
            .diff_tree_to_tree(Some(&parent_tree), Some(&tree), None)
            .map_err(|e| GitError::other("diff commit", e))?;
        find_renames(&mut diff, false)?;
        Ok(Some(commit_info(oid, &diff)?))
    }

    /// Pushes the job branch to `refs/heads/<remote_branch>` at `url` (`force` = `+`
    /// refspec). A ref the remote declines, or a non-fast-forward, is `Rejected`.
    pub fn push(
        &self,
        url: &str,
        creds: &Credentials,
        remote_branch: &str,
        force: bool,
    ) -> Result<(), GitError> {
        let repo = self.open()?;
        let shown_url = transport::clean(url, &creds.password);
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| GitError::other(&format!("remote {shown_url}"), e))?;
        let refspec = format!(
            "{}refs/heads/{}:refs/heads/{remote_branch}",
            if force { "+" } else { "" },
            self.branch()
        );
        let attempts = AuthAttempts::default();
        let rejection = RefCell::new(None::<String>);
        let remote_says = RefCell::new(String::new());
        let mut cbs = transport::callbacks(creds, &attempts);
        cbs.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                *rejection.borrow_mut() = Some(format!("{refname}: {msg}"));
            }
            Ok(())
        });
        cbs.sideband_progress(|data| {
            remote_says
                .borrow_mut()
                .push_str(&String::from_utf8_lossy(data));
            true
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cbs);
        let result = remote.push(&[refspec.as_str()], Some(&mut opts));
        drop(opts);
        let said = transport::clean(&remote_says.borrow(), &creds.password);
        let context = |text: String| with_remote_output(text, &said);
        if let Some(reason) = rejection.borrow_mut().take() {
            return Err(GitError::Rejected(context(reason)));
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::NotFastForward => Err(GitError::Rejected(context(
                transport::clean(e.message(), &creds.password),
            ))),
            Err(e) => match transport::map_remote_error(
                &format!("push to {shown_url}"),
                &e,
                &creds.password,
                &attempts,
            ) {
                GitError::Other(text) if remote_declined(&text) => {
                    Err(GitError::Rejected(context(text)))
                }
                other => Err(other),
            },
        }
    }

    /// Ends the job's use of the tree: its directory, worktree metadata and job branch
    /// disappear from where the job saw them. The tree is scrubbed and parked for the
    /// next job of the repository when the pool has room and the scrub succeeds;
    /// otherwise it is deleted.
    pub fn remove(mut self) -> Result<(), GitError> {
        self.removed = true;
        if self.park().unwrap_or(false) {
            return Ok(());
        }
        // Under the mirror lock: libgit2 (1.9) reads a work tree whose metadata is being
        // removed as "checked out", which failed another job's `add_worktree`.
        let _lock = lock_exclusive(&self.lock_path)?;
        let repo =
            Repository::open_bare(&self.mirror).map_err(|e| GitError::other("open mirror", e))?;
        remove_leftover(&repo, &self.name, &self.path)
    }

    /// Opens the tree through its metadata dir, not through the `.git` file in the tree,
    /// which the agent could have rewritten to point elsewhere.
    fn open(&self) -> Result<Repository, GitError> {
        let repo =
            Repository::open(&self.git_dir).map_err(|e| GitError::other("open work tree", e))?;
        let workdir = repo.workdir().map(|p| p.canonicalize().ok());
        if workdir != Some(self.path.canonicalize().ok()) {
            return Err(GitError::Other(format!(
                "work tree metadata does not point at {}",
                self.path.display()
            )));
        }
        Ok(repo)
    }
}

impl Drop for WorkTree {
    fn drop(&mut self) {
        if !self.removed
            && let Ok(_lock) = lock_exclusive(&self.lock_path)
            && let Ok(repo) = Repository::open_bare(&self.mirror)
        {
            let _ = remove_leftover(&repo, &self.name, &self.path);
        }
    }
}

/// Stages every change in the work tree, deletions included; returns the tree id.
fn stage_all(repo: &Repository) -> Result<Oid, GitError> {
    let mut index = repo.index().map_err(|e| GitError::other("read index", e))?;
    // A nested repository the agent made (e.g. a clone under `vendor/`) comes back as
    // a path ending in `/`, which libgit2 cannot add; it is left out of the commit.
    let mut skip_nested =
        |path: &Path, _: &[u8]| -> i32 { i32::from(path.to_string_lossy().ends_with("/")) };
    index
        .add_all(
            ["*"],
            IndexAddOption::DEFAULT,
            Some(&mut skip_nested as &mut git2::IndexMatchedPath<'_>),
        )
        .and_then(|()| index.update_all(["*"], None))
        .and_then(|()| index.write())
        .map_err(|e| GitError::other("stage changes", e))?;
    index
        .write_tree()
        .map_err(|e| GitError::other("write tree", e))
}

fn find_renames(diff: &mut Diff<'_>, untracked: bool) -> Result<(), GitError> {
    let mut opts = DiffFindOptions::new();
    opts.renames(true).for_untracked(untracked);
    diff.find_similar(Some(&mut opts))
        .map_err(|e| GitError::other("find renames", e))
}

/// Per-file and total line counts of a commit's diff.
fn commit_info(oid: Oid, diff: &Diff<'_>) -> Result<CommitInfo, GitError> {
    let mut files = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let patch = Patch::from_diff(diff, i).map_err(|e| GitError::other("diff stats", e))?;
        let (additions, deletions) = match patch {
            Some(p) => p
                .line_stats()
                .map(|(_, add, del)| (add, del))
                .map_err(|e| GitError::other("diff stats", e))?,
            None => (0, 0),
        };
        files.push(FileChange {
            path,
            additions,
            deletions,
        });
    }
    Ok(CommitInfo {
        sha: oid.to_string(),
        additions: files.iter().map(|f| f.additions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        files,
    })
}

/// Whether a push error text is the remote refusing the update rather than a failure
/// to talk to it.
fn remote_declined(text: &str) -> bool {
    [
        "hook declined",
        "non-fast-forward",
        "rejected",
        "protected branch",
    ]
    .iter()
    .any(|needle| text.to_ascii_lowercase().contains(needle))
}

/// `text`, followed by what the remote printed (e.g. a hook's reason), if anything.
fn with_remote_output(text: String, said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .flat_map(|l| l.split('\r'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        text
    } else {
        format!("{text} (remote: {})", lines.join(" / "))
    }
}
