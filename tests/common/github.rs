//! An HTTP fake of the GitHub REST API (wiremock), answering with GitHub's own example
//! responses from `tests/fixtures/github/api-examples`. App endpoints only answer a
//! well-formed RS256 JWT for the test App; repository endpoints only answer the
//! installation token the fake minted.
//!
//! Threads (issues and pull requests, by number) are stateful: any number answers
//! `GET issues/{n}` and a paginated `GET issues/{n}/comments`, by default with the
//! example issue of the `issues.opened` webhook and the `issues/list-comments` example
//! comment; tests script them with [`FakeGitHub::set_issue`] and
//! [`FakeGitHub::add_issue_comment`], and comments Repobox posts or edits show up there.
//!
//! Failure switches, as a forge behind a flaky proxy behaves: the next creations of a
//! comment or pull request can be stored and then answered 502
//! ([`FakeGitHub::fail_after_creating`]), and the next requests of a route can be
//! refused with a rate limit and `retry-after: 1` ([`FakeGitHub::throttle`]).
//!
//! The App's webhook deliveries are stateful too: a test records delivery attempts
//! ([`FakeGitHub::record_delivery`]), `GET /app/hook/deliveries` lists them newest first
//! with GitHub's `cursor` paging, and `POST /app/hook/deliveries/{id}/attempts` answers
//! 202 and is recorded ([`FakeGitHub::redelivery_requests`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// A user's personal access token (a provider's, SPEC 18), let through wherever the
/// installation token is, once a test calls [`FakeGitHub::serve_personal_user`].
pub const PERSONAL_TOKEN: &str = "ghp_R3p0b0xPers0nalT0kenF0rTheTests0abcd";
/// The user [`PERSONAL_TOKEN`] belongs to (a collaborator with write access).
pub const PERSONAL_LOGIN: &str = "Octo2";
pub const PERSONAL_USER_ID: u64 = 2222;

/// The token of a request (`Bearer …` or `token …`).
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
}

/// Accepts only the minted installation token, or the personal token.
struct InstallationAuth;

impl Match for InstallationAuth {
    fn matches(&self, req: &Request) -> bool {
        bearer(req).is_some_and(|t| t == INSTALLATION_TOKEN || t == PERSONAL_TOKEN)
    }
}

/// Only the personal token.
struct PersonalAuth;

impl Match for PersonalAuth {
    fn matches(&self, req: &Request) -> bool {
        bearer(req) == Some(PERSONAL_TOKEN)
    }
}

/// A personal-looking token GitHub does not know (revoked, expired): 401, as GitHub
/// answers.
struct UnknownPersonalToken;

impl Match for UnknownPersonalToken {
    fn matches(&self, req: &Request) -> bool {
        bearer(req).is_some_and(|t| t.starts_with("ghp_") && t != PERSONAL_TOKEN)
    }
}

pub struct FakeGitHub {
    pub server: MockServer,
    /// Pull requests the fake knows (preloaded or created through the API).
    pub pulls: Arc<Mutex<Vec<Value>>>,
    /// Issue and pull request threads by number.
    pub threads: Arc<Mutex<HashMap<u64, Thread>>>,
    /// Ids of comments a test scripts (those Repobox posts count from 9000).
    scripted_ids: AtomicU64,
    /// Checks the App's JWT (for App endpoints added after start).
    jwt_key: jsonwebtoken::DecodingKey,
    /// How many more creations of each kind are stored and then answered 502.
    lost_answers: Arc<LostAnswers>,
    /// The App's webhook delivery attempts, oldest first.
    pub deliveries: Arc<Mutex<Vec<Value>>>,
    /// Collaborators' permissions (login → `admin`, `write`, `read`, `none`).
    permissions: Arc<Mutex<HashMap<String, String>>>,
    /// Check runs created through the API, as GitHub would return them now.
    pub check_runs: Arc<Mutex<Vec<Value>>>,
}

/// What [`FakeGitHub::fail_after_creating`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// `POST /repos/{o}/{r}/issues/{n}/comments`
    Comment,
    /// `POST /repos/{o}/{r}/pulls`
    PullRequest,
    /// `POST /repos/{o}/{r}/check-runs`
    CheckRun,
}

