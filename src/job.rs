//! The job record (SPEC section 6) and its flat Redis hash form.
//!
//! The hash is written field by field so operators can read it with `redis-cli HGETALL`
//! and so later writers (acknowledger, runner, dashboard) can update single fields.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use crate::model::{
    CommentKind, CommentRef, ForgeKind, RepoRef, ReviewContext, ThreadKind, ThreadRef, UserRef,
};

/// Job id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Ulid);

impl JobId {
    pub fn new() -> Self {
        JobId(Ulid::new())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(JobId)
    }
}

/// `queued → running → succeeded | no_changes | failed | cancelled`; `rejected` from the
/// acknowledger (no write access) or the runner (access revoked, a fork's PR/MR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    NoChanges,
    Failed,
    Cancelled,
    Rejected,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::NoChanges => "no_changes",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Rejected => "rejected",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "no_changes" => JobStatus::NoChanges,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "rejected" => JobStatus::Rejected,
            other => return Err(format!("unknown job status `{other}`")),
        })
    }
}

/// What started the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Comment,
    Label,
    Dashboard,
    /// `POST /api/v1/jobs` with the admin API token: no forge requester (SPEC 18).
    Api,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Comment => "comment",
            TriggerKind::Label => "label",
            TriggerKind::Dashboard => "dashboard",
            TriggerKind::Api => "api",
        }
    }
}

impl FromStr for TriggerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "comment" => TriggerKind::Comment,
            "label" => TriggerKind::Label,
            "dashboard" => TriggerKind::Dashboard,
            "api" => TriggerKind::Api,
            other => return Err(format!("unknown trigger `{other}`")),
        })
    }
}

/// One job, as stored in `job:{<id>}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub repo: RepoRef,
    pub thread: ThreadRef,
    pub thread_title: String,
    pub trigger: TriggerKind,
    /// The comment that carried the command (absent for label and dashboard triggers).
    pub trigger_comment: Option<CommentRef>,
    pub requester: UserRef,
    /// Sanitised instructions from the command (may be empty).
    pub instructions: String,
    pub review: Option<ReviewContext>,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub branch: Option<String>,
    pub base: Option<String>,
    pub pr_url: Option<String>,
    pub commit_sha: Option<String>,
    pub progress_comment_id: Option<u64>,
    pub error: Option<String>,
    pub agent_turns: u64,
    /// Tool calls the agent made.
    pub tool_calls: u64,
    /// The model the agent used (the built-in agent only).
    pub model: Option<String>,
    /// Input tokens billed at the full rate (neither read from nor written to the cache).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// US dollars, from the price table; `None` when the agent reported no tokens or the
    /// model has no price.
    pub cost_usd: Option<f64>,
    /// The webhook delivery that created the job, for tracing a job back to its event.
    pub delivery_id: Option<String>,
    /// A cancel was requested (the runner checks this while it works).
    pub cancel_requested: bool,
    /// `/repobox queue …`: a job of its own even while another runs on the thread,
    /// never given to the running agent (SPEC 16).
    pub queue_only: bool,
    /// The commit the runner pushed (set after the push, so a re-delivered job skips
    /// straight to the pull/merge request).
    pub pushed_sha: Option<String>,
    /// The GitHub check run showing the job on the commit it pushed (SPEC 17).
    pub check_run_id: Option<u64>,
    /// The personal provider whose token the job's forge calls and pushes use
    /// (SPEC 18); `None`: the App / the bot.
    pub provider: Option<ulid::Ulid>,
    /// The agent's summary of what it changed and why.
    pub summary: Option<String>,
    /// The current run's number: incremented by every claim (more than 1 after a
    /// re-delivery). With `runner` it is the run's lease (SPEC section 13).
    pub attempt: u64,
    /// The consumer name of the runner that claimed the job last.
    pub runner: Option<String>,
    /// The push plan, recorded before the push: the branch the job's commit goes to and
    /// the commit it is built on. A re-delivered job finds its commit there (by the
    /// `Repobox-Job:` trailer) instead of running the agent again.
    pub push_branch: Option<String>,
    pub push_parent: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub files_changed: u64,
    pub additions: u64,
    pub deletions: u64,
}

