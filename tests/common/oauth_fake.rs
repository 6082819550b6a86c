//! An HTTP fake of the sign-in providers (GitHub, GitLab, an OpenID Connect issuer) on
//! `127.0.0.1:0`, checking what the real ones check: the client id and secret, a
//! one-time code, the `redirect_uri` the authorization carried, and the PKCE
//! `code_verifier` against the S256 `code_challenge`. The OIDC flavour serves discovery
//! and a JWKS and signs RS256 ID tokens, which a test can spoil on purpose
//! ([`IdTokenTweak`]). GitHub answers a refused code with HTTP 200 and an error document,
//! as github.com does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::oidc_keys::{ISSUER_KEY_N, ISSUER_KEY_PEM, OTHER_KEY_PEM};

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret-0123456789";
const KEY_ID: &str = "test-key-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    GitHub,
    GitLab,
    Oidc,
}

/// How the next ID token is spoiled (OIDC flavour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenTweak {
    None,
    /// Signed with a key that is not in the JWKS (same `kid`).
    WrongKey,
    /// `aud` is another client.
    WrongAudience,
    /// `exp` an hour ago.
    Expired,
    /// A `nonce` other than the one the authorization carried.
    WrongNonce,
    /// `email_verified: false`.
    UnverifiedEmail,
    /// `iss` is another issuer.
    WrongIssuer,
    /// `alg: none` and no signature.
    AlgNone,
    /// HS256 with the client secret as the HMAC key (a token anyone holding the
    /// client secret could mint, and the classic algorithm-confusion attack).
    Hs256,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
}

struct FakeState {
    flavor: Flavor,
    issuer: String,
    grants: HashMap<String, Grant>,
    tokens: HashMap<String, Value>,
    token_requests: usize,
    authorize_params: Vec<HashMap<String, String>>,
    tweak: IdTokenTweak,
    /// Repository-list requests made with a user's token (the picker's API calls).
    list_requests: usize,
}

type Shared = Arc<Mutex<FakeState>>;

pub struct OAuthFake {
    pub url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OAuthFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OAuthFake {
    pub async fn start(flavor: Flavor) -> OAuthFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState {
            flavor,
            issuer: url.clone(),
            grants: HashMap::new(),
            tokens: HashMap::new(),
            token_requests: 0,
            authorize_params: Vec::new(),
            tweak: IdTokenTweak::None,
            list_requests: 0,
        }));
        let router = Router::new()
            // GitHub
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(token))
            .route("/user", get(user))
            .route("/user/installations", get(installations))
            .route(
                "/user/installations/{id}/repositories",
                get(installation_repositories),
            )
            // GitLab
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/api/v4/user", get(user))
            .route("/api/v4/projects", get(projects))
            // OpenID Connect
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        OAuthFake { url, state, task }
    }

    /// Repository lists asked for with a user's token.
    pub fn list_requests(&self) -> usize {
        self.state.lock().unwrap().list_requests
    }

    /// Code exchanges the fake has received, good or bad.
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// The query of the last authorization request.
    pub fn last_authorize(&self) -> HashMap<String, String> {
        self.state
            .lock()
            .unwrap()
            .authorize_params
            .last()
            .cloned()
            .expect("an authorization request")
    }

    pub fn set_tweak(&self, tweak: IdTokenTweak) {
        self.state.lock().unwrap().tweak = tweak;
    }

    /// Plays the browser and the consenting user: opens `authorize_url` and returns the
    /// `code` and `state` of the redirect back to the app.
    pub async fn authorize(&self, authorize_url: &str) -> (String, String) {
        assert!(
            authorize_url.starts_with(&self.url),
            "{authorize_url} is not at the fake"
        );
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client.get(authorize_url).send().await.unwrap();
        assert_eq!(response.status(), 303, "authorization refused");
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        let location = url::Url::parse(location).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        (params["code"].clone(), params["state"].clone())
    }
}

