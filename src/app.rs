//! Wiring: shared state, the HTTP router, and the process roles (`serve`, `runner`,
//! `all`).
//!
//! `build_router(state)`, `serve(listener, ...)` and `build_runner` are what tests call;
//! `run_serve`, `run_runner` and `run_all` are what the binary calls.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use std::time::Duration;

use crate::ack::Acknowledger;
use crate::agent::Agent;
use crate::agent::claude;
use crate::agent::command::CommandAgent;
use crate::config::{AgentKind, Config, SandboxKind};
use crate::crypto::SecretBox;
use crate::forges::budget::{GITHUB_LIMITS, GITLAB_LIMITS, Limit, RequestBudget};
use crate::forges::github::GitHub;
use crate::forges::gitlab::GitLab;
use crate::forges::{ForgeOptions, Forges};
use crate::model::ForgeKind;
use crate::runner::{Runner, RunnerSettings};
use crate::secret::Secret;
use crate::settings::{AdminSettings, SettingsSource};
use crate::store::embedded::EmbeddedBudget;
use crate::store::redis_budget::RedisBudget;
use crate::store::{self, EmbeddedStore, Store, StoreError};
use crate::telemetry::Metrics;
use crate::web;
use crate::web::auth::Authenticator;
use crate::web::dashboard::log_hub::LogHub;
use crate::webhooks::intake::IntakeSettings;
use crate::webhooks::limits::{self, WebhookLimits};
use crate::webhooks::{self, MAX_BODY_BYTES, verify};

/// State shared by every request handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub github_webhook_secrets: Vec<Secret>,
    pub gitlab_webhook_secrets: Vec<Secret>,
    /// The configured trigger and label; the admin settings override them (`settings`).
    pub trigger: String,
    pub label: String,
    pub public_url: String,
    /// The GitLab bot's own username, once known (its notes never trigger).
    pub gitlab_bot_username: Arc<OnceLock<String>>,
    /// Admin settings (allowed repositories, trigger, label, ...), read on every delivery.
    pub settings: SettingsSource,
    /// The dashboard's sign-in providers.
    pub auth: Arc<Authenticator>,
    /// Seals secrets stored from the dashboard (provider tokens) with the secret key.
    pub secret_box: SecretBox,
    /// What the first-run `/setup` page needs to know.
    pub setup: web::dashboard::setup::SetupInfo,
    /// The configured forges (the dashboard lists the repositories the bot reaches).
    pub forges: Forges,
    /// `REPOBOX_API_TOKEN`: admin access to `/api/v1` for scripts.
    pub api_token: Option<Secret>,
    /// The live-log readers, one per job being watched (`/jobs/{id}/events`).
    pub log_hub: Arc<LogHub>,
    /// `/jobs/new`'s repository lists, per user.
    pub picker: Arc<web::dashboard::picker::Picker>,
    /// In-flight, size and time limits of the webhook routes.
    pub webhook_limits: WebhookLimits,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Intake settings for one forge: the admin settings as stored now, over the
    /// configuration. Fails only when the store cannot be read.
    pub async fn intake_settings(&self, forge: ForgeKind) -> Result<IntakeSettings, StoreError> {
        let admin = self.settings.load().await?;
        let own_logins = match forge {
            ForgeKind::GitLab => self
                .gitlab_bot_username
                .get()
                .cloned()
                .into_iter()
                .collect(),
            // GitHub Apps act as `<slug>[bot]`, which the payload marks as a bot.
            ForgeKind::GitHub => Vec::new(),
        };
        Ok(IntakeSettings {
            trigger: admin.trigger,
            label: admin.label,
            own_logins,
            allowed_repos: admin.allowed_repos,
            allow_confidential: admin.allow_confidential,
        })
    }
}