/// The requester of a job started with the admin API token (SPEC 18): no forge account.
/// Its login cannot be a forge username (parentheses), so no text of it mentions anyone.
pub const API_REQUESTER: &str = "(API token)";

impl Job {
    /// Started with the admin API token: nobody's access to check, nobody to credit.
    pub fn by_api_token(&self) -> bool {
        self.trigger == TriggerKind::Api
    }

    /// Who asked, for texts: `@login`, or "the API token".
    pub fn requested_by(&self) -> String {
        if self.by_api_token() {
            "the API token".to_owned()
        } else {
            format!("@{}", self.requester.login)
        }
    }

    /// A fresh queued job.
    pub fn new(
        repo: RepoRef,
        thread: ThreadRef,
        thread_title: String,
        trigger: TriggerKind,
        requester: UserRef,
        instructions: String,
        now: OffsetDateTime,
    ) -> Self {
        Job {
            id: JobId::new(),
            repo,
            thread,
            thread_title,
            trigger,
            trigger_comment: None,
            requester,
            instructions,
            review: None,
            status: JobStatus::Queued,
            created_at: now,
            updated_at: now,
            branch: None,
            base: None,
            pr_url: None,
            commit_sha: None,
            progress_comment_id: None,
            error: None,
            agent_turns: 0,
            tool_calls: 0,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: None,
            delivery_id: None,
            cancel_requested: false,
            queue_only: false,
            pushed_sha: None,
            check_run_id: None,
            provider: None,
            summary: None,
            attempt: 0,
            runner: None,
            push_branch: None,
            push_parent: None,
            started_at: None,
            finished_at: None,
            files_changed: 0,
            additions: 0,
            deletions: 0,
        }
    }

