//! `/setup`: first run (SPEC §8, §11, §14). Registers the GitHub App through GitHub's
//! manifest flow and shows how to connect GitLab.
//!
//! 0. While no forge is configured, `serve` prints a setup token at start
//!    ([`announce`]: `open …/setup?token=…`; one token per install, in the store, so
//!    every `serve` prints the same). Without it `/setup` is a 404: whoever finds the
//!    URL first cannot register an App of their own on this server.
//! 1. `GET /setup?token=…` marks the browser's session as the one doing setup, and
//!    renders a form that posts `app-manifest.yml`, with every URL set from
//!    `REPOBOX_PUBLIC_URL`, to GitHub's "new App" page (a personal account, or
//!    `?org=<name>` for an organization), with a random `state` kept in the session
//!    and in the store for an hour (`setup:state:<state>`).
//! 2. GitHub sends the browser back to `/setup/github/callback?code=…&state=…`. The
//!    state must be this session's and is consumed (once; unknown, expired or another
//!    browser's → refused, nothing sent to GitHub), the code is exchanged
//!    (`POST /app-manifests/{code}/conversions`), and the App's id, slug, OAuth client
//!    and — sealed with the secret key — its private key, client secret and webhook
//!    secret are stored in the `github_app` hash, only if none is stored yet.
//! 3. `/setup` then asks the same session to confirm the App (a form with the CSRF
//!    token, `POST /setup/github/confirm`); only a confirmed App is used by processes
//!    started afterwards ([`apply_stored_app`]), so nothing is adopted silently. The
//!    browser goes on to the App's installation page.
//! 4. Setup is closed once any forge is configured (an App from the environment or
//!    confirmed here, or GitLab): `/setup` is then for signed-in admins only (what is
//!    configured, GitLab's webhook URL and secret), a 404 for everyone else.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::{Page, pages, session};
use crate::app::AppState;
use crate::config::Config;
use crate::crypto::SecretBox;
use crate::secret::Secret;
use crate::store::Store;

/// How long a manifest-flow `state` stays valid.
const STATE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Session keys: this browser showed the setup token; the manifest `state` it was given.
const GRANT: &str = "setup_grant";
const FLOW_STATE: &str = "setup_state";
const MANIFEST: &str = include_str!("../../../app-manifest.yml");

/// What `/setup` needs from the configuration.
#[derive(Debug, Clone)]
pub struct SetupInfo {
    /// `REPOBOX_GITHUB_APP_ID`, when the App comes from the environment.
    pub github_app_id: Option<u64>,
    pub github_api_url: String,
    pub github_web_url: String,
    pub gitlab_url: Option<String>,
}

/// `app-manifest.yml` with its URLs pointing at `public_url`.
pub fn manifest(public_url: &str) -> Value {
    let base = public_url.trim_end_matches('/');
    let mut m: Value = yaml_serde::from_str(MANIFEST).expect("app-manifest.yml is valid YAML");
    m["url"] = Value::String(base.to_owned());
    m["hook_attributes"]["url"] = Value::String(format!("{base}/webhooks/github"));
    m["redirect_url"] = Value::String(format!("{base}/setup/github/callback"));
    m["callback_urls"] = serde_json::json!([format!("{base}/auth/github/callback")]);
    m
}

fn secret_context(field: &str) -> String {
    format!("github_app:{field}")
}

#[derive(serde::Deserialize)]
pub struct SetupQuery {
    /// Register the App on this organization instead of the visitor's account.
    org: Option<String>,
    /// The setup token `serve` printed.
    token: Option<String>,
}

/// Where setup stands.
enum Stage {
    /// No forge: registration is open (to holders of the token).
    Open,
    /// An App was registered here and waits for the admin's confirmation.
    Unconfirmed(String),
    /// A forge is configured (the description says which).
    Closed(String),
}

