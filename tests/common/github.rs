//! An HTTP fake of the GitHub REST API (wiremock), answering with GitHub's own example
//! responses from `tests/fixtures/github/api-examples`. App endpoints only answer a
//! well-formed RS256 JWT for the test App; repository endpoints only answer the
//! installation token the fake minted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use super::fixture_json;

pub const APP_ID: u64 = 424242;
/// The token in GitHub's example access-token response.
pub const INSTALLATION_TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

pub fn private_key_path() -> String {
    super::fixture_path("keys/test-app.pem")
        .display()
        .to_string()
}

fn example(name: &str) -> Value {
    fixture_json(&format!("github/api-examples/{name}.json"))
}

/// Accepts only `Authorization: Bearer <JWT>` signed RS256 by the test App's key, with
/// `iss` = the App id, issued in the past and expiring within GitHub's 10 minutes.
struct AppJwt {
    key: jsonwebtoken::DecodingKey,
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: Value,
    iat: u64,
    exp: u64,
}

impl Match for AppJwt {
    fn matches(&self, req: &Request) -> bool {
        let Some(auth) = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(jwt) = auth.strip_prefix("Bearer ") else {
            return false;
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // GitHub takes the App id as a number in `iss`; jsonwebtoken only checks string
        // issuers, so `iss` and `iat` are checked below.
        validation.set_required_spec_claims(&["exp"]);
        let Ok(data) = jsonwebtoken::decode::<Claims>(jwt, &self.key, &validation) else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
        let iss_ok =
            data.claims.iss == json!(APP_ID) || data.claims.iss == json!(APP_ID.to_string());
        iss_ok
            && data.claims.iat <= now
            && data.claims.exp > now
            && data.claims.exp - data.claims.iat <= 660
    }
}

/// Accepts only the minted installation token.
struct InstallationAuth;

impl Match for InstallationAuth {
    fn matches(&self, req: &Request) -> bool {
        req.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v == format!("Bearer {INSTALLATION_TOKEN}")
                    || v == format!("token {INSTALLATION_TOKEN}")
            })
    }
}

pub struct FakeGitHub {
    pub server: MockServer,
}

impl FakeGitHub {
    /// `permissions`: login → GitHub permission (`admin`, `write`, `read`, `none`);
    /// anyone else gets 404 (not a collaborator).
    pub async fn start(permissions: &[(&str, &str)]) -> FakeGitHub {
        let server = MockServer::start().await;
        let pem = std::fs::read(super::fixture_path("keys/test-app.pub.pem")).unwrap();
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap();
        let mut token = example("apps__create-installation-access-token.response.201.default");
        // GitHub's example expired in 2016; a real answer is valid for an hour.
        token["expires_at"] = json!(
            time::OffsetDateTime::now_utc()
                .saturating_add(time::Duration::hours(1))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
        Mock::given(method("POST"))
            .and(path_regex(r"^/app/installations/\d+/access_tokens$"))
            .and(AppJwt { key: key.clone() })
            .respond_with(ResponseTemplate::new(201).set_body_json(token))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/installation$"))
            .and(AppJwt { key: key.clone() })
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(example("apps__get-repo-installation.response.200.default")),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/app$"))
            .and(AppJwt { key })
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(example("apps__get-authenticated.response.200.default")),
            )
            .mount(&server)
            .await;
        let perms: HashMap<String, String> = permissions
            .iter()
            .map(|(l, p)| ((*l).to_owned(), (*p).to_owned()))
            .collect();
        let perm_example = example(
            "repos__get-collaborator-permission-level.response.200.response-if-user-has-admin-permissions",
        );
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/repos/[^/]+/[^/]+/collaborators/[^/]+/permission$",
            ))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let login = req
                    .url
                    .path()
                    .split('/')
                    .nth(5)
                    .unwrap_or_default()
                    .to_owned();
                match perms.get(&login) {
                    Some(p) => {
                        let mut body = perm_example.clone();
                        body["permission"] = json!(p);
                        body["role_name"] = json!(p);
                        body["user"]["login"] = json!(login);
                        ResponseTemplate::new(200).set_body_json(body)
                    }
                    None => ResponseTemplate::new(404).set_body_json(json!({
                        "message": format!("{login} is not a user"),
                        "documentation_url": "https://docs.github.com/rest"
                    })),
                }
            })
            .mount(&server)
            .await;
        let reaction = example("reactions__create-for-issue-comment.response.201.default");
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/(issues/comments/\d+|pulls/comments/\d+|issues/\d+)/reactions$"))
            .and(InstallationAuth)
            .respond_with(ResponseTemplate::new(201).set_body_json(reaction))
            .mount(&server)
            .await;
        let next_id = Arc::new(AtomicU64::new(9000));
        let created = example("issues__create-comment.response.201.default");
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let mut body = created.clone();
                body["id"] = json!(next_id.fetch_add(1, Ordering::SeqCst));
                let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                body["body"] = sent["body"].clone();
                ResponseTemplate::new(201).set_body_json(body)
            })
            .mount(&server)
            .await;
        let updated = example("issues__update-comment.response.200.default");
        Mock::given(method("PATCH"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/comments/\d+$"))
            .and(InstallationAuth)
            .respond_with(ResponseTemplate::new(200).set_body_json(updated))
            .mount(&server)
            .await;
        FakeGitHub { server }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The `--flag value` pairs that point Repobox at this fake.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--github-app-id".into(),
            APP_ID.to_string(),
            "--github-private-key-path".into(),
            private_key_path(),
            "--github-api-url".into(),
            self.uri(),
        ]
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// `(path, JSON body)` of every `http_method` request whose path contains `part`.
    pub async fn calls(&self, http_method: &str, part: &str) -> Vec<(String, Value)> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == http_method && r.url.path().contains(part))
            .map(|r| {
                (
                    r.url.path().to_owned(),
                    serde_json::from_slice(&r.body).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Reaction contents posted, with their paths.
    pub async fn reactions(&self) -> Vec<(String, String)> {
        self.calls("POST", "/reactions")
            .await
            .into_iter()
            .map(|(p, b)| (p, b["content"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Bodies of comments created.
    pub async fn comments(&self) -> Vec<(String, String)> {
        self.calls("POST", "/comments")
            .await
            .into_iter()
            .filter(|(p, _)| p.contains("/issues/") && !p.ends_with("/reactions"))
            .map(|(p, b)| (p, b["body"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}
