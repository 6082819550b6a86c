//! The world of the runner's end-to-end scenarios (`tests/runner.rs`, `tests/claude.rs`):
//! the real router over a real Redis, real git remotes served by `git http-backend` (they
//! only accept the forge's token), stateful HTTP fakes of GitHub and GitLab, and a runner
//! in the same process or as the real binary.

use std::path::Path;
use std::time::Duration;

use redis::AsyncCommands;
use repobox::agent::Agent;
use repobox::job::{Job, JobStatus};
use serde_json::{Value, json};

use super::git_server::{self, GitServer};
use super::github::{FakeGitHub, INSTALLATION_TOKEN};
use super::gitlab::{self as gl, FakeGitLab};
use super::{Options, TestApp, fixture_json};

pub const REPO: &str = "Codertocat/Hello-World";
pub const REPO_GIT: &str = "Codertocat/Hello-World.git";
pub const GL_PROJECT: u64 = 5;
pub const GL_PATH: &str = "gitlab-org/gitlab-test";
pub const GL_GIT: &str = "gitlab-org/gitlab-test.git";
pub const ISSUE_BRANCH: &str = "repobox/1-spelling-error-in-the-readme-file";

/// An agent that fixes the README and writes a summary.
pub const FIXING_AGENT: &str = r#"echo "agent got: $(head -c 40)"; echo "fixed" >> README.md; printf 'Fix the README spelling\n\nCorrected the typo in README.md.\n' > "$REPOBOX_SUMMARY_FILE""#;

/// An agent that starts and never finishes on its own.
pub const SLEEPING_AGENT: &str = "echo AGENT STARTED; sleep 600";

/// An agent that waits, polling its scratch directory, until the test drops a `go` file
/// there; then behaves like [`FIXING_AGENT`].
pub const GATED_AGENT: &str = r#"echo "AGENT STARTED"; d=$(dirname "$REPOBOX_SUMMARY_FILE"); while [ ! -e "$d/go" ]; do sleep 0.05; done; echo "fixed" >> README.md; printf 'Fix it\n\nDone.\n' > "$REPOBOX_SUMMARY_FILE""#;

pub struct World {
    pub app: TestApp,
    pub github: FakeGitHub,
    pub gitlab: FakeGitLab,
    pub github_git: GitServer,
    pub gitlab_git: GitServer,
    pub git_root: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
}

pub struct Setup<'a> {
    pub agent: &'a str,
    pub extra: Vec<String>,
    pub runner: bool,
    /// An agent object instead of the `command` agent (`agent` is then unused).
    pub custom_agent: Option<std::sync::Arc<dyn Agent>>,
    /// `.repobox.yml` on the GitHub repository's default branch.
    pub repobox_yml: Option<&'a str>,
    /// More files on the GitHub repository's default branch.
    pub files: Vec<(&'a str, &'a str)>,
    /// A Redis of the test's own instead of the shared one.
    pub redis_url: Option<String>,
    /// Runs the acknowledger in the test process (off when `serve` processes do it).
    pub acknowledger: bool,
    /// The storage backend (Redis unless a test says otherwise).
    pub backend: super::Backend,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            agent: FIXING_AGENT,
            extra: Vec::new(),
            runner: true,
            custom_agent: None,
            repobox_yml: None,
            files: Vec::new(),
            redis_url: None,
            acknowledger: true,
            backend: super::Backend::Redis,
        }
    }
}

