//! Redis backend of the storage seams, keys as in SPEC section 9.
//!
//! One module per seam ([`queue`], [`records`], [`sessions`], [`accounts`],
//! [`settings`]); the queue's transitions are Lua scripts in `lua/`, each one atomic, all
//! sharing `lua/lib.lua` (prefix, fencing, enqueue-at-most-once, slot promotion).
//!
//! Connections (SPEC section 13, "Blocking reads"): a multiplexed one for ordinary
//! commands (short response timeout, so intake answers 503 quickly when Redis is gone),
//! and one of its own for each kind of blocking read — the acknowledger's task read, the
//! runner's job read, and one per live-log reader ([`JobRecords::log_reader`]) — which
//! would otherwise hold up every command queued behind them and each other. Each names
//! itself `repobox:<role>:<purpose>` ([`conn`]; the role is the process's: `serve`,
//! `runner`, `all`, `cli`, `doctor`), so `CLIENT LIST` shows the layout:
//!
//! | name | what waits on it |
//! |---|---|
//! | `repobox:<role>:commands` | every ordinary command and script |
//! | `repobox:<role>:ack-read` | the acknowledger's `XREADGROUP BLOCK` on `intake:stream` |
//! | `repobox:<role>:job-read` | the runner's `XREADGROUP BLOCK` on `jobs:stream` |
//! | `repobox:<role>:log-read:<job id>` | one job's live log (`XREAD BLOCK`), shared by all its viewers |
//! | `repobox:<role>:log-read` | `read_log` with a wait, for a single follower (Repobox's own processes use log readers) |
//!
//! All are made on first use and reconnect by themselves (and name themselves again),
//! so a Redis restart needs no restart.
//!
//! [`JobRecords::log_reader`]: crate::store::JobRecords::log_reader
//!
//! The intake script and the queue scripts touch keys in several hash slots (the job,
//! the streams, the slot sets): single-node Redis/Valkey is what runs now; Redis Cluster
//! (SPEC section 18) needs them split per slot.

mod accounts;
pub(crate) mod conn;
mod queue;
mod records;
mod recovery;
mod server;
mod sessions;
mod settings;
mod steering;
mod usage;

use std::time::Duration;

use redis::streams::{StreamAutoClaimOptions, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, FromRedisValue, RedisError};

pub use self::records::RedisLogReader;
pub use self::server::{Durability, Rdb, ReadFrom};

use self::conn::{ConnectionSpec, NamedConnection, connection_name};
pub use super::keys::Keys;
use super::{JobEntry, JobQueue, StoreError, TaskEntry};
use crate::job::JobId;
use crate::task::Task;

pub(super) const RUNNERS_GROUP: &str = "runners";
pub(super) const ACK_GROUP: &str = "acknowledgers";

/// Lines kept per job log (approximate trim, `XADD MAXLEN ~`).
pub(super) const LOG_MAX_LINES: usize = 20_000;

/// The role of a store built without one ([`RedisStore::new`]): its connections are
/// named `repobox:repobox:<purpose>`.
pub const DEFAULT_ROLE: &str = "repobox";

pub struct RedisStore {
    keys: Keys,
    /// The process's role, the middle part of every connection name.
    role: String,
    /// How blocking-read connections are made; each live-log reader opens its own.
    blocking: ConnectionSpec,
    /// Ordinary commands and scripts.
    conn: NamedConnection,
    /// The acknowledger's `XREADGROUP BLOCK` on `intake:stream`.
    ack_read: NamedConnection,
    /// The runner's `XREADGROUP BLOCK` on `jobs:stream`.
    runner_read: NamedConnection,
    /// `read_log` with a wait (`XREAD BLOCK`); the dashboard's viewers use
    /// [`JobRecords::log_reader`](crate::store::JobRecords::log_reader) instead.
    log_read: NamedConnection,
    scripts: queue::Scripts,
}

impl RedisStore {
    /// [`RedisStore::with_role`] with the role [`DEFAULT_ROLE`].
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Self::with_role(url, prefix, DEFAULT_ROLE)
    }

    /// Sets up lazy connections named `repobox:<role>:<purpose>`: no Redis is needed
    /// until the first command, so the process starts (and `/healthz` answers) while
    /// Redis is still down.
    pub fn with_role(url: &str, prefix: &str, role: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REPOBOX_REDIS_URL is not a valid Redis URL: {e}"))?;
        let commands = ConnectionSpec {
            client,
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        };
        // Longer than any wait of a blocking read.
        let blocking = ConnectionSpec {
            response_timeout: Duration::from_secs(10),
            ..commands.clone()
        };
        let name = |purpose: &str| connection_name(role, purpose);
        Ok(RedisStore {
            keys: Keys::new(prefix),
            role: role.to_owned(),
            conn: commands.open(name("commands")),
            ack_read: blocking.open(name("ack-read")),
            runner_read: blocking.open(name("job-read")),
            log_read: blocking.open(name("log-read")),
            blocking,
            scripts: queue::Scripts::new(),
        })
    }

    /// The role the connections are named with.
    pub fn role(&self) -> &str {
        &self.role
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
pub(super) struct RawEntry {
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
    pub(super) fn into_task(self) -> TaskEntry {
        TaskEntry {
            task: self
                .field
                .and_then(|json| serde_json::from_str::<Task>(&json).map_err(|e| e.to_string())),
            entry_id: self.id,
            deliveries: self.deliveries,
        }
    }

    pub(super) fn into_job(self) -> JobEntry {
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
        let mut conn = if group == ACK_GROUP {
            self.ack_read.clone()
        } else {
            self.runner_read.clone()
        };
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
}

pub(super) fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl super::Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn key_fingerprint(&self, claim: Option<&str>) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.key_fingerprint();
        match claim {
            Some(fingerprint) => {
                let (_set, stored): (Option<String>, Option<String>) = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(fingerprint)
                    .arg("NX")
                    .cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(stored)
            }
            None => conn.get(&key).await.map_err(unavailable),
        }
    }

    fn backend(&self) -> String {
        "redis".to_owned()
    }
}