    /// Milliseconds since the epoch of creation: the score in the job indices.
    pub fn created_ms(&self) -> i64 {
        (self.created_at.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// The flat hash form. Absent options are left out.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f: Vec<(&'static str, String)> = vec![
            ("id", self.id.to_string()),
            ("forge", self.repo.forge.as_str().to_owned()),
            ("repo", self.repo.full_name.clone()),
            ("thread_kind", self.thread.kind.as_str().to_owned()),
            ("thread_number", self.thread.number.to_string()),
            ("thread_title", self.thread_title.clone()),
            ("trigger", self.trigger.as_str().to_owned()),
            ("requester_id", self.requester.id.to_string()),
            ("requester_login", self.requester.login.clone()),
            ("instructions", self.instructions.clone()),
            ("status", self.status.as_str().to_owned()),
            ("created_at", rfc3339(self.created_at)),
            ("updated_at", rfc3339(self.updated_at)),
            ("agent_turns", self.agent_turns.to_string()),
            ("tool_calls", self.tool_calls.to_string()),
            ("input_tokens", self.input_tokens.to_string()),
            ("output_tokens", self.output_tokens.to_string()),
            ("cache_read_tokens", self.cache_read_tokens.to_string()),
            ("cache_write_tokens", self.cache_write_tokens.to_string()),
            (
                "cancel_requested",
                u8::from(self.cancel_requested).to_string(),
            ),
        ];
        let mut opt = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                f.push((k, v));
            }
        };
        opt("queue_only", self.queue_only.then(|| "1".to_owned()));
        opt("repo_id", self.repo.id.map(|v| v.to_string()));
        opt("cost_usd", self.cost_usd.map(cost_field));
        opt("model", self.model.clone());
        opt(
            "installation_id",
            self.repo.installation_id.map(|v| v.to_string()),
        );
        opt(
            "trigger_comment_kind",
            self.trigger_comment.map(|c| c.kind.as_str().to_owned()),
        );
        opt(
            "trigger_comment_id",
            self.trigger_comment.map(|c| c.id.to_string()),
        );
        opt("review_path", self.review.as_ref().map(|r| r.path.clone()));
        opt(
            "review_line",
            self.review
                .as_ref()
                .and_then(|r| r.line)
                .map(|l| l.to_string()),
        );
        opt(
            "review_diff_hunk",
            self.review.as_ref().and_then(|r| r.diff_hunk.clone()),
        );
        opt("branch", self.branch.clone());
        opt("base", self.base.clone());
        opt("pr_url", self.pr_url.clone());
        opt("commit_sha", self.commit_sha.clone());
        opt(
            "progress_comment_id",
            self.progress_comment_id.map(|v| v.to_string()),
        );
        opt("error", self.error.clone());
        opt("delivery_id", self.delivery_id.clone());
        opt("pushed_sha", self.pushed_sha.clone());
        opt("check_run_id", self.check_run_id.map(|v| v.to_string()));
        opt("provider", self.provider.map(|v| v.to_string()));
        opt("summary", self.summary.clone());
        opt("runner", self.runner.clone());
        opt("push_branch", self.push_branch.clone());
        opt("push_parent", self.push_parent.clone());
        opt("started_at", self.started_at.map(rfc3339));
        opt("finished_at", self.finished_at.map(rfc3339));
        for (k, v) in [
            ("attempt", self.attempt),
            ("files_changed", self.files_changed),
            ("additions", self.additions),
            ("deletions", self.deletions),
        ] {
            if v > 0 {
                f.push((k, v.to_string()));
            }
        }
        f
    }

    /// Reads the hash form back; names the field that is missing or malformed.
    pub fn from_fields(map: &HashMap<String, String>) -> Result<Job, String> {
        let get = |k: &str| map.get(k).map(String::as_str);
        let req = |k: &str| get(k).ok_or_else(|| format!("job record lacks `{k}`"));
        fn parse<T: FromStr>(k: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("job record field `{k}` is malformed"))
        }
        let opt_num = |k: &str| -> Result<Option<u64>, String> {
            get(k).map(|v| parse::<u64>(k, v)).transpose()
        };
        let time = |k: &str| -> Result<OffsetDateTime, String> {
            OffsetDateTime::parse(req(k)?, &Rfc3339)
                .map_err(|_| format!("job record field `{k}` is malformed"))
        };
        let opt_time = |k: &str| -> Result<Option<OffsetDateTime>, String> {
            get(k).map(|_| time(k)).transpose()
        };
        let forge: ForgeKind = parse("forge", req("forge")?)?;
        let trigger_comment = match (get("trigger_comment_kind"), opt_num("trigger_comment_id")?) {
            (Some(kind), Some(id)) => Some(CommentRef {
                kind: parse::<CommentKind>("trigger_comment_kind", kind)?,
                id,
            }),
            _ => None,
        };
        let review = get("review_path").map(|path| -> Result<ReviewContext, String> {
            Ok(ReviewContext {
                path: path.to_owned(),
                line: opt_num("review_line")?,
                diff_hunk: get("review_diff_hunk").map(str::to_owned),
            })
        });
        Ok(Job {
            id: parse("id", req("id")?)?,
            repo: RepoRef {
                forge,
                full_name: req("repo")?.to_owned(),
                id: opt_num("repo_id")?,
                installation_id: opt_num("installation_id")?,
            },
            thread: ThreadRef {
                kind: parse::<ThreadKind>("thread_kind", req("thread_kind")?)?,
                number: parse("thread_number", req("thread_number")?)?,
            },
            thread_title: get("thread_title").unwrap_or_default().to_owned(),
            trigger: parse("trigger", req("trigger")?)?,
            trigger_comment,
            requester: UserRef {
                id: parse("requester_id", req("requester_id")?)?,
                login: req("requester_login")?.to_owned(),
                is_bot: false,
            },
            instructions: get("instructions").unwrap_or_default().to_owned(),
            review: review.transpose()?,
            status: parse("status", req("status")?)?,
            created_at: time("created_at")?,
            updated_at: time("updated_at")?,
            branch: get("branch").map(str::to_owned),
            base: get("base").map(str::to_owned),
            pr_url: get("pr_url").map(str::to_owned),
            commit_sha: get("commit_sha").map(str::to_owned),
            progress_comment_id: opt_num("progress_comment_id")?,
            error: get("error").map(str::to_owned),
            agent_turns: opt_num("agent_turns")?.unwrap_or(0),
            tool_calls: opt_num("tool_calls")?.unwrap_or(0),
            model: get("model").map(str::to_owned),
            input_tokens: opt_num("input_tokens")?.unwrap_or(0),
            output_tokens: opt_num("output_tokens")?.unwrap_or(0),
            cache_read_tokens: opt_num("cache_read_tokens")?.unwrap_or(0),
            cache_write_tokens: opt_num("cache_write_tokens")?.unwrap_or(0),
            cost_usd: get("cost_usd")
                .map(|v| parse::<f64>("cost_usd", v))
                .transpose()?,
            delivery_id: get("delivery_id").map(str::to_owned),
            cancel_requested: get("cancel_requested") == Some("1"),
            queue_only: get("queue_only") == Some("1"),
            pushed_sha: get("pushed_sha").map(str::to_owned),
            check_run_id: get("check_run_id").and_then(|v| v.parse().ok()),
            provider: get("provider").map(|v| parse("provider", v)).transpose()?,
            summary: get("summary").map(str::to_owned),
            attempt: opt_num("attempt")?.unwrap_or(0),
            runner: get("runner").map(str::to_owned),
            push_branch: get("push_branch").map(str::to_owned),
            push_parent: get("push_parent").map(str::to_owned),
            started_at: opt_time("started_at")?,
            finished_at: opt_time("finished_at")?,
            files_changed: opt_num("files_changed")?.unwrap_or(0),
            additions: opt_num("additions")?.unwrap_or(0),
            deletions: opt_num("deletions")?.unwrap_or(0),
        })
    }
}

