//! The runner's git work against a real remote over smart HTTP (`git http-backend`
//! behind Basic auth): mirrors, work trees, commits, pushes, failures, and that the
//! token never lands in a file or a URL.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::git_server::{
    GitServer, git, init_bare_repo, install_reject_hook, push_commit, rev_parse, set_ref,
};
use repobox::git::{Credentials, GitError, Mirror, Mirrors, WorkTree};
use repobox::secret::Secret;

const TOKEN: &str = "ghs_TestTokenValue0123456789abcdefSECRET";
const REPO: &str = "octo-org/hello-world.git";
const KEY: &str = "github/octo-org/hello-world";

/// A remote with one repository, a running server and an empty work dir.
struct Fixture {
    // Field order matters: the server must stop before its runtime.
    server: GitServer,
    _rt: tokio::runtime::Runtime,
    remote_root: tempfile::TempDir,
    workdir: tempfile::TempDir,
    main_sha: String,
}

impl Fixture {
    fn new() -> Fixture {
        let remote_root = tempfile::tempdir().unwrap();
        let main_sha = init_bare_repo(
            remote_root.path(),
            REPO,
            &[
                ("README.md", "# Hello\n\nline two\nline three\n"),
                (
                    "src/lib.rs",
                    "pub fn hello() -> &'static str {\n    \"hi\"\n}\n",
                ),
                (
                    "docs/old-name.md",
                    "some documentation that will be renamed\n",
                ),
                ("obsolete.txt", "to be deleted\n"),
                (".gitignore", "target/\n*.log\n"),
            ],
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(GitServer::start(remote_root.path().to_path_buf(), TOKEN));
        Fixture {
            server,
            _rt: rt,
            remote_root,
            workdir: tempfile::tempdir().unwrap(),
            main_sha,
        }
    }

    fn url(&self) -> String {
        self.server.url(REPO)
    }

    fn root(&self) -> &Path {
        self.remote_root.path()
    }

    fn bare(&self) -> PathBuf {
        self.root().join(REPO)
    }

    fn mirrors(&self) -> Mirrors {
        Mirrors::new(self.workdir.path())
    }

    fn fetch(&self, extra: &[&str]) -> Mirror {
        self.mirrors()
            .fetch(KEY, &self.url(), &creds(TOKEN), extra)
            .expect("fetch succeeds")
    }

    /// `git log -1 --format=<fmt> <rev>` in the remote's bare repository.
    fn remote_log(&self, fmt: &str, rev: &str) -> String {
        git(
            self.root(),
            &[
                "--git-dir",
                &self.bare().to_string_lossy(),
                "log",
                "-1",
                &format!("--format={fmt}"),
                rev,
            ],
        )
    }
}

fn creds(token: &str) -> Credentials {
    Credentials {
        username: "x-access-token".into(),
        password: Secret::new(token),
    }
}

fn write(tree: &WorkTree, rel: &str, content: &str) {
    let path = tree.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn cold_fetch_creates_a_bare_mirror_with_all_branches() {
    let fx = Fixture::new();
    let feature = push_commit(fx.root(), REPO, "feature", &[("f.txt", "f\n")], "feature");

    let mirror = fx.fetch(&[]);

    assert_eq!(
        mirror.path(),
        fx.workdir
            .path()
            .join("mirrors/github/octo-org/hello-world.git")
    );
    assert!(mirror.path().join("HEAD").is_file());
    assert!(!mirror.path().join("index").exists(), "a mirror is bare");
    assert_eq!(
        mirror.remote_branch("main").unwrap(),
        Some(fx.main_sha.clone())
    );
    assert_eq!(mirror.remote_branch("feature").unwrap(), Some(feature));
    assert_eq!(mirror.remote_branch("missing").unwrap(), None);
    let config = std::fs::read_to_string(mirror.path().join("config")).unwrap();
    assert!(
        !config.contains("[remote"),
        "no remote in the config:\n{config}"
    );
    assert!(
        !config.contains("127.0.0.1"),
        "no URL in the config:\n{config}"
    );
    let requests = fx.server.requests();
    assert!(requests.iter().any(|r| r.authorized), "{requests:?}");
    assert!(requests.iter().all(|r| !r.uri.contains(TOKEN)));
}

#[test]
fn incremental_fetch_sees_new_commits_and_prunes_deleted_branches() {
    let fx = Fixture::new();
    push_commit(fx.root(), REPO, "gone-soon", &[("g.txt", "g\n")], "temp");
    let mirror = fx.fetch(&[]);
    assert!(mirror.remote_branch("gone-soon").unwrap().is_some());

    let newer = push_commit(fx.root(), REPO, "main", &[("new.txt", "new\n")], "second");
    git(
        fx.root(),
        &[
            "--git-dir",
            &fx.bare().to_string_lossy(),
            "branch",
            "-D",
            "gone-soon",
        ],
    );
    let before = fx.server.requests().len();
    let mirror = fx.fetch(&[]);

    assert_ne!(newer, fx.main_sha);
    assert_eq!(mirror.remote_branch("main").unwrap(), Some(newer));
    assert_eq!(mirror.remote_branch("gone-soon").unwrap(), None, "pruned");
    // An incremental fetch is a handful of requests, not a new clone of everything.
    let used = fx.server.requests().len() - before;
    assert!(used <= 6, "{used} requests for an incremental fetch");
}

#[test]
fn extra_refs_are_fetched_under_extra() {
    let fx = Fixture::new();
    let pr_head = push_commit(fx.root(), REPO, "contrib", &[("pr.txt", "pr\n")], "pr");
    set_ref(fx.root(), REPO, "refs/pull/7/head", &pr_head);
    git(
        fx.root(),
        &[
            "--git-dir",
            &fx.bare().to_string_lossy(),
            "branch",
            "-D",
            "contrib",
        ],
    );

    let mirror = fx.fetch(&["refs/pull/7/head", "refs/pull/8/head"]);

    assert_eq!(mirror.extra_ref("refs/pull/7/head").unwrap(), Some(pr_head));
    assert_eq!(
        mirror.extra_ref("refs/pull/8/head").unwrap(),
        None,
        "absent on the remote"
    );
    assert_eq!(mirror.remote_branch("contrib").unwrap(), None);
    assert!(matches!(
        fx.mirrors()
            .fetch(KEY, &fx.url(), &creds(TOKEN), &["pull/7/head"]),
        Err(GitError::Other(_))
    ));
}

#[test]
fn work_tree_edit_commit_keeps_trailers_and_counts_lines() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-1", &fx.main_sha).unwrap();

    assert_eq!(tree.path(), fx.workdir.path().join("trees/job-1"));
    let readme = tree.path().join("README.md");
    assert!(
        std::fs::symlink_metadata(&readme)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(tree.branch(), "repobox-job/job-1");
    let dot_git = std::fs::read_to_string(tree.path().join(".git")).unwrap();
    let pointed = dot_git.trim_end().strip_prefix("gitdir: ").unwrap();
    assert_eq!(Path::new(pointed), tree.git_dir());
    assert!(tree.git_dir().starts_with(mirror.path()));
    assert!(tree.git_dir().join("HEAD").is_file());
    assert_eq!(tree.changed_paths().unwrap(), Vec::<String>::new());

    write(
        &tree,
        "README.md",
        "# Hello\n\nline two changed\nline three\nline four\n",
    );
    write(&tree, "src/new/mod.rs", "// new\n");
    write(&tree, "build.log", "ignored\n");
    write(&tree, "target/debug/out", "ignored\n");
    std::fs::remove_file(tree.path().join("obsolete.txt")).unwrap();
    std::fs::rename(
        tree.path().join("docs/old-name.md"),
        tree.path().join("docs/new-name.md"),
    )
    .unwrap();

    assert_eq!(
        tree.changed_paths().unwrap(),
        vec![
            "README.md",
            "docs/new-name.md",
            "docs/old-name.md",
            "obsolete.txt",
            "src/new/mod.rs"
        ]
    );

    // The git CLI works in the tree too (the agent may run `git diff`).
    let status = git(tree.path(), &["status", "--porcelain"]);
    assert!(
        status.contains("M README.md") && status.contains("?? src/"),
        "{status}"
    );
    assert!(!status.contains("build.log"), "{status}");

    let message = "Fix the README\n\nBody text.\n\nCo-authored-by: Octo Cat <octo@example.com>\n";
    let info = tree
        .commit_all("repobox[bot]", "bot@repobox.dev", message)
        .unwrap()
        .expect("a commit");

    let paths: Vec<&str> = info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "README.md",
            "docs/new-name.md",
            "obsolete.txt",
            "src/new/mod.rs"
        ]
    );
    let readme_change = &info.files[0];
    assert_eq!((readme_change.additions, readme_change.deletions), (2, 1));
    assert_eq!(info.additions, 3, "{info:?}");
    assert_eq!(info.deletions, 2, "{info:?}");

