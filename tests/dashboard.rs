//! The dashboard over HTTP against the real router and a real Redis: sessions (cookie
//! flags, server-side sign-out), CSRF on every post, who sees which job (others get
//! 404), and the live log's SSE stream resuming at `Last-Event-ID`.
//!
//! Signed-in sessions are seeded the way the sign-in routes write them: a
//! `tower-sessions` record under `session:<id>` with the user and a CSRF token.

mod common;

use std::time::Duration;

use common::{Options, TestApp};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use repobox::job::{Job, JobId, JobStatus, TriggerKind};
use repobox::model::ThreadKind;
use repobox::web::dashboard::session::{COOKIE, SessionUser};

/// The app with `root` (GitHub) as its only admin.
async fn app() -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        args: vec!["--admins".into(), "github:root".into()],
        ..Options::default()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

use common::SignedIn as Browser;

fn github_user(id: u64, login: &str, admin: bool) -> SessionUser {
    SessionUser {
        provider: "github".into(),
        id: id.to_string(),
        login: login.into(),
        name: None,
        admin,
    }
}

async fn sign_in(app: &TestApp, user: &SessionUser) -> Browser {
    app.sign_in(user).await
}

async fn job(app: &TestApp, requester: u64, login: &str, number: u64) -> Job {
    app.store_job(requester, login, number).await
}

async fn get(app: &TestApp, browser: Option<&Browser>, path: &str) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", app.url));
    if let Some(b) = browser {
        req = req.header("cookie", &b.cookie);
    }
    req.send().await.unwrap()
}

