//! The embedded backend of the storage seams (SPEC section 19): one SQLite database
//! (`REPOBOX_DATA_DIR/repobox.db`, WAL mode) for `repobox all` on one machine with
//! nothing beside it.
//!
//! - [`data`]: the tables (the Redis layout of SPEC section 9 kept as records, scored
//!   sets, lists, streams and single values) and the operations on them;
//! - one module per seam ([`queue`], [`records`], [`sessions`], [`accounts`],
//!   [`settings`], [`steering`], [`recovery`], [`usage`]), each atomic step of the Redis
//!   backend one transaction here, and [`budget`], the forge request budget.
//!
//! **Processes.** One process writes (`repobox all`); `repobox jobs …` and `doctor` may
//! open the same file meanwhile (WAL: readers never wait for the writer, and a short
//! write of theirs, `jobs cancel`, waits for the lock up to 5 s). Every opening of one
//! path in a process shares one connection ([`EmbeddedStore::open`]), so blocking reads
//! are woken in-process when an entry is appended; a write from another process is
//! seen within a second, when a waiting read looks again.
//!
//! **Durability.** `synchronous = NORMAL` in WAL mode: a committed transaction survives
//! the process being killed (SIGKILL loses nothing accepted); only a power cut may lose
//! the last commits, as with Redis's `appendfsync everysec`.
//!
//! SQLite calls block, so each transaction runs on tokio's blocking pool, one at a time
//! behind the connection's mutex.

mod accounts;
mod budget;
mod data;
mod queue;
mod records;
mod recovery;
mod sessions;
mod settings;
mod steering;
mod usage;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::watch;

pub use self::budget::EmbeddedBudget;

use super::{Keys, StoreError};

/// The database's file name in `REPOBOX_DATA_DIR`.
pub const FILE_NAME: &str = "repobox.db";

/// How long a waiting read sleeps at most before it looks again: what another
/// process wrote (no in-process wake-up) is seen within this.
const POLL: Duration = Duration::from_secs(1);

/// The embedded store; cheap to clone (one shared connection per path).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    keys: Keys,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Bumped after each transaction that appended to a stream (a task, a job entry, a
    /// log line): what waiting reads wait on.
    appended: watch::Sender<u64>,
}

/// The databases open in this process, by path.
fn open_databases() -> &'static Mutex<HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("embedded store: {e}"))
    }
}

impl EmbeddedStore {
    /// Opens (creating it and its directory if needed) the database at `path`, or the
    /// connection this process has open to it already.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {} (REPOBOX_DATA_DIR)", dir.display()))?;
        }
        let canonical = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let mut open = open_databases().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = open.get(&canonical).and_then(Weak::upgrade) {
            return Ok(EmbeddedStore::from_inner(inner));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open the embedded store {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .and_then(|()| conn.execute_batch(data::SCHEMA))
            .with_context(|| format!("cannot set up the embedded store {}", path.display()))?;
        let inner = Arc::new(Inner {
            path: canonical.clone(),
            conn: Mutex::new(conn),
            appended: watch::channel(0).0,
        });
        open.insert(canonical, Arc::downgrade(&inner));
        Ok(EmbeddedStore::from_inner(inner))
    }

    /// The database of `data_dir` (`REPOBOX_DATA_DIR`).
    pub fn in_dir(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open(&data_dir.join(FILE_NAME))
    }

    fn from_inner(inner: Arc<Inner>) -> Self {
        EmbeddedStore {
            inner,
            keys: Keys::new(""),
        }
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in one transaction that takes the write lock at its start (so two
    /// processes' steps never interleave), and commits it when `f` succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Keys) -> Result<T, StoreError> + Send + 'static,
    {
        self.transaction(TransactionBehavior::Immediate, f).await
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Keys) -> Result<T, StoreError> + Send + 'static,
    {
        self.transaction(TransactionBehavior::Deferred, f).await
    }

    async fn transaction<T, F>(&self, behavior: TransactionBehavior, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Keys) -> Result<T, StoreError> + Send + 'static,
    {
        let (inner, keys) = (self.inner.clone(), self.keys.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(behavior)?;
            let out = f(&tx, &keys)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
    }

    /// Wakes the reads waiting for new entries.
    fn appended(&self) {
        self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `query` until it finds something or `block` has passed (no `block`: once),
    /// looking again whenever an entry is appended in this process and at least every
    /// [`POLL`].
    async fn wait_for<T, Fut>(
        &self,
        block: Option<Duration>,
        mut query: impl FnMut() -> Fut,
    ) -> Result<Vec<T>, StoreError>
    where
        Fut: Future<Output = Result<Vec<T>, StoreError>>,
    {
        let deadline = block.map(|b| tokio::time::Instant::now() + b);
        loop {
            // Subscribed before looking: an append after the look wakes this wait.
            let mut appended = self.inner.appended.subscribe();
            let found = query().await?;
            let left = deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or_default();
            if !found.is_empty() || left.is_zero() {
                return Ok(found);
            }
            let _ = tokio::time::timeout(left.min(POLL), appended.changed()).await;
        }
    }
}

#[async_trait::async_trait]
impl super::Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c, _| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(drop)
    }

    async fn key_fingerprint(&self, claim: Option<&str>) -> Result<Option<String>, StoreError> {
        let claim = claim.map(str::to_owned);
        self.write(move |c, keys| {
            let key = keys.key_fingerprint();
            if let Some(fingerprint) = claim {
                data::set(c, &key, &fingerprint, None, true)?;
            }
            Ok(data::get(c, &key)?)
        })
        .await
    }

    fn backend(&self) -> String {
        "embedded store".to_owned()
    }
}
