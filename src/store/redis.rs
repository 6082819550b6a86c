//! Redis backend of the [`Store`] trait, keys as in SPEC section 9.
//!
//! Two connections: a multiplexed one for ordinary commands (short response timeout,
//! so intake answers 503 quickly when Redis is gone) and one for blocking stream reads,
//! which would otherwise hold up every command queued behind them. Both reconnect by
//! themselves (`ConnectionManager`), so a Redis restart needs no restart of Repobox.
//!
//! The intake write is one Lua script, so de-duplication, record, indices and stream
//! entry are stored together or not at all. (Its keys span hash slots: Redis Cluster
//! needs the embedded script split per slot; single-node Redis/Valkey is what runs now.)

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimOptions, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, FromRedisValue, RedisError, Script};
use time::OffsetDateTime;

use super::{Accepted, DELIVERY_TTL, Delivery, Store, StoreError, TaskEntry};
use crate::job::{Job, JobId, rfc3339};
use crate::model::{RepoRef, ThreadRef};
use crate::task::Task;

const RUNNERS_GROUP: &str = "runners";
const ACK_GROUP: &str = "acknowledgers";

const ACCEPT_SCRIPT: &str = r"
-- KEYS: delivery, intake stream, [job hash, index sorted sets...]
-- ARGV: dedup flag, ttl, task json, score, job id, field/value pairs...
if ARGV[1] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[5], 'NX', 'EX', ARGV[2]) then
    return 0
  end
end
if #KEYS > 2 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 6))
  for i = 4, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5])
  end
end
redis.call('XADD', KEYS[2], '*', 'task', ARGV[3])
return 1
";

/// Key names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    pub fn jobs_stream(&self) -> String {
        format!("{}jobs:stream", self.prefix)
    }
    pub fn intake_stream(&self) -> String {
        format!("{}intake:stream", self.prefix)
    }
    pub fn job(&self, id: JobId) -> String {
        format!("{}job:{{{id}}}", self.prefix)
    }
    pub fn job_output(&self, id: JobId) -> String {
        format!("{}job:{{{id}}}:output", self.prefix)
    }
    pub fn jobs_all(&self) -> String {
        format!("{}jobs:all", self.prefix)
    }
    pub fn jobs_by_user(&self, job: &Job) -> String {
        format!(
            "{}jobs:by-user:{}:{}",
            self.prefix, job.repo.forge, job.requester.id
        )
    }
    pub fn jobs_by_repo(&self, repo: &RepoRef) -> String {
        format!(
            "{}jobs:by-repo:{}:{}",
            self.prefix, repo.forge, repo.full_name
        )
    }
    /// Not in the SPEC table: the jobs of one thread, for cancel/retry and the
    /// one-job-per-thread rule.
    pub fn jobs_by_thread(&self, repo: &RepoRef, thread: ThreadRef) -> String {
        format!(
            "{}jobs:by-thread:{}:{}:{}:{}",
            self.prefix,
            repo.forge,
            repo.full_name,
            thread.kind.as_str(),
            thread.number
        )
    }
    pub fn delivery(&self, d: Delivery<'_>) -> String {
        format!("{}delivery:{}:{}", self.prefix, d.forge, d.id)
    }
}

pub struct RedisStore {
    keys: Keys,
    conn: ConnectionManager,
    blocking: ConnectionManager,
    accept: Script,
}

