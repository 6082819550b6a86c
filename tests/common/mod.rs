//! Test harness: the real router and acknowledger on `127.0.0.1:0` over a real Redis
//! (a unique key prefix per test) or the embedded store (a database of its own per
//! test, [`Backend`]), with HTTP fakes of the forges (`github.rs`, `gitlab.rs`) and
//! helpers that sign and send real webhook payloads.
#![allow(dead_code)]

pub mod anthropic;
pub mod browser;
pub mod git_server;
pub mod github;
pub mod gitlab;
pub mod oauth_fake;
pub mod oidc_keys;
pub mod processes;
pub mod slapd;
pub mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use redis::AsyncCommands;
use repobox::app::{self, build_router, build_services};
use repobox::cli::Cli;
use repobox::job::{Job, JobId};
use repobox::store::Store;
use repobox::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const GITLAB_SECRET: &str = "gitlab-webhook-token";
/// The secret key of every test app (base64 of 32 bytes).
pub const TEST_SECRET_KEY: &str = "dGVzdC1zZWNyZXQta2V5LTMyLWJ5dGVzLWxvbmchISE=";

pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A fixture parsed as JSON, to change in memory.
pub fn fixture_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Everything this test binary logged so far (debug level for Repobox), once
/// [`capture_logs`] has been called: tests check that no secret is in it.
pub fn captured_logs() -> String {
    let buf = capture_logs();
    let bytes = buf.lock().unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Installs a subscriber that keeps every log line of this test binary in memory.
pub fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,repobox=debug")
            .json()
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `redis-server` of the test's own on `port` (no persistence: a restart loses
/// everything, as an unconfigured production Redis would).
pub fn start_redis(port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/deps installs it)")
}

/// Waits until the Redis on `port` answers PING.
pub async fn wait_for_redis(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    for _ in 0..500 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("redis-server on {port} did not come up");
}

pub fn redis_url() -> String {
    std::env::var("REPOBOX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The storage backend under test: the same test bodies run against each (SPEC 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The shared Redis (`Options::redis_url`), under a prefix of the test's own.
    Redis,
    /// The embedded store in this data directory (`REPOBOX_DATA_DIR`); `None`: a fresh
    /// temporary one.
    Embedded(Option<PathBuf>),
}

/// Runs each test body `async fn name(backend: Backend)` of the calling file once per
/// backend, as `on_redis::name` and `on_embedded::name` (SPEC 19: one contract, the same
/// test bodies against each).
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Backend::Redis).await
            })*
        }
        mod on_embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Backend::Embedded(None)).await
            })*
        }
    };
}

/// What the harness reads and writes beside the app, to look at what a backend stored.
enum Raw {
    Redis(redis::Client),
    Embedded {
        db: PathBuf,
        _dir: Option<Arc<tempfile::TempDir>>,
    },
}

/// How the app under test is configured.
#[derive(Clone)]
pub struct Options {
    pub backend: Backend,
    pub github_secret: Option<String>,
    pub gitlab_secret: Option<String>,
    /// Extra `--flag value` pairs (e.g. the fake forges' URLs).
    pub args: Vec<String>,
    pub redis_url: String,
    pub acknowledger: bool,
    /// Runs a job runner in the same process (as `repobox all` does).
    pub runner: bool,
    /// The runner's agent instead of the configured one.
    pub agent: Option<Arc<dyn repobox::agent::Agent>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Redis,
            github_secret: Some(GITHUB_SECRET.into()),
            gitlab_secret: Some(GITLAB_SECRET.into()),
            args: Vec::new(),
            redis_url: redis_url(),
            acknowledger: true,
            runner: false,
            agent: None,
        }
    }
}

/// A browser signed in to the dashboard: its cookie and the session's CSRF token.
pub struct SignedIn {
    pub cookie: String,
    pub csrf: String,
}

