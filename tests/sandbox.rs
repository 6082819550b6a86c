//! Black-box tests of the sandbox and the `command` agent with real bubblewrap: every
//! escape a prompt-injected agent would try is attempted here and must fail.

mod common;

use repobox::agent::command::CommandAgent;
use repobox::agent::{Agent, AgentError, AgentRequest};
use repobox::sandbox::{self, Limits, SandboxKind, SandboxSpec};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

/// Value of a "runner secret" set only in the child test process (see `env_probe`).
const FAKE_TOKEN: &str = "ghs_secretTOKENvalue0123456789";
/// Upper bound for anything that should take well under a second.
const BOUND: Duration = Duration::from_secs(20);

/// A temp dir holding a work tree, a scratch dir, and a secret file beside them.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("wt")).expect("work tree");
        std::fs::create_dir(root.path().join("scratch")).expect("scratch");
        std::fs::write(root.path().join("secret.txt"), "TOP-SECRET-SIBLING\n").expect("secret");
        Dirs { root }
    }
    fn wt(&self) -> PathBuf {
        self.root.path().join("wt")
    }
    fn scratch(&self) -> PathBuf {
        self.root.path().join("scratch")
    }
    fn secret(&self) -> PathBuf {
        self.root.path().join("secret.txt")
    }
    fn spec(&self, kind: SandboxKind) -> SandboxSpec {
        SandboxSpec {
            kind,
            work_tree: self.wt(),
            read_only: Vec::new(),
            writable: vec![self.scratch()],
            proxy: None,
            env: Vec::new(),
            limits: Limits::default(),
        }
    }
}

