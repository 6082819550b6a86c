//! Checks run by the runner (SPEC section 16): after the agent, the runner runs
//! `.repobox.yml` `check` commands in the sandbox; a failure goes back to the agent for
//! another go (at most `check_attempts` extra goes), the PR body and the final comment
//! carry the table of checks, and checks that still fail open a draft — or fail the job
//! with `draft_on_failed_checks: false`.

mod common;

use common::world::{ISSUE_BRANCH, REPO_GIT, Setup, world};
use repobox::job::JobStatus;

/// Writes `one` on its first go and `two` on the next; says whether the failure output
/// reached it.
const TWO_GOES: &str = r#"if grep -q "checks failed" ; then echo "GOT-FEEDBACK"; fi; if [ -f attempt ]; then echo two > attempt; else echo one > attempt; fi; echo fixed >> README.md"#;

#[tokio::test]
async fn a_failing_check_sends_the_agent_back_and_the_pr_shows_it_passed() {
    let w = world(Setup {
        agent: TWO_GOES,
        repobox_yml: Some(
            "check:\n  - grep -q two attempt || { echo \"attempt is $(cat attempt)\"; exit 3; }\n",
        ),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    w.log_has(&id, "==> Checks, round 2", 1).await;
    // The second go was given the first round's failure, with its output.
    w.log_has(&id, "GOT-FEEDBACK", 1).await;
    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["draft"], false);
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(body.contains("| Check | Result | Time |"), "{body}");
    assert!(body.contains("| ✓ |") && !body.contains("| ✗ |"), "{body}");
    let comment = w.final_comment(&job).await;
    assert!(comment.contains("| ✓ |"), "{comment}");
    w.app.stop().await;
}

#[tokio::test]
async fn checks_that_still_fail_open_a_draft_or_fail_the_job() {
    let yml = "check:\n  - echo ran >> \"$HOME/check-runs\"; echo 'still broken'; exit 1\ncheck_attempts: 1\n";
    let w = world(Setup {
        repobox_yml: Some(yml),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    // check_attempts 1: two rounds, no third.
    w.log_has(&id, "==> Checks, round 2", 1).await;
    assert!(
        !w.log(&id)
            .await
            .iter()
            .any(|l| l.contains("Checks, round 3"))
    );
    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls[0]["draft"], true, "failing checks open a draft");
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(
        body.contains("| ✗ |") && body.contains("**Checks still failing**"),
        "{body}"
    );
    assert!(
        body.contains("still broken"),
        "the failure is listed: {body}"
    );
    let comment = w.final_comment(&job).await;
    assert!(comment.contains("| ✗ |"), "{comment}");
    w.app.stop().await;

    let yml = format!("{yml}draft_on_failed_checks: false\n");
    let w = world(Setup {
        repobox_yml: Some(&yml),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("the checks still fail after 2 round(s)"),
        "{error}"
    );
    assert!(w.github.created_pulls().await.is_empty());
    assert_eq!(w.remote_ref(REPO_GIT, ISSUE_BRANCH), None, "nothing pushed");
    w.app.stop().await;
}
