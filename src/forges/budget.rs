//! The forge request budget (SPEC section 13, "Forge request budget"): content writes
//! (comments created and edited, reactions, pull/merge requests opened) are spaced per
//! GitHub installation and per GitLab token, with one budget shared by every process.
//!
//! A budget is a set of sliding windows ([`Limit`]: at most `writes` in any `per`) per
//! key, and a pause per key: a 403/429 that names a wait stops that key's writes for that
//! long, in every process. [`RequestBudget::acquire`] either waits for room
//! ([`Wait::UntilAvailable`], final states) or gives up at once ([`Wait::No`], progress
//! edits, which are dropped when the budget is short).
//!
//! Backends: the Redis one (`crate::store::redis_budget`) for production, where several
//! processes share it; [`LocalBudget`] keeps the same windows in this process only.
//! An adapter built with no budget writes unthrottled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::ForgeError;

/// At most `writes` content writes in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub writes: u32,
    pub per: Duration,
}

/// GitHub's documented secondary rate limits for content creation: 80 a minute and 500
/// an hour, per installation.
pub const GITHUB_LIMITS: &[Limit] = &[
    Limit {
        writes: 80,
        per: Duration::from_secs(60),
    },
    Limit {
        writes: 500,
        per: Duration::from_secs(60 * 60),
    },
];

/// GitLab documents a per-user limit on note creation of 300 a minute (the default of
/// its "Notes rate limit" setting) and no hourly one; the budget keeps every content
/// write of the token (notes, edits, award emoji, merge requests) under it.
pub const GITLAB_LIMITS: &[Limit] = &[Limit {
    writes: 300,
    per: Duration::from_secs(60),
}];

/// Whether [`RequestBudget::acquire`] waits for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait until the windows have room and no pause holds (final states, creations).
    UntilAvailable,
    /// Answer at once (progress edits: dropped when the budget is short). "Short" comes
    /// before "full": these writes leave [`RESERVE_PERCENT`] of every window to the
    /// writes that wait, so a burst of progress edits never delays a final state.
    No,
}

/// The share of every window that progress edits ([`Wait::No`]) leave free.
pub const RESERVE_PERCENT: u32 = 25;

impl Wait {
    /// How many of `limit`'s writes a write of this kind may see taken and still go.
    pub fn usable(self, limit: &Limit) -> u32 {
        match self {
            Wait::UntilAvailable => limit.writes,
            Wait::No => limit.writes - limit.writes * RESERVE_PERCENT / 100,
        }
    }

    /// The reserve this kind of write leaves, in percent (the Redis script's argument).
    pub fn reserve_percent(self) -> u32 {
        match self {
            Wait::UntilAvailable => 0,
            Wait::No => RESERVE_PERCENT,
        }
    }
}

/// What [`RequestBudget::try_take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// One write was taken from the budget.
    Taken,
    /// Nothing taken: a window is full or the key is paused; room again in about this long.
    RetryIn(Duration),
}

/// The budget's backend could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request budget unavailable: {0}")]
pub struct BudgetError(pub String);

/// Longest sleep between two tries of a waiting [`RequestBudget::acquire`] (a pause
/// another process sets is seen within this).
const MAX_POLL: Duration = Duration::from_secs(10);

#[async_trait]
pub trait RequestBudget: Send + Sync + 'static {
    /// Takes one write for `key` when every window has room for a write of kind `wait`
    /// (see [`Wait::usable`]) and no pause holds.
    async fn try_take(&self, key: &str, wait: Wait) -> Result<Take, BudgetError>;

    /// Stops `key`'s writes for `duration` (a longer pause already set is kept).
    async fn pause(&self, key: &str, duration: Duration) -> Result<(), BudgetError>;

    /// Takes one write for `key`; `Ok(false)` only with [`Wait::No`] when there is no
    /// room now. With [`Wait::UntilAvailable`] it sleeps until there is.
    async fn acquire(&self, key: &str, wait: Wait) -> Result<bool, BudgetError> {
        loop {
            match self.try_take(key, wait).await? {
                Take::Taken => return Ok(true),
                Take::RetryIn(_) if wait == Wait::No => return Ok(false),
                Take::RetryIn(left) => {
                    // A little after the slot frees, so waiters do not all come at once.
                    let jitter = Duration::from_millis(rand::random_range(1..=25));
                    tokio::time::sleep(left.min(MAX_POLL) + jitter).await;
                }
            }
        }
    }
}

/// Takes a write for `key` from `budget`. No budget, or one that cannot be asked
/// (Redis down: logged), lets the write go: the budget is a courtesy to the forge and
/// must not stop Repobox, and the forge enforces its limits itself.
pub(crate) async fn take_write(
    budget: Option<&Arc<dyn RequestBudget>>,
    key: &str,
    wait: Wait,
) -> bool {
    let Some(budget) = budget else { return true };
    match budget.acquire(key, wait).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(error = %e, key, "request budget not checked; writing anyway");
            true
        }
    }
}

/// After a rate-limited answer for `key` that names a wait, pauses `key`'s writes that
/// long for every process sharing the budget.
pub(crate) async fn note_rate_limit(
    budget: Option<&Arc<dyn RequestBudget>>,
    key: &str,
    error: &ForgeError,
) {
    let (Some(budget), Some(wait)) = (budget, error.retry_after()) else {
        return;
    };
    tracing::info!(key, ?wait, "forge rate limit: pausing content writes");
    if let Err(e) = budget.pause(key, wait).await {
        tracing::warn!(error = %e, key, "could not record the forge's rate limit pause");
    }
}

