//! The egress proxy: the one way out of an `allowlist` or `open` sandbox.
//!
//! It runs in the runner, listens on a Unix socket that is bound into one sandbox (the
//! forwarder inside carries the sandbox's TCP connections to it) and speaks just enough
//! HTTP/1.1 proxying for package managers and git: `CONNECT host:port` (HTTPS, any TLS
//! or TCP protocol after it) and plain requests in absolute form (`GET http://host/…`).
//! Anything else on the socket gets `400` and is closed, so the socket is no way to
//! reach something else. Each request is decided by the [`Policy`]; a refusal answers
//! `403` with the reason and is reported (job log, final comment), a dial failure `502`.
//!
//! One request per connection for plain HTTP (`Connection: close` upstream): a client
//! can then not slip a second request for another host down a connection the proxy
//! opened for the first.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{Policy, Refusal, split_host_port};

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling the destination may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// What a refused client may still send after the answer, and for how long.
const DRAIN_BYTES: u64 = 1 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Request headers that belong to the hop to the proxy, not to the destination.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Called with every refusal, as it happens (the pipeline writes it to the job log).
pub type OnRefusal = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// A running proxy; dropping it stops it, ends its connections and removes the socket.
pub struct EgressProxy {
    socket: PathBuf,
    refused: Arc<Mutex<Vec<Refusal>>>,
    task: JoinHandle<()>,
}

impl EgressProxy {
    /// Listens on `socket` (which must not exist; its directory must).
    pub fn start(socket: &Path, policy: Policy, on_refusal: OnRefusal) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let policy = Arc::new(policy);
        let record = {
            let refused = refused.clone();
            Arc::new(move |r: &Refusal| {
                if let Ok(mut list) = refused.lock() {
                    list.push(r.clone());
                }
                on_refusal(r);
            }) as OnRefusal
        };
        let task = tokio::spawn(async move {
            // Connections live in the set, so stopping the proxy ends them too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve(stream, policy.clone(), record.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "egress proxy: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(EgressProxy {
            socket: socket.to_owned(),
            refused,
            task,
        })
    }

    /// The socket to bind into the sandbox.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every refusal so far, in order.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One connection from the sandbox.
async fn serve(mut client: UnixStream, policy: Arc<Policy>, on_refusal: OnRefusal) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(head)) => head,
        Ok(Err(status)) => return answer(&mut client, status, "not an HTTP proxy request").await,
        Err(_) => {
            return answer(&mut client, "408 Request Timeout", "request head timed out").await;
        }
    };
    let request = match Request::parse(&head) {
        Ok(r) => r,
        Err(why) => return answer(&mut client, "400 Bad Request", &why).await,
    };
    let addrs = policy
        .decide(&request.host, request.port, |name, port| async move {
            tokio::net::lookup_host((name.as_str(), port))
                .await
                .map(|a| a.collect())
        })
        .await;
    let addrs = match addrs {
        Ok(addrs) => addrs,
        Err(refusal) => {
            on_refusal(&refusal);
            let body = format!("repobox: refused {refusal}\n");
            return answer(&mut client, "403 Forbidden", &body).await;
        }
    };
    let upstream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addrs[..])).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let body = format!(
                "repobox: cannot reach {}:{}: {e}\n",
                request.host, request.port
            );
            return answer(&mut client, "502 Bad Gateway", &body).await;
        }
        Err(_) => {
            let body = format!(
                "repobox: {}:{} did not answer\n",
                request.host, request.port
            );
            return answer(&mut client, "504 Gateway Timeout", &body).await;
        }
    };
    let sent = match &request.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
        }
        Some(head) => upstream.write_all(head).await,
    };
    if sent.is_err() || upstream.write_all(&head[request.head_len..]).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads until the end of the request head; what follows it is kept in the buffer.
async fn read_head(client: &mut UnixStream) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err("431 Request Header Fields Too Large");
        }
    }
}

async fn answer(client: &mut UnixStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
    // A lingering close: closing with unread input would reset the connection and the
    // client might never read the answer. What it still sends is read and dropped, up
    // to a bound.
    let mut rest = (&mut *client).take(DRAIN_BYTES);
    let _ = tokio::time::timeout(
        DRAIN_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

/// A parsed proxy request.
#[derive(Debug)]
struct Request {
    host: String,
    port: u16,
    /// Bytes of the head in the buffer (what follows goes on to the destination).
    head_len: usize,
    /// `None` for `CONNECT`; else the head to send upstream (origin form).
    forward: Option<Vec<u8>>,
}

impl Request {
    fn parse(buf: &[u8]) -> Result<Request, String> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
            Err(e) => return Err(format!("not an HTTP request: {e}")),
        };
        let method = req.method.unwrap_or_default();
        let target = req.path.unwrap_or_default();
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(target)
                .and_then(|(h, p)| Some((h, p?)))
                .ok_or_else(|| format!("CONNECT needs host:port, not `{target}`"))?;
            return Ok(Request {
                host: host.to_owned(),
                port,
                head_len,
                forward: None,
            });
        }
        let uri: http::Uri = target
            .parse()
            .map_err(|_| format!("`{target}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "plain requests need an absolute http:// URL (HTTPS goes through CONNECT), not `{target}`"
            ));
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        // `Host` is set from the URL: the server that was allowed is the one asked for.
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
        for header in req.headers.iter() {
            if header.name.eq_ignore_ascii_case("host")
                || HOP_HEADERS
                    .iter()
                    .any(|h| header.name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            head.extend_from_slice(header.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(header.value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"connection: close\r\n\r\n");
        Ok(Request {
            host: host.to_owned(),
            port,
            head_len,
            forward: Some(head),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_requests_parse() {
        let buf = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nextra";
        let r = Request::parse(buf).unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.forward.is_none()),
            ("example.com", 443, true)
        );
        assert_eq!(&buf[r.head_len..], b"extra");
        let r = Request::parse(
            b"GET http://[::1]:8080/a?b=1 HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 8080));
        let head = String::from_utf8(r.forward.unwrap()).unwrap();
        assert_eq!(
            head,
            "GET /a?b=1 HTTP/1.1\r\nhost: [::1]:8080\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
