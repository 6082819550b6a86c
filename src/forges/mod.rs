//! Forge adapters: everything that speaks GitHub or GitLab. Webhook payloads are turned
//! into crate-owned [`crate::event::Event`]s here (`*/webhook.rs`), and the [`Forge`]
//! trait is the one seam through which the rest of Repobox calls a forge's API.
//! No octocrab or gitlab type leaves this module.
//!
//! Forge calls have one retry layer, [`with_retries`], for idempotent calls only; every
//! request has a deadline ([`ForgeOptions::timeout`], `REPOBOX_FORGE_TIMEOUT`), and
//! content writes are spaced by a shared [`budget::RequestBudget`] (SPEC section 13).

pub mod budget;
pub mod github;
pub mod gitlab;
pub mod personal;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::git::Credentials;
use crate::model::{AccessLevel, CommentRef, ForgeKind, Reaction, RepoRef, ThreadRef, UserRef};

/// A failed forge call. The text is safe to log and to show: it never carries a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    /// Network trouble, a timeout, 5xx or a rate limit: worth retrying later.
    #[error("{0}")]
    Transient(String),
    /// The forge refused the call (4xx): retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// The forge asked Repobox to slow down: a 429, a 403 for a (secondary) rate limit,
    /// or any error answer that says when to come back. `retry_after` is the wait the
    /// forge named (`retry-after`, or `x-ratelimit-reset` with no requests remaining),
    /// `None` when it named none. Transient.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl ForgeError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ForgeError::Transient(_) | ForgeError::RateLimited { .. }
        )
    }

    /// The wait the forge asked for, when it named one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ForgeError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Classifies an error answer by its status and headers: a rate limit (429, a 403
    /// that names a wait or says "rate limit") or any answer with `retry-after` becomes
    /// [`ForgeError::RateLimited`]; the rest as [`ForgeError::from_status`].
    pub fn from_response(
        status: u16,
        headers: &http::HeaderMap,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        let hint = wait_hint(headers, time::OffsetDateTime::now_utc().unix_timestamp());
        let rate_limited = status == 429
            || (status == 403 && (hint.is_some() || message.to_lowercase().contains("rate limit")))
            || (status >= 500 && headers.contains_key(http::header::RETRY_AFTER));
        if rate_limited {
            ForgeError::RateLimited {
                message,
                retry_after: hint,
            }
        } else {
            ForgeError::from_status(status, message)
        }
    }

    /// Classifies an HTTP status from a forge.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        if status == 429 || status >= 500 || message.to_lowercase().contains("rate limit") {
            ForgeError::Transient(message)
        } else {
            ForgeError::Permanent(message)
        }
    }
}

