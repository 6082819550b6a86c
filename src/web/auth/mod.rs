//! Dashboard sign-in providers (SPEC section 8): GitHub and GitLab OAuth web flows,
//! Google OpenID Connect, and LDAP bind. The routes own sessions and cookies; this module
//! turns a configured provider plus what the browser brings back into an [`Identity`].
//!
//! A redirect flow is two calls: [`Authenticator::start`] gives the provider URL and a
//! [`PendingLogin`] (state, PKCE verifier, OIDC nonce) for the session; the callback hands
//! both back to [`Authenticator::finish`], which checks the state in constant time before
//! any request to the provider. Error texts are safe to show: they never carry a token,
//! secret, code or password (details that could are logged masked, or not at all).

mod http;
mod ldap;
mod oauth;
pub use oauth::github_web_url;
mod oidc;

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::secret::Secret;

/// A way to sign in to the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    GitHub,
    GitLab,
    Google,
    Ldap,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::GitHub,
        ProviderKind::GitLab,
        ProviderKind::Google,
        ProviderKind::Ldap,
    ];

    /// The name in routes (`/auth/github`) and in `REPOBOX_ADMINS` (`github:octocat`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::GitHub => "github",
            ProviderKind::GitLab => "gitlab",
            ProviderKind::Google => "google",
            ProviderKind::Ldap => "ldap",
        }
    }

    /// Whether sign-in goes through a browser redirect (everything but LDAP).
    pub fn is_redirect(self) -> bool {
        self != ProviderKind::Ldap
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or(AuthError::NotConfigured)
    }
}

/// Who signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: ProviderKind,
    /// Stable id at the provider: GitHub/GitLab numeric user id, Google `sub`, LDAP DN.
    pub id: String,
    /// GitHub login, GitLab username, Google e-mail, LDAP uid.
    pub login: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// GitHub/GitLab: the user's OAuth access token (to list the repositories they can
    /// reach for "new job"); never logged.
    pub access_token: Option<Secret>,
}

/// What the session keeps between [`Authenticator::start`] and
/// [`Authenticator::finish`]. Its `Debug` shows only the provider.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    provider: ProviderKind,
    state: String,
    pkce_verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
}

impl PendingLogin {
    /// The provider this login was started with.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in failed. The texts are safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The provider is not configured on this install.
    #[error("this sign-in method is not configured")]
    NotConfigured,
    /// The callback's `state` is not the one this session started with (a stale tab, a
    /// second login in another tab, or a forged callback).
    #[error("the sign-in response does not belong to this session; please sign in again")]
    StateMismatch,
    /// The provider or directory refused the user (wrong password, revoked code, an ID
    /// token that does not verify, an unverified e-mail).
    #[error("sign-in refused: {0}")]
    Denied(String),
    /// The provider could not be reached or answered something unexpected.
    #[error("the sign-in provider failed: {0}")]
    Provider(String),
}

/// The configured sign-in providers, built once from [`Config`].
pub struct Authenticator {
    github: Option<oauth::OAuthProvider>,
    gitlab: Option<oauth::OAuthProvider>,
    google: Option<oidc::OidcProvider>,
    ldap: Option<ldap::LdapProvider>,
    /// `REPOBOX_ADMINS`, lower-cased.
    admins: Vec<(ProviderKind, String)>,
    http: http::OAuthHttp,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("providers", &self.providers())
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the providers whose settings are present. Errors name the variable to fix.
    pub fn from_config(config: &Config, http: reqwest::Client) -> anyhow::Result<Authenticator> {
        let github = oauth::OAuthProvider::github(config)?;
        let gitlab = oauth::OAuthProvider::gitlab(config)?;
        let google = oidc::OidcProvider::from_config(config)?;
        let ldap = ldap::LdapProvider::from_config(config)?;
        let admins = parse_admins(&config.admins)?;
        Ok(Authenticator {
            github,
            gitlab,
            google,
            ldap,
            admins,
            http: http::OAuthHttp::new(http),
        })
    }

    /// The sign-in options configured (for the login page), in a fixed order.
    pub fn providers(&self) -> Vec<ProviderKind> {
        let mut out = Vec::new();
        if self.github.is_some() {
            out.push(ProviderKind::GitHub);
        }
        if self.gitlab.is_some() {
            out.push(ProviderKind::GitLab);
        }
        if self.google.is_some() {
            out.push(ProviderKind::Google);
        }
        if self.ldap.is_some() {
            out.push(ProviderKind::Ldap);
        }
        out
    }

    /// Start of a redirect flow: the provider URL to send the browser to, and what the
    /// caller keeps in the session until the callback. Async because Google's endpoints
    /// come from its discovery document (fetched once, then cached).
    pub async fn start(
        &self,
        provider: ProviderKind,
        redirect_uri: &str,
    ) -> Result<(String, PendingLogin), AuthError> {
        match provider {
            ProviderKind::GitHub | ProviderKind::GitLab => {
                let p = self.oauth(provider)?;
                p.start(redirect_uri)
            }
            ProviderKind::Google => {
                let p = self.google.as_ref().ok_or(AuthError::NotConfigured)?;
                p.start(&self.http, redirect_uri).await
            }
            ProviderKind::Ldap => Err(AuthError::NotConfigured),
        }
    }

