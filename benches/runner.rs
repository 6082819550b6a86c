//! Runner benchmark: jobs per second through `jobs:stream` with a no-op agent, for 1 and
//! 2 `repobox runner` processes.
//!
//! The whole job path is real except the forge: signed `issue_comment` deliveries go
//! through the real router of an in-process `serve` (intake and acknowledger, over a
//! real Redis), which reacts, posts the progress comment on a wiremock fake of the
//! GitHub API and dispatches the job; `repobox runner` processes (the real binary) then
//! re-check access, ask for the repository and credentials, fetch a small repository
//! over smart HTTP (`git http-backend`) into their cached mirror, add a work tree, run
//! the `command` agent `true` in the bubblewrap sandbox, find no changed paths, end the
//! job `no_changes` and edit the progress comment.
//!
//! For each runner count (`BENCH_RUNNERS`, default `1,2`), `BENCH_JOBS` jobs (default
//! 200) are submitted at once, each on its own issue (so the one-job-per-thread rule does
//! not serialise them) by one requester with a per-user limit above the job count. The
//! figures:
//! - jobs/s: jobs / (last `finished_at` − first submission);
//! - per-job latency `created_at → finished_at` (it includes the wait in the queue, as
//!   every job is submitted at once), split into acknowledgement (`→ dispatched_at`),
//!   queue wait (`→ started_at`) and run (`started_at → finished_at`);
//! - each runner step's duration, from the stream ids of the job log lines;
//! - CPU used by the runner processes (their reaped children included), this process
//!   (intake, acknowledger, the fakes and `git http-backend`) and Redis, per job and
//!   against the whole machine. The cores may be shared with work this benchmark cannot
//!   see, so each phase first prints the machine's load over one idle second;
//! - forge and git requests per job.
//!
//! Before measuring, each runner work dir gets its mirror with one job run by a runner
//! alone, so every measured fetch is a warm (incremental) one. Each phase starts fresh
//! runner processes; their first job also mints the installation token.
//!
//! Run it with `cargo bench --bench runner` (needs Redis at redis://127.0.0.1:6379 or
//! `REPOBOX_TEST_REDIS_URL`, git and bwrap). `BENCH_WORKERS` (default 4) sets
//! `--workers` of each runner; `BENCH_SANDBOX=none` shows what the sandbox costs.
//! Runner processes are killed if the benchmark fails or is interrupted, and the Redis
//! keys (`test:<ulid>:`) are deleted at the end. The program exits non-zero unless every
//! job ended `no_changes` with its progress comment saying so and every runner stopped
//! cleanly on SIGTERM.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{env_or, process_cpu_seconds, redis_cpu_seconds};

use anyhow::{Context, bail};
use futures::{FutureExt, StreamExt, TryStreamExt};
use repobox::job::{Job, JobId, JobStatus};
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;

use common::git_server::{self, GitServer};
use common::github::{FakeGitHub, INSTALLATION_TOKEN};
use common::{Options, TestApp, fixture_json};

const REPO: &str = "Codertocat/Hello-World";
const REPO_GIT: &str = "Codertocat/Hello-World.git";
const REQUESTER: &str = "Codertocat";
const REQUESTER_ID: u64 = 21031067;
const COMMAND: &str = "/repobox fix the spelling";
const PUBLIC_URL: &str = "https://repobox.example.com";
const VISIBILITY_TIMEOUT: &str = "60s";
/// Deliveries in flight at once while submitting.
const SUBMIT_CONCURRENCY: usize = 16;
const POLL_EVERY: Duration = Duration::from_millis(100);
const READY_DEADLINE: Duration = Duration::from_secs(20);
const WARM_UP_DEADLINE: Duration = Duration::from_secs(30);
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);
/// Warnings, plus the runner loop's own lines: start and stop, and the rare per-job
/// ones (a job deferred by admission, claimed from a dead runner, already final).
const LOG_FILTER: &str = "warn,repobox::runner=info,repobox::runner::pipeline=warn";
const STARTED: &str = "runner started";
/// Lines every runner logs once; not worth showing.
const LIFECYCLE: [&str; 3] = [STARTED, "runner stopping", "runner stopped"];
/// A runner blocks up to 2 s in XREADGROUP before it sees SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Settings read from the environment.
struct Settings {
    jobs: usize,
    workers: usize,
    runners: Vec<usize>,
    /// `--sandbox` of the runners: `bwrap`, or `none` to see what the sandbox costs.
    sandbox: String,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let runners: String = env_or("BENCH_RUNNERS", "1,2".to_owned())?;
        let settings = Settings {
            jobs: env_or("BENCH_JOBS", 200)?,
            workers: env_or("BENCH_WORKERS", 4)?,
            sandbox: env_or("BENCH_SANDBOX", "bwrap".to_owned())?,
            runners: runners
                .split(',')
                .map(|n| n.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("BENCH_RUNNERS={runners:?} is not a list"))?,
        };
        if settings.jobs == 0 || settings.workers == 0 || settings.runners.contains(&0) {
            bail!("BENCH_JOBS, BENCH_WORKERS and each of BENCH_RUNNERS must be at least 1");
        }
        Ok(settings)
    }

    fn max_runners(&self) -> usize {
        self.runners.iter().copied().max().unwrap_or(1)
    }
}

