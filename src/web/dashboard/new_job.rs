//! `/jobs/new`: start a job from the dashboard (SPEC §8).
//!
//! The job is the same as a comment-triggered one, only with trigger `dashboard`: it
//! names a repository and, optionally, an issue or pull/merge request (where its
//! progress comment goes and which its PR/MR closes; without one it is a repo + prompt
//! job, SPEC 18: a new branch from the default branch, a PR/MR, progress on the
//! dashboard only), the prompt is its instructions (sanitised like a comment's), and
//! the requester is the forge account the user signed in with. It goes
//! through the acknowledger, which checks that account's write access on the forge
//! before any runner sees the job. Users who signed in with Google or LDAP have no forge
//! account and cannot start jobs.
//!
//! The repository picker suggests the repositories the user can write to, asked with
//! their own OAuth token and cached for five minutes ([`super::picker`]); admins also see
//! those the bot reaches. Any `forge:owner/name` the forge lets the user write to works.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use maud::{Markup, html};
use tower_sessions::Session;

use super::session::SessionUser;
use super::{Page, pages};
use crate::app::AppState;
use crate::commands::sanitize_untrusted;
use crate::job::{Job, TriggerKind};
use crate::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef, UserRef};
use crate::task::Task;

/// Longest prompt accepted, in characters.
const MAX_PROMPT: usize = 20_000;

#[derive(Debug, Default, serde::Deserialize)]
pub struct NewJobForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    prompt: String,
}

fn form_page(
    user: &SessionUser,
    csrf: &str,
    suggestions: &[String],
    form: &NewJobForm,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "New job" }
        div.card {
            @if user.forge_account().is_none() {
                p.error { "Jobs run as a GitHub or GitLab user: sign in with GitHub or GitLab to start one." }
            }
            @if let Some(e) = error { p.error id="form-error" { (e) } }
            form id="new-job" method="post" action="/jobs/new" {
                input type="hidden" name="csrf" value=(csrf);
                div.filters {
                    label { "Repository"
                        input name="repo" list="repos" placeholder="github:owner/name" value=(form.repo) required;
                    }
                    datalist id="repos" { @for r in suggestions { option value=(r) {} } }
                    label { "On"
                        select name="kind" {
                            option value="issue" selected[form.kind != "pull_request" && form.kind != "merge_request"] { "issue" }
                            option value="pull_request" selected[form.kind == "pull_request"] { "pull request" }
                            option value="merge_request" selected[form.kind == "merge_request"] { "merge request" }
                        }
                    }
                    label { "Number (optional)" input name="number" inputmode="numeric" placeholder="none: a new branch and PR" value=(form.number); }
                }
                label { "What should the agent do?"
                    textarea name="prompt" rows="6" required { (form.prompt) }
                }
                p { button type="submit" { "Start" } }
            }
        }
    };
    pages::layout("New job", Some(user), csrf, body)
}

/// Repositories to suggest: those the user can write to, asked with their own token
/// ([`super::picker`]); for admins also those the bot reaches. All within the
/// allow-list.
async fn suggestions(state: &AppState, session: &Session, user: &SessionUser) -> Vec<String> {
    let settings = state.settings.current().await;
    let mut out: BTreeSet<String> = state
        .picker
        .writable(state, session, user)
        .await
        .into_iter()
        .collect();
    if user.admin
        && let Some((forge, _)) = user.forge_account()
        && let Some(client) = state.forges.get(forge)
    {
        match client.reachable_repositories().await {
            Ok(names) => out.extend(names.into_iter().map(|n| format!("{forge}:{n}"))),
            Err(e) => tracing::warn!(error = %e, "cannot list the repositories the bot reaches"),
        }
    }
    out.into_iter()
        .filter(|entry| {
            let Some((forge, name)) = entry.split_once(':') else {
                return false;
            };
            let Ok(forge) = forge.parse::<ForgeKind>() else {
                return false;
            };
            settings.repo_allowed(&RepoRef {
                forge,
                full_name: name.to_owned(),
                id: None,
                installation_id: None,
            })
        })
        .collect()
}

pub async fn page(State(state): State<AppState>, session: Session) -> Page {
    let (user, csrf) = match super::signed_in(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let list = suggestions(&state, &session, &user).await;
    Page::Html(form_page(&user, &csrf, &list, &NewJobForm::default(), None))
}

/// Who starts a job from the dashboard or the API.
pub enum Starter<'a> {
    /// A signed-in user: the job runs as their forge account.
    User(&'a SessionUser),
    /// The admin API token: no forge requester, no access check (SPEC 18).
    ApiToken,
}

/// What a dashboard form or an API call asks for.
pub struct JobAsk<'a> {
    /// `forge:owner/name` (a signed-in user may leave out the forge).
    pub repo: &'a str,
    /// `issue`, `pull_request` or `merge_request`; issue when empty.
    pub kind: &'a str,
    /// The issue or pull/merge request; empty: none, a repo + prompt job.
    pub number: &'a str,
    pub prompt: &'a str,
}

