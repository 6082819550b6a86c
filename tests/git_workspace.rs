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
fn a_nested_repository_is_left_out_of_the_commit() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-nested", &fx.main_sha).unwrap();
    let nested = tree.path().join("vendor/lib");
    std::fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "--quiet"]);
    std::fs::write(nested.join("x.txt"), "x\n").unwrap();
    write(&tree, "kept.txt", "kept\n");

    let info = tree
        .commit_all("a", "a@example.com", "with a nested repo")
        .unwrap()
        .expect("the other change is committed");
    let paths: Vec<&str> = info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["kept.txt"]);
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

// --- Parked work trees --------------------------------------------------------------

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// Everything in a tree but its `.git` file, as `path -> (kind, mode, content or link
/// target)`; never follows a symlink.
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let kind = meta.file_type();
            let item = if kind.is_dir() {
                stack.push(path.clone());
                ('d', mode, Vec::new())
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ('l', 0, target.into_os_string().into_encoded_bytes())
            } else if kind.is_file() {
                assert_eq!(meta.nlink(), 1, "{rel} has other links");
                ('f', mode, std::fs::read(&path).unwrap())
            } else {
                ('?', mode, Vec::new())
            };
            out.insert(rel, item);
        }
    }
    out
}

/// Which directory this is: inode and birth time (an inode number alone may be reused
/// by a fresh tree made right after the old one was deleted).
fn ino(path: &Path) -> (u64, Option<std::time::SystemTime>) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.created().ok())
}

fn parked_count(mirror: &Mirror) -> usize {
    std::fs::read_dir(mirror.path().with_extension("parked"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh checkout of `sha` (pool off) to compare a reused tree with.
fn fresh_snapshot(fx: &Fixture, sha: &str) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mirror = fx
        .mirrors()
        .parked_trees(0)
        .fetch(KEY, &fx.url(), &creds(TOKEN), &[])
        .unwrap();
    let tree = mirror.add_worktree("fresh-reference", sha).unwrap();
    let snap = snapshot(tree.path());
    tree.remove().unwrap();
    snap
}

/// What the git CLI sees in a tree: must be nothing at all, ignored files included.
fn assert_git_clean(tree: &WorkTree) {
    let status = git(
        tree.path(),
        &[
            "status",
            "--porcelain",
            "--ignored",
            "--untracked-files=all",
        ],
    );
    assert_eq!(status, "", "git status in the reused tree");
    assert_eq!(tree.changed_paths().unwrap(), Vec::<String>::new());
}

#[test]
fn removed_tree_is_reused_by_the_next_job_without_leftovers() {
    let fx = Fixture::new();
    let second = push_commit(fx.root(), REPO, "main", &[("second.txt", "2\n")], "second");
    let mirror = fx.fetch(&[]);
    let job_a = mirror.add_worktree("job-a", &fx.main_sha).unwrap();
    let root_ino = ino(job_a.path());
    let p = job_a.path().to_path_buf();
    // What an agent may leave: edits, deletions, additions, ignored output, a nested
    // repository, odd modes, a symlink, a FIFO, unreadable and read-only directories.
    write(&job_a, "README.md", "rewritten\n");
    std::fs::remove_file(p.join("obsolete.txt")).unwrap();
    write(&job_a, "src/new.rs", "// new\n");
    write(&job_a, "build.log", "ignored\n");
    write(&job_a, "target/debug/out", "ignored\n");
    write(&job_a, "target/dep/.git/config", "[core]\n");
    write(&job_a, "target/dep/code.rs", "nested repo\n");
    chmod(&p.join("src/lib.rs"), 0o755);
    chmod(&p.join("docs/old-name.md"), 0o4777);
    std::os::unix::fs::symlink("README.md", p.join("link")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(p.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    write(&job_a, "ro/inner/file", "read-only dir\n");
    chmod(&p.join("ro/inner"), 0o555);
    chmod(&p.join("ro"), 0o555);
    write(&job_a, "locked/secret", "unreadable dir\n");
    chmod(&p.join("locked"), 0o000);
    chmod(&p.join("docs"), 0o700);
    job_a
        .commit_all("bot", "bot@example.com", "Job A")
        .unwrap()
        .unwrap();

    job_a.remove().unwrap();

    assert!(!p.exists(), "the job's path is gone");
    assert_eq!(parked_count(&mirror), 1, "the tree is parked");
    let branches = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "branch",
            "--list",
        ],
    );
    assert!(!branches.contains("job-a"), "{branches}");

    let job_b = mirror.add_worktree("job-b", &second).unwrap();

    assert_eq!(job_b.path(), fx.workdir.path().join("trees/job-b"));
    assert_eq!(ino(job_b.path()), root_ino, "the parked tree was reused");
    assert_eq!(parked_count(&mirror), 0);
    assert_eq!(job_b.branch(), "repobox-job/job-b");
    assert_eq!(
        job_b.git_dir(),
        mirror.path().join("worktrees").join("job-b")
    );
    let dot_git = std::fs::read_to_string(job_b.path().join(".git")).unwrap();
    assert_eq!(
        dot_git.trim_end(),
        format!("gitdir: {}", job_b.git_dir().display())
    );
    let head = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "rev-parse",
            "repobox-job/job-b",
        ],
    );
    assert_eq!(head, second);
    assert_git_clean(&job_b);
    assert_eq!(snapshot(job_b.path()), fresh_snapshot(&fx, &second));
    // The mirror's worktree list names the new job only, and nothing needs pruning.
    let list = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "worktree",
            "list",
            "--porcelain",
        ],
    );
    assert!(list.contains("trees/job-b"), "{list}");
    assert!(!list.contains("job-a"), "{list}");
    let prune = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "worktree",
            "prune",
            "--dry-run",
            "--verbose",
        ],
    );
    assert_eq!(prune, "");
    // The reused tree works like a fresh one.
    write(&job_b, "b.txt", "b\n");
    let info = job_b
        .commit_all("bot", "bot@example.com", "Job B")
        .unwrap()
        .unwrap();
    assert_eq!(info.files.len(), 1);
    assert_eq!(job_b.changed_paths().unwrap(), vec!["b.txt".to_owned()]);
}