pub async fn world(setup: Setup<'_>) -> World {
    super::capture_logs();
    let git_root = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let mut files = vec![
        ("README.md", "# Hello Wrold\n"),
        ("src/lib.rs", "pub fn hello() {}\n"),
    ];
    if let Some(yml) = setup.repobox_yml {
        files.push((".repobox.yml", yml));
    }
    files.extend(setup.files.iter().copied());
    git_server::init_bare_repo(git_root.path(), REPO_GIT, &files);
    git_server::init_bare_repo(git_root.path(), GL_GIT, &[("README.md", "# test\n")]);
    let github_git = GitServer::start(git_root.path().to_owned(), INSTALLATION_TOKEN).await;
    let gitlab_git = GitServer::start(git_root.path().to_owned(), gl::TOKEN).await;
    let github = FakeGitHub::start(&[
        ("Codertocat", "write"),
        ("Octo2", "write"),
        ("reader", "read"),
    ])
    .await;
    github
        .serve_repo(REPO, &github_git.url(REPO_GIT), "main")
        .await;
    let gitlab = FakeGitLab::start(&[(1, 40)]).await;
    gitlab
        .serve_project(GL_PROJECT, GL_PATH, &gitlab_git.url(GL_GIT), "main")
        .await;
    let mut args = github.args();
    args.extend(gitlab.args());
    args.extend(
        [
            "--agent",
            "command",
            "--agent-command",
            setup.agent,
            "--workdir",
            workdir.path().to_str().unwrap(),
            "--visibility-timeout",
            "2s",
        ]
        .map(String::from),
    );
    args.extend(setup.extra);
    let app = TestApp::start(Options {
        args,
        runner: setup.runner,
        agent: setup.custom_agent,
        redis_url: setup.redis_url.unwrap_or_else(super::redis_url),
        acknowledger: setup.acknowledger,
        backend: setup.backend,
        ..Options::default()
    })
    .await;
    World {
        app,
        github,
        gitlab,
        github_git,
        gitlab_git,
        git_root,
        workdir,
    }
}

pub fn issue_comment(body: &str, number: u64, login: &str, user_id: u64) -> Value {
    let mut p = fixture_json("github/webhooks/issue_comment.created.json");
    p["comment"]["body"] = json!(body);
    p["comment"]["id"] = json!(ulid::Ulid::new().0 as u64 & 0xffff_ffff);
    p["comment"]["user"]["login"] = json!(login);
    p["comment"]["user"]["id"] = json!(user_id);
    p["sender"]["login"] = json!(login);
    p["sender"]["id"] = json!(user_id);
    p["issue"]["number"] = json!(number);
    if number != 1 {
        p["issue"]["title"] = json!(format!("Issue number {number}"));
    }
    p
}

impl World {
    pub async fn comment(&self, body: &str) -> String {
        self.comment_on(body, 1, "Codertocat", 21031067).await
    }

    /// A GitLab note with `body` on issue #17 of the GitLab fixture project (by `root`);
    /// returns the job id.
    pub async fn gitlab_note(&self, body: &str) -> String {
        let mut note = fixture_json("gitlab/docs/note_hook.issue.json");
        note["object_attributes"]["note"] = json!(body);
        let r = self.app.gitlab("Note Hook", &note).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        r.body["job"].as_str().unwrap().to_owned()
    }

    pub async fn comment_on(&self, body: &str, number: u64, login: &str, user_id: u64) -> String {
        let r = self
            .app
            .github_json(
                "issue_comment",
                &issue_comment(body, number, login, user_id),
            )
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        r.body["job"].as_str().unwrap_or_default().to_owned()
    }

    /// Opens pull request #7 from `feature` (one commit on `main`; `protected`: the
    /// remote refuses pushes to it; `fork`: the head lives in a fork, published only as
    /// `refs/pull/7/head`) and comments a command on it. Returns the head
    /// commit and the job id.
    pub async fn command_on_pull_request(&self, protected: bool, fork: bool) -> (String, String) {
        let root = self.git_root.path();
        let head = git_server::push_commit(
            root,
            REPO_GIT,
            "feature",
            &[("feature.txt", "wip\n")],
            "Work in progress",
        );
        git_server::set_ref(root, REPO_GIT, "refs/pull/7/head", &head);
        if protected {
            git_server::install_reject_hook(root, REPO_GIT, "feature");
        }
        self.github
            .add_pull(REPO, 7, "feature", &head, "main", !fork);
        let mut payload = issue_comment("/repobox finish this", 7, "Codertocat", 21031067);
        payload["issue"]["pull_request"] =
            json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/7"});
        let r = self.app.github_json("issue_comment", &payload).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        (head, r.body["job"].as_str().unwrap().to_owned())
    }

    /// The last body the job's GitHub progress comment was edited to.
    pub async fn final_comment(&self, job: &Job) -> String {
        let edits = self.github.comment_edits(progress_comment_id(job)).await;
        edits
            .last()
            .cloned()
            .expect("the progress comment was edited")
    }

