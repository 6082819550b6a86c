//! Webhook limits at the HTTP edge (SPEC section 14, "Webhooks"), against the real
//! `repobox serve` binary over raw TCP: a `Content-Length` over 25 MiB gets 413 with
//! the body never sent, a chunked body is cut off at 25 MiB (413), headers and bodies
//! that trickle in too slowly get 408 or a closed connection, and the 257th webhook
//! request in flight gets 503. The timeouts are shortened through their hidden
//! settings (`REPOBOX_HTTP_HEADER_TIMEOUT`, `REPOBOX_WEBHOOK_BODY_TIMEOUT`).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{GITHUB_SECRET, GITLAB_SECRET, TEST_SECRET_KEY, redis_url};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const MIB: usize = 1024 * 1024;

struct Serve {
    addr: String,
    prefix: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Serve {
    async fn start(header_timeout: &str, body_timeout: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("test:{}:", ulid::Ulid::new());
        let log = dir.path().join("serve.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_repobox"));
        for (key, _) in std::env::vars() {
            if key.starts_with("REPOBOX_") {
                cmd.env_remove(key);
            }
        }
        // Port 0: the server picks a free port itself and logs it, so no two servers
        // of parallel tests can end up sharing one (a port picked here and released
        // could be taken before the server binds it).
        let mut child = cmd
            .arg("serve")
            .current_dir(dir.path())
            .env("REPOBOX_LISTEN", "127.0.0.1:0")
            .env("REPOBOX_REDIS_URL", redis_url())
            .env("REPOBOX_REDIS_PREFIX", &prefix)
            .env("REPOBOX_SECRET_KEY", TEST_SECRET_KEY)
            .env("REPOBOX_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
            .env("REPOBOX_GITLAB_WEBHOOK_SECRET", GITLAB_SECRET)
            .env("REPOBOX_HTTP_HEADER_TIMEOUT", header_timeout)
            .env("REPOBOX_WEBHOOK_BODY_TIMEOUT", body_timeout)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(at) = text.find("listening addr=") {
                let rest = &text[at + "listening addr=".len()..];
                break rest
                    .split(|c: char| c.is_whitespace())
                    .next()
                    .unwrap()
                    .to_owned();
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "serve exited at start: {text}"
            );
            assert!(Instant::now() < deadline, "serve did not start: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "serve did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Serve {
            addr,
            prefix,
            _child: child,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).await.unwrap()
    }

    async fn cleanup(self) {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for key in common::scan(&mut conn, &self.prefix).await {
            let _: () = conn.del(key).await.unwrap();
        }
    }
}

/// Request headers of a GitHub delivery (unsigned: the limits come before the
/// signature check), without the blank line that ends them.
fn head(extra: &str) -> String {
    format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: repobox\r\nContent-Type: application/json\r\nX-GitHub-Event: issue_comment\r\nX-GitHub-Delivery: limits\r\n{extra}"
    )
}

/// Reads until the response's status line is in, or the connection ends: the status,
/// or None when it was closed (or reset) without one.
async fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            return line.split(' ').nth(1).and_then(|s| s.parse().ok());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status within `within`; panics when the server neither answers nor closes.
async fn status_within(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, status(stream))
        .await
        .expect("the server answers or closes the connection in time")
}

#[tokio::test]
async fn an_oversized_content_length_gets_413_without_the_body_being_sent() {
    let serve = Serve::start("30s", "60s").await;
    let mut stream = serve.connect().await;
    let declared = 25 * MIB + 1;
    stream
        .write_all(head(&format!("Content-Length: {declared}\r\n\r\n")).as_bytes())
        .await
        .unwrap();
    // Not one byte of the body: the answer comes from the header alone (a server that
    // waited for the body would answer nothing until the 60 s body timeout).
    let started = Instant::now();
    assert_eq!(
        status_within(&mut stream, Duration::from_secs(10)).await,
        Some(413)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Exactly 25 MiB declared is within the limit: no 413 up front (the server waits
    // for the body, which then times out or is refused for its signature).
    let mut stream = serve.connect().await;
    stream
        .write_all(head(&format!("Content-Length: {}\r\n\r\n", 25 * MIB)).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"{").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), status(&mut stream)).await;
    assert!(early.is_err(), "no answer before the body: {early:?}");
    serve.cleanup().await;
}

