//! Every real webhook payload in `tests/fixtures` is signed and sent through the real
//! router; a table says which ones queue a job (after setting a command where needed)
//! and which don't. The typed events are snapshot-tested.

mod common;

use std::collections::BTreeMap;

use common::{Options, TestApp, fixture_json, fixture_path};
use serde_json::{Value, json};

fn github_fixtures() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(fixture_path("github/webhooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .map(|name| {
            let event = name.split('.').next().unwrap().to_owned();
            (name, event)
        })
        .collect();
    out.sort();
    out
}

/// GitLab sends the event name in `X-Gitlab-Event`; the fixtures are named by kind.
fn gitlab_event_header(file: &str) -> &'static str {
    let stem = file.rsplit('/').next().unwrap();
    match stem.split(['.', '_']).next().unwrap() {
        "note" => "Note Hook",
        "issue" => "Issue Hook",
        "merge" | "group" | "service" => "Merge Request Hook",
        "push" => "Push Hook",
        "tag" => "Tag Push Hook",
        "pipeline" => "Pipeline Hook",
        "build" | "job" => "Job Hook",
        "wiki" => "Wiki Page Hook",
        "deployment" => "Deployment Hook",
        "release" => "Release Hook",
        "feature" => "Feature Flag Hook",
        "resource" => "Resource Access Token Hook",
        _ => "System Hook",
    }
}

