//! Limits on a sandbox's processes taken together (SPEC section 15: `REPOBOX_JOB_MEMORY`,
//! `REPOBOX_JOB_PIDS`), where the per-process `setrlimit` limits bound each process
//! alone: four processes of 1.5 GiB each pass a 4 GiB address-space limit, and
//! `RLIMIT_NPROC` does not apply when the runner is root.
//!
//! How: [`exceeded`] samples, every [`SAMPLE_EVERY`], every process descended from the
//! sandbox's first process (bwrap, whose pid namespace holds everything the program
//! starts: no process can leave the tree), and resolves when their anonymous plus
//! shared memory (`RssAnon` + `RssShmem`; file-backed pages are shared with the host and
//! reclaimable) or their number is over the limit. The caller then kills the sandbox.
//! A sampler can be outrun by an allocation faster than its period; a per-job cgroup
//! v2 (`memory.max`, `pids.max`) would not be, and needs a delegated cgroup the
//! runner does not get on every host. `repobox doctor` says which applies.

use std::collections::HashMap;
use std::time::Duration;

/// How often the processes are counted.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The whole sandbox's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Resident anonymous and shared memory of all processes together, in bytes.
    pub memory_bytes: u64,
    /// Processes at once.
    pub processes: u64,
}

impl Default for JobLimits {
    /// SPEC section 15: 4 GiB, 512 processes.
    fn default() -> Self {
        JobLimits {
            memory_bytes: 4 << 30,
            processes: 512,
        }
    }
}

/// What the sampler saw once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub processes: u64,
}

/// Resolves with the reason once the processes under `root` pass a limit; never while
/// they stay within (and pends forever once `root` is gone: the caller waits for the
/// child too).
pub async fn exceeded(root: u32, limits: JobLimits) -> String {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let usage = tokio::task::spawn_blocking(move || usage(root))
            .await
            .unwrap_or_default();
        if usage.memory_bytes > limits.memory_bytes {
            return format!(
                "the job went past its memory limit of {} (REPOBOX_JOB_MEMORY); its processes were stopped",
                bytesize::ByteSize::b(limits.memory_bytes)
            );
        }
        if usage.processes > limits.processes {
            return format!(
                "the job went past its limit of {} processes (REPOBOX_JOB_PIDS); its processes were stopped",
                limits.processes
            );
        }
    }
}

/// [`exceeded`] for a sandbox started as `pid`, if it has limits; pends forever when
/// it has none (or no pid: it was already reaped).
pub async fn watch(pid: Option<u32>, limits: Option<JobLimits>) -> String {
    match (pid, limits) {
        (Some(pid), Some(limits)) => exceeded(pid, limits).await,
        _ => std::future::pending().await,
    }
}

/// The memory and number of `root` and its descendants, from `/proc`.
pub fn usage(root: u32) -> Usage {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Usage::default();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut total = Usage::default();
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        // A process that ended between the listing and now counts for nothing.
        let Some(memory) = memory(pid) else {
            continue;
        };
        total.processes += 1;
        total.memory_bytes += memory;
        if let Some(kids) = children.get(&pid) {
            pending.extend(kids);
        }
    }
    total
}

/// The parent pid, from `/proc/<pid>/stat` (after the command name, which may hold
/// spaces and parentheses: the last `)` ends it).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `RssAnon` + `RssShmem` in bytes (0 for a zombie or a kernel thread).
fn memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut kib = 0;
    for line in status.lines() {
        if let Some(value) = line
            .strip_prefix("RssAnon:")
            .or_else(|| line.strip_prefix("RssShmem:"))
        {
            kib += value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process() {
        let me = std::process::id();
        let usage = usage(me);
        assert!(usage.processes >= 1);
        assert!(usage.memory_bytes > 0);
        assert_eq!(parent(me), Some(std::os::unix::process::parent_id()));
    }
}
