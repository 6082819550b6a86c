//! Intake benchmark: signed GitHub `issue_comment` deliveries against a running
//! `repobox serve` backed by a real Redis.
//!
//! What it measures (the acceptance check of the intake issue): how many deliveries per
//! second `serve` verifies (HMAC-SHA256), parses, decides and stores as queued jobs, and
//! the latency of each delivery, with the load generator on the same machine.
//!
//! 1. Throughput: a closed loop of `BENCH_CONCURRENCY` workers (default 64) sharing one
//!    HTTP/1.1 keep-alive client, for `BENCH_SECONDS` (default 10) after a 2 s warm-up.
//!    Target: at least 5,000 queued deliveries per second.
//! 2. Latency at a fixed rate: an open loop sending `BENCH_RATE` requests per second
//!    (default 1,000) for `BENCH_SECONDS`. Send times are computed from the start and
//!    latency is taken from the *scheduled* send time, so a slow answer cannot hide the
//!    requests queued behind it (no coordinated omission). Target: p99 under 20 ms.
//! 3. Verification: `ZCARD <prefix>jobs:all` must equal the number of 202 answers, i.e.
//!    every accepted delivery really stored a job.
//! 4. Memory: `serve`'s resident set (`VmRSS`) when idle before the load, after each
//!    phase, and idle again `BENCH_IDLE_SECONDS` (default 5) after the last, and its peak
//!    (`VmHWM`) over the run. Targets (SPEC 20): peak under 40 MB, idle under 15 MB.
//!    `BENCH_SERVE_ENV="NAME=value …"` passes variables to `serve` (allocator trials,
//!    e.g. `MALLOC_ARENA_MAX=2`).
//!
//! Every delivery carries a fresh `X-GitHub-Delivery` id, so each one stores a job. No
//! GitHub App is configured, so the acknowledger marks each job failed ("github is not
//! configured"): that is part of the real per-delivery work of `serve` and is included.
//! The CPU time used by `repobox`, `redis-server` and the benchmark itself is printed per
//! phase (from /proc and `INFO cpu`) to show where the time goes.
//!
//! Run it with `cargo bench --bench intake` (needs Redis at redis://127.0.0.1:6379, or
//! set `REPOBOX_BENCH_REDIS_URL`). Keys live under `bench:<ulid>:` and are deleted at the
//! end. The program exits non-zero on request errors or a job count mismatch; a missed
//! performance target is reported as MISS but does not fail the run.

#[path = "support/mod.rs"]
mod support;

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{env_or, mb, process_cpu_seconds, process_rss_bytes, redis_cpu_seconds};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;
use tokio::task::JoinSet;
use ulid::Ulid;

const WEBHOOK_SECRET: &str = "repobox-bench-webhook-secret";
const COMMAND: &str = "/repobox fix the flaky login test";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const WARM_UP: Duration = Duration::from_secs(2);
const READY_DEADLINE: Duration = Duration::from_secs(20);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const TARGET_THROUGHPUT: f64 = 5_000.0;
const TARGET_P99: Duration = Duration::from_millis(20);
const TARGET_PEAK_RSS: u64 = 40_000_000;
const TARGET_IDLE_RSS: u64 = 15_000_000;

/// Settings read from the environment.
struct Settings {
    concurrency: usize,
    seconds: u64,
    rate: u64,
    redis_url: String,
    idle_seconds: u64,
    serve_env: Vec<(String, String)>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let settings = Settings {
            concurrency: env_or("BENCH_CONCURRENCY", 64)?,
            seconds: env_or("BENCH_SECONDS", 10)?,
            rate: env_or("BENCH_RATE", 1_000)?,
            redis_url: env_or("REPOBOX_BENCH_REDIS_URL", DEFAULT_REDIS_URL.to_owned())?,
            idle_seconds: env_or("BENCH_IDLE_SECONDS", 5)?,
            serve_env: env_or("BENCH_SERVE_ENV", String::new())?
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        if settings.concurrency == 0 || settings.seconds == 0 || settings.rate == 0 {
            bail!("BENCH_CONCURRENCY, BENCH_SECONDS and BENCH_RATE must be at least 1");
        }
        Ok(settings)
    }
}

