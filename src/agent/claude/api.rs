//! A client of the Anthropic Messages API (`POST /v1/messages`, `anthropic-version:
//! 2023-06-01`), streaming only.
//!
//! Every request streams (Server-Sent Events) so the job log shows the model's text as
//! it is written. [`Client::send`] assembles the events into a [`Response`] and retries
//! what is worth retrying — 408, 409, 429, 5xx and 529 answers, network errors, and a
//! stream that ends early or reports an `overloaded_error` or `api_error` — with
//! exponential backoff, waiting at least what a `retry-after` header asks. Other
//! refusals (400, 401, 403, 404, 413…) end at once with a readable [`ApiError`] whose
//! text never contains the API key.
//!
//! Tokens are counted for every attempt that reported usage, the failed ones included:
//! Anthropic bills them, and Repobox is honest about cost.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::agent::Usage;
use crate::secret::{Secret, mask_all, mask_known_tokens};

pub const API_VERSION: &str = "2023-06-01";

/// Takes every count an API `usage` object reports (`message_delta` usage is
/// cumulative, so a later report replaces an earlier one).
fn update_usage(usage: &mut Usage, update: &Value) {
    let fields = [
        ("input_tokens", &mut usage.input_tokens),
        ("output_tokens", &mut usage.output_tokens),
        ("cache_creation_input_tokens", &mut usage.cache_write_tokens),
        ("cache_read_input_tokens", &mut usage.cache_read_tokens),
    ];
    for (name, slot) in fields {
        if let Some(n) = update.get(name).and_then(Value::as_u64) {
            *slot = n;
        }
    }
}

/// `{"type": "ephemeral"}`: a prompt-cache breakpoint on the block that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CacheControl {
    Ephemeral,
}

/// The content blocks Repobox sends and receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

impl Block {
    pub fn text(text: impl Into<String>) -> Block {
        Block::Text {
            text: text.into(),
            cache_control: None,
        }
    }

    /// Marks (or unmarks) this block as the end of a cached prefix. Tool uses cannot
    /// carry a mark here; they are never the last block Repobox sends.
    pub fn set_cache(&mut self, on: bool) {
        let mark = on.then_some(CacheControl::Ephemeral);
        match self {
            Block::Text { cache_control, .. } | Block::ToolResult { cache_control, .. } => {
                *cache_control = mark
            }
            Block::ToolUse { .. } => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

/// The body of one `POST /v1/messages` (always `stream: true`).
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub system: &'a [Block],
    pub tools: &'a [Value],
    pub messages: &'a [Message],
}

/// A complete answer, assembled from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub content: Vec<Block>,
    /// `end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `pause_turn`, `refusal`…
    pub stop_reason: String,
    pub usage: Usage,
    /// Tool uses whose input was cut off (a `max_tokens` stop in the middle of one);
    /// left out of `content`.
    pub incomplete_tool_uses: usize,
}

/// What the stream shows while it runs, for the job log.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A piece of the model's text.
    Text(String),
    /// The model started a tool call.
    ToolUse { name: String },
    /// The attempt failed and another one follows after `delay`.
    Retrying { reason: String, delay: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API refused the request; retrying would not help.
    #[error("the Anthropic API refused the request ({status} {kind}): {message}{hint}", hint = hint(*status))]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// Retryable failures went on past the last attempt.
    #[error("the Anthropic API was unavailable after {attempts} attempts; last error: {last}")]
    Unavailable { attempts: u32, last: String },
    /// The cancel token fired.
    #[error("stopped")]
    Stopped,
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (check REPOBOX_ANTHROPIC_API_KEY)",
        403 => " (the API key may not use this model or feature)",
        404 => " (check REPOBOX_MODEL and REPOBOX_ANTHROPIC_BASE_URL)",
        _ => "",
    }
}

/// How often and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub base_delay: Duration,
    /// Longest wait between attempts, `retry-after` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    api_key: Secret,
    retry: RetryPolicy,
}

/// One failed attempt.
enum AttemptError {
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Fatal(ApiError),
}

