//! GitHub adapter: App authentication and the REST calls Repobox makes, over octocrab.
//!
//! Authentication: octocrab signs an RS256 JWT with the App's key for the `/app/...`
//! calls; installation tokens are minted per repository with only the permissions the
//! caller names (`repositories` + `permissions` in the access-token request), cached
//! until five minutes before they expire, and used through a per-token octocrab client.
//!
//! With a personal token instead ([`GitHub::with_personal_token`], a user's provider
//! running a job, SPEC 18) every call, git included, is made as that user with that one
//! token: nothing is minted, the "bot" is the token's user, and the request budget is
//! the provider's.
//!
//! Every request has a deadline (connect, socket and whole-request timeouts from
//! [`ForgeOptions::timeout`]); octocrab's own retries are off, so each call is sent once
//! and [`super::with_retries`] is the one retry layer. Content writes take a write from
//! the installation's request budget first, and a rate-limited answer pauses the
//! installation's writes for every process.

mod deliveries;
pub mod webhook;

pub use deliveries::{DeliveriesPage, HookDelivery};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use octocrab::Octocrab;
use octocrab::models::AppId;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::budget::{self, Wait};
use super::{
    ChangeRequest, Discussion, DiscussionComment, Forge, ForgeError, ForgeOptions, GitIdentity,
    HEAD_STATUS_NAME, HeadState, HeadStatus, LatestComments, NewChangeRequest, RepoInfo,
};
use crate::git::Credentials;
use crate::model::{
    AccessLevel, CommentKind, CommentRef, ForgeKind, Reaction, RepoRef, ThreadKind, ThreadRef,
    UserRef,
};
use crate::secret::{Secret, redact};

/// Permissions of the token used to acknowledge commands (reactions, comments,
/// collaborator permission).
pub const ACK_PERMISSIONS: &[(&str, &str)] = &[
    ("issues", "write"),
    ("pull_requests", "write"),
    ("metadata", "read"),
];

/// Permissions of the token a runner pushes with. `workflows` is deliberately absent:
/// GitHub itself then refuses pushes that touch `.github/workflows/`.
pub const RUN_PERMISSIONS: &[(&str, &str)] = &[
    ("contents", "write"),
    ("pull_requests", "write"),
    ("issues", "write"),
    ("metadata", "read"),
];

/// A token is refreshed this long before GitHub says it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Comments asked for per page (GitHub's maximum).
const COMMENTS_PER_PAGE: usize = 100;

/// Most pages of comments [`Forge::discussion`] reads for one thread. It jumps over the
/// middle of a long thread using the `rel="last"` link (only the latest comments are
/// kept), so it needs three pages at most; the bound matters only when GitHub sends no
/// `last` link, and then comments past the tenth page are not seen.
const DISCUSSION_MAX_PAGES: usize = 10;

/// Most pages of comments [`Forge::find_comment`] reads (newest pages first): 1000
/// comments, far more than any thread between a command and its progress comment.
const FIND_MAX_PAGES: u64 = 10;

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires_at: OffsetDateTime,
    client: Octocrab,
}

