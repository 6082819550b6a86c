//! GitHub and GitLab sign-in: the OAuth 2 authorization-code flow with PKCE (S256), then
//! the user's profile from the forge's REST API with the new access token.
//!
//! GitHub: `{web}/login/oauth/authorize`, `{web}/login/oauth/access_token`, `GET {api}/user`
//! (the GitHub App's user-to-server token; an App ignores scopes). GitLab:
//! `{url}/oauth/authorize`, `{url}/oauth/token`, `GET {url}/api/v4/user`, scopes
//! `read_user read_api` (the latter to list projects for "new job").

use anyhow::{Context, bail};
use oauth2::basic::{BasicClient, BasicErrorResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use serde::Deserialize;
use url::Url;

use super::http::{OAuthHttp, read_limited};
use super::{AuthError, Identity, PendingLogin, ProviderKind};
use crate::config::Config;
use crate::secret::Secret;

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub(super) struct OAuthProvider {
    kind: ProviderKind,
    client_id: String,
    client_secret: Secret,
    authorize_url: AuthUrl,
    token_url: TokenUrl,
    /// The REST endpoint that describes the signed-in user.
    user_url: String,
    scopes: &'static [&'static str],
}

impl OAuthProvider {
    /// GitHub sign-in, when `REPOBOX_GITHUB_CLIENT_ID`/`_SECRET` are set.
    pub(super) fn github(config: &Config) -> anyhow::Result<Option<OAuthProvider>> {
        let Some((client_id, client_secret)) = super::pair(
            &config.github_client_id,
            "REPOBOX_GITHUB_CLIENT_ID",
            &config.github_client_secret,
            "REPOBOX_GITHUB_CLIENT_SECRET",
        )?
        else {
            return Ok(None);
        };
        let web = github_web_url(config)?;
        let api = config.github_api_url.trim_end_matches('/');
        Ok(Some(OAuthProvider {
            kind: ProviderKind::GitHub,
            client_id,
            client_secret,
            authorize_url: AuthUrl::new(format!("{web}/login/oauth/authorize"))
                .context("REPOBOX_GITHUB_WEB_URL")?,
            token_url: TokenUrl::new(format!("{web}/login/oauth/access_token"))
                .context("REPOBOX_GITHUB_WEB_URL")?,
            user_url: format!("{api}/user"),
            scopes: &[],
        }))
    }

    /// GitLab sign-in, when `REPOBOX_GITLAB_CLIENT_ID`/`_SECRET` and `REPOBOX_GITLAB_URL`
    /// are set.
    pub(super) fn gitlab(config: &Config) -> anyhow::Result<Option<OAuthProvider>> {
        let Some((client_id, client_secret)) = super::pair(
            &config.gitlab_client_id,
            "REPOBOX_GITLAB_CLIENT_ID",
            &config.gitlab_client_secret,
            "REPOBOX_GITLAB_CLIENT_SECRET",
        )?
        else {
            return Ok(None);
        };
        let Some(base) = &config.gitlab_url else {
            bail!("REPOBOX_GITLAB_URL is required when REPOBOX_GITLAB_CLIENT_ID is set");
        };
        Url::parse(base).context("REPOBOX_GITLAB_URL is not a URL")?;
        let base = base.trim_end_matches('/');
        Ok(Some(OAuthProvider {
            kind: ProviderKind::GitLab,
            client_id,
            client_secret,
            authorize_url: AuthUrl::new(format!("{base}/oauth/authorize"))
                .context("REPOBOX_GITLAB_URL")?,
            token_url: TokenUrl::new(format!("{base}/oauth/token"))
                .context("REPOBOX_GITLAB_URL")?,
            user_url: format!("{base}/api/v4/user"),
            scopes: &["read_user", "read_api"],
        }))
    }

