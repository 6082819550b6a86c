//! GitLab adapter over the `gitlab` crate's async client (`AsyncGitlab` + `AsyncQuery`;
//! the crate's plain client is blocking and must never run on a tokio worker).
//!
//! The client is built on first use: building it asks GitLab who the token belongs to,
//! and Repobox must start even while GitLab is unreachable. That answer also tells
//! intake which username is Repobox itself (its notes never trigger).
//!
//! The crate's endpoints are sent through [`GitLabApi`], Repobox's own HTTP client
//! (the crate's `AsyncGitlab` has no timeouts and drops the headers of an answer that
//! asks to slow down): connect and request timeouts from [`ForgeOptions::timeout`], no
//! retries of its own ([`super::with_retries`] is the one retry layer), and a 429 (or an
//! answer with `retry-after`) becomes [`ForgeError::RateLimited`] with the wait GitLab
//! named. Content writes take a write from the token's request budget first.

pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gitlab::api::{self, AsyncClient, AsyncQuery, RestClient};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::budget::{self, Wait};
use super::{
    ChangeRequest, Discussion, DiscussionComment, Forge, ForgeError, ForgeOptions, GitIdentity,
    HeadState, HeadStatus, LatestComments, NewChangeRequest, RepoInfo,
};
use crate::git::Credentials;
use crate::model::{
    AccessLevel, CommentRef, ForgeKind, Reaction, RepoRef, ThreadKind, ThreadRef, UserRef,
};
use crate::secret::{Secret, redact};

pub struct GitLab {
    /// `host[:port][/path]` as the gitlab crate wants it.
    host: String,
    insecure: bool,
    token: Secret,
    client: OnceCell<GitLabApi>,
    /// Username of the token's user, learned when the client is built.
    bot_username: Arc<std::sync::OnceLock<String>>,
    /// Commit identity of the token's user, learned with the username.
    identity: std::sync::OnceLock<GitIdentity>,
    options: ForgeOptions,
}

/// The HTTP client the gitlab crate's endpoints go through (see the module header).
pub struct GitLabApi {
    http: reqwest::Client,
    /// `<scheme>://<host>/api/v4/`
    rest_url: url::Url,
    token: Secret,
    /// For the text of a timeout.
    options: ForgeOptions,
}

/// Why [`GitLabApi`] has no answer to hand to the gitlab crate. The texts carry no token.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Timeout(String),
    #[error("GitLab unreachable: {0}")]
    Transport(String),
    /// GitLab asked to slow down (429, or an error answer naming a wait).
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl RestClient for GitLabApi {
    type Error = HttpError;

    fn rest_endpoint(&self, endpoint: &str) -> Result<url::Url, api::ApiError<HttpError>> {
        Ok(self.rest_url.join(endpoint)?)
    }
}

