//! Limits that bound the whole job (SPEC section 15), tried from inside: the seccomp
//! filter, the size-capped `/dev/shm` and `/tmp`, the work tree's size limit and the
//! rate-limited job log. Real bubblewrap; the job-level ones through a real runner.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::world::*;
use repobox::job::JobStatus;
use repobox::sandbox::{Limits, SandboxKind, SandboxSpec};

const BOUND: Duration = Duration::from_secs(60);

fn spec(dir: &Path) -> SandboxSpec {
    let work_tree = dir.join("wt");
    std::fs::create_dir_all(&work_tree).unwrap();
    SandboxSpec {
        kind: SandboxKind::Bwrap,
        work_tree,
        read_only: Vec::new(),
        writable: Vec::new(),
        proxy: None,
        env: Vec::new(),
        limits: Limits::default(),
    }
}

async fn sh(spec: &SandboxSpec, script: &str) -> Output {
    common::sandboxed_sh(spec, script, BOUND).await
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The call numbers are x86_64's.
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn the_sandbox_runs_under_a_seccomp_filter() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let out = sh(&spec, "grep '^Seccomp:' /proc/self/status").await;
    assert_eq!(text(&out).trim(), "Seccomp:\t2", "{}", text(&out));
    // Calls the filter refuses, made from a program that would otherwise succeed at
    // them or fail differently: EPERM (1) for each.
    let probe = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"io_uring_setup": 425, "userfaultfd": 323, "bpf": 321, "perf_event_open": 298,
         "keyctl": 250, "unshare": 272, "setns": 308, "mount": 165, "ptrace": 101}
for name, nr in calls.items():
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    print(name, r, ctypes.get_errno())
"#;
    let out = sh(&spec, &format!("python3 -c '{probe}'")).await;
    let got = text(&out);
    assert!(out.status.success(), "{got}");
    for name in [
        "io_uring_setup",
        "userfaultfd",
        "bpf",
        "perf_event_open",
        "keyctl",
        "unshare",
        "setns",
        "mount",
        "ptrace",
    ] {
        assert!(
            got.lines().any(|l| l == format!("{name} -1 1")),
            "{name} was not refused with EPERM: {got}"
        );
    }
    // Ordinary calls still work, and so does a new user namespace's refusal message.
    let out = sh(&spec, "unshare -U true").await;
    assert!(!out.status.success(), "{}", text(&out));
    let out = sh(&spec, "echo ok > f && cat f && ls /proc/self/fd >/dev/null").await;
    assert_eq!(text(&out).trim(), "ok");
}

#[tokio::test]
async fn dev_shm_and_tmp_are_size_capped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    // 2 GiB into /dev/shm fails once 64 MiB are in.
    let out = sh(
        &spec,
        "dd if=/dev/zero of=/dev/shm/big bs=1M count=2048 2>&1; echo status=$?; du -m /dev/shm/big | cut -f1",
    )
    .await;
    let got = text(&out);
    assert!(got.contains("No space left on device"), "{got}");
    let size: u64 = got.lines().last().unwrap().trim().parse().unwrap();
    assert!(size <= 64, "{size} MiB landed in /dev/shm");
    // /tmp holds at most 1 GiB (two files, each below the 1 GiB file-size limit).
    let out = sh(
        &spec,
        "for f in a b; do dd if=/dev/zero of=/tmp/$f bs=1M count=600 2>&1; done; du -cm /tmp/a /tmp/b | tail -1 | cut -f1",
    )
    .await;
    let got = text(&out);
    assert!(got.contains("No space left on device"), "{got}");
    let size: u64 = got.lines().last().unwrap().trim().parse().unwrap();
    assert!(size <= 1024, "{size} MiB landed in /tmp");
}

