//! GitHub adapter: App authentication and the REST calls Repobox makes, over octocrab.
//!
//! Authentication: octocrab signs an RS256 JWT with the App's key for the `/app/...`
//! calls; installation tokens are minted per repository with only the permissions the
//! caller names (`repositories` + `permissions` in the access-token request), cached
//! until five minutes before they expire, and used through a per-token octocrab client.

pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use octocrab::Octocrab;
use octocrab::models::AppId;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{
    ChangeRequest, Discussion, DiscussionComment, Forge, ForgeError, GitIdentity, LatestComments,
    NewChangeRequest, RepoInfo,
};
use crate::git::Credentials;
use crate::model::{
    AccessLevel, CommentKind, CommentRef, ForgeKind, Reaction, RepoRef, ThreadRef, UserRef,
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

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires_at: OffsetDateTime,
    client: Octocrab,
}

type TokenKey = (u64, String, &'static [(&'static str, &'static str)]);

pub struct GitHub {
    api_url: String,
    app: Octocrab,
    /// Installation id per repository, for events whose payload does not name it.
    installations: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
    bot: tokio::sync::OnceCell<GitIdentity>,
    /// The App's slug (`GET /app`), which makes its bot login `<slug>[bot]`.
    slug: tokio::sync::OnceCell<String>,
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
}

#[derive(Deserialize)]
struct IssueComment {
    #[serde(default)]
    id: u64,
    /// `null` for a deleted account.
    #[serde(default)]
    user: Option<Login>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

/// The `page` query parameter of a pagination link.
fn page_number(link: Option<&http::Uri>) -> Option<u64> {
    url::form_urlencoded::parse(link?.query()?.as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
}

fn map_err(e: octocrab::Error) -> ForgeError {
    match e {
        octocrab::Error::GitHub { source, .. } => ForgeError::from_status(
            source.status_code.as_u16(),
            format!("GitHub API {}: {}", source.status_code, source.message),
        ),
        other => ForgeError::Transient(format!("GitHub API unreachable: {other}")),
    }
}

impl GitHub {
    /// `private_key_pem` is the App's PEM key; `api_url` the REST base.
    pub fn new(api_url: &str, app_id: u64, private_key_pem: &Secret) -> anyhow::Result<Self> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|_| {
                anyhow::anyhow!("the GitHub App private key is not a valid RSA PEM key")
            })?;
        let app = Octocrab::builder()
            .base_uri(api_url)?
            .app(AppId(app_id), key)
            .build()?;
        Ok(GitHub {
            api_url: api_url.to_owned(),
            app,
            installations: Mutex::default(),
            tokens: Mutex::default(),
            bot: tokio::sync::OnceCell::new(),
            slug: tokio::sync::OnceCell::new(),
        })
    }

    async fn installation_id(&self, repo: &RepoRef) -> Result<u64, ForgeError> {
        if let Some(id) = repo.installation_id {
            return Ok(id);
        }
        if let Some(id) = self.installations.lock().unwrap().get(&repo.full_name) {
            return Ok(*id);
        }
        let found: InstallationId = self
            .app
            .get(
                format!("/repos/{}/installation", repo.full_name),
                None::<&()>,
            )
            .await
            .map_err(map_err)?;
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
            .app
            .post(
                format!("/app/installations/{installation}/access_tokens"),
                Some(&body),
            )
            .await
            .map_err(map_err)?;
        let token = Secret::new(minted.token);
        let expires_at = OffsetDateTime::parse(
            &minted.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| ForgeError::Permanent("GitHub sent a malformed token expiry".into()))?;
        let client = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .and_then(|b| b.personal_token(token.expose().to_owned()).build())
            .map_err(|e| ForgeError::Permanent(redact(&e.to_string(), &[&token])))?;
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

    /// The App's bot user, `<slug>[bot]`.
    async fn bot_login(&self) -> Result<String, ForgeError> {
        let slug = self.slug.get_or_try_init(|| self.app_name()).await?;
        Ok(format!("{slug}[bot]"))
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
        let perm: CollaboratorPermission = match client.get(route, None::<&()>).await {
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
        let client = self.client(repo).await?;
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
        let _: serde_json::Value = client
            .post(route, Some(&json!({ "content": reaction.name() })))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let client = self.client(repo).await?;
        let created: CreatedComment = client
            .post(
                format!(
                    "/repos/{}/issues/{}/comments",
                    repo.full_name, thread.number
                ),
                Some(&json!({ "body": body })),
            )
            .await
            .map_err(map_err)?;
        Ok(created.id)
    }

    async fn update_comment(
        &self,
        repo: &RepoRef,
        _thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let client = self.client(repo).await?;
        let _: serde_json::Value = client
            .patch(
                format!("/repos/{}/issues/comments/{comment_id}", repo.full_name),
                Some(&json!({ "body": body })),
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn repository(&self, repo: &RepoRef) -> Result<RepoInfo, ForgeError> {
        let client = self.client(repo).await?;
        let body: RepoBody = client
            .get(format!("/repos/{}", repo.full_name), None::<&()>)
            .await
            .map_err(map_err)?;
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
        let pull: PullBody = client
            .get(
                format!("/repos/{}/pulls/{number}", repo.full_name),
                None::<&()>,
            )
            .await
            .map_err(map_err)?;
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
        let pulls: Vec<PullBody> = client
            .get(format!("/repos/{}/pulls", repo.full_name), Some(&query))
            .await
            .map_err(map_err)?;
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
        let client = self.client(repo).await?;
        let pull: PullBody = client
            .post(
                format!("/repos/{}/pulls", repo.full_name),
                Some(&json!({
                    "title": new.title,
                    "head": new.head,
                    "base": new.base,
                    "body": new.body,
                    "draft": new.draft,
                })),
            )
            .await
            .map_err(map_err)?;
        Ok(pull.into_change_request(repo))
    }

    async fn bot_identity(&self, repo: &RepoRef) -> Result<GitIdentity, ForgeError> {
        self.bot
            .get_or_try_init(|| async {
                let login = self.bot_login().await?;
                let user: UserBody = self
                    .client(repo)
                    .await?
                    .get(format!("/users/{login}"), None::<&()>)
                    .await
                    .map_err(map_err)?;
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

    /// Title and body from the issues API (which serves pull requests too), comments
    /// from `issues/{n}/comments`, 100 a page; reads at most [`DISCUSSION_MAX_PAGES`]
    /// pages and skips the full pages that only hold comments older than the ones kept.
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
        let installations: Vec<Installation> = self
            .app
            .get("/app/installations", Some(&[("per_page", "100")]))
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        for installation in installations.iter().take(MAX_LISTED_INSTALLATIONS) {
            // A read-only token for all of the installation's repositories, used once.
            let minted: AccessToken = self
                .app
                .post(
                    format!("/app/installations/{}/access_tokens", installation.id),
                    Some(&json!({ "permissions": { "metadata": "read" } })),
                )
                .await
                .map_err(map_err)?;
            let token = Secret::new(minted.token);
            let client = Octocrab::builder()
                .base_uri(self.api_url.as_str())
                .and_then(|b| b.personal_token(token.expose().to_owned()).build())
                .map_err(|e| ForgeError::Permanent(redact(&e.to_string(), &[&token])))?;
            let page: Repositories = client
                .get("/installation/repositories", Some(&[("per_page", "100")]))
                .await
                .map_err(map_err)?;
            out.extend(page.repositories.into_iter().map(|r| r.full_name));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The thread's comments, 100 a page (at most [`DISCUSSION_MAX_PAGES`]), for the
    /// first one by the App's bot whose body has the marker.
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
        for page in 1..=DISCUSSION_MAX_PAGES as u64 {
            let query = [
                ("per_page", COMMENTS_PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let got: octocrab::Page<IssueComment> =
                client.get(&route, Some(&query)).await.map_err(map_err)?;
            let next = page_number(got.next.as_ref()).filter(|n| *n > page);
            let found = got.items.into_iter().find(|c| {
                c.user
                    .as_ref()
                    .is_some_and(|u| u.login.eq_ignore_ascii_case(&bot))
                    && c.body.as_deref().is_some_and(|b| b.contains(marker))
            });
            if let Some(comment) = found {
                return Ok(Some(comment.id));
            }
            if next.is_none() {
                break;
            }
        }
        Ok(None)
    }

    async fn discussion(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
    ) -> Result<Discussion, ForgeError> {
        let client = self.client(repo).await?;
        let issue: IssueText = client
            .get(
                format!("/repos/{}/issues/{}", repo.full_name, thread.number),
                None::<&()>,
            )
            .await
            .map_err(map_err)?;
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
                client.get(&route, Some(&query)).await.map_err(map_err)?;
            // Every page but the last is full: the first one tells how full that is.
            let size = *page_size.get_or_insert(got.items.len().max(1));
            let next = page_number(got.next.as_ref()).filter(|n| *n > page);
            let last = page_number(got.last.as_ref());
            for comment in got.items {
                let author = comment.user.map(|u| u.login).unwrap_or_default();
                latest.push(DiscussionComment {
                    by_bot: author.eq_ignore_ascii_case(&bot),
                    author,
                    body: comment.body.unwrap_or_default(),
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
        Ok(latest.into_discussion(issue.title, issue.body.unwrap_or_default()))
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
        let info: AppInfo = self.app.get("/app", None::<&()>).await.map_err(map_err)?;
        Ok(info.slug.unwrap_or(info.name))
    }
}
