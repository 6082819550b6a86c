//! The command line (SPEC section 1): `serve`, `runner`, `all`, `doctor`, `keygen`,
//! `jobs`. Configuration flags are global, so `repobox serve --listen ...` works.

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::job::JobId;
use crate::store::Store;
use crate::{app, doctor, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "repobox",
    version,
    about = "Self-hosted GitHub App and GitLab bot: /repobox comments become pull requests"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// HTTP server: webhooks, health, metrics, and acknowledgement of commands.
    Serve,
    /// Job workers (not built yet: jobs wait in jobs:stream).
    Runner,
    /// Server and workers in one process (the default).
    All,
    /// Check configuration, Redis, forge and agent credentials, sandbox.
    Doctor,
    /// Print a fresh random 32-byte key (base64) for REPOBOX_SECRET_KEY.
    Keygen,
    /// Operator view of jobs.
    Jobs {
        #[command(subcommand)]
        action: JobsCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Newest jobs first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One job's record and log; follows the log while the job runs.
    Show {
        id: String,
        /// Print what is there and exit, even while the job runs.
        #[arg(long)]
        no_follow: bool,
        /// The record as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancels a job: a queued one is cancelled when a runner picks it up, a running one
    /// is stopped within seconds. Either way the thread gets the final comment.
    Cancel { id: String },
}

/// Entry point of the binary.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let command = cli.command.unwrap_or(Cmd::All);
    if matches!(command, Cmd::Keygen) {
        println!("{}", crate::config::generate_key());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    telemetry::init_logging(cli.config.log_format == LogFormat::Json);
    match command {
        Cmd::Keygen => unreachable!("handled above"),
        Cmd::Serve => app::run_serve(cli.config).await?,
        Cmd::All => app::run_all(cli.config).await?,
        Cmd::Runner => app::run_runner(cli.config).await?,
        Cmd::Doctor => {
            let checks = doctor::run_checks(&cli.config).await;
            if !doctor::print(&checks) {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Cmd::Jobs { action } => jobs(&cli.config, action).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn jobs(config: &Config, action: JobsCmd) -> anyhow::Result<()> {
    let store = crate::store::open(config, "cli")?;
    let store = store.as_ref();
    match action {
        JobsCmd::List { limit } => {
            for id in store.recent_jobs(limit).await? {
                if let Some(job) = store.get_job(id).await? {
                    println!(
                        "{}  {:<10}  {}:{}#{}  @{}",
                        job.id,
                        job.status.as_str(),
                        job.repo.forge,
                        job.repo.full_name,
                        job.thread.number,
                        job.requester.login
                    );
                }
            }
        }
        JobsCmd::Show {
            id,
            no_follow,
            json,
        } => {
            let id = parse_id(&id)?;
            let job = store
                .get_job(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(());
            }
            print!("{}", describe(&job));
            println!("--- log ---");
            follow_log(store, id, !no_follow).await?;
        }
        JobsCmd::Cancel { id } => {
            let id = parse_id(&id)?;
            let job = store
                .get_job(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
            if job.status.is_final() {
                println!("job {id} is already {}", job.status.as_str());
            } else {
                // The runner that holds (or next claims) the job ends it and writes the
                // final comment; a flag, not a state change.
                store
                    .set_job_fields(id, &[("cancel_requested", "1".to_owned())])
                    .await?;
                println!("cancel requested for job {id} ({})", job.status.as_str());
            }
        }
    }
    Ok(())
}

fn parse_id(id: &str) -> anyhow::Result<JobId> {
    id.parse()
        .map_err(|_| anyhow::anyhow!("`{id}` is not a job id"))
}

/// The record as a few readable lines.
fn describe(job: &crate::job::Job) -> String {
    let mut out = format!(
        "job {}  {}\n{}:{} {} {} “{}”\nrequested by @{} ({}) at {}\n",
        job.id,
        job.status.as_str(),
        job.repo.forge,
        job.repo.full_name,
        job.thread.kind.as_str(),
        job.thread.number,
        job.thread_title,
        job.requester.login,
        job.trigger.as_str(),
        crate::job::rfc3339(job.created_at),
    );
    if !job.instructions.is_empty() {
        out.push_str(&format!("instructions: {}\n", job.instructions));
    }
    for (label, value) in [
        ("branch", &job.branch),
        ("base", &job.base),
        ("commit", &job.commit_sha),
        ("pull/merge request", &job.pr_url),
        ("error", &job.error),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("{label}: {v}\n"));
        }
    }
    let model = job
        .model
        .as_deref()
        .map(|m| format!("model {m} · "))
        .unwrap_or_default();
    out.push_str(&format!(
        "agent: {model}{} turns · {} tool calls · {} · attempts: {}\n",
        job.agent_turns,
        job.tool_calls,
        crate::progress::cost_text(job),
        job.attempt
    ));
    if let Some(summary) = &job.summary {
        out.push_str(&format!("summary:\n{summary}\n"));
    }
    out
}

/// Prints the job log; with `follow`, keeps printing until the job is final (waiting
/// on a log reader of its own, `repobox:cli:log-read:<id>`).
async fn follow_log(store: &dyn Store, id: JobId, follow: bool) -> anyhow::Result<()> {
    let mut after = "0".to_owned();
    let mut reader = match follow {
        true => Some(store.log_reader(id).await?),
        false => None,
    };
    loop {
        let lines = match reader.as_mut() {
            Some(r) => {
                r.next(&after, 500, Some(std::time::Duration::from_secs(1)))
                    .await?
            }
            None => store.read_log(id, &after, 500, None).await?,
        };
        for l in &lines {
            println!("{}", l.line);
        }
        if let Some(last) = lines.last() {
            after = last.id.clone();
            continue;
        }
        if !follow {
            return Ok(());
        }
        let done = store.get_job(id).await?.is_none_or(|j| j.status.is_final());
        if done {
            // Lines written just before the final state.
            for l in store.read_log(id, &after, 500, None).await? {
                println!("{}", l.line);
            }
            let job = store.get_job(id).await?;
            if let Some(job) = job {
                println!("--- {} ---", job.status.as_str());
            }
            return Ok(());
        }
    }
}
