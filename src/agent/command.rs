//! The `command` agent: runs the admin's `REPOBOX_AGENT_COMMAND` (Claude Code, Codex,
//! aider, a script...) with `sh -c` in the work tree, inside the job's sandbox
//! (SPEC §7), for teams that prefer their own agent to the built-in one.
//!
//! Contract with the command: the prompt arrives on stdin and in `REPOBOX_PROMPT`; a
//! summary for the pull request may be written to `REPOBOX_SUMMARY_FILE`, otherwise the
//! last lines of output serve. Every output line goes to the job log as it comes.
//! Cancellation kills the sandbox's whole process tree at once.

use super::{Agent, AgentError, AgentOutcome, AgentRequest, LogSink};
use crate::sandbox::job_limits;
use crate::sandbox::{kill_group, kill_tree};
use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Longest log line kept, in bytes; the rest of the line is counted and dropped.
const MAX_LINE_BYTES: usize = 4000;
/// Output lines kept for the summary when the command writes no summary file.
const SUMMARY_TAIL_LINES: usize = 20;
/// Longest summary, in characters.
const SUMMARY_MAX_CHARS: usize = 4000;
/// Most of the summary file read (it is written by sandboxed code).
const SUMMARY_READ_BYTES: u64 = 64 * 1024;
/// stderr lines quoted in a failure message.
const ERROR_TAIL_LINES: usize = 5;
/// `REPOBOX_PROMPT` is cut here: Linux refuses any single variable over 128 KiB.
/// The full prompt is always on stdin.
const PROMPT_ENV_MAX_BYTES: usize = 100 * 1024;
/// After the command exits, how long its output pipes may take to close.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// After a kill on cancel, how long to wait for the child to be reaped.
const REAP_GRACE: Duration = Duration::from_millis(500);

/// Appended to the prompt: how the command hands its summary back.
const SUMMARY_HINT: &str = "When you are done, write a short summary of what you changed and why to the file named by REPOBOX_SUMMARY_FILE (first line: a title for the pull request).";

/// Runs a shell command as the agent.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    /// Passed to `sh -c` inside the sandbox.
    pub command: String,
}

/// The last lines of each stream, shared with the reader tasks so they survive an abort.
#[derive(Default)]
struct Tails {
    stdout: VecDeque<String>,
    stderr: VecDeque<String>,
}

type SharedTails = Arc<Mutex<Tails>>;

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

#[async_trait::async_trait]
impl Agent for CommandAgent {
    /// Runs the command; with checks, runs them after each successful run and, while
    /// they fail and extra goes are left, runs the command again with the task followed
    /// by the failures (SPEC section 16).
    async fn run(&self, request: AgentRequest) -> Result<AgentOutcome, AgentError> {
        let AgentRequest {
            prompt: task,
            sandbox,
            scratch_dir,
            log,
            cancel,
            checks,
            ..
        } = request;
        let mut prompt = task.clone();
        let mut goes = 0;
        loop {
            let outcome = self
                .run_once(prompt.clone(), sandbox.clone(), &scratch_dir, &log, &cancel)
                .await?;
            let Some(checks) = &checks else {
                return Ok(outcome);
            };
            let round = checks.run().await?;
            if round.passed() || goes >= checks.extra_goes() {
                return Ok(outcome);
            }
            goes += 1;
            let _ = log.send(format!(
                "==> Checks failed: the agent command runs again (extra go {goes} of {})",
                checks.extra_goes()
            ));
            prompt = format!("{}\n\n{}", task.trim_end(), round.feedback());
        }
    }
}

