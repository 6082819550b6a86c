//! GitLab webhook payloads → crate-owned [`Event`]s.
//!
//! Note Hook (notes on issues and merge requests, diff notes included) and Issue Hook
//! (labels added, from `changes.labels`). GitLab sends no previous body for edited
//! notes, so an edited note never triggers (SPEC section 4's edit rule cannot be checked).
//!
//! Confidential events are marked (`confidential`, SPEC section 14) from every sign
//! GitLab gives: the `Confidential Note Hook` / `Confidential Issue Hook` event names,
//! `event_type` `confidential_note` / `confidential_issue`, a note's
//! `object_attributes.internal` (internal notes) or `confidential` (its older name), and
//! `confidential` on the issue (a note's `issue` object, an issue's `object_attributes`).

use serde::Deserialize;

use crate::event::{CommentAction, CommentEvent, Event, LabelEvent};
use crate::model::{
    CommentKind, CommentRef, ForgeKind, RepoRef, ReviewContext, ThreadKind, ThreadRef, UserRef,
};
use crate::webhooks::PayloadError;

#[derive(Deserialize)]
struct User {
    /// Absent in some older payload samples; 0 then (such a user cannot be authorized).
    #[serde(default)]
    id: u64,
    username: String,
    #[serde(default)]
    bot: Option<bool>,
}

/// GitLab project and group access tokens act through bot users named
/// `project_<id>_bot_<hash>` / `group_<id>_bot_<hash>`.
fn is_bot_username(name: &str) -> bool {
    let mut parts = name.split('_');
    matches!(
        (parts.next(), parts.next().map(|p| p.chars().all(|c| c.is_ascii_digit())), parts.next()),
        (Some("project" | "group"), Some(true), Some(b)) if b.starts_with("bot")
    )
}

impl From<&User> for UserRef {
    fn from(u: &User) -> Self {
        UserRef {
            id: u.id,
            login: u.username.clone(),
            is_bot: u.bot.unwrap_or(false) || is_bot_username(&u.username),
        }
    }
}

#[derive(Deserialize)]
struct Project {
    id: u64,
    path_with_namespace: String,
}

impl From<&Project> for RepoRef {
    fn from(p: &Project) -> Self {
        RepoRef {
            forge: ForgeKind::GitLab,
            full_name: p.path_with_namespace.clone(),
            id: Some(p.id),
            installation_id: None,
        }
    }
}

#[derive(Deserialize)]
struct Position {
    new_path: Option<String>,
    old_path: Option<String>,
    new_line: Option<u64>,
    old_line: Option<u64>,
}

#[derive(Deserialize)]
struct StDiff {
    diff: Option<String>,
}

#[derive(Deserialize)]
struct NoteAttributes {
    id: u64,
    note: String,
    noteable_type: String,
    #[serde(default)]
    system: Option<bool>,
    #[serde(default)]
    action: Option<String>,
    #[serde(rename = "type", default)]
    note_type: Option<String>,
    #[serde(default)]
    position: Option<Position>,
    #[serde(default)]
    st_diff: Option<StDiff>,
    /// An internal note (GitLab 15.0+), seen only by project members with Reporter.
    #[serde(default)]
    internal: Option<bool>,
    /// The older name of `internal`.
    #[serde(default)]
    confidential: Option<bool>,
}

#[derive(Deserialize)]
struct Noteable {
    iid: u64,
    title: String,
    /// Issues only.
    #[serde(default)]
    confidential: Option<bool>,
}

#[derive(Deserialize)]
struct NotePayload {
    #[serde(default)]
    event_type: Option<String>,
    user: User,
    project: Project,
    object_attributes: NoteAttributes,
    issue: Option<Noteable>,
    merge_request: Option<Noteable>,
}

#[derive(Deserialize)]
struct LabelTitle {
    title: String,
}

#[derive(Deserialize)]
struct LabelChange {
    #[serde(default)]
    previous: Vec<LabelTitle>,
    #[serde(default)]
    current: Vec<LabelTitle>,
}

#[derive(Deserialize)]
struct IssueChanges {
    labels: Option<LabelChange>,
}

#[derive(Deserialize)]
struct IssueAttributes {
    iid: u64,
    title: String,
    #[serde(default)]
    confidential: Option<bool>,
}

#[derive(Deserialize)]
struct IssuePayload {
    #[serde(default)]
    event_type: Option<String>,
    user: User,
    project: Project,
    object_attributes: IssueAttributes,
    changes: Option<IssueChanges>,
}

fn typed<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|e| PayloadError::new(format!("`{event}` payload: {e}")))
}

/// Parses a delivery by its `X-Gitlab-Event` header.
pub fn parse(event: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    match event {
        "Note Hook" | "Confidential Note Hook" => parse_note(event, body),
        "Issue Hook" | "Confidential Issue Hook" => parse_issue(event, body),
        _ => {
            // Still refuse bodies that are not JSON at all.
            let _: serde::de::IgnoredAny = typed(event, body)?;
            Ok(None)
        }
    }
}

