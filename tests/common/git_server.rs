//! A real git remote for tests and benches: bare repositories served over smart HTTP by
//! running `git http-backend` as a CGI program per request, behind HTTP Basic auth.
//!
//! Why not the local transport: libgit2 behaves differently over `file://` (no shallow
//! fetches, no HTTP authentication, no sideband), and the runner only ever talks HTTPS.
//! This module depends on tokio, axum, base64, bytes and futures only, so a bench can
//! include it with `#[path = "../tests/common/git_server.rs"] mod git_server;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdout, Command as TokioCommand};

/// Fixed identity and dates so test repositories are reproducible.
const GIT_ENV: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "Test Author"),
    ("GIT_AUTHOR_EMAIL", "author@example.com"),
    ("GIT_COMMITTER_NAME", "Test Author"),
    ("GIT_COMMITTER_EMAIL", "author@example.com"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
];

/// One HTTP request the server saw.
#[derive(Debug, Clone)]
pub struct GitRequest {
    pub method: String,
    /// Path and query, exactly as requested.
    pub uri: String,
    /// Whether the Basic credentials carried an accepted token.
    pub authorized: bool,
    /// The Basic password sent, if any (which token a push was made with).
    pub password: Option<String>,
}

struct Inner {
    root: PathBuf,
    /// The tokens let through: the forge's, and any a test adds ([`GitServer::accept`]).
    tokens: Mutex<Vec<String>>,
    requests: Mutex<Vec<GitRequest>>,
}

