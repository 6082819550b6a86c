//! [`Recovery`] on the embedded store: the dedupe values, `redeliver:cursor`,
//! `lock:<name>`.

use std::time::Duration;

use async_trait::async_trait;

use super::{EmbeddedStore, data};
use crate::store::{Delivery, Recovery, StoreError};

#[async_trait]
impl Recovery for EmbeddedStore {
    async fn delivery_seen(&self, delivery: Delivery<'_>) -> Result<bool, StoreError> {
        let key = self.keys.delivery(delivery);
        self.read(move |c, _| Ok(data::get(c, &key)?.is_some()))
            .await
    }

    async fn redeliver_cursor(&self) -> Result<Option<u64>, StoreError> {
        let text = self
            .read(|c, keys| Ok(data::get(c, &keys.redeliver_cursor())?))
            .await?;
        text.map(|t| {
            t.parse()
                .map_err(|_| StoreError::Corrupt(format!("redeliver:cursor is `{t}`")))
        })
        .transpose()
    }

    async fn set_redeliver_cursor(&self, delivery_id: u64) -> Result<(), StoreError> {
        self.write(move |c, keys| {
            let value = delivery_id.to_string();
            Ok(data::set(c, &keys.redeliver_cursor(), &value, None, false).map(drop)?)
        })
        .await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.lock(name);
        self.write(move |c, _| {
            let holder = ulid::Ulid::new().to_string();
            Ok(data::set(c, &key, &holder, Some(ttl), true)?)
        })
        .await
    }
}
