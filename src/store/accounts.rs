//! Dashboard users and their personal providers (SPEC sections 8 and 9): the records
//! behind `user:{provider}:{id}` and `provider:{id}`, with their hash forms.
//!
//! A provider's token is stored sealed ([`crate::crypto::SecretBox`], context
//! [`Provider::token_context`]); these types carry the sealed text only, and the store
//! refuses a token that is not sealed.

use std::collections::HashMap;

use async_trait::async_trait;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use crate::job::rfc3339;
use crate::model::ForgeKind;

use super::StoreError;

/// Dashboard users and their personal providers.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates or updates `user:{provider}:{id}`; `created_at` is kept from the first write.
    async fn upsert_user(&self, user: &User) -> Result<(), StoreError>;

    async fn get_user(&self, provider: &str, id: &str) -> Result<Option<User>, StoreError>;

    /// Stores `provider:{id}` and adds it to its owner's index. The token must already be
    /// sealed ([`crate::crypto::SecretBox`]); plain text is refused with
    /// [`StoreError::Corrupt`] and nothing is written.
    async fn add_provider(&self, provider: &Provider) -> Result<(), StoreError>;

    /// The owner's (`provider:id`, see [`User::owner`]) providers, oldest first.
    async fn list_providers(&self, owner: &str) -> Result<Vec<Provider>, StoreError>;

    async fn get_provider(&self, id: Ulid) -> Result<Option<Provider>, StoreError>;

    /// Deletes the provider if `owner` owns it; `false` when it is not theirs or is gone.
    async fn delete_provider(&self, owner: &str, id: Ulid) -> Result<bool, StoreError>;
}

/// A dashboard user, keyed by the sign-in provider (`github`, `gitlab`, `google`,
/// `ldap`) and that provider's user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub provider: String,
    pub id: String,
    pub login: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Kept from the first [`Accounts::upsert_user`].
    pub created_at: OffsetDateTime,
    pub last_login_at: OffsetDateTime,
}

impl User {
    /// `provider:id`: the owner of this user's providers.
    pub fn owner(&self) -> String {
        owner(&self.provider, &self.id)
    }

    /// The hash form (without `created_at`, which is written only once).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("provider", self.provider.clone()),
            ("id", self.id.clone()),
            ("login", self.login.clone()),
            ("name", self.name.clone().unwrap_or_default()),
            ("email", self.email.clone().unwrap_or_default()),
            ("last_login_at", rfc3339(self.last_login_at)),
        ]
    }

    pub fn from_fields(map: &HashMap<String, String>) -> Result<User, String> {
        let req = |k: &str| required("user", map, k);
        Ok(User {
            provider: req("provider")?,
            id: req("id")?,
            login: req("login")?,
            name: optional(map, "name"),
            email: optional(map, "email"),
            created_at: time_field("user", map, "created_at")?,
            last_login_at: time_field("user", map, "last_login_at")?,
        })
    }
}

/// The owner text of a user's providers: `provider:id`.
pub fn owner(provider: &str, id: &str) -> String {
    format!("{provider}:{id}")
}

/// A user's personal forge credentials (dashboard settings page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: Ulid,
    /// The user it belongs to, `provider:id` ([`User::owner`]).
    pub owner: String,
    pub kind: ForgeKind,
    /// GitLab base URL, or the GitHub API URL.
    pub url: String,
    pub label: String,
    /// The token, sealed with [`Provider::token_context`]; never plain text.
    pub token: String,
    pub created_at: OffsetDateTime,
}

impl Provider {
    /// The associated data the token is sealed with: a sealed token copied to another
    /// provider record does not open there.
    pub fn token_context(id: Ulid) -> String {
        format!("provider:{id}:token")
    }

    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("owner", self.owner.clone()),
            ("kind", self.kind.to_string()),
            ("url", self.url.clone()),
            ("label", self.label.clone()),
            ("token", self.token.clone()),
            ("created_at", rfc3339(self.created_at)),
        ]
    }

    pub fn from_fields(id: Ulid, map: &HashMap<String, String>) -> Result<Provider, String> {
        let req = |k: &str| required("provider", map, k);
        Ok(Provider {
            id,
            owner: req("owner")?,
            kind: req("kind")?
                .parse()
                .map_err(|_| "provider record field `kind` is malformed".to_owned())?,
            url: req("url")?,
            label: optional(map, "label").unwrap_or_default(),
            token: req("token")?,
            created_at: time_field("provider", map, "created_at")?,
        })
    }

    pub fn created_ms(&self) -> i64 {
        (self.created_at.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

fn required(what: &str, map: &HashMap<String, String>, k: &str) -> Result<String, String> {
    map.get(k)
        .cloned()
        .ok_or_else(|| format!("{what} record lacks `{k}`"))
}

fn optional(map: &HashMap<String, String>, k: &str) -> Option<String> {
    map.get(k).filter(|v| !v.is_empty()).cloned()
}

fn time_field(
    what: &str,
    map: &HashMap<String, String>,
    k: &str,
) -> Result<OffsetDateTime, String> {
    let text = required(what, map, k)?;
    OffsetDateTime::parse(&text, &Rfc3339)
        .map_err(|_| format!("{what} record field `{k}` is malformed"))
}
