//! Admin settings take effect without a restart: a value written to the `settings` hash
//! while `serve` and the runner run applies to the very next webhook or job (trigger,
//! label, allowed repositories, per-user limit, model and max turns).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::world::*;
use common::{Options, TestApp, fixture_json};
use repobox::agent::{Agent, AgentError, AgentOutcome, AgentRequest};
use repobox::job::JobStatus;
use repobox::settings::{AdminSettings, SaveError, SettingsSource};
use serde_json::json;

async fn intake_app() -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await
}

/// Sends a comment on Codertocat/Hello-World#1; returns the status and the job id.
async fn comment(app: &TestApp, body: &str) -> (u16, Option<String>) {
    let r = app
        .github_json(
            "issue_comment",
            &issue_comment(body, 1, "Codertocat", 21031067),
        )
        .await;
    (r.status, r.body["job"].as_str().map(str::to_owned))
}

async fn set(app: &TestApp, name: &str, value: &str) {
    app.store
        .set_settings(&[(name, value.to_owned())])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_trigger_word_applies_to_the_next_comment_and_the_old_one_stops() {
    let app = intake_app().await;
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202);

    set(&app, "trigger", "/bot").await;
    let (status, job) = comment(&app, "/repobox fix it").await;
    assert_eq!(
        (status, job),
        (204, None),
        "the old trigger no longer works"
    );
    let (status, job) = comment(&app, "/bot fix it please").await;
    assert_eq!(status, 202);
    let job = app.job(&job.unwrap()).await;
    assert_eq!(job.instructions, "fix it please");
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 2);

    // Back to the configured default once the setting is removed.
    app.store.delete_setting("trigger").await.unwrap();
    assert_eq!(comment(&app, "/bot fix it").await.0, 204);
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202);
    app.stop().await;
}