    /// Waits for the job to end `failed`; returns it and its error.
    pub async fn failed(&self, id: &str) -> (Job, String) {
        let job = self.finished(id).await;
        assert_eq!(job.status, JobStatus::Failed);
        let error = job.error.clone().expect("a failed job says why");
        (job, error)
    }

    /// Waits (up to 60 s: debug builds and cold git) until the job is final.
    pub async fn finished(&self, id: &str) -> Job {
        self.wait("a final state", id, |j| j.status.is_final(), 60)
            .await
    }

    pub async fn wait(&self, what: &str, id: &str, check: impl Fn(&Job) -> bool, secs: u64) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.app.job(id).await;
            if check(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; job is {:?} ({:?})",
                job.status,
                job.error
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job's log has a line containing `text` `times` times.
    pub async fn log_has(&self, id: &str, text: &str, times: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let lines = self.log(id).await;
            if lines.iter().filter(|l| l.contains(text)).count() >= times {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "log never showed `{text}` x{times}: {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn log(&self, id: &str) -> Vec<String> {
        self.app
            .store
            .read_log(id.parse().unwrap(), "0", 10_000, None)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect()
    }

    /// Lets a [`GATED_AGENT`] of job `id` (in `workdir`) go on.
    pub fn release(&self, workdir: &Path, id: &str) {
        let dir = workdir.join("scratch").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("go"), "").unwrap();
    }

    pub fn remote_ref(&self, repo: &str, branch: &str) -> Option<String> {
        git_server::rev_parse(self.git_root.path(), repo, &format!("refs/heads/{branch}"))
    }

    pub fn remote_git(&self, repo: &str, args: &[&str]) -> String {
        git_server::git(&self.git_root.path().join(repo), args)
    }

    /// The token is in no log line (of the whole test binary, debug level), no file
    /// under the work directory (mirror configs, work trees), no Redis key, and no URL
    /// the git servers saw.
    pub async fn assert_no_token_leak(&self, tokens: &[&str]) {
        let logs = super::captured_logs();
        assert!(logs.contains("job finished"), "the log was captured");
        for t in tokens {
            assert!(!logs.contains(t), "a token is in the log");
        }
        assert_no_token_in_dir(self.workdir.path(), tokens);
        let dump = stored_text(&self.app).await;
        for t in tokens {
            assert!(!dump.contains(t), "a token is stored in Redis");
        }
        for server in [&self.github_git, &self.gitlab_git] {
            for r in server.requests() {
                for t in tokens {
                    assert!(!r.uri.contains(t), "token in a git URL: {}", r.uri);
                }
            }
        }
    }
}

pub fn assert_no_token_in_dir(dir: &Path, tokens: &[&str]) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                for t in tokens {
                    assert!(!text.contains(t), "token found in {}", path.display());
                }
            }
        }
    }
}

/// Everything the test's store holds, as text: on Redis every value of every key under
/// the test's prefix; on the embedded store every row of every table, and the bytes of
/// the database files themselves (a token must not be in a page SQLite freed either).
pub async fn stored_text(app: &TestApp) -> String {
    if let super::Backend::Embedded(Some(dir)) = app.backend() {
        let db = app.sqlite();
        let mut out = String::new();
        for table in ["kv", "hashes", "zsets", "lists", "streams"] {
            let mut stmt = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..columns {
                    let value: rusqlite::types::Value = row.get(i).unwrap();
                    out.push_str(&format!("{value:?} "));
                }
                out.push('\n');
            }
        }
        for file in ["repobox.db", "repobox.db-wal"] {
            let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
        return out;
    }
    let mut conn = app.conn().await;
    let mut out = String::new();
    for key in super::scan(&mut conn, &app.prefix).await {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => conn.get(&key).await.unwrap(),
            "hash" => conn.hgetall(&key).await.unwrap(),
            "list" => conn.lrange(&key, 0, -1).await.unwrap(),
            "set" => conn.smembers(&key).await.unwrap(),
            "zset" => conn.zrange(&key, 0, -1).await.unwrap(),
            "stream" => conn.xrange_all(&key).await.unwrap(),
            _ => redis::Value::Nil,
        };
        out.push_str(&format!("{key} {value:?}\n"));
    }
    out
}

