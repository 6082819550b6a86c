//! The repository's `check` commands, run by the runner (SPEC section 16).
//!
//! The agent asks for a round whenever it thinks it is done ([`crate::agent::Checks`]);
//! each command runs like a setup command: `sh -c` in the job's sandbox, with the check
//! phase's network, the same limits, its output in the job log. Every round is kept:
//! the last one is what the PR/MR body and the final comment show, and whether the job
//! opens a draft.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::command::CommandAgent;
use crate::agent::{
    Activity, Agent, AgentError, AgentRequest, CheckResult, CheckRound, Checks, LogSink,
};
use crate::sandbox::SandboxSpec;

/// `check_attempts` when `.repobox.yml` does not say.
pub const DEFAULT_EXTRA_GOES: u32 = 2;
/// Most extra goes a repository may ask for.
pub const MAX_EXTRA_GOES: u32 = 10;

pub struct SandboxChecks {
    pub commands: Vec<String>,
    /// The sandbox checks run in (the check phase's proxy, no setup secrets).
    pub sandbox: SandboxSpec,
    pub scratch: PathBuf,
    pub log: LogSink,
    pub cancel: CancellationToken,
    pub extra_goes: u32,
    rounds: Mutex<Vec<CheckRound>>,
}

impl SandboxChecks {
    pub fn new(
        commands: Vec<String>,
        sandbox: SandboxSpec,
        scratch: PathBuf,
        log: LogSink,
        cancel: CancellationToken,
        extra_goes: u32,
    ) -> SandboxChecks {
        SandboxChecks {
            commands,
            sandbox,
            scratch,
            log,
            cancel,
            extra_goes,
            rounds: Mutex::default(),
        }
    }

    /// The latest round, if any ran.
    pub fn last(&self) -> Option<CheckRound> {
        self.rounds.lock().ok()?.last().cloned()
    }

    /// How many rounds ran.
    pub fn rounds(&self) -> usize {
        self.rounds.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Checks for SandboxChecks {
    async fn run(&self) -> Result<CheckRound, AgentError> {
        let n = self.rounds() + 1;
        let _ = self.log.send(format!("==> Checks, round {n}"));
        let mut round = CheckRound::default();
        for command in &self.commands {
            let started = Instant::now();
            let check = CommandAgent {
                command: command.clone(),
            };
            let request = AgentRequest {
                prompt: String::new(),
                model: None,
                max_turns: None,
                budget_usd: None,
                sandbox: self.sandbox.clone(),
                scratch_dir: self.scratch.clone(),
                log: self.log.clone(),
                cancel: self.cancel.clone(),
                activity: watch::channel(Activity::default()).0,
                checks: None,
                steering: None,
            };
            let (passed, output) = match check.run(request).await {
                Ok(_) => (true, String::new()),
                Err(AgentError::Stopped) => return Err(AgentError::Stopped),
                Err(AgentError::Failed(e)) => (false, e),
            };
            let duration = started.elapsed();
            let _ = self.log.send(format!(
                "==> Check `{command}` {} in {:.1}s",
                if passed { "passed" } else { "failed" },
                duration.as_secs_f64()
            ));
            round.results.push(CheckResult {
                command: command.clone(),
                passed,
                duration,
                output,
            });
        }
        if let Ok(mut rounds) = self.rounds.lock() {
            rounds.push(round.clone());
        }
        Ok(round)
    }

    fn extra_goes(&self) -> u32 {
        self.extra_goes
    }
}
