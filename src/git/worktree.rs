//! Job work trees: a linked work tree of a bare mirror at `<workdir>/trees/<job_id>`,
//! on its own branch `repobox-job/<job_id>`. The agent edits plain files there; this
//! module lists what changed, commits it and pushes the branch.
//!
//! A work tree shares the mirror's objects, so creating one costs only a checkout. Its
//! metadata (`HEAD`, `index`) lives in `<mirror>/worktrees/<job_id>`, which the sandbox
//! binds read-only.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{
    BranchType, Commit, Diff, DiffFindOptions, DiffOptions, ErrorCode, IndexAddOption, Oid, Patch,
    PushOptions, Repository, Signature, Time, Tree, TreeWalkMode, TreeWalkResult,
    WorktreeAddOptions, WorktreePruneOptions,
};

use super::mirror::sanitize_component;
use super::transport::{self, AuthAttempts};
use super::{Credentials, GitError};

/// Prefix of the local branch each job works on.
const JOB_BRANCH_PREFIX: &str = "repobox-job/";

/// A checked-out job work tree. Removed (best effort) when dropped.
#[derive(Debug)]
pub struct WorkTree {
    path: PathBuf,
    git_dir: PathBuf,
    mirror: PathBuf,
    /// Worktree name in the mirror, also the last part of the branch name.
    name: String,
    base: Oid,
    removed: bool,
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

/// Creates the work tree for `job_id` under `trees` from the bare mirror `repo`,
/// replacing a leftover one of the same job.
pub(super) fn add(
    repo: &Repository,
    trees: &Path,
    job_id: &str,
    base_sha: &str,
) -> Result<WorkTree, GitError> {
    let name = sanitize_component(job_id);
    let path = trees.join(&name);
    remove_leftover(repo, &name, &path)?;
    let base = Oid::from_str(base_sha)
        .map_err(|_| GitError::Other(format!("not a commit id: {base_sha:?}")))?;
    let commit = repo
        .find_commit(base)
        .map_err(|e| GitError::other(&format!("commit {base_sha} is not in the mirror"), e))?;
    // libgit2's own checkout inside `git_worktree_add` cannot be tuned and is about
    // twice as slow as ours, so the tree is created on an empty commit and then
    // checked out at the base.
    let placeholder = empty_commit(repo)?;
    let mut branch = repo
        .branch(&branch_name(&name), &placeholder, true)
        .map_err(|e| GitError::other("create job branch", e))?;
    std::fs::create_dir_all(trees)
        .map_err(|e| GitError::other(&format!("create {}", trees.display()), e))?;
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(branch.get()));
    let worktree = repo
        .worktree(&name, &path, Some(&opts))
        .map_err(|e| GitError::other("add work tree", e))?;
    let tree_repo = Repository::open_from_worktree(&worktree)
        .map_err(|e| GitError::other("open work tree", e))?;
    // From here on a failure drops `tree`, which removes the half-made work tree.
    let tree = WorkTree {
        path,
        git_dir: tree_repo.path().to_path_buf(),
        mirror: repo.path().to_path_buf(),
        name,
        base,
        removed: false,
    };
    branch
        .get_mut()
        .set_target(commit.id(), "repobox: job base")
        .map_err(|e| GitError::other("point job branch at base", e))?;
    checkout_base(&tree_repo, &commit)?;
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
    let eol_config = repo.config().is_ok_and(|c| {
        c.get_string("core.autocrlf").is_ok_and(|v| v != "false")
            || c.get_string("core.eol").is_ok()
    });
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

fn branch_name(name: &str) -> String {
    format!("{JOB_BRANCH_PREFIX}{name}")
}

/// Removes what a crashed runner may have left for `name`: the worktree metadata, the
/// directory and the branch.
fn remove_leftover(repo: &Repository, name: &str, path: &Path) -> Result<(), GitError> {
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = WorktreePruneOptions::new();
        opts.valid(true).locked(true).working_tree(true);
        wt.prune(Some(&mut opts))
            .map_err(|e| GitError::other("prune work tree", e))?;
    }
    remove_dir_if_present(path)?;
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
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GitError::other(&format!("remove {}", path.display()), e)),
    }
}

impl WorkTree {
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

    /// Removes the directory, the worktree metadata in the mirror and the job branch.
    pub fn remove(mut self) -> Result<(), GitError> {
        self.removed = true;
        let repo =
            Repository::open_bare(&self.mirror).map_err(|e| GitError::other("open mirror", e))?;
        remove_leftover(&repo, &self.name, &self.path)
    }

    fn open(&self) -> Result<Repository, GitError> {
        Repository::open(&self.path).map_err(|e| GitError::other("open work tree", e))
    }
}

impl Drop for WorkTree {
    fn drop(&mut self) {
        if !self.removed
            && let Ok(repo) = Repository::open_bare(&self.mirror)
        {
            let _ = remove_leftover(&repo, &self.name, &self.path);
        }
    }
}

/// Stages every change in the work tree, deletions included; returns the tree id.
fn stage_all(repo: &Repository) -> Result<Oid, GitError> {
    let mut index = repo.index().map_err(|e| GitError::other("read index", e))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
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
