//! `bash`: Anthropic's bash tool (`bash_20250124`), one persistent shell per job inside
//! the job's sandbox.
//!
//! The protocol has to survive whatever the model (or a prompt injection) runs: syntax
//! errors, unclosed quotes and heredocs, commands that read stdin, `exit`, background
//! jobs that keep stdout open, endless output, output without a final newline, text
//! that imitates the end marker. So:
//! - the shell runs a small driver loop ([`DRIVER`]) that reads each command as data,
//!   a NUL-terminated record (`read -r -d ''`), and runs it with `eval`, stdin from
//!   `/dev/null` and stderr into stdout; a syntax error is then just a failed `eval`;
//! - the redirections on `eval` name fds 0, 1 and 2, so bash restores them afterwards
//!   even if the command ran `exec >/dev/null`;
//! - after each command the driver prints `\n<marker> <status>\n`, where the marker is
//!   random per session and reaches the shell on stdin (not on its command line);
//! - the end of a call is that marker, not EOF: background jobs may hold stdout open.
//!   If the shell itself ends (`exit 3`, `set -e`), its exit is reported and the next
//!   call starts a new one.
//!
//! A command that ends with a non-zero status comes back as an `is_error` result (its
//! output and `exit status N` in the text), so a refused read or a failing test stands
//! out to the model. Timeouts and cancellation kill the sandbox's whole process tree
//! ([`kill_tree`]).

use super::ToolOutput;
use crate::agent::LogSink;
use crate::sandbox::job_limits::{self, JobLimits};
use crate::sandbox::{SandboxSpec, kill_group, kill_tree};
use serde_json::Value;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

/// The shell's program: reads the marker, then runs NUL-terminated commands until
/// stdin closes. Everything it uses is a builtin, called as such; the marker is
/// read-only so a command cannot change it by accident.
const DRIVER: &str = r#"exec 2>&1
IFS= builtin read -r -d '' __repobox_marker || builtin exit 0
builtin readonly __repobox_marker
while IFS= builtin read -r -d '' __repobox_command; do
  builtin eval "$__repobox_command" </dev/null 1>&2 2>&1
  builtin printf '\n%s %d\n' "$__repobox_marker" "$?"
done
"#;
/// Longest result for the model, in characters; beyond it the head and the tail stay.
const MAX_OUTPUT_CHARS: usize = 30_000;
/// Bytes kept of the head and of the tail of the output: enough for
/// [`MAX_OUTPUT_CHARS`] characters of any width.
const KEEP_BYTES: usize = 4 * MAX_OUTPUT_CHARS;
/// Longest log line kept, in bytes; the rest is counted and dropped.
const MAX_LOG_LINE_BYTES: usize = 4000;
const LOG_PREFIX: &str = "  │ ";
/// After the shell exited, how long its remaining output may take to arrive.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// After a kill, how long to wait for the shell to be reaped.
const REAP_GRACE: Duration = Duration::from_millis(500);
/// Longest `describe` line, in characters.
const DESCRIBE_MAX_CHARS: usize = 200;
/// Bytes read at a time from the shell.
const READ_CHUNK: usize = 64 * 1024;

/// The bash tool of one job: a shell started on the first call, kept between calls.
#[derive(Debug)]
pub struct BashSession {
    sandbox: SandboxSpec,
    command_timeout: Duration,
    shell: Option<Shell>,
}

impl BashSession {
    /// `sandbox`: the job's sandbox (work tree rw, scratch rw, rest ro, no network by
    /// default). `command_timeout`: limit of one call (the loop passes 10 min).
    pub fn new(sandbox: SandboxSpec, command_timeout: Duration) -> BashSession {
        BashSession {
            sandbox,
            command_timeout,
            shell: None,
        }
    }

