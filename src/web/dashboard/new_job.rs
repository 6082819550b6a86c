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
    /// One of the user's personal providers to run with; empty: the bot.
    #[serde(default)]
    provider: String,
}

/// What the form offers: repositories to suggest, and the user's providers.
struct Choices {
    suggestions: Vec<String>,
    providers: Vec<crate::store::Provider>,
}

fn form_page(
    user: &SessionUser,
    csrf: &str,
    choices: &Choices,
    form: &NewJobForm,
    error: Option<&str>,
) -> Markup {
    let suggestions = &choices.suggestions;
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
                    @if !choices.providers.is_empty() {
                        label { "Run with"
                            select name="provider" {
                                option value="" selected[form.provider.is_empty()] { "Repobox" }
                                @for p in &choices.providers {
                                    @let id = p.id.to_string();
                                    option value=(id) selected[form.provider == id] {
                                        (p.label) " (" (p.kind) ", your token)"
                                    }
                                }
                            }
                        }
                    }
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
/// ([`super::picker`]), and with each of their personal providers' tokens; for admins
/// also those the bot reaches. All within the allow-list. And the user's providers.
async fn choices(state: &AppState, session: &Session, user: &SessionUser) -> Choices {
    let providers = match state
        .store
        .list_providers(&super::settings::owner(user))
        .await
    {
        Ok(providers) => providers,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the user's providers");
            Vec::new()
        }
    };
    let mut found = suggestions(state, session, user).await;
    for provider in &providers {
        found.extend(state.picker.personal(state, provider).await);
    }
    let settings = state.settings.current().await;
    let suggestions: BTreeSet<String> = found
        .into_iter()
        .filter(|entry| allowed(&settings, entry))
        .collect();
    Choices {
        suggestions: suggestions.into_iter().collect(),
        providers,
    }
}

/// `forge:owner/name` is a repository the admin's allow-list lets in.
fn allowed(settings: &crate::settings::AdminSettings, entry: &str) -> bool {
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
}

/// What the user's sign-in token reaches ([`super::picker`]), and for admins what the
/// bot reaches.
async fn suggestions(state: &AppState, session: &Session, user: &SessionUser) -> Vec<String> {
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
    out.into_iter().collect()
}

pub async fn page(State(state): State<AppState>, session: Session) -> Page {
    let (user, csrf) = match super::signed_in(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let choices = choices(&state, &session, &user).await;
    Page::Html(form_page(
        &user,
        &csrf,
        &choices,
        &NewJobForm::default(),
        None,
    ))
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

/// Makes `job` run with the personal provider `provider` names (its id), when it names
/// one (SPEC 18): a signed-in user may name only their own providers, the admin API
/// token any; the provider must be on the job's forge.
pub async fn with_provider(
    state: &AppState,
    starter: &Starter<'_>,
    mut job: Job,
    provider: Option<&str>,
) -> Result<Job, NotStarted> {
    let Some(text) = provider.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(job);
    };
    let refused = || NotStarted::Refused("provider: no such provider of yours.".into());
    let id: ulid::Ulid = text.parse().map_err(|_| refused())?;
    let found = state
        .store
        .get_provider(id)
        .await
        .map_err(NotStarted::Store)?
        .ok_or_else(refused)?;
    if let Starter::User(user) = starter
        && found.owner != super::settings::owner(user)
    {
        return Err(refused());
    }
    if found.kind != job.repo.forge {
        return Err(NotStarted::Refused(format!(
            "provider: “{}” is a {} provider; the repository is on {}.",
            found.label, found.kind, job.repo.forge
        )));
    }
    job.provider = Some(id);
    Ok(job)
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
    let starter = Starter::User(&user);
    let refused = match job_from(&starter, &ask) {
        Ok(job) => {
            let started = match with_provider(&state, &starter, job, Some(&form.provider)).await {
                Ok(job) => start(&state, job).await,
                Err(refused) => Err(refused),
            };
            match started {
                Ok(job) => return Page::Redirect(format!("/jobs/{}", job.id)),
                Err(NotStarted::Refused(refused)) => refused,
                Err(NotStarted::Store(e)) => return super::unavailable(e),
            }
        }
        Err(refused) => refused,
    };
    let choices = choices(&state, &session, &user).await;
    Page::Status(
        StatusCode::BAD_REQUEST,
        form_page(&user, &csrf, &choices, &form, Some(&refused)),
    )
}