pub fn progress_comment_id(job: &Job) -> u64 {
    job.progress_comment_id
        .expect("the job has a progress comment")
}

impl World {
    /// `repobox runner` as its own process over this world's Redis prefix and GitHub
    /// fake, working in `workdir`, logging (JSON, debug) to `log`. `args` come before
    /// the subcommand; `env` adds variables (the agent's configuration).
    pub fn runner_process(
        &self,
        workdir: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Child {
        let mut all: Vec<String> = vec![
            "--redis-prefix".into(),
            self.app.prefix.clone(),
            "--public-url".into(),
            "https://repobox.example.com".into(),
            "--secret-key".into(),
            super::TEST_SECRET_KEY.into(),
            "--workdir".into(),
            workdir.to_str().unwrap().into(),
            "--log-format".into(),
            "json".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(self.github.args());
        all.push("runner".into());
        std::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
            .args(&all)
            .env("REPOBOX_REDIS_URL", super::redis_url())
            .env("REPOBOX_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::options().append(true).open(log).unwrap())
            .spawn()
            .unwrap()
    }
}

impl World {
    /// Sets an admin switch in the `settings` hash (`allow_forks`, `allow_workflow_changes`…).
    pub async fn set_admin(&self, field: &str, value: &str) {
        self.app
            .store
            .set_settings(&[(field, value.to_owned())])
            .await
            .unwrap();
    }

    /// The git server's requests for one repository (`Owner/name.git`).
    pub fn git_requests(&self, repo: &str) -> Vec<String> {
        [&self.github_git, &self.gitlab_git]
            .iter()
            .flat_map(|s| s.requests())
            .map(|r| r.uri)
            .filter(|u| u.contains(repo))
            .collect()
    }

    /// Opens merge request !1 from `feature` (one commit with `files` on `main`; `fork`:
    /// the source lives in another project, published only as
    /// `refs/merge-requests/1/head`) and comments a command on it. Returns the head
    /// commit and the job id.
    pub async fn command_on_merge_request(
        &self,
        files: &[(&str, &str)],
        fork: bool,
    ) -> (String, String) {
        let root = self.git_root.path();
        let head = git_server::push_commit(root, GL_GIT, "feature", files, "Work in progress");
        git_server::set_ref(root, GL_GIT, "refs/merge-requests/1/head", &head);
        if fork {
            // A fork's branch is not in the project itself.
            git_server::git(
                &root.join(GL_GIT),
                &["update-ref", "-d", "refs/heads/feature"],
            );
        }
        self.gitlab
            .add_merge_request(GL_PROJECT, GL_PATH, 1, "feature", &head, "main", !fork);
        let mut note = fixture_json("gitlab/docs/note_hook.merge_request.json");
        note["object_attributes"]["note"] = json!("/repobox finish this");
        note["merge_request"]["iid"] = json!(1);
        note["user"]["id"] = json!(1);
        let r = self.app.gitlab("Note Hook", &note).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        (head, r.body["job"].as_str().unwrap().to_owned())
    }

    /// Opens pull request #7 from a fork whose head commit (on `main`) writes `files`,
    /// published only as `refs/pull/7/head`, and comments a command on it. Returns the
    /// head commit and the job id.
    pub async fn command_on_fork_pull_request(&self, files: &[(&str, &str)]) -> (String, String) {
        let root = self.git_root.path();
        let head = git_server::push_commit(root, REPO_GIT, "fork-head", files, "Fork work");
        git_server::set_ref(root, REPO_GIT, "refs/pull/7/head", &head);
        git_server::git(
            &root.join(REPO_GIT),
            &["update-ref", "-d", "refs/heads/fork-head"],
        );
        self.github
            .add_pull(REPO, 7, "feature", &head, "main", false);
        let mut payload = issue_comment("/repobox finish this", 7, "Codertocat", 21031067);
        payload["issue"]["pull_request"] =
            json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/7"});
        let r = self.app.github_json("issue_comment", &payload).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        (head, r.body["job"].as_str().unwrap().to_owned())
    }
}
