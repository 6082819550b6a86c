//! Steering a running job (SPEC 16): a `/repobox …` by a writer while the thread's
//! `claude` job works is given to that job's agent instead of becoming a job of its own.
//!
//! ```text
//!  intake ──▶ provisional job (queued) ──ack: writer? a running, steerable job here?──┐
//!                                                                                     │
//!    steer: one atomic step on the running job ◀───────────── yes ────────────────────┘
//!      (running and steerable? → append to job:{id}:steer, once per provisional job)
//!    then the provisional job is discarded: no second job.
//!
//!  runner: open (steerable = attempt) ─▶ the agent takes new entries before each request
//!          ─▶ close when it would end: new entries? → it goes on with them; else
//!             steerable is cleared atomically, and later commands queue new jobs.
//! ```
//!
//! The list is read from an index the run keeps, never popped: a job re-run after a
//! crash gives its new attempt every entry so far.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Lease, StoreError};
use crate::job::{Job, JobId};

/// One instruction added to a running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steer {
    /// The provisional job the command became at intake (steered once, then discarded).
    pub from_job: JobId,
    /// Who wrote it (a writer: the acknowledger checked).
    pub login: String,
    /// The instructions, sanitised like any job's.
    pub text: String,
}

/// What [`SteeringStore::steer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steered {
    /// Appended to the running job's instructions now.
    Now,
    /// An earlier attempt of the same task appended it already.
    Already,
    /// The job is not running or its agent takes no more instructions.
    NotSteerable,
}

#[async_trait]
pub trait SteeringStore: Send + Sync {
    /// Gives `steer` to `job` if it runs and its agent takes instructions; at most once
    /// per `steer.from_job`.
    async fn steer(&self, job: JobId, steer: &Steer) -> Result<Steered, StoreError>;

    /// Removes a provisional job that was steered into another one: its record and its
    /// index entries (it never ran and nothing refers to it but the delivery's dedupe).
    async fn discard_job(&self, job: &Job) -> Result<(), StoreError>;

    /// The run's agent takes instructions from now on (fenced by the lease).
    async fn open_steering(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Entries from index `from` on.
    async fn steering(&self, job: JobId, from: usize) -> Result<Vec<Steer>, StoreError>;

    /// The agent would end: entries from `from` on if there are any (it goes on with
    /// them), else steering is closed in the same atomic step and `[]` is returned.
    async fn close_steering(&self, lease: &Lease, from: usize) -> Result<Vec<Steer>, StoreError>;
}

/// Steering entries as stored (JSON, one per entry), read back.
pub(crate) fn decode(entries: Vec<String>) -> Result<Vec<Steer>, StoreError> {
    entries
        .iter()
        .map(|e| {
            serde_json::from_str(e)
                .map_err(|e| StoreError::Corrupt(format!("a steering entry: {e}")))
        })
        .collect()
}