pub struct TestApp {
    pub url: String,
    pub addr: SocketAddr,
    pub prefix: String,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    raw: Raw,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    pub async fn start(opts: Options) -> TestApp {
        // `REPOBOX_LOG=debug cargo test -- --nocapture` shows the app's log.
        if std::env::var_os("REPOBOX_LOG").is_some() {
            repobox::telemetry::init_logging(false);
        }
        let (prefix, raw, mut args) = match &opts.backend {
            Backend::Redis => {
                let prefix = format!("test:{}:", ulid::Ulid::new());
                let args: Vec<String> = vec![
                    "repobox".into(),
                    "--redis-url".into(),
                    opts.redis_url.clone(),
                    "--redis-prefix".into(),
                    prefix.clone(),
                ];
                let raw = Raw::Redis(redis::Client::open(opts.redis_url.as_str()).unwrap());
                (prefix, raw, args)
            }
            Backend::Embedded(dir) => {
                let temp = dir
                    .is_none()
                    .then(|| Arc::new(tempfile::tempdir().unwrap()));
                let dir = dir
                    .clone()
                    .unwrap_or_else(|| temp.as_ref().unwrap().path().to_owned());
                let args: Vec<String> = vec![
                    "repobox".into(),
                    "--data-dir".into(),
                    dir.to_str().unwrap().into(),
                ];
                let raw = Raw::Embedded {
                    db: dir.join(repobox::store::embedded::FILE_NAME),
                    _dir: temp,
                };
                (String::new(), raw, args)
            }
        };
        args.extend(
            [
                "--public-url",
                "https://repobox.example.com",
                "--secret-key",
                TEST_SECRET_KEY,
                // The runner here is this test binary; sandboxes need the real one inside.
                "--sandbox-forwarder",
                env!("CARGO_BIN_EXE_repobox"),
            ]
            .map(String::from),
        );
        if let Some(s) = &opts.github_secret {
            args.extend(["--github-webhook-secret".into(), s.clone()]);
        }
        if let Some(s) = &opts.gitlab_secret {
            args.extend(["--gitlab-webhook-secret".into(), s.clone()]);
        }
        args.extend(opts.args.iter().cloned());
        args.push("serve".into());
        let cli = Cli::try_parse_from(&args).expect("test configuration parses");
        cli.config.validate().expect("test configuration is valid");
        let metrics = Arc::new(Metrics::new());
        let services = build_services(&cli.config, metrics.clone()).expect("services build");
        let _ = services.state.store.ensure_groups().await;
        // As `serve` does at start: the setup token, while no forge is configured.
        repobox::web::dashboard::setup::announce(&services.state)
            .await
            .expect("the setup token is stored");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let router = build_router(services.state.clone());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            app::serve(listener, router, token).await.unwrap();
        }));
        if opts.acknowledger {
            tasks.push(tokio::spawn(
                services.acknowledger.clone().run(shutdown.clone()),
            ));
        }
        if opts.runner {
            let (store, forges) = (services.state.store.clone(), services.forges.clone());
            let runner = match opts.agent.clone() {
                Some(agent) => {
                    app::build_runner_with_agent(&cli.config, store, forges, metrics.clone(), agent)
                }
                None => app::build_runner(&cli.config, store, forges, metrics.clone()),
            }
            .expect("runner builds");
            tasks.push(tokio::spawn(runner.run(shutdown.clone())));
        }
        TestApp {
            url: format!("http://{addr}"),
            addr,
            prefix,
            store: services.state.store.clone(),
            metrics,
            http: reqwest::Client::new(),
            raw,
            shutdown,
            tasks,
        }
    }

    /// Sends a GitHub delivery signed with the test secret.
    pub async fn github(&self, event: &str, delivery: &str, body: &[u8]) -> Response {
        let sig = repobox::webhooks::verify::github_signature(GITHUB_SECRET, body);
        self.github_raw(event, Some(delivery), body, Some(&sig))
            .await
    }

    pub async fn github_json(&self, event: &str, payload: &Value) -> Response {
        let body = serde_json::to_vec(payload).unwrap();
        self.github(event, &ulid::Ulid::new().to_string(), &body)
            .await
    }

    pub async fn github_raw(
        &self,
        event: &str,
        delivery: Option<&str>,
        body: &[u8],
        signature: Option<&str>,
    ) -> Response {
        let mut req = self
            .http
            .post(format!("{}/webhooks/github", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .body(body.to_vec());
        if let Some(d) = delivery {
            req = req.header("x-github-delivery", d);
        }
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        into_response(req.send().await.expect("request sent")).await
    }

    /// Sends a GitLab delivery with the test token.
    pub async fn gitlab(&self, event: &str, payload: &Value) -> Response {
        let body = serde_json::to_vec(payload).unwrap();
        self.gitlab_raw(
            event,
            &ulid::Ulid::new().to_string(),
            &body,
            Some(GITLAB_SECRET),
        )
        .await
    }

    pub async fn gitlab_raw(
        &self,
        event: &str,
        uuid: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Response {
        let mut req = self
            .http
            .post(format!("{}/webhooks/gitlab", self.url))
            .header("content-type", "application/json")
            .header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", uuid)
            .body(body.to_vec());
        if let Some(t) = token {
            req = req.header("x-gitlab-token", t);
        }
        into_response(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A connection to the test's Redis (tests of Redis itself; panics on the embedded
    /// store).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        match &self.raw {
            Raw::Redis(client) => client.get_multiplexed_async_connection().await.unwrap(),
            Raw::Embedded { .. } => panic!("this test looks at Redis itself"),
        }
    }

    /// The embedded store's database, opened beside the app (as `repobox jobs` opens it).
    pub fn sqlite(&self) -> rusqlite::Connection {
        match &self.raw {
            Raw::Embedded { db, .. } => rusqlite::Connection::open(db).unwrap(),
            Raw::Redis(_) => panic!("this test looks at the embedded store itself"),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.raw {
            Raw::Redis(_) => Backend::Redis,
            Raw::Embedded { db, .. } => Backend::Embedded(db.parent().map(PathBuf::from)),
        }
    }

    /// The elements of list `key` (a waiting list), in order.
    pub async fn list(&self, key: &str) -> Vec<String> {
        match &self.raw {
            Raw::Redis(_) => self
                .conn()
                .await
                .lrange(format!("{}{key}", self.prefix), 0, -1)
                .await
                .unwrap(),
            Raw::Embedded { .. } => {
                let db = self.sqlite();
                let mut stmt = db
                    .prepare("SELECT value FROM lists WHERE key = ?1 ORDER BY seq")
                    .unwrap();
                stmt.query_map([key], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
        }
    }

    /// The consumers holding `stream`'s entries, oldest entry first.
    pub async fn holders(&self, stream: &str) -> Vec<String> {
        match &self.raw {
            Raw::Redis(_) => {
                let group = if stream == "intake:stream" {
                    "acknowledgers"
                } else {
                    "runners"
                };
                let pending: redis::streams::StreamPendingCountReply = self
                    .conn()
                    .await
                    .xpending_count(format!("{}{stream}", self.prefix), group, "-", "+", 100)
                    .await
                    .unwrap();
                pending.ids.into_iter().map(|p| p.consumer).collect()
            }
            Raw::Embedded { .. } => {
                let db = self.sqlite();
                let mut stmt = db
                    .prepare(
                        "SELECT consumer FROM streams WHERE key = ?1 AND consumer IS NOT NULL
                         ORDER BY ms, seq",
                    )
                    .unwrap();
                stmt.query_map([stream], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
        }
    }

    /// Appends an entry to `stream` behind the app's back (a stray or duplicate entry),
    /// with one field `field` = `value`; returns its id.
    pub async fn add_entry(&self, stream: &str, field: &str, value: &str) -> String {
        match &self.raw {
            Raw::Redis(_) => self
                .conn()
                .await
                .xadd(format!("{}{stream}", self.prefix), "*", &[(field, value)])
                .await
                .unwrap(),
            Raw::Embedded { .. } => {
                let db = self.sqlite();
                let last_key = format!("stream-last:{stream}");
                let last: String = db
                    .query_row("SELECT value FROM kv WHERE key = ?1", [&last_key], |r| {
                        r.get(0)
                    })
                    .unwrap_or_else(|_| "0-0".into());
                let ms: i64 = last.split('-').next().unwrap().parse().unwrap();
                let id = format!("{}-0", ms + 1);
                db.execute(
                    "INSERT INTO streams (key, ms, seq, value) VALUES (?1, ?2, 0, ?3)",
                    rusqlite::params![stream, ms + 1, value],
                )
                .unwrap();
                db.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                    rusqlite::params![last_key, id],
                )
                .unwrap();
                id
            }
        }
    }

    /// Deletes entry `id` of `stream` behind the app's back (a lost entry).
    pub async fn delete_entry(&self, stream: &str, id: &str) {
        match &self.raw {
            Raw::Redis(_) => {
                let _: i64 = self
                    .conn()
                    .await
                    .xdel(format!("{}{stream}", self.prefix), &[id])
                    .await
                    .unwrap();
            }
            Raw::Embedded { .. } => {
                let (ms, seq) = id.split_once('-').unwrap();
                let n = self
                    .sqlite()
                    .execute(
                        "DELETE FROM streams WHERE key = ?1 AND ms = ?2 AND seq = ?3",
                        rusqlite::params![
                            stream,
                            ms.parse::<i64>().unwrap(),
                            seq.parse::<i64>().unwrap()
                        ],
                    )
                    .unwrap();
                assert_eq!(n, 1, "entry {id} was there");
            }
        }
    }

    /// Deletes the single value `key` (a lock) behind the app's back.
    pub async fn delete_value(&self, key: &str) {
        match &self.raw {
            Raw::Redis(_) => {
                let _: i64 = self
                    .conn()
                    .await
                    .del(format!("{}{key}", self.prefix))
                    .await
                    .unwrap();
            }
            Raw::Embedded { .. } => {
                self.sqlite()
                    .execute("DELETE FROM kv WHERE key = ?1", [key])
                    .unwrap();
            }
        }
    }

    /// Every key under this test's prefix, sorted, without the prefix.
    /// The app's keys, without its prefix, sorted; without `setup:token`, which `serve`
    /// writes at start while no forge is configured (what a test adds is what it sees).
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn().await;
        let mut keys = scan(&mut conn, &self.prefix).await;
        keys.sort();
        keys.into_iter()
            .map(|k| k.trim_start_matches(&self.prefix).to_owned())
            .filter(|k| k != "setup:token")
            .collect()
    }

    pub async fn xlen(&self, stream: &str) -> usize {
        match &self.raw {
            Raw::Redis(_) => {
                let mut conn = self.conn().await;
                conn.xlen(format!("{}{stream}", self.prefix)).await.unwrap()
            }
            Raw::Embedded { .. } => self
                .sqlite()
                .query_row(
                    "SELECT COUNT(*) FROM streams WHERE key = ?1",
                    [stream],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap() as usize,
        }
    }

    /// A queued job on `acme/api` issue `number`, requested by GitHub user `requester`
    /// (`login`), stored with its indices and acknowledge task as intake stores one.
    pub async fn store_job(&self, requester: u64, login: &str, number: u64) -> Job {
        let job = issue_job(requester, login, number);
        self.store
            .accept(
                None,
                Some(&job),
                &repobox::task::Task::Acknowledge { job: job.id },
            )
            .await
            .unwrap();
        job
    }

    /// A signed-in dashboard session for the GitHub user `login` (numeric id `id`).
    pub async fn sign_in_github(&self, id: u64, login: &str) -> SignedIn {
        self.sign_in(&github_user(id, login)).await
    }

    /// A signed-in dashboard session for `user`, stored the way the sign-in routes
    /// store one (a `tower-sessions` record without its id under `session:<hash of the
    /// id>`), signed in now. Admin rights come from `--admins`, not from `user.admin`.
    pub async fn sign_in(&self, user: &repobox::web::dashboard::session::SessionUser) -> SignedIn {
        self.sign_in_at(user, time::OffsetDateTime::now_utc()).await
    }

    /// [`Self::sign_in`] with the sign-in `at` a given time (an old session).
    pub async fn sign_in_at(
        &self,
        user: &repobox::web::dashboard::session::SessionUser,
        at: time::OffsetDateTime,
    ) -> SignedIn {
        use repobox::web::dashboard::session::{SIGNED_IN_AT, storage_key};
        use tower_sessions::session::Id;
        let id = Id::default();
        let csrf = format!("{:032x}", rand::random::<u128>());
        let record = serde_json::json!({
            "data": {
                "user": user,
                "csrf": csrf,
                SIGNED_IN_AT: at.unix_timestamp(),
            },
            "expiry_date": time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        });
        let stored = self
            .store
            .save_session(
                &storage_key(&id.to_string()),
                &record.to_string(),
                Duration::from_secs(3600),
                true,
            )
            .await
            .unwrap();
        assert!(stored);
        SignedIn {
            cookie: format!("{}={id}", repobox::web::dashboard::session::COOKIE),
            csrf,
        }
    }

    pub async fn job(&self, id: &str) -> Job {
        let id: JobId = id.parse().expect("a job id");
        self.store.get_job(id).await.unwrap().expect("job stored")
    }

    /// Raw fields of a job hash (to check fields the `Job` type does not carry).
    pub async fn job_field(&self, id: &str, field: &str) -> Option<String> {
        match &self.raw {
            Raw::Redis(_) => {
                let mut conn = self.conn().await;
                conn.hget(format!("{}job:{{{id}}}", self.prefix), field)
                    .await
                    .unwrap()
            }
            Raw::Embedded { .. } => self
                .sqlite()
                .query_row(
                    "SELECT value FROM hashes WHERE key = ?1 AND field = ?2",
                    [format!("job:{{{id}}}"), field.to_owned()],
                    |r| r.get(0),
                )
                .ok(),
        }
    }

    /// Waits until `check` holds, polling; panics with `what` after 10 s.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the app and deletes its keys.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let Raw::Redis(client) = &self.raw else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys = scan(&mut conn, &self.prefix).await;
        for key in keys {
            let _: Result<(), _> = conn.del(key).await;
        }
    }
}

async fn into_response(r: reqwest::Response) -> Response {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Response { status, body }
}

/// Every key that starts with `prefix`.
/// A queued job on issue `number` of GitHub's `acme/api`, requested by `login`.
pub fn issue_job(requester: u64, login: &str, number: u64) -> Job {
    use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef, UserRef};
    Job::new(
        RepoRef {
            forge: ForgeKind::GitHub,
            full_name: "acme/api".into(),
            id: Some(1),
            installation_id: Some(2),
        },
        ThreadRef {
            kind: ThreadKind::Issue,
            number,
        },
        format!("Issue {number}"),
        repobox::job::TriggerKind::Comment,
        UserRef {
            id: requester,
            login: login.into(),
            is_bot: false,
        },
        "fix it".into(),
        time::OffsetDateTime::now_utc(),
    )
}

/// A dashboard user signed in with GitHub (admin rights come from `--admins`).
pub fn github_user(id: u64, login: &str) -> repobox::web::dashboard::session::SessionUser {
    repobox::web::dashboard::session::SessionUser {
        provider: "github".into(),
        id: id.to_string(),
        login: login.into(),
        name: None,
        admin: false,
    }
}

pub async fn scan(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    use futures::StreamExt;
    let Ok(iter) = conn.scan_match::<_, String>(format!("{prefix}*")).await else {
        return Vec::new();
    };
    let found: Vec<Result<String, redis::RedisError>> = iter.collect().await;
    found.into_iter().filter_map(Result::ok).collect()
}

/// Runs `sh -c script` in the sandbox `spec`, within `bound`.
pub async fn sandboxed_sh(
    spec: &repobox::sandbox::SandboxSpec,
    script: &str,
    bound: Duration,
) -> std::process::Output {
    tokio::time::timeout(bound, spec.command("sh", &["-c", script]).output())
        .await
        .expect("sandboxed command finished in time")
        .expect("sandboxed command started")
}
