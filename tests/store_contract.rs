//! The contract of the storage seams beside the job queue (`tests/queue.rs` covers that
//! one), on a real Redis and on the embedded store (SPEC 19):
//! - `Sessions`: sessions are saved, replaced, refused on an id collision, expire, and
//!   sign-in failures are counted within a window that the first failure opens;
//! - `Accounts`: a user keeps its first `created_at`; a provider is stored only with a
//!   sealed token, listed for its owner oldest first, deleted only by its owner;
//! - `SettingsStore`: admin settings, setup secrets, the GitHub App set once, one-time
//!   manifest states and the setup token that every `serve` shares;
//! - `Recovery`: delivery dedupe, the reconciler's cursor and a lock that expires;
//! - `UsageStore`: spend adds up per requester and per repository;
//! - `JobRecords`: job records, their indices newest first and in pages, logs read in
//!   order and waited on through a `LogReader`;
//! - `Store::key_fingerprint`: set once, never overwritten.
//!
//! Every test runs against both backends: `on_redis::…` and `on_embedded::…`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, Options, TestApp, issue_job};
use repobox::crypto::SecretBox;
use repobox::job::{Job, JobId, JobStatus};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef, UserRef};
use repobox::store::usage::{self, MonthUsage};
use repobox::store::{Accepted, Delivery, JobIndex, LogLine, Provider, StoreError, User};
use repobox::task::Task;
use time::OffsetDateTime;
use ulid::Ulid;

const HOUR: Duration = Duration::from_secs(3600);
/// A TTL that has surely passed once a test has slept [`PAST_SHORT`].
const SHORT: Duration = Duration::from_millis(50);
const PAST_SHORT: Duration = Duration::from_millis(80);

async fn app(backend: Backend) -> TestApp {
    TestApp::start(Options {
        backend,
        acknowledger: false,
        ..Options::default()
    })
    .await
}

/// A fixed time, `seconds` after a base in 2026 (whole seconds: exact in RFC 3339).
fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000 + seconds).unwrap()
}

/// A stream id as numbers, to compare ids by order.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id is <ms>-<seq>");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn lines(log: &[LogLine]) -> Vec<&str> {
    log.iter().map(|l| l.line.as_str()).collect()
}

fn owned(fields: &[(&str, &str)]) -> HashMap<String, String> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// Sessions.

async fn a_session_is_saved_replaced_loaded_and_deleted(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.load_session("s1").await.unwrap(), None);
    assert!(s.save_session("s1", "one", HOUR, true).await.unwrap());
    assert!(s.save_session("s2", "other", HOUR, true).await.unwrap());
    assert_eq!(s.load_session("s1").await.unwrap().as_deref(), Some("one"));
    assert!(
        s.save_session("s1", "two", HOUR, false).await.unwrap(),
        "a save that is not only_new replaces"
    );
    assert_eq!(s.load_session("s1").await.unwrap().as_deref(), Some("two"));
    s.delete_session("s1").await.unwrap();
    assert_eq!(s.load_session("s1").await.unwrap(), None);
    assert_eq!(
        s.load_session("s2").await.unwrap().as_deref(),
        Some("other"),
        "deleting one session leaves the others"
    );
    s.delete_session("never-there").await.unwrap();
    app.stop().await;
}

async fn a_new_session_never_replaces_an_existing_one(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert!(s.save_session("dup", "first", HOUR, true).await.unwrap());
    assert!(
        !s.save_session("dup", "second", HOUR, true).await.unwrap(),
        "an id collision is refused"
    );
    assert_eq!(
        s.load_session("dup").await.unwrap().as_deref(),
        Some("first")
    );
    app.stop().await;
}

