//! The job log (`job:{<id>}:output`): runner steps and the agent's output, appended in
//! batches by one task per job so a chatty agent costs one Redis round trip per batch.
//! Every line is masked (the job's own secrets and anything shaped like a token) before
//! it is stored: the log is shown on the dashboard. The channel in front is bounded
//! and rate-limited ([`LogSink`]); this writer also writes the "N lines dropped" line
//! of a burst that ended with nothing after it.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::warn;

use crate::agent::LogSink;
use crate::job::JobId;
use crate::secret::{Secret, mask_all};
use crate::store::Store;

/// Longest stored line; longer ones are cut (an agent printing a minified file).
const MAX_LINE: usize = 4_000;
const BATCH: usize = 256;

pub struct JobLog {
    tx: LogSink,
    task: JoinHandle<()>,
}

impl JobLog {
    /// `secrets` are masked in every line; the job adds to them as it learns them (its
    /// git token).
    /// `per_second`: lines kept per second (`REPOBOX_LOG_LINES_PER_SECOND`).
    pub fn start(
        store: Arc<dyn Store>,
        id: JobId,
        secrets: Arc<Mutex<Vec<Secret>>>,
        per_second: u32,
    ) -> JobLog {
        let (tx, mut rx) = LogSink::channel(per_second);
        let limiter = tx.limiter();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let open = tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => n > 0,
                    _ = tick.tick() => true,
                };
                if let Some(notice) = limiter.take_notice(!open) {
                    batch.push(notice);
                }
                if !batch.is_empty() {
                    let known = secrets.lock().unwrap().clone();
                    let lines: Vec<String> =
                        batch.drain(..).map(|line| clean(&line, &known)).collect();
                    if let Err(e) = append_with_retries(store.as_ref(), id, &lines).await {
                        warn!(job = %id, error = %e, lines = lines.len(), "job log lines lost");
                    }
                }
                if !open {
                    break;
                }
            }
        });
        JobLog { tx, task }
    }

    /// A sender for the agent (its output goes straight into the log).
    pub fn sink(&self) -> LogSink {
        self.tx.clone()
    }

    /// A runner step, marked so it stands out from agent output.
    pub fn step(&self, text: impl AsRef<str>) {
        let _ = self.tx.send(format!("==> {}", text.as_ref()));
    }

    /// Flushes what is buffered and stops the writer. Agent senders still alive are cut off.
    pub async fn close(self) {
        drop(self.tx);
        // The writer ends once every sender is gone; agents have returned by now.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn clean(line: &str, secrets: &[Secret]) -> String {
    let mut line = mask_all(line, secrets);
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" …(line cut)");
    }
    line
}

async fn append_with_retries(
    store: &dyn Store,
    id: JobId,
    lines: &[String],
) -> Result<(), crate::store::StoreError> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut last = None;
    for _ in 0..5 {
        match store.append_log(id, lines).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Err(last.expect("at least one attempt"))
}
