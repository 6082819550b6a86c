//! Dashboard sessions (`session:<key>`, SPEC sections 8, 9 and 14), and the failed
//! sign-in counters that throttle password guessing (`signin-failures:<key>`).

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

    /// Failed sign-ins counted under `key` in the current window, and the time left until
    /// the window ends (zero when there is none).
    async fn signin_failures(&self, key: &str) -> Result<(u64, Duration), StoreError>;

    /// Counts one failed sign-in under `key`. The first failure opens a window of
    /// `window`; the count is forgotten when it ends. Returns the new count.
    async fn count_signin_failure(&self, key: &str, window: Duration) -> Result<u64, StoreError>;
}
