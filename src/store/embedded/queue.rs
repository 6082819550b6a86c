//! [`JobQueue`] on the embedded store: each transition of the Redis backend's Lua
//! scripts (`store/redis/lua/`) is one transaction here, step for step, with the same
//! fields (`entry`, `waiting`, `dispatched_at`, `queued_ms`, `heartbeat_ms`) and the
//! same slot sets and waiting lists. The two consumer groups are implicit: an intake
//! entry is handed to one acknowledger, a job entry to one runner.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use time::OffsetDateTime;

use super::EmbeddedStore;
use super::data::{self, Sql, holds, now_ms, owned};
use crate::job::{Job, JobId, JobStatus, rfc3339};
use crate::store::{
    Accepted, CancelOutcome, Claim, DELIVERY_TTL, Delivery, Dispatch, JobEntry, JobQueue, Keys,
    Lease, StoreError, TaskEntry,
};
use crate::task::Task;

fn timestamp() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

fn is_final(status: &str) -> bool {
    status != "queued" && status != "running"
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// The keys one job's admission touches (the Lua scripts' KEYS).
struct Gates {
    stream: String,
    user_run: String,
    user_wait: String,
    thread_run: String,
    thread_wait: String,
    index: String,
    job: String,
    id: String,
}

impl Gates {
    fn of(keys: &Keys, job: &Job) -> Gates {
        Gates {
            stream: keys.jobs_stream(),
            user_run: keys.running_user(job),
            user_wait: keys.waiting_user(job),
            thread_run: keys.running_thread(job),
            thread_wait: keys.waiting_thread(job),
            index: keys.waiting_index(),
            job: keys.job(job.id),
            id: job.id.to_string(),
        }
    }
}

/// Takes the job out of the stream: its entry (if any) is dropped and forgotten.
fn unlist(c: &Connection, stream: &str, key: &str) -> Sql<()> {
    if let Some(entry) = data::hget(c, key, "entry")? {
        data::xdel(c, stream, &entry)?;
    }
    data::hdel(c, key, "entry")?;
    Ok(())
}

/// Appends the job to the stream unless it has an entry there already; records the
/// entry on the job.
fn enqueue(c: &Connection, keys: &Keys, stream: &str, id: &str, now: i64) -> Sql<String> {
    let key = keys.job_key(id);
    if let Some(current) = data::hget(c, &key, "entry")?
        && data::xexists(c, stream, &current)?
    {
        return Ok(current);
    }
    let entry = data::xadd(c, stream, id)?;
    data::hset(
        c,
        &key,
        &[("entry", entry.as_str()), ("queued_ms", &now.to_string())],
    )?;
    data::hdel(c, &key, "waiting")?;
    Ok(entry)
}

/// Moves waiting jobs into the stream while their gate has room, reserving a slot for
/// each; jobs that ended while they waited are skipped.
#[allow(clippy::too_many_arguments)]
fn promote(
    c: &Connection,
    keys: &Keys,
    stream: &str,
    wait: &str,
    run: &str,
    limit: usize,
    index: &str,
    now: i64,
    lease: i64,
) -> Sql<usize> {
    data::zrem_upto(c, run, now)?;
    let mut started = 0;
    while data::zcard(c, run)? < limit {
        let Some(id) = data::lpop(c, wait)? else {
            break;
        };
        let status = data::hget(c, &keys.job_key(&id), "status")?;
        if status.is_some_and(|s| !is_final(&s)) {
            data::zadd(c, run, &id, now + lease)?;
            enqueue(c, keys, stream, &id, now)?;
            started += 1;
        }
    }
    if data::llen(c, wait)? == 0 {
        data::hdel(c, index, wait)?;
    }
    Ok(started)
}

impl EmbeddedStore {
    /// New entries of the queue stream `stream` names, now `consumer`'s, waiting up to
    /// `block` for the first.
    async fn group_read(
        &self,
        stream: fn(&Keys) -> String,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<data::Entry>, StoreError> {
        self.wait_for(Some(block), || {
            let consumer = consumer.to_owned();
            self.write(move |c, keys| Ok(data::xread_new(c, &stream(keys), &consumer, count)?))
        })
        .await
    }

    /// Entries of `stream` another consumer left idle for `min_idle`, now `consumer`'s.
    async fn group_claim(
        &self,
        stream: fn(&Keys) -> String,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<data::Entry>, StoreError> {
        let consumer = consumer.to_owned();
        self.write(move |c, keys| {
            Ok(data::xclaim_idle(
                c,
                &stream(keys),
                &consumer,
                min_idle,
                count,
            )?)
        })
        .await
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
        let (lease, fields, job) = (lease.clone(), owned(fields), job.clone());
        let held = self
            .write(move |c, keys| {
                let g = Gates::of(keys, &job);
                if !holds(c, &g.job, &lease)? {
                    return Ok(false);
                }
                let (now, slot) = (now_ms(), ms(slot_lease));
                let mut all = fields;
                all.push(("updated_at".into(), timestamp()));
                data::hset(c, &g.job, &all)?;
                unlist(c, &g.stream, &g.job)?;
                data::zrem(c, &g.user_run, &g.id)?;
                data::zrem(c, &g.thread_run, &g.id)?;
                if data::hget(c, &g.job, "status")?.as_deref() == Some("queued") {
                    enqueue(c, keys, &g.stream, &g.id, now)?;
                } else {
                    data::zrem(c, &keys.jobs_active(), &g.id)?;
                }
                let limit = user_limit.max(1);
                promote(
                    c,
                    keys,
                    &g.stream,
                    &g.user_wait,
                    &g.user_run,
                    limit,
                    &g.index,
                    now,
                    slot,
                )?;
                promote(
                    c,
                    keys,
                    &g.stream,
                    &g.thread_wait,
                    &g.thread_run,
                    1,
                    &g.index,
                    now,
                    slot,
                )?;
                Ok(true)
            })
            .await?;
        self.appended();
        if held {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }
}

fn task_entry(e: data::Entry) -> TaskEntry {
    TaskEntry {
        task: serde_json::from_str::<Task>(&e.value).map_err(|err| err.to_string()),
        entry_id: e.id,
        deliveries: e.deliveries,
    }
}

fn job_entry(e: data::Entry) -> JobEntry {
    JobEntry {
        job: e
            .value
            .parse::<JobId>()
            .map_err(|err| format!("bad job id `{}`: {err}", e.value)),
        entry_id: e.id,
        deliveries: e.deliveries,
    }
}

#[async_trait]
impl JobQueue for EmbeddedStore {
    async fn ensure_groups(&self) -> Result<(), StoreError> {
        // The tables are the groups; they exist once the database is open.
        Ok(())
    }

    async fn accept(
        &self,
        delivery: Option<Delivery<'_>>,
        job: Option<&Job>,
        task: &Task,
    ) -> Result<Accepted, StoreError> {
        let task_json = serde_json::to_string(task)
            .map_err(|e| StoreError::Corrupt(format!("task not serialisable: {e}")))?;
        let delivery_key = delivery.map(|d| self.keys.delivery(d));
        let job = job.cloned();
        let stored = self
            .write(move |c, keys| {
                let id = job.as_ref().map(|j| j.id.to_string()).unwrap_or("1".into());
                if let Some(key) = delivery_key
                    && !data::set(c, &key, &id, Some(DELIVERY_TTL), true)?
                {
                    return Ok(false);
                }
                if let Some(job) = &job {
                    data::hset(c, &keys.job(job.id), &job.to_fields())?;
                    for index in [
                        keys.jobs_all(),
                        keys.jobs_by_user(job),
                        keys.jobs_by_repo(&job.repo),
                        keys.jobs_by_thread(&job.repo, job.thread),
                        keys.jobs_active(),
                    ] {
                        data::zadd(c, &index, &id, job.created_ms())?;
                    }
                }
                data::xadd(c, &keys.intake_stream(), &task_json)?;
                Ok(true)
            })
            .await?;
        if !stored {
            return Ok(Accepted::Duplicate);
        }
        self.appended();
        Ok(Accepted::Stored)
    }

    async fn read_tasks(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let entries = self
            .group_read(Keys::intake_stream, consumer, count, block)
            .await?;
        Ok(entries.into_iter().map(task_entry).collect())
    }

    async fn claim_stale_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<TaskEntry>, StoreError> {
        let entries = self
            .group_claim(Keys::intake_stream, consumer, min_idle, count)
            .await?;
        Ok(entries.into_iter().map(task_entry).collect())
    }

    async fn touch_task(&self, consumer: &str, entry_id: &str) -> Result<bool, StoreError> {
        let (consumer, entry) = (consumer.to_owned(), entry_id.to_owned());
        self.write(move |c, keys| {
            Ok(data::xtouch(
                c,
                &keys.intake_stream(),
                &consumer,
                &entry,
                true,
            )?)
        })
        .await
    }

    async fn ack_task(&self, entry_id: &str) -> Result<(), StoreError> {
        let entry = entry_id.to_owned();
        self.write(move |c, keys| Ok(data::xdel(c, &keys.intake_stream(), &entry)?))
            .await
    }

    async fn dispatch(&self, id: JobId) -> Result<Dispatch, StoreError> {
        let outcome = self
            .write(move |c, keys| {
                let key = keys.job(id);
                if data::hget(c, &key, "status")?.as_deref() != Some("queued") {
                    return Ok(Dispatch::NotQueued);
                }
                if data::hget(c, &key, "dispatched_at")?.is_some() {
                    return Ok(Dispatch::Already);
                }
                let at = timestamp();
                data::hset(c, &key, &[("dispatched_at", &at), ("updated_at", &at)])?;
                enqueue(c, keys, &keys.jobs_stream(), &id.to_string(), now_ms())?;
                Ok(Dispatch::Dispatched)
            })
            .await?;
        if outcome == Dispatch::Dispatched {
            self.appended();
        }
        Ok(outcome)
    }

    async fn end_queued(
        &self,
        id: JobId,
        status: JobStatus,
        error: &str,
    ) -> Result<bool, StoreError> {
        debug_assert!(status.is_final());
        let error = error.to_owned();
        self.write(move |c, keys| {
            let key = keys.job(id);
            if data::hget(c, &key, "status")?.as_deref() != Some("queued") {
                return Ok(false);
            }
            let at = timestamp();
            data::hset(
                c,
                &key,
                &[
                    ("updated_at", at.as_str()),
                    ("finished_at", &at),
                    ("status", status.as_str()),
                    ("error", &error),
                ],
            )?;
            unlist(c, &keys.jobs_stream(), &key)?;
            data::zrem(c, &keys.jobs_active(), &id.to_string())?;
            Ok(true)
        })
        .await
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        self.write(move |c, keys| {
            let key = keys.job(id);
            let Some(status) = data::hget(c, &key, "status")?.filter(|s| !is_final(s)) else {
                return Ok(CancelOutcome::Final);
            };
            let at = timestamp();
            if status == "running" {
                data::hset(c, &key, &[("cancel_requested", "1"), ("updated_at", &at)])?;
                return Ok(CancelOutcome::Requested);
            }
            data::hset(
                c,
                &key,
                &[
                    ("status", "cancelled"),
                    ("cancel_requested", "1"),
                    ("updated_at", &at),
                    ("finished_at", &at),
                ],
            )?;
            unlist(c, &keys.jobs_stream(), &key)?;
            data::zrem(c, &keys.jobs_active(), &id.to_string())?;
            Ok(CancelOutcome::Cancelled)
        })
        .await
    }

    async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let entries = self
            .group_read(Keys::jobs_stream, consumer, count, block)
            .await?;
        Ok(entries.into_iter().map(job_entry).collect())
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEntry>, StoreError> {
        let entries = self
            .group_claim(Keys::jobs_stream, consumer, min_idle, count)
            .await?;
        Ok(entries.into_iter().map(job_entry).collect())
    }

    async fn claim(
        &self,
        entry_id: &str,
        job: &Job,
        runner: &str,
        user_limit: usize,
        slot_lease: Duration,
    ) -> Result<Claim, StoreError> {
        let (entry, job, runner) = (entry_id.to_owned(), job.clone(), runner.to_owned());
        let claim = self
            .write(move |c, keys| {
                let g = Gates::of(keys, &job);
                let Some(status) = data::hget(c, &g.job, "status")? else {
                    data::xdel(c, &g.stream, &entry)?;
                    return Ok(Claim::Missing);
                };
                if is_final(&status) {
                    data::xdel(c, &g.stream, &entry)?;
                    if data::hget(c, &g.job, "entry")?.as_deref() == Some(entry.as_str()) {
                        data::hdel(c, &g.job, "entry")?;
                    }
                    return Ok(Claim::Final(status.parse().unwrap_or(JobStatus::Failed)));
                }
                if data::hget(c, &g.job, "entry")?.as_deref() != Some(entry.as_str()) {
                    data::xdel(c, &g.stream, &entry)?;
                    return Ok(Claim::Stale);
                }
                let (now, slot, limit) = (now_ms(), ms(slot_lease), user_limit.max(1));
                data::zrem_upto(c, &g.user_run, now)?;
                data::zrem_upto(c, &g.thread_run, now)?;
                let in_user = data::zscore(c, &g.user_run, &g.id)?.is_some();
                let in_thread = data::zscore(c, &g.thread_run, &g.id)?.is_some();
                let user_ok = in_user || data::zcard(c, &g.user_run)? < limit;
                let thread_ok = in_thread || data::zcard(c, &g.thread_run)? < 1;
                if !(user_ok && thread_ok) {
                    // Defer: give back any slot reserved for this job, wait behind the
                    // full gate.
                    data::zrem(c, &g.user_run, &g.id)?;
                    data::zrem(c, &g.thread_run, &g.id)?;
                    let (wait, run, wait_limit) = if thread_ok {
                        (&g.user_wait, &g.user_run, limit)
                    } else {
                        (&g.thread_wait, &g.thread_run, 1)
                    };
                    data::rpush(c, wait, &g.id)?;
                    data::hset(
                        c,
                        &g.index,
                        &[(wait.as_str(), format!("{run}\n{wait_limit}"))],
                    )?;
                    data::xdel(c, &g.stream, &entry)?;
                    data::hdel(c, &g.job, "entry")?;
                    data::hset(c, &g.job, &[("waiting", "1")])?;
                    if in_user {
                        promote(
                            c,
                            keys,
                            &g.stream,
                            &g.user_wait,
                            &g.user_run,
                            limit,
                            &g.index,
                            now,
                            slot,
                        )?;
                    }
                    if in_thread {
                        promote(
                            c,
                            keys,
                            &g.stream,
                            &g.thread_wait,
                            &g.thread_run,
                            1,
                            &g.index,
                            now,
                            slot,
                        )?;
                    }
                    return Ok(Claim::Deferred);
                }
                data::zadd(c, &g.user_run, &g.id, now + slot)?;
                data::zadd(c, &g.thread_run, &g.id, now + slot)?;
                let attempt = data::hincr(c, &g.job, "attempt", 1)?;
                let at = timestamp();
                data::hset(
                    c,
                    &g.job,
                    &[
                        ("status", "running"),
                        ("runner", &runner),
                        ("started_at", &at),
                        ("updated_at", &at),
                        ("heartbeat_ms", &now.to_string()),
                    ],
                )?;
                Ok(Claim::Leased(Lease {
                    job: job.id,
                    runner,
                    attempt: attempt as u64,
                }))
            })
            .await?;
        if claim == Claim::Deferred {
            self.appended();
        }
        Ok(claim)
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        job: &Job,
        slot_lease: Duration,
    ) -> Result<bool, StoreError> {
        let (lease, job) = (lease.clone(), job.clone());
        self.write(move |c, keys| {
            let g = Gates::of(keys, &job);
            if !holds(c, &g.job, &lease)? {
                return Ok(false);
            }
            let now = now_ms();
            if let Some(entry) = data::hget(c, &g.job, "entry")? {
                data::xtouch(c, &g.stream, &lease.runner, &entry, false)?;
            }
            data::zadd_existing(c, &g.user_run, &g.id, now + ms(slot_lease))?;
            data::zadd_existing(c, &g.thread_run, &g.id, now + ms(slot_lease))?;
            data::hset(c, &g.job, &[("heartbeat_ms", now.to_string())])?;
            Ok(true)
        })
        .await
    }

    async fn record(&self, lease: &Lease, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let (lease, fields) = (lease.clone(), owned(fields));
        let held = self
            .write(move |c, keys| {
                let key = keys.job(lease.job);
                if !holds(c, &key, &lease)? {
                    return Ok(false);
                }
                let mut all = vec![("updated_at".to_owned(), timestamp())];
                all.extend(fields);
                data::hset(c, &key, &all)?;
                Ok(true)
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
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
        let entry = entry_id.to_owned();
        self.write(move |c, keys| Ok(data::xdel(c, &keys.jobs_stream(), &entry)?))
            .await
    }

    async fn promote_waiting(&self, slot_lease: Duration) -> Result<usize, StoreError> {
        let started = self
            .write(move |c, keys| {
                let (now, index, stream) = (now_ms(), keys.waiting_index(), keys.jobs_stream());
                let mut started = 0;
                for (wait, gate) in data::hgetall(c, &index)? {
                    if let Some((run, limit)) = gate.split_once('\n')
                        && let Ok(limit) = limit.parse::<usize>()
                    {
                        started += promote(
                            c,
                            keys,
                            &stream,
                            &wait,
                            run,
                            limit,
                            &index,
                            now,
                            ms(slot_lease),
                        )?;
                    }
                }
                Ok(started)
            })
            .await?;
        if started > 0 {
            self.appended();
        }
        Ok(started)
    }

    async fn requeue_orphans(&self, older_than: Duration) -> Result<usize, StoreError> {
        let requeued = self
            .write(move |c, keys| {
                // The lock outlives one pass and lapses before the next (every 30 s).
                let holder = ulid::Ulid::new().to_string();
                if !data::set(
                    c,
                    &keys.orphans_lock(),
                    &holder,
                    Some(Duration::from_secs(20)),
                    true,
                )? {
                    return Ok(0);
                }
                let (now, stream, active) = (now_ms(), keys.jobs_stream(), keys.jobs_active());
                // No server expires values here: the reconciler's pass (every 30 s, one
                // process at a time) also deletes the expired ones (sessions, dedupe
                // ids, setup states, locks), which every read already ignores.
                data::purge_expired(c, now)?;
                let mut requeued = 0;
                for id in data::zfirst(c, &active, 1000)? {
                    let key = keys.job_key(&id);
                    let field = |name: &str| data::hget(c, &key, name);
                    let status = field("status")?;
                    if status.as_deref().is_none_or(is_final) {
                        data::zrem(c, &active, &id)?;
                        continue;
                    }
                    if field("dispatched_at")?.is_none() || field("waiting")?.is_some() {
                        continue;
                    }
                    let listed = match field("entry")? {
                        Some(entry) => data::xexists(c, &stream, &entry)?,
                        None => false,
                    };
                    let number =
                        |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                    let seen = number(field("queued_ms")?).max(number(field("heartbeat_ms")?));
                    if !listed && now - seen > ms(older_than) {
                        data::hdel(c, &key, "entry")?;
                        enqueue(c, keys, &stream, &id, now)?;
                        requeued += 1;
                    }
                }
                Ok(requeued)
            })
            .await?;
        if requeued > 0 {
            self.appended();
        }
        Ok(requeued)
    }
}
