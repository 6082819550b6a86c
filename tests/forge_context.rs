//! `Forge::discussion` of both forge adapters against the HTTP fakes: the thread's
//! text and comments in order, pagination, the latest-comments limit, Repobox's own
//! comments flagged, GitLab system notes left out, and errors classified without a
//! token in their text.

mod common;

use common::github::{self as gh, FakeGitHub};
use common::gitlab::{self as gl, FakeGitLab};
use repobox::forges::github::GitHub;
use repobox::forges::gitlab::GitLab;
use repobox::forges::{DISCUSSION_MAX_COMMENTS, Discussion, Forge, ForgeError, ForgeOptions};
use repobox::model::{ForgeKind, RepoRef, ThreadKind, ThreadRef};
use repobox::secret::Secret;

const GH_REPO: &str = "octo-org/hello-world";
const GL_PROJECT: &str = "grp/app";
const GL_PROJECT_ID: u64 = 5;

async fn github() -> (FakeGitHub, GitHub) {
    let fake = FakeGitHub::start(&[]).await;
    fake.serve_repo(GH_REPO, "https://example.invalid/x.git", "main")
        .await;
    let pem = std::fs::read_to_string(gh::private_key_path()).unwrap();
    let forge = GitHub::new(
        &fake.uri(),
        gh::APP_ID,
        &Secret::new(pem),
        ForgeOptions::default(),
    )
    .unwrap();
    (fake, forge)
}

fn gh_repo() -> RepoRef {
    RepoRef {
        forge: ForgeKind::GitHub,
        full_name: GH_REPO.into(),
        id: None,
        installation_id: Some(1),
    }
}

async fn gitlab() -> (FakeGitLab, GitLab) {
    let fake = FakeGitLab::start(&[]).await;
    fake.serve_project(
        GL_PROJECT_ID,
        GL_PROJECT,
        "https://example.invalid/x.git",
        "main",
    )
    .await;
    let forge = GitLab::new(
        &fake.server.uri(),
        Secret::new(gl::TOKEN),
        ForgeOptions::default(),
    )
    .unwrap();
    (fake, forge)
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

/// `(author, body, by_bot)` of each comment.
fn comments(d: &Discussion) -> Vec<(&str, &str, bool)> {
    d.comments
        .iter()
        .map(|c| (c.author.as_str(), c.body.as_str(), c.by_bot))
        .collect()
}

fn bodies(d: &Discussion) -> Vec<String> {
    d.comments.iter().map(|c| c.body.clone()).collect()
}

fn numbered(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("comment {i}")).collect()
}

fn assert_no_token(e: &ForgeError, token: &str) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(token), "token in error: {text}");
}

// ---- GitHub ----

#[tokio::test]
async fn github_unscripted_thread_answers_the_examples() {
    let (_fake, forge) = github().await;

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 1))
        .await
        .unwrap();

    assert_eq!(d.title, "Spelling error in the README file");
    assert_eq!(
        d.body,
        "It looks like you accidently spelled 'commit' with two 't's."
    );
    assert_eq!(comments(&d), vec![("octocat", "Me too", false)]);
    assert_eq!(d.omitted, 0);
}

#[tokio::test]
async fn github_title_body_and_comments_in_order_with_the_bot_flagged() {
    let (fake, forge) = github().await;
    fake.set_issue(7, "Login test is flaky", "It fails one run in ten.");
    fake.add_issue_comment(7, "alice", "Seen it on CI too.");
    fake.add_issue_comment(7, gh::BOT_LOGIN, "**Repobox** · job `01J…`");
    fake.add_issue_comment(7, "bob", "/repobox fix it");
    fake.add_issue_comment(8, "carol", "another thread");

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 7))
        .await
        .unwrap();

    assert_eq!(d.title, "Login test is flaky");
    assert_eq!(d.body, "It fails one run in ten.");
    assert_eq!(
        comments(&d),
        vec![
            ("alice", "Seen it on CI too.", false),
            (gh::BOT_LOGIN, "**Repobox** · job `01J…`", true),
            ("bob", "/repobox fix it", false),
        ]
    );
    assert_eq!(d.omitted, 0);
    // Authors come with their ids, for the permission checks of SPEC section 14.
    assert_eq!((d.author.as_str(), d.author_id), ("Codertocat", 21031067));
    assert!(d.comments.iter().all(|c| c.author_id != 0), "{d:?}");
}