/// The forge operations Repobox needs, normalised across GitHub and GitLab.
#[async_trait]
pub trait Forge: Send + Sync + 'static {
    fn kind(&self) -> ForgeKind;

    /// What `user` may do in `repo`, asked of the forge (never taken from the payload).
    async fn access_level(&self, repo: &RepoRef, user: &UserRef)
    -> Result<AccessLevel, ForgeError>;

    /// Adds a reaction (award emoji) to the comment that carried a command.
    async fn react(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment: CommentRef,
        reaction: Reaction,
    ) -> Result<(), ForgeError>;

    /// Posts a comment on the thread; returns its id.
    async fn create_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        body: &str,
    ) -> Result<u64, ForgeError>;

    /// Replaces the body of a comment Repobox posted.
    async fn update_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError>;

    /// The id of the bot's own comment on the thread whose body contains `marker` (the
    /// progress comment's `<!-- repobox:job:<id> -->`), if there is one: what an
    /// acknowledgement or a runner looks up before it posts, so a re-run posts no
    /// second comment.
    async fn find_comment(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let _ = (repo, thread, marker);
        Ok(None)
    }

    /// An intermediate edit of the progress comment: like [`Forge::update_comment`],
    /// but when the request budget of the installation (GitHub) or token (GitLab) is
    /// short it returns `Ok(false)` at once without calling the forge, so progress
    /// edits are dropped before final states are held up. `Ok(true)`: written.
    async fn update_progress(
        &self,
        repo: &RepoRef,
        thread: ThreadRef,
        comment_id: u64,
        body: &str,
    ) -> Result<bool, ForgeError> {
        self.update_comment(repo, thread, comment_id, body)
            .await
            .map(|()| true)
    }

    /// Clone URL and default branch.
    async fn repository(&self, repo: &RepoRef) -> Result<RepoInfo, ForgeError>;

    /// Credentials for git over HTTPS, scoped as narrowly as the forge allows (GitHub: a
    /// token for this one repository with contents and pull-request write access).
    async fn git_credentials(&self, repo: &RepoRef) -> Result<Credentials, ForgeError>;

    /// A pull/merge request by number.
    async fn change_request(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeRequest, ForgeError>;

    /// The open pull/merge request whose head is `head_branch` in this repository, if any.
    async fn find_change_request(
        &self,
        repo: &RepoRef,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError>;

    /// Opens a pull/merge request from `new.head` into `new.base`.
    async fn open_change_request(
        &self,
        repo: &RepoRef,
        new: NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError>;

    /// Author identity of the bot's commits.
    async fn bot_identity(&self, repo: &RepoRef) -> Result<GitIdentity, ForgeError>;

    /// `Co-authored-by:` identity of a user.
    fn co_author(&self, user: &UserRef) -> GitIdentity;

    /// The repositories the bot may act on (GitHub: those of the App's installations;
    /// GitLab: the projects where the bot user is at least Developer), as
    /// `owner/name`, sorted; at most a few hundred (first pages only).
    async fn reachable_repositories(&self) -> Result<Vec<String>, ForgeError>;

    /// The thread's opening text and its discussion, oldest comment first, for the
    /// agent's context. Raw forge text: the caller sanitises it.
    async fn discussion(&self, repo: &RepoRef, thread: ThreadRef)
    -> Result<Discussion, ForgeError>;

    /// SPEC 17: the job's status on a commit it pushed — a check run named
    /// [`HEAD_STATUS_NAME`] (GitHub) or a commit status `repobox` (GitLab) — created or
    /// moved on to `status.state`. `check_run`: the id an earlier call returned; without
    /// it GitHub's check run is looked up by the job id (`external_id`) before one is
    /// created. Returns the id to pass next time (`None` on GitLab, where the status is
    /// the latest one of its name).
    async fn head_status(
        &self,
        repo: &RepoRef,
        status: &HeadStatus<'_>,
        check_run: Option<u64>,
    ) -> Result<Option<u64>, ForgeError>;
}

/// The name of Repobox's check run on GitHub (GitLab's commit status is `repobox`).
pub const HEAD_STATUS_NAME: &str = "Repobox";

/// Where a job stands, for its status on the commit it pushed (SPEC 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadState {
    InProgress,
    Success,
    Failure,
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
pub struct HeadStatus<'a> {
    /// The commit the job pushed.
    pub sha: &'a str,
    pub state: HeadState,
    /// The job page.
    pub details_url: &'a str,
    /// The job id (GitHub's `external_id`).
    pub job: &'a str,
    /// One line on the forge: what the job is doing or how it ended.
    pub summary: &'a str,
}

/// An issue's or pull/merge request's text as the forge has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discussion {
    pub title: String,
    /// The opening post (issue or PR/MR description); empty when there is none.
    pub body: String,
    /// Comments in the order they were written, at most [`DISCUSSION_MAX_COMMENTS`]
    /// (the latest ones when there are more).
    pub comments: Vec<DiscussionComment>,
    /// Comments left out because there were more than the limit.
    pub omitted: usize,
    /// Who opened the thread: login (GitHub) or username (GitLab); empty when unknown.
    pub author: String,
    /// The opener's user id (0 when unknown).
    pub author_id: u64,
    /// Comments the runner left out because their authors may not write to the
    /// repository (filled by the runner, not by the adapters; SPEC section 14).
    pub others_omitted: usize,
}

/// Most comments [`Forge::discussion`] returns.
pub const DISCUSSION_MAX_COMMENTS: usize = 50;

/// Collects a thread's comments oldest first and keeps the latest
/// [`DISCUSSION_MAX_COMMENTS`], counting the rest (both forge adapters page through it).
#[derive(Debug, Default)]
pub(crate) struct LatestComments {
    kept: std::collections::VecDeque<DiscussionComment>,
    omitted: usize,
}

impl LatestComments {
    pub(crate) fn push(&mut self, comment: DiscussionComment) {
        if self.kept.len() == DISCUSSION_MAX_COMMENTS {
            self.kept.pop_front();
            self.omitted += 1;
        }
        self.kept.push_back(comment);
    }

