//! Forks and protected paths (SPEC section 14), end to end: a pull/merge request whose
//! head is in a fork is refused unless the admin allows forks (no clone, no agent, no
//! push); with forks allowed, a protected path changed by any of the fork's commits is
//! refused like one the agent changed; GitLab's `.gitlab-ci.yml` protects the files it
//! includes locally.

mod common;

use common::world::*;
use repobox::job::JobStatus;

const FORK_PHRASE: &str = "jobs on pull requests from forks are off";

#[tokio::test]
async fn a_pull_request_from_a_fork_is_rejected_before_any_clone_or_agent() {
    let w = world(Setup::default()).await;
    let (_, id) = w.command_on_pull_request(false, true).await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Rejected, "{:?}", job.error);
    assert!(job.error.as_deref().unwrap().contains(FORK_PHRASE));
    let last = w.final_comment(&job).await;
    assert!(last.contains("⛔ **Rejected**"), "{last}");
    assert!(last.contains(FORK_PHRASE), "{last}");
    // Nothing fetched, no agent, nothing pushed or opened.
    assert!(
        w.git_requests(REPO_GIT).is_empty(),
        "{:?}",
        w.git_requests(REPO_GIT)
    );
    let log = w.log(&id).await;
    assert!(!log.iter().any(|l| l.contains("Agent started")), "{log:#?}");
    assert_eq!(w.remote_ref(REPO_GIT, "repobox/7-issue-number-7"), None);
    assert!(w.github.created_pulls().await.is_empty());
    w.app.stop().await;
}

#[tokio::test]
async fn a_gitlab_merge_request_from_a_fork_is_rejected() {
    let w = world(Setup::default()).await;
    let (_, id) = w
        .command_on_merge_request(&[("feature.txt", "wip\n")], true)
        .await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Rejected, "{:?}", job.error);
    let edits = w.gitlab.note_edits(progress_comment_id(&job)).await;
    let last = edits.last().expect("the progress note was edited");
    assert!(last.contains(FORK_PHRASE), "{last}");
    assert!(w.git_requests(GL_GIT).is_empty());
    assert!(w.gitlab.created_merge_requests().await.is_empty());
    w.app.stop().await;
}

#[tokio::test]
async fn with_forks_allowed_a_fork_gets_a_new_branch_on_its_head_into_the_same_base() {
    let w = world(Setup::default()).await;
    w.set_admin("allow_forks", "true").await;
    let (head, id) = w.command_on_pull_request(false, true).await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let pulls = w.github.created_pulls().await;
    assert_eq!(pulls.len(), 1);
    let branch = "repobox/7-issue-number-7";
    assert_eq!(pulls[0]["head"], branch);
    assert_eq!(pulls[0]["base"], "main");
    assert!(pulls[0]["body"].as_str().unwrap().contains("Builds on #7"));
    let parent = w.remote_git(REPO_GIT, &["rev-parse", &format!("{branch}^")]);
    assert_eq!(parent, head, "built on the fork's head");
    w.app.stop().await;
}

#[tokio::test]
async fn with_forks_allowed_a_workflow_in_the_forks_commits_is_refused() {
    // The agent only fixes the README: the workflow comes with the fork's own commit.
    let w = world(Setup::default()).await;
    w.set_admin("allow_forks", "true").await;
    let (_, id) = w
        .command_on_fork_pull_request(&[(
            ".github/workflows/steal.yml",
            "on: push\njobs: {x: {runs-on: ubuntu-latest, steps: [{run: 'echo $SECRET'}]}}\n",
        )])
        .await;
    let (job, error) = w.failed(&id).await;
    assert!(error.contains("`.github/workflows/steal.yml`"), "{error}");
    assert!(error.contains("the fork's commits change"), "{error}");
    assert!(error.contains("refused"), "{error}");
    let last = w.final_comment(&job).await;
    assert!(last.contains("`.github/workflows/steal.yml`"), "{last}");
    assert_eq!(
        w.remote_ref(REPO_GIT, "repobox/7-issue-number-7"),
        None,
        "nothing pushed"
    );
    assert!(w.github.created_pulls().await.is_empty());
    w.app.stop().await;
}

#[tokio::test]
async fn with_forks_allowed_an_action_in_an_older_fork_commit_is_refused() {
    // The action is added and then removed again; the pushed range still carries it.
    let w = world(Setup::default()).await;
    w.set_admin("allow_forks", "true").await;
    let root = w.git_root.path();
    common::git_server::push_commit(
        root,
        REPO_GIT,
        "fork-head",
        &[(".github/actions/evil/action.yml", "runs: {using: node20}\n")],
        "Add an action",
    );
    let (_, id) = w
        .command_on_fork_pull_request(&[(".github/actions/evil/action.yml", "")])
        .await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("`.github/actions/evil/action.yml`"),
        "{error}"
    );
    assert_eq!(w.remote_ref(REPO_GIT, "repobox/7-issue-number-7"), None);
    w.app.stop().await;
}

#[tokio::test]
async fn gitlab_ci_and_the_files_it_includes_locally_are_protected() {
    let w = world(Setup {
        agent: "echo 'evil: {script: [env]}' >> ci/build.yml",
        ..Setup::default()
    })
    .await;
    common::git_server::push_commit(
        w.git_root.path(),
        GL_GIT,
        "main",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: /ci/build.yml\n  - remote: https://example.com/x.yml\n",
            ),
            ("ci/build.yml", "build: {script: [make]}\n"),
        ],
        "CI",
    );
    let mut note = common::fixture_json("gitlab/docs/note_hook.issue.json");
    note["object_attributes"]["note"] = serde_json::json!("/repobox speed up the build");
    let r = w.app.gitlab("Note Hook", &note).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["job"].as_str().unwrap().to_owned();
    let (job, error) = w.failed(&id).await;
    assert!(error.contains("`ci/build.yml`"), "{error}");
    assert!(error.contains(".gitlab-ci.yml"), "{error}");
    let edits = w.gitlab.note_edits(progress_comment_id(&job)).await;
    assert!(edits.last().unwrap().contains("`ci/build.yml`"));
    assert_eq!(
        w.remote_ref(GL_GIT, "repobox/17-test"),
        None,
        "nothing pushed"
    );
    assert!(w.gitlab.created_merge_requests().await.is_empty());

    // An admin allows workflow changes: the same job goes through.
    w.set_admin("allow_workflow_changes", "true").await;
    note["object_attributes"]["id"] = serde_json::json!(424_242);
    let r = w.app.gitlab("Note Hook", &note).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["job"].as_str().unwrap().to_owned();
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    w.app.stop().await;
}
