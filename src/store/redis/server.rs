//! What the Redis server itself is set to that decides whether accepted jobs survive
//! (SPEC section 13, "Redis durability"): whether it may evict keys, and whether it
//! persists them. `doctor` turns it into its checks.
//!
//! `CONFIG GET` gives the settings; managed Redis often disables or renames `CONFIG`,
//! and then `INFO` is read instead (`maxmemory_policy`, `aof_enabled`, and RDB
//! snapshots made since the start, since `INFO` does not show the `save` schedule).

use std::collections::HashMap;

use redis::RedisError;

use super::RedisStore;
use super::conn::NamedConnection;
use crate::store::StoreError;

/// The server's durability settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `maxmemory-policy`: anything but `noeviction` lets Redis delete keys (job
    /// records, streams) when it reaches `maxmemory`.
    pub maxmemory_policy: String,
    /// AOF persistence (`appendonly yes`).
    pub aof: bool,
    /// RDB snapshots: the `save` schedule (`CONFIG`), or whether snapshots were made
    /// since the start (`INFO` only).
    pub rdb: Rdb,
    /// Where the settings were read.
    pub source: ReadFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdb {
    /// `save` is set to this schedule (e.g. `3600 1 300 100 60 10000`).
    Scheduled(String),
    /// `save ""`: no snapshots.
    Off,
    /// `CONFIG` is not available; `INFO` counts this many snapshots since the start.
    Snapshots(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Config,
    /// `CONFIG` answered an error (disabled, renamed, or not allowed to this user).
    Info,
}

impl Durability {
    /// Whether the server may evict keys.
    pub fn evicts(&self) -> bool {
        !self.maxmemory_policy.eq_ignore_ascii_case("noeviction")
    }

    /// Whether AOF or RDB persistence is on.
    pub fn persists(&self) -> bool {
        self.aof
            || match &self.rdb {
                Rdb::Scheduled(_) => true,
                Rdb::Off => false,
                Rdb::Snapshots(n) => *n > 0,
            }
    }
}

impl RedisStore {
    /// Reads the server's durability settings (`CONFIG GET`, else `INFO`).
    pub async fn durability(&self) -> Result<Durability, StoreError> {
        let mut conn = self.conn.clone();
        match from_config(&mut conn).await {
            Ok(d) => Ok(d),
            // A server error (unknown command, NOPERM): CONFIG is off limits. A lost
            // connection is not that.
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                Err(super::unavailable(e))
            }
            Err(_) => from_info(&mut conn).await.map_err(super::unavailable),
        }
    }
}

async fn config_get(conn: &mut NamedConnection, name: &str) -> Result<String, RedisError> {
    // One parameter per call: several in one `CONFIG GET` need Redis 7.
    let pairs: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(pairs.get(name).cloned().unwrap_or_default())
}

async fn from_config(conn: &mut NamedConnection) -> Result<Durability, RedisError> {
    let policy = config_get(conn, "maxmemory-policy").await?;
    let aof = config_get(conn, "appendonly").await?;
    let save = config_get(conn, "save").await?;
    Ok(Durability {
        maxmemory_policy: policy,
        aof: aof.eq_ignore_ascii_case("yes"),
        rdb: match save.trim() {
            "" => Rdb::Off,
            schedule => Rdb::Scheduled(schedule.to_owned()),
        },
        source: ReadFrom::Config,
    })
}

async fn from_info(conn: &mut NamedConnection) -> Result<Durability, RedisError> {
    let memory: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(conn)
        .await?;
    Ok(parse_info(&memory, &persistence))
}

/// `field:value` lines of `INFO` sections.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find(|(name, _)| *name == field)
        .map(|(_, value)| value)
}

fn parse_info(memory: &str, persistence: &str) -> Durability {
    Durability {
        // Servers before Redis 4 do not report it; their default evicts nothing.
        maxmemory_policy: info_field(memory, "maxmemory_policy")
            .unwrap_or("noeviction")
            .to_owned(),
        aof: info_field(persistence, "aof_enabled") == Some("1"),
        rdb: Rdb::Snapshots(
            info_field(persistence, "rdb_saves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        ),
        source: ReadFrom::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections_give_the_policy_and_aof() {
        let memory = "# Memory\r\nused_memory:1000\r\nmaxmemory_policy:allkeys-lru\r\n";
        let persistence = "# Persistence\r\nrdb_saves:0\r\naof_enabled:1\r\n";
        let d = parse_info(memory, persistence);
        assert_eq!(d.maxmemory_policy, "allkeys-lru");
        assert!(d.evicts());
        assert!(d.aof && d.persists());
        assert_eq!(d.source, ReadFrom::Info);
        let d = parse_info(
            "maxmemory_policy:noeviction\r\n",
            "rdb_saves:0\r\naof_enabled:0\r\n",
        );
        assert!(!d.evicts() && !d.persists());
        let d = parse_info("", "rdb_saves:3\r\naof_enabled:0\r\n");
        assert!(!d.evicts() && d.persists());
    }
}