/// Routes of `serve`: webhooks, health, metrics. The webhook routes are behind their
/// limits ([`webhooks::limits`]; in-flight count per router, shown as the
/// `repobox_webhook_requests_in_flight` gauge).
pub fn build_router(state: AppState) -> Router {
    let gate = limits::Gate::new(state.webhook_limits, state.metrics.webhooks_in_flight());
    let webhooks = Router::new()
        .route("/webhooks/github", post(webhooks::github))
        .route("/webhooks/gitlab", post(webhooks::gitlab))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(gate, limits::limit));
    Router::new()
        .merge(webhooks)
        .merge(web::health::routes())
        .merge(web::dashboard::routes(&state))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// How the HTTP server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A request's headers must be in within this (SPEC section 14: 30 s), else the
    /// connection is closed.
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeOptions {
    pub fn from_config(config: &Config) -> Self {
        ServeOptions {
            header_timeout: config.http_header_timeout,
        }
    }
}

/// [`serve_with`] with the default options.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeOptions::default()).await
}

/// Raises the soft limit on open files to the hard one: 256 webhook requests in
/// flight, live log streams and Redis connections need more than the 1024 a login
/// shell often starts with. A failure is only logged.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, "could not raise the open-file limit");
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then drains open requests.
///
/// HTTP/1.1 only (what GitHub, GitLab and browsers behind a proxy speak), over hyper
/// directly rather than `axum::serve`, for the header read timeout that `axum::serve`
/// does not set. Each request carries `ConnectInfo<SocketAddr>` (the peer address).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    raise_fd_limit();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    use std::io::ErrorKind::*;
                    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
                        // Out of file descriptors, most likely: let some close.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        );
        let connection = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Everything `serve` runs, built from the configuration.
pub struct Services {
    pub state: AppState,
    pub acknowledger: Arc<Acknowledger>,
    /// The forges, shared with a runner in the same process (`all`).
    pub forges: Forges,
    /// The GitHub adapter itself, for the App-level calls (webhook redelivery).
    pub github: Option<Arc<GitHub>>,
}

/// What [`build_forges`] builds.
pub struct BuiltForges {
    pub forges: Forges,
    /// GitLab's bot username, learned once GitLab answers.
    pub gitlab_bot_username: Arc<OnceLock<String>>,
    /// The GitHub adapter itself (also in `forges`), for the App-level calls.
    pub github: Option<Arc<GitHub>>,
}

/// The configured forges, with `REPOBOX_FORGE_TIMEOUT` and a request budget for
/// content writes shared in Redis by every process (per GitHub installation, per GitLab
/// token).
pub fn build_forges(config: &Config) -> anyhow::Result<BuiltForges> {
    let mut forges = Forges::default();
    let mut gitlab_bot_username = Arc::new(OnceLock::new());
    let budget = match &config.redis_url {
        Some(url) => Budgets::Redis(RedisBudget::new(url.expose(), &config.redis_prefix, &[])?),
        None => Budgets::Embedded(EmbeddedStore::in_dir(&config.data_dir)?),
    };
    let options = |limits: &[Limit]| {
        let budget: Arc<dyn RequestBudget> = match &budget {
            Budgets::Redis(redis) => Arc::new(redis.with_limits(limits)),
            Budgets::Embedded(store) => Arc::new(EmbeddedBudget::new(store.clone(), limits)),
        };
        ForgeOptions {
            timeout: config.forge_timeout,
            budget: Some(budget),
        }
    };
    let mut github_adapter = None;
    if let Some(app) = config.github_app()? {
        let github = Arc::new(
            GitHub::new(
                &app.api_url,
                app.app_id,
                &app.private_key,
                options(GITHUB_LIMITS),
            )
            .context("REPOBOX_GITHUB_PRIVATE_KEY")?,
        );
        github_adapter = Some(github.clone());
        forges.github = Some(github);
    }
    if let Some(bot) = config.gitlab_bot()? {
        let gitlab = Arc::new(GitLab::new(&bot.url, bot.token, options(GITLAB_LIMITS))?);
        gitlab_bot_username = gitlab.bot_username();
        // Learn the bot's username in the background; GitLab may be down at start.
        let probe = gitlab.clone();
        tokio::spawn(async move {
            if let Err(e) = probe.client().await {
                warn!(error = %e, "GitLab not reachable yet; will retry on first use");
            }
        });
        forges.gitlab = Some(gitlab);
    }
    // Jobs naming a personal provider (SPEC 18); the key is given by each process.
    forges.personal = Some(Arc::new(crate::forges::personal::Personal {
        github: options(GITHUB_LIMITS),
        gitlab: options(GITLAB_LIMITS),
        secret_box: None,
    }));
    Ok(BuiltForges {
        forges,
        gitlab_bot_username,
        github: github_adapter,
    })
}

