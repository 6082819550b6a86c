//! Finds the Repobox command in a comment body.
//!
//! # Grammar
//!
//! A *command line* is a line whose first word is the trigger (by default
//! `/repobox`, compared case-insensitively) where:
//!
//! * the line is indented by at most three spaces (four spaces, or a tab,
//!   make an indented code block in Markdown);
//! * the first word is exactly the trigger: `/repoboxes` and `/repobox:` do
//!   not count;
//! * the start of the word is not inside a fenced or indented code block, a
//!   `>` block quote, an HTML block (such as a multi-line `<!-- ... -->`), an
//!   inline code span or inline HTML. These regions are found with
//!   `pulldown-cmark`'s offset iterator, so they follow CommonMark: a line
//!   right below a quoted line, with no blank line between, is a *lazy
//!   continuation* of the quote (GitHub renders it inside the quote) and is
//!   therefore not a command line either.
//!
//! Only the first command line of a body counts. Everything after the
//! trigger word — the rest of its line and all following lines, including
//! code blocks and further trigger lines — forms the instructions.
//!
//! The instructions are then classified:
//!
//! * a single keyword (`cancel`, `retry`, `help`, any case) and nothing else
//!   on the trigger line is that keyword command; following lines are ignored;
//! * a single word on the trigger line that is not a keyword but is within a
//!   small optimal-string-alignment distance of one (≤ 1 for words of up to
//!   four characters, ≤ 2 for longer words) is a [`ParseError::NearMiss`]
//!   carrying a "did you mean" suggestion;
//! * instructions that are a single word and nothing else (`/repobox stop`,
//!   `/repobox status`, or one word on the line below the trigger) are a
//!   [`ParseError::NotACommand`]: they read as a command Repobox does not
//!   have, so they get the help reply rather than a paid job (SPEC section 14);
//! * anything else, including nothing at all (work on the issue as written),
//!   is [`Command::Run`]: two words or more, or one word on the trigger line
//!   with more lines below it.
//!
//! So the keyword commands keep working as they are (they are matched
//! first), a mistyped one gets "did you mean", and any other lone word gets
//! the usage.
//!
//! Instructions are trimmed as a whole; inner lines are kept verbatim except
//! that `\r\n` and lone `\r` line endings become `\n`.
//!
//! # Edited comments
//!
//! [`parse_edited_command`] only fires when the edit *adds* a command line
//! that the previous body did not have. Command lines are compared after
//! normalisation (whitespace runs collapsed, case folded), so fixing a typo
//! below the command line, or changing only its spacing or case, does not
//! start another job. Changing the command line itself (`cancel` → `retry`,
//! or new words on the trigger line) does.
//!
//! # Help
//!
//! [`help_text`] is generated from the `command_help!` table below. That
//! macro writes, from a single list of rows, both an exhaustive `match` over
//! [`Command`] and the list of one example value per variant, so adding a
//! variant without a help row is a compile error, a help row cannot be
//! written without also listing its example, and an example that does not
//! match its row's pattern fails const evaluation.

use std::fmt;
use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag};

/// A command given to Repobox in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a job. Empty instructions mean "work on the issue".
    Run {
        /// Everything after the trigger, trimmed. Not yet sanitized: pass it
        /// through [`crate::commands::sanitize_untrusted`] before use.
        instructions: String,
    },
    /// Start a new job even while one runs on this thread (SPEC 16): a plain
    /// [`Command::Run`] is given to a running `claude` job instead.
    Queue {
        /// The text after `queue`, trimmed; not yet sanitized.
        instructions: String,
    },
    /// Cancel the job running for this thread.
    Cancel,
    /// Re-run the thread's last job.
    Retry,
    /// Reply with usage, see [`help_text`].
    Help,
}

impl Command {
    /// A short stable name for logs and metrics: `run`, `cancel`, `retry` or
    /// `help`. For keyword commands this is also the keyword.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Queue { .. } => "queue",
            Command::Cancel => "cancel",
            Command::Retry => "retry",
            Command::Help => "help",
        }
    }

    /// The word that selects this command after the trigger, if it is a
    /// keyword command.
    fn keyword(&self) -> Option<&'static str> {
        match self {
            Command::Run { .. } => None,
            Command::Queue { .. } | Command::Cancel | Command::Retry | Command::Help => {
                Some(self.name())
            }
        }
    }
}

