//! Storage seam. Everything durable (job records, indices, the intake and job streams,
//! delivery de-duplication) goes through the narrow [`Store`] trait so that a later
//! embedded backend can stand in for Redis in single-machine installs.
//!
//! One module per backend: [`redis`] is the production one (SPEC section 9 layout).

pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::job::{Job, JobId};
use crate::model::{ForgeKind, RepoRef, ThreadRef};
use crate::task::Task;

pub use self::redis::RedisStore;

/// How long a webhook delivery id is remembered (SPEC section 3).
pub const DELIVERY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. Intake answers 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A webhook delivery id, de-duplicated for [`DELIVERY_TTL`].
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub forge: ForgeKind,
    pub id: &'a str,
}

/// Outcome of [`Store::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored: the job (if any) and the task are durable.
    Stored,
    /// The delivery id was seen in the last 24 h; nothing was written.
    Duplicate,
}

/// A task read from the intake stream.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    /// Stream entry id, to acknowledge with [`Store::ack_task`].
    pub entry_id: String,
    /// The task, or why it could not be decoded (poison entries are acknowledged and logged).
    pub task: Result<Task, String>,
    /// How many times this entry has been handed out (1 on first delivery).
    pub deliveries: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the backend is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the consumer groups (`runners` on `jobs:stream`, `acknowledgers` on
    /// `intake:stream`) if they do not exist. Idempotent.
    async fn ensure_groups(&self) -> Result<(), StoreError>;

    /// Atomically: de-duplicate the delivery, write the job record and its indices, and
    /// append the task to the intake stream. Either all of it is stored or none.
    async fn accept(
        &self,
        delivery: Option<Delivery<'_>>,
        job: Option<&Job>,
        task: &Task,
    ) -> Result<Accepted, StoreError>;

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Sets single fields of a job record (and `updated_at`).
    async fn set_job_fields(&self, id: JobId, fields: &[(&str, String)]) -> Result<(), StoreError>;

    /// Appends the job to `jobs:stream` for the runners.
    async fn dispatch_job(&self, id: JobId) -> Result<(), StoreError>;

    /// Jobs of one thread, newest first.
    async fn thread_jobs(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Newest jobs first, from `jobs:all`.
    async fn recent_jobs(&self, limit: usize) -> Result<Vec<JobId>, StoreError>;

    /// New intake tasks for this consumer, waiting up to `block` for one to arrive.
    async fn read_tasks(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskEntry>, StoreError>;

    /// Takes over tasks another consumer left unacknowledged for `min_idle`.
    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError>;

    /// Marks an intake task done and removes it from the stream.
    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError>;
}
