//! [`Accounts`] on Redis: `user:{provider}:{id}` and `provider:{id}` hashes.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{RedisStore, unavailable};
use crate::job::rfc3339;
use crate::store::{Accounts, StoreError};

#[async_trait]
impl Accounts for RedisStore {
    async fn upsert_user(&self, user: &crate::store::User) -> Result<(), StoreError> {
        let key = self.keys.user(&user.provider, &user.id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_nx(&key, "created_at", rfc3339(user.created_at))
            .ignore()
            .hset_multiple(&key, &user.to_fields())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get_user(
        &self,
        provider: &str,
        id: &str,
    ) -> Result<Option<crate::store::User>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.user(provider, id))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        crate::store::User::from_fields(&map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn add_provider(&self, provider: &crate::store::Provider) -> Result<(), StoreError> {
        if !crate::crypto::SecretBox::is_sealed(&provider.token) {
            // Never write a plain token at rest; the text names no value.
            return Err(StoreError::Corrupt(
                "provider token is not sealed; refusing to store it".into(),
            ));
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(self.keys.provider(provider.id), &provider.to_fields())
            .ignore()
            .zadd(
                self.keys.providers_by_user(&provider.owner),
                provider.id.to_string(),
                provider.created_ms(),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_providers(&self, owner: &str) -> Result<Vec<crate::store::Provider>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.keys.providers_by_user(owner), 0, -1)
            .await
            .map_err(unavailable)?;
        let ids: Vec<ulid::Ulid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.provider(*id));
        }
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, map) in ids.into_iter().zip(maps) {
            // A record deleted under a stale index entry is skipped.
            if map.is_empty() {
                continue;
            }
            let provider =
                crate::store::Provider::from_fields(id, &map).map_err(StoreError::Corrupt)?;
            if provider.owner == owner {
                out.push(provider);
            }
        }
        Ok(out)
    }

    async fn get_provider(
        &self,
        id: ulid::Ulid,
    ) -> Result<Option<crate::store::Provider>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.provider(id))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        crate::store::Provider::from_fields(id, &map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn delete_provider(&self, owner: &str, id: ulid::Ulid) -> Result<bool, StoreError> {
        // KEYS: provider hash, owner index. ARGV: owner, id. Owner check and delete in one step.
        const DELETE_PROVIDER: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
";
        let mut conn = self.conn.clone();
        let deleted: i64 = Script::new(DELETE_PROVIDER)
            .key(self.keys.provider(id))
            .key(self.keys.providers_by_user(owner))
            .arg(owner)
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }
}
