//! Webhook intake (SPEC section 3): verify, parse, de-duplicate, store, answer.
//!
//! The request path never calls a forge. [`limits`] comes first: at most 256 requests
//! in flight (else 503), the raw body at most 25 MiB (else 413, before reading when
//! `Content-Length` says so) and complete within 60 s (else 408). Then intake checks the signature or token in constant time (401, and fail closed when no
//! secret is configured), parses the payload into a typed event (400 with a short reason
//! when it is not the JSON the event needs), decides, and stores the job and its
//! acknowledgement task in one atomic write (202; a repeated delivery id 200; 503 when
//! Redis cannot be reached). Unknown events and events without a command answer 204.

pub mod intake;
pub mod limits;
pub mod redeliver;
pub mod verify;

use std::fmt;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::app::AppState;
use crate::event::Event;
use crate::forges;
use crate::model::ForgeKind;
use crate::store::{Accepted, Delivery};
use crate::task::Task;

use self::intake::Decision;

/// Largest accepted webhook body (GitHub caps payloads at 25 MB).
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// A body that is not the JSON its event needs. The text is returned to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError(String);

impl PayloadError {
    pub fn new(reason: impl Into<String>) -> Self {
        PayloadError(reason.into())
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // serde messages can be long; the sender needs the gist.
        let mut text = self.0.clone();
        if text.len() > 300 {
            let mut end = 300;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        f.write_str(&text)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn reply(status: StatusCode, outcome: &str, detail: serde_json::Value) -> Response {
    let mut body = json!({ "outcome": outcome });
    if let (Some(obj), serde_json::Value::Object(extra)) = (body.as_object_mut(), detail) {
        obj.extend(extra);
    }
    (status, Json(body)).into_response()
}

/// `POST /webhooks/github`
pub async fn github(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets = &state.github_webhook_secrets;
    if secrets.is_empty() {
        state
            .metrics
            .delivery(ForgeKind::GitHub, "-", "unauthorized");
        warn!("GitHub delivery refused: REPOBOX_GITHUB_WEBHOOK_SECRET is not configured");
        return reply(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            json!({ "error": "webhook secret not configured" }),
        );
    }
    if !verify::github_signature_valid(secrets, &body, header(&headers, "x-hub-signature-256")) {
        state
            .metrics
            .delivery(ForgeKind::GitHub, "-", "unauthorized");
        return reply(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            json!({ "error": "missing or invalid X-Hub-Signature-256" }),
        );
    }
    let event_name = header(&headers, "x-github-event").unwrap_or("").to_owned();
    let delivery_id = header(&headers, "x-github-delivery").map(str::to_owned);
    let parsed = forges::github::webhook::parse(&event_name, &body);
    handle(state, ForgeKind::GitHub, &event_name, delivery_id, parsed).await
}

/// `POST /webhooks/gitlab`
pub async fn gitlab(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets = &state.gitlab_webhook_secrets;
    if secrets.is_empty() {
        state
            .metrics
            .delivery(ForgeKind::GitLab, "-", "unauthorized");
        warn!("GitLab delivery refused: REPOBOX_GITLAB_WEBHOOK_SECRET is not configured");
        return reply(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            json!({ "error": "webhook secret not configured" }),
        );
    }
    if !verify::gitlab_token_valid(secrets, header(&headers, "x-gitlab-token")) {
        state
            .metrics
            .delivery(ForgeKind::GitLab, "-", "unauthorized");
        return reply(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            json!({ "error": "missing or invalid X-Gitlab-Token" }),
        );
    }
    let event_name = header(&headers, "x-gitlab-event").unwrap_or("").to_owned();
    let delivery_id = header(&headers, "x-gitlab-event-uuid").map(str::to_owned);
    let parsed = forges::gitlab::webhook::parse(&event_name, &body);
    handle(state, ForgeKind::GitLab, &event_name, delivery_id, parsed).await
}

/// Metric label for an event name: known names as they are, anything else `other`
/// (a signed sender could otherwise grow the label set without bound).
fn event_label(name: &str) -> &str {
    const KNOWN: &[&str] = &[
        "issue_comment",
        "issues",
        "pull_request_review_comment",
        "pull_request_review",
        "installation",
        "installation_repositories",
        "ping",
        "Note Hook",
        "Issue Hook",
        "Confidential Note Hook",
        "Confidential Issue Hook",
    ];
    KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("other")
}

async fn handle(
    state: AppState,
    forge: ForgeKind,
    event_name: &str,
    delivery_id: Option<String>,
    parsed: Result<Option<Event>, crate::webhooks::PayloadError>,
) -> Response {
    let label = event_label(event_name);
    let event = match parsed {
        Ok(Some(event)) => event,
        Ok(None) => {
            state.metrics.delivery(forge, label, "ignored");
            debug!(%forge, event = event_name, "delivery ignored: event not acted on");
            return StatusCode::NO_CONTENT.into_response();
        }
        Err(e) => {
            state.metrics.delivery(forge, label, "bad_request");
            info!(%forge, event = event_name, error = %e, "delivery refused: bad payload");
            return reply(
                StatusCode::BAD_REQUEST,
                "bad_request",
                json!({ "error": e.to_string() }),
            );
        }
    };
    let settings = match state.intake_settings(forge).await {
        Ok(settings) => settings,
        Err(e) => {
            state.metrics.delivery(forge, label, "unavailable");
            warn!(%forge, error = %e, "delivery not stored: settings unreadable");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                json!({ "error": "storage unavailable; retry later" }),
            );
        }
    };
    let decision = intake::decide(&event, &settings, OffsetDateTime::now_utc());
    let (job, task) = match decision {
        Decision::Ignore(reason) => {
            state.metrics.delivery(forge, label, "ignored");
            debug!(%forge, event = event_name, reason, "delivery ignored");
            return StatusCode::NO_CONTENT.into_response();
        }
        Decision::Job(mut job) => {
            job.delivery_id = delivery_id.clone();
            let task = Task::Acknowledge { job: job.id };
            (Some(job), task)
        }
        Decision::Task(task) => (None, *task),
    };
    let delivery = delivery_id.as_deref().map(|id| Delivery { forge, id });
    match state.store.accept(delivery, job.as_deref(), &task).await {
        Ok(Accepted::Stored) => {
            state.metrics.delivery(forge, label, "accepted");
            match &job {
                Some(job) => {
                    state.metrics.job_queued(forge);
                    info!(%forge, repo = %job.repo.full_name, thread = job.thread.number,
                        job = %job.id, requester = %job.requester.login, "job queued");
                    reply(
                        StatusCode::ACCEPTED,
                        "queued",
                        json!({ "job": job.id.to_string() }),
                    )
                }
                None => {
                    info!(%forge, task = task.name(), "task queued");
                    reply(
                        StatusCode::ACCEPTED,
                        "accepted",
                        json!({ "task": task.name() }),
                    )
                }
            }
        }
        Ok(Accepted::Duplicate) => {
            state.metrics.delivery(forge, label, "duplicate");
            info!(%forge, delivery = delivery_id.as_deref().unwrap_or(""), "duplicate delivery");
            reply(StatusCode::OK, "duplicate", json!({}))
        }
        Err(e) => {
            state.metrics.delivery(forge, label, "unavailable");
            warn!(%forge, error = %e, "delivery not stored: storage unavailable");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                json!({ "error": "storage unavailable; retry later" }),
            )
        }
    }
}
