//! One job, step by step (SPEC section 6): re-check → prepare the work tree → agent →
//! commit → push → pull/merge request → report.
//!
//! Exactly-once effects under re-delivery (SPEC section 13): every write of the run is
//! fenced by its [`Lease`], each effect is recorded as soon as it has happened, and each
//! one is looked up where it lives before it is made again:
//! - the progress comment: `progress_comment_id`, else found on the thread by its marker
//!   (posted here only if `serve` never did);
//! - the branch: `branch`, chosen once, so a retry that collides gets a suffix but a
//!   re-delivery reuses its own (the protected-head fallback branch included);
//! - the commit: every commit carries `Repobox-Job: <id>`; the push plan (`push_branch`,
//!   `push_parent`) is recorded before the push, and a re-delivered job whose target
//!   branch already holds a commit with its trailer goes straight on to the pull/merge
//!   request without running the agent;
//! - the pull/merge request: found by head branch before it is opened, and after an
//!   ambiguous failure looked up again rather than posted blindly.
//!
//! The crash points of SPEC section 13 ([`failpoint`]) sit at each effect boundary.
//!
//! Security at the edges (SPEC section 14):
//! - a pull/merge request whose head is in a fork ends `rejected` ("jobs on pull
//!   requests from forks are off") before anything is fetched, unless the admin setting
//!   `allow_forks` is on;
//! - the commit is checked for protected paths ([`super::protected`]) before it is
//!   recorded or pushed: the agent's own commit, and on a fork every commit since the
//!   merge base with the base branch; refused unless `allow_workflow_changes`;
//! - the agent's text (title, body, summary, commit message, its error) is neutralised
//!   ([`super::neutralize`]) before Repobox posts it; Repobox's own template text is not;
//! - the thread's comments reach the prompt only from writers ([`context::writers_only`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Runner;
use super::checks::{self, SandboxChecks};
use super::context::{self, DiffContext};
use super::instructions::{self, InstructionFile};
use super::joblog::JobLog;
use super::neutralize::{OwnIssue, neutralize};
use super::protected::{self, Protected};
use super::repo_config::{self, RepoConfig};
use super::reporter::Reporter;
use super::steering::JobSteering;
use crate::agent::command::CommandAgent;
use crate::agent::{Activity, Agent, AgentError, AgentOutcome, AgentRequest};
use crate::failpoint;
use crate::forges::{
    ChangeRequest, Discussion, Forge, ForgeError, NewChangeRequest, find_or_create_comment,
    with_retries,
};
use crate::forges::{HeadState, HeadStatus};
use crate::git::{CommitInfo, Credentials, GitError, Mirror, WorkTree};
use crate::job::{Job, JobStatus, rfc3339};
use crate::model::{ForgeKind, Reaction, ThreadKind};
use crate::progress::{self, Checklist, Final, StepState};
use crate::sandbox::network::proxy::{EgressProxy, OnRefusal};
use crate::sandbox::network::{Allowlist, NetworkMode, Policy, Refusal};
use crate::sandbox::{Limits, ProxyBinding, SandboxKind, SandboxSpec};
use crate::secret::{Secret, mask_all};
use crate::settings::AdminSettings;
use crate::store::{Lease, StoreError};

/// Why a job was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `/repobox cancel`, the dashboard or `repobox jobs cancel`.
    Cancelled,
    /// `REPOBOX_JOB_TIMEOUT` passed.
    TimedOut,
    /// The runner is shutting down: the job is handed back, not ended.
    Shutdown,
    /// Another runner holds the job now (this run's lease is gone): stop, touch nothing.
    LeaseLost,
}

/// A job's stop switch: the first reason wins.
#[derive(Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

/// A step that could not be done; the text is shown on the thread, so it is masked.
#[derive(Debug)]
struct Failure(String);

impl From<ForgeError> for Failure {
    fn from(e: ForgeError) -> Self {
        Failure(e.to_string())
    }
}
impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(e.to_string())
    }
}
impl From<GitError> for Failure {
    fn from(e: GitError) -> Self {
        Failure(e.to_string())
    }
}

enum Outcome {
    Done(Final),
    /// Shutdown: the job goes back to the stream for another runner.
    HandBack,
    /// The lease is gone: the job is another run's now.
    Lost,
}

/// Where the job's commits go.
enum Target {
    /// A new branch, and a new pull/merge request into `base`.
    NewBranch { base: String },
    /// The head branch of the thread's own pull/merge request.
    Head(ChangeRequest),
}

pub struct Pipeline {
    runner: Arc<Runner>,
    job: Job,
    /// This run's lease: the fence of every write.
    lease: Lease,
    stop: Stop,
    checklist: Checklist,
    started: Instant,
    secrets: Arc<Mutex<Vec<Secret>>>,
    work_tree: Option<WorkTree>,
    scratch: Option<PathBuf>,
    /// The thread's text for the prompt, when the forge gave it.
    discussion: Option<Discussion>,
    /// A pull/merge request's changes for the prompt.
    diff: Option<DiffContext>,
    /// The admin settings as they were when the job started.
    admin: AdminSettings,
    /// The repository's instruction files (`AGENTS.md`…) from the default branch.
    guidance: Vec<InstructionFile>,
    /// Earlier jobs of this thread, or whose commits are on this pull/merge request,
    /// oldest first (SPEC 16, follow-ups).
    earlier: Vec<Job>,
    /// The personal provider the job runs with (SPEC 18), once opened.
    provider: Option<crate::store::Provider>,
    /// The adapter of the job's forge calls (the provider's or the configured forge's),
    /// from the start of [`Pipeline::run`].
    forge: Option<Arc<dyn Forge>>,
}

impl Pipeline {
    pub fn new(runner: Arc<Runner>, job: Job, lease: Lease, stop: Stop) -> Pipeline {
        Pipeline {
            job,
            lease,
            stop,
            checklist: Checklist::default(),
            started: Instant::now(),
            secrets: Arc::default(),
            work_tree: None,
            scratch: None,
            discussion: None,
            diff: None,
            admin: runner.settings.admin_defaults.clone(),
            guidance: Vec::new(),
            earlier: Vec::new(),
            provider: None,
            forge: None,
            runner,
        }
    }

    /// The adapter of the job's forge calls and pushes: its personal provider's (kept
    /// in `provider`, so errors can name it), or the configured forge's; why not, as
    /// the job's error.
    async fn job_forge(&mut self) -> Result<Arc<dyn Forge>, String> {
        let forge = self.open_forge().await?;
        self.forge = Some(forge.clone());
        Ok(forge)
    }

