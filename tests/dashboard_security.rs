//! The dashboard's edges as an attacker meets them (SPEC §14): security headers on every
//! page, no inline script, text from issues and logs escaped, CSRF tokens bound to their
//! session, sessions that end 24 h after sign-in however busy, and admin rights that
//! follow `REPOBOX_ADMINS` on every request, not the session.

mod common;

use common::{Options, SignedIn, TestApp, github_user};

async fn app() -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--admins".into(),
            "github:root".into(),
            "--api-token".into(),
            "api-token-0123456789abcdefghijkl".into(),
        ],
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

async fn get(app: &TestApp, who: Option<&SignedIn>, path: &str) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", app.url));
    if let Some(w) = who {
        req = req.header("cookie", &w.cookie);
    }
    req.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name}", r.url()))
        .to_str()
        .unwrap()
}

/// No `<script>` without `src`, no `on…=` handler attribute, no `javascript:` URL.
fn assert_no_inline_script(path: &str, html: &str) {
    let lower = html.to_lowercase();
    for (at, _) in lower.match_indices("<script") {
        let tag = &lower[at..at + lower[at..].find('>').unwrap()];
        assert!(tag.contains(" src="), "{path}: inline script {tag}");
    }
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!lower.contains(handler), "{path}: {handler}");
    }
}

#[tokio::test]
async fn every_page_carries_the_security_headers_and_no_inline_script() {
    let app = app().await;
    let root = app.sign_in(&github_user(999, "root")).await;
    let job = app.store_job(999, "root", 1).await;
    let token = app.store.setup_token("unused").await.unwrap();
    let setup = format!("/setup?token={token}");
    let signed_in = [
        "/jobs".to_owned(),
        format!("/jobs/{}", job.id),
        "/jobs/new".into(),
        "/settings".into(),
        "/admin".into(),
        "/api/v1/jobs".into(),
        "/jobs/01JD0000000000000000000000".into(),
    ];
    let mut seen = 0;
    for (who, path) in signed_in
        .iter()
        .map(|p| (Some(&root), p.as_str()))
        .chain([(None, "/login"), (None, "/jobs"), (None, "/setup")])
        .chain([(None, setup.as_str())])
    {
        let r = get(&app, who, path).await;
        let csp = header(&r, "content-security-policy").to_owned();
        for part in [
            "default-src 'none'",
            "script-src 'self';",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "referrer-policy"), "same-origin", "{path}");
        assert_eq!(header(&r, "cache-control"), "no-store", "{path}");
        let html = r.text().await.unwrap();
        assert_no_inline_script(path, &html);
        seen += 1;
    }
    assert_eq!(seen, 11);
    // The static assets may be cached, and are still under the policy.
    let css = get(&app, None, "/assets/live.js").await;
    assert!(header(&css, "cache-control").starts_with("public"));
    assert_eq!(header(&css, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn text_from_issues_and_logs_is_escaped_on_every_page() {
    let app = app().await;
    let root = app.sign_in(&github_user(999, "root")).await;
    let job = app.store_job(999, "root", 1).await;
    let attack = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    app.store
        .set_job_fields(
            job.id,
            &[
                ("thread_title", format!("Title {attack}")),
                ("instructions", format!("Fix {attack}")),
                ("error", format!("Error {attack}")),
                ("summary", format!("Summary {attack}")),
            ],
        )
        .await
        .unwrap();
    app.store
        .append_log(job.id, &[format!("log line {attack}\u{1b}[31m red")])
        .await
        .unwrap();
    for path in ["/jobs".to_owned(), format!("/jobs/{}", job.id)] {
        let html = get(&app, Some(&root), &path).await.text().await.unwrap();
        assert!(html.contains("Title &lt;script&gt;"), "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
    }
    let page = get(&app, Some(&root), &format!("/jobs/{}", job.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("log line &lt;script&gt;"), "{page}");
    // The live stream is text/event-stream (never rendered as HTML) and the page's
    // script inserts lines as text (assets/live.js uses textContent).
    let live = include_str!("../src/web/dashboard/assets/live.js");
    assert!(
        !live.contains("innerHTML"),
        "live.js must not parse log lines as HTML"
    );
}

#[tokio::test]
async fn a_csrf_token_works_only_with_its_own_session() {
    let app = app().await;
    let alice = app.sign_in(&github_user(101, "alice")).await;
    let mallory = app.sign_in(&github_user(666, "mallory")).await;
    let job = app.store_job(101, "alice", 1).await;
    // Mallory's valid token, sent with Alice's cookie (a forged cross-site form that
    // carries the attacker's own token): refused on forms and on the API.
    let form = format!("csrf={}", mallory.csrf);
    let r = client()
        .post(format!("{}/jobs/{}/cancel", app.url, job.id))
        .header("cookie", &alice.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .post(format!("{}/api/v1/jobs/{}/cancel", app.url, job.id))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &mallory.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.xlen("intake:stream").await,
        1,
        "only the job's own task"
    );
    // Her own token goes through.
    let r = client()
        .post(format!("{}/api/v1/jobs/{}/cancel", app.url, job.id))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.xlen("intake:stream").await, 2);
}

#[tokio::test]
async fn sessions_end_24_hours_after_sign_in_however_busy() {
    let app = app().await;
    let now = time::OffsetDateTime::now_utc();
    let fresh = app
        .sign_in_at(&github_user(101, "alice"), now - time::Duration::hours(23))
        .await;
    assert_eq!(get(&app, Some(&fresh), "/jobs").await.status(), 200);
    let old = app
        .sign_in_at(&github_user(101, "alice"), now - time::Duration::hours(24))
        .await;
    let r = get(&app, Some(&old), "/jobs").await;
    assert_eq!(r.status(), 303, "a session past its lifetime is signed out");
    assert_eq!(header(&r, "location"), "/login");
    let r = client()
        .get(format!("{}/api/v1/jobs", app.url))
        .header("cookie", &old.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn admin_rights_follow_the_configuration_on_every_request() {
    let app = app().await;
    // A session that says "admin" (written before REPOBOX_ADMINS dropped this user, or
    // forged into the store) is not an admin.
    let mut claims = github_user(555, "former-admin");
    claims.admin = true;
    let former = app.sign_in(&claims).await;
    assert_eq!(get(&app, Some(&former), "/admin").await.status(), 404);
    let other = app.store_job(101, "alice", 1).await;
    assert_eq!(
        get(&app, Some(&former), &format!("/jobs/{}", other.id))
            .await
            .status(),
        404
    );
    // And one that does not say so, for a configured admin, is.
    let root = app.sign_in(&github_user(999, "root")).await;
    assert_eq!(get(&app, Some(&root), "/admin").await.status(), 200);
    assert_eq!(
        get(&app, Some(&root), &format!("/jobs/{}", other.id))
            .await
            .status(),
        200
    );
}
