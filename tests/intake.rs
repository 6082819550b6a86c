//! Intake against a real Redis: what is stored for a command, for a repeated delivery,
//! and for every kind of bad input (which must store nothing).

mod common;

use common::{GITLAB_SECRET, Options, TestApp, fixture_json};
use redis::AsyncCommands;
use serde_json::json;

fn command_payload() -> serde_json::Value {
    let mut p = fixture_json("github/webhooks/issue_comment.created.json");
    p["comment"]["body"] =
        json!("/repobox fix the flaky login test\n\nThe test is in `tests/login.rs`.");
    p
}

/// Keys that exist before any delivery: the two streams with their consumer groups.
const EMPTY: [&str; 2] = ["intake:stream", "jobs:stream"];

#[tokio::test]
async fn a_command_queues_exactly_one_job() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&command_payload()).unwrap();
    let r = app.github("issue_comment", "delivery-1", &body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["job"].as_str().unwrap().to_owned();

    let mut expected: Vec<String> = vec![
        "delivery:github:delivery-1".into(),
        "intake:stream".into(),
        format!("job:{{{id}}}"),
        "jobs:active".into(),
        "jobs:all".into(),
        "jobs:by-repo:github:Codertocat/Hello-World".into(),
        "jobs:by-thread:github:Codertocat/Hello-World:issue:1".into(),
        "jobs:by-user:github:21031067".into(),
        "jobs:stream".into(),
    ];
    expected.sort();
    assert_eq!(app.keys().await, expected);

    let mut conn = app.conn().await;
    for index in [
        "jobs:active",
        "jobs:all",
        "jobs:by-repo:github:Codertocat/Hello-World",
        "jobs:by-user:github:21031067",
    ] {
        let ids: Vec<String> = conn
            .zrange(format!("{}{index}", app.prefix), 0, -1)
            .await
            .unwrap();
        assert_eq!(ids, vec![id.clone()], "{index}");
    }
    // One intake task naming the job; the runners' stream stays empty until the
    // acknowledger has authorized the requester.
    let entries: redis::streams::StreamRangeReply = conn
        .xrange_all(format!("{}intake:stream", app.prefix))
        .await
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let task: String = redis::from_redis_value(entries.ids[0].map["task"].clone()).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&task).unwrap(),
        json!({"task": "acknowledge", "job": id})
    );
    assert_eq!(app.xlen("jobs:stream").await, 0);

    let job = app.job(&id).await;
    assert_eq!(job.status.as_str(), "queued");
    assert_eq!(job.requester.login, "Codertocat");
    assert_eq!(
        job.instructions,
        "fix the flaky login test\n\nThe test is in `tests/login.rs`."
    );
    assert_eq!(job.delivery_id.as_deref(), Some("delivery-1"));
    assert_eq!(job.trigger_comment.map(|c| c.id), Some(492700400));
    let ttl: i64 = conn
        .ttl(format!("{}delivery:github:delivery-1", app.prefix))
        .await
        .unwrap();
    assert!(
        (259_000..=259_200).contains(&ttl),
        "delivery id kept for 72 h (SPEC 13), ttl {ttl}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_delivery_queues_nothing() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&command_payload()).unwrap();
    assert_eq!(
        app.github("issue_comment", "same-id", &body).await.status,
        202
    );
    let keys = app.keys().await;
    let again = app.github("issue_comment", "same-id", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["outcome"], "duplicate");
    assert_eq!(app.keys().await, keys);
    assert_eq!(app.xlen("intake:stream").await, 1);
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 1);
    // The same payload under a new delivery id is a new event.
    assert_eq!(
        app.github("issue_comment", "other-id", &body).await.status,
        202
    );
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 2);
    app.stop().await;
}

async fn assert_nothing_stored(app: &TestApp, case: &str) {
    assert_eq!(app.keys().await, EMPTY, "{case}: something was stored");
    assert_eq!(app.xlen("intake:stream").await, 0, "{case}");
}

