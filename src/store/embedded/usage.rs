//! [`UsageStore`] on the embedded store: `usage:<YYYY-MM>` records. Months are kept
//! (no expiry here: a year of them is a few kilobytes).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{EmbeddedStore, data};
use crate::model::{ForgeKind, RepoRef, UserRef};
use crate::store::StoreError;
use crate::store::usage::{self, UsageStore};

#[async_trait]
impl UsageStore for EmbeddedStore {
    async fn add_usage(
        &self,
        month: &str,
        forge: ForgeKind,
        requester: &UserRef,
        repo: &RepoRef,
        usd: f64,
    ) -> Result<(), StoreError> {
        let key = self.keys.usage(month);
        let user = usage::user_field(forge, requester.id);
        let repo = usage::repo_field(forge, &repo.full_name);
        let login = [(
            usage::login_field(forge, requester.id),
            requester.login.clone(),
        )];
        self.write(move |c, _| {
            data::hincr_float(c, &key, &user, usd)?;
            data::hincr_float(c, &key, &repo, usd)?;
            Ok(data::hset(c, &key, &login)?)
        })
        .await
    }

    async fn usage(&self, month: &str) -> Result<HashMap<String, String>, StoreError> {
        let key = self.keys.usage(month);
        self.read(move |c, _| Ok(data::hgetall(c, &key)?)).await
    }
}
