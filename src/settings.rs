//! Admin settings (SPEC section 8, "admin settings"): values an admin changes on the
//! dashboard, stored in the `settings` hash (SPEC section 9) over the defaults of the
//! process configuration (`REPOBOX_TRIGGER`, `REPOBOX_LABEL`, ...).
//!
//! They take effect without a restart: intake reads them on every delivery and a runner
//! at the start of every job (one `HGETALL` of a small hash; no cache, so a change
//! applies to the very next webhook or job). A stored value that does not validate
//! (written by hand, or by an older version) is ignored with a warning and the default
//! applies, so a typo in Redis can never stop intake; the dashboard writes through
//! [`SettingsSource::save`], which refuses invalid values with a clear message.
//!
//! | field | format | default |
//! |---|---|---|
//! | `allowed_repos` | `forge:owner/name` patterns, comma or newline separated; `*` as the name part (`github:acme/*`); empty = every repository | empty |
//! | `trigger` | one word | `REPOBOX_TRIGGER` |
//! | `label` | label name | `REPOBOX_LABEL` |
//! | `model` | model id | `REPOBOX_MODEL` |
//! | `per_user_limit` | 1..=1000 | `REPOBOX_PER_USER_LIMIT` |
//! | `max_turns` | 1..=10000 | `REPOBOX_MAX_TURNS` |
//! | `allow_workflow_changes` | `true`/`false` | `false` |
//! | `allow_forks` | `true`/`false` | `false` (SPEC 14: jobs on PRs/MRs from forks) |
//! | `allow_confidential` | `true`/`false` | `false` (SPEC 14: confidential GitLab notes and issues) |
//! | `allowed_models` | model ids, comma or newline separated; `.repobox.yml` `model` must be one of them or the `model` setting (SPEC 16); empty = any | empty |
//! | `monthly_cap_requester` | USD per requester per calendar month (UTC), e.g. `50`; empty = none (SPEC 16) | empty |
//! | `monthly_cap_repo` | USD per repository per calendar month (UTC); empty = none | empty |
//! | `sandbox_allow` | `host`, `*.domain`, `host:port`, `ip:port` entries, comma or newline separated; added to `REPOBOX_SANDBOX_ALLOW` (SPEC 15) | empty |

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tracing::warn;

use crate::config::Config;
use crate::model::{ForgeKind, RepoRef};
use crate::sandbox::network::Allowlist;
use crate::store::{Store, StoreError};

/// The names of the admin settings, in display order.
pub const FIELDS: [&str; 13] = [
    "allowed_repos",
    "trigger",
    "label",
    "model",
    "per_user_limit",
    "max_turns",
    "allow_workflow_changes",
    "allow_forks",
    "allow_confidential",
    "sandbox_allow",
    "allowed_models",
    "monthly_cap_requester",
    "monthly_cap_repo",
];

/// An admin setting that does not validate. The text is meant for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown admin setting `{0}`")]
    Unknown(String),
    #[error("admin setting `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A USD amount as cents: `50`, `12.5`, `0.25`; empty is no cap.
fn cents(value: &str, field: &'static str) -> Result<Option<u64>, SettingsError> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.trim_start_matches('$').parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 && usd <= 1_000_000.0 => {
            Ok(Some((usd * 100.0).round() as u64))
        }
        _ => Err(invalid(
            field,
            "must be an amount in USD above 0 (e.g. `50` or `12.50`), or empty for no cap",
        )),
    }
}

fn cents_text(cents: Option<u64>) -> String {
    cents.map_or_else(String::new, |c| format!("{}.{:02}", c / 100, c % 100))
}

/// A model id: no spaces or control characters, at most 100 bytes.
fn valid_model(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 100
        && !value.contains(|c: char| c.is_whitespace() || c.is_control())
}

