//! `repobox doctor`'s Redis durability checks (SPEC section 13) against real
//! `redis-server`s of the test's own, each started with the setting under test: a
//! server that evicts keys is a FAIL naming the policy and the fix (also when `CONFIG`
//! is disabled and only `INFO` tells), `noeviction` is OK, and no persistence at all is
//! a WARN.

mod common;

use std::process::{Child, Command, Stdio};

use common::{free_port, wait_for_redis};

/// A `redis-server` of this test, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with `args` on top of a bare configuration (no persistence unless
/// `args` turn it on; its files in a temporary directory).
async fn redis_with(args: &[&str]) -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/deps installs it)");
    wait_for_redis(port).await;
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// Runs `repobox doctor` against the server: its exit code and output. Everything but
/// Redis is configured to pass (or only warn), so the exit code is Redis's.
async fn doctor(server: &Server) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REPOBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("doctor")
        .current_dir(dir.path())
        .env(
            "REPOBOX_REDIS_URL",
            format!("redis://127.0.0.1:{}", server.port),
        )
        .env("REPOBOX_AGENT", "command")
        .env("REPOBOX_AGENT_COMMAND", "true")
        .env("REPOBOX_SANDBOX", "none");
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The output line of check `name` (`STATUS  name  detail`, names padded).
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.get(6..)
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|after| after.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
}

#[tokio::test]
async fn a_server_that_evicts_keys_fails_with_the_policy_and_the_fix() {
    let server = redis_with(&["--maxmemory-policy", "allkeys-lru"]).await;
    let (code, text) = doctor(&server).await;
    assert_eq!(code, Some(1), "{text}");
    let eviction = line(&text, "redis eviction");
    assert!(eviction.starts_with("FAIL"), "{text}");
    assert!(eviction.contains("allkeys-lru"), "{text}");
    assert!(
        eviction.contains("maxmemory-policy noeviction"),
        "the fix: {text}"
    );
    assert!(line(&text, "redis").starts_with("OK"), "PING works: {text}");
}

#[tokio::test]
async fn eviction_is_found_through_info_when_config_is_disabled() {
    let server = redis_with(&[
        "--maxmemory-policy",
        "volatile-ttl",
        "--rename-command",
        "CONFIG",
        "",
    ])
    .await;
    // The server really refuses CONFIG.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let refused: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    assert!(refused.is_err());

    let (code, text) = doctor(&server).await;
    assert_eq!(code, Some(1), "{text}");
    let eviction = line(&text, "redis eviction");
    assert!(eviction.starts_with("FAIL"), "{text}");
    assert!(
        eviction.contains("volatile-ttl") && eviction.contains("INFO"),
        "{text}"
    );
    assert!(
        line(&text, "redis persistence").starts_with("WARN"),
        "{text}"
    );
}

#[tokio::test]
async fn noeviction_with_aof_is_ok() {
    let server = redis_with(&["--maxmemory-policy", "noeviction", "--appendonly", "yes"]).await;
    let (code, text) = doctor(&server).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(line(&text, "redis eviction").starts_with("OK"), "{text}");
    let persistence = line(&text, "redis persistence");
    assert!(
        persistence.starts_with("OK") && persistence.contains("AOF"),
        "{text}"
    );
}

#[tokio::test]
async fn rdb_snapshots_count_as_persistence() {
    let server = redis_with(&["--save", "900", "1", "300", "10"]).await;
    let (code, text) = doctor(&server).await;
    assert_eq!(code, Some(0), "{text}");
    let persistence = line(&text, "redis persistence");
    assert!(
        persistence.starts_with("OK") && persistence.contains("save 900 1 300 10"),
        "{text}"
    );
}

#[tokio::test]
async fn no_persistence_at_all_is_a_warning_not_a_failure() {
    let server = redis_with(&[]).await;
    let (code, text) = doctor(&server).await;
    assert_eq!(code, Some(0), "a warning does not fail doctor: {text}");
    assert!(line(&text, "redis eviction").starts_with("OK"), "{text}");
    let persistence = line(&text, "redis persistence");
    assert!(persistence.starts_with("WARN"), "{text}");
    assert!(
        persistence.contains("AOF") && persistence.contains("appendonly yes"),
        "names what to turn on: {text}"
    );
}
