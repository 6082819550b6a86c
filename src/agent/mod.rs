//! The agent seam: what changes the code in a job's work tree. The runner hands an
//! agent a prompt and a sandbox and gets back a summary (and token counts) or an error.
//!
//! - [`command`]: `REPOBOX_AGENT_COMMAND` run in the sandbox (Claude Code, Codex, aider…).
//! - `claude`: the built-in tool-use loop on the Anthropic Messages API (its own issue).

pub mod claude;
pub mod command;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::sandbox::SandboxSpec;

/// Lines for the job log (the runner drains this into Redis).
pub type LogSink = tokio::sync::mpsc::UnboundedSender<String>;

pub struct AgentRequest {
    /// Full prompt text: the instructions plus the quoted context.
    pub prompt: String,
    /// The sandbox, with the work tree already filled in.
    pub sandbox: SandboxSpec,
    /// Per-job directory outside the work tree, already in `sandbox.writable`.
    pub scratch_dir: PathBuf,
    pub log: LogSink,
    /// Cancelled on `/repobox cancel`, timeout or shutdown; the runner knows which.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    pub summary: String,
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Readable and already masked.
    #[error("{0}")]
    Failed(String),
    /// The cancel token fired; the runner knows why.
    #[error("stopped")]
    Stopped,
}

#[async_trait::async_trait]
pub trait Agent: Send + Sync + 'static {
    async fn run(&self, request: AgentRequest) -> Result<AgentOutcome, AgentError>;
}
