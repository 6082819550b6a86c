//! The text Repobox posts on a thread: the one progress comment per job (SPEC section 5)
//! and short replies (help, did-you-mean, nothing to cancel). Pure functions of the job,
//! so the acknowledger and the runner render the same comment.

use crate::commands;
use crate::job::Job;
use crate::model::{ForgeKind, ThreadKind};

/// The invisible marker every progress comment carries (SPEC section 13), by which a
/// re-run acknowledgement or runner finds the comment an earlier attempt posted.
pub fn marker(job: crate::job::JobId) -> String {
    format!("<!-- repobox:job:{job} -->")
}

fn header(job: &Job, public_url: &str) -> String {
    let url = public_url.trim_end_matches('/');
    format!(
        "{marker}\n**Repobox** · job `{id}` · [live log]({url}/jobs/{id})",
        marker = marker(job.id),
        id = job.id
    )
}

fn change_request_name(job: &Job) -> &'static str {
    match job.repo.forge {
        ForgeKind::GitHub => "pull request",
        ForgeKind::GitLab => "merge request",
    }
}

fn checklist(job: &Job) -> String {
    let last = if job.thread.kind == ThreadKind::Issue {
        format!("Open {}", change_request_name(job))
    } else {
        format!("Update this {}", change_request_name(job))
    };
    format!(
        "- [x] Queued — requested by {by}\n\
         - [ ] Clone `{repo}`\n\
         - [ ] Agent working\n\
         - [ ] Push branch\n\
         - [ ] {last}",
        by = job.requested_by(),
        repo = job.repo.full_name,
    )
}

/// The progress comment as the acknowledger first posts it.
pub fn queued(job: &Job, public_url: &str) -> String {
    format!("{}\n\n{}\n", header(job, public_url), checklist(job))
}

/// Final state after a cancel that reached the job before any runner took it.
pub fn cancelled(job: &Job, public_url: &str, by: &str) -> String {
    format!(
        "{}\n\n**Cancelled** by @{by} before it started. Nothing was changed.\n",
        header(job, public_url)
    )
}

/// Reply to `<trigger> help`.
pub fn help(trigger: &str) -> String {
    commands::help_text(trigger)
}

/// Reply to a near miss such as `/repobox cancle`.
pub fn near_miss(trigger: &str, word: &str, suggestion: &str) -> String {
    format!(
        "Unknown command `{word}`. Did you mean `{trigger} {suggestion}`?\n\n{}",
        commands::help_text(trigger)
    )
}

/// Reply to `cancel` when the thread has nothing queued or running.
pub fn nothing_to_cancel(trigger: &str) -> String {
    format!(
        "There is no queued or running Repobox job on this thread to cancel. (`{trigger} help` lists the commands.)"
    )
}

/// Reply to `retry` on a thread that never had a job.
pub fn nothing_to_retry(trigger: &str) -> String {
    format!(
        "There is no earlier Repobox job on this thread to retry. Start one with `{trigger} <instructions>`."
    )
}

/// Reply to `cancel` of a running job: the runner stops it and writes the final state.
pub fn cancel_requested(job: &Job) -> String {
    format!(
        "Cancelling job `{}`; its progress comment will show when it has stopped.",
        job.id
    )
}

/// Where a running job stands, for the progress comment's checklist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checklist {
    /// Short SHA the work tree was prepared at.
    pub cloned_at: Option<String>,
    pub agent: StepState,
    /// What the agent is doing, while it works (see [`activity_text`]).
    pub agent_detail: Option<String>,
    /// The branch the job pushes to, once chosen.
    pub branch: Option<String>,
    pub pushed: bool,
    /// Link to the pull/merge request, once opened (or found).
    pub change_request: Option<String>,
    /// `host:port` of every connection the sandbox's egress proxy refused, in order,
    /// without repeats (SPEC section 15).
    pub refused: Vec<String>,
    /// The last round of the repository's checks, when they ran (SPEC section 16).
    pub checks: Vec<crate::agent::CheckResult>,
    /// Who added instructions to the running agent (SPEC 16), once each, in order.
    pub steered_by: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StepState {
    #[default]
    Pending,
    Active,
    Done,
}

/// How a job ended, for the final progress comment (SPEC section 5).
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    Succeeded {
        url: String,
        number: u64,
        /// The commits went onto an existing pull/merge request.
        updated_existing: bool,
    },
    NoChanges,
    Failed {
        error: String,
    },
    Cancelled,
    Rejected {
        reason: String,
    },
}

fn mark(done: bool) -> &'static str {
    if done { "[x]" } else { "[ ]" }
}

