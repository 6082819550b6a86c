//! Spend per requester and per repository per calendar month (UTC), for the admin's
//! monthly caps, the dashboard and `/api/v1/usage` (SPEC section 16).
//!
//! One hash per month, `usage:<YYYY-MM>`: `user:<forge>:<id>` and
//! `repo:<forge>:<owner/name>` hold USD, added to by every job attempt that billed
//! tokens (what the provider charged, whether the job succeeded or not);
//! `login:<forge>:<id>` keeps the requester's latest login for display. Kept 400 days.

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::StoreError;
use crate::model::{ForgeKind, RepoRef, UserRef};

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds `usd` to the requester's and the repository's spend of `month`.
    async fn add_usage(
        &self,
        month: &str,
        forge: ForgeKind,
        requester: &UserRef,
        repo: &RepoRef,
        usd: f64,
    ) -> Result<(), StoreError>;

    /// The `usage:<month>` hash as stored.
    async fn usage(&self, month: &str) -> Result<HashMap<String, String>, StoreError>;
}

/// `2026-12` for a time in December 2026 (UTC).
pub fn month(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

pub fn user_field(forge: ForgeKind, id: u64) -> String {
    format!("user:{forge}:{id}")
}

pub fn repo_field(forge: ForgeKind, full_name: &str) -> String {
    format!("repo:{forge}:{full_name}")
}

pub fn login_field(forge: ForgeKind, id: u64) -> String {
    format!("login:{forge}:{id}")
}

/// One line of spend.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spend {
    /// `github:21031067` or `github:acme/api`.
    pub key: String,
    /// The requester's login (requesters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub usd: f64,
}

/// A month's spend, most first.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MonthUsage {
    pub month: String,
    pub requesters: Vec<Spend>,
    pub repositories: Vec<Spend>,
}

impl MonthUsage {
    pub fn from_hash(month: &str, hash: &HashMap<String, String>) -> MonthUsage {
        let mut out = MonthUsage {
            month: month.to_owned(),
            ..MonthUsage::default()
        };
        for (field, value) in hash {
            let Ok(usd) = value.parse::<f64>() else {
                continue;
            };
            if let Some(key) = field.strip_prefix("user:") {
                out.requesters.push(Spend {
                    key: key.to_owned(),
                    login: hash.get(&format!("login:{key}")).cloned(),
                    usd,
                });
            } else if let Some(key) = field.strip_prefix("repo:") {
                out.repositories.push(Spend {
                    key: key.to_owned(),
                    login: None,
                    usd,
                });
            }
        }
        for list in [&mut out.requesters, &mut out.repositories] {
            list.sort_by(|a, b| b.usd.total_cmp(&a.usd).then_with(|| a.key.cmp(&b.key)));
        }
        out
    }

    /// What one requester spent.
    pub fn requester(&self, forge: ForgeKind, id: u64) -> f64 {
        let key = format!("{forge}:{id}");
        self.requesters
            .iter()
            .find(|s| s.key == key)
            .map_or(0.0, |s| s.usd)
    }

    /// What one repository spent.
    pub fn repository(&self, forge: ForgeKind, full_name: &str) -> f64 {
        let key = format!("{forge}:{full_name}");
        self.repositories
            .iter()
            .find(|s| s.key == key)
            .map_or(0.0, |s| s.usd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_its_utc_year_and_month() {
        // 2026-12-31 23:30 at UTC-2 is 2027-01-01 01:30 UTC.
        let at = OffsetDateTime::from_unix_timestamp(1_798_767_000)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(-2, 0, 0).unwrap());
        assert_eq!((at.year(), at.day()), (2026, 31));
        assert_eq!(month(at), "2027-01");
    }

    #[test]
    fn the_hash_reads_as_requesters_and_repositories_most_first() {
        let hash: HashMap<String, String> = [
            ("user:github:1", "0.5"),
            ("user:github:2", "1.25"),
            ("login:github:2", "octo"),
            ("repo:github:acme/api", "1.75"),
            ("repo:gitlab:g/p", "not a number"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let u = MonthUsage::from_hash("2026-12", &hash);
        assert_eq!(u.requesters[0].key, "github:2");
        assert_eq!(u.requesters[0].login.as_deref(), Some("octo"));
        assert_eq!(u.requester(ForgeKind::GitHub, 1), 0.5);
        assert_eq!(u.repository(ForgeKind::GitHub, "acme/api"), 1.75);
        assert_eq!(u.repositories.len(), 1);
    }
}
