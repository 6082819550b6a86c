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

use super::{
    Accepted, Admission, DELIVERY_TTL, Delivery, JobEntry, JobIndex, LogLine, Start, Store,
    StoreError, TaskEntry,
};
use crate::job::{Job, JobId, rfc3339};
use crate::model::{ForgeKind, RepoRef, ThreadRef};
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

/// Lines kept per job log (approximate trim, `XADD MAXLEN ~`).
const LOG_MAX_LINES: usize = 20_000;

/// Shared Lua: the current Redis time in ms, and `promote`, which moves waiting jobs
/// into `jobs:stream` while their gate has room, reserving a slot for each.
const GATE_LIB: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function promote(stream, wait, run, limit, index, now, lease)
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  local started = 0
  while redis.call('ZCARD', run) < limit do
    local id = redis.call('LPOP', wait)
    if not id then break end
    redis.call('ZADD', run, now + lease, id)
    redis.call('XADD', stream, '*', 'job', id)
    started = started + 1
  end
  if redis.call('LLEN', wait) == 0 then redis.call('HDEL', index, wait) end
  return started
end
";

/// KEYS: stream, user run, user wait, thread run, thread wait, wait index.
/// ARGV: group, entry id, job id, user limit, lease ms. Returns 1 admitted, 0 deferred.
const ADMIT_SCRIPT: &str = r"
local now = now_ms()
local lease = tonumber(ARGV[5])
local limit = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local in_user = redis.call('ZSCORE', KEYS[2], ARGV[3])
local in_thread = redis.call('ZSCORE', KEYS[4], ARGV[3])
local user_ok = in_user or redis.call('ZCARD', KEYS[2]) < limit
local thread_ok = in_thread or redis.call('ZCARD', KEYS[4]) < 1
if user_ok and thread_ok then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
  redis.call('ZADD', KEYS[4], now + lease, ARGV[3])
  return 1
end
-- Defer: give back any slot reserved for this job, wait behind the full gate.
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
local wait, run, wait_limit = KEYS[3], KEYS[2], limit
if not thread_ok then wait, run, wait_limit = KEYS[5], KEYS[4], 1 end
redis.call('RPUSH', wait, ARGV[3])
redis.call('HSET', KEYS[6], wait, run .. '\n' .. wait_limit)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if in_user then promote(KEYS[1], KEYS[3], KEYS[2], limit, KEYS[6], now, lease) end
if in_thread then promote(KEYS[1], KEYS[5], KEYS[4], 1, KEYS[6], now, lease) end
return 0
";

/// KEYS: as ADMIT. ARGV: group, entry id, job id, user limit, lease ms, requeue flag.
const RELEASE_SCRIPT: &str = r"
local now = now_ms()
local lease = tonumber(ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[6] == '1' then redis.call('XADD', KEYS[1], '*', 'job', ARGV[3]) end
promote(KEYS[1], KEYS[3], KEYS[2], tonumber(ARGV[4]), KEYS[6], now, lease)
promote(KEYS[1], KEYS[5], KEYS[4], 1, KEYS[6], now, lease)
return 1
";

/// KEYS: stream, wait index. ARGV: lease ms.
const PROMOTE_ALL_SCRIPT: &str = r"
local now = now_ms()
local started = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local run, limit = string.match(entries[i + 1], '^(.*)\n(%d+)$')
  if run then
    started = started + promote(KEYS[1], entries[i], run, tonumber(limit), KEYS[2], now, tonumber(ARGV[1]))
  end
end
return started
";

/// KEYS: stream, user run, thread run. ARGV: group, consumer, entry id, job id, lease ms.
const TOUCH_SCRIPT: &str = r"
local now = now_ms()
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[5]), ARGV[4])
redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[5]), ARGV[4])
return 1
";

