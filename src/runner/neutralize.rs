//! Neutralised bot text (SPEC section 14): what the agent wrote, before Repobox posts it
//! (pull/merge request title and body, the progress comment's summary, commit messages),
//! is made unable to page people, close issues or command other bots:
//! - `@mentions` go into code spans (`` `@name` ``), where neither forge pings anyone;
//! - a closing keyword (`close`, `fixes`, `resolved`, GitLab's `closing`/`implements`…,
//!   any case, with or without `:`) followed by references to issues other than the
//!   job's own has each of those references put in a code span (``Closes `#99` ``), for
//!   every form the forges close by: `#N`, `GH-N`, `owner/repo#N`, `project#N` and full
//!   issue, pull and merge request URLs. The job's own issue stays as written;
//! - a line starting with `/` (after optional spaces) is quoted (`> /lgtm`), so no bot
//!   reads it as a command (GitLab quick actions, Prow-style `/lgtm`, `/approve`). This
//!   holds inside fenced code blocks too: bots read the raw text.
//!
//! Text inside existing code spans and fenced code blocks is otherwise left alone (the
//! forges neither ping nor close from there). Outside them, a backtick that opens no code
//! span is escaped (`` \` ``), so it cannot pair with a backtick this module adds and
//! turn a neutralised mention back into text; numeric and named HTML entities for `@`
//! and `#` are decoded first, so `&#64;alice` is caught like `@alice`.
//!
//! Repobox's own template text (the requester's mention, the job's `Closes #N`) is not
//! passed through here: only the agent-derived parts are.

/// The issue a job works on: references to it may close it.
#[derive(Debug, Clone, Copy)]
pub struct OwnIssue<'a> {
    /// `owner/name` (GitHub) or the project path (GitLab).
    pub repo: &'a str,
    pub number: u64,
}

/// `text` with mentions, foreign closing references and command lines neutralised.
pub fn neutralize(text: &str, own: Option<OwnIssue<'_>>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut fence: Option<(u8, usize)> = None;
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        let body = match fence {
            Some((ch, len)) => {
                if fence_run(trimmed)
                    .is_some_and(|(c, l, rest)| c == ch && l >= len && rest.trim().is_empty())
                {
                    fence = None;
                }
                line.to_owned()
            }
            None => {
                if let Some((ch, len, _)) = fence_run(trimmed) {
                    fence = Some((ch, len));
                    line.to_owned()
                } else {
                    inline(line, own)
                }
            }
        };
        if body.trim_start_matches([' ', '\t']).starts_with('/') {
            out.push_str("> ");
        }
        out.push_str(&body);
    }
    out
}

/// A fence opener: three or more backticks or tildes; its char, length and the rest.
fn fence_run(line: &str) -> Option<(u8, usize, &str)> {
    let b = line.as_bytes();
    let ch = *b.first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = b.iter().take_while(|c| **c == ch).count();
    (len >= 3).then(|| (ch, len, &line[len..]))
}

/// One line outside a fenced block: code spans kept, the text between them neutralised.
fn inline(line: &str, own: Option<OwnIssue<'_>>) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 8);
    let mut text = String::new();
    let mut i = 0;
    let mut plain = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1).is_some_and(u8::is_ascii_punctuation) => i += 2,
            b'`' => {
                let run = b[i..].iter().take_while(|c| **c == b'`').count();
                text.push_str(&line[plain..i]);
                match closing_run(b, i + run, run) {
                    Some(end) => {
                        out.push_str(&text_part(&text, own));
                        text.clear();
                        out.push_str(&line[i..end]);
                        i = end;
                    }
                    None => {
                        // A backtick that opens nothing stays literal text.
                        for _ in 0..run {
                            text.push_str("\\`");
                        }
                        i += run;
                    }
                }
                plain = i;
            }
            _ => i += 1,
        }
    }
    text.push_str(&line[plain.min(line.len())..]);
    out.push_str(&text_part(&text, own));
    out
}

/// The end of the first run of exactly `run` backticks at or after `from`.
fn closing_run(b: &[u8], from: usize, run: usize) -> Option<usize> {
    let mut j = from;
    while j < b.len() {
        if b[j] == b'`' {
            let n = b[j..].iter().take_while(|c| **c == b'`').count();
            if n == run {
                return Some(j + n);
            }
            j += n;
        } else {
            j += 1;
        }
    }
    None
}

