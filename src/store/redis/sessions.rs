//! [`Sessions`] on Redis: `session:<id>` strings with a TTL.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{RedisStore, unavailable};
use crate::store::{Sessions, StoreError};

#[async_trait]
impl Sessions for RedisStore {
    async fn load_session(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(self.keys.session(id)).await.map_err(unavailable)
    }

    async fn save_session(
        &self,
        id: &str,
        data: &str,
        ttl: Duration,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.session(id))
            .arg(data)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        if only_new {
            cmd.arg("NX");
        }
        let reply: Option<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.keys.session(id)).await.map_err(unavailable)?;
        Ok(())
    }
}
