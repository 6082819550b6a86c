//! `str_replace_based_edit_tool`: Anthropic's text editor tool (`text_editor_20250728`),
//! executed by the runner on the job's work tree.
//!
//! Why this is careful: the tool runs in the runner process, outside the sandbox, on
//! paths chosen by a model that reads untrusted text (SPEC §7, §10), in a tree where
//! sandboxed code can plant symlinks, FIFOs and sockets at any time. So:
//! - every open goes through `openat2` from a directory fd of the work tree with
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses `..`, absolute
//!   symlinks and symlinks that lead out, with no window between check and use;
//! - only regular files are read or written: opens are non-blocking (a FIFO must not
//!   hang the runner) and checked with `fstat`;
//! - nothing under a `.git` component is written, checked on the path as given and,
//!   after the open, on the path the kernel actually resolved (a symlink into `.git`);
//! - error texts name only the path the model gave and the work tree, never what a
//!   symlink pointed at or anything else about the host.
//!
//! An [`EditTool`] is `Send + Sync` and cheap to clone (the directory fd is shared).

use super::ToolOutput;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Largest file viewed or edited, in bytes.
const MAX_FILE_BYTES: u64 = 10 << 20;
/// Most entries in a directory listing.
const MAX_LISTING_ENTRIES: usize = 1000;
/// Directory names left out of listings besides hidden ones: bulky and generated.
const LISTING_SKIPPED: &[&str] = &["node_modules", "target"];
/// Lines shown before and after a change.
const SNIPPET_CONTEXT: usize = 4;
/// Longest path or name echoed back, in characters.
const MAX_ECHO_CHARS: usize = 300;
/// Tries of an open that the kernel asks to repeat (`EAGAIN`: a rename raced with
/// `RESOLVE_BENEATH`).
const OPEN_TRIES: usize = 8;
const COMMANDS: &str = "`view`, `create`, `str_replace` and `insert`";

/// The text editor tool of one job, confined to its work tree.
#[derive(Debug, Clone)]
pub struct EditTool {
    /// The work tree, opened once; every path is resolved beneath it.
    root: Arc<OwnedFd>,
    /// The work tree as the model sees it (absolute, as given to [`EditTool::new`]).
    work_tree: PathBuf,
    /// The work tree with symlinks resolved, for the `.git` check on opened files.
    real_root: PathBuf,
    max_view_chars: usize,
}

/// A failed call: the text for the model.
type Failure = String;

