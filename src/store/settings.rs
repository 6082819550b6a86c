//! Admin settings (the `settings` hash, SPEC section 9) and what the first-run `/setup`
//! stores (the GitHub App, one-time manifest states, the setup token).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;

#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// One admin setting, if set.
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// The whole `settings` hash (see [`crate::settings::AdminSettings`]).
    async fn get_settings(&self) -> Result<HashMap<String, String>, StoreError>;

    /// Sets fields of the `settings` hash in one write (validate first:
    /// [`crate::settings::SettingsSource::save`]).
    async fn set_settings(&self, fields: &[(&str, String)]) -> Result<(), StoreError>;

    /// Removes one field of the `settings` hash (its default applies again).
    async fn delete_setting(&self, name: &str) -> Result<(), StoreError>;

    /// The setup secrets (`setup_secrets` hash): name → sealed value
    /// ([`crate::setup_secrets`]).
    async fn setup_secrets(&self) -> Result<HashMap<String, String>, StoreError>;

    /// Stores (or replaces) one setup secret; `sealed` must be sealed already.
    async fn set_setup_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError>;

    /// Removes one setup secret; `false` when there was none of that name.
    async fn delete_setup_secret(&self, name: &str) -> Result<bool, StoreError>;

    /// The GitHub App registered through `/setup` (`github_app` hash; secrets sealed).
    async fn github_app(&self) -> Result<Option<HashMap<String, String>>, StoreError>;

    /// Stores the App registered through `/setup` unless one is stored already (`false`
    /// then, and nothing changes): setup happens once.
    async fn create_github_app(&self, fields: &[(&str, String)]) -> Result<bool, StoreError>;

    /// Keeps a manifest-flow `state` for `ttl` (`setup:state:<state>`).
    async fn put_setup_state(&self, state: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Consumes a manifest-flow `state`: `true` once if it was issued and has not expired.
    async fn take_setup_state(&self, state: &str) -> Result<bool, StoreError>;

    /// The setup token (`setup:token`): `candidate` when none is stored yet, else the
    /// stored one, so every `serve` of an install prints and accepts the same token.
    async fn setup_token(&self, candidate: &str) -> Result<String, StoreError>;

    /// Marks the stored GitHub App as confirmed by an admin on `/setup` (field
    /// `confirmed_at`); `false` when no App is stored.
    async fn confirm_github_app(&self, at: &str) -> Result<bool, StoreError>;
}
