//! The simulator's door attempts and their signed event notifications (see
//! [`crate::salto::webhook`], a labelled reconstruction).
//!
//! Control: `POST /_sim/webhook` `{"url", "secret"}` sets where events go;
//! `POST /_sim/locks/{lockId}/attempts` `{"method": "pin"|"digital_key", "credential":
//! <digits, or the site user's id>}`: someone tries the lock, answered `{"opened"}` once the
//! event is posted; `POST /_sim/webhook/redeliver` sends the last notification again (a
//! vendor's retry), answered `{"status"}` with the receiver's status. The lock opens for a
//! member of an access group holding the lock, inside the group's first schedule (UTC), on
//! a lock that is online. The event names the site user (its `alias`), never the PIN.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{SimHandle, SimState};
use crate::salto::webhook::{Event, EventLock, EventUser};

impl SimState {
    /// Whether `user` may open `lock` at `now`.
    fn judge(&self, lock: &str, user: &super::SimSiteUser, now: DateTime<Utc>) -> bool {
        let utc = chrono::FixedOffset::east_opt(0).expect("zero is a valid offset");
        let online = self.lock_health.get(lock).is_none_or(|h| h.online);
        online
            && self.groups.iter().any(|g| {
                g.lock_ids.iter().any(|l| l == lock)
                    && g.user_ids.contains(&user.user_id)
                    && g.time_schedules
                        .first()
                        .and_then(|t| t.utc_window(utc).ok())
                        .is_none_or(|(from, until)| from <= now && now < until)
            })
    }
}

impl SimHandle {
    /// Someone tries `lock` with a PIN (`method` `pin`, `credential` the digits) or a
    /// digital key (`digital_key`, `credential` the site user's id); the notification is
    /// posted (awaited) and the outcome returned. `None` for an unknown lock.
    pub async fn attempt(&self, lock: &str, method: &str, credential: &str) -> Option<bool> {
        self.judge_and_post(|s, now| {
            if !s.config.locks.contains_key(lock) {
                return None;
            }
            let user = s
                .users
                .iter()
                .find(|u| match method {
                    "pin" => u.pin.as_deref() == Some(credential),
                    _ => u.id == credential,
                })
                .cloned();
            let opened = user.as_ref().is_some_and(|u| s.judge(lock, u, now));
            let n = s.webhook.next_id();
            let event = Event {
                id: format!("{n:08x}-e7e7-4000-8000-{:012x}", now.timestamp()),
                kind: if opened { "entry" } else { "rejection" }.into(),
                site_id: Some(s.config.site_id.clone()),
                occurred_at: now,
                lock: EventLock { id: lock.into() },
                opening_method: Some(method.into()),
                user: user.map(|u| EventUser {
                    id: u.id,
                    alias: Some(u.alias),
                }),
            };
            Some((opened, event))
        })
        .await
    }
}

#[derive(Deserialize)]
struct AttemptBody {
    method: String,
    credential: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(crate::sim_kit::webhook_routes::<super::SimState>)
        .route(
            "/_sim/locks/{lock_id}/attempts",
            web::post().to(post_attempt),
        );
}

async fn post_attempt(
    h: web::Data<SimHandle>,
    path: web::Path<String>,
    body: web::Json<AttemptBody>,
) -> HttpResponse {
    let b = body.into_inner();
    let opened = h
        .attempt(&path.into_inner(), &b.method, &b.credential)
        .await;
    crate::sim_kit::attempt_reply(opened, "unknown lock")
}