#[test]
fn symlinks_planted_by_a_job_never_lead_the_cleanup_outside() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path();
    std::fs::create_dir_all(o.join("sub")).unwrap();
    std::fs::write(o.join("keep.txt"), "outside\n").unwrap();
    std::fs::write(o.join("sub/deep.txt"), "outside too\n").unwrap();
    std::fs::write(o.join("lib.rs"), "not the repo's\n").unwrap();
    let before = snapshot(o);
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-links", &fx.main_sha).unwrap();
    let root_ino = ino(job.path());
    let p = job.path().to_path_buf();
    // A tracked directory replaced by a symlink to the outside, plus untracked and
    // ignored symlinks to it and a tracked file turned into one.
    std::fs::remove_dir_all(p.join("src")).unwrap();
    std::os::unix::fs::symlink(o, p.join("src")).unwrap();
    std::os::unix::fs::symlink(o, p.join("escape")).unwrap();
    std::os::unix::fs::symlink(o.join("keep.txt"), p.join("x.log")).unwrap();
    std::fs::create_dir_all(p.join("target")).unwrap();
    std::os::unix::fs::symlink(o.join("sub"), p.join("target/sub")).unwrap();
    std::fs::remove_file(p.join("README.md")).unwrap();
    std::os::unix::fs::symlink(o.join("keep.txt"), p.join("README.md")).unwrap();
    job.remove().unwrap();
    assert_eq!(parked_count(&mirror), 1);

    let next = mirror
        .add_worktree("job-after-links", &fx.main_sha)
        .unwrap();
    assert_eq!(ino(next.path()), root_ino, "reused");

    assert_eq!(snapshot(o), before, "nothing outside the tree changed");
    assert_git_clean(&next);
    assert_eq!(snapshot(next.path()), fresh_snapshot(&fx, &fx.main_sha));
    assert!(
        std::fs::symlink_metadata(next.path().join("src"))
            .unwrap()
            .is_dir()
    );
    next.remove().unwrap();
    // Deleting (not parking) a tree with such symlinks stays inside too.
    let deleted = fx
        .mirrors()
        .parked_trees(0)
        .fetch(KEY, &fx.url(), &creds(TOKEN), &[])
        .unwrap()
        .add_worktree("job-delete", &fx.main_sha)
        .unwrap();
    std::os::unix::fs::symlink(o, deleted.path().join("escape")).unwrap();
    let path = deleted.path().to_path_buf();
    deleted.remove().unwrap();
    assert!(!path.exists());
    assert_eq!(snapshot(o), before);
}

