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
use crate::salto::webhook::{self, Event, EventLock, EventUser};
use crate::webhook::SimDelivery;

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
    /// Where notifications are posted and the secret they are signed with (`None`:
    /// nowhere).
    pub fn set_webhook(&self, target: Option<(String, String)>) {
        self.with(|s| s.webhook.target = target);
    }

    /// Someone tries `lock` with a PIN (`method` `pin`, `credential` the digits) or a
    /// digital key (`digital_key`, `credential` the site user's id); the notification is
    /// posted (awaited) and the outcome returned. `None` for an unknown lock.
    pub async fn attempt(&self, lock: &str, method: &str, credential: &str) -> Option<bool> {
        let now = self.clock.now();
        let (event, delivery) = self.with(|s| {
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
            let delivery = s.webhook.target.as_ref().and_then(|(url, secret)| {
                let body = serde_json::to_vec(&event).ok()?;
                let ts = now.timestamp();
                Some(SimDelivery {
                    url: url.clone(),
                    headers: vec![
                        ("content-type", "application/json".into()),
                        (webhook::TIMESTAMP_HEADER, ts.to_string()),
                        (webhook::SIGNATURE_HEADER, webhook::sign(secret, ts, &body)),
                    ],
                    body,
                })
            });
            s.webhook.last.clone_from(&delivery);
            Some((event, delivery))
        })?;
        if let Some(d) = delivery {
            d.send().await;
        }
        Some(event.kind == "entry")
    }

    /// Sends the last notification again, as Salto retries; the receiver's status.
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
struct AttemptBody {
    method: String,
    credential: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/webhook", web::post().to(post_webhook))
        .route("/_sim/webhook/redeliver", web::post().to(post_redeliver))
        .route(
            "/_sim/locks/{lock_id}/attempts",
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
    path: web::Path<String>,
    body: web::Json<AttemptBody>,
) -> HttpResponse {
    let b = body.into_inner();
    match h
        .attempt(&path.into_inner(), &b.method, &b.credential)
        .await
    {
        Some(opened) => HttpResponse::Ok().json(serde_json::json!({ "opened": opened })),
        None => HttpResponse::NotFound().body("unknown lock"),
    }
}