#[tokio::test]
async fn github_progress_comment_posted_by_repobox_is_flagged() {
    let (fake, forge) = github().await;
    fake.add_issue_comment(3, "alice", "/repobox fix it");
    let repo = gh_repo();
    let id = forge
        .create_comment(&repo, thread(ThreadKind::Issue, 3), "working")
        .await
        .unwrap();
    forge
        .update_comment(&repo, thread(ThreadKind::Issue, 3), id, "still working")
        .await
        .unwrap();

    let d = forge
        .discussion(&repo, thread(ThreadKind::Issue, 3))
        .await
        .unwrap();

    assert_eq!(
        comments(&d),
        vec![
            ("alice", "/repobox fix it", false),
            (gh::BOT_LOGIN, "still working", true),
        ]
    );
}

#[tokio::test]
async fn github_null_body_is_empty() {
    let (fake, forge) = github().await;
    fake.set_issue(4, "No description", None);

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 4))
        .await
        .unwrap();

    assert_eq!(d.title, "No description");
    assert_eq!(d.body, "");
}

#[tokio::test]
async fn github_pull_request_thread_reads_the_pull_requests_text() {
    let (fake, forge) = github().await;
    fake.add_pull(GH_REPO, 12, "feature", &"a".repeat(40), "main", true);
    fake.add_issue_comment(12, "alice", "/repobox address the review");

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::PullRequest, 12))
        .await
        .unwrap();

    assert_eq!(d.title, "A pull request");
    assert_eq!(d.body, "");
    assert_eq!(
        comments(&d),
        vec![("alice", "/repobox address the review", false)]
    );
}

#[tokio::test]
async fn github_comments_are_paged_and_the_latest_50_kept() {
    let (fake, forge) = github().await;
    for i in 1..=120 {
        fake.add_issue_comment(9, "alice", &format!("comment {i}"));
    }

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 9))
        .await
        .unwrap();

    assert_eq!(d.comments.len(), DISCUSSION_MAX_COMMENTS);
    // Comments 71..=100 come from the first page, 101..=120 from the second.
    assert_eq!(bodies(&d), numbered(71..=120));
    assert_eq!(d.omitted, 70);
    let pages: Vec<String> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/issues/9/comments"))
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(pages, vec!["per_page=100&page=1", "per_page=100&page=2"]);
}

#[tokio::test]
async fn github_long_thread_skips_the_middle_pages() {
    let (fake, forge) = github().await;
    for i in 1..=430 {
        fake.add_issue_comment(10, "alice", &format!("comment {i}"));
    }

    let d = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 10))
        .await
        .unwrap();

    assert_eq!(bodies(&d), numbered(381..=430));
    assert_eq!(d.omitted, 380);
    let pages: Vec<String> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/issues/10/comments"))
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    // Page 1, then the last two (pages 2 and 3 only hold older comments).
    assert_eq!(
        pages,
        vec![
            "per_page=100&page=1",
            "per_page=100&page=4",
            "per_page=100&page=5"
        ]
    );
}

#[tokio::test]
async fn github_server_error_is_transient_and_not_found_permanent() {
    let (fake, forge) = github().await;
    fake.fail_thread(20, 502);
    fake.fail_thread(21, 404);

    let e = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 20))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("502"), "{e}");
    assert_no_token(&e, gh::INSTALLATION_TOKEN);

    let e = forge
        .discussion(&gh_repo(), thread(ThreadKind::Issue, 21))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("404"), "{e}");
    assert_no_token(&e, gh::INSTALLATION_TOKEN);
}

// ---- GitLab ----

#[tokio::test]
async fn gitlab_unscripted_issue_answers_the_examples() {
    let (_fake, forge) = gitlab().await;

    let d = forge
        .discussion(&gl_repo(), thread(ThreadKind::Issue, 17))
        .await
        .unwrap();

    assert_eq!(d.title, "test");
    assert_eq!(d.body, "test");
    assert_eq!(comments(&d), vec![("root", "Hello world", false)]);
    assert_eq!(d.omitted, 0);
}