impl EditTool {
    /// `work_tree`: absolute path of the job's work tree (bound at the same path in the
    /// sandbox, so the model sees the same absolute paths). `max_view_chars`: longest
    /// `view` result (the loop passes 40_000).
    pub fn new(work_tree: &Path, max_view_chars: usize) -> std::io::Result<EditTool> {
        let work_tree = std::path::absolute(work_tree)?;
        let root = rustix::fs::open(
            &work_tree,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let real_root = std::fs::canonicalize(&work_tree)?;
        Ok(EditTool {
            root: Arc::new(root),
            work_tree,
            real_root,
            max_view_chars,
        })
    }

    /// Runs one call; `input` is the `tool_use` block's `input`. Blocking file I/O: run
    /// it in `spawn_blocking`.
    pub fn run(&self, input: &Value) -> ToolOutput {
        match self.dispatch(input) {
            Ok(text) => ToolOutput::ok(text),
            Err(text) => ToolOutput::error(text),
        }
    }

    /// One line for the job log: `view src/lib.rs [10, 20]`, `str_replace src/lib.rs`,
    /// `create docs/x.md (1.2 KiB)`, `insert src/a.rs after line 4`.
    pub fn describe(input: &Value) -> String {
        let command = input.get("command").and_then(Value::as_str).unwrap_or("?");
        let path = input.get("path").and_then(Value::as_str).unwrap_or("?");
        let path = one_line(path);
        match command {
            "view" => match input.get("view_range").and_then(Value::as_array) {
                Some(range) => {
                    let range: Vec<String> = range.iter().map(Value::to_string).collect();
                    format!("view {path} [{}]", one_line(&range.join(", ")))
                }
                None => format!("view {path}"),
            },
            "create" => {
                let size = input
                    .get("file_text")
                    .and_then(Value::as_str)
                    .map_or(0, str::len);
                format!("create {path} ({})", human_size(size))
            }
            "insert" => {
                let line = input
                    .get("insert_line")
                    .map_or("?".to_owned(), Value::to_string);
                format!("insert {path} after line {}", one_line(&line))
            }
            other => format!("{} {path}", one_line(other)),
        }
    }

    fn dispatch(&self, input: &Value) -> Result<String, Failure> {
        let command = input
            .get("command")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing `command`; the valid commands are {COMMANDS}"))?;
        match command {
            "view" => self.view(input),
            "create" => self.create(input),
            "str_replace" => self.str_replace(input),
            "insert" => self.insert(input),
            "undo_edit" => Err(format!(
                "`undo_edit` is not available; the valid commands are {COMMANDS}"
            )),
            other => Err(format!(
                "unknown command `{}`; the valid commands are {COMMANDS}",
                echo(other)
            )),
        }
    }

    // ---- commands ------------------------------------------------------------------

    fn view(&self, input: &Value) -> Result<String, Failure> {
        let target = self.target(input)?;
        let fd = self
            .open(&target, OFlags::RDONLY)
            .map_err(|err| target.open_failure(err, self))?;
        let stat = rustix::fs::fstat(&fd).map_err(|err| target.io_failure(err))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                if input.get("view_range").is_some_and(|v| !v.is_null()) {
                    return Err(format!(
                        "`{}` is a directory; `view_range` applies to files only",
                        target.shown
                    ));
                }
                Ok(self.listing(fd, &target))
            }
            FileType::RegularFile => {
                let text = read_text(&fd, stat.st_size, &target)?;
                self.view_text(&text, input.get("view_range"), &target)
            }
            other => Err(target.not_regular(other)),
        }
    }

    fn view_text(
        &self,
        text: &str,
        range: Option<&Value>,
        target: &Target,
    ) -> Result<String, Failure> {
        let lines = split_lines(text);
        let count = lines.len();
        let (start, end) = match range.filter(|v| !v.is_null()) {
            None => (1, count),
            Some(range) => parse_range(range, count, target)?,
        };
        if count == 0 {
            return Ok(format!("`{}` is empty.", target.shown));
        }
        let header = if (start, end) == (1, count) {
            format!("`{}` ({count} lines), numbered:\n", target.shown)
        } else {
            format!(
                "`{}`, lines {start} to {end} of {count}, numbered:\n",
                target.shown
            )
        };
        let budget = self.max_view_chars.saturating_sub(header.chars().count());
        Ok(header + &numbered_within(&lines[start - 1..end], start, end, budget))
    }

    fn create(&self, input: &Value) -> Result<String, Failure> {
        let target = self.target(input)?;
        let file_text = str_param(input, "file_text")?;
        target.refuse_git()?;
        let (Some(name), Some(parent)) = (target.rel.file_name(), target.rel.parent()) else {
            return Err(format!("`{}` is a directory, not a file", target.shown));
        };
        let parent_dir = self.open_dir_creating(parent, &target)?;
        self.refuse_git_fd(&parent_dir, &target)?;

        let (fd, verb) = match self.open(&target, OFlags::WRONLY) {
            Ok(fd) => (fd, "Overwrote"),
            Err(Errno::NOENT) => {
                // In the directory just checked, by name: `O_EXCL` follows no symlink.
                let fd = open_beneath(
                    &parent_dir,
                    Path::new(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(|err| match err {
                    Errno::EXIST => format!(
                        "`{}` is a symbolic link to a file that does not exist; \
                         remove the link or write to a path that exists",
                        target.shown
                    ),
                    err => target.open_failure(err, self),
                })?;
                // Exactly 0644, whatever the runner's umask.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))
                    .map_err(|err| target.io_failure(err))?;
                (fd, "Created")
            }
            Err(err) => return Err(target.open_failure(err, self)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|err| target.io_failure(err))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            other => return Err(target.not_regular(other)),
        }
        self.refuse_git_fd(&fd, &target)?;
        write_all(&fd, file_text, &target)?;
        let lines = split_lines(file_text).len();
        Ok(format!(
            "{verb} `{}` ({lines} lines, {}).",
            target.shown,
            human_size(file_text.len())
        ))
    }

    fn str_replace(&self, input: &Value) -> Result<String, Failure> {
        let target = self.target(input)?;
        let old = str_param(input, "old_str")?;
        let new = match input.get("new_str") {
            None | Some(Value::Null) => "",
            Some(value) => value
                .as_str()
                .ok_or_else(|| "`new_str` must be a string".to_owned())?,
        };
        if old.is_empty() {
            return Err("`old_str` is empty; give the exact text to replace".to_owned());
        }
        let (fd, text) = self.open_for_edit(&target)?;
        let found = occurrences(&text, old);
        let at = match found.as_slice() {
            [] => {
                return Err(format!(
                    "No change made: `old_str` did not appear verbatim in `{}`. Check \
                     whitespace and indentation; view the file to copy the exact text.",
                    target.shown
                ));
            }
            [at] => *at,
            many => {
                let lines: Vec<String> = many
                    .iter()
                    .map(|&at| line_of(&text, at).to_string())
                    .collect();
                return Err(format!(
                    "No change made: `old_str` occurs {} times in `{}`, starting on lines \
                     {}. Include more surrounding lines so that it occurs exactly once.",
                    many.len(),
                    target.shown,
                    lines.join(", ")
                ));
            }
        };
        let mut edited = String::with_capacity(text.len() + new.len());
        edited.push_str(&text[..at]);
        edited.push_str(new);
        edited.push_str(&text[at + old.len()..]);
        write_all(&fd, &edited, &target)?;
        let first = line_of(&edited, at);
        let last = first + new.matches('\n').count();
        Ok(format!(
            "Edited `{}`: replaced the one occurrence of `old_str`. {}",
            target.shown,
            self.snippet(&edited, first, last)
        ))
    }

    fn insert(&self, input: &Value) -> Result<String, Failure> {
        let target = self.target(input)?;
        let after = input
            .get("insert_line")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                "missing `insert_line`: the line after which to insert (0 = before the first line)"
                    .to_owned()
            })?;
        let inserted = match (input.get("insert_text"), input.get("new_str")) {
            (Some(Value::String(text)), _)
            | (None | Some(Value::Null), Some(Value::String(text))) => text.as_str(),
            _ => return Err("missing `insert_text`: the text to insert (a string)".to_owned()),
        };
        let (fd, text) = self.open_for_edit(&target)?;
        let count = split_lines(&text).len();
        let after = usize::try_from(after)
            .ok()
            .filter(|&after| after <= count)
            .ok_or_else(|| {
                format!(
                    "No change made: `insert_line` {after} is beyond the end of `{}`, which \
                     has {count} lines; use 0 (before the first line) to {count} (after the last)",
                    target.shown
                )
            })?;
        let offset: usize = text.split_inclusive('\n').take(after).map(str::len).sum();
        let rest = &text[offset..];
        let mut edited = String::with_capacity(text.len() + inserted.len() + 2);
        edited.push_str(&text[..offset]);
        if !edited.is_empty() && !edited.ends_with('\n') {
            // Appending after a last line that had no newline.
            edited.push('\n');
        }
        edited.push_str(inserted);
        if !inserted.ends_with('\n')
            && (!rest.is_empty() || text.is_empty() || text.ends_with('\n'))
        {
            edited.push('\n');
        }
        edited.push_str(rest);
        write_all(&fd, &edited, &target)?;
        let added = split_lines(inserted).len().max(1);
        Ok(format!(
            "Inserted {added} line{} into `{}` after line {after}. {}",
            if added == 1 { "" } else { "s" },
            target.shown,
            self.snippet(&edited, after + 1, after + added)
        ))
    }

    // ---- paths and opens -----------------------------------------------------------

    /// The `path` parameter, checked to lie in the work tree (lexically) and made
    /// relative to it.
    fn target(&self, input: &Value) -> Result<Target, Failure> {
        let raw = str_param(input, "path")?;
        let shown = echo(raw);
        if raw.is_empty() {
            return Err("`path` is empty".to_owned());
        }
        if raw.contains('\0') {
            return Err(format!("`{shown}` contains a NUL character"));
        }
        let path = Path::new(raw);
        let rel = if path.is_absolute() {
            let inside = path
                .strip_prefix(&self.work_tree)
                .or_else(|_| path.strip_prefix(&self.real_root));
            match inside {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => return Err(self.outside(&shown)),
            }
        } else {
            path.to_path_buf()
        };
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        Ok(Target { shown, rel })
    }

    fn outside(&self, shown: &str) -> Failure {
        format!(
            "`{shown}` is outside the work tree `{}`; only files in the work tree can be \
             read or changed",
            self.work_tree.display()
        )
    }

    /// Opens `target` beneath the work tree (following symlinks only while they stay
    /// inside).
    fn open(&self, target: &Target, flags: OFlags) -> Result<OwnedFd, Errno> {
        open_beneath(
            &self.root,
            &target.rel,
            flags | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// Opens an existing regular text file read-write and reads it whole.
    fn open_for_edit(&self, target: &Target) -> Result<(OwnedFd, String), Failure> {
        target.refuse_git()?;
        let fd = self
            .open(target, OFlags::RDWR)
            .map_err(|err| target.open_failure(err, self))?;
        let stat = rustix::fs::fstat(&fd).map_err(|err| target.io_failure(err))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            other => return Err(target.not_regular(other)),
        }
        self.refuse_git_fd(&fd, target)?;
        let text = read_text(&fd, stat.st_size, target)?;
        Ok((fd, text))
    }

    /// The directory `parent` beneath the work tree, creating what is missing one
    /// component at a time with `mkdirat` (which never follows a symlink).
    fn open_dir_creating(&self, parent: &Path, target: &Target) -> Result<OwnedFd, Failure> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        match open_beneath(&self.root, parent, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(err) => return Err(target.open_failure(err, self)),
        }
        let mut current = open_beneath(&self.root, Path::new("."), flags, Mode::empty())
            .map_err(|err| target.io_failure(err))?;
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            match open_beneath(&self.root, &prefix, flags, Mode::empty()) {
                Ok(fd) => current = fd,
                Err(Errno::NOENT) => {
                    let Component::Normal(name) = component else {
                        return Err(target.open_failure(Errno::NOENT, self));
                    };
                    // Not even an empty directory inside `.git` (reached by a symlink).
                    self.refuse_git_fd(&current, target)?;
                    match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(err) => return Err(target.io_failure(err)),
                    }
                    current = open_beneath(&self.root, &prefix, flags, Mode::empty())
                        .map_err(|err| target.open_failure(err, self))?;
                }
                Err(err) => return Err(target.open_failure(err, self)),
            }
        }
        Ok(current)
    }

    /// Refuses a write to an opened file or directory that the kernel resolved to a
    /// place under `.git` (through a symlink the lexical check could not see).
    fn refuse_git_fd(&self, fd: &OwnedFd, target: &Target) -> Result<(), Failure> {
        let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        // Without /proc, the lexical check is what there is.
        let Ok(real) = std::fs::read_link(link) else {
            return Ok(());
        };
        match real.strip_prefix(&self.real_root) {
            Ok(inside) if has_git_component(inside) => Err(target.git_refusal()),
            _ => Ok(()),
        }
    }

    // ---- output --------------------------------------------------------------------

    /// Files and directories up to two levels deep, hidden and bulky ones left out.
    fn listing(&self, dir: OwnedFd, target: &Target) -> String {
        let base = if target.rel == Path::new(".") {
            self.work_tree.clone()
        } else {
            self.work_tree.join(&target.rel)
        };
        let mut entries = Vec::new();
        let mut capped = false;
        list_dir(dir, &base, 1, &mut entries, &mut capped);
        let mut out = format!(
            "Files and directories up to 2 levels deep in `{}` (hidden ones, node_modules \
             and target left out):\n",
            base.display()
        );
        for entry in &entries {
            out.push_str(entry);
            out.push('\n');
        }
        if entries.is_empty() {
            out.push_str("(empty)\n");
        }
        if capped {
            let _ = writeln!(
                out,
                "[listing stopped at {MAX_LISTING_ENTRIES} entries; view a subdirectory to see more]"
            );
        }
        cut_chars(&out, self.max_view_chars, "view a subdirectory to see more")
    }

    /// "Lines a to b now read:" and the numbered lines around `first..=last`.
    fn snippet(&self, text: &str, first: usize, last: usize) -> String {
        let lines = split_lines(text);
        if lines.is_empty() {
            return "The file is now empty.".to_owned();
        }
        let from = first
            .saturating_sub(SNIPPET_CONTEXT)
            .max(1)
            .min(lines.len());
        let to = (last + SNIPPET_CONTEXT).min(lines.len()).max(from);
        let header = format!("Lines {from} to {to} now read:\n");
        let budget = self.max_view_chars.saturating_sub(header.chars().count());
        header + &numbered_within(&lines[from - 1..to], from, to, budget)
    }
}

