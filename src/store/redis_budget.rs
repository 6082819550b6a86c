//! Redis backend of the forge request budget ([`crate::forges::budget::RequestBudget`]),
//! shared by every `serve` and `runner` process on the same Redis and key prefix.
//!
//! Per budget key (`github:<installation>`, `gitlab:<host>:<user>`) two keys, with the
//! budget key as a Redis Cluster hash tag so one script reaches both:
//!
//! - `budget:{<key>}:writes`: sorted set of the writes taken, scored by the Redis
//!   clock (ms), trimmed to the longest window;
//! - `budget:{<key>}:pause`: present while the forge asked to wait (`PX` = the wait).
//!
//! Taking a write is one Lua script on the server's clock (`TIME`), so processes with
//! skewed clocks still share one budget and two of them never take the last slot both.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::forges::budget::{BudgetError, Limit, RequestBudget, Take, Wait};

/// KEYS: writes, pause. ARGV: member, reserve (percent of each window this write must
/// leave free), then `limit, window ms` per window.
/// Returns 0 when a write was taken, else the ms until there may be room.
const TAKE_SCRIPT: &str = r"
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reserve = tonumber(ARGV[2])
local longest = 0
for i = 3, #ARGV, 2 do
  longest = math.max(longest, tonumber(ARGV[i + 1]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait = 0
for i = 3, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  limit = limit - math.floor(limit * reserve / 100)
  local from = now - window + 1
  local used = redis.call('ZCOUNT', KEYS[1], from, '+inf')
  if limit <= 0 then
    wait = math.max(wait, window)
  elseif used >= limit then
    -- Room again once enough of the window's writes have left it.
    local leaving = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES',
      'LIMIT', used - limit, 1)
    wait = math.max(wait, tonumber(leaving[2]) + window - now + 1)
  end
end
if wait > 0 then return wait end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], longest)
return 0
";

/// KEYS: pause. ARGV: ms. Never shortens a longer pause.
const PAUSE_SCRIPT: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

pub struct RedisBudget {
    conn: ConnectionManager,
    prefix: String,
    limits: Vec<Limit>,
    take: Script,
    pause: Script,
}

impl RedisBudget {
    /// A lazily connected budget: no Redis is needed until the first write.
    pub fn new(url: &str, prefix: &str, limits: &[Limit]) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REPOBOX_REDIS_URL is not a valid Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisBudget {
            conn,
            prefix: prefix.to_owned(),
            limits: limits.to_vec(),
            take: Script::new(TAKE_SCRIPT),
            pause: Script::new(PAUSE_SCRIPT),
        })
    }

    /// The same Redis connection and prefix with other limits (one connection for the
    /// GitHub and the GitLab budget).
    pub fn with_limits(&self, limits: &[Limit]) -> Self {
        RedisBudget {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            limits: limits.to_vec(),
            take: Script::new(TAKE_SCRIPT),
            pause: Script::new(PAUSE_SCRIPT),
        }
    }

    /// `budget:{<key>}:writes`
    pub fn writes_key(&self, key: &str) -> String {
        format!("{}budget:{{{key}}}:writes", self.prefix)
    }

    /// `budget:{<key>}:pause`
    pub fn pause_key(&self, key: &str) -> String {
        format!("{}budget:{{{key}}}:pause", self.prefix)
    }
}

fn unavailable(e: redis::RedisError) -> BudgetError {
    BudgetError(e.to_string())
}

#[async_trait]
impl RequestBudget for RedisBudget {
    async fn try_take(&self, key: &str, kind: Wait) -> Result<Take, BudgetError> {
        let mut inv = self.take.prepare_invoke();
        inv.key(self.writes_key(key))
            .key(self.pause_key(key))
            .arg(ulid::Ulid::new().to_string())
            .arg(kind.reserve_percent());
        for limit in &self.limits {
            inv.arg(limit.writes).arg(limit.per.as_millis() as u64);
        }
        let mut conn = self.conn.clone();
        let wait_ms: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if wait_ms <= 0 {
            Take::Taken
        } else {
            Take::RetryIn(Duration::from_millis(wait_ms as u64))
        })
    }

    async fn pause(&self, key: &str, duration: Duration) -> Result<(), BudgetError> {
        let ms = duration.as_millis().max(1) as u64;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .pause
            .key(self.pause_key(key))
            .arg(ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
