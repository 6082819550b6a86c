//! The acknowledger: the part of `serve` that does the forge-facing work intake must not
//! do in the request path (SPEC sections 4 and 6).
//!
//! It consumes `intake:stream` in the consumer group `acknowledgers` (so several `serve`
//! processes share the work and a crashed one's tasks are claimed by another), and for
//! each task asks the forge whether the requester may act (write access or more), then
//! either reacts `eyes`, posts the progress comment and dispatches the job to
//! `jobs:stream` for the runners, or reacts `confused` and marks the job `rejected`.
//! It runs beside intake, not behind the runners, so acknowledgement arrives within
//! seconds even when every runner is busy.
//!
//! Every step is safe to repeat (SPEC section 13): a task carries a heartbeat while it is
//! handled, so another `serve` takes it over only after `REPOBOX_VISIBILITY_TIMEOUT`
//! without one; a re-run finds the progress comment by its marker instead of posting a
//! second one, and [`JobQueue::dispatch`] appends a job to `jobs:stream` at most once.
//! State changes go through the queue's transitions, which never touch a final job.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::failpoint;
use crate::forges::{Forge, ForgeError, Forges, find_or_create_comment, with_retries};
use crate::job::{Job, JobId, JobStatus, TriggerKind};
use crate::model::Reaction;
use crate::progress;
use crate::settings::SettingsSource;
use crate::store::{CancelOutcome, Dispatch, Steer, Steered, Store, TaskEntry};
use crate::task::{Actor, Origin, ReplyKind, Task};
use crate::telemetry::Metrics;

/// After this many deliveries a task that keeps failing on the forge is given up.
pub const MAX_DELIVERIES: u64 = 5;
/// Tasks handled at once per process; no more are read than there are free workers.
const CONCURRENCY: usize = 64;
/// Most tasks read in one go.
const READ_BATCH: usize = 32;

/// What became of one task.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Done (or given up on, with the reason recorded): acknowledge the entry.
    Done(&'static str),
    /// The forge was unreachable: leave the entry pending so it is retried.
    RetryLater(String),
}

pub struct Acknowledger {
    pub store: Arc<dyn Store>,
    pub forges: Forges,
    pub metrics: Arc<Metrics>,
    pub public_url: String,
    /// Admin settings: the trigger named in replies follows the admin's choice.
    pub settings: SettingsSource,
    /// Consumer name in the group; unique per process.
    pub consumer: String,
    /// A task without its handler's heartbeat this long is taken over by another
    /// `serve` (`REPOBOX_VISIBILITY_TIMEOUT`).
    pub visibility_timeout: Duration,
}

