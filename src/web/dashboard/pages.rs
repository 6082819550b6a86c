//! The dashboard's HTML (maud): one layout and a function per page. Pure functions of
//! what the handlers looked up, so they are easy to read and to test.

use maud::{DOCTYPE, Markup, html};

use super::session::SessionUser;
use crate::job::{Job, JobStatus};
use crate::model::ThreadKind;

pub fn layout(title: &str, user: Option<&SessionUser>, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Repobox" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                header {
                    a.brand href="/jobs" { "Repobox" }
                    @if let Some(user) = user {
                        nav.actions {
                            a href="/jobs" { "Jobs" }
                            a href="/jobs/new" { "New job" }
                            a href="/settings" { "Settings" }
                            @if user.admin { a href="/admin" { "Admin" } }
                        }
                        span.muted { (user.login) @if user.admin { " · admin" } }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A sign-in option on the login page.
pub struct LoginOption {
    pub label: String,
    pub url: String,
}

pub fn login(options: &[LoginOption], ldap: bool, csrf: &str, error: Option<&str>) -> Markup {
    let body = html! {
        div.login.card {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error { (error) } }
            @for o in options {
                a.button.provider href=(o.url) { "Sign in with " (o.label) }
            }
            @if ldap {
                form method="post" action="/auth/ldap" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Username" input name="username" autocomplete="username" required; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    p { button type="submit" { "Sign in with LDAP" } }
                }
            }
            @if options.is_empty() && !ldap {
                p.muted { "No sign-in method is configured. Set the OAuth client of the GitHub App or GitLab, Google's OpenID Connect client, or an LDAP URL (see the README)." }
            }
        }
    };
    layout("Sign in", None, csrf, body)
}

pub fn status_badge(status: JobStatus) -> Markup {
    html! { span.badge class=(format!("s-{}", status.as_str())) { (status.as_str()) } }
}

/// `2026-11-28 00:49:53 UTC`: to the second, for people.
fn when(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn thread_label(job: &Job) -> String {
    if job.thread.is_none() {
        return "repo + prompt".to_owned();
    }
    let noun = match job.thread.kind {
        ThreadKind::Issue => "issue",
        ThreadKind::PullRequest => "PR",
        ThreadKind::MergeRequest => "MR",
    };
    format!("{noun} {}", job.thread.reference())
}

/// The filters of the job list, as the query string had them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub user: String,
    /// Paging: jobs created before this time (ms since the epoch).
    pub before: Option<i64>,
}

impl Filters {
    fn query(&self, before: i64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("repo", &self.repo),
            ("status", &self.status),
            ("user", &self.user),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &before.to_string());
        q.finish()
    }
}

const STATUSES: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "no_changes",
    "failed",
    "cancelled",
    "rejected",
];

