//! [`Sessions`] on the embedded store: `session:<key>` values with an expiry, and
//! `signin-failures:<key>` counters whose expiry is the throttle's window.

use std::time::Duration;

use async_trait::async_trait;

use super::{EmbeddedStore, data};
use crate::store::{Sessions, StoreError};

#[async_trait]
impl Sessions for EmbeddedStore {
    async fn load_session(&self, id: &str) -> Result<Option<String>, StoreError> {
        let key = self.keys.session(id);
        self.read(move |c, _| Ok(data::get(c, &key)?)).await
    }

    async fn save_session(
        &self,
        id: &str,
        data: &str,
        ttl: Duration,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let (key, value) = (self.keys.session(id), data.to_owned());
        self.write(move |c, _| Ok(data::set(c, &key, &value, Some(ttl), only_new)?))
            .await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let key = self.keys.session(id);
        self.write(move |c, _| Ok(data::del(c, &key).map(drop)?))
            .await
    }

    async fn signin_failures(&self, key: &str) -> Result<(u64, Duration), StoreError> {
        let key = self.keys.signin_failures(key);
        self.read(move |c, _| {
            let count = data::get(c, &key)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok((count, data::ttl(c, &key)?.unwrap_or_default()))
        })
        .await
    }

    async fn count_signin_failure(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let key = self.keys.signin_failures(key);
        self.write(move |c, _| Ok(data::incr_within(c, &key, window)?))
            .await
    }
}