/// Why a command line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The trigger was followed by a single word that looks like a mistyped
    /// keyword, e.g. `/repobox cancle`.
    NearMiss {
        /// The word as written in the comment.
        word: String,
        /// The keyword it most likely meant.
        suggestion: &'static str,
    },
    /// The instructions are one word that is no command, e.g. `/repobox stop`:
    /// too little to be a job, so the writer gets the usage.
    NotACommand {
        /// The word as written in the comment.
        word: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NearMiss { word, suggestion } => {
                write!(f, "unknown command `{word}`; did you mean `{suggestion}`?")
            }
            ParseError::NotACommand { word } => write!(f, "unknown command `{word}`"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Finds the first command in `body`.
///
/// Returns `None` when the body has no command line for `trigger` (or the
/// trigger is empty or contains whitespace, which can never match), and
/// otherwise the parsed command or the reason it was rejected.
pub fn parse_command(body: &str, trigger: &str) -> Option<Result<Command, ParseError>> {
    let line = command_lines(body, trigger).next()?;
    Some(classify(&body[line.rest..]))
}

/// Like [`parse_command`] for a comment that was edited from
/// `previous_body` to `body`.
///
/// Returns `None` unless the first command line of `body` is new, i.e. the
/// previous body had no command line with the same normalised text.
pub fn parse_edited_command(
    previous_body: &str,
    body: &str,
    trigger: &str,
) -> Option<Result<Command, ParseError>> {
    let line = command_lines(body, trigger).next()?;
    let key = normalize_line(&body[line.line]);
    if command_lines(previous_body, trigger)
        .any(|old| normalize_line(&previous_body[old.line]) == key)
    {
        return None;
    }
    Some(classify(&body[line.rest..]))
}

/// Markdown usage text for `trigger`, suitable as a reply to `help` and to
/// near misses.
pub fn help_text(trigger: &str) -> String {
    let trigger = trigger.trim();
    let mut out = format!(
        "Hi! I'm Repobox. Write a comment with a line starting with {} and I'll work on it:\n\n",
        code_span(trigger)
    );
    for cmd in help_examples() {
        let (syntax, description) = usage(&cmd);
        let syntax = if syntax.is_empty() {
            trigger.to_owned()
        } else {
            format!("{trigger} {syntax}")
        };
        out.push_str(&format!("- {}: {description}\n", code_span(&syntax)));
    }
    out.push_str(
        "\nAdding the Repobox label to an issue also starts a job. \
         Only people with write access to the repository can use these commands.\n",
    );
    out
}

/// Defines the help table: one row per [`Command`] variant, each with a
/// pattern, an example value, the syntax after the trigger and a
/// description.
///
/// It expands to `usage`, an exhaustive `match` (so a new variant without
/// a row fails to compile; never add a `_` row), `help_examples`, the
/// examples of the same rows in the same order (so every variant that has a
/// row is listed), and a compile-time check that each example matches the
/// pattern of its row.
macro_rules! command_help {
    ($($pattern:pat => $example:expr, $syntax:literal, $description:literal;)+) => {
        /// Syntax after the trigger and a description of `cmd`.
        fn usage(cmd: &Command) -> (&'static str, &'static str) {
            match cmd {
                $($pattern => ($syntax, $description),)+
            }
        }

        /// One example value per variant, in the order help lists them.
        fn help_examples() -> Vec<Command> {
            vec![$($example),+]
        }

        // Each example must match the pattern of its own row.
        $(const _: () = {
            let example = $example;
            assert!(matches!(&example, $pattern), "help example does not match its row");
            std::mem::forget(example);
        };)+
    };
}

command_help! {
    Command::Run { .. } => Command::Run { instructions: String::new() },
        "[instructions]",
        "start a job on this issue or pull request. Everything after the trigger, \
         including the following lines, is passed on as instructions; \
         with no instructions I work on the issue as written. While my job on this \
         thread is still working, the instructions are given to it instead.";
    Command::Queue { .. } => Command::Queue { instructions: String::new() },
        "queue [instructions]",
        "start a new job after the one running on this thread, instead of adding to it.";
    Command::Cancel => Command::Cancel,
        "cancel",
        "cancel the job running for this thread.";
    Command::Retry => Command::Retry,
        "retry",
        "run the last job of this thread again.";
    Command::Help => Command::Help,
        "help",
        "show this message.";
}

/// The keyword commands, derived from the help table.
fn keyword_commands() -> impl Iterator<Item = (&'static str, Command)> {
    help_examples()
        .into_iter()
        .filter_map(|cmd| cmd.keyword().map(|kw| (kw, cmd)))
}

/// Classifies `rest`, the text after the trigger word up to the end of the
/// body.
fn classify(rest: &str) -> Result<Command, ParseError> {
    let first_line = rest.split(['\n', '\r']).next().unwrap_or_default();
    // `queue` is the one keyword that takes instructions after it.
    let trimmed = rest.trim_start();
    if let Some(word) = trimmed.split_whitespace().next()
        && word.eq_ignore_ascii_case("queue")
        && trimmed.len() > word.len()
    {
        return Ok(Command::Queue {
            instructions: normalize_newlines(trimmed[word.len()..].trim()),
        });
    }
    let mut words = first_line.split_whitespace();
    if let (Some(word), None) = (words.next(), words.next()) {
        let lower = word.to_lowercase();
        if let Some((_, cmd)) = keyword_commands().find(|(kw, _)| *kw == lower) {
            return Ok(cmd);
        }
        if let Some(suggestion) = near_miss(&lower) {
            return Err(ParseError::NearMiss {
                word: word.to_owned(),
                suggestion,
            });
        }
    }
    let instructions = rest.trim();
    if !instructions.is_empty() && !instructions.contains(char::is_whitespace) {
        return Err(ParseError::NotACommand {
            word: instructions.to_owned(),
        });
    }
    Ok(Command::Run {
        instructions: normalize_newlines(instructions),
    })
}

/// The closest keyword to `word` (already lowercased) if it is within the
/// near-miss distance, preferring earlier keywords on ties.
fn near_miss(word: &str) -> Option<&'static str> {
    let max = if word.chars().count() <= 4 { 1 } else { 2 };
    keyword_commands()
        .map(|(kw, _)| (strsim::osa_distance(word, kw), kw))
        .filter(|&(distance, _)| distance <= max)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, kw)| kw)
}