async fn a_session_expires_after_its_ttl(backend: Backend) {
    let app = app(backend).await;
    let s = app.store.clone();
    assert!(s.save_session("brief", "short", SHORT, true).await.unwrap());
    assert!(s.save_session("kept", "long", HOUR, true).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    app.wait_until("the short session to expire", || {
        let s = s.clone();
        async move { s.load_session("brief").await.unwrap().is_none() }
    })
    .await;
    assert_eq!(
        s.load_session("kept").await.unwrap().as_deref(),
        Some("long")
    );
    assert!(
        s.save_session("brief", "again", HOUR, true).await.unwrap(),
        "an expired session's id is free again"
    );
    assert_eq!(
        s.load_session("brief").await.unwrap().as_deref(),
        Some("again")
    );
    app.stop().await;
}

async fn signin_failures_are_counted_within_the_window_the_first_one_opens(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let window = Duration::from_secs(60);
    assert_eq!(
        s.signin_failures("ip:1").await.unwrap(),
        (0, Duration::ZERO)
    );
    for n in 1..=3 {
        assert_eq!(s.count_signin_failure("ip:1", window).await.unwrap(), n);
    }
    let (count, left) = s.signin_failures("ip:1").await.unwrap();
    assert_eq!(count, 3);
    assert!(
        left > Duration::ZERO && left <= window,
        "time left {left:?}"
    );
    // A later failure with a longer window does not extend the open one.
    assert_eq!(s.count_signin_failure("ip:1", HOUR).await.unwrap(), 4);
    let (count, left) = s.signin_failures("ip:1").await.unwrap();
    assert_eq!(count, 4);
    assert!(
        left > Duration::ZERO && left <= window,
        "time left {left:?}"
    );
    assert_eq!(
        s.signin_failures("ip:2").await.unwrap(),
        (0, Duration::ZERO),
        "counted per key"
    );
    app.stop().await;
}

async fn signin_failures_are_forgotten_when_the_window_ends(backend: Backend) {
    let app = app(backend).await;
    let s = app.store.clone();
    assert_eq!(s.count_signin_failure("ip:9", SHORT).await.unwrap(), 1);
    tokio::time::sleep(PAST_SHORT).await;
    app.wait_until("the failure window to end", || {
        let s = s.clone();
        async move { s.signin_failures("ip:9").await.unwrap().0 == 0 }
    })
    .await;
    assert_eq!(
        s.signin_failures("ip:9").await.unwrap(),
        (0, Duration::ZERO)
    );
    assert_eq!(
        s.count_signin_failure("ip:9", HOUR).await.unwrap(),
        1,
        "a failure after the window starts a new count"
    );
    let (_, left) = s.signin_failures("ip:9").await.unwrap();
    assert!(
        left > Duration::from_secs(60),
        "the new window is the new failure's: {left:?}"
    );
    app.stop().await;
}

// Accounts.

fn user(login: &str, created: i64, last_login: i64) -> User {
    User {
        provider: "github".into(),
        id: "7".into(),
        login: login.into(),
        name: Some("Octo Cat".into()),
        email: None,
        created_at: at(created),
        last_login_at: at(last_login),
    }
}

/// A provider of `owner` created at `at(created)`, its token sealed with `sealer` (or
/// left in plain text without one).
fn provider(owner: &str, label: &str, created: i64, sealer: Option<&SecretBox>) -> Provider {
    let id = Ulid::new();
    let plain = format!("glpat-{label}");
    Provider {
        id,
        owner: owner.into(),
        kind: ForgeKind::GitLab,
        url: "https://gitlab.example.com".into(),
        label: label.into(),
        token: match sealer {
            Some(b) => b.seal(&plain, &Provider::token_context(id)),
            None => plain,
        },
        created_at: at(created),
    }
}

async fn a_user_keeps_its_first_created_at(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.get_user("github", "7").await.unwrap(), None);
    s.upsert_user(&user("octo", 0, 0)).await.unwrap();
    assert_eq!(
        s.get_user("github", "7").await.unwrap(),
        Some(user("octo", 0, 0))
    );
    s.upsert_user(&user("octocat", 500, 500)).await.unwrap();
    let got = s.get_user("github", "7").await.unwrap().expect("stored");
    assert_eq!(got.login, "octocat");
    assert_eq!(got.last_login_at, at(500));
    assert_eq!(got.created_at, at(0), "created_at is the first write's");
    assert_eq!(s.get_user("github", "8").await.unwrap(), None);
    assert_eq!(
        s.get_user("gitlab", "7").await.unwrap(),
        None,
        "users are keyed by their sign-in provider too"
    );
    app.stop().await;
}

async fn a_provider_with_a_plain_token_is_refused(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let plain = provider("github:7", "plain", 0, None);
    match s.add_provider(&plain).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.list_providers("github:7").await.unwrap(), []);
    assert_eq!(s.get_provider(plain.id).await.unwrap(), None);
    app.stop().await;
}