/// Decodes the HTML entities that spell `@` or `#` (`&#64;`, `&#x40;`, `&commat;`,
/// `&#35;`, `&num;`…), so an encoded mention or reference is seen as one.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (decoded, used) = entity(rest);
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `@`/`#` an entity at the start of `s` stands for, and its length.
fn entity(s: &str) -> (Option<char>, usize) {
    let lower = s.get(..10.min(s.len())).unwrap_or(s).to_ascii_lowercase();
    for (name, c) in [("&commat;", '@'), ("&num;", '#')] {
        if lower.starts_with(name) {
            return (Some(c), name.len());
        }
    }
    let b = s.as_bytes();
    if b.get(1) != Some(&b'#') {
        return (None, 0);
    }
    let (radix, start) = if matches!(b.get(2), Some(b'x' | b'X')) {
        (16, 3)
    } else {
        (10, 2)
    };
    let digits = b[start..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit() && (radix == 16 || c.is_ascii_digit()))
        .count();
    if digits == 0 || digits > 8 {
        return (None, 0);
    }
    let value = u32::from_str_radix(&s[start..start + digits], radix).ok();
    let mut used = start + digits;
    if b.get(used) == Some(&b';') {
        used += 1;
    }
    match value.and_then(char::from_u32) {
        Some(c @ ('@' | '#')) => (Some(c), used),
        _ => (None, 0),
    }
}

