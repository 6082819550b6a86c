//! `/api/v1/…`: the jobs as JSON, for scripts and the dashboard's live parts (SPEC §8).
//!
//! Authentication is the dashboard session, or `Authorization: Bearer
//! <REPOBOX_API_TOKEN>` (admin rights, for scripts); a caller with neither gets 401, a
//! wrong token 401, a job the caller may not see 404. Posts with a session cookie must
//! carry the session's CSRF token in `X-CSRF-Token` (a cookie alone could be sent by
//! another site's form); token posts need none.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_sessions::Session;

use super::pages::Filters;
use super::session::{self, SessionUser};
use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", get(list).post(create))
        .route("/api/v1/jobs/{id}", get(show))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/jobs/{id}/retry", post(retry))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/providers", get(providers))
}

#[derive(serde::Deserialize)]
pub struct UsageQuery {
    /// `YYYY-MM`; this month (UTC) when absent.
    month: Option<String>,
}

/// `GET /api/v1/usage[?month=YYYY-MM]`: spend per requester and per repository that
/// month (SPEC 16). Admins (and the API token) see everyone; anyone else only their own
/// line, and no repositories.
async fn usage(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<UsageQuery>,
) -> Response {
    use crate::store::usage::{MonthUsage, month};
    let (user, _) = match caller(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let month = match query.month {
        None => month(time::OffsetDateTime::now_utc()),
        Some(m)
            if m.len() == 7
                && m.as_bytes()[4] == b'-'
                && m.chars()
                    .enumerate()
                    .all(|(i, c)| i == 4 || c.is_ascii_digit()) =>
        {
            m
        }
        Some(_) => return error(StatusCode::BAD_REQUEST, "month must be YYYY-MM"),
    };
    let hash = match state.store.usage(&month).await {
        Ok(hash) => hash,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut usage = MonthUsage::from_hash(&month, &hash);
    if !user.admin {
        let own = user
            .forge_account()
            .map(|(forge, id)| format!("{forge}:{id}"));
        usage.requesters.retain(|s| Some(&s.key) == own.as_ref());
        usage.repositories.clear();
    }
    Json(usage).into_response()
}

/// `GET /api/v1/providers` (SPEC 18): the caller's own personal providers,
/// `[{"id","kind","url","label","token"}]` with the token masked. The API token is no
/// dashboard user and has none.
async fn providers(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let (user, by_token) = match caller(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if by_token {
        return Json(json!([])).into_response();
    }
    match super::settings::listed_providers(&state, &user).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Who calls: the holder of `REPOBOX_API_TOKEN` (an admin; `true`: no cookie, so no
/// CSRF check), or the session's user. A wrong bearer token is refused outright.
async fn caller(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
) -> Result<(SessionUser, bool), Response> {
    if let Some(auth) = headers.get("authorization") {
        let presented = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        return match &state.api_token {
            Some(token) if token.matches(presented.as_bytes()) => Ok((
                SessionUser {
                    provider: "api".into(),
                    id: "token".into(),
                    login: "api-token".into(),
                    name: None,
                    admin: true,
                },
                true,
            )),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "the API token is not valid",
            )),
        };
    }
    session::user(&state.auth, session)
        .await
        .map(|u| (u, false))
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "sign in first"))
}

/// `POST /api/v1/jobs` (SPEC 18): `{"repo":"github:owner/name","prompt":"…"}`, with
/// an optional `"number"` (or `"issue"`), `"kind"` and `"provider"` (one of the
/// caller's personal providers, whose token the job then runs with). With a session the job runs as
/// the signed-in forge account (write access checked like a comment's); with the API
/// token it has no forge requester. `201 {"id","url","status"}`; 400 names what is
/// wrong.
#[derive(serde::Deserialize)]
pub struct CreateJob {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    issue: Option<u64>,
    #[serde(default)]
    provider: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Result<Json<CreateJob>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use super::new_job::{JobAsk, NotStarted, Starter, job_from, start, with_provider};
    let (user, by_token) = match poster(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let number = body
        .number
        .or(body.issue)
        .map(|n| n.to_string())
        .unwrap_or_default();
    let ask = JobAsk {
        repo: &body.repo,
        kind: &body.kind,
        number: &number,
        prompt: &body.prompt,
    };
    let starter = match by_token {
        true => Starter::ApiToken,
        false => Starter::User(&user),
    };
    let job = match job_from(&starter, &ask) {
        Ok(job) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let started = match with_provider(&state, &starter, job, body.provider.as_deref()).await {
        Ok(job) => start(&state, job).await,
        Err(refused) => Err(refused),
    };
    match started {
        Ok(job) => (
            StatusCode::CREATED,
            Json(json!({
                "id": job.id.to_string(),
                "url": format!("{}/jobs/{}", state.public_url.trim_end_matches('/'), job.id),
                "status": job.status.as_str(),
            })),
        )
            .into_response(),
        Err(NotStarted::Refused(refused)) => error(StatusCode::BAD_REQUEST, &refused),
        Err(NotStarted::Store(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job store is unavailable",
        ),
    }
}

/// [`caller`] for a post: a session's post must also carry its CSRF token in
/// `X-CSRF-Token` (403 otherwise); the API token needs none.
async fn poster(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
) -> Result<(SessionUser, bool), Response> {
    let (user, by_token) = caller(state, session, headers).await?;
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !by_token && !session::check_csrf(session, token).await {
        return Err(error(
            StatusCode::FORBIDDEN,
            "X-CSRF-Token is missing or wrong",
        ));
    }
    Ok((user, by_token))
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let (user, _) = match caller(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match super::list_jobs(&state, &user, &filters).await {
        Ok((jobs, next)) => Json(json!({ "jobs": jobs, "next_before": next })).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job store is unavailable",
        ),
    }
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (user, _) = match caller(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match super::visible_job(&state, &user, &id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such job"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job store is unavailable",
        ),
    }
}

async fn cancel(
    state: State<AppState>,
    session: Session,
    id: Path<String>,
    headers: HeaderMap,
) -> Response {
    command(state, session, id, headers, false).await
}

async fn retry(
    state: State<AppState>,
    session: Session,
    id: Path<String>,
    headers: HeaderMap,
) -> Response {
    command(state, session, id, headers, true).await
}

async fn command(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    retry: bool,
) -> Response {
    let (user, _) = match poster(&state, &session, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let job = match super::visible_job(&state, &user, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such job"),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the job store is unavailable",
            );
        }
    };
    match super::command(&state, &user, &job, retry).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "job": job.id.to_string(), "requested": if retry { "retry" } else { "cancel" } })),
        )
            .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the job store is unavailable"),
    }
}
