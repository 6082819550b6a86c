//! Redis goes away and comes back: intake answers 503 while it is gone (never a 2xx for
//! an event it did not store) and queues again once it is back, without a restart of
//! Repobox; the acknowledger recovers its consumer group too. Uses its own
//! `redis-server` on a free port, killed with SIGKILL.

mod common;

use common::{Options, TestApp, fixture_json, free_port, start_redis, wait_for_redis};
use serde_json::json;

#[tokio::test]
async fn intake_answers_503_while_redis_is_down_and_recovers() {
    let port = free_port();
    let mut redis = start_redis(port);
    wait_for_redis(port).await;
    let app = TestApp::start(Options {
        redis_url: format!("redis://127.0.0.1:{port}"),
        ..Options::default()
    })
    .await;
    let mut payload = fixture_json("github/webhooks/issue_comment.created.json");
    payload["comment"]["body"] = json!("/repobox fix it");
    let body = serde_json::to_vec(&payload).unwrap();
    assert_eq!(
        app.github("issue_comment", "before", &body).await.status,
        202
    );

    redis.kill().unwrap();
    redis.wait().unwrap();
    let r = app.github("issue_comment", "during", &body).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["outcome"], "unavailable");
    assert_eq!(app.get("/readyz").await.0, 503);
    assert_eq!(
        app.get("/healthz").await.0,
        200,
        "the process itself is alive"
    );

    let mut redis = start_redis(port);
    wait_for_redis(port).await;
    app.wait_until("readiness after Redis is back", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    // The delivery GitHub redelivers after the 503 is stored now.
    let r = app.github("issue_comment", "during", &body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["job"].as_str().unwrap().to_owned();
    // The acknowledger got its consumer group back and handled the task: with no GitHub
    // App configured it records why the job cannot run.
    app.wait_until("the acknowledger to handle the job", || async {
        app.job_field(&id, "status").await.as_deref() == Some("failed")
    })
    .await;
    assert_eq!(
        app.job_field(&id, "error").await.as_deref(),
        Some("github is not configured on this Repobox")
    );
    app.stop().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}
