//! The sandbox every agent command runs in.
//!
//! Why: the agent executes code chosen by a model that reads untrusted issue text
//! (SPEC §7, §10). It may change the work tree and nothing else: no runner secrets, no
//! other jobs' trees, no network but through the egress proxy ([`network`]).
//! [`SandboxSpec::command`] builds a bubblewrap (`bwrap`) invocation with fresh
//! user/pid/ipc/uts/cgroup/network namespaces whose root is an empty tmpfs holding only the system directories
//! (read-only), a short allow-list of `/etc`, and the binds named in the spec.
//! `/tmp` (1 GiB) and `/dev/shm` (64 MiB) are size-capped tmpfs mounts, and a seccomp
//! filter ([`seccomp`]) refuses the calls that break out of namespaces or widen the
//! kernel's attack surface.
//!
//! Two choices that differ from the obvious ones:
//! - The environment is cleared on the `bwrap` process itself (`env_clear`) instead of
//!   with `--clearenv`/`--setenv`: bwrap stays inside the sandbox as pid 1, so the
//!   sandbox can read its `/proc/1/environ`, and `--setenv` would put the values (the
//!   prompt, an agent's API key) on a command line that every host user can read.
//! - Resource limits are set by util-linux `prlimit(1)` wrapping the program, not by
//!   `pre_exec`: the crate forbids unsafe code, and this way the limits are in force
//!   before the program's first instruction, with no race. Limits are per process
//!   (wall time is the runner's job, through the cancel token).
//!
//! Inside, the program runs as uid/gid 65534, which maps to the runner's own uid
//! outside. File modes therefore protect nothing that is visible: only what is bound
//! matters, which is why `/` is never bound whole. `RLIMIT_NPROC` is not enforced by
//! the kernel when the runner runs as root (uid 0 is exempt); run it as its own user.

pub mod job_limits;
pub mod network;
pub mod seccomp;

pub use crate::config::SandboxKind;

use command_fds::{CommandFdExt, FdMapping};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

/// The uid and gid inside the sandbox: `nobody`, present in every passwd file.
const SANDBOX_ID: &str = "65534";
/// `PATH` inside the bwrap sandbox (and the one used to find `bwrap`).
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BWRAP: &str = "bwrap";
/// util-linux, Priority: required on Debian; resolved through `PATH`.
const PRLIMIT: &str = "prlimit";
/// Top-level system paths bound read-only (or recreated as symlinks on merged-/usr
/// systems) when they exist.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// What programs need from `/etc`. An allow-list on purpose: `/etc` also holds the
/// runner's own secrets (`/etc/repobox/repobox.env`), TLS private keys and shadow files.
const ETC_FILES: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "gitconfig",
    "group",
    "host.conf",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "profile",
    "protocols",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "terminfo",
    "timezone",
];
/// `/etc` entries bound by name prefix (language runtimes' configuration).
const ETC_PREFIXES: &[&str] = &["python3", "java-", "perl"];
/// Largest size of the sandbox's `/tmp` (a tmpfs, so memory; SPEC section 15: 1 GiB);
/// bulk belongs in the scratch dir.
const TMP_MAX_BYTES: u64 = 1 << 30;
/// Size of the sandbox's `/dev/shm` (SPEC section 15: 64 MiB). Without it, `/dev/shm`
/// would be a tmpfs of half the host's memory in every sandbox.
const SHM_BYTES: u64 = 64 << 20;
/// The descriptor number bwrap reads the seccomp filter from.
const SECCOMP_FD: i32 = 3;
/// How long `check` lets the trial sandbox run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-process resource limits, applied with `setrlimit` (via `prlimit(1)`) to the
/// program and inherited by everything it starts. `None` leaves the limit as inherited.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `RLIMIT_CPU`: CPU seconds per process; the kernel sends SIGXCPU, then SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_AS`: address space per process, in bytes; allocations beyond it fail.
    /// Also caps the size of the sandbox's `/tmp` tmpfs (at most 1 GiB), which lives in
    /// memory.
    pub memory_bytes: Option<u64>,
    /// `RLIMIT_NPROC`: processes of the sandbox user (not enforced for uid 0).
    pub max_processes: Option<u64>,
    /// `RLIMIT_FSIZE`: largest file a process may write, in bytes (SIGXFSZ beyond).
    pub max_file_bytes: Option<u64>,
    /// Memory and processes of the whole sandbox together ([`job_limits`]), watched by
    /// whoever runs the sandbox.
    pub job: Option<job_limits::JobLimits>,
}

