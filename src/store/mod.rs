//! Storage seam. Everything durable (job records, indices, the intake and job streams,
//! delivery de-duplication) goes through the narrow [`Store`] trait so that a later
//! embedded backend can stand in for Redis in single-machine installs.
//!
//! One module per backend: [`redis`] is the production one (SPEC section 9 layout).

pub mod accounts;
pub mod redis;
pub mod redis_budget;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::job::{Job, JobId};
use crate::model::{ForgeKind, RepoRef, ThreadRef};
use crate::task::Task;

pub use self::accounts::{Provider, User};
pub use self::redis::RedisStore;

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
    /// The delivery id was seen within [`DELIVERY_TTL`]; nothing was written.
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

/// An entry read from `jobs:stream`.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub entry_id: String,
    /// The job id, or why the entry could not be decoded (poison entries are acknowledged).
    pub job: Result<JobId, String>,
    /// How many times this entry has been handed out (1 on first delivery).
    pub deliveries: u64,
}

/// Whether a runner may start a job now (SPEC section 6: per-user limit, and one job at
/// a time per thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The job holds a slot for its user and its thread; run it.
    Admitted,
    /// A limit is reached: the entry was acknowledged and the job waits, in order, in a
    /// waiting list; it is appended to `jobs:stream` again when a slot frees up.
    Deferred,
}

/// What [`Store::start_job`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Marked `running` (again, on a re-delivery).
    Running,
    /// The record is missing.
    Missing,
    /// Already in a final state (e.g. cancelled while it waited).
    Final(String),
}

/// One line of a job's log, with its stream id (the SSE event id / resume point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub id: String,
    pub line: String,
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

    /// New job entries for this runner consumer, waiting up to `block`.
    async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEntry>, StoreError>;

    /// Takes over job entries another runner left unacknowledged for `min_idle` (it died).
    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEntry>, StoreError>;

    /// Heartbeat: resets the idle time of entries this runner works on (so no one claims
    /// them) and extends the job's slots by `lease`.
    async fn touch_job(
        &self,
        consumer: &str,
        entry_id: &str,
        job: &Job,
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Acknowledges and deletes a job entry (a malformed one, or one whose record is gone).
    async fn ack_job(&self, entry_id: &str) -> Result<(), StoreError>;

    /// Takes a slot for the job's user and thread, or defers the job (see [`Admission`]).
    async fn admit(
        &self,
        entry_id: &str,
        job: &Job,
        user_limit: usize,
        lease: Duration,
    ) -> Result<Admission, StoreError>;

    /// Marks a job `running` unless it is final or gone.
    async fn start_job(&self, id: JobId, consumer: &str) -> Result<Start, StoreError>;

    /// Done with an entry: acknowledge it, free the job's slots and start the next waiting
    /// jobs of that user and thread. With `requeue` the job is appended to `jobs:stream`
    /// again in the same step (a runner handing back its work on shutdown).
    async fn release(
        &self,
        entry_id: &str,
        job: &Job,
        user_limit: usize,
        lease: Duration,
        requeue: bool,
    ) -> Result<(), StoreError>;

    /// Starts waiting jobs whose slots freed up without a release (a runner died holding
    /// them and its lease ran out). Returns how many were started.
    async fn promote_waiting(&self, lease: Duration) -> Result<usize, StoreError>;

    /// Appends lines to the job's log (`job:{<id>}:output`, capped).
    async fn append_log(&self, id: JobId, lines: &[String]) -> Result<(), StoreError>;

    /// Log lines after stream id `after` (`0` for the start), waiting up to `block` for
    /// the first one when given.
    async fn read_log(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError>;

    /// Job ids of an index, newest first, created strictly before `before_ms` (ms since
    /// the epoch; `None`: from the newest), at most `limit`, with each one's score.
    async fn job_page(
        &self,
        index: &JobIndex,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(JobId, i64)>, StoreError>;

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

    /// One admin setting from the `settings` hash (SPEC section 9), if set.
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;

    // Dashboard users, personal providers and admin settings (SPEC sections 8 and 9).

    /// Creates or updates `user:{provider}:{id}`; `created_at` is kept from the first write.
    async fn upsert_user(&self, user: &User) -> Result<(), StoreError>;

    async fn get_user(&self, provider: &str, id: &str) -> Result<Option<User>, StoreError>;

    /// Stores `provider:{id}` and adds it to its owner's index. The token must already be
    /// sealed ([`crate::crypto::SecretBox`]); plain text is refused with
    /// [`StoreError::Corrupt`] and nothing is written.
    async fn add_provider(&self, provider: &Provider) -> Result<(), StoreError>;

    /// The owner's (`provider:id`, see [`User::owner`]) providers, oldest first.
    async fn list_providers(&self, owner: &str) -> Result<Vec<Provider>, StoreError>;

    async fn get_provider(&self, id: ulid::Ulid) -> Result<Option<Provider>, StoreError>;

    /// Deletes the provider if `owner` owns it; `false` when it is not theirs or is gone.
    async fn delete_provider(&self, owner: &str, id: ulid::Ulid) -> Result<bool, StoreError>;

    /// The whole `settings` hash (see [`crate::settings::AdminSettings`]).
    async fn get_settings(&self) -> Result<std::collections::HashMap<String, String>, StoreError>;

    /// Sets fields of the `settings` hash in one write (validate first:
    /// [`crate::settings::SettingsSource::save`]).
    async fn set_settings(&self, fields: &[(&str, String)]) -> Result<(), StoreError>;

    /// Removes one field of the `settings` hash (its default applies again).
    async fn delete_setting(&self, name: &str) -> Result<(), StoreError>;

    /// The GitHub App registered through `/setup` (`github_app` hash; secrets sealed).
    async fn github_app(&self) -> Result<Option<HashMap<String, String>>, StoreError>;

    /// Stores the App registered through `/setup` unless one is stored already (`false`
    /// then, and nothing changes): setup happens once.
    async fn create_github_app(&self, fields: &[(&str, String)]) -> Result<bool, StoreError>;

    /// Keeps a manifest-flow `state` for `ttl` (`setup:state:<state>`).
    async fn put_setup_state(&self, state: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Consumes a manifest-flow `state`: `true` once if it was issued and has not expired.
    async fn take_setup_state(&self, state: &str) -> Result<bool, StoreError>;

    // ---- Webhook recovery (SPEC section 13), for `crate::webhooks::redeliver`. ----

    /// Intake has accepted this delivery (its dedupe key `delivery:{forge}:{id}` exists).
    async fn delivery_seen(&self, delivery: Delivery<'_>) -> Result<bool, StoreError>;

    /// The newest GitHub hook delivery (attempt id) a finished reconciler round saw
    /// (`redeliver:cursor`): the next round reads no further back.
    async fn redeliver_cursor(&self) -> Result<Option<u64>, StoreError>;

    async fn set_redeliver_cursor(&self, delivery_id: u64) -> Result<(), StoreError>;

    /// Takes the cluster-wide lock `lock:<name>` for `ttl` unless someone holds it
    /// (`SET NX PX`); `true` when taken. It is not released: it expires.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError>;

    // ---- End of webhook recovery. ----
}

/// The job indices of SPEC section 9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobIndex {
    /// `jobs:all`
    All,
    /// `jobs:by-user:<forge>:<user id>`
    User { forge: ForgeKind, user_id: u64 },
    /// `jobs:by-repo:<forge>:<owner/name>`
    Repo { forge: ForgeKind, repo: String },
}
