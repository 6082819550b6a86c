//! First run without Redis (SPEC section 19), as a new user runs it: the `repobox`
//! binary started as `repobox all` in a fresh directory with no `REPOBOX_REDIS_URL`
//! keeps everything in `./data/repobox.db`. A signed command becomes a pull request; a
//! command accepted just before a SIGKILL is not lost; `repobox jobs list` reads the
//! same database while `all` runs; `serve` and `runner` alone refuse and name the
//! variable; `doctor` and `/readyz` name the backend.

mod common;

use std::process::Command;

use common::processes::{Launch, Role, post_github};
use common::world::*;
use common::{Backend, TEST_SECRET_KEY};
use repobox::job::JobStatus;

/// The binary with no Redis configured, in `dir`.
fn repobox(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    cmd.current_dir(dir)
        .env_remove("REPOBOX_REDIS_URL")
        .env_remove("REPOBOX_DATA_DIR")
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY);
    cmd
}

#[tokio::test]
async fn all_without_redis_turns_commands_into_pull_requests_and_loses_none_to_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The test reads the same database the process writes (as `repobox jobs` does).
    let w = world(Setup {
        runner: false,
        acknowledger: false,
        backend: Backend::Embedded(Some(data.clone())),
        ..Setup::default()
    })
    .await;
    let all = w.spawn(Role::All, dir.path(), &Launch::default()).await;
    let url = all.url.clone().unwrap();
    assert!(
        data.join("repobox.db").exists(),
        "the store is ./data/repobox.db"
    );

    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready (embedded store)");

    let command = |number: u64| {
        let url = url.clone();
        async move {
            let payload =
                issue_comment("/repobox fix the spelling", number, "Codertocat", 21031067);
            let delivery = ulid::Ulid::new().to_string();
            let (status, body) = post_github(&url, "issue_comment", &delivery, &payload).await;
            assert_eq!(status, 202, "{body}");
            (delivery, payload, body["job"].as_str().unwrap().to_owned())
        }
    };

    // A command becomes a pull request.
    let (delivery, payload, first) = command(1).await;
    let job = w.finished(&first).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let branch = job.branch.clone().expect("a branch");
    let pulls = w.github.created_pulls().await;
    assert_eq!(
        pulls
            .iter()
            .filter(|p| p["head"] == branch.as_str())
            .count(),
        1,
        "{pulls:#?}"
    );
    // The same delivery again adds nothing (the dedupe is in the database too).
    let (status, body) = post_github(&url, "issue_comment", &delivery, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "duplicate", "{body}");

    // A command accepted (202: committed) and then SIGKILL before the job has run.
    let (_, _, second) = command(2).await;
    all.kill();
    let job = w
        .wait(
            "the job after the restart",
            &second,
            |j| j.status.is_final(),
            90,
        )
        .await;
    assert!(all.kills() >= 1, "the process was killed");
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let branch = job.branch.clone().expect("a branch");
    let pulls = w.github.created_pulls().await;
    assert_eq!(
        pulls
            .iter()
            .filter(|p| p["head"] == branch.as_str())
            .count(),
        1,
        "one pull request for the job that outlived the kill: {pulls:#?}"
    );

    // `repobox jobs list` reads the database while `all` runs: both jobs, kept.
    let out = repobox(dir.path()).args(["jobs", "list"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for id in [&first, &second] {
        assert!(listed.contains(id.as_str()), "{id} listed: {listed}");
    }
    assert_eq!(listed.matches("succeeded").count(), 2, "{listed}");
    all.stop().await;
}

#[test]
fn serve_and_runner_without_redis_refuse_and_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "runner"] {
        let out = repobox(dir.path()).arg(command).output().unwrap();
        assert!(!out.status.success(), "`{command}` refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("REPOBOX_REDIS_URL") && stderr.contains("embedded store"),
            "`{command}`: {stderr}"
        );
    }
    assert!(
        !dir.path().join("data/repobox.db").exists(),
        "a refused start creates no database"
    );
}

#[test]
fn doctor_names_the_embedded_store_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = repobox(dir.path()).arg("doctor").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("embedded store ./data/repobox.db"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`serve` and `runner` need Redis"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data/repobox.db").exists(),
        "doctor stores nothing"
    );
}
