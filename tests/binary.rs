//! The `repobox` binary as an operator meets it: `keygen`, `doctor`, start-up errors
//! that name the variable, and `serve` acknowledging a command, logging no secret, and
//! stopping cleanly on SIGTERM.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::github::{FakeGitHub, INSTALLATION_TOKEN};
use common::{GITHUB_SECRET, fixture_json, free_port, redis_url};
use serde_json::json;

const API_KEY: &str = "sk-ant-api03-testkey-abcdefghijklmnop";

fn repobox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    // Nothing from the developer's environment leaks into these runs.
    for (key, _) in std::env::vars() {
        if key.starts_with("REPOBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn keygen_prints_a_32_byte_base64_key() {
    let out = repobox().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    assert_eq!(key.len(), 32);
    let again = repobox().arg("keygen").output().unwrap();
    assert_ne!(
        String::from_utf8(again.stdout).unwrap(),
        text,
        "a fresh key each time"
    );
}

#[test]
fn a_missing_required_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = repobox()
        .arg("serve")
        .current_dir(dir.path())
        .env("REPOBOX_GITHUB_APP_ID", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("REPOBOX_GITHUB_PRIVATE_KEY"), "{err}");
    let out = repobox()
        .arg("serve")
        .current_dir(dir.path())
        .env("REPOBOX_GITLAB_URL", "https://gitlab.example.com")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPOBOX_GITLAB_TOKEN"));
}

#[tokio::test]
async fn doctor_reports_each_check_and_prints_no_secret() {
    let fake = FakeGitHub::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(common::github::private_key_path()).unwrap();
    let run = |redis: String| {
        let mut cmd = repobox();
        cmd.arg("doctor")
            .current_dir(dir.path())
            .env("REPOBOX_REDIS_URL", redis)
            .env("REPOBOX_GITHUB_APP_ID", common::github::APP_ID.to_string())
            .env("REPOBOX_GITHUB_PRIVATE_KEY", &pem)
            .env("REPOBOX_GITHUB_API_URL", fake.uri())
            .env("REPOBOX_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
            .env("REPOBOX_ANTHROPIC_API_KEY", API_KEY)
            .env("REPOBOX_SANDBOX", "none");
        tokio::process::Command::from(cmd).output()
    };
    let ok = run(redis_url()).await.unwrap();
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("OK    redis"), "{text}");
    // The App name comes from GitHub's `GET /app` example, fetched with the App JWT.
    assert!(
        text.contains("OK    github app") && text.contains("octoapp"),
        "{text}"
    );
    assert!(text.contains("WARN  sandbox"), "{text}");
    // SPEC 15: a line per phase; without bwrap the setup phase's allowlist is not enforced.
    assert!(
        text.contains("WARN  network setup") && text.contains("allowlist is not enforced"),
        "{text}"
    );
    assert!(
        text.contains("OK    network agent          none: loopback only"),
        "{text}"
    );
    assert!(text.contains("SKIP  gitlab"), "{text}");
    let down = run(format!("redis://127.0.0.1:{}", free_port()))
        .await
        .unwrap();
    let text_down = String::from_utf8_lossy(&down.stdout).to_string();
    assert_eq!(down.status.code(), Some(1), "{text_down}");
    assert!(text_down.contains("FAIL  redis"), "{text_down}");
    for out in [&text, &text_down] {
        assert!(
            !out.contains(API_KEY) && !out.contains(GITHUB_SECRET) && !out.contains("PRIVATE KEY")
        );
    }
}

#[tokio::test]
async fn serve_acknowledges_logs_no_secret_and_stops_on_sigterm() {
    let fake = FakeGitHub::start(&[("Codertocat", "write")]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = format!("test:{}:", ulid::Ulid::new());
    let mut child = repobox()
        .arg("serve")
        .current_dir(dir.path())
        .env("REPOBOX_LISTEN", format!("127.0.0.1:{port}"))
        .env("REPOBOX_REDIS_URL", redis_url())
        .env("REPOBOX_REDIS_PREFIX", &prefix)
        .env("REPOBOX_GITHUB_APP_ID", common::github::APP_ID.to_string())
        .env(
            "REPOBOX_GITHUB_PRIVATE_KEY_PATH",
            common::github::private_key_path(),
        )
        .env("REPOBOX_GITHUB_API_URL", fake.uri())
        .env("REPOBOX_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
        .env("REPOBOX_SECRET_KEY", common::TEST_SECRET_KEY)
        .env("REPOBOX_ANTHROPIC_API_KEY", API_KEY)
        .env("REPOBOX_LOG", "debug")
        .env("REPOBOX_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut payload = fixture_json("github/webhooks/issue_comment.created.json");
    payload["comment"]["body"] = json!("/repobox fix it");
    let body = serde_json::to_vec(&payload).unwrap();
    let r = http
        .post(format!("{base}/webhooks/github"))
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", "bin-1")
        .header(
            "x-hub-signature-256",
            repobox::webhooks::verify::github_signature(GITHUB_SECRET, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    while fake.comments().await.is_empty() {
        assert!(Instant::now() < deadline, "no progress comment");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.path().join("data/secret.key").exists(),
        "serve generates no key: it was given one (only `all` generates)"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    let (status, logs) = exit;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{logs}"
    );
    assert!(logs.contains("job acknowledged and dispatched"), "{logs}");
    assert!(
        logs.contains("\"stopped\"") || logs.contains("stopped"),
        "{logs}"
    );
    for secret in [
        INSTALLATION_TOKEN,
        GITHUB_SECRET,
        API_KEY,
        "PRIVATE KEY",
        common::TEST_SECRET_KEY,
    ] {
        assert!(!logs.contains(secret), "the log holds a secret ({secret})");
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in common::scan(&mut conn, &prefix).await {
        let _: () = redis::AsyncCommands::del(&mut conn, key).await.unwrap();
    }
}