/// Byte ranges of one command line in a body.
struct CommandLine {
    /// The whole line, without its line ending.
    line: Range<usize>,
    /// Where the text after the trigger word starts; it runs to the end of
    /// the body.
    rest: usize,
}

/// The command lines of `body`, in order.
fn command_lines<'a>(body: &'a str, trigger: &'a str) -> impl Iterator<Item = CommandLine> + 'a {
    let trigger = trigger.trim();
    let valid_trigger = !trigger.is_empty() && !trigger.contains(char::is_whitespace);
    // Parsing Markdown is only needed once a line looks like a command.
    let mut ignored: Option<Vec<Range<usize>>> = None;
    lines(body)
        .filter(move |_| valid_trigger)
        .filter_map(move |line| {
            let word_start = line.start + leading_spaces(&body[line.clone()])?;
            let word_len = body[word_start..line.end]
                .find(char::is_whitespace)
                .unwrap_or(line.end - word_start);
            let word = &body[word_start..word_start + word_len];
            if word.is_empty() || !eq_ignore_case(word, trigger) {
                return None;
            }
            let ignored = ignored.get_or_insert_with(|| ignored_ranges(body));
            if in_ranges(ignored, word_start) {
                return None;
            }
            Some(CommandLine {
                line: line.clone(),
                rest: word_start + word_len,
            })
        })
}

/// The number of leading spaces of `line` if it can hold a command: at most
/// three, and no tab before the first other character.
fn leading_spaces(line: &str) -> Option<usize> {
    let spaces = line.bytes().take_while(|&b| b == b' ').count();
    (spaces <= 3 && !line[spaces..].starts_with('\t')).then_some(spaces)
}