async fn stage(state: &AppState) -> Result<Stage, crate::store::StoreError> {
    if let Some(id) = state.setup.github_app_id {
        return Ok(Stage::Closed(format!(
            "GitHub App id {id} (REPOBOX_GITHUB_APP_ID)"
        )));
    }
    if let Some(app) = state.store.github_app().await? {
        let text = format!(
            "{} (id {}, registered here)",
            app.get("slug").map(String::as_str).unwrap_or("?"),
            app.get("id").map(String::as_str).unwrap_or("?")
        );
        return Ok(if app.contains_key("confirmed_at") {
            Stage::Closed(format!("GitHub App {text}"))
        } else {
            Stage::Unconfirmed(text)
        });
    }
    if let Some(url) = &state.setup.gitlab_url {
        return Ok(Stage::Closed(format!("GitLab at {url}")));
    }
    Ok(Stage::Open)
}

/// At `serve`'s start: while setup is open, the install's setup token and the log line
/// that hands it to the operator. `None` once a forge is configured.
pub async fn announce(state: &AppState) -> Result<Option<String>, crate::store::StoreError> {
    if matches!(stage(state).await?, Stage::Closed(_)) {
        return Ok(None);
    }
    let token = state.store.setup_token(&new_token()).await?;
    tracing::info!(
        "no forge is configured yet: open {}/setup?token={token} to set up Repobox",
        state.public_url.trim_end_matches('/')
    );
    Ok(Some(token))
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

/// Whether this browser may do setup: it showed the token now or earlier in its session.
async fn granted(state: &AppState, session: &Session, token: Option<&str>) -> Result<bool, Page> {
    if matches!(session.get::<bool>(GRANT).await, Ok(Some(true))) {
        return Ok(true);
    }
    let Some(presented) = token.filter(|t| !t.is_empty() && t.len() <= 128) else {
        return Ok(false);
    };
    let token = state
        .store
        .setup_token(&new_token())
        .await
        .map_err(super::unavailable)?;
    if !bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
        tracing::warn!("/setup: a wrong setup token was presented");
        return Ok(false);
    }
    // A fresh session id for the browser that holds the right (no fixation).
    session.cycle_id().await.map_err(super::unavailable)?;
    session
        .insert(GRANT, true)
        .await
        .map_err(super::unavailable)?;
    Ok(true)
}

fn not_found() -> Page {
    Page::NotFound(pages::not_found(None, ""))
}

fn page_html(
    state: &AppState,
    user: Option<&session::SessionUser>,
    csrf: &str,
    app: Option<String>,
    form: Option<(String, String)>,
) -> Markup {
    let base = state.public_url.trim_end_matches('/');
    let body = html! {
        h1 { "Set up Repobox" }
        div.card id="github-setup" {
            h2 { "GitHub" }
            @if let Some(app) = &app {
                p { "Configured: " (app) ". Setup is closed." }
            } @else if let Some((action, manifest)) = &form {
                p { "Register the Repobox GitHub App on GitHub. Its webhook, callback and permissions come from "
                    code { "app-manifest.yml" } " with this server's address, " code { (base) } "." }
                form id="register-app" method="post" action=(action) {
                    input type="hidden" name="manifest" value=(manifest);
                    button type="submit" { "Register the GitHub App" }
                }
                p.muted { "For an organization, open " code { "/setup?org=<name>" } "." }
            }
        }
        div.card id="gitlab-setup" {
            h2 { "GitLab" }
            p { "Add a webhook to the project or group: URL " code { (base) "/webhooks/gitlab" }
                ", triggers \"Comments\" and \"Issues events\", and as the secret token the value of "
                code { "REPOBOX_GITLAB_WEBHOOK_SECRET" } "." }
            @match (&state.setup.gitlab_url, user.filter(|u| u.admin)) {
                (None, _) => p.muted { "GitLab is off: set REPOBOX_GITLAB_URL and REPOBOX_GITLAB_TOKEN." },
                (Some(_), Some(_)) => {
                    @match state.gitlab_webhook_secrets.first() {
                        Some(secret) => p { "Secret token: " code id="gitlab-secret" { (secret.expose()) } },
                        None => p.error { "REPOBOX_GITLAB_WEBHOOK_SECRET is not set: every GitLab delivery is refused." },
                    }
                }
                (Some(_), None) => p.muted { "Sign in as an admin to see the secret token." },
            }
        }
    };
    pages::layout("Setup", user, csrf, body)
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<SetupQuery>,
) -> Page {
    let user = session::user(&state.auth, &session).await;
    let csrf = session::csrf_token(&session).await;
    let stage = match stage(&state).await {
        Ok(stage) => stage,
        Err(e) => return super::unavailable(e),
    };
    if let Stage::Closed(what) = stage {
        return match user.as_ref().filter(|u| u.admin) {
            Some(admin) => Page::Html(page_html(&state, Some(admin), &csrf, Some(what), None)),
            None => not_found(),
        };
    }
    match granted(&state, &session, query.token.as_deref()).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(page) => return page,
    }
    // The session id may have changed: the form's token is the session's now.
    let csrf = session::csrf_token(&session).await;
    if let Stage::Unconfirmed(app) = stage {
        return Page::Html(confirm_html(user.as_ref(), &csrf, &app));
    }
    let flow_state = hex::encode(rand::random::<[u8; 16]>());
    if let Err(e) = state.store.put_setup_state(&flow_state, STATE_TTL).await {
        return super::unavailable(e);
    }
    if session.insert(FLOW_STATE, &flow_state).await.is_err() {
        return super::unavailable("session");
    }
    let web = &state.setup.github_web_url;
    let target = match query
        .org
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        Some(org) => {
            if !org.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Page::Error(StatusCode::BAD_REQUEST, "Not an organization name.".into());
            }
            format!("{web}/organizations/{org}/settings/apps/new")
        }
        None => format!("{web}/settings/apps/new"),
    };
    let action = format!("{target}?state={flow_state}");
    let manifest = manifest(&state.public_url).to_string();
    Page::Html(page_html(
        &state,
        user.as_ref(),
        &csrf,
        None,
        Some((action, manifest)),
    ))
}