    /// Runs one call. Every output line also goes to `log` as it arrives (prefixed
    /// with "  │ "). On `cancel`, kills the shell's whole process tree and returns an
    /// error output "stopped".
    pub async fn run(
        &mut self,
        input: &Value,
        log: &LogSink,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        if cancel.is_cancelled() {
            return ToolOutput::error("stopped");
        }
        let restart = input.get("restart").and_then(Value::as_bool) == Some(true);
        let command = input.get("command").and_then(Value::as_str);
        if restart {
            self.close().await;
            if let Err(err) = self.spawn() {
                return ToolOutput::error(err);
            }
            if command.is_none() {
                return ToolOutput::ok("shell restarted");
            }
        }
        let Some(command) = command else {
            return ToolOutput::error("missing `command` (the command to run) or `restart: true`");
        };
        if command.contains('\0') {
            return ToolOutput::error("the command contains a NUL character; it was not run");
        }
        if let Err(err) = self.ensure_shell() {
            return ToolOutput::error(err);
        }
        let Some(shell) = self.shell.as_mut() else {
            return ToolOutput::error("the shell could not be started");
        };

        let mut output = Output::default();
        let ended = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            ended = tokio::time::timeout(
                self.command_timeout,
                shell.exchange(command, &mut output, log),
            ) => Some(ended),
        };
        if matches!(ended, None | Some(Err(_))) {
            // No status line will come: what was held back is output.
            if let Some(shell) = self.shell.as_mut() {
                let rest = std::mem::take(&mut shell.pending);
                output.push(&rest, log);
            }
        }
        output.flush_log(log);
        match ended {
            None => {
                self.close().await;
                ToolOutput::error("stopped")
            }
            Some(Err(_elapsed)) => {
                self.close().await;
                let mut text = output.render();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!(
                    "timed out after {}; the shell was restarted (working directory, \
                     variables and functions are reset)",
                    humantime::format_duration(self.command_timeout)
                ));
                ToolOutput::error(text)
            }
            // A non-zero status is reported as a tool error: the model sees at once that
            // the command failed (a failing test, a refused read outside the sandbox).
            Some(Ok(Ended::Status(status))) => {
                let text = result_text(output, status, None);
                if status == 0 {
                    ToolOutput::ok(text)
                } else {
                    ToolOutput::error(text)
                }
            }
            Some(Ok(Ended::Exited(status))) => {
                self.close().await;
                // bwrap and prlimit write only their own failures to stderr (the
                // shell's go to stdout): the sandbox, not the command, failed.
                let sandbox_failed = output.saw_stderr;
                let code = status.and_then(|s| s.code());
                let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
                let note = match (sandbox_failed, signal) {
                    (true, _) => "the sandbox could not run the shell".to_owned(),
                    (false, Some(signal)) => format!("the shell was killed by signal {signal}"),
                    (false, None) => "the shell exited".to_owned(),
                };
                let note = format!(
                    "{note}; the next command starts a new shell (working directory, \
                     variables and functions are reset)"
                );
                let text = result_text(output, code.unwrap_or(0), Some(&note));
                if sandbox_failed || code != Some(0) {
                    ToolOutput::error(text)
                } else {
                    ToolOutput::ok(text)
                }
            }
        }
    }

    /// Kills the shell and everything it started (end of the job).
    pub async fn close(&mut self) {
        if let Some(mut shell) = self.shell.take() {
            // The whole group; nothing if the shell was already reaped (its group was
            // killed then, in `exchange`).
            kill_tree(&shell.child);
            let _ = tokio::time::timeout(REAP_GRACE, shell.child.wait()).await;
        }
    }

    /// One line for the job log: `$ cargo test` (the first line of the command, cut at
    /// about 200 characters).
    pub fn describe(input: &Value) -> String {
        if input.get("restart").and_then(Value::as_bool) == Some(true) {
            return "$ (restart the shell)".to_owned();
        }
        let command = input.get("command").and_then(Value::as_str).unwrap_or("");
        let mut lines = command.trim().lines();
        let first = lines.next().unwrap_or("");
        let mut line: String = first
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(DESCRIBE_MAX_CHARS)
            .collect();
        if first.chars().count() > DESCRIBE_MAX_CHARS || lines.next().is_some() {
            line.push_str(" …");
        }
        format!("$ {line}")
    }

    /// Starts a shell unless one is running; a shell that has exited since the last
    /// call (killed from inside, say) is replaced.
    fn ensure_shell(&mut self) -> Result<(), String> {
        if let Some(shell) = self.shell.as_mut() {
            match shell.child.try_wait() {
                Ok(None) => return Ok(()),
                _ => self.shell = None,
            }
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = self
            .sandbox
            .command("bash", &["--noprofile", "--norc", "-c", DRIVER])
            .spawn()
            .map_err(|err| format!("the shell could not be started: {err}"))?;
        let pgid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_tree(&child);
            return Err("the shell could not be started: no pipes".to_owned());
        };
        let marker = format!("__repobox_end_{:032x}", rand::random::<u128>());
        let mut needle = Vec::with_capacity(marker.len() + 2);
        needle.push(b'\n');
        needle.extend_from_slice(marker.as_bytes());
        needle.push(b' ');
        self.shell = Some(Shell {
            child,
            pgid,
            stdin,
            stdout,
            stderr: Some(stderr),
            marker: marker.into_bytes(),
            needle,
            pending: Vec::new(),
            limits: self.sandbox.limits.job,
            sent_marker: false,
        });
        Ok(())
    }
}

