//! Bare mirrors under `<workdir>/mirrors/`: one per repository, created on first use and
//! fetched incrementally after that. The fetch runs under an exclusive file lock so
//! runners on several threads or processes sharing the work dir never fetch into the
//! same mirror at once.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use git2::{AutotagOption, FetchOptions, FetchPrune, Oid, Repository};

use super::pool::{DEFAULT_PARKED_TREES, Pool};
use super::transport::{self, AuthAttempts};
use super::worktree::{self, Layout, WorkTree};
use super::{Credentials, GitError};

/// Where remote branches land in a mirror.
const ORIGIN_PREFIX: &str = "refs/remotes/origin/";
/// Where extra refs (e.g. `refs/pull/7/head`) land: `refs/remotes/extra/pull/7/head`.
const EXTRA_PREFIX: &str = "refs/remotes/extra/";

/// The set of mirrors (and job work trees) under one work dir (`REPOBOX_WORKDIR`).
#[derive(Debug, Clone)]
pub struct Mirrors {
    workdir: PathBuf,
    parked_trees: usize,
}

impl Mirrors {
    /// Mirrors under `workdir`, keeping up to [`DEFAULT_PARKED_TREES`] parked work trees
    /// per mirror.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        Self {
            workdir: workdir.into(),
            parked_trees: DEFAULT_PARKED_TREES,
        }
    }

    /// How many used work trees each mirror keeps for reuse (`0`: every tree is
    /// deleted when its job ends).
    pub fn parked_trees(mut self, limit: usize) -> Self {
        self.parked_trees = limit;
        self
    }

    /// Makes sure the bare mirror for `key` (a stable id such as
    /// `github/octo-org/hello-world`) exists, then fetches every branch of `url` into
    /// `refs/remotes/origin/*` (pruning deleted ones) and each of `extra_refs` (full
    /// names such as `refs/pull/7/head`) into `refs/remotes/extra/<name without refs/>`.
    pub fn fetch(
        &self,
        key: &str,
        url: &str,
        creds: &Credentials,
        extra_refs: &[&str],
    ) -> Result<Mirror, GitError> {
        let rel = sanitize_key(key);
        let mirrors = self.workdir.join("mirrors");
        let path = mirrors.join(format!("{rel}.git"));
        let lock_path = mirrors.join(format!("{rel}.lock"));
        let refspecs = refspecs(extra_refs)?;
        let _lock = lock_exclusive(&lock_path)?;
        let repo = open_or_init(&path)?;
        fetch_into(&repo, url, creds, &refspecs)?;
        Ok(Mirror {
            path,
            lock_path,
            workdir: self.workdir.clone(),
            parked_trees: self.parked_trees,
        })
    }
}

/// One bare mirror, as left by the last fetch.
#[derive(Debug, Clone)]
pub struct Mirror {
    path: PathBuf,
    lock_path: PathBuf,
    workdir: PathBuf,
    parked_trees: usize,
}

impl Mirror {
    /// The commit `refs/remotes/origin/<branch>` points at, `None` if absent.
    pub fn remote_branch(&self, branch: &str) -> Result<Option<String>, GitError> {
        self.resolve(&format!("{ORIGIN_PREFIX}{branch}"))
    }

    /// The commit a fetched extra ref points at, `None` if absent. Takes the name as
    /// passed to `Mirrors::fetch` (`refs/pull/7/head`).
    pub fn extra_ref(&self, refname: &str) -> Result<Option<String>, GitError> {
        self.resolve(&extra_destination(refname))
    }

    /// The newest commit reachable from `tip` (a SHA), at most `limit` commits back and
    /// not past `stop_at`, whose message has the trailer line `trailer` (e.g.
    /// `Repobox-Job: 01J…`): how a re-delivered job finds the commit an earlier attempt
    /// pushed.
    pub fn commit_with_trailer(
        &self,
        tip: &str,
        stop_at: Option<&str>,
        trailer: &str,
        limit: usize,
    ) -> Result<Option<String>, GitError> {
        for (oid, message) in self.messages(tip, stop_at, limit)? {
            if message.lines().any(|l| l.trim() == trailer) {
                return Ok(Some(oid));
            }
        }
        Ok(None)
    }

