//! The simulator's door attempts and their event-subscription deliveries (see
//! [`crate::brivo::webhook`]: Brivo's access event shape, a reconstructed signature).
//!
//! Control: `POST /_sim/webhook` `{"url", "secret"}` sets the subscription's URL and
//! secret word; `POST /_sim/access-points/{id}/attempts` `{"credential": <digits>}`:
//! someone types a PIN at the door's keypad, answered `{"opened"}` once the event is
//! posted; `POST /_sim/webhook/redeliver` sends the last delivery again (a retry),
//! answered `{"status"}` with the receiver's status. The door opens for a user holding the
//! PIN, in its effective window, in a group with a permission on the access point, while
//! the access point's panel is online. The event names the user, never the PIN.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::SimHandle;
use crate::brivo::webhook::{
    AccessEvent, Actor, DeviceType, EventData, EventObject, SecurityAction, DEVICE_TYPE_DOOR,
};

/// The simulator's security action ids (Brivo's own ids are not public).
const VALID_CREDENTIAL: (i64, &str) = (2004, "Valid Credential");
const INVALID_CREDENTIAL: (i64, &str) = (2005, "Invalid Credential");

impl SimHandle {
    /// Someone types `pin` at access point `ap`; the event is posted (awaited) and the
    /// outcome returned. `None` for an unknown access point.
    pub async fn pin_attempt(&self, ap: i64, pin: &str) -> Option<bool> {
        self.judge_and_post(|s, now| {
            if !s.access_points.contains(&ap) {
                return None;
            }
            let user = s
                .users
                .values()
                .find(|u| u.pin.as_deref() == Some(pin))
                .cloned();
            let opened = !s.offline_access_points.contains(&ap)
                && user.as_ref().is_some_and(|u| {
                    u.effective_from.is_none_or(|f| f <= now)
                        && u.effective_to.is_none_or(|t| now < t)
                        && u.groups.iter().any(|g| {
                            s.groups
                                .get(g)
                                .is_some_and(|g| g.access_points.contains_key(&ap))
                        })
                });
            let n = s.webhook.next_id();
            let (id, action) = if opened {
                VALID_CREDENTIAL
            } else {
                INVALID_CREDENTIAL
            };
            let event = AccessEvent {
                uuid: format!("{n:08x}-b71f-4000-8000-{:012x}", now.timestamp()),
                security_action: SecurityAction {
                    security_action_id: id,
                    action: action.into(),
                    exception: !opened,
                },
                actor: user.map(|u| Actor {
                    id: u.id,
                    name: Some(format!("{} {}", u.first_name, u.last_name)),
                    external_id: u.external_id,
                }),
                event_object: Some(EventObject {
                    id: ap,
                    name: Some(format!("Door {ap}")),
                    device_type: DeviceType {
                        id: DEVICE_TYPE_DOOR,
                        name: "Door".into(),
                    },
                }),
                occurred: now,
                event_data: EventData {
                    action_allowed: Some(opened),
                    credential_type: Some("PIN".into()),
                },
            };
            Some((opened, event))
        })
        .await
    }
}

#[derive(Deserialize)]
struct AttemptBody {
    credential: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(crate::sim_kit::webhook_routes::<super::SimState>)
        .route(
            "/_sim/access-points/{id}/attempts",
            web::post().to(post_attempt),
        );
}

async fn post_attempt(
    h: web::Data<SimHandle>,
    path: web::Path<i64>,
    body: web::Json<AttemptBody>,
) -> HttpResponse {
    let opened = h.pin_attempt(path.into_inner(), &body.credential).await;
    crate::sim_kit::attempt_reply(opened, "unknown access point")
}
