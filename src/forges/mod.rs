//! Forge adapters: everything that speaks GitHub or GitLab. Webhook payloads are turned
//! into crate-owned [`crate::event::Event`]s here (`*/webhook.rs`), and the [`Forge`]
//! trait is the one seam through which the rest of Repobox calls a forge's API.
//! No octocrab or gitlab type leaves this module.

pub mod github;
pub mod gitlab;

use std::sync::Arc;

use async_trait::async_trait;

use crate::git::Credentials;
use crate::model::{AccessLevel, CommentRef, ForgeKind, Reaction, RepoRef, ThreadRef, UserRef};

/// A failed forge call. The text is safe to log and to show: it never carries a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    /// Network trouble, 5xx or a rate limit: worth retrying later.
    #[error("{0}")]
    Transient(String),
    /// The forge refused the call (4xx): retrying will not help.
    #[error("{0}")]
    Permanent(String),
}

impl ForgeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ForgeError::Transient(_))
    }

    /// Classifies an HTTP status from a forge.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        if status == 429 || status >= 500 || message.to_lowercase().contains("rate limit") {
            ForgeError::Transient(message)
        } else {
            ForgeError::Permanent(message)
        }
    }
}

/// The forge operations Repobox needs, normalised across GitHub and GitLab.
#[async_trait]
pub trait Forge: Send + Sync + 'static {
    fn kind(&self) -> ForgeKind;

    /// What `user` may do in `repo`, asked of the forge (never taken from the payload).
    async fn access_level(&self, repo: &RepoRef, user: &UserRef)
    -> Result<AccessLevel, ForgeError>;

    /// Adds a reaction (award emoji) to the comment that carried a command.
    async fn react(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment: CommentRef,
        reaction: Reaction,
    ) -> Result<(), ForgeError>;

    /// Posts a comment on the thread; returns its id.
    async fn create_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        body: &str,
    ) -> Result<u64, ForgeError>;

    /// Replaces the body of a comment Repobox posted.
    async fn update_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError>;

    /// The id of the bot's own comment on the thread whose body contains `marker` (the
    /// progress comment's `<!-- repobox:job:<id> -->`), if there is one: what an
    /// acknowledgement or a runner looks up before it posts, so a re-run posts no
    /// second comment.
    async fn find_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let _ = (repo, thread, marker);
        Ok(None)
    }

    /// Clone URL and default branch.
    async fn repository(&self, repo: &RepoRef) -> Result<RepoInfo, ForgeError>;

    /// Credentials for git over HTTPS, scoped as narrowly as the forge allows (GitHub: a
    /// token for this one repository with contents and pull-request write access).
    async fn git_credentials(&self, repo: &RepoRef) -> Result<Credentials, ForgeError>;

    /// A pull/merge request by number.
    async fn change_request(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeRequest, ForgeError>;

    /// The open pull/merge request whose head is `head_branch` in this repository, if any.
    async fn find_change_request(
        &self,
        repo: &RepoRef,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError>;

    /// Opens a pull/merge request from `new.head` into `new.base`.
    async fn open_change_request(
        &self,
        repo: &RepoRef,
        new: NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError>;

    /// Author identity of the bot's commits.
    async fn bot_identity(&self, repo: &RepoRef) -> Result<GitIdentity, ForgeError>;

    /// `Co-authored-by:` identity of a user.
    fn co_author(&self, user: &UserRef) -> GitIdentity;

    /// The repositories the bot may act on (GitHub: those of the App's installations;
    /// GitLab: the projects where the bot user is at least Developer), as
    /// `owner/name`, sorted; at most a few hundred (first pages only).
    async fn reachable_repositories(&self) -> Result<Vec<String>, ForgeError>;

    /// The thread's opening text and its discussion, oldest comment first, for the
    /// agent's context. Raw forge text: the caller sanitises it.
    async fn discussion(&self, repo: &RepoRef, thread: ThreadRef)
    -> Result<Discussion, ForgeError>;
}

/// An issue's or pull/merge request's text as the forge has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discussion {
    pub title: String,
    /// The opening post (issue or PR/MR description); empty when there is none.
    pub body: String,
    /// Comments in the order they were written, at most [`DISCUSSION_MAX_COMMENTS`]
    /// (the latest ones when there are more).
    pub comments: Vec<DiscussionComment>,
    /// Comments left out because there were more than the limit.
    pub omitted: usize,
}

/// Most comments [`Forge::discussion`] returns.
pub const DISCUSSION_MAX_COMMENTS: usize = 50;

/// Collects a thread's comments oldest first and keeps the latest
/// [`DISCUSSION_MAX_COMMENTS`], counting the rest (both forge adapters page through it).
#[derive(Debug, Default)]
pub(crate) struct LatestComments {
    kept: std::collections::VecDeque<DiscussionComment>,
    omitted: usize,
}

impl LatestComments {
    pub(crate) fn push(&mut self, comment: DiscussionComment) {
        if self.kept.len() == DISCUSSION_MAX_COMMENTS {
            self.kept.pop_front();
            self.omitted += 1;
        }
        self.kept.push_back(comment);
    }

    /// Counts `n` older comments that were never read (pages skipped over).
    pub(crate) fn skipped(&mut self, n: usize) {
        self.omitted += n;
    }

    pub(crate) fn into_discussion(self, title: String, body: String) -> Discussion {
        Discussion {
            title,
            body,
            comments: self.kept.into(),
            omitted: self.omitted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscussionComment {
    /// Login (GitHub) or username (GitLab).
    pub author: String,
    pub body: String,
    /// Written by Repobox itself (its progress comments and replies).
    pub by_bot: bool,
}

/// Where a repository is fetched from and what its default branch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// HTTPS clone URL, without credentials.
    pub clone_url: String,
    pub default_branch: String,
}

/// A pull request (GitHub) or merge request (GitLab), as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub number: u64,
    pub url: String,
    pub head_branch: String,
    pub head_sha: String,
    pub base_branch: String,
    /// The head branch lives in the same repository (not a fork), so the bot may push there.
    pub same_repo: bool,
    /// The ref under which the forge publishes the head in the base repository
    /// (`refs/pull/N/head`, `refs/merge-requests/N/head`).
    pub head_ref: String,
    pub open: bool,
}

/// Calls `f` up to three times while it fails transiently, with a short backoff.
pub async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, ForgeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ForgeError>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.is_transient() && attempt < 3 => {
                tracing::debug!(error = %e, attempt, "forge call failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The bot's comment carrying `marker` on the thread, found (`false`) or posted now
/// (`true`). The post is sent once: after an ambiguous failure (timeout, 5xx) the comment
/// may exist, so the caller tries again later and this looks it up first.
pub async fn find_or_create_comment(
    forge: &dyn Forge,
    repo: &RepoRef,
    thread: ThreadRef,
    marker: &str,
    body: &str,
) -> Result<(u64, bool), ForgeError> {
    match with_retries(|| forge.find_comment(repo, thread, marker)).await {
        Ok(Some(id)) => return Ok((id, false)),
        Ok(None) => {}
        // The forge cannot say (and would refuse the post too, or it is down): try later.
        Err(e) if e.is_transient() => return Err(e),
        // The listing is refused (a token without read access to comments, a thread
        // the API does not list): nothing to find, so post.
        Err(e) => tracing::debug!(error = %e, "comments could not be listed; posting"),
    }
    forge
        .create_comment(repo, thread, body)
        .await
        .map(|id| (id, true))
}

/// What the runner asks the forge to open.
#[derive(Debug, Clone)]
pub struct NewChangeRequest<'a> {
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub draft: bool,
}

/// A name and e-mail for commits (the bot as author, the requester as co-author).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitIdentity {
    pub name: String,
    pub email: String,
}

/// The configured forges.
#[derive(Clone, Default)]
pub struct Forges {
    pub github: Option<Arc<dyn Forge>>,
    pub gitlab: Option<Arc<dyn Forge>>,
}

impl Forges {
    pub fn get(&self, kind: ForgeKind) -> Option<&Arc<dyn Forge>> {
        match kind {
            ForgeKind::GitHub => self.github.as_ref(),
            ForgeKind::GitLab => self.gitlab.as_ref(),
        }
    }
}
