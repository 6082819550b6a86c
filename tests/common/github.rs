//! An HTTP fake of the GitHub REST API (wiremock), answering with GitHub's own example
//! responses from `tests/fixtures/github/api-examples`. App endpoints only answer a
//! well-formed RS256 JWT for the test App; repository endpoints only answer the
//! installation token the fake minted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Pull requests the fake knows (preloaded or created through the API).
    pub pulls: Arc<Mutex<Vec<Value>>>,
}

/// The App's bot user (`octoapp[bot]`, after the App example's slug).
pub const BOT_LOGIN: &str = "octoapp[bot]";
pub const BOT_USER_ID: u64 = 41898282;

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
        FakeGitHub {
            server,
            pulls: Arc::default(),
        }
    }

    /// Serves what a runner asks about `full_name`: the repository (cloned from
    /// `clone_url`), its pull requests (stateful: created ones are listed and fetched),
    /// and the App's bot user.
    pub async fn serve_repo(&self, full_name: &str, clone_url: &str, default_branch: &str) {
        let mut repo = example("repos__get.response.200.default-response");
        repo["full_name"] = json!(full_name);
        repo["clone_url"] = json!(clone_url);
        repo["default_branch"] = json!(default_branch);
        Mock::given(method("GET"))
            .and(wiremock::matchers::path(format!("/repos/{full_name}")))
            .and(InstallationAuth)
            .respond_with(ResponseTemplate::new(200).set_body_json(repo))
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::path(format!("/users/{BOT_LOGIN}")))
            .and(InstallationAuth)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "login": BOT_LOGIN, "id": BOT_USER_ID, "type": "Bot", "site_admin": false
            })))
            .mount(&self.server)
            .await;
        let pulls = self.pulls.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/pulls/\d+$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let number: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                let pulls = pulls.lock().unwrap();
                match pulls.iter().find(|p| p["number"] == json!(number)) {
                    Some(p) => ResponseTemplate::new(200).set_body_json(p.clone()),
                    None => {
                        ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}))
                    }
                }
            })
            .mount(&self.server)
            .await;
        let pulls = self.pulls.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/pulls$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
                let pulls = pulls.lock().unwrap();
                let found: Vec<Value> = pulls
                    .iter()
                    .filter(|p| {
                        let owner = p["head"]["repo"]["owner"]["login"]
                            .as_str()
                            .unwrap_or_default();
                        let head =
                            format!("{owner}:{}", p["head"]["ref"].as_str().unwrap_or_default());
                        query.get("head").is_none_or(|h| *h == head)
                            && query.get("state").is_none_or(|s| p["state"] == json!(s))
                    })
                    .cloned()
                    .collect();
                ResponseTemplate::new(200).set_body_json(found)
            })
            .mount(&self.server)
            .await;
        let pulls = self.pulls.clone();
        let full = full_name.to_owned();
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/pulls$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let (Some(head), Some(base), Some(title)) = (
                    sent["head"].as_str(),
                    sent["base"].as_str(),
                    sent["title"].as_str(),
                ) else {
                    return ResponseTemplate::new(422)
                        .set_body_json(json!({"message": "Validation Failed"}));
                };
                let mut pulls = pulls.lock().unwrap();
                let number = 100 + pulls.len() as u64;
                let pull = pull_json(
                    &full,
                    number,
                    head,
                    "0000000000000000000000000000000000000000",
                    base,
                    true,
                    title,
                    sent["body"].as_str().unwrap_or_default(),
                    sent["draft"].as_bool().unwrap_or(false),
                );
                pulls.push(pull.clone());
                ResponseTemplate::new(201).set_body_json(pull)
            })
            .mount(&self.server)
            .await;
    }

    /// Preloads a pull request (a PR thread to run a job on).
    pub fn add_pull(
        &self,
        full_name: &str,
        number: u64,
        head: &str,
        head_sha: &str,
        base: &str,
        same_repo: bool,
    ) {
        self.pulls.lock().unwrap().push(pull_json(
            full_name,
            number,
            head,
            head_sha,
            base,
            same_repo,
            "A pull request",
            "",
            false,
        ));
    }

    /// Bodies of pull requests created through the API.
    pub async fn created_pulls(&self) -> Vec<Value> {
        self.calls("POST", "/pulls")
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    /// Every body the progress comment `id` was edited to, in order.
    pub async fn comment_edits(&self, id: u64) -> Vec<String> {
        self.calls("PATCH", &format!("/issues/comments/{id}"))
            .await
            .into_iter()
            .map(|(_, b)| b["body"].as_str().unwrap_or_default().to_owned())
            .collect()
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

/// A pull request in GitHub's shape (from the `pulls/get` example).
#[allow(clippy::too_many_arguments)]
fn pull_json(
    full_name: &str,
    number: u64,
    head: &str,
    head_sha: &str,
    base: &str,
    same_repo: bool,
    title: &str,
    body: &str,
    draft: bool,
) -> Value {
    let mut p = example("pulls__get.response.200.default");
    let (owner, _) = full_name.split_once('/').unwrap();
    p["number"] = json!(number);
    p["title"] = json!(title);
    p["body"] = json!(body);
    p["draft"] = json!(draft);
    p["state"] = json!("open");
    p["html_url"] = json!(format!("https://github.com/{full_name}/pull/{number}"));
    p["head"]["ref"] = json!(head);
    p["head"]["sha"] = json!(head_sha);
    let head_repo = if same_repo {
        full_name.to_owned()
    } else {
        format!("forker/{}", full_name.split_once('/').unwrap().1)
    };
    p["head"]["repo"]["full_name"] = json!(head_repo);
    p["head"]["repo"]["owner"]["login"] = json!(head_repo.split_once('/').unwrap().0);
    p["base"]["ref"] = json!(base);
    p["base"]["repo"]["full_name"] = json!(full_name);
    p["base"]["repo"]["owner"]["login"] = json!(owner);
    p
}
