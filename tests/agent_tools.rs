//! Black-box tests of the Claude agent's client tools: the text editor (confined to the
//! work tree by the kernel) and the bash session (a persistent shell in a real bwrap
//! sandbox). Every escape a prompt-injected model would try is attempted and must fail
//! with the file outside untouched and unread.

use repobox::agent::claude::tools::ToolOutput;
use repobox::agent::claude::tools::bash::BashSession;
use repobox::agent::claude::tools::edit::EditTool;
use repobox::sandbox::{Limits, SandboxKind, SandboxSpec};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should take well under a second.
const BOUND: Duration = Duration::from_secs(20);
/// The secret set only in the re-executed test process (see `bash_env_probe`).
const FAKE_API_KEY: &str = "sk-ant-test-0123456789abcdefSECRET";
const OUTSIDE_TEXT: &str = "TOP-SECRET-OUTSIDE\n";

/// A temp dir holding a work tree, a scratch dir, and a file and a dir beside them.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("wt")).expect("work tree");
        std::fs::create_dir(root.path().join("scratch")).expect("scratch");
        std::fs::create_dir(root.path().join("outside_dir")).expect("outside dir");
        std::fs::write(root.path().join("outside.txt"), OUTSIDE_TEXT).expect("outside");
        std::fs::write(root.path().join("outside_dir/secret.txt"), OUTSIDE_TEXT).expect("secret");
        Dirs { root }
    }
    fn wt(&self) -> PathBuf {
        self.root.path().join("wt")
    }
    fn scratch(&self) -> PathBuf {
        self.root.path().join("scratch")
    }
    fn outside(&self) -> PathBuf {
        self.root.path().join("outside.txt")
    }
    fn outside_dir(&self) -> PathBuf {
        self.root.path().join("outside_dir")
    }
    /// Writes `text` to `rel` in the work tree, creating parents.
    fn write(&self, rel: &str, text: &str) {
        let path = self.wt().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("parents");
        std::fs::write(path, text).expect("write");
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.wt().join(rel)).expect("read")
    }
    fn abs(&self, rel: &str) -> String {
        self.wt().join(rel).to_string_lossy().into_owned()
    }
    fn symlink(&self, target: impl AsRef<Path>, rel: &str) {
        std::os::unix::fs::symlink(target, self.wt().join(rel)).expect("symlink");
    }
    fn edit(&self) -> EditTool {
        EditTool::new(&self.wt(), 40_000).expect("edit tool")
    }
    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            kind: SandboxKind::Bwrap,
            work_tree: self.wt(),
            read_only: Vec::new(),
            writable: vec![self.scratch()],
            proxy: None,
            env: Vec::new(),
            limits: Limits::default(),
        }
    }
    /// Asserts that nothing outside the work tree changed.
    fn assert_outside_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.outside()).expect("outside"),
            OUTSIDE_TEXT
        );
        let names: Vec<_> = std::fs::read_dir(self.outside_dir())
            .expect("outside dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret.txt"], "something was created outside");
        assert_eq!(
            std::fs::read_to_string(self.outside_dir().join("secret.txt")).expect("secret"),
            OUTSIDE_TEXT
        );
    }
}

#[track_caller]
fn ok(out: ToolOutput) -> String {
    assert!(
        !out.is_error,
        "expected success, got an error: {}",
        out.content
    );
    out.content
}

#[track_caller]
fn err(out: ToolOutput) -> String {
    assert!(out.is_error, "expected an error, got: {}", out.content);
    out.content
}

/// An escape attempt: refused, naming the work tree, leaking nothing from outside.
#[track_caller]
fn assert_escape_refused(out: ToolOutput) {
    let text = err(out);
    assert!(
        text.contains("outside the work tree"),
        "refusal does not say why: {text}"
    );
    assert!(
        !text.contains("TOP-SECRET") && !text.contains("root:"),
        "leak: {text}"
    );
}

// ---- edit: view --------------------------------------------------------------------

#[test]
fn edit_tool_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<EditTool>();
}

#[test]
fn view_shows_numbered_lines_whole_or_in_a_range() {
    let dirs = Dirs::new();
    dirs.write("src/lib.rs", "alpha\nbeta\ngamma\ndelta\n");
    let tool = dirs.edit();
    let whole = ok(tool.run(&json!({"command": "view", "path": dirs.abs("src/lib.rs")})));
    assert!(
        whole.contains("     1\talpha\n     2\tbeta\n     3\tgamma\n     4\tdelta\n"),
        "{whole}"
    );
    // Relative paths are relative to the work tree.
    let range =
        ok(tool.run(&json!({"command": "view", "path": "src/lib.rs", "view_range": [2, 3]})));
    assert!(range.contains("     2\tbeta\n     3\tgamma\n"), "{range}");
    assert!(
        !range.contains("alpha") && !range.contains("delta"),
        "{range}"
    );
    let to_end =
        ok(tool.run(&json!({"command": "view", "path": "src/lib.rs", "view_range": [3, -1]})));
    assert!(
        to_end.contains("     3\tgamma\n     4\tdelta\n"),
        "{to_end}"
    );
    assert!(!to_end.contains("beta"), "{to_end}");
    // `..` that stays inside the tree is fine.
    dirs.write("top.txt", "top\n");
    let up = ok(tool.run(&json!({"command": "view", "path": "src/../top.txt"})));
    assert!(up.contains("     1\ttop"), "{up}");
}

