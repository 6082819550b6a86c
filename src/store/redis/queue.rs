//! [`JobQueue`] on Redis: `intake:stream` and `jobs:stream` with their consumer groups,
//! and every transition as one Lua script from `lua/` (atomic; fenced by the job hash's
//! `status`, `runner` and `attempt`).
//!
//! Fields of the job hash the queue owns besides those of [`Job`]: `entry` (the job's
//! current `jobs:stream` entry, at most one), `waiting` (in a waiting list), `dispatched_at`,
//! `queued_ms` and `heartbeat_ms` (what the orphan reconciler measures age from).

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, ScriptInvocation};
use time::OffsetDateTime;

use super::{ACK_GROUP, RUNNERS_GROUP, RawEntry, RedisStore, unavailable};
use crate::job::{Job, JobId, JobStatus, rfc3339};
use crate::store::{
    Accepted, CancelOutcome, Claim, DELIVERY_TTL, Delivery, Dispatch, JobEntry, JobQueue, Lease,
    StoreError, TaskEntry,
};
use crate::task::Task;

const LIB: &str = include_str!("lua/lib.lua");

/// The queue's scripts, loaded once (`EVALSHA`, falling back to `EVAL`).
pub(super) struct Scripts {
    accept: Script,
    dispatch: Script,
    end_queued: Script,
    cancel: Script,
    claim: Script,
    heartbeat: Script,
    record: Script,
    finish: Script,
    promote_all: Script,
    orphans: Script,
    touch_task: Script,
    pub(super) steer: Script,
    pub(super) open_steering: Script,
    pub(super) close_steering: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_lib = |body: &str| Script::new(&format!("{LIB}\n{body}"));
        Scripts {
            accept: Script::new(include_str!("lua/accept.lua")),
            dispatch: with_lib(include_str!("lua/dispatch.lua")),
            end_queued: with_lib(include_str!("lua/end_queued.lua")),
            cancel: with_lib(include_str!("lua/cancel.lua")),
            claim: with_lib(include_str!("lua/claim.lua")),
            heartbeat: with_lib(include_str!("lua/heartbeat.lua")),
            record: with_lib(include_str!("lua/record.lua")),
            finish: with_lib(include_str!("lua/finish.lua")),
            promote_all: with_lib(include_str!("lua/promote_all.lua")),
            orphans: with_lib(include_str!("lua/orphans.lua")),
            steer: Script::new(include_str!("lua/steer.lua")),
            open_steering: with_lib(include_str!("lua/open_steering.lua")),
            close_steering: with_lib(include_str!("lua/close_steering.lua")),
            touch_task: Script::new(
                "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
                 if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
                 redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
                 return 1",
            ),
        }
    }
}

fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

impl RedisStore {
    /// An invocation of a queue script with the shared arguments (prefix, group) first.
    pub(super) fn queue_script<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(RUNNERS_GROUP);
        inv
    }

    /// The gate keys of a job, in the order the scripts expect, then the job hash.
    fn gate_and_job_keys(&self, inv: &mut ScriptInvocation<'_>, job: &Job) {
        inv.key(self.keys.jobs_stream())
            .key(self.keys.running_user(job))
            .key(self.keys.waiting_user(job))
            .key(self.keys.running_thread(job))
            .key(self.keys.waiting_thread(job))
            .key(self.keys.waiting_index())
            .key(self.keys.job(job.id));
    }

    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(unavailable)
    }

    /// Ends the run with `fields` (a final status, or `queued` to hand it back).
    async fn end_run(
        &self,
        lease: &Lease,
        job: &Job,
        fields: &[(&str, String)],
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<(), StoreError> {
        let mut inv = self.queue_script(&self.scripts.finish);
        self.gate_and_job_keys(&mut inv, job);
        inv.key(self.keys.jobs_active())
            .arg(&lease.runner)
            .arg(lease.attempt)
            .arg(job.id.to_string())
            .arg(user_limit.max(1))
            .arg(slot_lease.as_millis() as u64)
            .arg(now());
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        match self.run::<i64>(&inv).await? {
            1 => Ok(()),
            _ => Err(StoreError::LeaseLost),
        }
    }
}

