//! Protected paths (SPEC section 14): files that make the forge run code with the
//! repository's secrets, which a job may not change unless the admin setting
//! `allow_workflow_changes` is on.
//!
//! - GitHub: everything under `.github/workflows/` and `.github/actions/`.
//! - GitLab: `.gitlab-ci.yml` and every file it includes locally (`include: 'path'`,
//!   string lists, `include: {local: path}`, `include: [{local: path}]`), followed into
//!   the included files (up to [`MAX_INCLUDES`]), with GitLab's wildcards (`*`, `**`)
//!   and CI variables (`$VAR`, read as `*`) matched as globs. Remote, project, template
//!   and component includes are not files of this repository. The caller reads the
//!   configuration at the base and at the new head and passes both.
//!
//! What is checked is every path changed by the commits the job would push that are not
//! yet on the base: the agent's commit, and on a fork's pull/merge request every commit
//! since the merge base (see `Mirror::paths_changed`).

use crate::model::ForgeKind;

/// GitLab's CI configuration file.
pub const GITLAB_CI: &str = ".gitlab-ci.yml";

/// Most include files followed, over all nesting levels (GitLab's own limit is 150).
pub const MAX_INCLUDES: usize = 150;

/// The paths a forge protects, with the local includes of its CI configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    forge: ForgeKind,
    /// GitLab: local include patterns (no leading `/`).
    includes: Vec<String>,
}

impl Protected {
    pub fn new(forge: ForgeKind) -> Protected {
        Protected {
            forge,
            includes: Vec::new(),
        }
    }

    /// What is protected, for the refusal's text.
    pub fn description(&self) -> &'static str {
        match self.forge {
            ForgeKind::GitHub => "changes under `.github/workflows/` and `.github/actions/`",
            ForgeKind::GitLab => "changes to `.gitlab-ci.yml` and the files it includes",
        }
    }

    /// Adds the local includes of one CI configuration file's text.
    pub fn add_includes(&mut self, patterns: impl IntoIterator<Item = String>) {
        for p in patterns {
            if !self.includes.contains(&p) {
                self.includes.push(p);
            }
        }
    }

    pub fn includes(&self) -> &[String] {
        &self.includes
    }

    /// Whether a change to `path` (repo-relative) is refused.
    pub fn covers(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        match self.forge {
            ForgeKind::GitHub => [".github/workflows", ".github/actions"].iter().any(|dir| {
                path == *dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
            }),
            ForgeKind::GitLab => {
                path == GITLAB_CI || self.includes.iter().any(|p| glob_match(p, path))
            }
        }
    }

    /// The first of `paths` that is protected.
    pub fn first<'a>(&self, paths: &'a [String]) -> Option<&'a str> {
        paths.iter().map(String::as_str).find(|p| self.covers(p))
    }
}

/// The local include patterns of a GitLab CI file (every YAML document of it), with the
/// leading `/` removed and CI variables turned into `*`. Text that is not valid YAML
/// includes nothing.
pub fn local_includes(text: &str) -> Vec<String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        let Ok(value) = yaml_serde::Value::deserialize(doc) else {
            break;
        };
        if let Some(include) = value.get("include") {
            collect(include, &mut out);
        }
    }
    out
}

fn collect(value: &yaml_serde::Value, out: &mut Vec<String>) {
    use yaml_serde::Value;
    match value {
        // A bare string is a local file unless it is a URL (a remote include).
        Value::String(s) if !(s.starts_with("http://") || s.starts_with("https://")) => {
            push_pattern(s, out);
        }
        Value::Sequence(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Mapping(_) => {
            if let Some(Value::String(local)) = value.get("local") {
                push_pattern(local, out);
            }
        }
        Value::Tagged(t) => collect(&t.value, out),
        _ => {}
    }
}

fn push_pattern(raw: &str, out: &mut Vec<String>) {
    let p = variables_as_globs(raw.trim())
        .trim_start_matches('/')
        .to_owned();
    if !p.is_empty() && !out.contains(&p) {
        out.push(p);
    }
}

/// `$VAR` and `${VAR}` become `*`: the include's file is not known before the pipeline
/// runs, so every file it could name is protected.
fn variables_as_globs(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                chars.next();
            }
        }
        out.push('*');
    }
    out
}

