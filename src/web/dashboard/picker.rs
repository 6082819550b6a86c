//! The repository picker of `/jobs/new` (SPEC §14): the repositories the signed-in user
//! can write to, asked of the forge with the user's own OAuth token — never what the
//! bot reaches, which would show any signed-in visitor every private repository the App
//! is installed on.
//!
//! - GitHub: `GET /user/installations` (this App's installations the user can see),
//!   then each one's `GET /user/installations/{id}/repositories`, keeping those whose
//!   `permissions` grant `push` (or `maintain`, `admin`);
//! - GitLab: `GET /api/v4/projects?min_access_level=30` (Developer and above).
//!
//! A user's personal providers (SPEC 18) add their own lists: each provider's
//! repositories with push access, asked with its token through the provider's adapter
//! (`GET /user/repos`, GitLab's `GET /projects?min_access_level=30`), cached per
//! provider for [`TTL`] ([`Picker::personal`]).
//!
//! The token comes from the sign-in and is kept in the session sealed with the secret
//! key ([`keep_token`]). The answer is cached per user for [`TTL`], so a page view makes
//! no API call within it. Users without a forge token (LDAP, Google, sessions from
//! before this) get no suggestions; they may still type a repository, and the
//! acknowledger checks the access of whoever starts the job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tower_sessions::Session;

use super::session::SessionUser;
use crate::app::AppState;
use crate::model::ForgeKind;
use crate::secret::Secret;

/// How long one user's list is reused.
pub const TTL: Duration = Duration::from_secs(300);
/// Installations (GitHub) or pages of 100 projects (GitLab) read at most.
const MAX_LISTS: usize = 20;
const TOKEN: &str = "forge_token";
const CONTEXT: &str = "session:forge_token";

/// The per-user cache and the HTTP client the lists are asked with.
pub struct Picker {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl Default for Picker {
    fn default() -> Self {
        Picker {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .user_agent(concat!("repobox/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            cache: Mutex::default(),
        }
    }
}

/// Keeps the user's OAuth token in the session, sealed.
pub async fn keep_token(
    state: &AppState,
    session: &Session,
    token: &Secret,
) -> Result<(), tower_sessions::session::Error> {
    let sealed = state.secret_box.seal(token.expose(), CONTEXT);
    session.insert(TOKEN, sealed).await
}

async fn token(state: &AppState, session: &Session) -> Option<Secret> {
    let sealed: String = session.get(TOKEN).await.ok().flatten()?;
    state.secret_box.open(&sealed, CONTEXT).ok()
}

impl Picker {
    /// `forge:owner/name` of every repository `user` can write to, from the cache when
    /// it is younger than [`TTL`]. Empty without a forge sign-in.
    pub async fn writable(
        &self,
        state: &AppState,
        session: &Session,
        user: &SessionUser,
    ) -> Vec<String> {
        let Some((forge, id)) = user.forge_account() else {
            return Vec::new();
        };
        let key = format!("{forge}:{id}");
        if let Some((at, list)) = self.cache.lock().expect("picker lock").get(&key)
            && at.elapsed() < TTL
        {
            return list.clone();
        }
        let Some(token) = token(state, session).await else {
            return Vec::new();
        };
        let listed = match forge {
            ForgeKind::GitHub => self.github(&state.setup.github_api_url, &token).await,
            ForgeKind::GitLab => match &state.setup.gitlab_url {
                Some(base) => self.gitlab(base, &token).await,
                None => Ok(Vec::new()),
            },
        };
        match listed {
            Ok(names) => {
                let list: Vec<String> = names.into_iter().map(|n| format!("{forge}:{n}")).collect();
                let mut cache = self.cache.lock().expect("picker lock");
                cache.retain(|_, (at, _)| at.elapsed() < TTL);
                cache.insert(key, (Instant::now(), list.clone()));
                list
            }
            Err(e) => {
                tracing::warn!(%forge, error = %e, "cannot list the user's repositories");
                Vec::new()
            }
        }
    }

    /// `forge:owner/name` of every repository `provider`'s token can push to, from the
    /// cache when it is younger than [`TTL`]; empty (logged, naming the provider) when
    /// the forge refuses.
    pub async fn personal(
        &self,
        state: &AppState,
        provider: &crate::store::Provider,
    ) -> Vec<String> {
        let key = format!("provider:{}", provider.id);
        if let Some((at, list)) = self.cache.lock().expect("picker lock").get(&key)
            && at.elapsed() < TTL
        {
            return list.clone();
        }
        let Some(personal) = state.forges.personal.as_ref() else {
            return Vec::new();
        };
        let listed = match personal.open(provider) {
            Ok(forge) => forge
                .reachable_repositories()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(names) => {
                let list: Vec<String> = names
                    .into_iter()
                    .map(|n| format!("{}:{n}", provider.kind))
                    .collect();
                let mut cache = self.cache.lock().expect("picker lock");
                cache.retain(|_, (at, _)| at.elapsed() < TTL);
                cache.insert(key, (Instant::now(), list.clone()));
                list
            }
            Err(e) => {
                tracing::warn!(provider = %provider.label, error = %e, "cannot list the provider's repositories");
                Vec::new()
            }
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        url: String,
        token: &Secret,
    ) -> Result<(T, Option<String>), String> {
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose())
            .header("accept", "application/vnd.github+json")
            .send()
            .await
            .map_err(|_| "the forge could not be reached".to_owned())?;
        if !response.status().is_success() {
            return Err(format!("the forge answered {}", response.status()));
        }
        let next = response
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = response
            .json()
            .await
            .map_err(|_| "an unreadable answer".to_owned())?;
        Ok((body, next))
    }

    async fn github(&self, api: &str, token: &Secret) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Installations {
            installations: Vec<Id>,
        }
        #[derive(Deserialize)]
        struct Id {
            id: u64,
        }
        #[derive(Deserialize)]
        struct Repositories {
            repositories: Vec<Repository>,
        }
        #[derive(Deserialize)]
        struct Repository {
            full_name: String,
            #[serde(default)]
            permissions: HashMap<String, bool>,
        }
        let api = api.trim_end_matches('/');
        let (list, _): (Installations, _) = self
            .get(format!("{api}/user/installations?per_page=100"), token)
            .await?;
        let mut out = Vec::new();
        for installation in list.installations.iter().take(MAX_LISTS) {
            let (repos, _): (Repositories, _) = self
                .get(
                    format!(
                        "{api}/user/installations/{}/repositories?per_page=100",
                        installation.id
                    ),
                    token,
                )
                .await?;
            out.extend(
                repos
                    .repositories
                    .into_iter()
                    .filter(|r| {
                        ["push", "maintain", "admin"]
                            .iter()
                            .any(|p| r.permissions.get(*p) == Some(&true))
                    })
                    .map(|r| r.full_name),
            );
        }
        Ok(out)
    }

    async fn gitlab(&self, base: &str, token: &Secret) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Project {
            path_with_namespace: String,
        }
        let base = base.trim_end_matches('/');
        let mut out = Vec::new();
        let mut page = "1".to_owned();
        for _ in 0..MAX_LISTS {
            let (projects, next): (Vec<Project>, _) = self
                .get(
                    format!(
                        "{base}/api/v4/projects?min_access_level=30&simple=true&per_page=100&page={page}"
                    ),
                    token,
                )
                .await?;
            out.extend(projects.into_iter().map(|p| p.path_with_namespace));
            match next {
                Some(n) => page = n,
                None => break,
            }
        }
        Ok(out)
    }
}
