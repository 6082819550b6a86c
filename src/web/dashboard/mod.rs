//! The dashboard (SPEC §8): server-rendered pages (maud), sessions in Redis, CSRF on
//! every form, and the job log live over Server-Sent Events.
//!
//! - [`session`]: sessions, the signed-in user, CSRF tokens.
//! - [`pages`]: the HTML.
//! - [`live`]: `/jobs/{id}/events`, the log as an SSE stream resuming at `Last-Event-ID`.
//! - [`log_hub`]: one live-log reader per watched job, shared by all its viewers.
//! - [`api`]: `/api/v1/…`, the JSON the CLI and scripts use.
//! - [`signin`]: `/login`'s providers, `/auth/…`.
//! - [`settings`]: `/settings` (personal providers, sealed) and `/admin`.
//! - [`new_job`]: `/jobs/new`, a job started from the dashboard, and [`picker`], the
//!   repositories it suggests (asked with the user's own token).
//! - [`setup`]: `/setup`, the first run (GitHub App manifest flow, GitLab webhook).
//!
//! Who sees what: a user sees the jobs they requested (matched by the forge account
//! they signed in with), admins see all; any other job is a 404, never a 403, so job
//! ids cannot be probed. Pages for signed-out visitors redirect to `/login`.

pub mod api;
pub mod live;
pub mod log_hub;
pub mod new_job;
pub mod pages;
pub mod picker;
pub mod session;
pub mod settings;
pub mod setup;
pub mod signin;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use tower_sessions::Session;

use self::pages::Filters;
use self::session::SessionUser;
use crate::app::AppState;
use crate::job::{Job, JobId};
use crate::model::UserRef;
use crate::store::JobIndex;
use crate::task::{Actor, Task};

/// Jobs per page of the list.
const PAGE: usize = 25;
/// Index entries read at most to fill one filtered page.
const SCAN_LIMIT: usize = 2_000;
/// Log lines rendered into the job page (the live stream follows from the last one).
const PAGE_LOG_LINES: usize = 2_000;

pub fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route("/", get(|| async { Redirect::to("/jobs") }))
        .route("/login", get(login_page))
        .route("/logout", post(logout))
        .route("/auth/ldap", post(signin::ldap))
        .route("/auth/{provider}", get(signin::start))
        .route("/auth/{provider}/callback", get(signin::callback))
        .route("/setup", get(setup::page))
        .route("/setup/github/callback", get(setup::callback))
        .route("/setup/github/confirm", post(setup::confirm))
        .route("/settings", get(settings::page))
        .route("/settings/providers", post(settings::add))
        .route("/settings/providers/{id}/delete", post(settings::delete))
        .route("/admin", get(settings::admin).post(settings::save_admin))
        .route("/admin/secrets", post(settings::save_secret))
        .route("/admin/secrets/delete", post(settings::delete_secret))
        .route("/jobs", get(jobs_page))
        .route("/jobs/new", get(new_job::page).post(new_job::create))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/events", get(live::events))
        .route("/assets/style.css", get(style))
        .route("/assets/live.js", get(script))
        .merge(api::routes())
        .layer(session::layer(state.store.clone(), &state.public_url));
    crate::web::headers::apply(router, &state.setup.github_web_url)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page or a redirect to the login page.
