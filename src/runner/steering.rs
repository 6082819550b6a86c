//! [`Steering`] for one run (SPEC 16): the job's steering list in the store, read from
//! the index this run has reached; each new instruction goes to the job log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::warn;

use crate::agent::{LogSink, Steering};
use crate::store::{Lease, Steer, Store, StoreError};

pub struct JobSteering {
    store: Arc<dyn Store>,
    lease: Lease,
    /// Entries this run has given its agent.
    seen: AtomicUsize,
    log: LogSink,
}

impl JobSteering {
    /// Opens steering for the run: from now on commands on the thread come here.
    pub async fn open(
        store: Arc<dyn Store>,
        lease: Lease,
        log: LogSink,
    ) -> Result<JobSteering, StoreError> {
        store.open_steering(&lease).await?;
        Ok(JobSteering {
            store,
            lease,
            seen: AtomicUsize::new(0),
            log,
        })
    }

    /// The agent is gone (whatever its outcome): the job takes no more instructions.
    /// Entries nobody read are named in the log.
    pub async fn shut(&self) {
        let mut seen = self.seen.load(Ordering::SeqCst);
        // Closing succeeds once no entry is unread; a few rounds at most.
        for _ in 0..8 {
            match self.store.close_steering(&self.lease, seen).await {
                Ok(late) if !late.is_empty() => {
                    for s in &late {
                        let _ = self.log.send(format!(
                            "Instructions from @{} arrived after the agent stopped and were not used",
                            s.login
                        ));
                    }
                    seen += late.len();
                }
                Ok(_) | Err(StoreError::LeaseLost) => return,
                Err(e) => {
                    warn!(error = %e, "could not close steering");
                    return;
                }
            }
        }
    }

    /// What a read of the list gave: new entries are counted and logged; a store error
    /// is logged (`what` failed) and reads as none.
    fn received(&self, read: Result<Vec<Steer>, StoreError>, what: &str) -> Vec<Steer> {
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "could not {what}");
                return Vec::new();
            }
        };
        self.seen.fetch_add(entries.len(), Ordering::SeqCst);
        for s in &entries {
            let first = s.text.lines().next().unwrap_or("");
            let _ = self.log.send(format!("Steered by @{}: {first}", s.login));
        }
        entries
    }
}

#[async_trait::async_trait]
impl Steering for JobSteering {
    async fn take(&self) -> Vec<Steer> {
        let from = self.seen.load(Ordering::SeqCst);
        let read = self.store.steering(self.lease.job, from).await;
        self.received(read, "read steering; trying again next turn")
    }

    async fn close(&self) -> Vec<Steer> {
        let from = self.seen.load(Ordering::SeqCst);
        let read = self.store.close_steering(&self.lease, from).await;
        self.received(read, "close steering")
    }
}