impl Default for Limits {
    /// 30 CPU minutes, 16 GiB of address space, 512 processes, 1 GiB files; 4 GiB and
    /// 512 processes for the whole sandbox.
    ///
    /// The address-space limit is virtual memory, not resident memory: Node's V8
    /// reserves about 10 GiB for a WebAssembly memory and fails under 8 GiB, and
    /// Claude Code (a likely `command` agent) runs on Node.
    fn default() -> Self {
        Limits {
            cpu_seconds: Some(30 * 60),
            memory_bytes: Some(16 << 30),
            max_processes: Some(512),
            max_file_bytes: Some(1 << 30),
            job: Some(job_limits::JobLimits::default()),
        }
    }
}

impl Limits {
    /// `prlimit` options for these limits; core dumps are always off (they would land
    /// in the work tree, the sandbox's cwd, and end up committed).
    fn prlimit_args(&self) -> Vec<String> {
        let mut args = vec!["--core=0".to_owned()];
        let pairs = [
            ("--cpu", self.cpu_seconds),
            ("--as", self.memory_bytes),
            ("--nproc", self.max_processes),
            ("--fsize", self.max_file_bytes),
        ];
        for (flag, value) in pairs {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        args
    }
}

/// How a sandbox reaches its egress proxy ([`network::proxy::EgressProxy`]).
#[derive(Debug, Clone)]
pub struct ProxyBinding {
    /// The proxy's Unix socket on the host.
    pub socket: PathBuf,
    /// The `repobox` binary, run inside as `repobox sandbox-forward`.
    pub forwarder: PathBuf,
}

/// Where the proxy's socket and the forwarder appear inside the sandbox.
const INSIDE_SOCKET: &str = "/run/repobox/proxy.sock";
const INSIDE_FORWARDER: &str = "/run/repobox/repobox";

/// Everything needed to run one program in a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Which isolation to use.
    pub kind: SandboxKind,
    /// Bound read-write at the same path; the working directory.
    pub work_tree: PathBuf,
    /// Extra host paths bound read-only at the same path (e.g. the work tree's git dir).
    /// Bound after the work tree, so a path inside it becomes read-only.
    pub read_only: Vec<PathBuf>,
    /// Extra host dirs bound read-write at the same path (e.g. the per-job scratch
    /// dir). The first one is also `HOME`.
    pub writable: Vec<PathBuf>,
    /// The sandbox always has its own network namespace with only a loopback
    /// interface. With a proxy, the egress proxy's socket and the forwarder are bound
    /// in, the program runs under the forwarder, and the proxy variables point at it
    /// ([`network`]). Ignored by [`SandboxKind::None`], which has no network policy.
    pub proxy: Option<ProxyBinding>,
    /// The only variables inside besides `PATH`, `HOME`, `LANG=C.UTF-8` and
    /// `TERM=dumb`; an entry with one of those names overrides the default.
    pub env: Vec<(String, String)>,
    /// Per-process resource limits.
    pub limits: Limits,
}