#[tokio::test]
async fn gitlab_issue_notes_in_order_without_system_notes_and_with_the_bot_flagged() {
    let (fake, forge) = gitlab().await;
    fake.set_thread(ThreadKind::Issue, 3, "Flaky login test", "Fails sometimes.");
    fake.add_note(ThreadKind::Issue, 3, "alice", "Seen it too.");
    fake.add_system_note(ThreadKind::Issue, 3, "changed the description");
    fake.add_note(ThreadKind::Issue, 3, gl::BOT_USERNAME, "**Repobox** · job");
    fake.add_note(ThreadKind::Issue, 3, "bob", "/repobox fix it");
    fake.add_note(ThreadKind::MergeRequest, 3, "carol", "other thread");

    let d = forge
        .discussion(&gl_repo(), thread(ThreadKind::Issue, 3))
        .await
        .unwrap();

    assert_eq!(d.title, "Flaky login test");
    assert_eq!(d.body, "Fails sometimes.");
    assert_eq!(
        comments(&d),
        vec![
            ("alice", "Seen it too.", false),
            (gl::BOT_USERNAME, "**Repobox** · job", true),
            ("bob", "/repobox fix it", false),
        ]
    );
    assert!(!d.author.is_empty() && d.author_id != 0, "{d:?}");
    assert!(d.comments.iter().all(|c| c.author_id != 0), "{d:?}");
    let asked = fake
        .requests()
        .await
        .into_iter()
        .find(|r| r.url.path().ends_with("/issues/3/notes"))
        .unwrap();
    let query = asked.url.query().unwrap_or_default().to_owned();
    assert!(
        query.contains("sort=asc") && query.contains("order_by=created_at"),
        "{query}"
    );
}

#[tokio::test]
async fn gitlab_merge_request_thread_and_posted_notes() {
    let (fake, forge) = gitlab().await;
    fake.add_merge_request(GL_PROJECT_ID, GL_PROJECT, 4, "feature", "abc", "main", true);
    fake.set_thread(ThreadKind::MergeRequest, 4, "Add caching", None);
    fake.add_note(ThreadKind::MergeRequest, 4, "alice", "/repobox add tests");
    let repo = gl_repo();
    let mr = thread(ThreadKind::MergeRequest, 4);
    let id = forge.create_comment(&repo, mr, "working").await.unwrap();
    forge.update_comment(&repo, mr, id, "done").await.unwrap();

    let d = forge.discussion(&repo, mr).await.unwrap();

    assert_eq!(d.title, "Add caching");
    assert_eq!(d.body, "", "a null description is empty");
    assert_eq!(
        comments(&d),
        vec![
            ("alice", "/repobox add tests", false),
            (gl::BOT_USERNAME, "done", true),
        ]
    );
}

#[tokio::test]
async fn gitlab_notes_are_paged_and_the_latest_50_kept() {
    let (fake, forge) = gitlab().await;
    for i in 1..=130 {
        fake.add_note(ThreadKind::Issue, 6, "alice", &format!("comment {i}"));
        if i % 10 == 0 {
            fake.add_system_note(ThreadKind::Issue, 6, "added 1 commit");
        }
    }

    let d = forge
        .discussion(&gl_repo(), thread(ThreadKind::Issue, 6))
        .await
        .unwrap();

    assert_eq!(bodies(&d), numbered(81..=130));
    assert_eq!(d.omitted, 80);
    let pages = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/issues/6/notes"))
        .count();
    assert_eq!(pages, 2, "143 notes are two pages of 100");
}

#[tokio::test]
async fn gitlab_very_long_thread_reads_at_most_ten_pages_ending_with_the_last() {
    let (fake, forge) = gitlab().await;
    for i in 1..=1250 {
        fake.add_note(ThreadKind::Issue, 7, "alice", &format!("comment {i}"));
    }

    let d = forge
        .discussion(&gl_repo(), thread(ThreadKind::Issue, 7))
        .await
        .unwrap();

    assert_eq!(bodies(&d), numbered(1201..=1250));
    assert_eq!(d.omitted, 1200);
    let pages: Vec<String> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/issues/7/notes"))
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "page")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert_eq!(
        pages,
        ["1", "5", "6", "7", "8", "9", "10", "11", "12", "13"]
    );
}

#[tokio::test]
async fn gitlab_server_error_is_transient_and_not_found_permanent() {
    let (fake, forge) = gitlab().await;
    fake.fail_thread(ThreadKind::Issue, 20, 503);

    let e = forge
        .discussion(&gl_repo(), thread(ThreadKind::Issue, 20))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_no_token(&e, gl::TOKEN);

    // A merge request GitLab does not know.
    let e = forge
        .discussion(&gl_repo(), thread(ThreadKind::MergeRequest, 404))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("404"), "{e}");
    assert_no_token(&e, gl::TOKEN);
}

#[tokio::test]
async fn gitlab_lists_the_projects_the_bot_may_act_on() {
    let (_fake, forge) = gitlab().await;
    let names = forge.reachable_repositories().await.unwrap();
    assert_eq!(names, vec![GL_PROJECT.to_owned()]);
}