    let git_dir = mirror.path().to_string_lossy().into_owned();
    let show = |fmt: &str| {
        git(
            fx.root(),
            &[
                "--git-dir",
                &git_dir,
                "log",
                "-1",
                &format!("--format={fmt}"),
                "repobox-job/job-1",
            ],
        )
    };
    assert_eq!(show("%H"), info.sha);
    assert_eq!(show("%P"), fx.main_sha);
    assert_eq!(
        show("%an <%ae>|%cn <%ce>"),
        "repobox[bot] <bot@repobox.dev>|repobox[bot] <bot@repobox.dev>"
    );
    assert_eq!(
        show("%(trailers:key=Co-authored-by,valueonly)"),
        "Octo Cat <octo@example.com>"
    );
    assert!(show("%B").starts_with("Fix the README\n\nBody text."));
    let files = git(
        fx.root(),
        &[
            "--git-dir",
            &git_dir,
            "ls-tree",
            "-r",
            "--name-only",
            &info.sha,
        ],
    );
    assert!(
        !files.contains("build.log") && !files.contains("target/"),
        "{files}"
    );
    // After the commit the work tree is clean relative to the job branch, but the
    // changes relative to the base remain visible.
    assert!(tree.commit_all("a", "a@b.c", "again").unwrap().is_none());
    assert!(
        tree.changed_paths()
            .unwrap()
            .contains(&"README.md".to_owned())
    );
}

