//! How fast a job's work tree is ready, against `git clone` of the same repository:
//! cold (empty work dir: mirror fetch + work tree), warm (mirror present: no-op fetch +
//! a parked work tree reset to the base, the tree parked between runs as the runner
//! does), warm without the pool (no-op fetch + fresh checkout) and the CLI clone, over
//! real smart HTTP. Prints medians and ratios.
//!
//! `cargo bench --bench worktree` (env `BENCH_RUNS` changes the number of runs; the work
//! dirs go to `TMPDIR`, e.g. `TMPDIR=/dev/shm` for tmpfs).

#[path = "../tests/common/git_server.rs"]
mod git_server;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use git_server::GitServer;
use repobox::git::{Credentials, Mirrors};
use repobox::secret::Secret;

const TOKEN: &str = "ghs_BenchTokenValue0123456789abcdefBENCH";
const REPO: &str = "bench/big.git";
const FILES: usize = 5_000;
const COMMITS: usize = 3_000;

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let root = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let (sha, pack_bytes) = build_repo(root.path());
    println!(
        "repository: {FILES} files, {COMMITS} commits, pack {:.1} MB, built in {} ms",
        pack_bytes as f64 / 1e6,
        started.elapsed().as_millis()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(GitServer::start(root.path().to_path_buf(), TOKEN));
    let url = server.url(REPO);
    let creds = Credentials {
        username: "x-access-token".into(),
        password: Secret::new(TOKEN),
    };

    let cold = measure(runs, || {
        let workdir = tempfile::tempdir().expect("workdir");
        let t = Instant::now();
        let mirror = Mirrors::new(workdir.path())
            .fetch("github/bench/big", &url, &creds, &[])
            .expect("cold fetch");
        let tree = mirror.add_worktree("job", &sha).expect("work tree");
        let elapsed = t.elapsed();
        assert!(tree.path().join("README.md").is_file());
        elapsed
    });

    let workdir = tempfile::tempdir().expect("workdir");
    let mirrors = Mirrors::new(workdir.path());
    mirrors
        .fetch("github/bench/big", &url, &creds, &[])
        .expect("prime mirror");
    // Each run is one job: its tree comes from the pool (after the first), the job
    // changes and commits a few files, and `remove` parks the tree again.
    let mut job = 0;
    let mut reused = 0;
    let mut last_inode = None;
    let mut take_only = Vec::new();
    let warm = measure(runs + 2, || {
        job += 1;
        let t = Instant::now();
        let mirror = mirrors
            .fetch("github/bench/big", &url, &creds, &[])
            .expect("warm fetch");
        let fetched = t.elapsed();
        let tree = mirror
            .add_worktree(&format!("job-{job}"), &sha)
            .expect("work tree");
        let elapsed = t.elapsed();
        take_only.push(elapsed - fetched);
        if std::fs::metadata(tree.path().join("job-marker")).is_ok() {
            unreachable!("a leftover of the previous job");
        }
        // The same directory inode as the previous job's tree: it came from the pool.
        let inode = std::fs::metadata(tree.path()).expect("tree").ino();
        reused += usize::from(last_inode == Some(inode));
        last_inode = Some(inode);
        run_job(tree.path(), job);
        tree.commit_all("bench", "bench@example.com", "Job changes")
            .expect("commit")
            .expect("a commit");
        tree.remove().expect("park tree");
        elapsed
    });
    take_only.sort();
    let warm_tree_only = take_only[take_only.len() / 2];

    let no_pool = Mirrors::new(workdir.path()).parked_trees(0);
    let warm_fresh = measure(runs, || {
        job += 1;
        let t = Instant::now();
        let mirror = no_pool
            .fetch("github/bench/big", &url, &creds, &[])
            .expect("warm fetch");
        let tree = mirror
            .add_worktree(&format!("job-{job}"), &sha)
            .expect("work tree");
        let elapsed = t.elapsed();
        tree.remove().expect("remove tree");
        elapsed
    });
    let warm_fetch_only = measure(runs, || {
        let t = Instant::now();
        mirrors
            .fetch("github/bench/big", &url, &creds, &[])
            .expect("warm fetch");
        t.elapsed()
    });

    let clone = measure(runs, || {
        let dir = tempfile::tempdir().expect("clone dir");
        let t = Instant::now();
        git_clone(&url, &dir.path().join("big"));
        t.elapsed()
    });

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let tmp = std::env::temp_dir();
    println!("work dirs in {} (TMPDIR)", tmp.display());
    println!(
        "runs: {runs} (median shown); warm runs that reused a parked tree: {reused} of {}",
        runs + 2
    );
    println!(
        "cold  (fetch into empty mirror + work tree):   {:8.1} ms",
        ms(cold)
    );
    println!(
        "warm  (no-op fetch + parked tree reset):       {:8.1} ms",
        ms(warm)
    );
    println!(
        "      of which no-op fetch (alone):            {:8.1} ms",
        ms(warm_fetch_only)
    );
    println!(
        "      of which add_worktree:                   {:8.1} ms",
        ms(warm_tree_only)
    );
    println!(
        "warm without pool (no-op fetch + checkout):    {:8.1} ms",
        ms(warm_fresh)
    );
    println!(
        "clone (git clone, CLI):                        {:8.1} ms",
        ms(clone)
    );
    println!(
        "clone/warm without pool = {:.1}x",
        ms(clone) / ms(warm_fresh)
    );
    let clone_over_warm = ms(clone) / ms(warm);
    let cold_over_clone = ms(cold) / ms(clone);
    println!(
        "clone/warm = {clone_over_warm:.1}x (target >= 10x: {})",
        verdict(clone_over_warm >= 10.0)
    );
    println!(
        "cold/clone = {cold_over_clone:.2}x (target <= 1.5x: {})",
        verdict(cold_over_clone <= 1.5)
    );
    drop(server);
}

