//! First run: `/setup` registers the GitHub App through GitHub's manifest flow against
//! an HTTP fake of `POST /app-manifests/{code}/conversions`. It is a 404 without the
//! setup token `serve` prints; the `state` belongs to the browser that was given it; the
//! App is stored with its secrets sealed, used only once the admin confirmed it, and
//! setup then closes (as it is closed on an install with GitLab configured).

mod common;

use clap::Parser;
use common::{Options, TEST_SECRET_KEY, TestApp};
use repobox::crypto::SecretBox;
use repobox::web::dashboard::setup::apply_stored_app;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEfakeKEYforTHEtest0123456789\n-----END RSA PRIVATE KEY-----\n";
const WEBHOOK_SECRET: &str = "e340154128314309424b7c8e90325147d99fdafa";
const CLIENT_SECRET: &str = "1234567890abcdef1234567890abcdef12345678";

/// The conversion answer, shaped like GitHub's documented example.
fn conversion() -> Value {
    json!({
        "id": 1, "slug": "octoapp", "node_id": "MDxOkludGVncmF0aW9uMQ==",
        "owner": {"login": "github", "id": 1, "type": "Organization"},
        "name": "Octocat App", "description": "",
        "external_url": "https://example.com",
        "html_url": "https://github.com/apps/octoapp",
        "created_at": "2017-07-08T16:18:44-04:00", "updated_at": "2017-07-08T16:18:44-04:00",
        "permissions": {"metadata": "read", "contents": "write", "issues": "write"},
        "events": ["issue_comment", "issues"],
        "client_id": "Iv1.8a61f9b3a7aba766",
        "client_secret": CLIENT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "pem": PEM,
    })
}

async fn setup_app() -> (TestApp, MockServer) {
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/app-manifests/a180b1a3d263c81bc6441d7b990bae27d4c10679/conversions",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(conversion()))
        .mount(&github)
        .await;
    let app = TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--github-api-url".into(),
            github.uri(),
            "--github-web-url".into(),
            "https://github.example".into(),
        ],
        ..Options::default()
    })
    .await;
    (app, github)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser that keeps the session cookie.
struct Browser {
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.url.clone(),
            cookie: None,
        }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for value in r.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if pair.starts_with(repobox::web::dashboard::session::COOKIE) {
                self.cookie = Some(pair.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let mut req = client().get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, body: String) -> reqwest::Response {
        let mut req = client()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.keep(&r);
        r
    }
}

/// The token `serve` printed (the same the store keeps for the install).
async fn setup_token(app: &TestApp) -> String {
    let token = app.store.setup_token("not-the-token").await.unwrap();
    assert_ne!(token, "not-the-token", "a token was made at start");
    let logs = common::captured_logs();
    assert!(
        logs.contains(&format!("https://repobox.example.com/setup?token={token}")),
        "the log hands the operator the setup URL"
    );
    token
}

fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// The registration form's action and its decoded manifest.
fn form(page: &str) -> (String, Value) {
    let attr = |name: &str| {
        let at = page
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in {page}"))
            + name.len();
        page[at..]
            .split('"')
            .next()
            .unwrap()
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    };
    let action = attr("id=\"register-app\" method=\"post\" action=\"");
    let manifest = serde_json::from_str(&attr("name=\"manifest\" value=\"")).unwrap();
    (action, manifest)
}