#[derive(Default)]
struct LostAnswers {
    comments: AtomicUsize,
    pulls: AtomicUsize,
    check_runs: AtomicUsize,
}

impl LostAnswers {
    fn counter(&self, what: Creation) -> &AtomicUsize {
        match what {
            Creation::Comment => &self.comments,
            Creation::PullRequest => &self.pulls,
            Creation::CheckRun => &self.check_runs,
        }
    }

    /// Whether this creation's answer is lost (counting it off).
    fn take(&self, what: Creation) -> bool {
        self.counter(what)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// What a proxy in front of GitHub answers when the upstream answer is lost.
pub fn bad_gateway() -> ResponseTemplate {
    ResponseTemplate::new(502)
        .insert_header("content-type", "text/html")
        .set_body_string(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        )
}

/// What the fake knows of one thread beyond its defaults.
#[derive(Debug, Default)]
pub struct Thread {
    /// `(title, body)` set by [`FakeGitHub::set_issue`].
    pub text: Option<(String, Option<String>)>,
    /// Comments in the order written (scripted and posted through the API).
    pub comments: Vec<Value>,
    /// The example comment is left out once a test adds comments of its own.
    pub scripted: bool,
    /// Status every call on the thread answers with ([`FakeGitHub::fail_thread`]).
    pub fail: Option<u16>,
    /// `(login, id)` of the thread's opener ([`FakeGitHub::set_issue_author`]).
    pub author: Option<(String, u64)>,
    /// Review comments of a pull request ([`FakeGitHub::add_review_comment`]).
    pub review_comments: Vec<Value>,
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
            .and(AppJwt { key: key.clone() })
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(example("apps__get-authenticated.response.200.default")),
            )
            .mount(&server)
            .await;
        let permissions: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
            permissions
                .iter()
                .map(|(l, p)| ((*l).to_owned(), (*p).to_owned()))
                .collect(),
        ));
        let perms = permissions.clone();
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
                let permission = perms.lock().unwrap().get(&login).cloned();
                match permission {
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
        let threads: Arc<Mutex<HashMap<u64, Thread>>> = Arc::default();
        let lost_answers: Arc<LostAnswers> = Arc::default();
        let next_id = AtomicU64::new(9000);
        let created = example("issues__create-comment.response.201.default");
        let state = threads.clone();
        let lost = lost_answers.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/\d+/comments$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let number = path_number(req, 5);
                let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let mut body = created.clone();
                body["id"] = json!(next_id.fetch_add(1, Ordering::SeqCst));
                body["body"] = sent["body"].clone();
                body["user"]["login"] = json!(BOT_LOGIN);
                body["user"]["id"] = json!(BOT_USER_ID);
                body["user"]["type"] = json!("Bot");
                let mut threads = state.lock().unwrap();
                threads
                    .entry(number)
                    .or_default()
                    .comments
                    .push(body.clone());
                if lost.take(Creation::Comment) {
                    return bad_gateway();
                }
                ResponseTemplate::new(201).set_body_json(body)
            })
            .mount(&server)
            .await;
        let updated = example("issues__update-comment.response.200.default");
        let state = threads.clone();
        Mock::given(method("PATCH"))
            .and(path_regex(r"^/repos/[^/]+/[^/]+/issues/comments/\d+$"))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let id = path_number(req, 6);
                let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let mut threads = state.lock().unwrap();
                let comment = threads
                    .values_mut()
                    .flat_map(|t| t.comments.iter_mut())
                    .find(|c| c["id"] == json!(id));
                match comment {
                    Some(c) => {
                        c["body"] = sent["body"].clone();
                        ResponseTemplate::new(200).set_body_json(c.clone())
                    }
                    // Not posted through this fake: GitHub's example answer.
                    None => ResponseTemplate::new(200).set_body_json(updated.clone()),
                }
            })
            .mount(&server)
            .await;
        let deliveries: Arc<Mutex<Vec<Value>>> = Arc::default();
        let listed = deliveries.clone();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path("/app/hook/deliveries"))
            .and(AppJwt { key: key.clone() })
            .respond_with(move |req: &Request| deliveries_page(req, &listed.lock().unwrap()))
            .mount(&server)
            .await;
        let known = deliveries.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/app/hook/deliveries/\d+/attempts$"))
            .and(AppJwt { key: key.clone() })
            .respond_with(move |req: &Request| {
                let id = path_number(req, 4);
                if known.lock().unwrap().iter().any(|d| d["id"] == json!(id)) {
                    ResponseTemplate::new(202).set_body_json(example(
                        "apps__redeliver-webhook-delivery.response.202.default",
                    ))
                } else {
                    github_error(404)
                }
            })
            .mount(&server)
            .await;
        let check_runs = Arc::new(Mutex::new(Vec::<Value>::new()));
        mount_check_runs(&server, check_runs.clone(), lost_answers.clone()).await;
        FakeGitHub {
            server,
            pulls: Arc::default(),
            threads,
            scripted_ids: AtomicU64::new(1_000_000),
            jwt_key: key,
            lost_answers,
            deliveries,
            permissions,
            check_runs,
        }
    }

    /// Changes `login`'s permission on every repository from now on (`None`: not a
    /// collaborator, 404).
    pub fn set_permission(&self, login: &str, permission: Option<&str>) {
        let mut perms = self.permissions.lock().unwrap();
        match permission {
            Some(p) => perms.insert(login.to_owned(), p.to_owned()),
            None => perms.remove(login),
        };
    }

    /// The next `n` creations of `what` are stored (visible to later reads and lists,
    /// exactly as after a success) and then answered 502 Bad Gateway.
    pub fn fail_after_creating(&self, what: Creation, n: usize) {
        self.lost_answers.counter(what).store(n, Ordering::SeqCst);
    }

    /// The next `n` `http_method` requests whose path matches `path_pattern` (a regex)
    /// are refused with `status` (GitHub: 403 or 429 for a secondary rate limit) and
    /// `retry-after: 1`, doing nothing.
    pub async fn throttle(&self, http_method: &str, path_pattern: &str, status: u16, n: u64) {
        Mock::given(method(http_method))
            .and(path_regex(path_pattern))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("retry-after", "1")
                    .insert_header("x-ratelimit-limit", "5000")
                    .insert_header("x-ratelimit-remaining", "4990")
                    .insert_header("x-ratelimit-used", "10")
                    .insert_header("x-ratelimit-resource", "core")
                    .set_body_json(json!({
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                        "status": status.to_string()
                    })),
            )
            .up_to_n_times(n)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// How many `http_method` requests were made to exactly `path`.
    pub async fn count(&self, http_method: &str, path: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r.method.as_str() == http_method && r.url.path() == path)
            .count()
    }

    /// Records an attempt of delivering webhook event `guid` that Repobox answered
    /// `status_code` (0: GitHub could not connect), delivered now; returns its id.
    pub fn record_delivery(&self, guid: &str, status_code: u16, redelivery: bool) -> u64 {
        self.record_delivery_at(
            guid,
            status_code,
            redelivery,
            time::OffsetDateTime::now_utc(),
        )
    }

    /// [`FakeGitHub::record_delivery`], delivered at `at`.
    pub fn record_delivery_at(
        &self,
        guid: &str,
        status_code: u16,
        redelivery: bool,
        at: time::OffsetDateTime,
    ) -> u64 {
        let mut deliveries = self.deliveries.lock().unwrap();
        let id = 12_345_678 + deliveries.len() as u64;
        let mut d = example("apps__list-webhook-deliveries.response.200.default")[0].clone();
        d["id"] = json!(id);
        d["guid"] = json!(guid);
        d["status_code"] = json!(status_code);
        d["status"] = json!(match status_code {
            200..=299 => "OK".to_owned(),
            0 => "failed to connect".to_owned(),
            s => format!("Invalid HTTP Response: {s}"),
        });
        d["redelivery"] = json!(redelivery);
        d["event"] = json!("issue_comment");
        d["action"] = json!("created");
        d["throttled_at"] = Value::Null;
        d["delivered_at"] = json!(
            at.replace_nanosecond(0)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
        deliveries.push(d);
        id
    }

    /// The delivery ids Repobox asked GitHub to redeliver, in order.
    pub async fn redelivery_requests(&self) -> Vec<u64> {
        self.requests()
            .await
            .iter()
            .filter(|r| {
                r.method.as_str() == "POST"
                    && r.url.path().starts_with("/app/hook/deliveries/")
                    && r.url.path().ends_with("/attempts")
            })
            .map(|r| path_number(r, 4))
            .collect()
    }

    /// Serves what a runner asks about `full_name`: the repository (cloned from
    /// `clone_url`), its pull requests (stateful: created ones are listed and fetched),
    /// and the App's bot user.
    /// The App's installation (id 1) and the repositories it covers: what the dashboard
    /// lists for a new job.
    pub async fn serve_installation(&self, repositories: &[&str]) {
        Mock::given(method("GET"))
            .and(wiremock::matchers::path("/app/installations"))
            .and(AppJwt {
                key: self.jwt_key.clone(),
            })
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": 1, "account": {"login": "Codertocat", "type": "User"}, "app_id": APP_ID}
            ])))
            .mount(&self.server)
            .await;
        let repos: Vec<Value> = repositories
            .iter()
            .map(|name| json!({"id": 1296269, "full_name": name, "private": false}))
            .collect();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path("/installation/repositories"))
            .and(InstallationAuth)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "total_count": repos.len(), "repository_selection": "selected", "repositories": repos
            })))
            .mount(&self.server)
            .await;
    }

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
        let (pulls, threads) = (self.pulls.clone(), self.threads.clone());
        let full = full_name.to_owned();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(format!(
                r"^/repos/{}/issues/\d+$",
                regex_escape(full_name)
            )))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let number = path_number(req, 5);
                let threads = threads.lock().unwrap();
                let thread = threads.get(&number);
                if let Some(status) = thread.and_then(|t| t.fail) {
                    return github_error(status);
                }
                let pull = pulls
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|p| p["number"] == json!(number))
                    .cloned();
                let mut issue = issue_json(
                    &full,
                    number,
                    thread.and_then(|t| t.text.clone()),
                    pull.as_ref(),
                );
                if let Some((login, id)) = thread.and_then(|t| t.author.clone()) {
                    issue["user"]["login"] = json!(login);
                    issue["user"]["id"] = json!(id);
                }
                ResponseTemplate::new(200).set_body_json(issue)
            })
            .mount(&self.server)
            .await;
        let threads = self.threads.clone();
        let full = full_name.to_owned();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(format!(
                r"^/repos/{}/issues/\d+/comments$",
                regex_escape(full_name)
            )))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let number = path_number(req, 5);
                let threads = threads.lock().unwrap();
                let thread = threads.get(&number);
                if let Some(status) = thread.and_then(|t| t.fail) {
                    return github_error(status);
                }
                let mut all = Vec::new();
                if thread.is_none_or(|t| !t.scripted) {
                    all.push(example_comment(&full, number));
                }
                all.extend(thread.iter().flat_map(|t| t.comments.iter().cloned()));
                paginated(req, all)
            })
            .mount(&self.server)
            .await;
        let threads = self.threads.clone();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(format!(
                r"^/repos/{}/pulls/\d+/comments$",
                regex_escape(full_name)
            )))
            .and(InstallationAuth)
            .respond_with(move |req: &Request| {
                let number = path_number(req, 5);
                let threads = threads.lock().unwrap();
                let all = threads
                    .get(&number)
                    .map(|t| t.review_comments.clone())
                    .unwrap_or_default();
                paginated(req, all)
            })
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
        let lost = self.lost_answers.clone();
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
                if lost.take(Creation::PullRequest) {
                    return bad_gateway();
                }
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

    /// Gives thread `number` (issue or pull request) this title and body (`None`: the
    /// `null` body GitHub sends for an empty description).
    pub fn set_issue<'a>(&self, number: u64, title: &str, body: impl Into<Option<&'a str>>) {
        self.threads.lock().unwrap().entry(number).or_default().text =
            Some((title.to_owned(), body.into().map(str::to_owned)));
    }

    /// Makes `login` (user `id`) the opener of thread `number`.
    pub fn set_issue_author(&self, number: u64, login: &str, id: u64) {
        self.threads
            .lock()
            .unwrap()
            .entry(number)
            .or_default()
            .author = Some((login.to_owned(), id));
    }

    /// Appends a comment by `author_login` to thread `number` (the first one replaces
    /// the example comment); returns its id. A comment by [`BOT_LOGIN`] is Repobox's own.
    pub fn add_issue_comment(&self, number: u64, author_login: &str, body: &str) -> u64 {
        let id = self.scripted_ids.fetch_add(1, Ordering::SeqCst);
        let mut comment = example("issues__list-comments.response.200.default")[0].clone();
        comment["id"] = json!(id);
        comment["body"] = json!(body);
        comment["user"]["login"] = json!(author_login);
        comment["user"]["type"] = json!(if author_login.ends_with("[bot]") {
            "Bot"
        } else {
            "User"
        });
        let mut threads = self.threads.lock().unwrap();
        let thread = threads.entry(number).or_default();
        thread.scripted = true;
        thread.comments.push(comment);
        id
    }

    /// Adds a review comment on `path` line `line` of pull request `number`, written
    /// now, in the shape of `pulls/list-review-comments`.
    pub fn add_review_comment(
        &self,
        number: u64,
        author_login: &str,
        path: &str,
        line: u64,
        body: &str,
    ) -> u64 {
        let id = self.scripted_ids.fetch_add(1, Ordering::SeqCst);
        let mut comment = example("pulls__list-review-comments.response.200.default")[0].clone();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        comment["id"] = json!(id);
        comment["body"] = json!(body);
        comment["path"] = json!(path);
        comment["line"] = json!(line);
        comment["created_at"] = json!(now);
        comment["updated_at"] = json!(now);
        comment["user"]["login"] = json!(author_login);
        let mut threads = self.threads.lock().unwrap();
        threads
            .entry(number)
            .or_default()
            .review_comments
            .push(comment);
        id
    }

    /// Makes every read of thread `number` (issue and comments) answer `status` with
    /// GitHub's error body.
    pub fn fail_thread(&self, number: u64, status: u16) {
        self.threads.lock().unwrap().entry(number).or_default().fail = Some(status);
    }

    /// Bodies of pull requests created through the API.
    pub async fn created_pulls(&self) -> Vec<Value> {
        self.calls("POST", "/pulls")
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    /// The token each `http_method` request to a path containing `part` carried.
    pub async fn tokens_of(&self, http_method: &str, part: &str) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .filter(|r| r.method.as_str() == http_method && r.url.path().contains(part))
            .map(|r| bearer(r).unwrap_or_default().to_owned())
            .collect()
    }

    /// Serves [`PERSONAL_TOKEN`]'s user: `GET /user`, `GET /users/{login}`, and
    /// `GET /user/repos` with `repos` pushable and `readonly` not (GitHub's
    /// `repos/list-for-authenticated-user` example, renamed); a `ghp_` token it does
    /// not know gets 401 "Bad credentials" everywhere.
    pub async fn serve_personal_user(&self, repos: &[&str], readonly: &[&str]) {
        let user = json!({
            "login": PERSONAL_LOGIN, "id": PERSONAL_USER_ID, "type": "User", "site_admin": false
        });
        for route in ["/user".to_owned(), format!("/users/{PERSONAL_LOGIN}")] {
            Mock::given(method("GET"))
                .and(wiremock::matchers::path(route))
                .and(PersonalAuth)
                .respond_with(ResponseTemplate::new(200).set_body_json(user.clone()))
                .mount(&self.server)
                .await;
        }
        let example = example("repos__list-for-authenticated-user.response.200.default");
        let template = example[0].clone();
        let listed: Vec<Value> = repos
            .iter()
            .map(|r| (r, true))
            .chain(readonly.iter().map(|r| (r, false)))
            .map(|(name, push)| {
                let mut repo = template.clone();
                repo["full_name"] = json!(name);
                repo["permissions"] = json!({"admin": false, "push": push, "pull": true});
                repo
            })
            .collect();
        Mock::given(method("GET"))
            .and(wiremock::matchers::path("/user/repos"))
            .and(PersonalAuth)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!(listed)))
            .mount(&self.server)
            .await;
        Mock::given(wiremock::matchers::any())
            .and(UnknownPersonalToken)
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401"
            })))
            .with_priority(1)
            .mount(&self.server)
            .await;
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

