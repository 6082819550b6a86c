//! Cancel and retry from the dashboard and `/api/v1` (SPEC §14), end to end: the API
//! post, the acknowledger in the same process, the fake GitHub answering permissions.
//!
//! - the job named is the one acted on, never the thread's latest;
//! - the person acting is the one whose access counts: an admin may act on a job whose
//!   requester lost access, a non-admin who lost write access may not act on their own.
//!
//! No runner runs, so dispatched jobs stay `queued` until a test acts on them.

mod common;

use common::world::*;
use common::{SignedIn, github_user};
use repobox::job::JobStatus;

const CODERTOCAT_ID: u64 = 21031067;

async fn no_runner() -> World {
    world(Setup {
        runner: false,
        extra: vec!["--admins".into(), "github:root".into()],
        ..Setup::default()
    })
    .await
}

async fn api_post(w: &World, who: &SignedIn, path: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", w.app.url))
        .header("cookie", &who.cookie)
        .header("x-csrf-token", &who.csrf)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How many tasks the acknowledger ended with `outcome`, from `/metrics`.
async fn outcomes(w: &World, outcome: &str) -> u64 {
    let (_, text) = w.app.get("/metrics").await;
    let needle = format!("outcome=\"{outcome}\"}} ");
    text.lines()
        .find(|l| l.starts_with("repobox_acknowledgements") && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Two acknowledged jobs on issue 1, oldest first.
async fn two_jobs(w: &World) -> (String, String) {
    let first = w.comment("/repobox fix the first thing").await;
    let second = w.comment("/repobox fix the second thing").await;
    for id in [&first, &second] {
        w.wait("acknowledged", id, |j| j.progress_comment_id.is_some(), 20)
            .await;
    }
    (first, second)
}

#[tokio::test]
async fn cancel_and_retry_act_on_the_job_named_not_the_threads_latest() {
    let w = no_runner().await;
    let (first, second) = two_jobs(&w).await;
    let cat = w
        .app
        .sign_in(&github_user(CODERTOCAT_ID, "Codertocat"))
        .await;

    assert_eq!(
        api_post(&w, &cat, &format!("/api/v1/jobs/{first}/cancel")).await,
        202
    );
    w.wait(
        "the first job cancelled",
        &first,
        |j| j.status == JobStatus::Cancelled,
        20,
    )
    .await;
    assert_eq!(
        w.app.job(&second).await.status,
        JobStatus::Queued,
        "the thread's latest job is left alone"
    );
    let body = w.final_comment(&w.app.job(&first).await).await;
    assert!(body.contains("Codertocat"), "{body}");

    // Retry the first (cancelled) job: a new job with its instructions, not the second's.
    let before = outcomes(&w, "retried").await;
    assert_eq!(
        api_post(&w, &cat, &format!("/api/v1/jobs/{first}/retry")).await,
        202
    );
    w.app
        .wait_until("the retry", || async {
            outcomes(&w, "retried").await > before
        })
        .await;
    let jobs = w
        .app
        .store
        .thread_jobs(
            &w.app.job(&first).await.repo,
            w.app.job(&first).await.thread,
            10,
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let newest = w.app.job(&jobs[0].to_string()).await;
    assert!(
        newest.instructions.contains("first thing"),
        "{}",
        newest.instructions
    );
}

#[tokio::test]
async fn the_person_acting_needs_access_not_the_requester() {
    let w = no_runner().await;
    let (first, second) = two_jobs(&w).await;
    let cat = w
        .app
        .sign_in(&github_user(CODERTOCAT_ID, "Codertocat"))
        .await;
    // Codertocat (the requester) can now only read the repository.
    w.github.set_permission("Codertocat", Some("read"));
    let rejected = outcomes(&w, "rejected").await;
    assert_eq!(
        api_post(&w, &cat, &format!("/api/v1/jobs/{first}/cancel")).await,
        202
    );
    w.app
        .wait_until("the refusal", || async {
            outcomes(&w, "rejected").await > rejected
        })
        .await;
    assert_eq!(w.app.job(&first).await.status, JobStatus::Queued);

    // An admin (not a collaborator at all) may cancel it: their rights count, not the
    // requester's, which are gone.
    let root = w.app.sign_in(&github_user(999, "root")).await;
    assert_eq!(
        api_post(&w, &root, &format!("/api/v1/jobs/{first}/cancel")).await,
        202
    );
    w.wait(
        "cancelled by the admin",
        &first,
        |j| j.status == JobStatus::Cancelled,
        20,
    )
    .await;
    let body = w.final_comment(&w.app.job(&first).await).await;
    assert!(body.contains("root"), "{body}");
    assert_eq!(w.app.job(&second).await.status, JobStatus::Queued);
}
