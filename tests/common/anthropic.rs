//! An HTTP fake of the Anthropic Messages API (`POST /v1/messages`) that speaks its wire
//! format: JSON requests, answers as a Server-Sent Event stream (`message_start`,
//! `content_block_start`/`_delta`/`_stop` with `text_delta` and `input_json_delta`,
//! `ping`, `message_delta` with `stop_reason` and cumulative `usage`, `message_stop`),
//! and errors as `{"type":"error","error":{"type":…,"message":…}}` bodies or `error`
//! events.
//!
//! Like the real API, it refuses (400 `invalid_request_error`) a conversation in which a
//! `tool_use` is not answered by a `tool_result` in the very next user message, roles
//! that do not alternate, or more than 4 cache breakpoints; and 401s a wrong key. The
//! model's turns are scripted; every request and every token it billed is recorded.
//!
//! Usage is synthetic by default (figures that differ per answer). Started with
//! [`FakeAnthropic::with_window`], the fake counts tokens instead — one per 4 bytes of
//! each block's JSON, `cache_control` left out — models the prompt cache (a breakpoint
//! caches the prefix up to it; a later request reads the longest cached prefix, writes
//! up to its last breakpoint, and pays full price after it), and refuses a request over
//! the window with the API's 400 `prompt is too long: N tokens > M maximum`.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use repobox::agent::Usage;
use serde_json::{Value, json};

