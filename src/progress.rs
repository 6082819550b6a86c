//! The text Repobox posts on a thread: the one progress comment per job (SPEC section 5)
//! and short replies (help, did-you-mean, nothing to cancel). Pure functions of the job,
//! so the acknowledger and the runner render the same comment.

use crate::commands;
use crate::job::Job;
use crate::model::{ForgeKind, ThreadKind};

fn header(job: &Job, public_url: &str) -> String {
    let url = public_url.trim_end_matches('/');
    format!(
        "**Repobox** · job `{id}` · [live log]({url}/jobs/{id})",
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
        "- [x] Queued — requested by @{login}\n\
         - [ ] Clone `{repo}`\n\
         - [ ] Agent working\n\
         - [ ] Push branch\n\
         - [ ] {last}",
        login = job.requester.login,
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
