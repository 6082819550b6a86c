//! Follow-ups continue (SPEC section 16): a `/repobox` on the thread of an earlier job,
//! or on a pull request whose commits an earlier job made, gives the agent the earlier
//! jobs' instructions and summaries from Repobox's records, and on a pull request the
//! review comments, those since the last job marked as such.

mod common;

use common::git_server;
use common::world::{REPO, REPO_GIT, Setup, issue_comment, world};
use repobox::job::JobStatus;
use serde_json::json;

/// Prints its prompt (into the job log), fixes the README and leaves a marked summary.
const ECHO_AGENT: &str = r#"cat; echo fixed >> README.md; printf 'Fix the spelling\n\nSUMMARY-OF-AN-EARLIER-JOB\n' > "$REPOBOX_SUMMARY_FILE""#;

#[tokio::test]
async fn a_follow_up_gets_the_earlier_jobs_instructions_and_summaries() {
    let w = world(Setup {
        agent: ECHO_AGENT,
        ..Setup::default()
    })
    .await;
    let first = w.comment("/repobox fix the spelling in the title").await;
    assert_eq!(w.finished(&first).await.status, JobStatus::Succeeded);
    let log = w.log(&first).await.join("\n");
    assert!(
        !log.contains("Earlier Repobox jobs"),
        "the first job has none: {log}"
    );

    // The same issue: the first job's record is the context.
    let again = w
        .comment_on(
            "/repobox now also fix the footer",
            1,
            "Codertocat",
            21031067,
        )
        .await;
    assert_eq!(w.finished(&again).await.status, JobStatus::Succeeded);
    let log = w.log(&again).await.join("\n");
    assert!(
        log.contains(&format!("Job {first} by @Codertocat (succeeded), asked:")),
        "{log}"
    );
    assert!(log.contains("> fix the spelling in the title"), "{log}");
    assert!(log.contains("> SUMMARY-OF-AN-EARLIER-JOB"), "{log}");

    // A pull request whose commit carries the first job's trailer.
    let root = w.git_root.path();
    let head = git_server::push_commit(
        root,
        REPO_GIT,
        "feature",
        &[("feature.txt", "wip\n")],
        &format!("Fix the spelling\n\nRepobox-Job: {first}\n"),
    );
    git_server::set_ref(root, REPO_GIT, "refs/pull/7/head", &head);
    w.github.add_pull(REPO, 7, "feature", &head, "main", true);
    let mut payload = issue_comment("/repobox handle the header too", 7, "Codertocat", 21031067);
    payload["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/7"});
    let r = w.app.github_json("issue_comment", &payload).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let on_pr = r.body["job"].as_str().unwrap().to_owned();
    assert_eq!(w.finished(&on_pr).await.status, JobStatus::Succeeded);
    // A review comment since that job, by a writer; one by a reader is left out.
    w.github.add_review_comment(
        7,
        "Codertocat",
        "src/lib.rs",
        1,
        "REVIEW-MARKER-3: rename hello",
    );
    w.github.set_permission("drive-by", Some("read"));
    w.github
        .add_review_comment(7, "drive-by", "README.md", 1, "READER-MARKER-9");
    let mut payload = issue_comment("/repobox now the review", 7, "Codertocat", 21031067);
    payload["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/7"});
    let r = w.app.github_json("issue_comment", &payload).await;
    let review = r.body["job"].as_str().unwrap().to_owned();
    assert_eq!(w.finished(&review).await.status, JobStatus::Succeeded);
    let log = w.log(&review).await.join("\n");
    let marked = log
        .find("(Written since the last Repobox job here:)")
        .unwrap_or_else(|| panic!("{log}"));
    let comment = log
        .find("@Codertocat commented on `src/lib.rs`, line 1 (a review comment):")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(marked < comment, "{log}");
    assert!(log.contains("> REVIEW-MARKER-3: rename hello"), "{log}");
    assert!(!log.contains("READER-MARKER-9"), "{log}");
    assert!(
        log.contains(&format!("Job {on_pr} by @Codertocat")),
        "{log}"
    );
    let log = w.log(&on_pr).await.join("\n");
    assert!(
        log.contains(&format!("Job {first} by @Codertocat")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("Job {again} ")),
        "a job of another thread: {log}"
    );
    w.app.stop().await;
}
