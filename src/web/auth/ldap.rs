//! LDAP sign-in: a simple bind as the user, whose DN is `REPOBOX_LDAP_USER_DN` with the
//! username put in place of `{username}` (escaped as an RDN value, so `,` `=` `+` and the
//! like cannot change which entry is meant), then a base-scope read of the entry's `uid`,
//! `cn` and `mail` with the user's own rights. `ldaps://` URLs use rustls.
//!
//! An empty password is refused before anything is sent: LDAP treats a simple bind with
//! an empty password as an anonymous ("unauthenticated") bind, which succeeds.

use std::time::Duration;

use anyhow::{Context, bail};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape};

use super::{AuthError, Identity, ProviderKind};
use crate::config::Config;

const PLACEHOLDER: &str = "{username}";
/// The whole exchange (connect, bind, read) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Longer usernames are refused without asking the directory.
const MAX_USERNAME: usize = 256;
/// LDAP result code `invalidCredentials` (RFC 4511): wrong password or no such user.
const INVALID_CREDENTIALS: u32 = 49;

const KIND: ProviderKind = ProviderKind::Ldap;

pub(super) struct LdapProvider {
    url: String,
    user_dn: String,
}

impl LdapProvider {
    /// LDAP sign-in, when `REPOBOX_LDAP_URL` and `REPOBOX_LDAP_USER_DN` are set.
    pub(super) fn from_config(config: &Config) -> anyhow::Result<Option<LdapProvider>> {
        let Some((url, user_dn)) = super::pair(
            &config.ldap_url,
            "REPOBOX_LDAP_URL",
            &config.ldap_user_dn,
            "REPOBOX_LDAP_USER_DN",
        )?
        else {
            return Ok(None);
        };
        let parsed = url::Url::parse(&url).context("REPOBOX_LDAP_URL is not a URL")?;
        if !matches!(parsed.scheme(), "ldap" | "ldaps") {
            bail!("REPOBOX_LDAP_URL must start with ldap:// or ldaps://");
        }
        if user_dn.matches(PLACEHOLDER).count() != 1 {
            bail!(
                "REPOBOX_LDAP_USER_DN must contain {PLACEHOLDER} once, e.g. uid={PLACEHOLDER},ou=people,dc=example,dc=org"
            );
        }
        Ok(Some(LdapProvider { url, user_dn }))
    }

    /// The DN to bind as for `username`.
    fn dn_for(&self, username: &str) -> String {
        self.user_dn.replace(PLACEHOLDER, &dn_escape(username))
    }

    pub(super) async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, AuthError> {
        if username.is_empty()
            || username.len() > MAX_USERNAME
            || username.chars().any(char::is_control)
        {
            return Err(AuthError::Denied("wrong username or password".into()));
        }
        if password.is_empty() {
            return Err(AuthError::Denied("wrong username or password".into()));
        }
        let dn = self.dn_for(username);
        match tokio::time::timeout(TIMEOUT, self.bind_and_read(&dn, username, password)).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(provider = %KIND, "LDAP server did not answer in time");
                Err(AuthError::Provider(
                    "the directory did not answer in time".into(),
                ))
            }
        }
    }

    async fn bind_and_read(
        &self,
        dn: &str,
        username: &str,
        password: &str,
    ) -> Result<Identity, AuthError> {
        let settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(unreachable_error)?;
        ldap3::drive!(conn);
        let bind = ldap
            .simple_bind(dn, password)
            .await
            .map_err(unreachable_error)?;
        if bind.rc == INVALID_CREDENTIALS {
            tracing::info!(provider = %KIND, "LDAP bind refused");
            return Err(AuthError::Denied("wrong username or password".into()));
        }
        if bind.rc != 0 {
            tracing::warn!(provider = %KIND, rc = bind.rc, text = %bind.text, "LDAP bind failed");
            return Err(AuthError::Denied(format!(
                "the directory refused the sign-in (code {})",
                bind.rc
            )));
        }
        let (entries, _) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["uid", "cn", "mail"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| {
                tracing::warn!(provider = %KIND, error = %e, "LDAP read of the user's entry failed");
                AuthError::Provider("the directory did not return the user's entry".into())
            })?;
        let _ = ldap.unbind().await;
        let entry = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| {
                AuthError::Provider("the directory did not return the user's entry".into())
            })?;
        let first = |name: &str| {
            entry
                .attrs
                .get(name)
                .and_then(|v| v.first())
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Ok(Identity {
            provider: KIND,
            id: entry.dn.clone(),
            login: first("uid").unwrap_or_else(|| username.to_owned()),
            name: first("cn"),
            email: first("mail"),
            access_token: None,
        })
    }
}

fn unreachable_error(error: ldap3::LdapError) -> AuthError {
    tracing::warn!(provider = %KIND, error = %error, "LDAP server unreachable");
    AuthError::Provider("the directory could not be reached".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_escaped_into_one_rdn_value() {
        let p = LdapProvider {
            url: "ldap://127.0.0.1".into(),
            user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
        };
        assert_eq!(p.dn_for("alice"), "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(
            p.dn_for("bob,ou=admins"),
            "uid=bob\\2cou\\3dadmins,ou=people,dc=example,dc=org"
        );
    }
}