fn gitlab_fixtures() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["gitlab/docs", "gitlab/go-gitlab"] {
        for e in std::fs::read_dir(fixture_path(dir)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn github_signature_test_vector_passes() {
    let v = fixture_json("github/webhook_signature_test_vector.json");
    let secret = v["secret"].as_str().unwrap();
    let payload = v["payload"].as_str().unwrap().as_bytes();
    let expected = v["X-Hub-Signature-256"].as_str().unwrap();
    assert_eq!(
        repobox::webhooks::verify::github_signature(secret, payload),
        expected
    );
    let secrets = vec![repobox::secret::Secret::new(secret)];
    assert!(repobox::webhooks::verify::github_signature_valid(
        &secrets,
        payload,
        Some(expected)
    ));
    assert!(!repobox::webhooks::verify::github_signature_valid(
        &secrets,
        b"Hello, World?",
        Some(expected)
    ));
}

#[test]
fn github_typed_events_snapshot() {
    let mut events = BTreeMap::new();
    for (file, event) in github_fixtures() {
        let body = std::fs::read(fixture_path(&format!("github/webhooks/{file}"))).unwrap();
        let parsed = repobox::forges::github::webhook::parse(&event, &body)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        events.insert(file, serde_json::to_value(parsed).unwrap());
    }
    insta::assert_json_snapshot!("github_events", events);
}

#[test]
fn gitlab_typed_events_snapshot() {
    let mut events = BTreeMap::new();
    for file in gitlab_fixtures() {
        let body = std::fs::read(fixture_path(&file)).unwrap();
        let parsed = repobox::forges::gitlab::webhook::parse(gitlab_event_header(&file), &body)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        events.insert(file, serde_json::to_value(parsed).unwrap());
    }
    insta::assert_json_snapshot!("gitlab_events", events);
}

/// What a delivery should lead to.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// 204, nothing stored.
    Nothing,
    /// 202 and a queued job of this thread kind and trigger.
    Job(&'static str, &'static str),
    /// 202 and an acknowledger task (no job).
    Task(&'static str),
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("fixture has no {pointer}")) = value;
}

#[tokio::test]
async fn every_fixture_through_the_router() {
    let app = TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await;

    // Unchanged, no real payload carries a command or the trigger label: nothing queues.
    for (file, event) in github_fixtures() {
        let body = std::fs::read(fixture_path(&format!("github/webhooks/{file}"))).unwrap();
        let r = app.github(&event, &format!("gh-{file}"), &body).await;
        assert_eq!(r.status, 204, "{file}: {:?}", r.body);
    }
    for file in gitlab_fixtures() {
        let body = std::fs::read(fixture_path(&file)).unwrap();
        let r = app
            .gitlab_raw(
                gitlab_event_header(&file),
                &format!("gl-{file}"),
                &body,
                Some(common::GITLAB_SECRET),
            )
            .await;
        assert_eq!(r.status, 204, "{file}: {:?}", r.body);
    }
    assert!(
        app.keys().await.iter().all(|k| k.ends_with("stream")),
        "unmodified payloads stored something: {:?}",
        app.keys().await
    );

    let cmd = json!("/repobox fix the flaky login test");
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Box<dyn Fn(&mut Value)>,
        Expect,
    );
    let github_cases: Vec<Case> = vec![
        (
            "issue comment with command",
            "issue_comment.created.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/comment/body", c.clone())
            }),
            Expect::Job("issue", "comment"),
        ),
        (
            "comment on a pull request (issue.pull_request set)",
            "issue_comment.created.2.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| {
                    set(v, "/comment/body", c.clone());
                    v["issue"]["pull_request"] = json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1"});
                }
            }),
            Expect::Job("pull_request", "comment"),
        ),
        (
            "comment with installation id",
            "issue_comment.created.4.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/comment/body", c.clone())
            }),
            Expect::Job("issue", "comment"),
        ),
        (
            "command inside a code fence",
            "issue_comment.created.3.json",
            "issue_comment",
            Box::new(|v| set(v, "/comment/body", json!("```\n/repobox fix\n```"))),
            Expect::Nothing,
        ),
        (
            "comment by a bot",
            "issue_comment.created.5.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| {
                    set(v, "/comment/body", c.clone());
                    set(v, "/sender/type", json!("Bot"));
                    set(v, "/comment/user/type", json!("Bot"));
                }
            }),
            Expect::Nothing,
        ),
        (
            "edit that adds a command",
            "issue_comment.edited.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/comment/body", c.clone())
            }),
            Expect::Job("issue", "comment"),
        ),
        (
            "edit that keeps an existing command",
            "issue_comment.edited.2.json",
            "issue_comment",
            Box::new(|v| {
                set(v, "/comment/body", json!("/repobox fix it\nthanks!"));
                set(v, "/changes/body/from", json!("/repobox fix it\nthanks"));
            }),
            Expect::Nothing,
        ),
        (
            "deleted comment with command",
            "issue_comment.deleted.json",
            "issue_comment",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/comment/body", c.clone())
            }),
            Expect::Nothing,
        ),
        (
            "help",
            "issue_comment.created.json",
            "issue_comment",
            Box::new(|v| set(v, "/comment/body", json!("/repobox help"))),
            Expect::Task("reply"),
        ),
        (
            "near miss",
            "issue_comment.created.json",
            "issue_comment",
            Box::new(|v| set(v, "/comment/body", json!("/repobox cancle"))),
            Expect::Task("reply"),
        ),
        (
            "cancel",
            "issue_comment.created.json",
            "issue_comment",
            Box::new(|v| set(v, "/comment/body", json!("/repobox cancel"))),
            Expect::Task("cancel"),
        ),
        (
            "retry",
            "issue_comment.created.json",
            "issue_comment",
            Box::new(|v| set(v, "/comment/body", json!("/repobox retry"))),
            Expect::Task("retry"),
        ),
        (
            "trigger label added",
            "issues.labeled.json",
            "issues",
            Box::new(|v| set(v, "/label/name", json!("repobox"))),
            Expect::Job("issue", "label"),
        ),
        (
            "trigger label removed",
            "issues.unlabeled.json",
            "issues",
            Box::new(|v| set(v, "/label/name", json!("repobox"))),
            Expect::Nothing,
        ),
        (
            "review comment with command",
            "pull_request_review_comment.created.json",
            "pull_request_review_comment",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/comment/body", c.clone())
            }),
            Expect::Job("pull_request", "comment"),
        ),
        (
            "review submitted with command",
            "pull_request_review.submitted.json",
            "pull_request_review",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/review/body", c.clone())
            }),
            Expect::Job("pull_request", "comment"),
        ),
        (
            "review dismissed with command",
            "pull_request_review.dismissed.json",
            "pull_request_review",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/review/body", c.clone())
            }),
            Expect::Nothing,
        ),
    ];
    let gitlab_cases: Vec<Case> = vec![
        (
            "note on an issue",
            "gitlab/docs/note_hook.issue.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/object_attributes/note", c.clone())
            }),
            Expect::Job("issue", "comment"),
        ),
        (
            "note on a merge request",
            "gitlab/docs/note_hook.merge_request.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/object_attributes/note", c.clone())
            }),
            Expect::Job("merge_request", "comment"),
        ),
        (
            "diff note on a merge request",
            "gitlab/go-gitlab/note_merge_request.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| {
                    set(v, "/object_attributes/note", c.clone());
                    v["object_attributes"]["type"] = json!("DiffNote");
                    v["object_attributes"]["position"] = json!({"new_path": "app/models/user.rb", "old_path": "app/models/user.rb", "new_line": 12, "old_line": null, "position_type": "text"});
                }
            }),
            Expect::Job("merge_request", "comment"),
        ),
        (
            "note on a commit",
            "gitlab/docs/note_hook.commit.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/object_attributes/note", c.clone())
            }),
            Expect::Nothing,
        ),
        (
            "note on a snippet",
            "gitlab/go-gitlab/note_snippet.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| set(v, "/object_attributes/note", c.clone())
            }),
            Expect::Nothing,
        ),
        (
            "note by a project bot user",
            "gitlab/go-gitlab/note_issue.json",
            "Note Hook",
            Box::new({
                let c = cmd.clone();
                move |v| {
                    set(v, "/object_attributes/note", c.clone());
                    set(v, "/user/username", json!("project_5_bot_4f2a"));
                }
            }),
            Expect::Nothing,
        ),
        (
            "trigger label added to an issue",
            "gitlab/docs/issue_hook.labels_changed.json",
            "Issue Hook",
            Box::new(|v| {
                v["changes"]["labels"]["current"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": 1, "title": "repobox"}))
            }),
            Expect::Job("issue", "label"),
        ),
        (
            "trigger label already present",
            "gitlab/go-gitlab/issue.json",
            "Issue Hook",
            Box::new(|v| {
                let label = json!({"id": 1, "title": "repobox"});
                v["changes"]["labels"]["previous"] = json!([label.clone()]);
                v["changes"]["labels"]["current"] = json!([label]);
            }),
            Expect::Nothing,
        ),
        (
            "help",
            "gitlab/docs/note_hook.issue.json",
            "Note Hook",
            Box::new(|v| set(v, "/object_attributes/note", json!("/repobox help"))),
            Expect::Task("reply"),
        ),
    ];

    let mut expected_jobs = 0;
    let mut expected_tasks = 0;
    for (forge, cases) in [("github", github_cases), ("gitlab", gitlab_cases)] {
        for (name, file, event, mutate, expect) in cases {
            let rel = if forge == "github" {
                format!("github/webhooks/{file}")
            } else {
                file.to_owned()
            };
            let mut payload = fixture_json(&rel);
            mutate(&mut payload);
            let before_tasks = app.xlen("intake:stream").await;
            let r = if forge == "github" {
                app.github_json(event, &payload).await
            } else {
                app.gitlab(event, &payload).await
            };
            match expect {
                Expect::Nothing => {
                    assert_eq!(r.status, 204, "{forge} {name}: {:?}", r.body);
                    assert_eq!(
                        app.xlen("intake:stream").await,
                        before_tasks,
                        "{forge} {name} queued a task"
                    );
                }
                Expect::Job(kind, trigger) => {
                    assert_eq!(r.status, 202, "{forge} {name}: {:?}", r.body);
                    assert_eq!(r.body["outcome"], "queued", "{forge} {name}");
                    let job = app.job(r.body["job"].as_str().unwrap()).await;
                    assert_eq!(job.repo.forge.as_str(), forge, "{name}");
                    assert_eq!(job.thread.kind.as_str(), kind, "{forge} {name}");
                    assert_eq!(job.trigger.as_str(), trigger, "{forge} {name}");
                    assert_eq!(job.status.as_str(), "queued");
                    if trigger == "comment" {
                        assert_eq!(
                            job.instructions, "fix the flaky login test",
                            "{forge} {name}"
                        );
                    }
                    if name.contains("diff note") || name.starts_with("review comment") {
                        assert!(job.review.is_some(), "{forge} {name}: review context kept");
                    }
                    expected_jobs += 1;
                    expected_tasks += 1;
                }
                Expect::Task(task) => {
                    assert_eq!(r.status, 202, "{forge} {name}: {:?}", r.body);
                    assert_eq!(r.body["task"], task, "{forge} {name}");
                    expected_tasks += 1;
                }
            }
            assert_eq!(
                app.xlen("intake:stream").await,
                expected_tasks,
                "{forge} {name}"
            );
        }
    }
    let jobs = app.store.recent_jobs(1000).await.unwrap();
    assert_eq!(
        jobs.len(),
        expected_jobs,
        "exactly one job per command, none for the rest"
    );
    app.stop().await;
}