/// Whether a pattern holds a wildcard (and so names no single file to follow).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// GitLab's include wildcards: `*` matches within one path segment, `**` across
/// segments; `?` one character. Anything else matches itself.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let mut rest = &p[2..];
                if rest.first() == Some(&b'/') {
                    // `**/` also matches no directory at all.
                    if go(&rest[1..], s) {
                        return true;
                    }
                    rest = &p[2..];
                }
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=s.len() {
                    if go(rest, &s[i..]) {
                        return true;
                    }
                    if s.get(i) == Some(&b'/') {
                        break;
                    }
                }
                false
            }
            Some(b'?') => s.first().is_some_and(|c| *c != b'/') && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_protects_workflows_and_actions() {
        let p = Protected::new(ForgeKind::GitHub);
        assert!(p.covers(".github/workflows/ci.yml"));
        assert!(p.covers(".github/actions/setup/action.yml"));
        assert!(p.covers(".github/workflows"));
        assert!(!p.covers(".github/CODEOWNERS"));
        assert!(!p.covers(".github/workflowsX/a"));
        assert!(!p.covers(".gitlab-ci.yml"));
        assert!(!p.covers("src/lib.rs"));
    }

    #[test]
    fn gitlab_includes_in_every_local_form() {
        let yml = r#"
include:
  - 'ci/one.yml'
  - /ci/two.yml
  - local: ci/three.yml
    rules:
      - if: $CI_COMMIT_BRANCH
  - remote: 'https://example.com/x.yml'
  - project: 'group/other'
    file: '/templates/y.yml'
  - template: Auto-DevOps.gitlab-ci.yml
  - component: gitlab.com/a/b@1.0
  - https://example.com/remote.yml
  - local: 'ci/$CI_COMMIT_REF_NAME/*.yml'
stages: [test]
"#;
        assert_eq!(
            local_includes(yml),
            ["ci/one.yml", "ci/two.yml", "ci/three.yml", "ci/*/*.yml"]
        );
        assert_eq!(local_includes("include: 'single.yml'"), ["single.yml"]);
        assert_eq!(local_includes("include:\n  local: /m.yml\n"), ["m.yml"]);
        assert_eq!(
            local_includes("spec:\n  inputs: {}\n---\ninclude: [{local: after-header.yml}]\n"),
            ["after-header.yml"]
        );
        assert!(local_includes("include: [unclosed").is_empty());
        assert!(local_includes("test:\n  script: make").is_empty());
    }

    #[test]
    fn gitlab_protects_the_ci_file_and_its_includes() {
        let mut p = Protected::new(ForgeKind::GitLab);
        p.add_includes(local_includes(
            "include:\n  - ci/build.yml\n  - local: 'ci/jobs/**/*.yml'\n",
        ));
        assert!(p.covers(".gitlab-ci.yml"));
        assert!(p.covers("ci/build.yml"));
        assert!(p.covers("ci/jobs/a/b/test.yml"));
        assert!(p.covers("ci/jobs/test.yml"));
        assert!(!p.covers("ci/other.yml"));
        assert!(!p.covers(".github/workflows/ci.yml"));
        let changed = vec!["README.md".to_owned(), "ci/build.yml".to_owned()];
        assert_eq!(p.first(&changed), Some("ci/build.yml"));
    }

    #[test]
    fn globs_match_like_gitlab() {
        assert!(glob_match("ci/*.yml", "ci/a.yml"));
        assert!(!glob_match("ci/*.yml", "ci/sub/a.yml"));
        assert!(glob_match("ci/**.yml", "ci/sub/a.yml"));
        assert!(glob_match("**/*.yml", "a.yml"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("exact.yml", "exact.yml"));
        assert!(!glob_match("exact.yml", "exact.yml.bak"));
    }
}
