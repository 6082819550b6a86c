//! The job queue's contract (`store::JobQueue`, SPEC sections 6 and 13) on a real Redis and
//! on the embedded store:
//! - admission: the per-user limit and one running job per thread hold across runners,
//!   excess jobs wait in order in a list outside the stream (so nobody else is blocked
//!   behind them), and come back to `jobs:stream` when a slot frees up, when a dead
//!   runner's slot lease runs out, or when a runner hands its job back;
//! - fencing: every claim increments `attempt`; the run that lost its lease can write
//!   nothing (heartbeat, record, finish, hand back), and a final job never changes;
//! - dispatch puts a job in the stream at most once, whoever dispatches how often;
//! - the orphan reconciler re-queues a job whose entry was lost, once.
//!
//! Every test runs against both backends (SPEC 19): `on_redis::…` and `on_embedded::…`.

mod common;

use std::time::Duration;

use common::{Backend, Options, TestApp};
use repobox::job::JobStatus;
use repobox::job::{Job, TriggerKind};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef, UserRef};
use repobox::store::{CancelOutcome, Claim, Dispatch, JobEntry, Lease, StoreError};
use repobox::task::Task;

const LEASE: Duration = Duration::from_secs(60);

fn job(user: u64, thread: u64) -> Job {
    Job::new(
        RepoRef {
            forge: ForgeKind::GitHub,
            full_name: "acme/api".into(),
            id: None,
            installation_id: None,
        },
        ThreadRef {
            kind: ThreadKind::Issue,
            number: thread,
        },
        format!("Issue {thread}"),
        TriggerKind::Comment,
        UserRef {
            id: user,
            login: format!("user{user}"),
            is_bot: false,
        },
        "do it".into(),
        time::OffsetDateTime::now_utc(),
    )
}

async fn app(backend: Backend) -> TestApp {
    TestApp::start(Options {
        backend,
        acknowledger: false,
        ..Options::default()
    })
    .await
}

/// Stores the job, appends it to `jobs:stream` and reads it as runner `consumer`.
async fn deliver(app: &TestApp, job: &Job) -> JobEntry {
    app.store
        .accept(None, Some(job), &Task::Acknowledge { job: job.id })
        .await
        .unwrap();
    assert_eq!(
        app.store.dispatch(job.id).await.unwrap(),
        Dispatch::Dispatched
    );
    read_one(app).await
}

async fn read_one(app: &TestApp) -> JobEntry {
    let entries = app
        .store
        .read_jobs("runner-a", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "one entry delivered");
    entries.into_iter().next().unwrap()
}

async fn stream_len(app: &TestApp) -> usize {
    app.xlen("jobs:stream").await
}

async fn waiting(app: &TestApp, key: &str) -> Vec<String> {
    app.list(key).await
}

async fn claim(app: &TestApp, e: &JobEntry, j: &Job, limit: usize, lease: Duration) -> Claim {
    app.store
        .claim(&e.entry_id, j, "runner-a", limit, lease)
        .await
        .unwrap()
}

