//! Sign-in routes (SPEC §8): `/auth/{github,gitlab,google}` sends the browser to the
//! provider with a `state` (and a PKCE challenge, and for Google a nonce) kept in the
//! session; `/auth/{provider}/callback` checks the state and exchanges the code;
//! `POST /auth/ldap` binds to the directory. A successful sign-in records the user
//! (`user:<provider>:<id>`), renews the session id and marks admins (`REPOBOX_ADMINS`).
//!
//! Password sign-in (LDAP) is throttled (SPEC §14): failures are counted for ten minutes
//! per user name (from any address) and per client address (with any name), in the store
//! so that every `serve` shares them; once either count reaches [`MAX_FAILURES`] the next
//! tries answer 429 with `Retry-After`, even with the right password, until the window
//! ends. The address is the TCP peer's: behind a reverse proxy that is the proxy's, and
//! all users share its count (the README says so).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::Page;
use super::pages::{self, LoginOption};
use super::session::{self, SessionUser};
use crate::app::AppState;
use crate::store::User;
use crate::web::auth::{AuthError, Identity, PendingLogin, ProviderKind};

const PENDING: &str = "pending_login";
/// Failed password sign-ins allowed per user name, and per address, in [`WINDOW`].
pub const MAX_FAILURES: u64 = 10;
pub const WINDOW: Duration = Duration::from_secs(600);

/// The client's address, when the server records peers (it does in `serve`).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// The throttle's counters for a sign-in as `username` from `addr`. The name is hashed
/// (any text fits a key, none is stored in the clear) and compared case-insensitively,
/// as the directory compares it.
fn throttle_keys(username: &str, addr: Option<IpAddr>) -> Vec<String> {
    use sha2::Digest;
    let name = sha2::Sha256::digest(username.trim().to_lowercase().as_bytes());
    let mut keys = vec![format!("name:{}", hex::encode(&name[..16]))];
    if let Some(addr) = addr {
        keys.push(format!("addr:{addr}"));
    }
    keys
}

/// How long until a sign-in under `keys` may be tried again, if it is throttled now.
async fn throttled(state: &AppState, keys: &[String]) -> Result<Option<Duration>, Page> {
    let mut wait = None;
    for key in keys {
        let (failures, left) = state
            .store
            .signin_failures(key)
            .await
            .map_err(super::unavailable)?;
        if failures >= MAX_FAILURES {
            wait = wait.max(Some(left.max(Duration::from_secs(1))));
        }
    }
    Ok(wait)
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        format!("Too many failed sign-ins; try again in {secs} seconds."),
    )
        .into_response()
}

fn label(p: ProviderKind) -> &'static str {
    match p {
        ProviderKind::GitHub => "GitHub",
        ProviderKind::GitLab => "GitLab",
        ProviderKind::Google => "Google",
        ProviderKind::Ldap => "LDAP",
    }
}

fn redirect_uri(state: &AppState, provider: ProviderKind) -> String {
    format!(
        "{}/auth/{provider}/callback",
        state.public_url.trim_end_matches('/')
    )
}

/// The login page with the configured options (and an error after a failed try).
pub async fn login_page_with(state: &AppState, session: &Session, error: Option<&str>) -> Page {
    let csrf = session::csrf_token(session).await;
    let providers = state.auth.providers();
    let options: Vec<LoginOption> = providers
        .iter()
        .filter(|p| **p != ProviderKind::Ldap)
        .map(|p| LoginOption {
            label: label(*p).to_owned(),
            url: format!("/auth/{p}"),
        })
        .collect();
    let ldap = providers.contains(&ProviderKind::Ldap);
    let page = pages::login(&options, ldap, &csrf, error);
    match error {
        Some(_) => Page::Status(StatusCode::UNAUTHORIZED, page),
        None => Page::Html(page),
    }
}

fn parse_provider(name: &str) -> Option<ProviderKind> {
    name.parse::<ProviderKind>()
        .ok()
        .filter(|p| *p != ProviderKind::Ldap)
}

