//! Dashboard sessions (SPEC §8, §9, §14): `tower-sessions` for the cookie and the
//! session's life (renewed id at sign-in, server-side delete at sign-out), stored as
//! `session:<key>` strings with a TTL through the [`Store`] — no second Redis client.
//!
//! The store never sees the cookie value: the key is [`storage_key`], a SHA-256 of it,
//! and the record is stored without its id, so a read of Redis (a backup, `MONITOR`)
//! yields no cookie that signs anyone in.
//!
//! A session ends after [`IDLE`] without a request, and in any case [`LIFETIME`] after
//! its sign-in. Admin rights are not kept in it: [`user`] asks the [`Authenticator`]
//! (`REPOBOX_ADMINS`) on every request, so removing an admin takes effect at once.
//!
//! What a session holds: the signed-in [`SessionUser`], when they signed in, the CSRF
//! token every form carries ([`csrf_token`], checked by [`check_csrf`] in constant time),
//! and a pending sign-in while the browser is at a provider.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_sessions::session::{Error as SessionError, Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer, cookie::SameSite};

use crate::model::ForgeKind;
use crate::store::Store;
use crate::web::auth::Authenticator;

pub const COOKIE: &str = "repobox_session";
/// Idle time after which a session ends.
pub const IDLE: time::Duration = time::Duration::hours(12);
/// Time after sign-in at which a session ends however busy it is.
pub const LIFETIME: time::Duration = time::Duration::hours(24);
const USER: &str = "user";
/// Unix seconds of the sign-in.
pub const SIGNED_IN_AT: &str = "signed_in_at";
const CSRF: &str = "csrf";

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    /// `github`, `gitlab`, `google` or `ldap`.
    pub provider: String,
    /// The provider's id of the user (GitHub/GitLab: the numeric user id).
    pub id: String,
    pub login: String,
    pub name: Option<String>,
    pub admin: bool,
}

impl SessionUser {
    /// The forge account the user signed in with, which is whose jobs they see.
    pub fn forge_account(&self) -> Option<(ForgeKind, u64)> {
        let forge = match self.provider.as_str() {
            "github" => ForgeKind::GitHub,
            "gitlab" => ForgeKind::GitLab,
            _ => return None,
        };
        Some((forge, self.id.parse().ok()?))
    }

    /// Whether the user may see (and cancel, retry) `job`: its requester, or an admin.
    pub fn can_see(&self, job: &crate::job::Job) -> bool {
        self.admin || self.forge_account() == Some((job.repo.forge, job.requester.id))
    }
}

/// The session's user, if any, with admin rights as the configuration gives them now.
/// A session past its [`LIFETIME`] (or without a sign-in time) is deleted here.
pub async fn user(auth: &Authenticator, session: &Session) -> Option<SessionUser> {
    let mut user = session.get::<SessionUser>(USER).await.ok().flatten()?;
    let signed_in_at = session.get::<i64>(SIGNED_IN_AT).await.ok().flatten();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if signed_in_at.is_none_or(|at| now - at >= LIFETIME.whole_seconds()) {
        tracing::info!(login = %user.login, "dashboard session reached its lifetime");
        let _ = session.flush().await;
        return None;
    }
    user.admin = auth.is_admin_login(&user.provider, &user.login);
    Some(user)
}

/// Signs `user` in: a new session id (no fixation), a new CSRF token, the sign-in time.
pub async fn sign_in(session: &Session, user: &SessionUser) -> Result<(), SessionError> {
    session.cycle_id().await?;
    session.insert(USER, user).await?;
    session
        .insert(
            SIGNED_IN_AT,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .await?;
    session.insert(CSRF, new_token()).await
}

/// The store's key for the session whose cookie value is `id`: hex SHA-256, so the
/// stored key signs nobody in.
pub fn storage_key(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// A record as stored: without its id (the cookie value).
#[derive(Serialize, Deserialize)]
struct Stored {
    data: std::collections::HashMap<String, serde_json::Value>,
    expiry_date: time::OffsetDateTime,
}

fn encode(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(&Stored {
        data: record.data.clone(),
        expiry_date: record.expiry_date,
    })
    .map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn decode(id: &Id, data: &str) -> session_store::Result<Record> {
    let stored: Stored =
        serde_json::from_str(data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
    Ok(Record {
        id: *id,
        data: stored.data,
        expiry_date: stored.expiry_date,
    })
}

/// Signs out: the session is deleted server-side, so its cookie is worth nothing.
pub async fn sign_out(session: &Session) -> Result<(), SessionError> {
    session.flush().await
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The session's CSRF token, made on first use.
pub async fn csrf_token(session: &Session) -> String {
    if let Ok(Some(token)) = session.get::<String>(CSRF).await {
        return token;
    }
    let token = new_token();
    let _ = session.insert(CSRF, &token).await;
    token
}

/// Whether `candidate` is this session's CSRF token (constant time).
pub async fn check_csrf(session: &Session, candidate: &str) -> bool {
    match session.get::<String>(CSRF).await {
        Ok(Some(token)) => token.as_bytes().ct_eq(candidate.as_bytes()).into(),
        _ => false,
    }
}

/// The session layer: cookie `repobox_session`, `HttpOnly`, `SameSite=Lax`, `Secure`
/// when the public URL is https, ending after [`IDLE`] without a request.
pub fn layer(store: Arc<dyn Store>, public_url: &str) -> SessionManagerLayer<RedisSessions> {
    SessionManagerLayer::new(RedisSessions { store })
        .with_name(COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(public_url.starts_with("https://"))
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(IDLE))
}

/// `tower-sessions` storage over the [`Store`].
#[derive(Clone)]
pub struct RedisSessions {
    store: Arc<dyn Store>,
}

impl fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisSessions")
    }
}

fn ttl(record: &Record) -> std::time::Duration {
    let left = record.expiry_date - time::OffsetDateTime::now_utc();
    std::time::Duration::try_from(left).unwrap_or(std::time::Duration::from_millis(1))
}

fn backend(e: crate::store::StoreError) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let data = encode(record)?;
            let created = self
                .store
                .save_session(
                    &storage_key(&record.id.to_string()),
                    &data,
                    ttl(record),
                    true,
                )
                .await
                .map_err(backend)?;
            if created {
                return Ok(());
            }
            // An id collision: draw another.
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = encode(record)?;
        self.store
            .save_session(
                &storage_key(&record.id.to_string()),
                &data,
                ttl(record),
                false,
            )
            .await
            .map_err(backend)
            .map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(data) = self
            .store
            .load_session(&storage_key(&id.to_string()))
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        decode(id, &data).map(Some)
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .delete_session(&storage_key(&id.to_string()))
            .await
            .map_err(backend)
    }
}
