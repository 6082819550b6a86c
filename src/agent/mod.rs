//! The agent seam: what changes the code in a job's work tree. The runner hands an
//! agent a prompt and a sandbox and gets back a summary (and token counts) or an error.
//!
//! - [`command`]: `REPOBOX_AGENT_COMMAND` run in the sandbox (Claude Code, Codex, aider…).
//! - [`claude`]: the built-in tool-use loop on the Anthropic Messages API.
//!
//! While it works, an agent publishes its [`Activity`] (turns, tool calls, tokens, cost,
//! the last action) on a watch channel: the runner shows it in the progress comment and
//! records the totals whether the agent succeeds, fails or is stopped.
//!
//! When the repository has `check` commands, the request carries [`Checks`]: the agent
//! runs them whenever it thinks it is done and, while they fail and extra goes are
//! left, takes their output as its next input (SPEC section 16). The runner owns how
//! checks run (in the sandbox, with the check phase's network) and what they report.
//!
//! An agent that can take more instructions while it works ([`Agent::steerable`]: the
//! built-in `claude`) gets [`Steering`]: a writer's `/repobox …` on the thread reaches it
//! before its next request, and when it would end it asks once more (SPEC 16).

pub mod claude;
pub mod command;
pub mod log_sink;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::sandbox::SandboxSpec;

pub use log_sink::LogSink;

pub struct AgentRequest {
    /// The task: the instructions plus the quoted context. Each agent adds how it wants
    /// the summary handed back.
    pub prompt: String,
    /// `model` from `.repobox.yml`, else the admin setting, over the agent's default
    /// (agents with a choice).
    pub model: Option<String>,
    /// `max_turns` from `.repobox.yml`, else the admin setting, over the agent's default.
    pub max_turns: Option<u32>,
    /// The job's budget in USD (`REPOBOX_JOB_BUDGET`, lowered by `.repobox.yml`
    /// `budget`): an agent that bills tokens checks it before every request and stops
    /// there. `None`: no budget.
    pub budget_usd: Option<f64>,
    /// The sandbox, with the work tree already filled in.
    pub sandbox: SandboxSpec,
    /// Per-job directory outside the work tree, already in `sandbox.writable`.
    pub scratch_dir: PathBuf,
    pub log: LogSink,
    /// Cancelled on `/repobox cancel`, timeout or shutdown; the runner knows which.
    pub cancel: CancellationToken,
    /// Where the agent publishes its progress and totals.
    pub activity: ActivitySink,
    /// The repository's checks, when it has any.
    pub checks: Option<std::sync::Arc<dyn Checks>>,
    /// Instructions added while the agent works, for a steerable agent.
    pub steering: Option<std::sync::Arc<dyn Steering>>,
}

/// Instructions a writer adds to the running job (`/repobox …` on its thread).
#[async_trait::async_trait]
pub trait Steering: Send + Sync {
    /// New instructions since the last call; none when the store cannot be reached.
    async fn take(&self) -> Vec<crate::store::Steer>;
    /// The agent would end: new instructions (it goes on with them) or none, and then
    /// the job takes no more (later commands become jobs of their own).
    async fn close(&self) -> Vec<crate::store::Steer>;
}

/// The repository's `check` commands, run by the runner.
#[async_trait::async_trait]
pub trait Checks: Send + Sync {
    /// Runs every check once, in order; `Err` only when the job is stopped.
    async fn run(&self) -> Result<CheckRound, AgentError>;
    /// Extra goes the agent gets after failed checks (`check_attempts`).
    fn extra_goes(&self) -> u32;
}

/// One run of every check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckRound {
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub command: String,
    pub passed: bool,
    pub duration: std::time::Duration,
    /// How it failed and the last lines of its output (empty when it passed).
    pub output: String,
}

impl CheckRound {
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// What the agent is told when checks failed: each failure and its output.
    pub fn feedback(&self) -> String {
        let mut text = String::from(
            "The repository's checks failed. Fix the code so that they pass, then finish again.\n",
        );
        for r in self.results.iter().filter(|r| !r.passed) {
            text.push_str(&format!("\n`{}` failed: {}\n", r.command, r.output));
        }
        text
    }
}

#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// What changed and why; the first line serves as the pull request title.
    pub summary: String,
}

/// Tokens as the model provider counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the full rate (neither read from nor written to the cache).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// An agent's running totals. Agents that report nothing leave it at its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub model: Option<String>,
    /// Model responses so far.
    pub turns: u32,
    pub tool_calls: u32,
    pub usage: Usage,
    /// `None` while nothing is billed, or when the model has no price.
    pub cost_usd: Option<f64>,
    /// The latest tool call, for the progress comment (`$ cargo test`, `str_replace
    /// src/lib.rs`).
    pub last_action: Option<String>,
    /// Who added instructions while it worked, in order (SPEC 16: "steered by @login").
    pub steered_by: Vec<String>,
}

pub type ActivitySink = tokio::sync::watch::Sender<Activity>;

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

    /// Whether it takes [`AgentRequest::steering`] (else commands wait as jobs).
    fn steerable(&self) -> bool {
        false
    }
}
