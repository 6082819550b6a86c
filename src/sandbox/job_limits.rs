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
use std::path::Path;
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

/// The memory and number of `root` and its descendants, from `/proc`: through each
/// thread's `children` list where the kernel has them (walking only the tree), else
/// through every process's parent.
pub fn usage(root: u32) -> Usage {
    let by_parent = if children_lists() {
        None
    } else {
        Some(parents())
    };
    let mut total = Usage::default();
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        // A process that ended between the listing and now counts for nothing.
        let Some(memory) = memory(pid) else {
            continue;
        };
        total.processes += 1;
        total.memory_bytes += memory;
        match &by_parent {
            None => pending.extend(children(pid)),
            Some(map) => pending.extend(map.get(&pid).into_iter().flatten()),
        }
    }
    total
}

/// Whether `/proc/<pid>/task/<tid>/children` exists (`CONFIG_PROC_CHILDREN`).
fn children_lists() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let me = std::process::id();
        Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    })
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}

/// Every process's children, from each one's parent.
fn parents() -> HashMap<u32, Vec<u32>> {
    let mut by_parent: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok());
            if let Some((pid, ppid)) = pid.and_then(|pid| Some((pid, parent(pid)?))) {
                by_parent.entry(ppid).or_default().push(pid);
            }
        }
    }
    by_parent
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

    #[test]
    fn both_ways_of_finding_children_agree() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let by_parent = parents();
        assert!(by_parent[&me].contains(&child.id()));
        if children_lists() {
            assert!(children(me).contains(&child.id()));
        }
        assert!(usage(me).processes >= 2);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