pub enum Page {
    Html(Markup),
    /// 303 See Other: where a form post or a signed-in visit to `/login` goes on.
    Redirect(String),
    Login,
    NotFound(Markup),
    /// A page with another status (a refused sign-in: 401).
    Status(StatusCode, Markup),
    Error(StatusCode, String),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self {
            Page::Html(m) => m.into_response(),
            Page::Redirect(to) => Redirect::to(&to).into_response(),
            Page::Login => Redirect::to("/login").into_response(),
            Page::NotFound(m) => (StatusCode::NOT_FOUND, m).into_response(),
            Page::Status(status, m) => (status, m).into_response(),
            Page::Error(status, text) => (status, text).into_response(),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Page {
    tracing::warn!(error = %e, "dashboard: store unavailable");
    Page::Error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The job store is unavailable; try again shortly.".into(),
    )
}

async fn login_page(State(state): State<AppState>, session: Session) -> Page {
    if session::user(&state.auth, &session).await.is_some() {
        return Page::Redirect("/jobs".into());
    }
    signin::login_page_with(&state, &session, None).await
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn csrf_refused() -> Page {
    Page::Error(
        StatusCode::FORBIDDEN,
        "The form's CSRF token is missing or wrong; reload the page and try again.".into(),
    )
}

async fn logout(session: Session, axum::Form(form): axum::Form<CsrfForm>) -> Page {
    if !session::check_csrf(&session, &form.csrf).await {
        return csrf_refused();
    }
    if let Err(e) = session::sign_out(&session).await {
        return unavailable(e);
    }
    Page::Login
}

/// The signed-in user and the CSRF token, or the redirect to `/login`.
async fn signed_in(state: &AppState, session: &Session) -> Result<(SessionUser, String), Page> {
    let user = session::user(&state.auth, session)
        .await
        .ok_or(Page::Login)?;
    let csrf = session::csrf_token(session).await;
    Ok((user, csrf))
}

/// A form post's user: signed in, and the form's CSRF token is the session's.
async fn posted(
    state: &AppState,
    session: &Session,
    token: &str,
) -> Result<(SessionUser, String), Page> {
    let signed = signed_in(state, session).await?;
    if !session::check_csrf(session, token).await {
        return Err(csrf_refused());
    }
    Ok(signed)
}

/// The job if it exists and `user` may see it.
pub async fn visible_job(
    state: &AppState,
    user: &SessionUser,
    id: &str,
) -> Result<Option<Job>, crate::store::StoreError> {
    let Ok(id) = id.parse::<JobId>() else {
        return Ok(None);
    };
    Ok(state
        .store
        .get_job(id)
        .await?
        .filter(|job| user.can_see(job)))
}

/// One page of the jobs `user` may see that pass `filters`, and where the next starts.
pub async fn list_jobs(
    state: &AppState,
    user: &SessionUser,
    filters: &Filters,
) -> Result<(Vec<Job>, Option<i64>), crate::store::StoreError> {
    let repo = filters.repo.trim();
    let index = if !user.admin {
        match user.forge_account() {
            Some((forge, user_id)) => JobIndex::User { forge, user_id },
            None => return Ok((Vec::new(), None)),
        }
    } else if let Some((forge, name)) = repo.split_once(':') {
        match forge.parse() {
            Ok(forge) => JobIndex::Repo {
                forge,
                repo: name.to_owned(),
            },
            Err(_) => JobIndex::All,
        }
    } else {
        JobIndex::All
    };
    let mut jobs = Vec::new();
    let mut before = filters.before;
    let mut scanned = 0;
    while jobs.len() < PAGE && scanned < SCAN_LIMIT {
        let ids = state.store.job_page(&index, before, PAGE * 2).await?;
        if ids.is_empty() {
            return Ok((jobs, None));
        }
        scanned += ids.len();
        for (id, score) in ids {
            before = Some(score);
            let Some(job) = state.store.get_job(id).await? else {
                continue;
            };
            if matches(&job, filters) && user.can_see(&job) {
                jobs.push(job);
                if jobs.len() == PAGE {
                    return Ok((jobs, before));
                }
            }
        }
    }
    Ok((jobs, before))
}

fn matches(job: &Job, f: &Filters) -> bool {
    let repo = f.repo.trim();
    let repo = repo.split_once(':').map(|(_, r)| r).unwrap_or(repo);
    (repo.is_empty() || job.repo.full_name.eq_ignore_ascii_case(repo))
        && (f.status.is_empty() || job.status.as_str() == f.status)
        && (f.user.trim().is_empty() || job.requester.login.eq_ignore_ascii_case(f.user.trim()))
}

async fn jobs_page(
    State(state): State<AppState>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Page {
    let (user, csrf) = match signed_in(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    match list_jobs(&state, &user, &filters).await {
        Ok((jobs, next)) => Page::Html(pages::jobs(&user, &csrf, &jobs, &filters, next)),
        Err(e) => unavailable(e),
    }
}

/// The thread's web address on the configured forge, for the links on the job page.
pub fn thread_url(setup: &setup::SetupInfo, job: &Job) -> Option<String> {
    use crate::model::{ForgeKind, ThreadKind};
    if job.thread.is_none() {
        return None;
    }
    let (base, path) = match (job.repo.forge, job.thread.kind) {
        (ForgeKind::GitHub, ThreadKind::PullRequest) => (setup.github_web_url.as_str(), "pull"),
        (ForgeKind::GitHub, _) => (setup.github_web_url.as_str(), "issues"),
        (ForgeKind::GitLab, ThreadKind::MergeRequest) => {
            (setup.gitlab_url.as_deref()?, "-/merge_requests")
        }
        (ForgeKind::GitLab, _) => (setup.gitlab_url.as_deref()?, "-/issues"),
    };
    Some(format!(
        "{}/{}/{path}/{}",
        base.trim_end_matches('/'),
        job.repo.full_name,
        job.thread.number
    ))
}

async fn job_page(State(state): State<AppState>, session: Session, Path(id): Path<String>) -> Page {
    let (user, csrf) = match signed_in(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let job = match visible_job(&state, &user, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Page::NotFound(pages::not_found(Some(&user), &csrf)),
        Err(e) => return unavailable(e),
    };
    let lines = match state
        .store
        .read_log(job.id, "0", PAGE_LOG_LINES, None)
        .await
    {
        Ok(lines) => lines,
        Err(e) => return unavailable(e),
    };
    let last = lines.last().map(|l| l.id.clone());
    let text: Vec<String> = lines.into_iter().map(|l| l.line).collect();
    Page::Html(pages::job(
        &user,
        &csrf,
        &job,
        thread_url(&state.setup, &job).as_deref(),
        &text,
        last.as_deref(),
    ))
}

/// Cancel or retry `job` through the acknowledger, which checks that `user` (not the
/// job's requester) may act on it: an admin, or write access with their forge account.
pub async fn command(
    state: &AppState,
    user: &SessionUser,
    job: &Job,
    retry: bool,
) -> Result<(), crate::store::StoreError> {
    let actor = Actor {
        login: user.login.clone(),
        admin: user.admin,
        forge: user.forge_account().map(|(forge, _)| forge),
        forge_user: user.forge_account().map(|(_, id)| UserRef {
            id,
            login: user.login.clone(),
            is_bot: false,
        }),
    };
    let task = if retry {
        Task::RetryJob { job: job.id, actor }
    } else {
        Task::CancelJob { job: job.id, actor }
    };
    state.store.accept(None, None, &task).await.map(|_| ())
}

async fn cancel(
    state: State<AppState>,
    session: Session,
    id: Path<String>,
    form: axum::Form<CsrfForm>,
) -> Page {
    job_command(state, session, id, form, false).await
}

async fn retry(
    state: State<AppState>,
    session: Session,
    id: Path<String>,
    form: axum::Form<CsrfForm>,
) -> Page {
    job_command(state, session, id, form, true).await
}

async fn job_command(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
    retry: bool,
) -> Page {
    let (user, csrf) = match posted(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let job = match visible_job(&state, &user, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Page::NotFound(pages::not_found(Some(&user), &csrf)),
        Err(e) => return unavailable(e),
    };
    match command(&state, &user, &job, retry).await {
        Ok(()) => Page::Redirect(format!("/jobs/{}", job.id)),
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ForgeKind, ThreadKind};

    #[test]
    fn thread_links_follow_the_configured_forges() {
        let mut setup = setup::SetupInfo {
            github_app_id: None,
            github_api_url: "https://ghe.example/api/v3".into(),
            github_web_url: "https://ghe.example".into(),
            gitlab_url: None,
        };
        let mut job = crate::job::test_job(ThreadKind::PullRequest, 12);
        assert_eq!(
            thread_url(&setup, &job).as_deref(),
            Some("https://ghe.example/acme/api/pull/12")
        );
        job.repo.forge = ForgeKind::GitLab;
        job.thread.kind = ThreadKind::MergeRequest;
        assert_eq!(thread_url(&setup, &job), None, "GitLab is not configured");
        setup.gitlab_url = Some("https://gitlab.example/".into());
        assert_eq!(
            thread_url(&setup, &job).as_deref(),
            Some("https://gitlab.example/acme/api/-/merge_requests/12")
        );
    }
}
