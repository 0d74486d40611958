//! Issue 4, point 2: random interleavings of reservation and shift events under vendor
//! faults, checked against a reference model of what the door should allow.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lockstep_actors::{SagaSettings, WorkerSettings};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::SystemClock;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::rig::Rig;

/// One published event of the scenario.
#[derive(Clone, Debug)]
enum Ev {
    Confirm { r: usize, rev: i64, end_day: u32 },
    Dates { r: usize, rev: i64, end_day: u32 },
    Cancel { r: usize, rev: i64 },
    Checkout { r: usize, rev: i64 },
    Fraud { r: usize, rev: i64 },
    ShiftStart,
    ShiftEnd,
}

/// What the door should allow for one reservation: the newest facts.
#[derive(Default, Debug)]
struct Model {
    confirmed: bool,
    ended: bool,
    fraud: bool,
    window: Option<(i64, u32)>,
}

const START_DAY: u32 = 1;

fn scenario(rng: &mut StdRng) -> Vec<Ev> {
    let mut evs = Vec::new();
    for r in 0..3 {
        evs.push(Ev::Confirm {
            r,
            rev: 1,
            end_day: 3,
        });
        if rng.gen_bool(0.5) {
            evs.push(Ev::Dates {
                r,
                rev: 2,
                end_day: 4 + rng.gen_range(0..2),
            });
        }
        match rng.gen_range(0..5) {
            0 => evs.push(Ev::Cancel { r, rev: 3 }),
            1 => evs.push(Ev::Checkout { r, rev: 3 }),
            2 => evs.push(Ev::Fraud { r, rev: 3 }),
            _ => {}
        }
    }
    evs.push(Ev::ShiftStart);
    if rng.gen_bool(0.5) {
        evs.push(Ev::ShiftEnd);
    }
    // duplicates, then any order
    let dups: Vec<Ev> = evs.iter().filter(|_| rng.gen_bool(0.3)).cloned().collect();
    evs.extend(dups);
    evs.shuffle(rng);
    evs
}

async fn deliver(rig: &Rig, ev: &Ev) -> anyhow::Result<()> {
    let day = |d: u32| format!("2027-08-{d:02}T12:00:00Z");
    match ev {
        Ev::Confirm { r, rev, end_day } => {
            rig.deliver(&format!("c{r}-{rev}"), "melmastoon.reservation.confirmed.v1", json!({
                "reservationId": format!("rsv_m{r}"), "revision": rev, "guestId": "gst_m",
                "roomIds": [format!("rmu_{}", r + 1)], "validFrom": day(START_DAY), "validUntil": day(*end_day) })).await
        }
        Ev::Dates { r, rev, end_day } => {
            rig.deliver(&format!("d{r}-{rev}"), "melmastoon.reservation.dates_changed.v1", json!({
                "reservationId": format!("rsv_m{r}"), "revision": rev, "validFrom": day(START_DAY), "validUntil": day(*end_day) })).await
        }
        Ev::Cancel { r, rev } => {
            rig.deliver(&format!("x{r}-{rev}"), "melmastoon.reservation.cancelled.v1", json!({ "reservationId": format!("rsv_m{r}"), "revision": rev })).await
        }
        Ev::Checkout { r, rev } => {
            rig.deliver(&format!("o{r}-{rev}"), "melmastoon.reservation.checked_out.v1", json!({ "reservationId": format!("rsv_m{r}"), "revision": rev })).await
        }
        Ev::Fraud { r, rev } => {
            rig.deliver(&format!("f{r}-{rev}"), "melmastoon.reservation.fraud_flagged.v1", json!({ "reservationId": format!("rsv_m{r}"), "revision": rev })).await
        }
        Ev::ShiftStart => {
            rig.deliver_to("shift:shf_m", "s-start", "melmastoon.staff.shift.started.v1", json!({
                "shiftId": "shf_m", "staffUserId": "usr_m", "scope": { "kind": "room", "roomIds": ["rmu_4"] },
                "validFrom": day(START_DAY), "validUntil": day(2) })).await
        }
        Ev::ShiftEnd => {
            rig.deliver_to("shift:shf_m", "s-end", "melmastoon.staff.shift.ended.v1", json!({ "shiftId": "shf_m", "staffUserId": "usr_m" })).await
        }
    }
}