    /// The commits from `tip` back to (not past) `stop_at`, newest first, at most
    /// `limit`: each one's id and message.
    fn messages(
        &self,
        tip: &str,
        stop_at: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, GitError> {
        let repo = self.open()?;
        let err = |e| GitError::other("read the commits", e);
        let mut walk = repo.revwalk().map_err(err)?;
        walk.push(Oid::from_str(tip).map_err(err)?).map_err(err)?;
        if let Some(stop) = stop_at.and_then(|s| Oid::from_str(s).ok())
            && repo.find_commit(stop).is_ok()
        {
            walk.hide(stop).map_err(err)?;
        }
        let mut out = Vec::new();
        for oid in walk.take(limit) {
            let oid = oid.map_err(err)?;
            let commit = repo.find_commit(oid).map_err(err)?;
            let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
            out.push((oid.to_string(), message));
        }
        Ok(out)
    }

    /// The job ids named by `Repobox-Job:` trailers of the commits from `tip` back to (not
    /// past) `stop_at`, newest first: which Repobox jobs made a pull/merge request's
    /// commits.
    pub fn job_trailers(
        &self,
        tip: &str,
        stop_at: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, GitError> {
        let mut ids = Vec::new();
        for (_, message) in self.messages(tip, stop_at, limit)? {
            for line in message.lines() {
                if let Some(id) = line.trim().strip_prefix("Repobox-Job: ")
                    && !ids.iter().any(|i| i == id)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    /// Creates a work tree at `<workdir>/trees/<job_id>` on the new branch
    /// `repobox-job/<job_id>` starting at `base_sha`, checked out; replaces a leftover
    /// tree of the same job (a runner that crashed). Reuses a parked tree of this mirror
    /// when there is one: after its reset it shows no difference from the base, not even
    /// an ignored file, or it is deleted and a fresh checkout made instead.
    pub fn add_worktree(&self, job_id: &str, base_sha: &str) -> Result<WorkTree, GitError> {
        let lock = lock_exclusive(&self.lock_path)?;
        let repo = self.open()?;
        let layout = Layout {
            trees: self.workdir.join("trees"),
            pool: Pool::new(&self.path, self.parked_trees),
            lock_path: self.lock_path.clone(),
        };
        worktree::add(&repo, &layout, job_id, base_sha, lock)
    }

    /// The text of `path` in commit `sha` (`None` when the file is absent, is not a
    /// regular file, or is not UTF-8). Read from the object database: no work tree, so
    /// a symlink in the repository cannot point the read elsewhere.
    pub fn read_file(&self, sha: &str, path: &str) -> Result<Option<String>, GitError> {
        let repo = self.open()?;
        let oid = Oid::from_str(sha).map_err(|e| GitError::other("read file", e))?;
        let tree = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| GitError::other("read file", e))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.filemode() != i32::from(git2::FileMode::Blob) {
            return Ok(None);
        }
        let blob = repo
            .find_blob(entry.id())
            .map_err(|e| GitError::other("read file", e))?;
        Ok(std::str::from_utf8(blob.content()).ok().map(str::to_owned))
    }

    /// The unified patch of `merge-base(base, head)..head` (what a pull/merge request
    /// page shows: commits that landed on the base later are not in it), renames
    /// detected, three lines of context. `base` and `head` are commit SHAs or full ref
    /// names present in the mirror.
    ///
    /// The patch holds whole file sections, in path order, as long as they fit in
    /// `max_bytes`; the first section that does not fit ends it (cut at a line end if
    /// nothing else is in the patch yet) and `truncated` is set. Binary files show as a
    /// "Binary files … differ" line. `files` and the line counts always cover the whole
    /// diff.
    pub fn diff(&self, base: &str, head: &str, max_bytes: usize) -> Result<DiffText, GitError> {
        let repo = self.open()?;
        let commit = |rev: &str| {
            repo.revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|e| GitError::other(&format!("diff: resolve {rev:?}"), e))
        };
        let base_commit = commit(base)?;
        let head_commit = commit(head)?;
        let fork_point = repo
            .merge_base(base_commit.id(), head_commit.id())
            .map_err(|e| GitError::other("diff: merge base", e))?;
        let old_tree = repo
            .find_commit(fork_point)
            .and_then(|c| c.tree())
            .map_err(|e| GitError::other("diff: merge base tree", e))?;
        let new_tree = head_commit
            .tree()
            .map_err(|e| GitError::other("diff: head tree", e))?;
        let mut diff = repo
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
            .map_err(|e| GitError::other("diff", e))?;
        diff.find_similar(Some(git2::DiffFindOptions::new().renames(true)))
            .map_err(|e| GitError::other("diff: renames", e))?;
        let stats = diff
            .stats()
            .map_err(|e| GitError::other("diff: stats", e))?;
        let mut out = DiffText {
            additions: stats.insertions(),
            deletions: stats.deletions(),
            ..DiffText::default()
        };
        for (index, delta) in diff.deltas().enumerate() {
            let file = delta.new_file().path().or(delta.old_file().path());
            out.files.push(
                file.map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            if out.truncated {
                continue;
            }
            let section = match git2::Patch::from_diff(&diff, index) {
                Ok(Some(mut patch)) => patch
                    .to_buf()
                    .map(|buf| String::from_utf8_lossy(&buf).into_owned())
                    .map_err(|e| GitError::other("diff: patch text", e))?,
                Ok(None) => continue,
                Err(e) => return Err(GitError::other("diff: patch", e)),
            };
            if out.patch.len() + section.len() <= max_bytes {
                out.patch.push_str(&section);
                out.files_in_patch += 1;
                continue;
            }
            out.truncated = true;
            if out.patch.is_empty() {
                let cut = cut_at_line_end(&section, max_bytes);
                if !cut.is_empty() {
                    out.patch.push_str(cut);
                    out.files_in_patch += 1;
                }
            }
        }
        Ok(out)
    }

    /// The merge base of two commits (SHAs or full ref names), `None` when they share
    /// no history.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, GitError> {
        let repo = self.open()?;
        let commit = |rev: &str| {
            repo.revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|e| GitError::other(&format!("merge base: resolve {rev:?}"), e))
        };
        let (a, b) = (commit(a)?.id(), commit(b)?.id());
        match repo.merge_base(a, b) {
            Ok(oid) => Ok(Some(oid.to_string())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(GitError::other("merge base", e)),
        }
    }

    /// Every path changed by a commit reachable from `head` and not from `since` (both
    /// SHAs; `since` may be absent from the mirror's history, then every ancestor
    /// counts), sorted: a commit's paths against its parent, a merge's only those that
    /// differ from all of its parents (what it adds itself; each side's own commits are
    /// walked too). Renamed and deleted files count by both names. More than `limit`
    /// commits is an error: the caller refuses rather than checks part of the range.
    pub fn paths_changed(
        &self,
        head: &str,
        since: &str,
        limit: usize,
    ) -> Result<Vec<String>, GitError> {
        use std::collections::BTreeSet;
        let repo = self.open()?;
        let err = |e| GitError::other("list changed paths", e);
        let mut walk = repo.revwalk().map_err(err)?;
        walk.push(Oid::from_str(head).map_err(err)?).map_err(err)?;
        if let Ok(stop) = Oid::from_str(since)
            && repo.find_commit(stop).is_ok()
        {
            walk.hide(stop).map_err(err)?;
        }
        let tree_paths = |old: Option<&git2::Tree<'_>>, new: &git2::Tree<'_>| {
            let diff = repo.diff_tree_to_tree(old, Some(new), None).map_err(err)?;
            let mut paths = BTreeSet::new();
            for delta in diff.deltas() {
                for file in [delta.old_file(), delta.new_file()] {
                    if let Some(p) = file.path() {
                        paths.insert(p.to_string_lossy().into_owned());
                    }
                }
            }
            Ok::<_, GitError>(paths)
        };
        let mut all = BTreeSet::new();
        for (n, oid) in walk.enumerate() {
            if n == limit {
                return Err(GitError::Other(format!(
                    "more than {limit} commits to check for protected paths"
                )));
            }
            let commit = repo.find_commit(oid.map_err(err)?).map_err(err)?;
            let tree = commit.tree().map_err(err)?;
            let mut own: Option<BTreeSet<String>> = None;
            if commit.parent_count() == 0 {
                own = Some(tree_paths(None, &tree)?);
            }
            for parent in commit.parents() {
                let paths = tree_paths(Some(&parent.tree().map_err(err)?), &tree)?;
                own = Some(match own {
                    None => paths,
                    Some(before) => before.intersection(&paths).cloned().collect(),
                });
            }
            all.extend(own.unwrap_or_default());
        }
        Ok(all.into_iter().collect())
    }

    /// The bare repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.path).map_err(|e| GitError::other("open mirror", e))
    }

    fn resolve(&self, refname: &str) -> Result<Option<String>, GitError> {
        let repo = self.open()?;
        match repo.refname_to_id(refname) {
            Ok(oid) => Ok(Some(peel_to_commit(&repo, oid)?)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(GitError::other(&format!("read {refname}"), e)),
        }
    }
}

/// A pull/merge request's changes as [`Mirror::diff`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffText {
    /// Unified patch (`diff --git` sections), at most the `max_bytes` asked for.
    pub patch: String,
    /// Every changed path (the new path of a rename, the old one of a deletion), in
    /// the patch's order, including files the patch had no room for.
    pub files: Vec<String>,
    /// How many of `files` have their section (whole, or cut for the first one) in
    /// `patch`.
    pub files_in_patch: usize,
    /// Lines added and removed over the whole diff.
    pub additions: usize,
    pub deletions: usize,
    /// `patch` stops short of the whole diff.
    pub truncated: bool,
}

/// The longest prefix of `text` of at most `max` bytes that ends with a newline.
fn cut_at_line_end(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    }
}

fn peel_to_commit(repo: &Repository, oid: Oid) -> Result<String, GitError> {
    let obj = repo
        .find_object(oid, None)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| GitError::other("peel to commit", e))?;
    Ok(obj.id().to_string())
}