#[test]
fn unreadable_directories_are_scrubbed() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-000", &fx.main_sha).unwrap();
    let root_ino = ino(job.path());
    let p = job.path().to_path_buf();
    write(&job, "locked/a/b.txt", "hidden\n");
    chmod(&p.join("locked/a"), 0o000);
    chmod(&p.join("locked"), 0o000);
    chmod(&p.join("docs"), 0o000);
    chmod(&p.join("src"), 0o500);
    job.remove().unwrap();
    assert_eq!(parked_count(&mirror), 1);

    let next = mirror.add_worktree("job-000-next", &fx.main_sha).unwrap();
    assert_eq!(ino(next.path()), root_ino, "reused");

    assert!(!next.path().join("locked").exists());
    assert_git_clean(&next);
    assert_eq!(snapshot(next.path()), fresh_snapshot(&fx, &fx.main_sha));
}

#[test]
fn hard_links_do_not_connect_the_next_job_to_the_outside() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let shared = outside.path().join("shared.md");
    std::fs::write(&shared, "# Hello\n\nline two\nline three\n").unwrap();
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-links", &fx.main_sha).unwrap();
    let root_ino = ino(job.path());
    let p = job.path().to_path_buf();
    // In: a tracked file replaced by a link to an outside file with the same content.
    std::fs::remove_file(p.join("README.md")).unwrap();
    std::fs::hard_link(&shared, p.join("README.md")).unwrap();
    // Out: a link kept outside to a tracked file, to read what the next job writes.
    let peek = outside.path().join("peek.rs");
    std::fs::hard_link(p.join("src/lib.rs"), &peek).unwrap();
    job.remove().unwrap();

    let next = mirror.add_worktree("job-next", &fx.main_sha).unwrap();
    assert_eq!(ino(next.path()), root_ino, "reused");
    assert_git_clean(&next);
    std::fs::write(next.path().join("README.md"), "secret of the next job\n").unwrap();
    std::fs::write(next.path().join("src/lib.rs"), "secret of the next job\n").unwrap();

    assert_eq!(
        std::fs::read_to_string(&shared).unwrap(),
        "# Hello\n\nline two\nline three\n"
    );
    assert!(!std::fs::read_to_string(&peek).unwrap().contains("next job"));
    assert_eq!(
        std::fs::metadata(next.path().join("README.md"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn pool_keeps_at_most_the_configured_number_of_trees() {
    let fx = Fixture::new();
    let mirror = fx
        .mirrors()
        .parked_trees(2)
        .fetch(KEY, &fx.url(), &creds(TOKEN), &[])
        .unwrap();
    let trees: Vec<WorkTree> = (1..=3)
        .map(|i| {
            mirror
                .add_worktree(&format!("job-{i}"), &fx.main_sha)
                .unwrap()
        })
        .collect();
    let inodes: Vec<_> = trees.iter().map(|t| ino(t.path())).collect();
    for tree in trees {
        tree.remove().unwrap();
    }

    assert_eq!(parked_count(&mirror), 2, "two parked, the third deleted");
    assert_eq!(
        std::fs::read_dir(fx.workdir.path().join("trees"))
            .unwrap()
            .count(),
        0
    );
    let mut metadata: Vec<String> = std::fs::read_dir(mirror.path().join("worktrees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    metadata.sort();
    assert_eq!(metadata, vec![".parked-0", ".parked-1"]);

    let again: Vec<WorkTree> = (4..=6)
        .map(|i| {
            mirror
                .add_worktree(&format!("job-{i}"), &fx.main_sha)
                .unwrap()
        })
        .collect();
    let reused = again
        .iter()
        .filter(|t| inodes.contains(&ino(t.path())))
        .count();
    assert_eq!(reused, 2, "two from the pool, one fresh");
    for tree in &again {
        assert_git_clean(tree);
    }
    assert_eq!(parked_count(&mirror), 0);

    // With the pool off, `remove` deletes.
    let off = fx
        .mirrors()
        .parked_trees(0)
        .fetch(KEY, &fx.url(), &creds(TOKEN), &[])
        .unwrap();
    for tree in again {
        drop(tree); // Drop deletes rather than parks
    }
    assert_eq!(parked_count(&mirror), 0);
    let tree = off.add_worktree("job-off", &fx.main_sha).unwrap();
    tree.remove().unwrap();
    assert_eq!(parked_count(&off), 0);
}

#[test]
fn tree_that_cannot_be_scrubbed_is_deleted_not_parked() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let deep = mirror.add_worktree("job-deep", &fx.main_sha).unwrap();
    let nested: PathBuf = std::iter::repeat_n("d", 300).collect();
    write(&deep, &nested.join("f").to_string_lossy(), "deep\n");
    let path = deep.path().to_path_buf();
    deep.remove().unwrap();
    assert!(!path.exists());
    assert_eq!(parked_count(&mirror), 0, "too deep to reuse");

    // An immutable file (needs CAP_LINUX_IMMUTABLE and a file system with flags).
    let job = mirror.add_worktree("job-immutable", &fx.main_sha).unwrap();
    let stuck = job.path().join("stuck.txt");
    std::fs::write(&stuck, "cannot delete me\n").unwrap();
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&stuck)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if chattr("+i") {
        let path = job.path().to_path_buf();
        assert!(job.remove().is_err(), "cannot be deleted either");
        assert_eq!(parked_count(&mirror), 0, "not parked");
        let next = mirror.add_worktree("job-other", &fx.main_sha).unwrap();
        assert_ne!(next.path(), path);
        assert_git_clean(&next);
        assert!(chattr("-i"));
        let again = mirror.add_worktree("job-immutable", &fx.main_sha).unwrap();
        assert!(
            !again.path().join("stuck.txt").exists(),
            "leftover replaced"
        );
    }
}

#[test]
fn tampered_git_pointer_does_not_redirect_git() {
    let fx = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    git(elsewhere.path(), &["init", "--quiet"]);
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-ptr", &fx.main_sha).unwrap();
    let root_ino = ino(job.path());
    let fake = format!("gitdir: {}\n", elsewhere.path().join(".git").display());
    std::fs::write(job.path().join(".git"), fake).unwrap();
    write(&job, "change.txt", "c\n");

    let info = job
        .commit_all("bot", "bot@example.com", "Change")
        .unwrap()
        .unwrap();

    let on_branch = git(
        fx.root(),
        &[
            "--git-dir",
            &mirror.path().to_string_lossy(),
            "rev-parse",
            "repobox-job/job-ptr",
        ],
    );
    assert_eq!(
        on_branch, info.sha,
        "committed in the mirror, not elsewhere"
    );
    job.remove().unwrap();
    let next = mirror.add_worktree("job-ptr-next", &fx.main_sha).unwrap();
    assert_eq!(ino(next.path()), root_ino, "reused");
    let dot_git = std::fs::read_to_string(next.path().join(".git")).unwrap();
    assert_eq!(
        dot_git.trim_end(),
        format!("gitdir: {}", next.git_dir().display())
    );
    assert_git_clean(&next);
}

#[test]
fn parked_tree_changed_while_parked_is_replaced_by_a_fresh_one() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-1", &fx.main_sha).unwrap();
    let old_ino = ino(job.path());
    job.remove().unwrap();
    // A process of the last job that outlived it writes into the parked tree.
    let slot = mirror.path().with_extension("parked").join("0");
    let original = std::fs::read_to_string(slot.join("src/lib.rs")).unwrap();
    std::fs::write(slot.join("src/lib.rs"), "pub fn evil() {}\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let next = mirror.add_worktree("job-2", &fx.main_sha).unwrap();

    assert_ne!(ino(next.path()), old_ino, "a fresh tree instead");
    assert_eq!(
        std::fs::read_to_string(next.path().join("src/lib.rs")).unwrap(),
        original
    );
    assert_git_clean(&next);
    assert_eq!(snapshot(next.path()), fresh_snapshot(&fx, &fx.main_sha));
    assert_eq!(parked_count(&mirror), 0);
    let metadata: Vec<String> = std::fs::read_dir(mirror.path().join("worktrees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(metadata, vec!["job-2"], "no stale worktree entries");
}

#[test]
fn concurrent_jobs_share_one_parked_tree_safely() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    mirror
        .add_worktree("job-0", &fx.main_sha)
        .unwrap()
        .remove()
        .unwrap();
    let trees: Vec<WorkTree> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|i| {
                let mirror = mirror.clone();
                let sha = fx.main_sha.clone();
                s.spawn(move || mirror.add_worktree(&format!("job-{i}"), &sha).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for tree in &trees {
        assert_git_clean(tree);
        assert!(tree.path().join("README.md").is_file());
    }
    assert_eq!(parked_count(&mirror), 0);
}

#[test]
fn reused_tree_moves_between_commits_of_any_shape() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);
    // Job X makes a commit that turns a directory into a file and adds an executable
    // and a symlink; its tree is parked at that commit.
    let x = mirror.add_worktree("job-x", &fx.main_sha).unwrap();
    let root_ino = ino(x.path());
    std::fs::remove_dir_all(x.path().join("docs")).unwrap();
    write(&x, "docs", "now a file\n");
    write(&x, "tool.sh", "#!/bin/sh\n");
    chmod(&x.path().join("tool.sh"), 0o755);
    std::os::unix::fs::symlink("README.md", x.path().join("latest")).unwrap();
    let sha_x = x
        .commit_all("bot", "bot@example.com", "Shapes")
        .unwrap()
        .unwrap()
        .sha;
    x.remove().unwrap();

    let y = mirror.add_worktree("job-y", &fx.main_sha).unwrap();
    assert_eq!(ino(y.path()), root_ino, "reused");
    assert_git_clean(&y);
    assert_eq!(snapshot(y.path()), fresh_snapshot(&fx, &fx.main_sha));
    y.remove().unwrap();

    let z = mirror.add_worktree("job-z", &sha_x).unwrap();
    assert_eq!(ino(z.path()), root_ino, "reused");
    assert_git_clean(&z);
    assert_eq!(snapshot(z.path()), fresh_snapshot(&fx, &sha_x));
    let tool = std::fs::metadata(z.path().join("tool.sh")).unwrap();
    assert_eq!(tool.mode() & 0o111, 0o111, "executable again");
}

#[test]
fn reused_tree_applies_gitattributes() {
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
    let newer = push_commit(
        fx.root(),
        REPO,
        "main",
        &[("run.bat", "echo newer\nexit\n")],
        "newer script",
    );
    let mirror = fx.fetch(&[]);
    let job = mirror.add_worktree("job-eol-1", &sha).unwrap();
    let root_ino = ino(job.path());
    write(&job, "run.bat", "echo changed\r\n");
    job.remove().unwrap();

    let next = mirror.add_worktree("job-eol-2", &newer).unwrap();

    assert_eq!(ino(next.path()), root_ino, "reused");
    let checked_out = std::fs::read(next.path().join("run.bat")).unwrap();
    assert_eq!(checked_out, b"echo newer\r\nexit\r\n");
    assert_git_clean(&next);
}

/// A job branch off main that adds, changes, deletes and adds a binary file, while main
/// moves on: returns (mirror, branch head, main's new head).
fn diverged_branch(fx: &Fixture) -> (Mirror, String, String) {
    let mirror = fx.fetch(&[]);
    let tree = mirror.add_worktree("job-diff", &fx.main_sha).unwrap();
    write(
        &tree,
        "README.md",
        "# Hello\n\nline two changed\nline three\n",
    );
    write(&tree, "src/new.rs", "pub fn new() {}\n");
    std::fs::remove_file(tree.path().join("obsolete.txt")).unwrap();
    std::fs::write(
        tree.path().join("logo.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\xff",
    )
    .unwrap();
    let head = tree
        .commit_all("repobox[bot]", "bot@repobox.dev", "Change things")
        .unwrap()
        .expect("a commit")
        .sha;
    let later = push_commit(
        fx.root(),
        REPO,
        "main",
        &[
            ("later.txt", "landed on main afterwards\n"),
            (
                "src/lib.rs",
                "pub fn hello() -> &'static str {\n    \"hello\"\n}\n",
            ),
        ],
        "Later work on main",
    );
    let mirror = fx.fetch(&[]);
    assert_eq!(mirror.remote_branch("main").unwrap(), Some(later.clone()));
    (mirror, head, later)
}

#[test]
fn diff_shows_the_branch_since_its_merge_base_only() {
    let fx = Fixture::new();
    let (mirror, head, later) = diverged_branch(&fx);

    let diff = mirror.diff(&later, &head, 1 << 20).unwrap();

    assert_eq!(
        diff.files,
        vec!["README.md", "logo.png", "obsolete.txt", "src/new.rs"]
    );
    assert!(!diff.truncated);
    assert_eq!(diff.files_in_patch, 4);
    let patch = &diff.patch;
    // Later main commits are not part of the change.
    assert!(!patch.contains("later.txt"), "{patch}");
    assert!(!patch.contains("src/lib.rs"), "{patch}");
    assert!(
        patch.contains("diff --git a/README.md b/README.md\n")
            && patch.contains("-line two\n+line two changed\n"),
        "{patch}"
    );
    assert!(
        patch.contains("diff --git a/src/new.rs b/src/new.rs\nnew file mode 100644\n")
            && patch.contains("+pub fn new() {}\n"),
        "{patch}"
    );
    assert!(
        patch.contains("deleted file mode 100644") && patch.contains("-to be deleted\n"),
        "{patch}"
    );
    assert!(
        patch.contains("Binary files /dev/null and b/logo.png differ\n"),
        "{patch}"
    );
    assert!(!patch.contains("IHDR"), "no binary bytes in the patch");
    // README: 1 line changed; new.rs: +1; obsolete.txt: -1.
    assert_eq!((diff.additions, diff.deletions), (2, 2), "{diff:?}");

    // Full ref names work as well as SHAs.
    let by_ref = mirror
        .diff("refs/remotes/origin/main", &head, 1 << 20)
        .unwrap();
    assert_eq!(by_ref, diff);
}

#[test]
fn diff_truncates_at_whole_file_sections() {
    let fx = Fixture::new();
    let (mirror, head, later) = diverged_branch(&fx);
    let full = mirror.diff(&later, &head, 1 << 20).unwrap();
    let first_len = full.patch.find("diff --git a/logo.png").unwrap();

    let cut = mirror.diff(&later, &head, first_len + 20).unwrap();

    assert!(cut.truncated);
    assert_eq!(cut.patch, full.patch[..first_len]);
    assert_eq!(cut.files_in_patch, 1);
    assert_eq!(cut.files, full.files, "every changed path is still listed");
    assert_eq!(
        (cut.additions, cut.deletions),
        (full.additions, full.deletions)
    );

    // Smaller than the first section: as many of its whole lines as fit.
    let tiny = mirror.diff(&later, &head, 40).unwrap();
    assert!(tiny.truncated);
    assert!(tiny.patch.len() <= 40, "{:?}", tiny.patch);
    assert_eq!(tiny.patch, "diff --git a/README.md b/README.md\n");
    assert_eq!(tiny.files.len(), 4);
}

#[test]
fn diff_of_an_unknown_commit_fails_clearly() {
    let fx = Fixture::new();
    let mirror = fx.fetch(&[]);

    let err = mirror
        .diff(
            &fx.main_sha,
            "0123456789012345678901234567890123456789",
            1000,
        )
        .unwrap_err();

    assert!(matches!(err, GitError::Other(_)), "{err:?}");
    assert!(err.to_string().contains("0123456789"), "{err}");
}
