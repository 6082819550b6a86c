//! What the webhook redelivery reconciler keeps (SPEC section 13, "Webhook recovery";
//! `crate::webhooks::redeliver`): whether intake stored a delivery, the reconciler's
//! cursor, and a cluster-wide lock so one `serve` at a time does a round.

use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, StoreError};

#[async_trait]
pub trait Recovery: Send + Sync {
    /// Intake has accepted this delivery (its dedupe key `delivery:{forge}:{id}` exists).
    async fn delivery_seen(&self, delivery: Delivery<'_>) -> Result<bool, StoreError>;

    /// The newest GitHub hook delivery (attempt id) a finished reconciler round saw
    /// (`redeliver:cursor`): the next round reads no further back.
    async fn redeliver_cursor(&self) -> Result<Option<u64>, StoreError>;

    async fn set_redeliver_cursor(&self, delivery_id: u64) -> Result<(), StoreError>;

    /// Takes the cluster-wide lock `lock:<name>` for `ttl` unless someone holds it
    /// (`SET NX PX`); `true` when taken. It is not released: it expires.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError>;
}