/// A path from the model, made relative to the work tree.
struct Target {
    /// The path as the model gave it (cut if very long), for messages.
    shown: String,
    /// Relative to the work tree; `.` for the work tree itself.
    rel: PathBuf,
}

impl Target {
    fn refuse_git(&self) -> Result<(), Failure> {
        if has_git_component(&self.rel) {
            Err(self.git_refusal())
        } else {
            Ok(())
        }
    }

    fn git_refusal(&self) -> Failure {
        format!(
            "`{}` is in a `.git` directory (or is the `.git` file); git's files cannot be \
             changed with this tool",
            self.shown
        )
    }

    fn not_regular(&self, kind: FileType) -> Failure {
        let kind = match kind {
            FileType::Fifo => "a FIFO",
            FileType::Socket => "a socket",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            FileType::Directory => "a directory",
            FileType::Symlink => "a symbolic link",
            _ => "not a regular file",
        };
        format!(
            "`{}` is {kind}; only regular files can be read or changed with this tool",
            self.shown
        )
    }

    /// The text for a failed open or path resolution.
    fn open_failure(&self, err: Errno, tool: &EditTool) -> Failure {
        let shown = &self.shown;
        match err {
            Errno::XDEV => format!(
                "{} (`..` or a symbolic link leads out of it; absolute symbolic links are \
                 not followed)",
                tool.outside(shown)
            ),
            Errno::NOENT => format!("`{shown}` does not exist"),
            Errno::LOOP => format!(
                "`{shown}` cannot be opened: too many levels of symbolic links, or a link \
                 that is not allowed here"
            ),
            Errno::NOTDIR => format!("`{shown}`: a part of the path is not a directory"),
            Errno::ISDIR => format!("`{shown}` is a directory, not a file"),
            // A FIFO opened for writing with no reader.
            Errno::NXIO => format!(
                "`{shown}` is not a regular file; only regular files can be read or changed \
                 with this tool"
            ),
            Errno::NAMETOOLONG => format!("`{shown}`: the path is too long"),
            err => self.io_failure(err),
        }
    }