/// A `repobox serve` child process; killed when dropped.
struct Server {
    child: Child,
    base_url: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    fn start(redis_url: &str, prefix: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("serve.log");
        let port = free_port()?;
        let secret_key = base64::engine::general_purpose::STANDARD.encode([0x5a_u8; 32]);
        let stdout = File::create(&log)?;
        let stderr = stdout.try_clone()?;
        let child = Command::new(env!("CARGO_BIN_EXE_repobox"))
            .arg("serve")
            .current_dir(dir.path())
            .env("REPOBOX_LISTEN", format!("127.0.0.1:{port}"))
            .env("REPOBOX_REDIS_URL", redis_url)
            .env("REPOBOX_REDIS_PREFIX", prefix)
            .env("REPOBOX_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("REPOBOX_SECRET_KEY", secret_key)
            .env("REPOBOX_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("cannot start `repobox serve`")?;
        Ok(Server {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    /// Polls `GET /readyz` until it answers 200.
    async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let url = format!("{}/readyz", self.base_url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("`repobox serve` exited ({status}):\n{}", self.log_text());
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "`repobox serve` not ready after {READY_DEADLINE:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The signed request every worker sends; only the delivery id changes.
struct Target {
    url: String,
    body: Bytes,
    signature: String,
    run: Ulid,
    next_id: AtomicU64,
    /// 202 answers over the whole run (warm-up included), checked against Redis.
    queued_total: AtomicU64,
    /// Failed requests over the whole run (warm-up included).
    failed_total: AtomicU64,
}

impl Target {
    fn new(base_url: &str) -> anyhow::Result<Self> {
        let body = payload()?;
        Ok(Target {
            url: format!("{base_url}/webhooks/github"),
            signature: sign(&body),
            body,
            run: Ulid::new(),
            next_id: AtomicU64::new(0),
            queued_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
        })
    }
}

/// The `issue_comment.created` fixture with a command as the comment body.
fn payload() -> anyhow::Result<Bytes> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/webhooks/issue_comment.created.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)?;
    json["comment"]["body"] = COMMAND.into();
    Ok(serde_json::to_vec(&json)?.into())
}

fn sign(body: &[u8]) -> String {
    repobox::webhooks::verify::github_signature(WEBHOOK_SECRET, body)
}

enum Outcome {
    Queued,
    Duplicate,
    Failed(String),
}

struct Sample {
    latency: Duration,
    outcome: Outcome,
}

/// Sends one delivery with a fresh id and counts its outcome in the run totals.
async fn send(client: &reqwest::Client, target: &Target) -> Outcome {
    let outcome = post(client, target).await;
    let total = match outcome {
        Outcome::Queued => &target.queued_total,
        Outcome::Duplicate => return outcome,
        Outcome::Failed(_) => &target.failed_total,
    };
    total.fetch_add(1, Ordering::Relaxed);
    outcome
}

async fn post(client: &reqwest::Client, target: &Target) -> Outcome {
    let n = target.next_id.fetch_add(1, Ordering::Relaxed);
    let response = client
        .post(&target.url)
        .header("X-GitHub-Event", "issue_comment")
        .header("X-GitHub-Delivery", format!("{}-{n}", target.run))
        .header("X-Hub-Signature-256", &target.signature)
        .header("Content-Type", "application/json")
        .body(target.body.clone())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("request failed: {e}")),
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("HTTP {status}, body unreadable: {e}")),
    };
    match status.as_u16() {
        202 if is_queued(&body) => Outcome::Queued,
        200 => Outcome::Duplicate,
        _ => Outcome::Failed(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// `{"outcome":"queued","job":"<ulid>"}`
fn is_queued(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    json["outcome"] == "queued"
        && json["job"]
            .as_str()
            .is_some_and(|j| j.parse::<Ulid>().is_ok())
}

/// Closed loop: each worker sends its next delivery when the previous one is answered.
/// Returns the samples sent after the warm-up and the measured wall time.
async fn closed_loop(
    client: &reqwest::Client,
    target: &Arc<Target>,
    concurrency: usize,
    measure: Duration,
) -> (Vec<Sample>, Duration) {
    let measure_start = Instant::now() + WARM_UP;
    let end = measure_start + measure;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, target) = (client.clone(), target.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return samples;
                }
                let outcome = send(&client, &target).await;
                if sent >= measure_start {
                    let latency = sent.elapsed();
                    samples.push(Sample { latency, outcome });
                }
            }
        });
    }
    let samples = collect(workers).await;
    (samples, measure_start.elapsed())
}