impl AdminSettings {
    /// Whether `.repobox.yml` may pick `model` (SPEC 16): the admin's own model, or one
    /// on a non-empty `allowed_models` list.
    pub fn model_allowed(&self, model: &str) -> bool {
        self.allowed_models.is_empty()
            || model == self.model
            || self.allowed_models.iter().any(|m| m == model)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// One entry of `allowed_repos`: `forge:owner/name`, or `forge:owner/*` for every
/// repository of an owner (a GitLab group path may have several segments:
/// `gitlab:group/sub/*`). Owner and name compare case-insensitively, as forges do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    pub forge: ForgeKind,
    pub owner: String,
    /// `None` for `*`.
    pub name: Option<String>,
}

impl RepoPattern {
    pub fn parse(text: &str) -> Result<RepoPattern, SettingsError> {
        let text = text.trim();
        let bad = |why: &str| {
            invalid(
                "allowed_repos",
                format!("`{text}` {why} (expected `github:owner/name` or `gitlab:group/*`)"),
            )
        };
        let (forge, path) = text.split_once(':').ok_or_else(|| bad("has no forge"))?;
        let forge: ForgeKind = forge
            .trim()
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| bad("names an unknown forge"))?;
        let (owner, name) = path
            .trim()
            .rsplit_once('/')
            .ok_or_else(|| bad("has no owner"))?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !owner.split('/').all(part_ok) {
            return Err(bad("has an invalid owner"));
        }
        let name = match name {
            "*" => None,
            n if part_ok(n) => Some(n.to_owned()),
            _ => return Err(bad("has an invalid name")),
        };
        Ok(RepoPattern {
            forge,
            owner: owner.to_owned(),
            name,
        })
    }

    pub fn matches(&self, repo: &RepoRef) -> bool {
        let (owner, name) = repo.owner_and_name();
        repo.forge == self.forge
            && owner.eq_ignore_ascii_case(&self.owner)
            && self
                .name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("*");
        write!(f, "{}:{}/{name}", self.forge, self.owner)
    }
}

/// The admin settings in force: stored values over the configured defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Repositories Repobox acts on; empty = all.
    pub allowed_repos: Vec<RepoPattern>,
    pub trigger: String,
    pub label: String,
    pub model: String,
    pub per_user_limit: usize,
    pub max_turns: u32,
    pub allow_workflow_changes: bool,
    /// Jobs on pull/merge requests whose head is in a fork.
    pub allow_forks: bool,
    /// Jobs from GitLab confidential notes and confidential issues.
    pub allow_confidential: bool,
    /// What sandboxes in `allowlist` mode may reach besides `REPOBOX_SANDBOX_ALLOW`.
    pub sandbox_allow: Allowlist,
    /// Models `.repobox.yml` may pick besides `model`; empty: any.
    pub allowed_models: Vec<String>,
    /// Spend a requester may reach per month, in cents; `None`: no cap.
    pub monthly_cap_requester: Option<u64>,
    /// Spend a repository may reach per month, in cents; `None`: no cap.
    pub monthly_cap_repo: Option<u64>,
}

impl AdminSettings {
    /// The defaults from the process configuration (nothing stored).
    pub fn defaults(config: &Config) -> AdminSettings {
        AdminSettings {
            allowed_repos: Vec::new(),
            trigger: config.trigger.clone(),
            label: config.label.clone(),
            model: config.model.clone(),
            per_user_limit: config.per_user_limit,
            max_turns: config.max_turns,
            allow_workflow_changes: false,
            allow_forks: false,
            allow_confidential: false,
            sandbox_allow: Allowlist::default(),
            allowed_models: Vec::new(),
            monthly_cap_requester: None,
            monthly_cap_repo: None,
        }
    }

    /// The stored values over `defaults`; every stored admin setting must validate.
    /// Fields that are not admin settings are skipped (the hash may hold other values).
    pub fn parse(
        stored: &HashMap<String, String>,
        defaults: &AdminSettings,
    ) -> Result<AdminSettings, SettingsError> {
        let mut out = defaults.clone();
        for (name, value) in stored {
            if FIELDS.contains(&name.as_str()) {
                out.apply(name, value)?;
            }
        }
        Ok(out)
    }

    /// The stored values over `defaults`, skipping (with a warning) any that do not
    /// validate: what intake and the runners use, so a bad value never stops them.
    pub fn from_stored(stored: &HashMap<String, String>, defaults: &AdminSettings) -> Self {
        let mut out = defaults.clone();
        for (name, value) in stored {
            if !FIELDS.contains(&name.as_str()) {
                continue;
            }
            if let Err(e) = out.apply(name, value) {
                warn!(error = %e, "ignoring a stored admin setting; the default applies");
            }
        }
        out
    }

    /// Whether Repobox may act on `repo`.
    pub fn repo_allowed(&self, repo: &RepoRef) -> bool {
        repo_allowed(&self.allowed_repos, repo)
    }