    /// The callback: checks `state` against the pending login (constant time; nothing is
    /// sent to the provider when it differs), exchanges the code with the PKCE verifier
    /// and fetches (OAuth) or verifies (OIDC ID token: signature via the issuer's JWKS,
    /// `aud`, `iss`, `exp`, `nonce`) the identity.
    pub async fn finish(
        &self,
        provider: ProviderKind,
        pending: PendingLogin,
        code: &str,
        state: &str,
        redirect_uri: &str,
    ) -> Result<Identity, AuthError> {
        if pending.provider != provider {
            return Err(AuthError::StateMismatch);
        }
        let same: bool = pending.state.as_bytes().ct_eq(state.as_bytes()).into();
        if !same || pending.state.is_empty() {
            return Err(AuthError::StateMismatch);
        }
        if code.is_empty() {
            return Err(AuthError::Denied("the provider returned no code".into()));
        }
        match provider {
            ProviderKind::GitHub | ProviderKind::GitLab => {
                let p = self.oauth(provider)?;
                p.finish(&self.http, pending, code, redirect_uri).await
            }
            ProviderKind::Google => {
                let p = self.google.as_ref().ok_or(AuthError::NotConfigured)?;
                p.finish(&self.http, pending, code, redirect_uri).await
            }
            ProviderKind::Ldap => Err(AuthError::NotConfigured),
        }
    }

    /// LDAP: binds as the user (DN from the template, the username escaped for DNs) and
    /// reads `uid`/`cn`/`mail`; a wrong password or an unknown user is
    /// [`AuthError::Denied`].
    pub async fn ldap_login(&self, username: &str, password: &str) -> Result<Identity, AuthError> {
        let p = self.ldap.as_ref().ok_or(AuthError::NotConfigured)?;
        p.login(username, password).await
    }

    /// Whether `REPOBOX_ADMINS` names this identity (`provider:login`, case-insensitive).
    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.is_admin_login(identity.provider.as_str(), &identity.login)
    }

    /// [`Self::is_admin`] for a signed-in session's provider name and login.
    pub fn is_admin_login(&self, provider: &str, login: &str) -> bool {
        let login = login.to_lowercase();
        self.admins
            .iter()
            .any(|(p, l)| p.as_str() == provider && *l == login)
    }

    fn oauth(&self, provider: ProviderKind) -> Result<&oauth::OAuthProvider, AuthError> {
        match provider {
            ProviderKind::GitHub => self.github.as_ref(),
            ProviderKind::GitLab => self.gitlab.as_ref(),
            _ => None,
        }
        .ok_or(AuthError::NotConfigured)
    }
}

/// `REPOBOX_ADMINS` entries as `(provider, lower-cased login)`.
fn parse_admins(entries: &[String]) -> anyhow::Result<Vec<(ProviderKind, String)>> {
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((provider, login)) = entry.split_once(':') else {
            bail!("REPOBOX_ADMINS: `{entry}` is not `provider:login` (e.g. `github:octocat`)");
        };
        let provider: ProviderKind = provider.trim().parse().ok().with_context(|| {
            format!(
                "REPOBOX_ADMINS: `{entry}`: the provider is one of github, gitlab, google, ldap"
            )
        })?;
        let login = login.trim();
        if login.is_empty() {
            bail!("REPOBOX_ADMINS: `{entry}` has no login");
        }
        out.push((provider, login.to_lowercase()));
    }
    Ok(out)
}

/// A required companion setting: `Some` when both are set, `None` when neither, an error
/// naming the missing variable otherwise.
fn pair<A: Clone, B: Clone>(
    a: &Option<A>,
    a_name: &str,
    b: &Option<B>,
    b_name: &str,
) -> anyhow::Result<Option<(A, B)>> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a.clone(), b.clone()))),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("{b_name} is required when {a_name} is set"),
        (None, Some(_)) => bail!("{a_name} is required when {b_name} is set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_parse_case_insensitive() {
        let admins = parse_admins(&[
            "github:OctoCat".into(),
            " ldap:alice ".into(),
            String::new(),
        ])
        .unwrap();
        assert_eq!(
            admins,
            vec![
                (ProviderKind::GitHub, "octocat".into()),
                (ProviderKind::Ldap, "alice".into())
            ]
        );
        assert!(parse_admins(&["octocat".into()]).is_err());
        assert!(parse_admins(&["bitbucket:x".into()]).is_err());
        assert!(parse_admins(&["gitlab:".into()]).is_err());
    }

    #[test]
    fn pending_login_debug_hides_secrets() {
        let p = PendingLogin {
            provider: ProviderKind::Google,
            state: "the-state".into(),
            pkce_verifier: "the-verifier".into(),
            nonce: Some("the-nonce".into()),
        };
        let text = format!("{p:?}");
        assert!(!text.contains("the-"), "{text}");
    }

    #[test]
    fn provider_names_round_trip() {
        for p in ProviderKind::ALL {
            assert_eq!(p.as_str().parse::<ProviderKind>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
