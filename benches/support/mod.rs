//! Helpers the benchmarks share: settings from the environment and CPU accounting of
//! processes and of the Redis server.
#![allow(dead_code)]

use std::str::FromStr;

/// `name` parsed from the environment, or `default` when unset.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not valid")),
        Err(_) => Ok(default),
    }
}

/// CPU seconds of a process from `/proc/<pid>/stat` (Linux; 100 clock ticks per second):
/// utime + stime, plus cutime + cstime (its waited-for children: bwrap and the agent for
/// a runner, `git http-backend` for a test server) when `children` is set.
pub fn process_cpu_seconds(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name, field 3 (state) comes first.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let last = if children { 14 } else { 12 };
    let ticks = (11..=last)
        .map(|i| fields.get(i)?.parse::<i64>().ok())
        .sum::<Option<i64>>()?;
    Some(ticks as f64 / 100.0)
}

/// `used_cpu_user + used_cpu_sys` of the Redis server.
pub async fn redis_cpu_seconds(redis: &mut redis::aio::MultiplexedConnection) -> Option<f64> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(redis)
        .await
        .ok()?;
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// Resident memory of a process from `/proc/<pid>/status`, in bytes: now (`VmRSS`) and
/// its peak so far (`VmHWM`, the high-water mark the kernel keeps).
pub fn process_rss_bytes(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let kib = l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kib.parse::<u64>().ok().map(|k| k * 1024)
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bytes as MB (10^6), one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