#[test]
fn view_range_out_of_bounds_is_an_error() {
    let dirs = Dirs::new();
    dirs.write("a.txt", "1\n2\n3\n");
    let tool = dirs.edit();
    for range in [
        json!([0, 2]),
        json!([4, 4]),
        json!([3, 2]),
        json!([1, 4]),
        json!([2]),
        json!("1-2"),
    ] {
        let text = err(tool.run(&json!({"command": "view", "path": "a.txt", "view_range": range})));
        assert!(text.contains("view_range"), "{range}: {text}");
    }
    let text = err(tool.run(&json!({"command": "view", "path": "missing.txt"})));
    assert!(text.contains("does not exist"), "{text}");
}

#[test]
fn long_views_are_cut_with_a_hint() {
    let dirs = Dirs::new();
    let text: String = (1..=5000).map(|i| format!("line number {i}\n")).collect();
    dirs.write("long.txt", &text);
    let tool = EditTool::new(&dirs.wt(), 2000).expect("tool");
    let out = ok(tool.run(&json!({"command": "view", "path": "long.txt"})));
    assert!(out.chars().count() <= 2000, "{} chars", out.chars().count());
    assert!(out.contains("view_range"), "{out}");
    assert!(out.contains("line number 1\n"), "{out}");
}

#[test]
fn view_of_a_directory_lists_two_levels_without_hidden_or_bulky_entries() {
    let dirs = Dirs::new();
    dirs.write("README.md", "r\n");
    dirs.write("src/lib.rs", "l\n");
    dirs.write("src/deep/deeper/x.rs", "x\n");
    dirs.write(".hidden/file", "h\n");
    dirs.write(".env", "SECRET=1\n");
    dirs.write("node_modules/pkg/index.js", "n\n");
    dirs.write("target/debug/out", "t\n");
    dirs.write("src/.cache", "c\n");
    std::fs::write(dirs.wt().join(".git"), "gitdir: /somewhere\n").expect(".git");
    dirs.symlink(dirs.outside_dir(), "outlink");
    let tool = dirs.edit();
    let out = ok(tool.run(&json!({"command": "view", "path": dirs.wt()})));
    let wt = dirs.wt().to_string_lossy().into_owned();
    for shown in ["README.md", "src/", "src/lib.rs", "src/deep/", "outlink"] {
        assert!(
            out.contains(&format!("{wt}/{shown}\n")),
            "{shown} missing: {out}"
        );
    }
    let entries: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(entries.len(), 5, "{out}");
    for hidden in [
        ".hidden",
        ".env",
        "node_modules",
        "target",
        ".git",
        ".cache",
        "deeper",
        "secret.txt",
    ] {
        assert!(
            !entries.iter().any(|e| e.contains(hidden)),
            "{hidden} listed: {out}"
        );
    }
    // A subdirectory, by relative path.
    let sub = ok(tool.run(&json!({"command": "view", "path": "src"})));
    assert!(sub.contains(&format!("{wt}/src/deep/deeper/\n")), "{sub}");
}

#[test]
fn directory_listings_are_capped() {
    let dirs = Dirs::new();
    for i in 0..1100 {
        dirs.write(&format!("many/f{i:04}"), "");
    }
    let out = ok(dirs.edit().run(&json!({"command": "view", "path": "many"})));
    assert!(out.contains("f0999"), "{out}");
    assert!(!out.contains("f1000"), "not capped");
    assert!(out.contains("1000 entries"), "no note: {out}");
}

// ---- edit: create, str_replace, insert ----------------------------------------------