/// Everything but the runners: the git remote, the GitHub fake and `serve`.
struct World {
    app: TestApp,
    github: FakeGitHub,
    git: GitServer,
    /// Runner work dirs (`runner-<i>`, kept between phases: the warm mirrors) and logs.
    scratch: TempDir,
    _git_root: TempDir,
    next_issue: AtomicU64,
}

impl World {
    async fn start() -> anyhow::Result<World> {
        let git_root = tempfile::tempdir()?;
        git_server::init_bare_repo(
            git_root.path(),
            REPO_GIT,
            &[
                ("README.md", "# Hello World\n"),
                ("src/lib.rs", "pub fn hello() {}\n"),
            ],
        );
        let git = GitServer::start(git_root.path().to_owned(), INSTALLATION_TOKEN).await;
        let github = FakeGitHub::start(&[(REQUESTER, "write")]).await;
        github.serve_repo(REPO, &git.url(REPO_GIT), "main").await;
        let app = TestApp::start(Options {
            args: github.args(),
            runner: false,
            ..Options::default()
        })
        .await;
        Ok(World {
            app,
            github,
            git,
            scratch: tempfile::tempdir()?,
            _git_root: git_root,
            next_issue: AtomicU64::new(1),
        })
    }

    fn workdir(&self, index: usize) -> PathBuf {
        self.scratch.path().join(format!("runner-{index}"))
    }