#[async_trait]
impl AsyncClient for GitLabApi {
    async fn rest_async(
        &self,
        request: http::request::Builder,
        body: Vec<u8>,
    ) -> Result<http::Response<Bytes>, api::ApiError<HttpError>> {
        let fail = |e: HttpError| api::ApiError::client(e);
        let mut token = http::HeaderValue::from_str(self.token.expose()).map_err(|_| {
            fail(HttpError::Transport(
                "the token is not a valid header".into(),
            ))
        })?;
        token.set_sensitive(true);
        let request = request
            .header("private-token", token)
            .body(body)
            .map_err(|e| fail(HttpError::Transport(e.to_string())))?;
        let request =
            reqwest::Request::try_from(request).map_err(|e| fail(self.transport_error(&e)))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| fail(self.transport_error(&e)))?;
        let (status, version, headers) = (
            response.status(),
            response.version(),
            response.headers().clone(),
        );
        let bytes = response
            .bytes()
            .await
            .map_err(|e| fail(self.transport_error(&e)))?;
        if !status.is_success() {
            let message = format!("GitLab API {status}: {}", error_message(status, &bytes));
            let message = redact(&message, &[&self.token]);
            if let ForgeError::RateLimited {
                message,
                retry_after,
            } = ForgeError::from_response(status.as_u16(), &headers, message)
            {
                return Err(fail(HttpError::Throttled {
                    message,
                    retry_after,
                }));
            }
        }
        let mut answer = http::Response::new(bytes);
        *answer.status_mut() = status;
        *answer.version_mut() = version;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl GitLabApi {
    fn transport_error(&self, e: &reqwest::Error) -> HttpError {
        if e.is_timeout() {
            HttpError::Timeout(self.options.timeout_message("GitLab"))
        } else {
            HttpError::Transport(redact(&e.to_string(), &[&self.token]))
        }
    }
}

/// GitLab's `message` (or `error`) of an error answer, else the status's reason.
fn error_message(status: http::StatusCode, body: &[u8]) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = match &parsed["message"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    text.or_else(|| parsed["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
}

#[derive(Deserialize)]
struct Member {
    access_level: u64,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
}

/// Notes asked for per page (GitLab's maximum).
const NOTES_PER_PAGE: usize = 100;

/// Most pages of notes [`Forge::discussion`] reads for one thread (1000 notes). A longer
/// thread is read from its first page and its last pages (`x-total-pages` tells where
/// they are); the notes of the pages in between are counted as omitted, system notes
/// among them, so `omitted` is an upper bound there.
const DISCUSSION_MAX_PAGES: u64 = 10;

/// Most pages of notes [`Forge::find_comment`] reads, newest first (1000 notes).
const FIND_MAX_PAGES: u64 = 10;

/// An issue or merge request: the part the agent's context quotes.
#[derive(Deserialize)]
struct ThreadText {
    title: String,
    #[serde(default)]
    description: Option<String>,
    /// The opener.
    #[serde(default)]
    author: Option<NoteAuthor>,
}

#[derive(Deserialize)]
struct ThreadNote {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    /// A diff note's place (`type: DiffNote`); absent on other notes.
    #[serde(default)]
    position: Option<NotePosition>,
    /// Notes GitLab writes itself ("changed the description", "added 1 commit").
    #[serde(default)]
    system: bool,
    author: NoteAuthor,
}

#[derive(Deserialize)]
struct NotePosition {
    #[serde(default)]
    new_path: Option<String>,
    #[serde(default)]
    new_line: Option<u64>,
    #[serde(default)]
    old_line: Option<u64>,
}

#[derive(Deserialize)]
struct NoteAuthor {
    username: String,
    #[serde(default)]
    id: u64,
}

/// A page header holding a page number (`x-next-page`, `x-total-pages`); GitLab sends
/// an empty value on the last page.
fn header_page(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `page` of the `rel="next"` target in a `Link` header (when `x-next-page` is
/// missing, as behind some proxies).
fn link_next_page(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|link| link.contains("rel=\"next\""))
        .and_then(|link| {
            let target = link.split(';').next()?.trim();
            let url = url::Url::parse(target.trim_start_matches('<').trim_end_matches('>')).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse().ok())
        })
}

#[derive(Deserialize)]
struct CurrentUser {
    username: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    commit_email: Option<String>,
    #[serde(default)]
    public_email: Option<String>,
}

#[derive(Deserialize)]
struct ProjectBody {
    http_url_to_repo: String,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequestBody {
    iid: u64,
    web_url: String,
    state: String,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    sha: Option<String>,
    source_project_id: u64,
    target_project_id: u64,
}

impl MergeRequestBody {
    fn into_change_request(self) -> ChangeRequest {
        ChangeRequest {
            head_ref: format!("refs/merge-requests/{}/head", self.iid),
            number: self.iid,
            url: self.web_url,
            same_repo: self.source_project_id == self.target_project_id,
            head_branch: self.source_branch,
            head_sha: self.sha.unwrap_or_default(),
            base_branch: self.target_branch,
            open: self.state == "opened",
        }
    }
}

fn status(e: &api::ApiError<HttpError>) -> Option<u16> {
    use api::ApiError as E;
    match e {
        E::Client {
            source: HttpError::Throttled { .. },
        } => Some(429),
        E::GitlabService { status, .. }
        | E::GitlabWithStatus { status, .. }
        | E::GitlabObjectWithStatus { status, .. }
        | E::GitlabUnrecognizedWithStatus { status, .. } => Some(status.as_u16()),
        E::GitlabRateLimited { .. } => Some(429),
        _ => None,
    }
}

fn map_err(token: &Secret, e: api::ApiError<HttpError>) -> ForgeError {
    use api::ApiError as E;
    match e {
        E::Client {
            source:
                HttpError::Throttled {
                    message,
                    retry_after,
                },
        } => ForgeError::RateLimited {
            message,
            retry_after,
        },
        E::Client {
            source: HttpError::Timeout(text),
        } => ForgeError::Transient(text),
        E::GitlabRateLimited { retry_after, .. } => ForgeError::RateLimited {
            message: "GitLab API 429: rate limited".into(),
            retry_after: (!retry_after.is_zero()).then_some(retry_after),
        },
        e => {
            let status = status(&e);
            let text = redact(&format!("GitLab API: {e}"), &[token]);
            match status {
                Some(s) => ForgeError::from_status(s, text),
                None => ForgeError::Transient(text),
            }
        }
    }
}

impl GitLab {
    /// `url` is `REPOBOX_GITLAB_URL`, e.g. `https://gitlab.example.com`.
    pub fn new(url: &str, token: Secret, options: ForgeOptions) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("REPOBOX_GITLAB_URL is not a URL: {e}"))?;
        let insecure = match parsed.scheme() {
            "https" => false,
            "http" => true,
            other => anyhow::bail!("REPOBOX_GITLAB_URL has unsupported scheme `{other}`"),
        };
        let mut host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("REPOBOX_GITLAB_URL has no host"))?
            .to_owned();
        if let Some(port) = parsed.port() {
            host.push_str(&format!(":{port}"));
        }
        host.push_str(parsed.path().trim_end_matches('/'));
        Ok(GitLab {
            host,
            insecure,
            token,
            client: OnceCell::new(),
            bot_username: Arc::default(),
            identity: std::sync::OnceLock::new(),
            options,
        })
    }

    /// Shared handle on the bot's username, filled once the client has been built.
    pub fn bot_username(&self) -> Arc<std::sync::OnceLock<String>> {
        self.bot_username.clone()
    }

    /// Builds the client (and learns the bot's username) if that has not happened yet.
    pub async fn client(&self) -> Result<&GitLabApi, ForgeError> {
        self.client
            .get_or_try_init(|| async {
                let scheme = if self.insecure { "http" } else { "https" };
                let rest_url = url::Url::parse(&format!("{scheme}://{}/api/v4/", self.host))
                    .map_err(|e| ForgeError::Permanent(format!("REPOBOX_GITLAB_URL: {e}")))?;
                let http = reqwest::Client::builder()
                    .user_agent(concat!("repobox/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(self.options.timeout)
                    .timeout(self.options.timeout)
                    .build()
                    .map_err(|e| {
                        ForgeError::Permanent(format!("GitLab HTTP client not built: {e}"))
                    })?;
                let client = GitLabApi {
                    http,
                    rest_url,
                    token: self.token.clone(),
                    options: self.options.clone(),
                };
                let me: CurrentUser = api::users::CurrentUser::builder()
                    .build()
                    .expect("no required fields")
                    .query_async(&client)
                    .await
                    .map_err(|e| map_err(&self.token, e))?;
                let host = self.noreply_host();
                let identity = GitIdentity {
                    name: me.name.clone().unwrap_or_else(|| me.username.clone()),
                    email: me
                        .commit_email
                        .clone()
                        .or(me.public_email.clone())
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| format!("{}@noreply.{host}", me.username)),
                };
                let _ = self.identity.set(identity);
                let _ = self.bot_username.set(me.username);
                Ok(client)
            })
            .await
    }

    /// The host part of `noreply.<host>` e-mail addresses for commits.
    fn noreply_host(&self) -> &str {
        self.host.split([':', '/']).next().unwrap_or("gitlab")
    }

    /// The request budget key of the token: its user on this GitLab.
    fn budget_key(&self) -> String {
        let user = self.bot_username.get().map(String::as_str).unwrap_or("");
        format!("gitlab:{}:{user}", self.host)
    }

    /// One content write: takes a write from the token's budget (`Ok(None)` when `wait`
    /// is [`Wait::No`] and there is none), then sends `write` once (a future does
    /// nothing until polled), and pauses the token's writes when GitLab answers 429.
    async fn write<T>(
        &self,
        wait: Wait,
        write: impl Future<Output = Result<T, api::ApiError<HttpError>>>,
    ) -> Result<Option<T>, ForgeError> {
        let key = self.budget_key();
        let budget = self.options.budget.as_ref();
        if !budget::take_write(budget, &key, wait).await {
            return Ok(None);
        }
        match write.await {
            Ok(done) => Ok(Some(done)),
            Err(e) => {
                let e = map_err(&self.token, e);
                budget::note_rate_limit(budget, &key, &e).await;
                Err(e)
            }
        }
    }

    /// Edits a note once, if the token's budget gives a write (`wait`).
    async fn edit_note(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        note_id: u64,
        body: &str,
        wait: Wait,
    ) -> Result<bool, ForgeError> {
        let client = self.client().await?;
        let project = Self::project(repo);
        let written = match thread.kind {
            ThreadKind::Issue => {
                let edit = api::projects::issues::notes::EditIssueNote::builder()
                    .project(project)
                    .issue(thread.number)
                    .note(note_id)
                    .body(body)
                    .build()
                    .expect("all fields set");
                self.write(wait, api::ignore(edit).query_async(client))
                    .await?
            }
            _ => {
                let edit = api::projects::merge_requests::notes::EditMergeRequestNote::builder()
                    .project(project)
                    .merge_request(thread.number)
                    .note(note_id)
                    .body(body)
                    .build()
                    .expect("all fields set");
                self.write(wait, api::ignore(edit).query_async(client))
                    .await?
            }
        };
        Ok(written.is_some())
    }

    fn project(repo: &RepoRef) -> api::common::NameOrId<'static> {
        match repo.id {
            Some(id) => id.into(),
            None => repo.full_name.clone().into(),
        }
    }

    /// The API path of a thread's notes (`projects/:id/(issues|merge_requests)/:iid/notes`).
    fn notes_path(repo: &RepoRef, thread: ThreadRef) -> String {
        let kind = match thread.kind {
            ThreadKind::Issue => "issues",
            _ => "merge_requests",
        };
        format!(
            "projects/{}/{kind}/{}/notes",
            Self::project(repo),
            thread.number
        )
    }

    /// One page of a thread's notes, oldest first, with the response headers (which
    /// the gitlab crate's pager does not show, and its pager has no page bound).
    async fn notes_page(
        &self,
        client: &GitLabApi,
        path: &str,
        sort: &str,
        page: u64,
    ) -> Result<(Vec<ThreadNote>, http::HeaderMap), ForgeError> {
        let mut url = client
            .rest_endpoint(path)
            .map_err(|e| map_err(&self.token, e))?;
        url.query_pairs_mut()
            .append_pair("sort", sort)
            .append_pair("order_by", "created_at")
            .append_pair("per_page", &NOTES_PER_PAGE.to_string())
            .append_pair("page", &page.to_string());
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str());
        let response = client
            .rest_async(request, Vec::new())
            .await
            .map_err(|e| map_err(&self.token, e))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).unwrap_or_default();
            let message = body["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"));
            return Err(ForgeError::from_response(
                status.as_u16(),
                response.headers(),
                redact(&format!("GitLab API {status}: {message}"), &[&self.token]),
            ));
        }
        let notes = serde_json::from_slice(response.body()).map_err(|e| {
            ForgeError::Permanent(format!("GitLab API: unexpected notes response: {e}"))
        })?;
        Ok((notes, response.headers().clone()))
    }
}

