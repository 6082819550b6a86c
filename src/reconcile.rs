//! The orphan reconciler (SPEC section 13, "Redis durability"): inside every `serve`,
//! at start and every 30 s, it re-queues jobs left `queued` (dispatched) or `running`
//! with no `jobs:stream` entry and no heartbeat for longer than the visibility timeout,
//! as after a Redis restart that lost the stream or an entry deleted by hand. The queue
//! makes sure one process at a time does the pass ([`JobQueue::requeue_orphans`]).
//!
//! [`JobQueue::requeue_orphans`]: crate::store::JobQueue::requeue_orphans

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::store::Store;

/// Time between two passes.
pub const EVERY: Duration = Duration::from_secs(30);

/// Runs passes until `shutdown`.
pub async fn run(store: Arc<dyn Store>, older_than: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.requeue_orphans(older_than).await {
            Ok(0) => {}
            Ok(n) => info!(requeued = n, "orphaned jobs re-queued"),
            Err(e) => debug!(error = %e, "orphan reconciler could not run"),
        }
    }
}
