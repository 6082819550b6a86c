//! Reading job records, their indices and logs (SPEC section 9), and the few fields
//! written outside a run's lease.
//!
//! Logs are read two ways: [`JobRecords::read_log`] for what is there now (pages, the
//! catch-up of a live viewer), and a [`LogReader`] for waiting on new lines: a reader
//! of one job with a connection of its own, so its blocking reads hold up no other
//! command and no other reader (SPEC section 13). The dashboard opens one per job being
//! watched and fans its lines out to every viewer (`web::dashboard::log_hub`).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::job::{Job, JobId};
use crate::model::{ForgeKind, RepoRef, ThreadRef};

/// One line of a job's log, with its stream id (the SSE event id / resume point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub id: String,
    pub line: String,
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

#[async_trait]
pub trait JobRecords: Send + Sync {
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Sets fields of a job record (and `updated_at`) without a lease: only for what the
    /// acknowledger records before any runner holds the job (the progress comment id).
    /// State changes go through [`super::JobQueue`].
    async fn set_job_fields(&self, id: JobId, fields: &[(&str, String)]) -> Result<(), StoreError>;

    /// Jobs of one thread, newest first.
    async fn thread_jobs(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Newest jobs first, from `jobs:all`.
    async fn recent_jobs(&self, limit: usize) -> Result<Vec<JobId>, StoreError>;

    /// Job ids of an index, newest first, created strictly before `before_ms` (ms since
    /// the epoch; `None`: from the newest), at most `limit`, with each one's score.
    async fn job_page(
        &self,
        index: &JobIndex,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(JobId, i64)>, StoreError>;

    /// Appends lines to the job's log (`job:{<id>}:output`, capped).
    async fn append_log(&self, id: JobId, lines: &[String]) -> Result<(), StoreError>;

    /// Log lines after stream id `after` (`0` for the start), waiting up to `block` for
    /// the first one when given. Waits share one connection per process: for one
    /// follower; many followers of a job share a [`LogReader`] instead.
    async fn read_log(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError>;

    /// A reader of job `id`'s log with a connection of its own, opened lazily and closed
    /// when the reader is dropped.
    async fn log_reader(&self, id: JobId) -> Result<Box<dyn LogReader>, StoreError>;
}

/// Waits for new lines of one job's log (see [`JobRecords::log_reader`]).
#[async_trait]
pub trait LogReader: Send {
    /// The id of the newest line now (`0-0` for an empty log): where a reader that
    /// wants only the lines still to come starts.
    async fn last_id(&mut self) -> Result<String, StoreError>;

    /// Up to `count` lines after stream id `after`, waiting up to `block` for the first
    /// one when given (an empty answer: none came in time).
    async fn next(
        &mut self,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError>;
}
