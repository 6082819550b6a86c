//! Work handed from intake to the acknowledger through `intake:stream`.
//!
//! Intake stores a task and answers at once; the acknowledger (in `serve`) does the
//! slow, forge-facing part: authorize, react, post the progress comment, dispatch.

use serde::{Deserialize, Serialize};

use crate::job::JobId;
use crate::model::{CommentRef, RepoRef, ThreadRef, UserRef};

/// Where a command came from and who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub repo: RepoRef,
    pub thread: ThreadRef,
    pub thread_title: String,
    /// The comment carrying the command; absent for label triggers.
    pub comment: Option<CommentRef>,
    pub requester: UserRef,
}

/// A reply that needs no job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplyKind {
    Help,
    NearMiss { word: String, suggestion: String },
}

/// One unit of acknowledgement work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// A new job was stored as `queued`: authorize, acknowledge, dispatch to runners.
    Acknowledge { job: JobId },
    /// Answer on the thread (help, "did you mean").
    Reply { origin: Origin, reply: ReplyKind },
    /// Cancel the thread's queued or running job.
    Cancel { origin: Origin },
    /// Re-run the thread's last job.
    Retry { origin: Origin },
    /// Cancel the job named (the dashboard and the API: never "the thread's latest").
    CancelJob { job: JobId, actor: Actor },
    /// Re-run the job named.
    RetryJob { job: JobId, actor: Actor },
}

/// Who acts from the dashboard or the API: their access is what the acknowledger checks,
/// not the job's requester's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Shown on the thread ("cancelled by @login").
    pub login: String,
    /// Admins (`REPOBOX_ADMINS`, the API token) may act on any job they see.
    pub admin: bool,
    /// The forge account the person signed in with; a non-admin needs write access
    /// with it on the job's repository now.
    pub forge_user: Option<UserRef>,
    /// Which forge `forge_user` is on.
    pub forge: Option<crate::model::ForgeKind>,
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Task::Acknowledge { .. } => "acknowledge",
            Task::Reply { .. } => "reply",
            Task::Cancel { .. } => "cancel",
            Task::Retry { .. } => "retry",
            Task::CancelJob { .. } => "cancel_job",
            Task::RetryJob { .. } => "retry_job",
        }
    }
}