/// How one exchange ended.
enum Ended {
    /// The driver printed the marker: the command's exit status.
    Status(i32),
    /// The shell itself ended (`exit`, `set -e`, a signal).
    Exited(Option<ExitStatus>),
}

#[derive(Debug)]
struct Shell {
    child: Child,
    /// The shell's process group (its pid), for killing stragglers after it is reaped.
    pgid: Option<u32>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// bwrap's and prlimit's own messages (the driver sends the shell's to stdout).
    stderr: Option<ChildStderr>,
    marker: Vec<u8>,
    /// `\n<marker> `: what starts the driver's status line.
    needle: Vec<u8>,
    /// Stdout bytes not yet known to be output (they may start the status line).
    pending: Vec<u8>,
    /// The sandbox's whole-job limits, watched while a command runs.
    limits: Option<JobLimits>,
    /// Whether the marker record was written (first exchange).
    sent_marker: bool,
}

impl Drop for Shell {
    fn drop(&mut self) {
        kill_tree(&self.child);
    }
}

impl Shell {
    /// Sends `command` and collects its output until the status line or the shell's
    /// end. Cancel-safe at every await (reads lose no data that matters: a cancelled
    /// exchange ends the shell).
    async fn exchange(&mut self, command: &str, output: &mut Output, log: &LogSink) -> Ended {
        let mut record = Vec::with_capacity(command.len() + self.marker.len() + 2);
        if !self.sent_marker {
            record.extend_from_slice(&self.marker);
            record.push(0);
            self.sent_marker = true;
        }
        record.extend_from_slice(command.as_bytes());
        record.push(0);
        // A shell that died makes this fail; its end is then seen below.
        let _ = async {
            self.stdin.write_all(&record).await?;
            self.stdin.flush().await
        }
        .await;

        let mut buf = vec![0u8; READ_CHUNK];
        let mut err_buf = vec![0u8; 4096];
        let mut stdout_open = true;
        let mut exited: Option<Option<ExitStatus>> = None;
        let drain_deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(drain_deadline);
        // The whole sandbox's memory and process count, sampled while the command runs.
        let over_limits = job_limits::watch(self.pgid, self.limits);
        tokio::pin!(over_limits);
        loop {
            if let Some(status) = self.scan(output, log) {
                return Ended::Status(status);
            }
            if !stdout_open && self.stderr.is_none() && exited.is_some() {
                break;
            }
            tokio::select! {
                read = self.stdout.read(&mut buf), if stdout_open => match read {
                    Ok(0) | Err(_) => stdout_open = false,
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                },
                read = read_opt(self.stderr.as_mut(), &mut err_buf), if self.stderr.is_some() => {
                    match read {
                        Ok(0) | Err(_) => self.stderr = None,
                        Ok(n) => {
                            output.saw_stderr = true;
                            output.push(&err_buf[..n], log);
                        }
                    }
                }
                status = self.child.wait(), if exited.is_none() => {
                    exited = Some(status.ok());
                    if let Some(pgid) = self.pgid {
                        // Without bwrap, background jobs would hold stdout open.
                        kill_group(pgid);
                    }
                    drain_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + EXIT_GRACE);
                }
                () = &mut drain_deadline, if exited.is_some() => break,
                reason = &mut over_limits, if exited.is_none() => {
                    if let Some(pgid) = self.pgid {
                        kill_group(pgid);
                    }
                    let _ = log.send(format!("==> {reason}"));
                    output.push(format!("\n{reason}\n").as_bytes(), log);
                }
            }
        }
        // No status line: everything held back was output.
        let rest = std::mem::take(&mut self.pending);
        output.push(&rest, log);
        let status = match exited {
            Some(status) => status,
            None => self.child.wait().await.ok(),
        };
        Ended::Exited(status)
    }

    /// Moves what is certainly output from `pending` to `output`; the exit status
    /// once the whole status line has arrived.
    fn scan(&mut self, output: &mut Output, log: &LogSink) -> Option<i32> {
        match find(&self.pending, &self.needle) {
            Some(at) => {
                output.push(&self.pending[..at], log);
                self.pending.drain(..at);
                let line_end = self.pending[1..].iter().position(|&b| b == b'\n')? + 1;
                let status = std::str::from_utf8(&self.pending[self.needle.len()..line_end])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(-1);
                // Whatever follows (a background job's output) opens the next result.
                self.pending.drain(..=line_end);
                Some(status)
            }
            None => {
                // Hold back only a tail that could start the status line.
                let keep = (1..self.needle.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&k| self.pending.ends_with(&self.needle[..k]))
                    .unwrap_or(0);
                let cut = self.pending.len() - keep;
                output.push(&self.pending[..cut], log);
                self.pending.drain(..cut);
                if keep > 0 {
                    // The held-back tail starts with a newline, the output's or the
                    // status line's: either way the current log line is complete.
                    output.end_log_line(log);
                }
                None
            }
        }
    }
}