fn confirm_html(user: Option<&session::SessionUser>, csrf: &str, app: &str) -> Markup {
    let body = html! {
        h1 { "Set up Repobox" }
        div.card id="github-confirm" {
            h2 { "Confirm the GitHub App" }
            p { "GitHub registered " strong { (app) } " for this server. Repobox uses it only once you confirm here; processes started afterwards pick it up." }
            form id="confirm-app" method="post" action="/setup/github/confirm" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Use this GitHub App" }
            }
        }
    };
    pages::layout("Setup", user, csrf, body)
}

/// `POST /setup/github/confirm`: the session that registered the App (or another holder
/// of the setup token) confirms it; then on to its installation page.
pub async fn confirm(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Page {
    if !matches!(stage(&state).await, Ok(Stage::Unconfirmed(_))) {
        return not_found();
    }
    match granted(&state, &session, None).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(page) => return page,
    }
    if !session::check_csrf(&session, &form.csrf).await {
        return super::csrf_refused();
    }
    let now = crate::job::rfc3339(time::OffsetDateTime::now_utc());
    match state.store.confirm_github_app(&now).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(e) => return super::unavailable(e),
    }
    let _ = session.remove::<bool>(GRANT).await;
    let html_url = match state.store.github_app().await {
        Ok(Some(app)) => app.get("html_url").cloned().unwrap_or_default(),
        Ok(None) => String::new(),
        Err(e) => return super::unavailable(e),
    };
    tracing::info!("GitHub App confirmed on /setup; restart repobox to use it");
    Page::Redirect(format!(
        "{}/installations/new",
        html_url.trim_end_matches('/')
    ))
}

#[derive(serde::Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
}

pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    Query(cb): Query<Callback>,
) -> Page {
    match stage(&state).await {
        Ok(Stage::Open) => {}
        Ok(_) => return not_found(),
        Err(e) => return super::unavailable(e),
    }
    // The state must be the one this browser was given, and is used once.
    let ours = session
        .remove::<String>(FLOW_STATE)
        .await
        .ok()
        .flatten()
        .is_some_and(|s| bool::from(s.as_bytes().ct_eq(cb.state.as_bytes())));
    let valid_state = ours
        && !cb.state.is_empty()
        && cb.state.len() <= 64
        && matches!(state.store.take_setup_state(&cb.state).await, Ok(true));
    if !valid_state {
        return Page::Error(
            StatusCode::BAD_REQUEST,
            "This setup link is unknown or expired; start again at /setup.".into(),
        );
    }
    if cb.code.is_empty() || !cb.code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Page::Error(StatusCode::BAD_REQUEST, "GitHub returned no code.".into());
    }
    let app = match convert(&state.setup.github_api_url, &cb.code).await {
        Ok(app) => app,
        Err(e) => {
            tracing::warn!(error = %e, "GitHub App manifest conversion failed");
            return Page::Error(
                StatusCode::BAD_GATEWAY,
                format!("GitHub did not create the App: {e}"),
            );
        }
    };
    let text = |k: &str| app.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (Some(id), pem) = (app.get("id").and_then(Value::as_u64), text("pem")) else {
        return Page::Error(
            StatusCode::BAD_GATEWAY,
            "GitHub's answer had no App id.".into(),
        );
    };
    let sealed = |field: &str| state.secret_box.seal(&text(field), &secret_context(field));
    let fields = vec![
        ("id", id.to_string()),
        ("slug", text("slug")),
        ("html_url", text("html_url")),
        ("client_id", text("client_id")),
        ("client_secret", sealed("client_secret")),
        ("webhook_secret", sealed("webhook_secret")),
        ("pem", state.secret_box.seal(&pem, &secret_context("pem"))),
        (
            "created_at",
            crate::job::rfc3339(time::OffsetDateTime::now_utc()),
        ),
    ];
    match state.store.create_github_app(&fields).await {
        Ok(true) => {
            tracing::info!(app_id = id, slug = %text("slug"), "GitHub App registered through /setup; it waits for confirmation there");
            Page::Redirect("/setup".into())
        }
        Ok(false) => Page::Error(
            StatusCode::CONFLICT,
            "Another GitHub App was registered meanwhile; setup is closed.".into(),
        ),
        Err(e) => super::unavailable(e),
    }
}

/// `POST /app-manifests/{code}/conversions` (no authentication: the code is the proof).
async fn convert(api_url: &str, code: &str) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("repobox/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(format!("{api_url}/app-manifests/{code}/conversions"))
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .map_err(|_| "GitHub could not be reached".to_owned())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GitHub answered {status}"));
    }
    response
        .json()
        .await
        .map_err(|_| "an unreadable answer".to_owned())
}

/// When no App is configured through the environment, takes the one `/setup` stored and
/// an admin confirmed there (an unconfirmed one is an error the caller reports):
/// its id, private key, webhook secret and OAuth client fill the configuration. Errors
/// (a stored App the secret key cannot open) are returned for the caller to report.
pub async fn apply_stored_app(
    config: &mut Config,
    store: &dyn Store,
    secret_box: &SecretBox,
) -> anyhow::Result<bool> {
    if config.github_app_id.is_some() {
        return Ok(false);
    }
    let Some(app) = store.github_app().await? else {
        return Ok(false);
    };
    if !app.contains_key("confirmed_at") {
        anyhow::bail!(
            "the GitHub App registered through /setup is not confirmed: confirm it on /setup first"
        );
    }
    let open = |field: &str| -> anyhow::Result<Secret> {
        let sealed = app
            .get(field)
            .ok_or_else(|| anyhow::anyhow!("the stored GitHub App has no {field}"))?;
        secret_box
            .open(sealed, &secret_context(field))
            .map_err(|e| anyhow::anyhow!("the stored GitHub App's {field} cannot be opened: {e} (was REPOBOX_SECRET_KEY changed?)"))
    };
    let id: u64 = app
        .get("id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the stored GitHub App has no id"))?;
    config.github_app_id = Some(id);
    config.github_private_key = Some(open("pem")?);
    if config.github_webhook_secret.is_none() {
        config.github_webhook_secret = Some(open("webhook_secret")?);
    }
    if config.github_client_id.is_none() {
        config.github_client_id = app.get("client_id").cloned();
        config.github_client_secret = Some(open("client_secret")?);
    }
    Ok(true)
}
