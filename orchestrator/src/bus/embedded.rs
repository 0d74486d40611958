//! Embedded mode's in-process bus: events arrive over HTTP (`POST /api/v1/intake`), a
//! ticker fires due timers, and the "publisher" hands outbox rows to an in-memory buffer
//! that `GET /api/v1/events` shows (and logs each one), marking them published.

use std::sync::Arc;
use std::time::Duration;

use lockstep_actors::Wake;
use tracing::{info, warn};

use crate::app::Shared;

/// Size of the buffer of recent produced events.
pub const RECENT_EVENTS: usize = 1000;

/// Wakes every subject with due work, every `interval`.
pub async fn ticker(shared: Arc<Shared>, interval: Duration) {
    loop {
        let now = shared.rt.clock.now();
        let removals = &lockstep_actors::events_in::REMOVAL_TOPICS;
        match shared
            .rt
            .store
            .due_subjects(None, now, 10_000, removals)
            .await
        {
            Ok(subjects) => {
                // removals first, marked: their steps go before waiting issuances
                for due in subjects {
                    shared
                        .router
                        .do_send(Wake::marked(due.subject, due.removal));
                }
            }
            Err(e) => warn!(error = %e, "timer scan failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Moves outbox rows into the recent-events buffer.
pub async fn publisher(shared: Arc<Shared>) {
    loop {
        let now = shared.rt.clock.now();
        match shared.rt.store.unpublished(now, 200).await {
            Ok(rows) if !rows.is_empty() => {
                let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
                if let Ok(mut buf) = shared.recent_events.lock() {
                    for r in &rows {
                        info!(subject = %r.topic, event_id = %r.id, tenant = %r.tenant_id, "event published");
                        if buf.len() == RECENT_EVENTS {
                            buf.pop_front();
                        }
                        buf.push_back(r.envelope.clone());
                    }
                }
                for r in &rows {
                    shared
                        .rt
                        .metrics
                        .outbox_published
                        .with_label_values(&[&r.topic])
                        .inc();
                }
                if let Err(e) = shared.rt.store.mark_published(&ids, now).await {
                    warn!(error = %e, "marking outbox rows published failed");
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "outbox scan failed"),
        }
        // pushed by the commits that write outbox rows; the timer is a backstop
        tokio::select! {
            () = shared.rt.outbox_ready.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