/// Ranges of `body` where a command line must not start: code blocks, block
/// quotes, HTML blocks, code spans and inline HTML. Sorted and merged, so
/// that [`in_ranges`] can search them.
fn ignored_ranges(body: &str) -> Vec<Range<usize>> {
    let ranges = Parser::new_ext(body, markdown_options())
        .into_offset_iter()
        .filter_map(|(event, range)| match event {
            Event::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_) | Tag::HtmlBlock)
            | Event::Code(_)
            | Event::InlineHtml(_)
            | Event::Html(_) => Some(range),
            _ => None,
        })
        .collect();
    merge_ranges(ranges)
}

/// Sorts `ranges` and merges those that overlap or touch.
pub(super) fn merge_ranges(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// Whether `pos` lies in one of the sorted, disjoint `ranges`.
pub(super) fn in_ranges(ranges: &[Range<usize>], pos: usize) -> bool {
    let next = ranges.partition_point(|range| range.end <= pos);
    ranges.get(next).is_some_and(|range| range.start <= pos)
}

/// GitHub-flavoured Markdown, as close as `pulldown-cmark` gets.
pub(super) fn markdown_options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_GFM
}

/// The byte ranges of the lines of `text`, without line endings. Lines end
/// at `\n`, `\r\n` or a lone `\r`, as in CommonMark.
fn lines(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let bytes = text.as_bytes();
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(text.len(), |i| start + i);
        let next = match bytes.get(end) {
            Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => end + 2,
            Some(_) => end + 1,
            None => end,
        };
        let line = start..end;
        start = next;
        Some(line)
    })
}