/// A smart-HTTP git server on `127.0.0.1:<random port>`; stops when dropped.
pub struct GitServer {
    addr: std::net::SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl GitServer {
    /// Serves the bare repositories under `root`; only Basic auth with password `token`
    /// is let through, and authenticated clients may push.
    pub async fn start(root: PathBuf, token: &str) -> GitServer {
        let inner = Arc::new(Inner {
            root,
            tokens: Mutex::new(vec![token.to_owned()]),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind git server");
        let addr = listener.local_addr().expect("git server address");
        // Without TCP_NODELAY the small body chunk after the headers waits for the
        // client's delayed ACK: +40 ms on every request.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitServer { addr, inner, task }
    }

    /// The clone URL of `repo` (e.g. `octo-org/hello-world.git`), without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }

    /// Lets `token` through too (a user's personal token, SPEC 18).
    pub fn accept(&self, token: &str) {
        self.inner.tokens.lock().unwrap().push(token.to_owned());
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let password = basic_password(req.headers());
    let authorized = password
        .as_ref()
        .is_some_and(|p| inner.tokens.lock().unwrap().iter().any(|t| t == p));
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Ok(mut log) = inner.requests.lock() {
        log.push(GitRequest {
            method: req.method().to_string(),
            uri,
            authorized,
            password: password.clone(),
        });
    }
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
            "authentication required\n",
        )
            .into_response();
    }
    match run_backend(&inner.root, req).await {
        Ok(resp) => resp,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The password of an `Authorization: Basic` header, if any.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// Runs `git http-backend` for one request, streaming the body in and the answer out.
async fn run_backend(root: &Path, req: Request) -> std::io::Result<Response> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut cmd = TokioCommand::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", "repobox")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (var, name) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        ("GIT_PROTOCOL", "git-protocol"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
    ] {
        if let Some(value) = header(name) {
            cmd.env(var, value);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| io_error("no stdin"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| io_error("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| io_error("no stderr"))?;

    // Feed the request body while the answer is read, so large packs cannot deadlock.
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
        let _ = child.wait().await;
    });

    let (status, headers, rest) = read_cgi_headers(&mut stdout).await?;
    let first = stream::once(async move { Ok::<Bytes, std::io::Error>(rest) });
    let body = Body::from_stream(first.chain(stdout_stream(stdout)));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// The rest of the CGI output, chunk by chunk.
fn stdout_stream(
    stdout: ChildStdout,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    stream::unfold(stdout, |mut out| async move {
        let mut buf = BytesMut::zeroed(64 * 1024);
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.freeze()), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    })
}

/// Reads CGI headers (up to the blank line); returns them with any body bytes read past.
async fn read_cgi_headers(
    stdout: &mut ChildStdout,
) -> std::io::Result<(StatusCode, HeaderMap, Bytes)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, body_start) = loop {
        if let Some(found) = find_blank_line(&buf) {
            break found;
        }
        let n = stdout.read(&mut chunk).await?;
        if n == 0 {
            return Err(io_error("http-backend ended before its headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    Ok((status, headers, Bytes::copy_from_slice(&buf[body_start..])))
}

/// Position of the end of the header block and of the body start.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

fn io_error(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_owned())
}

/// Runs `git` with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(GIT_ENV)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Creates the bare repository `<root>/<name>` (e.g. `octo-org/hello-world.git`) whose
/// `main` branch (HEAD) holds `files`; returns the commit id of `main`.
pub fn init_bare_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let bare = root.join(name);
    std::fs::create_dir_all(&bare).expect("create bare repo dir");
    git(
        &bare,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    );
    push_commit(root, name, "main", files, "Initial commit")
}

/// Commits `files` (path, content) on top of `branch` of the bare repository (creating
/// the branch from `main` if needed) and returns the new commit id.
pub fn push_commit(
    root: &Path,
    name: &str,
    branch: &str,
    files: &[(&str, &str)],
    message: &str,
) -> String {
    let bare = root.join(name);
    let tmp = tempfile::tempdir().expect("scratch dir");
    let scratch = tmp.path();
    let bare_str = bare.to_string_lossy().into_owned();
    git(scratch, &["init", "--quiet", "--initial-branch", branch]);
    let has_branch = Command::new("git")
        .args(["--git-dir", &bare_str, "rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}"))
        .envs(GIT_ENV)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let has_main = Command::new("git")
        .args(["--git-dir", &bare_str, "rev-parse", "--verify", "--quiet"])
        .arg("refs/heads/main")
        .envs(GIT_ENV)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let start = if has_branch {
        Some(branch)
    } else if has_main {
        Some("main")
    } else {
        None
    };
    if let Some(start) = start {
        git(scratch, &["fetch", "--quiet", &bare_str, start]);
        git(scratch, &["reset", "--quiet", "--hard", "FETCH_HEAD"]);
    }
    for (path, content) in files {
        let file = scratch.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create dirs");
        }
        std::fs::write(&file, content).expect("write file");
    }
    git(scratch, &["add", "-A"]);
    git(
        scratch,
        &["commit", "--quiet", "--allow-empty", "-m", message],
    );
    git(
        scratch,
        &[
            "push",
            "--quiet",
            &bare_str,
            &format!("HEAD:refs/heads/{branch}"),
        ],
    );
    git(scratch, &["rev-parse", "HEAD"])
}

/// Points `refname` (e.g. `refs/pull/7/head`) of the bare repository at `sha`.
pub fn set_ref(root: &Path, name: &str, refname: &str, sha: &str) {
    git(&root.join(name), &["update-ref", refname, sha]);
}

/// The commit `rev` resolves to in the bare repository, if it exists.
pub fn rev_parse(root: &Path, name: &str, rev: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", rev])
        .current_dir(root.join(name))
        .envs(GIT_ENV)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs a `pre-receive` hook that declines every push touching `branch`, the way a
/// protected branch does.
pub fn install_reject_hook(root: &Path, name: &str, branch: &str) {
    let hook = root.join(name).join("hooks").join("pre-receive");
    std::fs::create_dir_all(hook.parent().expect("hooks dir")).expect("create hooks dir");
    let script = format!(
        "#!/bin/sh\n\
         while read old new ref; do\n\
         \x20 if [ \"$ref\" = \"refs/heads/{branch}\" ]; then\n\
         \x20   echo \"GH006: Protected branch update failed for refs/heads/{branch}.\" >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         done\n\
         exit 0\n"
    );
    std::fs::write(&hook, script).expect("write hook");
    make_executable(&hook);
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path)
        .expect("hook metadata")
        .permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod hook");
}