    /// Sends `count` deliveries, each on a new issue, `SUBMIT_CONCURRENCY` at a time;
    /// returns the job ids in submission order.
    async fn submit(&self, count: usize) -> anyhow::Result<Vec<JobId>> {
        let numbers: Vec<u64> = (0..count)
            .map(|_| self.next_issue.fetch_add(1, Ordering::Relaxed))
            .collect();
        futures::stream::iter(numbers)
            .map(|number| self.comment(number))
            .buffered(SUBMIT_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn comment(&self, number: u64) -> anyhow::Result<JobId> {
        let r = self
            .app
            .github_json("issue_comment", &issue_comment(number))
            .await;
        if r.status != 202 {
            bail!("delivery for issue {number}: HTTP {} {}", r.status, r.body);
        }
        let id = r.body["job"].as_str().unwrap_or_default();
        id.parse()
            .with_context(|| format!("delivery for issue {number}: no job id in {}", r.body))
    }

    /// Stops `serve` and deletes the keys; returns how many keys are left, if known.
    async fn stop(self) -> anyhow::Result<Option<usize>> {
        let prefix = self.app.prefix.clone();
        let client = redis::Client::open(common::redis_url());
        self.app.stop().await;
        let Ok(mut conn) = client?.get_multiplexed_async_connection().await else {
            return Ok(None);
        };
        Ok(Some(common::scan(&mut conn, &prefix).await.len()))
    }
}

/// The `issue_comment.created` fixture as a new command on issue `number`.
fn issue_comment(number: u64) -> Value {
    let mut p = fixture_json("github/webhooks/issue_comment.created.json");
    p["comment"]["body"] = json!(COMMAND);
    p["comment"]["id"] = json!(1_000_000 + number);
    p["comment"]["user"]["login"] = json!(REQUESTER);
    p["comment"]["user"]["id"] = json!(REQUESTER_ID);
    p["sender"]["login"] = json!(REQUESTER);
    p["sender"]["id"] = json!(REQUESTER_ID);
    p["issue"]["number"] = json!(number);
    p["issue"]["title"] = json!(format!("Benchmark issue {number}"));
    p
}

/// One `repobox runner` child process.
struct RunnerProcess {
    child: Child,
    log: PathBuf,
}

/// The runner processes of a phase. Dropping them kills them (SIGKILL), so a failure,
/// a panic or an interrupted run leaves no process behind.
struct Runners {
    processes: Vec<RunnerProcess>,
}

impl Runners {
    /// Starts runners on work dirs `indexes` and waits until each consumes `jobs:stream`.
    async fn start(
        world: &World,
        settings: &Settings,
        indexes: std::ops::Range<usize>,
        per_user_limit: usize,
    ) -> anyhow::Result<Runners> {
        let mut runners = Runners {
            processes: Vec::new(),
        };
        for index in indexes {
            let log = world
                .scratch
                .path()
                .join(format!("runner-{index}-{}.log", ulid::Ulid::new()));
            let workdir = world.workdir(index);
            let child = spawn_runner(world, settings, &workdir, &log, per_user_limit)?;
            runners.processes.push(RunnerProcess { child, log });
        }
        runners.wait_started().await?;
        Ok(runners)
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.child.id()).collect()
    }

    /// Waits until every runner has logged that it started consuming. (Redis 7.0 only
    /// lists a consumer in XINFO CONSUMERS once it was delivered an entry, so the group
    /// cannot tell.)
    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let mut started = 0;
            for p in &mut self.processes {
                if let Some(status) = p.child.try_wait()? {
                    bail!("`repobox runner` exited ({status}):\n{}", log_text(&p.log));
                }
                if log_text(&p.log).contains(STARTED) {
                    started += 1;
                }
            }
            if started == self.processes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("runners not started after {READY_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit; kills what is still running after
    /// `STOP_DEADLINE`. Returns one problem per runner that did not exit cleanly.
    async fn stop(&mut self) -> Vec<String> {
        for p in &self.processes {
            if let Some(pid) = rustix::process::Pid::from_raw(p.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut problems = Vec::new();
        for p in &mut self.processes {
            let pid = p.child.id();
            loop {
                match p.child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!("runner {pid} exited with {status}"));
                        break;
                    }
                    Ok(None) if Instant::now() > deadline => {
                        problems.push(format!("runner {pid} still running after SIGTERM"));
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => {
                        problems.push(format!("runner {pid}: {e}"));
                        break;
                    }
                }
            }
        }
        problems
    }

    /// What the runners logged besides starting and stopping.
    fn log_lines(&self) -> Vec<String> {
        self.processes
            .iter()
            .flat_map(|p| {
                log_text(&p.log)
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !LIFECYCLE.iter().any(|m| l.contains(m)))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Runners {
    fn drop(&mut self) {
        for p in &mut self.processes {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

fn spawn_runner(
    world: &World,
    settings: &Settings,
    workdir: &Path,
    log: &Path,
    per_user_limit: usize,
) -> anyhow::Result<Child> {
    let mut args: Vec<String> = vec![
        "--redis-prefix".into(),
        world.app.prefix.clone(),
        "--public-url".into(),
        PUBLIC_URL.into(),
        "--agent".into(),
        "command".into(),
        "--agent-command".into(),
        "true".into(),
        "--sandbox".into(),
        settings.sandbox.clone(),
        "--workers".into(),
        settings.workers.to_string(),
        "--per-user-limit".into(),
        per_user_limit.to_string(),
        "--visibility-timeout".into(),
        VISIBILITY_TIMEOUT.into(),
        "--workdir".into(),
        workdir.display().to_string(),
    ];
    args.extend(world.github.args());
    args.push("runner".into());
    let stdout = File::create(log)?;
    let stderr = stdout.try_clone()?;
    Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args(&args)
        .env("REPOBOX_REDIS_URL", common::redis_url())
        .env("REPOBOX_LOG", LOG_FILTER)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .context("cannot start `repobox runner`")
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls the store until every job is final or `deadline` passes; returns the records
/// (final or not) in submission order.
async fn wait_final(world: &World, ids: &[JobId], deadline: Duration) -> anyhow::Result<Vec<Job>> {
    let give_up = Instant::now() + deadline;
    let mut latest: Vec<Option<Job>> = vec![None; ids.len()];
    let mut pending: Vec<usize> = (0..ids.len()).collect();
    // Jobs finish roughly in order: look at the oldest few unfinished ones per poll.
    let window = 32;
    while !pending.is_empty() && Instant::now() < give_up {
        let mut still = Vec::with_capacity(pending.len());
        for (n, &i) in pending.iter().enumerate() {
            if n >= window {
                still.push(i);
                continue;
            }
            let job = world.app.store.get_job(ids[i]).await?;
            let done = job.as_ref().is_some_and(|j| j.status.is_final());
            latest[i] = job;
            if !done {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    let mut jobs = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let job = match latest[i].take() {
            Some(j) if j.status.is_final() => j,
            _ => world
                .app
                .store
                .get_job(*id)
                .await?
                .with_context(|| format!("job {id} is not stored"))?,
        };
        jobs.push(job);
    }
    Ok(jobs)
}

/// CPU seconds used so far, from /proc and Redis `INFO cpu`.
struct CpuSnapshot {
    at: Instant,
    runners: Option<f64>,
    bench: Option<f64>,
    redis: Option<f64>,
    machine: Option<Machine>,
}

impl CpuSnapshot {
    async fn take(runner_pids: &[u32], redis: &mut redis::aio::MultiplexedConnection) -> Self {
        let runners = runner_pids
            .iter()
            .map(|pid| process_cpu_seconds(&pid.to_string(), true))
            .sum::<Option<f64>>();
        CpuSnapshot {
            at: Instant::now(),
            runners,
            bench: process_cpu_seconds("self", true),
            redis: redis_cpu_seconds(redis).await,
            machine: Machine::read(),
        }
    }

    /// "runners 140% (28.0 ms/job)  bench 35% (…)  redis-server 20% (…)" (100% = one
    /// core), then the machine.
    fn usage_since(&self, before: &CpuSnapshot, jobs: usize) -> String {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        let share = |after: Option<f64>, before: Option<f64>| match (after, before) {
            (Some(a), Some(b)) => format!(
                "{:.0}% ({:.1} ms/job)",
                (a - b) / wall * 100.0,
                (a - b) / jobs as f64 * 1000.0
            ),
            _ => "n/a".to_owned(),
        };
        let machine = match (self.machine, before.machine) {
            (Some(after), Some(before)) => after.usage_since(&before),
            _ => "n/a".to_owned(),
        };
        format!(
            "  cpu        runners {}  bench {}  redis-server {}  (100% = one core)\n  machine    {machine} (100% = all cores)",
            share(self.runners, before.runners),
            share(self.bench, before.bench),
            share(self.redis, before.redis),
        )
    }
}

/// How busy the machine is for a second while nothing of ours runs: the cores may be
/// shared with work this benchmark cannot see (other containers on the same VM).
async fn background_load() -> String {
    let before = Machine::read();
    tokio::time::sleep(Duration::from_secs(1)).await;
    match (Machine::read(), before) {
        (Some(after), Some(before)) => format!(
            "{} over 1 s before the phase, nothing of ours running",
            after.usage_since(&before)
        ),
        _ => "n/a".to_owned(),
    }
}

/// Jiffies of the whole machine, from the first line of /proc/stat.
#[derive(Clone, Copy)]
struct Machine {
    user: u64,
    system: u64,
    /// Hard and soft interrupts.
    irq: u64,
    idle: u64,
    total: u64,
}

impl Machine {
    fn read() -> Option<Machine> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // user nice system idle iowait irq softirq steal
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 8 {
            return None;
        }
        Some(Machine {
            user: v[0] + v[1],
            system: v[2],
            irq: v[5] + v[6],
            idle: v[3] + v[4],
            total: v.iter().sum(),
        })
    }

    /// "97% busy: user 30%, system 60%, irq 7%" (shares of all cores).
    fn usage_since(&self, before: &Machine) -> String {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / total * 100.0;
        format!(
            "{:.0}% busy: user {:.0}%, system {:.0}%, irq {:.0}%",
            100.0 - pct(self.idle, before.idle),
            pct(self.user, before.user),
            pct(self.system, before.system),
            pct(self.irq, before.irq)
        )
    }
}

/// Request counters of the fakes, to count a phase's requests per job.
struct RequestMark {
    github: usize,
    git: usize,
}

impl RequestMark {
    async fn take(world: &World) -> Self {
        RequestMark {
            github: world.github.requests().await.len(),
            git: world.git.requests().len(),
        }
    }
}

/// `PATCH /repos/:owner/:repo/issues/comments/:n`: numbers and the repository elided.
fn route(method: &str, path: &str) -> String {
    let path = path.replacen(&format!("/repos/{REPO}/"), "/repos/:repo/", 1);
    let parts: Vec<&str> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
                ":n"
            } else {
                s
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}

/// Nearest-rank percentile of sorted values, `p` in 0..=100.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn seconds_between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64()
}

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

/// "p50 1234 ms  p95 2345 ms  max 3456 ms" of durations in seconds.
fn spread(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "n/a".to_owned();
    }
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {}  p95 {}  max {}",
        ms(percentile(&values, 50.0)),
        ms(percentile(&values, 95.0)),
        ms(percentile(&values, 100.0))
    )
}

/// Runs one job on each runner work dir with that runner alone, so its mirror exists.
async fn warm_up(world: &World, settings: &Settings) -> anyhow::Result<()> {
    println!("== warm-up: one job per runner work dir (cold mirror) ==");
    for index in 0..settings.max_runners() {
        let mut runners = Runners::start(world, settings, index..index + 1, 10).await?;
        let started = Instant::now();
        let ids = world.submit(1).await?;
        let jobs = wait_final(world, &ids, WARM_UP_DEADLINE).await?;
        let took = started.elapsed();
        let problems = runners.stop().await;
        let job = &jobs[0];
        if job.status != JobStatus::NoChanges {
            bail!(
                "warm-up job ended {} ({:?}); runner log:\n{}",
                job.status.as_str(),
                job.error,
                runners.log_lines().join("\n")
            );
        }
        if !problems.is_empty() {
            bail!("warm-up runner: {}", problems.join("; "));
        }
        println!("  work dir {index}: job no_changes in {took:.2?}");
    }
    Ok(())
}

/// What one phase measured.
struct Phase {
    runners: usize,
    jobs: usize,
    no_changes: usize,
    comments_ok: usize,
    jobs_per_second: f64,
    p50: f64,
    p95: f64,
    stop_problems: Vec<String>,
}

impl Phase {
    fn correct(&self) -> bool {
        self.no_changes == self.jobs
            && self.comments_ok == self.jobs
            && self.stop_problems.is_empty()
    }
}

async fn measure(world: &World, settings: &Settings, count: usize) -> anyhow::Result<Phase> {
    let m = settings.jobs;
    println!(
        "== {count} runner process{} x {} workers, {m} jobs ==",
        if count == 1 { "" } else { "es" },
        settings.workers
    );
    println!("  background {}", background_load().await);
    let mut runners = Runners::start(world, settings, 0..count, m + 10).await?;
    let mut redis = world.app.conn().await;
    let marks = RequestMark::take(world).await;
    let before = CpuSnapshot::take(&runners.pids(), &mut redis).await;

    let first_submission = OffsetDateTime::now_utc();
    let submit_started = Instant::now();
    let ids = world.submit(m).await?;
    let submitted_in = submit_started.elapsed();
    let jobs = wait_final(world, &ids, DRAIN_DEADLINE).await?;
    let after = CpuSnapshot::take(&runners.pids(), &mut redis).await;
    let stop_problems = runners.stop().await;

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &jobs {
        *statuses.entry(job.status.as_str()).or_default() += 1;
    }
    let no_changes = statuses.get("no_changes").copied().unwrap_or(0);
    let last_final = jobs.iter().filter_map(|j| j.finished_at).max();
    let wall = last_final.map(|t| seconds_between(first_submission, t));
    let jobs_per_second = wall.map_or(0.0, |w| m as f64 / w);

    let mut total = Vec::new();
    let mut ack = Vec::new();
    let mut queued = Vec::new();
    let mut run = Vec::new();
    for job in &jobs {
        let (Some(started), Some(finished)) = (job.started_at, job.finished_at) else {
            continue;
        };
        total.push(seconds_between(job.created_at, finished));
        run.push(seconds_between(started, finished));
        let dispatched = world
            .app
            .job_field(&job.id.to_string(), "dispatched_at")
            .await
            .and_then(|t| {
                OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            });
        if let Some(d) = dispatched {
            ack.push(seconds_between(job.created_at, d));
            queued.push(seconds_between(d, started));
        }
    }
    let mut sorted_total = total.clone();
    sorted_total.sort_by(f64::total_cmp);

    let comments_ok = progress_comments_ok(world, &jobs).await;
    let requests = world.github.requests().await;
    let mut routes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests[marks.github.min(requests.len())..] {
        *routes
            .entry(route(r.method.as_str(), r.url.path()))
            .or_default() += 1;
    }
    let git_requests = world.git.requests().len() - marks.git;

    println!("  submitted  {m} deliveries in {submitted_in:.2?} ({SUBMIT_CONCURRENCY} at a time)");
    match wall {
        Some(w) => println!("  drained    last job final {w:.2} s after the first submission"),
        None => println!("  drained    no job finished"),
    }
    println!("  rate       {jobs_per_second:.1} jobs/s");
    println!("  latency    created → finished   {}", spread(total));
    println!("    of which created → dispatched {}", spread(ack));
    println!("             dispatched → started {}", spread(queued));
    println!("             started → finished   {}", spread(run));
    let counts: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "  outcomes   {} (expected no_changes {m})",
        counts.join("  ")
    );
    for job in jobs
        .iter()
        .filter(|j| j.status != JobStatus::NoChanges)
        .take(3)
    {
        print_failed(world, job).await?;
    }
    println!("  comments   {comments_ok} of {m} progress comments end in \"No changes\"");
    println!("  steps      from the job logs (stream ids, 1 ms resolution)");
    for (label, values) in step_times(world, &jobs).await? {
        println!("    {label:<34} {}", spread(values));
    }
    let mut per_runner: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        let runner = world.app.job_field(&job.id.to_string(), "runner").await;
        *per_runner.entry(runner.unwrap_or_default()).or_default() += 1;
    }
    let shares: Vec<String> = per_runner.values().map(usize::to_string).collect();
    println!("  per runner {} jobs", shares.join(" / "));
    println!("{}", after.usage_since(&before, m));
    let mut by_count: Vec<(String, usize)> = routes.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let github_total: usize = by_count.iter().map(|(_, n)| n).sum();
    println!(
        "  requests   GitHub API {:.2}/job, git HTTP {:.2}/job",
        github_total as f64 / m as f64,
        git_requests as f64 / m as f64
    );
    for (route, n) in &by_count {
        println!("    {:>6.2}/job  {route}", *n as f64 / m as f64);
    }
    let lines = runners.log_lines();
    if !lines.is_empty() {
        println!("  runner log {} lines; the first:", lines.len());
        for line in lines.iter().take(5) {
            println!("    {line}");
        }
    }
    for problem in &stop_problems {
        println!("  stop       {problem}");
    }

    Ok(Phase {
        runners: count,
        jobs: m,
        no_changes,
        comments_ok,
        jobs_per_second,
        p50: percentile(&sorted_total, 50.0),
        p95: percentile(&sorted_total, 95.0),
        stop_problems,
    })
}

/// The runner's steps as its job log marks them, in order: a step lasts from its line
/// to the next marked line. The last one ends at the line `Job <status>`.
const STEPS: [(&str, &str); 6] = [
    ("access, repository, token", "==> Runner "),
    ("mirror fetch", "==> Fetching "),
    ("config, branch name, work tree", "==> Fetched in "),
    ("sandbox + agent", "==> Agent started"),
    ("changed paths", "==> Agent finished"),
    (
        "clean up (work tree, scratch)",
        "==> The agent changed nothing",
    ),
];
const LAST_STEP_END: &str = "==> Job ";

/// Durations (seconds) of each step over the `no_changes` jobs, the first entry being
/// `started_at` to the job's first log line.
async fn step_times(world: &World, jobs: &[Job]) -> anyhow::Result<Vec<(&'static str, Vec<f64>)>> {
    let mut out: Vec<(&str, Vec<f64>)> = vec![("started_at → first log line", Vec::new())];
    out.extend(STEPS.iter().map(|(label, _)| (*label, Vec::new())));
    for job in jobs.iter().filter(|j| j.status == JobStatus::NoChanges) {
        let lines = world.app.store.read_log(job.id, "0", 1_000, None).await?;
        // Stream ids are `<milliseconds>-<sequence>`.
        let at = |prefix: &str| {
            lines
                .iter()
                .find(|l| l.line.starts_with(prefix))
                .and_then(|l| l.id.split('-').next()?.parse::<i64>().ok())
        };
        let mut marks: Vec<Option<i64>> = STEPS.iter().map(|(_, prefix)| at(prefix)).collect();
        marks.push(at(LAST_STEP_END));
        if let (Some(started), Some(first)) = (job.started_at, marks[0]) {
            let started_ms = (started.unix_timestamp_nanos() / 1_000_000) as i64;
            out[0].1.push((first - started_ms) as f64 / 1000.0);
        }
        for (i, pair) in marks.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                out[i + 1].1.push((to - from) as f64 / 1000.0);
            }
        }
    }
    Ok(out)
}

/// A job that did not end `no_changes`: its error and the end of its log.
async fn print_failed(world: &World, job: &Job) -> anyhow::Result<()> {
    println!(
        "    {} {} after {} attempt(s): {}",
        job.id,
        job.status.as_str(),
        job.attempt,
        job.error.as_deref().unwrap_or("no error recorded")
    );
    let lines = world.app.store.read_log(job.id, "0", 1_000, None).await?;
    for line in lines.iter().rev().take(6).rev() {
        println!("      | {}", line.line);
    }
    Ok(())
}

/// How many jobs' progress comments were last edited to the "No changes" state.
async fn progress_comments_ok(world: &World, jobs: &[Job]) -> usize {
    let mut last: HashMap<u64, String> = HashMap::new();
    for (path, body) in world.github.calls("PATCH", "/issues/comments/").await {
        if let Some(id) = path.rsplit('/').next().and_then(|n| n.parse().ok()) {
            last.insert(id, body["body"].as_str().unwrap_or_default().to_owned());
        }
    }
    jobs.iter()
        .filter(|j| {
            j.progress_comment_id
                .and_then(|id| last.get(&id))
                .is_some_and(|body| body.contains("No changes"))
        })
        .count()
}

fn print_machine(settings: &Settings) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!("machine: {cores} cores ({model})");
    println!(
        "parameters: {} jobs per phase, runner processes {:?}, --workers {} each, agent `true` with --sandbox {}, visibility timeout {VISIBILITY_TIMEOUT}, one requester on distinct issues, per-user limit above the job count",
        settings.jobs, settings.runners, settings.workers, settings.sandbox
    );
}

fn print_summary(phases: &[Phase]) -> bool {
    println!("== summary ==");
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>12} {:>10}  verdict",
        "runners", "jobs/s", "p50", "p95", "no_changes", "comments"
    );
    let mut all_ok = true;
    for p in phases {
        let ok = p.correct();
        all_ok &= ok;
        println!(
            "{:<10} {:>10.1} {:>12} {:>12} {:>12} {:>10}  {}",
            p.runners,
            p.jobs_per_second,
            ms(p.p50),
            ms(p.p95),
            format!("{}/{}", p.no_changes, p.jobs),
            format!("{}/{}", p.comments_ok, p.jobs),
            if ok { "PASS" } else { "FAIL" }
        );
    }
    if let (Some(one), Some(two)) = (
        phases.iter().find(|p| p.runners == 1),
        phases.iter().find(|p| p.runners == 2),
    ) && one.jobs_per_second > 0.0
    {
        println!(
            "scaling 1 → 2 runner processes: x{:.2}",
            two.jobs_per_second / one.jobs_per_second
        );
    }
    all_ok
}