/// A queued job on `acme/api` by `octo`, for unit tests.
#[cfg(test)]
pub(crate) fn test_job(kind: ThreadKind, number: u64) -> Job {
    Job::new(
        RepoRef {
            forge: ForgeKind::GitHub,
            full_name: "acme/api".into(),
            id: None,
            installation_id: None,
        },
        ThreadRef { kind, number },
        "Login is flaky".into(),
        TriggerKind::Comment,
        UserRef {
            id: 1,
            login: "octo".into(),
            is_bot: false,
        },
        "fix the flaky login test".into(),
        OffsetDateTime::UNIX_EPOCH,
    )
}

/// The stored form of a cost: dollars with enough places for a single cheap call.
pub fn cost_field(usd: f64) -> String {
    format!("{usd:.6}")
}

/// RFC 3339 text of a timestamp (always succeeds for in-range times).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Job {
        let mut job = Job::new(
            RepoRef {
                forge: ForgeKind::GitHub,
                full_name: "acme/api".into(),
                id: Some(7),
                installation_id: Some(42),
            },
            ThreadRef {
                kind: ThreadKind::PullRequest,
                number: 12,
            },
            "Fix login".into(),
            TriggerKind::Comment,
            UserRef {
                id: 3,
                login: "octo".into(),
                is_bot: false,
            },
            "fix the flaky test\nplease".into(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        );
        job.trigger_comment = Some(CommentRef {
            kind: CommentKind::ReviewComment,
            id: 99,
        });
        job.review = Some(ReviewContext {
            path: "src/a.rs".into(),
            line: Some(4),
            diff_hunk: Some("@@ -1 +1 @@".into()),
        });
        job.progress_comment_id = Some(5);
        job.cost_usd = Some(0.125);
        job.model = Some("claude-sonnet-4-5".into());
        job.tool_calls = 9;
        job.cache_read_tokens = 1200;
        job.cache_write_tokens = 300;
        job.pushed_sha = Some("abc123".into());
        job.summary = Some("Fixed it.".into());
        job.attempt = 2;
        job.started_at = Some(OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap());
        job.finished_at = Some(OffsetDateTime::from_unix_timestamp(1_700_000_200).unwrap());
        job.files_changed = 3;
        job.additions = 10;
        job.deletions = 4;
        job
    }

    #[test]
    fn hash_round_trip_keeps_every_field() {
        let job = sample();
        let map: HashMap<String, String> = job
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Job::from_fields(&map).unwrap(), job);
    }

    #[test]
    fn malformed_record_names_the_field() {
        let mut map: HashMap<String, String> = sample()
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        map.insert("thread_number".into(), "twelve".into());
        assert_eq!(
            Job::from_fields(&map).unwrap_err(),
            "job record field `thread_number` is malformed"
        );
        map.remove("repo");
        assert!(Job::from_fields(&map).unwrap_err().contains("`repo`"));
    }
}
