//! `repobox doctor`: checks configuration, Redis, forge credentials, agent credentials
//! and the sandbox; prints one line per check with a hint, exits 1 on any FAIL.
//! Secrets are never printed.
//!
//! The secret key is checked against the fingerprint stored in Redis (`key fingerprint`
//! FAILs on a mismatch, as every process would refuse to start); doctor only reads it.
//!
//! Redis is checked for being there and for keeping what it is given (SPEC section 13,
//! "Redis durability"): `redis eviction` FAILs when the server may evict keys, `redis
//! persistence` WARNs when neither AOF nor RDB persistence is on.

use std::fmt;

use crate::config::{AgentKind, Config, SandboxKind};
use crate::forges::github::GitHub;
use crate::forges::gitlab::GitLab;
use crate::store::redis::{Rdb, ReadFrom};
use crate::store::{EmbeddedStore, RedisStore, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// Whether the secret key is the one the Redis prefix was first used with (its
/// fingerprint in `key-fingerprint`). Read only: doctor stores nothing. None when there
/// is no key to compare yet.
async fn key_fingerprint_check(config: &Config, store: &dyn Store) -> Option<Check> {
    if config.secret_key.is_none() && !config.data_dir.join("secret.key").exists() {
        return None;
    }
    let key = match config.secret_key(&config.data_dir) {
        Ok((key, _)) => key,
        Err(e) => return Some(check("key fingerprint", Status::Fail, format!("{e:#}"))),
    };
    Some(match store.key_fingerprint(None).await {
        Err(e) => check("key fingerprint", Status::Fail, e.to_string()),
        Ok(None) => check(
            "key fingerprint",
            Status::Ok,
            "none stored yet: the first process started stores this key's",
        ),
        Ok(Some(stored)) if stored == crate::config::key_fingerprint(&key) => check(
            "key fingerprint",
            Status::Ok,
            "the key matches the one this Redis prefix was first used with",
        ),
        Ok(Some(_)) => check(
            "key fingerprint",
            Status::Fail,
            "the secret key is not the one this Redis prefix was first used with: processes refuse to start (use the original REPOBOX_SECRET_KEY)",
        ),
    })
}

/// Runs every check.
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    match config.validate() {
        Ok(()) => checks.push(check("configuration", Status::Ok, "all settings parse")),
        Err(e) => checks.push(check("configuration", Status::Fail, format!("{e:#}"))),
    }
    checks.push(if config.secret_key.is_some() {
        check("secret key", Status::Ok, "from REPOBOX_SECRET_KEY")
    } else if config.data_dir.join("secret.key").exists() {
        check(
            "secret key",
            Status::Ok,
            format!("from {}", config.data_dir.join("secret.key").display()),
        )
    } else {
        check(
            "secret key",
            Status::Warn,
            "REPOBOX_SECRET_KEY is not set: `serve` and `runner` refuse to start; `all` generates one into ./data/secret.key (or set it from `repobox keygen`)",
        )
    });
    match &config.redis_url {
        None => checks.extend(embedded_checks(config).await),
        Some(url) => match RedisStore::with_role(url.expose(), &config.redis_prefix, "doctor") {
            Err(e) => checks.push(check("redis", Status::Fail, format!("{e:#}"))),
            Ok(store) => match store.ping().await {
                Ok(()) => {
                    checks.push(check("redis", Status::Ok, "answers PING"));
                    checks.extend(durability_checks(&store).await);
                    checks.extend(key_fingerprint_check(config, &store).await);
                }
                Err(_) => checks.push(check(
                    "redis",
                    Status::Fail,
                    "no answer: start redis-server or check REPOBOX_REDIS_URL",
                )),
            },
        },
    }
    checks.push(match config.github_app() {
        Err(e) => check("github app", Status::Fail, format!("{e:#}")),
        Ok(None) => check(
            "github app",
            Status::Skip,
            "not configured (set REPOBOX_GITHUB_APP_ID, or open /setup)",
        ),
        Ok(Some(app)) => match GitHub::new(
            &app.api_url,
            app.app_id,
            &app.private_key,
            crate::forges::ForgeOptions {
                timeout: config.forge_timeout,
                budget: None,
            },
        ) {
            Err(e) => check("github app", Status::Fail, format!("{e:#}")),
            Ok(gh) => match gh.app_name().await {
                Ok(name) => check(
                    "github app",
                    Status::Ok,
                    format!("authenticated as App `{name}`"),
                ),
                Err(e) => check(
                    "github app",
                    Status::Fail,
                    format!("{e} (check REPOBOX_GITHUB_APP_ID and the private key)"),
                ),
            },
        },
    });
    if config.github_app_id.is_some() {
        checks.push(if config.github_webhook_secret.is_some() {
            check("github webhook secret", Status::Ok, "set")
        } else {
            check(
                "github webhook secret",
                Status::Fail,
                "REPOBOX_GITHUB_WEBHOOK_SECRET is not set: every delivery is refused",
            )
        });
    }
    checks.push(match config.gitlab_bot() {
        Err(e) => check("gitlab", Status::Fail, format!("{e:#}")),
        Ok(None) => check(
            "gitlab",
            Status::Skip,
            "not configured (set REPOBOX_GITLAB_URL)",
        ),
        Ok(Some(bot)) => match GitLab::new(
            &bot.url,
            bot.token,
            crate::forges::ForgeOptions {
                timeout: config.forge_timeout,
                budget: None,
            },
        ) {
            Err(e) => check("gitlab", Status::Fail, format!("{e:#}")),
            Ok(gl) => match gl.client().await {
                Ok(_) => check(
                    "gitlab",
                    Status::Ok,
                    format!(
                        "token works, acting as @{}",
                        gl.bot_username().get().cloned().unwrap_or_default()
                    ),
                ),
                Err(e) => check(
                    "gitlab",
                    Status::Fail,
                    format!("{e} (check REPOBOX_GITLAB_TOKEN)"),
                ),
            },
        },
    });
    if config.gitlab_url.is_some() {
        checks.push(if config.gitlab_webhook_secret.is_some() {
            check("gitlab webhook secret", Status::Ok, "set")
        } else {
            check(
                "gitlab webhook secret",
                Status::Fail,
                "REPOBOX_GITLAB_WEBHOOK_SECRET is not set: every delivery is refused",
            )
        });
    }
    checks.push(match config.agent {
        AgentKind::Claude if config.anthropic_api_key.is_some() => {
            let priced = config
                .price_table()
                .is_ok_and(|t| t.price(&config.model).is_some());
            if priced {
                check("agent", Status::Ok, format!("claude, model {}", config.model))
            } else {
                check(
                    "agent",
                    Status::Warn,
                    format!(
                        "claude, model {}: no price known, so costs show as unknown (set REPOBOX_MODEL_PRICES)",
                        config.model
                    ),
                )
            }
        }
        AgentKind::Claude => check(
            "agent",
            Status::Fail,
            "REPOBOX_ANTHROPIC_API_KEY is not set (or choose REPOBOX_AGENT=command)",
        ),
        AgentKind::Command => match &config.agent_command {
            Some(_) => check("agent", Status::Ok, "command agent configured"),
            None => check("agent", Status::Fail, "REPOBOX_AGENT_COMMAND is not set"),
        },
    });
    checks.push(match config.sandbox {
        SandboxKind::None => check(
            "sandbox",
            Status::Warn,
            "REPOBOX_SANDBOX=none: the agent runs unconfined",
        ),
        SandboxKind::Bwrap => match crate::sandbox::check(SandboxKind::Bwrap).await {
            Ok(text) => check("sandbox", Status::Ok, text),
            Err(hint) => check("sandbox", Status::Fail, hint),
        },
    });
    // SPEC section 15: one line per phase, with what its mode lets out.
    for phase in crate::sandbox::network::Phase::ALL {
        let mode = config.sandbox_modes.get(phase);
        let name = match phase {
            crate::sandbox::network::Phase::Setup => "network setup",
            crate::sandbox::network::Phase::Agent => "network agent",
            crate::sandbox::network::Phase::Check => "network check",
        };
        checks.push(match (config.sandbox, mode) {
            (_, crate::sandbox::network::NetworkMode::None) => {
                check(name, Status::Ok, "none: loopback only".to_owned())
            }
            (SandboxKind::None, _) => check(
                name,
                Status::Warn,
                format!("{mode} is not enforced with REPOBOX_SANDBOX=none: the host's network"),
            ),
            (SandboxKind::Bwrap, mode) => {
                let what = if mode == crate::sandbox::network::NetworkMode::Open {
                    "open through the egress proxy, except the host's own, link-local and metadata addresses".to_owned()
                } else if config.sandbox_allow.is_empty() {
                    "allowlist through the egress proxy: nothing yet (REPOBOX_SANDBOX_ALLOW is empty; the admin setting sandbox_allow adds to it)".to_owned()
                } else {
                    format!("allowlist through the egress proxy: {}", config.sandbox_allow)
                };
                let forwarder = match &config.sandbox_forwarder {
                    Some(path) => Ok(path.clone()),
                    None => std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}")),
                };
                let trial = match forwarder {
                    Ok(path) => crate::sandbox::check_network(mode, &path).await,
                    Err(e) => Err(e),
                };
                match trial {
                    Ok(text) => check(name, Status::Ok, format!("{what}; {text}")),
                    Err(hint) => check(name, Status::Fail, format!("{what}; {hint}")),
                }
            }
        });
    }
    // SPEC section 15: a per-job cgroup when the runner can create one. This build
    // samples the sandbox's processes instead (`sandbox::job_limits`), which a fast
    // allocation can outrun: a WARN, with the limits that apply.
    checks.push(check(
        "job limits",
        Status::Warn,
        format!(
            "memory {} and {} processes per job, enforced by sampling the sandbox's processes every {} ms (no per-job cgroup); per-process limits apply too",
            bytesize::ByteSize::b(config.job_memory.as_u64()),
            config.job_pids,
            crate::sandbox::job_limits::SAMPLE_EVERY.as_millis()
        ),
    ));
    checks
}