async fn run(world: &World, settings: &Settings) -> anyhow::Result<bool> {
    warm_up(world, settings).await?;
    let mut phases = Vec::new();
    for &count in &settings.runners {
        phases.push(measure(world, settings, count).await?);
    }
    Ok(print_summary(&phases))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    print_machine(&settings);
    let world = World::start().await?;
    println!("Redis keys under {}", world.app.prefix);
    let started = Instant::now();
    // Runner processes are dropped (killed) before `serve` stops and the keys go, on
    // success, failure, panic or Ctrl-C alike.
    let outcome = tokio::select! {
        r = AssertUnwindSafe(run(&world, &settings)).catch_unwind() => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let elapsed = started.elapsed();
    match world.stop().await {
        Ok(Some(0)) => println!("cleanup: runners stopped, Redis keys deleted; ran {elapsed:.1?}"),
        Ok(Some(n)) => println!("cleanup: {n} Redis keys left under the prefix"),
        _ => println!("cleanup: could not check the Redis keys"),
    }
    match outcome {
        Some(Ok(Ok(true))) => Ok(ExitCode::SUCCESS),
        Some(Ok(Ok(false))) => Ok(ExitCode::FAILURE),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => {
            println!("interrupted");
            Ok(ExitCode::FAILURE)
        }
    }
}
