//! Context management (SPEC 16): a long job never fails on the model's context window.
//!
//! Before each request the conversation's size is estimated from its JSON bytes and a
//! tokens-per-byte ratio calibrated on the usage the API reported for the previous
//! request (a conservative guess before the first answer). When the estimate nears the
//! input limit — the model's window minus `max_tokens`, or `REPOBOX_CONTEXT_WINDOW` — the
//! oldest tool results are replaced by a one-line note naming the tool, its input and the
//! original size, until the estimate is back under half the limit; the latest results
//! stay whole. A 400 `prompt is too long: N tokens > M maximum` recalibrates on the
//! API's own count and trims below `M`; a `model_context_window_exceeded` stop trims the
//! same way. Neither is a job failure.
//!
//! Prompt cache: results are elided in whole blocks, never in the task message (the
//! cached prefix of system, tools and task stays byte-for-byte the same), and each trim
//! goes down to half the limit, so the cache is invalidated past the first elided block
//! only once in many turns.

use serde_json::Value;

use super::api::{Block, Message, Role};

/// Input window of current Claude models, in tokens (Anthropic's models overview: 200K
/// for every model Repobox prices; larger windows are opt-in betas).
pub const DEFAULT_WINDOW: u64 = 200_000;
/// Tool results that are never elided, newest first.
const KEEP_LATEST: usize = 2;
/// Trim when the estimate passes this share of the limit…
const TRIM_AT: f64 = 0.85;
/// …down to this share.
const TRIM_TO: f64 = 0.5;
/// Tokens per byte of JSON before the API reported any usage: more than prose or code
/// ever takes (about 1 token per 3.5 characters), so the first estimate errs high.
const FIRST_RATIO: f64 = 1.0 / 2.5;
/// Estimates add this share to the calibrated ratio.
const MARGIN: f64 = 1.1;
/// The marker that starts every elision note (an elided result is not elided again).
const NOTE_PREFIX: &str = "[Repobox removed this tool result";

/// What one trim did, for the job log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub results: usize,
    pub bytes: usize,
    /// The estimate after the trim, in tokens.
    pub estimate: u64,
}

/// The window of one conversation and what is known about its token count.
#[derive(Debug, Clone)]
pub struct ContextWindow {
    /// Most input tokens a request may carry.
    limit: u64,
    /// Tokens per byte of the request's JSON, from the last reported count.
    ratio: f64,
}

impl ContextWindow {
    /// `window`: the model's window in tokens (`REPOBOX_CONTEXT_WINDOW` or
    /// [`DEFAULT_WINDOW`]); the output a response may add is kept free of it.
    pub fn new(window: u64, max_tokens: u32) -> ContextWindow {
        let limit = window.saturating_sub(u64::from(max_tokens)).max(window / 2);
        ContextWindow {
            limit,
            ratio: FIRST_RATIO,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Estimated input tokens of a request whose JSON is `bytes` long.
    pub fn estimate(&self, bytes: usize) -> u64 {
        (bytes as f64 * self.ratio * MARGIN).ceil() as u64
    }

    /// The API counted `tokens` input tokens (fresh, cache read and cache written) for a
    /// request of `bytes`: the ratio for the next estimates.
    pub fn observe(&mut self, bytes: usize, tokens: u64) {
        if bytes > 0 && tokens > 0 {
            self.ratio = tokens as f64 / bytes as f64;
        }
    }

    /// A 400 said the request of `bytes` held `tokens` against a `maximum`: calibrate on
    /// the API's count and never aim above its maximum again.
    pub fn refused(&mut self, bytes: usize, tokens: u64, maximum: u64) {
        self.observe(bytes, tokens);
        self.limit = self.limit.min(maximum);
    }

    /// A response stopped at the window (`model_context_window_exceeded`): the estimate
    /// was low by at least the output it got; aim lower from now on.
    pub fn overflowed(&mut self) {
        self.ratio *= 1.25;
    }

    /// Elides the oldest tool results while the request (`bytes` of JSON) is estimated
    /// over [`TRIM_AT`] of the limit, or always when `force`; down to [`TRIM_TO`].
    /// `None` when nothing needed or could be elided.
    pub fn fit(&self, messages: &mut [Message], bytes: usize, force: bool) -> Option<Trimmed> {
        let limit = self.limit as f64;
        if !force && (self.estimate(bytes) as f64) < limit * TRIM_AT {
            return None;
        }
        let target = limit * TRIM_TO;
        let mut candidates = elidable(messages);
        // Keep the newest ones whole.
        candidates.truncate(candidates.len().saturating_sub(KEEP_LATEST));
        let mut size = bytes;
        let mut trimmed = Trimmed {
            results: 0,
            bytes: 0,
            estimate: self.estimate(bytes),
        };
        for (i, j) in candidates {
            if (self.estimate(size) as f64) <= target {
                break;
            }
            let note = note_for(&messages[..i], &messages[i].content[j]);
            let Block::ToolResult { content, .. } = &mut messages[i].content[j] else {
                continue;
            };
            let before = json_len(content);
            let old = std::mem::replace(content, note);
            let saved = before.saturating_sub(json_len(content));
            size = size.saturating_sub(saved);
            trimmed.results += 1;
            trimmed.bytes += old.len();
        }
        trimmed.estimate = self.estimate(size);
        (trimmed.results > 0).then_some(trimmed)
    }
}

/// Parses Anthropic's 400 message `prompt is too long: 212345 tokens > 200000 maximum`.
pub fn too_long(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("prompt is too long:")? + "prompt is too long:".len()..];
    let mut words = rest.split_whitespace();
    let tokens = words.next()?.parse().ok()?;
    (words.next()? == "tokens" && words.next()? == ">").then_some(())?;
    let maximum = words.next()?.parse().ok()?;
    Some((tokens, maximum))
}

/// Positions `(message, block)` of tool results that may be elided, oldest first: not
/// in the task message, not already elided.
fn elidable(messages: &[Message]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, message) in messages.iter().enumerate().skip(1) {
        if message.role != Role::User {
            continue;
        }
        for (j, block) in message.content.iter().enumerate() {
            if let Block::ToolResult { content, .. } = block
                && !content.starts_with(NOTE_PREFIX)
            {
                out.push((i, j));
            }
        }
    }
    out
}

