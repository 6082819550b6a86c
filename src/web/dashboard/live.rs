//! `GET /jobs/{id}/events`: the job's log as Server-Sent Events.
//!
//! Each log line is one `line` event whose `id` is its entry id in `job:{<id>}:output`,
//! so a browser that reconnects sends `Last-Event-ID` and gets exactly the lines after
//! it — none lost, none repeated. `?after=<id>` does the same for the first connection
//! (the page already shows the lines up to there). A `status` event (JSON: status,
//! tokens, cost) follows every change of the job's status; when the job is final and
//! its log is drained, an `end` event closes the stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tower_sessions::Session;

use super::session;
use crate::app::AppState;
use crate::job::{Job, JobStatus};

/// Lines per read.
const BATCH: usize = 200;
/// How long one read waits for a new line (and so how often the status is checked).
const WAIT: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
pub struct After {
    after: Option<String>,
}

/// A stream id as Redis writes them (`<ms>-<seq>`); anything else starts from the top.
fn valid_id(id: &str) -> bool {
    let mut parts = id.split('-');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn status_event(job: &Job) -> Event {
    let data = serde_json::json!({
        "status": job.status.as_str(),
        "cost": crate::progress::cost_text(job),
        "pr_url": job.pr_url,
    });
    Event::default().event("status").data(data.to_string())
}

pub async fn events(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(after): Query<After>,
    headers: HeaderMap,
) -> Response {
    let Some(user) = session::user(&session).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let job = match super::visible_job(&state, &user, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(after.after)
        .filter(|id| valid_id(id))
        .unwrap_or_else(|| "0".to_owned());
    Sse::new(stream(state, job, resume))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Cursor {
    state: AppState,
    job: Job,
    after: String,
    /// The status last sent (`None` before the first).
    sent: Option<JobStatus>,
    done: bool,
}

fn stream(
    state: AppState,
    job: Job,
    after: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        state,
        job,
        after,
        sent: None,
        done: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        if c.done {
            return None;
        }
        let mut events = Vec::new();
        if c.sent != Some(c.job.status) {
            c.sent = Some(c.job.status);
            events.push(status_event(&c.job));
        }
        // The status is read before the log: a final status seen here means the log
        // was complete before it (the runner writes the record last).
        let final_now = c.job.status.is_final();
        let block = (!final_now).then_some(WAIT);
        match c
            .state
            .store
            .read_log(c.job.id, &c.after, BATCH, block)
            .await
        {
            Ok(lines) => {
                let drained = lines.len() < BATCH;
                for line in lines {
                    c.after = line.id.clone();
                    events.push(Event::default().event("line").id(line.id).data(line.line));
                }
                if final_now && drained {
                    events.push(Event::default().event("end").data(c.job.status.as_str()));
                    c.done = true;
                }
            }
            Err(_) => {
                // Redis is away: wait and try again; the browser keeps its place.
                tokio::time::sleep(WAIT).await;
            }
        }
        if !c.done
            && let Ok(Some(job)) = c.state.store.get_job(c.job.id).await
        {
            c.job = job;
        }
        Some((futures::stream::iter(events.into_iter().map(Ok)), c))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn only_stream_ids_resume() {
        assert!(valid_id("1700000000000-0"));
        assert!(valid_id("0-1"));
        for bad in ["", "0", "abc-1", "1-2-3", "1-", "-1", "$", ">"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
