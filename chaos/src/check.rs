//! The door invariants and the figures of a run.
//!
//! [`evaluate`] judges the world's model against what the vendors' simulators hold and what
//! Lockstep's API says, after the scenario recovered:
//!
//! - every confirmed, uncancelled stay holds exactly one credential of the property's
//!   preferred kind on each of its rooms' devices, with the stay's newest window
//!   (otherwise *lost*, *duplicated*, *wrong kind* or *wrong window*);
//! - every cancelled or checked-out stay holds none (otherwise *stale*), and none of its
//!   credentials is still live in the API (otherwise *lost*: the end was never applied);
//! - no vendor object carries a label Lockstep does not know (*orphans*);
//! - no credential is stuck: each is `active` with every device confirmed present, or
//!   terminal (`revoked`, `failed`) with every device confirmed absent.
//!
//! [`drain_dlq`] empties `lockstep.dlq` and sorts it: ticks (nothing to apply) apart,
//! everything else is a message that should have been applied (*unexpected*).
//! [`stale_windows`] reads the simulators' journals: for each credential of an ended stay,
//! from the end's publish (broker confirm) to the removal that left its door empty.
//! [`grants_before_removals`] counts grants applied after a heal while removals pending at
//! the heal were still outstanding (DESIGN §7: revocations first).
//!
//! [`Figures`] is what a scenario returns and prints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;

use crate::vendors::{DoorChange, DoorObject, DoorOp, Vendor};
use crate::world::{Property, Stay, TENANT};

/// One device's door truth in the API view.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiDoorSync {
    /// `lck_…`.
    pub device_id: String,
    /// `present` or `absent`.
    pub desired: String,
    /// `pending`, `confirmed` or `failed`.
    pub sync: String,
}

/// A credential as `GET /api/v1/key-credentials` shows it (the fields the checker reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCredential {
    /// `key_…`: the label at the vendor.
    pub id: String,
    /// Its reservation.
    pub reservation_id: Option<String>,
    /// `requested`, `pending`, `active`, `suspended`, `revoked`, `failed`.
    pub state: String,
    /// `pin_code`, `mobile_app`, ...
    pub kind: String,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Door truth per device.
    pub door_sync: Vec<ApiDoorSync>,
}

