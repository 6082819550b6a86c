//! Scrubbing a work tree that a job has used, so that another job can have it: every
//! file the job's (untrusted) agent created or changed is removed, leaving only files
//! our own checkout wrote; a checkout then puts back what is missing.
//!
//! "Changed" is read from the inode change time (ctime): writing, truncating, chmod,
//! chown, linking, renaming, setting an extended attribute, an ACL or a file flag all
//! move it forward, and no process can set it back (only the system clock can). So a
//! file whose ctime is older than the moment the tree was handed over is exactly as the
//! checkout left it, and everything else goes: modified and new files, hard links,
//! setuid bits, symlinks, FIFOs and sockets, nested repositories, ignored build output.
//!
//! Every access is relative to a directory descriptor opened with `O_NOFOLLOW`, so a
//! symlink is never followed, even one swapped in for a directory during the walk, and
//! path length does not matter. A tree that cannot be brought back (an entry owned by
//! someone else, an immutable or append-only directory, more than [`MAX_DEPTH`] levels)
//! is refused: the caller deletes it instead of reusing it.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use rustix::fs::{AtFlags, Dir, FileType, IFlags, Mode, OFlags, Stat};

/// Deepest directory level a reusable tree may have (deeper ones are refused).
pub(super) const MAX_DEPTH: usize = 200;

/// A point in time on the file system's own clock: the ctime of a stamp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp {
    sec: i64,
    nsec: i64,
}

/// Rewrites the stamp file at `path` and returns its new ctime. Taken from the file
/// system rather than the system clock because file times come from a coarse kernel
/// clock that may lag `SystemTime::now()` by a few milliseconds.
pub(super) fn stamp(path: &Path) -> io::Result<Stamp> {
    std::fs::write(path, b"repobox: work tree handed over\n")?;
    let meta = std::fs::symlink_metadata(path)?;
    Ok(Stamp {
        sec: meta.ctime(),
        nsec: meta.ctime_nsec(),
    })
}

/// An inode's change time.
#[allow(clippy::useless_conversion)] // the field is narrower than i64 on some targets
fn changed_at(st: &Stat) -> Stamp {
    Stamp {
        sec: i64::from(st.st_ctime),
        nsec: st.st_ctime_nsec as i64,
    }
}

/// Reads the time a stamp file was last written.
pub(super) fn read_stamp(path: &Path) -> io::Result<Stamp> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(Stamp {
        sec: meta.ctime(),
        nsec: meta.ctime_nsec(),
    })
}

/// Removes from the tree at `root` everything created or changed at or after `since`
/// (the root's `.git` file excepted: the caller rewrites it), then every directory
/// left empty, and restores the mode of the directories that remain. On error the tree
/// is in an unknown state and must be deleted.
pub(super) fn scrub(root: &Path, since: Stamp) -> Result<(), String> {
    let ctx = Ctx {
        since: Some(since),
        uid: rustix::process::geteuid().as_raw(),
        modes: *modes(),
    };
    let fd = open_root(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    ctx.dir_itself(&fd, None, root)?;
    ctx.walk(&fd, 0)?;
    Ok(())
}

/// Deletes the tree at `root` (absent is fine). Unlike `std::fs::remove_dir_all` this
/// also copes with directories the agent made unreadable.
pub(super) fn remove_all(root: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(root) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => return other,
    }
    let ctx = Ctx {
        since: None,
        uid: rustix::process::geteuid().as_raw(),
        modes: *modes(),
    };
    let fd = open_root(root)?;
    ctx.walk(&fd, 0).map_err(io::Error::other)?;
    drop(fd);
    std::fs::remove_dir_all(root)
}

/// Removes whatever is at `name` in `dir` (a file, a symlink itself, or a directory
/// with everything below it), never following a symlink.
pub(super) fn remove_entry_at(dir: &Path, name: &str) -> Result<(), String> {
    let ctx = Ctx {
        since: None,
        uid: rustix::process::geteuid().as_raw(),
        modes: *modes(),
    };
    let fd = open_root(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let name = CString::new(name).map_err(|e| e.to_string())?;
    match rustix::fs::statat(&fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(format!("stat {name:?}: {e}")),
        Ok(st) => ctx.entry(&fd, &name, &st, 0).map(|_| ()),
    }
}

/// What the index records for one path, to compare with the file system.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected {
    pub(super) kind: Tracked,
    /// Stat data as truncated by the index format.
    pub(super) ino: u32,
    pub(super) size: u32,
    pub(super) ctime: (i32, u32),
    pub(super) mtime: (i32, u32),
}