    fn io_failure(&self, err: Errno) -> Failure {
        format!("`{}`: {}", self.shown, std::io::Error::from(err))
    }
}

/// `openat2` beneath `dir`: no `..` above it, no absolute symlinks, no symlink leading
/// out, no `/proc` magic links.
fn open_beneath(dir: &OwnedFd, path: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dir,
            path,
            flags,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN | Errno::INTR) if tries + 1 < OPEN_TRIES => tries += 1,
            other => return other,
        }
    }
}

fn has_git_component(path: &Path) -> bool {
    path.components()
        .any(|c| matches!(c, Component::Normal(name) if name == ".git"))
}

/// The whole file as UTF-8 text, refusing large and binary files.
fn read_text(fd: &OwnedFd, size: i64, target: &Target) -> Result<String, Failure> {
    let too_large = || {
        format!(
            "`{}` is larger than {}; files this large cannot be viewed or edited with this \
             tool (use bash, e.g. `head`, `sed -n` or `grep -n`)",
            target.shown,
            human_size(MAX_FILE_BYTES as usize)
        )
    };
    if u64::try_from(size).unwrap_or(0) > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::from(
        fd.try_clone()
            .map_err(|err| format!("`{}`: {err}", target.shown))?,
    );
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("`{}` could not be read: {err}", target.shown))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let binary = || {
        format!(
            "`{}` is a binary file (it holds NUL bytes or is not valid UTF-8); it cannot be \
             viewed or edited with this tool",
            target.shown
        )
    };
    if bytes.contains(&0) {
        return Err(binary());
    }
    String::from_utf8(bytes).map_err(|_| binary())
}

