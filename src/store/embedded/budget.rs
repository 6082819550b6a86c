//! The forge request budget ([`RequestBudget`]) on the embedded store, for `repobox
//! all` alone on one machine: the same two keys per budget key as the Redis backend
//! (`budget:{<key>}:writes`, a scored set of the writes taken by time, and
//! `budget:{<key>}:pause`, present while the forge asked to wait), one transaction per
//! take.

use std::time::Duration;

use async_trait::async_trait;

use super::{EmbeddedStore, data};
use crate::forges::budget::{BudgetError, Limit, RequestBudget, Take, Wait};

pub struct EmbeddedBudget {
    store: EmbeddedStore,
    limits: Vec<Limit>,
}

impl EmbeddedBudget {
    pub fn new(store: EmbeddedStore, limits: &[Limit]) -> Self {
        EmbeddedBudget {
            store,
            limits: limits.to_vec(),
        }
    }
}

fn writes_key(key: &str) -> String {
    format!("budget:{{{key}}}:writes")
}

fn pause_key(key: &str) -> String {
    format!("budget:{{{key}}}:pause")
}

#[async_trait]
impl RequestBudget for EmbeddedBudget {
    async fn try_take(&self, key: &str, kind: Wait) -> Result<Take, BudgetError> {
        let (writes, pause) = (writes_key(key), pause_key(key));
        let limits = self.limits.clone();
        let reserve = i64::from(kind.reserve_percent());
        let wait_ms = self
            .store
            .write(move |c, _| {
                if let Some(left) = data::ttl(c, &pause)? {
                    return Ok(left.as_millis().max(1) as i64);
                }
                let now = data::now_ms();
                let longest = limits
                    .iter()
                    .map(|l| l.per.as_millis() as i64)
                    .max()
                    .unwrap_or(0);
                data::zrem_upto(c, &writes, now - longest)?;
                let mut wait = 0;
                for limit in &limits {
                    let window = limit.per.as_millis() as i64;
                    let allowed = i64::from(limit.writes) - i64::from(limit.writes) * reserve / 100;
                    let taken = data::zscores_from(c, &writes, now - window + 1)?;
                    if allowed <= 0 {
                        wait = wait.max(window);
                    } else if taken.len() as i64 >= allowed {
                        // Room again once enough of the window's writes have left it.
                        let leaving = taken[taken.len() - allowed as usize];
                        wait = wait.max(leaving + window - now + 1);
                    }
                }
                if wait > 0 {
                    return Ok(wait);
                }
                data::zadd(c, &writes, &ulid::Ulid::new().to_string(), now)?;
                Ok(0)
            })
            .await
            .map_err(|e| BudgetError(e.to_string()))?;
        Ok(if wait_ms <= 0 {
            Take::Taken
        } else {
            Take::RetryIn(Duration::from_millis(wait_ms as u64))
        })
    }

    async fn pause(&self, key: &str, duration: Duration) -> Result<(), BudgetError> {
        let pause = pause_key(key);
        self.store
            .write(move |c, _| {
                if data::ttl(c, &pause)?.unwrap_or_default() < duration {
                    data::set(c, &pause, "1", Some(duration), false)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| BudgetError(e.to_string()))
    }
}
