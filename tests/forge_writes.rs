//! The forge adapters' writes against the HTTP fakes, as SPEC section 13 wants them:
//! a creation is sent once (a 502 after the forge stored it is not answered with a
//! second POST) and can be found afterwards (`find_comment` by marker, only the bot's
//! own; `find_change_request` by head branch); edits are retried by `with_retries`
//! after the wait the forge named; a request that hangs ends at the forge timeout as a
//! transient error.

mod common;

use std::time::{Duration, Instant};

use common::github::{self as gh, FakeGitHub};
use common::gitlab::{self as gl, FakeGitLab};
use repobox::forges::github::GitHub;
use repobox::forges::gitlab::GitLab;
use repobox::forges::{Forge, ForgeError, ForgeOptions, NewChangeRequest, with_retries};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef};
use repobox::secret::Secret;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const GH_REPO: &str = "octo-org/hello-world";
const GL_PROJECT: &str = "grp/app";
const GL_PROJECT_ID: u64 = 5;
const MARKER: &str = "<!-- repobox:job:01JD0000000000000000000000 -->";

fn options(timeout: Duration) -> ForgeOptions {
    ForgeOptions {
        timeout,
        budget: None,
    }
}

async fn github_with(timeout: Duration) -> (FakeGitHub, GitHub) {
    let fake = FakeGitHub::start(&[]).await;
    fake.serve_repo(GH_REPO, "https://example.invalid/x.git", "main")
        .await;
    let pem = std::fs::read_to_string(gh::private_key_path()).unwrap();
    let forge = GitHub::new(&fake.uri(), gh::APP_ID, &Secret::new(pem), options(timeout)).unwrap();
    (fake, forge)
}

async fn github() -> (FakeGitHub, GitHub) {
    github_with(Duration::from_secs(30)).await
}

fn gh_repo() -> RepoRef {
    RepoRef {
        forge: ForgeKind::GitHub,
        full_name: GH_REPO.into(),
        id: None,
        installation_id: Some(1),
    }
}

async fn gitlab_with(timeout: Duration) -> (FakeGitLab, GitLab) {
    let fake = FakeGitLab::start(&[]).await;
    fake.serve_project(
        GL_PROJECT_ID,
        GL_PROJECT,
        "https://example.invalid/x.git",
        "main",
    )
    .await;
    let forge = GitLab::new(&fake.server.uri(), Secret::new(gl::TOKEN), options(timeout)).unwrap();
    (fake, forge)
}

async fn gitlab() -> (FakeGitLab, GitLab) {
    gitlab_with(Duration::from_secs(30)).await
}

fn gl_repo() -> RepoRef {
    RepoRef {
        forge: ForgeKind::GitLab,
        full_name: GL_PROJECT.into(),
        id: Some(GL_PROJECT_ID),
        installation_id: None,
    }
}

fn thread(kind: ThreadKind, number: u64) -> ThreadRef {
    ThreadRef { kind, number }
}

fn new_change(head: &str) -> NewChangeRequest<'_> {
    NewChangeRequest {
        head,
        base: "main",
        title: "Fix the flaky login test",
        body: "Closes #7",
        draft: false,
    }
}

// ---- GitHub ----

