//! An HTTP fake of the GitLab REST API v4 (wiremock) for the calls Repobox makes:
//! the current user, project members (inherited included), notes and award emoji.
//! Every endpoint only answers the bot's `PRIVATE-TOKEN`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const TOKEN: &str = "glpat-testtoken0123456789";
pub const BOT_USERNAME: &str = "repobox-bot";

pub struct FakeGitLab {
    pub server: MockServer,
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
        FakeGitLab { server }
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
