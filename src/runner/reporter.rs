//! The one progress comment per job (SPEC section 5), edited in place: at most one edit
//! per interval (5 s), intermediate states coalesced, the final state always written.
//!
//! Intermediate edits go through [`Forge::update_progress`], which drops them when the
//! forge request budget is short (SPEC section 13); the latest state is then tried again
//! after the interval. The final state goes through [`Forge::update_comment`], which
//! waits for the budget, retried by [`with_retries`] (an edit is idempotent).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::forges::{Forge, ForgeError, with_retries};
use crate::model::{RepoRef, ThreadRef};

pub struct Reporter {
    forge: Arc<dyn Forge>,
    repo: RepoRef,
    thread: ThreadRef,
    comment_id: u64,
    tx: watch::Sender<String>,
    stop: CancellationToken,
    /// Taken by `finish`; aborted on drop (a pipeline that panicked must not have a
    /// stale edit land after the failure is posted).
    task: Option<JoinHandle<()>>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Reporter {
    pub fn start(
        forge: Arc<dyn Forge>,
        repo: RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        interval: Duration,
    ) -> Reporter {
        let (tx, mut rx) = watch::channel(String::new());
        rx.mark_unchanged();
        let stop = CancellationToken::new();
        let task = {
            let (forge, repo, stop) = (forge.clone(), repo.clone(), stop.clone());
            tokio::spawn(async move {
                let mut written = String::new();
                loop {
                    // Wait for a newer state, unless the latest one is not written yet
                    // (its edit was dropped or failed: try it again now).
                    if *rx.borrow() == written {
                        tokio::select! {
                            biased;
                            _ = stop.cancelled() => break,
                            changed = rx.changed() => if changed.is_err() { break },
                        }
                    }
                    let body = rx.borrow_and_update().clone();
                    if body == written {
                        continue;
                    }
                    let started = Instant::now();
                    match forge
                        .update_progress(&repo, thread, comment_id, &body)
                        .await
                    {
                        Ok(true) => written = body,
                        Ok(false) => {
                            debug!("progress edit dropped: the forge request budget is short")
                        }
                        Err(e) => warn!(error = %e, "progress comment edit failed"),
                    }
                    // The throttle: nothing more until the interval has passed.
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(started + interval) => {}
                    }
                }
            })
        };
        Reporter {
            forge,
            repo,
            thread,
            comment_id,
            tx,
            stop,
            task: Some(task),
        }
    }

    /// Shows `body` at the next edit (coalesced with later updates).
    pub fn update(&self, body: String) {
        self.tx.send_replace(body);
    }