/// Claims as `runner` and expects a lease.
async fn leased(app: &TestApp, e: &JobEntry, j: &Job, runner: &str) -> Lease {
    match app
        .store
        .claim(&e.entry_id, j, runner, 5, LEASE)
        .await
        .unwrap()
    {
        Claim::Leased(lease) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn done() -> Vec<(&'static str, String)> {
    vec![("status", JobStatus::Succeeded.as_str().to_owned())]
}

async fn a_users_excess_job_waits_in_order_and_starts_when_a_slot_frees(backend: Backend) {
    let app = app(backend).await;
    let (a1, a2, a3, b1) = (job(1, 10), job(1, 11), job(1, 12), job(2, 13));
    let e1 = deliver(&app, &a1).await;
    assert_eq!(
        claim(&app, &e1, &a1, 1, LEASE).await,
        Claim::Leased(Lease {
            job: a1.id,
            runner: "runner-a".into(),
            attempt: 1
        })
    );
    for j in [&a2, &a3] {
        let e = deliver(&app, j).await;
        assert_eq!(claim(&app, &e, j, 1, LEASE).await, Claim::Deferred);
    }
    // Deferred entries left the stream; the other user's job is not behind them.
    assert_eq!(stream_len(&app).await, 1);
    assert_eq!(
        waiting(&app, "waiting:user:github:1").await,
        vec![a2.id.to_string(), a3.id.to_string()]
    );
    let eb = deliver(&app, &b1).await;
    assert_eq!(
        claim(&app, &eb, &b1, 1, LEASE).await,
        Claim::Leased(Lease {
            job: b1.id,
            runner: "runner-a".into(),
            attempt: 1
        })
    );

    // a1 ends: a2 (not a3) goes back to the stream with its slot reserved.
    let lease = Lease {
        job: a1.id,
        runner: "runner-a".into(),
        attempt: 1,
    };
    app.store
        .finish(&lease, &a1, &done(), 1, LEASE)
        .await
        .unwrap();
    assert_eq!(
        waiting(&app, "waiting:user:github:1").await,
        vec![a3.id.to_string()]
    );
    let next = read_one(&app).await;
    assert_eq!(next.job.as_ref().unwrap(), &a2.id);
    assert!(matches!(
        claim(&app, &next, &a2, 1, LEASE).await,
        Claim::Leased(_)
    ));
    app.stop().await;
}

async fn one_job_at_a_time_per_thread_whoever_asks(backend: Backend) {
    let app = app(backend).await;
    let (first, second) = (job(1, 20), job(2, 20));
    let e1 = deliver(&app, &first).await;
    let lease = leased(&app, &e1, &first, "runner-a").await;
    let e2 = deliver(&app, &second).await;
    assert_eq!(claim(&app, &e2, &second, 5, LEASE).await, Claim::Deferred);
    assert_eq!(
        waiting(&app, "waiting:thread:github:acme/api:issue:20").await,
        vec![second.id.to_string()]
    );
    app.store
        .finish(&lease, &first, &done(), 5, LEASE)
        .await
        .unwrap();
    let next = read_one(&app).await;
    assert_eq!(next.job.as_ref().unwrap(), &second.id);
    app.stop().await;
}

async fn slots_of_a_dead_runner_expire_and_waiting_jobs_are_started(backend: Backend) {
    let app = app(backend).await;
    let (a1, a2) = (job(1, 30), job(1, 31));
    let e1 = deliver(&app, &a1).await;
    // A lease of 1 ms: the runner holding it "died" without heartbeats.
    claim(&app, &e1, &a1, 1, Duration::from_millis(1)).await;
    let e2 = deliver(&app, &a2).await;
    // Checked right away, the slot may still be held; either way a2 ends up admitted.
    if claim(&app, &e2, &a2, 1, LEASE).await == Claim::Deferred {
        app.wait_until("the expired slot to free a2", || async {
            app.store.promote_waiting(LEASE).await.unwrap() == 1
        })
        .await;
        let next = read_one(&app).await;
        assert_eq!(next.job.as_ref().unwrap(), &a2.id);
        assert!(matches!(
            claim(&app, &next, &a2, 1, LEASE).await,
            Claim::Leased(_)
        ));
    }
    assert!(waiting(&app, "waiting:user:github:1").await.is_empty());
    app.stop().await;
}

async fn a_handed_back_job_is_in_the_stream_again_at_once(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 40);
    let e = deliver(&app, &j).await;
    let lease = leased(&app, &e, &j, "runner-a").await;
    app.store.hand_back(&lease, &j, 1, LEASE).await.unwrap();
    assert_eq!(app.job(&j.id.to_string()).await.status, JobStatus::Queued);
    let again = read_one(&app).await;
    assert_eq!(again.job.as_ref().unwrap(), &j.id);
    assert_ne!(again.entry_id, e.entry_id);
    assert_eq!(again.deliveries, 1);
    // The old entry is gone from the pending list: nobody will claim it too.
    let claimed = app
        .store
        .claim_stale_jobs("runner-b", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].entry_id, again.entry_id);
    app.stop().await;
}