/// The job the form or the call describes, or what is wrong with it.
pub fn job_from(starter: &Starter<'_>, ask: &JobAsk<'_>) -> Result<Job, String> {
    let account = match starter {
        Starter::User(user) => match user.forge_account() {
            Some(account) => Some(account),
            None => return Err("Sign in with GitHub or GitLab to start jobs.".into()),
        },
        Starter::ApiToken => None,
    };
    let repo = ask.repo.trim();
    let (forge, full_name) = match (repo.split_once(':'), account) {
        (Some((f, name)), _) => (
            f.parse::<ForgeKind>()
                .map_err(|_| format!("Unknown forge `{f}`."))?,
            name,
        ),
        (None, Some((forge, _))) => (forge, repo),
        (None, None) => return Err("Name the repository as forge:owner/name.".into()),
    };
    if let Some((signed_in, _)) = account
        && signed_in != forge
    {
        return Err(format!(
            "You signed in with {signed_in}; jobs on {forge} need a {forge} sign-in."
        ));
    }
    let parts: Vec<&str> = full_name.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() < 2
        || !parts.iter().all(|p| valid(p))
        || (forge == ForgeKind::GitHub && parts.len() != 2)
    {
        return Err("Name the repository as owner/name (GitLab: group/…/name).".into());
    }
    let kind = match (ask.kind, forge) {
        ("pull_request", ForgeKind::GitHub) => ThreadKind::PullRequest,
        ("merge_request", ForgeKind::GitLab) => ThreadKind::MergeRequest,
        ("pull_request" | "merge_request", _) => {
            return Err(format!(
                "{forge} calls it a {}.",
                if forge == ForgeKind::GitHub {
                    "pull request"
                } else {
                    "merge request"
                }
            ));
        }
        _ => ThreadKind::Issue,
    };
    // SPEC 18: the issue or pull/merge request is optional.
    let number = ask.number.trim().trim_start_matches(['#', '!']);
    let thread = match number {
        "" => ThreadRef::NONE,
        n => ThreadRef {
            kind,
            number: n.parse().ok().filter(|n| *n > 0).ok_or(
                "The issue or pull/merge request number must be a positive number (or empty).",
            )?,
        },
    };
    let prompt = sanitize_untrusted(ask.prompt.trim()).trim().to_owned();
    if prompt.is_empty() {
        return Err("Write what the agent should do.".into());
    }
    if prompt.chars().count() > MAX_PROMPT {
        return Err(format!(
            "The prompt is longer than {MAX_PROMPT} characters."
        ));
    }
    let title: String = prompt
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    let (trigger, requester) = match (starter, account) {
        (Starter::User(user), Some((_, id))) => (
            TriggerKind::Dashboard,
            UserRef {
                id,
                login: user.login.clone(),
                is_bot: false,
            },
        ),
        _ => (
            TriggerKind::Api,
            UserRef {
                id: 0,
                login: crate::job::API_REQUESTER.to_owned(),
                is_bot: false,
            },
        ),
    };
    Ok(Job::new(
        RepoRef {
            forge,
            full_name: full_name.to_owned(),
            id: None,
            installation_id: None,
        },
        thread,
        title,
        trigger,
        requester,
        prompt,
        time::OffsetDateTime::now_utc(),
    ))
}

/// Why [`start`] stored nothing.
pub enum NotStarted {
    /// The request cannot run (shown to the user as it is).
    Refused(String),
    Store(crate::store::StoreError),
}

/// Checks the admin's allow-list and stores the job for the acknowledger.
pub async fn start(state: &AppState, job: Job) -> Result<Job, NotStarted> {
    if !state.settings.current().await.repo_allowed(&job.repo) {
        return Err(NotStarted::Refused(format!(
            "Repobox is not enabled for {}:{} (admin settings).",
            job.repo.forge, job.repo.full_name
        )));
    }
    state
        .store
        .accept(None, Some(&job), &Task::Acknowledge { job: job.id })
        .await
        .map_err(NotStarted::Store)?;
    Ok(job)
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<NewJobForm>,
) -> Page {
    let (user, csrf) = match super::posted(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let ask = JobAsk {
        repo: &form.repo,
        kind: &form.kind,
        number: &form.number,
        prompt: &form.prompt,
    };
    let refused = match job_from(&Starter::User(&user), &ask) {
        Ok(job) => match start(&state, job).await {
            Ok(job) => return Page::Redirect(format!("/jobs/{}", job.id)),
            Err(NotStarted::Refused(refused)) => refused,
            Err(NotStarted::Store(e)) => return super::unavailable(e),
        },
        Err(refused) => refused,
    };
    let list = suggestions(&state, &session, &user).await;
    Page::Status(
        StatusCode::BAD_REQUEST,
        form_page(&user, &csrf, &list, &form, Some(&refused)),
    )
}
