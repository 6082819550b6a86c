//! [`Recovery`] on Redis: the dedupe keys, `redeliver:cursor`, `lock:<name>`.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{RedisStore, unavailable};
use crate::store::{Delivery, Recovery, StoreError};

#[async_trait]
impl Recovery for RedisStore {
    async fn delivery_seen(&self, delivery: Delivery<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        conn.exists(self.keys.delivery(delivery))
            .await
            .map_err(unavailable)
    }

    async fn redeliver_cursor(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn
            .get(self.keys.redeliver_cursor())
            .await
            .map_err(unavailable)?;
        text.map(|t| {
            t.parse()
                .map_err(|_| StoreError::Corrupt(format!("redeliver:cursor is `{t}`")))
        })
        .transpose()
    }

    async fn set_redeliver_cursor(&self, delivery_id: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set(self.keys.redeliver_cursor(), delivery_id.to_string())
            .await
            .map_err(unavailable)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.lock(name))
            .arg(ulid::Ulid::new().to_string())
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken.is_some())
    }
}
