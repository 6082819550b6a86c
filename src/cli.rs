//! The command line (SPEC section 1): `serve`, `runner`, `all`, `doctor`, `keygen`,
//! `jobs`. Configuration flags are global, so `repobox serve --listen ...` works.

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::job::JobId;
use crate::store::{RedisStore, Store};
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
    /// One job's record.
    Show { id: String },
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
        Cmd::All => {
            tracing::warn!(
                "the runner is not built yet: `all` runs intake and acknowledgement; jobs wait in jobs:stream"
            );
            app::run_serve(cli.config).await?
        }
        Cmd::Runner => {
            anyhow::bail!(
                "`repobox runner` is not built yet: jobs are queued in jobs:stream and wait for it"
            )
        }
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
    let store = RedisStore::new(config.redis_url.expose(), &config.redis_prefix)?;
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
        JobsCmd::Show { id } => {
            let id: JobId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("`{id}` is not a job id"))?;
            let job = store
                .get_job(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
    }
    Ok(())
}