/// What a job does to its tree: changes a tracked file, adds one, leaves a build
/// directory behind.
fn run_job(tree: &Path, job: usize) {
    let readme = tree.join("README.md");
    let mut text = std::fs::read_to_string(&readme).expect("read README");
    text.push_str(&format!("job {job}\n"));
    std::fs::write(&readme, text).expect("write README");
    std::fs::write(tree.join("job-marker"), format!("{job}\n")).expect("add file");
    let build = tree.join("build/out");
    std::fs::create_dir_all(&build).expect("build dir");
    std::fs::write(build.join("artifact.o"), b"\0\x01").expect("artifact");
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Runs `f` `runs` times and returns the median duration.
fn measure(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1)).map(|_| f()).collect();
    times.sort();
    times[times.len() / 2]
}

/// `git clone` with the token in an `http.extraHeader` given through the environment
/// (never in the URL or the command line).
fn git_clone(url: &str, into: &Path) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    let status = Command::new("git")
        .args(["clone", "--quiet", url])
        .arg(into)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        )
        .status()
        .expect("run git clone");
    assert!(status.success(), "git clone failed");
}

/// Creates `<root>/bench/big.git` with `git fast-import` from a generated history and
/// repacks it; returns the tip of `main` and the pack size.
fn build_repo(root: &Path) -> (String, u64) {
    let bare = root.join(REPO);
    std::fs::create_dir_all(&bare).expect("repo dir");
    git_server::git(
        &bare,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    );
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&bare)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        write_history(&mut stdin).expect("write fast-import stream");
        stdin.flush().expect("flush");
    }
    assert!(child.wait().expect("fast-import").success());
    git_server::git(&bare, &["repack", "-a", "-d", "-q", "--window=50"]);
    let sha = git_server::git(&bare, &["rev-parse", "refs/heads/main"]);
    let pack_bytes = std::fs::read_dir(bare.join("objects/pack"))
        .expect("pack dir")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    (sha, pack_bytes)
}

/// Deterministic pseudo-random numbers (a 64-bit LCG), so every run builds the same repo.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: [&str; 32] = [
    "let", "fn", "match", "self", "value", "return", "config", "client", "request", "error",
    "handle", "parse", "result", "state", "build", "count", "index", "buffer", "stream", "token",
    "commit", "branch", "merge", "worker", "queue", "event", "limit", "retry", "format", "string",
    "option", "into",
];

fn file_path(i: usize) -> String {
    if i == 0 {
        return "README.md".to_owned();
    }
    format!("src/mod{:02}/sub{:02}/file{i:04}.rs", i % 40, (i / 40) % 25)
}

fn source_line(rng: &mut Rng) -> String {
    let n = 3 + rng.below(8);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    format!("    {}({});\n", words.join("_"), rng.below(1000))
}

fn file_content(rng: &mut Rng, i: usize) -> String {
    let mut s = format!("// file {i}\n");
    for _ in 0..(10 + rng.below(20)) {
        s.push_str(&source_line(rng));
    }
    s
}

fn write_blob(out: &mut impl Write, path: &str, content: &str) -> std::io::Result<()> {
    writeln!(out, "M 100644 inline {path}")?;
    writeln!(out, "data {}", content.len())?;
    out.write_all(content.as_bytes())?;
    writeln!(out)
}

fn write_commit_header(out: &mut impl Write, n: usize) -> std::io::Result<()> {
    let msg = format!("Change number {n}\n");
    writeln!(out, "commit refs/heads/main")?;
    writeln!(
        out,
        "committer Bench <bench@example.com> {} +0000",
        1_700_000_000 + n * 600
    )?;
    writeln!(out, "data {}", msg.len())?;
    out.write_all(msg.as_bytes())
}

/// A first commit with every file, then small commits touching a few files each.
fn write_history(out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(42);
    let mut contents: Vec<String> = (0..FILES).map(|i| file_content(&mut rng, i)).collect();
    write_commit_header(out, 0)?;
    for (i, content) in contents.iter().enumerate() {
        write_blob(out, &file_path(i), content)?;
    }
    for n in 1..COMMITS {
        write_commit_header(out, n)?;
        for _ in 0..(1 + rng.below(4)) {
            let i = rng.below(FILES);
            let line = source_line(&mut rng);
            contents[i].push_str(&line);
            write_blob(out, &file_path(i), &contents[i])?;
        }
    }
    Ok(())
}
