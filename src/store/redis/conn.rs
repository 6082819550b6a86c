//! A Redis connection that names itself (SPEC section 13: `CLIENT SETNAME
//! repobox:<role>:<purpose>`) and reconnects by itself.
//!
//! redis-rs 1.8's `ConnectionManager` reconnects but runs nothing of ours on a new
//! connection (redis-rs issue #1727), so a name set once would be lost at the first
//! reconnect. [`NamedConnection`] does what the manager does — one multiplexed
//! connection shared by every clone, made lazily on first use and replaced after an
//! error that leaves it unusable — and sends `CLIENT SETNAME` on each new connection
//! before any command of ours can use it, so `CLIENT LIST` always shows who is who.
//!
//! The connection being made is one shared future: callers that arrive while it is
//! being made wait for that same attempt (and share its failure) instead of queueing one
//! attempt each, so intake still answers 503 quickly while Redis is down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Attempts to connect before a command gives up, and the pause after the first failure
/// (doubled after each further one).
const CONNECT_ATTEMPTS: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

type Connecting = Shared<BoxFuture<'static, RedisResult<MultiplexedConnection>>>;

/// How one kind of connection is made: the client, its timeouts and its name.
#[derive(Clone)]
pub(crate) struct ConnectionSpec {
    pub client: redis::Client,
    pub connection_timeout: Duration,
    pub response_timeout: Duration,
}

impl ConnectionSpec {
    /// A lazy connection named `name` (nothing is sent before its first command).
    pub fn open(&self, name: String) -> NamedConnection {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let db = self.client.get_connection_info().redis_settings().db();
        let inner = Arc::new(Inner {
            client: self.client.clone(),
            config,
            name,
            db,
            current: Mutex::new(Current {
                generation: 0,
                connecting: None,
            }),
        });
        NamedConnection(inner)
    }
}

/// One named, self-reconnecting multiplexed connection; clones share it.
#[derive(Clone)]
pub(crate) struct NamedConnection(Arc<Inner>);

struct Inner {
    client: redis::Client,
    config: AsyncConnectionConfig,
    name: String,
    db: i64,
    current: Mutex<Current>,
}

struct Current {
    /// Bumped each time the connection is replaced, so an error seen on an old
    /// connection does not throw away a newer one.
    generation: u64,
    /// The connection (being) made; `None` before the first use and after a failure.
    connecting: Option<Connecting>,
}

impl NamedConnection {
    /// The current connection, making (and naming) one when there is none.
    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let (generation, connecting) = {
            let mut current = self.0.current.lock().expect("connection state lock");
            let connecting = current
                .connecting
                .get_or_insert_with(|| connect(self.0.clone()).boxed().shared())
                .clone();
            (current.generation, connecting)
        };
        match connecting.await {
            Ok(conn) => Ok((generation, conn)),
            Err(e) => {
                self.forget(generation);
                Err(e)
            }
        }
    }

    /// Drops connection `generation` (when it is still the current one): the next
    /// command makes a new one.
    fn forget(&self, generation: u64) {
        let mut current = self.0.current.lock().expect("connection state lock");
        if current.generation == generation {
            current.generation += 1;
            current.connecting = None;
        }
    }

    /// After a command: an error that leaves the connection unusable replaces it.
    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && (e.is_unrecoverable_error() || e.is_connection_dropped())
        {
            self.forget(generation);
        }
        result
    }
}

/// Connects (a few attempts) and names the new connection before anyone uses it.
async fn connect(inner: Arc<Inner>) -> RedisResult<MultiplexedConnection> {
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        match connect_once(&inner).await {
            Ok(conn) => return Ok(conn),
            Err(e) if attempt >= CONNECT_ATTEMPTS || !(e.is_io_error() || e.is_timeout()) => {
                return Err(e);
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

async fn connect_once(inner: &Inner) -> RedisResult<MultiplexedConnection> {
    let mut conn = inner
        .client
        .get_multiplexed_async_connection_with_config(&inner.config)
        .await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&inner.name)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

impl ConnectionLike for NamedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let (generation, mut conn) = self.get().await?;
            let result = conn.send_packed_command(cmd).await;
            self.check(generation, result)
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let (generation, mut conn) = self.get().await?;
            let result = conn.send_packed_commands(pipeline, offset, count).await;
            self.check(generation, result)
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// `repobox:<role>:<purpose>`, with anything `CLIENT SETNAME` refuses (spaces, newlines)
/// replaced, so a role from the command line cannot break the name.
pub(crate) fn connection_name(role: &str, purpose: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect()
    };
    format!("repobox:{}:{}", clean(role), clean(purpose))
}

impl std::fmt::Debug for NamedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NamedConnection")
            .field(&self.0.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::connection_name;

    #[test]
    fn names_are_role_then_purpose_without_spaces() {
        assert_eq!(
            connection_name("serve", "ack-read"),
            "repobox:serve:ack-read"
        );
        assert_eq!(
            connection_name("my role", "log-read:01J\n"),
            "repobox:my_role:log-read:01J_"
        );
    }
}