async fn a_final_job_never_changes_state_again(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 50);
    let e = deliver(&app, &j).await;
    let lease = leased(&app, &e, &j, "runner-a").await;
    app.store
        .finish(&lease, &j, &done(), 5, LEASE)
        .await
        .unwrap();
    let id = j.id.to_string();
    // Every transition finds it final and leaves it be.
    assert!(matches!(
        app.store
            .finish(&lease, &j, &[("status", "failed".into())], 5, LEASE)
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        app.store.hand_back(&lease, &j, 5, LEASE).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(
        !app.store
            .end_queued(j.id, JobStatus::Rejected, "late")
            .await
            .unwrap()
    );
    assert_eq!(app.store.cancel(j.id).await.unwrap(), CancelOutcome::Final);
    assert_eq!(app.store.dispatch(j.id).await.unwrap(), Dispatch::NotQueued);
    assert_eq!(stream_len(&app).await, 0, "the finished entry is gone");
    let job = app.job(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(job.error.is_none());
    assert!(!job.cancel_requested);
    app.stop().await;
}

async fn a_cancelled_queued_job_is_not_claimed(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 51);
    let e = deliver(&app, &j).await;
    assert_eq!(
        app.store.cancel(j.id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        claim(&app, &e, &j, 5, LEASE).await,
        Claim::Final(JobStatus::Cancelled)
    );
    assert_eq!(app.job(&j.id.to_string()).await.attempt, 0, "never started");
    app.stop().await;
}

async fn a_running_job_gets_a_cancel_request_not_a_state_change(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 52);
    let e = deliver(&app, &j).await;
    leased(&app, &e, &j, "runner-a").await;
    assert_eq!(
        app.store.cancel(j.id).await.unwrap(),
        CancelOutcome::Requested
    );
    let job = app.job(&j.id.to_string()).await;
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.cancel_requested);
    app.stop().await;
}

async fn dispatch_puts_a_job_in_the_stream_once(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 60);
    app.store
        .accept(None, Some(&j), &Task::Acknowledge { job: j.id })
        .await
        .unwrap();
    // Two acknowledgers (a re-run task, a second serve) dispatch at once, then again.
    let (a, b) = tokio::join!(app.store.dispatch(j.id), app.store.dispatch(j.id));
    let mut outcomes = vec![a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|d| *d == Dispatch::Already);
    assert_eq!(outcomes, vec![Dispatch::Dispatched, Dispatch::Already]);
    assert_eq!(app.store.dispatch(j.id).await.unwrap(), Dispatch::Already);
    assert_eq!(stream_len(&app).await, 1);
    app.stop().await;
}

async fn a_runner_that_lost_its_lease_can_write_nothing(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 70);
    let e = deliver(&app, &j).await;
    let first = leased(&app, &e, &j, "runner-a").await;
    assert_eq!(first.attempt, 1);
    assert!(app.store.heartbeat(&first, &j, LEASE).await.unwrap());
    app.store
        .record(&first, &[("branch", "repobox/70-a".into())])
        .await
        .unwrap();
    // runner-a stalls; runner-b takes the entry over and claims the job.
    let taken = app
        .store
        .claim_stale_jobs("runner-b", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let second = leased(&app, &taken[0], &j, "runner-b").await;
    assert_eq!(second.attempt, 2);
    // The old run is fenced off everywhere.
    assert!(!app.store.heartbeat(&first, &j, LEASE).await.unwrap());
    assert!(matches!(
        app.store
            .record(&first, &[("branch", "repobox/70-b".into())])
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        app.store
            .finish(&first, &j, &[("status", "failed".into())], 5, LEASE)
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        app.store.hand_back(&first, &j, 5, LEASE).await,
        Err(StoreError::LeaseLost)
    ));
    let job = app.job(&j.id.to_string()).await;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.runner.as_deref(), Some("runner-b"));
    assert_eq!(job.branch.as_deref(), Some("repobox/70-a"));
    // The old runner's heartbeat did not take the entry back: it is still runner-b's.
    assert_eq!(app.holders("jobs:stream").await, ["runner-b"]);
    // The new run goes on and ends it.
    assert!(app.store.heartbeat(&second, &j, LEASE).await.unwrap());
    app.store
        .finish(&second, &j, &done(), 5, LEASE)
        .await
        .unwrap();
    assert_eq!(
        app.job(&j.id.to_string()).await.status,
        JobStatus::Succeeded
    );
    app.stop().await;
}

