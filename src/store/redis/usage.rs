//! [`UsageStore`] on Redis: `usage:<YYYY-MM>` hashes.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{RedisStore, unavailable};
use crate::model::{ForgeKind, RepoRef, UserRef};
use crate::store::StoreError;
use crate::store::usage::{self, UsageStore};

/// How long a month's figures are kept.
const KEEP_SECONDS: i64 = 400 * 24 * 3600;

#[async_trait]
impl UsageStore for RedisStore {
    async fn add_usage(
        &self,
        month: &str,
        forge: ForgeKind,
        requester: &UserRef,
        repo: &RepoRef,
        usd: f64,
    ) -> Result<(), StoreError> {
        let key = self.keys.usage(month);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hincr(&key, usage::user_field(forge, requester.id), usd)
            .hincr(&key, usage::repo_field(forge, &repo.full_name), usd)
            .hset(
                &key,
                usage::login_field(forge, requester.id),
                &requester.login,
            )
            .expire(&key, KEEP_SECONDS)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn usage(&self, month: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hgetall(self.keys.usage(month))
            .await
            .map_err(unavailable)
    }
}