#[tokio::test]
async fn a_chunked_body_over_25_mib_is_cut_off_with_413() {
    let serve = Serve::start("30s", "60s").await;
    let stream = serve.connect().await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(head("Transfer-Encoding: chunked\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Send 1 MiB chunks until the server answers; it must before 26 MiB are out, and the
    // sender stops on the answer or when the server stops reading.
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; MIB];
        let mut sent = 0usize;
        while sent < 40 * MIB {
            let frame = format!("{:x}\r\n", chunk.len());
            if write.write_all(frame.as_bytes()).await.is_err()
                || write.write_all(&chunk).await.is_err()
                || write.write_all(b"\r\n").await.is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut buf = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "the server answered or closed in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    drop(read);
    let sent = sender.await.unwrap();
    assert!(
        sent < 40 * MIB,
        "the server stopped reading: {sent} bytes went out"
    );
    serve.cleanup().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_too_slowly_gets_408_or_a_closed_connection() {
    let serve = Serve::start("30s", "400ms").await;
    let stream = serve.connect().await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(head("Content-Length: 10000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 20 ms would take 200 s to complete the body.
    let trickle = tokio::spawn(async move {
        loop {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(2).any(|w| w == b"\r\n") {
                return;
            }
        }
    })
    .await;
    trickle.abort();
    assert!(ended.is_ok(), "the slow body was cut off");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    serve.cleanup().await;
}

#[tokio::test]
async fn headers_that_trickle_in_too_slowly_close_the_connection() {
    let serve = Serve::start("400ms", "60s").await;
    let stream = serve.connect().await;
    let (mut read, mut write) = stream.into_split();
    // The headers never end: one more header line every 20 ms.
    let trickle = tokio::spawn(async move {
        if write.write_all(head("").as_bytes()).await.is_err() {
            return;
        }
        for i in 0.. {
            let line = format!("X-Slow-{i}: 1\r\n");
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    assert!(ended.is_ok(), "the slow headers were cut off");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    serve.cleanup().await;
}

/// The server's count of webhook requests in flight, from its `/metrics`.
async fn in_flight(serve: &Serve) -> i64 {
    let text = reqwest::get(format!("http://{}/metrics", serve.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("repobox_webhook_requests_in_flight "))
        .unwrap_or_else(|| panic!("no in-flight gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the server counts `want` webhook requests in flight.
async fn wait_in_flight(serve: &Serve, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = in_flight(serve).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} webhook requests in flight, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a small complete (unsigned) delivery and returns the status it got.
async fn small_delivery(serve: &Serve) -> Option<u16> {
    let mut stream = serve.connect().await;
    stream
        .write_all(head("Content-Length: 2\r\n\r\n{}").as_bytes())
        .await
        .unwrap();
    status_within(&mut stream, Duration::from_secs(20)).await
}

#[tokio::test]
async fn the_257th_webhook_request_in_flight_gets_503() {
    let serve = Serve::start("30s", "60s").await;
    assert_eq!(in_flight(&serve).await, 0);
    // 256 requests whose bodies never complete hold every slot; the server takes them
    // in its own time, so wait until it counts all of them.
    let mut held = Vec::new();
    for _ in 0..256 {
        let mut stream = serve.connect().await;
        stream
            .write_all(head("Content-Length: 100\r\n\r\n{").as_bytes())
            .await
            .unwrap();
        held.push(stream);
    }
    wait_in_flight(&serve, 256).await;
    // The next one is refused at once, and so is the one after it.
    assert_eq!(small_delivery(&serve).await, Some(503));
    assert_eq!(small_delivery(&serve).await, Some(503));
    assert_eq!(in_flight(&serve).await, 256, "a refusal holds no slot");
    // Other routes are not limited.
    let health = reqwest::get(format!("http://{}/healthz", serve.addr))
        .await
        .unwrap();
    assert!(health.status().is_success());
    // Closing the held requests frees their slots: a request is served again (401:
    // the server read the whole unsigned request and answered it).
    drop(held);
    wait_in_flight(&serve, 0).await;
    assert_eq!(small_delivery(&serve).await, Some(401));
    assert_eq!(
        in_flight(&serve).await,
        0,
        "a served request gives its slot back"
    );
    serve.cleanup().await;
}
