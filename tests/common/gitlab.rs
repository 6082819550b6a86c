//! An HTTP fake of the GitLab REST API v4 (wiremock) for the calls Repobox makes:
//! the current user, project members (inherited included), notes and award emoji.
//! Every endpoint only answers the bot's `PRIVATE-TOKEN`, or a user's personal one
//! ([`PERSONAL_TOKEN`], SPEC 18: `GET /user` then names that user).
//!
//! Threads are stateful, keyed by kind and iid (one project per fake): any issue iid
//! answers `GET issues/:iid` (the issue of GitLab's documented Note Hook example), the
//! merge requests the fake knows answer `GET merge_requests/:iid`, and both answer a
//! paginated `GET …/notes` (by default the Note Hook example's note). Tests script them
//! with [`FakeGitLab::set_thread`], [`FakeGitLab::add_note`] and
//! [`FakeGitLab::add_system_note`]; notes Repobox posts or edits show up there.
//!
//! Failure switches, as GitLab behind a flaky proxy behaves: the next creations of a
//! note or merge request can be stored and then answered 502
//! ([`FakeGitLab::fail_after_creating`]), and the next requests of a route can be
//! refused 429 with GitLab's rate-limit headers and `retry-after: 1`
//! ([`FakeGitLab::throttle`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use repobox::model::ThreadKind;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

pub const TOKEN: &str = "glpat-testtoken0123456789";
/// A user's personal access token (a personal provider's).
pub const PERSONAL_TOKEN: &str = "glpat-personal-of-root-0123abcd";
/// The user [`PERSONAL_TOKEN`] belongs to (a project maintainer in the world).
pub const PERSONAL_USER_ID: u64 = 1;
pub const PERSONAL_USERNAME: &str = "root";

/// The bot's token or the personal one.
struct Token;

impl Match for Token {
    fn matches(&self, req: &Request) -> bool {
        req.headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t == TOKEN || t == PERSONAL_TOKEN)
    }
}
pub const BOT_USERNAME: &str = "repobox-bot";

pub struct FakeGitLab {
    pub server: MockServer,
    /// Merge requests the fake knows (preloaded or created through the API).
    pub merge_requests: Arc<Mutex<Vec<Value>>>,
    /// Issue and merge request threads by (`"issues"` or `"merge_requests"`, iid).
    pub threads: Arc<Mutex<HashMap<ThreadKey, Thread>>>,
    /// Ids of notes a test scripts (those Repobox posts count from 7000).
    scripted_ids: AtomicU64,
    /// How many more creations of each kind are stored and then answered 502.
    lost_answers: Arc<LostAnswers>,
    /// Commit statuses posted (`POST /projects/:id/statuses/:sha`), as GitLab answered
    /// them, oldest first (SPEC 17).
    pub statuses: Arc<Mutex<Vec<Value>>>,
}

/// What [`FakeGitLab::fail_after_creating`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// `POST /projects/:id/(issues|merge_requests)/:iid/notes`
    Note,
    /// `POST /projects/:id/merge_requests`
    MergeRequest,
}

#[derive(Default)]
struct LostAnswers {
    notes: AtomicUsize,
    merge_requests: AtomicUsize,
}

impl LostAnswers {
    fn counter(&self, what: Creation) -> &AtomicUsize {
        match what {
            Creation::Note => &self.notes,
            Creation::MergeRequest => &self.merge_requests,
        }
    }

