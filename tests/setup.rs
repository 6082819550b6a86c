//! First run: `/setup` registers the GitHub App through GitHub's manifest flow against
//! an HTTP fake of `POST /app-manifests/{code}/conversions`, checks the `state`, stores
//! the App with its secrets sealed, and closes.

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
async fn the_manifest_flow_checks_state_stores_the_app_sealed_and_closes() {
    let (app, github) = setup_app().await;
    let page = client()
        .get(format!("{}/setup", app.url))
        .send()
        .await
        .unwrap();
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
    assert!(manifest["default_permissions"].get("workflows").is_none());
    let state = action.split("state=").nth(1).unwrap().to_owned();

    let org = client()
        .get(format!("{}/setup?org=acme-inc", app.url))
        .send()
        .await
        .unwrap();
    let (org_action, _) = form(&org.text().await.unwrap());
    assert!(
        org_action
            .starts_with("https://github.example/organizations/acme-inc/settings/apps/new?state=")
    );
    let bad = client()
        .get(format!("{}/setup?org=a/../b", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let code = "a180b1a3d263c81bc6441d7b990bae27d4c10679";
    let callback = |state: &str| {
        client()
            .get(format!(
                "{}/setup/github/callback?code={code}&state={state}",
                app.url
            ))
            .send()
    };
    // A forged state: refused, GitHub never asked.
    assert_eq!(callback("forged").await.unwrap().status(), 400);
    assert!(github.received_requests().await.unwrap().is_empty());

    let r = callback(&state).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "https://github.com/apps/octoapp/installations/new"
    );
    assert_eq!(github.received_requests().await.unwrap().len(), 1);

    // Stored, with every secret sealed.
    let stored = app
        .store
        .github_app()
        .await
        .unwrap()
        .expect("the App is stored");
    assert_eq!(stored["id"], "1");
    assert_eq!(stored["slug"], "octoapp");
    let dump = common::world::redis_text(&app).await;
    for secret in [
        "BEGIN RSA PRIVATE KEY",
        "MIIEfakeKEY",
        WEBHOOK_SECRET,
        CLIENT_SECRET,
    ] {
        assert!(!dump.contains(secret), "`{secret}` stored in plain text");
    }

    // Setup is closed: no form, and the used state does not work twice.
    let page = client()
        .get(format!("{}/setup", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Setup is closed") && !page.contains("register-app"),
        "{page}"
    );
    assert_eq!(callback(&state).await.unwrap().status(), 404);

    // A process started now uses the stored App.
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
    let used = apply_stored_app(&mut config, app.store.as_ref(), &SecretBox::new(&key))
        .await
        .unwrap();
    assert!(used);
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