impl CommandAgent {
    async fn run_once(
        &self,
        prompt: String,
        mut sandbox: crate::sandbox::SandboxSpec,
        scratch_dir: &Path,
        log: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<AgentOutcome, AgentError> {
        let (log, cancel) = (log.clone(), cancel.clone());
        let prompt = if prompt.is_empty() {
            prompt
        } else {
            format!("{}\n\n{SUMMARY_HINT}\n", prompt.trim_end())
        };
        if cancel.is_cancelled() {
            return Err(AgentError::Stopped);
        }
        let summary_file = scratch_dir.join("summary.md");
        // A leftover from an earlier attempt must not pass for this run's summary.
        let _ = std::fs::remove_file(&summary_file);
        sandbox
            .env
            .push(("REPOBOX_PROMPT".to_owned(), prompt_for_env(&prompt)));
        sandbox.env.push((
            "REPOBOX_SUMMARY_FILE".to_owned(),
            summary_file.to_string_lossy().into_owned(),
        ));

        let job_limits = sandbox.limits.job;
        let mut child = sandbox
            .command("sh", &["-c", &self.command])
            .spawn()
            .map_err(|err| {
                AgentError::Failed(format!("could not start the agent command: {err}"))
            })?;
        let pgid = child.id();

        let tails = SharedTails::default();
        let mut tasks = Vec::new();
        if let Some(mut stdin) = child.stdin.take() {
            tasks.push(tokio::spawn(async move {
                // The command may never read stdin (or exit first): a broken pipe is fine.
                let _ = stdin.write_all(prompt.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }));
        }
        if let Some(stdout) = child.stdout.take() {
            tasks.push(tokio::spawn(pump(
                stdout,
                Stream::Stdout,
                log.clone(),
                tails.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            tasks.push(tokio::spawn(pump(
                stderr,
                Stream::Stderr,
                log.clone(),
                tails.clone(),
            )));
        }

        let status = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                kill_tree(&child);
                for task in &tasks {
                    task.abort();
                }
                let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                return Err(AgentError::Stopped);
            }
            reason = job_limits::watch(pgid, job_limits) => {
                kill_tree(&child);
                for task in &tasks {
                    task.abort();
                }
                let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                let _ = log.send(format!("==> {reason}"));
                return Err(AgentError::Failed(reason));
            }
            status = child.wait() => status,
        };
        // Stragglers left in the group (only possible without bwrap, where the pid
        // namespace dies with the command) would hold the output pipes open.
        if let Some(pgid) = pgid {
            kill_group(pgid);
        }
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            for task in &tasks {
                task.abort();
            }
            let _ = log.send(
                "repobox: output still open after the agent command exited; stopped reading"
                    .to_owned(),
            );
        }
        let status = status.map_err(|err| {
            AgentError::Failed(format!("could not wait for the agent command: {err}"))
        })?;
        let tails = std::mem::take(&mut *lock(&tails));

        if status.success() {
            let summary = read_summary(&summary_file).unwrap_or_else(|| {
                let lines = if tails.stdout.is_empty() {
                    &tails.stderr
                } else {
                    &tails.stdout
                };
                cap_chars(
                    lines
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                        .trim(),
                )
            });
            return Ok(AgentOutcome { summary });
        }
        let how = describe_failure(
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        );
        let last = if tails.stderr.is_empty() {
            &tails.stdout
        } else {
            &tails.stderr
        };
        let skip = last.len().saturating_sub(ERROR_TAIL_LINES);
        let detail: Vec<&str> = last.iter().skip(skip).map(String::as_str).collect();
        let message = if detail.is_empty() {
            how
        } else {
            format!("{how}: {}", detail.join("\n"))
        };
        Err(AgentError::Failed(message))
    }
}

/// The prompt as an environment value: no NUL (which `exec` cannot carry) and short
/// enough for the kernel.
fn prompt_for_env(prompt: &str) -> String {
    let clean = prompt.replace('\0', "");
    if clean.len() <= PROMPT_ENV_MAX_BYTES {
        return clean;
    }
    let mut end = PROMPT_ENV_MAX_BYTES;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[prompt cut here; the full text is on stdin]",
        &clean[..end]
    )
}

/// "exited with status N" or "was killed by signal N", naming the limit a signal
/// usually means. A shell (and bwrap) reports a child killed by signal N as 128 + N.
fn describe_failure(code: Option<i32>, signal: Option<i32>) -> String {
    let signal_text = |sig: i32| {
        let name = match sig {
            6 => " (SIGABRT; often a failed allocation under the memory limit)",
            9 => " (SIGKILL; out of memory, or the CPU time limit)",
            11 => " (SIGSEGV)",
            15 => " (SIGTERM)",
            24 => " (SIGXCPU: the CPU time limit was reached)",
            25 => " (SIGXFSZ: the file size limit was reached)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    };
    match (code, signal) {
        (_, Some(sig)) => format!("agent command was {}", signal_text(sig)),
        (Some(code), None) if (129..=128 + 64).contains(&code) => {
            format!(
                "agent command exited with status {code}, {}",
                signal_text(code - 128)
            )
        }
        (Some(code), None) => format!("agent command exited with status {code}"),
        (None, None) => "agent command ended abnormally".to_owned(),
    }
}

/// Reads `stream` line by line into the log and the tails. Lines over
/// [`MAX_LINE_BYTES`] are cut (the remainder is counted, not buffered), so a command
/// that prints megabytes without a newline costs no memory.
async fn pump<R: AsyncRead + Unpin>(stream: R, which: Stream, log: LogSink, tails: SharedTails) {
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::new();
    let mut dropped = 0usize;
    // A read error ends the stream like EOF would.
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let (chunk, consumed, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        let take = chunk.len().min(room);
        line.extend_from_slice(&chunk[..take]);
        dropped += chunk.len() - take;
        reader.consume(consumed);
        if complete {
            emit(&line, dropped, which, &log, &tails);
            line.clear();
            dropped = 0;
        }
    }
    // A last line without a newline.
    if !line.is_empty() || dropped > 0 {
        emit(&line, dropped, which, &log, &tails);
    }
}

fn emit(line: &[u8], dropped: usize, which: Stream, log: &LogSink, tails: &SharedTails) {
    let mut text = String::from_utf8_lossy(line)
        .trim_end_matches('\r')
        .to_owned();
    if dropped > 0 {
        text.push_str(&format!(" … [{dropped} more bytes cut]"));
    }
    let prefixed = match which {
        Stream::Stdout => text.clone(),
        Stream::Stderr => format!("stderr: {text}"),
    };
    // The runner may have stopped listening; the command's outcome still matters.
    let _ = log.send(prefixed);
    let mut tails = lock(tails);
    let tail = match which {
        Stream::Stdout => &mut tails.stdout,
        Stream::Stderr => &mut tails.stderr,
    };
    if tail.len() == SUMMARY_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(text);
}

fn lock(tails: &SharedTails) -> std::sync::MutexGuard<'_, Tails> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    tails
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The summary file's text, trimmed and capped, if it is a non-empty regular file.
///
/// The file is written by sandboxed code and read by the runner outside the sandbox:
/// it is opened without following a symlink (which could point at any host file) and
/// without blocking (a FIFO would hang the runner), and only its start is read.
fn read_summary(path: &Path) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(SUMMARY_READ_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        None
    } else {
        Some(cap_chars(text))
    }
}

/// `text` cut to [`SUMMARY_MAX_CHARS`] characters, marked when cut.
fn cap_chars(text: &str) -> String {
    match text.char_indices().nth(SUMMARY_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_whether_direct_or_through_a_shell() {
        assert!(describe_failure(None, Some(24)).contains("CPU time limit"));
        let through_shell = describe_failure(Some(128 + 25), None);
        assert!(through_shell.contains("status 153"), "{through_shell}");
        assert!(through_shell.contains("file size limit"), "{through_shell}");
        assert_eq!(
            describe_failure(Some(3), None),
            "agent command exited with status 3"
        );
    }

    #[test]
    fn long_prompts_are_cut_for_the_environment_on_a_char_boundary() {
        let prompt = "é".repeat(PROMPT_ENV_MAX_BYTES);
        let env = prompt_for_env(&prompt);
        assert!(env.len() < PROMPT_ENV_MAX_BYTES + 100);
        assert!(env.ends_with("[prompt cut here; the full text is on stdin]"));
        assert_eq!(prompt_for_env("a\0b"), "ab");
    }

    #[test]
    fn summaries_are_capped_in_characters() {
        let long = "ß".repeat(SUMMARY_MAX_CHARS + 10);
        let capped = cap_chars(&long);
        assert_eq!(capped.chars().count(), SUMMARY_MAX_CHARS + 1);
        assert_eq!(cap_chars("short"), "short");
    }
}
