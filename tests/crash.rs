//! Crash safety, tested by crashing (SPEC section 13): two `repobox serve` and two
//! `repobox runner` processes over one Redis and the GitHub fake, each supervised (a
//! process that exits is started again, without its crash point). For every crash point
//! every process of that role is armed, so whichever takes the work aborts there (SIGABRT,
//! no cleanup); the job must still end `succeeded` with exactly one pull request, one
//! progress comment and one bot commit carrying its `Repobox-Job:` trailer.
//!
//! Also: a burst of commands on many threads across the four processes, the same delivery
//! sent to both `serve` at once, and a runner that loses its lease while the agent runs.
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::processes::{Launch, Role, Slot, post_github};
use common::world::*;
use repobox::job::{Job, JobStatus};
use repobox::store::Claim;

struct Cluster {
    w: World,
    serves: Vec<Slot>,
    runners: Vec<Slot>,
    _dirs: tempfile::TempDir,
}

async fn cluster(launch: Launch<'_>) -> Cluster {
    let w = world(Setup {
        runner: false,
        acknowledger: false,
        redis_url: launch.redis_url.clone(),
        ..Setup::default()
    })
    .await;
    let dirs = tempfile::tempdir().unwrap();
    let mut serves = Vec::new();
    let mut runners = Vec::new();
    for i in 0..2 {
        serves.push(
            w.spawn(
                Role::Serve,
                &dirs.path().join(format!("serve-{i}")),
                &launch,
            )
            .await,
        );
        runners.push(
            w.spawn(
                Role::Runner,
                &dirs.path().join(format!("runner-{i}")),
                &launch,
            )
            .await,
        );
    }
    Cluster {
        w,
        serves,
        runners,
        _dirs: dirs,
    }
}

