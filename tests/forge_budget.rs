//! The forge request budget (SPEC section 13) over a real Redis and the HTTP fakes:
//! instances on one prefix (processes) share the windows and the pauses, progress edits
//! are dropped while the budget is short and the final state is still written, and a
//! rate-limited answer to one process pauses the installation's (token's) writes for
//! another.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::github::{self as gh, FakeGitHub};
use common::gitlab::{self as gl, FakeGitLab};
use redis::AsyncCommands;
use repobox::forges::budget::{BudgetError, Limit, RequestBudget, Take, Wait};
use repobox::forges::github::GitHub;
use repobox::forges::gitlab::GitLab;
use repobox::forges::{Forge, ForgeError, ForgeOptions};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef};
use repobox::runner::reporter::Reporter;
use repobox::secret::Secret;
use repobox::store::redis_budget::RedisBudget;

const GH_REPO: &str = "octo-org/hello-world";
/// The installation of [`gh_repo`] (its budget key is `github:1`).
const INSTALLATION: u64 = 1;

fn prefix() -> String {
    format!("test:{}:", ulid::Ulid::new())
}

fn budget(prefix: &str, limits: &[Limit]) -> RedisBudget {
    RedisBudget::new(&common::redis_url(), prefix, limits).unwrap()
}

const ROOMY: &[Limit] = &[Limit {
    writes: 1000,
    per: Duration::from_secs(60),
}];

fn gh_repo() -> RepoRef {
    RepoRef {
        forge: ForgeKind::GitHub,
        full_name: GH_REPO.into(),
        id: None,
        installation_id: Some(INSTALLATION),
    }
}

fn issue(number: u64) -> ThreadRef {
    ThreadRef {
        kind: ThreadKind::Issue,
        number,
    }
}

fn github(fake: &FakeGitHub, budget: Arc<dyn RequestBudget>) -> GitHub {
    let pem = std::fs::read_to_string(gh::private_key_path()).unwrap();
    GitHub::new(
        &fake.uri(),
        gh::APP_ID,
        &Secret::new(pem),
        ForgeOptions {
            timeout: Duration::from_secs(30),
            budget: Some(budget),
        },
    )
    .unwrap()
}

/// Deletes every key under `prefix`.
async fn clean(prefix: &str) {
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in common::scan(&mut conn, prefix).await {
        let _: () = conn.del(key).await.unwrap();
    }
}

/// Polls `check` until it holds (10 s at most).
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Progress edits stop at three quarters of a window in Redis too; the writes that wait
/// still get the rest.
#[tokio::test]
async fn redis_budget_keeps_a_reserve_from_progress_edits() {
    let prefix = prefix();
    let limits = [Limit {
        writes: 4,
        per: Duration::from_secs(60),
    }];
    let (a, b) = (budget(&prefix, &limits), budget(&prefix, &limits));
    for _ in 0..3 {
        assert!(a.acquire("github:1", Wait::No).await.unwrap());
    }
    assert!(!b.acquire("github:1", Wait::No).await.unwrap());
    assert_eq!(
        b.try_take("github:1", Wait::UntilAvailable).await.unwrap(),
        Take::Taken
    );
    assert!(matches!(
        a.try_take("github:1", Wait::UntilAvailable).await.unwrap(),
        Take::RetryIn(_)
    ));
    clean(&prefix).await;
}

#[tokio::test]
async fn redis_budgets_on_one_prefix_share_windows_and_pauses() {
    let prefix = prefix();
    let limits = [Limit {
        writes: 3,
        per: Duration::from_secs(60),
    }];
    let (a, b) = (budget(&prefix, &limits), budget(&prefix, &limits));
    assert!(a.acquire("github:1", Wait::No).await.unwrap());
    assert!(b.acquire("github:1", Wait::No).await.unwrap());
    assert!(a.acquire("github:1", Wait::No).await.unwrap());
    // Three writes were taken between the two: the window is full for both.
    assert!(!b.acquire("github:1", Wait::No).await.unwrap());
    assert!(matches!(
        a.try_take("github:1", Wait::UntilAvailable).await.unwrap(),
        Take::RetryIn(d) if d > Duration::from_secs(50)
    ));
    // Another installation has its own budget.
    assert!(b.acquire("github:2", Wait::No).await.unwrap());

    a.pause("github:2", Duration::from_millis(700))
        .await
        .unwrap();
    assert!(!b.acquire("github:2", Wait::No).await.unwrap());
    let start = Instant::now();
    assert!(b.acquire("github:2", Wait::UntilAvailable).await.unwrap());
    assert!(start.elapsed() >= Duration::from_millis(600));

    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = conn
        .pttl(format!("{prefix}budget:{{github:1}}:writes"))
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 60_000,
        "the writes expire with the window: {ttl}"
    );
    clean(&prefix).await;
}

/// A budget that counts the writes it refused.
struct Counting {
    inner: RedisBudget,
    refused: AtomicUsize,
}