#[test]
fn commit_without_changes_returns_none() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-idle", &fx.main_sha).unwrap();
    write(&tree, "debug.log", "only an ignored file\n");

    assert_eq!(
        tree.commit_all("a", "a@example.com", "nothing").unwrap(),
        None
    );
    let head = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "rev-parse",
            "repobox-job/job-idle",
        ],
    );
    assert_eq!(head, fx.main_sha);
}

#[test]
fn push_creates_a_new_remote_branch() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-push", &fx.main_sha).unwrap();
    write(
        &tree,
        "src/lib.rs",
        "pub fn hello() -> &'static str {\n    \"hello\"\n}\n",
    );
    let info = tree
        .commit_all(
            "bot",
            "bot@example.com",
            "Say hello\n\nCo-authored-by: A <a@example.com>",
        )
        .unwrap()
        .unwrap();

    tree.push(&fx.url(), &creds(TOKEN), "repobox/42-say-hello", false)
        .unwrap();

    assert_eq!(
        fx.remote_log("%H", "refs/heads/repobox/42-say-hello"),
        info.sha
    );
    assert_eq!(
        fx.remote_log("%s", "refs/heads/repobox/42-say-hello"),
        "Say hello"
    );
    assert_eq!(
        rev_parse(fx.root(), REPO, "refs/heads/main"),
        Some(fx.main_sha.clone())
    );
    assert!(
        fx.server
            .requests()
            .iter()
            .any(|r| r.uri.contains("git-receive-pack"))
    );
}

