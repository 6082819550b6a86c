//! Limits at the webhook routes (SPEC section 14, "Webhooks"), as one middleware in
//! front of both handlers:
//!
//! - at most [`WebhookLimits::max_in_flight`] (256) webhook requests at a time, counted
//!   from the moment their headers are in until the handler answers; the next one gets
//!   503 at once (it waits for nothing);
//! - a `Content-Length` over [`WebhookLimits::max_body`] (25 MiB) gets 413 before a
//!   byte of the body is read;
//! - the body is read here, cut off at the same size (413; a chunked body has no
//!   length to check up front), and must be complete within
//!   [`WebhookLimits::body_timeout`] (60 s), else 408.
//!
//! Each refusal closes the connection (`Connection: close`): the rest of the body is
//! never read. The headers' own deadline (30 s) is the HTTP server's, in
//! [`crate::app::serve_with`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::{MAX_BODY_BYTES, reply};

/// How much a webhook request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookLimits {
    /// From the end of the headers to the end of the body.
    pub body_timeout: Duration,
    /// Webhook requests served at once; more get 503.
    pub max_in_flight: usize,
    /// Largest body, declared or sent.
    pub max_body: usize,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        WebhookLimits {
            body_timeout: Duration::from_secs(60),
            max_in_flight: 256,
            max_body: MAX_BODY_BYTES,
        }
    }
}

/// The middleware's state: the limits and the in-flight count, one per router. The
/// count is also a gauge on `/metrics`.
#[derive(Clone)]
pub struct Gate {
    limits: WebhookLimits,
    in_flight: Arc<Semaphore>,
    gauge: Gauge,
}

impl Gate {
    pub fn new(limits: WebhookLimits, gauge: Gauge) -> Self {
        Gate {
            limits,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            gauge,
        }
    }
}

/// One request's slot: counted in the gauge while it lives.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, gauge: &Gauge) -> Slot {
        gauge.inc();
        Slot {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A refusal that ends the connection.
fn refuse(status: StatusCode, outcome: &str, error: &str) -> Response {
    let mut response = reply(status, outcome, json!({ "error": error }));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The middleware (`axum::middleware::from_fn_with_state`): the handlers behind it get
/// the whole body, already read.
pub async fn limit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Ok(permit) = gate.in_flight.clone().try_acquire_owned() else {
        debug!("webhook refused: too many in flight");
        let mut response = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            json!({ "error": "too many webhook requests in flight; retry later" }),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    let _slot = Slot::new(permit, &gate.gauge);
    let max = gate.limits.max_body;
    if declared_length(&request).is_some_and(|n| n > max as u64) {
        debug!("webhook refused: Content-Length over the limit");
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "body over 25 MiB",
        );
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, max).collect();
    let bytes = match tokio::time::timeout(gate.limits.body_timeout, read).await {
        Err(_) => {
            debug!("webhook refused: body not complete in time");
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "body not received in time",
            );
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            debug!("webhook refused: body over the limit");
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "body over 25 MiB",
            );
        }
        Ok(Err(e)) => {
            debug!(error = %e, "webhook body not read");
            return refuse(StatusCode::BAD_REQUEST, "bad_request", "body not read");
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