const KEYWORDS: [&str; 16] = [
    "implementing",
    "implemented",
    "implements",
    "implement",
    "resolving",
    "resolved",
    "resolves",
    "resolve",
    "closing",
    "closes",
    "closed",
    "close",
    "fixing",
    "fixes",
    "fixed",
    "fix",
];

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Text between code spans: mentions and foreign closing references into code spans.
fn text_part(raw: &str, own: Option<OwnIssue<'_>>) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let s = decode_entities(raw);
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let prev = i.checked_sub(1).map(|p| b[p]);
        if b[i] == b'@'
            && prev.is_none_or(|p| !(is_word(p) || matches!(p, b'/' | b'.' | b'-' | b'+')))
            && let Some(end) = mention_end(b, i + 1)
        {
            out.push_str(&s[copied..i]);
            // After a backslash the backtick would be escaped, not open a code span.
            if prev == Some(b'\\') {
                out.push(' ');
            }
            out.push('`');
            out.push_str(&s[i..end]);
            out.push('`');
            copied = end;
            i = end;
            continue;
        }
        if b[i].is_ascii_alphabetic()
            && prev.is_none_or(|p| !is_word(p))
            && let Some(kw_end) = keyword(b, i)
        {
            let mut j = kw_end;
            if b.get(j) == Some(&b':') {
                j += 1;
            }
            let after_space = skip_space(b, j);
            if after_space == j {
                i = kw_end;
                continue;
            }
            j = after_space;
            for word in ["issues", "issue"] {
                if starts_with_ci(&b[j..], word)
                    && b.get(j + word.len()).is_some_and(|c| !is_word(*c))
                {
                    let k = skip_space(b, j + word.len());
                    if k > j + word.len() {
                        j = k;
                    }
                    break;
                }
            }
            let mut any = false;
            while let Some((end, is_own)) = reference(&s, j, own) {
                any = true;
                if !is_own {
                    out.push_str(&s[copied..j]);
                    out.push('`');
                    out.push_str(&s[j..end]);
                    out.push('`');
                    copied = end;
                }
                j = end;
                let next = separator(b, j);
                if next == j || reference(&s, next, own).is_none() {
                    break;
                }
                j = next;
            }
            i = if any { j } else { kw_end };
            continue;
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

fn starts_with_ci(b: &[u8], word: &str) -> bool {
    b.len() >= word.len() && b[..word.len()].eq_ignore_ascii_case(word.as_bytes())
}

/// The end of a closing keyword starting at `i`, if one does (a whole word).
fn keyword(b: &[u8], i: usize) -> Option<usize> {
    KEYWORDS.iter().find_map(|k| {
        let end = i + k.len();
        (starts_with_ci(&b[i..], k) && b.get(end).is_none_or(|c| !is_word(*c))).then_some(end)
    })
}

fn skip_space(b: &[u8], mut j: usize) -> usize {
    while b.get(j).is_some_and(|c| *c == b' ' || *c == b'\t') {
        j += 1;
    }
    j
}

/// Past a list separator between references: spaces, an optional comma, an optional
/// `and`.
fn separator(b: &[u8], j: usize) -> usize {
    let mut k = skip_space(b, j);
    if b.get(k) == Some(&b',') {
        k = skip_space(b, k + 1);
    }
    if starts_with_ci(&b[k..], "and") && b.get(k + 3).is_some_and(|c| *c == b' ' || *c == b'\t') {
        k = skip_space(b, k + 3);
    }
    k
}

/// The end of a mention's name starting at `start` (after the `@`).
fn mention_end(b: &[u8], start: usize) -> Option<usize> {
    if !b
        .get(start)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        return None;
    }
    let mut end = start;
    while b
        .get(end)
        .is_some_and(|c| is_word(*c) || matches!(c, b'.' | b'-' | b'/'))
    {
        end += 1;
    }
    while end > start + 1 && matches!(b[end - 1], b'.' | b'-' | b'/') {
        end -= 1;
    }
    Some(end)
}

fn digits_at(b: &[u8], j: usize) -> Option<(u64, usize)> {
    let n = b[j.min(b.len())..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 || n > 18 || b.get(j + n).is_some_and(|c| is_word(*c)) {
        return None;
    }
    let value = std::str::from_utf8(&b[j..j + n]).ok()?.parse().ok()?;
    Some((value, j + n))
}

/// An issue reference at `j`: its end, and whether it is the job's own issue.
fn reference(s: &str, j: usize, own: Option<OwnIssue<'_>>) -> Option<(usize, bool)> {
    let b = s.as_bytes();
    let is_own = |repo: Option<&str>, n: u64| {
        own.is_some_and(|o| {
            o.number == n && repo.is_none_or(|r| r.trim_matches('/').eq_ignore_ascii_case(o.repo))
        })
    };
    if b.get(j) == Some(&b'#') {
        let (n, end) = digits_at(b, j + 1)?;
        return Some((end, is_own(None, n)));
    }
    if starts_with_ci(&b[j..], "gh-") {
        let (n, end) = digits_at(b, j + 3)?;
        return Some((end, is_own(None, n)));
    }
    if starts_with_ci(&b[j..], "http://") || starts_with_ci(&b[j..], "https://") {
        let mut end = j;
        while b
            .get(end)
            .is_some_and(|c| !c.is_ascii_whitespace() && !matches!(c, b')' | b'>' | b']' | b'"'))
        {
            end += 1;
        }
        while end > j && matches!(b[end - 1], b'.' | b',' | b';' | b':' | b'!' | b'?') {
            end -= 1;
        }
        let url = &s[j..end];
        let path = url.split_once("://")?.1;
        let path = path.split(['#', '?']).next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let n: u64 = segments.last()?.parse().ok()?;
        let kind = segments.len().checked_sub(2).map(|k| segments[k])?;
        if !matches!(
            kind,
            "issues" | "pull" | "pulls" | "merge_requests" | "work_items"
        ) {
            return None;
        }
        // host / owner… / repo / [-] / issues / N
        let mut repo_end = segments.len() - 2;
        if repo_end > 0 && segments[repo_end - 1] == "-" {
            repo_end -= 1;
        }
        let repo = segments.get(1..repo_end).map(|r| r.join("/"))?;
        return Some((end, is_own(Some(&repo), n)));
    }
    // owner/repo#N, group/sub/project#N, project#N
    let mut k = j;
    while b
        .get(k)
        .is_some_and(|c| is_word(*c) || matches!(c, b'.' | b'-' | b'/'))
    {
        k += 1;
    }
    if k == j || b.get(k) != Some(&b'#') || !b[j].is_ascii_alphanumeric() {
        return None;
    }
    let (n, end) = digits_at(b, k + 1)?;
    let repo = &s[j..k];
    // `project#N` names a sibling project: never the job's own repository's `#N`,
    // unless it spells the whole path.
    Some((end, is_own(Some(repo), n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: Option<OwnIssue<'static>> = Some(OwnIssue {
        repo: "acme/api",
        number: 12,
    });

    fn n(text: &str) -> String {
        neutralize(text, OWN)
    }

    #[test]
    fn mentions_go_into_code_spans() {
        assert_eq!(n("thanks @alice and @bob."), "thanks `@alice` and `@bob`.");
        assert_eq!(n("@org/team-a please"), "`@org/team-a` please");
        assert_eq!(n("@first.last_name-x"), "`@first.last_name-x`");
        assert_eq!(n("(@alice)"), "(`@alice`)");
        assert_eq!(
            n("mail me at dev@example.com"),
            "mail me at dev@example.com"
        );
        assert_eq!(n("a lone @ sign"), "a lone @ sign");
        assert_eq!(n("\\@alice"), "\\ `@alice`");
        assert_eq!(
            n("&#64;alice &#x40;bob &commat;carol"),
            "`@alice` `@bob` `@carol`"
        );
    }

    #[test]
    fn code_spans_and_fenced_blocks_are_left_alone() {
        assert_eq!(n("run `@alice` and ``x @y``"), "run `@alice` and ``x @y``");
        assert_eq!(
            n("```\n@alice\nCloses #99\n```\n@bob"),
            "```\n@alice\nCloses #99\n```\n`@bob`"
        );
        assert_eq!(
            n("~~~~\n@a\n~~~\n@b\n~~~~\n@c"),
            "~~~~\n@a\n~~~\n@b\n~~~~\n`@c`"
        );
    }

    #[test]
    fn a_stray_backtick_cannot_undo_a_neutralised_mention() {
        assert_eq!(n("x`@alice"), "x\\``@alice`");
        assert_eq!(n("x\\`@alice"), "x\\``@alice`");
    }

    #[test]
    fn foreign_closing_keywords_are_defanged_in_every_form() {
        assert_eq!(n("Closes #99"), "Closes `#99`");
        assert_eq!(n("fixes: #99"), "fixes: `#99`");
        assert_eq!(n("RESOLVED #1 and #2"), "RESOLVED `#1` and `#2`");
        assert_eq!(n("Fix #1, #2, and #3."), "Fix `#1`, `#2`, and `#3`.");
        assert_eq!(n("closing issue #5"), "closing issue `#5`");
        assert_eq!(n("Implements GH-7"), "Implements `GH-7`");
        assert_eq!(n("closes other/repo#4"), "closes `other/repo#4`");
        assert_eq!(n("Closes group/sub/proj#4"), "Closes `group/sub/proj#4`");
        assert_eq!(
            n("Fixes https://github.com/other/repo/issues/8."),
            "Fixes `https://github.com/other/repo/issues/8`."
        );
        assert_eq!(
            n("closed https://gitlab.example.com/g/p/-/issues/3"),
            "closed `https://gitlab.example.com/g/p/-/issues/3`"
        );
        assert_eq!(
            n("fixed https://github.com/acme/api/pull/30"),
            "fixed `https://github.com/acme/api/pull/30`"
        );
    }

    #[test]
    fn the_jobs_own_issue_and_other_words_stay() {
        assert_eq!(n("Closes #12"), "Closes #12");
        assert_eq!(n("closes acme/api#12"), "closes acme/api#12");
        assert_eq!(
            n("Fixes https://github.com/acme/api/issues/12"),
            "Fixes https://github.com/acme/api/issues/12"
        );
        assert_eq!(n("Closes #12 and #13"), "Closes #12 and `#13`");
        assert_eq!(n("closes other/api#12"), "closes `other/api#12`");
        assert_eq!(
            n("see #99; the fixture closes the file"),
            "see #99; the fixture closes the file"
        );
        assert_eq!(n("prefix #99"), "prefix #99");
        assert_eq!(n("Fixes the bug in #99"), "Fixes the bug in #99");
        assert_eq!(n("hotfixes #99"), "hotfixes #99");
        assert_eq!(neutralize("Closes #12", None), "Closes `#12`");
    }

    #[test]
    fn command_lines_are_quoted() {
        assert_eq!(n("/lgtm"), "> /lgtm");
        assert_eq!(n("Done.\n   /approve\nok"), "Done.\n>    /approve\nok");
        assert_eq!(n("```\n/close\n```"), "```\n> /close\n```");
        assert_eq!(n("/assign @alice"), "> /assign `@alice`");
        assert_eq!(n("a/b path and 1/2"), "a/b path and 1/2");
        assert_eq!(n("> /quoted already"), "> /quoted already");
    }

    #[test]
    fn neutralising_twice_changes_nothing_more() {
        for text in [
            "x`@alice and \\@bob",
            "Closes #99, #12 and other/repo#1",
            "/lgtm\n```\n/close @carol\n```",
            "&#64;dave fixes https://github.com/o/r/issues/3",
        ] {
            let once = n(text);
            assert_eq!(n(&once), once, "{text}");
        }
    }

    #[test]
    fn plain_text_passes_through() {
        let text = "Fix the README spelling\n\nCorrected the typo in README.md.\n";
        assert_eq!(n(text), text);
        assert_eq!(n("a & b &amp; c &#38;"), "a & b &amp; c &#38;");
        assert_eq!(n("ünïcödé @ü ok"), "ünïcödé @ü ok");
    }
}
