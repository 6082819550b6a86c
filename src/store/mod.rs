//! Storage seams. Everything durable goes through a few narrow traits, one module each,
//! so that a second backend (the embedded store of SPEC section 19) can implement them
//! one at a time:
//!
//! - [`queue::JobQueue`]: the job's lifecycle. Intake, the acknowledger's tasks, dispatch,
//!   the runners' fenced claims and every state transition (SPEC section 13). The only
//!   way a job changes state.
//! - [`records::JobRecords`]: reading job records, their indices and logs (and waiting
//!   on a log through a [`records::LogReader`] with a connection of its own), and the
//!   few non-state fields outside a run's lease.
//! - [`sessions::Sessions`]: dashboard sessions.
//! - [`accounts::Accounts`]: dashboard users and their personal providers.
//! - [`settings::SettingsStore`]: admin settings, the GitHub App stored by `/setup`.
//! - [`steering::SteeringStore`]: instructions added to a running job (SPEC 16).
//! - [`recovery::Recovery`]: what the webhook redelivery reconciler keeps (dedupe
//!   look-ups, its cursor, a cluster-wide lock).
//!
//! [`Store`] is all of them together, plus liveness and the secret key's fingerprint;
//! the processes hold an `Arc<dyn Store>`.
//! One module per backend, both keeping the key layout of SPEC section 9 ([`keys`]):
//! [`redis`], for every deployment that runs more than one process, and [`embedded`]
//! (SQLite), for `repobox all` alone on one machine (SPEC section 19). [`open`] picks
//! one from the configuration: Redis when `REPOBOX_REDIS_URL` is set.

pub mod accounts;
pub mod embedded;
pub mod keys;
pub mod queue;
pub mod records;
pub mod recovery;
pub mod redis;
pub mod redis_budget;
pub mod sessions;
pub mod settings;
pub mod steering;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::ForgeKind;

pub use self::accounts::{Accounts, Provider, User};
pub use self::embedded::EmbeddedStore;
pub use self::keys::Keys;
pub use self::queue::{
    Accepted, CancelOutcome, Claim, Dispatch, JobEntry, JobQueue, Lease, TaskEntry,
};
pub use self::records::{JobIndex, JobRecords, LogLine, LogReader};
pub use self::recovery::Recovery;
pub use self::redis::RedisStore;
pub use self::sessions::Sessions;
pub use self::settings::SettingsStore;
pub use self::steering::{Steer, Steered, SteeringStore};
pub use self::usage::UsageStore;

/// How long a webhook delivery id is remembered (SPEC section 13: 72 h, GitHub's manual
/// redelivery window is 3 days).
pub const DELIVERY_TTL: Duration = Duration::from_secs(72 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. Intake answers 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A fenced write of a run whose lease is no longer the current one (another runner
    /// claimed the job, or it ended): nothing was written, and the run must stop.
    #[error("the job's lease was lost: another runner took it over or it ended")]
    LeaseLost,
}

/// A webhook delivery id, de-duplicated for [`DELIVERY_TTL`].
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub forge: ForgeKind,
    pub id: &'a str,
}

/// Every storage seam at once, plus liveness.
#[async_trait]
pub trait Store:
    JobQueue
    + JobRecords
    + Sessions
    + Accounts
    + SettingsStore
    + Recovery
    + UsageStore
    + SteeringStore
    + Send
    + Sync
    + 'static
{
    /// Answers when the backend is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The secret key's fingerprint as stored (`key-fingerprint`), so that processes
    /// with different keys cannot share one store. With `claim`, first stores that
    /// fingerprint if none is stored yet (set once, never overwritten).
    async fn key_fingerprint(&self, claim: Option<&str>) -> Result<Option<String>, StoreError>;

    /// The backend in use, for `/readyz` and `doctor`: `redis` or `embedded store`.
    fn backend(&self) -> String;
}

/// The store of the configuration: Redis at `REPOBOX_REDIS_URL` (its connections named
/// for the process's `role`), or without it the embedded store in `REPOBOX_DATA_DIR`.
pub fn open(config: &crate::config::Config, role: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisStore::with_role(
            url.expose(),
            &config.redis_prefix,
            role,
        )?),
        None => Arc::new(EmbeddedStore::in_dir(&config.data_dir)?),
    })
}
