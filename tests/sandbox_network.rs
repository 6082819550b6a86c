//! The sandbox's network (SPEC section 15), tried from inside real bubblewrap sandboxes:
//! the host's loopback (a test server, Redis) is out of reach in every mode and under
//! every spelling, only an explicit `ip:port` entry reaches the host, the proxy socket
//! speaks nothing but proxy requests, there is no DNS and no raw socket, and a job's
//! refusals reach its log, its final comment and its pull request.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::world::{Setup, world};
use repobox::job::JobStatus;
use repobox::sandbox::network::proxy::{EgressProxy, OnRefusal};
use repobox::sandbox::network::{Allowlist, NetworkMode, Policy, Refusal};
use repobox::sandbox::{Limits, ProxyBinding, SandboxKind, SandboxSpec};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUND: Duration = Duration::from_secs(60);

/// A host HTTP server on all interfaces that answers every request with `hello <path>`
/// and records the paths it was asked for.
struct HostServer {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl HostServer {
    async fn start() -> HostServer {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("?").to_owned();
                    seen.lock().unwrap().push(path.clone());
                    let body = format!("hello {path}\n");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        HostServer { port, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// A sandbox (work tree and home in a temp dir) and, unless the mode is `none`, its
/// egress proxy.
struct Box_ {
    _dir: TempDir,
    spec: SandboxSpec,
    proxy: Option<EgressProxy>,
    refused: Arc<Mutex<Vec<Refusal>>>,
}

impl Box_ {
    fn new(mode: NetworkMode, allow: &str) -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let work_tree = dir.path().join("wt");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&work_tree).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let mut spec = SandboxSpec {
            kind: SandboxKind::Bwrap,
            work_tree,
            read_only: Vec::new(),
            writable: vec![home],
            proxy: None,
            env: Vec::new(),
            limits: Limits::default(),
        };
        let mut proxy = None;
        if mode != NetworkMode::None {
            let socket = dir.path().join("proxy.sock");
            let seen = refused.clone();
            let on_refusal: OnRefusal = Arc::new(move |r: &Refusal| {
                seen.lock().unwrap().push(r.clone());
            });
            let policy = Policy::new(mode, Allowlist::parse(allow).unwrap());
            proxy = Some(EgressProxy::start(&socket, policy, on_refusal).unwrap());
            spec.proxy = Some(ProxyBinding {
                socket,
                forwarder: PathBuf::from(env!("CARGO_BIN_EXE_repobox")),
            });
        }
        Box_ {
            _dir: dir,
            spec,
            proxy,
            refused,
        }
    }

    /// Runs `script` under `sh -c`; returns (exit code, stdout + stderr).
    async fn sh(&self, script: &str) -> (i32, String) {
        let out = common::sandboxed_sh(&self.spec, script, BOUND).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().unwrap().clone()
    }
}

/// One non-loopback IPv4 address of this machine, when it has one.
fn host_ipv4() -> Option<IpAddr> {
    repobox::sandbox::network::host_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

/// Every spelling of "this machine" a sandbox might try, with `port`.
fn host_targets(port: u16) -> Vec<String> {
    let mut targets: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "0.0.0.0",
        "127.1.2.3",
    ]
    .iter()
    .map(|h| format!("{h}:{port}"))
    .collect();
    if let Some(ip) = host_ipv4() {
        targets.push(format!("{ip}:{port}"));
    }
    targets.push("169.254.169.254:80".into());
    targets.push("127.0.0.1:6379".into());
    targets
}

#[tokio::test]
async fn the_hosts_loopback_is_out_of_reach_in_every_mode() {
    let server = HostServer::start().await;
    for mode in [NetworkMode::None, NetworkMode::Allowlist, NetworkMode::Open] {
        // Names and patterns that would match, if names could reach the host.
        let sandbox = Box_::new(mode, "localhost,*.localhost,169.254.169.254");
        for target in host_targets(server.port) {
            let (host, port) = target.rsplit_once(':').unwrap();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            // Directly: the sandbox's loopback is its own, and it has no other route.
            let (code, text) = sandbox
                .sh(&format!("exec 3<>/dev/tcp/{host}/{port} && echo CONNECTED"))
                .await;
            assert!(
                code != 0 && !text.contains("CONNECTED"),
                "{mode}: direct {target} connected: {text}"
            );
            // Through the proxy, plain and CONNECT: refused, whatever the spelling.
            for tunnel in ["", "-p"] {
                let (_, text) = sandbox
                    .sh(&format!(
                        "curl -sS {tunnel} --noproxy '' --max-time 20 -o /dev/null -w 'code=%{{http_code}}' http://{target}/leak"
                    ))
                    .await;
                assert!(
                    !text.contains("code=200"),
                    "{mode}: {target} {tunnel} reached through the proxy: {text}"
                );
            }
        }
        if mode != NetworkMode::None {
            let refused = sandbox.refused();
            assert!(
                refused.len() >= 2 * host_targets(server.port).len(),
                "{mode}: every attempt is a refusal: {refused:?}"
            );
        }
    }
    assert!(
        server.paths().is_empty(),
        "requests reached the host: {:?}",
        server.paths()
    );
}

#[tokio::test]
async fn an_explicit_ip_port_entry_reaches_the_host_through_the_proxy() {
    let server = HostServer::start().await;
    let sandbox = Box_::new(
        NetworkMode::Allowlist,
        &format!("127.0.0.1:{}", server.port),
    );
    // The proxy variables are set inside; 127.0.0.1 is in no_proxy (the sandbox's own),
    // so a client asking for the host's loopback must not skip the proxy.
    let (code, text) = sandbox
        .sh("echo \"$http_proxy $HTTPS_PROXY $no_proxy\"")
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        text.trim(),
        "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1"
    );
    let (code, text) = sandbox
        .sh(&format!(
            "curl -sS --noproxy '' http://127.0.0.1:{0}/plain && curl -sS -p --noproxy '' http://127.0.0.1:{0}/tunnel",
            server.port
        ))
        .await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(text, "hello /plain\nhello /tunnel\n");
    assert_eq!(server.paths(), ["/plain", "/tunnel"]);
    // Another port of the same address is not the entry.
    let (_, text) = sandbox
        .sh("curl -sS --noproxy '' http://127.0.0.1:6379/ -w ' code=%{http_code}'")
        .await;
    assert!(text.contains("code=403"), "{text}");
    assert!(text.contains("repobox: refused 127.0.0.1:6379"), "{text}");
    // A name is refused before it is resolved; the refusal names host, port, reason.
    let (_, text) = sandbox
        .sh("curl -sS http://blocked.example/ -w ' code=%{http_code}'")
        .await;
    assert!(text.contains("code=403"), "{text}");
    let refused = sandbox.refused();
    let last = refused.last().expect("refusals are reported");
    assert_eq!(
        (last.host.as_str(), last.port, last.reason.as_str()),
        ("blocked.example", 80, "not in the allowlist")
    );
}

#[tokio::test]
async fn the_proxy_socket_speaks_only_proxy_requests() {
    let sandbox = Box_::new(NetworkMode::Open, "");
    let socket = sandbox.proxy.as_ref().unwrap().socket().to_owned();
    for junk in [
        &b"GET /etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream.write_all(junk).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(BOUND, stream.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(junk)
        );
    }
    // A head that never ends is cut off, not buffered without bound.
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let big = vec![b'a'; 64 * 1024];
    let _ = stream.write_all(&big).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

#[tokio::test]
async fn a_sandbox_has_no_dns_no_host_sockets_and_no_raw_sockets() {
    let sandbox = Box_::new(NetworkMode::Open, "");
    let (code, text) = sandbox
        .sh("test ! -e /etc/resolv.conf && echo no-resolv")
        .await;
    assert_eq!((code, text.trim()), (0, "no-resolv"));
    let (code, text) = sandbox.sh("getent hosts example.com; echo rc=$?").await;
    assert!(
        code == 0 && text.contains("rc=2"),
        "a name resolved inside: {text}"
    );
    // The host's Redis listens on 6379 (0x18EB); the sandbox's socket table is its own.
    let redis = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    let (_, text) = sandbox.sh("cat /proc/net/tcp /proc/net/tcp6").await;
    if redis {
        assert!(
            !text.contains(":18EB"),
            "the host's sockets are visible: {text}"
        );
    }
    assert!(
        text.contains(":0C38"),
        "the forwarder's 3128 is there: {text}"
    );
    let (_, text) = sandbox
        .sh(
            "python3 -c 'import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n print(\"RAW\")\nexcept OSError as e:\n print(\"errno\", e.errno)'",
        )
        .await;
    assert_eq!(text.trim(), "errno 1", "a raw socket opened: {text}");
    // Abstract Unix sockets belong to the network namespace: the host's are not there.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("repobox-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let (_, text) = sandbox
        .sh(&format!(
            "python3 -c 'import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n s.connect(\"\\0{name}\")\n print(\"CONNECTED\")\nexcept OSError as e:\n print(\"errno\", e.errno)'"
        ))
        .await;
    assert_eq!(
        text.trim(),
        "errno 111",
        "the host's abstract socket: {text}"
    );
    abstract_listener.set_nonblocking(true).unwrap();
    assert!(abstract_listener.accept().is_err());
    let (_, text) = sandbox
        .sh("ls /sys/class/net 2>/dev/null; cat /proc/net/dev")
        .await;
    assert!(!text.contains("eth"), "a host interface is inside: {text}");
}

#[tokio::test]
async fn refusals_are_reported_and_modes_only_narrow_in_a_job() {
    let server = HostServer::start().await;
    let allowed = format!("127.0.0.1:{}", server.port);
    let yml = format!(
        "setup:\n  - curl -sS --noproxy '' -o \"$HOME/fetched\" http://{allowed}/pkg\n  - curl -sS -o /dev/null http://blocked.example/x || true\n"
    );
    // The agent phase is offline: the same request fails and nothing reaches the host.
    let agent = format!(
        "test -s \"$HOME/fetched\" && cat \"$HOME/fetched\" >> README.md; curl -sS --noproxy '' --max-time 10 http://{allowed}/agent >> README.md || echo offline >> README.md"
    );
    let w = world(Setup {
        repobox_yml: Some(&yml),
        agent: &agent,
        ..Setup::default()
    })
    .await;
    // The admin setting extends the (empty) REPOBOX_SANDBOX_ALLOW.
    w.set_admin("sandbox_allow", &allowed).await;
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(
        server.paths(),
        ["/pkg"],
        "only setup reached the allowed entry"
    );
    let readme = w.remote_git(
        common::world::REPO_GIT,
        &[
            "show",
            &format!("{}:README.md", job.branch.as_deref().unwrap()),
        ],
    );
    assert!(
        readme.contains("hello /pkg") && readme.contains("offline"),
        "{readme}"
    );
    w.log_has(
        &id,
        "==> network: refused blocked.example:80 (not in the allowlist) during setup `curl -sS -o /dev/null http://blocked.example/x || true`",
        1,
    )
    .await;
    let comment = w.final_comment(&job).await;
    assert!(
        comment.contains("🌐 **Network refused:** `blocked.example:80`"),
        "{comment}"
    );
    let pulls = w.github.created_pulls().await;
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(body.contains("`blocked.example:80`"), "{body}");
    w.app.stop().await;

    // `.repobox.yml` asking for more than the admin allows fails the job, naming both.
    let w = world(Setup {
        repobox_yml: Some("network:\n  agent: open\n"),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("`open` in agent") && error.contains("REPOBOX_SANDBOX_MODES agent:none"),
        "{error}"
    );
    w.app.stop().await;
}

#[test]
fn the_old_network_switch_stops_a_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args(["--redis-url", "redis://127.0.0.1:1", "runner"])
        .env("REPOBOX_SANDBOX_NETWORK", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REPOBOX_SANDBOX_NETWORK is gone")
            && stderr.contains("REPOBOX_SANDBOX_MODES"),
        "{stderr}"
    );
    // And a bad mode is refused by name.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args(["--redis-url", "redis://127.0.0.1:1", "runner"])
        .env("REPOBOX_SANDBOX_MODES", "agent:wide")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("unknown mode `wide`"),
        "{stderr}"
    );
}
