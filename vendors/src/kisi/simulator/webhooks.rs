//! The simulator's door events and their signed webhooks (see [`crate::kisi::webhook`]).
//!
//! Control: `POST /_sim/webhook` `{"url", "secret"}` sets where events go;
//! `POST /_sim/locks/{lockId}/unlocks` `{"email"}`: that user's app tries the lock. The
//! unlock succeeds when the user holds a role assignment, valid now, in a group of the lock.
//! `POST /_sim/webhook/redeliver` sends the last event again (a retry), answered
//! `{"status"}` with the receiver's status.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::SimHandle;
use crate::kisi::webhook::Event;

impl SimHandle {
    /// The user with `email` tries to unlock `lock_id` with the Kisi app; the event is
    /// posted to the webhook (awaited) and the outcome returned. `None` for an unknown
    /// user.
    pub async fn unlock_attempt(&self, lock_id: i64, email: &str) -> Option<bool> {
        self.judge_and_post(|s, now| {
            let user = s
                .users
                .values()
                .find(|u| u.email.eq_ignore_ascii_case(email))?
                .clone();
            let groups: Vec<i64> = s
                .groups
                .iter()
                .filter(|(_, locks)| locks.contains(&lock_id))
                .map(|(g, _)| *g)
                .collect();
            let allowed = s.assignments.values().any(|a| {
                a.user_id == user.id
                    && groups.contains(&a.group_id)
                    && a.valid_from.is_none_or(|f| f <= now)
                    && a.valid_until.is_none_or(|u| now < u)
            }) && !s.offline_locks.contains(&lock_id);
            let id = s.next_event_id;
            s.next_event_id += 1;
            let event = Event {
                id,
                action: "lock.unlock".into(),
                actor_type: Some("User".into()),
                actor_id: Some(user.id),
                actor_email: Some(user.email.clone()),
                actor_name: Some(user.name.clone()),
                object_type: Some("Lock".into()),
                object_id: lock_id,
                success: allowed,
                created_at: now,
            };
            Some((allowed, event))
        })
        .await
    }
}

#[derive(Deserialize)]
struct UnlockBody {
    email: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(crate::sim_kit::webhook_routes::<super::SimState>)
        .route("/_sim/locks/{lock_id}/unlocks", web::post().to(post_unlock));
}

async fn post_unlock(
    h: web::Data<SimHandle>,
    path: web::Path<i64>,
    body: web::Json<UnlockBody>,
) -> HttpResponse {
    let opened = h.unlock_attempt(path.into_inner(), &body.email).await;
    crate::sim_kit::attempt_reply(opened, "unknown user")
}