impl Client {
    pub fn new(base_url: &str, api_key: Secret, retry: RetryPolicy) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // Between two reads of the stream; the API sends `ping` events meanwhile.
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("repobox/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            endpoint: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            api_key,
            retry,
        })
    }

    /// Sends `request`, retrying as the module says. `billed` grows by the usage of
    /// every attempt, failed ones included; `progress` sees the stream as it comes.
    pub async fn send(
        &self,
        request: &Request<'_>,
        billed: &mut Usage,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Response, ApiError> {
        let mut body = serde_json::to_value(request).expect("a request serialises");
        body["stream"] = Value::Bool(true);
        let mut attempt = 1;
        loop {
            let mut usage = Usage::default();
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => Err(AttemptError::Fatal(ApiError::Stopped)),
                r = self.attempt(&body, &mut usage, progress) => r,
            };
            billed.add(usage);
            let (reason, retry_after) = match result {
                Ok(response) => return Ok(response),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry {
                    reason,
                    retry_after,
                }) => (self.mask(&reason), retry_after),
            };
            if attempt >= self.retry.max_attempts {
                return Err(ApiError::Unavailable {
                    attempts: attempt,
                    last: reason,
                });
            }
            let delay = self.delay(attempt, retry_after);
            warn!(attempt, %reason, delay_ms = delay.as_millis() as u64, "Messages API call failed; retrying");
            progress(Progress::Retrying {
                reason: reason.clone(),
                delay,
            });
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(ApiError::Stopped),
                () = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }

    /// Wait before attempt `attempt + 1`: `retry-after` when the server sent one,
    /// else doubling from the base with up to 25% jitter; both capped.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16));
        let jitter = exp.mul_f64(rand::random::<f64>() * 0.25);
        match retry_after {
            // The server said when: that, within the cap.
            Some(wait) => wait.min(self.retry.max_delay),
            None => (exp + jitter).min(self.retry.max_delay),
        }
    }

    fn mask(&self, text: &str) -> String {
        mask_known_tokens(&mask_all(text, std::slice::from_ref(&self.api_key)))
    }

    async fn attempt(
        &self,
        body: &Value,
        usage: &mut Usage,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Response, AttemptError> {
        let response = self
            .http
            .post(&self.endpoint)
            .header("x-api-key", self.api_key.expose())
            .header("anthropic-version", API_VERSION)
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .map_err(|e| AttemptError::Retry {
                reason: format!("request failed: {}", without_url(&e)),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        if let Some(id) = response.headers().get("request-id")
            && let Ok(id) = id.to_str()
        {
            debug!(request_id = id, status, "Messages API answered");
        }
        if !response.status().is_success() {
            let retry_after = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            let (kind, message) = error_body(&text);
            let message = self.mask(&message);
            return Err(if retryable(status) {
                AttemptError::Retry {
                    reason: format!("{status} {kind}: {message}"),
                    retry_after,
                }
            } else {
                AttemptError::Fatal(ApiError::Refused {
                    status,
                    kind,
                    message,
                })
            });
        }
        let mut events = response.bytes_stream().eventsource();
        let mut builder = Builder::default();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| AttemptError::Retry {
                reason: format!("the event stream broke: {e}"),
                retry_after: None,
            })?;
            let data: Value = match serde_json::from_str(&event.data) {
                Ok(v) => v,
                Err(e) => {
                    return Err(AttemptError::Retry {
                        reason: format!("an unreadable `{}` event: {e}", event.event),
                        retry_after: None,
                    });
                }
            };
            if let Some(done) = builder.event(&data, usage, progress)? {
                return Ok(done);
            }
        }
        Err(AttemptError::Retry {
            reason: "the event stream ended before `message_stop`".into(),
            retry_after: None,
        })
    }
}

/// Statuses worth another attempt (Anthropic's own SDKs retry the same set).
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// `retry-after` in seconds (the API sends seconds; an HTTP date is read too).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_to_system_time(value)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn httpdate_to_system_time(value: &str) -> Option<std::time::SystemTime> {
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(&value.replace("GMT", "+0000"), &format).ok()?;
    Some(at.into())
}

/// `(error.type, error.message)` of an error body `{"type":"error","error":{…}}`; other
/// bodies (a proxy's HTML page) are summarised.
fn error_body(text: &str) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(err) = v.get("error")
    {
        let kind = err
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned();
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        return (kind, message);
    }
    let snippet: String = text.chars().take(200).collect();
    (
        "error".into(),
        format!("unexpected answer: {}", snippet.trim()),
    )
}

/// A reqwest error as text: what went wrong, then its causes; not the URL (noise).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "HTTP error"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A content block being streamed.
enum Partial {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    /// Thinking and any block type this client does not use: dropped.
    Other,
}

#[derive(Default)]
struct Builder {
    id: String,
    blocks: Vec<(usize, Partial)>,
    stop_reason: Option<String>,
}