/// Open loop: request `i` is due at `start + i / rate`, whatever happened before it.
async fn open_loop(
    client: &reqwest::Client,
    target: &Arc<Target>,
    rate: u64,
    duration: Duration,
) -> (Vec<Sample>, Duration) {
    let total = rate * duration.as_secs();
    let start = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (client, target) = (client.clone(), target.clone());
        requests.spawn(async move {
            let outcome = send(&client, &target).await;
            vec![Sample {
                latency: due.elapsed(),
                outcome,
            }]
        });
    }
    let samples = collect(requests).await;
    (samples, start.elapsed())
}

async fn collect(mut set: JoinSet<Vec<Sample>>) -> Vec<Sample> {
    let mut all = Vec::new();
    while let Some(joined) = set.join_next().await {
        all.extend(joined.expect("a load task panicked"));
    }
    all
}

/// Counts and latency percentiles of one phase.
struct Stats {
    queued: usize,
    duplicates: usize,
    errors: Vec<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn new(samples: Vec<Sample>, elapsed: Duration) -> Self {
        let mut stats = Stats {
            queued: 0,
            duplicates: 0,
            errors: Vec::new(),
            latencies: Vec::with_capacity(samples.len()),
            elapsed,
        };
        for sample in samples {
            stats.latencies.push(sample.latency);
            match sample.outcome {
                Outcome::Queued => stats.queued += 1,
                Outcome::Duplicate => stats.duplicates += 1,
                Outcome::Failed(e) => stats.errors.push(e),
            }
        }
        stats.latencies.sort_unstable();
        stats
    }

    fn sent(&self) -> usize {
        self.latencies.len()
    }

    fn per_second(&self, count: usize) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn print_counts(&self) {
        println!(
            "  sent {}  queued {}  duplicates {}  errors {}",
            self.sent(),
            self.queued,
            self.duplicates,
            self.errors.len()
        );
        for error in self.errors.iter().take(5) {
            println!("  error: {error}");
        }
    }