/// Where the forge request budgets are kept: with the store.
enum Budgets {
    Redis(RedisBudget),
    Embedded(EmbeddedStore),
}

/// Builds the store, forges, state and acknowledger from the configuration, as `serve`.
pub fn build_services(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Services> {
    build_services_as(config, metrics, "serve")
}

/// [`build_services`] for the process role `role` (`serve` or `all`), which names the
/// Redis connections (`repobox:<role>:<purpose>`).
pub fn build_services_as(
    config: &Config,
    metrics: Arc<Metrics>,
    role: &str,
) -> anyhow::Result<Services> {
    let store = store::open(config, role)?;
    let BuiltForges {
        forges,
        gitlab_bot_username,
        github,
    } = build_forges(config)?;
    let github_webhook_secrets = config
        .github_webhook_secret
        .as_ref()
        .map(verify::secret_list)
        .unwrap_or_default();
    let gitlab_webhook_secrets = config
        .gitlab_webhook_secret
        .as_ref()
        .map(verify::secret_list)
        .unwrap_or_default();
    if forges.github.is_some() && github_webhook_secrets.is_empty() {
        warn!("REPOBOX_GITHUB_WEBHOOK_SECRET is not set: every GitHub delivery will be refused");
    }
    if forges.gitlab.is_some() && gitlab_webhook_secrets.is_empty() {
        warn!("REPOBOX_GITLAB_WEBHOOK_SECRET is not set: every GitLab delivery will be refused");
    }
    if forges.github.is_none() && forges.gitlab.is_none() {
        info!(
            "no forge configured yet: open {}/setup to register a GitHub App, or set REPOBOX_GITLAB_URL",
            config.public_url.trim_end_matches('/')
        );
    }
    let settings = SettingsSource::new(store.clone(), AdminSettings::defaults(config));
    let (key, key_source) = config.secret_key_for(role, &config.data_dir)?;
    info!(source = %key_source, "secret key loaded");
    let forges = forges.with_secret_box(Some(SecretBox::new(&key)));
    // Code exchanges must not follow redirects (the OAuth crates' advice).
    let auth_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let auth = Arc::new(Authenticator::from_config(config, auth_http)?);
    let state = AppState::new(Inner {
        store: store.clone(),
        metrics: metrics.clone(),
        github_webhook_secrets,
        gitlab_webhook_secrets,
        trigger: config.trigger.clone(),
        label: config.label.clone(),
        public_url: config.public_url.clone(),
        gitlab_bot_username,
        settings: settings.clone(),
        auth,
        secret_box: SecretBox::new(&key),
        setup: web::dashboard::setup::SetupInfo {
            github_app_id: config.github_app_id,
            github_api_url: config.github_api_url.trim_end_matches('/').to_owned(),
            github_web_url: web::auth::github_web_url(config)?,
            gitlab_url: config.gitlab_url.clone(),
        },
        forges: forges.clone(),
        api_token: config.api_token.clone(),
        log_hub: Arc::new(LogHub::new(store.clone())),
        picker: Arc::default(),
        webhook_limits: WebhookLimits {
            body_timeout: config.webhook_body_timeout,
            ..WebhookLimits::default()
        },
    });
    let acknowledger = Arc::new(Acknowledger {
        store,
        forges: forges.clone(),
        metrics,
        public_url: config.public_url.clone(),
        settings,
        consumer: consumer_name(),
        visibility_timeout: config.visibility_timeout,
    });
    Ok(Services {
        state,
        acknowledger,
        forges,
        github,
    })
}

/// The agent `REPOBOX_AGENT` names.
pub fn build_agent(config: &Config) -> anyhow::Result<Arc<dyn Agent>> {
    match config.agent {
        AgentKind::Command => {
            let command = config.agent_command.clone().ok_or_else(|| {
                anyhow::anyhow!("REPOBOX_AGENT_COMMAND is required when REPOBOX_AGENT=command")
            })?;
            Ok(Arc::new(CommandAgent { command }))
        }
        AgentKind::Claude => {
            let key = config.anthropic_api_key.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "REPOBOX_ANTHROPIC_API_KEY is required when REPOBOX_AGENT=claude (the default); or set REPOBOX_AGENT=command"
                )
            })?;
            let client = claude::api::Client::new(
                &config.anthropic_base_url,
                key,
                claude::api::RetryPolicy::default(),
            )?;
            let settings = claude::ClaudeSettings {
                model: config.model.clone(),
                max_turns: config.max_turns,
                max_tokens: config.max_tokens,
                context_window: config.context_window,
                prices: config.price_table()?,
                ..claude::ClaudeSettings::default()
            };
            Ok(Arc::new(claude::ClaudeAgent::new(client, settings)))
        }
    }
}