impl Cluster {
    /// Comments `/repobox …` on issue `number` through `serve` number `via`.
    async fn command(&self, via: usize, number: u64) -> String {
        let payload = issue_comment("/repobox fix the spelling", number, "Codertocat", 21031067);
        let url = self.serves[via].url.as_deref().unwrap();
        let (status, body) = post_github(
            url,
            "issue_comment",
            &ulid::Ulid::new().to_string(),
            &payload,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        body["job"].as_str().unwrap().to_owned()
    }

    /// Waits until job `id` is final. Up to 3 minutes: 30 jobs at once write more than
    /// GitHub's 80 content writes a minute, so the request budget holds the last of
    /// them a minute or two (SPEC 13).
    async fn finished(&self, id: &str) -> Job {
        self.w
            .wait("a final state", id, |j| j.status.is_final(), 180)
            .await
    }

    fn aborts(&self, role: Role) -> usize {
        let slots = match role {
            Role::Serve => &self.serves,
            Role::Runner | Role::All => &self.runners,
        };
        slots.iter().map(Slot::aborts).sum()
    }

    fn logs(&self) -> String {
        self.serves
            .iter()
            .chain(&self.runners)
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Exactly one of each effect for job `id` on issue `number`, branch `branch`.
    async fn assert_effects_once(&self, job: &Job) {
        let id = job.id.to_string();
        let marker = format!("<!-- repobox:job:{id} -->");
        let comments: Vec<(String, String)> = self
            .w
            .github
            .comments()
            .await
            .into_iter()
            .filter(|(_, body)| body.contains(&marker))
            .collect();
        assert_eq!(comments.len(), 1, "one progress comment: {comments:#?}");
        let branch = job.branch.clone().expect("a branch");
        let pulls: Vec<_> = self
            .w
            .github
            .created_pulls()
            .await
            .into_iter()
            .filter(|p| p["head"] == branch.as_str())
            .collect();
        assert_eq!(pulls.len(), 1, "one pull request: {pulls:#?}");
        let base = job.base.clone().expect("a base");
        let log = self.w.remote_git(
            REPO_GIT,
            &["log", "--format=%B%x00", &format!("{base}..{branch}")],
        );
        let trailer = format!("Repobox-Job: {id}");
        assert_eq!(
            log.matches(&trailer).count(),
            1,
            "one bot commit with the trailer on {branch}: {log}"
        );
        assert_eq!(
            log.split('\0').filter(|m| !m.trim().is_empty()).count(),
            1,
            "no other commit on the branch: {log}"
        );
    }

    async fn stop(self) {
        for slot in self.serves.into_iter().chain(self.runners) {
            slot.stop().await;
        }
        self.w.app.stop().await;
    }
}

async fn crash_at(point: &str) {
    let c = cluster(Launch {
        failpoints: Some(point),
        ..Launch::default()
    })
    .await;
    let id = c.command(0, 1).await;
    let job = c.finished(&id).await;
    let role = Role::of_point(point);
    assert!(
        c.aborts(role) >= 1,
        "the crash point {point} fired: {}",
        c.logs()
    );
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{point}: {:?}\n{}",
        job.error,
        c.logs()
    );
    c.assert_effects_once(&job).await;
    if role == Role::Runner {
        assert!(
            job.attempt >= 2,
            "the job was delivered again: attempt {}",
            job.attempt
        );
    }
    assert!(
        !c.logs().contains(common::github::INSTALLATION_TOKEN),
        "no token in any log"
    );
    c.stop().await;
}

/// The same on GitLab: an issue note becomes one merge request, one progress note and one
/// commit with the trailer, whatever process aborts at `point`.
async fn crash_on_gitlab_at(point: &str) {
    let c = cluster(Launch {
        failpoints: Some(point),
        ..Launch::default()
    })
    .await;
    let mut note = common::fixture_json("gitlab/docs/note_hook.issue.json");
    note["object_attributes"]["note"] = serde_json::json!("/repobox fix the spelling");
    let r = c.w.app.gitlab("Note Hook", &note).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["job"].as_str().unwrap().to_owned();
    let job = c.finished(&id).await;
    let role = Role::of_point(point);
    assert!(c.aborts(role) >= 1, "the crash point {point} fired");
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{point}: {:?}\n{}",
        job.error,
        c.logs()
    );
    let marker = format!("<!-- repobox:job:{id} -->");
    let notes: Vec<_> =
        c.w.gitlab
            .notes()
            .await
            .into_iter()
            .filter(|(_, body)| body.contains(&marker))
            .collect();
    assert_eq!(notes.len(), 1, "one progress note: {notes:#?}");
    let mrs = c.w.gitlab.created_merge_requests().await;
    assert_eq!(mrs.len(), 1, "one merge request: {mrs:#?}");
    let branch = job.branch.clone().unwrap();
    let log = c.w.remote_git(
        GL_GIT,
        &["log", "--format=%B%x00", &format!("main..{branch}")],
    );
    assert_eq!(
        log.matches(&format!("Repobox-Job: {id}")).count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.split('\0').filter(|m| !m.trim().is_empty()).count(),
        1,
        "{log}"
    );
    c.stop().await;
}

#[tokio::test]
async fn gitlab_crash_at_each_point_leaves_one_of_each_effect() {
    for point in repobox::failpoint::POINTS {
        crash_on_gitlab_at(point).await;
    }
}

#[tokio::test]
async fn crash_at_ack_after_comment() {
    crash_at("ack:after_comment").await;
}

#[tokio::test]
async fn crash_at_ack_after_dispatch() {
    crash_at("ack:after_dispatch").await;
}

#[tokio::test]
async fn crash_at_runner_after_claim() {
    crash_at("runner:after_claim").await;
}

#[tokio::test]
async fn crash_at_runner_after_comment() {
    crash_at("runner:after_comment").await;
}

#[tokio::test]
async fn crash_at_runner_after_commit() {
    crash_at("runner:after_commit").await;
}

#[tokio::test]
async fn crash_at_runner_after_push() {
    crash_at("runner:after_push").await;
}

#[tokio::test]
async fn crash_at_runner_after_pr() {
    crash_at("runner:after_pr").await;
}

#[tokio::test]
async fn crash_at_runner_before_final() {
    crash_at("runner:before_final").await;
}

