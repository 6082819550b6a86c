//! Repo + prompt jobs (SPEC 18): `POST /api/v1/jobs` and the dashboard form start a job
//! that names no issue or pull request. It branches from the default branch as
//! `repobox/job-<first 8 of the id>-<slug of the prompt>`, opens a PR, and writes
//! nothing on any thread: its progress is on the dashboard only. With the admin API token
//! there is no forge requester (no access check, nobody credited); with a session the
//! signed-in account's write access is checked as for a comment, and the post needs the
//! session's CSRF token.

mod common;

use common::github_user;
use common::world::*;
use repobox::job::{JobStatus, TriggerKind};
use serde_json::{Value, json};

const TOKEN: &str = "repo-prompt-api-token-0123456789";

async fn post(
    w: &World,
    auth: Option<&str>,
    csrf: Option<(&str, &str)>,
    body: Value,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", w.app.url))
        .json(&body);
    if let Some(token) = auth {
        r = r.bearer_auth(token);
    }
    if let Some((cookie, token)) = csrf {
        r = r.header("cookie", cookie).header("x-csrf-token", token);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_repo_and_a_prompt_become_a_pr_with_nothing_on_any_thread() {
    let w = world(Setup {
        extra: vec!["--api-token".into(), TOKEN.into()],
        ..Setup::default()
    })
    .await;
    let (status, body) = post(
        &w,
        Some(TOKEN),
        None,
        json!({"repo": "github:Codertocat/Hello-World", "prompt": "Fix the README heading\nIt says Wrold."}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "queued");
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/jobs/{id}"))
    );
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.trigger, TriggerKind::Api);
    assert!(job.thread.is_none());

    let branch = format!(
        "repobox/job-{}-fix-the-readme-heading",
        &id.to_lowercase()[..8]
    );
    assert_eq!(job.branch.as_deref(), Some(branch.as_str()));
    assert!(w.remote_ref(REPO_GIT, &branch).is_some(), "pushed");
    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"], branch.as_str());
    assert_eq!(pulls[0]["base"], "main");
    let pr_body = pulls[0]["body"].as_str().unwrap();
    assert!(!pr_body.contains("Closes #"), "{pr_body}");
    assert!(
        pr_body.contains("Requested by the API token in the dashboard"),
        "{pr_body}"
    );
    // Nothing on any thread: no comment, no reaction, no edit.
    assert!(w.github.comments().await.is_empty());
    assert!(w.github.reactions().await.is_empty());
    assert!(
        w.github
            .calls("PATCH", "/issues/comments/")
            .await
            .is_empty()
    );
    // Nobody is credited for the API token.
    let message = w.remote_git(
        REPO_GIT,
        &["log", "-1", "--format=%B", &format!("refs/heads/{branch}")],
    );
    assert!(!message.contains("Co-authored-by"), "{message}");
    assert!(message.contains(&format!("Repobox-Job: {id}")), "{message}");
    w.app.stop().await;
}

#[tokio::test]
async fn the_api_refuses_what_it_cannot_run_and_a_session_needs_csrf_and_write_access() {
    let w = world(Setup {
        extra: vec!["--api-token".into(), TOKEN.into()],
        ..Setup::default()
    })
    .await;
    for (body, why) in [
        (
            json!({"repo": "Codertocat/Hello-World", "prompt": "x y"}),
            "forge:owner/name",
        ),
        (
            json!({"repo": "github:Codertocat", "prompt": "x y"}),
            "owner/name",
        ),
        (
            json!({"repo": "github:Codertocat/Hello-World", "prompt": "  "}),
            "Write what",
        ),
        (
            json!({"repo": "github:Codertocat/Hello-World", "prompt": "x", "kind": "merge_request", "number": 2}),
            "pull request",
        ),
        (
            json!({"repo": "github:Codertocat/Hello-World", "prompt": "x", "provider": "p1"}),
            "provider",
        ),
        (json!("not an object"), "invalid"),
    ] {
        let (status, answer) = post(&w, Some(TOKEN), None, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{body}: {error}");
    }
    let (status, _) = post(&w, Some("wrong-token"), None, json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = post(&w, None, None, json!({})).await;
    assert_eq!(status, 401);

    // A session: the CSRF token is required, and the job runs as the signed-in user.
    let cat = w.app.sign_in(&github_user(21031067, "Codertocat")).await;
    let ask = json!({"repo": "github:Codertocat/Hello-World", "prompt": "Fix the README heading"});
    let (status, _) = post(&w, None, Some((&cat.cookie, "wrong")), ask.clone()).await;
    assert_eq!(status, 403);
    let (status, body) = post(&w, None, Some((&cat.cookie, &cat.csrf)), ask.clone()).await;
    assert_eq!(status, 201, "{body}");
    let job = w.finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.trigger, TriggerKind::Dashboard);
    assert_eq!(job.requester.login, "Codertocat");
    // Someone who may only read gets the job refused by the acknowledger.
    w.github.set_permission("reader", Some("read"));
    let reader = w.app.sign_in(&github_user(555, "reader")).await;
    let (status, body) = post(&w, None, Some((&reader.cookie, &reader.csrf)), ask).await;
    assert_eq!(status, 201, "{body}");
    let job = w.finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Rejected);
    assert!(job.error.unwrap_or_default().contains("write access"));
    assert!(
        w.github.comments().await.is_empty(),
        "no thread was written to"
    );
    w.app.stop().await;
}