impl SandboxSpec {
    /// A command that runs `program args...` inside the sandbox.
    ///
    /// Bwrap: `bwrap <flags> -- prlimit <limits> -- program args`. None: `prlimit
    /// <limits> -- program args` with the environment cleared to the same allow-list
    /// (`PATH` is the runner's) and cwd = work tree. Both: own process group (so
    /// [`kill_tree`] reaches everything), `kill_on_drop`, stdin/stdout/stderr piped.
    ///
    /// `bwrap --die-with-parent` ties the sandbox to the *thread* that spawns it: spawn
    /// from a runtime worker or the task's own thread, not inside `spawn_blocking`.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match self.kind {
            SandboxKind::Bwrap => {
                let mut cmd = Command::new(BWRAP);
                if let Some(filter) = seccomp_pipe() {
                    // A fresh descriptor number in the child, so no mapping can clash.
                    let mapped = cmd.fd_mappings(vec![FdMapping {
                        parent_fd: filter,
                        child_fd: SECCOMP_FD,
                    }]);
                    if mapped.is_ok() {
                        cmd.args(["--seccomp".to_owned(), SECCOMP_FD.to_string()]);
                    }
                }
                cmd.args(self.bwrap_args());
                cmd.arg("--");
                if self.proxy.is_some() {
                    cmd.args([
                        INSIDE_FORWARDER,
                        network::forward::SUBCOMMAND,
                        INSIDE_SOCKET,
                    ]);
                    cmd.arg(network::forward::PORT.to_string()).arg("--");
                }
                cmd.arg(PRLIMIT);
                // bwrap itself needs no particular cwd; don't pin the runner's.
                cmd.current_dir("/");
                cmd
            }
            SandboxKind::None => {
                let mut cmd = Command::new(PRLIMIT);
                cmd.current_dir(&self.work_tree);
                cmd
            }
        };
        cmd.args(self.limits.prlimit_args())
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .envs(self.environment())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// The complete environment inside the sandbox.
    fn environment(&self) -> Vec<(String, String)> {
        let path = match self.kind {
            SandboxKind::Bwrap => SANDBOX_PATH.to_owned(),
            // Without isolation the host's programs are where the host says.
            SandboxKind::None => std::env::var("PATH").unwrap_or_else(|_| SANDBOX_PATH.to_owned()),
        };
        let home = match (self.writable.first(), self.kind) {
            (Some(dir), _) => absolute(dir),
            (None, SandboxKind::Bwrap) => PathBuf::from("/tmp"),
            (None, SandboxKind::None) => std::env::temp_dir(),
        };
        let mut env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), home.to_string_lossy().into_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("TERM".to_owned(), "dumb".to_owned()),
        ];
        if self.proxy.is_some() && self.kind == SandboxKind::Bwrap {
            let proxy = format!("http://127.0.0.1:{}", network::forward::PORT);
            for name in [
                "http_proxy",
                "https_proxy",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
            ] {
                env.push((name.to_owned(), proxy.clone()));
            }
            for name in ["no_proxy", "NO_PROXY"] {
                env.push((name.to_owned(), "localhost,127.0.0.1,::1".to_owned()));
            }
        }
        // Later entries win in `Command::envs`, so the spec's overrides the defaults.
        env.extend(self.env.iter().cloned());
        env
    }

    /// bwrap's options, in mount order: later mounts cover earlier ones.
    fn bwrap_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&[
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            // No nested user namespaces: they are the kernel's widest attack surface.
            "--disable-userns",
            "--die-with-parent",
            // A new session: the program cannot push input to the runner's terminal
            // (TIOCSTI).
            "--new-session",
            "--cap-drop",
            "ALL",
            "--uid",
            SANDBOX_ID,
            "--gid",
            SANDBOX_ID,
            "--hostname",
            "repobox",
            // Always: the host's loopback (Redis, the runner's ports) and its routes
            // stay outside. The way out, when a phase has one, is the proxy socket.
            "--unshare-net",
        ]);
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        args.push("--symlink".into());
                        args.push(target.into_os_string());
                        args.push(path.into());
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    args.extend(["--ro-bind".into(), path.into(), path.into()]);
                }
                _ => {}
            }
        }
        args.extend(["--proc", "/proc", "--dev", "/dev"].map(OsString::from));
        args.extend(["--size".into(), SHM_BYTES.to_string().into()]);
        args.extend(["--tmpfs", "/dev/shm"].map(OsString::from));
        args.extend(["--dir", "/etc"].map(OsString::from));
        let mut etc: Vec<PathBuf> = ETC_FILES
            .iter()
            .map(|name| Path::new("/etc").join(name))
            .collect();
        if let Ok(entries) = std::fs::read_dir("/etc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if ETC_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
                    etc.push(entry.path());
                }
            }
        }
        // No resolv.conf: names are resolved by the proxy, outside.
        for path in etc {
            args.extend([
                "--ro-bind-try".into(),
                path.clone().into_os_string(),
                path.into_os_string(),
            ]);
        }
        // /tmp before the binds: the work tree or scratch dir may live under /tmp.
        // /tmp lives in RAM: bounded, and below the address-space limit.
        let tmp_bytes = self
            .limits
            .memory_bytes
            .map_or(TMP_MAX_BYTES, |m| m.min(TMP_MAX_BYTES));
        args.extend(["--size".into(), tmp_bytes.to_string().into()]);
        args.extend(["--tmpfs", "/tmp"].map(OsString::from));
        let work_tree = absolute(&self.work_tree);
        args.extend([
            "--bind".into(),
            work_tree.clone().into_os_string(),
            work_tree.clone().into_os_string(),
        ]);
        for path in &self.read_only {
            let path = absolute(path);
            args.extend([
                "--ro-bind".into(),
                path.clone().into_os_string(),
                path.into_os_string(),
            ]);
        }
        for path in &self.writable {
            let path = absolute(path);
            args.extend([
                "--bind".into(),
                path.clone().into_os_string(),
                path.into_os_string(),
            ]);
        }
        if let Some(proxy) = &self.proxy {
            args.extend([
                "--ro-bind".into(),
                absolute(&proxy.forwarder).into_os_string(),
                INSIDE_FORWARDER.into(),
                "--bind".into(),
                absolute(&proxy.socket).into_os_string(),
                INSIDE_SOCKET.into(),
            ]);
        }
        // The tmpfs root itself (where /etc and mount points were made) read-only.
        args.extend(["--remount-ro", "/", "--chdir"].map(OsString::from));
        args.push(work_tree.into_os_string());
        args
    }
}