async fn authorize(
    State(state): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    s.authorize_params.push(params.clone());
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if get("response_type") != "code" {
        return (StatusCode::BAD_REQUEST, "response_type must be code").into_response();
    }
    if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    if get("state").is_empty() || get("redirect_uri").is_empty() {
        return (StatusCode::BAD_REQUEST, "state and redirect_uri required").into_response();
    }
    if s.flavor == Flavor::Oidc {
        let scopes: Vec<&str> = params
            .get("scope")
            .map(|v| v.split(' ').collect())
            .unwrap_or_default();
        if !scopes.contains(&"openid") || get("nonce").is_empty() {
            return (StatusCode::BAD_REQUEST, "openid scope and nonce required").into_response();
        }
    }
    let code = random_hex();
    s.grants.insert(
        code.clone(),
        Grant {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            nonce: params.get("nonce").cloned(),
        },
    );
    let mut back = url::Url::parse(&get("redirect_uri")).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    Redirect::to(back.as_str()).into_response()
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let flavor = s.flavor;
    let refuse = |error: &str| -> Response {
        let body = json!({"error": error, "error_description": format!("refused: {error}")});
        match flavor {
            Flavor::GitHub => Json(body).into_response(),
            _ => (StatusCode::BAD_REQUEST, Json(body)).into_response(),
        }
    };
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some(pair) => pair,
        None => (get("client_id"), get("client_secret")),
    };
    if client_id != CLIENT_ID || client_secret != CLIENT_SECRET {
        return refuse("invalid_client");
    }
    if get("grant_type") != "authorization_code" {
        return refuse("unsupported_grant_type");
    }
    let Some(grant) = s.grants.remove(&get("code")) else {
        return refuse(match flavor {
            Flavor::GitHub => "bad_verification_code",
            _ => "invalid_grant",
        });
    };
    if grant.client_id != client_id || grant.redirect_uri != get("redirect_uri") {
        return refuse("invalid_grant");
    }
    let verifier = get("code_verifier");
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if verifier.is_empty() || computed != grant.challenge {
        return refuse("invalid_grant");
    }
    let access_token = format!("fake_{}", random_hex());
    let (user, body) = match flavor {
        Flavor::GitHub => (
            json!({"id": 583231, "login": "octocat", "name": "The Octocat",
                   "email": "octocat@github.com", "type": "User"}),
            json!({"access_token": access_token, "token_type": "bearer", "scope": ""}),
        ),
        Flavor::GitLab => (
            json!({"id": 1, "username": "root", "name": "Administrator",
                   "email": "admin@example.com", "state": "active"}),
            json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 7200,
                   "refresh_token": random_hex(), "scope": "read_user read_api",
                   "created_at": 1_700_000_000}),
        ),
        Flavor::Oidc => {
            let id_token = id_token(&s.issuer, grant.nonce.as_deref(), s.tweak);
            (
                json!({}),
                json!({"access_token": access_token, "token_type": "Bearer",
                       "expires_in": 3599, "scope": "openid email profile",
                       "id_token": id_token}),
            )
        }
    };
    s.tokens.insert(access_token, user);
    Json(body).into_response()
}

async fn user(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let s = state.lock().unwrap();
    if s.flavor == Flavor::GitHub && !headers.contains_key(header::USER_AGENT) {
        return (StatusCode::FORBIDDEN, "User-Agent required").into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match s.tokens.get(token) {
        Some(user) => Json(user.clone()).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
            .into_response(),
    }
}

async fn discovery(State(state): State<Shared>) -> Json<Value> {
    let issuer = state.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "code_challenge_methods_supported": ["plain", "S256"],
    }))
}

async fn jwks() -> Json<Value> {
    Json(json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KEY_ID,
        "n": ISSUER_KEY_N, "e": "AQAB",
    }]}))
}

