//! Webhook recovery (SPEC section 13): GitHub never redelivers a failed delivery on its
//! own, so `serve` asks it to, every `REPOBOX_REDELIVER_INTERVAL`.
//!
//! One round: take the cluster-wide lock `lock:redeliver` (held for most of an
//! interval, so all `serve` processes together run one round per interval), read the
//! App's delivery attempts newest first (`GET /app/hook/deliveries`, 100 a page) back
//! to the cursor `redeliver:cursor` (the newest attempt the previous round saw) or 72 h
//! (GitHub redelivers nothing older), and group them by event (`guid`). An event is
//! asked for once (`POST /app/hook/deliveries/{id}/attempts`, for its newest attempt)
//! when none of its attempts was answered 2xx, intake has no dedupe key for it
//! (`delivery:github:<guid>`), and its newest attempt failed in a way a second try can
//! mend: no answer (status 0), 408, 429 or 5xx. A 4xx was Repobox refusing the delivery
//! (bad signature, malformed payload) and stays refused. Then the cursor moves to the
//! newest attempt read, but never past an event whose redelivery could not be asked
//! (the next round tries it again).
//!
//! A redelivery that fails again shows up as a new attempt after the cursor, so the next
//! round asks again: once per round, until it succeeds or GitHub's 3-day window ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::forges::github::{GitHub, HookDelivery};
use crate::forges::with_retries;
use crate::model::ForgeKind;
use crate::store::{Delivery, Store};

/// How far back a round reads (GitHub's redelivery window is 3 days).
pub const LOOKBACK: Duration = Duration::from_secs(72 * 60 * 60);

/// Most pages of attempts one round reads (10 000 attempts).
const MAX_PAGES: usize = 100;

/// Name of the cluster-wide lock (`lock:redeliver`).
const LOCK: &str = "redeliver";

/// What one [`Redeliverer::round`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Another process ran a round within this interval: nothing was read.
    pub skipped: bool,
    /// Delivery attempts read (newer than the cursor, within [`LOOKBACK`]).
    pub read: usize,
    /// Attempts GitHub was asked to redeliver, newest first.
    pub redelivered: Vec<u64>,
    /// Redeliveries GitHub could not be asked for (asked again next round).
    pub failed: usize,
}

/// The reconciler; [`Redeliverer::run`] is its loop in `serve`.
pub struct Redeliverer {
    github: Arc<GitHub>,
    store: Arc<dyn Store>,
    interval: Duration,
}

/// The newest attempt of an event failed in a way another try can mend.
fn worth_redelivering(status_code: u16) -> bool {
    matches!(status_code, 0 | 408 | 429 | 500..=599)
}

impl Redeliverer {
    /// `interval` is `REPOBOX_REDELIVER_INTERVAL` (not zero).
    pub fn new(github: Arc<GitHub>, store: Arc<dyn Store>, interval: Duration) -> Self {
        Redeliverer {
            github,
            store,
            interval,
        }
    }

    /// A round at start, then one per interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.round() => match result {
                    Ok(round) if round.skipped => debug!("redelivery round run elsewhere"),
                    Ok(round) => debug!(
                        read = round.read,
                        redelivered = round.redelivered.len(),
                        failed = round.failed,
                        "redelivery round done"
                    ),
                    Err(e) => warn!(error = %format!("{e:#}"), "redelivery round failed"),
                },
            }
        }
    }

    /// One round (see the module header).
    pub async fn round(&self) -> anyhow::Result<Round> {
        let lock_ttl = self.interval.mul_f64(0.9).max(Duration::from_millis(100));
        if !self.store.try_lock(LOCK, lock_ttl).await? {
            return Ok(Round {
                skipped: true,
                ..Round::default()
            });
        }
        let cursor = self.store.redeliver_cursor().await?;
        let since = OffsetDateTime::now_utc() - LOOKBACK;
        let attempts = self.read_back(cursor, since).await?;
        let mut round = Round {
            read: attempts.len(),
            ..Round::default()
        };

        // Attempts of each event, newest first; events in the order of their newest.
        let mut events: Vec<&str> = Vec::new();
        let mut by_event: HashMap<&str, Vec<&HookDelivery>> = HashMap::new();
        for attempt in &attempts {
            let of_event = by_event.entry(attempt.guid.as_str()).or_default();
            if of_event.is_empty() {
                events.push(attempt.guid.as_str());
            }
            of_event.push(attempt);
        }
        let mut oldest_unasked: Option<u64> = None;
        for guid in events {
            let of_event = &by_event[guid];
            let newest = of_event[0];
            if of_event.iter().any(|a| a.succeeded()) || !worth_redelivering(newest.status_code) {
                continue;
            }
            let delivery = Delivery {
                forge: ForgeKind::GitHub,
                id: guid,
            };
            if self.store.delivery_seen(delivery).await? {
                continue;
            }
            match self.github.redeliver(newest.id).await {
                Ok(()) => {
                    info!(
                        guid,
                        event = %newest.event,
                        status = newest.status_code,
                        "asked GitHub to redeliver a failed webhook delivery"
                    );
                    round.redelivered.push(newest.id);
                }
                Err(e) => {
                    warn!(guid, error = %e, "could not ask GitHub for a redelivery");
                    round.failed += 1;
                    oldest_unasked = Some(oldest_unasked.map_or(newest.id, |o| o.min(newest.id)));
                }
            }
        }

        let newest_read = attempts.iter().map(|a| a.id).max();
        let next_cursor = match (newest_read, oldest_unasked) {
            (Some(newest), Some(unasked)) => Some(newest.min(unasked - 1)),
            (newest, _) => newest,
        };
        if let Some(next) = next_cursor.filter(|n| cursor.is_none_or(|c| *n > c)) {
            self.store.set_redeliver_cursor(next).await?;
        }
        Ok(round)
    }

    /// The attempts newer than `cursor` and delivered after `since`, newest first.
    async fn read_back(
        &self,
        cursor: Option<u64>,
        since: OffsetDateTime,
    ) -> anyhow::Result<Vec<HookDelivery>> {
        let mut attempts = Vec::new();
        let mut page_cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = with_retries(|| self.github.hook_deliveries(page_cursor.as_deref())).await?;
            for attempt in page.deliveries {
                if cursor.is_some_and(|c| attempt.id <= c) || attempt.delivered_at < since {
                    return Ok(attempts);
                }
                attempts.push(attempt);
            }
            match page.next_cursor {
                Some(next) => page_cursor = Some(next),
                None => return Ok(attempts),
            }
        }
        warn!("redelivery: stopped after {MAX_PAGES} pages of deliveries");
        Ok(attempts)
    }
}