/// A budget that always has room (tests that do not care about spacing).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

#[async_trait]
impl RequestBudget for Unlimited {
    async fn try_take(&self, _: &str, _: Wait) -> Result<Take, BudgetError> {
        Ok(Take::Taken)
    }
    async fn pause(&self, _: &str, _: Duration) -> Result<(), BudgetError> {
        Ok(())
    }
}

/// The windows and pauses of [`RequestBudget`] in this process's memory: for a single
/// process, and for tests (it follows tokio's clock, so paused time drives it).
pub struct LocalBudget {
    limits: Vec<Limit>,
    keys: Mutex<HashMap<String, LocalKey>>,
}

#[derive(Default)]
struct LocalKey {
    /// When each write was taken, oldest first, within the longest window.
    taken: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl LocalBudget {
    pub fn new(limits: &[Limit]) -> Self {
        LocalBudget {
            limits: limits.to_vec(),
            keys: Mutex::default(),
        }
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn try_take(&self, key: &str, kind: Wait) -> Result<Take, BudgetError> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap();
        let state = keys.entry(key.to_owned()).or_default();
        if let Some(until) = state.paused_until.filter(|until| *until > now) {
            return Ok(Take::RetryIn(until - now));
        }
        let longest = self.limits.iter().map(|l| l.per).max().unwrap_or_default();
        while state.taken.front().is_some_and(|t| now - *t >= longest) {
            state.taken.pop_front();
        }
        let mut wait = Duration::ZERO;
        for limit in &self.limits {
            let in_window: Vec<&Instant> = state
                .taken
                .iter()
                .filter(|t| now - **t < limit.per)
                .collect();
            let usable = kind.usable(limit) as usize;
            if usable == 0 {
                wait = wait.max(limit.per);
            } else if in_window.len() >= usable {
                // Room again when enough of the window's writes have left it.
                let leaving = in_window[in_window.len() - usable];
                wait = wait.max(*leaving + limit.per - now);
            }
        }
        if wait > Duration::ZERO {
            return Ok(Take::RetryIn(wait));
        }
        state.taken.push_back(now);
        Ok(Take::Taken)
    }

    async fn pause(&self, key: &str, duration: Duration) -> Result<(), BudgetError> {
        let until = Instant::now() + duration;
        let mut keys = self.keys.lock().unwrap();
        let state = keys.entry(key.to_owned()).or_default();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &[Limit] = &[
        Limit {
            writes: 2,
            per: Duration::from_secs(10),
        },
        Limit {
            writes: 3,
            per: Duration::from_secs(60),
        },
    ];

    #[tokio::test(start_paused = true)]
    async fn windows_fill_and_free_per_key() {
        let budget = LocalBudget::new(SMALL);
        assert!(budget.acquire("a", Wait::No).await.unwrap());
        assert!(budget.acquire("a", Wait::No).await.unwrap());
        // The 10 s window is full; another key has its own budget.
        assert!(!budget.acquire("a", Wait::No).await.unwrap());
        assert!(budget.acquire("b", Wait::No).await.unwrap());
        assert_eq!(
            budget.try_take("a", Wait::UntilAvailable).await.unwrap(),
            Take::RetryIn(Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(budget.acquire("a", Wait::No).await.unwrap());
        // Three writes of `a` within the minute: the 60 s window is full now.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            budget.try_take("a", Wait::UntilAvailable).await.unwrap(),
            Take::RetryIn(Duration::from_secs(40)),
            "the 60 s window is full until the first write leaves it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_acquire_sleeps_until_room_and_pauses_hold_writes() {
        let budget = LocalBudget::new(SMALL);
        budget.acquire("a", Wait::No).await.unwrap();
        budget.acquire("a", Wait::No).await.unwrap();
        let start = Instant::now();
        assert!(budget.acquire("a", Wait::UntilAvailable).await.unwrap());
        assert!(start.elapsed() >= Duration::from_secs(10));

        budget.pause("b", Duration::from_secs(3)).await.unwrap();
        // A shorter pause does not shorten the longer one.
        budget.pause("b", Duration::from_secs(1)).await.unwrap();
        assert!(!budget.acquire("b", Wait::No).await.unwrap());
        let start = Instant::now();
        assert!(budget.acquire("b", Wait::UntilAvailable).await.unwrap());
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_edits_leave_a_quarter_of_the_window_to_final_writes() {
        let budget = LocalBudget::new(&[Limit {
            writes: 8,
            per: Duration::from_secs(60),
        }]);
        for _ in 0..6 {
            assert!(budget.acquire("a", Wait::No).await.unwrap());
        }
        assert!(
            !budget.acquire("a", Wait::No).await.unwrap(),
            "6 of 8 taken: the last quarter is not for progress edits"
        );
        for _ in 0..2 {
            let start = Instant::now();
            assert!(budget.acquire("a", Wait::UntilAvailable).await.unwrap());
            assert_eq!(
                start.elapsed(),
                Duration::ZERO,
                "final writes use the reserve"
            );
        }
        assert!(matches!(
            budget.try_take("a", Wait::UntilAvailable).await.unwrap(),
            Take::RetryIn(_)
        ));
    }
}