    /// Whether this creation's answer is lost (counting it off).
    fn take(&self, what: Creation) -> bool {
        self.counter(what)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// `("issues" | "merge_requests", iid)`, as in the API paths.
pub type ThreadKey = (&'static str, u64);

/// What the fake knows of one thread beyond its defaults.
#[derive(Debug, Default)]
pub struct Thread {
    /// `(title, description)` set by [`FakeGitLab::set_thread`].
    pub text: Option<(String, Option<String>)>,
    /// Notes in the order written (scripted and posted through the API).
    pub notes: Vec<Value>,
    /// The example note is left out once a test adds notes of its own.
    pub scripted: bool,
    /// Status every read of the thread answers with ([`FakeGitLab::fail_thread`]).
    pub fail: Option<u16>,
}

fn thread_key(kind: ThreadKind, iid: u64) -> ThreadKey {
    match kind {
        ThreadKind::Issue => ("issues", iid),
        ThreadKind::PullRequest | ThreadKind::MergeRequest => ("merge_requests", iid),
    }
}

/// The thread a request path names: `/api/v4/projects/:id/(issues|merge_requests)/:iid…`.
fn request_thread(req: &Request) -> ThreadKey {
    let mut parts = req.url.path().split('/').skip(5);
    let kind = match parts.next() {
        Some("issues") => "issues",
        _ => "merge_requests",
    };
    (kind, parts.next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

impl FakeGitLab {
    /// `members`: user id → access level (10 guest … 50 owner); others are not members.
    pub async fn start(members: &[(u64, u64)]) -> FakeGitLab {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v4/user"))
            .and(header("private-token", TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 99, "username": BOT_USERNAME, "name": "Repobox", "state": "active",
                "bot": true, "web_url": "http://gitlab.example/repobox-bot"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v4/user"))
            .and(header("private-token", PERSONAL_TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": PERSONAL_USER_ID, "username": PERSONAL_USERNAME, "name": "Administrator",
                "state": "active", "bot": false, "web_url": "http://gitlab.example/root"
            })))
            .mount(&server)
            .await;
        let levels: HashMap<u64, u64> = members.iter().copied().collect();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/members/all/\d+$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let id: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                match levels.get(&id) {
                    Some(level) => ResponseTemplate::new(200).set_body_json(json!({
                        "id": id, "username": format!("user{id}"), "name": "User",
                        "state": "active", "access_level": level,
                        "web_url": format!("http://gitlab.example/user{id}")
                    })),
                    None => ResponseTemplate::new(404)
                        .set_body_json(json!({ "message": "404 Not found" })),
                }
            })
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes/\d+/award_emoji$",
            ))
            .and(Token)
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "id": 1, "name": "eyes", "user": { "id": 99, "username": BOT_USERNAME },
                "awardable_type": "Note"
            })))
            .mount(&server)
            .await;
        let threads: Arc<Mutex<HashMap<ThreadKey, Thread>>> = Arc::default();
        let lost_answers: Arc<LostAnswers> = Arc::default();
        let next_id = AtomicU64::new(7000);
        let state = threads.clone();
        let lost = lost_answers.clone();
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes$",
            ))
            .and(Token)
            .respond_with(move |req: &Request| {
                let sent = form_or_json(req);
                let key = request_thread(req);
                let note = note_json(
                    next_id.fetch_add(1, Ordering::SeqCst),
                    key,
                    BOT_USERNAME,
                    sent["body"].as_str().unwrap_or_default(),
                    false,
                );
                state
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .notes
                    .push(note.clone());
                if lost.take(Creation::Note) {
                    return super::github::bad_gateway();
                }
                ResponseTemplate::new(201).set_body_json(note)
            })
            .mount(&server)
            .await;
        let state = threads.clone();
        Mock::given(method("PUT"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes/\d+$",
            ))
            .and(Token)
            .respond_with(move |req: &Request| {
                let sent = form_or_json(req);
                let id: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                let mut threads = state.lock().unwrap();
                let note = threads
                    .get_mut(&request_thread(req))
                    .and_then(|t| t.notes.iter_mut().find(|n| n["id"] == json!(id)));
                match note {
                    Some(n) => {
                        n["body"] = sent["body"].clone();
                        ResponseTemplate::new(200).set_body_json(n.clone())
                    }
                    None => ResponseTemplate::new(200)
                        .set_body_json(json!({ "id": id, "body": sent["body"] })),
                }
            })
            .mount(&server)
            .await;
        // Commit statuses: GitLab's documented answer (`POST /projects/:id/statuses/:sha`,
        // "Set the pipeline status of a commit") with the fields sent; the form or JSON
        // body both read.
        let statuses: Arc<Mutex<Vec<Value>>> = Arc::default();
        let state = statuses.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/statuses/[0-9a-f]+$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let sha = req.url.path().rsplit('/').next().unwrap_or("").to_owned();
                let sent: Value = serde_json::from_slice(&req.body).unwrap_or_else(|_| {
                    let pairs: serde_json::Map<String, Value> =
                        url::form_urlencoded::parse(&req.body)
                            .chain(req.url.query_pairs())
                            .map(|(k, v)| (k.into_owned(), json!(v)))
                            .collect();
                    Value::Object(pairs)
                });
                let mut list = state.lock().unwrap();
                let status = json!({
                    "id": 90 + list.len() as u64,
                    "sha": sha,
                    "ref": Value::Null,
                    "status": sent["state"],
                    "name": sent["name"],
                    "target_url": sent["target_url"],
                    "description": sent["description"],
                    "created_at": "2016-01-19T09:05:50.355Z",
                    "started_at": Value::Null,
                    "finished_at": Value::Null,
                    "allow_failure": false,
                    "coverage": Value::Null,
                    "author": { "id": 99, "username": BOT_USERNAME, "name": "Repobox", "state": "active" },
                });
                list.push(status.clone());
                ResponseTemplate::new(201).set_body_json(status)
            })
            .mount(&server)
            .await;
        FakeGitLab {
            statuses,
            server,
            merge_requests: Arc::default(),
            threads,
            scripted_ids: AtomicU64::new(1_000_000),
            lost_answers,
        }
    }

    /// The next `n` creations of `what` are stored (visible to later reads and lists,
    /// exactly as after a success) and then answered 502 Bad Gateway.
    pub fn fail_after_creating(&self, what: Creation, n: usize) {
        self.lost_answers.counter(what).store(n, Ordering::SeqCst);
    }

    /// The next `n` `http_method` requests whose path matches `path_pattern` (a regex)
    /// are refused as GitLab's rate limiter refuses them: 429, `Retry later`, the
    /// `RateLimit-*` headers and `retry-after: 1`, doing nothing.
    pub async fn throttle(&self, http_method: &str, path_pattern: &str, n: u64) {
        let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 1;
        Mock::given(method(http_method))
            .and(path_regex(path_pattern))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("content-type", "text/plain")
                    .insert_header("retry-after", "1")
                    .insert_header("ratelimit-name", "throttle_authenticated_api")
                    .insert_header("ratelimit-limit", "60")
                    .insert_header("ratelimit-observed", "67")
                    .insert_header("ratelimit-remaining", "0")
                    .insert_header("ratelimit-reset", reset.to_string())
                    .set_body_string("Retry later\n"),
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

    /// Serves the project `id` (`path`), cloned from `clone_url`, and its merge requests
    /// (stateful: created ones are listed and fetched).
    pub async fn serve_project(
        &self,
        id: u64,
        full_path: &str,
        clone_url: &str,
        default_branch: &str,
    ) {
        let path_str = full_path;
        let encoded = path_str.replace('/', "%2F");
        let project = json!({
            "id": id, "path_with_namespace": path_str, "default_branch": default_branch,
            "http_url_to_repo": clone_url, "web_url": format!("http://gitlab.example/{path_str}"),
            "name": path_str.rsplit('/').next().unwrap(), "visibility": "private"
        });
        // The projects the bot is a member of with at least Developer access.
        Mock::given(method("GET"))
            .and(path("/api/v4/projects"))
            .and(wiremock::matchers::query_param("membership", "true"))
            .and(wiremock::matchers::query_param("min_access_level", "30"))
            .and(Token)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([project.clone()])))
            .mount(&self.server)
            .await;
        for p in [
            format!("/api/v4/projects/{id}"),
            format!("/api/v4/projects/{encoded}"),
        ] {
            Mock::given(method("GET"))
                .and(path(p))
                .and(Token)
                .respond_with(ResponseTemplate::new(200).set_body_json(project.clone()))
                .mount(&self.server)
                .await;
        }
        let (mrs, threads) = (self.merge_requests.clone(), self.threads.clone());
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests/\d+$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let key = request_thread(req);
                let threads = threads.lock().unwrap();
                let thread = threads.get(&key);
                if let Some(status) = thread.and_then(|t| t.fail) {
                    return gitlab_error(status);
                }
                match mrs
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|m| m["iid"] == json!(key.1))
                {
                    Some(m) => {
                        let mut m = m.clone();
                        if let Some((title, description)) = thread.and_then(|t| t.text.clone()) {
                            m["title"] = json!(title);
                            m["description"] = json!(description);
                        }
                        ResponseTemplate::new(200).set_body_json(m)
                    }
                    None => gitlab_error(404),
                }
            })
            .mount(&self.server)
            .await;
        let threads = self.threads.clone();
        let web_base = format!("http://gitlab.example/{path_str}");
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/issues/\d+$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let key = request_thread(req);
                let threads = threads.lock().unwrap();
                let thread = threads.get(&key);
                if let Some(status) = thread.and_then(|t| t.fail) {
                    return gitlab_error(status);
                }
                let mut issue = example_hook("note_hook.issue.json")["issue"].clone();
                issue["iid"] = json!(key.1);
                issue["project_id"] = json!(id);
                issue["web_url"] = json!(format!("{web_base}/-/issues/{}", key.1));
                issue["author"] = json!({ "id": 1, "username": "root", "name": "Administrator" });
                if let Some((title, description)) = thread.and_then(|t| t.text.clone()) {
                    issue["title"] = json!(title);
                    issue["description"] = json!(description);
                }
                ResponseTemplate::new(200).set_body_json(issue)
            })
            .mount(&self.server)
            .await;
        let threads = self.threads.clone();
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes$",
            ))
            .and(Token)
            .respond_with(move |req: &Request| {
                let key = request_thread(req);
                let threads = threads.lock().unwrap();
                let thread = threads.get(&key);
                if let Some(status) = thread.and_then(|t| t.fail) {
                    return gitlab_error(status);
                }
                let mut all = Vec::new();
                if thread.is_none_or(|t| !t.scripted) {
                    all.push(example_note(key));
                }
                all.extend(thread.iter().flat_map(|t| t.notes.iter().cloned()));
                let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
                if query.get("sort").map(String::as_str) == Some("desc") {
                    all.reverse();
                }
                paginated(req, all)
            })
            .mount(&self.server)
            .await;
        let mrs = self.merge_requests.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let q = form_or_json(req);
                let found: Vec<Value> = mrs
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|m| {
                        q.get("source_branch")
                            .is_none_or(|b| m["source_branch"] == *b)
                            && q.get("state").is_none_or(|s| m["state"] == *s)
                    })
                    .cloned()
                    .collect();
                ResponseTemplate::new(200).set_body_json(found)
            })
            .mount(&self.server)
            .await;
        let mrs = self.merge_requests.clone();
        let path_owned = path_str.to_owned();
        let lost = self.lost_answers.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests$"))
            .and(Token)
            .respond_with(move |req: &Request| {
                let sent = form_or_json(req);
                let (Some(source), Some(target), Some(title)) = (
                    sent["source_branch"].as_str(),
                    sent["target_branch"].as_str(),
                    sent["title"].as_str(),
                ) else {
                    return ResponseTemplate::new(400)
                        .set_body_json(json!({"message": "400 Bad request"}));
                };
                let mut mrs = mrs.lock().unwrap();
                let iid = 50 + mrs.len() as u64;
                let mr = merge_request_json(
                    id,
                    &path_owned,
                    iid,
                    source,
                    "",
                    target,
                    true,
                    title,
                    sent["description"].as_str().unwrap_or_default(),
                );
                mrs.push(mr.clone());
                if lost.take(Creation::MergeRequest) {
                    return super::github::bad_gateway();
                }
                ResponseTemplate::new(201).set_body_json(mr)
            })
            .mount(&self.server)
            .await;
    }

    /// Preloads a merge request (an MR thread to run a job on).
    #[allow(clippy::too_many_arguments)]
    pub fn add_merge_request(
        &self,
        project_id: u64,
        path: &str,
        iid: u64,
        source: &str,
        sha: &str,
        target: &str,
        same_project: bool,
    ) {
        self.merge_requests.lock().unwrap().push(merge_request_json(
            project_id,
            path,
            iid,
            source,
            sha,
            target,
            same_project,
            "A merge request",
            "",
        ));
    }

    /// Gives a thread this title and description (`None`: GitLab's `null`). A merge
    /// request must also be known to the fake ([`FakeGitLab::add_merge_request`]).
    pub fn set_thread<'a>(
        &self,
        kind: ThreadKind,
        iid: u64,
        title: &str,
        description: impl Into<Option<&'a str>>,
    ) {
        self.threads
            .lock()
            .unwrap()
            .entry(thread_key(kind, iid))
            .or_default()
            .text = Some((title.to_owned(), description.into().map(str::to_owned)));
    }

    /// Appends a note by `username` to a thread (the first one replaces the example
    /// note); returns its id. A note by [`BOT_USERNAME`] is Repobox's own.
    pub fn add_note(&self, kind: ThreadKind, iid: u64, username: &str, body: &str) -> u64 {
        self.push_note(kind, iid, username, body, false)
    }

    /// Appends a system note ("added 1 commit") to a thread; returns its id.
    pub fn add_system_note(&self, kind: ThreadKind, iid: u64, body: &str) -> u64 {
        self.push_note(kind, iid, "root", body, true)
    }

    fn push_note(
        &self,
        kind: ThreadKind,
        iid: u64,
        username: &str,
        body: &str,
        system: bool,
    ) -> u64 {
        let id = self.scripted_ids.fetch_add(1, Ordering::SeqCst);
        let key = thread_key(kind, iid);
        let mut threads = self.threads.lock().unwrap();
        let thread = threads.entry(key).or_default();
        thread.scripted = true;
        thread
            .notes
            .push(note_json(id, key, username, body, system));
        id
    }

    /// Makes every read of a thread (the issue or merge request, and its notes) answer
    /// `status` with GitLab's error body.
    pub fn fail_thread(&self, kind: ThreadKind, iid: u64, status: u16) {
        self.threads
            .lock()
            .unwrap()
            .entry(thread_key(kind, iid))
            .or_default()
            .fail = Some(status);
    }

    /// Form bodies of merge requests created through the API.
    pub async fn created_merge_requests(&self) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/merge_requests"))
            .map(|r| form_or_json(&r))
            .collect()
    }

    /// Every body note `id` was edited to, in order.
    pub async fn note_edits(&self, id: u64) -> Vec<String> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| {
                r.method.as_str() == "PUT" && r.url.path().ends_with(&format!("/notes/{id}"))
            })
            .map(|r| {
                form_or_json(&r)["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--gitlab-url".into(),
            self.server.uri(),
            "--gitlab-token".into(),
            TOKEN.into(),
        ]
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// `(path, award name)` of every award emoji posted.
    pub async fn awards(&self) -> Vec<(String, String)> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/award_emoji"))
            .map(|r| {
                let name = form_or_json(&r)["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (r.url.path().to_owned(), name)
            })
            .collect()
    }

    /// `(path, body)` of every note created.
    pub async fn notes(&self) -> Vec<(String, String)> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/notes"))
            .map(|r| {
                let body = form_or_json(&r)["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (r.url.path().to_owned(), body)
            })
            .collect()
    }
}

/// A GitLab documentation webhook example (`tests/fixtures/gitlab/docs`).
fn example_hook(name: &str) -> Value {
    super::fixture_json(&format!("gitlab/docs/{name}"))
}

/// A note in the API's shape.
fn note_json(id: u64, key: ThreadKey, username: &str, body: &str, system: bool) -> Value {
    json!({
        "id": id, "type": null, "body": body, "system": system,
        "author": {
            "id": if username == BOT_USERNAME { 99 } else { 1000 + id },
            "username": username, "name": username, "state": "active"
        },
        "created_at": "2015-05-17T17:06:40.000Z", "updated_at": "2015-05-17T17:06:40.000Z",
        "noteable_type": if key.0 == "issues" { "Issue" } else { "MergeRequest" },
        "noteable_iid": key.1, "resolvable": false, "confidential": false, "internal": false
    })
}

/// The note of GitLab's documented Note Hook example, in the API's shape.
fn example_note(key: ThreadKey) -> Value {
    let hook = example_hook("note_hook.issue.json");
    let attrs = &hook["object_attributes"];
    let mut note = note_json(
        attrs["id"].as_u64().unwrap_or(1),
        key,
        hook["user"]["username"].as_str().unwrap_or("root"),
        attrs["note"].as_str().unwrap_or_default(),
        false,
    );
    note["author"]["id"] = hook["user"]["id"].clone();
    note["author"]["name"] = hook["user"]["name"].clone();
    note
}

/// GitLab's error body with `status`.
fn gitlab_error(status: u16) -> ResponseTemplate {
    let message = match status {
        404 => "404 Not found".to_owned(),
        s => format!("{s} Error"),
    };
    ResponseTemplate::new(status).set_body_json(json!({ "message": message }))
}

/// One page of `items` as GitLab pages lists: `per_page` (default 20, at most 100) and
/// `page` (from 1) in the query; `x-page`, `x-per-page`, `x-total`, `x-total-pages`,
/// `x-next-page`, `x-prev-page` and a `Link` header in the answer.
fn paginated(req: &Request, items: Vec<Value>) -> ResponseTemplate {
    let page = super::github::Page::of(req, items, 20);
    let (number, last) = (page.number, page.last);
    let mut links = Vec::new();
    if number > 1 {
        links.push(page.link(req, number - 1, "prev"));
    }
    if number < last {
        links.push(page.link(req, number + 1, "next"));
    }
    links.push(page.link(req, 1, "first"));
    links.push(page.link(req, last, "last"));
    let next = if number < last {
        (number + 1).to_string()
    } else {
        String::new()
    };
    let prev = if number > 1 {
        (number - 1).to_string()
    } else {
        String::new()
    };
    ResponseTemplate::new(200)
        .insert_header("x-page", number.to_string())
        .insert_header("x-per-page", page.per_page.to_string())
        .insert_header("x-total", page.total.to_string())
        .insert_header("x-total-pages", last.to_string())
        .insert_header("x-next-page", next)
        .insert_header("x-prev-page", prev)
        .insert_header("link", links.join(", "))
        .set_body_json(page.items)
}

/// The gitlab crate sends form-encoded bodies (and query strings for some calls).
fn form_or_json(req: &Request) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
        return v;
    }
    let mut map = serde_json::Map::new();
    let query = req.url.query().unwrap_or_default().as_bytes().to_vec();
    for source in [req.body.clone(), query] {
        for (k, v) in url::form_urlencoded::parse(&source) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    Value::Object(map)
}

/// A merge request in GitLab's API shape.
#[allow(clippy::too_many_arguments)]
fn merge_request_json(
    project_id: u64,
    path: &str,
    iid: u64,
    source: &str,
    sha: &str,
    target: &str,
    same_project: bool,
    title: &str,
    description: &str,
) -> Value {
    json!({
        "id": 1000 + iid, "iid": iid, "project_id": project_id, "title": title,
        "description": description, "state": "opened",
        "source_branch": source, "target_branch": target, "sha": sha,
        "source_project_id": if same_project { project_id } else { project_id + 1 },
        "target_project_id": project_id,
        "web_url": format!("http://gitlab.example/{path}/-/merge_requests/{iid}"),
        "draft": title.starts_with("Draft:"), "work_in_progress": title.starts_with("Draft:"),
        "author": { "id": 99, "username": BOT_USERNAME }
    })
}