    /// The settings as stored text, field by field (see [`FIELDS`]).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("allowed_repos", join_patterns(&self.allowed_repos)),
            ("trigger", self.trigger.clone()),
            ("label", self.label.clone()),
            ("model", self.model.clone()),
            ("per_user_limit", self.per_user_limit.to_string()),
            ("max_turns", self.max_turns.to_string()),
            (
                "allow_workflow_changes",
                self.allow_workflow_changes.to_string(),
            ),
            ("allow_forks", self.allow_forks.to_string()),
            ("allow_confidential", self.allow_confidential.to_string()),
            ("sandbox_allow", self.sandbox_allow.to_string()),
            ("allowed_models", self.allowed_models.join(",")),
            (
                "monthly_cap_requester",
                cents_text(self.monthly_cap_requester),
            ),
            ("monthly_cap_repo", cents_text(self.monthly_cap_repo)),
        ]
    }

    /// Validates one field and returns its stored (normalised) form, e.g. for a form
    /// post: `normalize("allow_workflow_changes", "on")` is `"true"`.
    pub fn normalize(name: &str, value: &str) -> Result<(&'static str, String), SettingsError> {
        let mut probe = AdminSettings {
            allowed_repos: Vec::new(),
            trigger: String::new(),
            label: String::new(),
            model: String::new(),
            per_user_limit: 0,
            max_turns: 0,
            allow_workflow_changes: false,
            allow_forks: false,
            allow_confidential: false,
            sandbox_allow: Allowlist::default(),
            allowed_models: Vec::new(),
            monthly_cap_requester: None,
            monthly_cap_repo: None,
        };
        let field = probe.apply(name, value)?;
        let text = probe
            .to_fields()
            .into_iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok((field, text))
    }

    /// Sets one field from its text; returns the field's static name.
    fn apply(&mut self, name: &str, value: &str) -> Result<&'static str, SettingsError> {
        let value = value.trim();
        match name {
            "sandbox_allow" => {
                self.sandbox_allow =
                    Allowlist::parse(value).map_err(|e| invalid("sandbox_allow", e))?;
                Ok("sandbox_allow")
            }
            "allowed_repos" => {
                self.allowed_repos = value
                    .split([',', '\n', ' ', '\t', '\r'])
                    .filter(|p| !p.trim().is_empty())
                    .map(RepoPattern::parse)
                    .collect::<Result<_, _>>()?;
                Ok("allowed_repos")
            }
            "trigger" => {
                if value.is_empty() || value.contains(char::is_whitespace) || value.len() > 50 {
                    return Err(invalid(
                        "trigger",
                        "must be one word of at most 50 characters, e.g. `/repobox`",
                    ));
                }
                self.trigger = value.to_owned();
                Ok("trigger")
            }
            "label" => {
                if value.is_empty() || value.len() > 50 || value.contains(char::is_control) {
                    return Err(invalid(
                        "label",
                        "must be a label name of 1 to 50 characters",
                    ));
                }
                self.label = value.to_owned();
                Ok("label")
            }
            "model" => {
                if !valid_model(value) {
                    return Err(invalid(
                        "model",
                        "must be a model id without spaces, e.g. `claude-sonnet-4-5`",
                    ));
                }
                self.model = value.to_owned();
                Ok("model")
            }
            "monthly_cap_requester" => {
                self.monthly_cap_requester = cents(value, "monthly_cap_requester")?;
                Ok("monthly_cap_requester")
            }
            "monthly_cap_repo" => {
                self.monthly_cap_repo = cents(value, "monthly_cap_repo")?;
                Ok("monthly_cap_repo")
            }
            "allowed_models" => {
                let models: Vec<String> = value
                    .split([',', '\n', ' ', '\t', '\r'])
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = models.iter().find(|m| !valid_model(m)) {
                    return Err(invalid(
                        "allowed_models",
                        format!("`{bad}` is not a model id (e.g. `claude-sonnet-4-5`)"),
                    ));
                }
                self.allowed_models = models;
                Ok("allowed_models")
            }
            "per_user_limit" => {
                self.per_user_limit = number(value, "per_user_limit", 1000)? as usize;
                Ok("per_user_limit")
            }
            "max_turns" => {
                self.max_turns = number(value, "max_turns", 10_000)? as u32;
                Ok("max_turns")
            }
            "allow_workflow_changes" => {
                self.allow_workflow_changes = switch(value, "allow_workflow_changes")?;
                Ok("allow_workflow_changes")
            }
            "allow_forks" => {
                self.allow_forks = switch(value, "allow_forks")?;
                Ok("allow_forks")
            }
            "allow_confidential" => {
                self.allow_confidential = switch(value, "allow_confidential")?;
                Ok("allow_confidential")
            }
            other => Err(SettingsError::Unknown(other.to_owned())),
        }
    }
}

