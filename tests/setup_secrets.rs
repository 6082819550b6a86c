//! Setup secrets (SPEC section 15): an admin-defined secret named in `.repobox.yml`
//! `setup_env` reaches the setup commands, never the agent, and is masked in the job log,
//! the comments and Redis; a name no admin defined fails the job before anything runs.

mod common;

use base64::Engine;
use common::world::{REPO_GIT, Setup, world};
use repobox::crypto::SecretBox;
use repobox::job::JobStatus;
use repobox::setup_secrets;

const VALUE: &str = "deploy-S3CRET-value-0123456789";

fn secret_box() -> SecretBox {
    let key = base64::engine::general_purpose::STANDARD
        .decode(common::TEST_SECRET_KEY)
        .unwrap();
    SecretBox::new(&key.try_into().unwrap())
}

#[tokio::test]
async fn a_setup_secret_reaches_setup_only_and_is_masked() {
    let w = world(Setup {
        repobox_yml: Some(
            "setup_env: [DEPLOY_TOKEN]\nsetup:\n  - echo \"token=$DEPLOY_TOKEN length=${#DEPLOY_TOKEN}\"\n",
        ),
        // The agent looks for the secret in its environment and in its pid 1's.
        agent: r#"if [ -n "$DEPLOY_TOKEN" ] || tr '\0' '\n' < /proc/1/environ | grep -q DEPLOY_TOKEN; then echo LEAKED >> README.md; else echo clean >> README.md; fi"#,
        ..Setup::default()
    })
    .await;
    let sealed = secret_box().seal(VALUE, &setup_secrets::context("DEPLOY_TOKEN"));
    w.app
        .store
        .set_setup_secret("DEPLOY_TOKEN", &sealed)
        .await
        .unwrap();
    let id = w.comment("/repobox fix the spelling").await;
    let job = w.finished(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    // The setup command had the value (its length), and the log shows it masked.
    w.log_has(&id, &format!("length={}", VALUE.len()), 1).await;
    let readme = w.remote_git(
        REPO_GIT,
        &[
            "show",
            &format!("{}:README.md", job.branch.as_deref().unwrap()),
        ],
    );
    assert!(
        readme.contains("clean") && !readme.contains("LEAKED"),
        "{readme}"
    );
    let comment = w.final_comment(&job).await;
    assert!(!comment.contains(VALUE));
    w.assert_no_token_leak(&[VALUE]).await;
    w.app.stop().await;
}

#[tokio::test]
async fn a_setup_env_name_no_admin_defined_fails_the_job_before_setup() {
    let w = world(Setup {
        repobox_yml: Some("setup_env: [MISSING_TOKEN]\nsetup:\n  - echo SETUP-RAN\n"),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("setup_env names `MISSING_TOKEN`, which no admin has defined"),
        "{error}"
    );
    assert!(!w.log(&id).await.iter().any(|l| l.contains("SETUP-RAN")));
    assert!(w.github.created_pulls().await.is_empty());
    w.app.stop().await;

    // A name the sandbox owns cannot be asked for either.
    let w = world(Setup {
        repobox_yml: Some("setup_env: [PATH]\n"),
        ..Setup::default()
    })
    .await;
    let id = w.comment("/repobox fix the spelling").await;
    let (_, error) = w.failed(&id).await;
    assert!(
        error.contains("`PATH` is set by the sandbox itself"),
        "{error}"
    );
    w.app.stop().await;
}
