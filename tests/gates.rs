//! Admission on a real Redis: the per-user limit and one running job per thread hold
//! across runners, excess jobs wait in order in a list outside the stream (so nobody
//! else is blocked behind them), and come back to `jobs:stream` when a slot frees up,
//! when a dead runner's lease runs out, or when a runner hands its job back.

mod common;

use std::time::Duration;

use common::{Options, TestApp};
use redis::AsyncCommands;
use repobox::job::{Job, TriggerKind};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef, UserRef};
use repobox::store::{Admission, JobEntry, Start};
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

async fn app() -> TestApp {
    TestApp::start(Options {
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
    app.store.dispatch_job(job.id).await.unwrap();
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
    let mut conn = app.conn().await;
    conn.lrange(format!("{}{key}", app.prefix), 0, -1)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_users_excess_job_waits_in_order_and_starts_when_a_slot_frees() {
    let app = app().await;
    let (a1, a2, a3, b1) = (job(1, 10), job(1, 11), job(1, 12), job(2, 13));
    let e1 = deliver(&app, &a1).await;
    assert_eq!(
        app.store.admit(&e1.entry_id, &a1, 1, LEASE).await.unwrap(),
        Admission::Admitted
    );
    for j in [&a2, &a3] {
        let e = deliver(&app, j).await;
        assert_eq!(
            app.store.admit(&e.entry_id, j, 1, LEASE).await.unwrap(),
            Admission::Deferred
        );
    }
    // Deferred entries left the stream; the other user's job is not behind them.
    assert_eq!(stream_len(&app).await, 1);
    assert_eq!(
        waiting(&app, "waiting:user:github:1").await,
        vec![a2.id.to_string(), a3.id.to_string()]
    );
    let eb = deliver(&app, &b1).await;
    assert_eq!(
        app.store.admit(&eb.entry_id, &b1, 1, LEASE).await.unwrap(),
        Admission::Admitted
    );

    // a1 ends: a2 (not a3) goes back to the stream with its slot reserved.
    app.store
        .release(&e1.entry_id, &a1, 1, LEASE, false)
        .await
        .unwrap();
    assert_eq!(
        waiting(&app, "waiting:user:github:1").await,
        vec![a3.id.to_string()]
    );
    let next = read_one(&app).await;
    assert_eq!(next.job.as_ref().unwrap(), &a2.id);
    assert_eq!(
        app.store
            .admit(&next.entry_id, &a2, 1, LEASE)
            .await
            .unwrap(),
        Admission::Admitted
    );
    app.stop().await;
}

#[tokio::test]
async fn one_job_at_a_time_per_thread_whoever_asks() {
    let app = app().await;
    let (first, second) = (job(1, 20), job(2, 20));
    let e1 = deliver(&app, &first).await;
    assert_eq!(
        app.store
            .admit(&e1.entry_id, &first, 5, LEASE)
            .await
            .unwrap(),
        Admission::Admitted
    );
    let e2 = deliver(&app, &second).await;
    assert_eq!(
        app.store
            .admit(&e2.entry_id, &second, 5, LEASE)
            .await
            .unwrap(),
        Admission::Deferred
    );
    assert_eq!(
        waiting(&app, "waiting:thread:github:acme/api:issue:20").await,
        vec![second.id.to_string()]
    );
    app.store
        .release(&e1.entry_id, &first, 5, LEASE, false)
        .await
        .unwrap();
    let next = read_one(&app).await;
    assert_eq!(next.job.as_ref().unwrap(), &second.id);
    app.stop().await;
}

#[tokio::test]
async fn slots_of_a_dead_runner_expire_and_waiting_jobs_are_started() {
    let app = app().await;
    let (a1, a2) = (job(1, 30), job(1, 31));
    let e1 = deliver(&app, &a1).await;
    // A lease of 1 ms: the runner holding it "died" without heartbeats.
    app.store
        .admit(&e1.entry_id, &a1, 1, Duration::from_millis(1))
        .await
        .unwrap();
    let e2 = deliver(&app, &a2).await;
    // Checked right away, the slot may still be held; either way a2 ends up admitted.
    if app.store.admit(&e2.entry_id, &a2, 1, LEASE).await.unwrap() == Admission::Deferred {
        app.wait_until("the expired slot to free a2", || async {
            app.store.promote_waiting(LEASE).await.unwrap() == 1
        })
        .await;
        let next = read_one(&app).await;
        assert_eq!(next.job.as_ref().unwrap(), &a2.id);
        assert_eq!(
            app.store
                .admit(&next.entry_id, &a2, 1, LEASE)
                .await
                .unwrap(),
            Admission::Admitted
        );
    }
    assert!(waiting(&app, "waiting:user:github:1").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_handed_back_job_is_in_the_stream_again_at_once() {
    let app = app().await;
    let j = job(1, 40);
    let e = deliver(&app, &j).await;
    app.store.admit(&e.entry_id, &j, 1, LEASE).await.unwrap();
    assert_eq!(
        app.store.start_job(j.id, "runner-a").await.unwrap(),
        Start::Running
    );
    app.store
        .release(&e.entry_id, &j, 1, LEASE, true)
        .await
        .unwrap();
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

#[tokio::test]
async fn a_final_job_does_not_start_again() {
    let app = app().await;
    let j = job(1, 50);
    deliver(&app, &j).await;
    app.store
        .set_job_fields(j.id, &[("status", "cancelled".into())])
        .await
        .unwrap();
    assert_eq!(
        app.store.start_job(j.id, "runner-a").await.unwrap(),
        Start::Final("cancelled".into())
    );
    app.stop().await;
}