    fn latency_line(&self, percentiles: &[f64]) -> String {
        let mut line = String::from("  latency");
        for &p in percentiles {
            line += &format!("  p{p} {}", ms(self.percentile(p)));
        }
        line + &format!("  max {}", ms(self.percentile(100.0)))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU seconds used so far by `repobox`, `redis-server` and this benchmark.
struct CpuSnapshot {
    at: Instant,
    serve: Option<f64>,
    redis: Option<f64>,
    bench: Option<f64>,
}

impl CpuSnapshot {
    async fn take(serve_pid: u32, redis: &mut MultiplexedConnection) -> Self {
        CpuSnapshot {
            at: Instant::now(),
            serve: process_cpu_seconds(&serve_pid.to_string(), false),
            redis: redis_cpu_seconds(redis).await,
            bench: process_cpu_seconds("self", false),
        }
    }

    /// "repobox 120%  redis-server 40%  bench 35%" (100% = one core busy).
    fn usage_since(&self, before: &CpuSnapshot) -> String {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        let share = |after: Option<f64>, before: Option<f64>| match (after, before) {
            (Some(a), Some(b)) => format!("{:.0}%", (a - b) / wall * 100.0),
            _ => "n/a".to_owned(),
        };
        format!(
            "  cpu      repobox {}  redis-server {}  bench {}  (100% = one core)",
            share(self.serve, before.serve),
            share(self.redis, before.redis),
            share(self.bench, before.bench)
        )
    }
}

/// Keys the benchmark reads to check what `serve` stored.
struct Keys {
    prefix: String,
}

impl Keys {
    fn jobs_all(&self) -> String {
        format!("{}jobs:all", self.prefix)
    }

    fn intake_stream(&self) -> String {
        format!("{}intake:stream", self.prefix)
    }
}

/// Waits until the acknowledger has handled every stored task (acknowledged entries
/// are deleted from the intake stream). Returns the backlog found and the time taken.
async fn drain_acknowledger(
    redis: &mut MultiplexedConnection,
    keys: &Keys,
) -> anyhow::Result<(usize, Duration)> {
    let start = Instant::now();
    let backlog: usize = redis::cmd("XLEN")
        .arg(keys.intake_stream())
        .query_async(redis)
        .await?;
    loop {
        let left: usize = redis::cmd("XLEN")
            .arg(keys.intake_stream())
            .query_async(redis)
            .await?;
        if left == 0 {
            return Ok((backlog, start.elapsed()));
        }
        if start.elapsed() > DRAIN_DEADLINE {
            bail!("the acknowledger still has {left} of {backlog} tasks after {DRAIN_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes every key under the prefix; returns how many.
async fn delete_keys(redis: &mut MultiplexedConnection, prefix: &str) -> anyhow::Result<usize> {
    let mut cursor = 0_u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<usize>(redis)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// What the summary needs from a complete run.
struct Results {
    rate: u64,
    /// `serve`'s resident set idle before the load and after it, and its peak.
    idle_before: u64,
    idle_after: u64,
    peak: u64,
    throughput: Stats,
    fixed_rate: Stats,
    queued_total: u64,
    failed_total: u64,
    stored_jobs: u64,
}

async fn run_phases(
    settings: &Settings,
    server: &mut Server,
    redis: &mut MultiplexedConnection,
    keys: &Keys,
) -> anyhow::Result<Results> {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(settings.concurrency.max(256))
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    server.wait_ready(&client).await?;
    let pid = server.pid().to_string();
    let rss = || process_rss_bytes(&pid).unwrap_or_default();
    let idle_before = rss().0;
    println!(
        "== memory: serve's RSS idle before the load: {} ==",
        mb(idle_before)
    );
    let target = Arc::new(Target::new(&server.base_url)?);
    let seconds = Duration::from_secs(settings.seconds);

    println!(
        "== throughput: closed loop, {} workers, {} s after a {} s warm-up ==",
        settings.concurrency,
        settings.seconds,
        WARM_UP.as_secs()
    );
    let before = CpuSnapshot::take(server.pid(), redis).await;
    let (samples, elapsed) = closed_loop(&client, &target, settings.concurrency, seconds).await;
    let after = CpuSnapshot::take(server.pid(), redis).await;
    let throughput = Stats::new(samples, elapsed);
    throughput.print_counts();
    println!(
        "  rate     {:.0} deliveries/s queued",
        throughput.per_second(throughput.queued)
    );
    println!("{}", throughput.latency_line(&[50.0, 99.0]));
    println!("{}", after.usage_since(&before));
    let (backlog, took) = drain_acknowledger(redis, keys).await?;
    println!("  acknowledger backlog at the end: {backlog} tasks, drained in {took:.2?}");
    let (now, peak) = rss();
    println!("  serve RSS {} now, {} peak so far", mb(now), mb(peak));

    println!(
        "== latency at a fixed rate: open loop, {}/s for {} s ==",
        settings.rate, settings.seconds
    );
    let before = CpuSnapshot::take(server.pid(), redis).await;
    let (samples, elapsed) = open_loop(&client, &target, settings.rate, seconds).await;
    let after = CpuSnapshot::take(server.pid(), redis).await;
    let fixed_rate = Stats::new(samples, elapsed);
    fixed_rate.print_counts();
    println!(
        "  rate     {:.0} requests/s answered",
        fixed_rate.per_second(fixed_rate.sent())
    );
    println!("{}", fixed_rate.latency_line(&[50.0, 90.0, 99.0]));
    println!("{}", after.usage_since(&before));
    let (backlog, took) = drain_acknowledger(redis, keys).await?;
    println!("  acknowledger backlog at the end: {backlog} tasks, drained in {took:.2?}");

    let (now, peak) = rss();
    println!("  serve RSS {} now, {} peak so far", mb(now), mb(peak));
    tokio::time::sleep(Duration::from_secs(settings.idle_seconds)).await;
    let (idle_after, peak) = rss();
    println!(
        "== memory: serve's RSS idle {} s after the load: {}, peak {} ==",
        settings.idle_seconds,
        mb(idle_after),
        mb(peak)
    );

    let stored_jobs: u64 = redis::cmd("ZCARD")
        .arg(keys.jobs_all())
        .query_async(redis)
        .await?;
    Ok(Results {
        rate: settings.rate,
        idle_before,
        idle_after,
        peak,
        throughput,
        fixed_rate,
        queued_total: target.queued_total.load(Ordering::Relaxed),
        failed_total: target.failed_total.load(Ordering::Relaxed),
        stored_jobs,
    })
}

/// Prints the summary table; returns whether the run was correct (not whether the
/// performance targets were met).
fn print_summary(results: &Results) -> bool {
    let verdict = |ok: bool, bad: &'static str| if ok { "PASS" } else { bad };
    let rate = results.throughput.per_second(results.throughput.queued);
    let p99 = results.fixed_rate.percentile(99.0);
    let errors = results.failed_total;
    let stored_ok = results.stored_jobs == results.queued_total;
    println!("== summary ==");
    summary_row(
        "throughput",
        format!("{rate:.0} deliveries/s"),
        format!("target >= {TARGET_THROUGHPUT:.0}/s"),
        verdict(rate >= TARGET_THROUGHPUT, "MISS"),
    );
    summary_row(
        &format!("p99 at {}/s", results.rate),
        ms(p99),
        format!("target < {} ms", TARGET_P99.as_millis()),
        // Fast error answers must not pass for low latency.
        verdict(
            p99 < TARGET_P99 && results.fixed_rate.errors.is_empty(),
            "MISS",
        ),
    );
    summary_row(
        "peak RSS",
        mb(results.peak),
        format!("target < {}", mb(TARGET_PEAK_RSS)),
        verdict(results.peak < TARGET_PEAK_RSS, "MISS"),
    );
    summary_row(
        "idle RSS",
        format!("{} / {}", mb(results.idle_before), mb(results.idle_after)),
        format!("before / after, target < {}", mb(TARGET_IDLE_RSS)),
        verdict(
            results.idle_before.max(results.idle_after) < TARGET_IDLE_RSS,
            "MISS",
        ),
    );
    summary_row(
        "stored jobs",
        format!("{} of {}", results.stored_jobs, results.queued_total),
        "ZCARD jobs:all = 202 answers".to_owned(),
        verdict(stored_ok, "FAIL"),
    );
    summary_row(
        "errors",
        errors.to_string(),
        "none, warm-up included".to_owned(),
        verdict(errors == 0, "FAIL"),
    );
    stored_ok && errors == 0
}

fn summary_row(what: &str, figure: String, target: String, verdict: &str) {
    let target = format!("({target})");
    println!("{what:<14} {figure:>20}  {target:<31}  {verdict}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    let keys = Keys {
        prefix: format!("bench:{}:", Ulid::new()),
    };
    let mut redis = redis::Client::open(settings.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("Redis is not reachable at {}", settings.redis_url))?;
    let mut server = Server::start(&settings.redis_url, &keys.prefix, &settings.serve_env)?;
    println!(
        "repobox serve pid {} at {}, Redis keys under {}",
        server.pid(),
        server.base_url,
        keys.prefix
    );

    let results = run_phases(&settings, &mut server, &mut redis, &keys).await;
    server.stop();
    let serve_log = server.log_text();
    match delete_keys(&mut redis, &keys.prefix).await {
        Ok(n) => println!("cleanup: deleted {n} Redis keys under {}", keys.prefix),
        Err(e) => println!("cleanup failed: {e:#} (delete {}* by hand)", keys.prefix),
    }
    if !serve_log.trim().is_empty() {
        let lines: Vec<&str> = serve_log.lines().collect();
        println!(
            "repobox serve logged {} lines (warn and above); the first:",
            lines.len()
        );
        for line in lines.iter().take(5) {
            println!("  {line}");
        }
    }

    let correct = print_summary(&results?);
    Ok(if correct {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