#[tokio::test]
async fn bad_github_deliveries_are_refused_and_store_nothing() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&command_payload()).unwrap();

    let wrong = repobox::webhooks::verify::github_signature("not the secret", &body);
    let r = app
        .github_raw("issue_comment", Some("d1"), &body, Some(&wrong))
        .await;
    assert_eq!(r.status, 401, "wrong signature");
    assert_nothing_stored(&app, "wrong signature").await;

    let r = app
        .github_raw("issue_comment", Some("d2"), &body, None)
        .await;
    assert_eq!(r.status, 401, "missing signature");
    assert_nothing_stored(&app, "missing signature").await;

    // A signature over other bytes (tampered body).
    let sig = repobox::webhooks::verify::github_signature(common::GITHUB_SECRET, &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let r = app
        .github_raw("issue_comment", Some("d3"), &tampered, Some(&sig))
        .await;
    assert_eq!(r.status, 401, "tampered body");

    let r = app
        .github("issue_comment", "d4", b"{\"action\": \"created\", ")
        .await;
    assert_eq!(r.status, 400, "broken JSON");
    assert!(
        r.body["error"].as_str().unwrap().contains("issue_comment"),
        "{:?}",
        r.body
    );
    assert_nothing_stored(&app, "broken JSON").await;

    let r = app
        .github(
            "issue_comment",
            "d5",
            br#"{"action": "created", "issue": {"number": 1}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "JSON without the fields the event needs");
    assert_nothing_stored(&app, "incomplete JSON").await;

    let r = app.github("issue_comment", "d6", b"[1, 2, 3]").await;
    assert_eq!(r.status, 400, "JSON of the wrong shape");

    // Over 25 MiB: refused before the signature is even looked at.
    let mut huge = br#"{"action": "created", "pad": ""#.to_vec();
    huge.resize(25 * 1024 * 1024 + 10, b'a');
    huge.extend_from_slice(br#""}"#);
    let sig = repobox::webhooks::verify::github_signature(common::GITHUB_SECRET, &huge);
    let r = app
        .github_raw("issue_comment", Some("d7"), &huge, Some(&sig))
        .await;
    assert_eq!(r.status, 413, "oversized body");
    assert_nothing_stored(&app, "oversized body").await;

    // Events Repobox does not act on: 204, nothing stored, even with a command inside.
    let r = app.github("push", "d8", &body).await;
    assert_eq!(r.status, 204, "unknown event");
    let r = app
        .github(
            "ping",
            "d9",
            &serde_json::to_vec(&fixture_json("github/webhooks/ping.json")).unwrap(),
        )
        .await;
    assert_eq!(r.status, 204, "ping");
    assert_nothing_stored(&app, "ignored events").await;

    let metrics = app.get("/metrics").await.1;
    assert!(
        metrics.contains(
            r#"repobox_webhook_deliveries_total{forge="github",event="-",outcome="unauthorized"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"repobox_webhook_deliveries_total{forge="github",event="issue_comment",outcome="bad_request"} 3"#), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn webhooks_fail_closed_without_a_secret() {
    let app = TestApp::start(Options {
        github_secret: None,
        gitlab_secret: None,
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&command_payload()).unwrap();
    // Even a signature made with an empty secret is refused.
    let sig = repobox::webhooks::verify::github_signature("", &body);
    let r = app
        .github_raw("issue_comment", Some("d1"), &body, Some(&sig))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "webhook secret not configured");
    let note = serde_json::to_vec(&fixture_json("gitlab/docs/note_hook.issue.json")).unwrap();
    let r = app.gitlab_raw("Note Hook", "u1", &note, Some("")).await;
    assert_eq!(r.status, 401);
    assert_nothing_stored(&app, "no secret").await;
    app.stop().await;
}

#[tokio::test]
async fn bad_gitlab_deliveries_are_refused_and_store_nothing() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let mut note = fixture_json("gitlab/docs/note_hook.issue.json");
    note["object_attributes"]["note"] = json!("/repobox fix it");
    let body = serde_json::to_vec(&note).unwrap();
    assert_eq!(
        app.gitlab_raw("Note Hook", "u1", &body, Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        app.gitlab_raw("Note Hook", "u2", &body, None).await.status,
        401
    );
    assert_eq!(
        app.gitlab_raw("Note Hook", "u3", b"not json", Some(GITLAB_SECRET))
            .await
            .status,
        400
    );
    let r = app
        .gitlab_raw("Note Hook", "u4", br#"{"object_kind": "note", "object_attributes": {"id": 1, "note": "/repobox x", "noteable_type": "Issue"}}"#, Some(GITLAB_SECRET))
        .await;
    assert_eq!(r.status, 400, "note without user and project: {:?}", r.body);
    assert_nothing_stored(&app, "bad gitlab deliveries").await;

    // The good one, twice with the same event UUID.
    assert_eq!(
        app.gitlab_raw("Note Hook", "u5", &body, Some(GITLAB_SECRET))
            .await
            .status,
        202
    );
    assert_eq!(
        app.gitlab_raw("Note Hook", "u5", &body, Some(GITLAB_SECRET))
            .await
            .status,
        200
    );
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(app.get("/readyz").await.0, 200);
    let body = serde_json::to_vec(&command_payload()).unwrap();
    app.github("issue_comment", "m1", &body).await;
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"repobox_webhook_deliveries_total{forge="github",event="issue_comment",outcome="accepted"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"repobox_jobs_queued_total{forge="github"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("repobox_acknowledgement_latency_seconds"),
        "{metrics}"
    );
    app.stop().await;
}

/// SPEC section 14: confidential GitLab notes and issues start nothing (and store
/// nothing) unless the admin setting `allow_confidential` is `true`. The documented
/// note and issue payloads, each changed in one place (the note's text, the trigger
/// label, and one sign of confidentiality).
#[tokio::test]
async fn confidential_gitlab_notes_and_issues_store_nothing_unless_allowed() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let mut note = fixture_json("gitlab/docs/note_hook.issue.json");
    note["object_attributes"]["note"] = json!("/repobox fix the flaky login test");
    let mut internal = note.clone();
    internal["object_attributes"]["internal"] = json!(true);
    let mut typed = note.clone();
    typed["event_type"] = json!("confidential_note");
    let mut on_confidential_issue = note.clone();
    on_confidential_issue["issue"]["confidential"] = json!(true);
    let mut help = note.clone();
    help["object_attributes"]["note"] = json!("/repobox help");
    let mut issue = fixture_json("gitlab/docs/issue_hook.labels_changed.json");
    issue["changes"]["labels"]["current"][0]["title"] = json!("repobox");
    issue["object_attributes"]["confidential"] = json!(true);
    let cases = [
        ("Confidential Note Hook", &note, "header"),
        ("Note Hook", &internal, "internal note"),
        ("Note Hook", &typed, "event_type"),
        (
            "Note Hook",
            &on_confidential_issue,
            "note on a confidential issue",
        ),
        (
            "Confidential Note Hook",
            &help,
            "help on a confidential note",
        ),
        (
            "Confidential Issue Hook",
            &issue,
            "confidential issue labelled",
        ),
    ];
    for (i, (event, payload, case)) in cases.iter().enumerate() {
        let body = serde_json::to_vec(payload).unwrap();
        let r = app
            .gitlab_raw(event, &format!("c{i}"), &body, Some(GITLAB_SECRET))
            .await;
        assert_eq!(r.status, 204, "{case}: {:?}", r.body);
        assert_nothing_stored(&app, case).await;
    }

    // With the admin setting on, the same deliveries queue jobs (help queues a task).
    let mut conn = app.conn().await;
    let _: () = conn
        .hset(
            format!("{}settings", app.prefix),
            "allow_confidential",
            "true",
        )
        .await
        .unwrap();
    for (i, (event, payload, case)) in cases.iter().enumerate() {
        let body = serde_json::to_vec(payload).unwrap();
        let r = app
            .gitlab_raw(event, &format!("allowed-{i}"), &body, Some(GITLAB_SECRET))
            .await;
        assert_eq!(r.status, 202, "{case}: {:?}", r.body);
    }
    // Four notes and the label made jobs (intake stores each; one job per thread is
    // the runner's rule); help made a task.
    assert_eq!(app.store.recent_jobs(20).await.unwrap().len(), 5);
    app.stop().await;
}

/// SPEC section 14: a single word that is no command gets the help reply (a reply task
/// for the acknowledger), never a job; the keyword commands and real instructions are
/// unchanged.
#[tokio::test]
async fn a_single_word_that_is_no_command_gets_help_and_no_job() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;
    let send = |body: &'static str, delivery: &'static str| {
        let mut p = fixture_json("github/webhooks/issue_comment.created.json");
        p["comment"]["body"] = json!(body);
        let app = &app;
        async move {
            let body = serde_json::to_vec(&p).unwrap();
            app.github("issue_comment", delivery, &body).await
        }
    };
    for (i, word) in ["/repobox stop", "/repobox status"].into_iter().enumerate() {
        let r = send(word, ["w1", "w2"][i]).await;
        assert_eq!(r.status, 202, "{word}: {:?}", r.body);
        assert_eq!(r.body["task"], "reply", "{word}: {:?}", r.body);
        assert!(r.body.get("job").is_none(), "{word}: {:?}", r.body);
    }
    assert!(app.store.recent_jobs(10).await.unwrap().is_empty());
    assert_eq!(app.xlen("jobs:stream").await, 0);
    let r = send("/repobox cancel", "w3").await;
    assert_eq!(r.body["task"], "cancel", "{:?}", r.body);
    let r = send("/repobox fix the flaky login test", "w4").await;
    assert_eq!(r.body["outcome"], "queued", "{:?}", r.body);
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 1);
    app.stop().await;
}
