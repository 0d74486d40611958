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
use crate::vostio::webhook::{EventKey, Notification};

impl SimHandle {
    /// The key `key_id` is presented at `door` of `environment`; the notification is
    /// posted (awaited) and the outcome returned. `None` for an unknown environment or door.
    pub async fn key_attempt(&self, environment: &str, door: &str, key_id: &str) -> Option<bool> {
        self.judge_and_post(|s, now| {
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
            Some((opened, event))
        })
        .await
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttemptBody {
    key_id: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(crate::sim_kit::webhook_routes::<super::SimState>)
        .route(
            "/_sim/environments/{env}/doors/{door}/attempts",
            web::post().to(post_attempt),
        );
}

async fn post_attempt(
    h: web::Data<SimHandle>,
    path: web::Path<(String, String)>,
    body: web::Json<AttemptBody>,
) -> HttpResponse {
    let (env, door) = path.into_inner();
    let opened = h.key_attempt(&env, &door, &body.key_id).await;
    crate::sim_kit::attempt_reply(opened, "unknown environment or door")
}
