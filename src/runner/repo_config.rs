//! `.repobox.yml`, the optional per-repository settings (SPEC section 6), read from the
//! default branch only: a pull request cannot change how Repobox treats it.

use serde::Deserialize;

pub const FILE_NAME: &str = ".repobox.yml";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepoConfig {
    /// Text added to the prompt.
    pub instructions: Option<String>,
    /// Commands run in the sandbox before the agent.
    pub setup: Vec<String>,
    /// Commands the runner runs in the sandbox when the agent is done (SPEC 16); their
    /// failures go back to the agent.
    pub check: Vec<String>,
    /// Extra goes the agent gets after failed checks (default 2, at most 10).
    pub check_attempts: Option<u32>,
    /// Open a draft when the checks still fail (default `true`); `false` fails the job.
    pub draft_on_failed_checks: Option<bool>,
    pub model: Option<String>,
    /// At most the admin's; a higher value is the admin's.
    pub max_turns: Option<u32>,
    /// The job's budget in USD, at most `REPOBOX_JOB_BUDGET`.
    pub budget: Option<f64>,
    /// Open pull/merge requests as drafts.
    pub draft: bool,
    /// Replaces `repobox/` in branch names.
    pub branch_prefix: Option<String>,
    /// Setup secrets (admin-defined, [`crate::setup_secrets`]) given to `setup`
    /// commands as environment variables; never to the agent.
    pub setup_env: Vec<String>,
    /// Network mode per phase, as narrow as or narrower than `REPOBOX_SANDBOX_MODES`.
    pub network: crate::sandbox::network::RepoNetwork,
}

impl RepoConfig {
    /// Parses the file; the error names what is wrong, for the job's failure message.
    pub fn parse(text: &str) -> Result<RepoConfig, String> {
        if text.trim().is_empty() {
            return Ok(RepoConfig::default());
        }
        let config: RepoConfig =
            yaml_serde::from_str(text).map_err(|e| format!("{FILE_NAME} is not valid: {e}"))?;
        if config
            .check_attempts
            .is_some_and(|n| n > crate::runner::checks::MAX_EXTRA_GOES)
        {
            return Err(format!(
                "{FILE_NAME} is not valid: check_attempts is at most {}",
                crate::runner::checks::MAX_EXTRA_GOES
            ));
        }
        if config.budget.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
            return Err(format!(
                "{FILE_NAME} is not valid: budget must be a positive amount in USD"
            ));
        }
        Ok(config)
    }

    /// The branch prefix, made safe for a ref name.
    pub fn prefix(&self) -> String {
        let raw = self.branch_prefix.as_deref().unwrap_or("repobox/");
        let cleaned: String = raw
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
            .collect();
        let cleaned = cleaned.trim_start_matches(['/', '.']).replace("..", ".");
        if cleaned.is_empty() {
            "repobox/".to_owned()
        } else {
            cleaned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_a_positive_amount() {
        assert_eq!(
            RepoConfig::parse("budget: 0.5\n").unwrap().budget,
            Some(0.5)
        );
        for bad in ["budget: -1\n", "budget: 0\n", "budget: .nan\n"] {
            assert!(
                RepoConfig::parse(bad).unwrap_err().contains("budget"),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_every_field() {
        let cfg = RepoConfig::parse(
            "instructions: Use tabs.\nsetup: [\"npm ci\"]\ncheck:\n  - npm test\nmodel: claude-x\nmax_turns: 30\ndraft: true\nbranch_prefix: bot/\n",
        )
        .unwrap();
        assert_eq!(cfg.instructions.as_deref(), Some("Use tabs."));
        assert_eq!(cfg.setup, vec!["npm ci"]);
        assert_eq!(cfg.check, vec!["npm test"]);
        assert_eq!(cfg.max_turns, Some(30));
        assert!(cfg.draft);
        assert_eq!(cfg.prefix(), "bot/");
    }

    #[test]
    fn empty_and_invalid_files() {
        assert_eq!(RepoConfig::parse("").unwrap(), RepoConfig::default());
        let err = RepoConfig::parse("draft: [nope").unwrap_err();
        assert!(err.starts_with(".repobox.yml is not valid"), "{err}");
        let err = RepoConfig::parse("drafts: true").unwrap_err();
        assert!(err.contains("drafts"), "{err}");
    }

    #[test]
    fn prefix_is_sanitised() {
        let cfg = RepoConfig {
            branch_prefix: Some("../evil branch~^:".into()),
            ..Default::default()
        };
        assert_eq!(cfg.prefix(), "evilbranch");
        assert_eq!(RepoConfig::default().prefix(), "repobox/");
    }
}
