//! Key names of SPEC section 9, under the configured prefix. The Redis backend uses them
//! as Redis keys; the embedded backend ([`super::embedded`]) keeps the same layout in its
//! tables, so both backends name every record, index and stream alike.

use super::Delivery;
use crate::job::{Job, JobId};
use crate::model::{ForgeKind, RepoRef, ThreadRef};

/// Key names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    pub fn jobs_stream(&self) -> String {
        format!("{}jobs:stream", self.prefix)
    }
    pub fn intake_stream(&self) -> String {
        format!("{}intake:stream", self.prefix)
    }
    pub fn job(&self, id: JobId) -> String {
        self.job_key(&id.to_string())
    }
    /// [`Keys::job`] of an id as text (as the queue's steps carry it).
    pub fn job_key(&self, id: &str) -> String {
        format!("{}job:{{{id}}}", self.prefix)
    }
    /// Instructions added to a running job (SPEC 16), in order.
    pub fn job_steer(&self, id: JobId) -> String {
        format!("{}job:{{{id}}}:steer", self.prefix)
    }
    /// The provisional jobs already steered into it (each is steered once).
    pub fn job_steered_from(&self, id: JobId) -> String {
        format!("{}job:{{{id}}}:steered-from", self.prefix)
    }
    pub fn job_output(&self, id: JobId) -> String {
        format!("{}job:{{{id}}}:output", self.prefix)
    }
    /// `session:<id>`: a dashboard session.
    pub fn session(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }
    pub fn signin_failures(&self, key: &str) -> String {
        format!("{}signin-failures:{key}", self.prefix)
    }
    pub fn jobs_all(&self) -> String {
        format!("{}jobs:all", self.prefix)
    }
    pub fn jobs_by_user(&self, job: &Job) -> String {
        self.jobs_of_user(job.repo.forge, job.requester.id)
    }
    pub fn jobs_of_user(&self, forge: ForgeKind, user_id: u64) -> String {
        format!("{}jobs:by-user:{forge}:{user_id}", self.prefix)
    }
    pub fn jobs_by_repo(&self, repo: &RepoRef) -> String {
        self.jobs_of_repo(repo.forge, &repo.full_name)
    }
    pub fn jobs_of_repo(&self, forge: ForgeKind, full_name: &str) -> String {
        format!("{}jobs:by-repo:{forge}:{full_name}", self.prefix)
    }
    /// The GitHub App registered through `/setup`.
    pub fn github_app(&self) -> String {
        format!("{}github_app", self.prefix)
    }
    /// The one-time setup token `serve` prints while no forge is configured.
    pub fn setup_token(&self) -> String {
        format!("{}setup:token", self.prefix)
    }
    /// A manifest-flow `state` issued by `/setup`.
    pub fn setup_state(&self, state: &str) -> String {
        format!("{}setup:state:{state}", self.prefix)
    }
    /// Not in the SPEC table: the jobs of one thread, for cancel/retry and the
    /// one-job-per-thread rule.
    pub fn jobs_by_thread(&self, repo: &RepoRef, thread: ThreadRef) -> String {
        format!(
            "{}jobs:by-thread:{}:{}:{}:{}",
            self.prefix,
            repo.forge,
            repo.full_name,
            thread.kind.as_str(),
            thread.number
        )
    }
    /// Slots of a user's running jobs (sorted set: job id → lease expiry, ms).
    pub fn running_user(&self, job: &Job) -> String {
        format!(
            "{}running:user:{}:{}",
            self.prefix, job.repo.forge, job.requester.id
        )
    }
    /// A user's jobs waiting for a slot, in order (list).
    pub fn waiting_user(&self, job: &Job) -> String {
        format!(
            "{}waiting:user:{}:{}",
            self.prefix, job.repo.forge, job.requester.id
        )
    }
    /// The thread gate's key suffix; a repo + prompt job (no thread) is a gate of its
    /// own, so such jobs never wait for each other.
    fn thread_suffix(job: &Job) -> String {
        if job.thread.is_none() {
            return format!("{}:{}:job:{}", job.repo.forge, job.repo.full_name, job.id);
        }
        format!(
            "{}:{}:{}:{}",
            job.repo.forge,
            job.repo.full_name,
            job.thread.kind.as_str(),
            job.thread.number
        )
    }
    /// The slot of a thread's running job (at most one).
    pub fn running_thread(&self, job: &Job) -> String {
        format!("{}running:thread:{}", self.prefix, Self::thread_suffix(job))
    }
    pub fn waiting_thread(&self, job: &Job) -> String {
        format!("{}waiting:thread:{}", self.prefix, Self::thread_suffix(job))
    }
    /// Every non-empty waiting list → `<running key>\n<limit>`.
    pub fn waiting_index(&self) -> String {
        format!("{}waiting:index", self.prefix)
    }
    /// Not in the SPEC table: jobs not yet final (sorted set by creation), which the
    /// orphan reconciler looks through.
    pub fn jobs_active(&self) -> String {
        format!("{}jobs:active", self.prefix)
    }
    /// The orphan reconciler's lock (one at a time across processes).
    pub fn orphans_lock(&self) -> String {
        self.lock("orphans")
    }
    /// `redeliver:cursor`: the newest hook delivery a reconciler round saw.
    pub fn redeliver_cursor(&self) -> String {
        format!("{}redeliver:cursor", self.prefix)
    }
    /// `lock:<name>`: a cluster-wide lock (one reconciler at a time).
    pub fn lock(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }
    /// The key prefix (the queue scripts build job keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn settings(&self) -> String {
        format!("{}settings", self.prefix)
    }
    /// `usage:<YYYY-MM>`: spend per requester and repository that month.
    pub fn usage(&self, month: &str) -> String {
        format!("{}usage:{month}", self.prefix)
    }
    /// `setup_secrets`: name → sealed value ([`crate::setup_secrets`]).
    pub fn setup_secrets(&self) -> String {
        format!("{}setup_secrets", self.prefix)
    }
    pub fn delivery(&self, d: Delivery<'_>) -> String {
        format!("{}delivery:{}:{}", self.prefix, d.forge, d.id)
    }
    /// `key-fingerprint`: the secret key's fingerprint, set by the first process started.
    pub fn key_fingerprint(&self) -> String {
        format!("{}key-fingerprint", self.prefix)
    }
}

/// Keys of dashboard users and their providers (SPEC section 9).
impl Keys {
    pub fn user(&self, provider: &str, id: &str) -> String {
        format!("{}user:{provider}:{id}", self.prefix)
    }
    pub fn provider(&self, id: ulid::Ulid) -> String {
        format!("{}provider:{id}", self.prefix)
    }
    /// Not in the SPEC table: a user's provider ids by creation time (`owner` is
    /// `provider:id`).
    pub fn providers_by_user(&self, owner: &str) -> String {
        format!("{}providers:by-user:{owner}", self.prefix)
    }
}