async fn providers_are_listed_for_their_owner_oldest_first_and_deleted_by_it(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let sealer = SecretBox::new(&[7u8; 32]);
    let newer = provider("github:7", "newer", 200, Some(&sealer));
    let older = provider("github:7", "older", 100, Some(&sealer));
    let theirs = provider("github:8", "theirs", 50, Some(&sealer));
    // Added newest first: the order is by creation, not by insertion.
    for p in [&newer, &older, &theirs] {
        s.add_provider(p).await.unwrap();
    }
    assert_eq!(
        s.list_providers("github:7").await.unwrap(),
        [older.clone(), newer.clone()]
    );
    assert_eq!(
        s.list_providers("github:8").await.unwrap(),
        std::slice::from_ref(&theirs)
    );
    assert_eq!(s.list_providers("gitlab:7").await.unwrap(), []);
    let stored = s.get_provider(older.id).await.unwrap().expect("stored");
    assert_eq!(stored, older);
    assert_eq!(
        sealer
            .open(&stored.token, &Provider::token_context(older.id))
            .unwrap()
            .expose(),
        "glpat-older",
        "the sealed token is kept as sealed"
    );

    assert!(
        !s.delete_provider("github:8", older.id).await.unwrap(),
        "not theirs to delete"
    );
    assert_eq!(s.get_provider(older.id).await.unwrap(), Some(older.clone()));
    assert_eq!(
        s.list_providers("github:7").await.unwrap(),
        [older.clone(), newer.clone()]
    );
    assert!(s.delete_provider("github:7", older.id).await.unwrap());
    assert_eq!(s.get_provider(older.id).await.unwrap(), None);
    assert_eq!(
        s.list_providers("github:7").await.unwrap(),
        std::slice::from_ref(&newer)
    );
    assert!(
        !s.delete_provider("github:7", older.id).await.unwrap(),
        "gone already"
    );
    assert_eq!(s.list_providers("github:8").await.unwrap(), [theirs]);
    app.stop().await;
}

// SettingsStore.

async fn admin_settings_are_set_read_and_deleted(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.setting("model").await.unwrap(), None);
    s.set_settings(&[("model", "opus".into()), ("max_turns", "40".into())])
        .await
        .unwrap();
    assert_eq!(s.setting("model").await.unwrap().as_deref(), Some("opus"));
    assert_eq!(
        s.get_settings().await.unwrap(),
        owned(&[("model", "opus"), ("max_turns", "40")])
    );
    s.set_settings(&[("model", "sonnet".into())]).await.unwrap();
    assert_eq!(
        s.get_settings().await.unwrap(),
        owned(&[("model", "sonnet"), ("max_turns", "40")]),
        "a write changes only its fields"
    );
    s.delete_setting("model").await.unwrap();
    assert_eq!(s.setting("model").await.unwrap(), None);
    assert_eq!(
        s.get_settings().await.unwrap(),
        owned(&[("max_turns", "40")])
    );
    s.set_settings(&[]).await.unwrap();
    assert_eq!(
        s.get_settings().await.unwrap(),
        owned(&[("max_turns", "40")])
    );
    app.stop().await;
}

async fn setup_secrets_are_set_replaced_and_deleted(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.setup_secrets().await.unwrap(), HashMap::new());
    s.set_setup_secret("anthropic", "v1.a.b").await.unwrap();
    s.set_setup_secret("openai", "v1.c.d").await.unwrap();
    s.set_setup_secret("openai", "v1.e.f").await.unwrap();
    assert_eq!(
        s.setup_secrets().await.unwrap(),
        owned(&[("anthropic", "v1.a.b"), ("openai", "v1.e.f")])
    );
    assert!(s.delete_setup_secret("openai").await.unwrap());
    assert!(
        !s.delete_setup_secret("openai").await.unwrap(),
        "there is none left to delete"
    );
    assert_eq!(
        s.setup_secrets().await.unwrap(),
        owned(&[("anthropic", "v1.a.b")])
    );
    app.stop().await;
}