#[test]
fn push_to_a_protected_branch_is_rejected() {
    let fx = Fixture::new();
    install_reject_hook(fx.root(), REPO, "main");
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-protected", &fx.main_sha).unwrap();
    write(&tree, "README.md", "changed\n");
    tree.commit_all("bot", "bot@example.com", "Change")
        .unwrap()
        .unwrap();

    let err = tree
        .push(&fx.url(), &creds(TOKEN), "main", false)
        .unwrap_err();

    let GitError::Rejected(reason) = &err else {
        panic!("expected Rejected, got {err:?}");
    };
    assert!(reason.contains("refs/heads/main"), "{reason}");
    assert!(reason.contains("Protected branch"), "{reason}");
    assert!(err.to_string().starts_with("push rejected: "));
    assert_eq!(
        rev_parse(fx.root(), REPO, "refs/heads/main"),
        Some(fx.main_sha.clone())
    );
}

#[test]
fn non_fast_forward_push_is_rejected_unless_forced() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let first = mirror.add_worktree("job-a", &fx.main_sha).unwrap();
    write(&first, "a.txt", "a\n");
    first
        .commit_all("bot", "bot@example.com", "A")
        .unwrap()
        .unwrap();
    first
        .push(&fx.url(), &creds(TOKEN), "topic", false)
        .unwrap();

    let second = mirror.add_worktree("job-b", &fx.main_sha).unwrap();
    write(&second, "b.txt", "b\n");
    let b = second
        .commit_all("bot", "bot@example.com", "B")
        .unwrap()
        .unwrap();
    let err = second
        .push(&fx.url(), &creds(TOKEN), "topic", false)
        .unwrap_err();
    assert!(matches!(err, GitError::Rejected(_)), "{err:?}");

    second
        .push(&fx.url(), &creds(TOKEN), "topic", true)
        .unwrap();
    assert_eq!(rev_parse(fx.root(), REPO, "refs/heads/topic"), Some(b.sha));
}

#[test]
fn wrong_token_fails_with_auth_quickly() {
    let fx = Fixture::new();
    let wrong = "ghs_WrongTokenValue9876543210zyxwvuWRONG";
    let started = Instant::now();

    let err = fx
        .mirrors()
        .fetch(KEY, &fx.url(), &creds(wrong), &[])
        .unwrap_err();

    assert!(matches!(err, GitError::Auth(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.to_string().contains(wrong), "{err}");
    let attempts = fx.server.requests().len();
    assert!((2..=6).contains(&attempts), "{attempts} requests");

    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-auth", &fx.main_sha).unwrap();
    write(&tree, "x.txt", "x\n");
    tree.commit_all("bot", "bot@example.com", "X")
        .unwrap()
        .unwrap();
    let err = tree.push(&fx.url(), &creds(wrong), "x", false).unwrap_err();
    assert!(matches!(err, GitError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains(wrong), "{err}");
    assert_eq!(rev_parse(fx.root(), REPO, "refs/heads/x"), None);
}

#[test]
fn remove_deletes_tree_metadata_and_branch() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-rm", &fx.main_sha).unwrap();
    let (path, git_dir) = (tree.path().to_path_buf(), tree.git_dir());
    assert!(path.is_dir() && git_dir.is_dir());

    tree.remove().unwrap();

    assert!(!path.exists());
    assert!(!git_dir.exists());
    let branches = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "branch",
            "--list",
        ],
    );
    assert!(!branches.contains("job-rm"), "{branches}");

    let dropped = mirror.add_worktree("job-drop", &fx.main_sha).unwrap();
    let dropped_path = dropped.path().to_path_buf();
    drop(dropped);
    assert!(!dropped_path.exists(), "Drop removes the tree too");
}

#[test]
fn leftover_tree_of_the_same_job_is_replaced() {
    let fx = Fixture::new();
    let second = push_commit(fx.root(), REPO, "main", &[("second.txt", "2\n")], "second");
    let mirror = fx.fetch(&[]);
    let crashed = mirror.add_worktree("job-crash", &fx.main_sha).unwrap();
    write(&crashed, "junk.txt", "left behind\n");
    crashed
        .commit_all("bot", "bot@example.com", "half done")
        .unwrap()
        .unwrap();
    std::mem::forget(crashed); // the runner died: no cleanup ran

    let tree = mirror.add_worktree("job-crash", &second).unwrap();

    assert!(!tree.path().join("junk.txt").exists());
    assert!(tree.path().join("second.txt").is_file());
    let head = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "rev-parse",
            "repobox-job/job-crash",
        ],
    );
    assert_eq!(head, second);
    assert_eq!(tree.changed_paths().unwrap(), Vec::<String>::new());
}