impl Builder {
    /// Takes one event; the finished response after `message_stop`.
    fn event(
        &mut self,
        data: &Value,
        usage: &mut Usage,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Option<Response>, AttemptError> {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = &data["message"];
                self.id = message["id"].as_str().unwrap_or("").to_owned();
                update_usage(usage, &message["usage"]);
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                let block = &data["content_block"];
                let partial = match block["type"].as_str() {
                    Some("text") => Partial::Text(block["text"].as_str().unwrap_or("").into()),
                    Some("tool_use") => {
                        let name = block["name"].as_str().unwrap_or("").to_owned();
                        progress(Progress::ToolUse { name: name.clone() });
                        Partial::ToolUse {
                            id: block["id"].as_str().unwrap_or("").to_owned(),
                            name,
                            json: String::new(),
                        }
                    }
                    _ => Partial::Other,
                };
                self.blocks.push((index, partial));
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                let delta = &data["delta"];
                let Some((_, partial)) = self.blocks.iter_mut().rev().find(|(i, _)| *i == index)
                else {
                    return Err(AttemptError::Retry {
                        reason: format!("a delta for unknown content block {index}"),
                        retry_after: None,
                    });
                };
                match (partial, delta["type"].as_str()) {
                    (Partial::Text(text), Some("text_delta")) => {
                        let piece = delta["text"].as_str().unwrap_or("");
                        text.push_str(piece);
                        progress(Progress::Text(piece.to_owned()));
                    }
                    (Partial::ToolUse { json, .. }, Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                update_usage(usage, &data["usage"]);
            }
            "message_stop" => return Ok(Some(self.finish(*usage))),
            "error" => {
                let (kind, message) = error_body(&data.to_string());
                let reason = format!("{kind} during the stream: {message}");
                return Err(match kind.as_str() {
                    "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error" => {
                        AttemptError::Retry {
                            reason,
                            retry_after: None,
                        }
                    }
                    _ => AttemptError::Fatal(ApiError::Refused {
                        status: 200,
                        kind,
                        message,
                    }),
                });
            }
            // `ping`, `content_block_stop` and event types added later.
            _ => {}
        }
        Ok(None)
    }

    fn finish(&mut self, usage: Usage) -> Response {
        let mut content = Vec::new();
        let mut incomplete = 0;
        for (_, partial) in self.blocks.drain(..) {
            match partial {
                Partial::Text(text) => content.push(Block::text(text)),
                Partial::ToolUse { id, name, json } => {
                    let input = if json.trim().is_empty() {
                        Ok(Value::Object(Default::default()))
                    } else {
                        serde_json::from_str::<Value>(&json)
                    };
                    match input {
                        Ok(input) => content.push(Block::ToolUse { id, name, input }),
                        Err(_) => incomplete += 1,
                    }
                }
                Partial::Other => {}
            }
        }
        Response {
            id: std::mem::take(&mut self.id),
            content,
            stop_reason: self.stop_reason.take().unwrap_or_else(|| "end_turn".into()),
            usage,
            incomplete_tool_uses: incomplete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_updates_take_the_cumulative_counts() {
        let mut u = Usage::default();
        update_usage(
            &mut u,
            &serde_json::json!({"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}),
        );
        update_usage(&mut u, &serde_json::json!({"output_tokens": 42}));
        assert_eq!(
            u,
            Usage {
                input_tokens: 10,
                output_tokens: 42,
                cache_write_tokens: 0,
                cache_read_tokens: 5
            }
        );
    }

    #[test]
    fn backoff_honours_retry_after_and_the_cap() {
        let client = Client::new(
            "http://127.0.0.1:1",
            Secret::new("sk-ant-api03-xxxxxxxxxxxx"),
            RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(10),
            },
        )
        .unwrap();
        let d = client.delay(1, None);
        assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(125));
        let d = client.delay(3, None);
        assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(500));
        assert_eq!(
            client.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            client.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn error_bodies_are_read_and_others_summarised() {
        let (k, m) = error_body(
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(
            (k.as_str(), m.as_str()),
            ("authentication_error", "invalid x-api-key")
        );
        let (k, m) = error_body("<html>bad gateway</html>");
        assert_eq!(k, "error");
        assert!(m.contains("bad gateway"));
    }

    #[test]
    fn a_cut_off_tool_use_is_left_out() {
        let mut b = Builder::default();
        let mut u = Usage::default();
        let mut sink = |_p: Progress| {};
        for e in [
            serde_json::json!({"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":3,"output_tokens":1}}}),
            serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}),
            serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"comm"}}),
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}),
        ] {
            assert!(b.event(&e, &mut u, &mut sink).ok().unwrap().is_none());
        }
        let r = b
            .event(
                &serde_json::json!({"type":"message_stop"}),
                &mut u,
                &mut sink,
            )
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!(r.stop_reason, "max_tokens");
        assert_eq!(r.incomplete_tool_uses, 1);
        assert!(r.content.is_empty());
        assert_eq!(u.output_tokens, 9);
    }
}
