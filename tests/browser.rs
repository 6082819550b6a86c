//! The dashboard in a real headless Chromium (chromedriver + fantoccini), as a person
//! uses it: signing in through the login form against a real `slapd`, following a
//! job's log live over SSE without a reload, cancelling, signing out, and the job list
//! at phone width. Screenshots land in `target/screenshots/` to look at.
//!
//! Needs `chromedriver` and `chromium` (`scripts/deps` installs them); without them the
//! tests fail, naming that script.

mod common;

use common::browser::Browser;
use common::slapd::{ALICE_PASSWORD, Slapd, USER_DN_TEMPLATE};
use common::{Options, TestApp};
use repobox::job::{Job, JobStatus, TriggerKind};
use serde_json::Value;

/// A directory, the app signing in against it (`alice` is an admin), and a browser.
struct World {
    browser: Browser,
    app: TestApp,
    _slapd: Slapd,
}

impl World {
    async fn start() -> World {
        let slapd = Slapd::start().await;
        let app = TestApp::start(Options {
            acknowledger: false,
            args: vec![
                "--ldap-url".into(),
                slapd.url.clone(),
                "--ldap-user-dn".into(),
                USER_DN_TEMPLATE.into(),
                "--admins".into(),
                "ldap:alice".into(),
            ],
            ..Options::default()
        })
        .await;
        let browser = Browser::start().await;
        World {
            browser,
            app,
            _slapd: slapd,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url)
    }

    /// Signs Alice in through the login page's LDAP form; the jobs page shows.
    async fn sign_in(&self, screenshot: Option<&str>) {
        let b = &self.browser;
        b.goto(&self.url("/login")).await;
        b.find("form[action='/auth/ldap']").await;
        b.type_into("form[action='/auth/ldap'] input[name=username]", "alice")
            .await;
        b.type_into(
            "form[action='/auth/ldap'] input[name=password]",
            ALICE_PASSWORD,
        )
        .await;
        if let Some(name) = screenshot {
            b.screenshot(name).await;
        }
        b.click("form[action='/auth/ldap'] button[type=submit]")
            .await;
        b.wait_for_path("/jobs").await;
    }

    /// Marks the document now shown, to tell later whether it was replaced.
    async fn mark_page(&self) {
        self.browser.js("window.repoboxTestMark = true;").await;
    }

    async fn page_is_marked(&self) -> bool {
        self.browser
            .js("return window.repoboxTestMark === true;")
            .await
            == Value::Bool(true)
    }

    async fn stop(self) {
        self.browser.close().await;
        self.app.stop().await;
    }
}

/// A job on `acme/api`, issue `number`, requested by `alice` on GitHub.
async fn job(app: &TestApp, number: u64) -> Job {
    app.store_job(101, "alice", number).await
}

async fn set_status(app: &TestApp, job: &Job, status: JobStatus) {
    app.store
        .set_job_fields(job.id, &[("status", status.as_str().to_owned())])
        .await
        .unwrap();
}

/// The `task` fields of the intake stream, oldest first.
async fn intake_tasks(app: &TestApp) -> Vec<Value> {
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
        .map(|e| serde_json::from_str(&e.get::<String>("task").unwrap()).unwrap())
        .collect()
}

/// The page shown is no wider than the (phone-sized) viewport: nothing scrolls sideways.
async fn assert_fits_the_width(b: &Browser) {
    let widths = b
        .js("return [document.documentElement.scrollWidth, window.innerWidth];")
        .await;
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(inner <= 400, "the window is phone-sized: {widths}");
    assert!(
        scroll <= inner,
        "{} is wider than a phone's viewport (scrollWidth, innerWidth): {widths}",
        b.path().await
    );
}