async fn a_duplicate_entry_is_dropped_without_touching_the_job(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 80);
    let e = deliver(&app, &j).await;
    let lease = leased(&app, &e, &j, "runner-a").await;
    // An entry that is not the job's current one (left from an older dispatch).
    let stray = app.add_entry("jobs:stream", "job", &j.id.to_string()).await;
    let dup = read_one(&app).await;
    assert_eq!(dup.entry_id, stray);
    assert_eq!(
        app.store
            .claim(&dup.entry_id, &j, "runner-b", 5, LEASE)
            .await
            .unwrap(),
        Claim::Stale
    );
    let job = app.job(&j.id.to_string()).await;
    assert_eq!((job.attempt, job.runner.as_deref()), (1, Some("runner-a")));
    assert!(app.store.heartbeat(&lease, &j, LEASE).await.unwrap());
    assert_eq!(stream_len(&app).await, 1, "the stray entry is deleted");
    app.stop().await;
}

async fn the_orphan_reconciler_requeues_a_lost_entry_once(backend: Backend) {
    let app = app(backend).await;
    let (lost, fine) = (job(1, 90), job(2, 91));
    let e = deliver(&app, &lost).await;
    deliver(&app, &fine).await;
    // The entry vanishes (a Redis restart that lost the stream, an XDEL by hand).
    app.delete_entry("jobs:stream", &e.entry_id).await;
    assert_eq!(stream_len(&app).await, 1);
    // Not yet: younger than the threshold.
    assert_eq!(app.store.requeue_orphans(LEASE).await.unwrap(), 0);
    app.delete_value("lock:orphans").await;
    assert_eq!(app.store.requeue_orphans(Duration::ZERO).await.unwrap(), 1);
    // A second pass within the lock's time does nothing; after it, nothing is orphaned.
    assert_eq!(app.store.requeue_orphans(Duration::ZERO).await.unwrap(), 0);
    app.delete_value("lock:orphans").await;
    assert_eq!(app.store.requeue_orphans(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(stream_len(&app).await, 2);
    let again = app
        .store
        .read_jobs("runner-a", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "the re-queued entry (the other one was read before)"
    );
    assert_eq!(again[0].job.as_ref().unwrap(), &lost.id);
    assert!(matches!(
        claim(&app, &again[0], &lost, 5, LEASE).await,
        Claim::Leased(_)
    ));
    app.stop().await;
}

async fn a_task_heartbeat_holds_only_for_its_owner(backend: Backend) {
    let app = app(backend).await;
    let j = job(1, 95);
    app.store
        .accept(None, Some(&j), &Task::Acknowledge { job: j.id })
        .await
        .unwrap();
    let tasks = app
        .store
        .read_tasks("serve-a", 1, Duration::from_secs(1))
        .await
        .unwrap();
    let entry = tasks[0].entry_id.clone();
    assert!(app.store.touch_task("serve-a", &entry).await.unwrap());
    assert!(!app.store.touch_task("serve-b", &entry).await.unwrap());
    let taken = app
        .store
        .claim_stale_tasks("serve-b", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        !app.store.touch_task("serve-a", &entry).await.unwrap(),
        "serve-a lost it"
    );
    assert!(app.store.touch_task("serve-b", &entry).await.unwrap());
    app.stop().await;
}

/// SPEC 16 steering: a running job takes instructions only while its run keeps steering
/// open; each provisional job is given once; closing returns what the agent has not
/// read (and stays open), else closes in the same step; a lost lease can do neither.
async fn steering_is_given_once_only_while_open_and_closes_atomically(backend: Backend) {
    use repobox::store::{Steer, Steered};
    let app = app(backend).await;
    let running = job(7, 70);
    let e = deliver(&app, &running).await;
    let steer = |from: &Job, text: &str| Steer {
        from_job: from.id,
        login: "alice".into(),
        text: text.into(),
    };
    let (p1, p2, p3) = (job(7, 70), job(7, 70), job(7, 70));
    // Steers `from`'s command into the running job.
    let give = |from: &Job, text: &str| {
        let (store, entry, id) = (app.store.clone(), steer(from, text), running.id);
        async move { store.steer(id, &entry).await.unwrap() }
    };
    // Queued, not running: nothing to steer.
    assert_eq!(give(&p1, "one").await, Steered::NotSteerable);
    let lease = leased(&app, &e, &running, "runner-a").await;
    // Running, but its agent has not opened steering (a `command` agent).
    assert_eq!(give(&p1, "one").await, Steered::NotSteerable);
    app.store.open_steering(&lease).await.unwrap();
    assert_eq!(give(&p1, "one").await, Steered::Now);
    assert_eq!(
        give(&p1, "one").await,
        Steered::Already,
        "a redelivered acknowledgement adds nothing"
    );
    assert_eq!(
        app.store.steering(running.id, 0).await.unwrap(),
        vec![steer(&p1, "one")]
    );
    // Closing while an entry is unread hands it over and stays open.
    assert_eq!(
        app.store.close_steering(&lease, 0).await.unwrap(),
        vec![steer(&p1, "one")]
    );
    assert_eq!(give(&p2, "two").await, Steered::Now);
    assert_eq!(
        app.store.steering(running.id, 1).await.unwrap(),
        vec![steer(&p2, "two")]
    );
    // All read: it closes, and later commands are jobs of their own.
    assert_eq!(app.store.close_steering(&lease, 2).await.unwrap(), vec![]);
    assert_eq!(give(&p3, "three").await, Steered::NotSteerable);
    // A run that lost its lease can neither open nor close.
    let stale = Lease {
        attempt: lease.attempt + 1,
        ..lease.clone()
    };
    assert!(matches!(
        app.store.open_steering(&stale).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        app.store.close_steering(&stale, 0).await,
        Err(StoreError::LeaseLost)
    ));
    // A steered provisional job leaves no trace in the indices.
    app.store
        .accept(None, Some(&p3), &Task::Acknowledge { job: p3.id })
        .await
        .unwrap();
    app.store.discard_job(&p3).await.unwrap();
    assert!(app.store.get_job(p3.id).await.unwrap().is_none());
    let thread = app
        .store
        .thread_jobs(&p3.repo, p3.thread, 10)
        .await
        .unwrap();
    assert!(!thread.contains(&p3.id), "{thread:?}");
}

on_each_backend!(
    a_users_excess_job_waits_in_order_and_starts_when_a_slot_frees,
    one_job_at_a_time_per_thread_whoever_asks,
    slots_of_a_dead_runner_expire_and_waiting_jobs_are_started,
    a_handed_back_job_is_in_the_stream_again_at_once,
    a_final_job_never_changes_state_again,
    a_cancelled_queued_job_is_not_claimed,
    a_running_job_gets_a_cancel_request_not_a_state_change,
    dispatch_puts_a_job_in_the_stream_once,
    a_runner_that_lost_its_lease_can_write_nothing,
    a_duplicate_entry_is_dropped_without_touching_the_job,
    the_orphan_reconciler_requeues_a_lost_entry_once,
    a_task_heartbeat_holds_only_for_its_owner,
    steering_is_given_once_only_while_open_and_closes_atomically,
);