fn checklist_lines(job: &Job, c: &Checklist) -> String {
    let name = change_request_name(job);
    let cloned = match &c.cloned_at {
        Some(sha) => format!("- [x] Cloned `{}` at `{sha}`", job.repo.full_name),
        None => format!("- [ ] Clone `{}`", job.repo.full_name),
    };
    let agent = match c.agent {
        StepState::Pending => "- [ ] Agent".to_owned(),
        StepState::Active => match &c.agent_detail {
            Some(detail) => format!("- [ ] Agent working… {detail}"),
            None => "- [ ] Agent working…".to_owned(),
        },
        StepState::Done if c.steered_by.is_empty() => "- [x] Agent finished".to_owned(),
        StepState::Done => format!("- [x] Agent finished · {}", steered_text(&c.steered_by)),
    };
    let push = match &c.branch {
        Some(b) => format!("- {} Push branch `{b}`", mark(c.pushed)),
        None => "- [ ] Push branch".to_owned(),
    };
    let open = match &c.change_request {
        Some(url) => format!("- [x] [{}]({url})", capitalise(name)),
        None if job.thread.kind == ThreadKind::Issue => format!("- [ ] Open {name}"),
        None => format!("- [ ] Update this {name}"),
    };
    format!(
        "- [x] Queued — requested by {}\n{cloned}\n{agent}\n{push}\n{open}",
        job.requested_by()
    )
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The progress comment while a runner works on the job.
pub fn running(job: &Job, public_url: &str, c: &Checklist) -> String {
    format!(
        "{}\n\n{}\n",
        header(job, public_url),
        checklist_lines(job, c)
    )
}

/// `1m 05s` style.
pub fn duration_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// `12.3k`-style token counts.
fn tokens(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

fn dollars(usd: f64) -> String {
    if usd < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// The tool call shown in the comment: one line, no backticks (it sits in a code span,
/// where mentions and links do nothing), cut short.
fn action_text(action: &str) -> String {
    let line = action.lines().next().unwrap_or("").replace('`', "'");
    let mut cut: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        cut.push('…');
    }
    cut
}

/// The live part of the agent's checklist line: `· turn 4 · 7 tool calls · last: `$
/// cargo test` · 52.1k tokens · $0.09`. `None` for an agent that reports nothing.
pub fn activity_text(a: &crate::agent::Activity) -> Option<String> {
    if a.turns == 0 && a.tool_calls == 0 {
        return None;
    }
    let mut parts = vec![format!("turn {}", a.turns)];
    if a.tool_calls > 0 {
        parts.push(format!(
            "{} tool call{}",
            a.tool_calls,
            if a.tool_calls == 1 { "" } else { "s" }
        ));
    }
    if let Some(action) = &a.last_action {
        parts.push(format!("last: `{}`", action_text(action)));
    }
    let u = &a.usage;
    let total = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens;
    if total > 0 {
        parts.push(format!("{} tokens", tokens(total)));
    }
    if let Some(cost) = a.cost_usd {
        parts.push(dollars(cost));
    }
    if !a.steered_by.is_empty() {
        parts.push(steered_text(&a.steered_by));
    }
    Some(format!("· {}", parts.join(" · ")))
}

/// `steered by @alice, @bob`: each login once, in order.
fn steered_text(logins: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for login in logins {
        if !seen.contains(&login.as_str()) {
            seen.push(login);
        }
    }
    let named: Vec<String> = seen.iter().map(|l| format!("@{l}")).collect();
    format!("steered by {}", named.join(", "))
}

/// Tokens and cost, or a plain statement that this agent reports none.
pub fn cost_text(job: &Job) -> String {
    let input = job.input_tokens + job.cache_read_tokens + job.cache_write_tokens;
    if input == 0 && job.output_tokens == 0 {
        return "tokens not reported by this agent".to_owned();
    }
    let cached = if job.cache_read_tokens > 0 {
        format!(" ({} from cache)", tokens(job.cache_read_tokens))
    } else {
        String::new()
    };
    let cost = match (job.cost_usd, &job.model) {
        (Some(usd), _) => dollars(usd),
        (None, Some(model)) => format!("cost unknown: no price for `{model}`"),
        (None, None) => "cost unknown".to_owned(),
    };
    format!(
        "{} tokens in{cached}, {} out · {cost}",
        tokens(input),
        tokens(job.output_tokens)
    )
}

fn reference(job: &Job, number: u64) -> String {
    match job.repo.forge {
        ForgeKind::GitHub => format!("#{number}"),
        ForgeKind::GitLab => format!("!{number}"),
    }
}

/// The final progress comment. `duration` is the job's run time.
pub fn finished(
    job: &Job,
    public_url: &str,
    trigger: &str,
    c: &Checklist,
    outcome: &Final,
    duration: std::time::Duration,
) -> String {
    let name = change_request_name(job);
    let url = public_url.trim_end_matches('/');
    let log = format!("{url}/jobs/{}", job.id);
    let summary = job
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("\n\n{s}"))
        .unwrap_or_default();
    // A job that ends early was billed for what its agent did so far.
    let billed = if job.output_tokens > 0 {
        format!(" · {}", cost_text(job))
    } else {
        String::new()
    };
    let headline = match outcome {
        Final::Succeeded {
            url,
            number,
            updated_existing,
        } => {
            let verb = if *updated_existing {
                "Pushed to"
            } else {
                "Opened"
            };
            format!(
                "✅ **{verb} {name} [{r}]({url})** · {files} file{s} changed (+{add} −{del}) · {time} · {cost}{summary}",
                r = reference(job, *number),
                files = job.files_changed,
                s = if job.files_changed == 1 { "" } else { "s" },
                add = job.additions,
                del = job.deletions,
                time = duration_text(duration),
                cost = cost_text(job),
            )
        }
        Final::NoChanges => format!(
            "ℹ️ **No changes** — the agent finished without changing any file · {} · {}{summary}",
            duration_text(duration),
            cost_text(job)
        ),
        Final::Failed { error } => format!(
            "❌ **Failed**: {error}{billed}\n\nSee the [log]({log}). `{trigger} retry` runs the job again."
        ),
        Final::Cancelled => {
            format!("🛑 **Cancelled** — the agent was stopped and nothing was pushed.{billed}")
        }
        Final::Rejected { reason } => format!("⛔ **Rejected**: {reason}"),
    };
    let checks = match checks_table(&c.checks) {
        Some(table) => format!("\n\n{table}"),
        None => String::new(),
    };
    let refused = match refused_text(&c.refused) {
        Some(text) => format!("\n\n{text} (see the [log]({log}))"),
        None => String::new(),
    };
    format!(
        "{}\n\n{headline}{checks}{refused}\n\n<details><summary>Steps</summary>\n\n{}\n\n</details>\n",
        header(job, public_url),
        checklist_lines(job, c)
    )
}

/// The checks as a table (command, ✓/✗, duration), for the final comment and the PR/MR
/// body; `None` when no check ran. Commands come from `.repobox.yml`: in code spans,
/// with backticks and pipes taken out.
pub fn checks_table(checks: &[crate::agent::CheckResult]) -> Option<String> {
    if checks.is_empty() {
        return None;
    }
    let mut table = String::from("| Check | Result | Time |\n|---|---|---|\n");
    for c in checks {
        let command: String = c
            .command
            .chars()
            .map(|ch| {
                if matches!(ch, '`' | '|' | '\n' | '\r') {
                    ' '
                } else {
                    ch
                }
            })
            .take(120)
            .collect();
        table.push_str(&format!(
            "| `{command}` | {} | {:.1}s |\n",
            if c.passed { "✓" } else { "✗" },
            c.duration.as_secs_f64()
        ));
    }
    Some(table.trim_end().to_owned())
}

/// `🌐 **Network refused:** `a:443`, `b:80``, for the final comment and the PR/MR
/// body; `None` when nothing was refused. The names come from the sandbox, so each is
/// cut to host-name characters inside a code span.
pub fn refused_text(refused: &[String]) -> Option<String> {
    if refused.is_empty() {
        return None;
    }
    let shown: Vec<String> = refused
        .iter()
        .take(20)
        .map(|h| {
            let clean: String = h
                .chars()
                .filter(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '*')
                })
                .take(100)
                .collect();
            format!("`{clean}`")
        })
        .collect();
    let more = match refused.len().saturating_sub(shown.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(format!(
        "🌐 **Network refused:** {}{more}",
        shown.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Activity, Usage};

    fn job() -> Job {
        crate::job::test_job(ThreadKind::Issue, 3)
    }

    #[test]
    fn the_running_comment_shows_the_agents_activity_safely() {
        let activity = Activity {
            model: Some("claude-sonnet-4-5".into()),
            turns: 4,
            tool_calls: 7,
            usage: Usage {
                input_tokens: 1200,
                output_tokens: 800,
                cache_write_tokens: 50_000,
                cache_read_tokens: 100,
            },
            cost_usd: Some(0.1234),
            last_action: Some("$ echo `@admin` [x](http://evil)\nsecond line".into()),
            steered_by: vec!["alice".into(), "bob".into(), "alice".into()],
        };
        let detail = activity_text(&activity).unwrap();
        assert_eq!(
            detail,
            "· turn 4 · 7 tool calls · last: `$ echo '@admin' [x](http://evil)` · 52.1k tokens · $0.12 · steered by @alice, @bob"
        );
        let c = Checklist {
            agent: StepState::Active,
            agent_detail: Some(detail),
            ..Checklist::default()
        };
        assert!(running(&job(), "http://x", &c).contains("- [ ] Agent working… · turn 4 ·"));
        assert_eq!(activity_text(&Activity::default()), None);
    }

    #[test]
    fn cost_text_is_honest_about_what_is_known() {
        let mut j = job();
        assert_eq!(cost_text(&j), "tokens not reported by this agent");
        j.input_tokens = 2_000;
        j.cache_read_tokens = 10_000;
        j.output_tokens = 500;
        j.model = Some("mystery-model".into());
        assert_eq!(
            cost_text(&j),
            "12.0k tokens in (10.0k from cache), 500 out · cost unknown: no price for `mystery-model`"
        );
        j.cost_usd = Some(0.004);
        assert_eq!(
            cost_text(&j),
            "12.0k tokens in (10.0k from cache), 500 out · $0.0040"
        );
        let failed = finished(
            &j,
            "http://x",
            "/repobox",
            &Checklist::default(),
            &Final::Failed {
                error: "boom".into(),
            },
            std::time::Duration::from_secs(3),
        );
        assert!(
            failed.contains("**Failed**: boom · 12.0k tokens in"),
            "{failed}"
        );
    }
}