#[tokio::test]
async fn signing_in_through_the_form_shows_the_jobs_and_signing_out_returns_to_login() {
    let w = World::start().await;
    let b = &w.browser;
    let first = job(&w.app, 1).await;
    job(&w.app, 2).await;

    // Signed out, the jobs page sends the visitor to the login form.
    b.goto(&w.url("/jobs")).await;
    b.wait_for_path("/login").await;
    w.sign_in(Some("login")).await;
    assert_eq!(b.text("h1").await, "All jobs", "alice is an admin");
    let header = b.text("header").await;
    assert!(header.contains("alice · admin"), "{header}");
    let table = b.text("table#jobs").await;
    assert!(
        table.contains("issue #1") && table.contains("issue #2"),
        "{table}"
    );
    b.find(&format!("table#jobs a[href='/jobs/{}']", first.id))
        .await;
    b.screenshot("jobs").await;

    // At phone width the list fits the screen: no sideways scrolling.
    b.resize(390, 844).await;
    b.screenshot("jobs-phone").await;
    assert_fits_the_width(b).await;
    b.resize(1280, 900).await;

    // The header's "Sign out" ends the session: back on the login page, and the
    // jobs page is closed again.
    b.click("header form[action='/logout'] button[type=submit]")
        .await;
    b.wait_for_path("/login").await;
    b.find("form[action='/auth/ldap']").await;
    b.goto(&w.url("/jobs")).await;
    b.wait_for_path("/login").await;
    w.stop().await;
}

#[tokio::test]
async fn a_job_page_shows_the_stored_log_then_follows_new_lines_and_the_status_live() {
    let w = World::start().await;
    let b = &w.browser;
    let running = job(&w.app, 7).await;
    job(&w.app, 8).await;
    set_status(&w.app, &running, JobStatus::Running).await;
    let mut stored: Vec<String> = (1..=2).map(|n| format!("step {n}: working")).collect();
    // One long unbroken line, as a path or a URL in a tool's output is.
    stored.push(format!(
        "step 3: wrote src/{}.rs",
        "deeply_nested_module/".repeat(12)
    ));
    w.app.store.append_log(running.id, &stored).await.unwrap();

    w.sign_in(None).await;
    b.click(&format!("table#jobs a[href='/jobs/{}']", running.id))
        .await;
    b.wait_for_path(&format!("/jobs/{}", running.id)).await;
    assert_eq!(b.text("#status").await, "running");
    let log = b.text("#log").await;
    assert_eq!(log.lines().collect::<Vec<_>>(), stored, "{log}");

    // New lines arrive over the event stream and are appended in place.
    w.mark_page().await;
    let more: Vec<String> = (4..=5).map(|n| format!("step {n}: more work")).collect();
    w.app.store.append_log(running.id, &more).await.unwrap();
    let log = b
        .wait_for_text("#log", |t| t.contains("step 5: more work"))
        .await;
    let expected: Vec<String> = stored.iter().chain(&more).cloned().collect();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        expected,
        "every line once, in order"
    );
    assert!(w.page_is_marked().await, "the page was not reloaded");

    // The final status changes the badge, still without a reload.
    set_status(&w.app, &running, JobStatus::Succeeded).await;
    b.wait_for_text("#status", |t| t == "succeeded").await;
    let class = b.find("#status").await.attr("class").await.unwrap();
    assert!(class.unwrap_or_default().contains("s-succeeded"));
    assert!(w.page_is_marked().await, "the page was not reloaded");
    // A final job offers no Cancel any more.
    assert_eq!(
        b.js("return document.getElementById('cancel') === null;")
            .await,
        Value::Bool(true)
    );
    b.wait_until("the stream's end", || async {
        b.js("return document.getElementById('log').dataset.ended === 'true';")
            .await
            == Value::Bool(true)
    })
    .await;
    b.screenshot("job").await;

    // At phone width the facts and the log wrap instead of widening the page.
    b.resize(390, 844).await;
    b.screenshot("job-phone").await;
    assert_fits_the_width(b).await;
    w.stop().await;
}

