//! The runner's git work, done with libgit2 (`git2`): one bare mirror per repository
//! under the work dir, fetched incrementally, and one linked work tree per job that the
//! agent edits, committed and pushed from.
//!
//! Why mirrors and work trees instead of a clone per job: a warm mirror only needs the
//! new objects, and a work tree shares the mirror's object store, so preparing a job
//! costs a ref negotiation and a checkout instead of a full transfer.
//! A finished job's tree is scrubbed and parked (a few per mirror) so the next job on
//! the repository gets it after writing only the files that differ between the two
//! commits; a tree that is not provably identical to a fresh checkout is deleted
//! instead (see `pool` and `scrub`).
//!
//! Every function blocks (callers wrap them in `tokio::task::spawn_blocking`). Tokens
//! travel only through libgit2's credential callback: they are never part of a URL, a
//! config entry, `FETCH_HEAD`, a reflog or an error text.

mod mirror;
mod pool;
mod scrub;
mod transport;
mod worktree;

pub use mirror::{DiffText, Mirror, Mirrors};
pub use pool::DEFAULT_PARKED_TREES;
pub use worktree::{CommitInfo, FileChange, WorkTree};

use crate::secret::Secret;

/// Username/password for git over HTTPS. GitHub: `("x-access-token", installation
/// token)`; GitLab: `("oauth2", token)`.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        Self {
            username: username.into(),
            password,
        }
    }
}

/// What went wrong with a git operation. Texts never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The remote refused the push (protected branch, non-fast-forward, hook).
    #[error("push rejected: {0}")]
    Rejected(String),
    /// The remote did not accept the credentials (or they lack the permission).
    #[error("git authentication failed: {0}")]
    Auth(String),
    /// Anything else: network, a missing commit, a broken repository, I/O.
    #[error("git error: {0}")]
    Other(String),
}

impl GitError {
    pub(crate) fn other(context: &str, err: impl std::fmt::Display) -> Self {
        GitError::Other(format!("{context}: {err}"))
    }
}

/// Turns a title into a branch slug: lowercase ASCII letters, digits and single dashes,
/// at most 40 characters, no dash at either end; `"change"` when nothing is left.
pub fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            if out.len() == 40 {
                break;
            }
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            if out.len() >= 39 {
                break;
            }
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "change".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_keeps_words_and_single_dashes() {
        assert_eq!(slug("Fix the  README typo!"), "fix-the-readme-typo");
        assert_eq!(slug("--Add CI--"), "add-ci");
        assert_eq!(slug("Ünïcode ça va"), "n-code-a-va");
    }

    #[test]
    fn slug_of_nothing_is_change() {
        assert_eq!(slug(""), "change");
        assert_eq!(slug("!!! ???"), "change");
        assert_eq!(slug("日本語"), "change");
    }

    #[test]
    fn slug_is_at_most_40_chars_without_trailing_dash() {
        let long = "word ".repeat(30);
        let s = slug(&long);
        assert!(s.len() <= 40, "{s}");
        assert!(!s.ends_with('-'), "{s}");
        assert!(s.starts_with("word-word"));
        let exact = "a".repeat(39) + " b";
        assert_eq!(slug(&exact), "a".repeat(39));
        assert_eq!(slug(&"x".repeat(50)), "x".repeat(40));
    }

    #[test]
    fn error_texts_read_like_sentences() {
        let e = GitError::Rejected("pre-receive hook declined".into());
        assert_eq!(e.to_string(), "push rejected: pre-receive hook declined");
    }
}