async fn read_opt(stream: Option<&mut ChildStderr>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stream {
        Some(stream) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The result text: output (or "(no output)"), then `exit status N` when non-zero,
/// then `note`.
fn result_text(output: Output, status: i32, note: Option<&str>) -> String {
    let mut text = output.render();
    if text.is_empty() {
        text.push_str("(no output)");
    }
    if status != 0 {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("exit status {status}"));
    }
    if let Some(note) = note {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(note);
    }
    text
}

/// One call's output: its head and tail (the middle of a long output is dropped as it
/// streams) and the current log line.
#[derive(Default)]
struct Output {
    head: Vec<u8>,
    tail: Vec<u8>,
    total_bytes: usize,
    /// Characters seen (UTF-8 lead bytes; invalid bytes count one each, near enough).
    total_chars: usize,
    line: Vec<u8>,
    line_dropped: usize,
    /// The current line was sent to the log before its newline arrived
    /// ([`Output::end_log_line`]); that newline is not to end another line.
    newline_owed: bool,
    /// Something came on the sandbox's own stderr (bwrap's or prlimit's messages).
    saw_stderr: bool,
}

impl Output {
    fn push(&mut self, data: &[u8], log: &LogSink) {
        if data.is_empty() {
            return;
        }
        self.total_bytes += data.len();
        self.total_chars += data.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        let room = KEEP_BYTES.saturating_sub(self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..room]);
        let rest = &data[room..];
        if !rest.is_empty() {
            self.tail.extend_from_slice(rest);
            if self.tail.len() > 2 * KEEP_BYTES {
                let excess = self.tail.len() - KEEP_BYTES;
                self.tail.drain(..excess);
            }
        }
        self.log_lines(data, log);
    }

    fn log_lines(&mut self, mut data: &[u8], log: &LogSink) {
        if std::mem::take(&mut self.newline_owed) && data.first() == Some(&b'\n') {
            data = &data[1..];
        }
        while !data.is_empty() {
            let (chunk, complete) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], Some(i + 1)),
                None => (data, None),
            };
            let room = MAX_LOG_LINE_BYTES.saturating_sub(self.line.len());
            let take = chunk.len().min(room);
            self.line.extend_from_slice(&chunk[..take]);
            self.line_dropped += chunk.len() - take;
            match complete {
                Some(consumed) => {
                    self.emit(log);
                    data = &data[consumed..];
                }
                None => break,
            }
        }
    }

    /// Sends the current line now: its newline may be the start of the status line,
    /// which is held back until it is complete.
    fn end_log_line(&mut self, log: &LogSink) {
        if !self.line.is_empty() || self.line_dropped > 0 {
            self.emit(log);
            self.newline_owed = true;
        }
    }

    /// Sends a last line without a newline.
    fn flush_log(&mut self, log: &LogSink) {
        if !self.line.is_empty() || self.line_dropped > 0 {
            self.emit(log);
        }
    }

    fn emit(&mut self, log: &LogSink) {
        let text = String::from_utf8_lossy(&self.line);
        let mut line = format!("{LOG_PREFIX}{}", text.trim_end_matches('\r'));
        if self.line_dropped > 0 {
            line.push_str(&format!(" … [{} more bytes cut]", self.line_dropped));
        }
        // The runner may have stopped listening; the call's result still matters.
        let _ = log.send(line);
        self.line.clear();
        self.line_dropped = 0;
    }

    /// The output as text: lossy UTF-8, the middle cut when it is too long.
    fn render(&self) -> String {
        let half = MAX_OUTPUT_CHARS / 2;
        if self.tail.is_empty() {
            let text = String::from_utf8_lossy(&self.head);
            let chars = text.chars().count();
            if chars <= MAX_OUTPUT_CHARS {
                return text.into_owned();
            }
            let head: String = text.chars().take(half).collect();
            let tail: String = text.chars().skip(chars - half).collect();
            return cut_note(&head, chars - 2 * half, &tail);
        }
        let head = String::from_utf8_lossy(&self.head);
        let head: String = head.chars().take(half).collect();
        let tail = String::from_utf8_lossy(&self.tail);
        let tail_chars = tail.chars().count();
        let tail: String = tail.chars().skip(tail_chars.saturating_sub(half)).collect();
        let shown = head.chars().count() + tail.chars().count();
        cut_note(&head, self.total_chars.saturating_sub(shown), &tail)
    }
}