async fn the_github_app_is_stored_once_and_confirmed(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.github_app().await.unwrap(), None);
    assert!(
        !s.confirm_github_app("2026-05-01T00:00:00Z").await.unwrap(),
        "no App to confirm"
    );
    assert_eq!(
        s.github_app().await.unwrap(),
        None,
        "confirming creates nothing"
    );
    assert!(
        s.create_github_app(&[("app_id", "1".into()), ("slug", "first".into())])
            .await
            .unwrap()
    );
    assert!(
        !s.create_github_app(&[("app_id", "2".into()), ("slug", "second".into())])
            .await
            .unwrap(),
        "setup happens once"
    );
    let first = owned(&[("app_id", "1"), ("slug", "first")]);
    assert_eq!(s.github_app().await.unwrap(), Some(first));
    assert!(s.confirm_github_app("2026-05-01T00:00:00Z").await.unwrap());
    assert_eq!(
        s.github_app().await.unwrap(),
        Some(owned(&[
            ("app_id", "1"),
            ("slug", "first"),
            ("confirmed_at", "2026-05-01T00:00:00Z"),
        ]))
    );
    app.stop().await;
}

async fn a_setup_state_is_taken_once(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert!(!s.take_setup_state("never-issued").await.unwrap());
    s.put_setup_state("st-1", HOUR).await.unwrap();
    s.put_setup_state("st-2", HOUR).await.unwrap();
    assert!(s.take_setup_state("st-1").await.unwrap());
    assert!(!s.take_setup_state("st-1").await.unwrap(), "used up");
    assert!(
        s.take_setup_state("st-2").await.unwrap(),
        "each state is its own"
    );
    app.stop().await;
}

async fn the_setup_token_is_the_first_candidate_for_good(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    // The harness started `serve`, which stored a token of its own.
    let announced = s.setup_token("cand-0").await.unwrap();
    assert_ne!(
        announced, "cand-0",
        "the stored token wins over a candidate"
    );
    assert_eq!(s.setup_token("cand-00").await.unwrap(), announced);
    app.delete_value("setup:token").await;
    assert_eq!(s.setup_token("cand-1").await.unwrap(), "cand-1");
    assert_eq!(s.setup_token("cand-2").await.unwrap(), "cand-1");
    assert_eq!(s.setup_token("cand-3").await.unwrap(), "cand-1");
    app.stop().await;
}

// Recovery.

async fn a_delivery_is_seen_once_accepted_and_never_accepted_twice(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let delivery = Delivery {
        forge: ForgeKind::GitHub,
        id: "d-1",
    };
    let on_gitlab = Delivery {
        forge: ForgeKind::GitLab,
        id: "d-1",
    };
    assert!(!s.delivery_seen(delivery).await.unwrap());
    let first = issue_job(1, "octo", 1);
    assert_eq!(
        s.accept(Some(delivery), None, &Task::Acknowledge { job: first.id })
            .await
            .unwrap(),
        Accepted::Stored
    );
    assert!(s.delivery_seen(delivery).await.unwrap());
    assert!(
        !s.delivery_seen(on_gitlab).await.unwrap(),
        "a delivery id is per forge"
    );
    let again = issue_job(1, "octo", 2);
    assert_eq!(
        s.accept(
            Some(delivery),
            Some(&again),
            &Task::Acknowledge { job: again.id }
        )
        .await
        .unwrap(),
        Accepted::Duplicate
    );
    assert_eq!(
        s.get_job(again.id).await.unwrap(),
        None,
        "a duplicate writes nothing"
    );
    assert_eq!(s.recent_jobs(10).await.unwrap(), []);
    app.stop().await;
}

async fn the_redeliver_cursor_is_kept(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.redeliver_cursor().await.unwrap(), None);
    s.set_redeliver_cursor(42).await.unwrap();
    assert_eq!(s.redeliver_cursor().await.unwrap(), Some(42));
    s.set_redeliver_cursor(u64::MAX).await.unwrap();
    assert_eq!(s.redeliver_cursor().await.unwrap(), Some(u64::MAX));
    app.stop().await;
}