/// The number at `segment` of the request path (`/repos/o/r/issues/7` → 5 is `7`).
fn path_number(req: &Request, segment: usize) -> u64 {
    req.url
        .path()
        .split('/')
        .nth(segment)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = !c.is_ascii_alphanumeric() && !matches!(c, '/' | '-' | '_');
            escape.then_some('\\').into_iter().chain(Some(c))
        })
        .collect()
}

/// One page of the App's delivery attempts as `GET /app/hook/deliveries` answers:
/// newest first, `per_page` (default 30, at most 100), and an opaque `cursor` naming
/// the first attempt of the page, the next page's in a `Link` header (`rel="next"`).
fn deliveries_page(req: &Request, deliveries: &[Value]) -> ResponseTemplate {
    let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let from = match query.get("cursor") {
        None => u64::MAX,
        Some(c) => match c.strip_prefix("v1_").and_then(|n| n.parse().ok()) {
            Some(id) => id,
            None => {
                return ResponseTemplate::new(400).set_body_json(json!({
                    "message": "Invalid cursor",
                    "documentation_url": "https://docs.github.com/rest/apps/webhooks#list-deliveries-for-an-app-webhook",
                    "status": "400"
                }));
            }
        },
    };
    let newest_first: Vec<&Value> = deliveries
        .iter()
        .rev()
        .filter(|d| d["id"].as_u64().unwrap_or(0) <= from)
        .collect();
    let page: Vec<Value> = newest_first
        .iter()
        .take(per_page)
        .map(|d| (*d).clone())
        .collect();
    let mut response = ResponseTemplate::new(200).set_body_json(page);
    if let Some(next) = newest_first.get(per_page) {
        let mut url = req.url.clone();
        url.query_pairs_mut()
            .clear()
            .append_pair("per_page", &per_page.to_string())
            .append_pair("cursor", &format!("v1_{}", next["id"]));
        response = response.insert_header("link", format!("<{url}>; rel=\"next\""));
    }
    response
}