#[tokio::test]
async fn a_new_label_applies_to_the_next_label_event() {
    let app = intake_app().await;
    let mut labeled = fixture_json("github/webhooks/issues.labeled.json");
    labeled["label"]["name"] = json!("repobox");
    assert_eq!(app.github_json("issues", &labeled).await.status, 202);

    set(&app, "label", "ai-fix").await;
    assert_eq!(app.github_json("issues", &labeled).await.status, 204);
    labeled["label"]["name"] = json!("AI-fix");
    assert_eq!(app.github_json("issues", &labeled).await.status, 202);
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_repository_outside_the_allow_list_queues_nothing() {
    let app = intake_app().await;
    set(&app, "allowed_repos", "github:acme/*, gitlab:Codertocat/*").await;
    let keys = app.keys().await;
    let (status, job) = comment(&app, "/repobox fix it").await;
    assert_eq!((status, job), (204, None));
    let (status, _) = comment(&app, "/repobox help").await;
    assert_eq!(status, 204, "no task either");
    assert_eq!(app.keys().await, keys, "nothing stored");
    assert_eq!(app.xlen("intake:stream").await, 0);

    set(
        &app,
        "allowed_repos",
        "github:acme/*,github:codertocat/hello-world",
    )
    .await;
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202);
    set(&app, "allowed_repos", "github:Codertocat/*").await;
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202);
    set(&app, "allowed_repos", "").await;
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202, "empty = all");
    assert_eq!(app.store.recent_jobs(10).await.unwrap().len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_stored_value_falls_back_to_the_default_and_saving_one_is_refused() {
    let app = intake_app().await;
    // Written by hand: ignored, intake goes on with the configured trigger.
    set(&app, "trigger", "two words").await;
    assert_eq!(comment(&app, "/repobox fix it").await.0, 202);

    let defaults = AdminSettings {
        allowed_repos: Vec::new(),
        trigger: "/repobox".into(),
        label: "repobox".into(),
        model: "m".into(),
        per_user_limit: 2,
        max_turns: 50,
        allow_workflow_changes: false,
        allow_forks: false,
        allow_confidential: false,
        sandbox_allow: Default::default(),
        allowed_models: Vec::new(),
        monthly_cap_requester: None,
        monthly_cap_repo: None,
    };
    let source = SettingsSource::new(app.store.clone(), defaults);
    let err = source
        .save(&[
            ("label", "ok".to_owned()),
            ("per_user_limit", "0".to_owned()),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, SaveError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("per_user_limit"), "{err}");
    assert_eq!(
        app.store.get_settings().await.unwrap().get("label"),
        None,
        "all or nothing"
    );
    source
        .save(&[
            ("trigger", " /go ".to_owned()),
            ("allow_workflow_changes", "yes".to_owned()),
        ])
        .await
        .unwrap();
    let stored = app.store.get_settings().await.unwrap();
    assert_eq!(stored["trigger"], "/go");
    assert_eq!(stored["allow_workflow_changes"], "true");
    let current = source.load().await.unwrap();
    assert_eq!(current.trigger, "/go");
    assert!(current.allow_workflow_changes);
    assert!(source.reset("colour").await.is_err());
    source.reset("trigger").await.unwrap();
    assert_eq!(source.load().await.unwrap().trigger, "/repobox");
    app.stop().await;
}

/// Records what each run was asked (model, max turns), optionally waits for a `go` file
/// in its scratch directory, then edits the README.
#[derive(Default)]
struct Recorder {
    gated: bool,
    seen: Mutex<Vec<(Option<String>, Option<u32>)>>,
}

#[async_trait::async_trait]
impl Agent for Recorder {
    async fn run(&self, request: AgentRequest) -> Result<AgentOutcome, AgentError> {
        self.seen
            .lock()
            .unwrap()
            .push((request.model.clone(), request.max_turns));
        if self.gated {
            while !request.scratch_dir.join("go").exists() {
                if request.cancel.is_cancelled() {
                    return Err(AgentError::Stopped);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let readme = request.sandbox.work_tree.join("README.md");
        let text = std::fs::read_to_string(&readme).unwrap();
        std::fs::write(&readme, format!("{text}fixed\n")).unwrap();
        Ok(AgentOutcome {
            summary: "Fix it\n\nDone.".into(),
        })
    }
}

/// Waits up to 60 s (debug builds, cold git) for `check`.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Recorder {
    fn runs(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn last(&self) -> (Option<String>, Option<u32>) {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

#[tokio::test]
async fn model_and_max_turns_follow_the_admin_settings_below_repobox_yml() {
    let agent = Arc::new(Recorder::default());
    let w = world(Setup {
        custom_agent: Some(agent.clone()),
        extra: vec!["--model".into(), "configured-model".into()],
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix it").await;
    assert_eq!(w.finished(&id).await.status, JobStatus::Succeeded);
    assert_eq!(agent.last(), (Some("configured-model".into()), Some(50)));

    set(&w.app, "model", "admin-model").await;
    set(&w.app, "max_turns", "7").await;
    let id = w
        .comment_on("/repobox try again", 2, "Codertocat", 21031067)
        .await;
    assert_eq!(w.finished(&id).await.status, JobStatus::Succeeded);
    assert_eq!(agent.last(), (Some("admin-model".into()), Some(7)));
    w.app.stop().await;

    // `.repobox.yml` picks the model; its `max_turns` may lower the admin's, never
    // raise it (SPEC section 16).
    let agent = Arc::new(Recorder::default());
    let w = world(Setup {
        custom_agent: Some(agent.clone()),
        repobox_yml: Some("model: repo-model\nmax_turns: 500\n"),
        ..Setup::default()
    })
    .await;
    set(&w.app, "model", "admin-model").await;
    set(&w.app, "max_turns", "3").await;
    let id = w.comment("/repobox fix it").await;
    assert_eq!(w.finished(&id).await.status, JobStatus::Succeeded);
    assert_eq!(agent.last(), (Some("repo-model".into()), Some(3)));
    w.app.stop().await;
}

/// SPEC 16: with `allowed_models` set, `.repobox.yml` may pick one of them (or the
/// admin's own model) and nothing else; the job fails before any agent runs.
#[tokio::test]
async fn repobox_yml_may_pick_only_a_model_the_admin_allows() {
    for (model, allowed) in [
        ("claude-haiku-4-5", true),
        ("admin-model", true),
        ("claude-opus-4-5", false),
    ] {
        let agent = Arc::new(Recorder::default());
        let yml = format!("model: {model}\n");
        let w = world(Setup {
            custom_agent: Some(agent.clone()),
            repobox_yml: Some(&yml),
            ..Setup::default()
        })
        .await;
        set(&w.app, "model", "admin-model").await;
        set(
            &w.app,
            "allowed_models",
            "claude-haiku-4-5,claude-sonnet-4-5",
        )
        .await;
        let id = w.comment("/repobox fix it").await;
        let job = w.finished(&id).await;
        if allowed {
            assert_eq!(job.status, JobStatus::Succeeded, "{model}: {:?}", job.error);
            assert_eq!(agent.last().0.as_deref(), Some(model));
        } else {
            assert_eq!(job.status, JobStatus::Failed, "{model}");
            let error = job.error.unwrap();
            assert!(
                error.contains("model `claude-opus-4-5`, which this Repobox does not allow"),
                "{error}"
            );
            assert!(agent.seen.lock().unwrap().is_empty(), "no agent ran");
        }
        w.app.stop().await;
    }
}

#[tokio::test]
async fn the_per_user_limit_follows_the_admin_setting() {
    let agent = Arc::new(Recorder {
        gated: true,
        ..Recorder::default()
    });
    let w = world(Setup {
        custom_agent: Some(agent.clone()),
        ..Setup::default()
    })
    .await;
    set(&w.app, "per_user_limit", "1").await;
    let a = w
        .comment_on("/repobox job one", 1, "Codertocat", 21031067)
        .await;
    let b = w
        .comment_on("/repobox job two", 2, "Codertocat", 21031067)
        .await;
    until("one agent run", || agent.runs() == 1).await;
    // The other job waits while the first runs: one slot for this user. A runner took
    // its entry and put it in the user's waiting list (the signal that the limit held).
    let waiting = format!("{}waiting:user:github:21031067", w.app.prefix);
    w.app
        .wait_until("the second job deferred", || async {
            let mut conn = w.app.conn().await;
            let n: usize = redis::cmd("LLEN")
                .arg(&waiting)
                .query_async(&mut conn)
                .await
                .unwrap();
            n == 1
        })
        .await;
    assert_eq!(agent.runs(), 1);
    let first = if w.app.job(&a).await.status == JobStatus::Running {
        a.clone()
    } else {
        b.clone()
    };
    let second = if first == a { b.clone() } else { a.clone() };
    assert_eq!(w.app.job(&second).await.status, JobStatus::Queued);
    w.release(w.workdir.path(), &first);
    assert_eq!(w.finished(&first).await.status, JobStatus::Succeeded);
    until("the second job's run", || agent.runs() == 2).await;
    w.release(w.workdir.path(), &second);
    assert_eq!(w.finished(&second).await.status, JobStatus::Succeeded);

    // Raised to 2: the next two jobs of the same user run at once.
    set(&w.app, "per_user_limit", "2").await;
    let c = w
        .comment_on("/repobox job three", 3, "Codertocat", 21031067)
        .await;
    let d = w
        .comment_on("/repobox job four", 4, "Codertocat", 21031067)
        .await;
    until("two agents running at once", || agent.runs() == 4).await;
    for id in [&c, &d] {
        w.release(w.workdir.path(), id);
        assert_eq!(w.finished(id).await.status, JobStatus::Succeeded);
    }
    w.app.stop().await;
}

#[tokio::test]
async fn help_replies_name_the_trigger_in_force() {
    let w = world(Setup {
        runner: false,
        ..Setup::default()
    })
    .await;
    set(&w.app, "trigger", "/bot").await;
    w.comment("/bot help").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        if let Some((_, body)) = w.github.comments().await.into_iter().next() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no help reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reply.contains("/bot "), "{reply}");
    assert!(!reply.contains("/repobox"), "{reply}");
    w.app.stop().await;
}