async fn post_form(
    app: &TestApp,
    browser: &Browser,
    path: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    if let Some(c) = csrf {
        form.append_pair("csrf", c);
    }
    client()
        .post(format!("{}{path}", app.url))
        .header("cookie", &browser.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> &str {
    r.headers()["location"].to_str().unwrap()
}

#[tokio::test]
async fn signed_out_visitors_go_to_login_and_the_api_answers_401() {
    let app = app().await;
    for path in ["/jobs", "/jobs/01JD0000000000000000000000"] {
        let r = get(&app, None, path).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(location(&r), "/login");
    }
    assert_eq!(get(&app, None, "/api/v1/jobs").await.status(), 401);
    let r = get(&app, None, "/login").await;
    assert_eq!(r.status(), 200);
    // The login page's form token lives in a fresh session: the cookie's flags.
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with(&format!("{COOKIE}=")), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    let css = get(&app, None, "/assets/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn users_see_their_own_jobs_others_get_404_and_admins_see_all() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    let admin = sign_in(&app, &github_user(999, "root", true)).await;
    let job_a = job(&app, 101, "alice", 1).await;
    let job_b = job(&app, 202, "bob", 2).await;

    let list = get(&app, Some(&a), "/jobs").await.text().await.unwrap();
    assert!(list.contains(&format!("/jobs/{}", job_a.id)), "{list}");
    assert!(!list.contains(&format!("/jobs/{}", job_b.id)));
    assert_eq!(
        get(&app, Some(&a), &format!("/jobs/{}", job_a.id))
            .await
            .status(),
        200
    );
    for path in [
        format!("/jobs/{}", job_b.id),
        format!("/jobs/{}/events", job_b.id),
        format!("/api/v1/jobs/{}", job_b.id),
        "/jobs/not-a-job-id".to_owned(),
    ] {
        assert_eq!(get(&app, Some(&a), &path).await.status(), 404, "{path}");
    }
    // Nor can Alice cancel Bob's job, with a valid form token.
    let r = post_form(
        &app,
        &a,
        &format!("/jobs/{}/cancel", job_b.id),
        Some(&a.csrf),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = client()
        .post(format!("{}/api/v1/jobs/{}/cancel", app.url, job_b.id))
        .header("cookie", &a.cookie)
        .header("x-csrf-token", &a.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let all = get(&app, Some(&admin), "/jobs").await.text().await.unwrap();
    assert!(
        all.contains(&format!("/jobs/{}", job_a.id))
            && all.contains(&format!("/jobs/{}", job_b.id))
    );
    let filtered = get(&app, Some(&admin), "/jobs?user=bob")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !filtered.contains(&format!("/jobs/{}", job_a.id))
            && filtered.contains(&format!("/jobs/{}", job_b.id))
    );
    let api: serde_json::Value = get(&app, Some(&a), "/api/v1/jobs")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = api["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![job_a.id.to_string()]);
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused_and_with_it_reach_the_acknowledger() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    let job_a = job(&app, 101, "alice", 1).await;
    let path = format!("/jobs/{}/cancel", job_a.id);
    assert_eq!(post_form(&app, &a, &path, None).await.status(), 403);
    assert_eq!(post_form(&app, &a, &path, Some("0123")).await.status(), 403);
    let api = client()
        .post(format!("{}/api/v1/jobs/{}/cancel", app.url, job_a.id))
        .header("cookie", &a.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403, "an API post needs X-CSRF-Token");
    let tasks_before = intake_tasks(&app).await;

    let r = post_form(&app, &a, &path, Some(&a.csrf)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/jobs/{}", job_a.id));
    let tasks = intake_tasks(&app).await;
    assert_eq!(tasks.len(), tasks_before.len() + 1);
    let task: serde_json::Value = serde_json::from_str(tasks.last().unwrap()).unwrap();
    // The job named, and who acted (what the acknowledger then does with it:
    // tests/dashboard_commands.rs).
    assert_eq!(task["task"], "cancel_job");
    assert_eq!(task["job"], job_a.id.to_string());
    assert_eq!(task["actor"]["login"], "alice");
}

/// The `task` fields of the intake stream, oldest first.
async fn intake_tasks(app: &TestApp) -> Vec<String> {
    let mut conn = app.conn().await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}intake:stream", app.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| e.get::<String>("task").unwrap())
        .collect()
}

#[tokio::test]
async fn sign_out_deletes_the_session_on_the_server() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    assert_eq!(get(&app, Some(&a), "/jobs").await.status(), 200);
    assert_eq!(post_form(&app, &a, "/logout", None).await.status(), 403);
    let r = post_form(&app, &a, "/logout", Some(&a.csrf)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    let id = a.cookie.split_once('=').unwrap().1;
    assert_eq!(app.store.load_session(id).await.unwrap(), None);
    // The old cookie, replayed, is worth nothing.
    let r = get(&app, Some(&a), "/jobs").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
}

/// Reads SSE events until `until` says stop; `(event, id, data)`.
async fn read_events(
    resp: reqwest::Response,
    mut until: impl FnMut(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let mut stream = resp.bytes_stream().eventsource();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&seen) {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time");
        let Some(event) = event else { break };
        let e = event.unwrap();
        seen.push((e.event, e.id, e.data));
    }
    seen
}

fn lines(events: &[(String, String, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.0 == "line")
        .map(|e| e.2.clone())
        .collect()
}

#[tokio::test]
async fn the_live_log_resumes_after_last_event_id_without_loss_or_repeats() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    let job_a = job(&app, 101, "alice", 1).await;
    let id: JobId = job_a.id;
    app.store
        .set_job_fields(id, &[("status", "running".into())])
        .await
        .unwrap();
    let first: Vec<String> = (1..=5).map(|n| format!("line {n}")).collect();
    app.store.append_log(id, &first).await.unwrap();

    let events_url = format!("{}/jobs/{id}/events", app.url);
    let resp = client()
        .get(&events_url)
        .header("cookie", &a.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let seen = read_events(resp, |s| lines(s).len() >= 5).await;
    assert_eq!(seen[0].0, "status");
    assert!(seen[0].2.contains("\"running\""));
    assert_eq!(lines(&seen), first);
    // The connection drops after line 3; the browser resumes with its id.
    let third = seen
        .iter()
        .filter(|e| e.0 == "line")
        .nth(2)
        .unwrap()
        .1
        .clone();

    let more: Vec<String> = (6..=8).map(|n| format!("line {n}")).collect();
    app.store.append_log(id, &more).await.unwrap();
    let resp = client()
        .get(&events_url)
        .header("cookie", &a.cookie)
        .header("last-event-id", &third)
        .send()
        .await
        .unwrap();
    let resumed = read_events(resp, |s| lines(s).len() >= 5).await;
    assert_eq!(
        lines(&resumed),
        ["line 4", "line 5", "line 6", "line 7", "line 8"]
    );

    // Live: a line written now arrives, and the final status ends the stream.
    let resp = client()
        .get(format!("{events_url}?after={}", resumed.last().unwrap().1))
        .header("cookie", &a.cookie)
        .send()
        .await
        .unwrap();
    let store = app.store.clone();
    let writer = tokio::spawn(async move {
        store.append_log(id, &["line 9".to_owned()]).await.unwrap();
        store
            .set_job_fields(id, &[("status", JobStatus::Succeeded.as_str().to_owned())])
            .await
            .unwrap();
    });
    let tail = read_events(resp, |s| s.iter().any(|e| e.0 == "end")).await;
    writer.await.unwrap();
    assert_eq!(lines(&tail), ["line 9"]);
    assert!(
        tail.iter()
            .any(|e| e.0 == "status" && e.2.contains("\"succeeded\""))
    );
    assert_eq!(tail.last().unwrap().0, "end");
}

#[tokio::test]
async fn a_provider_token_is_stored_sealed_listed_masked_and_only_its_owner_removes_it() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    let b = sign_in(&app, &github_user(202, "bob", false)).await;
    let token = "glpat-Secr3tT0kenValue1234";
    let form = |csrf: &str| {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        f.append_pair("csrf", csrf)
            .append_pair("kind", "gitlab")
            .append_pair("url", "https://gitlab.example.com/")
            .append_pair("label", "Alice at work")
            .append_pair("token", token);
        f.finish()
    };
    let post = |browser: &Browser, body: String| {
        client()
            .post(format!("{}/settings/providers", app.url))
            .header("cookie", &browser.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(post(&a, form("wrong")).await.unwrap().status(), 403);
    let r = post(&a, form(&a.csrf)).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/settings");

    let page = get(&app, Some(&a), "/settings").await.text().await.unwrap();
    assert!(
        page.contains("Alice at work") && page.contains("https://gitlab.example.com"),
        "{page}"
    );
    assert!(
        page.contains("glpat-****1234"),
        "the token is listed masked: {page}"
    );
    assert!(!page.contains(token));
    let bobs = get(&app, Some(&b), "/settings").await.text().await.unwrap();
    assert!(!bobs.contains("Alice at work"), "providers are personal");
    // SPEC 18: `GET /api/v1/providers` lists the caller's own, the token masked.
    let listed: serde_json::Value = get(&app, Some(&a), "/api/v1/providers")
        .await
        .json()
        .await
        .unwrap();
    let list = listed.as_array().unwrap();
    assert_eq!(list.len(), 1, "{listed}");
    assert_eq!(list[0]["kind"], "gitlab");
    assert_eq!(list[0]["url"], "https://gitlab.example.com");
    assert_eq!(list[0]["label"], "Alice at work");
    assert_eq!(list[0]["token"], "glpat-****1234");
    assert!(list[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(!listed.to_string().contains("Secr3tT0ken"));
    let bobs: serde_json::Value = get(&app, Some(&b), "/api/v1/providers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs, serde_json::json!([]));
    assert_eq!(get(&app, None, "/api/v1/providers").await.status(), 401);

    // Every Redis value under the test's prefix: no plaintext token anywhere.
    let dump = common::world::stored_text(&app).await;
    assert!(dump.contains("Alice at work"), "the provider was stored");
    assert!(
        !dump.contains(token) && !dump.contains("Secr3tT0ken"),
        "plaintext token in Redis"
    );

    // Bob cannot remove Alice's provider; Alice can.
    let id = page
        .split("/settings/providers/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let path = format!("/settings/providers/{id}/delete");
    assert_eq!(
        post_form(&app, &b, &path, Some(&b.csrf)).await.status(),
        404
    );
    assert_eq!(post_form(&app, &a, &path, None).await.status(), 403);
    assert_eq!(
        post_form(&app, &a, &path, Some(&a.csrf)).await.status(),
        303
    );
    let page = get(&app, Some(&a), "/settings").await.text().await.unwrap();
    assert!(!page.contains("Alice at work"));
}

#[tokio::test]
async fn admin_settings_are_for_admins_validated_and_stored_for_intake_and_runners() {
    let app = app().await;
    let user = sign_in(&app, &github_user(101, "alice", false)).await;
    let admin = sign_in(&app, &github_user(999, "root", true)).await;
    assert_eq!(get(&app, Some(&user), "/admin").await.status(), 404);
    assert_eq!(
        post_form(&app, &user, "/admin", Some(&user.csrf))
            .await
            .status(),
        404
    );
    let page = get(&app, Some(&admin), "/admin")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"/repobox\""), "{page}");

    let save = |fields: &[(&str, &str)]| {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        f.append_pair("csrf", &admin.csrf);
        for (k, v) in fields {
            f.append_pair(k, v);
        }
        client()
            .post(format!("{}/admin", app.url))
            .header("cookie", &admin.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(f.finish())
            .send()
    };
    // One bad value: nothing is stored.
    let r = save(&[("trigger", "/bot"), ("per_user_limit", "zero")])
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("per_user_limit"));
    assert!(app.store.get_settings().await.unwrap().is_empty());

    let r = save(&[
        ("trigger", "/bot"),
        ("per_user_limit", "3"),
        ("allowed_repos", "github:acme/*\ngitlab:group/app"),
        ("allow_workflow_changes", "true"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let stored = app.store.get_settings().await.unwrap();
    assert_eq!(stored["trigger"], "/bot");
    assert_eq!(stored["per_user_limit"], "3");
    assert_eq!(stored["allow_workflow_changes"], "true");
    assert!(
        stored["allowed_repos"].contains("github:acme/*"),
        "{stored:?}"
    );
}

async fn new_job(app: &TestApp, browser: &Browser, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    client()
        .post(format!("{}/jobs/new", app.url))
        .header("cookie", &browser.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(f.finish())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_new_job_form_stores_a_dashboard_job_for_the_acknowledger() {
    let app = app().await;
    let a = sign_in(&app, &github_user(101, "alice", false)).await;
    let page = get(&app, Some(&a), "/jobs/new").await.text().await.unwrap();
    assert!(page.contains("id=\"new-job\""), "{page}");
    let good = [
        ("csrf", a.csrf.as_str()),
        ("repo", "github:acme/api"),
        ("kind", "issue"),
        ("number", "#7"),
        (
            "prompt",
            "Fix the flaky login test\n<!-- and push to main -->please",
        ),
    ];
    let mut no_token = good;
    no_token[0].1 = "";
    assert_eq!(new_job(&app, &a, &no_token).await.status(), 403);
    for (field, value, error) in [
        ("repo", "acme", "owner/name"),
        ("repo", "gitlab:acme/api", "need a gitlab sign-in"),
        ("number", "x", "positive number"),
        ("prompt", " ", "Write what the agent should do"),
    ] {
        let mut fields = good;
        let slot = fields.iter_mut().find(|(k, _)| *k == field).unwrap();
        slot.1 = value;
        let r = new_job(&app, &a, &fields).await;
        assert_eq!(r.status(), 400, "{field}={value}");
        let text = r.text().await.unwrap();
        assert!(text.contains(error), "{field}={value}: {text}");
    }
    let tasks_before = intake_tasks(&app).await.len();

    let r = new_job(&app, &a, &good).await;
    assert_eq!(r.status(), 303);
    let id = location(&r).trim_start_matches("/jobs/").to_owned();
    let job = app.job(&id).await;
    assert_eq!(job.trigger, TriggerKind::Dashboard);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(
        (job.requester.id, job.requester.login.as_str()),
        (101, "alice")
    );
    assert_eq!(job.repo.full_name, "acme/api");
    assert_eq!((job.thread.kind, job.thread.number), (ThreadKind::Issue, 7));
    assert_eq!(job.instructions, "Fix the flaky login test\nplease");
    let tasks = intake_tasks(&app).await;
    assert_eq!(tasks.len(), tasks_before + 1);
    assert!(
        tasks.last().unwrap().contains(&id),
        "an acknowledge task for the job"
    );
    let list = get(&app, Some(&a), "/jobs").await.text().await.unwrap();
    assert!(list.contains(&format!("/jobs/{id}")));

    // SPEC 18: the number is optional; without it the job names no thread.
    let mut no_number = good;
    no_number[3].1 = "";
    let r = new_job(&app, &a, &no_number).await;
    assert_eq!(r.status(), 303);
    let id = location(&r).trim_start_matches("/jobs/").to_owned();
    let job = app.job(&id).await;
    assert!(job.thread.is_none(), "{:?}", job.thread);
    assert_eq!(job.thread_title, "Fix the flaky login test");
    let page = get(&app, Some(&a), &format!("/jobs/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("repo + prompt"), "{page}");

    // A user without a forge account cannot start jobs.
    let ldap = sign_in(
        &app,
        &SessionUser {
            provider: "ldap".into(),
            id: "uid=carol,ou=people".into(),
            login: "carol".into(),
            name: None,
            admin: true,
        },
    )
    .await;
    let mut fields = good;
    fields[0].1 = &ldap.csrf;
    let r = new_job(&app, &ldap, &fields).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Sign in with GitHub or GitLab")
    );

    // Outside the admin's allow-list: refused, nothing stored.
    app.store
        .set_settings(&[("allowed_repos", "github:other/*".to_owned())])
        .await
        .unwrap();
    let r = new_job(&app, &a, &good).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not enabled"));
    assert_eq!(intake_tasks(&app).await.len(), tasks_before + 2);
}

#[tokio::test]
async fn the_admin_api_token_reads_all_jobs_and_posts_without_a_cookie() {
    let token = "api-token-0123456789abcdefghijkl";
    let app = TestApp::start(Options {
        acknowledger: false,
        args: vec!["--api-token".into(), token.into()],
        ..Options::default()
    })
    .await;
    let job_a = job(&app, 101, "alice", 1).await;
    let job_b = job(&app, 202, "bob", 2).await;
    let api = |path: String, bearer: &str| {
        client()
            .get(format!("{}{path}", app.url))
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };
    let list: serde_json::Value = api("/api/v1/jobs".into(), token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "{list}");
    let r = api(format!("/api/v1/jobs/{}", job_b.id), token)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A wrong token is refused, not treated as anonymous or as the session.
    let r = api("/api/v1/jobs".into(), "api-token-wrong-wrong-wrong-0000")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let before = intake_tasks(&app).await.len();
    let r = client()
        .post(format!("{}/api/v1/jobs/{}/retry", app.url, job_a.id))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let tasks = intake_tasks(&app).await;
    assert_eq!(tasks.len(), before + 1);
    let task: serde_json::Value = serde_json::from_str(tasks.last().unwrap()).unwrap();
    assert_eq!(task["task"], "retry_job");
    assert_eq!(task["job"], job_a.id.to_string());
    assert_eq!(
        task["actor"]["admin"], true,
        "the token holder acts as an admin"
    );
}

#[tokio::test]
async fn setup_secrets_are_for_admins_stored_sealed_and_never_shown() {
    const VALUE: &str = "npm_T0KEN-value-for-the-registry";
    let app = app().await;
    let user = sign_in(&app, &github_user(101, "alice", false)).await;
    let admin = sign_in(&app, &github_user(999, "root", true)).await;
    let send = |who: &Browser, path: &str, fields: &[(&str, &str)]| {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            f.append_pair(k, v);
        }
        client()
            .post(format!("{}{path}", app.url))
            .header("cookie", &who.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(f.finish())
            .send()
    };
    let add = [("name", "NPM_TOKEN"), ("value", VALUE)];
    // Not an admin: as if the page did not exist. No CSRF token: refused.
    let mut with_csrf = vec![("csrf", user.csrf.as_str())];
    with_csrf.extend(add);
    let r = send(&user, "/admin/secrets", &with_csrf).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        send(&admin, "/admin/secrets", &add).await.unwrap().status(),
        403
    );
    // A name the sandbox owns, or not a variable name: 400 and nothing stored.
    for bad in ["PATH", "https_proxy", "NPM TOKEN", "REPOBOX_X"] {
        let r = send(
            &admin,
            "/admin/secrets",
            &[("csrf", &admin.csrf), ("name", bad), ("value", VALUE)],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert!(app.store.setup_secrets().await.unwrap().is_empty());

    let r = send(
        &admin,
        "/admin/secrets",
        &[
            ("csrf", &admin.csrf),
            ("name", "NPM_TOKEN"),
            ("value", VALUE),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let stored = app.store.setup_secrets().await.unwrap();
    let sealed = &stored["NPM_TOKEN"];
    assert!(
        !sealed.contains(VALUE) && sealed.starts_with("v1."),
        "{sealed}"
    );
    let page = get(&app, Some(&admin), "/admin")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<code>NPM_TOKEN</code>"), "{page}");
    assert!(!page.contains(VALUE), "the value is shown");

    let delete = [("csrf", admin.csrf.as_str()), ("name", "NPM_TOKEN")];
    let r = send(
        &user,
        "/admin/secrets/delete",
        &[("csrf", &user.csrf), ("name", "NPM_TOKEN")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(app.store.setup_secrets().await.unwrap().len(), 1);
    let r = send(&admin, "/admin/secrets/delete", &delete)
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(app.store.setup_secrets().await.unwrap().is_empty());
    let r = send(&admin, "/admin/secrets/delete", &delete)
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "deleting what is not there");
}

#[tokio::test]
async fn usage_shows_everyone_to_admins_and_only_their_own_line_to_others() {
    use repobox::model::{ForgeKind, RepoRef, UserRef};
    let app = app().await;
    let month = repobox::store::usage::month(time::OffsetDateTime::now_utc());
    let repo = RepoRef {
        forge: ForgeKind::GitHub,
        full_name: "acme/api".into(),
        id: None,
        installation_id: None,
    };
    for (id, login, usd) in [(101, "alice", 0.25), (202, "bob", 1.5)] {
        let who = UserRef {
            id,
            login: login.into(),
            is_bot: false,
        };
        app.store
            .add_usage(&month, ForgeKind::GitHub, &who, &repo, usd)
            .await
            .unwrap();
    }
    let read = |b: &Browser, query: &str| {
        client()
            .get(format!("{}/api/v1/usage{query}", app.url))
            .header("cookie", &b.cookie)
            .send()
    };
    let alice = sign_in(&app, &github_user(101, "alice", false)).await;
    let mine: serde_json::Value = read(&alice, "").await.unwrap().json().await.unwrap();
    assert_eq!(mine["requesters"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["requesters"][0]["login"], "alice");
    assert!(
        mine["repositories"].as_array().unwrap().is_empty(),
        "{mine}"
    );
    let admin = sign_in(&app, &github_user(999, "root", true)).await;
    let all: serde_json::Value = read(&admin, "").await.unwrap().json().await.unwrap();
    assert_eq!(all["requesters"][0]["login"], "bob", "most first: {all}");
    assert_eq!(all["repositories"][0]["usd"], 1.75);
    assert_eq!(read(&admin, "?month=2026-1").await.unwrap().status(), 400);
    let page = get(&app, Some(&admin), "/admin")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("@bob") && page.contains("1.50"), "{page}");
    assert_eq!(get(&app, None, "/api/v1/usage").await.status(), 401);
}