#[tokio::test]
async fn a_work_tree_past_its_size_limit_fails_the_job_and_pushes_nothing() {
    // 2 MiB of data (and a sparse file that takes no disk) against a 1 MiB limit.
    let agent = r#"head -c 2097152 /dev/zero > data.bin; echo fixed >> README.md; printf 'Add data\n\nDone.\n' > "$REPOBOX_SUMMARY_FILE""#;
    let w = world(Setup {
        agent,
        extra: vec!["--max-tree-size".into(), "1MiB".into()],
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the typo").await;
    let (job, comment) = w.failed(&id).await;
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("the work tree grew past its size limit of 1.0 MiB"),
        "{error}"
    );
    assert!(comment.contains("size limit"), "{comment}");
    assert_eq!(w.remote_ref(REPO_GIT, ISSUE_BRANCH), None);
    assert!(w.github.created_pulls().await.is_empty());
    w.app.stop().await;
}

#[tokio::test]
async fn a_flood_of_output_is_dropped_and_counted_while_the_runner_stays_small() {
    let agent = r#"timeout 5 yes; echo fixed >> README.md; printf 'Fix\n\nDone.\n' > "$REPOBOX_SUMMARY_FILE""#;
    let w = world(Setup {
        agent,
        runner: false,
        ..Setup::default()
    })
    .await;
    let logs = tempfile::tempdir().unwrap();
    let mut runner = w.runner_process(
        &w.workdir.path().join("runner"),
        &logs.path().join("runner.log"),
        &[
            "--agent",
            "command",
            "--agent-command",
            agent,
            "--log-lines-per-second",
            "100",
        ],
        &[],
    );
    let id = w.comment("/repobox fix the typo").await;
    let job = w.wait("succeeded", &id, |j| j.status.is_final(), 120).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    // Peak resident memory of the runner over the whole job: `yes` wrote millions of
    // lines, of which the log kept about 100 a second.
    let status = std::fs::read_to_string(format!("/proc/{}/status", runner.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let _ = runner.kill();
    let _ = runner.wait();
    assert!(peak_kib < 200 * 1024, "the runner peaked at {peak_kib} KiB");
    let log = w.log(&id).await;
    let dropped: Vec<&String> = log.iter().filter(|l| l.contains("lines dropped")).collect();
    assert!(
        !dropped.is_empty(),
        "no dropped line in {} lines",
        log.len()
    );
    let ys = log.iter().filter(|l| l.as_str() == "y").count();
    assert!(ys > 0 && ys <= 100 * 8, "{ys} lines of yes kept");
    w.app.stop().await;
}

/// Four processes of 200 MiB each pass every per-process limit but not a job limit of
/// 512 MiB; forty sleeping processes pass `RLIMIT_NPROC` (the runner may be root) but
/// not a job limit of 20. Each job fails naming its limit, its processes are gone, and
/// the runner takes the next job.
#[tokio::test]
async fn whole_job_limits_stop_the_processes_and_the_runner_goes_on() {
    // The task's own words are the prompt's second line (later lines quote the thread's
    // earlier jobs).
    let agent = r#"case "$(printf '%s\n' "$REPOBOX_PROMPT" | sed -n 2p)" in
*hog*) for i in 1 2 3 4; do python3 -c "x = bytearray(b'\x01') * (200 << 20); import time; time.sleep(120)" hog-marker & done; wait ;;
*forks*) for i in $(seq 1 40); do sleep 120 & done; wait ;;
*) echo fixed >> README.md; printf 'Fix\n\nDone.\n' > "$REPOBOX_SUMMARY_FILE" ;;
esac"#;
    let w = world(Setup {
        agent,
        extra: ["--job-memory", "512MiB", "--job-pids", "20"]
            .map(String::from)
            .to_vec(),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox hog the memory").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("the job went past its memory limit of 512.0 MiB"),
        "{error}"
    );
    // The kernel takes the killed sandbox's processes down with its pid namespace.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_named("hog-marker") {
        assert!(
            std::time::Instant::now() < deadline,
            "a memory hog outlived its job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = w.comment("/repobox run many forks").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("the job went past its limit of 20 processes"),
        "{error}"
    );
    let id = w.comment("/repobox fix the typo").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert!(w.remote_ref(REPO_GIT, ISSUE_BRANCH).is_some());
    w.app.stop().await;
}

/// Whether a process with `marker` in its command line is alive.
fn processes_named(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|cmd| String::from_utf8_lossy(&cmd).contains(marker))
            .unwrap_or(false)
    })
}
