//! Status on the head (SPEC 17): every job that pushes shows itself on the commit it
//! pushed — a `Repobox` check run on GitHub, a `repobox` commit status on GitLab —
//! in progress right after the push and completed with the job's outcome, the job page
//! as details URL. Each check-run request body is checked against GitHub's REST
//! description (`fixtures/github/openapi-requests`). A create whose answer is lost (the
//! fake stores the run, then answers 502) is found by its `external_id`, not doubled.

mod common;

use common::fixture_path;
use common::github::Creation;
use common::world::*;
use repobox::job::JobStatus;
use serde_json::{Value, json};

/// Whether `value` fits `schema` (the subset GitHub's check-run bodies use: objects with
/// properties and required keys, no keys beyond them, strings with enums, arrays).
fn fits(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    match schema["type"].as_str() {
        Some("object") => {
            let object = value.as_object().ok_or(format!("{at}: not an object"))?;
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for key in object.keys() {
                let sub = properties
                    .get(key)
                    .ok_or(format!("{at}.{key}: not in the description"))?;
                fits(sub, &object[key], &format!("{at}.{key}"))?;
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !object.contains_key(key) {
                    return Err(format!("{at}.{key}: required"));
                }
            }
            Ok(())
        }
        Some("string") => {
            let s = value.as_str().ok_or(format!("{at}: not a string"))?;
            match schema["enum"].as_array() {
                Some(allowed) if !allowed.contains(&json!(s)) => {
                    Err(format!("{at}: `{s}` is not one of {allowed:?}"))
                }
                _ => Ok(()),
            }
        }
        Some("array") => value
            .as_array()
            .ok_or(format!("{at}: not an array"))?
            .iter()
            .try_for_each(|item| fits(&schema["items"], item, at)),
        _ => Ok(()),
    }
}

fn schema(name: &str) -> Value {
    let path = fixture_path(&format!("github/openapi-requests/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every check-run body sent, checked against the description; `(method, body)`.
async fn check_run_requests(w: &World) -> Vec<(String, Value)> {
    let (create, update) = (schema("checks__create"), schema("checks__update"));
    let mut sent = Vec::new();
    for r in w.github.requests().await {
        let path = r.url.path().to_owned();
        if !path.contains("/check-runs") || r.method.as_str() == "GET" {
            continue;
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let schema = if r.method.as_str() == "POST" {
            &create
        } else {
            &update
        };
        fits(schema, &body, "body").unwrap_or_else(|e| panic!("{} {path}: {e}", r.method));
        sent.push((r.method.to_string(), body));
    }
    sent
}

#[tokio::test]
async fn a_github_job_leaves_a_repobox_check_run_that_ends_success_on_its_commit() {
    let w = world(Setup::default()).await;
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let sha = job.pushed_sha.clone().unwrap();
    let runs = w.github.check_runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run["name"], "Repobox");
    assert_eq!(run["head_sha"], sha.as_str());
    assert_eq!(run["external_id"], id.as_str());
    assert_eq!(
        run["details_url"],
        format!("https://repobox.example.com/jobs/{id}").as_str()
    );
    assert_eq!(run["status"], "completed");
    assert_eq!(run["conclusion"], "success");
    assert_eq!(job.check_run_id, run["id"].as_u64());
    // Created in progress right after the push, then completed.
    let sent = check_run_requests(&w).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(
        (sent[0].0.as_str(), &sent[0].1["status"]),
        ("POST", &json!("in_progress"))
    );
    assert_eq!(
        (sent[1].0.as_str(), &sent[1].1["conclusion"]),
        ("PATCH", &json!("success"))
    );

    // A job that pushes nothing sets no status.
    let w2 = world(Setup {
        agent: "true",
        ..Setup::default()
    })
    .await;
    let id = w2.comment("/repobox do nothing").await;
    assert_eq!(w2.finished(&id).await.status, JobStatus::NoChanges);
    assert!(w2.github.check_runs.lock().unwrap().is_empty());
    w.app.stop().await;
    w2.app.stop().await;
}

#[tokio::test]
async fn a_lost_create_answer_is_found_by_the_job_id_not_doubled() {
    let w = world(Setup::default()).await;
    w.github.fail_after_creating(Creation::CheckRun, 1);
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let runs = w.github.check_runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "one run despite the lost answer: {runs:#?}");
    assert_eq!(runs[0]["conclusion"], "success");
    assert_eq!(runs[0]["external_id"], id.as_str());
    check_run_requests(&w).await;
    w.app.stop().await;
}

#[tokio::test]
async fn a_gitlab_job_sets_a_repobox_commit_status_running_then_success() {
    let w = world(Setup::default()).await;
    let id = w.gitlab_note("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let sha = job.pushed_sha.clone().unwrap();
    let statuses = w.gitlab.statuses.lock().unwrap().clone();
    let states: Vec<&str> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "success"], "{statuses:#?}");
    for s in &statuses {
        assert_eq!(s["sha"], sha.as_str());
        assert_eq!(s["name"], "repobox");
        assert_eq!(
            s["target_url"],
            format!("https://repobox.example.com/jobs/{id}").as_str()
        );
    }
    w.app.stop().await;
}
