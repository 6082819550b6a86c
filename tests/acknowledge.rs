//! Acknowledgement against HTTP fakes of the GitHub and GitLab APIs: writers get `eyes`
//! and a progress comment and their job reaches the runners' stream; others get
//! `confused`, a `rejected` job and nothing for the runners. The JWT and the token
//! request are checked by the fake (it answers nothing else).

mod common;

use common::github::{FakeGitHub, INSTALLATION_TOKEN};
use common::gitlab::FakeGitLab;
use common::{Options, TestApp, fixture_json};
use redis::AsyncCommands;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

fn github_comment(body: &str) -> Value {
    let mut p = fixture_json("github/webhooks/issue_comment.created.json");
    p["comment"]["body"] = json!(body);
    p
}

async fn github_app(fake: &FakeGitHub) -> TestApp {
    TestApp::start(Options {
        args: fake.args(),
        ..Options::default()
    })
    .await
}

/// Waits until the acknowledger is done with the job (it leaves `queued`, or is dispatched).
async fn wait_acknowledged(app: &TestApp, id: &str) {
    app.wait_until("acknowledgement", || async {
        app.job_field(id, "dispatched_at").await.is_some()
            || app.job_field(id, "status").await.as_deref() != Some("queued")
    })
    .await;
}

async fn runner_stream_jobs(app: &TestApp) -> Vec<String> {
    let mut conn = app.conn().await;
    let entries: redis::streams::StreamRangeReply = conn
        .xrange_all(format!("{}jobs:stream", app.prefix))
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| redis::from_redis_value(e.map["job"].clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_writer_gets_eyes_a_progress_comment_and_a_dispatched_job() {
    let fake = FakeGitHub::start(&[("Codertocat", "write")]).await;
    let app = github_app(&fake).await;
    let r = app
        .github_json(
            "issue_comment",
            &github_comment("/repobox fix the flaky login test"),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;

    assert_eq!(
        fake.reactions().await,
        vec![(
            "/repos/Codertocat/Hello-World/issues/comments/492700400/reactions".to_owned(),
            "eyes".to_owned()
        )]
    );
    let comments = fake.comments().await;
    assert_eq!(comments.len(), 1, "exactly one progress comment");
    assert_eq!(
        comments[0].0,
        "/repos/Codertocat/Hello-World/issues/1/comments"
    );
    let body = &comments[0].1;
    assert!(
        body.starts_with(&format!(
            "<!-- repobox:job:{id} -->\n**Repobox** · job `{id}` · [live log](https://repobox.example.com/jobs/{id})"
        )),
        "the marker a re-run finds it by, then the header: {body}"
    );
    assert!(
        body.contains("- [x] Queued — requested by @Codertocat"),
        "{body}"
    );
    assert!(body.contains("- [ ] Open pull request"), "{body}");

    let job = app.job(&id).await;
    assert_eq!(job.status.as_str(), "queued", "waiting for a runner");
    assert_eq!(job.progress_comment_id, Some(9000));
    assert_eq!(runner_stream_jobs(&app).await, vec![id.clone()]);
    assert_eq!(
        app.xlen("intake:stream").await,
        0,
        "the intake task was acknowledged and removed"
    );

    // The payload named no installation: it was looked up, then a token minted for the
    // one repository with only the acknowledgement's permissions.
    let minted = fake.calls("POST", "/access_tokens").await;
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].0, "/app/installations/1/access_tokens");
    assert_eq!(
        minted[0].1,
        json!({"repositories": ["Hello-World"], "permissions": {"issues": "write", "pull_requests": "write", "metadata": "read"}})
    );
    assert_eq!(fake.calls("GET", "/installation").await.len(), 1);
    // Every repository call carried the installation token, never the JWT.
    for req in fake.requests().await {
        let auth = req
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if req.url.path().starts_with("/repos/") && !req.url.path().ends_with("/installation") {
            assert_eq!(
                auth,
                format!("Bearer {INSTALLATION_TOKEN}"),
                "{}",
                req.url.path()
            );
        }
    }

    // A second command reuses the cached token: no new mint.
    let r = app
        .github_json("issue_comment", &github_comment("/repobox and the docs"))
        .await;
    let second = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &second).await;
    assert_eq!(
        fake.calls("POST", "/access_tokens").await.len(),
        1,
        "token cached"
    );
    assert_eq!(runner_stream_jobs(&app).await, vec![id, second]);

    // Nothing in Redis holds the token.
    let mut conn = app.conn().await;
    for key in common::scan(&mut conn, &app.prefix).await {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&dump).contains(INSTALLATION_TOKEN),
            "{key} holds the token"
        );
    }
    let metrics = app.get("/metrics").await.1;
    assert!(
        metrics.contains("repobox_acknowledgement_latency_seconds_count 2"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_read_user_gets_confused_and_no_job_for_the_runners() {
    let fake = FakeGitHub::start(&[("Codertocat", "read")]).await;
    let app = github_app(&fake).await;
    let r = app
        .github_json(
            "issue_comment",
            &github_comment("/repobox delete everything"),
        )
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(
        fake.reactions().await,
        vec![(
            "/repos/Codertocat/Hello-World/issues/comments/492700400/reactions".to_owned(),
            "confused".to_owned()
        )]
    );
    assert!(
        fake.comments().await.is_empty(),
        "no progress comment for a rejected job"
    );
    let job = app.job(&id).await;
    assert_eq!(job.status.as_str(), "rejected");
    assert_eq!(job.error.as_deref(), Some("requester lacks write access"));
    assert!(runner_stream_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_non_collaborator_is_rejected_too() {
    // The permission endpoint answers 404 for this login.
    let fake = FakeGitHub::start(&[]).await;
    let app = github_app(&fake).await;
    let mut payload = fixture_json("github/webhooks/pull_request_review_comment.created.json");
    payload["comment"]["body"] = json!("/repobox rename this");
    let r = app
        .github_json("pull_request_review_comment", &payload)
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(app.job(&id).await.status.as_str(), "rejected");
    assert_eq!(
        fake.reactions().await,
        vec![(
            "/repos/Codertocat/Hello-World/pulls/comments/284312630/reactions".to_owned(),
            "confused".to_owned()
        )]
    );
    assert!(runner_stream_jobs(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn forge_errors_are_retried_and_the_job_is_not_lost() {
    let fake = FakeGitHub::start(&[("Codertocat", "admin")]).await;
    // The first two permission checks fail with 502, as GitHub sometimes does.
    Mock::given(method("GET"))
        .and(path_regex(r"/collaborators/.+/permission$"))
        .respond_with(ResponseTemplate::new(502).set_body_json(json!({"message": "Server Error"})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let app = github_app(&fake).await;
    let r = app
        .github_json("issue_comment", &github_comment("/repobox fix it"))
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(runner_stream_jobs(&app).await, vec![id.clone()]);
    assert_eq!(
        fake.calls("GET", "/permission").await.len(),
        3,
        "two failures, then success"
    );
    assert_eq!(app.job(&id).await.progress_comment_id, Some(9000));
    app.stop().await;
}

#[tokio::test]
async fn help_and_near_misses_get_a_reply() {
    let fake = FakeGitHub::start(&[("Codertocat", "write")]).await;
    let app = github_app(&fake).await;
    assert_eq!(
        app.github_json("issue_comment", &github_comment("/repobox help"))
            .await
            .status,
        202
    );
    app.wait_until("help reply", || async { fake.comments().await.len() == 1 })
        .await;
    assert_eq!(
        app.github_json("issue_comment", &github_comment("/repobox cancle"))
            .await
            .status,
        202
    );
    app.wait_until("near-miss reply", || async {
        fake.comments().await.len() == 2
    })
    .await;
    let comments = fake.comments().await;
    assert!(
        comments[0].1.contains("/repobox cancel"),
        "help lists cancel: {}",
        comments[0].1
    );
    assert!(
        comments[1].1.contains("Did you mean `/repobox cancel`?"),
        "{}",
        comments[1].1
    );
    assert!(
        app.store.recent_jobs(10).await.unwrap().is_empty(),
        "no job for help"
    );
    app.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_queued_job_and_retry_runs_it_again() {
    let fake = FakeGitHub::start(&[("Codertocat", "write")]).await;
    let app = github_app(&fake).await;
    let r = app
        .github_json(
            "issue_comment",
            &github_comment("/repobox fix the flaky login test"),
        )
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;

    app.github_json("issue_comment", &github_comment("/repobox cancel"))
        .await;
    app.wait_until("cancel", || async {
        app.job_field(&id, "status").await.as_deref() == Some("cancelled")
    })
    .await;
    app.wait_until("progress comment edited", || async {
        !fake
            .calls("PATCH", "/issues/comments/9000")
            .await
            .is_empty()
    })
    .await;
    let edits = fake.calls("PATCH", "/issues/comments/9000").await;
    let edited = edits.last().unwrap().1["body"].as_str().unwrap().to_owned();
    assert!(edited.contains("**Cancelled** by @Codertocat"), "{edited}");
    assert_eq!(
        app.job_field(&id, "cancel_requested").await.as_deref(),
        Some("1")
    );

    app.github_json("issue_comment", &github_comment("/repobox retry"))
        .await;
    app.wait_until("retry job", || async {
        app.store.recent_jobs(10).await.unwrap().len() == 2
    })
    .await;
    let retried = app.store.recent_jobs(10).await.unwrap()[0].to_string();
    assert_ne!(retried, id);
    wait_acknowledged(&app, &retried).await;
    let job = app.job(&retried).await;
    assert_eq!(job.instructions, "fix the flaky login test");
    assert_eq!(job.status.as_str(), "queued");
    // The cancelled job left the runners' stream with its cancel; the retry is in it.
    assert_eq!(runner_stream_jobs(&app).await, vec![retried]);
    app.stop().await;
}

#[tokio::test]
async fn cancel_and_retry_need_write_access() {
    let fake = FakeGitHub::start(&[("Codertocat", "read")]).await;
    let app = github_app(&fake).await;
    app.github_json("issue_comment", &github_comment("/repobox retry"))
        .await;
    app.wait_until("confused reaction", || async {
        fake.reactions().await.len() == 1
    })
    .await;
    assert_eq!(fake.reactions().await[0].1, "confused");
    assert!(fake.comments().await.is_empty());
    assert!(app.store.recent_jobs(10).await.unwrap().is_empty());
    app.stop().await;
}

fn gitlab_note(fixture: &str, body: &str, user_id: u64) -> Value {
    let mut p = fixture_json(fixture);
    p["object_attributes"]["note"] = json!(body);
    p["user"]["id"] = json!(user_id);
    p
}

#[tokio::test]
async fn gitlab_developer_gets_eyes_and_a_progress_note() {
    let fake = FakeGitLab::start(&[(1, 30)]).await;
    let app = TestApp::start(Options {
        args: fake.args(),
        ..Options::default()
    })
    .await;
    let r = app
        .gitlab(
            "Note Hook",
            &gitlab_note("gitlab/docs/note_hook.issue.json", "/repobox fix it", 1),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(
        fake.awards().await,
        vec![(
            "/api/v4/projects/5/issues/17/notes/1241/award_emoji".to_owned(),
            "eyes".to_owned()
        )]
    );
    let notes = fake.notes().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, "/api/v4/projects/5/issues/17/notes");
    assert!(
        notes[0].1.contains(&format!("job `{id}`")),
        "{}",
        notes[0].1
    );
    assert!(notes[0].1.contains("Open merge request"), "{}", notes[0].1);
    assert_eq!(app.job(&id).await.progress_comment_id, Some(7000));
    assert_eq!(runner_stream_jobs(&app).await, vec![id]);

    // On a merge request the note goes to the MR.
    let r = app
        .gitlab(
            "Note Hook",
            &gitlab_note(
                "gitlab/docs/note_hook.merge_request.json",
                "/repobox rebase it",
                1,
            ),
        )
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(
        fake.notes().await[1].0,
        "/api/v4/projects/5/merge_requests/1/notes"
    );
    app.stop().await;
}

#[tokio::test]
async fn gitlab_reporter_gets_confused_and_is_rejected() {
    let fake = FakeGitLab::start(&[(1, 20)]).await;
    let app = TestApp::start(Options {
        args: fake.args(),
        ..Options::default()
    })
    .await;
    let r = app
        .gitlab(
            "Note Hook",
            &gitlab_note("gitlab/docs/note_hook.issue.json", "/repobox fix it", 1),
        )
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(app.job(&id).await.status.as_str(), "rejected");
    assert_eq!(fake.awards().await[0].1, "confused");
    assert!(fake.notes().await.is_empty());
    assert!(runner_stream_jobs(&app).await.is_empty());
    // A non-member (404 from members/all) is rejected as well.
    let r = app
        .gitlab(
            "Note Hook",
            &gitlab_note("gitlab/docs/note_hook.issue.json", "/repobox fix it", 77),
        )
        .await;
    let id = r.body["job"].as_str().unwrap().to_owned();
    wait_acknowledged(&app, &id).await;
    assert_eq!(app.job(&id).await.status.as_str(), "rejected");
    app.stop().await;
}
