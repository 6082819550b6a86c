//! [`SettingsStore`] on Redis: the `settings` hash, `github_app`, setup states and token.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{RedisStore, unavailable};
use crate::store::{SettingsStore, StoreError};

#[async_trait]
impl SettingsStore for RedisStore {
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hget(self.keys.settings(), name)
            .await
            .map_err(unavailable)
    }

    async fn get_settings(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hgetall(self.keys.settings())
            .await
            .map_err(unavailable)
    }

    async fn set_settings(&self, fields: &[(&str, String)]) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        conn.hset_multiple::<_, _, _, ()>(self.keys.settings(), fields)
            .await
            .map_err(unavailable)
    }

    async fn delete_setting(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.hdel::<_, _, ()>(self.keys.settings(), name)
            .await
            .map_err(unavailable)
    }

    async fn setup_secrets(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hgetall(self.keys.setup_secrets())
            .await
            .map_err(unavailable)
    }

    async fn set_setup_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(self.keys.setup_secrets(), name, sealed)
            .await
            .map_err(unavailable)
    }

    async fn delete_setup_secret(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn
            .hdel(self.keys.setup_secrets(), name)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn github_app(&self) -> Result<Option<HashMap<String, String>>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.github_app())
            .await
            .map_err(unavailable)?;
        Ok((!map.is_empty()).then_some(map))
    }

    async fn create_github_app(&self, fields: &[(&str, String)]) -> Result<bool, StoreError> {
        let script = Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
             redis.call('HSET', KEYS[1], unpack(ARGV)) return 1",
        );
        let mut invocation = script.key(self.keys.github_app());
        for (k, v) in fields {
            invocation.arg(*k).arg(v);
        }
        let mut conn = self.conn.clone();
        let created: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    async fn put_setup_state(&self, state: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(self.keys.setup_state(state), "1", ttl.as_secs().max(1))
            .await
            .map_err(unavailable)
    }

    async fn take_setup_state(&self, state: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn
            .del(self.keys.setup_state(state))
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn setup_token(&self, candidate: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.setup_token();
        let (token,): (String,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .ignore()
            .get(&key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(token)
    }

    async fn confirm_github_app(&self, at: &str) -> Result<bool, StoreError> {
        let script = Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
             redis.call('HSET', KEYS[1], 'confirmed_at', ARGV[1]) return 1",
        );
        let mut conn = self.conn.clone();
        let done: i64 = script
            .key(self.keys.github_app())
            .arg(at)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(done == 1)
    }
}