/// The kind of a tracked path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tracked {
    File {
        executable: bool,
    },
    Symlink,
    /// A submodule: an empty directory in a checkout.
    Gitlink,
}

/// Checks, without changing anything, that the tree at `root` holds exactly the paths
/// of `expected` (keyed by repo-relative path), each with the index's stat data (so
/// unchanged since the index was written), one link, our checkout's mode; no other file,
/// directory or special file; directories with our mode, and no flags or attributes
/// on those changed at or after `dirs_since`. Stat data equal to the index is what git
/// itself trusts for "unmodified"; the caller rechecks racily clean entries.
pub(super) fn verify(
    root: &Path,
    expected: &HashMap<Vec<u8>, Expected>,
    dirs_since: Stamp,
) -> Result<(), String> {
    let check = Check {
        expected,
        dirs_since,
        uid: rustix::process::geteuid().as_raw(),
        modes: *modes(),
    };
    let fd = open_root(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("stat root: {e}"))?;
    check.dir_itself(&fd, &st, b"")?;
    // The top levels here; the directories below go to a few threads, since the walk
    // is one `stat` per file and most of a reused tree's preparation.
    let queue = Mutex::new(Vec::new());
    let mut seen = 0;
    check.dir(&fd, &mut Vec::new(), 0, &mut seen, &queue)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| check.drain(&queue)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("verification panicked".into()))
            })
            .collect()
    });
    for result in results {
        seen += result?;
    }
    if seen != expected.len() {
        return Err(format!(
            "{} tracked paths missing",
            expected.len().saturating_sub(seen)
        ));
    }
    Ok(())
}

/// Depth of the directories handed to worker threads.
const SPLIT_DEPTH: usize = 2;

/// A directory left for a worker: its descriptor, path and depth.
type Pending = (OwnedFd, Vec<u8>, usize);

struct Check<'a> {
    expected: &'a HashMap<Vec<u8>, Expected>,
    dirs_since: Stamp,
    uid: u32,
    modes: Modes,
}

