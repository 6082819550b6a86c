//! The secret key at start-up (SPEC section 14, "Secret key"), with the real binary:
//! `serve` and `runner` refuse to start without `REPOBOX_SECRET_KEY` (only `all`
//! generates one), and every process refuses a key other than the one whose fingerprint
//! the Redis prefix holds, naming the problem without printing either key.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TEST_SECRET_KEY, free_port, redis_url};
use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Another valid key (base64 of 32 bytes).
const OTHER_KEY: &str = "b3RoZXItc2VjcmV0LWtleS0zMi1ieXRlcy1sb25nISE=";

fn repobox(dir: &std::path::Path, prefix: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REPOBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("REPOBOX_REDIS_URL", redis_url())
        .env("REPOBOX_REDIS_PREFIX", prefix)
        .env("REPOBOX_AGENT", "command")
        .env("REPOBOX_AGENT_COMMAND", "true")
        .env("REPOBOX_SANDBOX", "none")
        .env("REPOBOX_WORKDIR", dir.join("work"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a process that must refuse to start: its exit code and everything it printed.
async fn refused(mut cmd: Command) -> (Option<i32>, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the process exits by itself")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Starts `serve` (or `all`) and waits until it answers `/healthz`.
async fn started(mut cmd: Command, port: u16) -> Child {
    let mut child = cmd
        .env("REPOBOX_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..800 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && r.status().is_success()
        {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never became healthy");
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in common::scan(&mut conn, prefix).await {
        let _: () = conn.del(key).await.unwrap();
    }
}

fn prefix() -> String {
    format!("test:{}:", ulid::Ulid::new())
}

#[tokio::test]
async fn serve_and_runner_without_the_key_refuse_to_start_and_generate_none() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    for role in ["serve", "runner"] {
        let mut cmd = repobox(dir.path(), &prefix);
        cmd.arg(role)
            .env("REPOBOX_LISTEN", format!("127.0.0.1:{}", free_port()));
        let (code, text) = refused(cmd).await;
        assert_ne!(code, Some(0), "{role}: {text}");
        assert!(code.is_some(), "{role} exits, it is not killed: {text}");
        assert!(text.contains("REPOBOX_SECRET_KEY"), "{role}: {text}");
    }
    assert!(
        !dir.path().join("data/secret.key").exists(),
        "neither generated a key file"
    );
    // A key file from an earlier `all` is not enough either: `serve` needs the variable.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/secret.key"), TEST_SECRET_KEY).unwrap();
    let mut cmd = repobox(dir.path(), &prefix);
    cmd.arg("serve")
        .env("REPOBOX_LISTEN", format!("127.0.0.1:{}", free_port()));
    let (code, text) = refused(cmd).await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("REPOBOX_SECRET_KEY"), "{text}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_second_process_with_another_key_refuses_to_start_and_the_same_key_starts() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let mut first = repobox(dir.path(), &prefix);
    first
        .arg("serve")
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY);
    let mut first = started(first, free_port()).await;

    // The fingerprint is stored, and it is not the key.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: String = conn
        .get(format!("{prefix}key-fingerprint"))
        .await
        .expect("the first process stored the key's fingerprint");
    assert_eq!(stored.len(), 32, "{stored}");
    let key_hex = hex::encode(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, TEST_SECRET_KEY)
            .unwrap(),
    );
    assert!(!key_hex.contains(&stored) && !stored.contains(&key_hex[..16]));

    for role in ["serve", "runner", "all"] {
        let mut other = repobox(dir.path(), &prefix);
        other
            .arg(role)
            .env("REPOBOX_SECRET_KEY", OTHER_KEY)
            .env("REPOBOX_LISTEN", format!("127.0.0.1:{}", free_port()));
        let (code, text) = refused(other).await;
        assert!(code.is_some() && code != Some(0), "{role}: {code:?} {text}");
        assert!(
            text.contains("does not match") && text.contains("key-fingerprint"),
            "{role}: {text}"
        );
        assert!(
            !text.contains(OTHER_KEY) && !text.contains(TEST_SECRET_KEY),
            "{role} printed a key: {text}"
        );
    }
    let unchanged: String = conn.get(format!("{prefix}key-fingerprint")).await.unwrap();
    assert_eq!(unchanged, stored, "a refused process overwrites nothing");

    // Doctor reports the mismatch too (and the match).
    let mut doctor = repobox(dir.path(), &prefix);
    doctor.arg("doctor").env("REPOBOX_SECRET_KEY", OTHER_KEY);
    let (code, text) = refused(doctor).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  key fingerprint"), "{text}");
    assert!(!text.contains(OTHER_KEY), "{text}");
    let mut doctor = repobox(dir.path(), &prefix);
    doctor
        .arg("doctor")
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY);
    let (_, text) = refused(doctor).await;
    assert!(text.contains("OK    key fingerprint"), "{text}");

    // The same key starts, as a second serve beside the first and as a runner.
    let mut second = repobox(dir.path(), &prefix);
    second
        .arg("serve")
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY);
    let mut second = started(second, free_port()).await;
    let mut runner = repobox(dir.path(), &prefix);
    runner
        .arg("runner")
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY)
        .env("REPOBOX_LOG", "info")
        .stdout(Stdio::null());
    let mut runner = runner.spawn().unwrap();
    // The runner logs that it started once it is past the check.
    let mut lines = BufReader::new(runner.stderr.take().unwrap()).lines();
    let started_line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("runner started") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the runner with the right key starts");
    assert!(started_line, "the runner with the right key exited");
    for child in [&mut first, &mut second, &mut runner] {
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }
    cleanup(&prefix).await;
}

#[tokio::test]
async fn all_generates_a_key_file_and_stores_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let mut all = repobox(dir.path(), &prefix);
    all.arg("all");
    let mut all = started(all, free_port()).await;
    assert!(dir.path().join("data/secret.key").exists());
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<String> = conn.get(format!("{prefix}key-fingerprint")).await.unwrap();
    assert!(stored.is_some());
    // A serve with a key of its own is refused by that prefix.
    let mut other = repobox(dir.path(), &prefix);
    other
        .arg("serve")
        .env("REPOBOX_SECRET_KEY", OTHER_KEY)
        .env("REPOBOX_LISTEN", format!("127.0.0.1:{}", free_port()));
    let (code, text) = refused(other).await;
    assert!(code.is_some() && code != Some(0), "{text}");
    all.start_kill().unwrap();
    let _ = all.wait().await;
    cleanup(&prefix).await;
}