pub async fn start(
    State(state): State<AppState>,
    session: Session,
    Path(provider): Path<String>,
) -> Page {
    let Some(provider) = parse_provider(&provider) else {
        return Page::NotFound(pages::not_found(None, ""));
    };
    match state
        .auth
        .start(provider, &redirect_uri(&state, provider))
        .await
    {
        Ok((url, pending)) => {
            if session.insert(PENDING, &pending).await.is_err() {
                return super::unavailable("session");
            }
            Page::Redirect(url)
        }
        Err(e) => login_page_with(&state, &session, Some(&e.to_string())).await,
    }
}

#[derive(serde::Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    /// Set by the provider when the user declined.
    error: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    Path(provider): Path<String>,
    Query(cb): Query<Callback>,
) -> Page {
    let Some(provider) = parse_provider(&provider) else {
        return Page::NotFound(pages::not_found(None, ""));
    };
    // The pending login is used once, whatever happens next.
    let pending: Option<PendingLogin> = session.remove(PENDING).await.ok().flatten();
    let Some(pending) = pending else {
        return login_page_with(
            &state,
            &session,
            Some("The sign-in expired or was not started here; try again."),
        )
        .await;
    };
    if cb.error.is_some() {
        return login_page_with(&state, &session, Some("The provider did not sign you in.")).await;
    }
    let result = state
        .auth
        .finish(
            provider,
            pending,
            &cb.code,
            &cb.state,
            &redirect_uri(&state, provider),
        )
        .await;
    finish(&state, &session, result).await
}

#[derive(serde::Deserialize)]
pub struct LdapForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub async fn ldap(
    State(state): State<AppState>,
    session: Session,
    ClientAddr(addr): ClientAddr,
    axum::Form(form): axum::Form<LdapForm>,
) -> Response {
    if !session::check_csrf(&session, &form.csrf).await {
        return super::csrf_refused().into_response();
    }
    let keys = throttle_keys(&form.username, addr);
    match throttled(&state, &keys).await {
        Ok(Some(wait)) => {
            tracing::info!(?addr, "dashboard sign-in throttled");
            return too_many(wait);
        }
        Ok(None) => {}
        Err(page) => return page.into_response(),
    }
    let result = state.auth.ldap_login(&form.username, &form.password).await;
    if let Err(AuthError::Denied(_)) = &result {
        for key in &keys {
            if let Err(e) = state.store.count_signin_failure(key, WINDOW).await {
                return super::unavailable(e).into_response();
            }
        }
    }
    finish(&state, &session, result).await.into_response()
}

async fn finish(state: &AppState, session: &Session, result: Result<Identity, AuthError>) -> Page {
    let identity = match result {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(error = %e, "dashboard sign-in refused");
            return login_page_with(state, session, Some(&e.to_string())).await;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let user = User {
        provider: identity.provider.as_str().to_owned(),
        id: identity.id.clone(),
        login: identity.login.clone(),
        name: identity.name.clone(),
        email: identity.email.clone(),
        created_at: now,
        last_login_at: now,
    };
    if let Err(e) = state.store.upsert_user(&user).await {
        return super::unavailable(e);
    }
    let session_user = SessionUser {
        provider: user.provider,
        id: user.id,
        login: user.login,
        name: user.name,
        admin: state.auth.is_admin(&identity),
    };
    if let Err(e) = session::sign_in(session, &session_user).await {
        return super::unavailable(e);
    }
    // The forge's token lists the user's own repositories on `/jobs/new`.
    if let Some(token) = &identity.access_token
        && matches!(
            identity.provider,
            ProviderKind::GitHub | ProviderKind::GitLab
        )
        && let Err(e) = super::picker::keep_token(state, session, token).await
    {
        return super::unavailable(e);
    }
    tracing::info!(provider = %identity.provider, login = %identity.login, admin = session_user.admin, "dashboard sign-in");
    Page::Redirect("/jobs".into())
}