impl Check<'_> {
    /// Checks the directories in `queue` until it is empty; returns how many tracked
    /// paths were found.
    fn drain(&self, queue: &Mutex<Vec<Pending>>) -> Result<usize, String> {
        let mut seen = 0;
        loop {
            let next = queue.lock().map_err(|e| e.to_string())?.pop();
            let Some((fd, mut prefix, depth)) = next else {
                return Ok(seen);
            };
            if self.dir(&fd, &mut prefix, depth, &mut seen, queue)? == 0 {
                return Err(format!(
                    "empty directory {}",
                    String::from_utf8_lossy(&prefix)
                ));
            }
        }
    }

    /// Checks the entries of `dir` (at `prefix`); returns how many there are.
    /// Subdirectories at [`SPLIT_DEPTH`] go to `queue` instead.
    fn dir(
        &self,
        dir: &OwnedFd,
        prefix: &mut Vec<u8>,
        depth: usize,
        seen: &mut usize,
        queue: &Mutex<Vec<Pending>>,
    ) -> Result<usize, String> {
        let shown = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let mut count = 0;
        let mut entries = Dir::read_from(dir).map_err(|e| format!("read directory: {e}"))?;
        for entry in entries.by_ref() {
            let entry = entry.map_err(|e| format!("read directory: {e}"))?;
            let name = entry.file_name();
            if name == c"." || name == c".." || (depth == 0 && name == c".git") {
                continue;
            }
            count += 1;
            let len = prefix.len();
            if len > 0 {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.to_bytes());
            let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| format!("stat {}: {e}", shown(prefix)))?;
            if st.st_uid != self.uid {
                return Err(format!("{} belongs to uid {}", shown(prefix), st.st_uid));
            }
            let kind = FileType::from_raw_mode(st.st_mode);
            match (self.expected.get(prefix.as_slice()), kind) {
                (Some(exp), FileType::Directory) if exp.kind == Tracked::Gitlink => {
                    let sub = open_subdir(dir, name).map_err(|e| format!("open: {e}"))?;
                    if self.dir(&sub, prefix, depth + 1, &mut 0, queue)? > 0 {
                        return Err(format!("submodule dir {} is not empty", shown(prefix)));
                    }
                    *seen += 1;
                }
                (Some(exp), FileType::RegularFile | FileType::Symlink) if self.same(exp, &st) => {
                    *seen += 1;
                }
                (None, FileType::Directory) => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(format!("directories nested deeper than {MAX_DEPTH}"));
                    }
                    let sub = open_subdir(dir, name).map_err(|e| format!("open: {e}"))?;
                    self.dir_itself(&sub, &st, prefix)?;
                    if depth + 1 == SPLIT_DEPTH {
                        queue.lock().map_err(|e| e.to_string())?.push((
                            sub,
                            prefix.clone(),
                            depth + 1,
                        ));
                    } else if self.dir(&sub, prefix, depth + 1, seen, queue)? == 0 {
                        return Err(format!("empty directory {}", shown(prefix)));
                    }
                }
                (Some(_), _) => return Err(format!("{} differs from the index", shown(prefix))),
                (None, _) => return Err(format!("{} is not tracked", shown(prefix))),
            }
            prefix.truncate(len);
        }
        Ok(count)
    }

    /// Whether a file or symlink is the one the index describes, untouched since.
    fn same(&self, exp: &Expected, st: &Stat) -> bool {
        let kind_ok = match exp.kind {
            Tracked::File { executable } => {
                let perm = st.st_mode & 0o7777;
                FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_nlink == 1
                    && perm
                        == if executable {
                            self.modes.exec
                        } else {
                            self.modes.file
                        }
            }
            Tracked::Symlink => FileType::from_raw_mode(st.st_mode) == FileType::Symlink,
            Tracked::Gitlink => false,
        };
        kind_ok
            && exp.ino == st.st_ino as u32
            && exp.size == st.st_size as u32
            && exp.ctime == (st.st_ctime as i32, st.st_ctime_nsec as u32)
            && exp.mtime == (st.st_mtime as i32, st.st_mtime_nsec as u32)
    }

    fn dir_itself(&self, fd: &OwnedFd, st: &Stat, shown: &[u8]) -> Result<(), String> {
        let shown = String::from_utf8_lossy(shown);
        if st.st_mode & 0o7777 != self.modes.dir {
            return Err(format!(
                "directory {shown:?} has mode {:o}",
                st.st_mode & 0o7777
            ));
        }
        if changed_at(st) < self.dirs_since {
            return Ok(());
        }
        if let Ok(flags) = rustix::fs::ioctl_getflags(fd)
            && flags.intersects(IFlags::IMMUTABLE | IFlags::APPEND)
        {
            return Err(format!("{shown:?} is immutable or append-only"));
        }
        if has_foreign_xattrs(fd).map_err(|e| format!("attributes of {shown:?}: {e}"))? {
            return Err(format!("{shown:?} has extended attributes"));
        }
        Ok(())
    }
}

/// The modes our checkout gives directories and files under the process umask.
#[derive(Debug, Clone, Copy)]
struct Modes {
    dir: u32,
    file: u32,
    exec: u32,
}

fn modes() -> &'static Modes {
    static MODES: OnceLock<Modes> = OnceLock::new();
    MODES.get_or_init(|| {
        let umask = process_umask().unwrap_or(0o022);
        Modes {
            dir: 0o755 & !umask,
            file: 0o644 & !umask,
            exec: 0o755 & !umask,
        }
    })
}

/// The umask, read without changing it (the `umask` call sets it, racing other threads).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

struct Ctx {
    /// Entries changed at or after this are removed; `None` removes everything.
    since: Option<Stamp>,
    uid: u32,
    modes: Modes,
}

impl Ctx {
    fn touched(&self, st: &Stat) -> bool {
        self.since.is_none_or(|since| changed_at(st) >= since)
    }