type TokenKey = (u64, String, &'static [(&'static str, &'static str)]);

pub struct GitHub {
    api_url: String,
    /// The App's JWT client, or the personal token's client ([`Auth::Personal`]).
    app: Octocrab,
    auth: Auth,
    /// Installation id per repository, for events whose payload does not name it.
    installations: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
    bot: tokio::sync::OnceCell<GitIdentity>,
    /// The App's slug (`GET /app`), which makes its bot login `<slug>[bot]`.
    slug: tokio::sync::OnceCell<String>,
    options: ForgeOptions,
}

/// Who the adapter acts as.
enum Auth {
    /// The App: its JWT for `/app` calls, installation tokens for everything else.
    App,
    /// One user, with their personal token, for every call.
    Personal {
        token: Secret,
        /// The request budget's key (the provider's).
        budget_key: String,
    },
}

#[derive(Deserialize)]
struct RepoBody {
    clone_url: String,
    default_branch: String,
}

#[derive(Deserialize)]
struct PullBranch {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    repo: Option<PullRepo>,
}

#[derive(Deserialize)]
struct PullRepo {
    full_name: String,
}

#[derive(Deserialize)]
struct PullBody {
    number: u64,
    html_url: String,
    state: String,
    head: PullBranch,
    base: PullBranch,
}

#[derive(Deserialize)]
struct UserBody {
    id: u64,
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
}

impl PullBody {
    fn into_change_request(self, repo: &RepoRef) -> ChangeRequest {
        ChangeRequest {
            same_repo: self
                .head
                .repo
                .as_ref()
                .is_some_and(|r| r.full_name.eq_ignore_ascii_case(&repo.full_name)),
            head_ref: format!("refs/pull/{}/head", self.number),
            number: self.number,
            url: self.html_url,
            head_branch: self.head.branch,
            head_sha: self.head.sha,
            base_branch: self.base.branch,
            open: self.state == "open",
        }
    }
}

/// Installations whose repositories [`Forge::reachable_repositories`] lists.
const MAX_LISTED_INSTALLATIONS: usize = 20;

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct InstallationId {
    id: u64,
}

#[derive(Deserialize)]
struct CollaboratorPermission {
    permission: String,
    #[serde(default)]
    role_name: Option<String>,
}

#[derive(Deserialize)]
struct CreatedComment {
    id: u64,
}

/// An issue or pull request as `GET /repos/{o}/{r}/issues/{n}` returns it.
#[derive(Deserialize)]
struct IssueText {
    title: String,
    #[serde(default)]
    body: Option<String>,
    /// The opener (`null` for a deleted account).
    #[serde(default)]
    user: Option<Login>,
}

#[derive(Deserialize)]
struct IssueComment {
    id: u64,
    /// `null` for a deleted account.
    #[serde(default)]
    user: Option<Login>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    login: String,
    #[serde(default)]
    id: u64,
}

/// The `page` query parameter of a pagination link.
fn page_number(link: Option<&http::Uri>) -> Option<u64> {
    url::form_urlencoded::parse(link?.query()?.as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
}

fn map_err(e: octocrab::Error) -> ForgeError {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let message = format!("GitHub API {}: {}", source.status_code, source.message);
            match &source.headers {
                Some(headers) => {
                    ForgeError::from_response(source.status_code.as_u16(), headers, message)
                }
                None => ForgeError::from_status(source.status_code.as_u16(), message),
            }
        }
        other => ForgeError::Transient(format!("GitHub API unreachable: {other}")),
    }
}

/// An octocrab client for `api_url` with the request timeouts of `timeout`, not yet
/// authenticated (octocrab's retry layer is not compiled in).
fn client_builder(
    api_url: &str,
    timeout: Duration,
) -> octocrab::Result<
    octocrab::OctocrabBuilder<
        octocrab::NoSvc,
        octocrab::DefaultOctocrabBuilderConfig,
        octocrab::NoAuth,
        octocrab::NotLayerReady,
    >,
> {
    Ok(Octocrab::builder()
        .base_uri(api_url)?
        .set_connect_timeout(Some(timeout))
        .set_read_timeout(Some(timeout))
        .set_write_timeout(Some(timeout)))
}

