//! Where agents put job log lines: a bounded channel with a rate limit (SPEC section
//! 15), so a program printing without end (`yes`) costs the runner neither memory nor
//! Redis writes beyond a fixed amount.
//!
//! Per one-second window at most `per_second` lines are kept; the rest, and any line
//! that finds the channel full (the writer is behind), are dropped and counted. The
//! count becomes one "N lines dropped" line per window at most, written by the first
//! line of the next window or by the log's writer ([`LogSink::take_notice`]), which
//! asks every second and once more when the log closes, so the count is never lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};

const WINDOW: Duration = Duration::from_secs(1);

/// Sends job log lines; cheap to clone. Sending never waits.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<String>,
    limiter: Limiter,
}

/// The drop counter shared by every clone of a sink and the log's writer.
#[derive(Clone)]
pub struct Limiter {
    per_second: u32,
    window: Arc<Mutex<Window>>,
}

struct Window {
    started: Instant,
    kept: u32,
    dropped: u64,
}

/// The receiver was dropped: nobody reads the log any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl LogSink {
    /// A sink keeping at most `per_second` lines a second, and its receiver. The
    /// channel holds two seconds' worth (at least 1,024, at most 65,536 lines).
    pub fn channel(per_second: u32) -> (LogSink, mpsc::Receiver<String>) {
        let capacity = (per_second.saturating_mul(2)).clamp(1024, 65_536) as usize;
        let (tx, rx) = mpsc::channel(capacity);
        let limiter = Limiter {
            per_second,
            window: Arc::new(Mutex::new(Window {
                started: Instant::now(),
                kept: 0,
                dropped: 0,
            })),
        };
        (LogSink { tx, limiter }, rx)
    }

    /// Queues `line`, or drops and counts it (over the rate, or the channel is full).
    pub fn send(&self, line: impl Into<String>) -> Result<(), Closed> {
        if self.tx.is_closed() {
            return Err(Closed);
        }
        let mut window = self.limiter.lock();
        let now = Instant::now();
        if now.duration_since(window.started) >= WINDOW {
            if window.dropped > 0 {
                match self.tx.try_send(notice(window.dropped)) {
                    Ok(()) => window.dropped = 0,
                    // Still full: the count goes on and is written later.
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return Err(Closed),
                }
            }
            window.started = now;
            window.kept = 0;
        }
        if window.kept >= self.limiter.per_second {
            window.dropped += 1;
            return Ok(());
        }
        match self.tx.try_send(line.into()) {
            Ok(()) => {
                window.kept += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                window.dropped += 1;
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// The drop counter, for the log's writer (it holds no sender, so the channel
    /// still closes when the last sink is gone).
    pub fn limiter(&self) -> Limiter {
        self.limiter.clone()
    }
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The "N lines dropped" line when lines were dropped and the window they were
    /// dropped in is over (or `now_anyway`, when the log closes); the count restarts.
    pub fn take_notice(&self, now_anyway: bool) -> Option<String> {
        let mut window = self.lock();
        let over = window.started.elapsed() >= WINDOW;
        if window.dropped == 0 || !(over || now_anyway) {
            return None;
        }
        let text = notice(window.dropped);
        window.dropped = 0;
        if over {
            window.started = Instant::now();
            window.kept = 0;
        }
        Some(text)
    }
}

fn notice(dropped: u64) -> String {
    let lines = if dropped == 1 { "line" } else { "lines" };
    format!("==> {dropped} {lines} dropped (the log keeps at most the configured lines per second)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_rate_are_dropped_and_counted_once() {
        let (sink, mut rx) = LogSink::channel(10);
        for i in 0..1000 {
            sink.send(format!("line {i}")).unwrap();
        }
        let mut kept = Vec::new();
        while let Ok(line) = rx.try_recv() {
            kept.push(line);
        }
        assert_eq!(kept.len(), 10, "{kept:?}");
        assert_eq!(kept[0], "line 0");
        let limiter = sink.limiter();
        let notice = limiter.take_notice(true).unwrap();
        assert!(notice.starts_with("==> 990 lines dropped"), "{notice}");
        assert_eq!(limiter.take_notice(true), None, "counted once");
    }

    #[test]
    fn a_full_channel_drops_instead_of_growing() {
        let (sink, mut rx) = LogSink::channel(u32::MAX);
        for i in 0..100_000 {
            sink.send(format!("line {i}")).unwrap();
        }
        let mut kept = 0;
        while rx.try_recv().is_ok() {
            kept += 1;
        }
        assert_eq!(kept, 65_536);
        let notice = sink.limiter().take_notice(true).unwrap();
        assert!(notice.starts_with("==> 34464 lines dropped"), "{notice}");
    }

    #[test]
    fn a_closed_log_is_reported() {
        let (sink, rx) = LogSink::channel(10);
        drop(rx);
        assert_eq!(sink.send("x"), Err(Closed));
    }
}