/// GitHub's error body with `status`.
fn github_error(status: u16) -> ResponseTemplate {
    let message = match status {
        404 => "Not Found",
        500..=599 => "Server Error",
        _ => "Error",
    };
    ResponseTemplate::new(status).set_body_json(json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": status.to_string()
    }))
}

/// The issue the issues API answers for `number`: the `issues.opened` webhook's issue
/// (a pull request's title and body when `number` is a known pull request), with the
/// text a test set.
fn issue_json(
    full_name: &str,
    number: u64,
    text: Option<(String, Option<String>)>,
    pull: Option<&Value>,
) -> Value {
    let mut issue = super::fixture_json("github/webhooks/issues.opened.json")["issue"].clone();
    issue["number"] = json!(number);
    let api = format!("https://api.github.com/repos/{full_name}/issues/{number}");
    issue["url"] = json!(api);
    issue["comments_url"] = json!(format!("{api}/comments"));
    issue["html_url"] = json!(format!("https://github.com/{full_name}/issues/{number}"));
    if let Some(pull) = pull {
        issue["title"] = pull["title"].clone();
        issue["body"] = pull["body"].clone();
        issue["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{full_name}/pulls/{number}"),
            "html_url": pull["html_url"].clone(),
        });
    }
    if let Some((title, body)) = text {
        issue["title"] = json!(title);
        issue["body"] = json!(body);
    }
    issue
}