#[async_trait]
impl JobQueue for RedisStore {
    async fn ensure_groups(&self) -> Result<(), StoreError> {
        self.create_group(&self.keys.jobs_stream(), RUNNERS_GROUP)
            .await?;
        self.create_group(&self.keys.intake_stream(), ACK_GROUP)
            .await
    }

    async fn accept(
        &self,
        delivery: Option<Delivery<'_>>,
        job: Option<&Job>,
        task: &Task,
    ) -> Result<Accepted, StoreError> {
        let task_json = serde_json::to_string(task)
            .map_err(|e| StoreError::Corrupt(format!("task not serialisable: {e}")))?;
        let mut inv = self.scripts.accept.prepare_invoke();
        inv.key(delivery.map(|d| self.keys.delivery(d)).unwrap_or_default())
            .key(self.keys.intake_stream())
            .arg(if delivery.is_some() { "1" } else { "0" })
            .arg(DELIVERY_TTL.as_secs())
            .arg(task_json);
        match job {
            Some(job) => {
                inv.key(self.keys.job(job.id))
                    .key(self.keys.jobs_all())
                    .key(self.keys.jobs_by_user(job))
                    .key(self.keys.jobs_by_repo(&job.repo))
                    .key(self.keys.jobs_by_thread(&job.repo, job.thread))
                    .key(self.keys.jobs_active())
                    .arg(job.created_ms())
                    .arg(job.id.to_string());
                for (k, v) in job.to_fields() {
                    inv.arg(k).arg(v);
                }
            }
            None => {
                inv.arg(0).arg("1");
            }
        }
        let stored: i64 = self.run(&inv).await?;
        Ok(if stored == 1 {
            Accepted::Stored
        } else {
            Accepted::Duplicate
        })
    }