#[tokio::test]
async fn setup_is_a_404_without_the_printed_token() {
    common::capture_logs();
    let (app, github) = setup_app().await;
    let token = setup_token(&app).await;
    for path in [
        "/setup".to_owned(),
        "/setup?token=".into(),
        format!("/setup?token={}", &token[1..]),
        format!("/setup?token={token}0"),
    ] {
        let r = client()
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(!r.text().await.unwrap().contains("register-app"));
    }
    // A callback without a session that was given a state reaches nothing.
    let r = client()
        .get(format!(
            "{}/setup/github/callback?code=a180b1a3d263c81bc6441d7b990bae27d4c10679&state=x",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(github.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_gitlab_install_prints_no_token_and_keeps_setup_closed() {
    let app = TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--gitlab-url".into(),
            "https://gitlab.example".into(),
            "--gitlab-token".into(),
            "glpat-0123456789abcdefghij".into(),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.store.setup_token("none-made").await.unwrap(),
        "none-made",
        "no token was made at start"
    );
    let r = client()
        .get(format!("{}/setup?token=none-made", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "setup is closed once a forge is configured"
    );
}

#[tokio::test]
async fn the_manifest_flow_checks_state_stores_the_app_sealed_and_closes() {
    common::capture_logs();
    let (app, github) = setup_app().await;
    let token = setup_token(&app).await;
    let mut admin = Browser::new(&app);
    let page = admin.get(&format!("/setup?token={token}")).await;
    assert_eq!(page.status(), 200);
    let (action, manifest) = form(&page.text().await.unwrap());
    assert!(
        action.starts_with("https://github.example/settings/apps/new?state="),
        "{action}"
    );
    assert_eq!(
        manifest["hook_attributes"]["url"],
        "https://repobox.example.com/webhooks/github"
    );
    assert_eq!(
        manifest["redirect_url"],
        "https://repobox.example.com/setup/github/callback"
    );
    assert_eq!(
        manifest["callback_urls"],
        json!(["https://repobox.example.com/auth/github/callback"])
    );
    assert_eq!(manifest["default_permissions"]["contents"], "write");
    assert_eq!(manifest["default_permissions"]["checks"], "write");
    assert!(manifest["default_permissions"].get("workflows").is_none());
    let first_state = action.split("state=").nth(1).unwrap().to_owned();

    // The session now holds the right: later pages need no token (the org form here).
    let org = admin.get("/setup?org=acme-inc").await;
    let (org_action, _) = form(&org.text().await.unwrap());
    assert!(
        org_action
            .starts_with("https://github.example/organizations/acme-inc/settings/apps/new?state=")
    );
    let bad = admin.get("/setup?org=a/../b").await;
    assert_eq!(bad.status(), 400);
    // The org page gave this session a new state; start again for the personal one.
    let page = admin.get("/setup").await.text().await.unwrap();
    let (action, _) = form(&page);
    let state = action.split("state=").nth(1).unwrap().to_owned();

    let code = "a180b1a3d263c81bc6441d7b990bae27d4c10679";
    let callback_path = |state: &str| format!("/setup/github/callback?code={code}&state={state}");
    // The right state from another browser (a leaked or phished callback URL): refused,
    // GitHub never asked.
    let mut other = Browser::new(&app);
    assert_eq!(other.get(&callback_path(&state)).await.status(), 400);
    assert!(github.received_requests().await.unwrap().is_empty());
    // An earlier state of the admin's own (replaced by a later page) is refused too, and
    // a failed callback uses up the session's state (start again).
    assert_eq!(admin.get(&callback_path(&first_state)).await.status(), 400);
    assert_eq!(admin.get(&callback_path("forged")).await.status(), 400);
    assert!(github.received_requests().await.unwrap().is_empty());
    let page = admin.get("/setup").await.text().await.unwrap();
    let (action, _) = form(&page);
    let state = action.split("state=").nth(1).unwrap().to_owned();

    let r = admin.get(&callback_path(&state)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/setup");
    assert_eq!(github.received_requests().await.unwrap().len(), 1);

    // Stored but not adopted until confirmed: a process started now refuses it.
    let err = adopt(&app).await.unwrap_err().to_string();
    assert!(err.contains("not confirmed"), "{err}");
    // Only the session doing setup sees the confirmation; it needs the form's token.
    assert_eq!(other.get("/setup").await.status(), 404);
    let page = admin.get("/setup").await.text().await.unwrap();
    assert!(page.contains("confirm-app"), "{page}");
    let r = admin
        .post("/setup/github/confirm", "csrf=wrong".into())
        .await;
    assert_eq!(r.status(), 403);
    let r = other
        .post("/setup/github/confirm", format!("csrf={}", csrf(&page)))
        .await;
    assert_eq!(r.status(), 404);
    let r = admin
        .post("/setup/github/confirm", format!("csrf={}", csrf(&page)))
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "https://github.com/apps/octoapp/installations/new"
    );

    // Stored, with every secret sealed.
    let stored = app
        .store
        .github_app()
        .await
        .unwrap()
        .expect("the App is stored");
    assert_eq!(stored["id"], "1");
    assert_eq!(stored["slug"], "octoapp");
    let dump = common::world::stored_text(&app).await;
    for secret in [
        "BEGIN RSA PRIVATE KEY",
        "MIIEfakeKEY",
        WEBHOOK_SECRET,
        CLIENT_SECRET,
    ] {
        assert!(!dump.contains(secret), "`{secret}` stored in plain text");
    }

    // Setup is closed: a 404 even with the token, and the used state does not work twice.
    for path in ["/setup".to_owned(), format!("/setup?token={token}")] {
        let r = Browser::new(&app).get(&path).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(admin.get(&callback_path(&state)).await.status(), 404);

    // A process started now uses the stored, confirmed App.
    let config = adopt(&app).await.unwrap();
    assert_eq!(config.github_app_id, Some(1));
    assert_eq!(config.github_private_key.unwrap().expose(), PEM);
    assert_eq!(
        config.github_webhook_secret.unwrap().expose(),
        WEBHOOK_SECRET
    );
    assert_eq!(
        config.github_client_id.as_deref(),
        Some("Iv1.8a61f9b3a7aba766")
    );
    // With another key the sealed values do not open, and the error says why.
    let mut other = repobox::cli::Cli::try_parse_from(["repobox", "serve"])
        .unwrap()
        .config;
    let err = apply_stored_app(&mut other, app.store.as_ref(), &SecretBox::new(&[7u8; 32]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("REPOBOX_SECRET_KEY") && !err.contains("BEGIN"),
        "{err}"
    );
}

/// What a process started now makes of the stored App: the configuration it runs with.
async fn adopt(app: &TestApp) -> anyhow::Result<repobox::config::Config> {
    let cli = repobox::cli::Cli::try_parse_from([
        "repobox",
        "--redis-prefix",
        &app.prefix,
        "--secret-key",
        TEST_SECRET_KEY,
        "serve",
    ])
    .unwrap();
    let mut config = cli.config;
    let key: [u8; 32] = config
        .secret_key(std::path::Path::new("/nonexistent"))
        .unwrap()
        .0;
    let used = apply_stored_app(&mut config, app.store.as_ref(), &SecretBox::new(&key)).await?;
    assert!(used);
    Ok(config)
}