    fn client(&self, redirect_uri: &str) -> Result<Client, AuthError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| AuthError::Provider("the callback address is not a URL".into()))?;
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
            .set_auth_uri(self.authorize_url.clone())
            .set_token_uri(self.token_url.clone())
            .set_redirect_uri(redirect)
            // Both forges take the credentials as form fields; GitHub documents only these.
            .set_auth_type(AuthType::RequestBody))
    }

    pub(super) fn start(&self, redirect_uri: &str) -> Result<(String, PendingLogin), AuthError> {
        let client = self.client(redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.scopes {
            request = request.add_scope(Scope::new((*scope).to_owned()));
        }
        let (url, state) = request.url();
        Ok((
            url.to_string(),
            PendingLogin {
                provider: self.kind,
                state: state.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                nonce: None,
            },
        ))
    }

    pub(super) async fn finish(
        &self,
        http: &OAuthHttp,
        pending: PendingLogin,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Identity, AuthError> {
        let client = self.client(redirect_uri)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(http)
            .await
            .map_err(|e| token_error(self.kind, e))?;
        let access_token = Secret::new(token.access_token().secret().clone());
        let user = self.fetch_user(http, &access_token).await?;
        Ok(Identity {
            provider: self.kind,
            id: user.id.to_string(),
            login: user.login,
            name: user.name.filter(|n| !n.is_empty()),
            email: user.email.filter(|e| !e.is_empty()),
            access_token: Some(access_token),
        })
    }

    async fn fetch_user(&self, http: &OAuthHttp, token: &Secret) -> Result<User, AuthError> {
        let kind = self.kind;
        let mut request = http
            .client()
            .get(&self.user_url)
            .bearer_auth(token.expose())
            .header(reqwest::header::USER_AGENT, "repobox");
        if kind == ProviderKind::GitHub {
            request = request
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
        }
        let response = request.send().await.map_err(|e| {
            tracing::warn!(provider = %kind, error = %e.without_url(), "user request failed");
            AuthError::Provider(format!("{kind} could not be reached"))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(AuthError::Denied(format!(
                "{kind} did not accept the new access token"
            )));
        }
        if !status.is_success() {
            tracing::warn!(provider = %kind, %status, "user request refused");
            return Err(AuthError::Provider(format!(
                "{kind} answered {status} for the user profile"
            )));
        }
        let body = read_limited(response).await.map_err(|e| {
            tracing::warn!(provider = %kind, error = %e, "user response unreadable");
            AuthError::Provider(format!("{kind} sent an unreadable user profile"))
        })?;
        let user: RawUser = serde_json::from_slice(&body).map_err(|e| {
            tracing::warn!(provider = %kind, error = %e, "user response unexpected");
            AuthError::Provider(format!("{kind} sent an unexpected user profile"))
        })?;
        let login = match kind {
            ProviderKind::GitHub => user.login,
            _ => user.username,
        }
        .filter(|l| !l.is_empty())
        .ok_or_else(|| AuthError::Provider(format!("{kind} sent a profile without a login")))?;
        Ok(User {
            id: user.id,
            login,
            name: user.name,
            email: user.email.or(user.public_email),
        })
    }
}

/// The profile fields both forges send (GitHub `login`, GitLab `username`).
#[derive(Deserialize)]
struct RawUser {
    id: u64,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    public_email: Option<String>,
}

struct User {
    id: u64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

/// A failed code exchange as a user-safe error. Response bodies are never logged or
/// shown: a body that failed to parse as a token response may still hold a token.
pub(super) fn token_error<RE: std::error::Error>(
    kind: ProviderKind,
    error: RequestTokenError<RE, BasicErrorResponse>,
) -> AuthError {
    match error {
        RequestTokenError::ServerResponse(r) => refused(kind, &r),
        // GitHub answers a bad code with HTTP 200 and an error document.
        RequestTokenError::Parse(_, body) => {
            match serde_json::from_slice::<BasicErrorResponse>(&body) {
                Ok(r) => refused(kind, &r),
                Err(_) => {
                    tracing::warn!(provider = %kind, "unexpected token response");
                    AuthError::Provider(format!("{kind} sent an unexpected token response"))
                }
            }
        }
        RequestTokenError::Request(e) => {
            tracing::warn!(provider = %kind, error = %e, "token request failed");
            AuthError::Provider(format!("{kind} could not be reached"))
        }
        RequestTokenError::Other(_) => {
            tracing::warn!(provider = %kind, "unexpected token response");
            AuthError::Provider(format!("{kind} sent an unexpected token response"))
        }
    }
}

fn refused(kind: ProviderKind, response: &BasicErrorResponse) -> AuthError {
    let code = response.error().to_string();
    // The error code is a short token from the provider; anything else is not repeated.
    let code = if code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        code
    } else {
        "error".to_owned()
    };
    tracing::info!(provider = %kind, error = %code, "the provider refused the sign-in code");
    AuthError::Denied(format!("{kind} refused the sign-in ({code})"))
}

/// GitHub's web base: `REPOBOX_GITHUB_WEB_URL`, else derived from the API base
/// (`https://api.github.com` → `https://github.com`, GitHub Enterprise Server
/// `https://host/api/v3` → `https://host`, anything else as it is).
pub fn github_web_url(config: &Config) -> anyhow::Result<String> {
    if let Some(web) = &config.github_web_url {
        Url::parse(web).context("REPOBOX_GITHUB_WEB_URL is not a URL")?;
        return Ok(web.trim_end_matches('/').to_owned());
    }
    let mut api = Url::parse(&config.github_api_url).context("REPOBOX_GITHUB_API_URL")?;
    if api.host_str() == Some("api.github.com") {
        return Ok("https://github.com".to_owned());
    }
    let path = api.path().trim_end_matches('/').to_owned();
    if let Some(prefix) = path.strip_suffix("/api/v3") {
        api.set_path(prefix);
    }
    Ok(api.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["repobox"];
        all.extend_from_slice(args);
        all.push("serve");
        crate::cli::Cli::try_parse_from(all).unwrap().config
    }

    #[test]
    fn github_web_url_is_derived_from_the_api_url() {
        assert_eq!(github_web_url(&config(&[])).unwrap(), "https://github.com");
        let ghe = config(&["--github-api-url", "https://ghe.example.com/api/v3/"]);
        assert_eq!(github_web_url(&ghe).unwrap(), "https://ghe.example.com");
        let set = config(&["--github-web-url", "http://127.0.0.1:9/"]);
        assert_eq!(github_web_url(&set).unwrap(), "http://127.0.0.1:9");
    }
}