/// The fetch refspecs: all branches, plus one forced refspec per extra ref.
fn refspecs(extra_refs: &[&str]) -> Result<Vec<String>, GitError> {
    let mut specs = vec![format!("+refs/heads/*:{ORIGIN_PREFIX}*")];
    for name in extra_refs {
        let valid = name.starts_with("refs/")
            && !name.contains('*')
            && git2::Reference::is_valid_name(name);
        if !valid {
            return Err(GitError::Other(format!("not a full ref name: {name:?}")));
        }
        specs.push(format!("+{name}:{}", extra_destination(name)));
    }
    Ok(specs)
}

fn extra_destination(refname: &str) -> String {
    format!(
        "{EXTRA_PREFIX}{}",
        refname.strip_prefix("refs/").unwrap_or(refname)
    )
}

/// Fetches `refspecs` from `url` with the token only in the credential callback, an
/// anonymous remote (nothing written to the config) and no `FETCH_HEAD`.
fn fetch_into(
    repo: &Repository,
    url: &str,
    creds: &Credentials,
    refspecs: &[String],
) -> Result<(), GitError> {
    let shown_url = transport::clean(url, &creds.password);
    let attempts = AuthAttempts::default();
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::other(&format!("remote {shown_url}"), e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(transport::callbacks(creds, &attempts))
        .prune(FetchPrune::On)
        .update_fetchhead(false)
        .download_tags(AutotagOption::None);
    remote
        .fetch(refspecs, Some(&mut opts), Some("repobox: fetch"))
        .map_err(|e| {
            transport::map_remote_error(
                &format!("fetch from {shown_url}"),
                &e,
                &creds.password,
                &attempts,
            )
        })
}

/// Opens the bare mirror at `path`, creating it on first use.
fn open_or_init(path: &Path) -> Result<Repository, GitError> {
    if path.join("HEAD").is_file()
        && let Ok(repo) = Repository::open_bare(path)
    {
        return Ok(repo);
    }
    let repo = Repository::init_bare(path).map_err(|e| GitError::other("create mirror", e))?;
    configure(&repo)?;
    Ok(repo)
}

/// Mirror settings: no reflogs (nobody reads them) and no automatic gc by a git CLI
/// that might run against the directory while a work tree is in use.
fn configure(repo: &Repository) -> Result<(), GitError> {
    let mut config = repo
        .config()
        .map_err(|e| GitError::other("mirror config", e))?;
    config
        .set_bool("core.logAllRefUpdates", false)
        .and_then(|()| config.set_i64("gc.auto", 0))
        .map_err(|e| GitError::other("mirror config", e))
}

/// Takes an exclusive lock on `path` (created if needed); released when the file drops.
pub(super) fn lock_exclusive(path: &Path) -> Result<File, GitError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| GitError::other(&format!("create {}", parent.display()), e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| GitError::other(&format!("open {}", path.display()), e))?;
    file.lock()
        .map_err(|e| GitError::other(&format!("lock {}", path.display()), e))?;
    Ok(file)
}