    /// Counts `n` older comments that were never read (pages skipped over).
    pub(crate) fn skipped(&mut self, n: usize) {
        self.omitted += n;
    }

    pub(crate) fn into_discussion(self, title: String, body: String) -> Discussion {
        Discussion {
            title,
            body,
            comments: self.kept.into(),
            omitted: self.omitted,
            ..Discussion::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscussionComment {
    /// Login (GitHub) or username (GitLab).
    pub author: String,
    /// The author's user id (0 when unknown, e.g. a deleted account).
    pub author_id: u64,
    pub body: String,
    /// Written by Repobox itself (its progress comments and replies).
    pub by_bot: bool,
    /// When it was written (RFC 3339, as the forge gave it); `None` when not given.
    pub created_at: Option<String>,
    /// A review comment on the diff (GitHub review comments, GitLab diff notes): the
    /// file and the line it sits on.
    pub review_path: Option<String>,
    pub review_line: Option<u64>,
}

impl DiscussionComment {
    /// When it was written, when the forge said so in a readable form.
    pub fn written_at(&self) -> Option<time::OffsetDateTime> {
        let at = self.created_at.as_deref()?;
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// Merges review comments into a discussion's comments by the time they were written
/// (stable: comments without a time keep their place first), keeping the latest
/// [`DISCUSSION_MAX_COMMENTS`] and counting the rest as omitted.
pub(crate) fn merge_review_comments(
    d: &mut Discussion,
    review: Vec<DiscussionComment>,
    omitted: usize,
) {
    if review.is_empty() && omitted == 0 {
        return;
    }
    let mut all = std::mem::take(&mut d.comments);
    all.extend(review);
    all.sort_by_key(|c| c.written_at());
    let extra = all.len().saturating_sub(DISCUSSION_MAX_COMMENTS);
    d.comments = all.split_off(extra);
    d.omitted += extra + omitted;
}

/// Where a repository is fetched from and what its default branch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// HTTPS clone URL, without credentials.
    pub clone_url: String,
    pub default_branch: String,
}

/// A pull request (GitHub) or merge request (GitLab), as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub number: u64,
    pub url: String,
    pub head_branch: String,
    pub head_sha: String,
    pub base_branch: String,
    /// The head branch lives in the same repository (not a fork), so the bot may push there.
    pub same_repo: bool,
    /// The ref under which the forge publishes the head in the base repository
    /// (`refs/pull/N/head`, `refs/merge-requests/N/head`).
    pub head_ref: String,
    pub open: bool,
}

/// Attempts [`with_retries`] makes of one call.
pub const RETRY_ATTEMPTS: u32 = 3;

/// The longest wait [`with_retries`] accepts from the forge (`retry-after`,
/// `x-ratelimit-reset`); a longer one fails the call (transiently) at once.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// First backoff when the forge named no wait; it doubles per attempt, jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// What the job's requester may do on its repository now (retried like any call). A
/// job started with the admin API token has no forge account and needs no check
/// (SPEC 18): it counts as admin.
pub async fn requester_access(
    forge: &dyn Forge,
    job: &crate::job::Job,
) -> Result<AccessLevel, ForgeError> {
    if job.by_api_token() {
        return Ok(AccessLevel::Admin);
    }
    with_retries(|| forge.access_level(&job.repo, &job.requester)).await
}

/// The one retry layer for forge calls (the client libraries' own retries are off).
///
/// Calls `f` up to [`RETRY_ATTEMPTS`] times while it fails transiently. When the forge
/// said how long to wait ([`ForgeError::retry_after`]) it waits that long, if that is at
/// most [`MAX_RETRY_WAIT`] (else it gives up at once with that error); otherwise it
/// backs off 0.5 s, 1 s, … with jitter.
///
/// **Only for idempotent calls**: reads (GET), edits (PATCH/PUT, e.g.
/// [`Forge::update_comment`]) and reactions (idempotent on both forges). Never wrap a
/// call that creates something ([`Forge::create_comment`],
/// [`Forge::open_change_request`]): after a timeout or a 5xx the object may well exist,
/// and a blind second POST makes a duplicate (SPEC section 13). Look it up first
/// ([`Forge::find_comment`], [`Forge::find_change_request`]), then create once.
pub async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, ForgeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ForgeError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.is_transient() && attempt < RETRY_ATTEMPTS => {
                let wait = match e.retry_after() {
                    Some(wait) if wait > MAX_RETRY_WAIT => {
                        tracing::debug!(error = %e, ?wait, "forge asks for a long wait; giving up");
                        return Err(e);
                    }
                    Some(wait) => wait,
                    None => jittered(BASE_BACKOFF * 2u32.pow(attempt - 1)),
                };
                tracing::debug!(error = %e, attempt, ?wait, "forge call failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The bot's comment carrying `marker` on the thread, found (`false`) or posted now
/// (`true`). The post is sent once: after an ambiguous failure (timeout, 5xx) the comment
/// may exist, so the caller tries again later and this looks it up first.
pub async fn find_or_create_comment(
    forge: &dyn Forge,
    repo: &RepoRef,
    thread: ThreadRef,
    marker: &str,
    body: &str,
) -> Result<(u64, bool), ForgeError> {
    match with_retries(|| forge.find_comment(repo, thread, marker)).await {
        Ok(Some(id)) => return Ok((id, false)),
        Ok(None) => {}
        // The forge cannot say (and would refuse the post too, or it is down): try later.
        Err(e) if e.is_transient() => return Err(e),
        // The listing is refused (a token without read access to comments, a thread
        // the API does not list): nothing to find, so post.
        Err(e) => tracing::debug!(error = %e, "comments could not be listed; posting"),
    }
    forge
        .create_comment(repo, thread, body)
        .await
        .map(|id| (id, true))
}

/// A random duration between half of `d` and `d`, so that callers who failed together
/// do not come back together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// The wait an answer's headers ask for: `retry-after` (seconds), else, when
/// `x-ratelimit-remaining` is `0`, the time until `x-ratelimit-reset` (epoch seconds;
/// GitLab names them `ratelimit-remaining` / `ratelimit-reset`). `now` is epoch seconds.
pub fn wait_hint(headers: &http::HeaderMap, now: i64) -> Option<Duration> {
    let number = |names: &[&str]| {
        names.iter().find_map(|name| {
            headers
                .get(*name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<i64>()
                .ok()
        })
    };
    if let Some(seconds) = number(&["retry-after"]) {
        return Some(Duration::from_secs(seconds.max(0) as u64));
    }
    let remaining = number(&["x-ratelimit-remaining", "ratelimit-remaining"])?;
    let reset = number(&["x-ratelimit-reset", "ratelimit-reset"])?;
    (remaining == 0).then(|| Duration::from_secs((reset - now).max(1) as u64))
}

/// How a forge adapter talks to its forge: the per-request deadline and the shared
/// request budget for content writes.
#[derive(Clone)]
pub struct ForgeOptions {
    /// Connect and whole-request timeout of one forge request (`REPOBOX_FORGE_TIMEOUT`).
    pub timeout: Duration,
    /// Spaces content writes (comments, edits, reactions, PR/MR creation) per
    /// installation or token; `None`: unlimited.
    pub budget: Option<Arc<dyn budget::RequestBudget>>,
}

impl Default for ForgeOptions {
    fn default() -> Self {
        ForgeOptions {
            timeout: Duration::from_secs(30),
            budget: None,
        }
    }
}

impl ForgeOptions {
    /// The text of a timed-out request's error.
    pub(crate) fn timeout_message(&self, forge: &str) -> String {
        format!(
            "{forge} API: no answer within {}",
            humantime::format_duration(self.timeout)
        )
    }
}

/// What the runner asks the forge to open.
#[derive(Debug, Clone)]
pub struct NewChangeRequest<'a> {
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub draft: bool,
}

/// A name and e-mail for commits (the bot as author, the requester as co-author).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitIdentity {
    pub name: String,
    pub email: String,
}

/// The configured forges, and how a job naming a personal provider gets its own.
#[derive(Clone, Default)]
pub struct Forges {
    pub github: Option<Arc<dyn Forge>>,
    pub gitlab: Option<Arc<dyn Forge>>,
    /// Adapters of personal providers (SPEC 18); `None`: jobs naming one fail.
    pub personal: Option<Arc<personal::Personal>>,
}

impl Forges {
    pub fn get(&self, kind: ForgeKind) -> Option<&Arc<dyn Forge>> {
        match kind {
            ForgeKind::GitHub => self.github.as_ref(),
            ForgeKind::GitLab => self.gitlab.as_ref(),
        }
    }

    /// The adapter of `job`'s forge calls: its personal provider's when it names one
    /// (with that provider, which errors name), else the configured forge's
    /// (`Ok(None)`: that forge is not configured here).
    pub async fn for_job(
        &self,
        job: &crate::job::Job,
        store: &dyn crate::store::Store,
    ) -> Result<Option<personal::JobForge>, personal::ProviderError> {
        if job.provider.is_none() {
            return Ok(self.get(job.repo.forge).map(|forge| personal::JobForge {
                provider: None,
                forge: forge.clone(),
            }));
        }
        let personal = self
            .personal
            .as_ref()
            .ok_or(personal::ProviderError::NoKey)?;
        Ok(Some(personal.forge_for(job, store).await?))
    }

    /// The same forges, opening personal providers with `secret_box`.
    pub fn with_secret_box(mut self, secret_box: Option<crate::crypto::SecretBox>) -> Self {
        if let Some(personal) = &self.personal {
            self.personal = Some(Arc::new(personal::Personal {
                secret_box,
                ..(**personal).clone()
            }));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn wait_hints_come_from_retry_after_or_an_exhausted_rate_limit() {
        let now = 1_700_000_000;
        assert_eq!(
            wait_hint(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let exhausted = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000042"),
        ]);
        assert_eq!(wait_hint(&exhausted, now), Some(Duration::from_secs(42)));
        let gitlab = headers(&[
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "1700000005"),
        ]);
        assert_eq!(wait_hint(&gitlab, now), Some(Duration::from_secs(5)));
        let left = headers(&[
            ("x-ratelimit-remaining", "12"),
            ("x-ratelimit-reset", "1700000042"),
        ]);
        assert_eq!(wait_hint(&left, now), None);
    }

    #[test]
    fn error_answers_are_classified_with_their_wait() {
        let wait = headers(&[("retry-after", "1")]);
        let none = http::HeaderMap::new();
        let e = ForgeError::from_response(403, &wait, "secondary rate limit");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(e.is_transient());
        let e = ForgeError::from_response(429, &none, "too many");
        assert!(matches!(
            e,
            ForgeError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            ForgeError::from_response(403, &none, "Resource not accessible by integration"),
            ForgeError::Permanent(_)
        ));
        assert!(matches!(
            ForgeError::from_response(502, &none, "bad gateway"),
            ForgeError::Transient(_)
        ));
        assert_eq!(
            ForgeError::from_response(503, &wait, "unavailable").retry_after(),
            Some(Duration::from_secs(1))
        );
        assert!(matches!(
            ForgeError::from_response(404, &wait, "Not Found"),
            ForgeError::Permanent(_)
        ));
    }

    /// A call that fails with `errors` in turn, then succeeds; counts its calls.
    fn scripted(
        calls: &AtomicU32,
        errors: Vec<ForgeError>,
    ) -> impl FnMut() -> std::future::Ready<Result<u32, ForgeError>> + '_ {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            std::future::ready(match errors.get(n) {
                Some(e) => Err(e.clone()),
                None => Ok(n as u32),
            })
        }
    }

    fn limited(wait: Option<u64>) -> ForgeError {
        ForgeError::RateLimited {
            message: "slow down".into(),
            retry_after: wait.map(Duration::from_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_what_the_forge_asks_within_the_cap() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let got = with_retries(scripted(&calls, vec![limited(Some(2))])).await;
        assert_eq!(got.unwrap(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        // Longer than the cap: no second call, the error comes back at once.
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let got = with_retries(scripted(&calls, vec![limited(Some(120))])).await;
        assert_eq!(
            got.unwrap_err().retry_after(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_with_jitter_and_stop() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let transient = ForgeError::Transient("502".into());
        let got = with_retries(scripted(&calls, vec![transient.clone(), limited(None)])).await;
        assert_eq!(got.unwrap(), 2);
        // 0.25–0.5 s, then 0.5–1 s.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(750) && waited <= Duration::from_millis(1500),
            "{waited:?}"
        );

        let calls = AtomicU32::new(0);
        let got = with_retries(scripted(&calls, vec![transient; 5])).await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), RETRY_ATTEMPTS);

        let calls = AtomicU32::new(0);
        let got = with_retries(scripted(&calls, vec![ForgeError::Permanent("404".into())])).await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a refusal is not retried");
    }
}