    async fn read_tasks(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let stream = self.keys.intake_stream();
        let raw = self
            .group_read(&stream, ACK_GROUP, consumer, "task", count, block)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_task).collect())
    }

    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let stream = self.keys.intake_stream();
        let raw = self
            .group_claim(&stream, ACK_GROUP, consumer, "task", min_idle, count)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_task).collect())
    }

    async fn touch_task(&self, consumer: &str, entry_id: &str) -> Result<bool, StoreError> {
        let mut inv = self.scripts.touch_task.prepare_invoke();
        inv.key(self.keys.intake_stream())
            .arg(ACK_GROUP)
            .arg(consumer)
            .arg(entry_id);
        Ok(self.run::<i64>(&inv).await? == 1)
    }

    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError> {
        self.ack_delete(&self.keys.intake_stream(), ACK_GROUP, entry_id)
            .await
    }

    async fn dispatch(&self, id: JobId) -> Result<Dispatch, StoreError> {
        let mut inv = self.queue_script(&self.scripts.dispatch);
        inv.key(self.keys.job(id))
            .key(self.keys.jobs_stream())
            .arg(id.to_string())
            .arg(now());
        let outcome: String = self.run(&inv).await?;
        Ok(match outcome.as_str() {
            "dispatched" => Dispatch::Dispatched,
            "already" => Dispatch::Already,
            _ => Dispatch::NotQueued,
        })
    }

    async fn end_queued(
        &self,
        id: JobId,
        status: JobStatus,
        error: &str,
    ) -> Result<bool, StoreError> {
        debug_assert!(status.is_final());
        let mut inv = self.queue_script(&self.scripts.end_queued);
        inv.key(self.keys.job(id))
            .key(self.keys.jobs_stream())
            .key(self.keys.jobs_active())
            .arg(id.to_string())
            .arg(now())
            .arg("status")
            .arg(status.as_str())
            .arg("error")
            .arg(error);
        Ok(self.run::<i64>(&inv).await? == 1)
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let mut inv = self.queue_script(&self.scripts.cancel);
        inv.key(self.keys.job(id))
            .key(self.keys.jobs_stream())
            .key(self.keys.jobs_active())
            .arg(id.to_string())
            .arg(now());
        let outcome: String = self.run(&inv).await?;
        Ok(match outcome.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "requested" => CancelOutcome::Requested,
            _ => CancelOutcome::Final,
        })
    }

    async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let stream = self.keys.jobs_stream();
        let raw = self
            .group_read(&stream, RUNNERS_GROUP, consumer, "job", count, block)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_job).collect())
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let stream = self.keys.jobs_stream();
        let raw = self
            .group_claim(&stream, RUNNERS_GROUP, consumer, "job", min_idle, count)
            .await?;
        Ok(raw.into_iter().map(RawEntry::into_job).collect())
    }

    async fn claim(
        &self,
        entry_id: &str,
        job: &Job,
        runner: &str,
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut inv = self.queue_script(&self.scripts.claim);
        self.gate_and_job_keys(&mut inv, job);
        inv.arg(entry_id)
            .arg(job.id.to_string())
            .arg(user_limit.max(1))
            .arg(slot_lease.as_millis() as u64)
            .arg(runner)
            .arg(now());
        let reply: Vec<String> = self.run(&inv).await?;
        let kind = reply.first().map(String::as_str).unwrap_or_default();
        Ok(match kind {
            "leased" => {
                let attempt = reply
                    .get(1)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt("claim returned no attempt".into()))?;
                Claim::Leased(Lease {
                    job: job.id,
                    runner: runner.to_owned(),
                    attempt,
                })
            }
            "deferred" => Claim::Deferred,
            "final" => Claim::Final(
                reply
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(JobStatus::Failed),
            ),
            "missing" => Claim::Missing,
            _ => Claim::Stale,
        })
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        job: &Job,
        slot_lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.queue_script(&self.scripts.heartbeat);
        inv.key(self.keys.job(job.id))
            .key(self.keys.jobs_stream())
            .key(self.keys.running_user(job))
            .key(self.keys.running_thread(job))
            .arg(&lease.runner)
            .arg(lease.attempt)
            .arg(slot_lease.as_millis() as u64)
            .arg(job.id.to_string());
        Ok(self.run::<i64>(&inv).await? == 1)
    }

    async fn record(&self, lease: &Lease, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let mut inv = self.queue_script(&self.scripts.record);
        inv.key(self.keys.job(lease.job))
            .arg(&lease.runner)
            .arg(lease.attempt)
            .arg(now());
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        match self.run::<i64>(&inv).await? {
            1 => Ok(()),
            _ => Err(StoreError::LeaseLost),
        }
    }

    async fn finish(
        &self,
        lease: &Lease,
        job: &Job,
        fields: &[(&str, String)],
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<(), StoreError> {
        crate::store::queue::check_final(fields)?;
        self.end_run(lease, job, fields, user_limit, slot_lease)
            .await
    }

    async fn hand_back(
        &self,
        lease: &Lease,
        job: &Job,
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<(), StoreError> {
        let fields = [("status", JobStatus::Queued.as_str().to_owned())];
        self.end_run(lease, job, &fields, user_limit, slot_lease)
            .await
    }

    async fn drop_entry(&self, entry_id: &str) -> Result<(), StoreError> {
        self.ack_delete(&self.keys.jobs_stream(), RUNNERS_GROUP, entry_id)
            .await
    }

    async fn promote_waiting(&self, slot_lease: Duration) -> Result<usize, StoreError> {
        let mut inv = self.queue_script(&self.scripts.promote_all);
        inv.key(self.keys.jobs_stream())
            .key(self.keys.waiting_index())
            .arg(slot_lease.as_millis() as u64);
        let started: i64 = self.run(&inv).await?;
        Ok(started.max(0) as usize)
    }

    async fn requeue_orphans(&self, older_than: Duration) -> Result<usize, StoreError> {
        let mut inv = self.queue_script(&self.scripts.orphans);
        // The lock outlives one pass and lapses before the next (every 30 s).
        inv.key(self.keys.jobs_stream())
            .key(self.keys.jobs_active())
            .key(self.keys.orphans_lock())
            .arg(older_than.as_millis() as u64)
            .arg(20_000)
            .arg(ulid::Ulid::new().to_string());
        let requeued: i64 = self.run(&inv).await?;
        Ok(requeued.max(0) as usize)
    }
}
