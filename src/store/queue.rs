//! The job queue: every state transition of a job, each one atomic in the backend
//! (SPEC sections 6 and 13).
//!
//! ```text
//!  intake ──accept──▶ queued ──dispatch (ack)──▶ queued, in jobs:stream (at most once)
//!                       │                            │
//!          end_queued   │                  claim (runner): attempt += 1,
//!   (rejected/failed/   │                  lease = (runner, attempt) ──▶ running
//!    cancelled)         ▼                            │   heartbeat / record (fenced)
//!                    final ◀────── finish (fenced) ──┤
//!                                                    └─ hand_back (fenced) ──▶ queued
//! ```
//!
//! A job in a final state never changes state again: every transition checks the status
//! it starts from, and every write of a run is checked against the run's [`Lease`]
//! (the job's `attempt` and `runner` fields). A claim of a job whose runner stopped
//! heartbeating increments `attempt`, so the old run's next fenced write fails with
//! [`StoreError::LeaseLost`] and that runner stops.

use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, StoreError};
use crate::job::{Job, JobId, JobStatus};
use crate::task::Task;

/// Outcome of [`JobQueue::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored: the job (if any) and the task are durable.
    Stored,
    /// The delivery id was seen in the last 72 h; nothing was written.
    Duplicate,
}

/// A task read from the intake stream.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    /// Stream entry id, to acknowledge with [`JobQueue::ack_task`].
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

/// What [`JobQueue::dispatch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Appended to `jobs:stream` now.
    Dispatched,
    /// An earlier acknowledgement dispatched it already: nothing appended.
    Already,
    /// The job is no longer `queued` (rejected, cancelled, ...) or is gone.
    NotQueued,
}

/// One run of a job by one runner: the fence of every write that run makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    /// The runner's consumer name.
    pub runner: String,
    /// The job's `attempt` this run holds (1 for the first claim).
    pub attempt: u64,
}

/// What [`JobQueue::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Running now under this lease.
    Leased(Lease),
    /// A limit is reached (per-user limit, one job per thread): the entry was
    /// acknowledged and the job waits, in order, in a waiting list; it is appended to
    /// `jobs:stream` again when a slot frees up.
    Deferred,
    /// Already in a final state (e.g. cancelled while it waited); the entry is dropped.
    Final(JobStatus),
    /// The record is gone; the entry is dropped.
    Missing,
    /// The entry is not the job's current one (a duplicate left from an earlier
    /// dispatch); it is dropped and the job is not touched.
    Stale,
}

/// What [`JobQueue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued: it is `cancelled` now.
    Cancelled,
    /// The job is running: `cancel_requested` is set and its runner ends it.
    Requested,
    /// Already final (or gone): nothing changed.
    Final,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Creates the consumer groups (`runners` on `jobs:stream`, `acknowledgers` on
    /// `intake:stream`) if they do not exist. Idempotent.
    async fn ensure_groups(&self) -> Result<(), StoreError>;

    /// Intake, atomically: de-duplicate the delivery (72 h), write the job record and
    /// its indices, and append the task to the intake stream. All of it or none.
    async fn accept(
        &self,
        delivery: Option<Delivery<'_>>,
        job: Option<&Job>,
        task: &Task,
    ) -> Result<Accepted, StoreError>;

    // The acknowledger's tasks (`intake:stream`, group `acknowledgers`).

    /// New intake tasks for this consumer, at most `count`, waiting up to `block`.
    async fn read_tasks(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskEntry>, StoreError>;

    /// Takes over tasks another consumer left without a heartbeat for `min_idle`.
    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError>;

    /// A task's heartbeat: resets its idle time while `consumer` still owns it.
    /// `false` when another consumer has taken it over (or it is done).
    async fn touch_task(&self, consumer: &str, entry_id: &str) -> Result<bool, StoreError>;

    /// Marks an intake task done and removes it from the stream.
    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError>;

    // The acknowledger's transitions.

    /// Appends a `queued` job to `jobs:stream`, once: a repeated acknowledgement finds
    /// it dispatched already and appends nothing.
    async fn dispatch(&self, id: JobId) -> Result<Dispatch, StoreError>;

    /// Ends a job that is still `queued` (rejected, failed before dispatch) with
    /// `status` and `error`; `false` (and nothing written) when it is not queued.
    async fn end_queued(
        &self,
        id: JobId,
        status: JobStatus,
        error: &str,
    ) -> Result<bool, StoreError>;

    /// Cancels a queued job, or asks the runner of a running one to stop.
    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError>;

    // The runners (`jobs:stream`, group `runners`).

    /// New job entries for this runner, at most `count`, waiting up to `block`.
    async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEntry>, StoreError>;

    /// Takes over job entries whose runner sent no heartbeat for `min_idle` (it died).
    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEntry>, StoreError>;

    /// Claims the job of `entry_id` for `runner`: admission (per-user limit of
    /// `user_limit`, one job per thread; slots held for `slot_lease`), then
    /// `attempt += 1`, `status = running` and the new lease, in one step.
    async fn claim(
        &self,
        entry_id: &str,
        job: &Job,
        runner: &str,
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// The run's heartbeat: resets the idle time of the job's entry and extends its
    /// slots by `slot_lease`. `false` when the lease is no longer current: stop.
    async fn heartbeat(
        &self,
        lease: &Lease,
        job: &Job,
        slot_lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Writes fields of the job (effects, progress, tokens) if the lease is current;
    /// [`StoreError::LeaseLost`] otherwise. With no fields it only checks the lease.
    async fn record(&self, lease: &Lease, fields: &[(&str, String)]) -> Result<(), StoreError>;

    /// Ends the run: writes `fields` (which carry the final `status`), drops the stream
    /// entry, frees the slots and starts the next waiting jobs, in one step, if the
    /// lease is current ([`StoreError::LeaseLost`] otherwise).
    async fn finish(
        &self,
        lease: &Lease,
        job: &Job,
        fields: &[(&str, String)],
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<(), StoreError>;

    /// Hands the job back (runner shutdown): `queued` again, a fresh stream entry for
    /// another runner, slots freed, in one step, if the lease is current.
    async fn hand_back(
        &self,
        lease: &Lease,
        job: &Job,
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<(), StoreError>;

    /// Acknowledges and deletes a job entry that names no job (malformed).
    async fn drop_entry(&self, entry_id: &str) -> Result<(), StoreError>;

    /// Starts waiting jobs whose slots freed up without a release (a runner died holding
    /// them and its slot lease ran out). Returns how many were started.
    async fn promote_waiting(&self, slot_lease: Duration) -> Result<usize, StoreError>;

    /// The orphan reconciler (SPEC 13): re-queues jobs left `queued` (dispatched) or
    /// `running` with no stream entry and no heartbeat for longer than `older_than`
    /// (a lost entry, a Redis restart that lost data). At most one caller at a time
    /// across processes does the work (the others get `Ok(0)`). Returns how many.
    async fn requeue_orphans(&self, older_than: Duration) -> Result<usize, StoreError>;
}

/// What [`JobQueue::finish`] checks first, in every backend: its fields carry a final
/// `status`.
pub(crate) fn check_final(fields: &[(&str, String)]) -> Result<(), StoreError> {
    let status = fields
        .iter()
        .find(|(k, _)| *k == "status")
        .and_then(|(_, v)| v.parse::<JobStatus>().ok());
    match status {
        Some(status) if status.is_final() => Ok(()),
        _ => Err(StoreError::Corrupt(
            "finish needs a final `status` field".into(),
        )),
    }
}