/// GitHub's `issues/list-comments` example comment, on thread `number`.
fn example_comment(full_name: &str, number: u64) -> Value {
    let mut comment = example("issues__list-comments.response.200.default")[0].clone();
    comment["issue_url"] = json!(format!(
        "https://api.github.com/repos/{full_name}/issues/{number}"
    ));
    comment
}

/// One page of `items` as GitHub pages lists: `per_page` (default 30, at most 100) and
/// `page` (from 1) in the query, `prev`/`next`/`last`/`first` in a `Link` header.
fn paginated(req: &Request, items: Vec<Value>) -> ResponseTemplate {
    let page = Page::of(req, items, 30);
    let mut links = Vec::new();
    if page.number > 1 {
        links.push(page.link(req, page.number - 1, "prev"));
    }
    if page.number < page.last {
        links.push(page.link(req, page.number + 1, "next"));
        links.push(page.link(req, page.last, "last"));
    }
    if page.number > 1 {
        links.push(page.link(req, 1, "first"));
    }
    let mut response = ResponseTemplate::new(200).set_body_json(page.items);
    if !links.is_empty() {
        response = response.insert_header("link", links.join(", "));
    }
    response
}

/// The page of a list that a request asks for with `per_page` and `page` (the GitLab
/// fake pages the same way).
pub(super) struct Page {
    pub items: Vec<Value>,
    pub per_page: usize,
    /// From 1.
    pub number: usize,
    pub last: usize,
    pub total: usize,
}