fn model_of(evs: &[Ev]) -> (BTreeMap<usize, Model>, bool) {
    let mut m: BTreeMap<usize, Model> = BTreeMap::new();
    let (mut started, mut ended) = (false, false);
    for ev in evs {
        match ev {
            Ev::Confirm { r, rev, end_day } | Ev::Dates { r, rev, end_day } => {
                let e = m.entry(*r).or_default();
                if matches!(ev, Ev::Confirm { .. }) {
                    e.confirmed = true;
                }
                if e.window.is_none_or(|(w, _)| *rev > w) {
                    e.window = Some((*rev, *end_day));
                }
            }
            Ev::Cancel { r, .. } | Ev::Checkout { r, .. } => m.entry(*r).or_default().ended = true,
            Ev::Fraud { r, .. } => m.entry(*r).or_default().fraud = true,
            Ev::ShiftStart => started = true,
            Ev::ShiftEnd => ended = true,
        }
    }
    (m, started && !ended)
}

#[actix_rt::test]
async fn random_interleavings_under_vendor_faults_leave_the_door_as_the_model_says(
) -> anyhow::Result<()> {
    let base: u64 = std::env::var("LOCKSTEP_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let seeds: u64 = std::env::var("LOCKSTEP_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    println!("model: base seed {base} (replay with LOCKSTEP_MODEL_SEED={base})");
    let mut events_run = 0;
    for seed in base..base + seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let evs = scenario(&mut rng);
        events_run += evs.len();
        let rig = Rig::start_with(
            WorkerSettings {
                timeout: Duration::from_millis(300),
                ..WorkerSettings::simulator()
            },
            Arc::new(SystemClock),
            BreakerPolicy {
                open_for: chrono::Duration::milliseconds(100),
                ..BreakerPolicy::default()
            },
            SagaSettings {
                retry_base: Duration::from_millis(20),
                retry_cap: Duration::from_millis(150),
                ..SagaSettings::default()
            },
        )
        .await?;
        // Vendor faults while the events arrive: 5xx, lost responses, 429s, a worker panic,
        // a wedged call.
        rig.sim.handle().update_faults(|f| {
            f.error_rate = 0.2;
            f.lose_response_rate = 0.2;
            f.rate_limit_per_sec = Some(40);
        });
        rig.port
            .panic_issues
            .store(u32::from(rng.gen_bool(0.5)), Ordering::SeqCst);
        rig.port
            .hang_issues
            .store(u32::from(rng.gen_bool(0.5)), Ordering::SeqCst);
        for ev in &evs {
            deliver(&rig, ev).await?;
            if rng.gen_bool(0.3) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..30))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.sim.handle().update_faults(|f| *f = Default::default());
        rig.wait_quiet()
            .await
            .map_err(|e| anyhow::anyhow!("seed {seed}: {e}; events {evs:?}"))?;

        let (model, master_allowed) = model_of(&evs);
        for (r, m) in &model {
            let reservation = format!("rsv_m{r}");
            let ids: Vec<String> = rig
                .credentials(&reservation)
                .await?
                .iter()
                .map(|c| c.id().as_str().to_owned())
                .collect();
            let at_door: Vec<_> = rig
                .sim
                .handle()
                .passcodes(*r as i64 + 1)
                .into_iter()
                .filter(|p| ids.contains(&p.keyboard_pwd_name))
                .collect();
            let allowed = m.confirmed && !m.ended && !m.fraud;
            if allowed {
                assert_eq!(
                    at_door.len(),
                    1,
                    "seed {seed}: {reservation} should have one passcode; {evs:?}"
                );
                let end = m.window.map(|(_, d)| d).unwrap_or(3);
                let expected =
                    chrono::DateTime::parse_from_rfc3339(&format!("2027-08-{end:02}T12:00:00Z"))?
                        .timestamp_millis();
                assert_eq!(
                    at_door[0].end_date, expected,
                    "seed {seed}: {reservation} has the newest window; {evs:?}"
                );
            } else {
                assert!(
                    at_door.is_empty(),
                    "seed {seed}: {reservation} must open nothing; {evs:?}"
                );
            }
        }
        let master_at_door = rig
            .sim
            .handle()
            .passcodes(4)
            .into_iter()
            .filter(|p| !p.keyboard_pwd_name.is_empty())
            .count();
        assert_eq!(
            master_at_door,
            usize::from(master_allowed),
            "seed {seed}: master key; {evs:?}"
        );
        rig.finish().await;
    }
    println!("model: {seeds} seeds, {events_run} events, every door as the model says");
    Ok(())
}