/// Replaces the file's content with `text`, in place (mode, owner and links kept).
fn write_all(fd: &OwnedFd, text: &str, target: &Target) -> Result<(), Failure> {
    let file = std::fs::File::from(
        fd.try_clone()
            .map_err(|err| format!("`{}`: {err}", target.shown))?,
    );
    file.write_all_at(text.as_bytes(), 0)
        .and_then(|()| file.set_len(text.len() as u64))
        .map_err(|err| format!("`{}` could not be written: {err}", target.shown))
}

/// Appends the entries of `dir` (and, at depth 1, of its subdirectories) to `out`.
/// Subdirectories are opened by name with `O_NOFOLLOW`: a symlink is listed, never
/// entered.
fn list_dir(dir: OwnedFd, base: &Path, depth: usize, out: &mut Vec<String>, capped: &mut bool) {
    let Ok(mut entries) = rustix::fs::Dir::new(dir) else {
        return;
    };
    let mut names: Vec<(Vec<u8>, bool)> = Vec::new();
    let parent = entries
        .fd()
        .ok()
        .and_then(|fd| fd.try_clone_to_owned().ok());
    while let Some(Ok(entry)) = entries.read() {
        let name = entry.file_name().to_bytes().to_vec();
        if name.starts_with(b".") || LISTING_SKIPPED.iter().any(|s| s.as_bytes() == name) {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => parent.as_ref().is_some_and(|parent| {
                rustix::fs::statat(
                    parent,
                    name.as_slice(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            }),
            _ => false,
        };
        names.push((name, is_dir));
    }
    names.sort();
    for (name, is_dir) in names {
        if out.len() >= MAX_LISTING_ENTRIES {
            *capped = true;
            return;
        }
        let path = base.join(std::ffi::OsStr::from_bytes(&name));
        let shown = path.to_string_lossy();
        if !is_dir {
            out.push(shown.into_owned());
            continue;
        }
        out.push(format!("{shown}/"));
        if depth < 2 {
            let sub = parent.as_ref().and_then(|parent| {
                rustix::fs::openat(
                    parent,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            });
            if let Some(sub) = sub {
                list_dir(sub, &path, depth + 1, out, capped);
            }
        }
    }
}

/// `[start, end]` (1-based, `end` -1 for the last line) checked against `count` lines.
fn parse_range(range: &Value, count: usize, target: &Target) -> Result<(usize, usize), Failure> {
    let pair = range.as_array().and_then(|items| match items.as_slice() {
        [start, end] => Some((start.as_i64()?, end.as_i64()?)),
        _ => None,
    });
    let Some((start, end)) = pair else {
        return Err(
            "`view_range` must be two integers `[start, end]` (1-based; end -1 = to the end)"
                .to_owned(),
        );
    };
    let shown = &target.shown;
    if count == 0 {
        return Err(format!("`{shown}` is empty; view it without `view_range`"));
    }
    let start = usize::try_from(start)
        .ok()
        .filter(|&s| (1..=count).contains(&s))
        .ok_or_else(|| {
            format!(
                "`view_range` start {start} is out of range: `{shown}` has {count} lines \
                 (1 to {count})"
            )
        })?;
    let end = if end == -1 {
        count
    } else {
        usize::try_from(end)
            .ok()
            .filter(|&e| e >= start && e <= count)
            .ok_or_else(|| {
                format!(
                    "`view_range` end {end} is out of range: it must be from {start} to \
                     {count} (the last line of `{shown}`), or -1 for the end"
                )
            })?
    };
    Ok((start, end))
}

/// The lines of `text`: split at `\n`, a final newline ending the last line.
fn split_lines(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect()
}

/// `lines` numbered from `first` (`{n:>6}\t{line}`), at most `budget` characters; when
/// cut, a note says how to see the rest (up to `last`).
fn numbered_within(lines: &[&str], first: usize, last: usize, budget: usize) -> String {
    // Room kept for the note.
    let budget = budget.saturating_sub(200);
    let mut out = String::new();
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        let number = first + i;
        let entry = format!("{number:>6}\t{line}\n");
        let len = entry.chars().count();
        if used + len > budget {
            if i == 0 {
                // One line longer than everything allowed: show its start.
                let keep: String = entry.chars().take(budget).collect();
                out.push_str(&keep);
                let _ = write!(
                    out,
                    "\n[… line {number} is cut here: it is longer than the view limit; use bash \
                     (e.g. `cut -c` or `fold`) to read it]\n"
                );
            } else {
                let _ = writeln!(
                    out,
                    "[… output cut after line {}: longer than the view limit. View the rest \
                     with `view_range`, e.g. [{number}, {last}]]",
                    number - 1
                );
            }
            return out;
        }
        used += len;
        out.push_str(&entry);
    }
    out
}

/// `text` cut to `max` characters, with a note saying how to see the rest.
fn cut_chars(text: &str, max: usize, hint: &str) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep: String = text.chars().take(max.saturating_sub(120)).collect();
    format!("{keep}\n[… cut: the result was longer than {max} characters; {hint}]\n")
}

/// Byte offsets of every occurrence of `needle`, overlapping ones included.
fn occurrences(haystack: &str, needle: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = haystack[from..].find(needle) {
        let at = from + i;
        found.push(at);
        let step = haystack[at..].chars().next().map_or(1, char::len_utf8);
        from = at + step;
    }
    found
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn str_param<'a>(input: &'a Value, name: &str) -> Result<&'a str, Failure> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing `{name}` (a string)"))
}