    async fn open_forge(&mut self) -> Result<Arc<dyn Forge>, String> {
        if self.job.provider.is_none() {
            return self
                .runner
                .forges
                .get(self.job.repo.forge)
                .cloned()
                .ok_or_else(|| {
                    format!("{} is not configured on this runner", self.job.repo.forge)
                });
        }
        let personal = self
            .runner
            .forges
            .personal
            .clone()
            .ok_or_else(|| crate::forges::personal::ProviderError::NoKey.to_string())?;
        let opened = personal
            .forge_for(&self.job, self.runner.store.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        self.provider = opened.provider;
        Ok(opened.forge)
    }

    /// Runs the job to a final state; `true` when it was handed back instead (shutdown).
    /// `gave_up`: the delivery count when the job has been delivered too often.
    pub async fn run(mut self, gave_up: Option<u64>) -> bool {
        self.admin = self.runner.admin_settings().await;
        let store = self.runner.store.clone();
        let log = JobLog::start(
            store.clone(),
            self.job.id,
            self.secrets.clone(),
            self.runner.settings.log_lines_per_second,
        );
        let forge = match self.job_forge().await {
            Ok(forge) => forge,
            Err(error) => {
                log.step(error.clone());
                log.close().await;
                let _ = self.record_final(JobStatus::Failed, Some(error)).await;
                return false;
            }
        };
        if self.job.cancel_requested {
            self.stop.stop(StopReason::Cancelled);
        }
        let attempt = self.lease.attempt;
        log.step(format!(
            "Runner {} took the job (attempt {attempt})",
            self.runner.settings.consumer
        ));
        let reporter = match self.progress_comment(forge.as_ref()).await {
            Ok(None) => None,
            Ok(Some(id)) => Some(Reporter::start(
                forge.clone(),
                self.job.repo.clone(),
                self.job.thread,
                id,
                self.runner.settings.progress_interval,
            )),
            Err(Failure(e)) => {
                warn!(error = %e, "no progress comment; the job runs without one");
                None
            }
        };
        // Dropped on every way out, a panic included: stops the cancel watch and timer.
        let watchers = self.start_watchers().drop_guard();
        let outcome = match gave_up {
            Some(n) => Outcome::Done(Final::Failed {
                error: format!(
                    "gave up after {n} deliveries: runners kept stopping while working on this job"
                ),
            }),
            None => match self.steps(forge.as_ref(), reporter.as_ref(), &log).await {
                Ok(o) => o,
                // A stopped job ends as its stop reason says, whichever step noticed.
                Err(Failure(text)) => self.stopped().unwrap_or_else(|| {
                    Outcome::Done(Final::Failed {
                        error: self.mask(&text),
                    })
                }),
            },
        };
        drop(watchers);
        self.clean_up(&log).await;
        // The record changes last: whoever sees the new status (a test, `jobs show`, the
        // dashboard) also finds the final comment written and the whole log stored.
        match outcome {
            Outcome::Lost => {
                log.step("Another runner took the job over; this run stopped without finishing it");
                log.close().await;
                warn!("lease lost; the job is left to the runner that holds it");
                false
            }
            Outcome::HandBack => {
                log.step("Runner shutting down: job handed back to the queue");
                if let Some(r) = reporter {
                    r.finish(&progress::running(
                        &self.job,
                        &self.runner.settings.public_url,
                        &self.checklist,
                    ))
                    .await
                    .ok();
                }
                log.close().await;
                if let Err(e) = self.runner.hand_back(&self.job, &self.lease).await {
                    warn!(error = %e, "could not hand the job back; it is re-delivered after the visibility timeout");
                }
                true
            }
            Outcome::Done(final_state) => {
                let (state, summary) = match &final_state {
                    Final::Succeeded { .. } | Final::NoChanges => {
                        (HeadState::Success, "The Repobox job succeeded")
                    }
                    Final::Cancelled => (HeadState::Cancelled, "The Repobox job was cancelled"),
                    Final::Failed { .. } | Final::Rejected { .. } => {
                        (HeadState::Failure, "The Repobox job failed; see its page")
                    }
                };
                self.head_status(forge.as_ref(), state, summary, &log).await;
                let (status, error) = self.report_final(&log, reporter, &final_state).await;
                log.close().await;
                failpoint::hit("runner:before_final");
                if let Err(e) = self.record_final(status, error).await {
                    warn!(error = %e, "could not record the final state");
                }
                info!(status = status.as_str(), "job finished");
                false
            }
        }
    }

    /// SPEC 17: the job's status on the commit it pushed (nothing before a push). Best
    /// effort: a forge that refuses (an installation that has not granted `checks:
    /// write`) costs a log line, not the job.
    async fn head_status(
        &mut self,
        forge: &dyn Forge,
        state: HeadState,
        summary: &str,
        log: &JobLog,
    ) {
        let Some(sha) = self.job.pushed_sha.clone() else {
            return;
        };
        let id = self.job.id.to_string();
        let url = format!(
            "{}/jobs/{id}",
            self.runner.settings.public_url.trim_end_matches('/')
        );
        let status = HeadStatus {
            sha: &sha,
            state,
            details_url: &url,
            job: &id,
            summary,
        };
        let repo = self.job.repo.clone();
        let known = self.job.check_run_id;
        match with_retries(|| forge.head_status(&repo, &status, known)).await {
            Ok(Some(run)) if known != Some(run) => {
                self.job.check_run_id = Some(run);
                if let Err(Failure(e)) = self.record(&[("check_run_id", run.to_string())]).await {
                    warn!(error = %e, "the check run's id was not recorded");
                }
            }
            Ok(_) => {}
            Err(e) => log.step(format!(
                "Could not set the job's status on commit {}: {e}",
                short(&sha)
            )),
        }
    }

    fn mask(&self, text: &str) -> String {
        mask_all(text, &self.secrets.lock().unwrap())
    }

    /// The job's progress comment id, showing the running state; posts the
    /// acknowledgement (eyes and the comment) when `serve` never did, after looking for
    /// one an earlier attempt posted.
    async fn progress_comment(&mut self, forge: &dyn Forge) -> Result<Option<u64>, Failure> {
        // A repo + prompt job: progress on the dashboard only (SPEC 18).
        if self.job.thread.is_none() {
            return Ok(None);
        }
        let body = progress::running(&self.job, &self.runner.settings.public_url, &self.checklist);
        if let Some(id) = self.job.progress_comment_id {
            self.fence().await?;
            with_retries(|| forge.update_comment(&self.job.repo, self.job.thread, id, &body))
                .await?;
            failpoint::hit("runner:after_comment");
            return Ok(Some(id));
        }
        if let Some(comment) = self.job.trigger_comment {
            let _ = with_retries(|| {
                forge.react(&self.job.repo, self.job.thread, comment, Reaction::Eyes)
            })
            .await;
        }
        self.fence().await?;
        let marker = progress::marker(self.job.id);
        let (id, _created) =
            find_or_create_comment(forge, &self.job.repo, self.job.thread, &marker, &body).await?;
        failpoint::hit("runner:after_comment");
        self.job.progress_comment_id = Some(id);
        self.record(&[("progress_comment_id", id.to_string())])
            .await?;
        Ok(Some(id))
    }

    /// Cancel watch (polls the record every second) and the job timeout.
    fn start_watchers(&self) -> CancellationToken {
        let done = CancellationToken::new();
        let (store, id, stop) = (self.runner.store.clone(), self.job.id, self.stop.clone());
        let lease = self.lease.clone();
        let watch_done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = watch_done.cancelled() => return,
                }
                match store.get_job(id).await {
                    // Another run holds the job (or it ended): stop within a second.
                    Ok(Some(job))
                        if job.status != JobStatus::Running
                            || job.attempt != lease.attempt
                            || job.runner.as_deref() != Some(lease.runner.as_str()) =>
                    {
                        stop.stop(StopReason::LeaseLost);
                        return;
                    }
                    Ok(Some(job)) if job.cancel_requested => {
                        stop.stop(StopReason::Cancelled);
                        return;
                    }
                    Ok(None) => {
                        stop.stop(StopReason::LeaseLost);
                        return;
                    }
                    _ => {}
                }
            }
        });
        let (timeout, stop, timer_done) = (
            self.runner.settings.job_timeout,
            self.stop.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => stop.stop(StopReason::TimedOut),
                _ = timer_done.cancelled() => {}
            }
        });
        done
    }

    /// The outcome for a stopped job, if it was stopped.
    fn stopped(&self) -> Option<Outcome> {
        Some(match self.stop.reason()? {
            StopReason::Cancelled => Outcome::Done(Final::Cancelled),
            StopReason::TimedOut => Outcome::Done(Final::Failed {
                error: format!(
                    "timed out after {} (REPOBOX_JOB_TIMEOUT); the agent was stopped",
                    humantime::format_duration(self.runner.settings.job_timeout)
                ),
            }),
            StopReason::Shutdown => Outcome::HandBack,
            StopReason::LeaseLost => Outcome::Lost,
        })
    }

    fn update(&self, reporter: Option<&Reporter>) {
        if let Some(r) = reporter {
            r.update(progress::running(
                &self.job,
                &self.runner.settings.public_url,
                &self.checklist,
            ));
        }
    }

    /// Writes fields of the job under the run's lease; a lost lease stops the run.
    async fn record(&self, fields: &[(&str, String)]) -> Result<(), Failure> {
        match self.runner.store.record(&self.lease, fields).await {
            Err(StoreError::LeaseLost) => {
                self.stop.stop(StopReason::LeaseLost);
                Err(Failure(StoreError::LeaseLost.to_string()))
            }
            other => other.map_err(Failure::from),
        }
    }

    /// Checks the lease right before an effect on the forge or the remote.
    async fn fence(&self) -> Result<(), Failure> {
        self.record(&[]).await
    }

    async fn steps(
        &mut self,
        forge: &dyn Forge,
        reporter: Option<&Reporter>,
        log: &JobLog,
    ) -> Result<Outcome, Failure> {
        if let Some(o) = self.stopped() {
            return Ok(o);
        }
        self.update(reporter);
        let job = self.job.clone();
        // Re-check: access may have been revoked while the job waited (the admin API
        // token has no forge account to check).
        let level = crate::forges::requester_access(forge, &job).await?;
        if !level.may_run_jobs() {
            log.step(format!(
                "@{} no longer has write access",
                job.requester.login
            ));
            return Ok(Outcome::Done(Final::Rejected {
                reason: format!(
                    "@{} does not have write access to `{}` any more.",
                    job.requester.login, job.repo.full_name
                ),
            }));
        }
        let info = with_retries(|| forge.repository(&job.repo)).await?;
        // The prompt quotes the thread as it is now; without it the command still stands.
        // A repo + prompt job has none.
        if !job.thread.is_none() {
            match with_retries(|| forge.discussion(&job.repo, job.thread)).await {
                Ok(d) => self.discussion = Some(d),
                Err(e) => log.step(format!(
                "Could not read the {}'s text ({e}); the agent gets the command and the title only",
                context::thread_noun(job.thread.kind)
            )),
            }
        }
        let creds = with_retries(|| forge.git_credentials(&job.repo)).await?;
        self.secrets.lock().unwrap().push(creds.password.clone());
        let creds = Arc::new(creds);
        let change_request = match job.thread.kind {
            ThreadKind::Issue => None,
            ThreadKind::PullRequest | ThreadKind::MergeRequest => {
                let cr =
                    with_retries(|| forge.change_request(&job.repo, job.thread.number)).await?;
                if !cr.open {
                    return Err(Failure(format!("{} is closed", job.thread.reference())));
                }
                Some(cr)
            }
        };
        // A fork's head is someone else's code: refused unless the admin allows forks
        // (read now, like the other switches), before anything is fetched.
        let fork = change_request.as_ref().is_some_and(|cr| !cr.same_repo);
        if fork && !self.runner.admin_settings().await.allow_forks {
            log.step("The head is in a fork and jobs on forks are off");
            return Ok(Outcome::Done(Final::Rejected {
                reason: format!(
                    "jobs on pull requests from forks are off: the head of {} is in a fork. An admin can allow them in the settings.",
                    job.thread.reference()
                ),
            }));
        }
        // Only the words of people who may write reach the model (SPEC section 14).
        if let Some(d) = self.discussion.as_mut() {
            context::writers_only(forge, &job.repo, &job.requester, level, d).await;
            if d.others_omitted > 0 {
                log.step(format!(
                    "{} comment(s) by people without write access left out of the agent's context",
                    d.others_omitted
                ));
            }
        }
        // Where the forge publishes the head in this repository (a fork's head included).
        let head_ref = change_request.as_ref().map(|cr| cr.head_ref.clone());
        let mut target = match change_request {
            None => Target::NewBranch {
                base: info.default_branch.clone(),
            },
            // An earlier attempt found the head protected and moved to a branch into it:
            // this attempt goes on there (the recorded branch and base say so).
            Some(cr)
                if cr.same_repo
                    && self.job.base.as_deref() == Some(cr.head_branch.as_str())
                    && self
                        .job
                        .branch
                        .as_deref()
                        .is_some_and(|b| b != cr.head_branch) =>
            {
                Target::NewBranch {
                    base: cr.head_branch,
                }
            }
            Some(cr) if cr.same_repo => Target::Head(cr),
            // A fork: Repobox may not push there. Its work goes onto a new branch built on
            // the fork's head, into the same base.
            Some(cr) => Target::NewBranch {
                base: cr.base_branch,
            },
        };
        if let Some(o) = self.stopped() {
            return Ok(o);
        }
        log.step(format!("Fetching {}", info.clone_url));
        let fetch_started = Instant::now();
        let mirror = {
            let (mirrors, key, url, creds, extra) = (
                self.runner.mirrors.clone(),
                format!("{}/{}", job.repo.forge, job.repo.full_name),
                info.clone_url.clone(),
                creds.clone(),
                head_ref.clone(),
            );
            Arc::new(
                blocking(move || {
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    mirrors.fetch(&key, &url, &creds, &extra)
                })
                .await?,
            )
        };
        let default_sha = {
            let (m, b) = (mirror.clone(), info.default_branch.clone());
            blocking(move || m.remote_branch(&b)).await?
        }
        .ok_or_else(|| {
            Failure(format!(
                "the default branch `{}` was not found",
                info.default_branch
            ))
        })?;
        let base_sha = match (&target, &head_ref) {
            (Target::NewBranch { .. }, None) => default_sha.clone(),
            (Target::Head(cr), _) => {
                let (m, b) = (mirror.clone(), cr.head_branch.clone());
                blocking(move || m.remote_branch(&b))
                    .await?
                    .unwrap_or_else(|| cr.head_sha.clone())
            }
            (Target::NewBranch { .. }, Some(r)) => {
                let (m, r) = (mirror.clone(), r.clone());
                blocking(move || m.extra_ref(&r)).await?.ok_or_else(|| {
                    Failure("the pull/merge request's head could not be fetched".into())
                })?
            }
        };
        log.step(format!(
            "Fetched in {} ms; base {}",
            fetch_started.elapsed().as_millis(),
            short(&base_sha)
        ));
        // On a pull/merge request, its changes are part of the agent's context.
        if head_ref.is_some() {
            let base_branch = match &target {
                Target::NewBranch { base } => base.clone(),
                Target::Head(cr) => cr.base_branch.clone(),
            };
            let (m, head) = (mirror.clone(), base_sha.clone());
            let diff = blocking(move || match m.remote_branch(&base_branch)? {
                Some(base) => m.diff(&base, &head, context::DIFF_MAX_BYTES).map(|d| {
                    Some(DiffContext {
                        patch: d.patch,
                        truncated: d.truncated,
                    })
                }),
                None => Ok(None),
            })
            .await;
            match diff {
                Ok(d) => self.diff = d,
                Err(Failure(e)) => log.step(format!("No diff for the context: {e}")),
            }
        }
        // The protected-path check covers what the job would push that the base does
        // not have: on a fork, every commit since the merge base with the base branch.
        let check_since = match &target {
            Target::NewBranch { base } if fork => {
                let (m, base, head) = (mirror.clone(), base.clone(), base_sha.clone());
                blocking(move || match m.remote_branch(&base)? {
                    Some(tip) => m.merge_base(&tip, &head),
                    None => Ok(None),
                })
                .await?
                .unwrap_or_default()
            }
            _ => base_sha.clone(),
        };
        self.checklist.cloned_at = Some(short(&base_sha));
        self.update(reporter);

        let config = {
            let (m, sha) = (mirror.clone(), default_sha.clone());
            blocking(move || m.read_file(&sha, repo_config::FILE_NAME)).await?
        };
        let config = match config {
            Some(text) => RepoConfig::parse(&text).map_err(Failure)?,
            None => RepoConfig::default(),
        };
        // SPEC 16: follow-ups continue from the earlier jobs' records.
        self.earlier = self.earlier_jobs(&mirror, &base_sha, &default_sha).await;
        // SPEC 16: the repository may only pick a model the admin allows.
        if let Some(model) = &config.model
            && !self.admin.model_allowed(model)
        {
            return Err(Failure(format!(
                ".repobox.yml asks for model `{model}`, which this Repobox does not allow (admin setting allowed_models: {})",
                self.admin.allowed_models.join(", ")
            )));
        }
        // Instruction files, like `.repobox.yml`, from the default branch only.
        self.guidance = {
            let (m, sha) = (mirror.clone(), default_sha.clone());
            let named = instructions::named_paths(
                &self.job.instructions,
                self.job.review.as_ref().map(|r| r.path.as_str()),
            );
            blocking(move || {
                Ok(instructions::gather(
                    |path| m.read_file(&sha, path).ok().flatten(),
                    &named,
                ))
            })
            .await?
        };

        let branch = match (&target, &self.job.branch) {
            (Target::Head(cr), _) => cr.head_branch.clone(),
            (_, Some(recorded)) => recorded.clone(),
            (_, None) => self.new_branch_name(&mirror, &config).await?,
        };
        let base_name = match &target {
            Target::NewBranch { base } => base.clone(),
            Target::Head(cr) => cr.base_branch.clone(),
        };
        self.job.branch = Some(branch.clone());
        self.job.base = Some(base_name.clone());
        self.record(&[("branch", branch.clone()), ("base", base_name)])
            .await?;
        self.checklist.branch = Some(branch.clone());

        let mut push_branch = branch.clone();
        let pushed_before = match &self.job.pushed_sha {
            Some(_) => true,
            None => {
                self.find_own_commit(&mirror, &branch, &target, &base_sha)
                    .await?
            }
        };
        if pushed_before {
            log.step("An earlier attempt already pushed; going on to the pull/merge request");
            self.checklist.agent = StepState::Done;
            self.checklist.pushed = true;
        } else {
            match self
                .change_code(&mirror, (&base_sha, &check_since), &config, reporter, log)
                .await?
            {
                Some(commit) => {
                    if let Some(o) = self.stopped() {
                        return Ok(o);
                    }
                    push_branch = self
                        .push(
                            &mut target,
                            &mirror,
                            &config,
                            &info.clone_url,
                            creds,
                            (&branch, &base_sha),
                            log,
                        )
                        .await?;
                    failpoint::hit("runner:after_push");
                    self.job.pushed_sha = Some(commit.sha.clone());
                    self.record(&[("pushed_sha", commit.sha.clone())]).await?;
                    self.checklist.pushed = true;
                    self.update(reporter);
                }
                None => {
                    log.step("The agent changed nothing");
                    return Ok(Outcome::Done(Final::NoChanges));
                }
            }
        }
        // SPEC 17: the commit shows the job working, until it ends.
        self.head_status(
            forge,
            HeadState::InProgress,
            "Repobox is working on this commit",
            log,
        )
        .await;
        if let Some(o) = self.stopped() {
            return Ok(o);
        }
        let (cr, updated_existing) = match &target {
            Target::Head(cr) => (cr.clone(), true),
            Target::NewBranch { base } => (
                self.change_request(forge, &push_branch, base, &config)
                    .await?,
                false,
            ),
        };
        self.checklist.change_request = Some(cr.url.clone());
        log.step(format!("Done: {}", cr.url));
        Ok(Outcome::Done(Final::Succeeded {
            url: cr.url,
            number: cr.number,
            updated_existing,
        }))
    }

    /// Whether the target branch already holds this job's commit (its `Repobox-Job:`
    /// trailer): an earlier attempt pushed and died before recording it. Records it.
    async fn find_own_commit(
        &mut self,
        mirror: &Arc<Mirror>,
        branch: &str,
        target: &Target,
        base_sha: &str,
    ) -> Result<bool, Failure> {
        // A new branch starts at the base; a head branch at the parent the push plan
        // recorded (its tip already includes the commit).
        let stop_at = match target {
            Target::NewBranch { .. } => Some(base_sha.to_owned()),
            Target::Head(_) => self.job.push_parent.clone(),
        };
        let (m, b, trailer) = (mirror.clone(), branch.to_owned(), trailer(&self.job));
        let found = blocking(move || match m.remote_branch(&b)? {
            Some(tip) => m.commit_with_trailer(&tip, stop_at.as_deref(), &trailer, 50),
            None => Ok(None),
        })
        .await?;
        let Some(sha) = found else {
            return Ok(false);
        };
        self.job.pushed_sha = Some(sha.clone());
        self.job.commit_sha = Some(sha.clone());
        self.record(&[("pushed_sha", sha.clone()), ("commit_sha", sha.clone())])
            .await?;
        Ok(true)
    }

    /// `repobox/<number>-<slug>`, with `-2`, `-3`… when the remote already has it (a
    /// retry of an earlier job on the same thread).
    async fn new_branch_name(
        &self,
        mirror: &Arc<Mirror>,
        config: &RepoConfig,
    ) -> Result<String, Failure> {
        let stem = match self.job.thread.is_none() {
            // SPEC 18: `repobox/job-<first 8 of the id>-<slug of the prompt>` (its first
            // line, which is the job's title).
            true => format!(
                "{}job-{}-{}",
                config.prefix(),
                self.job
                    .id
                    .to_string()
                    .to_lowercase()
                    .chars()
                    .take(8)
                    .collect::<String>(),
                crate::git::slug(&self.job.thread_title)
            ),
            false => format!(
                "{}{}-{}",
                config.prefix(),
                self.job.thread.number,
                crate::git::slug(&self.job.thread_title)
            ),
        };
        let m = mirror.clone();
        blocking(move || {
            for n in 1..100 {
                let name = if n == 1 {
                    stem.clone()
                } else {
                    format!("{stem}-{n}")
                };
                if m.remote_branch(&name)?.is_none() {
                    return Ok(name);
                }
            }
            Err(GitError::Other(format!("no free branch name for `{stem}`")))
        })
        .await
    }

    /// Fails the job when the work tree grew past `REPOBOX_MAX_TREE_SIZE`: nothing of
    /// it is committed or pushed.
    async fn check_tree_size(&self) -> Result<(), Failure> {
        let limit = self.runner.settings.max_tree_size;
        let Some(root) = self.work_tree.as_ref().map(|wt| wt.path().to_owned()) else {
            return Ok(());
        };
        let within = tokio::task::spawn_blocking(move || super::tree_size::within(&root, limit))
            .await
            .map_err(|e| Failure(format!("cannot measure the work tree: {e}")))?
            .map_err(|e| Failure(format!("cannot measure the work tree: {e}")))?;
        match within {
            Some(_) => Ok(()),
            None => Err(Failure(format!(
                "the work tree grew past its size limit of {}",
                bytesize::ByteSize::b(limit)
            ))),
        }
    }

    /// Work tree, setup, agent, checks, commit, the protected-path check. `None` when
    /// nothing changed. `check_since`: the commit from which on every commit is checked
    /// for protected paths (the base, or a fork's merge base; empty: all history).
    async fn change_code(
        &mut self,
        mirror: &Arc<Mirror>,
        (base_sha, check_since): (&str, &str),
        config: &RepoConfig,
        reporter: Option<&Reporter>,
        log: &JobLog,
    ) -> Result<Option<CommitInfo>, Failure> {
        let id = self.job.id.to_string();
        let work_tree = {
            let (m, id, sha) = (mirror.clone(), id.clone(), base_sha.to_owned());
            blocking(move || m.add_worktree(&id, &sha)).await?
        };
        let tree_path = work_tree.path().to_owned();
        self.work_tree = Some(work_tree);
        let scratch = self.runner.settings.workdir.join("scratch").join(&id);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Failure(format!("cannot create the scratch directory: {e}")))?;
        self.scratch = Some(scratch.clone());
        let settings = &self.runner.settings;
        // The repository may narrow the admin's modes, never widen them.
        let modes = settings
            .sandbox_modes
            .narrowed_by(&config.network)
            .map_err(Failure)?;
        let allow = settings.sandbox_allow.extended(&self.admin.sandbox_allow.0);
        // SPEC 16: the admin's monthly caps, before anything is paid for.
        let month_left = self.month_left().await?;
        let mut sandbox = SandboxSpec {
            kind: settings.sandbox,
            work_tree: tree_path,
            read_only: vec![mirror.path().to_owned()],
            writable: vec![scratch.clone()],
            proxy: None,
            env: Vec::new(),
            limits: Limits {
                job: Some(settings.job_limits),
                ..Limits::default()
            },
        };
        // Setup secrets: masked from here on, in the setup commands' sandbox only.
        let setup_env = crate::setup_secrets::resolve(
            self.runner.store.as_ref(),
            self.runner.settings.secret_box.as_ref(),
            &config.setup_env,
        )
        .await
        .map_err(Failure)?;
        if let Ok(mut known) = self.secrets.lock() {
            known.extend(setup_env.iter().map(|(_, value)| value.clone()));
        }
        sandbox.env = setup_env
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_owned()))
            .collect();
        for (n, command) in config.setup.iter().enumerate() {
            log.step(format!("Setup: {command}"));
            let setup = CommandAgent {
                command: command.clone(),
            };
            let during = format!("setup `{command}`");
            let egress = self.egress(modes.setup, &allow, &format!("s{n}"), &during, log)?;
            sandbox.proxy = egress.as_ref().map(|(_, binding)| binding.clone());
            let result = setup
                .run(self.agent_request(String::new(), &sandbox, &scratch, log))
                .await;
            self.note_refused(egress);
            match result {
                Ok(_) => {}
                Err(AgentError::Stopped) => return Err(self.stop_failure()),
                Err(AgentError::Failed(e)) => {
                    return Err(Failure(format!("setup command `{command}` failed: {e}")));
                }
            }
        }
        // The agent never sees a setup secret.
        sandbox.env.clear();
        drop(setup_env);
        // The checks' sandbox: the check phase's network, for as long as the agent runs.
        let check_egress = match config.check.is_empty() {
            true => None,
            false => self.egress(modes.check, &allow, "c", "the checks", log)?,
        };
        let checks = (!config.check.is_empty()).then(|| {
            let mut spec = sandbox.clone();
            spec.proxy = check_egress.as_ref().map(|(_, binding)| binding.clone());
            Arc::new(SandboxChecks::new(
                config.check.clone(),
                spec,
                scratch.clone(),
                log.sink(),
                self.stop.token.clone(),
                config.check_attempts.unwrap_or(checks::DEFAULT_EXTRA_GOES),
            ))
        });
        // One proxy for the whole agent run (every shell command it starts).
        let egress = self.egress(modes.agent, &allow, "a", "the agent", log)?;
        sandbox.proxy = egress.as_ref().map(|(_, binding)| binding.clone());
        self.checklist.agent = StepState::Active;
        self.update(reporter);
        log.step("Agent started");
        let prompt = context::prompt(
            &self.job,
            config,
            &self.guidance,
            &self.earlier,
            self.discussion.as_ref(),
            self.diff.as_ref(),
        );
        let (activity_tx, mut activity_rx) = watch::channel(Activity::default());
        let mut request = self.agent_request(prompt, &sandbox, &scratch, log);
        request.activity = activity_tx;
        request.checks = checks.clone().map(|c| c as Arc<dyn crate::agent::Checks>);
        // `.repobox.yml` first (a model the admin allows), then the admin settings (which
        // default to the configuration).
        request.model = Some(
            config
                .model
                .clone()
                .unwrap_or_else(|| self.admin.model.clone()),
        );
        // A ceiling: `.repobox.yml` may lower the admin's value, never raise it.
        let ceiling = self.admin.max_turns;
        request.max_turns = Some(config.max_turns.map_or(ceiling, |t| t.min(ceiling)));
        let budget = self.runner.settings.job_budget_usd;
        let budget = config.budget.map_or(budget, |b| b.min(budget));
        request.budget_usd = Some(month_left.map_or(budget, |left| left.min(budget)));
        let agent = self.runner.agent.clone();
        // SPEC 16: a steerable agent takes the thread's new commands while it works.
        let steering = match agent.steerable() {
            true => {
                let store = self.runner.store.clone();
                match JobSteering::open(store, self.lease.clone(), log.sink()).await {
                    Ok(s) => Some(Arc::new(s)),
                    Err(StoreError::LeaseLost) => {
                        self.stop.stop(StopReason::LeaseLost);
                        return Err(Failure(StoreError::LeaseLost.to_string()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            false => None,
        };
        request.steering = steering
            .clone()
            .map(|s| s as Arc<dyn crate::agent::Steering>);
        let run = agent.run(request);
        tokio::pin!(run);
        // The agent's progress goes to the comment (throttled there) while it works.
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Ok(()) = activity_rx.changed() => {
                    let activity = activity_rx.borrow_and_update().clone();
                    self.checklist.agent_detail = progress::activity_text(&activity);
                    self.update(reporter);
                }
            }
        };
        if let Some(steering) = &steering {
            steering.shut().await;
        }
        self.note_refused(egress);
        self.note_refused(check_egress);
        if let Some(round) = checks.as_ref().and_then(|c| c.last()) {
            self.checklist.checks = round.results;
        }
        // Tokens are recorded however the agent ended: a failed run was billed too.
        let activity = activity_rx.borrow().clone();
        self.record_activity(&activity).await?;
        self.checklist.agent_detail = None;
        self.checklist.steered_by = activity.steered_by.clone();
        let outcome: AgentOutcome = match outcome {
            Ok(o) => o,
            Err(AgentError::Stopped) => return Err(self.stop_failure()),
            Err(AgentError::Failed(e)) => {
                log.step(format!("Agent failed: {e}"));
                // The error may quote the agent's output: it is posted neutralised.
                return Err(Failure(format!(
                    "the agent failed: {}",
                    neutralize(&e, own_issue(&self.job))
                )));
            }
        };
        self.checklist.agent = StepState::Done;
        if let Some(checks) = &checks {
            self.checks_verdict(checks, config)?;
        }
        let summary = self.mask(outcome.summary.trim());
        self.job.summary = Some(summary.clone());
        self.record(&[("summary", summary.clone())]).await?;
        log.step("Agent finished");
        self.update(reporter);
        if self.stop.reason().is_some() {
            return Err(self.stop_failure());
        }

        let changed = self.on_tree(|wt| wt.changed_paths()).await?;
        if changed.is_empty() {
            return Ok(None);
        }
        log.step(format!("{} file(s) changed", changed.len()));
        self.check_tree_size().await?;
        let identity = {
            let forge = self.forge.clone().expect("set in run");
            with_retries(|| forge.bot_identity(&self.job.repo))
                .await
                .map(|id| (id, forge.co_author(&self.job.requester)))?
        };
        let (author, co_author) = identity;
        let message = self.commit_message(&summary, &co_author);
        let commit = self
            .on_tree(move |wt| wt.commit_all(&author.name, &author.email, &message))
            .await?;
        let Some(commit) = commit else {
            return Ok(None);
        };
        // Checked on the commit (read from the object database, not the work tree the
        // agent could have filled with symlinks); refused before anything is recorded.
        self.refuse_protected(mirror, &commit.sha, check_since, &changed)
            .await?;
        self.job.commit_sha = Some(commit.sha.clone());
        self.job.files_changed = commit.files.len() as u64;
        self.job.additions = commit.additions as u64;
        self.job.deletions = commit.deletions as u64;
        self.record(&[
            ("commit_sha", commit.sha.clone()),
            ("files_changed", commit.files.len().to_string()),
            ("additions", commit.additions.to_string()),
            ("deletions", commit.deletions.to_string()),
        ])
        .await?;
        log.step(format!(
            "Committed {} (+{} −{})",
            short(&commit.sha),
            commit.additions,
            commit.deletions
        ));
        failpoint::hit("runner:after_commit");
        Ok(Some(commit))
    }

    /// Writes the agent's totals into the job (and its record).
    async fn record_activity(&mut self, a: &Activity) -> Result<(), Failure> {
        // This attempt's spend counts toward the month (SPEC 16), whatever the outcome.
        if let Some(usd) = a.cost_usd.filter(|usd| *usd > 0.0) {
            let month = crate::store::usage::month(OffsetDateTime::now_utc());
            if let Err(e) = self
                .runner
                .store
                .add_usage(
                    &month,
                    self.job.repo.forge,
                    &self.job.requester,
                    &self.job.repo,
                    usd,
                )
                .await
            {
                warn!(error = %e, "this job's spend was not added to the month's");
            }
        }
        let job = &mut self.job;
        job.agent_turns = u64::from(a.turns);
        job.tool_calls = u64::from(a.tool_calls);
        job.model = a.model.clone();
        job.input_tokens = a.usage.input_tokens;
        job.output_tokens = a.usage.output_tokens;
        job.cache_read_tokens = a.usage.cache_read_tokens;
        job.cache_write_tokens = a.usage.cache_write_tokens;
        job.cost_usd = a.cost_usd;
        // The stored form comes from the record's own serialisation.
        let fields: Vec<(&str, String)> = self
            .job
            .to_fields()
            .into_iter()
            .filter(|(name, _)| ACTIVITY_FIELDS.contains(name))
            .collect();
        self.record(&fields).await
    }

    /// The error a step returns when it notices the job was stopped; `run` reports the
    /// stop reason instead (see [`Pipeline::stopped`]).
    fn stop_failure(&self) -> Failure {
        Failure("the agent was stopped".into())
    }

    /// The egress proxy for one sandboxed phase (SPEC section 15), when its mode lets
    /// it out and the sandbox is bwrap (`none` has no network policy: it is the host's
    /// network). Every refusal goes to the job log as it happens, naming `during`.
    /// `name` keeps the socket's path unique within the job, and short: a Unix socket
    /// path has at most 107 bytes.
    fn egress(
        &self,
        mode: NetworkMode,
        allow: &Allowlist,
        name: &str,
        during: &str,
        log: &JobLog,
    ) -> Result<Option<(EgressProxy, ProxyBinding)>, Failure> {
        let settings = &self.runner.settings;
        if mode == NetworkMode::None || settings.sandbox != SandboxKind::Bwrap {
            return Ok(None);
        }
        let file = format!("{}-{name}.sock", self.job.id);
        let mut dir = settings.workdir.join("p");
        if dir.join(&file).as_os_str().len() > 100 {
            dir = std::env::temp_dir().join("repobox-p");
        }
        let socket = dir.join(file);
        let _ = std::fs::create_dir_all(&dir);
        // A socket left by a killed run of this job.
        let _ = std::fs::remove_file(&socket);
        let sink = log.sink();
        let during = during.to_owned();
        let on_refusal: OnRefusal = Arc::new(move |r: &Refusal| {
            let _ = sink.send(format!("==> network: refused {r} during {during}"));
        });
        let policy = Policy::new(mode, allow.clone());
        let proxy = EgressProxy::start(&socket, policy, on_refusal)
            .map_err(|e| Failure(format!("cannot start the sandbox's egress proxy: {e}")))?;
        let binding = ProxyBinding {
            socket,
            forwarder: settings.sandbox_forwarder.clone(),
        };
        Ok(Some((proxy, binding)))
    }

    /// The earlier jobs a follow-up continues from: this thread's, and on a pull/merge
    /// request the jobs named by its commits' `Repobox-Job:` trailers (the issue's job
    /// that opened it). From Repobox's own records, never from text people can edit;
    /// same repository only; at most [`EARLIER_JOBS`]. Lookup errors leave it empty.
    async fn earlier_jobs(&self, mirror: &Arc<Mirror>, head: &str, default: &str) -> Vec<Job> {
        let store = &self.runner.store;
        if self.job.thread.is_none() {
            return Vec::new();
        }
        let mut ids: Vec<crate::job::JobId> = store
            .thread_jobs(&self.job.repo, self.job.thread, 20)
            .await
            .unwrap_or_default();
        if self.job.thread.kind != ThreadKind::Issue {
            let (m, head, default) = (mirror.clone(), head.to_owned(), default.to_owned());
            let named = blocking(move || m.job_trailers(&head, Some(&default), 100))
                .await
                .unwrap_or_default();
            ids.extend(
                named
                    .iter()
                    .filter_map(|id| id.parse::<crate::job::JobId>().ok()),
            );
        }
        let mut jobs: Vec<Job> = Vec::new();
        for id in ids {
            if id == self.job.id || jobs.iter().any(|j| j.id == id) {
                continue;
            }
            if let Ok(Some(job)) = store.get_job(id).await
                && job.repo.forge == self.job.repo.forge
                && job.repo.full_name == self.job.repo.full_name
                && job.created_at < self.job.created_at
            {
                jobs.push(job);
            }
        }
        jobs.sort_by_key(|j| j.created_at);
        let skip = jobs.len().saturating_sub(EARLIER_JOBS);
        jobs.split_off(skip)
    }

    /// What this month's caps leave for the job (the smaller of the requester's and the
    /// repository's), `None` without caps; a cap already reached fails the job.
    async fn month_left(&self) -> Result<Option<f64>, Failure> {
        let caps = [
            (self.admin.monthly_cap_requester, "requester"),
            (self.admin.monthly_cap_repo, "repository"),
        ];
        if caps.iter().all(|(cap, _)| cap.is_none()) {
            return Ok(None);
        }
        let month = crate::store::usage::month(OffsetDateTime::now_utc());
        let hash = self
            .runner
            .store
            .usage(&month)
            .await
            .map_err(|e| Failure(format!("cannot read this month's spend: {e}")))?;
        let usage = crate::store::usage::MonthUsage::from_hash(&month, &hash);
        let forge = self.job.repo.forge;
        let mut left: Option<f64> = None;
        for (cap, whose) in caps {
            let Some(cents) = cap else { continue };
            let cap = cents as f64 / 100.0;
            let (spent, who) = match whose {
                "requester" => (
                    usage.requester(forge, self.job.requester.id),
                    format!("@{}", self.job.requester.login),
                ),
                _ => (
                    usage.repository(forge, &self.job.repo.full_name),
                    self.job.repo.full_name.clone(),
                ),
            };
            if spent >= cap {
                return Err(Failure(format!(
                    "the monthly budget of ${cap:.2} per {whose} is spent for {who} (${spent:.2} in {month}); nothing was run"
                )));
            }
            left = Some(left.map_or(cap - spent, |l: f64| l.min(cap - spent)));
        }
        Ok(left)
    }

    /// After the agent: checks that still fail fail the job when the repository says
    /// `draft_on_failed_checks: false` (else the PR/MR is opened as a draft).
    fn checks_verdict(
        &mut self,
        checks: &SandboxChecks,
        config: &RepoConfig,
    ) -> Result<(), Failure> {
        let Some(round) = checks.last() else {
            return Ok(());
        };
        if round.passed() || config.draft_on_failed_checks.unwrap_or(true) {
            return Ok(());
        }
        let failed: Vec<String> = round
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("`{}`", r.command))
            .collect();
        Err(Failure(format!(
            "the checks still fail after {} round(s): {} (draft_on_failed_checks is false); nothing was pushed",
            checks.rounds(),
            failed.join(", ")
        )))
    }

    /// Stops a phase's proxy and keeps what it refused for the final comment and the
    /// PR/MR body.
    fn note_refused(&mut self, egress: Option<(EgressProxy, ProxyBinding)>) {
        let Some((proxy, _)) = egress else {
            return;
        };
        for r in proxy.refused() {
            let host = format!("{}:{}", r.host, r.port);
            if !self.checklist.refused.contains(&host) {
                self.checklist.refused.push(host);
            }
        }
    }

    fn agent_request(
        &self,
        prompt: String,
        sandbox: &SandboxSpec,
        scratch: &std::path::Path,
        log: &JobLog,
    ) -> AgentRequest {
        AgentRequest {
            prompt,
            model: None,
            max_turns: None,
            budget_usd: None,
            activity: watch::channel(Activity::default()).0,
            checks: None,
            steering: None,
            sandbox: sandbox.clone(),
            scratch_dir: scratch.to_owned(),
            log: log.sink(),
            cancel: self.stop.token.clone(),
        }
    }

    /// Fails the job when the commits from `since` to `head` change a protected path
    /// ([`Protected`]) and the admin does not allow workflow changes. `agent_paths`: what
    /// the agent itself changed (the rest came with a fork's commits).
    async fn refuse_protected(
        &self,
        mirror: &Arc<Mirror>,
        head: &str,
        since: &str,
        agent_paths: &[String],
    ) -> Result<(), Failure> {
        let (m, head, since) = (mirror.clone(), head.to_owned(), since.to_owned());
        let forge = self.job.repo.forge;
        let (protected, paths) = blocking(move || {
            let paths = m.paths_changed(&head, &since, MAX_CHECKED_COMMITS)?;
            let mut protected = Protected::new(forge);
            if forge == ForgeKind::GitLab {
                for sha in [since.as_str(), head.as_str()] {
                    if !sha.is_empty() {
                        follow_includes(&m, sha, &mut protected)?;
                    }
                }
            }
            Ok((protected, paths))
        })
        .await?;
        let Some(path) = protected.first(&paths) else {
            return Ok(());
        };
        if self.workflows_allowed().await {
            return Ok(());
        }
        let who = if agent_paths.iter().any(|p| p == path) {
            "the agent changed"
        } else {
            "the fork's commits change"
        };
        Err(Failure(format!(
            "{who} `{path}`: {} are refused unless an admin allows workflow changes in the settings",
            protected.description()
        )))
    }

    async fn workflows_allowed(&self) -> bool {
        // Read again: an admin may allow them while the agent works.
        self.runner.admin_settings().await.allow_workflow_changes
    }

    fn commit_message(&self, summary: &str, co_author: &crate::forges::GitIdentity) -> String {
        let job = &self.job;
        let (title, body) = title_and_body(job, summary);
        let url = self.runner.settings.public_url.trim_end_matches('/');
        let mut m = format!("{title}\n\n");
        if !body.is_empty() {
            m.push_str(&body);
            m.push_str("\n\n");
        }
        m.push_str(&format!(
            "Requested by {} in {}.\nRepobox job {}: {url}/jobs/{}\n\n",
            job.requested_by(),
            job.thread.reference(),
            job.id,
            job.id,
        ));
        // The API token is nobody to credit.
        if !job.by_api_token() {
            m.push_str(&format!(
                "Co-authored-by: {} <{}>\n",
                co_author.name, co_author.email
            ));
        }
        m.push_str(&format!("{}\n", trailer(job)));
        m
    }

    /// Pushes the job branch. On a pull/merge request whose head refuses the push (a
    /// protected branch), the work goes onto a new branch into that head instead.
    /// Returns the branch pushed to.
    #[allow(clippy::too_many_arguments)]
    async fn push(
        &mut self,
        target: &mut Target,
        mirror: &Arc<Mirror>,
        config: &RepoConfig,
        url: &str,
        creds: Arc<Credentials>,
        (branch, parent): (&str, &str),
        log: &JobLog,
    ) -> Result<String, Failure> {
        let force = matches!(target, Target::NewBranch { .. });
        self.record_push_plan(branch, parent).await?;
        log.step(format!("Pushing to `{branch}`"));
        match self.push_to(url, creds.clone(), branch, force).await {
            Ok(()) => return Ok(branch.to_owned()),
            Err(GitError::Rejected(reason)) if !force => {
                log.step(format!(
                    "The head branch refused the push ({}); opening a new branch into it",
                    self.mask(&reason)
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let Target::Head(cr) = target else {
            unreachable!("force pushes are not retried")
        };
        let head = cr.head_branch.clone();
        let new_branch = self.new_branch_name(mirror, config).await?;
        self.job.branch = Some(new_branch.clone());
        self.job.base = Some(head.clone());
        self.record(&[("branch", new_branch.clone()), ("base", head.clone())])
            .await?;
        self.checklist.branch = Some(new_branch.clone());
        *target = Target::NewBranch { base: head };
        self.record_push_plan(&new_branch, parent).await?;
        self.push_to(url, creds, &new_branch, true).await?;
        Ok(new_branch)
    }

    /// The push plan, recorded (fenced) right before the push.
    async fn record_push_plan(&mut self, branch: &str, parent: &str) -> Result<(), Failure> {
        self.job.push_branch = Some(branch.to_owned());
        self.job.push_parent = Some(parent.to_owned());
        self.record(&[
            ("push_branch", branch.to_owned()),
            ("push_parent", parent.to_owned()),
        ])
        .await
    }

    async fn push_to(
        &mut self,
        url: &str,
        creds: Arc<Credentials>,
        branch: &str,
        force: bool,
    ) -> Result<(), GitError> {
        if self.fence().await.is_err() {
            return Err(GitError::Other(StoreError::LeaseLost.to_string()));
        }
        let (url, branch) = (url.to_owned(), branch.to_owned());
        self.on_tree(move |wt| wt.push(&url, &creds, &branch, force))
            .await
    }

    /// Runs blocking work on the job's work tree off the async workers.
    async fn on_tree<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&WorkTree) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let wt = self
            .work_tree
            .take()
            .ok_or_else(|| GitError::Other("no work tree".into()))?;
        let (wt, out) = tokio::task::spawn_blocking(move || {
            let out = f(&wt);
            (wt, out)
        })
        .await
        .map_err(|e| GitError::Other(format!("git task failed: {e}")))?;
        self.work_tree = Some(wt);
        out
    }

    /// The job's pull/merge request: recorded, found on the forge, or opened now.
    async fn change_request(
        &mut self,
        forge: &dyn Forge,
        branch: &str,
        base: &str,
        config: &RepoConfig,
    ) -> Result<ChangeRequest, Failure> {
        let job = self.job.clone();
        if let Some(found) = with_retries(|| forge.find_change_request(&job.repo, branch)).await? {
            self.record(&[("pr_url", found.url.clone())]).await?;
            return Ok(found);
        }
        let summary = job.summary.clone().unwrap_or_default();
        let (title, body) = title_and_body(&job, &summary);
        let url = self.runner.settings.public_url.trim_end_matches('/');
        let mut text = String::new();
        if !body.is_empty() {
            text.push_str(&body);
            text.push_str("\n\n");
        }
        match job.thread.kind {
            _ if job.thread.is_none() => {}
            ThreadKind::Issue => text.push_str(&format!("Closes #{}\n\n", job.thread.number)),
            _ => text.push_str(&format!(
                "Builds on {} (Repobox may not push to its branch).\n\n",
                job.thread.reference()
            )),
        }
        if let Some(table) = progress::checks_table(&self.checklist.checks) {
            text.push_str(&table);
            text.push_str("\n\n");
            let failed: Vec<&crate::agent::CheckResult> =
                self.checklist.checks.iter().filter(|c| !c.passed).collect();
            if !failed.is_empty() {
                text.push_str("**Checks still failing** (opened as a draft):\n\n");
                for c in failed {
                    let output = neutralize(&self.mask(&c.output), own_issue(&job));
                    text.push_str(&format!(
                        "`{}`:\n\n```\n{}\n```\n\n",
                        c.command.replace('`', "'"),
                        output.replace("```", "'''")
                    ));
                }
            }
        }
        if let Some(refused) = progress::refused_text(&self.checklist.refused) {
            text.push_str(&refused);
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "Requested by {} in {} · Repobox job [`{}`]({url}/jobs/{})\n",
            job.requested_by(),
            job.thread.reference(),
            job.id,
            job.id
        ));
        let new = NewChangeRequest {
            head: branch,
            base,
            title: &title,
            body: &text,
            // Checks that still fail open a draft (SPEC 16).
            draft: config.draft || self.checklist.checks.iter().any(|c| !c.passed),
        };
        // Sent once per round: after an ambiguous failure the request may exist, so the
        // next round looks it up before it opens one.
        let mut round = 1;
        let cr = loop {
            self.fence().await?;
            match forge.open_change_request(&job.repo, new.clone()).await {
                Ok(cr) => break cr,
                Err(e) => {
                    if let Some(found) =
                        with_retries(|| forge.find_change_request(&job.repo, branch)).await?
                    {
                        info!(error = %e, "the pull/merge request exists after all");
                        break found;
                    }
                    if !e.is_transient() || round == 3 {
                        return Err(e.into());
                    }
                    warn!(error = %e, round, "opening the pull/merge request failed; trying again");
                    tokio::time::sleep(Duration::from_secs(round)).await;
                    round += 1;
                }
            }
        };
        failpoint::hit("runner:after_pr");
        self.job.pr_url = Some(cr.url.clone());
        self.record(&[("pr_url", cr.url.clone())]).await?;
        info!(url = %cr.url, "change request opened");
        Ok(cr)
    }

    async fn clean_up(&mut self, log: &JobLog) {
        if let Some(wt) = self.work_tree.take() {
            let removed = tokio::task::spawn_blocking(move || wt.remove()).await;
            if !matches!(removed, Ok(Ok(()))) {
                log.step("Could not remove the work tree; it is replaced on the next attempt");
            }
        }
        if let Some(dir) = self.scratch.take() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
    }

    /// The final state, fenced: the run's last write (see [`super::Runner::finish`]).
    async fn record_final(
        &self,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let mut fields = vec![
            ("status", status.as_str().to_owned()),
            ("finished_at", rfc3339(OffsetDateTime::now_utc())),
        ];
        if let Some(e) = error {
            fields.push(("error", e));
        }
        self.runner.finish(&self.job, &self.lease, &fields).await
    }

    /// Logs and posts the final state; returns the status and error to record.
    async fn report_final(
        &self,
        log: &JobLog,
        reporter: Option<Reporter>,
        state: &Final,
    ) -> (JobStatus, Option<String>) {
        let (status, error) = match state {
            Final::Succeeded { .. } => (JobStatus::Succeeded, None),
            Final::NoChanges => (JobStatus::NoChanges, None),
            Final::Failed { error } => (
                JobStatus::Failed,
                Some(match &self.provider {
                    Some(p) => crate::forges::personal::explain(p, error),
                    None => error.clone(),
                }),
            ),
            Final::Cancelled => (JobStatus::Cancelled, None),
            Final::Rejected { reason } => (JobStatus::Rejected, Some(reason.clone())),
        };
        if let Some(e) = &error {
            log.step(format!("Job {}: {e}", status.as_str()));
        } else {
            log.step(format!("Job {}", status.as_str()));
        }
        if let Some(r) = reporter {
            // The summary is the agent's, and an error may quote the agent or the
            // repository (a path, command output): neutralised like all it posts.
            let mut job = self.job.clone();
            job.summary = job
                .summary
                .as_deref()
                .map(|s| neutralize(s, own_issue(&self.job)));
            let shown = match state {
                Final::Failed { error } => Final::Failed {
                    error: neutralize(error, own_issue(&self.job)),
                },
                other => other.clone(),
            };
            let body = progress::finished(
                &job,
                &self.runner.settings.public_url,
                &self.admin.trigger,
                &self.checklist,
                &shown,
                self.started.elapsed(),
            );
            if let Err(e) = r.finish(&body).await {
                warn!(error = %e, "could not write the final progress comment");
            }
        }
        (status, error)
    }
}

/// Earlier jobs a follow-up is told about, at most (the latest).
const EARLIER_JOBS: usize = 5;

/// The job fields [`Pipeline::record_activity`] writes.
const ACTIVITY_FIELDS: [&str; 8] = [
    "agent_turns",
    "tool_calls",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
];

/// Most commits [`Pipeline::refuse_protected`] checks; a longer range is refused.
const MAX_CHECKED_COMMITS: usize = 10_000;

/// Adds the local includes of `.gitlab-ci.yml` at `sha`, and of the files it includes
/// (named ones, not wildcards), to `protected`.
fn follow_includes(m: &Mirror, sha: &str, protected: &mut Protected) -> Result<(), GitError> {
    let mut queue = vec![protected::GITLAB_CI.to_owned()];
    let mut read = 0;
    while let Some(file) = queue.pop() {
        read += 1;
        if read > protected::MAX_INCLUDES {
            break;
        }
        let Some(text) = m.read_file(sha, &file)? else {
            continue;
        };
        let found = protected::local_includes(&text);
        for next in &found {
            if !protected::is_glob(next) && !protected.includes().contains(next) {
                queue.push(next.clone());
            }
        }
        protected.add_includes(found);
    }
    Ok(())
}

/// Runs blocking git work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure(format!("git task failed: {e}")))?
        .map_err(Failure::from)
}