    /// Writes the final state now, whatever the throttle says: it waits for the
    /// request budget rather than being dropped, and is retried while it fails
    /// transiently.
    pub async fn finish(mut self, body: &str) -> Result<(), ForgeError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        with_retries(|| {
            self.forge
                .update_comment(&self.repo, self.thread, self.comment_id, body)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::forges::{ChangeRequest, GitIdentity, NewChangeRequest, RepoInfo};
    use crate::git::Credentials;
    use crate::model::{AccessLevel, CommentRef, ForgeKind, Reaction, ThreadKind, UserRef};

    /// Records comment edits with the (paused, virtual) time they happened at. Only
    /// `update_comment` and `update_progress` are used by the reporter; while `short`
    /// is set, progress edits are dropped (and counted) as with a short request budget.
    #[derive(Default)]
    struct Edits(
        Mutex<Vec<(Duration, String)>>,
        Mutex<Option<Instant>>,
        std::sync::atomic::AtomicBool,
        std::sync::atomic::AtomicUsize,
    );

    impl Edits {
        fn seen(&self) -> Vec<(Duration, String)> {
            self.0.lock().unwrap().clone()
        }
        fn bodies(&self) -> Vec<String> {
            self.seen().into_iter().map(|(_, b)| b).collect()
        }
        fn set_short(&self, short: bool) {
            self.2.store(short, std::sync::atomic::Ordering::SeqCst);
        }
        fn dropped(&self) -> usize {
            self.3.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Forge for Edits {
        fn kind(&self) -> ForgeKind {
            ForgeKind::GitHub
        }
        async fn update_comment(
            &self,
            _: &RepoRef,
            _: ThreadRef,
            _: u64,
            body: &str,
        ) -> Result<(), ForgeError> {
            let start = *self.1.lock().unwrap().get_or_insert_with(Instant::now);
            self.0
                .lock()
                .unwrap()
                .push((start.elapsed(), body.to_owned()));
            Ok(())
        }
        async fn update_progress(
            &self,
            repo: &RepoRef,
            thread: ThreadRef,
            id: u64,
            body: &str,
        ) -> Result<bool, ForgeError> {
            if self.2.load(std::sync::atomic::Ordering::SeqCst) {
                self.3.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Ok(false);
            }
            self.update_comment(repo, thread, id, body)
                .await
                .map(|()| true)
        }
        async fn access_level(&self, _: &RepoRef, _: &UserRef) -> Result<AccessLevel, ForgeError> {
            unreachable!()
        }
        async fn head_status(
            &self,
            _: &RepoRef,
            _: &crate::forges::HeadStatus<'_>,
            _: Option<u64>,
        ) -> Result<Option<u64>, ForgeError> {
            unreachable!()
        }
        async fn react(
            &self,
            _: &RepoRef,
            _: ThreadRef,
            _: CommentRef,
            _: Reaction,
        ) -> Result<(), ForgeError> {
            unreachable!()
        }
        async fn create_comment(
            &self,
            _: &RepoRef,
            _: ThreadRef,
            _: &str,
        ) -> Result<u64, ForgeError> {
            unreachable!()
        }
        async fn repository(&self, _: &RepoRef) -> Result<RepoInfo, ForgeError> {
            unreachable!()
        }
        async fn git_credentials(&self, _: &RepoRef) -> Result<Credentials, ForgeError> {
            unreachable!()
        }
        async fn change_request(&self, _: &RepoRef, _: u64) -> Result<ChangeRequest, ForgeError> {
            unreachable!()
        }
        async fn find_change_request(
            &self,
            _: &RepoRef,
            _: &str,
        ) -> Result<Option<ChangeRequest>, ForgeError> {
            unreachable!()
        }
        async fn open_change_request(
            &self,
            _: &RepoRef,
            _: NewChangeRequest<'_>,
        ) -> Result<ChangeRequest, ForgeError> {
            unreachable!()
        }
        async fn bot_identity(&self, _: &RepoRef) -> Result<GitIdentity, ForgeError> {
            unreachable!()
        }
        fn co_author(&self, _: &UserRef) -> GitIdentity {
            unreachable!()
        }
        async fn discussion(
            &self,
            _: &RepoRef,
            _: ThreadRef,
        ) -> Result<crate::forges::Discussion, ForgeError> {
            unreachable!()
        }
        async fn reachable_repositories(&self) -> Result<Vec<String>, ForgeError> {
            unreachable!()
        }
    }

    fn reporter(edits: &Arc<Edits>) -> Reporter {
        Reporter::start(
            edits.clone(),
            RepoRef {
                forge: ForgeKind::GitHub,
                full_name: "acme/api".into(),
                id: None,
                installation_id: None,
            },
            ThreadRef {
                kind: ThreadKind::Issue,
                number: 1,
            },
            7,
            Duration::from_secs(5),
        )
    }

    /// Lets the reporter task run until it waits again (virtual time does not move).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn edits_are_throttled_coalesced_and_the_final_state_is_always_written() {
        let edits = Arc::new(Edits::default());
        let r = reporter(&edits);
        r.update("one".into());
        settle().await;
        for body in ["two", "three", "four"] {
            r.update(body.into());
            settle().await;
        }
        // Within the first 5 s only the first state was written.
        assert_eq!(edits.seen().len(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        let seen = edits.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].1, "four", "intermediate states coalesced");
        assert!(seen[1].0 >= Duration::from_secs(5));
        // The final state goes out at once, throttle or not.
        r.update("five".into());
        r.finish("done").await.unwrap();
        let seen = edits.seen();
        assert_eq!(seen.last().unwrap().1, "done");
        assert!(seen.last().unwrap().0 < Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_progress_edits_are_tried_again_and_the_final_state_is_written() {
        let edits = Arc::new(Edits::default());
        edits.set_short(true);
        let r = reporter(&edits);
        r.update("one".into());
        settle().await;
        assert_eq!(edits.dropped(), 1);
        assert!(edits.seen().is_empty(), "a dropped edit calls nothing");
        // No newer state: the unwritten one is tried again after the interval.
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(edits.dropped(), 2);
        edits.set_short(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(edits.bodies(), ["one"]);
        // Short again: the next progress state is dropped, the final one is written.
        edits.set_short(true);
        tokio::time::advance(Duration::from_secs(5)).await;
        r.update("two".into());
        settle().await;
        assert_eq!(edits.dropped(), 3);
        r.finish("done").await.unwrap();
        assert_eq!(edits.bodies(), ["one", "done"]);
    }
}