/// A runner over the given store and forges, configured from `config`.
pub fn build_runner(
    config: &Config,
    store: Arc<dyn Store>,
    forges: Forges,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Runner>> {
    let agent = build_agent(config)?;
    build_runner_with_agent(config, store, forges, metrics, agent)
}

/// [`build_runner`] with a given agent (embedding, tests).
pub fn build_runner_with_agent(
    config: &Config,
    store: Arc<dyn Store>,
    forges: Forges,
    metrics: Arc<Metrics>,
    agent: Arc<dyn Agent>,
) -> anyhow::Result<Arc<Runner>> {
    if config.sandbox == SandboxKind::None {
        warn!("REPOBOX_SANDBOX=none: agent commands run without isolation");
    }
    std::fs::create_dir_all(&config.workdir).with_context(|| {
        format!(
            "REPOBOX_WORKDIR: cannot create {}",
            config.workdir.display()
        )
    })?;
    let workdir = config
        .workdir
        .canonicalize()
        .with_context(|| format!("REPOBOX_WORKDIR: {}", config.workdir.display()))?;
    // Never generates a key here: only one that is configured or already made.
    let secret_box = (config.secret_key.is_some() || config.data_dir.join("secret.key").exists())
        .then(|| config.secret_key(&config.data_dir).ok())
        .flatten()
        .map(|(key, _)| SecretBox::new(&key));
    Ok(Arc::new(Runner::new(
        store,
        forges.with_secret_box(secret_box.clone()),
        agent,
        metrics,
        RunnerSettings {
            consumer: consumer_name(),
            workers: config.workers,
            per_user_limit: config.per_user_limit,
            job_timeout: config.job_timeout,
            visibility_timeout: config.visibility_timeout,
            workdir,
            public_url: config.public_url.clone(),
            trigger: config.trigger.clone(),
            sandbox: config.sandbox,
            job_budget_usd: config.job_budget,
            sandbox_modes: config.sandbox_modes,
            sandbox_allow: config.sandbox_allow.clone(),
            secret_box: secret_box.clone(),
            sandbox_forwarder: match &config.sandbox_forwarder {
                Some(path) => path.clone(),
                None => std::env::current_exe()
                    .context("cannot find this executable (set REPOBOX_SANDBOX_FORWARDER)")?,
            },
            progress_interval: Duration::from_secs(5),
            job_limits: crate::sandbox::job_limits::JobLimits {
                memory_bytes: config.job_memory.as_u64(),
                processes: config.job_pids,
            },
            max_tree_size: config.max_tree_size.as_u64(),
            log_lines_per_second: config.log_lines_per_second,
            max_deliveries: 5,
            admin_defaults: AdminSettings::defaults(config),
        },
    )))
}

/// The configuration with the GitHub App registered through `/setup`, when the
/// environment names none (first run: only Redis is configured).
async fn with_stored_github_app(mut config: Config, role: &str) -> anyhow::Result<Config> {
    if config.github_app_id.is_some() {
        return Ok(config);
    }
    let store = store::open(&config, role)?;
    let (key, _) = config.secret_key_for(role, &config.data_dir)?;
    match web::dashboard::setup::apply_stored_app(
        &mut config,
        store.as_ref(),
        &SecretBox::new(&key),
    )
    .await
    {
        Ok(true) => info!(
            app_id = config.github_app_id,
            "using the GitHub App registered through /setup"
        ),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "the GitHub App registered through /setup is not used"),
    }
    Ok(config)
}