#[test]
fn concurrent_fetches_of_one_mirror_both_succeed() {
    let fx = Fixture::new();
    let url = fx.url();
    let workdir = fx.workdir.path().to_path_buf();
    let results: Vec<Result<Option<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (url, workdir) = (url.clone(), workdir.clone());
                s.spawn(move || {
                    Mirrors::new(workdir)
                        .fetch(KEY, &url, &creds(TOKEN), &[])
                        .and_then(|m| m.remote_branch("main"))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in results {
        assert_eq!(result, Ok(Some(fx.main_sha.clone())));
    }
    assert!(
        fx.workdir
            .path()
            .join("mirrors/github/octo-org/hello-world.lock")
            .is_file()
    );
}

#[test]
fn token_is_never_written_to_disk_or_put_in_a_url() {
    let fx = Fixture::new();
    install_reject_hook(fx.root(), REPO, "main");
    set_ref(fx.root(), REPO, "refs/pull/1/head", &fx.main_sha);
    let mirror = fx
        .mirrors()
        .fetch(KEY, &fx.url(), &creds(TOKEN), &["refs/pull/1/head"])
        .unwrap();
    let tree = mirror.add_worktree("job-scan", &fx.main_sha).unwrap();
    write(&tree, "README.md", "new\n");
    tree.commit_all("bot", "bot@example.com", "Scan")
        .unwrap()
        .unwrap();
    tree.push(&fx.url(), &creds(TOKEN), "repobox/scan", false)
        .unwrap();
    let rejected = tree
        .push(&fx.url(), &creds(TOKEN), "main", false)
        .unwrap_err();
    let refetched = fx.fetch(&["refs/pull/1/head"]);
    assert!(refetched.remote_branch("repobox/scan").unwrap().is_some());

    assert!(!rejected.to_string().contains(TOKEN));
    let mut scanned = 0;
    for file in walk(fx.workdir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, TOKEN.as_bytes()),
            "token found in {}",
            file.display()
        );
        scanned += 1;
    }
    assert!(scanned > 20, "only {scanned} files scanned");
    // libgit2 still creates FETCH_HEAD, but leaves it empty with update_fetchhead off.
    let fetch_head = std::fs::read_to_string(mirror.path().join("FETCH_HEAD")).unwrap_or_default();
    assert_eq!(fetch_head, "", "FETCH_HEAD records nothing (no URL)");
    assert!(fx.server.requests().iter().all(|r| !r.uri.contains(TOKEN)));
    // The scan itself works: a planted token is found.
    std::fs::write(tree.path().join("planted"), TOKEN).unwrap();
    assert!(
        walk(fx.workdir.path())
            .iter()
            .any(|f| { contains(&std::fs::read(f).unwrap(), TOKEN.as_bytes()) })
    );
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn gitattributes_eol_conversion_is_applied_on_checkout() {
    let fx = Fixture::new();
    let sha = push_commit(
        fx.root(),
        REPO,
        "main",
        &[
            (".gitattributes", "*.bat text eol=crlf\n"),
            ("run.bat", "echo hi\nexit\n"),
        ],
        "windows script",
    );
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-eol", &sha).unwrap();

    let checked_out = std::fs::read(tree.path().join("run.bat")).unwrap();
    assert_eq!(checked_out, b"echo hi\r\nexit\r\n");
    assert_eq!(tree.changed_paths().unwrap(), Vec::<String>::new());
    write(&tree, "run.bat", "echo hello\r\nexit\r\n");
    let info = tree
        .commit_all("bot", "bot@example.com", "Greet")
        .unwrap()
        .unwrap();
    let blob = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "show",
            &format!("{}:run.bat", info.sha),
        ],
    );
    assert_eq!(blob, "echo hello\nexit", "stored with LF");
}