/// The key the fake accepts (shaped like a real one, so masking can be checked).
pub const API_KEY: &str = "sk-ant-api03-TestKey0123456789abcdefghijklmnopqrstuvwxyzABCDEF-xyzAA";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Turn {
    /// A streamed message with these content blocks (see [`text`], [`tool`]).
    Message {
        blocks: Vec<Value>,
        stop_reason: &'static str,
    },
    /// An HTTP error in the API's error shape.
    Error {
        status: u16,
        kind: &'static str,
        message: String,
        retry_after: Option<&'static str>,
    },
    /// `message_start`, then an `error` event in the middle of the stream.
    StreamError { kind: &'static str },
}

pub fn text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

pub fn tool(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

/// A turn that calls tools.
pub fn calls(blocks: Vec<Value>) -> Turn {
    Turn::Message {
        blocks,
        stop_reason: "tool_use",
    }
}

/// The last turn: a summary and `end_turn`.
pub fn done(summary: &str) -> Turn {
    Turn::Message {
        blocks: vec![text(summary)],
        stop_reason: "end_turn",
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub api_key: String,
    pub version: String,
    pub body: Value,
    /// Why the fake refused it, if it did (as the real API would).
    pub refused: Option<String>,
    /// The usage it reported for this request, when it answered one.
    pub usage: Option<Usage>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Turn>,
    requests: Vec<Recorded>,
    billed: Usage,
    served: u64,
    /// Counting mode: the window in tokens, and the cached prefixes (hashes).
    window: Option<u64>,
    cached: HashSet<u64>,
    /// The request (0-based) held until [`FakeAnthropic::release`].
    hold: Option<usize>,
    gate: Arc<tokio::sync::Notify>,
    arrived: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
pub struct FakeAnthropic {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeAnthropic {
    pub async fn start(script: Vec<Turn>) -> FakeAnthropic {
        FakeAnthropic::serve(Inner {
            script: script.into(),
            ..Inner::default()
        })
        .await
    }

    /// A fake that counts tokens, models the cache and refuses prompts over `window`.
    pub async fn with_window(script: Vec<Turn>, window: u64) -> FakeAnthropic {
        FakeAnthropic::serve(Inner {
            script: script.into(),
            window: Some(window),
            ..Inner::default()
        })
        .await
    }

    async fn serve(inner: Inner) -> FakeAnthropic {
        let inner = Arc::new(Mutex::new(inner));
        let app = axum::Router::new()
            .route("/v1/messages", post(messages))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeAnthropic { url, inner }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Every token the fake reported in `usage`, over all answers (failed streams too).
    pub fn billed(&self) -> Usage {
        self.inner.lock().unwrap().billed
    }

    /// Request `index` (0-based) waits, before it is answered, until [`Self::release`].
    pub fn hold(&self, index: usize) {
        self.inner.lock().unwrap().hold = Some(index);
    }

    /// Resolves once the held request has arrived (and is waiting).
    pub async fn held(&self) {
        let arrived = self.inner.lock().unwrap().arrived.clone();
        arrived.notified().await;
    }

    pub fn release(&self) {
        self.inner.lock().unwrap().gate.notify_one();
    }

    /// Scripted turns not yet used.
    pub fn left(&self) -> usize {
        self.inner.lock().unwrap().script.len()
    }

    /// The `tool_result` blocks of request `n` (0-based), by `tool_use_id`.
    pub fn tool_results(&self, n: usize) -> Vec<(String, String, bool)> {
        let requests = self.requests();
        let body = &requests[n].body;
        let last = body["messages"].as_array().unwrap().last().unwrap();
        last["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| {
                (
                    b["tool_use_id"].as_str().unwrap().to_owned(),
                    result_text(&b["content"]),
                    b["is_error"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }
}

/// A `tool_result`'s content: a string, or text blocks.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn error_response(status: u16, kind: &str, message: &str, retry_after: Option<&str>) -> Response {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_fake");
    if let Some(wait) = retry_after {
        r = r.header("retry-after", wait);
    }
    r.body(Body::from(
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
    ))
    .unwrap()
}

/// What the real API checks before it answers; `Err` is its 400 message.
fn validate(body: &Value) -> Result<(), String> {
    if !body["model"].is_string() {
        return Err("model: Field required".into());
    }
    if !body["max_tokens"].is_u64() {
        return Err("max_tokens: Field required".into());
    }
    if body["stream"] != json!(true) {
        return Err("this fake only streams".into());
    }
    let messages = body["messages"]
        .as_array()
        .ok_or("messages: Field required")?;
    let mut expected_results: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if role != want {
            return Err(format!(
                "messages.{i}: roles must alternate, starting with user"
            ));
        }
        let content = m["content"].as_array().ok_or("content must be a list")?;
        if role == "user" {
            let results: Vec<String> = content
                .iter()
                .take_while(|b| b["type"] == "tool_result")
                .map(|b| b["tool_use_id"].as_str().unwrap_or("").to_owned())
                .collect();
            if content
                .iter()
                .skip(results.len())
                .any(|b| b["type"] == "tool_result")
            {
                return Err(format!("messages.{i}: tool_result blocks must come first"));
            }
            let mut want = expected_results.clone();
            let mut got = results.clone();
            want.sort();
            got.sort();
            if want != got {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {want:?} vs {got:?}"
                ));
            }
            expected_results.clear();
        } else {
            expected_results = content
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["id"].as_str().unwrap_or("").to_owned())
                .collect();
        }
    }
    if messages.len() % 2 == 0 {
        return Err("the last message must be from the user".into());
    }
    let marks = body.to_string().matches("\"cache_control\"").count();
    if marks > 4 {
        return Err(format!(
            "A maximum of 4 blocks with cache_control may be provided. Found {marks}."
        ));
    }
    Ok(())
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let held = {
        let i = inner.lock().unwrap();
        (i.hold == Some(i.requests.len())).then(|| (i.gate.clone(), i.arrived.clone()))
    };
    if let Some((gate, arrived)) = held {
        arrived.notify_one();
        gate.notified().await;
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(400, "invalid_request_error", &e.to_string(), None);
        }
    };
    let mut recorded = Recorded {
        api_key: header("x-api-key"),
        version: header("anthropic-version"),
        body: body.clone(),
        refused: None,
        usage: None,
    };
    let mut inner = inner.lock().unwrap();
    if recorded.api_key != API_KEY {
        recorded.refused = Some("key".into());
        inner.requests.push(recorded);
        return error_response(401, "authentication_error", "invalid x-api-key", None);
    }
    if recorded.version != "2023-06-01" {
        recorded.refused = Some("version".into());
        inner.requests.push(recorded);
        return error_response(400, "invalid_request_error", "anthropic-version", None);
    }
    if let Err(message) = validate(&body) {
        recorded.refused = Some(message.clone());
        inner.requests.push(recorded);
        return error_response(400, "invalid_request_error", &message, None);
    }
    let counted = inner.window.map(|window| (window, prompt_blocks(&body)));
    if let Some((window, blocks)) = &counted {
        let tokens: u64 = blocks.iter().map(|(t, _)| t).sum();
        if tokens > *window {
            let message = format!("prompt is too long: {tokens} tokens > {window} maximum");
            recorded.refused = Some(message.clone());
            inner.requests.push(recorded);
            return error_response(400, "invalid_request_error", &message, None);
        }
    }
    inner.requests.push(recorded);
    let Some(turn) = inner.script.pop_front() else {
        return error_response(
            400,
            "invalid_request_error",
            "the fake's script has no more turns",
            None,
        );
    };
    inner.served += 1;
    let n = inner.served;
    // Figures that differ per answer, so sums are meaningful; or counted.
    let mut usage = Usage {
        input_tokens: 1000 + 37 * n,
        output_tokens: 40 + 3 * n,
        cache_write_tokens: 500 + n,
        cache_read_tokens: 900 * (n - 1),
    };
    if let Some((_, blocks)) = &counted {
        usage = inner.cache_usage(blocks);
        if let Turn::Message { blocks, .. } = &turn {
            usage.output_tokens = blocks.iter().map(tokens_of).sum::<u64>().max(1);
        }
    }
    if matches!(turn, Turn::Message { .. }) {
        inner.requests.last_mut().unwrap().usage = Some(usage);
    }
    match turn {
        Turn::Error {
            status,
            kind,
            message,
            retry_after,
        } => error_response(status, kind, &message, retry_after),
        Turn::StreamError { kind } => {
            let started = Usage {
                output_tokens: 1,
                ..usage
            };
            inner.billed.add(started);
            let mut sse = Sse::default();
            sse.event("message_start", message_start(&body, n, &started));
            sse.event(
                "error",
                json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
            );
            sse.response()
        }
        Turn::Message {
            blocks,
            stop_reason,
        } => {
            inner.billed.add(usage);
            stream(&body, n, &blocks, stop_reason, &usage)
        }
    }
}

/// Tokens of one block in counting mode: a quarter of its JSON, `cache_control` left out.
fn tokens_of(block: &Value) -> u64 {
    (without_mark(block).to_string().len() as u64).div_ceil(4)
}

fn without_mark(block: &Value) -> Value {
    let mut block = block.clone();
    if let Some(o) = block.as_object_mut() {
        o.remove("cache_control");
    }
    block
}

/// The prompt as the cache sees it, in order (tools, system, messages): each block's
/// tokens and whether it carries a breakpoint.
fn prompt_blocks(body: &Value) -> Vec<(u64, Value)> {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut blocks = list(&body["tools"]);
    blocks.extend(list(&body["system"]));
    for m in list(&body["messages"]) {
        blocks.extend(list(&m["content"]));
    }
    blocks.into_iter().map(|b| (tokens_of(&b), b)).collect()
}

impl Inner {
    /// Cache read, cache write and fresh input of one prompt; remembers its breakpoints.
    fn cache_usage(&mut self, blocks: &[(u64, Value)]) -> Usage {
        let mut hasher = DefaultHasher::new();
        let (mut total, mut read, mut last_mark) = (0, 0, 0);
        let mut marks = Vec::new();
        for (tokens, block) in blocks {
            without_mark(block).to_string().hash(&mut hasher);
            total += tokens;
            let prefix = hasher.finish();
            if self.cached.contains(&prefix) {
                read = total;
            }
            if block.get("cache_control").is_some() {
                last_mark = total;
                marks.push(prefix);
            }
        }
        self.cached.extend(marks);
        let read = read.min(last_mark);
        Usage {
            input_tokens: total - last_mark.max(read),
            output_tokens: 0,
            cache_write_tokens: last_mark - read,
            cache_read_tokens: read,
        }
    }
}

#[derive(Default)]
struct Sse(String);

impl Sse {
    fn event(&mut self, name: &str, data: Value) {
        self.0.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }

    fn response(self) -> Response {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("cache-control", "no-cache")
            .header("request-id", "req_fake")
            .body(Body::from(self.0))
            .unwrap()
    }
}

fn message_start(body: &Value, n: u64, usage: &Usage) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_fake{n:04}"),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": body["model"],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_write_tokens,
                "cache_read_input_tokens": usage.cache_read_tokens,
                "output_tokens": 1,
            },
        },
    })
}

/// Pieces of at most `n` characters.
fn chunks(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

fn stream(body: &Value, n: u64, blocks: &[Value], stop_reason: &str, usage: &Usage) -> Response {
    let mut sse = Sse::default();
    sse.event("message_start", message_start(body, n, usage));
    sse.event("ping", json!({"type": "ping"}));
    for (index, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => {
                sse.event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                );
                for piece in chunks(block["text"].as_str().unwrap(), 7) {
                    sse.event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                    );
                }
            }
            Some("tool_use") => {
                sse.event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
                );
                for piece in chunks(&block["input"].to_string(), 11) {
                    sse.event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    );
                }
            }
            other => panic!("the fake cannot stream a {other:?} block"),
        }
        sse.event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    sse.event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": usage.output_tokens}}),
    );
    sse.event("message_stop", json!({"type": "message_stop"}));
    sse.response()
}
