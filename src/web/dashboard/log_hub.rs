//! The live-log hub: every viewer of one job's live log shares one reader (SPEC section
//! 13, "Blocking reads").
//!
//! A blocking `XREAD` holds its connection until it answers, so viewers that each wait
//! on a shared connection queue behind each other, and a connection per viewer would
//! let the number of open job pages decide how many connections Redis holds. Instead,
//! per watched job there is at most one reader task with a [`LogReader`] of its own
//! (the connection `repobox:<role>:log-read:<job id>`). It is started when the first
//! viewer of the job subscribes and stopped (its connection closed) when the last one
//! drops its [`Subscription`]. It loops over
//!
//! 1. read the job record and publish it (a `watch`: the latest one wins), then
//! 2. `XREAD BLOCK` for lines after its cursor (up to [`WAIT`]) and publish what came as
//!    a [`Batch`] (a `broadcast`), tagged with the cursor it read after,
//!
//! and once the job is final it stops reading (no line comes after the final status)
//! and waits for its viewers to leave. Its first batch is empty and only announces
//! where it starts (the newest line when it started).
//!
//! Lines are never lost or repeated for a viewer, whatever the timing, because a
//! viewer keeps its own cursor (the SSE event id it sent last) and reads from the
//! store itself whenever the feed cannot be trusted to continue from there: at the
//! start (its backlog after `Last-Event-ID`), when a batch starts after its cursor (it
//! joined after the lines in between were published, or the reader started after its
//! backlog read), and when it lagged so far behind that the channel dropped batches.
//! Those reads do not wait, so they go over the ordinary connection. Lines of a batch
//! at or before its cursor it skips. See `live.rs` for the viewer's side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::job::{Job, JobId};
use crate::store::{LogLine, LogReader, Store};

/// How long one read waits for a new line, and so how often the job's status is read.
pub const WAIT: Duration = Duration::from_secs(1);
/// Lines per read.
pub const BATCH: usize = 200;
/// Batches a viewer may fall behind before it reads from the store itself.
const CAPACITY: usize = 64;

/// Lines of one job's log, in order, coming directly after stream id `after`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub after: String,
    pub lines: Arc<[LogLine]>,
}

/// What a [`Subscription`] brings next.
#[derive(Debug, Clone)]
pub enum Update {
    Lines(Batch),
    /// Batches were dropped: read from the store to catch up.
    Lagged,
    /// The job record, read after this viewer subscribed.
    Job(Arc<Job>),
    /// The reader is gone (it is not while a subscription holds it; kept for safety).
    Closed,
}

/// One reader's read of the job record; `n` numbers the reads in the order they began.
#[derive(Clone)]
struct Polled {
    n: u64,
    job: Option<Arc<Job>>,
}

/// A job's reader as its viewers hold it; dropping the last one stops the reader.
struct Feed {
    lines: broadcast::Sender<Batch>,
    job: watch::Receiver<Polled>,
    /// Reads of the job record begun so far.
    polls: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One viewer's place on a job's feed.
pub struct Subscription {
    lines: broadcast::Receiver<Batch>,
    job: watch::Receiver<Polled>,
    /// Reads of the record begun before this subscription; older answers may predate
    /// the record the viewer already has, so they are not passed on.
    since: u64,
    _feed: Arc<Feed>,
}

impl Subscription {
    /// Waits for the next batch of lines or a newer job record.
    pub async fn next(&mut self) -> Update {
        loop {
            tokio::select! {
                biased;
                batch = self.lines.recv() => {
                    return match batch {
                        Ok(batch) => Update::Lines(batch),
                        Err(broadcast::error::RecvError::Lagged(_)) => Update::Lagged,
                        Err(broadcast::error::RecvError::Closed) => Update::Closed,
                    };
                }
                changed = self.job.changed() => {
                    if changed.is_err() {
                        return Update::Closed;
                    }
                    let polled = self.job.borrow_and_update().clone();
                    if polled.n > self.since
                        && let Some(job) = polled.job
                    {
                        return Update::Job(job);
                    }
                }
            }
        }
    }
}

/// Live-log streams one dashboard session may hold open at once (SPEC §14).
pub const STREAMS_PER_SESSION: usize = 8;

/// The readers of the jobs being watched now, the streams each session holds, and the
/// signal that ends every stream when the server shuts down.
pub struct LogHub {
    store: Arc<dyn Store>,
    feeds: Mutex<HashMap<JobId, Weak<Feed>>>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    closing: tokio_util::sync::CancellationToken,
}

/// One open stream of a session; dropping it (the stream ended or the browser went
/// away) frees its place.
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    session: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().expect("log hub lock");
        if let Some(n) = streams.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.session);
            }
        }
    }
}