impl ApiCredential {
    /// Whether it may open a door now or later.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state.as_str(),
            "requested" | "pending" | "active" | "suspended"
        )
    }

    /// Settled: active and confirmed present everywhere, or terminal and confirmed absent
    /// everywhere.
    pub fn is_settled(&self) -> bool {
        let all = |desired: &str| {
            self.door_sync
                .iter()
                .all(|d| d.desired == desired && d.sync == "confirmed")
        };
        match self.state.as_str() {
            "active" => all("present"),
            "revoked" | "failed" => all("absent"),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<ApiCredential>,
    next_cursor: Option<String>,
}

/// Lockstep's API, read with the service token for the chaos tenant.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    /// The API at `base` (`http://127.0.0.1:<port>`).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Every credential of `property`, by reservation.
    pub async fn credentials(
        &self,
        property: &str,
    ) -> anyhow::Result<HashMap<String, Vec<ApiCredential>>> {
        let mut out: HashMap<String, Vec<ApiCredential>> = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut req = self
                .client
                .get(format!("{}/api/v1/key-credentials", self.base))
                .bearer_auth(&self.token)
                .header("x-tenant-id", TENANT)
                .query(&[("propertyId", property), ("limit", "200")]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c.as_str())]);
            }
            let resp = req.send().await.context("listing credentials")?;
            let status = resp.status();
            if !status.is_success() {
                anyhow::bail!(
                    "listing credentials answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            let page: Page = resp.json().await.context("reading the credential page")?;
            for c in page.items {
                if let Some(r) = c.reservation_id.clone() {
                    out.entry(r).or_default().push(c);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Every credential of every property, by reservation.
    pub async fn all_credentials(
        &self,
        properties: &[Property],
    ) -> anyhow::Result<HashMap<String, Vec<ApiCredential>>> {
        let mut all = HashMap::new();
        for p in properties {
            all.extend(self.credentials(&p.id).await?);
        }
        Ok(all)
    }
}

/// What every simulator's devices hold, by vendor and device ref.
#[derive(Clone, Debug, Default)]
pub struct Doors {
    /// (vendor, device ref) → objects.
    pub by_device: BTreeMap<(Vendor, String), Vec<DoorObject>>,
}

impl Doors {
    /// From each simulator's door view.
    pub fn from_views(views: Vec<(Vendor, Vec<DoorObject>)>) -> Self {
        let mut by_device: BTreeMap<(Vendor, String), Vec<DoorObject>> = BTreeMap::new();
        for (vendor, objects) in views {
            for o in objects {
                by_device
                    .entry((vendor, o.device.clone()))
                    .or_default()
                    .push(o);
            }
        }
        Self { by_device }
    }

    /// Distinct labels held anywhere.
    pub fn labels(&self) -> BTreeSet<&str> {
        self.by_device
            .values()
            .flatten()
            .map(|o| o.label.as_str())
            .collect()
    }

    fn on(&self, vendor: Vendor, device: &str) -> &[DoorObject] {
        self.by_device
            .get(&(vendor, device.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The invariants at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Confirmed live stays missing their key on a device, plus ended stays whose end was
    /// never applied (a credential still live).
    pub lost: u64,
    /// Stays with two objects of one credential on a device, or two live credentials.
    pub duplicated: u64,
    /// Ended stays whose key is still at a door.
    pub stale: u64,
    /// Credentials neither settled active nor settled terminal.
    pub stuck: u64,
    /// Live stays whose key is of another kind than the policy's preferred one.
    pub wrong_kind: u64,
    /// Live stays whose key's window is not the stay's newest.
    pub wrong_window: u64,
    /// (device, label) pairs at a vendor whose label is no credential of the API.
    pub orphans: u64,
    /// Distinct credentials at doors now.
    pub keys_at_doors: u64,
    /// The first problems of each kind (up to 5 per kind), described.
    pub problems: Vec<String>,
}

/// Problems described per kind, so one flood (say 150 stuck credentials) cannot hide a
/// rarer kind (one wrong window).
const PROBLEMS_PER_KIND: usize = 5;

impl Evaluation {
    /// Whether every invariant holds.
    pub fn consistent(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.stale == 0
            && self.stuck == 0
            && self.wrong_kind == 0
            && self.wrong_window == 0
            && self.orphans == 0
    }

    fn note(&mut self, problem: String) {
        let kind = problem.split(':').next().unwrap_or_default();
        let seen = self
            .problems
            .iter()
            .filter(|p| p.split(':').next() == Some(kind))
            .count();
        if seen < PROBLEMS_PER_KIND {
            self.problems.push(problem);
        }
    }
}

/// Judges `stays` (of `properties`) against the doors and the API's credentials.
pub fn evaluate(
    properties: &[Property],
    stays: &[Stay],
    doors: &Doors,
    creds: &HashMap<String, Vec<ApiCredential>>,
) -> Evaluation {
    let mut e = Evaluation {
        keys_at_doors: doors.labels().len() as u64,
        ..Evaluation::default()
    };
    let known: BTreeSet<&str> = creds.values().flatten().map(|c| c.id.as_str()).collect();
    let orphans: BTreeSet<(&str, &str)> = doors
        .by_device
        .values()
        .flatten()
        .filter(|o| !known.contains(o.label.as_str()))
        .map(|o| (o.device.as_str(), o.label.as_str()))
        .collect();
    e.orphans = orphans.len() as u64;
    if let Some((d, l)) = orphans.iter().next() {
        e.note(format!(
            "orphan: {l} on device {d} is no credential of the API"
        ));
    }
    let none = Vec::new();
    for stay in stays {
        let p = &properties[stay.property];
        let mine = creds.get(&stay.reservation).unwrap_or(&none);
        let labels: BTreeSet<&str> = mine.iter().map(|c| c.id.as_str()).collect();
        let held = |device: &str| -> Vec<&DoorObject> {
            doors
                .on(p.vendor, device)
                .iter()
                .filter(|o| labels.contains(o.label.as_str()))
                .collect()
        };
        for c in mine.iter().filter(|c| !c.is_settled()) {
            e.stuck += 1;
            let doors: Vec<String> = c
                .door_sync
                .iter()
                .map(|d| format!("{}/{}", d.desired, d.sync))
                .collect();
            e.note(format!(
                "stuck: {} of {} is {} with doors {doors:?}",
                c.id, stay.reservation, c.state
            ));
        }
        if stay.should_hold_key() {
            let live = mine.iter().filter(|c| c.is_live()).count();
            let (mut missing, mut dup, mut kind) = (false, live > 1, false);
            let mut window: Option<String> = None;
            for r in &stay.rooms {
                let device = &p.rooms[*r].device_ref;
                let objects = held(device);
                match objects.as_slice() {
                    [] => missing = true,
                    [o] => {
                        kind |= o.kind != p.expected_kind;
                        if (o.valid_from, o.valid_until)
                            != (Some(stay.window.0), Some(stay.window.1))
                        {
                            window = Some(format!(
                                "{:?}..{:?} on {device}",
                                o.valid_from, o.valid_until
                            ));
                        }
                    }
                    _ => dup = true,
                }
            }
            if missing {
                e.lost += 1;
                let states: Vec<String> = mine
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            c.id,
                            c.state,
                            c.failure_reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                e.note(format!(
                    "lost: {} (confirmed) has no key at a door; API: {states:?}",
                    stay.reservation
                ));
            }
            if dup {
                e.duplicated += 1;
                e.note(format!(
                    "duplicated: {} holds {live} live credentials or two objects of one",
                    stay.reservation
                ));
            }
            if kind && !dup {
                e.wrong_kind += 1;
                e.note(format!(
                    "wrong kind: {} holds another kind than {}",
                    stay.reservation,
                    p.expected_kind.as_str()
                ));
            }
            if let Some(held) = window.filter(|_| !dup) {
                e.wrong_window += 1;
                e.note(format!(
                    "wrong window: {} should be {}..{} (revision {}), the door has {held}",
                    stay.reservation, stay.window.0, stay.window.1, stay.revision
                ));
            }
        } else if stay.ended.is_some() {
            let at_doors = stay
                .rooms
                .iter()
                .map(|r| held(&p.rooms[*r].device_ref).len())
                .sum::<usize>();
            if at_doors > 0 {
                e.stale += 1;
                e.note(format!(
                    "stale: {} ended but {at_doors} object(s) still open its door",
                    stay.reservation
                ));
            }
            if mine.iter().any(ApiCredential::is_live) {
                e.lost += 1;
                e.note(format!(
                    "lost: the end of {} was never applied (a credential is still live)",
                    stay.reservation
                ));
            }
        }
    }
    e
}

/// Stale-key windows, in wall seconds: for each credential of an ended stay that ever
/// reached a door, from the end's publish to the removal that left the door without it
/// (0 if it left before). Credentials still at a door are not in the list (they are
/// *stale*).
pub fn stale_windows(
    stays: &[Stay],
    creds: &HashMap<String, Vec<ApiCredential>>,
    journal: &[DoorChange],
) -> Vec<f64> {
    let mut last: HashMap<(&str, &str), &DoorChange> = HashMap::new();
    for c in journal {
        last.insert((c.label.as_str(), c.device.as_str()), c);
    }
    let mut by_label: HashMap<&str, Vec<&DoorChange>> = HashMap::new();
    for c in last.values() {
        by_label.entry(c.label.as_str()).or_default().push(c);
    }
    let mut out = Vec::new();
    for stay in stays {
        let Some(end) = stay.ended else { continue };
        for cred in creds.get(&stay.reservation).into_iter().flatten() {
            let Some(finals) = by_label.get(cred.id.as_str()) else {
                continue; // never at a door
            };
            if finals.iter().any(|c| c.remaining > 0) {
                continue; // still there: stale, not a window
            }
            let gone = finals
                .iter()
                .map(|c| c.at)
                .max()
                .unwrap_or(end.published_at);
            let secs = (gone - end.published_at).num_milliseconds().max(0) as f64 / 1000.0;
            out.push(secs);
        }
    }
    out
}

/// Grants applied after `healed_at` while a removal pending at `healed_at` (a label of an
/// ended stay whose end was published before the heal, still at a door then) was still
/// outstanding: each is a new key that reached a door before an old one left.
pub fn grants_before_removals(
    stays: &[Stay],
    creds: &HashMap<String, Vec<ApiCredential>>,
    journal: &[DoorChange],
    healed_at: DateTime<Utc>,
) -> u64 {
    let ended_before: BTreeSet<&str> = stays
        .iter()
        .filter(|s| s.ended.is_some_and(|e| e.published_at < healed_at))
        .flat_map(|s| creds.get(&s.reservation).into_iter().flatten())
        .map(|c| c.id.as_str())
        .collect();
    let mut present: HashMap<(&str, &str), u32> = HashMap::new();
    for c in journal.iter().filter(|c| c.at <= healed_at) {
        present.insert((c.label.as_str(), c.device.as_str()), c.remaining);
    }
    let pending: BTreeSet<(&str, &str)> = present
        .into_iter()
        .filter(|(k, n)| *n > 0 && ended_before.contains(k.0))
        .map(|(k, _)| k)
        .collect();
    let last_removal = journal
        .iter()
        .filter(|c| {
            c.at > healed_at
                && c.op == DoorOp::Remove
                && c.remaining == 0
                && pending.contains(&(c.label.as_str(), c.device.as_str()))
        })
        .map(|c| c.at)
        .max();
    let Some(last_removal) = last_removal else {
        return 0;
    };
    journal
        .iter()
        .filter(|c| c.op == DoorOp::Grant && c.at > healed_at && c.at < last_removal)
        .count() as u64
}

/// What `lockstep.dlq` held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DlqReport {
    /// Partition ticks (nothing to apply; issue 10, bug 3).
    pub ticks: u64,
    /// Everything else: messages that should have been applied.
    pub unexpected: u64,
    /// Unexpected ones by reason (`x-lockstep-reason`, else `x-death` reason).
    pub reasons: BTreeMap<String, u64>,
    /// Envelope ids of the unexpected ones (first 20).
    pub sample_ids: Vec<String>,
}

fn header_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Empties the dead-letter queue `queue` of the broker at `url` (user `lockstep`) and sorts
/// what it held.
pub async fn drain_dlq(url: &str, queue: &str) -> anyhow::Result<DlqReport> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to the scenario's broker to read the DLQ")?;
    let ch = conn.create_channel().await?;
    let mut report = DlqReport::default();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .context("reading the DLQ")?
    {
        let d = m.delivery;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let h = headers.inner();
        if h.contains_key("x-lockstep-tick") {
            report.ticks += 1;
            continue;
        }
        report.unexpected += 1;
        let death_reason = h.get("x-death").and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().and_then(|t| match t {
                AMQPValue::FieldTable(t) => t.inner().get("reason").and_then(header_str),
                _ => None,
            }),
            _ => None,
        });
        let reason = h
            .get("x-lockstep-reason")
            .and_then(header_str)
            .or(death_reason)
            .unwrap_or_else(|| "unknown".into());
        *report.reasons.entry(reason).or_default() += 1;
        if report.sample_ids.len() < 20 {
            let id = serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "<not an envelope>".into());
            report.sample_ids.push(id);
        }
    }
    let _ = conn.close(200, "dlq read".into()).await;
    Ok(report)
}

/// The figures of one scenario run.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Scenario name.
    pub scenario: String,
    /// Vendors the properties ran on.
    pub vendors: Vec<Vendor>,
    /// Events the broker confirmed (duplicates included).
    pub events: u64,
    /// Of which duplicates.
    pub duplicates_published: u64,
    /// Stays in the model.
    pub stays: u64,
    /// Faults injected.
    pub faults: u64,
    /// The final evaluation.
    pub evaluation: Evaluation,
    /// The dead-letter queue at the end.
    pub dlq: DlqReport,
    /// From the last fault healed (or the load's end, if later) until every invariant
    /// held; `None` if they never did within the bound.
    pub recovery: Option<Duration>,
    /// Stale-key windows (wall seconds), one per ended credential that reached a door.
    pub stale_windows: Vec<f64>,
    /// The clock scale (business seconds = wall seconds × scale).
    pub clock_scale: f64,
    /// Grants applied after the heal before the removals pending then.
    pub grants_before_removals: u64,
    /// Whether `grants_before_removals > 0` fails the run (only where Lockstep held both).
    pub require_removals_first: bool,
    /// Scenario-specific measurements, printed as `key=value`.
    pub extra: Vec<(String, String)>,
    /// Scenario-specific invariants that did not hold (each fails the run).
    pub failures: Vec<String>,
    /// Why the run could not complete, if it could not (a harness error, not a figure).
    pub error: Option<String>,
}