/// The trailer every commit of the job carries (SPEC section 13).
fn trailer(job: &Job) -> String {
    format!("Repobox-Job: {}", job.id)
}

fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// The job's own issue, the one its text may close (none on a pull/merge request).
fn own_issue(job: &Job) -> Option<OwnIssue<'_>> {
    (job.thread.kind == ThreadKind::Issue && !job.thread.is_none()).then_some(OwnIssue {
        repo: &job.repo.full_name,
        number: job.thread.number,
    })
}

/// [`raw_title_and_body`], neutralised (see [`neutralize`]): what Repobox posts of it.
fn title_and_body(job: &Job, summary: &str) -> (String, String) {
    let (title, body) = raw_title_and_body(job, summary);
    (
        neutralize(&title, own_issue(job)),
        neutralize(&body, own_issue(job)),
    )
}

/// Title from the summary's first line (when it reads like one), else from the command
/// or the thread title; the rest of the summary is the body.
fn raw_title_and_body(job: &Job, summary: &str) -> (String, String) {
    let summary = summary.trim();
    let mut lines = summary.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches('#')
        .trim();
    let cap = |s: &str| -> String {
        let s: String = s.chars().take(72).collect();
        s.trim().to_owned()
    };
    if !first.is_empty() && first.chars().count() <= 100 {
        return (
            cap(first),
            lines.collect::<Vec<_>>().join("\n").trim().to_owned(),
        );
    }
    let instruction = job.instructions.lines().next().unwrap_or_default().trim();
    let title = if !instruction.is_empty() {
        cap(instruction)
    } else {
        cap(&job.thread_title)
    };
    (title, summary.to_owned())
}
