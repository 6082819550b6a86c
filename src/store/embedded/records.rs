//! [`JobRecords`] on the embedded store: job records, their indices, and each job's log
//! as a capped stream; an [`EmbeddedLogReader`] waits on the process's append signal
//! (no connection of its own is needed: waiting holds no lock).

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{EmbeddedStore, data};
use crate::job::{Job, JobId, rfc3339};
use crate::model::{RepoRef, ThreadRef};
use crate::store::{JobIndex, JobRecords, LogLine, LogReader, StoreError};

/// Lines kept per job log, as the Redis backend keeps.
const LOG_MAX_LINES: usize = 20_000;

/// Lines appended to a log between two trims.
const TRIM_EVERY: usize = 1_000;

fn ids(members: Vec<(String, i64)>) -> Vec<JobId> {
    members.iter().filter_map(|(m, _)| m.parse().ok()).collect()
}

fn log_lines(entries: Vec<data::Entry>) -> Vec<LogLine> {
    entries
        .into_iter()
        .map(|e| LogLine {
            id: e.id,
            line: e.value,
        })
        .collect()
}

impl EmbeddedStore {
    async fn log_after(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError> {
        let entries = self
            .wait_for(block, || {
                let after = after.to_owned();
                self.read(move |c, keys| Ok(data::xafter(c, &keys.job_output(id), &after, count)?))
            })
            .await?;
        Ok(log_lines(entries))
    }
}

#[async_trait]
impl JobRecords for EmbeddedStore {
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let map = self
            .read(move |c, keys| Ok(data::hgetall(c, &keys.job(id))?))
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Job::from_fields(&map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn set_job_fields(&self, id: JobId, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let mut items: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        items.push(("updated_at".into(), rfc3339(OffsetDateTime::now_utc())));
        self.write(move |c, keys| Ok(data::hset(c, &keys.job(id), &items)?))
            .await
    }

    async fn thread_jobs(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let key = self.keys.jobs_by_thread(repo, thread);
        let members = self
            .read(move |c, _| Ok(data::zrev(c, &key, None, limit)?))
            .await?;
        Ok(ids(members))
    }

    async fn recent_jobs(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let members = self
            .read(move |c, keys| Ok(data::zrev(c, &keys.jobs_all(), None, limit)?))
            .await?;
        Ok(ids(members))
    }

    async fn job_page(
        &self,
        index: &JobIndex,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(JobId, i64)>, StoreError> {
        let key = match index {
            JobIndex::All => self.keys.jobs_all(),
            JobIndex::User { forge, user_id } => self.keys.jobs_of_user(*forge, *user_id),
            JobIndex::Repo { forge, repo } => self.keys.jobs_of_repo(*forge, repo),
        };
        let members = self
            .read(move |c, _| Ok(data::zrev(c, &key, before_ms, limit)?))
            .await?;
        Ok(members
            .into_iter()
            .filter_map(|(id, score)| Some((id.parse().ok()?, score)))
            .collect())
    }

    async fn append_log(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let lines = lines.to_vec();
        self.write(move |c, keys| {
            let key = keys.job_output(id);
            for line in &lines {
                data::xadd(c, &key, line)?;
            }
            // Trimmed each time another TRIM_EVERY lines were appended (counted per log in
            // `log-lines`), as Redis trims approximately: a trim walks the newest
            // LOG_MAX_LINES entries, too much for every append.
            let total = data::hincr(c, "log-lines", &key, lines.len() as i64)? as usize;
            if total / TRIM_EVERY != (total - lines.len()) / TRIM_EVERY {
                data::xtrim(c, &key, LOG_MAX_LINES)?;
            }
            Ok(())
        })
        .await?;
        self.appended();
        Ok(())
    }

    async fn read_log(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.log_after(id, after, count, block).await
    }

    async fn log_reader(&self, id: JobId) -> Result<Box<dyn LogReader>, StoreError> {
        Ok(Box::new(EmbeddedLogReader {
            store: self.clone(),
            job: id,
        }))
    }
}

/// One job's log, read from the embedded store.
pub struct EmbeddedLogReader {
    store: EmbeddedStore,
    job: JobId,
}

#[async_trait]
impl LogReader for EmbeddedLogReader {
    async fn last_id(&mut self) -> Result<String, StoreError> {
        let id = self.job;
        let last = self
            .store
            .read(move |c, keys| Ok(data::xlast(c, &keys.job_output(id))?))
            .await?;
        Ok(last.unwrap_or_else(|| "0-0".to_owned()))
    }

    async fn next(
        &mut self,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.store.log_after(self.job, after, count, block).await
    }
}