    /// Scrubs the entries of `dir`; returns how many remain.
    fn walk(&self, dir: &OwnedFd, depth: usize) -> Result<usize, String> {
        let mut names = Vec::new();
        let mut entries = Dir::read_from(dir).map_err(|e| format!("read directory: {e}"))?;
        for entry in entries.by_ref() {
            let entry = entry.map_err(|e| format!("read directory: {e}"))?;
            let name = entry.file_name();
            let is_dot_git = depth == 0 && self.since.is_some() && name == c".git";
            if name != c"." && name != c".." && !is_dot_git {
                names.push(name.to_owned());
            }
        }
        let mut kept = 0;
        for name in names {
            let st = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(format!("stat {name:?}: {e}")),
            };
            if self.entry(dir, &name, &st, depth)? {
                kept += 1;
            }
        }
        Ok(kept)
    }

    /// Handles one entry of `dir`; returns whether it stays.
    fn entry(&self, dir: &OwnedFd, name: &CStr, st: &Stat, depth: usize) -> Result<bool, String> {
        if self.since.is_some() && st.st_uid != self.uid {
            return Err(format!("{name:?} belongs to uid {}", st.st_uid));
        }
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Directory {
            if depth + 1 >= MAX_DEPTH {
                return Err(format!("directories nested deeper than {MAX_DEPTH}"));
            }
            let sub = open_subdir(dir, name).map_err(|e| format!("open {name:?}: {e}"))?;
            self.dir_itself(&sub, Some(st), Path::new("."))?;
            let kept = self.walk(&sub, depth + 1)?;
            drop(sub);
            if kept > 0 {
                return Ok(true);
            }
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
                .map_err(|e| format!("remove directory {name:?}: {e}"))?;
            return Ok(false);
        }
        let perm = st.st_mode & 0o7777;
        let pristine = kind == FileType::RegularFile
            && !self.touched(st)
            && st.st_nlink == 1
            && (perm == self.modes.file || perm == self.modes.exec);
        let pristine_link = kind == FileType::Symlink && !self.touched(st);
        if pristine || pristine_link {
            return Ok(true);
        }
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(|e| format!("remove {name:?}: {e}"))?;
        Ok(false)
    }

    /// Checks and repairs a directory itself (not its entries): refuses file flags that
    /// would stop removals, drops ACLs and user attributes, restores the mode.
    fn dir_itself(&self, fd: &OwnedFd, st: Option<&Stat>, shown: &Path) -> Result<(), String> {
        let Some(_) = self.since else {
            return Ok(());
        };
        let owned;
        let st = match st {
            Some(st) => st,
            None => {
                owned = rustix::fs::fstat(fd).map_err(|e| format!("stat {shown:?}: {e}"))?;
                if owned.st_uid != self.uid {
                    return Err(format!("{shown:?} belongs to uid {}", owned.st_uid));
                }
                &owned
            }
        };
        if !self.touched(st) && st.st_mode & 0o7777 == self.modes.dir {
            return Ok(());
        }
        if let Ok(flags) = rustix::fs::ioctl_getflags(fd)
            && flags.intersects(IFlags::IMMUTABLE | IFlags::APPEND)
        {
            return Err(format!("{shown:?} is immutable or append-only"));
        }
        strip_xattrs(fd).map_err(|e| format!("extended attributes of {shown:?}: {e}"))?;
        if st.st_mode & 0o7777 != self.modes.dir {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(self.modes.dir))
                .map_err(|e| format!("chmod {shown:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Removes the extended attributes an agent could use to leave something behind on a
/// directory: POSIX ACLs (a default ACL is inherited by the next job's files) and the
/// `user.`/`trusted.` namespaces. Security labels stay.
fn strip_xattrs(fd: &OwnedFd) -> io::Result<()> {
    for name in foreign_xattrs(fd)? {
        rustix::fs::fremovexattr(fd, &name)?;
    }
    Ok(())
}

fn has_foreign_xattrs(fd: &OwnedFd) -> io::Result<bool> {
    Ok(!foreign_xattrs(fd)?.is_empty())
}

/// The names of the attributes `strip_xattrs` removes.
fn foreign_xattrs(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut buf = vec![0u8; 64 * 1024];
    let len = match rustix::fs::flistxattr(fd, &mut buf[..]) {
        Ok(len) => len,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    buf[..len]
        .split(|&b| b == 0)
        .filter(|name| {
            name.starts_with(b"user.")
                || name.starts_with(b"trusted.")
                || name.starts_with(b"system.posix_acl_")
        })
        .map(|name| CString::new(name).map_err(io::Error::other))
        .collect()
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(Into::into)
}

/// Opens the directory `name` in `dir` for reading, never through a symlink. A
/// directory without read or search permission for us (`chmod 000`) gets owner
/// permissions first, through an `O_PATH` descriptor of that very directory.
fn open_subdir(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(rustix::io::Errno::ACCESS) => {}
        other => return other.map_err(Into::into),
    }
    let handle = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // `fchmod` refuses O_PATH descriptors; the /proc link resolves to the same inode.
    let proc_path = format!("/proc/self/fd/{}", handle.as_fd().as_raw_fd());
    rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(0o700))?;
    drop(handle);
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(Into::into)
}