/// `text` cut to [`MAX_ECHO_CHARS`] for messages.
fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `text` on one line (control characters shown as `?`), cut, for the log.
fn one_line(text: &str) -> String {
    echo(text)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn human_size(bytes: usize) -> String {
    // Sizes here are far below 2^52: the conversion is exact.
    let value = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{:.1} MiB", value / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_an_editor_counts_them() {
        assert!(split_lines("").is_empty());
        assert_eq!(split_lines("\n"), vec![""]);
        assert_eq!(split_lines("a\nb"), vec!["a", "b"]);
        assert_eq!(split_lines("a\nb\n"), vec!["a", "b"]);
    }

    #[test]
    fn overlapping_occurrences_count() {
        assert_eq!(occurrences("aaa", "aa"), vec![0, 1]);
        assert_eq!(occurrences("éxé", "é"), vec![0, 3]);
        assert!(occurrences("abc", "d").is_empty());
    }

    #[test]
    fn describe_names_the_command_path_and_detail() {
        let d = |v: Value| EditTool::describe(&v);
        assert_eq!(
            d(serde_json::json!({"command": "view", "path": "src/lib.rs", "view_range": [10, 20]})),
            "view src/lib.rs [10, 20]"
        );
        assert_eq!(
            d(
                serde_json::json!({"command": "create", "path": "docs/x.md", "file_text": "x".repeat(1229)})
            ),
            "create docs/x.md (1.2 KiB)"
        );
        assert_eq!(
            d(serde_json::json!({"command": "insert", "path": "src/a.rs", "insert_line": 4})),
            "insert src/a.rs after line 4"
        );
        assert_eq!(
            d(serde_json::json!({"command": "str_replace", "path": "a\nb"})),
            "str_replace a?b"
        );
    }

    #[test]
    fn long_views_are_cut_at_a_line_with_a_hint() {
        let lines: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let out = numbered_within(&refs, 1, 100, 600);
        assert!(out.contains("line 10\n"), "{out}");
        assert!(!out.contains("line 100"), "{out}");
        assert!(out.contains("view_range"), "{out}");
    }
}