#[tokio::test]
async fn cancel_on_a_running_job_page_queues_a_cancel_of_that_job_and_returns_to_it() {
    let w = World::start().await;
    let b = &w.browser;
    let running = job(&w.app, 3).await;
    set_status(&w.app, &running, JobStatus::Running).await;

    w.sign_in(None).await;
    let page = format!("/jobs/{}", running.id);
    b.goto(&w.url(&page)).await;
    b.find("#cancel").await;
    let before = intake_tasks(&w.app).await.len();
    w.mark_page().await;
    b.click("#cancel").await;
    // The form posts, and the answer redirects to the same job page, loaded anew.
    b.wait_until("the job page loaded anew", || async {
        !w.page_is_marked().await
    })
    .await;
    b.wait_for_path(&page).await;
    b.find("#status").await;
    let tasks = intake_tasks(&w.app).await;
    assert_eq!(tasks.len(), before + 1, "{tasks:?}");
    let task = tasks.last().unwrap();
    // The job on this page, and who clicked (what the acknowledger does with it:
    // tests/dashboard_commands.rs).
    assert_eq!(task["task"], "cancel_job", "{task}");
    assert_eq!(task["job"], running.id.to_string(), "{task}");
    assert_eq!(task["actor"]["login"], "alice", "{task}");
    w.stop().await;
}

/// Signs a GitHub user in by handing the browser a session cookie made the way the
/// GitHub sign-in makes one (the OAuth round trip itself is tested in
/// `tests/dashboard_signin.rs`; here the public URL is not the test server's).
async fn sign_in_as_github_user(w: &World) {
    let user = repobox::web::dashboard::session::SessionUser {
        provider: "github".into(),
        id: "21031067".into(),
        login: "Codertocat".into(),
        name: None,
        admin: false,
    };
    let signed = w.app.sign_in(&user).await;
    let (name, value) = signed.cookie.split_once('=').unwrap();
    // A page that makes no session, so there is no cookie to collide with.
    w.browser.goto(&w.url("/assets/style.css")).await;
    w.browser
        .js(&format!("document.cookie = '{name}={value}; path=/';"))
        .await;
    w.browser.goto(&w.url("/jobs")).await;
    w.browser.wait_for_path("/jobs").await;
}

#[tokio::test]
async fn a_provider_is_added_and_a_job_started_from_the_forms() {
    let w = World::start().await;
    sign_in_as_github_user(&w).await;
    let b = &w.browser;

    // Settings: add a GitLab token; it is listed masked, never in clear.
    b.click("a[href='/settings']").await;
    b.wait_for_path("/settings").await;
    b.find("#no-providers").await;
    b.js("document.querySelector(\"#add-provider select[name=kind]\").value = 'gitlab';")
        .await;
    b.type_into(
        "#add-provider input[name=url]",
        "https://gitlab.example.com",
    )
    .await;
    b.type_into("#add-provider input[name=label]", "Team GitLab")
        .await;
    b.type_into("#add-provider input[name=token]", "glpat-BrowserToken9876")
        .await;
    b.click("#add-provider button[type=submit]").await;
    let listed = b
        .wait_for_text("#providers", |t| t.contains("Team GitLab"))
        .await;
    assert!(listed.contains("glpat-****9876"), "{listed}");
    let html = b.js("return document.documentElement.outerHTML;").await;
    assert!(!html.as_str().unwrap().contains("glpat-BrowserToken9876"));
    b.screenshot("settings").await;

    // New job: the form stores a queued dashboard job and shows its page.
    b.click("a[href='/jobs/new']").await;
    b.wait_for_path("/jobs/new").await;
    b.type_into("#new-job input[name=repo]", "github:Codertocat/Hello-World")
        .await;
    b.type_into("#new-job input[name=number]", "1").await;
    b.type_into(
        "#new-job textarea[name=prompt]",
        "Fix the spelling in the README",
    )
    .await;
    b.screenshot("new-job").await;
    b.click("#new-job button[type=submit]").await;
    b.wait_until("the new job's page", || async {
        b.path().await.starts_with("/jobs/") && b.path().await != "/jobs/new"
    })
    .await;
    let id = b.path().await.trim_start_matches("/jobs/").to_owned();
    let job = w.app.job(&id).await;
    assert_eq!(job.trigger, TriggerKind::Dashboard);
    assert_eq!(job.instructions, "Fix the spelling in the README");
    assert_eq!(b.text("#status").await, "queued");
    w.stop().await;
}