fn cut_note(head: &str, cut: usize, tail: &str) -> String {
    format!("{head}\n[… {cut} characters cut …]\n{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (LogSink, tokio::sync::mpsc::Receiver<String>) {
        LogSink::channel(u32::MAX)
    }

    #[test]
    fn short_output_is_kept_whole_and_logged_by_line() {
        let (log, mut rx) = sink();
        let mut out = Output::default();
        out.push(b"one\ntw", &log);
        out.push(b"o\nthree", &log);
        out.flush_log(&log);
        assert_eq!(out.render(), "one\ntwo\nthree");
        let lines: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(lines, ["  │ one", "  │ two", "  │ three"]);
    }

    #[test]
    fn a_line_is_logged_before_a_held_back_newline_and_only_once() {
        let (log, mut rx) = sink();
        let mut out = Output::default();
        out.push(b"started", &log);
        out.end_log_line(&log);
        assert_eq!(rx.try_recv().ok().as_deref(), Some("  │ started"));
        out.push(b"\nnext\n", &log);
        out.flush_log(&log);
        let lines: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(lines, ["  │ next"]);
        assert_eq!(out.render(), "started\nnext\n");
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let (log, _rx) = sink();
        let mut out = Output::default();
        let line = "x".repeat(99) + "\n";
        for _ in 0..10_000 {
            out.push(line.as_bytes(), &log);
        }
        out.push(b"THE END", &log);
        let text = out.render();
        assert!(text.chars().count() < MAX_OUTPUT_CHARS + 100);
        assert!(text.ends_with("THE END"));
        let cut = 1_000_007 - MAX_OUTPUT_CHARS;
        assert!(
            text.contains(&format!("[… {cut} characters cut …]")),
            "{}",
            &text[14_990..15_100]
        );
    }

    #[test]
    fn log_lines_are_capped() {
        let (log, mut rx) = sink();
        let mut out = Output::default();
        out.push(&vec![b'a'; MAX_LOG_LINE_BYTES + 10], &log);
        out.push(b"\n", &log);
        let line = rx.try_recv().expect("a line");
        assert!(
            line.ends_with(" … [10 more bytes cut]"),
            "{}",
            &line[line.len() - 40..]
        );
    }

    #[test]
    fn describe_shows_the_first_line() {
        let d = |v: Value| BashSession::describe(&v);
        assert_eq!(
            d(serde_json::json!({"command": "cargo test"})),
            "$ cargo test"
        );
        assert_eq!(d(serde_json::json!({"command": "cd x\nmake"})), "$ cd x …");
        let long = d(serde_json::json!({"command": "y".repeat(500)}));
        assert_eq!(long.chars().count(), 2 + DESCRIBE_MAX_CHARS + 2);
    }
}