/// On a pull request whose head refuses the push, the work goes to a new branch into the
/// head; a crash right after that push must not make the next attempt push to yet another
/// branch (or open a second pull request).
#[tokio::test]
async fn crash_after_push_to_the_fallback_branch_of_a_protected_head() {
    let c = cluster(Launch {
        failpoints: Some("runner:after_push"),
        ..Launch::default()
    })
    .await;
    let (_head, id) = c.w.command_on_pull_request(true, false).await;
    let job = c.finished(&id).await;
    assert!(c.aborts(Role::Runner) >= 1, "the crash point fired");
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{:?}\n{}",
        job.error,
        c.logs()
    );
    assert_eq!(
        job.base.as_deref(),
        Some("feature"),
        "into the protected head"
    );
    let branch = job.branch.clone().unwrap();
    assert!(branch.starts_with("repobox/7-"), "{branch}");
    assert!(
        !branch.ends_with("-2"),
        "no second fallback branch: {branch}"
    );
    let pulls = c.w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    assert_eq!(pulls[0]["base"], "feature");
    c.assert_effects_once(&job).await;
    c.stop().await;
}

/// 30 commands on 30 threads at once, alternating between the two `serve`s: 30 jobs,
/// each with one pull request and one progress comment.
#[tokio::test]
async fn thirty_commands_at_once_make_thirty_pull_requests_none_doubled() {
    let c = cluster(Launch {
        extra: vec!["--per-user-limit".into(), "30".into()],
        ..Launch::default()
    })
    .await;
    let sends = (0..30u64).map(|n| c.command((n % 2) as usize, 100 + n));
    let ids = futures::future::join_all(sends).await;
    let mut branches = Vec::new();
    for id in &ids {
        let job = c.finished(id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        branches.push(job.branch.clone().unwrap());
        c.assert_effects_once(&job).await;
    }
    branches.sort();
    branches.dedup();
    assert_eq!(branches.len(), 30, "30 distinct branches");
    assert_eq!(c.w.github.created_pulls().await.len(), 30);
    assert_eq!(c.w.github.comments().await.len(), 30);
    c.stop().await;
}

/// Redis is down while five commands arrive: each gets 503 (GitHub records the failed
/// delivery and never retries it by itself). Once Redis is back, the redelivery
/// reconciler asks GitHub for each of them, GitHub re-sends them, and each becomes
/// exactly one job.
#[tokio::test]
async fn commands_refused_while_redis_was_down_are_redelivered_and_run_once() {
    let port = common::free_port();
    let mut redis = common::start_redis(port);
    common::wait_for_redis(port).await;
    let c = cluster(Launch {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        extra: vec!["--redeliver-interval".into(), "10s".into()],
        ..Launch::default()
    })
    .await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    let url = c.serves[0].url.clone().unwrap();
    let mut sent = std::collections::HashMap::new();
    for n in 0..5u64 {
        let guid = ulid::Ulid::new().to_string();
        let payload = issue_comment("/repobox fix the spelling", 200 + n, "Codertocat", 21031067);
        let (status, body) = post_github(&url, "issue_comment", &guid, &payload).await;
        assert_eq!(status, 503, "nothing stored while Redis is down: {body}");
        // What GitHub keeps of it: one attempt, answered 503.
        let id = c.w.github.record_delivery(&guid, 503, false);
        sent.insert(id, (guid, payload));
    }
    let mut redis = common::start_redis(port);
    common::wait_for_redis(port).await;
    // The test's own connection notices the restart on its first command, then reconnects.
    c.w.app
        .wait_until("the test's store to reconnect", || async {
            c.w.app.store.ping().await.is_ok()
        })
        .await;
    // Within a minute the reconciler has asked for all five.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let asked = loop {
        let mut asked = c.w.github.redelivery_requests().await;
        asked.sort();
        asked.dedup();
        if asked.len() == sent.len() {
            break asked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redeliveries asked for: {asked:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // GitHub re-sends each (same guid) to the App's webhook.
    let mut ids = Vec::new();
    for id in asked {
        let (guid, payload) = &sent[&id];
        // A delivery that fails on the wire is a lost command: say what the serves logged.
        let sent_once = tokio::spawn({
            let (url, guid, payload) = (url.clone(), guid.clone(), payload.clone());
            async move { post_github(&url, "issue_comment", &guid, &payload).await }
        })
        .await;
        let Ok((status, body)) = sent_once else {
            let tail: Vec<String> = c
                .serves
                .iter()
                .map(|s| {
                    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(80)..].join("\n")
                })
                .collect();
            panic!(
                "the redelivery of {guid} did not get an answer; serve runs ended {} time(s) by abort; the serves' last lines:\n{}",
                c.aborts(Role::Serve),
                tail.join("\n-----\n")
            );
        };
        assert_eq!(status, 202, "{body}");
        ids.push(body["job"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = c.finished(id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        c.assert_effects_once(&job).await;
    }
    assert_eq!(
        c.w.app.store.recent_jobs(10).await.unwrap().len(),
        5,
        "five jobs, once each"
    );
    c.stop().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// GitHub's retry of one delivery reaches both `serve`s at once: one job.
#[tokio::test]
async fn the_same_delivery_at_both_serves_at_once_is_one_job() {
    let c = cluster(Launch::default()).await;
    let payload = issue_comment("/repobox fix the spelling", 1, "Codertocat", 21031067);
    let delivery = ulid::Ulid::new().to_string();
    let (a, b) = tokio::join!(
        post_github(
            c.serves[0].url.as_deref().unwrap(),
            "issue_comment",
            &delivery,
            &payload
        ),
        post_github(
            c.serves[1].url.as_deref().unwrap(),
            "issue_comment",
            &delivery,
            &payload
        ),
    );
    let mut statuses = vec![a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 202],
        "one stored, one duplicate: {a:?} {b:?}"
    );
    let id = if a.0 == 202 { &a.1 } else { &b.1 }["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = c.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(c.w.app.store.recent_jobs(10).await.unwrap().len(), 1);
    c.assert_effects_once(&job).await;
    c.stop().await;
}

/// Another runner takes the job over while the agent works: the first runner stops its
/// agent within 5 s and makes no further effect; the job is the new holder's.
#[tokio::test]
async fn a_runner_that_lost_its_lease_stops_the_agent_and_makes_no_effect() {
    let c = cluster(Launch {
        agent: GATED_AGENT,
        ..Launch::default()
    })
    .await;
    let id = c.command(0, 1).await;
    c.w.log_has(&id, "AGENT STARTED", 1).await;
    let before = c.w.app.job(&id).await;
    assert_eq!(before.attempt, 1);
    // A third runner ("thief") takes the entry and the job: the holder's lease is gone.
    let store = &c.w.app.store;
    let taken = store
        .claim_stale_jobs("thief", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let lease = match store
        .claim(
            &taken[0].entry_id,
            &before,
            "thief",
            5,
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        Claim::Leased(l) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(lease.attempt, 2);
    let took_over = tokio::time::Instant::now();
    // The thief keeps its lease alive, as a runner would.
    let beat = {
        let (store, lease, job) = (store.clone(), lease.clone(), before.clone());
        tokio::spawn(async move {
            loop {
                assert!(
                    store
                        .heartbeat(&lease, &job, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    // The old run's last word: written once its pipeline has returned, agent stopped.
    c.w.log_has(&id, "Another runner took the job over", 1)
        .await;
    assert!(
        took_over.elapsed() < Duration::from_secs(5),
        "stopped within 5 s ({:?})",
        took_over.elapsed()
    );
    assert!(
        c.w.remote_ref(REPO_GIT, ISSUE_BRANCH).is_none(),
        "nothing pushed"
    );
    assert!(
        c.w.github.created_pulls().await.is_empty(),
        "no pull request"
    );
    let job = c.w.app.job(&id).await;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.runner.as_deref(), Some("thief"));
    assert!(
        c.logs().contains("lease lost"),
        "the runner says why it stopped"
    );
    beat.abort();
    // The thief ends it; the old holder changed nothing after the takeover.
    store
        .finish(
            &lease,
            &job,
            &[("status", JobStatus::Cancelled.as_str().to_owned())],
            5,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(c.w.app.job(&id).await.status, JobStatus::Cancelled);
    c.stop().await;
}