impl RedisStore {
    /// Sets up lazy connections: no Redis is needed until the first command, so the
    /// process starts (and `/healthz` answers) while Redis is still down.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REPOBOX_REDIS_URL is not a valid Redis URL: {e}"))?;
        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            base.clone()
                .set_response_timeout(Some(Duration::from_secs(2))),
        )?;
        let blocking = ConnectionManager::new_lazy_with_config(
            client,
            base.set_response_timeout(Some(Duration::from_secs(10))),
        )?;
        Ok(RedisStore {
            keys: Keys::new(prefix),
            conn,
            blocking,
            accept: Script::new(ACCEPT_SCRIPT),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn create_group(&self, stream: &str, group: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        // From id 0, so entries appended before the group existed are still delivered.
        let res: Result<(), RedisError> = conn.xgroup_create_mkstream(stream, group, "0").await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A group read's reply; `None` when Redis had lost the consumer group (a restart
    /// without persistence), which is recreated so the next read works.
    async fn unless_group_lost<T>(
        &self,
        reply: Result<T, RedisError>,
    ) -> Result<Option<T>, StoreError> {
        match reply {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_groups().await?;
                Ok(None)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn decode_entries(ids: Vec<redis::streams::StreamId>, deliveries: u64) -> Vec<TaskEntry> {
        ids.into_iter()
            .map(|entry| {
                let task = entry
                    .map
                    .get("task")
                    .ok_or_else(|| "entry has no `task` field".to_owned())
                    .and_then(|v| String::from_redis_value(v.clone()).map_err(|e| e.to_string()))
                    .and_then(|json| {
                        serde_json::from_str::<Task>(&json).map_err(|e| e.to_string())
                    });
                TaskEntry {
                    deliveries: entry
                        .delivered_count
                        .map(|n| n as u64)
                        .unwrap_or(deliveries),
                    entry_id: entry.id,
                    task,
                }
            })
            .collect()
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ensure_groups(&self) -> Result<(), StoreError> {
        self.create_group(&self.keys.jobs_stream(), RUNNERS_GROUP)
            .await?;
        self.create_group(&self.keys.intake_stream(), ACK_GROUP)
            .await
    }

    async fn accept(
        &self,
        delivery: Option<Delivery<'_>>,
        job: Option<&Job>,
        task: &Task,
    ) -> Result<Accepted, StoreError> {
        let task_json = serde_json::to_string(task)
            .map_err(|e| StoreError::Corrupt(format!("task not serialisable: {e}")))?;
        let mut inv = self.accept.prepare_invoke();
        inv.key(delivery.map(|d| self.keys.delivery(d)).unwrap_or_default())
            .key(self.keys.intake_stream())
            .arg(if delivery.is_some() { "1" } else { "0" })
            .arg(DELIVERY_TTL.as_secs())
            .arg(task_json);
        match job {
            Some(job) => {
                inv.key(self.keys.job(job.id))
                    .key(self.keys.jobs_all())
                    .key(self.keys.jobs_by_user(job))
                    .key(self.keys.jobs_by_repo(&job.repo))
                    .key(self.keys.jobs_by_thread(&job.repo, job.thread))
                    .arg(job.created_ms())
                    .arg(job.id.to_string());
                for (k, v) in job.to_fields() {
                    inv.arg(k).arg(v);
                }
            }
            None => {
                inv.arg(0).arg("1");
            }
        }
        let mut conn = self.conn.clone();
        let stored: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if stored == 1 {
            Accepted::Stored
        } else {
            Accepted::Duplicate
        })
    }

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

    async fn dispatch_job(&self, id: JobId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = conn
            .xadd(self.keys.jobs_stream(), "*", &[("job", id.to_string())])
            .await
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

    async fn read_tasks(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let opts = StreamReadOptions::default()
            .group(ACK_GROUP, consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let stream = self.keys.intake_stream();
        let mut conn = self.blocking.clone();
        let reply: Result<Option<StreamReadReply>, RedisError> =
            conn.xread_options(&[&stream], &[">"], &opts).await;
        let Some(reply) = self.unless_group_lost(reply).await? else {
            return Ok(Vec::new());
        };
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| Self::decode_entries(k.ids, 1))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let stream = self.keys.intake_stream();
        let mut conn = self.conn.clone();
        let reply: Result<redis::streams::StreamAutoClaimReply, RedisError> = conn
            .xautoclaim_options(
                &stream,
                ACK_GROUP,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await;
        let Some(reply) = self.unless_group_lost(reply).await? else {
            return Ok(Vec::new());
        };
        let mut entries = Self::decode_entries(reply.claimed, 2);
        // XAUTOCLAIM does not report delivery counts; XPENDING does.
        for entry in &mut entries {
            let pending: redis::streams::StreamPendingCountReply = conn
                .xpending_count(&stream, ACK_GROUP, &entry.entry_id, &entry.entry_id, 1)
                .await
                .map_err(unavailable)?;
            if let Some(p) = pending.ids.first() {
                entry.deliveries = p.times_delivered as u64;
            }
        }
        Ok(entries)
    }

    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError> {
        let stream = self.keys.intake_stream();
        let mut conn = self.conn.clone();
        let (_acked, _deleted): (i64, i64) = redis::pipe()
            .atomic()
            .xack(&stream, ACK_GROUP, &[entry_id])
            .xdel(&stream, &[entry_id])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
