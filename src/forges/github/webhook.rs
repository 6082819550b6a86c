//! GitHub webhook payloads → crate-owned [`Event`]s.
//!
//! Only the fields Repobox needs are declared; unknown fields are ignored, so newer
//! payloads keep working. Events and actions Repobox does not act on give `Ok(None)`.

use serde::Deserialize;

use crate::event::{CommentAction, CommentEvent, Event, InstallationEvent, LabelEvent};
use crate::model::{
    CommentKind, CommentRef, ForgeKind, RepoRef, ReviewContext, ThreadKind, ThreadRef, UserRef,
};
use crate::webhooks::PayloadError;

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

impl From<&User> for UserRef {
    fn from(u: &User) -> Self {
        UserRef {
            id: u.id,
            login: u.login.clone(),
            is_bot: u.kind.as_deref() == Some("Bot") || u.login.ends_with("[bot]"),
        }
    }
}

#[derive(Deserialize)]
struct Repository {
    id: u64,
    full_name: String,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

fn repo_ref(repo: &Repository, installation: &Option<Installation>) -> RepoRef {
    RepoRef {
        forge: ForgeKind::GitHub,
        full_name: repo.full_name.clone(),
        id: Some(repo.id),
        installation_id: installation.as_ref().map(|i| i.id),
    }
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    title: String,
}

#[derive(Deserialize)]
struct BodyChange {
    from: String,
}

#[derive(Deserialize)]
struct Changes {
    body: Option<BodyChange>,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    body: Option<String>,
    user: User,
}

#[derive(Deserialize)]
struct IssueCommentPayload {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repository,
    sender: User,
    installation: Option<Installation>,
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct IssuesPayload {
    issue: Issue,
    label: Option<Label>,
    repository: Repository,
    sender: User,
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct ReviewComment {
    id: u64,
    body: Option<String>,
    user: User,
    path: String,
    line: Option<u64>,
    original_line: Option<u64>,
    diff_hunk: Option<String>,
}

#[derive(Deserialize)]
struct ReviewCommentPayload {
    action: String,
    pull_request: PullRequest,
    comment: ReviewComment,
    repository: Repository,
    sender: User,
    installation: Option<Installation>,
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct Review {
    id: u64,
    body: Option<String>,
    user: User,
}

#[derive(Deserialize)]
struct ReviewPayload {
    review: Review,
    pull_request: PullRequest,
    repository: Repository,
    sender: User,
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct Account {
    login: String,
}

#[derive(Deserialize)]
struct InstallationInfo {
    id: u64,
    account: Account,
}

#[derive(Deserialize)]
struct RepoName {
    full_name: String,
}

#[derive(Deserialize)]
struct InstallationPayload {
    action: String,
    installation: InstallationInfo,
    #[serde(default)]
    repositories: Option<Vec<RepoName>>,
    #[serde(default)]
    repositories_added: Option<Vec<RepoName>>,
    #[serde(default)]
    repositories_removed: Option<Vec<RepoName>>,
}

/// Just the `action`, read first so that actions Repobox ignores are not parsed in full.
#[derive(Deserialize)]
struct ActionOnly {
    #[serde(default)]
    action: Option<String>,
}

fn typed<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::new(format!("`{event}` payload: {e}")))
}

fn comment_action(action: &str) -> Option<CommentAction> {
    match action {
        "created" => Some(CommentAction::Created),
        "edited" => Some(CommentAction::Edited),
        "deleted" => Some(CommentAction::Deleted),
        _ => None,
    }
}

/// The requester of a comment event: the sender (for an edit, whoever edited), flagged
/// as a bot when either the sender or the comment's author is one.
fn requester(sender: &User, author: &User) -> UserRef {
    let mut user = UserRef::from(sender);
    user.is_bot |= UserRef::from(author).is_bot;
    user
}

/// Parses a delivery by its `X-GitHub-Event` name.
pub fn parse(event: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    let head: ActionOnly = typed(event, body)?;
    let action = head.action.as_deref().unwrap_or_default();
    let parsed = match (event, action) {
        ("issue_comment", _) => {
            let p: IssueCommentPayload = typed(event, body)?;
            let Some(action) = comment_action(&p.action) else {
                return Ok(None);
            };
            let kind = if p.issue.pull_request.is_some() {
                ThreadKind::PullRequest
            } else {
                ThreadKind::Issue
            };
            Event::Comment(CommentEvent {
                action,
                repo: repo_ref(&p.repository, &p.installation),
                thread: ThreadRef {
                    kind,
                    number: p.issue.number,
                },
                thread_title: p.issue.title,
                comment: CommentRef {
                    kind: CommentKind::IssueComment,
                    id: p.comment.id,
                },
                author: requester(&p.sender, &p.comment.user),
                body: p.comment.body.unwrap_or_default(),
                previous_body: p.changes.and_then(|c| c.body).map(|b| b.from),
                review: None,
                confidential: false,
            })
        }
        ("issues", "labeled") => {
            let p: IssuesPayload = typed(event, body)?;
            if p.issue.pull_request.is_some() {
                return Ok(None);
            }
            Event::Labeled(LabelEvent {
                repo: repo_ref(&p.repository, &p.installation),
                thread: ThreadRef {
                    kind: ThreadKind::Issue,
                    number: p.issue.number,
                },
                thread_title: p.issue.title,
                added: p.label.into_iter().map(|l| l.name).collect(),
                actor: UserRef::from(&p.sender),
                confidential: false,
            })
        }
        ("pull_request_review_comment", _) => {
            let p: ReviewCommentPayload = typed(event, body)?;
            let Some(action) = comment_action(&p.action) else {
                return Ok(None);
            };
            Event::Comment(CommentEvent {
                action,
                repo: repo_ref(&p.repository, &p.installation),
                thread: ThreadRef {
                    kind: ThreadKind::PullRequest,
                    number: p.pull_request.number,
                },
                thread_title: p.pull_request.title,
                comment: CommentRef {
                    kind: CommentKind::ReviewComment,
                    id: p.comment.id,
                },
                author: requester(&p.sender, &p.comment.user),
                body: p.comment.body.unwrap_or_default(),
                previous_body: p.changes.and_then(|c| c.body).map(|b| b.from),
                review: Some(ReviewContext {
                    path: p.comment.path,
                    line: p.comment.line.or(p.comment.original_line),
                    diff_hunk: p.comment.diff_hunk,
                }),
                confidential: false,
            })
        }
        ("pull_request_review", "submitted") => {
            let p: ReviewPayload = typed(event, body)?;
            Event::Comment(CommentEvent {
                action: CommentAction::Created,
                repo: repo_ref(&p.repository, &p.installation),
                thread: ThreadRef {
                    kind: ThreadKind::PullRequest,
                    number: p.pull_request.number,
                },
                thread_title: p.pull_request.title,
                comment: CommentRef {
                    kind: CommentKind::Review,
                    id: p.review.id,
                },
                author: requester(&p.sender, &p.review.user),
                body: p.review.body.unwrap_or_default(),
                previous_body: None,
                review: None,
                confidential: false,
            })
        }
        ("installation" | "installation_repositories", _) => {
            let p: InstallationPayload = typed(event, body)?;
            let names = |v: Option<Vec<RepoName>>| -> Vec<String> {
                v.unwrap_or_default()
                    .into_iter()
                    .map(|r| r.full_name)
                    .collect()
            };
            let mut added = names(p.repositories_added);
            if p.action == "created" {
                added.extend(names(p.repositories));
            }
            Event::Installation(InstallationEvent {
                installation_id: p.installation.id,
                action: format!("{event}.{}", p.action),
                account: p.installation.account.login,
                repositories_added: added,
                repositories_removed: names(p.repositories_removed),
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}