/// An on/off switch: stored as `true`/`false`, also read from a form's `on`, `yes`, `1`.
fn switch(value: &str, field: &'static str) -> Result<bool, SettingsError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(field, "must be `true` or `false`")),
    }
}

fn number(value: &str, field: &'static str, max: u64) -> Result<u64, SettingsError> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            field,
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

fn join_patterns(patterns: &[RepoPattern]) -> String {
    patterns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `repo` matches one of `patterns`; an empty list allows every repository.
pub fn repo_allowed(patterns: &[RepoPattern], repo: &RepoRef) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(repo))
}

/// The admin settings of one installation: the store's `settings` hash over the
/// configured defaults. Cheap to clone.
#[derive(Clone)]
pub struct SettingsSource {
    store: Arc<dyn Store>,
    defaults: Arc<AdminSettings>,
}

impl fmt::Debug for SettingsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsSource")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// Why [`SettingsSource::save`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SettingsSource {
    pub fn new(store: Arc<dyn Store>, defaults: AdminSettings) -> Self {
        SettingsSource {
            store,
            defaults: Arc::new(defaults),
        }
    }

    /// The configured defaults (what applies with nothing stored).
    pub fn defaults(&self) -> &AdminSettings {
        &self.defaults
    }

    /// The settings in force now, read from the store (no cache).
    pub async fn load(&self) -> Result<AdminSettings, StoreError> {
        let stored = self.store.get_settings().await?;
        Ok(AdminSettings::from_stored(&stored, &self.defaults))
    }

    /// [`SettingsSource::load`], or the defaults when the store cannot be read (logged).
    pub async fn current(&self) -> AdminSettings {
        match self.load().await {
            Ok(settings) => settings,
            Err(e) => {
                warn!(error = %e, "admin settings unreadable; using the configured defaults");
                (*self.defaults).clone()
            }
        }
    }

    /// Validates every update, then stores them all (normalised), or none.
    pub async fn save(&self, updates: &[(&str, String)]) -> Result<(), SaveError> {
        let normalised = updates
            .iter()
            .map(|(name, value)| AdminSettings::normalize(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<(&str, String)> = normalised.into_iter().collect();
        self.store.set_settings(&fields).await?;
        Ok(())
    }

    /// Removes a stored setting, so its default applies again.
    pub async fn reset(&self, name: &str) -> Result<(), SaveError> {
        if !FIELDS.contains(&name) {
            return Err(SettingsError::Unknown(name.to_owned()).into());
        }
        self.store.delete_setting(name).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AdminSettings {
        AdminSettings {
            allowed_repos: Vec::new(),
            trigger: "/repobox".into(),
            label: "repobox".into(),
            model: "claude-sonnet-4-5".into(),
            per_user_limit: 2,
            max_turns: 50,
            allow_workflow_changes: false,
            allow_forks: false,
            allow_confidential: false,
            sandbox_allow: Allowlist::default(),
            allowed_models: Vec::new(),
            monthly_cap_requester: None,
            monthly_cap_repo: None,
        }
    }

    fn repo(forge: ForgeKind, full_name: &str) -> RepoRef {
        RepoRef {
            forge,
            full_name: full_name.into(),
            id: None,
            installation_id: None,
        }
    }

    fn stored(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_stored_is_the_defaults() {
        let s = AdminSettings::parse(&HashMap::new(), &defaults()).unwrap();
        assert_eq!(s, defaults());
        assert!(s.repo_allowed(&repo(ForgeKind::GitHub, "anyone/anything")));
    }

    #[test]
    fn stored_values_override_the_defaults() {
        let s = AdminSettings::parse(
            &stored(&[
                ("allowed_repos", "github:acme/*, gitlab:group/sub/api\n"),
                ("trigger", "/bot"),
                ("label", "ai fix"),
                ("model", "claude-opus-4-1"),
                ("per_user_limit", "5"),
                ("max_turns", "12"),
                ("allow_workflow_changes", "on"),
            ]),
            &defaults(),
        )
        .unwrap();
        assert_eq!(s.trigger, "/bot");
        assert_eq!(s.label, "ai fix");
        assert_eq!(s.model, "claude-opus-4-1");
        assert_eq!(s.per_user_limit, 5);
        assert_eq!(s.max_turns, 12);
        assert!(s.allow_workflow_changes);
        assert_eq!(
            s.to_fields()[0],
            ("allowed_repos", "github:acme/*,gitlab:group/sub/api".into())
        );
    }

    #[test]
    fn the_allow_list_matches_owner_wildcards_and_exact_names() {
        let s = AdminSettings::parse(
            &stored(&[("allowed_repos", "github:Acme/*,gitlab:group/sub/api")]),
            &defaults(),
        )
        .unwrap();
        assert!(s.repo_allowed(&repo(ForgeKind::GitHub, "acme/api")));
        assert!(s.repo_allowed(&repo(ForgeKind::GitHub, "ACME/web")));
        assert!(!s.repo_allowed(&repo(ForgeKind::GitHub, "acme-corp/api")));
        assert!(!s.repo_allowed(&repo(ForgeKind::GitLab, "acme/api")));
        assert!(s.repo_allowed(&repo(ForgeKind::GitLab, "group/sub/api")));
        assert!(!s.repo_allowed(&repo(ForgeKind::GitLab, "group/sub/web")));
        assert!(!s.repo_allowed(&repo(ForgeKind::GitLab, "group/api")));
        assert!(!s.repo_allowed(&repo(ForgeKind::GitHub, "other/api")));
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        let cases = [
            ("allowed_repos", "acme/api"),
            ("allowed_repos", "bitbucket:acme/api"),
            ("allowed_repos", "github:acme"),
            ("allowed_repos", "github:*/api"),
            ("allowed_repos", "github:acme/a*"),
            ("trigger", ""),
            ("trigger", "two words"),
            ("label", " "),
            ("model", "claude sonnet"),
            ("per_user_limit", "0"),
            ("per_user_limit", "-1"),
            ("max_turns", "lots"),
            ("allow_workflow_changes", "maybe"),
        ];
        for (field, value) in cases {
            let err = AdminSettings::parse(&stored(&[(field, value)]), &defaults()).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{field}`")),
                "{field}={value}: {err}"
            );
        }
        assert_eq!(
            AdminSettings::normalize("colour", "blue").unwrap_err(),
            SettingsError::Unknown("colour".into())
        );
        assert_eq!(
            AdminSettings::parse(&stored(&[("colour", "blue")]), &defaults()).unwrap(),
            defaults()
        );
    }

    #[test]
    fn bad_stored_values_fall_back_to_the_default_one_by_one() {
        let s = AdminSettings::from_stored(
            &stored(&[("trigger", "two words"), ("label", "go"), ("colour", "x")]),
            &defaults(),
        );
        assert_eq!(s.trigger, "/repobox");
        assert_eq!(s.label, "go");
    }

    #[test]
    fn normalize_gives_the_stored_form() {
        assert_eq!(
            AdminSettings::normalize("allow_workflow_changes", "Yes").unwrap(),
            ("allow_workflow_changes", "true".into())
        );
        assert_eq!(
            AdminSettings::normalize("allowed_repos", " github:a/b \n gitlab:c/* ").unwrap(),
            ("allowed_repos", "github:a/b,gitlab:c/*".into())
        );
        assert_eq!(
            AdminSettings::normalize("allowed_repos", "").unwrap(),
            ("allowed_repos", String::new())
        );
        assert_eq!(
            AdminSettings::normalize("per_user_limit", " 3 ").unwrap(),
            ("per_user_limit", "3".into())
        );
        assert!(AdminSettings::normalize("nope", "1").is_err());
    }

    #[test]
    fn the_sandbox_allowlist_is_a_list_of_host_patterns() {
        assert_eq!(
            AdminSettings::normalize(
                "sandbox_allow",
                " PyPI.org \n *.crates.io:443 10.0.0.5:3141 "
            )
            .unwrap(),
            (
                "sandbox_allow",
                "pypi.org,*.crates.io:443,10.0.0.5:3141".into()
            )
        );
        for bad in ["http://pypi.org", "pypi.org:99999", "*.", "a b/c"] {
            let e = AdminSettings::normalize("sandbox_allow", bad).unwrap_err();
            assert!(e.to_string().contains("sandbox_allow"), "{bad}: {e}");
        }
    }
}
