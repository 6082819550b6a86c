//! Reading job records, their indices and logs (SPEC section 9), and the few fields
//! written outside a run's lease.

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
    /// the first one when given.
    async fn read_log(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError>;
}
