//! [`SettingsStore`] on the embedded store: the `settings` and `setup_secrets` records,
//! `github_app`, the setup states and the setup token.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::EmbeddedStore;
use super::data::{self, owned};
use crate::store::{SettingsStore, StoreError};

#[async_trait]
impl SettingsStore for EmbeddedStore {
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.read(move |c, keys| Ok(data::hget(c, &keys.settings(), &name)?))
            .await
    }

    async fn get_settings(&self) -> Result<HashMap<String, String>, StoreError> {
        self.read(|c, keys| Ok(data::hgetall(c, &keys.settings())?))
            .await
    }

    async fn set_settings(&self, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let fields = owned(fields);
        self.write(move |c, keys| Ok(data::hset(c, &keys.settings(), &fields)?))
            .await
    }

    async fn delete_setting(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |c, keys| Ok(data::hdel(c, &keys.settings(), &name).map(drop)?))
            .await
    }

    async fn setup_secrets(&self) -> Result<HashMap<String, String>, StoreError> {
        self.read(|c, keys| Ok(data::hgetall(c, &keys.setup_secrets())?))
            .await
    }

    async fn set_setup_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError> {
        let field = [(name.to_owned(), sealed.to_owned())];
        self.write(move |c, keys| Ok(data::hset(c, &keys.setup_secrets(), &field)?))
            .await
    }

    async fn delete_setup_secret(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |c, keys| Ok(data::hdel(c, &keys.setup_secrets(), &name)?))
            .await
    }

    async fn github_app(&self) -> Result<Option<HashMap<String, String>>, StoreError> {
        let map = self
            .read(|c, keys| Ok(data::hgetall(c, &keys.github_app())?))
            .await?;
        Ok((!map.is_empty()).then_some(map))
    }

    async fn create_github_app(&self, fields: &[(&str, String)]) -> Result<bool, StoreError> {
        let fields = owned(fields);
        self.write(move |c, keys| {
            let key = keys.github_app();
            if data::hexists(c, &key)? {
                return Ok(false);
            }
            data::hset(c, &key, &fields)?;
            Ok(true)
        })
        .await
    }

    async fn put_setup_state(&self, state: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.setup_state(state);
        let ttl = ttl.max(Duration::from_secs(1));
        self.write(move |c, _| Ok(data::set(c, &key, "1", Some(ttl), false).map(drop)?))
            .await
    }

    async fn take_setup_state(&self, state: &str) -> Result<bool, StoreError> {
        let key = self.keys.setup_state(state);
        self.write(move |c, _| Ok(data::del(c, &key)?)).await
    }

    async fn setup_token(&self, candidate: &str) -> Result<String, StoreError> {
        let candidate = candidate.to_owned();
        self.write(move |c, keys| {
            let key = keys.setup_token();
            data::set(c, &key, &candidate, None, true)?;
            Ok(data::get(c, &key)?.unwrap_or(candidate))
        })
        .await
    }

    async fn confirm_github_app(&self, at: &str) -> Result<bool, StoreError> {
        let at = at.to_owned();
        self.write(move |c, keys| {
            let key = keys.github_app();
            if !data::hexists(c, &key)? {
                return Ok(false);
            }
            data::hset(c, &key, &[("confirmed_at", at.as_str())])?;
            Ok(true)
        })
        .await
    }
}
