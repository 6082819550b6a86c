//! Repobox as real processes for the crash tests: `repobox serve` and `repobox runner`
//! over one world's Redis prefix and forge fakes, each in a slot that starts it again
//! when it exits (as systemd or Kubernetes would), without its crash points the second
//! time. Every exit is recorded, so a test can tell that a crash point really fired.
//! Also `repobox all` on the embedded store ([`Role::All`]), started in its directory
//! with no `REPOBOX_REDIS_URL`, as a new user starts it.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::world::{FIXING_AGENT, World};
use super::{GITHUB_SECRET, GITLAB_SECRET, TEST_SECRET_KEY, free_port};

/// Which subcommand a slot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Runner,
    /// `repobox all` without Redis: the embedded store in `./data` of its directory.
    All,
}

impl Role {
    /// The role whose processes pass crash point `point` (`ack:…` or `runner:…`).
    pub fn of_point(point: &str) -> Role {
        if point.starts_with("ack:") {
            Role::Serve
        } else {
            Role::Runner
        }
    }
}

/// One supervised process.
pub struct Slot {
    pub role: Role,
    /// `serve`: its base URL.
    pub url: Option<String>,
    pub log: PathBuf,
    /// How each run ended, in order (a SIGABRT shows as signal 6).
    exits: Arc<Mutex<Vec<std::process::ExitStatus>>>,
    /// The running process's pid.
    pid: Arc<Mutex<Option<u32>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Slot {
    /// Runs that ended by SIGABRT (a crash point).
    pub fn aborts(&self) -> usize {
        self.exits
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.signal() == Some(libc_sigabrt()))
            .count()
    }

    /// Runs that ended by SIGKILL ([`Slot::kill`]).
    pub fn kills(&self) -> usize {
        self.exits
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.signal() == Some(rustix::process::Signal::KILL.as_raw()))
            .count()
    }

    /// SIGKILLs the running process (no cleanup at all); the slot starts it again.
    pub fn kill(&self) {
        let pid = self.pid.lock().unwrap().expect("a process runs");
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn libc_sigabrt() -> i32 {
    rustix::process::Signal::ABORT.as_raw()
}

/// What the processes are started with.
pub struct Launch<'a> {
    pub agent: &'a str,
    /// `REPOBOX_FAILPOINTS` for the first run of every slot of the point's role.
    pub failpoints: Option<&'a str>,
    pub extra: Vec<String>,
    /// A Redis of the test's own instead of the shared one.
    pub redis_url: Option<String>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            agent: FIXING_AGENT,
            failpoints: None,
            extra: Vec::new(),
            redis_url: None,
        }
    }
}

impl World {
    fn process_args(&self, workdir: &Path, launch: &Launch<'_>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--redis-prefix".into(),
            self.app.prefix.clone(),
            "--public-url".into(),
            "https://repobox.example.com".into(),
            "--secret-key".into(),
            TEST_SECRET_KEY.into(),
            "--github-webhook-secret".into(),
            GITHUB_SECRET.into(),
            "--gitlab-webhook-secret".into(),
            GITLAB_SECRET.into(),
            "--workdir".into(),
            workdir.to_str().unwrap().into(),
            "--agent".into(),
            "command".into(),
            "--agent-command".into(),
            launch.agent.into(),
            "--visibility-timeout".into(),
            "2s".into(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend(self.github.args());
        args.extend(self.gitlab.args());
        args.extend(launch.extra.iter().cloned());
        args
    }

    /// Starts a supervised `serve` or `runner` in `dir` (its log and work directory).
    pub async fn spawn(&self, role: Role, dir: &Path, launch: &Launch<'_>) -> Slot {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("process.log");
        let mut args = self.process_args(&dir.join("work"), launch);
        let url = match role {
            Role::Serve => {
                let port = free_port();
                args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
                args.push("serve".into());
                Some(format!("http://127.0.0.1:{port}"))
            }
            Role::Runner => {
                args.push("runner".into());
                None
            }
            Role::All => {
                let port = free_port();
                args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
                args.push("all".into());
                Some(format!("http://127.0.0.1:{port}"))
            }
        };
        let armed = launch.failpoints.filter(|p| Role::of_point(p) == role);
        let failpoints = armed.map(|p| format!("{p}=abort"));
        let exits: Arc<Mutex<Vec<std::process::ExitStatus>>> = Arc::default();
        let pid: Arc<Mutex<Option<u32>>> = Arc::default();
        let stop = CancellationToken::new();
        let task = {
            let (exits, pid, stop, log) = (exits.clone(), pid.clone(), stop.clone(), log.clone());
            let redis = match role {
                Role::All => None,
                _ => Some(launch.redis_url.clone().unwrap_or_else(super::redis_url)),
            };
            let cwd = dir.to_owned();
            tokio::spawn(async move {
                let mut failpoints = failpoints;
                loop {
                    let mut child = start(
                        &args,
                        redis.as_deref(),
                        failpoints.take().as_deref(),
                        &log,
                        &cwd,
                    );
                    *pid.lock().unwrap() = child.id();
                    tokio::select! {
                        status = child.wait() => {
                            exits.lock().unwrap().push(status.unwrap());
                        }
                        _ = stop.cancelled() => {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            return;
                        }
                    }
                }
            })
        };
        let slot = Slot {
            role,
            url,
            log,
            exits,
            pid,
            stop,
            task,
        };
        if let Some(url) = &slot.url {
            wait_healthy(url).await;
        }
        slot
    }
}

fn start(
    args: &[String],
    redis: Option<&str>,
    failpoints: Option<&str>,
    log: &Path,
    cwd: &Path,
) -> Child {
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("REPOBOX_REDIS_URL")
        .env_remove("REPOBOX_DATA_DIR")
        .env("REPOBOX_LOG", "debug")
        .env_remove("REPOBOX_FAILPOINTS")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    if let Some(points) = failpoints {
        cmd.env("REPOBOX_FAILPOINTS", points);
    }
    if let Some(url) = redis {
        cmd.env("REPOBOX_REDIS_URL", url);
    }
    cmd.spawn().expect("the repobox binary starts")
}

async fn wait_healthy(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became healthy");
}

/// Sends a signed GitHub delivery to a `serve` process; returns the status and body.
pub async fn post_github(url: &str, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let sig = repobox::webhooks::verify::github_signature(GITHUB_SECRET, &body);
    let r = reqwest::Client::new()
        .post(format!("{url}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .expect("delivery sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
