//! Jobs run with a user's personal provider (SPEC 18): a dashboard user adds a GitHub
//! token of their own on `/settings`, names it in `POST /api/v1/jobs`, and the job's
//! forge calls, clone, push and pull request go out with that token (as its user), not
//! the App's: no installation token is minted, every push to the git server carries the
//! personal token, and the pull request is created with it. A session may name only its
//! own providers; a token GitHub no longer knows fails the job with a message that
//! names the provider, and the token is in no log, no stored value, no job log.

mod common;

use common::SignedIn;
use common::github::{INSTALLATION_TOKEN, PERSONAL_LOGIN, PERSONAL_TOKEN, PERSONAL_USER_ID};
use common::world::*;
use repobox::job::JobStatus;
use serde_json::{Value, json};

/// Adds a personal GitHub provider (at the fake's URL) through the settings form.
async fn add_provider(w: &World, who: &SignedIn, label: &str, token: &str) -> String {
    add_provider_of(w, who, "github", &w.github.server.uri(), label, token).await
}

/// Adds a personal provider through the settings form (the route seals it); its id.
async fn add_provider_of(
    w: &World,
    who: &SignedIn,
    kind: &str,
    url: &str,
    label: &str,
    token: &str,
) -> String {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &who.csrf)
        .append_pair("kind", kind)
        .append_pair("url", url)
        .append_pair("label", label)
        .append_pair("token", token)
        .finish();
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/settings/providers", w.app.url))
        .header("cookie", &who.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/providers", w.app.url))
        .header("cookie", &who.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .unwrap_or_else(|| panic!("{label} listed: {listed}"));
    assert!(
        !mine["token"].as_str().unwrap().contains(&token[8..]),
        "masked"
    );
    mine["id"].as_str().unwrap().to_owned()
}

async fn start_job(w: &World, who: &SignedIn, provider: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", w.app.url))
        .header("cookie", &who.cookie)
        .header("x-csrf-token", &who.csrf)
        .json(&json!({
            "repo": format!("github:{REPO}"),
            "prompt": "Fix the README heading",
            "provider": provider,
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn personal_world() -> World {
    let w = world(Setup::default()).await;
    w.github
        .serve_personal_user(&[REPO], &["octo-org/read-only"])
        .await;
    w.github_git.accept(PERSONAL_TOKEN);
    w
}

#[tokio::test]
async fn a_job_naming_a_personal_provider_is_cloned_pushed_and_opened_with_its_token() {
    let w = personal_world().await;
    let octo = w.app.sign_in_github(PERSONAL_USER_ID, PERSONAL_LOGIN).await;
    let provider = add_provider(&w, &octo, "Octo's laptop token", PERSONAL_TOKEN).await;

    let (status, body) = start_job(&w, &octo, &provider).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.provider.map(|p| p.to_string()), Some(provider));

    // The pull request was opened with the personal token, and nothing was done as
    // the App: no installation token was minted at all.
    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    assert_eq!(w.github.tokens_of("POST", "/pulls").await, [PERSONAL_TOKEN]);
    let as_app: Vec<String> = w
        .github
        .requests()
        .await
        .iter()
        .filter(|r| {
            r.url.path().ends_with("/access_tokens")
                || r.headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some(&format!("Bearer {INSTALLATION_TOKEN}"))
        })
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert!(as_app.is_empty(), "nothing done as the App: {as_app:#?}");
    // Clone and push carried the personal token.
    let git = w.github_git.requests();
    let pushes: Vec<_> = git
        .iter()
        .filter(|r| r.uri.contains("git-receive-pack"))
        .collect();
    assert!(!pushes.is_empty(), "pushed: {git:#?}");
    for r in git.iter().filter(|r| r.authorized) {
        assert_eq!(r.password.as_deref(), Some(PERSONAL_TOKEN), "{r:?}");
    }
    let branch = job.branch.clone().expect("a branch");
    assert!(w.remote_ref(REPO_GIT, &branch).is_some(), "pushed {branch}");

    // The token is nowhere: logs, work directory, store, git URLs, the job's log.
    w.assert_no_token_leak(&[PERSONAL_TOKEN]).await;
    let log = w
        .app
        .store
        .read_log(job.id, "0", 10_000, None)
        .await
        .unwrap();
    assert!(!log.is_empty());
    assert!(log.iter().all(|l| !l.line.contains(PERSONAL_TOKEN)));
}

#[tokio::test]
async fn a_session_may_name_only_its_own_providers() {
    let w = personal_world().await;
    let octo = w.app.sign_in_github(PERSONAL_USER_ID, PERSONAL_LOGIN).await;
    let provider = add_provider(&w, &octo, "Octo's token", PERSONAL_TOKEN).await;
    let other = w.app.sign_in_github(21031067, "Codertocat").await;
    let (status, body) = start_job(&w, &other, &provider).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no such provider of yours"),
        "{body}"
    );
    let (status, body) = start_job(&w, &other, "not-a-provider-id").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        w.app.store.recent_jobs(10).await.unwrap().is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn a_revoked_token_fails_the_job_naming_the_provider_not_the_token() {
    let w = personal_world().await;
    let octo = w.app.sign_in_github(PERSONAL_USER_ID, PERSONAL_LOGIN).await;
    let revoked = "ghp_RevokedTokenOfOcto000000000000000wxyz";
    let provider = add_provider(&w, &octo, "Old token", revoked).await;
    let (status, body) = start_job(&w, &octo, &provider).await;
    assert_eq!(status, 201, "{body}");
    let job = w.finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.clone().unwrap_or_default();
    assert!(error.contains("“Old token”"), "{error}");
    assert!(error.contains("revoked"), "{error}");
    assert!(
        !error.contains(revoked) && !error.contains("wxyz"),
        "{error}"
    );
    assert!(w.github.created_pulls().await.is_empty());
    assert!(
        !common::captured_logs().contains(revoked),
        "the token is in no log"
    );
}

#[tokio::test]
async fn the_picker_lists_what_the_providers_token_can_push_to_and_the_form_runs_with_it() {
    let w = personal_world().await;
    let octo = w.app.sign_in_github(PERSONAL_USER_ID, PERSONAL_LOGIN).await;
    let provider = add_provider(&w, &octo, "Octo's token", PERSONAL_TOKEN).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/jobs/new", w.app.url))
        .header("cookie", &octo.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Listed with the provider's token (this session has no sign-in token): pushable
    // repositories only.
    assert!(
        page.contains(&format!(r#"<option value="github:{REPO}">"#)),
        "{page}"
    );
    assert!(!page.contains("octo-org/read-only"), "not pushable: {page}");
    assert!(
        page.contains(&format!(r#"<option value="{provider}">"#)),
        "{page}"
    );
    assert_eq!(
        w.github.tokens_of("GET", "/user/repos").await,
        [PERSONAL_TOKEN]
    );

    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &octo.csrf)
        .append_pair("repo", &format!("github:{REPO}"))
        .append_pair("kind", "issue")
        .append_pair("number", "")
        .append_pair("prompt", "Fix the README heading")
        .append_pair("provider", &provider)
        .finish();
    let r = http
        .post(format!("{}/jobs/new", w.app.url))
        .header("cookie", &octo.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let id = location.trim_start_matches("/jobs/");
    let job = w.finished(id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.provider.map(|p| p.to_string()), Some(provider));
    assert_eq!(w.github.tokens_of("POST", "/pulls").await, [PERSONAL_TOKEN]);
}

#[tokio::test]
async fn a_job_naming_a_personal_gitlab_provider_opens_the_merge_request_with_its_token() {
    use common::gitlab as gl;
    let w = world(Setup::default()).await;
    w.gitlab_git.accept(gl::PERSONAL_TOKEN);
    let root = w
        .app
        .sign_in(&repobox::web::dashboard::session::SessionUser {
            provider: "gitlab".into(),
            id: gl::PERSONAL_USER_ID.to_string(),
            login: gl::PERSONAL_USERNAME.into(),
            name: None,
            admin: false,
        })
        .await;
    // A GitLab provider stores its own URL (a self-hosted GitLab): the fake's.
    let provider = add_provider_of(
        &w,
        &root,
        "gitlab",
        &w.gitlab.server.uri(),
        "GitLab at work",
        gl::PERSONAL_TOKEN,
    )
    .await;

    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", w.app.url))
        .header("cookie", &root.cookie)
        .header("x-csrf-token", &root.csrf)
        .json(&json!({
            "repo": format!("gitlab:{GL_PATH}"),
            "prompt": "Fix the README heading",
            "provider": provider,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let job = w.finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);

    let created: Vec<String> = w
        .gitlab
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/merge_requests"))
        .map(|r| r.headers["private-token"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        created,
        [gl::PERSONAL_TOKEN],
        "opened with the personal token"
    );
    let pushes: Vec<_> = w
        .gitlab_git
        .requests()
        .into_iter()
        .filter(|r| r.authorized)
        .collect();
    assert!(!pushes.is_empty());
    for r in &pushes {
        assert_eq!(r.password.as_deref(), Some(gl::PERSONAL_TOKEN), "{r:?}");
    }
    w.assert_no_token_leak(&[gl::PERSONAL_TOKEN]).await;
}