/// KEYS: job hash. ARGV: consumer, now (RFC 3339).
const START_SCRIPT: &str = r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
redis.call('HSET', KEYS[1], 'status', 'running', 'runner', ARGV[1], 'started_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 'running'
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
    /// `session:<id>`: a dashboard session.
    pub fn session(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }
    pub fn jobs_all(&self) -> String {
        format!("{}jobs:all", self.prefix)
    }
    pub fn jobs_by_user(&self, job: &Job) -> String {
        self.jobs_of_user(job.repo.forge, job.requester.id)
    }
    pub fn jobs_of_user(&self, forge: ForgeKind, user_id: u64) -> String {
        format!("{}jobs:by-user:{forge}:{user_id}", self.prefix)
    }
    pub fn jobs_by_repo(&self, repo: &RepoRef) -> String {
        self.jobs_of_repo(repo.forge, &repo.full_name)
    }
    pub fn jobs_of_repo(&self, forge: ForgeKind, full_name: &str) -> String {
        format!("{}jobs:by-repo:{forge}:{full_name}", self.prefix)
    }
    /// The GitHub App registered through `/setup`.
    pub fn github_app(&self) -> String {
        format!("{}github_app", self.prefix)
    }
    /// A manifest-flow `state` issued by `/setup`.
    pub fn setup_state(&self, state: &str) -> String {
        format!("{}setup:state:{state}", self.prefix)
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
    /// Slots of a user's running jobs (sorted set: job id → lease expiry, ms).
    pub fn running_user(&self, job: &Job) -> String {
        format!(
            "{}running:user:{}:{}",
            self.prefix, job.repo.forge, job.requester.id
        )
    }
    /// A user's jobs waiting for a slot, in order (list).
    pub fn waiting_user(&self, job: &Job) -> String {
        format!(
            "{}waiting:user:{}:{}",
            self.prefix, job.repo.forge, job.requester.id
        )
    }
    fn thread_suffix(job: &Job) -> String {
        format!(
            "{}:{}:{}:{}",
            job.repo.forge,
            job.repo.full_name,
            job.thread.kind.as_str(),
            job.thread.number
        )
    }
    /// The slot of a thread's running job (at most one).
    pub fn running_thread(&self, job: &Job) -> String {
        format!("{}running:thread:{}", self.prefix, Self::thread_suffix(job))
    }
    pub fn waiting_thread(&self, job: &Job) -> String {
        format!("{}waiting:thread:{}", self.prefix, Self::thread_suffix(job))
    }
    /// Every non-empty waiting list → `<running key>\n<limit>`.
    pub fn waiting_index(&self) -> String {
        format!("{}waiting:index", self.prefix)
    }
    pub fn settings(&self) -> String {
        format!("{}settings", self.prefix)
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
    admit: Script,
    release: Script,
    promote_all: Script,
    touch: Script,
    start: Script,
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
            admit: Script::new(&format!("{GATE_LIB}{ADMIT_SCRIPT}")),
            release: Script::new(&format!("{GATE_LIB}{RELEASE_SCRIPT}")),
            promote_all: Script::new(&format!("{GATE_LIB}{PROMOTE_ALL_SCRIPT}")),
            touch: Script::new(&format!("{GATE_LIB}{TOUCH_SCRIPT}")),
            start: Script::new(START_SCRIPT),
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
}

/// An entry read from a consumer group: its id, the text of its one field (or why it
/// has none), and how often it has been handed out.
struct RawEntry {
    id: String,
    field: Result<String, String>,
    deliveries: u64,
}

fn raw_entries(ids: Vec<redis::streams::StreamId>, field: &str, deliveries: u64) -> Vec<RawEntry> {
    ids.into_iter()
        .map(|entry| RawEntry {
            field: entry
                .map
                .get(field)
                .ok_or_else(|| format!("entry has no `{field}` field"))
                .and_then(|v| String::from_redis_value(v.clone()).map_err(|e| e.to_string())),
            deliveries: entry
                .delivered_count
                .map(|n| n as u64)
                .unwrap_or(deliveries),
            id: entry.id,
        })
        .collect()
}

impl RawEntry {
    fn into_task(self) -> TaskEntry {
        TaskEntry {
            task: self
                .field
                .and_then(|json| serde_json::from_str::<Task>(&json).map_err(|e| e.to_string())),
            entry_id: self.id,
            deliveries: self.deliveries,
        }
    }

    fn into_job(self) -> JobEntry {
        JobEntry {
            job: self.field.and_then(|id| {
                id.parse::<JobId>()
                    .map_err(|e| format!("bad job id `{id}`: {e}"))
            }),
            entry_id: self.id,
            deliveries: self.deliveries,
        }
    }
}

impl RedisStore {
    /// New entries of `stream` for `consumer` in `group`, waiting up to `block`.
    async fn group_read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        field: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let opts = StreamReadOptions::default()
            .group(group, consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let mut conn = self.blocking.clone();
        let reply: Result<Option<StreamReadReply>, RedisError> =
            conn.xread_options(&[stream], &[">"], &opts).await;
        let Some(reply) = self.unless_group_lost(reply).await? else {
            return Ok(Vec::new());
        };
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| raw_entries(k.ids, field, 1))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Entries other consumers left unacknowledged for `min_idle`, now this consumer's.
    async fn group_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        field: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Result<redis::streams::StreamAutoClaimReply, RedisError> = conn
            .xautoclaim_options(
                stream,
                group,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await;
        let Some(reply) = self.unless_group_lost(reply).await? else {
            return Ok(Vec::new());
        };
        let mut entries = raw_entries(reply.claimed, field, 2);
        // XAUTOCLAIM does not report delivery counts; XPENDING does.
        for entry in &mut entries {
            let pending: redis::streams::StreamPendingCountReply = conn
                .xpending_count(stream, group, &entry.id, &entry.id, 1)
                .await
                .map_err(unavailable)?;
            if let Some(p) = pending.ids.first() {
                entry.deliveries = p.times_delivered as u64;
            }
        }
        Ok(entries)
    }

    /// Acknowledges an entry and removes it from the stream.
    async fn ack_delete(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let (_acked, _deleted): (i64, i64) = redis::pipe()
            .atomic()
            .xack(stream, group, &[entry_id])
            .xdel(stream, &[entry_id])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn gate_keys(&self, inv: &mut redis::ScriptInvocation<'_>, job: &Job) {
        inv.key(self.keys.jobs_stream())
            .key(self.keys.running_user(job))
            .key(self.keys.waiting_user(job))
            .key(self.keys.running_thread(job))
            .key(self.keys.waiting_thread(job))
            .key(self.keys.waiting_index());
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
        let stream = self.keys.intake_stream();
        let raw = self
            .group_read(&stream, ACK_GROUP, consumer, "task", count, block)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_task).collect())
    }

    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let stream = self.keys.intake_stream();
        let raw = self
            .group_claim(&stream, ACK_GROUP, consumer, "task", min_idle, count)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_task).collect())
    }

    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError> {
        self.ack_delete(&self.keys.intake_stream(), ACK_GROUP, entry_id)
            .await
    }

    async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let stream = self.keys.jobs_stream();
        let raw = self
            .group_read(&stream, RUNNERS_GROUP, consumer, "job", count, block)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_job).collect())
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let stream = self.keys.jobs_stream();
        let raw = self
            .group_claim(&stream, RUNNERS_GROUP, consumer, "job", min_idle, count)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_job).collect())
    }

    async fn touch_job(
        &self,
        consumer: &str,
        entry_id: &str,
        job: &Job,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let mut inv = self.touch.prepare_invoke();
        inv.key(self.keys.jobs_stream())
            .key(self.keys.running_user(job))
            .key(self.keys.running_thread(job))
            .arg(RUNNERS_GROUP)
            .arg(consumer)
            .arg(entry_id)
            .arg(job.id.to_string())
            .arg(lease.as_millis() as u64);
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn ack_job(&self, entry_id: &str) -> Result<(), StoreError> {
        self.ack_delete(&self.keys.jobs_stream(), RUNNERS_GROUP, entry_id)
            .await
    }

    async fn admit(
        &self,
        entry_id: &str,
        job: &Job,
        user_limit: usize,
        lease: Duration,
    ) -> Result<Admission, StoreError> {
        let mut inv = self.admit.prepare_invoke();
        self.gate_keys(&mut inv, job);
        inv.arg(RUNNERS_GROUP)
            .arg(entry_id)
            .arg(job.id.to_string())
            .arg(user_limit.max(1))
            .arg(lease.as_millis() as u64);
        let mut conn = self.conn.clone();
        let admitted: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if admitted == 1 {
            Admission::Admitted
        } else {
            Admission::Deferred
        })
    }

    async fn start_job(&self, id: JobId, consumer: &str) -> Result<Start, StoreError> {
        let mut inv = self.start.prepare_invoke();
        inv.key(self.keys.job(id))
            .arg(consumer)
            .arg(rfc3339(OffsetDateTime::now_utc()));
        let mut conn = self.conn.clone();
        let status: String = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(match status.as_str() {
            "running" => Start::Running,
            "missing" => Start::Missing,
            _ => Start::Final(status),
        })
    }

    async fn release(
        &self,
        entry_id: &str,
        job: &Job,
        user_limit: usize,
        lease: Duration,
        requeue: bool,
    ) -> Result<(), StoreError> {
        let mut inv = self.release.prepare_invoke();
        self.gate_keys(&mut inv, job);
        inv.arg(RUNNERS_GROUP)
            .arg(entry_id)
            .arg(job.id.to_string())
            .arg(user_limit.max(1))
            .arg(lease.as_millis() as u64)
            .arg(if requeue { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn promote_waiting(&self, lease: Duration) -> Result<usize, StoreError> {
        let mut inv = self.promote_all.prepare_invoke();
        inv.key(self.keys.jobs_stream())
            .key(self.keys.waiting_index())
            .arg(lease.as_millis() as u64);
        let mut conn = self.conn.clone();
        let started: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(started.max(0) as usize)
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
        let key = self.keys.job_output(id);
        let mut opts = StreamReadOptions::default().count(count);
        let mut conn = match block {
            Some(b) => {
                opts = opts.block(b.as_millis() as usize);
                self.blocking.clone()
            }
            None => self.conn.clone(),
        };
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&key], &[after], &opts)
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

    async fn load_session(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(self.keys.session(id)).await.map_err(unavailable)
    }

    async fn save_session(
        &self,
        id: &str,
        data: &str,
        ttl: Duration,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.session(id))
            .arg(data)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        if only_new {
            cmd.arg("NX");
        }
        let reply: Option<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.keys.session(id)).await.map_err(unavailable)?;
        Ok(())
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hget(self.keys.settings(), name)
            .await
            .map_err(unavailable)
    }

    // Dashboard users, personal providers and admin settings.

    async fn upsert_user(&self, user: &super::User) -> Result<(), StoreError> {
        let key = self.keys.user(&user.provider, &user.id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_nx(&key, "created_at", rfc3339(user.created_at))
            .ignore()
            .hset_multiple(&key, &user.to_fields())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get_user(&self, provider: &str, id: &str) -> Result<Option<super::User>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.user(provider, id))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        super::User::from_fields(&map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn add_provider(&self, provider: &super::Provider) -> Result<(), StoreError> {
        if !crate::crypto::SecretBox::is_sealed(&provider.token) {
            // Never write a plain token at rest; the text names no value.
            return Err(StoreError::Corrupt(
                "provider token is not sealed; refusing to store it".into(),
            ));
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(self.keys.provider(provider.id), &provider.to_fields())
            .ignore()
            .zadd(
                self.keys.providers_by_user(&provider.owner),
                provider.id.to_string(),
                provider.created_ms(),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_providers(&self, owner: &str) -> Result<Vec<super::Provider>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.keys.providers_by_user(owner), 0, -1)
            .await
            .map_err(unavailable)?;
        let ids: Vec<ulid::Ulid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.provider(*id));
        }
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, map) in ids.into_iter().zip(maps) {
            // A record deleted under a stale index entry is skipped.
            if map.is_empty() {
                continue;
            }
            let provider = super::Provider::from_fields(id, &map).map_err(StoreError::Corrupt)?;
            if provider.owner == owner {
                out.push(provider);
            }
        }
        Ok(out)
    }

    async fn get_provider(&self, id: ulid::Ulid) -> Result<Option<super::Provider>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.provider(id))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        super::Provider::from_fields(id, &map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn delete_provider(&self, owner: &str, id: ulid::Ulid) -> Result<bool, StoreError> {
        // KEYS: provider hash, owner index. ARGV: owner, id. Owner check and delete in one step.
        const DELETE_PROVIDER: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
";
        let mut conn = self.conn.clone();
        let deleted: i64 = Script::new(DELETE_PROVIDER)
            .key(self.keys.provider(id))
            .key(self.keys.providers_by_user(owner))
            .arg(owner)
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn get_settings(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hgetall(self.keys.settings())
            .await
            .map_err(unavailable)
    }

    async fn set_settings(&self, fields: &[(&str, String)]) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        conn.hset_multiple::<_, _, _, ()>(self.keys.settings(), fields)
            .await
            .map_err(unavailable)
    }

    async fn delete_setting(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.hdel::<_, _, ()>(self.keys.settings(), name)
            .await
            .map_err(unavailable)
    }

    async fn github_app(&self) -> Result<Option<HashMap<String, String>>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.github_app())
            .await
            .map_err(unavailable)?;
        Ok((!map.is_empty()).then_some(map))
    }

    async fn create_github_app(&self, fields: &[(&str, String)]) -> Result<bool, StoreError> {
        let script = Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
             redis.call('HSET', KEYS[1], unpack(ARGV)) return 1",
        );
        let mut invocation = script.key(self.keys.github_app());
        for (k, v) in fields {
            invocation.arg(*k).arg(v);
        }
        let mut conn = self.conn.clone();
        let created: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    async fn put_setup_state(&self, state: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(self.keys.setup_state(state), "1", ttl.as_secs().max(1))
            .await
            .map_err(unavailable)
    }

    async fn take_setup_state(&self, state: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn
            .del(self.keys.setup_state(state))
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
    // ---- Webhook recovery (SPEC section 13), for `crate::webhooks::redeliver`. ----

    async fn delivery_seen(&self, delivery: Delivery<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        conn.exists(self.keys.delivery(delivery))
            .await
            .map_err(unavailable)
    }

    async fn redeliver_cursor(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn
            .get(self.keys.redeliver_cursor())
            .await
            .map_err(unavailable)?;
        text.map(|t| {
            t.parse()
                .map_err(|_| StoreError::Corrupt(format!("redeliver:cursor is `{t}`")))
        })
        .transpose()
    }

    async fn set_redeliver_cursor(&self, delivery_id: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set(self.keys.redeliver_cursor(), delivery_id.to_string())
            .await
            .map_err(unavailable)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.lock(name))
            .arg(ulid::Ulid::new().to_string())
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken.is_some())
    }

    // ---- End of webhook recovery. ----
}

/// Keys of webhook recovery (SPEC section 13).
impl Keys {
    /// `redeliver:cursor`: the newest hook delivery a reconciler round saw.
    pub fn redeliver_cursor(&self) -> String {
        format!("{}redeliver:cursor", self.prefix)
    }
    /// `lock:<name>`: a cluster-wide lock (e.g. one reconciler at a time).
    pub fn lock(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }
}

/// Keys of dashboard users and their providers (SPEC section 9).
impl Keys {
    pub fn user(&self, provider: &str, id: &str) -> String {
        format!("{}user:{provider}:{id}", self.prefix)
    }
    pub fn provider(&self, id: ulid::Ulid) -> String {
        format!("{}provider:{id}", self.prefix)
    }
    /// Not in the SPEC table: a user's provider ids by creation time (`owner` is
    /// `provider:id`).
    pub fn providers_by_user(&self, owner: &str) -> String {
        format!("{}providers:by-user:{owner}", self.prefix)
    }
}