/// Why a process refuses to start with its secret key.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error(
        "REPOBOX_SECRET_KEY does not match the key this Redis prefix was first used with (its fingerprint in `key-fingerprint` differs): every process sharing the prefix needs the same key"
    )]
    Mismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the secret key against the fingerprint in the store, storing it when none is
/// (the first process started sets it).
pub async fn check_key_fingerprint(store: &dyn Store, key: &[u8; 32]) -> Result<(), KeyCheckError> {
    let fingerprint = crate::config::key_fingerprint(key);
    match store.key_fingerprint(Some(&fingerprint)).await? {
        Some(stored) if stored == fingerprint => Ok(()),
        // A stored value of the wrong form is a mismatch too.
        _ => Err(KeyCheckError::Mismatch),
    }
}

/// The start-up key check of a process in `role`: refuses the key on a mismatch.
/// When Redis cannot be reached yet, the process starts and the check runs in the
/// background until Redis answers; a mismatch then stops the process (`shutdown`) and
/// the returned task ends with the error.
async fn guard_secret_key(
    config: &Config,
    role: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let (key, _) = config.secret_key_for(role, &config.data_dir)?;
    let store = store::open(config, role)?;
    match check_key_fingerprint(store.as_ref(), &key).await {
        Ok(()) => Ok(None),
        Err(KeyCheckError::Mismatch) => Err(KeyCheckError::Mismatch.into()),
        Err(KeyCheckError::Store(e)) => {
            warn!(error = %e, "Redis not reachable at start: the secret key is checked once it is");
            let shutdown = shutdown.clone();
            Ok(Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    match check_key_fingerprint(store.as_ref(), &key).await {
                        Ok(()) => {
                            info!("secret key matches the stored fingerprint");
                            return Ok(());
                        }
                        Err(KeyCheckError::Mismatch) => {
                            tracing::error!("{}; stopping", KeyCheckError::Mismatch);
                            shutdown.cancel();
                            return Err(KeyCheckError::Mismatch.into());
                        }
                        Err(KeyCheckError::Store(_)) => {}
                    }
                }
            })))
        }
    }
}

/// The background key check's verdict, once the process has stopped.
async fn key_guard_result(
    guard: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    match guard {
        Some(task) if task.is_finished() => task.await?,
        Some(task) => {
            task.abort();
            Ok(())
        }
        None => Ok(()),
    }
}

/// `repobox runner`: job workers only.
pub async fn run_runner(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    needs_redis(&config, "runner")?;
    let shutdown = CancellationToken::new();
    let key_guard = guard_secret_key(&config, "runner", &shutdown).await?;
    let config = with_stored_github_app(config, "runner").await?;
    let metrics = Arc::new(Metrics::new());
    let store = store::open(&config, "runner")?;
    let forges = build_forges(&config)?.forges;
    let runner = build_runner(&config, store.clone(), forges, metrics)?;
    if let Err(e) = store.ensure_groups().await {
        warn!(error = %e, "Redis not reachable at start; retrying");
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        signal.cancel();
    });
    runner.run(shutdown).await;
    key_guard_result(key_guard).await
}