/// The one-line note that replaces a result: the call it answered (found in the
/// assistant message before it) and the size it had.
fn note_for(before: &[Message], result: &Block) -> String {
    let Block::ToolResult {
        tool_use_id,
        content,
        ..
    } = result
    else {
        return String::new();
    };
    let call = before
        .iter()
        .rev()
        .flat_map(|m| m.content.iter())
        .find_map(|b| match b {
            Block::ToolUse { id, name, input } if id == tool_use_id => {
                Some(super::describe(name, input))
            }
            _ => None,
        })
        .unwrap_or_else(|| "an earlier tool call".to_owned());
    let lines = content.lines().count();
    format!(
        "{NOTE_PREFIX} to keep the conversation within the context window: `{call}` returned {} bytes in {lines} line{}. Run it again if you need it.]",
        content.len(),
        if lines == 1 { "" } else { "s" }
    )
}

/// Bytes `s` takes as a JSON string.
fn json_len(s: &str) -> usize {
    serde_json::to_string(&Value::String(s.to_owned()))
        .map(|j| j.len())
        .unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(id: &str, content: &str) -> Block {
        Block::ToolResult {
            tool_use_id: id.into(),
            content: content.into(),
            is_error: false,
            cache_control: None,
        }
    }

    fn conversation(n: usize, size: usize) -> Vec<Message> {
        let mut messages = vec![Message {
            role: Role::User,
            content: vec![Block::text("task")],
        }];
        for k in 0..n {
            messages.push(Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: format!("t{k}"),
                    name: "str_replace_based_edit_tool".into(),
                    input: json!({"command": "view", "path": format!("src/f{k}.rs")}),
                }],
            });
            messages.push(Message {
                role: Role::User,
                content: vec![result(&format!("t{k}"), &"x".repeat(size))],
            });
        }
        messages
    }

    fn bytes(messages: &[Message]) -> usize {
        serde_json::to_string(messages).unwrap().len()
    }

    #[test]
    fn the_oldest_results_go_first_the_latest_stay_whole_and_the_task_is_untouched() {
        let mut messages = conversation(14, 10_000);
        let mut window = ContextWindow::new(40_000, 4_000);
        window.observe(1000, 250);
        let size = bytes(&messages);
        assert!(window.estimate(size) as f64 > 36_000.0 * TRIM_AT);
        let trimmed = window.fit(&mut messages, size, false).unwrap();
        let after = bytes(&messages);
        assert!(window.estimate(after) as f64 <= 36_000.0 * TRIM_TO);
        assert_eq!(trimmed.estimate, window.estimate(after));
        let kinds: Vec<bool> = messages
            .iter()
            .filter_map(|m| match &m.content[0] {
                Block::ToolResult { content, .. } => Some(content.starts_with(NOTE_PREFIX)),
                _ => None,
            })
            .collect();
        let elided = kinds.iter().filter(|e| **e).count();
        assert_eq!(elided, trimmed.results);
        // Oldest first: every elided one comes before every kept one.
        assert!(kinds.windows(2).all(|w| w[0] || !w[1]), "{kinds:?}");
        assert!(!kinds[12] && !kinds[13]);
        assert_eq!(messages[0].content, vec![Block::text("task")]);
        let Block::ToolResult { content, .. } = &messages[2].content[0] else {
            panic!()
        };
        assert!(
            content.contains("`view src/f0.rs` returned 10000 bytes in 1 line"),
            "{content}"
        );
        // Under the threshold nothing changes.
        assert_eq!(window.fit(&mut messages, after, false), None);
    }

    #[test]
    fn a_refusal_recalibrates_and_lowers_the_limit() {
        let mut window = ContextWindow::new(200_000, 16_000);
        assert_eq!(window.limit(), 184_000);
        window.refused(100_000, 60_000, 50_000);
        assert_eq!(window.limit(), 50_000);
        assert_eq!(window.estimate(100_000), 66_000);
    }

    #[test]
    fn the_api_message_is_parsed() {
        assert_eq!(
            too_long("prompt is too long: 212345 tokens > 200000 maximum"),
            Some((212_345, 200_000))
        );
        assert_eq!(too_long("max_tokens: Field required"), None);
    }
}