impl GitHub {
    /// `private_key_pem` is the App's PEM key; `api_url` the REST base.
    pub fn new(
        api_url: &str,
        app_id: u64,
        private_key_pem: &Secret,
        options: ForgeOptions,
    ) -> anyhow::Result<Self> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|_| {
                anyhow::anyhow!("the GitHub App private key is not a valid RSA PEM key")
            })?;
        let app = client_builder(api_url, options.timeout)?
            .app(AppId(app_id), key)
            .build()?;
        Ok(GitHub {
            api_url: api_url.to_owned(),
            app,
            auth: Auth::App,
            installations: Mutex::default(),
            tokens: Mutex::default(),
            bot: tokio::sync::OnceCell::new(),
            slug: tokio::sync::OnceCell::new(),
            options,
        })
    }

    /// The adapter of one user's personal token (`ghp_…`, `github_pat_…`): every call
    /// and every push as that user; `budget_key` names its request budget.
    pub fn with_personal_token(
        api_url: &str,
        token: Secret,
        budget_key: String,
        options: ForgeOptions,
    ) -> anyhow::Result<Self> {
        let client = client_builder(api_url, options.timeout)?
            .personal_token(token.expose().to_owned())
            .build()
            .map_err(|e| anyhow::anyhow!(redact(&e.to_string(), &[&token])))?;
        Ok(GitHub {
            api_url: api_url.to_owned(),
            app: client,
            auth: Auth::Personal { token, budget_key },
            installations: Mutex::default(),
            tokens: Mutex::default(),
            bot: tokio::sync::OnceCell::new(),
            slug: tokio::sync::OnceCell::new(),
            options,
        })
    }

    /// `fut` (one octocrab request) within the request deadline; its error as a
    /// [`ForgeError`] unmapped, for callers that branch on the status.
    async fn within<T>(
        &self,
        fut: impl Future<Output = octocrab::Result<T>>,
    ) -> Result<octocrab::Result<T>, ForgeError> {
        tokio::time::timeout(self.options.timeout, fut)
            .await
            .map_err(|_| ForgeError::Transient(self.options.timeout_message("GitHub")))
    }

    /// `fut` (one octocrab request) within the request deadline, errors mapped.
    async fn call<T>(
        &self,
        fut: impl Future<Output = octocrab::Result<T>>,
    ) -> Result<T, ForgeError> {
        self.within(fut).await?.map_err(map_err)
    }

    /// An octocrab client authenticated with an installation token.
    fn token_client(&self, token: &Secret) -> Result<Octocrab, ForgeError> {
        client_builder(&self.api_url, self.options.timeout)
            .and_then(|b| b.personal_token(token.expose().to_owned()).build())
            .map_err(|e| ForgeError::Permanent(redact(&e.to_string(), &[token])))
    }

    /// The request budget key of the repository's installation.
    async fn budget_key(&self, repo: &RepoRef) -> Result<String, ForgeError> {
        if let Auth::Personal { budget_key, .. } = &self.auth {
            return Ok(budget_key.clone());
        }
        Ok(format!("github:{}", self.installation_id(repo).await?))
    }

    /// One content write on `repo`: takes a write from the installation's budget
    /// (`Ok(None)` when `wait` is [`Wait::No`] and there is none), sends `write` once,
    /// and pauses the installation's writes when GitHub answers with a rate limit.
    async fn write<T, Fut>(
        &self,
        repo: &RepoRef,
        wait: Wait,
        write: impl FnOnce(Octocrab) -> Fut,
    ) -> Result<Option<T>, ForgeError>
    where
        Fut: Future<Output = octocrab::Result<T>>,
    {
        let client = self.client(repo).await?;
        let key = self.budget_key(repo).await?;
        let budget = self.options.budget.as_ref();
        if !budget::take_write(budget, &key, wait).await {
            return Ok(None);
        }
        match self.call(write(client)).await {
            Ok(done) => Ok(Some(done)),
            Err(e) => {
                budget::note_rate_limit(budget, &key, &e).await;
                Err(e)
            }
        }
    }

    async fn installation_id(&self, repo: &RepoRef) -> Result<u64, ForgeError> {
        if let Some(id) = repo.installation_id {
            return Ok(id);
        }
        if let Some(id) = self.installations.lock().unwrap().get(&repo.full_name) {
            return Ok(*id);
        }
        let found: InstallationId = self
            .call(self.app.get(
                format!("/repos/{}/installation", repo.full_name),
                None::<&()>,
            ))
            .await?;
        self.installations
            .lock()
            .unwrap()
            .insert(repo.full_name.clone(), found.id);
        Ok(found.id)
    }

    async fn token(
        &self,
        repo: &RepoRef,
        permissions: &'static [(&'static str, &'static str)],
    ) -> Result<CachedToken, ForgeError> {
        if let Auth::Personal { token, .. } = &self.auth {
            return Ok(CachedToken {
                token: token.clone(),
                // A personal token lives until its user revokes it.
                expires_at: OffsetDateTime::now_utc() + time::Duration::days(365),
                client: self.app.clone(),
            });
        }
        let installation = self.installation_id(repo).await?;
        let slot = self
            .tokens
            .lock()
            .unwrap()
            .entry((installation, repo.full_name.clone(), permissions))
            .or_default()
            .clone();
        // One mint at a time per (installation, repository, permissions).
        let mut slot = slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && cached.expires_at - OffsetDateTime::now_utc() > REFRESH_MARGIN
        {
            return Ok(cached.clone());
        }
        let (_, name) = repo.owner_and_name();
        let perms: serde_json::Map<String, serde_json::Value> = permissions
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let body = json!({ "repositories": [name], "permissions": perms });
        let minted: AccessToken = self
            .call(self.app.post(
                format!("/app/installations/{installation}/access_tokens"),
                Some(&body),
            ))
            .await?;
        let token = Secret::new(minted.token);
        let expires_at = OffsetDateTime::parse(
            &minted.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| ForgeError::Permanent("GitHub sent a malformed token expiry".into()))?;
        let client = self.token_client(&token)?;
        let cached = CachedToken {
            token,
            expires_at,
            client,
        };
        *slot = Some(cached.clone());
        Ok(cached)
    }

    /// An installation token for one repository with the given permissions (the runner
    /// uses it for git over HTTPS). Never log it: `Secret` prints masked.
    pub async fn installation_token(
        &self,
        repo: &RepoRef,
        permissions: &'static [(&'static str, &'static str)],
    ) -> Result<(Secret, OffsetDateTime), ForgeError> {
        self.token(repo, permissions)
            .await
            .map(|t| (t.token, t.expires_at))
    }

    async fn client(&self, repo: &RepoRef) -> Result<Octocrab, ForgeError> {
        self.token(repo, ACK_PERMISSIONS).await.map(|t| t.client)
    }

    /// The App's bot user, `<slug>[bot]`; with a personal token, its user's login.
    async fn bot_login(&self) -> Result<String, ForgeError> {
        if let Auth::Personal { .. } = &self.auth {
            return self
                .slug
                .get_or_try_init(|| async {
                    let user: LoginBody = self.call(self.app.get("/user", None::<&()>)).await?;
                    Ok(user.login)
                })
                .await
                .cloned();
        }
        let slug = self.slug.get_or_try_init(|| self.app_name()).await?;
        Ok(format!("{slug}[bot]"))
    }

    /// With a personal token: its user's repositories with push access (`GET
    /// /user/repos`, 100 a page, at most [`MAX_LISTED_INSTALLATIONS`] pages).
    async fn personal_repositories(&self) -> Result<Vec<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Repo {
            full_name: String,
            #[serde(default)]
            permissions: Option<Permissions>,
        }
        #[derive(Deserialize)]
        struct Permissions {
            #[serde(default)]
            push: bool,
        }
        let mut out = Vec::new();
        for page in 1..=MAX_LISTED_INSTALLATIONS {
            let page = page.to_string();
            let repos: Vec<Repo> = self
                .call(
                    self.app
                        .get("/user/repos", Some(&[("per_page", "100"), ("page", &page)])),
                )
                .await?;
            let full = repos.len() == 100;
            out.extend(
                repos
                    .into_iter()
                    .filter(|r| r.permissions.as_ref().is_some_and(|p| p.push))
                    .map(|r| r.full_name),
            );
            if !full {
                break;
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl Forge for GitHub {
    fn kind(&self) -> ForgeKind {
        ForgeKind::GitHub
    }

    async fn access_level(
        &self,
        repo: &RepoRef,
        user: &UserRef,
    ) -> Result<AccessLevel, ForgeError> {
        let client = self.client(repo).await?;
        let route = format!(
            "/repos/{}/collaborators/{}/permission",
            repo.full_name, user.login
        );
        let perm: CollaboratorPermission = match self.within(client.get(route, None::<&()>)).await?
        {
            Ok(p) => p,
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code == 404 => {
                return Ok(AccessLevel::None);
            }
            Err(e) => return Err(map_err(e)),
        };
        Ok(
            match (perm.permission.as_str(), perm.role_name.as_deref()) {
                ("admin", _) => AccessLevel::Admin,
                ("write", _) | (_, Some("maintain" | "write")) => AccessLevel::Write,
                ("read", _) => AccessLevel::Read,
                _ => AccessLevel::None,
            },
        )
    }

    async fn react(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment: CommentRef,
        reaction: Reaction,
    ) -> Result<(), ForgeError> {
        let route = match comment.kind {
            CommentKind::ReviewComment => {
                format!(
                    "/repos/{}/pulls/comments/{}/reactions",
                    repo.full_name, comment.id
                )
            }
            // Reviews have no reactions API: the pull request gets the reaction.
            CommentKind::Review => {
                format!(
                    "/repos/{}/issues/{}/reactions",
                    repo.full_name, thread.number
                )
            }
            CommentKind::IssueComment | CommentKind::Note => {
                format!(
                    "/repos/{}/issues/comments/{}/reactions",
                    repo.full_name, comment.id
                )
            }
        };
        let body = json!({ "content": reaction.name() });
        self.write(repo, Wait::UntilAvailable, |client| async move {
            client
                .post::<_, serde_json::Value>(route, Some(&body))
                .await
        })
        .await?;
        Ok(())
    }

    async fn create_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let route = format!(
            "/repos/{}/issues/{}/comments",
            repo.full_name, thread.number
        );
        let body = json!({ "body": body });
        let created = self
            .write(repo, Wait::UntilAvailable, |client| async move {
                client.post::<_, CreatedComment>(route, Some(&body)).await
            })
            .await?
            .expect("a waiting write always goes out");
        Ok(created.id)
    }

    async fn update_comment(
        &self,
        repo: &RepoRef,
        _thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.edit_comment(repo, comment_id, body, Wait::UntilAvailable)
            .await
            .map(|_| ())
    }

    async fn update_progress(
        &self,
        repo: &RepoRef,
        _thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<bool, ForgeError> {
        self.edit_comment(repo, comment_id, body, Wait::No).await
    }

    /// Newest pages first (the progress comment follows the command, usually among the
    /// latest), at most [`FIND_MAX_PAGES`]; only comments by the App's bot count.
    async fn find_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let client = self.client(repo).await?;
        let bot = self.bot_login().await?;
        let route = format!(
            "/repos/{}/issues/{}/comments",
            repo.full_name, thread.number
        );
        let read = |page: u64| {
            let query = [
                ("per_page", COMMENTS_PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let (client, route) = (client.clone(), route.clone());
            async move {
                self.call(client.get::<octocrab::Page<IssueComment>, _, _>(route, Some(&query)))
                    .await
            }
        };
        let mine = |page: &octocrab::Page<IssueComment>| {
            page.items.iter().rev().find_map(|c| {
                let by_bot = c
                    .user
                    .as_ref()
                    .is_some_and(|u| u.login.eq_ignore_ascii_case(&bot));
                (by_bot && c.body.as_deref().is_some_and(|b| b.contains(marker))).then_some(c.id)
            })
        };
        let first = read(1).await?;
        // With a `last` link, walk back from it; without one, forward along `next`.
        let last = page_number(first.last.as_ref());
        let mut next = page_number(first.next.as_ref());
        let later: Vec<u64> = match last {
            Some(last) => (2..=last).rev().collect(),
            None => Vec::new(),
        };
        let mut pages_read = 1;
        let mut left_unread = last.is_some_and(|last| last > FIND_MAX_PAGES);
        for page in later.into_iter().take(FIND_MAX_PAGES as usize - 1) {
            pages_read += 1;
            if let Some(id) = mine(&read(page).await?) {
                return Ok(Some(id));
            }
        }
        if let Some(id) = mine(&first) {
            return Ok(Some(id));
        }
        if last.is_none() {
            while let Some(page) = next {
                if pages_read == FIND_MAX_PAGES {
                    left_unread = true;
                    break;
                }
                pages_read += 1;
                let got = read(page).await?;
                if let Some(id) = mine(&got) {
                    return Ok(Some(id));
                }
                next = page_number(got.next.as_ref()).filter(|n| *n > page);
            }
        }
        if left_unread {
            tracing::warn!(
                repo = %repo.full_name,
                thread = thread.number,
                "find_comment: not found in the {FIND_MAX_PAGES} pages of comments read"
            );
        }
        Ok(None)
    }

    async fn repository(&self, repo: &RepoRef) -> Result<RepoInfo, ForgeError> {
        let client = self.client(repo).await?;
        let body: RepoBody = self
            .call(client.get(format!("/repos/{}", repo.full_name), None::<&()>))
            .await?;
        Ok(RepoInfo {
            clone_url: body.clone_url,
            default_branch: body.default_branch,
        })
    }

    async fn git_credentials(&self, repo: &RepoRef) -> Result<Credentials, ForgeError> {
        let (token, _) = self.installation_token(repo, RUN_PERMISSIONS).await?;
        Ok(Credentials {
            username: "x-access-token".into(),
            password: token,
        })
    }

    async fn change_request(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeRequest, ForgeError> {
        let client = self.client(repo).await?;
        let pull: PullBody = self
            .call(client.get(
                format!("/repos/{}/pulls/{number}", repo.full_name),
                None::<&()>,
            ))
            .await?;
        Ok(pull.into_change_request(repo))
    }

    async fn find_change_request(
        &self,
        repo: &RepoRef,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError> {
        let client = self.client(repo).await?;
        let (owner, _) = repo.owner_and_name();
        let query = [
            ("head", format!("{owner}:{head_branch}")),
            ("state", "open".to_owned()),
        ];
        let pulls: Vec<PullBody> = self
            .call(client.get(format!("/repos/{}/pulls", repo.full_name), Some(&query)))
            .await?;
        Ok(pulls
            .into_iter()
            .find(|p| p.head.branch == head_branch)
            .map(|p| p.into_change_request(repo)))
    }

    async fn open_change_request(
        &self,
        repo: &RepoRef,
        new: NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError> {
        let route = format!("/repos/{}/pulls", repo.full_name);
        let body = json!({
            "title": new.title,
            "head": new.head,
            "base": new.base,
            "body": new.body,
            "draft": new.draft,
        });
        let pull = self
            .write(repo, Wait::UntilAvailable, |client| async move {
                client.post::<_, PullBody>(route, Some(&body)).await
            })
            .await?
            .expect("a waiting write always goes out");
        Ok(pull.into_change_request(repo))
    }

    async fn bot_identity(&self, repo: &RepoRef) -> Result<GitIdentity, ForgeError> {
        self.bot
            .get_or_try_init(|| async {
                let login = self.bot_login().await?;
                let client = self.client(repo).await?;
                let user: UserBody = self
                    .call(client.get(format!("/users/{login}"), None::<&()>))
                    .await?;
                Ok(GitIdentity {
                    email: format!("{}+{login}@users.noreply.github.com", user.id),
                    name: login,
                })
            })
            .await
            .cloned()
    }

    fn co_author(&self, user: &UserRef) -> GitIdentity {
        GitIdentity {
            name: user.login.clone(),
            email: format!("{}+{}@users.noreply.github.com", user.id, user.login),
        }
    }

    async fn reachable_repositories(&self) -> Result<Vec<String>, ForgeError> {
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        #[derive(Deserialize)]
        struct Repositories {
            repositories: Vec<FullName>,
        }
        #[derive(Deserialize)]
        struct FullName {
            full_name: String,
        }
        if let Auth::Personal { .. } = &self.auth {
            return self.personal_repositories().await;
        }
        let installations: Vec<Installation> = self
            .call(
                self.app
                    .get("/app/installations", Some(&[("per_page", "100")])),
            )
            .await?;
        let mut out = Vec::new();
        for installation in installations.iter().take(MAX_LISTED_INSTALLATIONS) {
            // A read-only token for all of the installation's repositories, used once.
            let minted: AccessToken = self
                .call(self.app.post(
                    format!("/app/installations/{}/access_tokens", installation.id),
                    Some(&json!({ "permissions": { "metadata": "read" } })),
                ))
                .await?;
            let token = Secret::new(minted.token);
            let client = self.token_client(&token)?;
            let page: Repositories = self
                .call(client.get("/installation/repositories", Some(&[("per_page", "100")])))
                .await?;
            out.extend(page.repositories.into_iter().map(|r| r.full_name));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Title and body from the issues API (which serves pull requests too), comments
    /// from `issues/{n}/comments`, 100 a page; reads at most [`DISCUSSION_MAX_PAGES`]
    /// pages and skips the full pages that only hold comments older than the ones kept.
    /// On a pull request, its review comments (`pulls/{n}/comments`) join them in the
    /// order they were written.
    async fn discussion(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
    ) -> Result<Discussion, ForgeError> {
        let client = self.client(repo).await?;
        let issue: IssueText = self
            .call(client.get(
                format!("/repos/{}/issues/{}", repo.full_name, thread.number),
                None::<&()>,
            ))
            .await?;
        let bot = self.bot_login().await?;
        let route = format!(
            "/repos/{}/issues/{}/comments",
            repo.full_name, thread.number
        );
        let mut latest = LatestComments::default();
        let mut page = 1;
        let mut page_size = None;
        for read in 1..=DISCUSSION_MAX_PAGES {
            let query = [
                ("per_page", COMMENTS_PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let got: octocrab::Page<IssueComment> =
                self.call(client.get(&route, Some(&query))).await?;
            // Every page but the last is full: the first one tells how full that is.
            let size = *page_size.get_or_insert(got.items.len().max(1));
            let next = page_number(got.next.as_ref()).filter(|n| *n > page);
            let last = page_number(got.last.as_ref());
            for comment in got.items {
                let (author, author_id) = comment.user.map(|u| (u.login, u.id)).unwrap_or_default();
                latest.push(DiscussionComment {
                    by_bot: author.eq_ignore_ascii_case(&bot),
                    author,
                    author_id,
                    body: comment.body.unwrap_or_default(),
                    created_at: comment.created_at,
                    ..DiscussionComment::default()
                });
            }
            let Some(next) = next else { break };
            if read == DISCUSSION_MAX_PAGES {
                tracing::warn!(
                    repo = %repo.full_name,
                    thread = thread.number,
                    "discussion: stopped after {DISCUSSION_MAX_PAGES} pages of comments"
                );
                break;
            }
            // The kept comments sit on the last `needed` pages; skip the full ones before.
            let needed = super::DISCUSSION_MAX_COMMENTS.div_ceil(size) as u64 + 1;
            page = match last {
                Some(last) if last.saturating_sub(needed - 1) > next => {
                    let target = last - (needed - 1);
                    latest.skipped((target - next) as usize * size);
                    target
                }
                _ => next,
            };
        }
        let (author, author_id) = issue.user.map(|u| (u.login, u.id)).unwrap_or_default();
        let mut discussion = Discussion {
            author,
            author_id,
            ..latest.into_discussion(issue.title, issue.body.unwrap_or_default())
        };
        if thread.kind == ThreadKind::PullRequest {
            let (review, omitted) = self.review_comments(&client, repo, thread, &bot).await?;
            super::merge_review_comments(&mut discussion, review, omitted);
        }
        Ok(discussion)
    }

    /// `POST /repos/{o}/{r}/check-runs` (after looking for this job's by `external_id`
    /// among the commit's `Repobox` runs), then `PATCH …/check-runs/{id}` to complete it.
    async fn head_status(
        &self,
        repo: &RepoRef,
        status: &HeadStatus<'_>,
        check_run: Option<u64>,
    ) -> Result<Option<u64>, ForgeError> {
        let id = match check_run {
            Some(id) => Some(id),
            None => self.find_check_run(repo, status).await?,
        };
        let conclusion = match status.state {
            HeadState::InProgress => None,
            HeadState::Success => Some("success"),
            HeadState::Failure => Some("failure"),
            HeadState::Cancelled => Some("cancelled"),
        };
        let output = json!({ "title": status.summary, "summary": status.summary });
        let now = crate::job::rfc3339(OffsetDateTime::now_utc());
        let (route, body, create) = match (id, conclusion) {
            // In progress already: nothing to change.
            (Some(id), None) => return Ok(Some(id)),
            (Some(id), Some(conclusion)) => (
                format!("/repos/{}/check-runs/{id}", repo.full_name),
                json!({
                    "status": "completed",
                    "conclusion": conclusion,
                    "completed_at": now,
                    "details_url": status.details_url,
                    "output": output,
                }),
                false,
            ),
            (None, conclusion) => {
                let mut body = json!({
                    "name": HEAD_STATUS_NAME,
                    "head_sha": status.sha,
                    "details_url": status.details_url,
                    "external_id": status.job,
                    "status": "in_progress",
                    "started_at": now,
                    "output": output,
                });
                if let Some(conclusion) = conclusion {
                    body["status"] = json!("completed");
                    body["conclusion"] = json!(conclusion);
                    body["completed_at"] = json!(now);
                }
                (format!("/repos/{}/check-runs", repo.full_name), body, true)
            }
        };
        let run: CheckRunBody = self
            .write(repo, Wait::UntilAvailable, |client| async move {
                match create {
                    true => client.post(route, Some(&body)).await,
                    false => client.patch(route, Some(&body)).await,
                }
            })
            .await?
            .expect("a waiting write always goes out");
        Ok(Some(run.id))
    }
}

#[derive(Deserialize)]
struct CheckRunBody {
    id: u64,
    #[serde(default)]
    external_id: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunList {
    #[serde(default)]
    check_runs: Vec<CheckRunBody>,
}

impl GitHub {
    /// This job's `Repobox` check run on the commit, if an earlier attempt made one.
    async fn find_check_run(
        &self,
        repo: &RepoRef,
        status: &HeadStatus<'_>,
    ) -> Result<Option<u64>, ForgeError> {
        let client = self.client(repo).await?;
        let route = format!(
            "/repos/{}/commits/{}/check-runs",
            repo.full_name, status.sha
        );
        let query = [
            ("check_name", HEAD_STATUS_NAME),
            ("filter", "all"),
            ("per_page", "100"),
        ];
        let list: CheckRunList = self.call(client.get(&route, Some(&query))).await?;
        Ok(list
            .check_runs
            .into_iter()
            .find(|r| r.external_id.as_deref() == Some(status.job))
            .map(|r| r.id))
    }
}

/// A pull request review comment (`pulls/list-review-comments`), as far as it is read.
#[derive(Deserialize)]
struct ReviewComment {
    #[serde(default)]
    user: Option<Login>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    path: Option<String>,
    /// `null` on an outdated comment; `original_line` then says where it was.
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    original_line: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
}

impl GitHub {
    /// A pull request's review comments, oldest first: the latest
    /// [`super::DISCUSSION_MAX_COMMENTS`] of at most [`DISCUSSION_MAX_PAGES`] pages, and
    /// how many older ones were left out.
    async fn review_comments(
        &self,
        client: &Octocrab,
        repo: &RepoRef,
        thread: ThreadRef,
        bot: &str,
    ) -> Result<(Vec<DiscussionComment>, usize), ForgeError> {
        let route = format!("/repos/{}/pulls/{}/comments", repo.full_name, thread.number);
        let mut all = Vec::new();
        for page in 1..=DISCUSSION_MAX_PAGES {
            let query = [
                ("per_page", COMMENTS_PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let got: octocrab::Page<ReviewComment> =
                self.call(client.get(&route, Some(&query))).await?;
            let full = got.items.len() == COMMENTS_PER_PAGE;
            for c in got.items {
                let (author, author_id) = c.user.map(|u| (u.login, u.id)).unwrap_or_default();
                all.push(DiscussionComment {
                    by_bot: author.eq_ignore_ascii_case(bot),
                    author,
                    author_id,
                    body: c.body.unwrap_or_default(),
                    created_at: c.created_at,
                    review_path: c.path,
                    review_line: c.line.or(c.original_line),
                });
            }
            if got.next.is_none() || !full {
                break;
            }
        }
        let omitted = all.len().saturating_sub(super::DISCUSSION_MAX_COMMENTS);
        Ok((all.split_off(omitted), omitted))
    }
}

#[derive(Deserialize)]
struct AppInfo {
    slug: Option<String>,
    name: String,
}

impl GitHub {
    /// `GET /app` with the App's JWT: proves the App id and key (used by `doctor`).
    pub async fn app_name(&self) -> Result<String, ForgeError> {
        let info: AppInfo = self.call(self.app.get("/app", None::<&()>)).await?;
        Ok(info.slug.unwrap_or(info.name))
    }

    /// Edits a comment once, if the installation's budget gives a write (`wait`).
    async fn edit_comment(
        &self,
        repo: &RepoRef,
        comment_id: u64,
        body: &str,
        wait: Wait,
    ) -> Result<bool, ForgeError> {
        let route = format!("/repos/{}/issues/comments/{comment_id}", repo.full_name);
        let body = json!({ "body": body });
        let written = self
            .write(repo, wait, |client| async move {
                client
                    .patch::<serde_json::Value, _, _>(route, Some(&body))
                    .await
            })
            .await?;
        Ok(written.is_some())
    }
}
