//! Job runners (`repobox runner`, the worker half of `repobox all`).
//!
//! A runner is one consumer in the group `runners` on `jobs:stream`, running up to
//! `REPOBOX_WORKERS` jobs at once. Delivery is at-least-once:
//! - an entry stays pending until its job reaches a final state; a runner that dies
//!   leaves it pending, and after the visibility timeout another runner claims it
//!   (XAUTOCLAIM). A live runner's heartbeat resets the idle time of its entries so long
//!   jobs are not stolen;
//! - effects are exactly-once because every effect is recorded on the job as soon as it
//!   happens (progress comment id, branch, pushed commit, PR/MR URL) and looked up
//!   before it is made again ([`pipeline`]);
//! - admission ([`Store::admit`]) enforces the per-user limit and one running job per
//!   thread across all runners: a job over a limit leaves the stream for a waiting list
//!   and comes back when a slot frees up, so other users are never blocked behind it;
//! - SIGTERM stops the agents and hands their jobs back to the stream at once.
//!
//! Modules: [`pipeline`] (one job, step by step), [`reporter`] (the progress comment),
//! [`joblog`] (the job log), [`repo_config`] (`.repobox.yml`).

pub mod context;
pub mod joblog;
pub mod pipeline;
pub mod repo_config;
pub mod reporter;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::agent::Agent;
use crate::forges::Forges;
use crate::git::Mirrors;
use crate::job::{Job, JobId, JobStatus, rfc3339};
use crate::sandbox::SandboxKind;
use crate::settings::AdminSettings;
use crate::store::{Admission, JobEntry, Start, Store, StoreError};
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
    pub sandbox_network: bool,
    /// Minimum time between two edits of a progress comment.
    pub progress_interval: Duration,
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
    /// Entries being worked on: entry id → (job, its stop handle).
    in_flight: Mutex<HashMap<String, (Job, Stop)>>,
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
        for (_, stop) in self.in_flight.lock().unwrap().values() {
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

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_every());
        loop {
            tick.tick().await;
            let entries: Vec<(String, Job)> = self
                .in_flight
                .lock()
                .unwrap()
                .iter()
                .map(|(id, (job, _))| (id.clone(), job.clone()))
                .collect();
            for (entry_id, job) in entries {
                if let Err(e) = self
                    .store
                    .touch_job(
                        &self.settings.consumer,
                        &entry_id,
                        &job,
                        self.settings.lease(),
                    )
                    .await
                {
                    warn!(job = %job.id, error = %e, "heartbeat failed");
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
        if let Err(e) = self.store.ack_job(entry_id).await {
            warn!(error = %e, "could not acknowledge entry");
        }
    }

    async fn handle_job(self: Arc<Self>, entry: &JobEntry, id: JobId) -> Result<(), StoreError> {
        let s = &self.settings;
        let Some(job) = self.store.get_job(id).await? else {
            warn!("job record missing; dropping entry");
            self.ack_only(&entry.entry_id).await;
            return Ok(());
        };
        if job.status.is_final() {
            info!(
                status = job.status.as_str(),
                "job already final; dropping entry"
            );
            return self.release(entry, &job, false).await;
        }
        let user_limit = self.admin_settings().await.per_user_limit;
        if self
            .store
            .admit(&entry.entry_id, &job, user_limit, s.lease())
            .await?
            == Admission::Deferred
        {
            info!(user = %job.requester.login, "job waits for a free slot (per-user limit or one job per thread)");
            return Ok(());
        }
        match self.store.start_job(id, &s.consumer).await? {
            Start::Running => {}
            Start::Missing | Start::Final(_) => return self.release(entry, &job, false).await,
        }
        let stop = Stop::new();
        self.in_flight
            .lock()
            .unwrap()
            .insert(entry.entry_id.clone(), (job.clone(), stop.clone()));
        let gave_up = entry.deliveries > s.max_deliveries;
        let pipeline = Pipeline::new(self.clone(), job.clone(), stop.clone());
        let started = Instant::now();
        let outcome = tokio::spawn(pipeline.run(gave_up.then_some(entry.deliveries))).await;
        self.in_flight.lock().unwrap().remove(&entry.entry_id);
        let handed_back = match outcome {
            Ok(handed_back) => handed_back,
            Err(join) => {
                error!(panic = join.is_panic(), "job pipeline crashed");
                self.crashed(&job).await?;
                false
            }
        };
        self.metrics.job_run(started.elapsed().as_secs_f64());
        self.release(entry, &job, handed_back).await
    }

    /// Acknowledges the entry and frees the job's slots (see [`Store::release`]).
    async fn release(&self, entry: &JobEntry, job: &Job, requeue: bool) -> Result<(), StoreError> {
        let user_limit = self.admin_settings().await.per_user_limit;
        self.store
            .release(
                &entry.entry_id,
                job,
                user_limit,
                self.settings.lease(),
                requeue,
            )
            .await
    }

    /// A pipeline panicked: the job fails with a plain message (never the panic text,
    /// which could hold anything) and the worker carries on.
    async fn crashed(&self, job: &Job) -> Result<(), StoreError> {
        let error = "internal error: the runner crashed on this job; see the runner's log";
        // The work tree removed itself on unwind (WorkTree's Drop); the scratch dir did not.
        let scratch = self
            .settings
            .workdir
            .join("scratch")
            .join(job.id.to_string());
        let _ = tokio::fs::remove_dir_all(scratch).await;
        if let (Some(forge), Some(comment)) =
            (self.forges.get(job.repo.forge), job.progress_comment_id)
        {
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
        self.store
            .set_job_fields(
                job.id,
                &[
                    ("status", JobStatus::Failed.as_str().to_owned()),
                    ("error", error.to_owned()),
                    ("finished_at", rfc3339(time::OffsetDateTime::now_utc())),
                ],
            )
            .await?;
        Ok(())
    }
}
