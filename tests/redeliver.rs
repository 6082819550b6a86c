//! The webhook redelivery reconciler (SPEC section 13, "Webhook recovery") against the
//! GitHub fake's App delivery log and a real Redis: an event whose attempts all failed
//! and that intake never stored is asked for once per round; one with a 2xx attempt, a
//! dedupe key, a refusal (4xx) or older than 72 h is not; the cursor keeps the next
//! round from asking again; one round at a time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::github::{self as gh, FakeGitHub};
use redis::AsyncCommands;
use repobox::forges::ForgeOptions;
use repobox::forges::github::GitHub;
use repobox::model::ForgeKind;
use repobox::secret::Secret;
use repobox::store::{Delivery, Recovery, RedisStore};
use repobox::webhooks::redeliver::{Redeliverer, Round};

/// Short, so a test's rounds follow each other quickly (the lock lives 90 % of it).
const INTERVAL: Duration = Duration::from_millis(300);

struct World {
    fake: FakeGitHub,
    github: Arc<GitHub>,
    store: Arc<RedisStore>,
    prefix: String,
}

impl World {
    async fn start() -> World {
        let fake = FakeGitHub::start(&[]).await;
        let pem = std::fs::read_to_string(gh::private_key_path()).unwrap();
        let github = Arc::new(
            GitHub::new(
                &fake.uri(),
                gh::APP_ID,
                &Secret::new(pem),
                ForgeOptions::default(),
            )
            .unwrap(),
        );
        let prefix = format!("test:{}:", ulid::Ulid::new());
        let store = Arc::new(RedisStore::new(&common::redis_url(), &prefix).unwrap());
        World {
            fake,
            github,
            store,
            prefix,
        }
    }

    fn reconciler(&self) -> Redeliverer {
        Redeliverer::new(self.github.clone(), self.store.clone(), INTERVAL)
    }

    /// Marks `guid` as accepted by intake, with the key intake writes.
    async fn accepted(&self, guid: &str) {
        let key = self.store.keys().delivery(Delivery {
            forge: ForgeKind::GitHub,
            id: guid,
        });
        let mut conn = self.conn().await;
        let _: () = conn.set_ex(key, "01JD", 3600).await.unwrap();
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(common::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn stop(self) {
        let mut conn = self.conn().await;
        for key in common::scan(&mut conn, &self.prefix).await {
            let _: () = conn.del(key).await.unwrap();
        }
    }
}

/// The next round this reconciler gets to run (the previous round's lock expires
/// within [`INTERVAL`]).
async fn next_round(r: &Redeliverer) -> Round {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let round = r.round().await.unwrap();
        if !round.skipped {
            return round;
        }
        assert!(Instant::now() < deadline, "the round lock never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort();
    ids
}

#[tokio::test]
async fn failed_deliveries_are_asked_for_once_per_round_and_the_cursor_stops_the_next() {
    let w = World::start().await;
    let old = time::OffsetDateTime::now_utc() - time::Duration::hours(73);
    w.fake.record_delivery_at("g-too-old", 503, false, old);
    let unavailable = w.fake.record_delivery("g-503", 503, false);
    w.fake.record_delivery("g-redelivered-ok", 503, false);
    w.fake.record_delivery("g-redelivered-ok", 202, true);
    w.fake.record_delivery("g-stored", 500, false);
    w.accepted("g-stored").await;
    w.fake.record_delivery("g-refused", 401, false);
    let no_answer = w.fake.record_delivery("g-no-answer", 0, false);
    let r = w.reconciler();

    let first = next_round(&r).await;
    assert_eq!(first.read, 6, "back to the delivery older than 72 h");
    assert_eq!(first.redelivered, [no_answer, unavailable], "newest first");
    assert_eq!(
        sorted(w.fake.redelivery_requests().await),
        [unavailable, no_answer]
    );
    assert_eq!(
        w.store.redeliver_cursor().await.unwrap(),
        Some(no_answer),
        "the newest attempt read"
    );

    // Nothing new: the cursor stops the next round before the same attempts.
    let second = next_round(&r).await;
    assert_eq!((second.read, second.redelivered.len()), (0, 0));
    assert_eq!(w.fake.redelivery_requests().await.len(), 2);

    // The redelivery of g-503 failed again, g-no-answer's succeeded: g-503 is asked for
    // once more, through its new attempt.
    let again = w.fake.record_delivery("g-503", 503, true);
    w.fake.record_delivery("g-no-answer", 202, true);
    let third = next_round(&r).await;
    assert_eq!(third.redelivered, [again]);
    assert_eq!(
        sorted(w.fake.redelivery_requests().await),
        [unavailable, no_answer, again]
    );
    w.stop().await;
}

#[tokio::test]
async fn a_round_pages_through_the_delivery_log_with_the_link_cursor() {
    let w = World::start().await;
    let ids: Vec<u64> = (0..230)
        .map(|i| w.fake.record_delivery(&format!("g-{i}"), 502, false))
        .collect();
    let round = next_round(&w.reconciler()).await;
    assert_eq!(round.read, 230);
    assert_eq!(sorted(round.redelivered), ids);
    assert_eq!(w.fake.count("GET", "/app/hook/deliveries").await, 3);
    w.stop().await;
}

#[tokio::test]
async fn a_redelivery_github_would_not_take_is_asked_for_again_next_round() {
    let w = World::start().await;
    let failed = w.fake.record_delivery("g-a", 503, false);
    w.fake
        .throttle("POST", r"^/app/hook/deliveries/\d+/attempts$", 429, 1)
        .await;
    let r = w.reconciler();
    let first = next_round(&r).await;
    assert_eq!((first.redelivered.len(), first.failed), (0, 1));
    // The cursor stays before the attempt that was not redelivered.
    assert_eq!(w.store.redeliver_cursor().await.unwrap(), Some(failed - 1));
    let second = next_round(&r).await;
    assert_eq!(second.redelivered, [failed]);
    assert_eq!(w.fake.redelivery_requests().await, [failed, failed]);
    w.stop().await;
}

#[tokio::test]
async fn one_round_at_a_time_across_processes() {
    let w = World::start().await;
    let failed = w.fake.record_delivery("g-a", 503, false);
    let (a, b) = (w.reconciler(), w.reconciler());
    let first = a.round().await.unwrap();
    assert!(!first.skipped);
    assert_eq!(first.redelivered, [failed]);
    let other = b.round().await.unwrap();
    assert!(other.skipped, "the lock is held for the interval");
    assert_eq!(w.fake.redelivery_requests().await, [failed]);
    assert_eq!(
        w.fake.count("GET", "/app/hook/deliveries").await,
        1,
        "the skipped round read nothing"
    );
    w.stop().await;
}