#[async_trait]
impl RequestBudget for Counting {
    async fn try_take(&self, key: &str, wait: Wait) -> Result<Take, BudgetError> {
        let take = self.inner.try_take(key, wait).await?;
        if matches!(take, Take::RetryIn(_)) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        Ok(take)
    }
    async fn pause(&self, key: &str, duration: Duration) -> Result<(), BudgetError> {
        self.inner.pause(key, duration).await
    }
}

#[tokio::test]
async fn a_short_budget_drops_progress_edits_but_writes_the_final_state() {
    let prefix = prefix();
    let fake = FakeGitHub::start(&[]).await;
    let counting = Arc::new(Counting {
        inner: budget(
            &prefix,
            &[Limit {
                writes: 2,
                per: Duration::from_secs(3),
            }],
        ),
        refused: AtomicUsize::new(0),
    });
    let forge: Arc<dyn Forge> = Arc::new(github(&fake, counting.clone()));
    let id = fake.add_issue_comment(7, gh::BOT_LOGIN, "queued");
    let reporter = Reporter::start(forge, gh_repo(), issue(7), id, Duration::from_millis(10));
    for (n, state) in ["cloning", "agent working"].into_iter().enumerate() {
        reporter.update(state.into());
        wait_for("the edit", async || {
            fake.comment_edits(id).await.len() == n + 1
        })
        .await;
    }
    // Two writes in the window: the next progress edit is refused, and refused again
    // when the reporter tries it after the interval.
    reporter.update("pushing".into());
    wait_for("two refusals", async || {
        counting.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(fake.comment_edits(id).await, ["cloning", "agent working"]);
    // The final state waits for room instead of being dropped.
    reporter.finish("done").await.unwrap();
    assert_eq!(
        fake.comment_edits(id).await,
        ["cloning", "agent working", "done"]
    );
    clean(&prefix).await;
}

#[tokio::test]
async fn a_github_rate_limit_pauses_the_installations_writes_in_another_process() {
    let prefix = prefix();
    let fake = FakeGitHub::start(&[]).await;
    let first = github(&fake, Arc::new(budget(&prefix, ROOMY)));
    let second = github(&fake, Arc::new(budget(&prefix, ROOMY)));
    let id = fake.add_issue_comment(7, gh::BOT_LOGIN, "queued");
    let edit = format!("/repos/{GH_REPO}/issues/comments/{id}");
    fake.throttle("PATCH", &format!("^{edit}$"), 429, 1).await;

    let err = first
        .update_comment(&gh_repo(), issue(7), id, "working")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::RateLimited { .. }), "{err:?}");
    let start = Instant::now();
    // The other process drops its progress edit without asking GitHub...
    let written = second
        .update_progress(&gh_repo(), issue(7), id, "still working")
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(fake.count("PATCH", &edit).await, 1);
    // ...and its final write waits out the pause.
    second
        .update_comment(&gh_repo(), issue(7), id, "done")
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.count("PATCH", &edit).await, 2);
    assert_eq!(fake.comment_edits(id).await.last().unwrap(), "done");
    let paused = format!("{prefix}budget:{{github:{INSTALLATION}}}:pause");
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: i64 = conn.pttl(&paused).await.unwrap();
    assert!(left < 0, "the pause is over: {left}");
    clean(&prefix).await;
}

#[tokio::test]
async fn a_gitlab_429_pauses_the_tokens_writes_in_another_process() {
    let prefix = prefix();
    let fake = FakeGitLab::start(&[]).await;
    fake.serve_project(5, "grp/app", "https://example.invalid/x.git", "main")
        .await;
    let gitlab = |budget: RedisBudget| {
        GitLab::new(
            &fake.server.uri(),
            Secret::new(gl::TOKEN),
            ForgeOptions {
                timeout: Duration::from_secs(30),
                budget: Some(Arc::new(budget)),
            },
        )
        .unwrap()
    };
    let (first, second) = (
        gitlab(budget(&prefix, ROOMY)),
        gitlab(budget(&prefix, ROOMY)),
    );
    let repo = RepoRef {
        forge: ForgeKind::GitLab,
        full_name: "grp/app".into(),
        id: Some(5),
        installation_id: None,
    };
    let id = fake.add_note(ThreadKind::Issue, 3, gl::BOT_USERNAME, "queued");
    let edit = format!("/api/v4/projects/5/issues/3/notes/{id}");
    fake.throttle("PUT", &format!("^{edit}$"), 1).await;

    let err = first
        .update_comment(&repo, issue(3), id, "working")
        .await
        .unwrap_err();
    assert!(matches!(err, ForgeError::RateLimited { .. }), "{err:?}");
    let start = Instant::now();
    assert!(
        !second
            .update_progress(&repo, issue(3), id, "still working")
            .await
            .unwrap()
    );
    assert_eq!(fake.count("PUT", &edit).await, 1);
    second
        .update_comment(&repo, issue(3), id, "done")
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert_eq!(fake.note_edits(id).await.last().unwrap(), "done");
    clean(&prefix).await;
}
