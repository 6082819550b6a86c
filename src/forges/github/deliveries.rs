//! The App's webhook deliveries, as the redelivery reconciler
//! ([`crate::webhooks::redeliver`]) needs them: GitHub lists every delivery attempt
//! (`GET /app/hook/deliveries`, App JWT, newest first, paged by a `cursor` in the `Link`
//! header) and redelivers one when asked (`POST /app/hook/deliveries/{id}/attempts`);
//! it never redelivers a failed delivery on its own.

use serde::Deserialize;
use time::OffsetDateTime;

use super::GitHub;
use crate::forges::ForgeError;

/// Deliveries asked for per page (GitHub's maximum).
const DELIVERIES_PER_PAGE: usize = 100;

/// One delivery attempt of a webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDelivery {
    /// The attempt's id (what a redelivery names).
    pub id: u64,
    /// The event's id, shared by all attempts of it: the `X-GitHub-Delivery` header,
    /// which intake de-duplicates on.
    pub guid: String,
    /// What Repobox answered (0 when GitHub could not connect).
    pub status_code: u16,
    /// This attempt was a redelivery.
    pub redelivery: bool,
    pub delivered_at: OffsetDateTime,
    /// `X-GitHub-Event`, for the log.
    pub event: String,
}

impl HookDelivery {
    /// Repobox accepted this attempt.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// One page of [`GitHub::hook_deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveriesPage {
    /// Newest first.
    pub deliveries: Vec<HookDelivery>,
    /// The cursor of the next (older) page, if there is one.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryBody {
    id: u64,
    guid: String,
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    redelivery: bool,
    delivered_at: String,
    #[serde(default)]
    event: String,
}

impl GitHub {
    /// One page (100) of the App's recent webhook delivery attempts, newest first, from
    /// `cursor` (`None`: the newest). A read: safe to retry.
    pub async fn hook_deliveries(
        &self,
        cursor: Option<&str>,
    ) -> Result<DeliveriesPage, ForgeError> {
        let mut query = vec![("per_page", DELIVERIES_PER_PAGE.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        let page: octocrab::Page<DeliveryBody> = self
            .call(self.app.get("/app/hook/deliveries", Some(&query)))
            .await?;
        let next_cursor = page.next.as_ref().and_then(|uri| {
            url::form_urlencoded::parse(uri.query()?.as_bytes())
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned())
        });
        let deliveries = page
            .items
            .into_iter()
            .map(|d| {
                let delivered_at = OffsetDateTime::parse(
                    &d.delivered_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| {
                    ForgeError::Permanent(format!(
                        "GitHub sent a malformed delivery time for delivery {}",
                        d.id
                    ))
                })?;
                Ok(HookDelivery {
                    id: d.id,
                    guid: d.guid,
                    status_code: d.status_code,
                    redelivery: d.redelivery,
                    delivered_at,
                    event: d.event,
                })
            })
            .collect::<Result<_, ForgeError>>()?;
        Ok(DeliveriesPage {
            deliveries,
            next_cursor,
        })
    }

    /// Asks GitHub to deliver attempt `delivery_id`'s event again (answered 202). Sent
    /// once, never retried here: a second ask after an unclear failure would deliver the
    /// event twice (intake de-duplicates it, but the caller decides).
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), ForgeError> {
        let route = format!("/app/hook/deliveries/{delivery_id}/attempts");
        let response = self.call(self.app._post(route, None::<&()>)).await?;
        self.call(octocrab::map_github_error(response))
            .await
            .map(|_| ())
    }
}
