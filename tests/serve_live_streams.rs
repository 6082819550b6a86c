//! The real `repobox serve` binary and its live-log streams (SPEC §14): a session holds
//! at most 8 (the 9th is a 429), and SIGTERM ends them all and the process within 5 s,
//! however many job pages are open. Also what `serve` prints on a first run: the setup
//! URL with its token.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TEST_SECRET_KEY, free_port, redis_url};
use futures::StreamExt;
use repobox::store::{JobQueue, RedisStore, Sessions, SettingsStore};
use repobox::web::dashboard::session::{COOKIE, SIGNED_IN_AT, storage_key};

#[tokio::test]
async fn sigterm_ends_every_live_stream_and_a_session_holds_at_most_eight() {
    let port = free_port();
    let prefix = format!("test:{}:", ulid::Ulid::new());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REPOBOX_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .arg("serve")
        .current_dir(dir.path())
        .env("REPOBOX_REDIS_URL", redis_url())
        .env("REPOBOX_REDIS_PREFIX", &prefix)
        .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY)
        .env("REPOBOX_LISTEN", format!("127.0.0.1:{port}"))
        .env("REPOBOX_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A first run: the log hands the operator the setup URL with the install's token.
    let store = RedisStore::new(&redis_url(), &prefix).unwrap();
    let token = store.setup_token("none").await.unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains(&format!("{base}/setup?token={token}")),
        "{logs}"
    );

    // A signed-in session and a job it watches (queued: its stream stays open).
    let job = common::issue_job(101, "alice", 1);
    // Stored with a task that leaves it alone (an acknowledgement would fail it at once:
    // no forge is configured), so it stays queued and its streams stay open.
    let reply = repobox::task::Task::Reply {
        origin: repobox::task::Origin {
            repo: job.repo.clone(),
            thread: job.thread,
            thread_title: job.thread_title.clone(),
            comment: None,
            requester: job.requester.clone(),
        },
        reply: repobox::task::ReplyKind::Help,
    };
    store.accept(None, Some(&job), &reply).await.unwrap();
    let cookie_value = tower_sessions::session::Id::default().to_string();
    let record = serde_json::json!({
        "data": {
            "user": {"provider": "github", "id": "101", "login": "alice", "name": null, "admin": false},
            "csrf": "0123456789abcdef0123456789abcdef",
            SIGNED_IN_AT: time::OffsetDateTime::now_utc().unix_timestamp(),
        },
        "expiry_date": time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    });
    assert!(
        store
            .save_session(
                &storage_key(&cookie_value),
                &record.to_string(),
                Duration::from_secs(3600),
                true,
            )
            .await
            .unwrap()
    );
    let cookie = format!("{COOKIE}={cookie_value}");
    let open = || {
        http.get(format!("{base}/jobs/{}/events", job.id))
            .header("cookie", &cookie)
            .send()
    };
    let mut streams = Vec::new();
    for n in 0..8 {
        let r = open().await.unwrap();
        assert_eq!(r.status(), 200, "stream {n}");
        let mut events = r.bytes_stream();
        // The first event (the job's status) arrived: the stream is live.
        assert!(events.next().await.is_some());
        streams.push(events);
    }
    let ninth = open().await.unwrap();
    assert_eq!(
        ninth.status(),
        429,
        "a ninth stream in one session: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(ninth.headers().contains_key("retry-after"));

    let stopping = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for (n, mut events) in streams.into_iter().enumerate() {
        // Each stream ends (or its connection closes): nothing holds it open.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = events.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "stream {n} still open 5 s after SIGTERM");
    }
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "serve still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in common::scan(&mut conn, &prefix).await {
        let _: () = redis::AsyncCommands::del(&mut conn, key).await.unwrap();
    }
}
