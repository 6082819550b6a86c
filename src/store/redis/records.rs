//! [`JobRecords`] on Redis: job hashes, the index sorted sets and the capped log streams,
//! and [`RedisLogReader`], one job's log read over a connection of its own
//! (`repobox:<role>:log-read:<job id>`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, FromRedisValue};
use time::OffsetDateTime;

use super::conn::{NamedConnection, connection_name};
use super::{LOG_MAX_LINES, RedisStore, unavailable};
use crate::job::{Job, JobId, rfc3339};
use crate::model::{RepoRef, ThreadRef};
use crate::store::{JobIndex, JobRecords, LogLine, LogReader, StoreError};

#[async_trait]
impl JobRecords for RedisStore {
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> =
            conn.hgetall(self.keys.job(id)).await.map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        Job::from_fields(&map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn set_job_fields(&self, id: JobId, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let mut items: Vec<(&str, String)> = fields.to_vec();
        items.push(("updated_at", rfc3339(OffsetDateTime::now_utc())));
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .hset_multiple(self.keys.job(id), &items)
            .await
            .map(|()| 0)
            .map_err(unavailable)?;
        Ok(())
    }

    async fn thread_jobs(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(
                self.keys.jobs_by_thread(repo, thread),
                0,
                limit as isize - 1,
            )
            .await
            .map_err(unavailable)?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    async fn recent_jobs(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.keys.jobs_all(), 0, limit as isize - 1)
            .await
            .map_err(unavailable)?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
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
        let max = match before_ms {
            Some(ms) => format!("({ms}"),
            None => "+inf".to_owned(),
        };
        let mut conn = self.conn.clone();
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, score)| Some((id.parse().ok()?, score as i64)))
            .collect())
    }

    async fn append_log(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let key = self.keys.job_output(id);
        let mut pipe = redis::pipe();
        for line in lines {
            pipe.xadd_maxlen(
                &key,
                redis::streams::StreamMaxlen::Approx(LOG_MAX_LINES),
                "*",
                &[("line", line.as_str())],
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn read_log(
        &self,
        id: JobId,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError> {
        let conn = match block {
            Some(_) => self.log_read.clone(),
            None => self.conn.clone(),
        };
        xread_log(conn, &self.keys.job_output(id), after, count, block).await
    }

    async fn log_reader(&self, id: JobId) -> Result<Box<dyn LogReader>, StoreError> {
        let name = connection_name(&self.role, &format!("log-read:{id}"));
        Ok(Box::new(RedisLogReader {
            key: self.keys.job_output(id),
            conn: self.blocking.open(name),
        }))
    }
}

/// One job's log over its own connection, which closes when the reader is dropped.
pub struct RedisLogReader {
    key: String,
    conn: NamedConnection,
}

#[async_trait]
impl LogReader for RedisLogReader {
    async fn last_id(&mut self) -> Result<String, StoreError> {
        let newest: redis::streams::StreamRangeReply = self
            .conn
            .xrevrange_count(&self.key, "+", "-", 1)
            .await
            .map_err(unavailable)?;
        Ok(newest
            .ids
            .into_iter()
            .next()
            .map(|entry| entry.id)
            .unwrap_or_else(|| "0-0".to_owned()))
    }

    async fn next(
        &mut self,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogLine>, StoreError> {
        xread_log(self.conn.clone(), &self.key, after, count, block).await
    }
}

/// `XREAD [BLOCK] COUNT` on one log stream.
async fn xread_log(
    mut conn: NamedConnection,
    key: &str,
    after: &str,
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<LogLine>, StoreError> {
    let mut opts = StreamReadOptions::default().count(count);
    if let Some(b) = block {
        opts = opts.block(b.as_millis() as usize);
    }
    let reply: Option<StreamReadReply> = conn
        .xread_options(&[key], &[after], &opts)
        .await
        .map_err(unavailable)?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .map(|entry| LogLine {
            line: entry
                .map
                .get("line")
                .and_then(|v| String::from_redis_value(v.clone()).ok())
                .unwrap_or_default(),
            id: entry.id,
        })
        .collect())
}