impl Acknowledger {
    /// Consumes tasks until `shutdown` fires, then waits for the tasks in hand.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(consumer = %self.consumer, "acknowledger started");
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let mut in_flight = JoinSet::new();
        let mut last_claim: Option<Instant> = None;
        let mut redis_was_down = false;
        while !shutdown.is_cancelled() {
            while in_flight.try_join_next().is_some() {}
            // Only as many tasks as there are free workers: a task read is a task held.
            let mut free = match tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p,
            } {
                Ok(p) => vec![p],
                Err(_) => break,
            };
            while free.len() < READ_BATCH {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => free.push(p),
                    Err(_) => break,
                }
            }
            let mut entries = Vec::new();
            if last_claim.is_none_or(|t| t.elapsed() >= self.heartbeat_every()) {
                last_claim = Some(Instant::now());
                match self
                    .store
                    .claim_stale_tasks(&self.consumer, self.visibility_timeout, free.len())
                    .await
                {
                    Ok(claimed) => entries.extend(claimed),
                    Err(e) => debug!(error = %e, "could not claim stale tasks"),
                }
            }
            if entries.len() < free.len() {
                let want = free.len() - entries.len();
                let read = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = self.store.read_tasks(&self.consumer, want, Duration::from_secs(2)) => r,
                };
                match read {
                    Ok(new) => {
                        if redis_was_down {
                            info!("storage reachable again; acknowledger resumes");
                            redis_was_down = false;
                            let _ = self.store.ensure_groups().await;
                        }
                        entries.extend(new)
                    }
                    Err(e) => {
                        if !redis_was_down {
                            warn!(error = %e, "acknowledger cannot read tasks; retrying");
                            redis_was_down = true;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                }
            }
            for entry in entries {
                let Some(permit) = free.pop() else { break };
                let this = self.clone();
                in_flight.spawn(async move {
                    this.process(entry).await;
                    drop(permit);
                });
            }
        }
        info!(in_flight = in_flight.len(), "acknowledger stopping");
        while in_flight.join_next().await.is_some() {}
    }

    fn heartbeat_every(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(200))
    }

    /// Resolves once another consumer has taken the task over; until then it keeps the
    /// task's idle time low so nobody does.
    async fn lost(&self, entry_id: &str) {
        let mut tick = tokio::time::interval(self.heartbeat_every());
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.store.touch_task(&self.consumer, entry_id).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => debug!(error = %e, "task heartbeat failed"),
            }
        }
    }

    async fn process(&self, entry: TaskEntry) {
        let task = match entry.task {
            Ok(task) => task,
            Err(reason) => {
                error!(entry = %entry.entry_id, reason, "dropping undecodable intake task");
                self.ack(&entry.entry_id).await;
                return;
            }
        };
        let span = info_span!("task", kind = task.name(), entry = %entry.entry_id);
        let outcome = tokio::select! {
            outcome = self.handle(&task, entry.deliveries).instrument(span.clone()) => outcome,
            () = self.lost(&entry.entry_id) => {
                warn!(parent: &span, "another serve took the task over; leaving it to them");
                return;
            }
        };
        let _enter = span.enter();
        match outcome {
            Outcome::Done(what) => {
                self.metrics.acknowledgement(what);
                self.ack(&entry.entry_id).await;
            }
            Outcome::RetryLater(reason) => {
                self.metrics.acknowledgement("retry_later");
                warn!(
                    reason,
                    deliveries = entry.deliveries,
                    "task left for a later attempt"
                );
            }
        }
    }

    async fn ack(&self, entry_id: &str) {
        if let Err(e) = self.store.ack_task(entry_id).await {
            // It will be claimed again; every handler is idempotent.
            warn!(entry = entry_id, error = %e, "could not acknowledge task");
        }
    }

    /// Handles one task.
    async fn handle(&self, task: &Task, deliveries: u64) -> Outcome {
        let result = match task {
            Task::Acknowledge { job } => self.acknowledge(*job, deliveries).await,
            Task::Reply { origin, reply } => self.reply(origin, reply).await,
            Task::Cancel { origin } => self.cancel(origin).await,
            Task::Retry { origin } => self.retry(origin).await,
            Task::CancelJob { job, actor } => self.cancel_job(*job, actor).await,
            Task::RetryJob { job, actor } => self.retry_job(*job, actor).await,
        };
        match result {
            Ok(outcome) => outcome,
            Err(Failure::Store(e)) => Outcome::RetryLater(format!("storage: {e}")),
            Err(Failure::Forge(e)) if e.is_transient() => Outcome::RetryLater(e.to_string()),
            Err(Failure::Forge(e)) => {
                warn!(error = %e, "forge refused the acknowledgement");
                Outcome::Done("forge_refused")
            }
        }
    }

    /// The trigger in force now (admin setting, else the configured one).
    async fn trigger(&self) -> String {
        self.settings.current().await.trigger
    }

    fn forge(&self, origin_forge: crate::model::ForgeKind) -> Option<&Arc<dyn Forge>> {
        self.forges.get(origin_forge)
    }

    async fn acknowledge(&self, id: JobId, deliveries: u64) -> Result<Outcome, Failure> {
        let Some(job) = self.store.get_job(id).await? else {
            warn!(job = %id, "acknowledge: job record missing");
            return Ok(Outcome::Done("missing_job"));
        };
        let span = info_span!("acknowledge", job = %id, repo = %job.repo.full_name, thread = job.thread.number);
        async move {
            if job.status != JobStatus::Queued {
                return Ok(Outcome::Done("already_final"));
            }
            let job_forge = match self.forges.for_job(&job, self.store.as_ref()).await {
                Ok(forge) => forge,
                Err(e) if e.is_transient() => return Ok(Outcome::RetryLater(e.to_string())),
                Err(e) => {
                    self.finish(&job, JobStatus::Failed, &e.to_string()).await?;
                    return Ok(Outcome::Done("provider_unusable"));
                }
            };
            let Some(forge) = job_forge.as_ref().map(|f| &f.forge) else {
                self.finish(
                    &job,
                    JobStatus::Failed,
                    &format!("{} is not configured on this Repobox", job.repo.forge),
                )
                .await?;
                return Ok(Outcome::Done("forge_not_configured"));
            };
            // The admin API token needs no forge account's access (SPEC 18).
            let level = match crate::forges::requester_access(forge.as_ref(), &job).await {
                Ok(level) => level,
                Err(e) if e.is_transient() && deliveries < MAX_DELIVERIES => {
                    return Ok(Outcome::RetryLater(e.to_string()));
                }
                Err(e) => {
                    let error = format!("could not check permissions: {e}");
                    let shown = job_forge
                        .as_ref()
                        .map(|f| f.explain(&error))
                        .unwrap_or(error);
                    self.finish(&job, JobStatus::Failed, &shown).await?;
                    return Ok(Outcome::Done("permission_check_failed"));
                }
            };
            if !level.may_run_jobs() {
                info!(requester = %job.requester.login, ?level, "requester lacks write access");
                if let Some(comment) = job.trigger_comment {
                    self.best_effort(forge.react(
                        &job.repo,
                        job.thread,
                        comment,
                        Reaction::Confused,
                    ))
                    .await;
                }
                self.finish(&job, JobStatus::Rejected, "requester lacks write access")
                    .await?;
                return Ok(Outcome::Done("rejected"));
            }
            if let Some(outcome) = self.steer_running(forge, &job).await? {
                return Ok(outcome);
            }
            if let Some(comment) = job.trigger_comment {
                self.best_effort(forge.react(&job.repo, job.thread, comment, Reaction::Eyes))
                    .await;
            }
            let body = progress::queued(&job, &self.public_url);
            match job.progress_comment_id {
                // A repo + prompt job: its progress is on the dashboard only.
                _ if job.thread.is_none() => {}
                Some(existing) => {
                    self.best_effort(with_retries(|| {
                        forge.update_comment(&job.repo, job.thread, existing, &body)
                    }))
                    .await
                }
                None => {
                    let marker = progress::marker(job.id);
                    match find_or_create_comment(
                        forge.as_ref(),
                        &job.repo,
                        job.thread,
                        &marker,
                        &body,
                    )
                    .await
                    {
                        Ok((comment_id, created)) => {
                            if created {
                                failpoint::hit("ack:after_comment");
                            }
                            self.store
                                .set_job_fields(
                                    job.id,
                                    &[("progress_comment_id", comment_id.to_string())],
                                )
                                .await?;
                        }
                        // The runner looks it up (it may exist after an ambiguous
                        // failure) and posts it when it is missing.
                        Err(e) => {
                            warn!(error = %e, "progress comment not posted; the runner will retry")
                        }
                    }
                }
            }
            match self.store.dispatch(job.id).await? {
                Dispatch::Dispatched => failpoint::hit("ack:after_dispatch"),
                Dispatch::Already => {
                    info!("already dispatched by an earlier acknowledgement");
                    return Ok(Outcome::Done("already_dispatched"));
                }
                Dispatch::NotQueued => return Ok(Outcome::Done("already_final")),
            }
            let latency = (OffsetDateTime::now_utc() - job.created_at).as_seconds_f64();
            self.metrics.ack_latency(latency);
            info!(
                latency_ms = (latency * 1000.0) as u64,
                "job acknowledged and dispatched"
            );
            Ok(Outcome::Done("acknowledged"))
        }
        .instrument(span)
        .await
    }

    /// SPEC 16: a writer's plain `/repobox …` while the thread's job runs with an agent
    /// that takes instructions goes to that agent, and the provisional job is discarded
    /// (`/repobox queue …`, labels, the dashboard and empty commands never steer).
    /// `None`: nothing to steer; the job goes on as usual.
    async fn steer_running(
        &self,
        forge: &Arc<dyn Forge>,
        job: &Job,
    ) -> Result<Option<Outcome>, Failure> {
        if job.queue_only || job.trigger != TriggerKind::Comment || job.instructions.is_empty() {
            return Ok(None);
        }
        let running = self
            .thread_job(&job.repo, job.thread, |j| {
                j.id != job.id && j.status == JobStatus::Running
            })
            .await?;
        let Some(running) = running else {
            return Ok(None);
        };
        let steer = Steer {
            from_job: job.id,
            login: job.requester.login.clone(),
            text: job.instructions.clone(),
        };
        if self.store.steer(running.id, &steer).await? == Steered::NotSteerable {
            return Ok(None);
        }
        if let Some(comment) = job.trigger_comment {
            self.best_effort(forge.react(&job.repo, job.thread, comment, Reaction::Eyes))
                .await;
        }
        self.store.discard_job(job).await?;
        info!(into = %running.id, "command given to the thread's running job");
        Ok(Some(Outcome::Done("steered")))
    }

    /// Ends a job that is still queued (a final job is never touched).
    async fn finish(&self, job: &Job, status: JobStatus, error: &str) -> Result<(), Failure> {
        if !self.store.end_queued(job.id, status, error).await? {
            info!(job = %job.id, "job no longer queued; left as it is");
        }
        Ok(())
    }

    async fn best_effort(&self, call: impl Future<Output = Result<(), ForgeError>>) {
        if let Err(e) = call.await {
            warn!(error = %e, "forge call failed (not retried)");
        }
    }

    async fn authorized(&self, forge: &Arc<dyn Forge>, origin: &Origin) -> Result<bool, Failure> {
        let level = with_retries(|| forge.access_level(&origin.repo, &origin.requester)).await?;
        if level.may_run_jobs() {
            return Ok(true);
        }
        if let Some(comment) = origin.comment {
            self.best_effort(forge.react(&origin.repo, origin.thread, comment, Reaction::Confused))
                .await;
        }
        Ok(false)
    }

    async fn reply(&self, origin: &Origin, reply: &ReplyKind) -> Result<Outcome, Failure> {
        let Some(forge) = self.forge(origin.repo.forge) else {
            return Ok(Outcome::Done("forge_not_configured"));
        };
        let trigger = self.trigger().await;
        let body = match reply {
            ReplyKind::Help => progress::help(&trigger),
            ReplyKind::NearMiss { word, suggestion } => {
                progress::near_miss(&trigger, word, suggestion)
            }
        };
        forge
            .create_comment(&origin.repo, origin.thread, &body)
            .await?;
        Ok(Outcome::Done("replied"))
    }

    /// The newest of the thread's latest 50 jobs that `pick` accepts.
    async fn thread_job(
        &self,
        repo: &crate::model::RepoRef,
        thread: crate::model::ThreadRef,
        pick: impl Fn(&Job) -> bool,
    ) -> Result<Option<Job>, Failure> {
        let ids = self.store.thread_jobs(repo, thread, 50).await?;
        for id in ids {
            if let Some(job) = self.store.get_job(id).await?
                && pick(&job)
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn cancel(&self, origin: &Origin) -> Result<Outcome, Failure> {
        let Some(forge) = self.forge(origin.repo.forge) else {
            return Ok(Outcome::Done("forge_not_configured"));
        };
        if !self.authorized(forge, origin).await? {
            return Ok(Outcome::Done("rejected"));
        }
        let target = self
            .thread_job(&origin.repo, origin.thread, |j| {
                matches!(j.status, JobStatus::Queued | JobStatus::Running)
            })
            .await?;
        let Some(job) = target else {
            let body = progress::nothing_to_cancel(&self.trigger().await);
            forge
                .create_comment(&origin.repo, origin.thread, &body)
                .await?;
            return Ok(Outcome::Done("nothing_to_cancel"));
        };
        if let Some(comment) = origin.comment {
            self.best_effort(forge.react(&origin.repo, origin.thread, comment, Reaction::Eyes))
                .await;
        }
        self.cancel_one(forge, &job, &origin.requester.login).await
    }

    /// The dashboard's or the API's cancel: the job named, if `actor` may act on it.
    async fn cancel_job(&self, id: JobId, actor: &Actor) -> Result<Outcome, Failure> {
        let Some((forge, job)) = self.job_for(id, actor).await? else {
            return Ok(Outcome::Done("rejected"));
        };
        if !matches!(job.status, JobStatus::Queued | JobStatus::Running) {
            return Ok(Outcome::Done("nothing_to_cancel"));
        }
        self.cancel_one(&forge, &job, &actor.login).await
    }

    /// The job `id` and its forge when `actor` may act on it now: an admin, or a person
    /// whose own forge account has write access to the job's repository.
    async fn job_for(
        &self,
        id: JobId,
        actor: &Actor,
    ) -> Result<Option<(Arc<dyn Forge>, Job)>, Failure> {
        let Some(job) = self.store.get_job(id).await? else {
            return Ok(None);
        };
        let Some(forge) = self.forge(job.repo.forge).cloned() else {
            return Ok(None);
        };
        if actor.admin {
            return Ok(Some((forge, job)));
        }
        let Some(user) = actor
            .forge_user
            .as_ref()
            .filter(|_| actor.forge == Some(job.repo.forge))
        else {
            return Ok(None);
        };
        let level = with_retries(|| forge.access_level(&job.repo, user)).await?;
        if !level.may_run_jobs() {
            info!(job = %id, by = %actor.login, "dashboard command refused: no write access");
            return Ok(None);
        }
        Ok(Some((forge, job)))
    }

    async fn cancel_one(
        &self,
        forge: &Arc<dyn Forge>,
        job: &Job,
        by: &str,
    ) -> Result<Outcome, Failure> {
        match self.store.cancel(job.id).await? {
            CancelOutcome::Cancelled => {
                let body = progress::cancelled(job, &self.public_url, by);
                match job.progress_comment_id {
                    Some(id) => {
                        self.best_effort(with_retries(|| {
                            forge.update_comment(&job.repo, job.thread, id, &body)
                        }))
                        .await
                    }
                    None => {
                        let marker = progress::marker(job.id);
                        find_or_create_comment(
                            forge.as_ref(),
                            &job.repo,
                            job.thread,
                            &marker,
                            &body,
                        )
                        .await?;
                    }
                }
                info!(job = %job.id, by, "queued job cancelled");
            }
            CancelOutcome::Requested => {
                // The runner watches `cancel_requested`, stops the agent and writes the
                // final state.
                self.best_effort(async {
                    forge
                        .create_comment(&job.repo, job.thread, &progress::cancel_requested(job))
                        .await
                        .map(|_| ())
                })
                .await;
                info!(job = %job.id, by, "cancel requested for running job");
            }
            CancelOutcome::Final => {
                info!(job = %job.id, "the job ended before the cancel arrived");
            }
        }
        Ok(Outcome::Done("cancelled"))
    }

    async fn retry(&self, origin: &Origin) -> Result<Outcome, Failure> {
        let Some(forge) = self.forge(origin.repo.forge) else {
            return Ok(Outcome::Done("forge_not_configured"));
        };
        if !self.authorized(forge, origin).await? {
            return Ok(Outcome::Done("rejected"));
        }
        let Some(previous) = self
            .thread_job(&origin.repo, origin.thread, |j| {
                j.status != JobStatus::Rejected
            })
            .await?
        else {
            let body = progress::nothing_to_retry(&self.trigger().await);
            forge
                .create_comment(&origin.repo, origin.thread, &body)
                .await?;
            return Ok(Outcome::Done("nothing_to_retry"));
        };
        let trigger = if origin.comment.is_some() {
            TriggerKind::Comment
        } else {
            previous.trigger
        };
        self.requeue(&previous, origin.requester.clone(), trigger, origin.comment)
            .await
    }

    /// The dashboard's or the API's retry: a new job like the one named, once it ended.
    async fn retry_job(&self, id: JobId, actor: &Actor) -> Result<Outcome, Failure> {
        let Some((_, previous)) = self.job_for(id, actor).await? else {
            return Ok(Outcome::Done("rejected"));
        };
        if !previous.status.is_final() {
            return Ok(Outcome::Done("still_running"));
        }
        // The person who asked is the new job's requester when their account is on the
        // job's forge; an admin signed in elsewhere retries on the requester's behalf.
        let requester = actor
            .forge_user
            .clone()
            .filter(|_| actor.forge == Some(previous.repo.forge))
            .unwrap_or_else(|| previous.requester.clone());
        self.requeue(&previous, requester, previous.trigger, None)
            .await
    }

    async fn requeue(
        &self,
        previous: &Job,
        requester: crate::model::UserRef,
        trigger: TriggerKind,
        comment: Option<crate::model::CommentRef>,
    ) -> Result<Outcome, Failure> {
        let mut job = Job::new(
            previous.repo.clone(),
            previous.thread,
            previous.thread_title.clone(),
            trigger,
            requester,
            previous.instructions.clone(),
            OffsetDateTime::now_utc(),
        );
        job.trigger_comment = comment;
        job.review = previous.review.clone();
        // The new job goes through the same acknowledgement as any other.
        self.store
            .accept(None, Some(&job), &Task::Acknowledge { job: job.id })
            .await?;
        info!(job = %job.id, previous = %previous.id, "retry queued");
        Ok(Outcome::Done("retried"))
    }
}

/// Why a handler stopped early.
enum Failure {
    Store(crate::store::StoreError),
    Forge(ForgeError),
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<ForgeError> for Failure {
    fn from(e: ForgeError) -> Self {
        Failure::Forge(e)
    }
}
