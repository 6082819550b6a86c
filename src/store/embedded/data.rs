//! The embedded store's tables and the few operations every seam is written in.
//!
//! The tables keep the Redis layout of SPEC section 9 (the same key names,
//! [`crate::store::Keys`]): a record is a set of fields (`hashes`), an index or a slot
//! set is a scored set (`zsets`), a waiting list is a list (`lists`), the intake and job
//! queues and each job's log are streams (`streams`) whose entries carry the consumer
//! holding them, and single values with an optional expiry are `kv`. So each atomic step
//! of the Redis backend (a Lua script, a `MULTI`) is one SQLite transaction here, doing
//! the same reads and writes in the same order, and the two backends can be read side
//! by side.
//!
//! Every function takes the open transaction; nothing here commits.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

pub(super) type Sql<T> = rusqlite::Result<T>;

/// The schema, created on open (every statement idempotent). `user_version` names its
/// version for later migrations.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hashes (
  key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zsets (
  key TEXT NOT NULL, member TEXT NOT NULL, score INTEGER NOT NULL, PRIMARY KEY (key, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS zsets_by_score ON zsets (key, score);
CREATE TABLE IF NOT EXISTS lists (
  key TEXT NOT NULL, seq INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
  key TEXT NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL, value TEXT NOT NULL,
  consumer TEXT, delivered_ms INTEGER, deliveries INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (key, ms, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS streams_undelivered ON streams (key, consumer, ms, seq);
PRAGMA user_version = 1;
";

/// Milliseconds since the epoch: the store's clock (Redis's `TIME` in the other backend).
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().max(1) as i64
}

// Single values (`kv`), with an optional expiry; an expired value reads as absent.

pub(super) fn get(c: &Connection, key: &str) -> Sql<Option<String>> {
    c.query_row(
        "SELECT value FROM kv WHERE key = ?1 AND (expires_ms IS NULL OR expires_ms > ?2)",
        params![key, now_ms()],
        |r| r.get(0),
    )
    .optional()
}

/// `SET key value [PX ttl] [NX]`: `false` (nothing written) with `only_new` when a live
/// value is there.
pub(super) fn set(
    c: &Connection,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
    only_new: bool,
) -> Sql<bool> {
    let now = now_ms();
    c.execute(
        "DELETE FROM kv WHERE key = ?1 AND expires_ms IS NOT NULL AND expires_ms <= ?2",
        params![key, now],
    )?;
    let expires = ttl.map(|t| now + ms(t));
    let sql = if only_new {
        "INSERT OR IGNORE INTO kv (key, value, expires_ms) VALUES (?1, ?2, ?3)"
    } else {
        "INSERT OR REPLACE INTO kv (key, value, expires_ms) VALUES (?1, ?2, ?3)"
    };
    Ok(c.execute(sql, params![key, value, expires])? == 1)
}

/// `true` when a live value was removed.
pub(super) fn del(c: &Connection, key: &str) -> Sql<bool> {
    let live = get(c, key)?.is_some();
    c.execute("DELETE FROM kv WHERE key = ?1", params![key])?;
    Ok(live)
}

/// The time a live value has left (`None`: no value, or one that does not expire).
pub(super) fn ttl(c: &Connection, key: &str) -> Sql<Option<Duration>> {
    let now = now_ms();
    let expires: Option<Option<i64>> = c
        .query_row(
            "SELECT expires_ms FROM kv WHERE key = ?1 AND (expires_ms IS NULL OR expires_ms > ?2)",
            params![key, now],
            |r| r.get(0),
        )
        .optional()?;
    Ok(expires
        .flatten()
        .map(|at| Duration::from_millis((at - now).max(0) as u64)))
}

/// Deletes every value whose expiry has passed.
pub(super) fn purge_expired(c: &Connection, now: i64) -> Sql<usize> {
    c.execute(
        "DELETE FROM kv WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
        params![now],
    )
}

/// `INCR`, then the window's expiry only if the value has none (`PEXPIRE NX`).
pub(super) fn incr_within(c: &Connection, key: &str, window: Duration) -> Sql<u64> {
    let count = get(c, key)?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let expires = ttl(c, key)?.map(ms).unwrap_or_else(|| ms(window));
    c.execute(
        "INSERT OR REPLACE INTO kv (key, value, expires_ms) VALUES (?1, ?2, ?3)",
        params![key, count.to_string(), now_ms() + expires],
    )?;
    Ok(count)
}

// Records (`hashes`).

/// Fields as the closures of a transaction own them.
pub(super) fn owned(fields: &[(&str, String)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A run's fence: the job record `key` is running under this lease's runner and
/// attempt (the queue's and steering's writes check it).
pub(super) fn holds(c: &Connection, key: &str, lease: &crate::store::Lease) -> Sql<bool> {
    Ok(hget(c, key, "status")?.as_deref() == Some("running")
        && hget(c, key, "runner")?.as_deref() == Some(lease.runner.as_str())
        && hget(c, key, "attempt")? == Some(lease.attempt.to_string()))
}

pub(super) fn hget(c: &Connection, key: &str, field: &str) -> Sql<Option<String>> {
    c.query_row(
        "SELECT value FROM hashes WHERE key = ?1 AND field = ?2",
        params![key, field],
        |r| r.get(0),
    )
    .optional()
}

pub(super) fn hgetall(c: &Connection, key: &str) -> Sql<HashMap<String, String>> {
    let mut stmt = c.prepare_cached("SELECT field, value FROM hashes WHERE key = ?1")?;
    let rows = stmt.query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub(super) fn hset<K: AsRef<str>, V: AsRef<str>>(
    c: &Connection,
    key: &str,
    fields: &[(K, V)],
) -> Sql<()> {
    let mut stmt =
        c.prepare_cached("INSERT OR REPLACE INTO hashes (key, field, value) VALUES (?1, ?2, ?3)")?;
    for (field, value) in fields {
        stmt.execute(params![key, field.as_ref(), value.as_ref()])?;
    }
    Ok(())
}

/// `HSETNX`: `true` when written.
pub(super) fn hset_new(c: &Connection, key: &str, field: &str, value: &str) -> Sql<bool> {
    Ok(c.execute(
        "INSERT OR IGNORE INTO hashes (key, field, value) VALUES (?1, ?2, ?3)",
        params![key, field, value],
    )? == 1)
}

pub(super) fn hdel(c: &Connection, key: &str, field: &str) -> Sql<bool> {
    Ok(c.execute(
        "DELETE FROM hashes WHERE key = ?1 AND field = ?2",
        params![key, field],
    )? == 1)
}

pub(super) fn hexists(c: &Connection, key: &str) -> Sql<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM hashes WHERE key = ?1)",
        params![key],
        |r| r.get(0),
    )
}

/// Removes a whole record.
pub(super) fn hclear(c: &Connection, key: &str) -> Sql<()> {
    c.execute("DELETE FROM hashes WHERE key = ?1", params![key])?;
    Ok(())
}

/// `HINCRBY`.
pub(super) fn hincr(c: &Connection, key: &str, field: &str, by: i64) -> Sql<i64> {
    let n = hget(c, key, field)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
        + by;
    hset(c, key, &[(field, n.to_string())])?;
    Ok(n)
}

/// `HINCRBYFLOAT`.
pub(super) fn hincr_float(c: &Connection, key: &str, field: &str, by: f64) -> Sql<f64> {
    let n = hget(c, key, field)?
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + by;
    hset(c, key, &[(field, n.to_string())])?;
    Ok(n)
}

// Scored sets (`zsets`): indices by time, slot sets by lease expiry.

pub(super) fn zadd(c: &Connection, key: &str, member: &str, score: i64) -> Sql<()> {
    c.prepare_cached("INSERT OR REPLACE INTO zsets (key, member, score) VALUES (?1, ?2, ?3)")?
        .execute(params![key, member, score])?;
    Ok(())
}

/// `ZADD XX`: updates the score of a member that is there, adds nothing.
pub(super) fn zadd_existing(c: &Connection, key: &str, member: &str, score: i64) -> Sql<()> {
    c.execute(
        "UPDATE zsets SET score = ?3 WHERE key = ?1 AND member = ?2",
        params![key, member, score],
    )?;
    Ok(())
}

pub(super) fn zrem(c: &Connection, key: &str, member: &str) -> Sql<()> {
    c.prepare_cached("DELETE FROM zsets WHERE key = ?1 AND member = ?2")?
        .execute(params![key, member])?;
    Ok(())
}

pub(super) fn zscore(c: &Connection, key: &str, member: &str) -> Sql<Option<i64>> {
    c.query_row(
        "SELECT score FROM zsets WHERE key = ?1 AND member = ?2",
        params![key, member],
        |r| r.get(0),
    )
    .optional()
}

pub(super) fn zcard(c: &Connection, key: &str) -> Sql<usize> {
    c.query_row(
        "SELECT COUNT(*) FROM zsets WHERE key = ?1",
        params![key],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
}

/// Members scored at most `max` (`ZREMRANGEBYSCORE -inf max`).
pub(super) fn zrem_upto(c: &Connection, key: &str, max: i64) -> Sql<()> {
    c.execute(
        "DELETE FROM zsets WHERE key = ?1 AND score <= ?2",
        params![key, max],
    )?;
    Ok(())
}

/// Members with their scores, highest first, scored below `before` when given, at most
/// `limit`.
pub(super) fn zrev(
    c: &Connection,
    key: &str,
    before: Option<i64>,
    limit: usize,
) -> Sql<Vec<(String, i64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT member, score FROM zsets WHERE key = ?1 AND score < ?2
         ORDER BY score DESC, member DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![key, before.unwrap_or(i64::MAX), limit as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    rows.collect()
}

/// Members lowest score first, at most `limit`.
pub(super) fn zfirst(c: &Connection, key: &str, limit: usize) -> Sql<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT member FROM zsets WHERE key = ?1 ORDER BY score, member LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![key, limit as i64], |r| r.get(0))?;
    rows.collect()
}

/// Scores from `from` on, lowest first.
pub(super) fn zscores_from(c: &Connection, key: &str, from: i64) -> Sql<Vec<i64>> {
    let mut stmt =
        c.prepare_cached("SELECT score FROM zsets WHERE key = ?1 AND score >= ?2 ORDER BY score")?;
    let rows = stmt.query_map(params![key, from], |r| r.get(0))?;
    rows.collect()
}

// Lists (`lists`): waiting jobs, steering entries.

pub(super) fn rpush(c: &Connection, key: &str, value: &str) -> Sql<()> {
    c.execute(
        "INSERT INTO lists (key, seq, value) VALUES
           (?1, COALESCE((SELECT MAX(seq) FROM lists WHERE key = ?1), 0) + 1, ?2)",
        params![key, value],
    )?;
    Ok(())
}

pub(super) fn lpop(c: &Connection, key: &str) -> Sql<Option<String>> {
    let first: Option<(i64, String)> = c
        .query_row(
            "SELECT seq, value FROM lists WHERE key = ?1 ORDER BY seq LIMIT 1",
            params![key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, value)) = first else {
        return Ok(None);
    };
    c.execute(
        "DELETE FROM lists WHERE key = ?1 AND seq = ?2",
        params![key, seq],
    )?;
    Ok(Some(value))
}

pub(super) fn llen(c: &Connection, key: &str) -> Sql<usize> {
    c.query_row(
        "SELECT COUNT(*) FROM lists WHERE key = ?1",
        params![key],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
}

/// The elements from index `from` (0-based) on.
pub(super) fn lrange_from(c: &Connection, key: &str, from: usize) -> Sql<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT value FROM lists WHERE key = ?1 ORDER BY seq LIMIT -1 OFFSET ?2")?;
    let rows = stmt.query_map(params![key, from as i64], |r| r.get(0))?;
    rows.collect()
}

// Streams (`streams`): ids `<ms>-<seq>` as Redis makes them, never reused (the last id
// given is kept in `kv` under `stream-last:<key>`, so an id outlives its entry).

/// A stream id, `<ms>-<seq>`; `0` and a missing sequence read as `-0`.
pub(super) fn parse_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn format_id(ms: i64, seq: i64) -> String {
    format!("{ms}-{seq}")
}

/// One stream entry as a consumer sees it.
pub(super) struct Entry {
    pub id: String,
    pub value: String,
    pub deliveries: u64,
}

/// `XADD key * value` (one field per entry: the task, the job id or the log line).
pub(super) fn xadd(c: &Connection, key: &str, value: &str) -> Sql<String> {
    let last_key = format!("stream-last:{key}");
    let last = get(c, &last_key)?
        .and_then(|id| parse_id(&id))
        .unwrap_or((0, 0));
    let now = now_ms();
    let (ms, seq) = if now > last.0 {
        (now, 0)
    } else {
        (last.0, last.1 + 1)
    };
    c.prepare_cached("INSERT INTO streams (key, ms, seq, value) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![key, ms, seq, value])?;
    let id = format_id(ms, seq);
    set(c, &last_key, &id, None, false)?;
    Ok(id)
}

pub(super) fn xexists(c: &Connection, key: &str, id: &str) -> Sql<bool> {
    let Some((ms, seq)) = parse_id(id) else {
        return Ok(false);
    };
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM streams WHERE key = ?1 AND ms = ?2 AND seq = ?3)",
        params![key, ms, seq],
        |r| r.get(0),
    )
}

/// `XACK` + `XDEL`: the entry is gone, whoever held it.
pub(super) fn xdel(c: &Connection, key: &str, id: &str) -> Sql<()> {
    if let Some((ms, seq)) = parse_id(id) {
        c.prepare_cached("DELETE FROM streams WHERE key = ?1 AND ms = ?2 AND seq = ?3")?
            .execute(params![key, ms, seq])?;
    }
    Ok(())
}

/// `XREADGROUP … >`: entries never handed out, oldest first, now `consumer`'s.
pub(super) fn xread_new(
    c: &Connection,
    key: &str,
    consumer: &str,
    count: usize,
) -> Sql<Vec<Entry>> {
    let rows: Vec<(i64, i64, String)> = {
        let mut stmt = c.prepare_cached(
            "SELECT ms, seq, value FROM streams WHERE key = ?1 AND consumer IS NULL
             ORDER BY ms, seq LIMIT ?2",
        )?;
        stmt.query_map(params![key, count as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Sql<_>>()?
    };
    hand_out(c, key, consumer, rows)
}

/// `XAUTOCLAIM … min-idle 0-0 COUNT n`: entries another consumer holds without a
/// heartbeat for `min_idle`, now `consumer`'s, their delivery count incremented.
pub(super) fn xclaim_idle(
    c: &Connection,
    key: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
) -> Sql<Vec<Entry>> {
    let rows: Vec<(i64, i64, String)> = {
        let mut stmt = c.prepare_cached(
            "SELECT ms, seq, value FROM streams
             WHERE key = ?1 AND consumer IS NOT NULL AND delivered_ms <= ?2
             ORDER BY ms, seq LIMIT ?3",
        )?;
        stmt.query_map(
            params![key, now_ms() - min_idle.as_millis() as i64, count as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Sql<_>>()?
    };
    hand_out(c, key, consumer, rows)
}

fn hand_out(
    c: &Connection,
    key: &str,
    consumer: &str,
    rows: Vec<(i64, i64, String)>,
) -> Sql<Vec<Entry>> {
    let now = now_ms();
    let mut stmt = c.prepare_cached(
        "UPDATE streams SET consumer = ?4, delivered_ms = ?5, deliveries = deliveries + 1
         WHERE key = ?1 AND ms = ?2 AND seq = ?3 RETURNING deliveries",
    )?;
    rows.into_iter()
        .map(|(ms, seq, value)| {
            let deliveries: i64 =
                stmt.query_row(params![key, ms, seq, consumer, now], |r| r.get(0))?;
            Ok(Entry {
                id: format_id(ms, seq),
                value,
                deliveries: deliveries as u64,
            })
        })
        .collect()
}

/// `XCLAIM … 0 id JUSTID`: the entry is `consumer`'s and its idle time starts again,
/// its delivery count unchanged. With `only_owner`, only while `consumer` holds it
/// already. `true` when the entry was there (and held).
pub(super) fn xtouch(
    c: &Connection,
    key: &str,
    consumer: &str,
    id: &str,
    only_owner: bool,
) -> Sql<bool> {
    let Some((ms, seq)) = parse_id(id) else {
        return Ok(false);
    };
    let sql = if only_owner {
        "UPDATE streams SET delivered_ms = ?5
         WHERE key = ?1 AND ms = ?2 AND seq = ?3 AND consumer = ?4"
    } else {
        "UPDATE streams SET consumer = ?4, delivered_ms = ?5
         WHERE key = ?1 AND ms = ?2 AND seq = ?3 AND consumer IS NOT NULL"
    };
    Ok(c.execute(sql, params![key, ms, seq, consumer, now_ms()])? == 1)
}

/// `XRANGE key (after + COUNT n`: entries after id `after`, oldest first.
pub(super) fn xafter(c: &Connection, key: &str, after: &str, count: usize) -> Sql<Vec<Entry>> {
    let (ms, seq) = parse_id(after).unwrap_or((0, 0));
    let mut stmt = c.prepare_cached(
        "SELECT ms, seq, value, deliveries FROM streams WHERE key = ?1 AND (ms, seq) > (?2, ?3)
         ORDER BY ms, seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![key, ms, seq, count as i64], |r| {
        Ok(Entry {
            id: format_id(r.get(0)?, r.get(1)?),
            value: r.get(2)?,
            deliveries: r.get::<_, i64>(3)? as u64,
        })
    })?;
    rows.collect()
}

/// The newest entry's id.
pub(super) fn xlast(c: &Connection, key: &str) -> Sql<Option<String>> {
    c.query_row(
        "SELECT ms, seq FROM streams WHERE key = ?1 ORDER BY ms DESC, seq DESC LIMIT 1",
        params![key],
        |r| Ok(format_id(r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Keeps the newest `max` entries (`XTRIM MAXLEN`); checked only every so often by the
/// caller, like Redis's approximate trim.
pub(super) fn xtrim(c: &Connection, key: &str, max: usize) -> Sql<()> {
    c.execute(
        "DELETE FROM streams WHERE key = ?1 AND (ms, seq) <= (
           SELECT ms, seq FROM streams WHERE key = ?1 ORDER BY ms DESC, seq DESC
           LIMIT 1 OFFSET ?2)",
        params![key, max as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    #[test]
    fn stream_ids_grow_and_are_never_reused_after_a_delete() {
        let c = db();
        let a = xadd(&c, "s", "a").unwrap();
        let b = xadd(&c, "s", "b").unwrap();
        assert!(parse_id(&b) > parse_id(&a));
        xdel(&c, "s", &b).unwrap();
        let next = xadd(&c, "s", "c").unwrap();
        assert!(parse_id(&next) > parse_id(&b), "{next} after {b}");
        let after_a: Vec<String> = xafter(&c, "s", &a, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(after_a, ["c"]);
    }

    #[test]
    fn a_group_read_hands_each_entry_out_once_and_a_claim_counts_deliveries() {
        let c = db();
        xadd(&c, "s", "x").unwrap();
        let first = xread_new(&c, "s", "a", 10).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].deliveries, 1);
        assert!(
            xread_new(&c, "s", "b", 10).unwrap().is_empty(),
            "handed out once"
        );
        let taken = xclaim_idle(&c, "s", "b", Duration::ZERO, 10).unwrap();
        assert_eq!(taken[0].deliveries, 2);
        assert!(
            !xtouch(&c, "s", "a", &taken[0].id, true).unwrap(),
            "no longer a's"
        );
        assert!(xtouch(&c, "s", "b", &taken[0].id, true).unwrap());
    }

    #[test]
    fn trimming_keeps_the_newest_entries() {
        let c = db();
        for i in 0..10 {
            xadd(&c, "log", &i.to_string()).unwrap();
        }
        xtrim(&c, "log", 3).unwrap();
        let kept: Vec<String> = xafter(&c, "log", "0", 100)
            .unwrap()
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(kept, ["7", "8", "9"]);
    }

    #[test]
    fn an_expired_value_is_absent_and_can_be_set_anew() {
        let c = db();
        assert!(set(&c, "k", "1", Some(Duration::from_millis(1)), true).unwrap());
        set(&c, "kept", "1", None, false).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(get(&c, "k").unwrap(), None);
        assert_eq!(
            purge_expired(&c, now_ms()).unwrap(),
            1,
            "only the expired value"
        );
        assert_eq!(get(&c, "kept").unwrap().as_deref(), Some("1"));
        assert!(set(&c, "k", "2", None, true).unwrap(), "NX after expiry");
        assert!(!set(&c, "k", "3", None, true).unwrap(), "NX while live");
        assert_eq!(get(&c, "k").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn lists_pop_in_push_order_and_scored_sets_read_newest_first() {
        let c = db();
        rpush(&c, "l", "a").unwrap();
        rpush(&c, "l", "b").unwrap();
        assert_eq!(lpop(&c, "l").unwrap().as_deref(), Some("a"));
        assert_eq!(lrange_from(&c, "l", 0).unwrap(), ["b"]);
        zadd(&c, "z", "old", 1).unwrap();
        zadd(&c, "z", "new", 5).unwrap();
        assert_eq!(zrev(&c, "z", None, 10).unwrap()[0].0, "new");
        assert_eq!(zrev(&c, "z", Some(5), 10).unwrap(), [("old".to_owned(), 1)]);
    }
}