#[async_trait]
impl Forge for GitLab {
    fn kind(&self) -> ForgeKind {
        ForgeKind::GitLab
    }

    async fn access_level(
        &self,
        repo: &RepoRef,
        user: &UserRef,
    ) -> Result<AccessLevel, ForgeError> {
        let client = self.client().await?;
        let endpoint = api::projects::members::AllProjectMember::builder()
            .project(Self::project(repo))
            .user(user.id)
            .build()
            .expect("all fields set");
        let member: Result<Member, _> = endpoint.query_async(client).await;
        let level = match member {
            Ok(m) => m.access_level,
            // Not a member (directly or inherited).
            Err(e) if status(&e) == Some(404) => return Ok(AccessLevel::None),
            Err(e) => return Err(map_err(&self.token, e)),
        };
        Ok(match level {
            50.. => AccessLevel::Admin,
            30..=49 => AccessLevel::Write,
            10..=29 => AccessLevel::Read,
            _ => AccessLevel::None,
        })
    }

    async fn react(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment: CommentRef,
        reaction: Reaction,
    ) -> Result<(), ForgeError> {
        let client = self.client().await?;
        let project = Self::project(repo);
        match thread.kind {
            ThreadKind::Issue => {
                let award = api::projects::issues::notes::awards::CreateIssueNoteAward::builder()
                    .project(project)
                    .issue(thread.number)
                    .note(comment.id)
                    .name(reaction.name())
                    .build()
                    .expect("all fields set");
                self.write(Wait::UntilAvailable, api::ignore(award).query_async(client))
                    .await?;
            }
            _ => {
                let award =
                    api::projects::merge_requests::notes::awards::CreateMergeRequestNoteAward::builder()
                        .project(project)
                        .merge_request(thread.number)
                        .note(comment.id)
                        .name(reaction.name())
                        .build()
                        .expect("all fields set");
                self.write(Wait::UntilAvailable, api::ignore(award).query_async(client))
                    .await?;
            }
        }
        Ok(())
    }

