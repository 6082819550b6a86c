//! Crate-owned domain types. Forge payload and API types are converted into these at the
//! edge (`src/forges`); nothing outside `forges` sees an octocrab or gitlab type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which forge something lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    GitHub,
    GitLab,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForgeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "github" => Ok(ForgeKind::GitHub),
            "gitlab" => Ok(ForgeKind::GitLab),
            other => Err(format!("unknown forge `{other}`")),
        }
    }
}

/// A repository (GitHub `owner/name`, GitLab `group/sub/project`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    pub forge: ForgeKind,
    /// `owner/name` or the GitLab `path_with_namespace`.
    pub full_name: String,
    /// The forge's numeric id (GitHub repository id, GitLab project id).
    pub id: Option<u64>,
    /// GitHub App installation that delivered the event, when the payload names it.
    pub installation_id: Option<u64>,
}

impl RepoRef {
    /// GitHub `(owner, name)`; GitLab paths split at the last `/`.
    pub fn owner_and_name(&self) -> (&str, &str) {
        self.full_name
            .rsplit_once('/')
            .unwrap_or(("", self.full_name.as_str()))
    }
}

/// What kind of conversation a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadKind {
    Issue,
    PullRequest,
    MergeRequest,
}

impl ThreadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadKind::Issue => "issue",
            ThreadKind::PullRequest => "pull_request",
            ThreadKind::MergeRequest => "merge_request",
        }
    }

    pub fn is_change_request(self) -> bool {
        !matches!(self, ThreadKind::Issue)
    }
}

impl FromStr for ThreadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "issue" => Ok(ThreadKind::Issue),
            "pull_request" => Ok(ThreadKind::PullRequest),
            "merge_request" => Ok(ThreadKind::MergeRequest),
            other => Err(format!("unknown thread kind `{other}`")),
        }
    }
}

/// An issue, pull request or merge request: `number` is the GitHub number or GitLab iid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRef {
    pub kind: ThreadKind,
    pub number: u64,
}

impl ThreadRef {
    /// No issue or pull/merge request: a repo + prompt job (SPEC 18), stored as issue 0.
    pub const NONE: ThreadRef = ThreadRef {
        kind: ThreadKind::Issue,
        number: 0,
    };

    /// A repo + prompt job's: nothing on the forge to comment on, read or close.
    pub fn is_none(&self) -> bool {
        self.number == 0
    }

    /// How the forge writes a link to it: `#12`, or `!12` for a GitLab merge request
    /// (GitLab issues are `#12` too); "the dashboard" for [`ThreadRef::NONE`].
    pub fn reference(&self) -> String {
        match self.kind {
            _ if self.is_none() => "the dashboard".to_owned(),
            ThreadKind::MergeRequest => format!("!{}", self.number),
            ThreadKind::Issue | ThreadKind::PullRequest => format!("#{}", self.number),
        }
    }
}

/// A person (or bot) on a forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: u64,
    pub login: String,
    /// The forge marks the account as a bot (GitHub `type: Bot`, GitLab bot users).
    pub is_bot: bool,
}

/// Which comment API a comment id belongs to; reactions and replies differ per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentKind {
    /// GitHub issue or PR conversation comment.
    IssueComment,
    /// GitHub PR review comment (on a diff line).
    ReviewComment,
    /// GitHub PR review body (has no reactions API; the PR itself gets the reaction).
    Review,
    /// GitLab note (on an issue or MR, including diff notes).
    Note,
}

impl CommentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommentKind::IssueComment => "issue_comment",
            CommentKind::ReviewComment => "review_comment",
            CommentKind::Review => "review",
            CommentKind::Note => "note",
        }
    }
}

impl FromStr for CommentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "issue_comment" => Ok(CommentKind::IssueComment),
            "review_comment" => Ok(CommentKind::ReviewComment),
            "review" => Ok(CommentKind::Review),
            "note" => Ok(CommentKind::Note),
            other => Err(format!("unknown comment kind `{other}`")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentRef {
    pub kind: CommentKind,
    pub id: u64,
}

/// File, line and hunk of a review comment or diff note: context for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewContext {
    pub path: String,
    pub line: Option<u64>,
    pub diff_hunk: Option<String>,
}

/// Reactions Repobox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Seen and accepted.
    Eyes,
    /// Not allowed.
    Confused,
}

impl Reaction {
    /// GitHub `content` and GitLab award emoji `name` happen to agree for these two.
    pub fn name(self) -> &'static str {
        match self {
            Reaction::Eyes => "eyes",
            Reaction::Confused => "confused",
        }
    }
}

/// What a user may do in a repository, normalised across forges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessLevel {
    None,
    Read,
    /// GitHub `write`/`maintain`, GitLab Developer (30) or Maintainer (40).
    Write,
    /// GitHub `admin`, GitLab Owner (50) and above.
    Admin,
}

impl AccessLevel {
    pub fn may_run_jobs(self) -> bool {
        self >= AccessLevel::Write
    }
}
