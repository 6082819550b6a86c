//! Crash points (SPEC section 13). Built with the cargo feature `failpoints` (never in a
//! default build), `REPOBOX_FAILPOINTS=<point>=abort[;<point>=abort…]` makes the process
//! abort (SIGABRT, exit 134: no cleanup, like SIGKILL) the first time it passes one of
//! the named points. Without the feature [`hit`] compiles to nothing.
//!
//! The points, in pipeline order. At `ack:after_comment` the progress comment exists on
//! the forge but its id is not recorded and the job is not yet in `jobs:stream`.

/// Every crash point, in pipeline order.
pub const POINTS: [&str; 8] = [
    "ack:after_comment",
    "ack:after_dispatch",
    "runner:after_claim",
    "runner:after_comment",
    "runner:after_commit",
    "runner:after_push",
    "runner:after_pr",
    "runner:before_final",
];

/// Passes crash point `point` (one of [`POINTS`]).
#[inline]
pub fn hit(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    #[cfg(feature = "failpoints")]
    armed::hit(point);
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashSet;
    use std::sync::OnceLock;

    fn armed() -> &'static HashSet<String> {
        static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var("REPOBOX_FAILPOINTS").unwrap_or_default();
            let mut armed = HashSet::new();
            for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                match item.split_once('=') {
                    Some((point, "abort")) if super::POINTS.contains(&point.trim()) => {
                        armed.insert(point.trim().to_owned());
                    }
                    _ => eprintln!(
                        "REPOBOX_FAILPOINTS: ignoring `{item}` (expected <point>=abort with a point of: {})",
                        super::POINTS.join(", ")
                    ),
                }
            }
            armed
        })
    }

    pub(super) fn hit(point: &str) {
        if armed().contains(point) {
            eprintln!("repobox: crash point {point} reached: aborting");
            std::process::abort();
        }
    }
}
