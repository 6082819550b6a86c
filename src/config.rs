//! Process configuration (SPEC section 2): every setting is an environment variable and
//! a `--flag` of the same name. Secrets are [`Secret`]s (masked when printed) and their
//! environment values are hidden from `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, ValueEnum};
use rand::RngCore;

use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    Claude,
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxKind {
    Bwrap,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// All settings. Optional forge settings enable a forge when present.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP listen address.
    #[arg(
        long,
        env = "REPOBOX_LISTEN",
        default_value = "127.0.0.1:3000",
        global = true
    )]
    pub listen: SocketAddr,
    /// External base URL (links in comments, OAuth callbacks).
    #[arg(
        long,
        env = "REPOBOX_PUBLIC_URL",
        default_value = "http://localhost:3000",
        global = true
    )]
    pub public_url: String,
    /// Redis URL (`rediss://` for TLS). Unset: `repobox all` keeps everything in the
    /// embedded store in REPOBOX_DATA_DIR; `serve` and `runner` need Redis.
    #[arg(long, env = "REPOBOX_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Where `repobox all` keeps its embedded store (`repobox.db`) without Redis.
    #[arg(
        long,
        env = "REPOBOX_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Prefix of every Redis key.
    #[arg(
        long,
        env = "REPOBOX_REDIS_PREFIX",
        default_value = "repobox:",
        global = true
    )]
    pub redis_prefix: String,
    /// Base64 32-byte key for secrets at rest and cookie signing. Required by `serve`
    /// and `runner`; only `all` generates one into ./data/secret.key when unset.
    #[arg(
        long,
        env = "REPOBOX_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    pub secret_key: Option<Secret>,

    /// GitHub App id (GitHub is enabled when set).
    #[arg(long, env = "REPOBOX_GITHUB_APP_ID", global = true)]
    pub github_app_id: Option<u64>,
    /// The App's PEM private key.
    #[arg(
        long,
        env = "REPOBOX_GITHUB_PRIVATE_KEY",
        global = true,
        hide_env_values = true
    )]
    pub github_private_key: Option<Secret>,
    /// Path of the App's PEM private key.
    #[arg(long, env = "REPOBOX_GITHUB_PRIVATE_KEY_PATH", global = true)]
    pub github_private_key_path: Option<PathBuf>,
    /// Webhook secret(s) for `X-Hub-Signature-256`; a comma list during rotation.
    #[arg(
        long,
        env = "REPOBOX_GITHUB_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub github_webhook_secret: Option<Secret>,
    /// GitHub REST base (GitHub Enterprise Server, test fakes).
    #[arg(
        long,
        env = "REPOBOX_GITHUB_API_URL",
        default_value = "https://api.github.com",
        global = true
    )]
    pub github_api_url: String,
    /// The App's OAuth client id (dashboard login).
    #[arg(long, env = "REPOBOX_GITHUB_CLIENT_ID", global = true)]
    pub github_client_id: Option<String>,
    /// The App's OAuth client secret.
    #[arg(
        long,
        env = "REPOBOX_GITHUB_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub github_client_secret: Option<Secret>,

    /// GitLab base URL (GitLab is enabled when set).
    #[arg(long, env = "REPOBOX_GITLAB_URL", global = true)]
    pub gitlab_url: Option<String>,
    /// Bot user / group access token with `api` scope.
    #[arg(
        long,
        env = "REPOBOX_GITLAB_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub gitlab_token: Option<Secret>,
    /// Expected `X-Gitlab-Token`; a comma list during rotation.
    #[arg(
        long,
        env = "REPOBOX_GITLAB_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub gitlab_webhook_secret: Option<Secret>,
    /// GitLab OAuth application id (dashboard login).
    #[arg(long, env = "REPOBOX_GITLAB_CLIENT_ID", global = true)]
    pub gitlab_client_id: Option<String>,
    /// GitLab OAuth application secret.
    #[arg(
        long,
        env = "REPOBOX_GITLAB_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub gitlab_client_secret: Option<Secret>,

    /// Claude API key.
    #[arg(
        long,
        env = "REPOBOX_ANTHROPIC_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub anthropic_api_key: Option<Secret>,
    /// Messages API base.
    #[arg(
        long,
        env = "REPOBOX_ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com",
        global = true
    )]
    pub anthropic_base_url: String,
    /// Model for the built-in agent.
    #[arg(
        long,
        env = "REPOBOX_MODEL",
        default_value = "claude-sonnet-4-5",
        global = true
    )]
    pub model: String,
    /// The built-in agent's limit of model responses per job (`.repobox.yml` `max_turns`
    /// overrides it per repository).
    #[arg(long, env = "REPOBOX_MAX_TURNS", default_value_t = 50, global = true)]
    pub max_turns: u32,
    /// The built-in agent's `max_tokens`: output tokens per model response.
    #[arg(
        long,
        env = "REPOBOX_MAX_TOKENS",
        default_value_t = 16000,
        global = true
    )]
    pub max_tokens: u32,
    /// The model's context window in tokens, when it is not the documented 200,000 (a
    /// 1M-token beta, a proxy with a smaller limit). Old tool results are elided before
    /// a request would pass it.
    #[arg(long, env = "REPOBOX_CONTEXT_WINDOW", global = true)]
    pub context_window: Option<u64>,
    /// Prices added to or replacing the built-in table, USD per million tokens:
    /// `model=input,output[,cache_write,cache_read];…`.
    #[arg(long, env = "REPOBOX_MODEL_PRICES", default_value = "", global = true)]
    pub model_prices: String,
    /// `claude` (built-in tool-use loop) or `command`.
    #[arg(
        long,
        env = "REPOBOX_AGENT",
        value_enum,
        default_value = "claude",
        global = true
    )]
    pub agent: AgentKind,
    /// For the `command` agent: a shell command run in the work tree.
    #[arg(long, env = "REPOBOX_AGENT_COMMAND", global = true)]
    pub agent_command: Option<String>,
    /// `bwrap` (bubblewrap) or `none`.
    #[arg(
        long,
        env = "REPOBOX_SANDBOX",
        value_enum,
        default_value = "bwrap",
        global = true
    )]
    pub sandbox: SandboxKind,
    /// Concurrent jobs per runner process.
    #[arg(long, env = "REPOBOX_WORKERS", default_value_t = 4, global = true)]
    pub workers: usize,
    /// Concurrent running jobs per requesting user, across all runners.
    #[arg(
        long,
        env = "REPOBOX_PER_USER_LIMIT",
        default_value_t = 2,
        global = true
    )]
    pub per_user_limit: usize,
    /// Largest apparent size of a job's work tree at commit time (e.g. `2GiB`); a job
    /// past it fails and pushes nothing.
    #[arg(
        long,
        env = "REPOBOX_MAX_TREE_SIZE",
        default_value = "2GiB",
        global = true
    )]
    pub max_tree_size: bytesize::ByteSize,
    /// Memory of all a job's sandboxed processes together (e.g. `4GiB`); past it they
    /// are stopped and the job fails.
    #[arg(
        long,
        env = "REPOBOX_JOB_MEMORY",
        default_value = "4GiB",
        global = true
    )]
    pub job_memory: bytesize::ByteSize,
    /// A job's budget in USD: the agent stops before a request once it has spent this
    /// much (`.repobox.yml` `budget` may lower it).
    #[arg(long, env = "REPOBOX_JOB_BUDGET", default_value_t = 5.0, global = true)]
    pub job_budget: f64,
    /// Processes a job's sandbox may run at once.
    #[arg(long, env = "REPOBOX_JOB_PIDS", default_value_t = 512, global = true)]
    pub job_pids: u64,
    /// Job log lines kept per second; the rest are dropped, with one "N lines dropped"
    /// line per second.
    #[arg(
        long,
        env = "REPOBOX_LOG_LINES_PER_SECOND",
        default_value_t = 2000,
        global = true
    )]
    pub log_lines_per_second: u32,
    /// Wall-clock limit of one job (e.g. `30m`, `1h`).
    #[arg(long, env = "REPOBOX_JOB_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration, global = true)]
    pub job_timeout: Duration,
    /// How long a job entry may go without its runner's heartbeat before another runner
    /// takes it over (a runner that died mid-job).
    #[arg(long, env = "REPOBOX_VISIBILITY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub visibility_timeout: Duration,
    /// Connect and request timeout of one forge (GitHub, GitLab) API request.
    #[arg(long, env = "REPOBOX_FORGE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub forge_timeout: Duration,
    /// How long a client may take to send a request's headers (SPEC section 14: 30 s).
    /// Not public: tests shorten it.
    #[arg(long, env = "REPOBOX_HTTP_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true, hide = true)]
    pub http_header_timeout: Duration,
    /// How long a webhook's body may take after its headers (SPEC section 14: 60 s).
    /// Not public: tests shorten it.
    #[arg(long, env = "REPOBOX_WEBHOOK_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true, hide = true)]
    pub webhook_body_timeout: Duration,
    /// How often `serve` asks GitHub to redeliver webhook deliveries that failed and
    /// were never received (`0`: never).
    #[arg(long, env = "REPOBOX_REDELIVER_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    pub redeliver_interval: Duration,
    /// The widest network mode per phase (`none`, `allowlist`, `open`); a phase left
    /// out keeps its default. `.repobox.yml` `network:` may only narrow it.
    #[arg(
        long,
        env = "REPOBOX_SANDBOX_MODES",
        default_value = "setup:allowlist,agent:none,check:none",
        value_parser = crate::sandbox::network::PhaseModes::parse,
        global = true
    )]
    pub sandbox_modes: crate::sandbox::network::PhaseModes,
    /// What `allowlist` phases may reach: a comma list of `host`, `*.domain`,
    /// `host:port` and `ip:port` (only an `ip:port` entry reaches the host's own
    /// addresses). The admin setting `sandbox_allow` adds to it.
    #[arg(
        long,
        env = "REPOBOX_SANDBOX_ALLOW",
        default_value = "",
        value_parser = crate::sandbox::network::Allowlist::parse,
        global = true
    )]
    pub sandbox_allow: crate::sandbox::network::Allowlist,
    /// The `repobox` binary bound into sandboxes as their proxy forwarder (default:
    /// this executable). Not public: tests whose runner is not the binary set it.
    #[arg(long, env = "REPOBOX_SANDBOX_FORWARDER", global = true, hide = true)]
    pub sandbox_forwarder: Option<PathBuf>,
    /// Gone (SPEC section 15): read only to refuse a start that still sets it.
    #[arg(long, env = "REPOBOX_SANDBOX_NETWORK", global = true, hide = true)]
    pub sandbox_network: Option<String>,
    /// Git mirror cache and job work trees.
    #[arg(
        long,
        env = "REPOBOX_WORKDIR",
        default_value = "./data/work",
        global = true
    )]
    pub workdir: PathBuf,
    /// Comment command word.
    #[arg(
        long,
        env = "REPOBOX_TRIGGER",
        default_value = "/repobox",
        global = true
    )]
    pub trigger: String,
    /// Issue label that starts a job.
    #[arg(long, env = "REPOBOX_LABEL", default_value = "repobox", global = true)]
    pub label: String,
    /// Comma list of `provider:login` who are dashboard admins: `github:login`,
    /// `gitlab:username`, `google:e-mail`, `ldap:uid` (case-insensitive).
    #[arg(long, env = "REPOBOX_ADMINS", value_delimiter = ',', global = true)]
    pub admins: Vec<String>,
    /// Admin API token for `/api/v1` (`Authorization: Bearer <token>`), for scripts.
    #[arg(long, env = "REPOBOX_API_TOKEN", global = true, hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// Google OAuth client id (dashboard login with Google is enabled when set).
    #[arg(long, env = "REPOBOX_GOOGLE_CLIENT_ID", global = true)]
    pub google_client_id: Option<String>,
    /// Google OAuth client secret.
    #[arg(
        long,
        env = "REPOBOX_GOOGLE_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub google_client_secret: Option<Secret>,
    /// OpenID Connect issuer for the Google login (its discovery document and keys).
    #[arg(
        long,
        env = "REPOBOX_GOOGLE_ISSUER_URL",
        default_value = "https://accounts.google.com",
        global = true
    )]
    pub google_issuer_url: String,
    /// LDAP server for dashboard login (`ldaps://` for TLS); enabled with
    /// `REPOBOX_LDAP_USER_DN`.
    #[arg(long, env = "REPOBOX_LDAP_URL", global = true)]
    pub ldap_url: Option<String>,
    /// The DN a user binds as, with `{username}` in it, e.g.
    /// `uid={username},ou=people,dc=example,dc=org`.
    #[arg(long, env = "REPOBOX_LDAP_USER_DN", global = true)]
    pub ldap_user_dn: Option<String>,
    /// GitHub web base for the OAuth login (default: derived from
    /// `REPOBOX_GITHUB_API_URL`, `https://github.com` for github.com).
    #[arg(long, env = "REPOBOX_GITHUB_WEB_URL", global = true)]
    pub github_web_url: Option<String>,
    /// `text` (default) or `json` log lines.
    #[arg(
        long,
        env = "REPOBOX_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// The GitHub App settings, present when GitHub is enabled.