    async fn create_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let client = self.client().await?;
        let project = Self::project(repo);
        let note: Option<Note> = match thread.kind {
            ThreadKind::Issue => {
                let create = api::projects::issues::notes::CreateIssueNote::builder()
                    .project(project)
                    .issue(thread.number)
                    .body(body)
                    .build()
                    .expect("all fields set");
                self.write(Wait::UntilAvailable, create.query_async(client))
                    .await?
            }
            _ => {
                let create =
                    api::projects::merge_requests::notes::CreateMergeRequestNote::builder()
                        .project(project)
                        .merge_request(thread.number)
                        .body(body)
                        .build()
                        .expect("all fields set");
                self.write(Wait::UntilAvailable, create.query_async(client))
                    .await?
            }
        };
        Ok(note.expect("a waiting write always goes out").id)
    }

    async fn update_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.edit_note(repo, thread, comment_id, body, Wait::UntilAvailable)
            .await
            .map(|_| ())
    }

    async fn update_progress(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<bool, ForgeError> {
        self.edit_note(repo, thread, comment_id, body, Wait::No)
            .await
    }

    /// The thread's notes newest first, at most [`FIND_MAX_PAGES`] pages; only the bot
    /// user's own (non-system) notes count.
    async fn find_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let client = self.client().await?;
        let bot = self.bot_username.get().cloned().unwrap_or_default();
        if bot.is_empty() {
            return Err(ForgeError::Transient(
                "GitLab did not say who the bot is".into(),
            ));
        }
        let path = Self::notes_path(repo, thread);
        let mut page = 1;
        for read in 1..=FIND_MAX_PAGES {
            let (notes, headers) = self.notes_page(client, &path, "desc", page).await?;
            let found = notes.iter().find(|n| {
                !n.system
                    && n.author.username == bot
                    && n.body.as_deref().is_some_and(|b| b.contains(marker))
            });
            if let Some(note) = found {
                return Ok(Some(note.id));
            }
            let next = header_page(&headers, "x-next-page")
                .or_else(|| link_next_page(&headers))
                .filter(|n| *n > page);
            let Some(next) = next else { break };
            if read == FIND_MAX_PAGES {
                tracing::warn!(
                    repo = %repo.full_name,
                    thread = thread.number,
                    "find_comment: stopped after {FIND_MAX_PAGES} pages of notes"
                );
            }
            page = next;
        }
        Ok(None)
    }

    async fn repository(&self, repo: &RepoRef) -> Result<RepoInfo, ForgeError> {
        let client = self.client().await?;
        let project: ProjectBody = api::projects::Project::builder()
            .project(Self::project(repo))
            .build()
            .expect("all fields set")
            .query_async(client)
            .await
            .map_err(|e| map_err(&self.token, e))?;
        Ok(RepoInfo {
            clone_url: project.http_url_to_repo,
            default_branch: project.default_branch.unwrap_or_else(|| "main".into()),
        })
    }

    async fn git_credentials(&self, _repo: &RepoRef) -> Result<Credentials, ForgeError> {
        Ok(Credentials {
            username: "oauth2".into(),
            password: self.token.clone(),
        })
    }

    async fn change_request(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeRequest, ForgeError> {
        let client = self.client().await?;
        let mr: MergeRequestBody = api::projects::merge_requests::MergeRequest::builder()
            .project(Self::project(repo))
            .merge_request(number)
            .build()
            .expect("all fields set")
            .query_async(client)
            .await
            .map_err(|e| map_err(&self.token, e))?;
        Ok(mr.into_change_request())
    }

    async fn find_change_request(
        &self,
        repo: &RepoRef,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError> {
        let client = self.client().await?;
        let found: Vec<MergeRequestBody> = api::projects::merge_requests::MergeRequests::builder()
            .project(Self::project(repo))
            .source_branch(head_branch)
            .state(api::projects::merge_requests::MergeRequestState::Opened)
            .build()
            .expect("all fields set")
            .query_async(client)
            .await
            .map_err(|e| map_err(&self.token, e))?;
        Ok(found
            .into_iter()
            .find(|mr| mr.source_branch == head_branch)
            .map(MergeRequestBody::into_change_request))
    }

    async fn open_change_request(
        &self,
        repo: &RepoRef,
        new: NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError> {
        let client = self.client().await?;
        // GitLab marks drafts by the title prefix.
        let title = if new.draft {
            format!("Draft: {}", new.title)
        } else {
            new.title.to_owned()
        };
        let create = api::projects::merge_requests::CreateMergeRequest::builder()
            .project(Self::project(repo))
            .source_branch(new.head)
            .target_branch(new.base)
            .title(title)
            .description(new.body)
            .remove_source_branch(true)
            .build()
            .expect("all fields set");
        let mr: MergeRequestBody = self
            .write(Wait::UntilAvailable, create.query_async(client))
            .await?
            .expect("a waiting write always goes out");
        Ok(mr.into_change_request())
    }

    async fn bot_identity(&self, _repo: &RepoRef) -> Result<GitIdentity, ForgeError> {
        self.client().await?;
        self.identity
            .get()
            .cloned()
            .ok_or_else(|| ForgeError::Transient("GitLab did not say who the bot is".into()))
    }

    fn co_author(&self, user: &UserRef) -> GitIdentity {
        let host = self.noreply_host();
        GitIdentity {
            name: user.login.clone(),
            email: format!("{}@noreply.{host}", user.login),
        }
    }

    /// Title and description of the issue or merge request, then its notes oldest
    /// first, 100 a page, at most [`DISCUSSION_MAX_PAGES`] pages; system notes are left
    /// out.
    async fn reachable_repositories(&self) -> Result<Vec<String>, ForgeError> {
        #[derive(serde::Deserialize)]
        struct Listed {
            path_with_namespace: String,
        }
        let client = self.client().await?;
        let endpoint = api::projects::Projects::builder()
            .membership(true)
            .min_access_level(api::common::AccessLevel::Developer)
            .build()
            .expect("all fields set");
        let projects: Vec<Listed> = api::paged(endpoint, api::Pagination::Limit(300))
            .query_async(client)
            .await
            .map_err(|e| map_err(&self.token, e))?;
        let mut out: Vec<String> = projects
            .into_iter()
            .map(|p| p.path_with_namespace)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn discussion(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
    ) -> Result<Discussion, ForgeError> {
        let client = self.client().await?;
        let project = Self::project(repo);
        let text: Result<ThreadText, _> = match thread.kind {
            ThreadKind::Issue => {
                api::projects::issues::Issue::builder()
                    .project(project.clone())
                    .issue(thread.number)
                    .build()
                    .expect("all fields set")
                    .query_async(client)
                    .await
            }
            _ => {
                api::projects::merge_requests::MergeRequest::builder()
                    .project(project.clone())
                    .merge_request(thread.number)
                    .build()
                    .expect("all fields set")
                    .query_async(client)
                    .await
            }
        };
        let text = text.map_err(|e| map_err(&self.token, e))?;
        let bot = self.bot_username.get().cloned().unwrap_or_default();
        let path = Self::notes_path(repo, thread);
        let mut latest = LatestComments::default();
        let mut page = 1;
        for read in 1..=DISCUSSION_MAX_PAGES {
            let (notes, headers) = self.notes_page(client, &path, "asc", page).await?;
            let size = notes.len();
            for note in notes.into_iter().filter(|n| !n.system) {
                let position = note.position;
                latest.push(DiscussionComment {
                    by_bot: !bot.is_empty() && note.author.username == bot,
                    author: note.author.username,
                    author_id: note.author.id,
                    body: note.body.unwrap_or_default(),
                    created_at: note.created_at,
                    review_line: position.as_ref().and_then(|p| p.new_line.or(p.old_line)),
                    review_path: position.and_then(|p| p.new_path),
                });
            }
            let next = header_page(&headers, "x-next-page")
                .or_else(|| link_next_page(&headers))
                .filter(|n| *n > page);
            let Some(next) = next else { break };
            if read == DISCUSSION_MAX_PAGES {
                tracing::warn!(
                    repo = %repo.full_name,
                    thread = thread.number,
                    "discussion: stopped after {DISCUSSION_MAX_PAGES} pages of notes"
                );
                break;
            }
            // Read the last pages within the bound; skip (and count) the ones between.
            let left = DISCUSSION_MAX_PAGES - read;
            page = match header_page(&headers, "x-total-pages") {
                Some(total) if total + 1 - next > left => {
                    let target = total + 1 - left;
                    latest.skipped((target - next) as usize * size);
                    target
                }
                _ => next,
            };
        }
        let (author, author_id) = text.author.map(|a| (a.username, a.id)).unwrap_or_default();
        Ok(Discussion {
            author,
            author_id,
            ..latest.into_discussion(text.title, text.description.unwrap_or_default())
        })
    }

    /// `POST /projects/:id/statuses/:sha` with the name `repobox`: GitLab keeps the
    /// latest status of a name per commit, so each call moves it on.
    async fn head_status(
        &self,
        repo: &RepoRef,
        status: &HeadStatus<'_>,
        _check_run: Option<u64>,
    ) -> Result<Option<u64>, ForgeError> {
        use api::projects::repository::commits::{CommitStatusState, CreateCommitStatus};
        let client = self.client().await?;
        let state = match status.state {
            HeadState::InProgress => CommitStatusState::Running,
            HeadState::Success => CommitStatusState::Success,
            HeadState::Failure => CommitStatusState::Failed,
            HeadState::Cancelled => CommitStatusState::Canceled,
        };
        let create = CreateCommitStatus::builder()
            .project(Self::project(repo))
            .commit(status.sha)
            .state(state)
            .name("repobox")
            .target_url(status.details_url)
            .description(status.summary)
            .build()
            .expect("all fields set");
        self.write(
            Wait::UntilAvailable,
            api::ignore(create).query_async(client),
        )
        .await?;
        Ok(None)
    }
}