/// A consumer name unique to this process: host, pid and a random suffix.
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{}", std::process::id(), ulid::Ulid::new())
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `repobox serve`.
pub async fn run_serve(config: Config) -> anyhow::Result<()> {
    run_http(config, false).await
}

/// `repobox all`: `serve` and a runner in one process.
pub async fn run_all(config: Config) -> anyhow::Result<()> {
    run_http(config, true).await
}

/// `serve` and `runner` as processes of their own share their work through Redis; only
/// `all` can keep it in the embedded store (SPEC section 19).
fn needs_redis(config: &Config, command: &str) -> anyhow::Result<()> {
    if config.redis_url.is_none() {
        anyhow::bail!(
            "`repobox {command}` needs Redis: set REPOBOX_REDIS_URL (only `repobox all`, one process on one machine, can run on the embedded store in REPOBOX_DATA_DIR)"
        );
    }
    Ok(())
}

async fn run_http(config: Config, with_runner: bool) -> anyhow::Result<()> {
    config.validate()?;
    let role = if with_runner { "all" } else { "serve" };
    if !with_runner {
        needs_redis(&config, "serve")?;
    }
    let shutdown = CancellationToken::new();
    let key_guard = guard_secret_key(&config, role, &shutdown).await?;
    let config = with_stored_github_app(config, role).await?;
    let metrics = Arc::new(Metrics::new());
    let services = build_services_as(&config, metrics, role)?;
    if config.redis_url.is_none() {
        let path = config.data_dir.join(store::embedded::FILE_NAME);
        info!(path = %path.display(), "REPOBOX_REDIS_URL is not set: keeping everything in the embedded store");
    }
    if let Err(e) = services.state.store.ensure_groups().await {
        warn!(error = %e, "Redis not reachable at start; intake answers 503 until it is");
    }
    // While no forge is configured: the setup token, in the log (SPEC §14).
    if let Err(e) = web::dashboard::setup::announce(&services.state).await {
        warn!(error = %e, "the setup token could not be stored; /setup stays closed until it can");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (REPOBOX_LISTEN)", config.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, public_url = %config.public_url, "repobox serve listening");
    let ack = tokio::spawn(services.acknowledger.clone().run(shutdown.clone()));
    tokio::spawn(crate::reconcile::run(
        services.state.store.clone(),
        config.visibility_timeout,
        shutdown.clone(),
    ));
    let redeliver = match &services.github {
        Some(github) if !config.redeliver_interval.is_zero() => {
            let reconciler = webhooks::redeliver::Redeliverer::new(
                github.clone(),
                services.state.store.clone(),
                config.redeliver_interval,
            );
            Some(tokio::spawn(reconciler.run(shutdown.clone())))
        }
        _ => None,
    };
    let runner = if with_runner {
        match build_runner(
            &config,
            services.state.store.clone(),
            services.forges.clone(),
            services.state.metrics.clone(),
        ) {
            Ok(runner) => Some(tokio::spawn(runner.run(shutdown.clone()))),
            Err(e) => {
                warn!(error = %e, "no job workers in this process: jobs wait in jobs:stream");
                None
            }
        }
    } else {
        None
    };
    let signal = shutdown.clone();
    let log_hub = services.state.log_hub.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        // Live logs end now: open job pages must not hold up the drain.
        log_hub.close();
        signal.cancel();
    });
    serve_with(
        listener,
        build_router(services.state),
        shutdown.clone(),
        ServeOptions::from_config(&config),
    )
    .await?;
    shutdown.cancel();
    let _ = ack.await;
    if let Some(redeliver) = redeliver {
        let _ = redeliver.await;
    }
    if let Some(runner) = runner {
        let _ = runner.await;
    }
    info!("stopped");
    key_guard_result(key_guard).await
}
