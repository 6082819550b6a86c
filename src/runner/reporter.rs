//! The one progress comment per job (SPEC section 5), edited in place: at most one edit
//! per interval (5 s), intermediate states coalesced, the final state always written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::forges::{Forge, ForgeError};
use crate::model::{RepoRef, ThreadRef};

pub struct Reporter {
    forge: Arc<dyn Forge>,
    repo: RepoRef,
    thread: ThreadRef,
    comment_id: u64,
    tx: watch::Sender<String>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Reporter {
    pub fn start(
        forge: Arc<dyn Forge>,
        repo: RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        interval: Duration,
    ) -> Reporter {
        let (tx, mut rx) = watch::channel(String::new());
        rx.mark_unchanged();
        let stop = CancellationToken::new();
        let task = {
            let (forge, repo, stop) = (forge.clone(), repo.clone(), stop.clone());
            tokio::spawn(async move {
                let mut written = String::new();
                loop {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { break },
                        _ = stop.cancelled() => break,
                    }
                    let body = rx.borrow_and_update().clone();
                    if body == written {
                        continue;
                    }
                    let started = Instant::now();
                    match forge.update_comment(&repo, thread, comment_id, &body).await {
                        Ok(()) => written = body,
                        Err(e) => warn!(error = %e, "progress comment edit failed"),
                    }
                    // The throttle: nothing more until the interval has passed.
                    tokio::select! {
                        _ = tokio::time::sleep_until(started + interval) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            })
        };
        Reporter {
            forge,
            repo,
            thread,
            comment_id,
            tx,
            stop,
            task,
        }
    }

    /// Shows `body` at the next edit (coalesced with later updates).
    pub fn update(&self, body: String) {
        self.tx.send_replace(body);
    }

    /// Writes the final state now, whatever the throttle says, with a few retries.
    pub async fn finish(self, body: &str) -> Result<(), ForgeError> {
        self.stop.cancel();
        let _ = self.task.await;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .forge
                .update_comment(&self.repo, self.thread, self.comment_id, body)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < 4 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
