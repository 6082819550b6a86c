//! Job runners (`repobox runner`, the worker half of `repobox all`).
//!
//! A runner is one consumer in the group `runners` on `jobs:stream`, running up to
//! `REPOBOX_WORKERS` jobs at once. Delivery is at-least-once, effects exactly-once
//! (SPEC sections 6 and 13):
//! - a job is run under a lease: [`JobQueue::claim`] admits it (per-user limit, one job
//!   per thread across all runners; a job over a limit waits in a waiting list, so other
//!   users are never blocked behind it), increments its `attempt` and makes this runner
//!   its holder, in one step. Every later write of the run is fenced by that lease;
//! - an entry stays pending until its job ends; the heartbeat (fenced too) keeps its idle
//!   time low. A runner that dies leaves it pending, and after the visibility timeout
//!   another runner claims it (XAUTOCLAIM) under a new attempt. A runner whose lease is
//!   gone (its heartbeat or a write says so, or the cancel watch sees another holder)
//!   stops the agent and makes no further effect;
//! - every effect is looked up before it is made ([`pipeline`]): the progress comment by
//!   its marker, the commit by its `Repobox-Job:` trailer, the PR/MR by head branch;
//! - SIGTERM stops the agents and hands their jobs back to the stream at once.
//!
//! Modules: [`pipeline`] (one job, step by step), [`reporter`] (the progress comment),
//! [`joblog`] (the job log), [`repo_config`] (`.repobox.yml`), [`context`] (the prompt,
//! and whose words reach it), [`protected`] (paths a job may not change),
//! [`neutralize`] (the agent's text made harmless before it is posted), [`steering`]
//! (instructions added to the running agent).

pub mod checks;
pub mod context;
pub mod instructions;
pub mod joblog;
pub mod neutralize;
pub mod pipeline;
pub mod protected;
pub mod repo_config;
pub mod reporter;
pub mod steering;
pub mod tree_size;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::agent::Agent;
use crate::failpoint;
use crate::forges::Forges;
use crate::git::Mirrors;
use crate::job::{Job, JobId, JobStatus, rfc3339};
use crate::sandbox::SandboxKind;
use crate::settings::AdminSettings;
use crate::store::{Claim, JobEntry, Lease, Store, StoreError};
use crate::telemetry::Metrics;

use self::pipeline::{Pipeline, Stop, StopReason};

/// Runner settings, from the configuration.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// This process's consumer name in the group.
    pub consumer: String,
    pub workers: usize,
    /// The configured per-user limit (`admin_defaults` has it too; the admin setting
    /// `per_user_limit` overrides it per job).
    pub per_user_limit: usize,
    pub job_timeout: Duration,
    /// How long an entry may go without a heartbeat before another runner claims it.
    pub visibility_timeout: Duration,
    pub workdir: PathBuf,
    pub public_url: String,
    pub trigger: String,
    pub sandbox: SandboxKind,
    /// The widest network mode per phase (`REPOBOX_SANDBOX_MODES`).
    pub sandbox_modes: crate::sandbox::network::PhaseModes,
    /// `REPOBOX_SANDBOX_ALLOW`; the admin setting `sandbox_allow` extends it per job.
    pub sandbox_allow: crate::sandbox::network::Allowlist,
    /// The job budget in USD (`REPOBOX_JOB_BUDGET`); `.repobox.yml` may lower it.
    pub job_budget_usd: f64,
    /// The binary run inside sandboxes as the proxy forwarder.
    pub sandbox_forwarder: PathBuf,
    /// Opens setup secrets (`REPOBOX_SECRET_KEY`); `None` when the runner has no key,
    /// and a job naming `setup_env` then fails saying so.
    pub secret_box: Option<crate::crypto::SecretBox>,
    /// Minimum time between two edits of a progress comment.
    pub progress_interval: Duration,
    /// Memory and processes of a job's sandbox together (`REPOBOX_JOB_MEMORY`,
    /// `REPOBOX_JOB_PIDS`).
    pub job_limits: crate::sandbox::job_limits::JobLimits,
    /// Largest apparent size of a work tree at commit time (`REPOBOX_MAX_TREE_SIZE`).
    pub max_tree_size: u64,
    /// Job log lines kept per second; the rest are dropped and counted
    /// (`REPOBOX_LOG_LINES_PER_SECOND`).
    pub log_lines_per_second: u32,
    /// A job delivered this many times without finishing is failed (poison job).
    pub max_deliveries: u64,
    /// What applies where the admin settings (the store's `settings` hash, read at the
    /// start of every job) say nothing: per-user limit, model, max turns, trigger.
    pub admin_defaults: AdminSettings,
}

impl RunnerSettings {
    /// Slot leases outlive a few missed heartbeats.
    pub fn lease(&self) -> Duration {
        self.visibility_timeout * 2
    }
    fn heartbeat_every(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(200))
    }
    fn reclaim_every(&self) -> Duration {
        (self.visibility_timeout / 2).max(Duration::from_millis(500))
    }
}

