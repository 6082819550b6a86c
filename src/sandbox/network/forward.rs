//! `repobox sandbox-forward`: the sandbox's side of the egress proxy.
//!
//! A sandbox has its own network namespace with only a loopback interface, so it has no
//! route anywhere. When its phase may use the network, the runner binds the proxy's Unix
//! socket and its own binary into the sandbox and starts the program under this
//! forwarder: it listens on the sandbox's `127.0.0.1:<port>` (where `http_proxy`
//! points), carries every connection to the socket, runs the program with the
//! inherited stdio and exits with its status. The forwarder decides nothing; the proxy
//! outside does.
//!
//! Plain std and threads on purpose: it runs before any async runtime (the binary
//! dispatches to it first) and lives only as long as one command.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The subcommand name the binary dispatches on.
pub const SUBCOMMAND: &str = "sandbox-forward";
/// The port inside the sandbox the proxy variables point at.
pub const PORT: u16 = 3128;

/// `args` are what follows the subcommand: `<socket> <port> -- <program> [args…]`.
/// Exits with the program's code, `128 + signal` when a signal ended it, 125 when the
/// forwarder itself could not start (the convention of `env` and `timeout`).
pub fn main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("repobox sandbox-forward: {e}");
            ExitCode::from(125)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<u8, String> {
    let usage = "usage: repobox sandbox-forward <socket> <port> -- <program> [args...]";
    let mut args = args.into_iter();
    let socket = PathBuf::from(args.next().ok_or(usage)?);
    let port: u16 = args
        .next()
        .and_then(|p| p.to_str().and_then(|p| p.parse().ok()))
        .ok_or(usage)?;
    if args.next().as_deref() != Some("--".as_ref()) {
        return Err(usage.into());
    }
    let program = args.next().ok_or(usage)?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || carry(stream, &socket));
        }
    });
    let status = Command::new(&program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    })
}

/// Copies one connection both ways between the sandbox's client and the proxy socket.
fn carry(client: TcpStream, socket: &std::path::Path) {
    let Ok(proxy) = UnixStream::connect(socket) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client_read), Ok(proxy_read)) = (client.try_clone(), proxy.try_clone()) else {
        return;
    };
    let upstream =
        std::thread::spawn(move || pump(client_read, proxy, |s| s.shutdown(Shutdown::Write)));
    pump(proxy_read, client, |s| s.shutdown(Shutdown::Write));
    let _ = upstream.join();
}

/// Copies `from` into `to` until end of file, then half-closes `to`.
fn pump<R: Read, W: Write>(mut from: R, mut to: W, close: impl FnOnce(&W) -> io::Result<()>) {
    let _ = io::copy(&mut from, &mut to);
    let _ = close(&to);
}
