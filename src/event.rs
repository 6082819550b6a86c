//! Typed webhook events, as the rest of Repobox sees them. `src/forges/*/webhook.rs`
//! builds these from GitHub and GitLab payloads; intake decides from them alone. An event
//! carries whether it is confidential (GitLab), so intake can refuse it.

use serde::Serialize;

use crate::model::{CommentRef, RepoRef, ReviewContext, ThreadRef, UserRef};

/// An event Repobox may act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Comment(CommentEvent),
    Labeled(LabelEvent),
    Installation(InstallationEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentAction {
    Created,
    /// Edited; `previous_body` holds the body before the edit when the forge sends it.
    Edited,
    Deleted,
}

/// A comment, review comment, review body or note on an issue / PR / MR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommentEvent {
    pub action: CommentAction,
    pub repo: RepoRef,
    pub thread: ThreadRef,
    pub thread_title: String,
    pub comment: CommentRef,
    pub author: UserRef,
    pub body: String,
    pub previous_body: Option<String>,
    /// Present for review comments and diff notes.
    pub review: Option<ReviewContext>,
    /// Seen by few: a GitLab confidential or internal note, or a note on a
    /// confidential issue. Such events start nothing unless the admin allows it.
    pub confidential: bool,
}

/// Labels added to an issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelEvent {
    pub repo: RepoRef,
    pub thread: ThreadRef,
    pub thread_title: String,
    /// Names of the labels this event added.
    pub added: Vec<String>,
    /// Who added them.
    pub actor: UserRef,
    /// A GitLab confidential issue (see [`CommentEvent::confidential`]).
    pub confidential: bool,
}

/// The GitHub App was installed, removed, or its repository selection changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallationEvent {
    pub installation_id: u64,
    pub action: String,
    pub account: String,
    pub repositories_added: Vec<String>,
    pub repositories_removed: Vec<String>,
}
