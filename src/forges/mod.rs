//! Forge adapters: everything that speaks GitHub or GitLab. Webhook payloads are turned
//! into crate-owned [`crate::event::Event`]s here (`*/webhook.rs`), and the [`Forge`]
//! trait is the one seam through which the rest of Repobox calls a forge's API.
//! No octocrab or gitlab type leaves this module.

pub mod github;
pub mod gitlab;

use std::sync::Arc;

use async_trait::async_trait;

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