fn parse_note(event: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    let p: NotePayload = typed(event, body)?;
    let attrs = p.object_attributes;
    let confidential = event == "Confidential Note Hook"
        || p.event_type.as_deref() == Some("confidential_note")
        || attrs.internal == Some(true)
        || attrs.confidential == Some(true)
        || p.issue.as_ref().and_then(|i| i.confidential) == Some(true);
    if attrs.system == Some(true) {
        return Ok(None);
    }
    let (kind, noteable) = match attrs.noteable_type.as_str() {
        "Issue" => (ThreadKind::Issue, p.issue),
        "MergeRequest" => (ThreadKind::MergeRequest, p.merge_request),
        _ => return Ok(None),
    };
    let Some(noteable) = noteable else {
        return Err(PayloadError::new(format!(
            "`{event}` payload: note on {} without its `{}` object",
            attrs.noteable_type,
            if kind == ThreadKind::Issue {
                "issue"
            } else {
                "merge_request"
            }
        )));
    };
    let action = match attrs.action.as_deref() {
        None | Some("create") => CommentAction::Created,
        Some("update") => CommentAction::Edited,
        Some(_) => return Ok(None),
    };
    let review = if attrs.note_type.as_deref() == Some("DiffNote") {
        attrs.position.map(|pos| ReviewContext {
            path: pos.new_path.or(pos.old_path).unwrap_or_default(),
            line: pos.new_line.or(pos.old_line),
            diff_hunk: attrs.st_diff.and_then(|d| d.diff),
        })
    } else {
        None
    };
    Ok(Some(Event::Comment(CommentEvent {
        action,
        repo: RepoRef::from(&p.project),
        thread: ThreadRef {
            kind,
            number: noteable.iid,
        },
        thread_title: noteable.title,
        comment: CommentRef {
            kind: CommentKind::Note,
            id: attrs.id,
        },
        author: UserRef::from(&p.user),
        body: attrs.note,
        previous_body: None,
        review,
        confidential,
    })))
}

fn parse_issue(event: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    let p: IssuePayload = typed(event, body)?;
    let confidential = event == "Confidential Issue Hook"
        || p.event_type.as_deref() == Some("confidential_issue")
        || p.object_attributes.confidential == Some(true);
    let Some(labels) = p.changes.and_then(|c| c.labels) else {
        return Ok(None);
    };
    let added: Vec<String> = labels
        .current
        .into_iter()
        .map(|l| l.title)
        .filter(|t| !labels.previous.iter().any(|prev| &prev.title == t))
        .collect();
    if added.is_empty() {
        return Ok(None);
    }
    Ok(Some(Event::Labeled(LabelEvent {
        repo: RepoRef::from(&p.project),
        thread: ThreadRef {
            kind: ThreadKind::Issue,
            number: p.object_attributes.iid,
        },
        thread_title: p.object_attributes.title,
        added,
        actor: UserRef::from(&p.user),
        confidential,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gitlab/docs/");
        serde_json::from_str(&std::fs::read_to_string(format!("{path}{rel}")).unwrap()).unwrap()
    }

    fn confidential(event: &str, payload: &serde_json::Value) -> bool {
        match parse(event, &serde_json::to_vec(payload).unwrap()).unwrap() {
            Some(Event::Comment(c)) => c.confidential,
            Some(Event::Labeled(l)) => l.confidential,
            other => panic!("{event}: {other:?}"),
        }
    }

    /// The documented payloads, each changed in one place to carry one sign of
    /// confidentiality.
    #[test]
    fn every_sign_of_a_confidential_note_or_issue_is_seen() {
        let note = fixture("note_hook.issue.json");
        assert!(!confidential("Note Hook", &note));
        assert!(confidential("Confidential Note Hook", &note));
        let mut typed = note.clone();
        typed["event_type"] = "confidential_note".into();
        assert!(confidential("Note Hook", &typed));
        let mut internal = note.clone();
        internal["object_attributes"]["internal"] = true.into();
        assert!(confidential("Note Hook", &internal));
        let mut old_name = note.clone();
        old_name["object_attributes"]["confidential"] = true.into();
        assert!(confidential("Note Hook", &old_name));
        let mut on_issue = note.clone();
        on_issue["issue"]["confidential"] = true.into();
        assert!(confidential("Note Hook", &on_issue));
        let mut not_internal = note;
        not_internal["object_attributes"]["internal"] = false.into();
        assert!(!confidential("Note Hook", &not_internal));

        let issue = fixture("issue_hook.labels_changed.json");
        assert!(!confidential("Issue Hook", &issue));
        assert!(confidential("Confidential Issue Hook", &issue));
        let mut typed = issue.clone();
        typed["event_type"] = "confidential_issue".into();
        assert!(confidential("Issue Hook", &typed));
        let mut flagged = issue;
        flagged["object_attributes"]["confidential"] = true.into();
        assert!(confidential("Issue Hook", &flagged));
    }

    #[test]
    fn token_bot_users_are_bots() {
        assert!(is_bot_username("project_42_bot_3f2a"));
        assert!(is_bot_username("group_7_bot"));
        assert!(!is_bot_username("project_lead"));
        assert!(!is_bot_username("root"));
    }
}
