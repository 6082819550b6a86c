//! [`Sessions`] on Redis: `session:<key>` strings with a TTL, and `signin-failures:<key>`
//! counters whose TTL is the throttle's window.

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

    async fn signin_failures(&self, key: &str) -> Result<(u64, Duration), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.signin_failures(key);
        let (count, ttl): (Option<u64>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((count.unwrap_or(0), Duration::from_millis(ttl.max(0) as u64)))
    }

    async fn count_signin_failure(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.signin_failures(key);
        // INCR and the window's expiry in one step: a count never outlives its window.
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window.as_millis().max(1) as u64)
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(count)
    }
}