/// A pipe holding the seccomp filter, its read end for bwrap (`--seccomp`). The filter
/// is a few hundred bytes, far below a pipe's buffer, so writing cannot block. `None`
/// when there is no filter for this architecture or no pipe could be made.
fn seccomp_pipe() -> Option<std::os::fd::OwnedFd> {
    use std::io::Write;
    let program = seccomp::program()?;
    let (reader, mut writer) = std::io::pipe().ok()?;
    writer.write_all(program).ok()?;
    drop(writer);
    Some(reader.into())
}

/// The path made absolute against the runner's cwd, without resolving symlinks: binds
/// keep the caller's spelling so paths the runner computes are valid inside.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// For `repobox doctor`: `Ok(description)` when the sandbox works, `Err(hint)` if not.
///
/// Bwrap runs `true` in a sandbox built exactly like a job's (same flags and limits,
/// a throwaway work tree), so a kernel or container that forbids any part of it shows
/// up here rather than in the first job.
pub async fn check(kind: SandboxKind) -> Result<String, String> {
    match kind {
        SandboxKind::None => Ok("none (no isolation)".to_owned()),
        SandboxKind::Bwrap => check_bwrap().await,
    }
}

async fn check_bwrap() -> Result<String, String> {
    let version = Command::new(BWRAP)
        .arg("--version")
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => {
                "bwrap not found: apt-get install bubblewrap".to_owned()
            }
            _ => format!("bwrap could not be started: {err}"),
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();

    let work_tree = trial_dir("repobox-doctor")?;
    let spec = trial_spec(&work_tree, None);
    let result = tokio::time::timeout(CHECK_TIMEOUT, spec.command("true", &[]).output()).await;
    // Best effort: the directory is empty unless bwrap misbehaved.
    let _ = std::fs::remove_dir(&work_tree);
    match result {
        Err(_) => Err(format!(
            "a trial sandbox did not finish within {CHECK_TIMEOUT:?}"
        )),
        Ok(Err(err)) => Err(format!("bwrap could not be started: {err}")),
        Ok(Ok(out)) if out.status.success() => {
            let filter = match seccomp::program() {
                Some(_) => format!(
                    "seccomp filter ({} calls refused)",
                    seccomp::refused_count()
                ),
                None => format!("no seccomp filter for {}", std::env::consts::ARCH),
            };
            Ok(format!(
                "{version}: user, pid, ipc, uts, cgroup and network namespaces; uid {SANDBOX_ID}; {filter}; /tmp 1 GiB, /dev/shm 64 MiB"
            ))
        }
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim();
            let hint = if stderr.contains("prlimit") {
                " (prlimit comes with util-linux)"
            } else if stderr.contains("namespace") || stderr.contains("Operation not permitted") {
                " (user namespaces must be allowed: sysctl kernel.unprivileged_userns_clone=1, no RestrictNamespaces= in the unit)"
            } else {
                ""
            };
            Err(format!("bwrap failed ({}): {stderr}{hint}", out.status))
        }
    }
}