/// A relative path made of safe components (`[A-Za-z0-9._-]`, no leading dot, no
/// empty ones) from a mirror key.
pub(super) fn sanitize_key(key: &str) -> String {
    let parts: Vec<String> = key
        .split(['/', '\\'])
        .filter(|p| !p.is_empty())
        .map(sanitize_component)
        .collect();
    if parts.is_empty() {
        "_".to_owned()
    } else {
        parts.join("/")
    }
}

pub(super) fn sanitize_component(part: &str) -> String {
    let mapped: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if mapped.is_empty() {
        "_".to_owned()
    } else if mapped.starts_with('.') || mapped.ends_with(".lock") || mapped.ends_with(".git") {
        format!("_{mapped}")
            .replace(".lock", "_lock")
            .replace(".git", "_git")
    } else {
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_safe_relative_paths() {
        assert_eq!(
            sanitize_key("github/octo-org/hello-world"),
            "github/octo-org/hello-world"
        );
        assert_eq!(sanitize_key("../../etc/passwd"), "_../_../etc/passwd");
        assert_eq!(sanitize_key("/abs//x y"), "abs/x_y");
        assert_eq!(sanitize_key(""), "_");
        assert_eq!(sanitize_component(""), "_");
        assert_eq!(sanitize_component("job/1"), "job_1");
        assert_eq!(sanitize_component(".."), "_..");
        assert_eq!(
            sanitize_key("gitlab/grp/sub/proj.git"),
            "gitlab/grp/sub/_proj_git"
        );
    }

    #[test]
    fn cuts_end_at_a_line_end_within_the_limit() {
        assert_eq!(cut_at_line_end("ab\ncd\nef", 7), "ab\ncd\n");
        assert_eq!(cut_at_line_end("ab\ncd\nef", 5), "ab\n");
        assert_eq!(cut_at_line_end("abcdef", 3), "");
        assert_eq!(cut_at_line_end("é\né", 2), "");
        assert_eq!(cut_at_line_end("é\né", 3), "é\n");
    }

    #[test]
    fn extra_refs_map_under_extra() {
        assert_eq!(
            extra_destination("refs/pull/7/head"),
            "refs/remotes/extra/pull/7/head"
        );
        let specs = refspecs(&["refs/merge-requests/3/head"]).unwrap();
        assert_eq!(
            specs[1],
            "+refs/merge-requests/3/head:refs/remotes/extra/merge-requests/3/head"
        );
        assert!(refspecs(&["pull/7/head"]).is_err());
        assert!(refspecs(&["refs/pull/*"]).is_err());
        assert!(refspecs(&["refs/bad..name"]).is_err());
    }
}
