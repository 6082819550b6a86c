//! `GET /jobs/{id}/events`: the job's log as Server-Sent Events.
//!
//! Each log line is one `line` event whose `id` is its entry id in `job:{<id>}:output`,
//! so a browser that reconnects sends `Last-Event-ID` and gets exactly the lines after
//! it — none lost, none repeated. `?after=<id>` does the same for the first connection
//! (the page already shows the lines up to there). A `status` event (JSON: status,
//! tokens, cost) follows every change of the job's status; when the job is final and
//! its log is drained, an `end` event closes the stream.
//!
//! Viewers do not wait on Redis themselves: all viewers of a job follow one reader in
//! the [`LogHub`](super::log_hub::LogHub), and read from the store (without waiting)
//! only to catch up to it — their backlog after `Last-Event-ID`, or lines the feed went
//! past before they could see them. Lines are sent strictly after the viewer's place,
//! so catching up and following never send a line twice.
//!
//! A session holds at most [`STREAMS_PER_SESSION`] streams (one more is a 429), and
//! every stream ends when the server starts shutting down ([`LogHub::close`]), so a
//! restart is not held up by open job pages: browsers reconnect with `Last-Event-ID`.
//!
//! [`STREAMS_PER_SESSION`]: super::log_hub::STREAMS_PER_SESSION
//! [`LogHub::close`]: super::log_hub::LogHub::close

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tower_sessions::Session;

use super::log_hub::{BATCH, StreamSlot, Subscription, Update, WAIT, position};
use super::session;
use crate::app::AppState;
use crate::job::{Job, JobStatus};
use crate::store::LogLine;

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
    let Some(user) = session::user(&state.auth, &session).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let job = match super::visible_job(&state, &user, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let Some(slot) = session.id().and_then(|id| {
        state
            .log_hub
            .open_stream(&session::storage_key(&id.to_string()))
    }) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "5")],
            "Too many live logs open in this session; close some job pages.",
        )
            .into_response();
    };
    if state.log_hub.closing().is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(after.after)
        .filter(|id| valid_id(id))
        .unwrap_or_else(|| "0".to_owned());
    let closing = state.log_hub.closing();
    let events = stream(state, job, resume, slot).take_until(closing.cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One viewer's stream: its place in the log (the last event id it sent), the newest
/// job record it knows, and its place on the job's feed in the [`LogHub`].
///
/// [`LogHub`]: super::log_hub::LogHub
struct Viewer {
    state: AppState,
    job: Job,
    after: String,
    /// The status last sent (`None` before the first).
    sent: Option<JobStatus>,
    /// `None` for a job that was final when the viewer came: its log is complete.
    feed: Option<Subscription>,
    /// The feed may not continue from `after`: read from the store first.
    behind: bool,
    done: bool,
    /// The session's place for this stream, freed when the stream is dropped.
    _slot: StreamSlot,
}

fn stream(
    state: AppState,
    job: Job,
    after: String,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // Joined after the job was read, so every record the feed passes on is newer.
    let feed = (!job.status.is_final()).then(|| state.log_hub.subscribe(job.id));
    let viewer = Viewer {
        state,
        job,
        after,
        sent: None,
        feed,
        behind: true,
        done: false,
        _slot: slot,
    };
    futures::stream::unfold(viewer, |mut v| async move {
        if v.done {
            return None;
        }
        let events = v.next_events().await;
        Some((futures::stream::iter(events.into_iter().map(Ok)), v))
    })
    .flatten()
}

impl Viewer {
    /// The next events to send (possibly none).
    async fn next_events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if self.sent != Some(self.job.status) {
            self.sent = Some(self.job.status);
            events.push(status_event(&self.job));
        }
        // A final status means the log was complete before it (the runner writes the
        // record last): read it to the end, then close.
        if self.job.status.is_final() {
            self.feed = None;
            match self.catch_up(&mut events).await {
                Ok(true) => {
                    events.push(Event::default().event("end").data(self.job.status.as_str()));
                    self.done = true;
                }
                Ok(false) => {}
                Err(()) => tokio::time::sleep(WAIT).await,
            }
            return events;
        }
        if self.behind {
            match self.catch_up(&mut events).await {
                Ok(drained) => self.behind = !drained,
                Err(()) => tokio::time::sleep(WAIT).await,
            }
            return events;
        }
        let Some(feed) = self.feed.as_mut() else {
            self.behind = true;
            return events;
        };
        match feed.next().await {
            Update::Lines(batch) => {
                if position(&batch.after) > position(&self.after) {
                    // Lines between our place and the batch went by before we could see
                    // them: read them (and this batch) from the store.
                    self.behind = true;
                } else {
                    self.push_lines(&batch.lines, &mut events);
                }
            }
            Update::Lagged => self.behind = true,
            Update::Job(job) => self.job = (*job).clone(),
            Update::Closed => {
                // The reader is gone: join a new one, reading from the store meanwhile.
                self.feed = Some(self.state.log_hub.subscribe(self.job.id));
                self.behind = true;
            }
        }
        events
    }

    /// One read of the lines after our place from the store, without waiting; whether
    /// that reached the end of the log. `Err` when the store is away.
    async fn catch_up(&mut self, events: &mut Vec<Event>) -> Result<bool, ()> {
        let lines = self
            .state
            .store
            .read_log(self.job.id, &self.after, BATCH, None)
            .await
            .map_err(|_| ())?;
        let drained = lines.len() < BATCH;
        self.push_lines(&lines, events);
        Ok(drained)
    }

    /// Sends the lines after our place, in order, and moves the place past them.
    fn push_lines(&mut self, lines: &[LogLine], events: &mut Vec<Event>) {
        let mut at = position(&self.after);
        for line in lines {
            let pos = position(&line.id);
            if pos <= at {
                continue;
            }
            at = pos;
            self.after = line.id.clone();
            events.push(
                Event::default()
                    .event("line")
                    .id(line.id.clone())
                    .data(line.line.clone()),
            );
        }
    }
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
