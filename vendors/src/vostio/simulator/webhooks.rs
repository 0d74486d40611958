//! The simulator's door attempts and their signed access notifications (see
//! [`crate::vostio::webhook`], a labelled reconstruction).
//!
//! Control: `POST /_sim/webhook` `{"url", "secret"}` sets where notifications go;
//! `POST /_sim/environments/{env}/doors/{door}/attempts` `{"keyId"}`: a mobile key or card
//! is presented at the door, answered `{"opened"}` once the notification is posted;
//! `POST /_sim/webhook/redeliver` sends the last notification again (a retry), answered
//! `{"status"}` with the receiver's status. The door opens for an active key with an access
//! right on it, inside its validity, while the door is online.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::SimHandle;
use crate::vostio::webhook::{self, EventKey, Notification};
use crate::webhook::SimDelivery;

impl SimHandle {
    /// Where notifications are posted and the secret they are signed with (`None`:
    /// nowhere).
    pub fn set_webhook(&self, target: Option<(String, String)>) {
        self.with(|s| s.webhook.target = target);
    }

    /// The key `key_id` is presented at `door` of `environment`; the notification is
    /// posted (awaited) and the outcome returned. `None` for an unknown environment or door.
    pub async fn key_attempt(&self, environment: &str, door: &str, key_id: &str) -> Option<bool> {
        let now = self.clock.now();
        let (opened, delivery) = self.with(|s| {
            let env = s.environments.get(environment)?;
            if !env.doors.contains(door) {
                return None;
            }
            let key = env.keys.iter().find(|k| k.id == key_id).cloned();
            let online = env.door_health.get(door).is_none_or(|h| h.online);
            let opened = online
                && key.as_ref().is_some_and(|k| {
                    k.status == "active"
                        && k.door_ids.iter().any(|d| d == door)
                        && k.valid_from <= now
                        && k.valid_to.is_none_or(|t| now < t)
                });
            let n = s.webhook.next_id();
            let event = Notification {
                notification_id: format!("ntf-{n:010}-{}", now.timestamp()),
                environment_id: Some(environment.into()),
                event_type: if opened {
                    "access.granted"
                } else {
                    "access.denied"
                }
                .into(),
                occurred_at: now,
                door_id: door.into(),
                key: key.map(|k| EventKey {
                    id: k.id,
                    key_type: Some(k.key_type),
                    external_id: k.external_id,
                }),
            };
            let delivery = s.webhook.target.as_ref().and_then(|(url, secret)| {
                let body = serde_json::to_vec(&event).ok()?;
                Some(SimDelivery {
                    url: url.clone(),
                    headers: vec![
                        ("content-type", "application/json".into()),
                        (
                            webhook::SIGNATURE_HEADER,
                            webhook::sign(secret, now.timestamp(), &body),
                        ),
                    ],
                    body,
                })
            });
            s.webhook.last.clone_from(&delivery);
            Some((opened, delivery))
        })?;
        if let Some(d) = delivery {
            d.send().await;
        }
        Some(opened)
    }

    /// Sends the last notification again, as a retry; the receiver's status.
    pub async fn redeliver_last(&self) -> Option<u16> {
        let last = self.with(|s| s.webhook.last.clone())?;
        last.send().await
    }
}

#[derive(Deserialize)]
struct WebhookBody {
    url: Option<String>,
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttemptBody {
    key_id: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/webhook", web::post().to(post_webhook))
        .route("/_sim/webhook/redeliver", web::post().to(post_redeliver))
        .route(
            "/_sim/environments/{env}/doors/{door}/attempts",
            web::post().to(post_attempt),
        );
}

async fn post_webhook(h: web::Data<SimHandle>, body: web::Json<WebhookBody>) -> HttpResponse {
    let b = body.into_inner();
    h.set_webhook(b.url.zip(b.secret));
    HttpResponse::NoContent().finish()
}

async fn post_redeliver(h: web::Data<SimHandle>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": h.redeliver_last().await }))
}

async fn post_attempt(
    h: web::Data<SimHandle>,
    path: web::Path<(String, String)>,
    body: web::Json<AttemptBody>,
) -> HttpResponse {
    let (env, door) = path.into_inner();
    match h.key_attempt(&env, &door, &body.key_id).await {
        Some(opened) => HttpResponse::Ok().json(serde_json::json!({ "opened": opened })),
        None => HttpResponse::NotFound().body("unknown environment or door"),
    }
}
