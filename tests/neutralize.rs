//! Neutralised bot text (SPEC section 14), end to end: an agent whose summary mentions
//! people, closes a foreign issue and carries a bot command gets a pull request (title
//! and body), a commit message and a final progress comment in which none of that can
//! ping, close or command, while the job's own `Closes #N` stays.

mod common;

use common::world::*;
use repobox::job::JobStatus;

const AGENT: &str = r#"echo fixed >> README.md; printf 'Fix the README for @alice\n\nThanks @alice, this fixes #1. Closes #99 and other/repo#5\n/lgtm\n  /approve\n' > "$REPOBOX_SUMMARY_FILE""#;

/// No line of `text` starts with `/` (after spaces), and no bare mention or foreign
/// closing reference is left.
fn assert_neutral(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with('/'),
            "{what}: {line:?} in {text}"
        );
    }
    assert!(text.contains("`@alice`"), "{what}: {text}");
    assert!(!text.contains(" @alice"), "{what}: {text}");
    assert!(text.contains("Closes `#99`"), "{what}: {text}");
    assert!(text.contains("`other/repo#5`"), "{what}: {text}");
    assert!(!text.contains("Closes #99"), "{what}: {text}");
    assert!(text.contains("> /lgtm"), "{what}: {text}");
    // The job's own issue is the agent's to close.
    assert!(text.contains("fixes #1."), "{what}: {text}");
}

#[tokio::test]
async fn the_agents_mentions_foreign_closes_and_commands_are_neutralised_everywhere() {
    let w = world(Setup {
        agent: AGENT,
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);

    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["title"], "Fix the README for `@alice`");
    let body = pulls[0]["body"].as_str().unwrap();
    assert_neutral("PR body", body);
    // Repobox's own text: the job's `Closes #1` and the requester's mention.
    assert!(body.contains("Closes #1\n"), "{body}");
    assert!(body.contains("Requested by @Codertocat"), "{body}");

    let message = w.remote_git(REPO_GIT, &["log", "-1", "--format=%B", ISSUE_BRANCH]);
    assert!(
        message.starts_with("Fix the README for `@alice`\n"),
        "{message}"
    );
    assert_neutral("commit message", &message);
    assert!(message.contains("Requested by @Codertocat"), "{message}");

    let last = w.final_comment(&job).await;
    assert_neutral("final comment", &last);
    assert!(last.contains("requested by @Codertocat"), "{last}");
    w.app.stop().await;
}
