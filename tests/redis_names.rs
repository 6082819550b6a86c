//! Every Redis connection names itself `repobox:<role>:<purpose>` (SPEC section 13), and
//! names itself again after a reconnect: a connection killed by the server (`CLIENT
//! KILL`) and a whole Redis restart both come back under the same name (its own
//! `redis-server` on a free port, so `CLIENT LIST` shows only this test's connections);
//! and `repobox jobs show` follows a log on a reader of its own.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, start_redis, wait_for_redis};
use repobox::store::{JobRecords, RedisStore, Store};

/// `(id, name)` of every connection but the asking one.
async fn clients(port: u16) -> Vec<(String, String)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |line: &str, key: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_default()
            .to_owned()
    };
    text.lines()
        .filter(|l| !field(l, "cmd").starts_with("client|list"))
        .map(|l| (field(l, "id"), field(l, "name")))
        .collect()
}

/// Pings until the store answers (a command on a dropped connection fails once, then
/// the next one reconnects).
async fn ping_until_ok(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_are_named_by_role_and_purpose_and_renamed_after_a_reconnect() {
    let port = free_port();
    let mut redis = start_redis(port);
    wait_for_redis(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::with_role(&url, "test:names:", "serve").unwrap();
    assert!(
        clients(port).await.is_empty(),
        "connections are made lazily"
    );

    ping_until_ok(&store).await;
    let id: repobox::job::JobId = ulid::Ulid::new().to_string().parse().unwrap();
    let mut reader = store.log_reader(id).await.unwrap();
    assert_eq!(reader.last_id().await.unwrap(), "0-0");
    let before = clients(port).await;
    let names: Vec<&str> = before.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "one connection for commands, one for the reader: {before:?}"
    );
    assert!(names.contains(&"repobox:serve:commands"), "{before:?}");
    assert!(
        names.contains(&format!("repobox:serve:log-read:{id}").as_str()),
        "{before:?}"
    );

    // The server drops the commands connection: the next one is named again.
    let (old_id, _) = before
        .iter()
        .find(|(_, n)| n == "repobox:serve:commands")
        .unwrap()
        .clone();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&old_id)
        .query_async(&mut admin)
        .await
        .unwrap();
    drop(admin);
    ping_until_ok(&store).await;
    let after = clients(port).await;
    let commands: Vec<&(String, String)> = after
        .iter()
        .filter(|(_, n)| n == "repobox:serve:commands")
        .collect();
    assert_eq!(commands.len(), 1, "{after:?}");
    assert_ne!(commands[0].0, old_id, "a new connection, named again");

    // A restart of Redis itself: every connection comes back under its name.
    redis.kill().unwrap();
    redis.wait().unwrap();
    let mut redis = start_redis(port);
    wait_for_redis(port).await;
    ping_until_ok(&store).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.last_id().await.is_err() {
        assert!(Instant::now() < deadline, "the reader did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut names: Vec<String> = clients(port).await.into_iter().map(|(_, n)| n).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "repobox:serve:commands".to_owned(),
            format!("repobox:serve:log-read:{id}")
        ]
    );

    // Dropping the reader closes its connection.
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients(port).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the reader's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// `repobox jobs show` follows a running job's log through a reader of its own
/// (`repobox:cli:log-read:<id>`), prints the lines written meanwhile, and stops at the
/// final status.
#[tokio::test]
async fn jobs_show_follows_the_log_on_its_own_named_reader() {
    use common::{Options, TestApp};
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let job = app.store_job(7, "octocat", 7).await;
    app.store
        .set_job_fields(job.id, &[("status", "running".into())])
        .await
        .unwrap();
    app.store
        .append_log(job.id, &["first line".to_owned()])
        .await
        .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_repobox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REPOBOX_") {
            cmd.env_remove(key);
        }
    }
    let child = tokio::process::Command::from(cmd)
        .args(["jobs", "show", &job.id.to_string()])
        .env("REPOBOX_REDIS_URL", common::redis_url())
        .env("REPOBOX_REDIS_PREFIX", &app.prefix)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let name = format!("repobox:cli:log-read:{}", job.id);
    let conn = app.conn().await;
    app.wait_until("the CLI's reader connection", || {
        let mut conn = conn.clone();
        let name = name.clone();
        async move {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .unwrap();
            list.lines()
                .filter(|l| l.contains(&format!(" name={name} ")))
                .count()
                == 1
        }
    })
    .await;
    app.store
        .append_log(job.id, &["second line".to_owned()])
        .await
        .unwrap();
    app.store
        .set_job_fields(job.id, &[("status", "succeeded".into())])
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("jobs show stops at the final status")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let log = text.split("--- log ---").nth(1).unwrap();
    assert_eq!(
        log.trim().lines().collect::<Vec<_>>(),
        ["first line", "second line", "--- succeeded ---"],
        "{text}"
    );
    app.stop().await;
}
