//! The repository's instruction files for agents (SPEC section 16): `AGENTS.md` at the
//! root and the nearest one above each file the task names, `CLAUDE.md`, and
//! `.github/copilot-instructions.md`, read from the default branch's commit (never from
//! a pull request's head, which anyone who can push to it could have edited), in that
//! order, at most [`MAX_BYTES`] in all: earlier files are kept whole and the first one
//! that does not fit is cut, the rest left out.

/// All instruction files together, at most (SPEC: 32 KiB).
pub const MAX_BYTES: usize = 32 * 1024;
/// Files the task may name, at most (each adds a few lookups).
const MAX_NAMED: usize = 20;

/// One instruction file as it goes into the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionFile {
    pub path: String,
    pub text: String,
    /// Cut to fit [`MAX_BYTES`].
    pub cut: bool,
}

/// Paths the task text names: words with a `/` or a `.` in them that look like
/// repository paths (`src/auth/login.rs`, `` `web/app.ts` ``, `README.md`), plus the file
/// of a review comment.
pub fn named_paths(task: &str, review_path: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let words = task
        .split(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '(' | ')' | ',' | ';'))
        .map(|w| w.trim_end_matches([':', '.', '!', '?']))
        .chain(review_path);
    for word in words {
        let word = word.trim_start_matches("./");
        let looks_like_path = (word.contains('/') || word.contains('.'))
            && !word.contains("://")
            && !word.starts_with(['/', '.', '-'])
            && !word.split('/').any(|part| part == "..")
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
        if looks_like_path && !out.iter().any(|p| p == word) && out.len() < MAX_NAMED {
            out.push(word.to_owned());
        }
    }
    out
}

/// The instruction files, read through `read` (a file's text at the default branch's
/// commit, `None` when it is not there).
pub fn gather(read: impl Fn(&str) -> Option<String>, named: &[String]) -> Vec<InstructionFile> {
    let mut paths: Vec<String> = vec!["AGENTS.md".to_owned()];
    for file in named {
        // The nearest AGENTS.md above the named file, below the root (already in).
        let mut dir = std::path::Path::new(file).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let candidate = format!("{}/AGENTS.md", d.to_string_lossy());
            if read(&candidate).is_some() {
                if !paths.contains(&candidate) {
                    paths.push(candidate);
                }
                break;
            }
            dir = d.parent();
        }
    }
    paths.push("CLAUDE.md".to_owned());
    paths.push(".github/copilot-instructions.md".to_owned());

    let mut out = Vec::new();
    let mut left = MAX_BYTES;
    for path in paths {
        let Some(text) = read(&path) else { continue };
        if text.trim().is_empty() {
            continue;
        }
        if text.len() <= left {
            left -= text.len();
            out.push(InstructionFile {
                path,
                text,
                cut: false,
            });
            continue;
        }
        let mut end = left;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end > 0 {
            out.push(InstructionFile {
                path,
                text: text[..end].to_owned(),
                cut: true,
            });
        }
        break;
    }
    out
}

/// The files as the prompt's section of repository guidance; empty without files.
pub fn render(files: &[InstructionFile]) -> String {
    let mut out = String::new();
    for f in files {
        out.push_str(&format!(
            "\nThe repository's guidance for agents ({}, from the default branch):\n{}\n",
            f.path,
            f.text.trim_end()
        ));
        if f.cut {
            out.push_str(&format!(
                "[{} was cut here: instruction files are limited to {} KiB in all]\n",
                f.path,
                MAX_BYTES / 1024
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tree(files: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect();
        move |p| map.get(p).cloned()
    }

    #[test]
    fn the_task_names_paths_not_urls_or_escapes() {
        assert_eq!(
            named_paths(
                "fix `src/auth/login.rs` and web/app.ts, see https://x.io/a.b and ../etc/passwd or /etc/x.",
                Some("lib/db/pool.go")
            ),
            ["src/auth/login.rs", "web/app.ts", "lib/db/pool.go"]
        );
    }

    #[test]
    fn files_come_in_order_with_the_nearest_agents_md_of_each_named_file() {
        let read = tree(&[
            ("AGENTS.md", "root rules".into()),
            ("src/AGENTS.md", "src rules".into()),
            ("src/auth/AGENTS.md", "auth rules".into()),
            ("CLAUDE.md", "claude rules".into()),
            (".github/copilot-instructions.md", "copilot rules".into()),
        ]);
        let files = gather(
            &read,
            &["src/auth/login.rs".into(), "src/db/pool.rs".into()],
        );
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "AGENTS.md",
                "src/auth/AGENTS.md",
                "src/AGENTS.md",
                "CLAUDE.md",
                ".github/copilot-instructions.md"
            ]
        );
        assert!(
            render(&files).contains("(src/auth/AGENTS.md, from the default branch):\nauth rules\n")
        );
    }

    #[test]
    fn earlier_files_are_kept_whole_within_32_kib() {
        let read = tree(&[
            ("AGENTS.md", "a".repeat(30 * 1024)),
            ("CLAUDE.md", "é".repeat(4 * 1024)),
            (".github/copilot-instructions.md", "never".into()),
        ]);
        let files = gather(&read, &[]);
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].text.len(), files[0].cut), (30 * 1024, false));
        assert!(files[1].cut);
        let total: usize = files.iter().map(|f| f.text.len()).sum();
        assert!(total <= MAX_BYTES && total > MAX_BYTES - 2, "{total}");
        assert!(render(&files).contains("CLAUDE.md was cut here"));
    }
}