#[tokio::test]
async fn github_find_comment_finds_only_the_bots_own_comment_newest_pages_first() {
    let (fake, forge) = github().await;
    let issue = thread(ThreadKind::Issue, 7);
    // Someone quoting the marker does not count, nor a comment of another job.
    fake.add_issue_comment(7, "octocat", &format!("look: {MARKER}"));
    let mine = fake.add_issue_comment(7, gh::BOT_LOGIN, &format!("**Repobox** {MARKER}"));
    fake.add_issue_comment(7, gh::BOT_LOGIN, "<!-- repobox:job:01JDOTHER -->");
    // 250 later comments: the bot's is on the first of three pages.
    for i in 0..250 {
        fake.add_issue_comment(7, "octocat", &format!("comment {i}"));
    }
    let found = forge.find_comment(&gh_repo(), issue, MARKER).await.unwrap();
    assert_eq!(found, Some(mine));
    let lists = fake
        .count("GET", &format!("/repos/{GH_REPO}/issues/7/comments"))
        .await;
    assert_eq!(lists, 3, "page 1 (for the last page), then 3 and 2 back");

    let none = forge
        .find_comment(&gh_repo(), issue, "<!-- repobox:job:01JDNONE -->")
        .await
        .unwrap();
    assert_eq!(none, None);
    // A thread where only someone else carries the marker.
    fake.add_issue_comment(8, "octocat", MARKER);
    let other = thread(ThreadKind::Issue, 8);
    assert_eq!(
        forge.find_comment(&gh_repo(), other, MARKER).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn github_comment_stored_before_a_502_is_posted_once_and_found_after() {
    let (fake, forge) = github().await;
    let issue = thread(ThreadKind::Issue, 7);
    fake.fail_after_creating(gh::Creation::Comment, 1);
    let body = format!("**Repobox** · queued {MARKER}");
    let err = forge
        .create_comment(&gh_repo(), issue, &body)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let posts = format!("/repos/{GH_REPO}/issues/7/comments");
    assert_eq!(fake.count("POST", &posts).await, 1, "no blind second POST");
    // The comment exists: the look-up finds it, so a caller posts no second one.
    let found = forge.find_comment(&gh_repo(), issue, MARKER).await.unwrap();
    let stored = fake.threads.lock().unwrap()[&7].comments[0]["id"]
        .as_u64()
        .unwrap();
    assert_eq!(found, Some(stored));
    assert_eq!(fake.count("POST", &posts).await, 1);
}

#[tokio::test]
async fn github_pull_request_stored_before_a_502_is_opened_once_and_found_by_branch() {
    let (fake, forge) = github().await;
    fake.fail_after_creating(gh::Creation::PullRequest, 1);
    let err = forge
        .open_change_request(&gh_repo(), new_change("repobox/7-fix"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let posts = format!("/repos/{GH_REPO}/pulls");
    assert_eq!(fake.count("POST", &posts).await, 1);
    let found = forge
        .find_change_request(&gh_repo(), "repobox/7-fix")
        .await
        .unwrap()
        .expect("the pull request GitHub stored");
    assert_eq!(found.head_branch, "repobox/7-fix");
    assert_eq!(fake.count("POST", &posts).await, 1);
}

#[tokio::test]
async fn github_rate_limited_edit_is_retried_after_retry_after() {
    let (fake, forge) = github().await;
    let issue = thread(ThreadKind::Issue, 7);
    let id = forge
        .create_comment(&gh_repo(), issue, "queued")
        .await
        .unwrap();
    let edit = format!("/repos/{GH_REPO}/issues/comments/{id}");

    // A 403 secondary rate limit names its wait.
    fake.throttle("PATCH", &format!("^{edit}$"), 403, 1).await;
    let err = forge
        .update_comment(&gh_repo(), issue, id, "working")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(1)),
        "{err:?}"
    );

    fake.throttle("PATCH", &format!("^{edit}$"), 429, 1).await;
    let (start, repo) = (Instant::now(), gh_repo());
    with_retries(|| forge.update_comment(&repo, issue, id, "done"))
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited retry-after"
    );
    assert_eq!(fake.count("PATCH", &edit).await, 3);
    assert_eq!(fake.comment_edits(id).await.last().unwrap(), "done");
}

#[tokio::test]
async fn github_request_that_hangs_ends_at_the_forge_timeout_as_transient() {
    let (fake, forge) = github_with(Duration::from_millis(500)).await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/{GH_REPO}/pulls/5")))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let start = Instant::now();
    let err = forge.change_request(&gh_repo(), 5).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, ForgeError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
}

// ---- GitLab ----

#[tokio::test]
async fn gitlab_find_comment_finds_only_the_bots_own_note_newest_first() {
    let (fake, forge) = gitlab().await;
    let issue = thread(ThreadKind::Issue, 3);
    fake.add_note(ThreadKind::Issue, 3, "alice", &format!("quoting {MARKER}"));
    fake.add_system_note(
        ThreadKind::Issue,
        3,
        &format!("changed the description {MARKER}"),
    );
    let mine = fake.add_note(ThreadKind::Issue, 3, gl::BOT_USERNAME, MARKER);
    // 150 later notes: in newest-first order the bot's note is on the second page.
    for i in 0..150 {
        fake.add_note(ThreadKind::Issue, 3, "alice", &format!("note {i}"));
    }
    assert_eq!(
        forge.find_comment(&gl_repo(), issue, MARKER).await.unwrap(),
        Some(mine)
    );
    let notes = format!("/api/v4/projects/{GL_PROJECT_ID}/issues/3/notes");
    assert_eq!(fake.count("GET", &notes).await, 2);

    let mr = thread(ThreadKind::MergeRequest, 4);
    fake.add_note(ThreadKind::MergeRequest, 4, "alice", MARKER);
    assert_eq!(
        forge.find_comment(&gl_repo(), mr, MARKER).await.unwrap(),
        None
    );
    let mine = fake.add_note(ThreadKind::MergeRequest, 4, gl::BOT_USERNAME, MARKER);
    assert_eq!(
        forge.find_comment(&gl_repo(), mr, MARKER).await.unwrap(),
        Some(mine)
    );
}

#[tokio::test]
async fn gitlab_note_stored_before_a_502_is_posted_once_and_found_after() {
    let (fake, forge) = gitlab().await;
    let issue = thread(ThreadKind::Issue, 3);
    fake.fail_after_creating(gl::Creation::Note, 1);
    let err = forge
        .create_comment(&gl_repo(), issue, &format!("queued {MARKER}"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let posts = format!("/api/v4/projects/{GL_PROJECT_ID}/issues/3/notes");
    assert_eq!(fake.count("POST", &posts).await, 1, "no blind second POST");
    let found = forge.find_comment(&gl_repo(), issue, MARKER).await.unwrap();
    assert_eq!(found, Some(7000), "the note GitLab stored");
    assert_eq!(fake.count("POST", &posts).await, 1);
}

#[tokio::test]
async fn gitlab_merge_request_stored_before_a_502_is_opened_once_and_found_by_branch() {
    let (fake, forge) = gitlab().await;
    fake.fail_after_creating(gl::Creation::MergeRequest, 1);
    let err = forge
        .open_change_request(&gl_repo(), new_change("repobox/3-fix"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let posts = format!("/api/v4/projects/{GL_PROJECT_ID}/merge_requests");
    assert_eq!(fake.count("POST", &posts).await, 1);
    let found = forge
        .find_change_request(&gl_repo(), "repobox/3-fix")
        .await
        .unwrap()
        .expect("the merge request GitLab stored");
    assert_eq!(found.head_branch, "repobox/3-fix");
    assert_eq!(fake.count("POST", &posts).await, 1);
}

#[tokio::test]
async fn gitlab_rate_limited_edit_is_retried_after_retry_after() {
    let (fake, forge) = gitlab().await;
    let issue = thread(ThreadKind::Issue, 3);
    let id = forge
        .create_comment(&gl_repo(), issue, "queued")
        .await
        .unwrap();
    let edit = format!("/api/v4/projects/{GL_PROJECT_ID}/issues/3/notes/{id}");
    fake.throttle("PUT", &format!("^{edit}$"), 1).await;
    let err = forge
        .update_comment(&gl_repo(), issue, id, "working")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(!err.to_string().contains(gl::TOKEN));

    fake.throttle("PUT", &format!("^{edit}$"), 1).await;
    let (start, repo) = (Instant::now(), gl_repo());
    with_retries(|| forge.update_comment(&repo, issue, id, "done"))
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited retry-after"
    );
    assert_eq!(fake.count("PUT", &edit).await, 3);
    assert_eq!(fake.note_edits(id).await.last().unwrap(), "done");
}

#[tokio::test]
async fn gitlab_request_that_hangs_ends_at_the_forge_timeout_as_transient() {
    let (fake, forge) = gitlab_with(Duration::from_millis(500)).await;
    // Learn the bot first, so only the hanging call is timed.
    forge.client().await.unwrap();
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v4/projects/{GL_PROJECT_ID}/merge_requests/9"
        )))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let start = Instant::now();
    let err = forge.change_request(&gl_repo(), 9).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, ForgeError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
}