#[derive(Debug, Clone)]
pub struct GitHubApp {
    pub app_id: u64,
    pub private_key: Secret,
    pub api_url: String,
}

/// The GitLab settings, present when GitLab is enabled.
#[derive(Debug, Clone)]
pub struct GitLabBot {
    pub url: String,
    pub token: Secret,
}

impl Config {
    /// Checks combinations that clap cannot; each error names the variable to set.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.sandbox_network.is_some() {
            bail!(
                "REPOBOX_SANDBOX_NETWORK is gone: set REPOBOX_SANDBOX_MODES (e.g. `setup:allowlist,agent:none,check:none`) and REPOBOX_SANDBOX_ALLOW instead"
            );
        }
        if self.trigger.trim().is_empty() || self.trigger.contains(char::is_whitespace) {
            bail!("REPOBOX_TRIGGER must be one word, e.g. `/repobox`");
        }
        url::Url::parse(&self.public_url).context("REPOBOX_PUBLIC_URL is not a URL")?;
        url::Url::parse(&self.github_api_url).context("REPOBOX_GITHUB_API_URL is not a URL")?;
        if self.workers == 0 {
            bail!("REPOBOX_WORKERS must be at least 1");
        }
        if self.per_user_limit == 0 {
            bail!("REPOBOX_PER_USER_LIMIT must be at least 1");
        }
        if self.visibility_timeout < Duration::from_secs(1) {
            bail!("REPOBOX_VISIBILITY_TIMEOUT must be at least 1s");
        }
        if self.forge_timeout < Duration::from_secs(1) {
            bail!("REPOBOX_FORGE_TIMEOUT must be at least 1s");
        }
        if !self.redeliver_interval.is_zero() && self.redeliver_interval < Duration::from_secs(10) {
            bail!("REPOBOX_REDELIVER_INTERVAL must be 0 (off) or at least 10s");
        }
        if self.agent == AgentKind::Command && self.agent_command.is_none() {
            bail!("REPOBOX_AGENT_COMMAND is required when REPOBOX_AGENT=command");
        }
        if !(self.job_budget.is_finite() && self.job_budget > 0.0) {
            bail!("REPOBOX_JOB_BUDGET must be a positive amount in USD, e.g. `5`");
        }
        if self.max_turns == 0 {
            bail!("REPOBOX_MAX_TURNS must be at least 1");
        }
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 24)
        {
            bail!("REPOBOX_API_TOKEN must be at least 24 characters (`repobox keygen` makes one)");
        }
        if self.context_window.is_some_and(|w| w < 1024) {
            bail!("REPOBOX_CONTEXT_WINDOW must be at least 1024 tokens");
        }
        if self.max_tokens == 0 {
            bail!("REPOBOX_MAX_TOKENS must be at least 1");
        }
        url::Url::parse(&self.anthropic_base_url)
            .context("REPOBOX_ANTHROPIC_BASE_URL is not a URL")?;
        self.price_table()?;
        self.github_app()?;
        self.gitlab_bot()?;
        Ok(())
    }

    /// The built-in price table with `REPOBOX_MODEL_PRICES` applied.
    pub fn price_table(&self) -> anyhow::Result<crate::agent::claude::pricing::PriceTable> {
        crate::agent::claude::pricing::PriceTable::with_overrides(&self.model_prices)
            .map_err(|e| anyhow::anyhow!("REPOBOX_MODEL_PRICES: {e}"))
    }

    /// The GitHub App, when `REPOBOX_GITHUB_APP_ID` is set.
    pub fn github_app(&self) -> anyhow::Result<Option<GitHubApp>> {
        let Some(app_id) = self.github_app_id else {
            return Ok(None);
        };
        let private_key = match (&self.github_private_key, &self.github_private_key_path) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => {
                Secret::new(std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "REPOBOX_GITHUB_PRIVATE_KEY_PATH: cannot read {}",
                        path.display()
                    )
                })?)
            }
            (None, None) => bail!(
                "REPOBOX_GITHUB_PRIVATE_KEY or REPOBOX_GITHUB_PRIVATE_KEY_PATH is required when REPOBOX_GITHUB_APP_ID is set"
            ),
        };
        Ok(Some(GitHubApp {
            app_id,
            private_key,
            api_url: self.github_api_url.trim_end_matches('/').to_owned(),
        }))
    }

    /// The GitLab bot, when `REPOBOX_GITLAB_URL` is set.
    pub fn gitlab_bot(&self) -> anyhow::Result<Option<GitLabBot>> {
        let Some(url) = &self.gitlab_url else {
            return Ok(None);
        };
        url::Url::parse(url).context("REPOBOX_GITLAB_URL is not a URL")?;
        let Some(token) = &self.gitlab_token else {
            bail!("REPOBOX_GITLAB_TOKEN is required when REPOBOX_GITLAB_URL is set");
        };
        Ok(Some(GitLabBot {
            url: url.trim_end_matches('/').to_owned(),
            token: token.clone(),
        }))
    }

    /// The secret key of a process in `role`: `serve` and `runner` need
    /// `REPOBOX_SECRET_KEY` (processes that share a Redis must share one key, which a
    /// file generated on one host cannot guarantee); `all` may fall back to
    /// [`Config::secret_key`]. Returns the key and where it came from.
    pub fn secret_key_for(
        &self,
        role: &str,
        data_dir: &Path,
    ) -> anyhow::Result<([u8; 32], String)> {
        if role == "all" || self.secret_key.is_some() {
            return self.secret_key(data_dir);
        }
        bail!(
            "REPOBOX_SECRET_KEY is not set: `repobox {role}` needs it (the same key in every process; `repobox keygen` prints a new one). Only `repobox all` generates a key into ./data/secret.key"
        )
    }

    /// `REPOBOX_SECRET_KEY`, or the key in `data_dir/secret.key` (created, mode 0600, on
    /// first start). Returns the key and where it came from.
    pub fn secret_key(&self, data_dir: &Path) -> anyhow::Result<([u8; 32], String)> {
        if let Some(key) = &self.secret_key {
            return Ok((
                decode_key(key.expose()).context("REPOBOX_SECRET_KEY")?,
                "REPOBOX_SECRET_KEY".into(),
            ));
        }
        let path = data_dir.join("secret.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok((
                decode_key(text.trim()).with_context(|| path.display().to_string())?,
                path.display().to_string(),
            ));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let encoded = generate_key();
        write_private(&path, &format!("{encoded}\n"))?;
        tracing::info!(path = %path.display(), "generated a new secret key (keep it: it decrypts stored secrets)");
        Ok((decode_key(&encoded)?, path.display().to_string()))
    }
}