impl Page {
    pub(super) fn of(req: &Request, items: Vec<Value>, default_per_page: usize) -> Page {
        let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        let number_in = |name: &str| query.get(name).and_then(|p| p.parse::<usize>().ok());
        let per_page = number_in("per_page")
            .unwrap_or(default_per_page)
            .clamp(1, 100);
        let number = number_in("page").unwrap_or(1).max(1);
        let total = items.len();
        Page {
            items: items
                .into_iter()
                .skip((number - 1) * per_page)
                .take(per_page)
                .collect(),
            per_page,
            number,
            last: total.div_ceil(per_page).max(1),
            total,
        }
    }

    /// A `Link` header entry: the request's URL at page `n`.
    pub(super) fn link(&self, req: &Request, n: usize, rel: &str) -> String {
        let kept: Vec<(String, String)> = req
            .url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .collect();
        let mut url = req.url.clone();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("per_page", &self.per_page.to_string())
            .append_pair("page", &n.to_string());
        format!("<{url}>; rel=\"{rel}\"")
    }
}

/// The Checks API (SPEC 17): `POST /repos/{o}/{r}/check-runs` stores a run shaped from
/// GitHub's example with the fields sent (then may lose the answer, as a proxy would),
/// `PATCH …/check-runs/{id}` changes it, `GET …/commits/{sha}/check-runs` lists the
/// commit's runs (`check_name` filters by name). Installation tokens only.
async fn mount_check_runs(
    server: &MockServer,
    runs: Arc<Mutex<Vec<Value>>>,
    lost: Arc<LostAnswers>,
) {
    let merge = |run: &mut Value, sent: &Value| {
        for key in [
            "name",
            "head_sha",
            "details_url",
            "external_id",
            "status",
            "conclusion",
            "started_at",
            "completed_at",
            "output",
        ] {
            if let Some(v) = sent.get(key) {
                run[key] = v.clone();
            }
        }
    };
    let (state, gone) = (runs.clone(), lost);
    Mock::given(method("POST"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/check-runs$"))
        .and(InstallationAuth)
        .respond_with(move |req: &Request| {
            let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let mut runs = state.lock().unwrap();
            let mut run = example("checks__create.response.201.in-progress");
            run["id"] = json!(7000 + runs.len() as u64);
            run["conclusion"] = Value::Null;
            merge(&mut run, &sent);
            runs.push(run.clone());
            if gone.take(Creation::CheckRun) {
                return bad_gateway();
            }
            ResponseTemplate::new(201).set_body_json(run)
        })
        .mount(server)
        .await;
    let state = runs.clone();
    Mock::given(method("PATCH"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/check-runs/\d+$"))
        .and(InstallationAuth)
        .respond_with(move |req: &Request| {
            let id: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
            let sent: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let mut runs = state.lock().unwrap();
            match runs.iter_mut().find(|r| r["id"] == json!(id)) {
                Some(run) => {
                    merge(run, &sent);
                    let mut answer = example("checks__update.response.200.default");
                    merge(&mut answer, run);
                    answer["id"] = json!(id);
                    ResponseTemplate::new(200).set_body_json(answer)
                }
                None => github_error(404),
            }
        })
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/repos/[^/]+/[^/]+/commits/[0-9a-f]+/check-runs$",
        ))
        .and(InstallationAuth)
        .respond_with(move |req: &Request| {
            let sha = req.url.path().split('/').nth(5).unwrap_or("").to_owned();
            let name = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "check_name")
                .map(|(_, v)| v.into_owned());
            let found: Vec<Value> = runs
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r["head_sha"] == json!(sha))
                .filter(|r| name.as_ref().is_none_or(|n| r["name"] == json!(n)))
                .cloned()
                .collect();
            let mut answer = example("checks__list-for-ref.response.200.default");
            answer["total_count"] = json!(found.len());
            answer["check_runs"] = json!(found);
            ResponseTemplate::new(200).set_body_json(answer)
        })
        .mount(server)
        .await;
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