/// What a runner shares between its workers.
pub struct Runner {
    pub store: Arc<dyn Store>,
    pub forges: Forges,
    pub agent: Arc<dyn Agent>,
    pub mirrors: Arc<Mirrors>,
    pub metrics: Arc<Metrics>,
    pub settings: RunnerSettings,
    /// Jobs being worked on: job id → (job, its lease, its stop handle).
    in_flight: Mutex<HashMap<JobId, (Job, Lease, Stop)>>,
}

impl Runner {
    pub fn new(
        store: Arc<dyn Store>,
        forges: Forges,
        agent: Arc<dyn Agent>,
        metrics: Arc<Metrics>,
        settings: RunnerSettings,
    ) -> Runner {
        Runner {
            mirrors: Arc::new(Mirrors::new(settings.workdir.clone())),
            store,
            forges,
            agent,
            metrics,
            settings,
            in_flight: Mutex::default(),
        }
    }

    /// Consumes `jobs:stream` until `shutdown`; then stops the agents, hands their jobs
    /// back and returns once every worker is done.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let workers = self.settings.workers.max(1);
        let permits = Arc::new(Semaphore::new(workers));
        info!(consumer = %self.settings.consumer, workers, "runner started");
        // Heartbeats go on while jobs are handed back; stopped once every worker is done.
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let mut next_reclaim = Instant::now();
        let mut redis_down = false;
        while !shutdown.is_cancelled() {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => break,
            };
            let entries = if Instant::now() >= next_reclaim {
                next_reclaim = Instant::now() + self.settings.reclaim_every();
                self.reclaim().await
            } else {
                Ok(Vec::new())
            };
            let entries = match entries {
                Ok(e) if !e.is_empty() => Ok(e),
                Ok(_) => {
                    self.store
                        .read_jobs(&self.settings.consumer, 1, Duration::from_secs(2))
                        .await
                }
                Err(e) => Err(e),
            };
            match entries {
                Ok(entries) => {
                    if redis_down {
                        info!("Redis reachable again");
                        redis_down = false;
                    }
                    let Some(entry) = entries.into_iter().next() else {
                        continue;
                    };
                    let runner = self.clone();
                    tokio::spawn(async move {
                        runner.handle(entry).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    if !redis_down {
                        warn!(error = %e, "cannot read jobs; retrying");
                        redis_down = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        info!("runner stopping: handing back in-flight jobs");
        for (_, _, stop) in self.in_flight.lock().unwrap().values() {
            stop.stop(StopReason::Shutdown);
        }
        let _ = permits.acquire_many(workers as u32).await;
        heartbeat.abort();
        info!("runner stopped");
    }

    /// The admin settings in force now (read from the store; the configured defaults
    /// when it cannot be read).
    pub async fn admin_settings(&self) -> AdminSettings {
        match self.store.get_settings().await {
            Ok(stored) => AdminSettings::from_stored(&stored, &self.settings.admin_defaults),
            Err(e) => {
                warn!(error = %e, "admin settings unreadable; using the configured defaults");
                self.settings.admin_defaults.clone()
            }
        }
    }

    /// Entries dead runners left behind, and waiting jobs whose slots expired.
    async fn reclaim(&self) -> Result<Vec<JobEntry>, StoreError> {
        let promoted = self.store.promote_waiting(self.settings.lease()).await?;
        if promoted > 0 {
            info!(promoted, "waiting jobs started after expired slots");
        }
        let claimed = self
            .store
            .claim_stale_jobs(&self.settings.consumer, self.settings.visibility_timeout, 1)
            .await?;
        for entry in &claimed {
            info!(entry = %entry.entry_id, deliveries = entry.deliveries, "claimed a job another runner left");
        }
        Ok(claimed)
    }

    /// Every heartbeat interval, each run's fenced heartbeat; a run whose lease is gone
    /// is stopped.
    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_every());
        loop {
            tick.tick().await;
            let runs: Vec<(Job, Lease, Stop)> =
                self.in_flight.lock().unwrap().values().cloned().collect();
            for (job, lease, stop) in runs {
                match self
                    .store
                    .heartbeat(&lease, &job, self.settings.lease())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(job = %job.id, attempt = lease.attempt, "lease lost: another runner holds the job; stopping");
                        stop.stop(StopReason::LeaseLost);
                    }
                    Err(e) => warn!(job = %job.id, error = %e, "heartbeat failed"),
                }
            }
        }
    }

    /// One stream entry, start to end. Never panics outward: the pipeline runs in its own
    /// task, and a panic there fails the job instead of the worker.
    async fn handle(self: Arc<Self>, entry: JobEntry) {
        let id = match &entry.job {
            Ok(id) => *id,
            Err(reason) => {
                warn!(entry = %entry.entry_id, reason, "dropping a malformed jobs:stream entry");
                self.ack_only(&entry.entry_id).await;
                return;
            }
        };
        let span = info_span!("job", job = %id);
        async move {
            if let Err(e) = self.clone().handle_job(&entry, id).await {
                // Left pending: after the visibility timeout it is delivered again.
                warn!(error = %e, "storage error; the job will be delivered again");
            }
        }
        .instrument(span)
        .await
    }