/// A fresh empty directory for a doctor's trial sandbox, `<temp>/<stem>-<pid>-<nanos>`.
fn trial_dir(stem: &str) -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("{stem}-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create a trial directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A bubblewrap sandbox on `dir` with default limits and nothing else bound in.
fn trial_spec(dir: &Path, proxy: Option<ProxyBinding>) -> SandboxSpec {
    SandboxSpec {
        kind: SandboxKind::Bwrap,
        work_tree: dir.to_owned(),
        read_only: Vec::new(),
        writable: Vec::new(),
        proxy,
        env: Vec::new(),
        limits: Limits::default(),
    }
}

/// For `repobox doctor`: runs a trial sandbox behind an egress proxy in `mode` (with an
/// empty allowlist) and asks it, through the forwarder, for a host it must refuse.
/// `Ok` when the proxy's `403` came back: socket, forwarder and proxy all work.
pub async fn check_network(mode: network::NetworkMode, forwarder: &Path) -> Result<String, String> {
    use network::proxy::{EgressProxy, OnRefusal};
    let dir = trial_dir("repobox-net")?;
    let socket = dir.join("p.sock");
    let on_refusal: OnRefusal = std::sync::Arc::new(|_| {});
    let policy = network::Policy::new(mode, network::Allowlist::default());
    let result = match EgressProxy::start(&socket, policy, on_refusal) {
        Err(e) => Err(format!("cannot start the egress proxy: {e}")),
        Ok(proxy) => {
            let binding = ProxyBinding {
                socket: socket.clone(),
                forwarder: forwarder.to_owned(),
            };
            let spec = trial_spec(&dir, Some(binding));
            let probe = format!(
                "exec 3<>/dev/tcp/127.0.0.1/{} && printf 'CONNECT repobox-doctor.invalid:443 HTTP/1.1\\r\\n\\r\\n' >&3 && head -c 12 <&3",
                network::forward::PORT
            );
            let run = spec.command("bash", &["-c", &probe]).output();
            let out = tokio::time::timeout(CHECK_TIMEOUT, run).await;
            drop(proxy);
            match out {
                Err(_) => Err(format!(
                    "a trial sandbox did not finish within {CHECK_TIMEOUT:?}"
                )),
                Ok(Err(e)) => Err(format!("bwrap could not be started: {e}")),
                Ok(Ok(out)) if String::from_utf8_lossy(&out.stdout) == "HTTP/1.1 403" => Ok(
                    "a trial sandbox reached the egress proxy and was refused as it should be"
                        .to_owned(),
                ),
                Ok(Ok(out)) => Err(format!(
                    "a trial sandbox could not reach the egress proxy ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Kill the child's whole process group with SIGKILL (cancel, timeout).
///
/// With bwrap this reaches bwrap and the sandbox's pid 1, and the kernel then kills
/// everything else in the sandbox's pid namespace, including processes that started
/// their own session. Without isolation, such processes escape the group. Does nothing
/// once the child has been reaped.
pub fn kill_tree(child: &Child) {
    if let Some(pid) = child.id() {
        kill_group(pid);
    }
}

/// SIGKILL to process group `pgid`; errors (typically "no such process") are ignored.
pub(crate) fn kill_group(pgid: u32) {
    let pid = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