#[test]
fn create_makes_parents_and_new_files_are_0644() {
    let dirs = Dirs::new();
    let tool = dirs.edit();
    let out =
        ok(tool
            .run(&json!({"command": "create", "path": "docs/guide/x.md", "file_text": "# X\n"})));
    assert!(out.contains("docs/guide/x.md"), "{out}");
    assert_eq!(dirs.read("docs/guide/x.md"), "# X\n");
    let mode = std::fs::metadata(dirs.wt().join("docs/guide/x.md"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    // Absolute, and empty text.
    ok(tool.run(&json!({"command": "create", "path": dirs.abs("empty.txt"), "file_text": ""})));
    assert_eq!(dirs.read("empty.txt"), "");
}

#[test]
fn create_overwrites_a_file_keeping_its_mode() {
    let dirs = Dirs::new();
    dirs.write("run.sh", "#!/bin/sh\necho a long old text\n");
    let path = dirs.wt().join("run.sh");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tool = dirs.edit();
    ok(tool.run(&json!({"command": "create", "path": "run.sh", "file_text": "#!/bin/sh\n"})));
    assert_eq!(dirs.read("run.sh"), "#!/bin/sh\n");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    std::fs::create_dir(dirs.wt().join("adir")).expect("dir");
    let text = err(tool.run(&json!({"command": "create", "path": "adir", "file_text": "x"})));
    assert!(text.contains("directory"), "{text}");
}

#[test]
fn str_replace_needs_exactly_one_match() {
    let dirs = Dirs::new();
    let original = "fn a() {}\nfn b() {}\nfn a() {}\nlet x = 1;\n";
    dirs.write("lib.rs", original);
    let tool = dirs.edit();
    let none = err(tool.run(
        &json!({"command": "str_replace", "path": "lib.rs", "old_str": "fn c()", "new_str": "x"}),
    ));
    assert!(none.contains("did not appear verbatim"), "{none}");
    assert_eq!(dirs.read("lib.rs"), original);
    let two = err(tool.run(&json!({"command": "str_replace", "path": "lib.rs", "old_str": "fn a() {}", "new_str": "x"})));
    assert!(
        two.contains("2 times") && two.contains("lines 1, 3"),
        "{two}"
    );
    assert_eq!(dirs.read("lib.rs"), original);
    let empty = err(tool.run(&json!({"command": "str_replace", "path": "lib.rs", "old_str": ""})));
    assert!(empty.contains("old_str"), "{empty}");

    let one = ok(tool.run(&json!({"command": "str_replace", "path": "lib.rs", "old_str": "let x = 1;", "new_str": "let x = 2;\nlet y = 3;"})));
    assert_eq!(
        dirs.read("lib.rs"),
        "fn a() {}\nfn b() {}\nfn a() {}\nlet x = 2;\nlet y = 3;\n"
    );
    assert!(
        one.contains("     4\tlet x = 2;\n     5\tlet y = 3;"),
        "{one}"
    );
    // new_str defaults to "": a deletion.
    ok(tool.run(&json!({"command": "str_replace", "path": "lib.rs", "old_str": "fn b() {}\n"})));
    assert_eq!(
        dirs.read("lib.rs"),
        "fn a() {}\nfn a() {}\nlet x = 2;\nlet y = 3;\n"
    );
}

#[test]
fn insert_at_start_end_and_beyond() {
    let dirs = Dirs::new();
    dirs.write("a.txt", "one\ntwo\n");
    let tool = dirs.edit();
    ok(tool.run(
        &json!({"command": "insert", "path": "a.txt", "insert_line": 0, "insert_text": "zero"}),
    ));
    assert_eq!(dirs.read("a.txt"), "zero\none\ntwo\n");
    // The older parameter name.
    let out = ok(tool.run(&json!({"command": "insert", "path": "a.txt", "insert_line": 3, "new_str": "three\nfour\n"})));
    assert_eq!(dirs.read("a.txt"), "zero\none\ntwo\nthree\nfour\n");
    assert!(out.contains("     4\tthree\n     5\tfour"), "{out}");
    ok(tool.run(
        &json!({"command": "insert", "path": "a.txt", "insert_line": 1, "insert_text": "half\n"}),
    ));
    assert_eq!(dirs.read("a.txt"), "zero\nhalf\none\ntwo\nthree\nfour\n");
    let beyond = err(tool
        .run(&json!({"command": "insert", "path": "a.txt", "insert_line": 7, "insert_text": "x"})));
    assert!(
        beyond.contains("beyond the end") && beyond.contains("6 lines"),
        "{beyond}"
    );
    assert_eq!(dirs.read("a.txt"), "zero\nhalf\none\ntwo\nthree\nfour\n");
    let missing = err(tool.run(&json!({"command": "insert", "path": "a.txt", "insert_line": 1})));
    assert!(missing.contains("insert_text"), "{missing}");

    // A last line without a newline stays without one.
    dirs.write("b.txt", "x");
    ok(tool
        .run(&json!({"command": "insert", "path": "b.txt", "insert_line": 1, "insert_text": "y"})));
    assert_eq!(dirs.read("b.txt"), "x\ny");
}

#[test]
fn unknown_commands_name_the_valid_ones() {
    let dirs = Dirs::new();
    dirs.write("a.txt", "a\n");
    let tool = dirs.edit();
    for command in ["undo_edit", "delete"] {
        let text = err(tool.run(&json!({"command": command, "path": "a.txt"})));
        assert!(
            text.contains("view")
                && text.contains("str_replace")
                && text.contains("insert")
                && text.contains("create"),
            "{text}"
        );
    }
    let text = err(tool.run(&json!({"path": "a.txt"})));
    assert!(text.contains("command"), "{text}");
}

// ---- edit: confinement -------------------------------------------------------------

#[test]
fn paths_outside_the_work_tree_are_refused() {
    let dirs = Dirs::new();
    std::fs::create_dir(dirs.wt().join("src")).expect("src");
    let tool = dirs.edit();
    let outside = dirs.outside().to_string_lossy().into_owned();
    for path in ["../outside.txt", "src/../../outside.txt", outside.as_str()] {
        assert_escape_refused(tool.run(&json!({"command": "view", "path": path})));
        assert_escape_refused(tool.run(
            &json!({"command": "str_replace", "path": path, "old_str": "TOP", "new_str": "x"}),
        ));
        assert_escape_refused(tool.run(
            &json!({"command": "insert", "path": path, "insert_line": 0, "insert_text": "x"}),
        ));
        assert_escape_refused(
            tool.run(&json!({"command": "create", "path": path, "file_text": "pwned"})),
        );
    }
    for path in ["/etc/shadow", "/etc/passwd", "/", "../outside_dir"] {
        assert_escape_refused(tool.run(&json!({"command": "view", "path": path})));
    }
    let text = err(tool.run(&json!({"command": "view", "path": "/etc/shadow"})));
    assert!(text.contains("`/etc/shadow`"), "{text}");
    assert!(text.contains(&*dirs.wt().to_string_lossy()), "{text}");
    assert_escape_refused(
        tool.run(&json!({"command": "create", "path": "../outside_dir/new.txt", "file_text": "x"})),
    );
    dirs.assert_outside_untouched();
}

#[test]
fn symlinks_leading_out_are_refused() {
    let dirs = Dirs::new();
    dirs.symlink("/etc/passwd", "passwd");
    dirs.symlink(dirs.outside(), "abs_out");
    dirs.symlink("../outside.txt", "rel_out");
    dirs.symlink(dirs.outside_dir(), "outdir");
    dirs.symlink("../outside_dir", "rel_outdir");
    let tool = dirs.edit();
    for path in [
        "passwd",
        "abs_out",
        "rel_out",
        "outdir/secret.txt",
        "rel_outdir/secret.txt",
        "outdir",
    ] {
        assert_escape_refused(tool.run(&json!({"command": "view", "path": path})));
    }
    for path in ["abs_out", "rel_out", "outdir/secret.txt"] {
        assert_escape_refused(tool.run(
            &json!({"command": "str_replace", "path": path, "old_str": "TOP", "new_str": "x"}),
        ));
        assert_escape_refused(tool.run(
            &json!({"command": "insert", "path": path, "insert_line": 0, "insert_text": "x"}),
        ));
        assert_escape_refused(
            tool.run(&json!({"command": "create", "path": path, "file_text": "pwned"})),
        );
    }
    // Creating through a symlinked parent, with and without missing directories.
    for path in [
        "outdir/new.txt",
        "outdir/sub/new.txt",
        "rel_outdir/a/b/new.txt",
    ] {
        assert_escape_refused(
            tool.run(&json!({"command": "create", "path": path, "file_text": "pwned"})),
        );
    }
    dirs.assert_outside_untouched();
    let passwd = std::fs::symlink_metadata(dirs.wt().join("passwd")).expect("link");
    assert!(passwd.file_type().is_symlink(), "the link was replaced");
}

#[test]
fn symlinks_within_the_work_tree_are_followed() {
    let dirs = Dirs::new();
    dirs.write("real/file.txt", "hello\n");
    dirs.symlink("real/file.txt", "alias.txt");
    dirs.symlink("real", "alias_dir");
    dirs.symlink(dirs.wt().join("real/file.txt"), "abs_alias.txt");
    let tool = dirs.edit();
    assert!(ok(tool.run(&json!({"command": "view", "path": "alias.txt"}))).contains("hello"));
    assert!(
        ok(tool.run(&json!({"command": "view", "path": "alias_dir/file.txt"}))).contains("hello")
    );
    ok(tool.run(&json!({"command": "str_replace", "path": "alias.txt", "old_str": "hello", "new_str": "bye"})));
    assert_eq!(dirs.read("real/file.txt"), "bye\n");
    assert!(
        std::fs::symlink_metadata(dirs.wt().join("alias.txt"))
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    ok(tool.run(&json!({"command": "create", "path": "alias_dir/new.txt", "file_text": "n\n"})));
    assert_eq!(dirs.read("real/new.txt"), "n\n");
    // An absolute symlink is refused even when it points inside: the kernel cannot
    // tell (RESOLVE_BENEATH), and the model has the real path anyway.
    assert!(
        err(tool.run(&json!({"command": "view", "path": "abs_alias.txt"})))
            .contains("outside the work tree")
    );
}

#[test]
fn fifos_sockets_and_binary_files_are_refused_promptly() {
    let dirs = Dirs::new();
    let status = std::process::Command::new("mkfifo")
        .arg(dirs.wt().join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let _socket = std::os::unix::net::UnixListener::bind(dirs.wt().join("sock")).expect("socket");
    std::fs::write(dirs.wt().join("nul.bin"), b"abc\0def\n").expect("bin");
    std::fs::write(dirs.wt().join("latin1.txt"), b"caf\xe9\n").expect("latin1");
    let big = std::fs::File::create(dirs.wt().join("big.txt")).expect("big");
    big.set_len(11 << 20).expect("sparse");
    let tool = dirs.edit();

    // On a thread, so that a hang fails the test instead of blocking it.
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = tool.clone();
    std::thread::spawn(move || {
        let calls = [
            json!({"command": "view", "path": "fifo"}),
            json!({"command": "str_replace", "path": "fifo", "old_str": "a", "new_str": "b"}),
            json!({"command": "insert", "path": "fifo", "insert_line": 0, "insert_text": "x"}),
            json!({"command": "create", "path": "fifo", "file_text": "x"}),
            json!({"command": "view", "path": "sock"}),
            json!({"command": "create", "path": "sock", "file_text": "x"}),
        ];
        for call in calls {
            let _ = tx.send((call.clone(), worker.run(&call)));
        }
    });
    for _ in 0..6 {
        let (call, out) = rx
            .recv_timeout(BOUND)
            .expect("a FIFO or socket hung the tool");
        let text = err(out);
        assert!(
            text.contains("FIFO") || text.contains("socket") || text.contains("not a regular file"),
            "{call}: {text}"
        );
    }
    for path in ["nul.bin", "latin1.txt"] {
        let text = err(tool.run(&json!({"command": "view", "path": path})));
        assert!(text.contains("binary"), "{text}");
        let text = err(tool
            .run(&json!({"command": "str_replace", "path": path, "old_str": "a", "new_str": "b"})));
        assert!(text.contains("binary"), "{text}");
    }
    assert_eq!(
        std::fs::read(dirs.wt().join("nul.bin")).expect("bin"),
        b"abc\0def\n"
    );
    let text = err(tool.run(&json!({"command": "view", "path": "big.txt"})));
    assert!(text.contains("larger than 10.0 MiB"), "{text}");
}

#[test]
fn git_files_are_never_written() {
    let dirs = Dirs::new();
    // A linked worktree's `.git` is a file; a nested repository has a directory.
    std::fs::write(dirs.wt().join(".git"), "gitdir: /x/y\n").expect(".git");
    dirs.write("nested/.git/config", "[core]\n");
    dirs.write("nested/.git/hooks/README", "hooks\n");
    dirs.symlink("nested/.git/hooks", "hooks_link");
    dirs.symlink("nested/.git/config", "config_link");
    let tool = dirs.edit();
    let refused = |call: Value| {
        let text = err(tool.run(&call));
        assert!(text.contains(".git"), "{call}: {text}");
    };
    refused(json!({"command": "create", "path": ".git", "file_text": "gitdir: /etc\n"}));
    refused(
        json!({"command": "str_replace", "path": ".git", "old_str": "/x/y", "new_str": "/etc"}),
    );
    refused(
        json!({"command": "insert", "path": dirs.abs(".git"), "insert_line": 0, "insert_text": "x"}),
    );
    refused(
        json!({"command": "create", "path": "nested/.git/hooks/pre-commit", "file_text": "#!/bin/sh\n"}),
    );
    refused(
        json!({"command": "create", "path": ".git/hooks/pre-commit", "file_text": "#!/bin/sh\n"}),
    );
    refused(
        json!({"command": "str_replace", "path": "nested/.git/config", "old_str": "[core]", "new_str": "[x]"}),
    );
    // Through symlinks the path as given cannot show.
    refused(
        json!({"command": "create", "path": "hooks_link/pre-commit", "file_text": "#!/bin/sh\n"}),
    );
    refused(
        json!({"command": "str_replace", "path": "config_link", "old_str": "[core]", "new_str": "[x]"}),
    );
    refused(json!({"command": "create", "path": "config_link", "file_text": "x"}));
    dirs.symlink("nested/.git", "gitdir_link");
    refused(json!({"command": "create", "path": "gitdir_link/newdir/x", "file_text": "x"}));
    assert!(
        !dirs.wt().join("nested/.git/newdir").exists(),
        "a directory was made in .git"
    );
    assert_eq!(dirs.read(".git"), "gitdir: /x/y\n");
    assert_eq!(dirs.read("nested/.git/config"), "[core]\n");
    assert!(!dirs.wt().join("nested/.git/hooks/pre-commit").exists());
    // Reading is allowed.
    assert!(ok(tool.run(&json!({"command": "view", "path": ".git"}))).contains("gitdir"));
}

// ---- bash ----------------------------------------------------------------------------

/// One bash call with a fresh log; the output and the log lines it produced.
async fn call(session: &mut BashSession, command: &str) -> (ToolOutput, Vec<String>) {
    let (log, mut rx) = repobox::agent::LogSink::channel(u32::MAX);
    let cancel = CancellationToken::new();
    let out = tokio::time::timeout(
        BOUND * 3,
        session.run(&json!({"command": command}), &log, &cancel),
    )
    .await
    .unwrap_or_else(|_| panic!("`{command}` did not return"));
    drop(log);
    (out, drain(&mut rx))
}

fn drain(rx: &mut Receiver<String>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

async fn run_ok(session: &mut BashSession, command: &str) -> String {
    let (out, _) = call(session, command).await;
    ok(out)
}

/// A command that exits non-zero: a tool error, with the status in the text.
async fn run_failed(session: &mut BashSession, command: &str) -> String {
    let (out, _) = call(session, command).await;
    err(out)
}

fn session(dirs: &Dirs) -> BashSession {
    BashSession::new(dirs.spec(), Duration::from_secs(120))
}

#[tokio::test]
async fn bash_state_persists_until_restart_and_output_reaches_the_log() {
    let dirs = Dirs::new();
    std::fs::create_dir(dirs.wt().join("sub")).expect("sub");
    let mut bash = session(&dirs);
    let (out, log) = call(
        &mut bash,
        "cd sub && export X=1 && Y=2 && f() { echo fn-$1; }; echo set",
    )
    .await;
    assert_eq!(ok(out), "set\n");
    assert_eq!(log, ["  │ set"]);
    let (out, log) = call(&mut bash, "pwd; echo \"$X $Y\"; f a; printf 'no newline'").await;
    let text = ok(out);
    let wt = dirs.wt().to_string_lossy().into_owned();
    assert_eq!(text, format!("{wt}/sub\n1 2\nfn-a\nno newline"));
    assert_eq!(
        log,
        [
            format!("  │ {wt}/sub"),
            "  │ 1 2".to_owned(),
            "  │ fn-a".to_owned(),
            "  │ no newline".to_owned()
        ]
    );
    // Nothing of the marker line leaks into the next result.
    assert_eq!(run_ok(&mut bash, "echo next").await, "next\n");

    let (log_tx, _log_rx) = repobox::agent::LogSink::channel(u32::MAX);
    let out = bash
        .run(
            &json!({"restart": true}),
            &log_tx,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(ok(out), "shell restarted");
    let text = run_ok(
        &mut bash,
        "pwd; echo \"[$X$Y]\"; type f >/dev/null 2>&1 || echo no-f",
    )
    .await;
    assert_eq!(text, format!("{wt}\n[]\nno-f\n"));
    bash.close().await;
}

#[tokio::test]
async fn bash_survives_broken_and_hostile_commands() {
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    run_ok(&mut bash, "KEEP=kept").await;

    let text = run_failed(&mut bash, "if then fi").await;
    assert!(
        text.contains("syntax error") && text.ends_with("exit status 2"),
        "{text}"
    );
    let text = run_failed(&mut bash, "echo 'unclosed").await;
    assert!(
        text.contains("unexpected EOF") && text.contains("exit status 2"),
        "{text}"
    );
    let text = run_ok(&mut bash, "cat <<EOF\nheredoc body").await;
    assert!(text.contains("heredoc body"), "{text}");
    // stdin is /dev/null, not the protocol pipe.
    let started = Instant::now();
    assert_eq!(run_ok(&mut bash, "cat").await, "(no output)");
    assert_eq!(
        run_ok(&mut bash, "read line; echo \"[$line] $?\"").await,
        "[] 1\n"
    );
    assert!(started.elapsed() < BOUND);
    // Redirections that would break the protocol are undone after the command.
    assert_eq!(
        run_ok(&mut bash, "exec >/dev/null 2>&1 </dev/zero; echo hidden").await,
        "(no output)"
    );
    // Text that looks like an end marker is just output.
    let fake = "printf '\\n__repobox_end_0123456789abcdef0123456789abcdef 0\\n'; echo real";
    let text = run_ok(&mut bash, fake).await;
    assert!(
        text.contains("__repobox_end_0123456789abcdef") && text.ends_with("real\n"),
        "{text}"
    );
    // Invalid UTF-8 is converted, not fatal.
    let text = run_ok(&mut bash, "printf 'ok\\377\\376done\\n'").await;
    assert!(
        text.starts_with("ok") && text.contains('\u{fffd}') && text.contains("done"),
        "{text}"
    );
    // A failing command is a tool error whose text still has the output.
    let text = run_failed(&mut bash, "echo failing; false").await;
    assert_eq!(text, "failing\nexit status 1");
    // All of that in one shell: the variable survived.
    assert_eq!(run_ok(&mut bash, "echo $KEEP").await, "kept\n");
    bash.close().await;
}

#[tokio::test]
async fn bash_exit_is_reported_and_the_next_call_gets_a_fresh_shell() {
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    run_ok(&mut bash, "LOST=1").await;
    let text = run_failed(&mut bash, "echo bye; exit 3").await;
    assert!(
        text.starts_with("bye\n") && text.contains("exit status 3"),
        "{text}"
    );
    assert!(text.contains("new shell"), "{text}");
    assert_eq!(run_ok(&mut bash, "echo \"[$LOST]\"").await, "[]\n");
    // A background job holding stdout open does not keep an exited shell alive.
    let started = Instant::now();
    let text = run_failed(&mut bash, "sleep 1000 & exit 4").await;
    assert!(text.contains("exit status 4"), "{text}");
    assert!(started.elapsed() < BOUND);
    assert_eq!(run_ok(&mut bash, "echo alive").await, "alive\n");
    bash.close().await;
}

#[tokio::test]
async fn bash_background_jobs_do_not_block_a_call() {
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    let started = Instant::now();
    assert_eq!(run_ok(&mut bash, "sleep 1000 &").await, "(no output)");
    assert_eq!(
        run_ok(&mut bash, "sleep 1000 > /dev/null & echo after").await,
        "after\n"
    );
    assert!(started.elapsed() < BOUND);
    bash.close().await;
}

#[tokio::test]
async fn bash_timeout_kills_the_command_and_restarts_the_shell() {
    let dirs = Dirs::new();
    let mut bash = BashSession::new(dirs.spec(), Duration::from_secs(2));
    run_ok(&mut bash, "LOST=1").await;
    let started = Instant::now();
    let (out, log) = call(&mut bash, "echo before; sleep 1000").await;
    let text = err(out);
    assert!(
        text.starts_with("before\n") && text.contains("timed out after 2s"),
        "{text}"
    );
    assert!(text.contains("restarted"), "{text}");
    assert_eq!(log, ["  │ before"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run_ok(&mut bash, "echo \"[$LOST]\"").await, "[]\n");
    bash.close().await;
}

#[tokio::test]
async fn bash_huge_output_keeps_head_and_tail() {
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    let (out, log) = call(
        &mut bash,
        "echo START; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo END",
    )
    .await;
    let text = ok(out);
    assert!(text.starts_with("START\nxxx"), "{}", &text[..50]);
    assert!(text.ends_with("xxx\nEND\n"), "{}", &text[text.len() - 50..]);
    assert!(
        text.chars().count() <= 30_100,
        "{} chars",
        text.chars().count()
    );
    let cut = 1_000_011 - 30_000;
    assert!(
        text.contains(&format!("[… {cut} characters cut …]")),
        "no cut note"
    );
    // The log got every line, the long one capped.
    assert_eq!(
        log.len(),
        3,
        "{:?}",
        log.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert!(
        log[1].len() < 4100 && log[1].contains("more bytes cut"),
        "{}",
        log[1].len()
    );
    bash.close().await;
}

#[tokio::test]
async fn bash_cancel_stops_a_running_command_within_a_second() {
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    let (log, mut rx) = repobox::agent::LogSink::channel(u32::MAX);
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        async move {
            let out = bash
                .run(
                    &json!({"command": "echo started; sleep 1000"}),
                    &log,
                    &cancel,
                )
                .await;
            (out, Instant::now(), bash)
        }
    };
    let task = tokio::spawn(run);
    let first = tokio::time::timeout(BOUND, rx.recv())
        .await
        .expect("output in time");
    assert_eq!(first.as_deref(), Some("  │ started"));
    let cancelled_at = Instant::now();
    cancel.cancel();
    let (out, returned_at, mut bash) = tokio::time::timeout(BOUND, task)
        .await
        .expect("returned")
        .expect("no panic");
    assert_eq!(err(out), "stopped");
    let took = returned_at - cancelled_at;
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    // A later call (with a live token) gets a new shell.
    assert_eq!(run_ok(&mut bash, "echo again").await, "again\n");
    bash.close().await;
}

#[tokio::test]
async fn bash_runs_confined_in_the_sandbox() {
    let dirs = Dirs::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let mut bash = session(&dirs);

    let text = run_failed(
        &mut bash,
        &format!("echo hello > /dev/tcp/127.0.0.1/{port}"),
    )
    .await;
    assert!(
        text.contains("exit status 1"),
        "connected without network: {text}"
    );
    assert!(listener.accept().is_err(), "a connection reached the host");

    let text = run_failed(&mut bash, "cat /etc/shadow").await;
    assert!(
        text.contains("exit status") && !text.contains("root:"),
        "{text}"
    );
    let outside = dirs.outside().to_string_lossy().into_owned();
    let text = run_failed(&mut bash, &format!("cat {outside}")).await;
    assert!(
        text.contains("exit status") && !text.contains("TOP-SECRET"),
        "{text}"
    );

    let new_outside = dirs.root.path().join("made-outside.txt");
    let script = format!(
        "echo x > {0}; echo x > {1}; touch /usr/pwned; touch /pwned; echo ok > in-tree.txt; echo ok > {2}/in-scratch.txt",
        new_outside.display(),
        outside,
        dirs.scratch().display()
    );
    let text = run_ok(&mut bash, &script).await;
    assert!(
        text.contains("/usr/pwned") && text.contains("/pwned"),
        "{text}"
    );
    assert!(!new_outside.exists(), "wrote beside the work tree");
    assert!(!Path::new("/usr/pwned").exists() && !Path::new("/pwned").exists());
    dirs.assert_outside_untouched();
    assert_eq!(dirs.read("in-tree.txt"), "ok\n");
    assert_eq!(
        std::fs::read_to_string(dirs.scratch().join("in-scratch.txt")).expect("scratch"),
        "ok\n"
    );
    bash.close().await;
}

/// Re-runs this test binary with an API key in its environment (setting it here would
/// race with the other tests' threads) and checks that the sandbox never saw it.
#[tokio::test]
async fn bash_environment_holds_no_runner_secret() {
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::time::timeout(
        BOUND * 3,
        tokio::process::Command::new(&exe)
            .args([
                "bash_env_probe",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("REPOBOX_ANTHROPIC_API_KEY", FAKE_API_KEY)
            .output(),
    )
    .await
    .expect("probe finished")
    .expect("probe started");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let between = |start: &str, end: &str| -> String {
        let from = text
            .find(start)
            .unwrap_or_else(|| panic!("no {start} in {text}"))
            + start.len();
        let to = text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end} in {text}"))
            + from;
        text[from..to].to_owned()
    };
    let env = between("==env-begin==", "==env-end==");
    let environs = between("==environ-begin==", "==environ-end==");
    assert!(
        env.contains("PATH=") && env.contains("HOME="),
        "env not shown: {env}"
    );
    // bwrap, bash, the probing cat: every process's environment was read.
    assert!(
        environs.matches("TERM=dumb").count() >= 2,
        "environs not read: {environs}"
    );
    for shown in [&env, &environs] {
        assert!(
            !shown.contains("sk-ant-test") && !shown.contains("REPOBOX_ANTHROPIC"),
            "leak: {shown}"
        );
    }
}

/// Helper for the test above; runs only in its child process, where the key is set.
#[tokio::test]
#[ignore = "run by bash_environment_holds_no_runner_secret"]
async fn bash_env_probe() {
    assert_eq!(
        std::env::var("REPOBOX_ANTHROPIC_API_KEY").as_deref(),
        Ok(FAKE_API_KEY)
    );
    let dirs = Dirs::new();
    let mut bash = session(&dirs);
    let env = run_ok(&mut bash, "env").await;
    let environs = run_ok(
        &mut bash,
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; echo; done",
    )
    .await;
    println!("==env-begin=={env}==env-end==");
    println!("==environ-begin=={environs}==environ-end==");
    bash.close().await;
}

#[tokio::test]
async fn bash_reports_a_sandbox_that_cannot_start() {
    let dirs = Dirs::new();
    let mut spec = dirs.spec();
    // A bind source that does not exist: bwrap refuses to start.
    spec.read_only.push(dirs.root.path().join("missing"));
    let mut bash = BashSession::new(spec, Duration::from_secs(60));
    let (out, _) = call(&mut bash, "echo never").await;
    let text = err(out);
    assert!(text.contains("bwrap") && !text.contains("never"), "{text}");
}

/// Without isolation the shell's end does not end its background jobs by itself: the
/// session kills its process group, so the call still returns.
#[tokio::test]
async fn bash_without_sandbox_keeps_the_same_protocol() {
    let dirs = Dirs::new();
    let mut spec = dirs.spec();
    spec.kind = SandboxKind::None;
    let mut bash = BashSession::new(spec, Duration::from_secs(60));
    let wt = dirs.wt().to_string_lossy().into_owned();
    assert_eq!(run_ok(&mut bash, "X=1; pwd").await, format!("{wt}\n"));
    assert_eq!(run_ok(&mut bash, "echo $X").await, "1\n");
    let started = Instant::now();
    let text = run_failed(&mut bash, "sleep 1000 & exit 4").await;
    assert!(text.contains("exit status 4"), "{text}");
    assert!(started.elapsed() < BOUND);
    assert_eq!(run_ok(&mut bash, "echo \"[$X]\"").await, "[]\n");
    bash.close().await;
}