/// Without `REPOBOX_REDIS_URL`: the embedded store (SPEC section 19), which doctor opens
/// only when it exists (it creates nothing).
async fn embedded_checks(config: &Config) -> Vec<Check> {
    let path = config.data_dir.join(crate::store::embedded::FILE_NAME);
    let only_all = "REPOBOX_REDIS_URL is not set: `repobox all` keeps everything there; `serve` and `runner` need Redis";
    if !path.exists() {
        return vec![check(
            "store",
            Status::Ok,
            format!(
                "embedded store {} (created by the first `repobox all`); {only_all}",
                path.display()
            ),
        )];
    }
    let store = match EmbeddedStore::open(&path) {
        Ok(store) => store,
        Err(e) => return vec![check("store", Status::Fail, format!("{e:#}"))],
    };
    let mut checks = vec![match store.ping().await {
        Ok(()) => check(
            "store",
            Status::Ok,
            format!("embedded store {}; {only_all}", path.display()),
        ),
        Err(e) => check("store", Status::Fail, format!("{}: {e}", path.display())),
    }];
    checks.extend(key_fingerprint_check(config, &store).await);
    checks
}

/// SPEC section 13, "Redis durability": FAIL when the server may evict keys (an
/// accepted job would vanish), WARN when it persists nothing (a restart loses every job;
/// the orphan reconciler re-queues what it can).
async fn durability_checks(store: &RedisStore) -> Vec<Check> {
    let d = match store.durability().await {
        Ok(d) => d,
        Err(e) => {
            return vec![check(
                "redis eviction",
                Status::Warn,
                format!("cannot read the server's settings: {e}"),
            )];
        }
    };
    let from = match d.source {
        ReadFrom::Config => "",
        ReadFrom::Info => " (from INFO: CONFIG is disabled)",
    };
    let eviction = if d.evicts() {
        check(
            "redis eviction",
            Status::Fail,
            format!(
                "maxmemory-policy is {}{from}: Redis may delete job records and streams when memory runs short; set `maxmemory-policy noeviction` (redis.conf, or CONFIG SET maxmemory-policy noeviction)",
                d.maxmemory_policy
            ),
        )
    } else {
        check(
            "redis eviction",
            Status::Ok,
            format!("maxmemory-policy noeviction{from}"),
        )
    };
    let mut kept = Vec::new();
    if d.aof {
        kept.push("AOF (appendonly yes)".to_owned());
    }
    match &d.rdb {
        Rdb::Scheduled(schedule) => kept.push(format!("RDB snapshots (save {schedule})")),
        Rdb::Snapshots(n) if *n > 0 => kept.push(format!("RDB ({n} snapshots since start)")),
        Rdb::Snapshots(_) | Rdb::Off => {}
    }
    let persistence = if d.persists() {
        check("redis persistence", Status::Ok, kept.join(" and "))
    } else {
        check(
            "redis persistence",
            Status::Warn,
            format!(
                "neither AOF nor RDB persistence is on{from}: a Redis restart loses every queued and running job; set `appendonly yes` (or a `save` schedule)"
            ),
        )
    };
    vec![eviction, persistence]
}

/// Prints the table; returns whether every check passed (no FAIL).
pub fn print(checks: &[Check]) -> bool {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        println!(
            "{:<4}  {:<width$}  {}",
            c.status.to_string(),
            c.name,
            c.detail
        );
    }
    !checks.iter().any(|c| c.status == Status::Fail)
}
