//! [`Accounts`] on the embedded store: `user:{provider}:{id}` and `provider:{id}`
//! records, and each owner's providers by creation time.

use async_trait::async_trait;
use ulid::Ulid;

use super::{EmbeddedStore, data};
use crate::job::rfc3339;
use crate::store::{Accounts, Provider, StoreError, User};

#[async_trait]
impl Accounts for EmbeddedStore {
    async fn upsert_user(&self, user: &User) -> Result<(), StoreError> {
        let key = self.keys.user(&user.provider, &user.id);
        let (created, fields) = (rfc3339(user.created_at), user.to_fields());
        self.write(move |c, _| {
            data::hset_new(c, &key, "created_at", &created)?;
            Ok(data::hset(c, &key, &fields)?)
        })
        .await
    }

    async fn get_user(&self, provider: &str, id: &str) -> Result<Option<User>, StoreError> {
        let key = self.keys.user(provider, id);
        let map = self.read(move |c, _| Ok(data::hgetall(c, &key)?)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        User::from_fields(&map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn add_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        if !crate::crypto::SecretBox::is_sealed(&provider.token) {
            // Never write a plain token at rest; the text names no value.
            return Err(StoreError::Corrupt(
                "provider token is not sealed; refusing to store it".into(),
            ));
        }
        let (key, index) = (
            self.keys.provider(provider.id),
            self.keys.providers_by_user(&provider.owner),
        );
        let (id, created, fields) = (
            provider.id.to_string(),
            provider.created_ms(),
            provider.to_fields(),
        );
        self.write(move |c, _| {
            data::hset(c, &key, &fields)?;
            Ok(data::zadd(c, &index, &id, created)?)
        })
        .await
    }

    async fn list_providers(&self, owner: &str) -> Result<Vec<Provider>, StoreError> {
        let owner = owner.to_owned();
        self.read(move |c, keys| {
            let mut ids = data::zrev(c, &keys.providers_by_user(&owner), None, usize::MAX >> 1)?;
            ids.reverse();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids.iter().filter_map(|(id, _)| id.parse::<Ulid>().ok()) {
                let map = data::hgetall(c, &keys.provider(id))?;
                // A record deleted under a stale index entry is skipped.
                if map.is_empty() {
                    continue;
                }
                let provider = Provider::from_fields(id, &map).map_err(StoreError::Corrupt)?;
                if provider.owner == owner {
                    out.push(provider);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_provider(&self, id: Ulid) -> Result<Option<Provider>, StoreError> {
        let key = self.keys.provider(id);
        let map = self.read(move |c, _| Ok(data::hgetall(c, &key)?)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        Provider::from_fields(id, &map)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    async fn delete_provider(&self, owner: &str, id: Ulid) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.write(move |c, keys| {
            let key = keys.provider(id);
            if data::hget(c, &key, "owner")?.as_deref() != Some(owner.as_str()) {
                return Ok(false);
            }
            data::hclear(c, &key)?;
            data::zrem(c, &keys.providers_by_user(&owner), &id.to_string())?;
            Ok(true)
        })
        .await
    }
}
