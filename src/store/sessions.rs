//! Dashboard sessions (`session:<id>`, SPEC sections 8 and 9).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;

#[async_trait]
pub trait Sessions: Send + Sync {
    /// A dashboard session's data (`session:<id>`), if it exists and has not expired.
    async fn load_session(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Writes a session, expiring after `ttl`. `only_new`: fails with `Ok(false)`
    /// instead of replacing an existing session (id collision).
    async fn save_session(
        &self,
        id: &str,
        data: &str,
        ttl: Duration,
        only_new: bool,
    ) -> Result<bool, StoreError>;

    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;
}