impl Figures {
    /// Lost stays.
    pub fn lost(&self) -> u64 {
        self.evaluation.lost
    }

    /// Duplicated stays.
    pub fn duplicated(&self) -> u64 {
        self.evaluation.duplicated
    }

    /// Stale stays.
    pub fn stale(&self) -> u64 {
        self.evaluation.stale
    }

    /// Stuck credentials.
    pub fn stuck(&self) -> u64 {
        self.evaluation.stuck
    }

    /// Stale-window quantile `q`, wall seconds.
    pub fn stale_window(&self, q: f64) -> Option<f64> {
        crate::util::quantile(&self.stale_windows, q)
    }

    /// Whether every invariant held (and the run completed).
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.evaluation.consistent()
            && self.dlq.unexpected == 0
            && self.recovery.is_some()
            && !(self.require_removals_first && self.grants_before_removals > 0)
            && self.failures.is_empty()
    }

    /// The one-line summary: `kill9: events=1100 lost=0 ... p99=1.9s`.
    pub fn line(&self) -> String {
        let e = &self.evaluation;
        let secs = |d: Option<f64>| match d {
            Some(s) if self.clock_scale > 1.0 => {
                format!("{s:.2}s({:.0}s business)", s * self.clock_scale)
            }
            Some(s) => format!("{s:.2}s"),
            None => "-".into(),
        };
        let mut l = format!(
            "{}: events={} lost={} duplicated={} stale={} stuck={} dlq_unexpected={} recovery={} stale_window_p50={} p99={} (n={})",
            self.scenario,
            self.events,
            e.lost,
            e.duplicated,
            e.stale,
            e.stuck,
            self.dlq.unexpected,
            self.recovery
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into()),
            secs(self.stale_window(0.5)),
            secs(self.stale_window(0.99)),
            self.stale_windows.len(),
        );
        for (k, v) in [
            ("wrong_kind", e.wrong_kind),
            ("wrong_window", e.wrong_window),
            ("orphans", e.orphans),
            ("dlq_ticks", self.dlq.ticks),
            ("grants_before_removals", self.grants_before_removals),
        ] {
            if v > 0 {
                let _ = write!(l, " {k}={v}");
            }
        }
        for (k, v) in &self.extra {
            let _ = write!(l, " {k}={v}");
        }
        l
    }

    /// The block printed after a scenario: the line, then what failed and why.
    pub fn report(&self) -> String {
        let mut r = self.line();
        let _ = write!(
            r,
            "\n  stays={} duplicates_published={} faults={} vendors={:?} verdict={}",
            self.stays,
            self.duplicates_published,
            self.faults,
            self.vendors.iter().map(|v| v.name()).collect::<Vec<_>>(),
            if self.passed() { "PASS" } else { "FAIL" }
        );
        if let Some(err) = &self.error {
            let _ = write!(r, "\n  error: {err}");
        }
        if !self.dlq.reasons.is_empty() {
            let _ = write!(
                r,
                "\n  dlq: {:?} e.g. {:?}",
                self.dlq.reasons,
                &self.dlq.sample_ids[..self.dlq.sample_ids.len().min(5)]
            );
        }
        for p in &self.evaluation.problems {
            let _ = write!(r, "\n  {p}");
        }
        for p in &self.failures {
            let _ = write!(r, "\n  failed: {p}");
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{EndKind, Ending, Room};
    use lockstep_domain::KeyCredentialKind;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_900_000_000 + h * 3600, 0).expect("valid")
    }

    fn property() -> Property {
        Property {
            id: "ppt_t".into(),
            vendor: Vendor::Ttlock,
            adapter_id: "vad_x".into(),
            rooms: vec![Room {
                room: "rmu_1".into(),
                device_id: "lck_1".into(),
                device_ref: "7001".into(),
            }],
            expected_kind: KeyCredentialKind::PinCode,
        }
    }

    fn stay(reservation: &str, ended: Option<DateTime<Utc>>) -> Stay {
        Stay {
            reservation: reservation.into(),
            property: 0,
            rooms: vec![0],
            window: (t(0), t(21)),
            revision: 1,
            confirmed: true,
            ended: ended.map(|at| Ending {
                kind: EndKind::Cancelled,
                published_at: at,
            }),
            reordered: false,
        }
    }

    fn cred(id: &str, reservation: &str, state: &str, desired: &str) -> ApiCredential {
        ApiCredential {
            id: id.into(),
            reservation_id: Some(reservation.into()),
            state: state.into(),
            kind: "pin_code".into(),
            failure_reason: None,
            door_sync: vec![ApiDoorSync {
                device_id: "lck_1".into(),
                desired: desired.into(),
                sync: "confirmed".into(),
            }],
        }
    }

    fn object(label: &str) -> DoorObject {
        DoorObject {
            device: "7001".into(),
            label: label.into(),
            kind: KeyCredentialKind::PinCode,
            valid_from: Some(t(0)),
            valid_until: Some(t(21)),
        }
    }

    fn change(op: DoorOp, label: &str, at: DateTime<Utc>, remaining: u32) -> DoorChange {
        DoorChange {
            seq: 0,
            at,
            op,
            device: "7001".into(),
            label: label.into(),
            kind: KeyCredentialKind::PinCode,
            valid_from: None,
            valid_until: None,
            remaining,
        }
    }

    #[test]
    fn a_held_key_a_removed_key_and_their_windows_pass() {
        let stays = vec![stay("rsv_a", None), stay("rsv_b", Some(t(1)))];
        let creds = HashMap::from([
            (
                "rsv_a".to_owned(),
                vec![cred("key_a", "rsv_a", "active", "present")],
            ),
            (
                "rsv_b".to_owned(),
                vec![cred("key_b", "rsv_b", "revoked", "absent")],
            ),
        ]);
        let doors = Doors::from_views(vec![(Vendor::Ttlock, vec![object("key_a")])]);
        let e = evaluate(&[property()], &stays, &doors, &creds);
        assert!(e.consistent(), "{e:?}");
        let journal = vec![
            change(DoorOp::Grant, "key_b", t(0), 1),
            change(
                DoorOp::Remove,
                "key_b",
                t(1) + chrono::Duration::seconds(3),
                0,
            ),
        ];
        assert_eq!(stale_windows(&stays, &creds, &journal), vec![3.0]);
    }

    #[test]
    fn missing_duplicate_stale_and_stuck_keys_are_counted() {
        let stays = vec![
            stay("rsv_a", None),
            stay("rsv_b", Some(t(1))),
            stay("rsv_c", None),
        ];
        let creds = HashMap::from([
            (
                "rsv_a".to_owned(),
                vec![cred("key_a", "rsv_a", "pending", "present")],
            ),
            (
                "rsv_b".to_owned(),
                vec![cred("key_b", "rsv_b", "active", "present")],
            ),
            (
                "rsv_c".to_owned(),
                vec![cred("key_c", "rsv_c", "active", "present")],
            ),
        ]);
        let doors = Doors::from_views(vec![(
            Vendor::Ttlock,
            vec![
                object("key_b"),
                object("key_c"),
                object("key_c"),
                object("key_zz"),
            ],
        )]);
        let e = evaluate(&[property()], &stays, &doors, &creds);
        assert_eq!(e.lost, 2, "{e:?}"); // a has no key; b's cancel never applied
        assert_eq!(e.stale, 1);
        assert_eq!(e.duplicated, 1);
        assert_eq!(e.stuck, 1);
        assert_eq!(e.orphans, 1);
    }

    #[test]
    fn a_grant_before_a_pending_removal_is_counted() {
        let healed = t(2);
        let stays = vec![stay("rsv_b", Some(t(1)))];
        let creds = HashMap::from([(
            "rsv_b".to_owned(),
            vec![cred("key_b", "rsv_b", "revoked", "absent")],
        )]);
        let s = |n| healed + chrono::Duration::seconds(n);
        let journal = vec![
            change(DoorOp::Grant, "key_b", t(0), 1),
            change(DoorOp::Grant, "key_new", s(1), 1),
            change(DoorOp::Remove, "key_b", s(2), 0),
            change(DoorOp::Grant, "key_later", s(3), 1),
        ];
        assert_eq!(grants_before_removals(&stays, &creds, &journal, healed), 1);
    }
}