impl LogHub {
    pub fn new(store: Arc<dyn Store>) -> Self {
        LogHub {
            store,
            feeds: Mutex::new(HashMap::new()),
            streams: Arc::default(),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// A place for one more stream of `session` (a key that names it, not the cookie),
    /// or `None` when it holds [`STREAMS_PER_SESSION`] already.
    pub fn open_stream(&self, session: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().expect("log hub lock");
        let n = streams.entry(session.to_owned()).or_default();
        if *n >= STREAMS_PER_SESSION {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            streams: self.streams.clone(),
            session: session.to_owned(),
        })
    }

    /// Ends every live stream now and refuses new ones: called when shutdown starts, so
    /// open log pages do not hold up the drain of in-flight requests.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Fires when [`Self::close`] was called.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// Joins the feed of job `id`, starting its reader when nobody watches it yet.
    /// Must be called inside a tokio runtime.
    pub fn subscribe(&self, id: JobId) -> Subscription {
        let mut feeds = self.feeds.lock().expect("log hub lock");
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let feed = match feeds.get(&id).and_then(Weak::upgrade) {
            Some(feed) => feed,
            None => {
                let feed = self.start(id);
                feeds.insert(id, Arc::downgrade(&feed));
                feed
            }
        };
        // Subscribed before the reader can publish anything: its first batch, which
        // says where it starts, reaches the first viewer.
        Subscription {
            lines: feed.lines.subscribe(),
            job: feed.job.clone(),
            since: feed.polls.load(Ordering::SeqCst),
            _feed: feed,
        }
    }

    /// Jobs with a reader running now.
    pub fn readers(&self) -> usize {
        let feeds = self.feeds.lock().expect("log hub lock");
        feeds
            .values()
            .filter(|feed| feed.strong_count() > 0)
            .count()
    }

    fn start(&self, id: JobId) -> Arc<Feed> {
        let (lines, _) = broadcast::channel(CAPACITY);
        let (job_tx, job) = watch::channel(Polled { n: 0, job: None });
        let feed = Arc::new(Feed {
            lines: lines.clone(),
            job,
            polls: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        });
        let reader = Reader {
            store: self.store.clone(),
            id,
            lines,
            job: job_tx,
            polls: feed.polls.clone(),
        };
        let stop = feed.stop.clone();
        tokio::spawn(async move {
            debug!(job = %id, "live log reader started");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = reader.run() => {}
            }
            debug!(job = %id, "live log reader stopped");
        });
        feed
    }
}

/// The reader task of one job.
struct Reader {
    store: Arc<dyn Store>,
    id: JobId,
    lines: broadcast::Sender<Batch>,
    job: watch::Sender<Polled>,
    polls: Arc<AtomicU64>,
}

impl Reader {
    /// Reads until the job is final, then waits to be stopped. Redis errors are waited
    /// out ([`WAIT`]) and retried; the viewers keep their places meanwhile.
    async fn run(self) {
        let mut log = loop {
            match self.store.log_reader(self.id).await {
                Ok(log) => break log,
                Err(e) => self.pause(&e).await,
            }
        };
        let mut cursor = loop {
            match log.last_id().await {
                Ok(id) => break id,
                Err(e) => self.pause(&e).await,
            }
        };
        let _ = self.lines.send(Batch {
            after: cursor.clone(),
            lines: Arc::from(Vec::new()),
        });
        loop {
            if self.poll_job().await {
                break;
            }
            cursor = self.read_lines(log.as_mut(), cursor).await;
        }
        // Final: nothing more is written. The viewers drain the log and leave.
        std::future::pending::<()>().await;
    }

    /// Reads and publishes the job record; whether it is final.
    async fn poll_job(&self) -> bool {
        let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.store.get_job(self.id).await {
            Ok(Some(job)) => {
                let done = job.status.is_final();
                self.job.send_replace(Polled {
                    n,
                    job: Some(Arc::new(job)),
                });
                done
            }
            Ok(None) => false,
            Err(e) => {
                self.pause(&e).await;
                false
            }
        }
    }

    /// Waits for lines after `cursor` and publishes them; the new cursor.
    async fn read_lines(&self, log: &mut dyn LogReader, cursor: String) -> String {
        match log.next(&cursor, BATCH, Some(WAIT)).await {
            Ok(lines) => match lines.last() {
                Some(last) => {
                    let next = last.id.clone();
                    let _ = self.lines.send(Batch {
                        after: cursor,
                        lines: Arc::from(lines),
                    });
                    next
                }
                None => cursor,
            },
            Err(e) => {
                self.pause(&e).await;
                cursor
            }
        }
    }

    async fn pause(&self, e: &crate::store::StoreError) {
        debug!(job = %self.id, error = %e, "live log reader waits for Redis");
        tokio::time::sleep(WAIT).await;
    }
}

/// A stream id (`<ms>-<seq>`) as a pair that sorts like Redis sorts them; `0` (and
/// anything else that is not an id) is the start.
pub fn position(id: &str) -> (u64, u64) {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ms, seq)
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions_sort_like_stream_ids() {
        assert!(position("1700000000000-10") > position("1700000000000-9"));
        assert!(position("1700000000001-0") > position("1700000000000-99"));
        assert_eq!(position("0"), (0, 0));
        assert_eq!(position("0-0"), (0, 0));
    }
}