async fn a_lock_is_held_until_its_ttl_lapses(backend: Backend) {
    let app = app(backend).await;
    let s = app.store.clone();
    assert!(s.try_lock("round", HOUR).await.unwrap());
    assert!(!s.try_lock("round", HOUR).await.unwrap(), "held");
    assert!(
        s.try_lock("other", HOUR).await.unwrap(),
        "locks are by name"
    );

    assert!(s.try_lock("brief", SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    app.wait_until("the brief lock to lapse", || {
        let s = s.clone();
        async move { s.try_lock("brief", HOUR).await.unwrap() }
    })
    .await;
    assert!(
        !s.try_lock("brief", HOUR).await.unwrap(),
        "taken again, for an hour"
    );
    assert!(!s.try_lock("round", HOUR).await.unwrap(), "still held");
    app.stop().await;
}

// UsageStore.

async fn usage_adds_up_per_requester_and_repository(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let repo = |name: &str| RepoRef {
        forge: ForgeKind::GitHub,
        full_name: name.into(),
        id: None,
        installation_id: None,
    };
    let requester = |id: u64, login: &str| UserRef {
        id,
        login: login.into(),
        is_bot: false,
    };
    let month = "2026-05";
    let gh = ForgeKind::GitHub;
    // Binary fractions: the sums are exact on either backend.
    s.add_usage(month, gh, &requester(5, "old"), &repo("acme/api"), 1.25)
        .await
        .unwrap();
    s.add_usage(month, gh, &requester(5, "new"), &repo("acme/api"), 0.5)
        .await
        .unwrap();
    s.add_usage(month, gh, &requester(6, "six"), &repo("acme/web"), 0.25)
        .await
        .unwrap();
    s.add_usage("2026-06", gh, &requester(5, "new"), &repo("acme/api"), 8.0)
        .await
        .unwrap();

    let hash = s.usage(month).await.unwrap();
    let field = |k: String| -> f64 {
        hash.get(&k)
            .unwrap_or_else(|| panic!("{k} in {hash:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field(usage::user_field(gh, 5)), 1.75);
    assert_eq!(field(usage::repo_field(gh, "acme/api")), 1.75);
    assert_eq!(
        hash.get(&usage::login_field(gh, 5)).map(String::as_str),
        Some("new"),
        "the latest login"
    );
    let u = MonthUsage::from_hash(month, &hash);
    assert_eq!(u.requester(gh, 5), 1.75);
    assert_eq!(u.requester(gh, 6), 0.25);
    assert_eq!(u.repository(gh, "acme/api"), 1.75);
    assert_eq!(u.repository(gh, "acme/web"), 0.25);
    assert_eq!(u.requester(ForgeKind::GitLab, 5), 0.0);
    assert_eq!(u.requesters[0].login.as_deref(), Some("new"));
    assert_eq!(
        MonthUsage::from_hash("2026-06", &s.usage("2026-06").await.unwrap()).requester(gh, 5),
        8.0,
        "months are apart"
    );
    assert_eq!(s.usage("2026-04").await.unwrap(), HashMap::new());
    app.stop().await;
}

// JobRecords.

/// A job on issue `number`, created at `at(created)`.
fn job_at(requester: u64, number: u64, created: i64) -> Job {
    let mut job = issue_job(requester, &format!("user{requester}"), number);
    job.created_at = at(created);
    job.updated_at = at(created);
    job
}

async fn store(app: &TestApp, job: &Job) {
    let stored = app
        .store
        .accept(None, Some(job), &Task::Acknowledge { job: job.id })
        .await
        .unwrap();
    assert_eq!(stored, Accepted::Stored);
}

async fn a_job_record_round_trips_and_takes_fields(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let mut job = job_at(3, 17, 0);
    job.instructions = "fix the flaky test\nand nothing else".into();
    job.delivery_id = Some("d-17".into());
    store(&app, &job).await;
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.get_job(JobId::new()).await.unwrap(), None);

    s.set_job_fields(job.id, &[("progress_comment_id", "99".into())])
        .await
        .unwrap();
    let got = s.get_job(job.id).await.unwrap().expect("stored");
    assert_eq!(got.progress_comment_id, Some(99));
    assert!(
        got.updated_at > job.updated_at,
        "updated_at moves: {} after {}",
        got.updated_at,
        job.updated_at
    );
    assert_eq!(
        Job {
            progress_comment_id: None,
            updated_at: job.updated_at,
            ..got
        },
        job,
        "nothing else changes"
    );
    assert_eq!(
        s.get_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    app.stop().await;
}

async fn jobs_are_listed_newest_first_and_paged(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let (j1, j2, j3) = (job_at(1, 1, 10), job_at(1, 1, 20), job_at(1, 1, 30));
    let other = job_at(2, 2, 40);
    // Stored out of order: the order is by creation.
    for j in [&j2, &j1, &other, &j3] {
        store(&app, j).await;
    }
    let repo = j1.repo.clone();
    let thread = |number| ThreadRef {
        kind: ThreadKind::Issue,
        number,
    };

    assert_eq!(
        s.recent_jobs(10).await.unwrap(),
        [other.id, j3.id, j2.id, j1.id]
    );
    assert_eq!(s.recent_jobs(2).await.unwrap(), [other.id, j3.id]);
    assert_eq!(
        s.thread_jobs(&repo, thread(1), 10).await.unwrap(),
        [j3.id, j2.id, j1.id]
    );
    assert_eq!(
        s.thread_jobs(&repo, thread(1), 2).await.unwrap(),
        [j3.id, j2.id]
    );
    assert_eq!(
        s.thread_jobs(&repo, thread(2), 10).await.unwrap(),
        [other.id]
    );
    assert_eq!(s.thread_jobs(&repo, thread(3), 10).await.unwrap(), []);

    let ms = |j: &Job| j.created_ms();
    assert_eq!(
        s.job_page(&JobIndex::All, None, 2).await.unwrap(),
        [(other.id, ms(&other)), (j3.id, ms(&j3))]
    );
    assert_eq!(
        s.job_page(&JobIndex::All, Some(ms(&j3)), 2).await.unwrap(),
        [(j2.id, ms(&j2)), (j1.id, ms(&j1))],
        "strictly older than the page's last"
    );
    assert_eq!(
        s.job_page(&JobIndex::All, Some(ms(&j1)), 10).await.unwrap(),
        []
    );
    let of_user = JobIndex::User {
        forge: ForgeKind::GitHub,
        user_id: 1,
    };
    assert_eq!(
        s.job_page(&of_user, Some(ms(&other) + 1), 10)
            .await
            .unwrap(),
        [(j3.id, ms(&j3)), (j2.id, ms(&j2)), (j1.id, ms(&j1))]
    );
    let of_repo = JobIndex::Repo {
        forge: ForgeKind::GitHub,
        repo: "acme/api".into(),
    };
    assert_eq!(
        s.job_page(&of_repo, Some(ms(&j2)), 10).await.unwrap(),
        [(j1.id, ms(&j1))]
    );
    let elsewhere = JobIndex::Repo {
        forge: ForgeKind::GitLab,
        repo: "acme/api".into(),
    };
    assert_eq!(s.job_page(&elsewhere, None, 10).await.unwrap(), []);
    app.stop().await;
}

async fn a_long_log_keeps_about_its_newest_20000_lines(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let job = JobId::new();
    for batch in 0..25 {
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("line {}", batch * 1000 + i))
            .collect();
        s.append_log(job, &lines).await.unwrap();
    }
    let kept = s.read_log(job, "0", 30_000, None).await.unwrap();
    // Trimmed approximately (Redis `MAXLEN ~`, the embedded store every 1000 lines).
    assert!(
        (20_000..=21_100).contains(&kept.len()),
        "{} lines kept",
        kept.len()
    );
    assert_eq!(
        kept.last().unwrap().line,
        "line 24999",
        "the newest is kept"
    );
    assert_ne!(kept[0].line, "line 0", "the oldest is gone");
    app.stop().await;
}

async fn a_log_is_read_in_order_after_an_id(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    let (job, other) = (JobId::new(), JobId::new());
    s.append_log(job, &["a".into(), "b".into()]).await.unwrap();
    s.append_log(job, &["c".into()]).await.unwrap();
    s.append_log(other, &["elsewhere".into()]).await.unwrap();
    s.append_log(job, &[]).await.unwrap();

    let all = s.read_log(job, "0", 100, None).await.unwrap();
    assert_eq!(lines(&all), ["a", "b", "c"]);
    assert!(
        all.windows(2)
            .all(|w| stream_id(&w[0].id) < stream_id(&w[1].id)),
        "ids increase: {all:?}"
    );
    let after_a = s.read_log(job, &all[0].id, 100, None).await.unwrap();
    assert_eq!(after_a, all[1..]);
    assert_eq!(s.read_log(job, &all[2].id, 100, None).await.unwrap(), []);
    assert_eq!(
        lines(&s.read_log(job, "0", 2, None).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        lines(&s.read_log(other, "0", 100, None).await.unwrap()),
        ["elsewhere"]
    );
    assert_eq!(s.read_log(JobId::new(), "0", 100, None).await.unwrap(), []);
    app.stop().await;
}

async fn a_log_reader_is_woken_by_an_append(backend: Backend) {
    let app = app(backend).await;
    let s = app.store.clone();
    let job = JobId::new();
    let mut reader = s.log_reader(job).await.unwrap();
    assert_eq!(reader.last_id().await.unwrap(), "0-0");
    let start = Instant::now();
    assert_eq!(reader.next("0-0", 10, None).await.unwrap(), []);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no block: answered at once ({:?})",
        start.elapsed()
    );

    let waiting = tokio::spawn(async move {
        let start = Instant::now();
        let got = reader
            .next("0-0", 10, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        (got, start.elapsed(), reader)
    });
    // Most likely waiting by now; if not, the read finds the line at once all the same.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.append_log(job, &["first".into()]).await.unwrap();
    let (got, waited, mut reader) = waiting.await.unwrap();
    assert_eq!(lines(&got), ["first"]);
    assert!(
        waited < Duration::from_secs(4),
        "woken by the append, not the end of the block: {waited:?}"
    );
    assert_eq!(reader.last_id().await.unwrap(), got[0].id);

    // A reader from the last id sees only what comes later.
    let from = reader.last_id().await.unwrap();
    assert_eq!(reader.next(&from, 10, None).await.unwrap(), []);
    s.append_log(job, &["second".into(), "third".into()])
        .await
        .unwrap();
    let later = reader.next(&from, 10, None).await.unwrap();
    assert_eq!(lines(&later), ["second", "third"]);
    assert!(stream_id(&later[0].id) > stream_id(&from));
    assert_eq!(reader.last_id().await.unwrap(), later[1].id);
    app.stop().await;
}

// Store.

async fn the_key_fingerprint_is_set_once(backend: Backend) {
    let app = app(backend).await;
    let s = &app.store;
    assert_eq!(s.key_fingerprint(None).await.unwrap(), None);
    assert_eq!(
        s.key_fingerprint(None).await.unwrap(),
        None,
        "reading claims nothing"
    );
    assert_eq!(
        s.key_fingerprint(Some("a")).await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(
        s.key_fingerprint(Some("b")).await.unwrap().as_deref(),
        Some("a"),
        "never overwritten"
    );
    assert_eq!(s.key_fingerprint(None).await.unwrap().as_deref(), Some("a"));
    app.stop().await;
}

on_each_backend!(
    a_long_log_keeps_about_its_newest_20000_lines,
    a_session_is_saved_replaced_loaded_and_deleted,
    a_new_session_never_replaces_an_existing_one,
    a_session_expires_after_its_ttl,
    signin_failures_are_counted_within_the_window_the_first_one_opens,
    signin_failures_are_forgotten_when_the_window_ends,
    a_user_keeps_its_first_created_at,
    a_provider_with_a_plain_token_is_refused,
    providers_are_listed_for_their_owner_oldest_first_and_deleted_by_it,
    admin_settings_are_set_read_and_deleted,
    setup_secrets_are_set_replaced_and_deleted,
    the_github_app_is_stored_once_and_confirmed,
    a_setup_state_is_taken_once,
    the_setup_token_is_the_first_candidate_for_good,
    a_delivery_is_seen_once_accepted_and_never_accepted_twice,
    the_redeliver_cursor_is_kept,
    a_lock_is_held_until_its_ttl_lapses,
    usage_adds_up_per_requester_and_repository,
    a_job_record_round_trips_and_takes_fields,
    jobs_are_listed_newest_first_and_paged,
    a_log_is_read_in_order_after_an_id,
    a_log_reader_is_woken_by_an_append,
    the_key_fingerprint_is_set_once,
);
