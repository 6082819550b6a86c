//! Jobs run with a user's personal provider (SPEC 18): the forge adapter of one job,
//! built from the provider the job names, with its token opened only here, in the
//! process that makes the job's forge calls (the acknowledger, the runner).
//!
//! The token is opened from the store's sealed text with the secret key each time a
//! job needs it, held in a [`crate::secret::Secret`] (masked wherever printed) inside
//! the adapter, and given to git only through the credential helper's pipe, as the
//! App's installation tokens are: it is never logged or written to disk. Errors name
//! the provider by its label, never the token.

use std::sync::Arc;

use super::github::GitHub;
use super::gitlab::GitLab;
use super::{Forge, ForgeOptions};
use crate::crypto::SecretBox;
use crate::job::Job;
use crate::model::ForgeKind;
use crate::store::{Provider, Store};

/// GitHub's REST base when a provider leaves its URL empty (github.com).
pub const GITHUB_API: &str = "https://api.github.com";

/// Why a job's provider cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the personal provider this job names is gone (deleted from its owner's settings)")]
    Gone,
    #[error(
        "the personal provider “{0}” cannot be opened: the secret key is not the one it was sealed with"
    )]
    Sealed(String),
    #[error(
        "the personal provider “{label}” is a {kind} provider; the job's repository is on {forge}"
    )]
    WrongForge {
        label: String,
        kind: ForgeKind,
        forge: ForgeKind,
    },
    #[error("the personal provider “{0}” is not usable: {1}")]
    Invalid(String, String),
    #[error("no secret key to open personal providers with (REPOBOX_SECRET_KEY)")]
    NoKey,
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl ProviderError {
    /// Worth trying again later (the store did not answer).
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Store(_))
    }
}

/// What personal adapters are built with: each forge's request options (timeout, the
/// budget backend with that forge's limits) and the key that opens provider tokens.
#[derive(Clone)]
pub struct Personal {
    pub github: ForgeOptions,
    pub gitlab: ForgeOptions,
    pub secret_box: Option<SecretBox>,
}

impl Personal {
    /// The adapter of `job`'s provider.
    pub async fn forge_for(&self, job: &Job, store: &dyn Store) -> Result<JobForge, ProviderError> {
        let options = match job.repo.forge {
            ForgeKind::GitHub => self.github.clone(),
            ForgeKind::GitLab => self.gitlab.clone(),
        };
        forge_for(job, store, self.secret_box.as_ref(), options).await
    }

    /// The adapter of `provider` outside a job (the repository picker).
    pub fn open(&self, provider: &Provider) -> Result<Arc<dyn Forge>, ProviderError> {
        let options = match provider.kind {
            ForgeKind::GitHub => self.github.clone(),
            ForgeKind::GitLab => self.gitlab.clone(),
        };
        open(provider, self.secret_box.as_ref(), options)
    }
}

/// The adapter of a job's forge calls, and the personal provider whose token it acts
/// with (`None`: the App / the bot).
pub struct JobForge {
    pub provider: Option<Provider>,
    pub forge: Arc<dyn Forge>,
}

impl JobForge {
    /// `error` as the job shows it ([`explain`] when a provider is used).
    pub fn explain(&self, error: &str) -> String {
        match &self.provider {
            Some(p) => explain(p, error),
            None => error.to_owned(),
        }
    }
}

/// The adapter of `job`'s provider (`job.provider` must be set).
pub async fn forge_for(
    job: &Job,
    store: &dyn Store,
    secret_box: Option<&SecretBox>,
    options: ForgeOptions,
) -> Result<JobForge, ProviderError> {
    let id = job.provider.ok_or(ProviderError::Gone)?;
    let provider = store.get_provider(id).await?.ok_or(ProviderError::Gone)?;
    if provider.kind != job.repo.forge {
        return Err(ProviderError::WrongForge {
            label: provider.label.clone(),
            kind: provider.kind,
            forge: job.repo.forge,
        });
    }
    let forge = open(&provider, secret_box, options)?;
    Ok(JobForge {
        provider: Some(provider),
        forge,
    })
}

/// The adapter that acts with `provider`'s token.
pub fn open(
    provider: &Provider,
    secret_box: Option<&SecretBox>,
    options: ForgeOptions,
) -> Result<Arc<dyn Forge>, ProviderError> {
    let secret_box = secret_box.ok_or(ProviderError::NoKey)?;
    let token = secret_box
        .open(&provider.token, &Provider::token_context(provider.id))
        .map_err(|_| ProviderError::Sealed(provider.label.clone()))?;
    let invalid = |e: anyhow::Error| {
        ProviderError::Invalid(
            provider.label.clone(),
            crate::secret::redact(&e.to_string(), &[&token]),
        )
    };
    Ok(match provider.kind {
        ForgeKind::GitHub => {
            let api = match provider.url.trim() {
                "" => GITHUB_API,
                url => url,
            };
            Arc::new(
                GitHub::with_personal_token(api, token.clone(), budget_key(provider), options)
                    .map_err(invalid)?,
            )
        }
        ForgeKind::GitLab => {
            Arc::new(GitLab::new(&provider.url, token.clone(), options).map_err(invalid)?)
        }
    })
}

/// A provider's request budget: its own, apart from the App's installations.
fn budget_key(provider: &Provider) -> String {
    format!("{}:provider:{}", provider.kind, provider.id)
}

/// A job error as the job's record and comment show it: a refusal of the provider's
/// token (401, or 403 "Bad credentials") names the provider, so its owner knows which
/// token to renew.
pub fn explain(provider: &Provider, error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    if lower.contains(" 401") || lower.contains("bad credentials") || lower.contains("unauthorized")
    {
        return format!(
            "the personal provider “{}” was refused: its token is revoked, expired or lacks access ({error})",
            provider.label
        );
    }
    error.to_owned()
}