pub fn jobs(
    user: &SessionUser,
    csrf: &str,
    jobs: &[Job],
    filters: &Filters,
    next: Option<i64>,
) -> Markup {
    let body = html! {
        h1 { @if user.admin { "All jobs" } @else { "Your jobs" } }
        form.filters.card method="get" action="/jobs" {
            label { "Repository" input name="repo" placeholder="owner/name" value=(filters.repo); }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[filters.status == *s] { (s) }
                    }
                }
            }
            @if user.admin {
                label { "Requester" input name="user" placeholder="login" value=(filters.user); }
            }
            button type="submit" { "Filter" }
        }
        div.card {
            @if jobs.is_empty() {
                p.muted { "No jobs." }
            } @else {
                table id="jobs" {
                    thead { tr {
                        th { "Job" } th { "Status" } th { "Repository" } th.hide-narrow { "Requester" }
                        th.hide-narrow { "Created" } th.hide-narrow { "Cost" }
                    } }
                    tbody {
                        @for job in jobs {
                            tr {
                                td { a href=(format!("/jobs/{}", job.id)) { (thread_label(job)) } br; span.muted { (job.thread_title) } }
                                td { (status_badge(job.status)) }
                                td { (job.repo.full_name) }
                                td.hide-narrow { (job.requester.login) }
                                td.hide-narrow.muted { time datetime=(crate::job::rfc3339(job.created_at)) { (when(job.created_at)) } }
                                td.hide-narrow.muted { (job.cost_usd.map(|c| format!("${c:.2}")).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            @if let Some(before) = next {
                div.pager { a href=(format!("/jobs?{}", filters.query(before))) { "Older jobs →" } }
            }
        }
    };
    layout("Jobs", Some(user), csrf, body)
}

/// The job's steps, from what its record says happened.
fn checklist(job: &Job) -> Markup {
    let started = job.started_at.is_some();
    let agent_done = job.summary.is_some() || job.commit_sha.is_some();
    html! {
        ul.checklist {
            li.done { "Queued — requested by " (job.requested_by()) }
            li.done[started] { "Runner started" @if job.attempt > 1 { " (attempt " (job.attempt) ")" } }
            li.done[agent_done] { "Agent" @if job.agent_turns > 0 { " · " (job.agent_turns) " turns · " (job.tool_calls) " tool calls" } }
            li.done[job.pushed_sha.is_some()] { "Push" @if let Some(b) = &job.branch { " " code { (b) } } }
            li.done[job.pr_url.is_some()] {
                @if let Some(url) = &job.pr_url { a href=(url) { "Pull/merge request" } } @else { "Pull/merge request" }
            }
        }
    }
}

/// `last_id`: the stream id of the last log line already on the page.
pub fn job(
    user: &SessionUser,
    csrf: &str,
    job: &Job,
    thread_url: Option<&str>,
    log: &[String],
    last_id: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { (job.repo.full_name) " · " (thread_label(job)) " " span.badge id="status" class=(format!("s-{}", job.status.as_str())) { (job.status.as_str()) } }
        div.card {
            dl.facts {
                dt { "Title" } dd { (job.thread_title) }
                @if let Some(url) = thread_url { dt { "Thread" } dd { a href=(url) { (url) } } }
                dt { "Requested by" } dd { "@" (job.requester.login) " · " (job.trigger.as_str()) }
                @if !job.instructions.is_empty() { dt { "Instructions" } dd { (job.instructions) } }
                dt { "Created" } dd { time datetime=(crate::job::rfc3339(job.created_at)) { (when(job.created_at)) } }
                @if let Some(url) = &job.pr_url { dt { "Result" } dd { a href=(url) { (url) } } }
                @if let Some(e) = &job.error { dt { "Error" } dd.error { (e) } }
                @if let Some(m) = &job.model { dt { "Model" } dd { (m) } }
                dt { "Tokens and cost" } dd id="cost" { (crate::progress::cost_text(job)) }
                @if let Some(s) = &job.summary { dt { "Summary" } dd { (s) } }
            }
        }
        div.card { (checklist(job)) }
        @if !job.status.is_final() || matches!(job.status, JobStatus::Failed | JobStatus::Cancelled | JobStatus::NoChanges) {
            div.actions.card {
                @if !job.status.is_final() {
                    form method="post" action=(format!("/jobs/{}/cancel", job.id)) {
                        input type="hidden" name="csrf" value=(csrf);
                        button.danger id="cancel" type="submit" { "Cancel" }
                    }
                } @else {
                    form method="post" action=(format!("/jobs/{}/retry", job.id)) {
                        input type="hidden" name="csrf" value=(csrf);
                        button id="retry" type="submit" { "Retry" }
                    }
                }
            }
        }
        h2 { "Log" }
        pre.log id="log" data-events=(format!("/jobs/{}/events", job.id)) data-after=[last_id] data-lines=(log.len()) {
            @for line in log { (line) "\n" }
        }
        script src="/assets/live.js" defer {}
    };
    layout(&format!("Job {}", job.id), Some(user), csrf, body)
}

pub fn not_found(user: Option<&SessionUser>, csrf: &str) -> Markup {
    layout(
        "Not found",
        user,
        csrf,
        html! { div.card { h1 { "Not found" } p { "There is no such page, or it is not yours to see." } } },
    )
}