/// Case-insensitive comparison for the trigger word.
fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The form in which command lines are compared across edits.
fn normalize_line(line: &str) -> String {
    line.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Turns `\r\n` and lone `\r` line endings into `\n`.
fn normalize_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// `text` as a Markdown code span, with a fence longer than any backtick run
/// inside it.
fn code_span(text: &str) -> String {
    let longest_run = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest_run + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "/repobox";

    fn run(instructions: &str) -> Option<Result<Command, ParseError>> {
        Some(Ok(Command::Run {
            instructions: instructions.to_owned(),
        }))
    }

    fn not_a_command(word: &str) -> Option<Result<Command, ParseError>> {
        Some(Err(ParseError::NotACommand {
            word: word.to_owned(),
        }))
    }

    fn near(word: &str, suggestion: &'static str) -> Option<Result<Command, ParseError>> {
        Some(Err(ParseError::NearMiss {
            word: word.to_owned(),
            suggestion,
        }))
    }

    #[test]
    fn plain_and_empty_runs() {
        assert_eq!(parse_command("/repobox fix the bug", T), run("fix the bug"));
        assert_eq!(parse_command("/repobox", T), run(""));
        assert_eq!(parse_command("/repobox   \n  \n", T), run(""));
        assert_eq!(parse_command("/repobox\tfix it", T), run("fix it"));
    }

    #[test]
    fn instructions_span_following_lines_verbatim() {
        let body = "Thanks!\n/repobox please:\n  - keep `this`\n\n```rust\nfn x() {}\n```\n\n";
        assert_eq!(
            parse_command(body, T),
            run("please:\n  - keep `this`\n\n```rust\nfn x() {}\n```")
        );
        assert_eq!(parse_command("/repobox\nfix it", T), run("fix it"));
    }

    #[test]
    fn keywords_any_case() {
        assert_eq!(
            parse_command("/repobox cancel", T),
            Some(Ok(Command::Cancel))
        );
        assert_eq!(
            parse_command("/repobox RETRY  ", T),
            Some(Ok(Command::Retry))
        );
        assert_eq!(parse_command("/Repobox Help", T), Some(Ok(Command::Help)));
        assert_eq!(
            parse_command("/repobox cancel\nplease, it is stuck", T),
            Some(Ok(Command::Cancel))
        );
    }

    #[test]
    fn keyword_with_trailing_text_is_a_run() {
        assert_eq!(
            parse_command("/repobox cancel the flaky test", T),
            run("cancel the flaky test")
        );
        // A keyword counts on the trigger line only; alone below it, it is one word.
        assert_eq!(
            parse_command("/repobox\ncancel", T),
            not_a_command("cancel")
        );
        assert_eq!(parse_command("/repobox\ncancel it", T), run("cancel it"));
    }

    #[test]
    fn near_misses() {
        assert_eq!(
            parse_command("/repobox cancle", T),
            near("cancle", "cancel")
        );
        assert_eq!(parse_command("/repobox hlep", T), near("hlep", "help"));
        assert_eq!(parse_command("/repobox rety", T), near("rety", "retry"));
        assert_eq!(parse_command("/repobox Retyr", T), near("Retyr", "retry"));
        assert_eq!(
            parse_command("/repobox cancel.", T),
            near("cancel.", "cancel")
        );
        assert_eq!(parse_command("/repobox cncl", T), not_a_command("cncl"));
    }

    #[test]
    fn near_miss_thresholds() {
        // Four characters: distance 1 is a near miss, 2 is not.
        assert_eq!(parse_command("/repobox hepl", T), near("hepl", "help"));
        assert_eq!(parse_command("/repobox hxyp", T), not_a_command("hxyp"));
        // Five or more: distance 2 is a near miss, 3 is not.
        assert_eq!(
            parse_command("/repobox cancxx", T),
            near("cancxx", "cancel")
        );
        assert_eq!(parse_command("/repobox canxxx", T), not_a_command("canxxx"));
    }

    #[test]
    fn a_single_word_that_is_no_command_is_not_a_job() {
        for word in [
            "stop",
            "status",
            "Status",
            "refactor",
            "fix",
            "cancelled",
            "helpers",
            "status?",
        ] {
            let body = format!("/repobox {word}");
            assert_eq!(parse_command(&body, T), not_a_command(word), "{word}");
            let body = format!("Hi!\n/repobox   {word}  \n\n");
            assert_eq!(parse_command(&body, T), not_a_command(word), "{word}");
        }
        assert_eq!(
            ParseError::NotACommand {
                word: "stop".into()
            }
            .to_string(),
            "unknown command `stop`"
        );
    }

    #[test]
    fn multi_word_instructions_are_runs() {
        assert_eq!(
            parse_command("/repobox fix the flaky login test", T),
            run("fix the flaky login test")
        );
        assert_eq!(parse_command("/repobox stop it", T), run("stop it"));
        // One word on the trigger line with more below is instructions too.
        assert_eq!(
            parse_command("/repobox refactor\n\nSplit `login` in two.", T),
            run("refactor\n\nSplit `login` in two.")
        );
        // Nothing at all: work on the issue as written.
        assert_eq!(parse_command("/repobox", T), run(""));
    }

    #[test]
    fn near_miss_display() {
        let err = ParseError::NearMiss {
            word: "cancle".into(),
            suggestion: "cancel",
        };
        assert_eq!(
            err.to_string(),
            "unknown command `cancle`; did you mean `cancel`?"
        );
    }

    #[test]
    fn trigger_must_be_the_whole_first_word() {
        assert_eq!(parse_command("/repoboxes x", T), None);
        assert_eq!(parse_command("/repobox: x", T), None);
        assert_eq!(parse_command("please /repobox fix", T), None);
        assert_eq!(parse_command("`/repobox fix`", T), None);
        assert_eq!(parse_command("- /repobox fix", T), None);
    }

    #[test]
    fn indentation() {
        assert_eq!(parse_command("   /repobox fix it", T), run("fix it"));
        assert_eq!(parse_command("    /repobox fix", T), None);
        assert_eq!(parse_command("\t/repobox fix", T), None);
        assert_eq!(parse_command("  \t/repobox fix", T), None);
        // Four spaces after a paragraph are a lazy continuation, not code,
        // but the rule is about the line itself.
        assert_eq!(parse_command("text\n    /repobox fix", T), None);
    }

    #[test]
    fn ignored_markdown_regions() {
        assert_eq!(parse_command("```\n/repobox fix\n```", T), None);
        assert_eq!(parse_command("~~~sh\n/repobox fix\n~~~", T), None);
        assert_eq!(parse_command("text\n\n    /repobox fix", T), None);
        assert_eq!(parse_command("> /repobox fix", T), None);
        assert_eq!(parse_command("> > /repobox fix", T), None);
        assert_eq!(parse_command("> quoted\n/repobox lazy", T), None);
        assert_eq!(parse_command("<!--\n/repobox fix\n-->", T), None);
        assert_eq!(parse_command("Hi <!--\n/repobox fix\n--> there", T), None);
        assert_eq!(parse_command("See `code\n/repobox fix` here", T), None);
        assert_eq!(parse_command("<div>\n/repobox fix\n</div>", T), None);
        // Unclosed fences run to the end of the body.
        assert_eq!(parse_command("```\n\n/repobox fix", T), None);
    }

    #[test]
    fn commands_next_to_ignored_regions() {
        assert_eq!(
            parse_command("```\nx\n```\n/repobox fix it", T),
            run("fix it")
        );
        assert_eq!(
            parse_command("> quoted\n\n/repobox fix it", T),
            run("fix it")
        );
        assert_eq!(
            parse_command("<!-- note -->\n/repobox fix it", T),
            run("fix it")
        );
        assert_eq!(
            parse_command(
                "<details>\n<summary>Log</summary>\n\n/repobox fix\n</details>",
                T
            ),
            run("fix\n</details>")
        );
        assert_eq!(
            parse_command("- item\n\n  /repobox fix it", T),
            run("fix it")
        );
    }

    #[test]
    fn only_first_command_counts() {
        assert_eq!(
            parse_command("/repobox cancel\n/repobox retry", T),
            Some(Ok(Command::Cancel))
        );
        assert_eq!(
            parse_command("/repobox fix a\n/repobox retry", T),
            run("fix a\n/repobox retry")
        );
        assert_eq!(
            parse_command("```\n/repobox cancel\n```\n/repobox retry", T),
            Some(Ok(Command::Retry))
        );
    }

    #[test]
    fn line_endings() {
        assert_eq!(
            parse_command("hi\r\n/repobox fix\r\nthe test\r\n", T),
            run("fix\nthe test")
        );
        assert_eq!(
            parse_command("hi\r/repobox cancel\r", T),
            Some(Ok(Command::Cancel))
        );
        assert_eq!(parse_command("```\r\n/repobox fix\r\n```\r\n", T), None);
    }

    #[test]
    fn custom_triggers() {
        assert_eq!(parse_command("@Bot fix it", "@bot"), run("fix it"));
        assert_eq!(
            parse_command("@bot cancel", " @BOT "),
            Some(Ok(Command::Cancel))
        );
        assert_eq!(parse_command("/repobox fix", "@bot"), None);
        assert_eq!(parse_command("/repobox fix", ""), None);
        assert_eq!(parse_command("/repobox fix", "  "), None);
        assert_eq!(parse_command("hey bot fix", "hey bot"), None);
        assert_eq!(parse_command("/RÉPOBOX fix it", "/répobox"), run("fix it"));
    }

    #[test]
    fn no_command() {
        assert_eq!(parse_command("", T), None);
        assert_eq!(parse_command("LGTM, thanks!", T), None);
        assert_eq!(parse_command("\n\n", T), None);
    }

    #[test]
    fn edits() {
        let before = "/repobox fix the tset\nThanks";
        // Nothing changed.
        assert_eq!(parse_edited_command(before, before, T), None);
        // A typo fixed outside the command line.
        assert_eq!(
            parse_edited_command(before, "/repobox fix the tset\nThanks!", T),
            None
        );
        assert_eq!(
            parse_edited_command("/repobox\nfix the tset", "/repobox\nfix the test", T),
            None
        );
        // Only spacing or case changed on the command line.
        assert_eq!(
            parse_edited_command(before, "  /Repobox  fix the  tset\nThanks", T),
            None
        );
        // A command added to a comment without one.
        assert_eq!(
            parse_edited_command("Looks wrong.", "Looks wrong.\n/repobox fix it", T),
            run("fix it")
        );
        // The command changed.
        assert_eq!(
            parse_edited_command("/repobox cancel", "/repobox retry", T),
            Some(Ok(Command::Retry))
        );
        // A near miss corrected.
        assert_eq!(
            parse_edited_command("/repobox cancle", "/repobox cancel", T),
            Some(Ok(Command::Cancel))
        );
        // A command taken out of a code block.
        assert_eq!(
            parse_edited_command("```\n/repobox fix it\n```", "/repobox fix it", T),
            run("fix it")
        );
        // A command removed.
        assert_eq!(parse_edited_command("/repobox fix", "never mind", T), None);
        // The previous first command removed, a later existing line now first.
        assert_eq!(
            parse_edited_command("/repobox fix a\n/repobox fix b", "/repobox fix b", T),
            None
        );
        // A second command appended after an existing first one.
        assert_eq!(
            parse_edited_command("/repobox cancel", "/repobox cancel\n/repobox retry", T),
            None
        );
    }

    #[test]
    fn large_bodies_are_fast() {
        let quoted = "> /repobox fix `a`\n".repeat(20_000);
        let start = std::time::Instant::now();
        assert_eq!(parse_edited_command(&quoted, &quoted, T), None);
        let inline = "`x` /repobox\n/repobox fix\n".repeat(20_000);
        assert_eq!(parse_edited_command(&inline, &inline, T), None);
        let elapsed = start.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn names() {
        assert_eq!(run("x").unwrap().unwrap().name(), "run");
        assert_eq!(Command::Cancel.name(), "cancel");
        assert_eq!(Command::Retry.name(), "retry");
        assert_eq!(Command::Help.name(), "help");
    }

    #[test]
    fn help_table_is_consistent() {
        let names: Vec<_> = help_examples().iter().map(Command::name).collect();
        assert_eq!(names, ["run", "queue", "cancel", "retry", "help"]);
        let keywords: Vec<_> = keyword_commands().map(|(kw, _)| kw).collect();
        assert_eq!(keywords, ["queue", "cancel", "retry", "help"]);
    }

    #[test]
    fn queue_takes_the_instructions_after_it() {
        let queue = |text: &str| {
            Some(Ok(Command::Queue {
                instructions: text.to_owned(),
            }))
        };
        assert_eq!(
            parse_command("/repobox queue also bump the MSRV\nand the docs", T),
            queue("also bump the MSRV\nand the docs")
        );
        assert_eq!(parse_command("/repobox QUEUE  fix it", T), queue("fix it"));
        assert_eq!(parse_command("/repobox queue", T), queue(""));
        assert_eq!(parse_command("/repobox queu", T), near("queu", "queue"));
        // Only as the first word.
        assert_eq!(
            parse_command("/repobox fix the queue", T),
            Some(Ok(Command::Run {
                instructions: "fix the queue".into()
            }))
        );
    }

    #[test]
    fn help_mentions_every_command_with_the_trigger() {
        let help = help_text("@bot");
        for cmd in help_examples() {
            let (syntax, _) = usage(&cmd);
            assert!(help.contains(&format!("`@bot {syntax}`")), "{help}");
        }
        assert!(help.contains("label"));
        assert!(help.contains("write access"));
        assert!(!help.contains("/repobox"));
    }

    #[test]
    fn code_spans() {
        assert_eq!(code_span("/repobox"), "`/repobox`");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x"), "`` `x ``");
    }

    #[test]
    fn range_lookup() {
        let ranges = [2..4, 6..7];
        let hits: Vec<_> = (0..8).filter(|&pos| in_ranges(&ranges, pos)).collect();
        assert_eq!(hits, [2, 3, 6]);
        let body = "> a\n> > b\n> ```\n> c\n> ```\n\nd `e` f\n";
        let d = body.find('d').unwrap();
        assert_eq!(ignored_ranges(body), [0..d - 1, d + 2..d + 5]);
    }

    #[test]
    fn line_splitting() {
        let text = "a\r\nb\rc\n\nd";
        let got: Vec<_> = lines(text).map(|r| &text[r]).collect();
        assert_eq!(got, ["a", "b", "c", "", "d"]);
    }

    /// One realistic comment body and what it parses to.
    #[derive(Debug)]
    #[allow(dead_code)] // Only read through `Debug`.
    struct Case {
        trigger: &'static str,
        body: &'static str,
        parsed: Option<Result<Command, ParseError>>,
    }

    const SNAPSHOT_CASES: &[(&str, &str, &str)] = &[
        ("plain_run", T, "/repobox fix the flaky login test"),
        ("empty_run", T, "/repobox"),
        (
            "multi_line_instructions",
            T,
            "/repobox add a `--json` flag to `repobox status`\n\n\
             - print one object per job\n\
             - keep the table output as the default\n",
        ),
        (
            "instructions_with_code_block",
            T,
            "/repobox make this compile:\n\n```rust\nlet x: u8 = 256;\n```\n",
        ),
        ("case_insensitive_trigger", T, "/RepoBox Update the README"),
        ("custom_trigger", "@bot", "@bot bump the MSRV to 1.85"),
        ("custom_trigger_keyword", "@bot", "@BOT Cancel"),
        ("cancel", T, "/repobox cancel"),
        ("retry", T, "/repobox retry"),
        ("help", T, "/repobox help"),
        (
            "keyword_ignores_following_lines",
            T,
            "/repobox cancel\nIt's been stuck for an hour.",
        ),
        (
            "keyword_with_trailing_text",
            T,
            "/repobox retry with more logging",
        ),
        ("near_miss_cancle", T, "/repobox cancle"),
        ("near_miss_hlep", T, "/repobox hlep"),
        ("near_miss_rety", T, "/repobox rety"),
        ("single_word_refactor", T, "/repobox refactor"),
        ("single_word_docs", T, "/repobox docs"),
        (
            "backtick_fence",
            T,
            "To start a job, write:\n\n```\n/repobox fix it\n```\n",
        ),
        ("tilde_fence", T, "~~~markdown\n/repobox cancel\n~~~\n"),
        ("indented_code", T, "Example:\n\n    /repobox fix it\n"),
        ("block_quote", T, "> /repobox fix the typo\n"),
        (
            "html_comment",
            T,
            "<!--\nIssue template: comment with\n/repobox do something\n-->\nThe button is misaligned.\n",
        ),
        (
            "quote_lazy_continuation",
            T,
            "> Can someone look at this?\n/repobox look at this\n",
        ),
        (
            "details_block",
            T,
            "<details>\n<summary>Full log</summary>\n\n```\npanicked at src/main.rs:3\n```\n</details>\n\n/repobox fix the panic\n",
        ),
        (
            "command_after_quote",
            T,
            "> Can someone look at this?\n\n/repobox look at this\n",
        ),
        ("trigger_not_first_word", T, "Could you /repobox fix this?"),
        ("inline_code", T, "`/repobox fix` is how you start a job."),
        ("trigger_prefix", T, "/repoboxes are great"),
        ("trigger_with_colon", T, "/repobox: fix it"),
        ("four_spaces", T, "    /repobox fix it"),
        (
            "crlf_body",
            T,
            "Thanks for the report.\r\n\r\n/repobox fix the parser\r\nand add a test\r\n",
        ),
        ("two_commands", T, "/repobox retry\n/repobox cancel\n"),
        ("empty_body", T, ""),
        (
            "github_reply_with_quoted_command",
            T,
            "> /repobox fix the login test\n>\n> Opened #42 with a fix.\n\n\
             Thanks! That broke the signup page though, see the log:\n\n\
             ```\nError: signup.spec.ts:12 expected 200, got 500\n```\n\n\
             /repobox retry\n",
        ),
        (
            "github_reply_with_new_instructions",
            T,
            "> /repobox cancel\n\nActually, let's keep going but differently:\n\n\
             /repobox Use the existing `retry` helper instead of a new loop.\n\
             Don't touch the public API.\n",
        ),
    ];

    #[test]
    fn snapshots() {
        for &(name, trigger, body) in SNAPSHOT_CASES {
            let case = Case {
                trigger,
                body,
                parsed: parse_command(body, trigger),
            };
            insta::assert_debug_snapshot!(name, case);
        }
    }

    #[test]
    fn help_snapshot() {
        insta::assert_snapshot!(help_text("/repobox"));
    }
}
