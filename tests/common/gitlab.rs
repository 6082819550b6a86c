//! An HTTP fake of the GitLab REST API v4 (wiremock) for the calls Repobox makes:
//! the current user, project members (inherited included), notes and award emoji.
//! Every endpoint only answers the bot's `PRIVATE-TOKEN`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const TOKEN: &str = "glpat-testtoken0123456789";
pub const BOT_USERNAME: &str = "repobox-bot";

pub struct FakeGitLab {
    pub server: MockServer,
    /// Merge requests the fake knows (preloaded or created through the API).
    pub merge_requests: Arc<Mutex<Vec<Value>>>,
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
        let levels: HashMap<u64, u64> = members.iter().copied().collect();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/members/all/\d+$"))
            .and(header("private-token", TOKEN))
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
            .and(header("private-token", TOKEN))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "id": 1, "name": "eyes", "user": { "id": 99, "username": BOT_USERNAME },
                "awardable_type": "Note"
            })))
            .mount(&server)
            .await;
        let next_id = Arc::new(AtomicU64::new(7000));
        Mock::given(method("POST"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes$",
            ))
            .and(header("private-token", TOKEN))
            .respond_with(move |req: &Request| {
                let sent = form_or_json(req);
                ResponseTemplate::new(201).set_body_json(json!({
                    "id": next_id.fetch_add(1, Ordering::SeqCst),
                    "body": sent["body"], "system": false,
                    "author": { "id": 99, "username": BOT_USERNAME }
                }))
            })
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path_regex(
                r"^/api/v4/projects/[^/]+/(issues|merge_requests)/\d+/notes/\d+$",
            ))
            .and(header("private-token", TOKEN))
            .respond_with(|req: &Request| {
                let sent = form_or_json(req);
                ResponseTemplate::new(200).set_body_json(json!({ "id": 1, "body": sent["body"] }))
            })
            .mount(&server)
            .await;
        FakeGitLab {
            server,
            merge_requests: Arc::default(),
        }
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
        for p in [
            format!("/api/v4/projects/{id}"),
            format!("/api/v4/projects/{encoded}"),
        ] {
            Mock::given(method("GET"))
                .and(path(p))
                .and(header("private-token", TOKEN))
                .respond_with(ResponseTemplate::new(200).set_body_json(project.clone()))
                .mount(&self.server)
                .await;
        }
        let mrs = self.merge_requests.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests/\d+$"))
            .and(header("private-token", TOKEN))
            .respond_with(move |req: &Request| {
                let iid: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                match mrs.lock().unwrap().iter().find(|m| m["iid"] == json!(iid)) {
                    Some(m) => ResponseTemplate::new(200).set_body_json(m.clone()),
                    None => ResponseTemplate::new(404)
                        .set_body_json(json!({"message": "404 Not found"})),
                }
            })
            .mount(&self.server)
            .await;
        let mrs = self.merge_requests.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests$"))
            .and(header("private-token", TOKEN))
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
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v4/projects/[^/]+/merge_requests$"))
            .and(header("private-token", TOKEN))
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