/// A fresh random 32-byte key, base64.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    BASE64.encode(key)
}

/// The secret key's fingerprint, stored in Redis to catch processes started with
/// different keys: hex of HMAC-SHA256(key, "repobox key fingerprint"), first 16 bytes.
/// It reveals nothing of the key.
pub fn key_fingerprint(key: &[u8; 32]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"repobox key fingerprint");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("the secret key is not valid base64"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the secret key must be 32 bytes (use `repobox keygen`)"))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["repobox"];
        all.extend_from_slice(args);
        all.push("serve");
        Cli::try_parse_from(all).unwrap().config
    }

    #[test]
    fn forge_timeout_and_redelivery_interval_defaults_and_off() {
        let config = parse(&[]);
        assert_eq!(config.forge_timeout, Duration::from_secs(30));
        assert_eq!(config.redeliver_interval, Duration::from_secs(5 * 60));
        let config = parse(&["--forge-timeout", "5s", "--redeliver-interval", "0"]);
        assert_eq!(config.forge_timeout, Duration::from_secs(5));
        assert!(config.redeliver_interval.is_zero(), "0 turns it off");
        config.validate().unwrap();
        let too_short = parse(&["--forge-timeout", "200ms"]);
        let err = too_short.validate().unwrap_err().to_string();
        assert!(err.contains("REPOBOX_FORGE_TIMEOUT"), "{err}");
    }

    #[test]
    fn the_sandbox_and_budget_settings_parse_and_validate() {
        let config = parse(&[]);
        assert_eq!(
            config.sandbox_modes.to_string(),
            "setup:allowlist,agent:none,check:none"
        );
        assert!(config.sandbox_allow.is_empty());
        assert_eq!(config.job_budget, 5.0);
        let config = parse(&[
            "--sandbox-modes",
            "setup:none",
            "--sandbox-allow",
            "pypi.org, 10.0.0.2:3141",
        ]);
        assert_eq!(
            config.sandbox_modes.to_string(),
            "setup:none,agent:none,check:none"
        );
        assert_eq!(config.sandbox_allow.to_string(), "pypi.org,10.0.0.2:3141");
        for bad in [
            &["--job-budget", "0"][..],
            &["--job-budget=-2"],
            &["--job-budget", "NaN"],
        ] {
            let err = parse(bad).validate().unwrap_err().to_string();
            assert!(err.contains("REPOBOX_JOB_BUDGET"), "{err}");
        }
        let err = parse(&["--sandbox-network", "true"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("REPOBOX_SANDBOX_MODES"), "{err}");
    }

    #[test]
    fn only_all_may_generate_a_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(&[]);
        for role in ["serve", "runner"] {
            let err = config
                .secret_key_for(role, dir.path())
                .unwrap_err()
                .to_string();
            assert!(err.contains("REPOBOX_SECRET_KEY"), "{err}");
        }
        assert!(!dir.path().join("secret.key").exists());
        let (key, _) = config.secret_key_for("all", dir.path()).unwrap();
        assert!(dir.path().join("secret.key").exists());
        let given = parse(&["--secret-key", &BASE64.encode([3u8; 32])]);
        assert_eq!(
            given.secret_key_for("serve", dir.path()).unwrap().0,
            [3u8; 32]
        );
        assert_ne!(key, [3u8; 32]);
    }

    #[test]
    fn the_key_fingerprint_is_stable_and_not_the_key() {
        let a = key_fingerprint(&[1u8; 32]);
        assert_eq!(a, key_fingerprint(&[1u8; 32]));
        assert_ne!(a, key_fingerprint(&[2u8; 32]));
        assert_eq!(a.len(), 32, "16 bytes, hex");
        assert!(!a.contains(&hex::encode([1u8; 16])));
    }
}