    async fn ack_only(&self, entry_id: &str) {
        if let Err(e) = self.store.drop_entry(entry_id).await {
            warn!(error = %e, "could not acknowledge entry");
        }
    }

    async fn handle_job(self: Arc<Self>, entry: &JobEntry, id: JobId) -> Result<(), StoreError> {
        let s = &self.settings;
        let Some(mut job) = self.store.get_job(id).await? else {
            warn!("job record missing; dropping entry");
            self.ack_only(&entry.entry_id).await;
            return Ok(());
        };
        let user_limit = self.admin_settings().await.per_user_limit;
        let lease = match self
            .store
            .claim(&entry.entry_id, &job, &s.consumer, user_limit, s.lease())
            .await?
        {
            Claim::Leased(lease) => lease,
            Claim::Deferred => {
                info!(user = %job.requester.login, "job waits for a free slot (per-user limit or one job per thread)");
                return Ok(());
            }
            Claim::Final(status) => {
                info!(status = status.as_str(), "job already final; entry dropped");
                return Ok(());
            }
            Claim::Missing => {
                warn!("job record missing; entry dropped");
                return Ok(());
            }
            Claim::Stale => {
                info!(entry = %entry.entry_id, "not the job's current entry (a duplicate); dropped");
                return Ok(());
            }
        };
        failpoint::hit("runner:after_claim");
        job.status = JobStatus::Running;
        job.attempt = lease.attempt;
        job.runner = Some(lease.runner.clone());
        let stop = Stop::new();
        self.in_flight
            .lock()
            .unwrap()
            .insert(id, (job.clone(), lease.clone(), stop.clone()));
        let gave_up = entry.deliveries > s.max_deliveries;
        let pipeline = Pipeline::new(self.clone(), job.clone(), lease.clone(), stop.clone());
        let started = Instant::now();
        let outcome = tokio::spawn(pipeline.run(gave_up.then_some(entry.deliveries))).await;
        self.in_flight.lock().unwrap().remove(&id);
        if let Err(join) = outcome {
            error!(panic = join.is_panic(), "job pipeline crashed");
            self.crashed(&job, &lease).await?;
        }
        self.metrics.job_run(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Ends the run with `fields` (carrying the final status): fenced, with the entry
    /// dropped and the slots freed in the same step.
    pub(crate) async fn finish(
        &self,
        job: &Job,
        lease: &Lease,
        fields: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let user_limit = self.admin_settings().await.per_user_limit;
        self.store
            .finish(lease, job, fields, user_limit, self.settings.lease())
            .await
    }

    /// Hands the run's job back to the stream (shutdown).
    pub(crate) async fn hand_back(&self, job: &Job, lease: &Lease) -> Result<(), StoreError> {
        let user_limit = self.admin_settings().await.per_user_limit;
        self.store
            .hand_back(lease, job, user_limit, self.settings.lease())
            .await
    }

    /// A pipeline panicked: the job fails with a plain message (never the panic text,
    /// which could hold anything) and the worker carries on.
    async fn crashed(&self, job: &Job, lease: &Lease) -> Result<(), StoreError> {
        // The record has what the run did before it crashed (the progress comment id).
        let job = &self
            .store
            .get_job(job.id)
            .await?
            .unwrap_or_else(|| job.clone());
        let error = "internal error: the runner crashed on this job; see the runner's log";
        // The work tree removed itself on unwind (WorkTree's Drop); the scratch dir did not.
        let scratch = self
            .settings
            .workdir
            .join("scratch")
            .join(job.id.to_string());
        let _ = tokio::fs::remove_dir_all(scratch).await;
        // Only while the run still holds the job: after a takeover it is the new run's.
        let current = self.store.record(lease, &[]).await.is_ok();
        // The job's own adapter (its personal provider's, if it names one).
        let forge = match current {
            true => self
                .forges
                .for_job(job, self.store.as_ref())
                .await
                .ok()
                .flatten(),
            false => None,
        };
        if let (Some(forge), Some(comment)) = (forge.map(|f| f.forge), job.progress_comment_id) {
            let trigger = self.admin_settings().await.trigger;
            let body = crate::progress::finished(
                job,
                &self.settings.public_url,
                &trigger,
                &Default::default(),
                &crate::progress::Final::Failed {
                    error: error.into(),
                },
                Duration::ZERO,
            );
            if let Err(e) = forge
                .update_comment(&job.repo, job.thread, comment, &body)
                .await
            {
                warn!(error = %e, "could not post the failure");
            }
        }
        // Last, as in the pipeline: the final comment is out once the status says so.
        let fields = [
            ("status", JobStatus::Failed.as_str().to_owned()),
            ("error", error.to_owned()),
            ("finished_at", rfc3339(time::OffsetDateTime::now_utc())),
        ];
        match self.finish(job, lease, &fields).await {
            Err(StoreError::LeaseLost) => Ok(()),
            other => other,
        }
    }
}