fn id_token(issuer: &str, nonce: Option<&str>, tweak: IdTokenTweak) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (iat, exp) = match tweak {
        IdTokenTweak::Expired => (now - 7200, now - 3600),
        _ => (now, now + 3600),
    };
    let claims = json!({
        "iss": if tweak == IdTokenTweak::WrongIssuer { "https://issuer.evil.example" } else { issuer },
        "sub": "110169484474386276334",
        "aud": if tweak == IdTokenTweak::WrongAudience { "someone-else" } else { CLIENT_ID },
        "azp": CLIENT_ID,
        "iat": iat,
        "exp": exp,
        "nonce": if tweak == IdTokenTweak::WrongNonce { "another-nonce" } else { nonce.unwrap_or_default() },
        "email": "Alice@Example.org",
        "email_verified": tweak != IdTokenTweak::UnverifiedEmail,
        "name": "Alice Liddell",
    });
    match tweak {
        IdTokenTweak::AlgNone => {
            let head = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": KEY_ID}).to_string());
            let body = URL_SAFE_NO_PAD.encode(claims.to_string());
            return format!("{head}.{body}.");
        }
        IdTokenTweak::Hs256 => {
            let key = jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes());
            let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            head.kid = Some(KEY_ID.into());
            return jsonwebtoken::encode(&head, &claims, &key).unwrap();
        }
        _ => {}
    }
    let pem = if tweak == IdTokenTweak::WrongKey {
        OTHER_KEY_PEM
    } else {
        ISSUER_KEY_PEM
    };
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    head.kid = Some(KEY_ID.into());
    jsonwebtoken::encode(&head, &claims, &key).unwrap()
}

/// `Authorization: Basic` client credentials (each part form-urlencoded, RFC 6749 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = STANDARD.decode(value.strip_prefix("Basic ")?).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The bearer token's user, counting the request as a list request.
fn token_user(state: &Shared, headers: &HeaderMap) -> Option<Value> {
    let mut s = state.lock().unwrap();
    s.list_requests += 1;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    s.tokens.get(token).cloned()
}

fn bad_credentials() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "Bad credentials"})),
    )
        .into_response()
}

fn api_example(name: &str) -> Value {
    super::fixture_json(&format!("github/api-examples/{name}.json"))
}

/// `GET /user/installations`: GitHub's documented example (installation 1 first).
async fn installations(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match token_user(&state, &headers) {
        Some(_) => Json(api_example(
            "apps__list-installations-for-authenticated-user.response.200.default",
        ))
        .into_response(),
        None => bad_credentials(),
    }
}

/// `GET /user/installations/1/repositories`: the documented example repository (the
/// user may only pull it) and a copy the user may push to, `octocat/writable`.
async fn installation_repositories(
    State(state): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    headers: HeaderMap,
) -> Response {
    if token_user(&state, &headers).is_none() {
        return bad_credentials();
    }
    let mut body =
        api_example("apps__list-installation-repos-for-authenticated-user.response.200.default");
    if id != 1 {
        body["repositories"] = json!([]);
        body["total_count"] = json!(0);
        return Json(body).into_response();
    }
    let mut writable = body["repositories"][0].clone();
    writable["full_name"] = json!("octocat/writable");
    writable["name"] = json!("writable");
    writable["permissions"] =
        json!({"admin": false, "maintain": false, "push": true, "pull": true});
    body["repositories"].as_array_mut().unwrap().push(writable);
    body["total_count"] = json!(2);
    Json(body).into_response()
}

/// `GET /api/v4/projects`: a Developer project, and a Guest one that only a call
/// without `min_access_level=30` would list.
async fn projects(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if token_user(&state, &headers).is_none() {
        return bad_credentials();
    }
    let mut list = vec![json!({"id": 3, "path_with_namespace": "group/developer-here"})];
    if query.get("min_access_level").map(String::as_str) != Some("30") {
        list.push(json!({"id": 4, "path_with_namespace": "group/guest-only"}));
    }
    Json(list).into_response()
}