async fn sh(spec: &SandboxSpec, script: &str) -> Output {
    common::sandboxed_sh(spec, script, BOUND).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` and asserts it failed without printing `forbidden` (if not empty).
async fn assert_denied(spec: &SandboxSpec, script: &str, forbidden: &str) {
    let out = sh(spec, script).await;
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success(),
        "`{script}` succeeded inside the sandbox: {text}"
    );
    assert!(
        forbidden.is_empty() || !text.contains(forbidden),
        "`{script}` leaked {forbidden:?}: {text}"
    );
}

#[tokio::test]
async fn bwrap_work_tree_is_the_writable_cwd_and_uid_is_not_root() {
    let dirs = Dirs::new();
    let spec = dirs.spec(SandboxKind::Bwrap);
    let out = sh(
        &spec,
        "pwd; id -u; echo made-inside > made.txt; echo note > \"$HOME/home.txt\"",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines[0], dirs.wt().to_string_lossy());
    assert_ne!(lines[1], "0", "the sandbox runs as root");
    assert_eq!(
        std::fs::read_to_string(dirs.wt().join("made.txt")).expect("written"),
        "made-inside\n"
    );
    // HOME is the first writable dir, so it persists between commands of one job.
    assert_eq!(
        std::fs::read_to_string(dirs.scratch().join("home.txt")).expect("home"),
        "note\n"
    );
}

#[tokio::test]
async fn bwrap_hides_the_host_outside_the_binds() {
    let dirs = Dirs::new();
    let spec = dirs.spec(SandboxKind::Bwrap);
    let secret = dirs.secret();
    assert_denied(&spec, "cat ../secret.txt", "TOP-SECRET").await;
    assert_denied(&spec, &format!("cat {}", secret.display()), "TOP-SECRET").await;
    assert_denied(&spec, "cd .. && cd .. && cat */secret.txt", "TOP-SECRET").await;
    assert_denied(&spec, "cat /etc/shadow", "root:").await;
    for dir in [
        "/root",
        "/home",
        "/work",
        "/var",
        "/srv",
        "/etc/repobox",
        "/etc/ssl/private",
    ] {
        assert_denied(&spec, &format!("ls -A {dir}"), "").await;
    }
    // The system itself is there, read-only.
    let out = sh(
        &spec,
        "test -x /usr/bin/env && ! touch /usr/bin/x && ! touch /x",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn bwrap_symlinks_out_of_the_work_tree_lead_nowhere() {
    let dirs = Dirs::new();
    let spec = dirs.spec(SandboxKind::Bwrap);
    std::os::unix::fs::symlink(dirs.secret(), dirs.wt().join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/shadow", dirs.wt().join("shadow")).expect("symlink");
    assert_denied(&spec, "cat link", "TOP-SECRET").await;
    assert_denied(&spec, "cat shadow", "root:").await;
    // A symlink made inside, written through: the host file is untouched.
    let script = format!(
        "ln -s {} inside && echo pwned > inside",
        dirs.secret().display()
    );
    let _ = sh(&spec, &script).await;
    assert_eq!(
        std::fs::read_to_string(dirs.secret()).expect("secret"),
        "TOP-SECRET-SIBLING\n"
    );
}

#[tokio::test]
async fn bwrap_read_only_and_writable_binds() {
    let dirs = Dirs::new();
    let ro = dirs.root.path().join("gitdir");
    std::fs::create_dir(&ro).expect("ro dir");
    std::fs::write(ro.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    let mut spec = dirs.spec(SandboxKind::Bwrap);
    spec.read_only.push(ro.clone());
    let out = sh(
        &spec,
        &format!(
            "cat {0}/HEAD && touch {1}/ok",
            ro.display(),
            dirs.scratch().display()
        ),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "ref: refs/heads/main\n");
    assert!(dirs.scratch().join("ok").exists());
    assert_denied(&spec, &format!("echo x > {}/HEAD", ro.display()), "").await;
    assert_eq!(
        std::fs::read_to_string(ro.join("HEAD")).expect("HEAD"),
        "ref: refs/heads/main\n"
    );
}

#[tokio::test]
async fn bwrap_memory_limit_stops_a_large_allocation() {
    let dirs = Dirs::new();
    let mut spec = dirs.spec(SandboxKind::Bwrap);
    // perl is part of Debian's essential set; 512 MiB of string.
    let alloc = r#"$x = "x" x (512 * 1024 * 1024); print "allocated\n""#;
    spec.limits.memory_bytes = Some(2 << 30);
    let out = spec
        .command("perl", &["-e", alloc])
        .output()
        .await
        .expect("started");
    assert!(
        out.status.success() && stdout(&out).contains("allocated"),
        "control run failed: {out:?}"
    );

    spec.limits.memory_bytes = Some(256 << 20);
    let out = spec
        .command("perl", &["-e", alloc])
        .output()
        .await
        .expect("started");
    assert!(
        !out.status.success(),
        "allocation beyond the limit succeeded: {out:?}"
    );
    assert!(!stdout(&out).contains("allocated"));
}

#[tokio::test]
async fn bwrap_file_size_limit_stops_a_large_file() {
    let dirs = Dirs::new();
    let mut spec = dirs.spec(SandboxKind::Bwrap);
    spec.limits.max_file_bytes = Some(1 << 20);
    let out = sh(&spec, "head -c 3000000 /dev/zero > big").await;
    assert!(!out.status.success(), "{out:?}");
    let size = std::fs::metadata(dirs.wt().join("big")).expect("big").len();
    assert!(size <= 1 << 20, "file grew to {size} bytes");
}

/// Re-runs this test binary with a runner secret in its environment (setting it here
/// would race with the other tests' threads) and inspects what the sandbox could see.
#[tokio::test]
async fn environment_holds_no_runner_secret_and_no_host_process() {
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::time::timeout(
        BOUND * 2,
        tokio::process::Command::new(&exe)
            .args([
                "env_probe",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("REPOBOX_GITHUB_TOKEN", FAKE_TOKEN)
            .output(),
    )
    .await
    .expect("probe finished")
    .expect("probe started");
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "probe failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |name: &str| -> String {
        let start = format!("=={name}-begin==");
        let end = format!("=={name}-end==");
        let from = text
            .find(&start)
            .unwrap_or_else(|| panic!("no {name} section in {text}"));
        let to = text
            .find(&end)
            .unwrap_or_else(|| panic!("no end of {name} in {text}"));
        text[from + start.len()..to].to_owned()
    };
    assert!(!text.contains("ghs_secret"), "the token leaked: {text}");
    let exe_name = exe
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    for kind in ["bwrap", "none"] {
        let env = section(&format!("{kind}-env"));
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split('=').next())
            .filter(|n| !n.is_empty())
            .collect();
        assert!(
            names.contains(&"EXTRA_VAR"),
            "{kind}: spec.env missing: {env}"
        );
        for name in names {
            let allowed = [
                "PATH",
                "HOME",
                "LANG",
                "TERM",
                "EXTRA_VAR",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD",
            ];
            assert!(
                allowed.contains(&name),
                "{kind}: unexpected variable {name} inside: {env}"
            );
        }
        assert!(
            env.contains("LANG=C.UTF-8") && env.contains("TERM=dumb"),
            "{env}"
        );
    }
    let none_cwd = section("none-cwd");
    assert!(
        none_cwd.trim().ends_with("/wt"),
        "none: cwd is not the work tree: {none_cwd}"
    );
    // bwrap's pid 1 is bwrap itself: its environment is the allow-list too.
    let pid1 = section("bwrap-pid1");
    assert!(
        pid1.contains("TERM=dumb"),
        "pid 1 environ unreadable or wrong: {pid1}"
    );
    assert!(!pid1.contains("REPOBOX_GITHUB_TOKEN"), "{pid1}");
    // No host process is visible: not the runner (this test), not the host's init.
    let procs = section("bwrap-procs");
    assert!(
        procs.contains("bwrap"),
        "no sandbox processes listed: {procs}"
    );
    assert!(
        !procs.contains(&exe_name),
        "the runner process is visible: {procs}"
    );
    let host_init = std::fs::read("/proc/1/cmdline").unwrap_or_default();
    let host_init = String::from_utf8_lossy(&host_init)
        .split('\0')
        .next()
        .unwrap_or("")
        .to_owned();
    if !host_init.is_empty() && !host_init.contains("bwrap") {
        assert!(
            !procs.contains(&host_init),
            "host init {host_init} visible: {procs}"
        );
    }
}

/// Helper for the test above; run only in its child process, where the fake token is
/// set.
#[tokio::test]
#[ignore = "run by environment_holds_no_runner_secret_and_no_host_process"]
async fn env_probe() {
    assert_eq!(
        std::env::var("REPOBOX_GITHUB_TOKEN").as_deref(),
        Ok(FAKE_TOKEN)
    );
    let dirs = Dirs::new();
    let mut spec = dirs.spec(SandboxKind::Bwrap);
    spec.env.push(("EXTRA_VAR".to_owned(), "extra".to_owned()));
    let script = "echo ==bwrap-env-begin==; env; echo ==bwrap-env-end==; \
        echo ==bwrap-pid1-begin==; tr '\\0' '\\n' < /proc/1/environ; echo ==bwrap-pid1-end==; \
        echo ==bwrap-procs-begin==; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; \
        echo ==bwrap-procs-end==";
    let out = sh(&spec, script).await;
    assert!(out.status.success(), "{out:?}");
    print!("{}", stdout(&out));
    spec.kind = SandboxKind::None;
    let script = "echo ==none-env-begin==; env; echo ==none-env-end==; \
        echo ==none-cwd-begin==; pwd; echo ==none-cwd-end==";
    let out = sh(&spec, script).await;
    assert!(out.status.success(), "{out:?}");
    print!("{}", stdout(&out));
}

#[tokio::test]
async fn check_reports_a_working_sandbox() {
    let bwrap = sandbox::check(SandboxKind::Bwrap).await;
    assert!(
        bwrap.as_ref().is_ok_and(|text| text.contains("bubblewrap")),
        "{bwrap:?}"
    );
    assert_eq!(
        sandbox::check(SandboxKind::None).await,
        Ok("none (no isolation)".to_owned())
    );
}

#[tokio::test]
async fn kill_tree_kills_the_whole_group() {
    let dirs = Dirs::new();
    let spec = dirs.spec(SandboxKind::None);
    let mut child = spec
        .command("sh", &["-c", "sleep 600 & echo $!; wait"])
        .spawn()
        .expect("spawn");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .expect("pid line");
    let pid: u32 = line.trim().parse().expect("pid");
    assert!(alive(pid), "sleep is not running");
    sandbox::kill_tree(&child);
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("exited")
        .expect("status");
    assert!(!status.success());
    wait_until(|| !alive(pid)).await;
}

// ---------------------------------------------------------------- command agent

struct AgentRun {
    request: AgentRequest,
    log: Receiver<String>,
    cancel: CancellationToken,
}

fn agent_request(dirs: &Dirs, kind: SandboxKind, prompt: &str) -> AgentRun {
    let (tx, log) = repobox::agent::LogSink::channel(u32::MAX);
    let cancel = CancellationToken::new();
    let request = AgentRequest {
        prompt: prompt.to_owned(),
        sandbox: dirs.spec(kind),
        scratch_dir: dirs.scratch(),
        log: tx,
        cancel: cancel.clone(),
        model: None,
        max_turns: None,
        budget_usd: None,
        activity: tokio::sync::watch::channel(Default::default()).0,
        checks: None,
        steering: None,
    };
    AgentRun {
        request,
        log,
        cancel,
    }
}

fn agent(command: &str) -> CommandAgent {
    CommandAgent {
        command: command.to_owned(),
    }
}

fn drain(log: &mut Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = log.try_recv() {
        lines.push(line);
    }
    lines
}

#[tokio::test]
async fn agent_streams_output_in_order_and_summarises_the_tail() {
    let dirs = Dirs::new();
    let mut run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    let command = "for i in $(seq 1 30); do echo line$i; done; echo warning here >&2; \
        head -c 100000 /dev/zero | tr '\\0' a; echo; printf 'no newline at the end'";
    let outcome = agent(command).run(run.request).await.expect("success");
    let lines = drain(&mut run.log);
    let stdout: Vec<&String> = lines.iter().filter(|l| l.starts_with("line")).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("line{i}")).collect();
    assert_eq!(stdout, expected.iter().collect::<Vec<_>>());
    assert!(
        lines.contains(&"stderr: warning here".to_owned()),
        "{lines:?}"
    );
    let long = lines
        .iter()
        .find(|l| l.starts_with("aaaa"))
        .expect("long line");
    assert!(
        long.len() < 5000 && long.contains("bytes cut"),
        "long line not capped: {} bytes",
        long.len()
    );
    let last_stdout = lines.iter().rev().find(|l| !l.starts_with("stderr: "));
    assert_eq!(
        last_stdout.map(String::as_str),
        Some("no newline at the end")
    );
    assert!(outcome.summary.contains("line30"), "{}", outcome.summary);
    assert!(
        !outcome.summary.contains("line1\n"),
        "summary is not the tail: {}",
        outcome.summary
    );
}

#[tokio::test]
async fn agent_uses_the_summary_file() {
    let dirs = Dirs::new();
    let run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    let command = "echo noise; printf '\\n  Fixed the parser.\\n\\n' > \"$REPOBOX_SUMMARY_FILE\"";
    let outcome = agent(command).run(run.request).await.expect("success");
    assert_eq!(outcome.summary, "Fixed the parser.");
}

#[tokio::test]
async fn agent_summary_symlink_is_not_followed_on_the_host() {
    let dirs = Dirs::new();
    let run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    let command = format!(
        "echo plain output; ln -s {} \"$REPOBOX_SUMMARY_FILE\"",
        dirs.secret().display()
    );
    let outcome = agent(&command).run(run.request).await.expect("success");
    assert!(
        !outcome.summary.contains("TOP-SECRET"),
        "host file leaked: {}",
        outcome.summary
    );
    assert_eq!(outcome.summary, "plain output");
}

#[tokio::test]
async fn agent_gets_the_prompt_on_stdin_and_in_the_environment() {
    let dirs = Dirs::new();
    let prompt = "Fix the bug.\n> quoted \"context\" with $dollar and `ticks` — ünïcode\n";
    let run = agent_request(&dirs, SandboxKind::Bwrap, prompt);
    let command = "cat > stdin.txt; printf %s \"$REPOBOX_PROMPT\" > env.txt";
    agent(command).run(run.request).await.expect("success");
    // The command agent adds how to hand the summary back.
    let expected = format!(
        "{}\n\nWhen you are done, write a short summary of what you changed and why to the file named by REPOBOX_SUMMARY_FILE (first line: a title for the pull request).\n",
        prompt.trim_end()
    );
    assert_eq!(
        std::fs::read_to_string(dirs.wt().join("stdin.txt")).expect("stdin"),
        expected
    );
    assert_eq!(
        std::fs::read_to_string(dirs.wt().join("env.txt")).expect("env"),
        expected
    );
}

#[tokio::test]
async fn agent_failure_quotes_status_and_stderr() {
    let dirs = Dirs::new();
    let run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    let err = agent("echo working; echo could not reach model >&2; exit 3")
        .run(run.request)
        .await;
    match err {
        Err(AgentError::Failed(message)) => {
            assert!(
                message.starts_with("agent command exited with status 3"),
                "{message}"
            );
            assert!(message.contains("could not reach model"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn agent_killed_by_the_cpu_limit_says_so() {
    let dirs = Dirs::new();
    let mut run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    run.request.sandbox.limits.cpu_seconds = Some(1);
    let err = tokio::time::timeout(BOUND, agent("while :; do :; done").run(run.request))
        .await
        .expect("in time");
    match err {
        Err(AgentError::Failed(message)) => {
            assert!(message.contains("CPU time limit"), "{message}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Host processes whose command line contains `marker`, zombies excluded.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(marker)
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Polls a condition the kernel settles asynchronously (a killed process going away).
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_cancel_stops(kind: SandboxKind, suffix: &str) {
    // Unique per test run, so a leftover of an earlier run cannot be mistaken for ours.
    let marker = format!("600.{}{suffix}", std::process::id());
    let marker = marker.as_str();
    let dirs = Dirs::new();
    let mut run = agent_request(&dirs, kind, "fix it");
    let command = format!("sleep {marker} & echo started; wait");
    let cancel = run.cancel.clone();
    let task = tokio::spawn(async move { agent(&command).run(run.request).await });
    let first = tokio::time::timeout(BOUND, run.log.recv())
        .await
        .expect("output in time");
    assert_eq!(first.as_deref(), Some("started"));
    wait_until(|| !processes_with(marker).is_empty()).await;

    let started = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(BOUND, task)
        .await
        .expect("run returned")
        .expect("no panic");
    let took = started.elapsed();
    assert!(matches!(result, Err(AgentError::Stopped)), "{result:?}");
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    wait_until(|| processes_with(marker).is_empty()).await;
}

#[tokio::test]
async fn agent_cancel_kills_the_sandbox_within_a_second() {
    assert_cancel_stops(SandboxKind::Bwrap, "1").await;
}

#[tokio::test]
async fn agent_cancel_kills_the_process_group_without_sandbox() {
    assert_cancel_stops(SandboxKind::None, "2").await;
}

#[tokio::test]
async fn agent_not_started_when_already_cancelled() {
    let dirs = Dirs::new();
    let run = agent_request(&dirs, SandboxKind::Bwrap, "fix it");
    run.cancel.cancel();
    let result = agent("touch ran").run(run.request).await;
    assert!(matches!(result, Err(AgentError::Stopped)));
    assert!(!Path::new(&dirs.wt().join("ran")).exists());
}
