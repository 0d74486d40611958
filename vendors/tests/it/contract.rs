//! The [`LockPort`] contract (`vendors/src/lib.rs`), written once and run against every
//! adapter by [`lock_port_contract_tests!`]: each behaviour is a generic function over a
//! [`Fixture`] (how to start one vendor's simulator with some devices, build its adapter
//! against it, make the request it issues, inject a fault through the simulator's handle
//! and read what the simulator holds), and the macro expands one `#[tokio::test]` per
//! behaviour per adapter (`contract::<adapter>::<behaviour>`).
//!
//! What only one vendor does (its wire details, documented examples, its own features)
//! stays in that vendor's file. Adding a vendor: implement [`Fixture`] in its file and add
//! one line to the macro call at the end of this one.
//!
//! The generic Wiegand adapter is not here: its device is an encoder behind the relay,
//! not a simulator this crate starts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lockstep_domain::{
    Clock, DeviceRef, DomainError, KeyCredentialKind, ManualClock, Pin, SystemClock, VendorCode,
    VendorRef,
};
use lockstep_vendors::sim_server::Running;
use lockstep_vendors::{IssueRequest, LockCapabilities, LockPort, VendorError};

use crate::support::{shifted, window};

/// How many devices every contract simulator starts with (device 1 shows that what is
/// done on device 0 stays there).
pub const DEVICES: usize = 2;

/// A fault the contract injects through a simulator's handle.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Every fault off.
    Clear,
    /// Every request fails at the transport (connection reset).
    Outage,
    /// Every request answers 500.
    ServerErrors,
    /// At most this many requests a second; the rest answer 429 with `Retry-After: 1`.
    RateLimit(u32),
    /// Every write is applied, then its response is lost.
    LoseResponses,
    /// Every response waits this long.
    Latency(u64),
}

/// Applies a [`Fault`] to any simulator handle with the common fault switches (a macro,
/// since each simulator has its own `SimFaults` type).
macro_rules! inject_fault {
    ($handle:expr, $fault:expr) => {
        match $fault {
            $crate::contract::Fault::Clear => $handle.set_faults(Default::default()),
            $crate::contract::Fault::Outage => $handle.update_faults(|f| f.outage = true),
            $crate::contract::Fault::ServerErrors => $handle.update_faults(|f| f.error_rate = 1.0),
            $crate::contract::Fault::RateLimit(n) => {
                $handle.update_faults(|f| f.rate_limit_per_sec = Some(n))
            }
            $crate::contract::Fault::LoseResponses => {
                $handle.update_faults(|f| f.lose_response_rate = 1.0)
            }
            $crate::contract::Fault::Latency(ms) => $handle.update_faults(|f| f.latency_ms = ms),
        }
    };
}
pub(crate) use inject_fault;

/// What a simulator's vendor-neutral door view says one device holds, for any simulator
/// handle (each has its own `door_view`).
macro_rules! held_on {
    ($handle:expr, $device:expr) => {
        $handle
            .door_view()
            .into_iter()
            .filter(|o| o.device == $device.expose())
            .map(|o| $crate::contract::Held {
                label: o.label,
                kind: o.kind,
                valid_from: o.valid_from,
                valid_until: o.valid_until,
            })
            .collect()
    };
}
pub(crate) use held_on;

/// The [`Fixture`] functions every simulator-backed adapter writes the same way (each
/// simulator and adapter has its own types, so a macro rather than default methods):
/// the simulator's default configuration, the call timeout, `<Adapter>::new`, faults,
/// the door view, and the simulator's tokens: with `tokens` their count and their expiry,
/// without it none.
macro_rules! simulator_fixture_fns {
    ($adapter:ident, tokens) => {
        $crate::contract::simulator_fixture_fns!(@common $adapter);

        fn tokens_issued(handle: &Self::Handle) -> Option<u64> {
            Some(handle.counters().tokens_issued)
        }

        fn expire_tokens(handle: &Self::Handle) {
            handle.expire_all_tokens();
        }
    };
    ($adapter:ident) => {
        $crate::contract::simulator_fixture_fns!(@common $adapter);

        fn tokens_issued(_handle: &Self::Handle) -> Option<u64> {
            None
        }

        fn expire_tokens(_handle: &Self::Handle) {}
    };
    (@common $adapter:ident) => {
        fn config(sim: &lockstep_vendors::sim_server::Running<Self::Handle>) -> Self::Config {
            sim.default_adapter_config()
        }

        fn set_call_timeout(config: &mut Self::Config, timeout: std::time::Duration) {
            config.call_timeout = timeout;
        }

        fn build(
            config: Self::Config,
            clock: std::sync::Arc<dyn lockstep_domain::Clock>,
        ) -> Self::Adapter {
            $adapter::new(config, clock).expect("adapter builds")
        }

        fn inject(handle: &Self::Handle, fault: $crate::contract::Fault) {
            $crate::contract::inject_fault!(handle, fault);
        }

        fn held(
            handle: &Self::Handle,
            device: &lockstep_domain::DeviceRef,
        ) -> Vec<$crate::contract::Held> {
            $crate::contract::held_on!(handle, device)
        }
    };
}
pub(crate) use simulator_fixture_fns;

/// One object a simulator holds on a device, as its door view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub label: String,
    pub kind: KeyCredentialKind,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
}

/// A simulator's write counters, named the contract's way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Credentials created (TTLock passcodes, Salto access groups, Vostio keys, Kisi role
    /// assignments, Brivo users).
    pub created: u64,
    /// Windows changed.
    pub updated: u64,
    /// Credentials deleted.
    pub deleted: u64,
    /// Responses the `lose_response` fault dropped.
    pub lost_responses: u64,
    /// Requests a fault answered instead of the vendor.
    pub rejected_by_faults: u64,
}

impl From<[u64; 5]> for Tally {
    /// `[created, updated, deleted, lost_responses, rejected_by_faults]`.
    fn from([created, updated, deleted, lost_responses, rejected_by_faults]: [u64; 5]) -> Self {
        Self {
            created,
            updated,
            deleted,
            lost_responses,
            rejected_by_faults,
        }
    }
}

/// What a healthy device's probe reads at a fresh simulator.
#[derive(Clone, Copy, Debug)]
pub struct ProbeReading {
    pub battery_percent: Option<i32>,
    pub firmware: Option<&'static str>,
    /// Whether the vendor reads the lock's clock.
    pub reads_clock: bool,
}

/// One adapter and its simulator, as the contract needs them.
pub trait Fixture: 'static {
    /// The simulator's control handle.
    type Handle: Clone + Send + Sync + 'static;
    /// The adapter's configuration.
    type Config: std::fmt::Debug;
    /// The adapter.
    type Adapter: LockPort;

    const VENDOR: VendorCode;
    /// The kind the contract issues (one this adapter puts on its devices).
    const KIND: KeyCredentialKind;
    /// The capability flags (spec `003` §2) the adapter sets, by their field names.
    const CAPABILITIES: &'static [&'static str];
    /// Kinds the adapter refuses as `unsupported_kind` before any call.
    const REFUSED_KINDS: &'static [KeyCredentialKind];
    /// The values that must never show in an error or a `Debug` output.
    const SECRETS: &'static [&'static str];
    /// Whether an issue is one write at the vendor (then a lost response is found by
    /// `find` at once; otherwise `find` then `issue` completes it).
    const SINGLE_WRITE_ISSUE: bool;
    /// Whether `find` looks only at the request's device. Labels name the device (the
    /// credential id plus device), so an adapter that finds by label account-wide is still
    /// right; this says which kind the adapter is.
    const FIND_IS_PER_DEVICE: bool;
    /// Whether `update` refuses a kind the adapter does not issue before any call (an
    /// adapter whose refs name the object's kind finds out at the vendor instead).
    const UPDATE_CHECKS_KIND: bool;
    /// A device of the right form that the simulator does not know.
    const UNKNOWN_DEVICE: &'static str;
    /// A vendor ref no object of this vendor could have.
    const MALFORMED_REF: &'static str;
    /// The code an issue on a device the vendor does not know is refused with.
    const UNKNOWN_DEVICE_CODE: &'static str;
    /// How long the adapter keeps a token on its own clock (`None`: no token, e.g. an API
    /// key).
    const TOKEN_LIFETIME_SECS: Option<i64>;
    const HEALTHY_PROBE: ProbeReading;

    /// Starts the simulator on loopback port 0 with [`DEVICES`] devices.
    fn start() -> Running<Self::Handle>;
    /// The configuration that reaches `sim` with its accepted credentials.
    fn config(sim: &Running<Self::Handle>) -> Self::Config;
    fn set_call_timeout(config: &mut Self::Config, timeout: Duration);
    /// Ways to get the credentials wrong, each with the wrong value it sets.
    fn bad_credentials() -> BadCredentials<Self::Config>;
    fn build(config: Self::Config, clock: Arc<dyn Clock>) -> Self::Adapter;
    /// Device `i` (< [`DEVICES`]) of the simulator.
    fn device(i: usize) -> DeviceRef;
    fn inject(handle: &Self::Handle, fault: Fault);
    fn held(handle: &Self::Handle, device: &DeviceRef) -> Vec<Held>;
    fn tally(handle: &Self::Handle) -> Tally;
    /// Tokens the simulator issued (`None` for a vendor without tokens).
    fn tokens_issued(handle: &Self::Handle) -> Option<u64>;
    fn expire_tokens(handle: &Self::Handle);
    /// Takes device `i` offline (the vendor cannot reach it) or back online.
    fn set_online(handle: &Self::Handle, device: usize, online: bool);
    /// The vendor's own view of a credential just issued or updated by `req` (its wire
    /// details: the PIN kept, the object's type and links).
    fn check_stored(handle: &Self::Handle, req: &IssueRequest, vendor_ref: &VendorRef);
    /// Nothing of a revoked credential is left at the vendor (also what the door view
    /// does not show, e.g. a user without access).
    fn check_gone(_handle: &Self::Handle, _req: &IssueRequest) {}
}

/// Ways to get an adapter's credentials wrong: the wrong value and how it is set.
pub type BadCredentials<C> = Vec<(&'static str, fn(&mut C))>;

/// An adapter whose contract kind is a PIN.
pub trait PinFixture: Fixture {
    /// Makes the simulator refuse the next PIN as already in use.
    fn force_pin_collision_next(handle: &Self::Handle);
}

pub struct Env<F: Fixture> {
    pub sim: Running<F::Handle>,
    pub handle: F::Handle,
    pub adapter: F::Adapter,
}

pub fn spawn<F: Fixture>() -> Env<F> {
    spawn_with::<F>(|_| {}, Arc::new(SystemClock))
}

pub fn spawn_with<F: Fixture>(tweak: impl FnOnce(&mut F::Config), clock: Arc<dyn Clock>) -> Env<F> {
    env_on::<F>(F::start(), tweak, clock)
}

/// The fixture's adapter against `sim`, a simulator started (and given its devices) by the
/// caller, with the configuration that reaches it passed through `tweak` first.
pub fn env_on<F: Fixture>(
    sim: Running<F::Handle>,
    tweak: impl FnOnce(&mut F::Config),
    clock: Arc<dyn Clock>,
) -> Env<F> {
    let handle = sim.handle();
    let mut config = F::config(&sim);
    tweak(&mut config);
    let adapter = F::build(config, clock);
    Env {
        sim,
        handle,
        adapter,
    }
}

/// A PIN derived from the label (FNV-1a), six digits, never one TTLock refuses as too simple.
fn pin_for(label: &str) -> Pin {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    loop {
        let pin = Pin::parse(&format!("{}", 100_000 + h % 900_000)).expect("six digits");
        if !pin.is_too_simple() {
            return pin;
        }
        h = h.wrapping_add(1);
    }
}

/// The request of the fixture's kind for `label` on device `i`, for a stay from tomorrow.
pub fn request<F: Fixture>(device: usize, label: &str) -> IssueRequest {
    IssueRequest {
        device: F::device(device),
        kind: F::KIND,
        label: label.to_owned(),
        pin: (F::KIND == KeyCredentialKind::PinCode).then(|| pin_for(label)),
        card_number: None,
        validity: window(),
    }
}

fn held_as_issued<F: Fixture>(req: &IssueRequest) -> Held {
    Held {
        label: req.label.clone(),
        kind: req.kind,
        valid_from: Some(req.validity.from()),
        valid_until: Some(req.validity.until()),
    }
}

/// The request's PIN digits, if it has some.
pub fn pin_of(req: &IssueRequest) -> Option<&str> {
    req.pin.as_ref().map(Pin::expose)
}

/// Nothing secret in any rendering of `err`: the fixture's secrets, a PIN, a vendor ref,
/// and `extra`.
pub fn assert_redacted<F: Fixture>(
    err: &VendorError,
    pin: Option<&str>,
    vendor_ref: Option<&VendorRef>,
    extra: &[&str],
) {
    let mut forbidden: Vec<&str> = F::SECRETS.to_vec();
    forbidden.extend(pin);
    forbidden.extend(vendor_ref.map(VendorRef::expose));
    forbidden.extend(extra);
    let renderings = [
        format!("{err:?}"),
        format!("{err}"),
        format!("{:?}", err.to_domain_issue()),
        format!("{:?}", err.to_domain_revoke()),
    ];
    for r in &renderings {
        for f in &forbidden {
            assert!(!r.contains(f), "{r:?} leaks a secret value");
        }
    }
}

/// The names of the flags `caps` sets, in the spec's order.
fn capability_flags(caps: &LockCapabilities) -> Vec<&'static str> {
    let LockCapabilities {
        mobile_key,
        card_encoding,
        pin,
        qr,
        nfc,
        remote_revoke,
        remote_issue,
        offline_issuance,
        scope_floors,
        scope_areas,
    } = *caps;
    [
        ("mobile_key", mobile_key),
        ("card_encoding", card_encoding),
        ("pin", pin),
        ("qr", qr),
        ("nfc", nfc),
        ("remote_revoke", remote_revoke),
        ("remote_issue", remote_issue),
        ("offline_issuance", offline_issuance),
        ("scope_floors", scope_floors),
        ("scope_areas", scope_areas),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

fn is_refused(err: &VendorError, expected: &str) -> bool {
    matches!(err, VendorError::Refused { code, .. } if code == expected)
}

/// The behaviours, each generic over the fixture.
pub mod behaviours {
    use super::*;

    type Result = anyhow::Result<()>;

    /// Issue, then `list` and the simulator show the one credential with its label and
    /// window, on that device only.
    pub async fn issued_credential_is_listed_with_its_window<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let req = request::<F>(0, "key_01HCISSUE");
        let vref = env.adapter.issue(&req).await?;

        let entries = env.adapter.list(&F::device(0)).await?;
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.vendor_ref, vref);
        assert_eq!(e.label, req.label);
        assert_eq!(e.valid_from, req.validity.from());
        assert_eq!(e.valid_until, req.validity.until());

        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&req)]
        );
        F::check_stored(&env.handle, &req, &vref);
        assert!(F::held(&env.handle, &F::device(1)).is_empty());
        assert!(env.adapter.list(&F::device(1)).await?.is_empty());
        assert_eq!(F::tally(&env.handle).created, 1);
        Ok(())
    }

    /// `find` by label: `None` before, the issued ref after, `None` for another label.
    pub async fn find_by_label_returns_the_issued_ref_and_none_when_absent<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let req = request::<F>(0, "key_01HCFIND");
        assert!(env.adapter.find(&req).await?.is_none());
        let vref = env.adapter.issue(&req).await?;
        env.adapter
            .issue(&request::<F>(0, "key_01HCFINDOTHER"))
            .await?;
        assert_eq!(env.adapter.find(&req).await?, Some(vref));
        assert!(env
            .adapter
            .find(&request::<F>(0, "key_01HCFINDABSENT"))
            .await?
            .is_none());
        if F::FIND_IS_PER_DEVICE {
            // The same label on another device is not there.
            let mut elsewhere = req.clone();
            elsewhere.device = F::device(1);
            assert!(env.adapter.find(&elsewhere).await?.is_none());
        }
        Ok(())
    }

    /// `update` moves the window of the same object and keeps what it is (label, PIN).
    pub async fn update_moves_the_window_and_keeps_the_credential<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let mut req = request::<F>(0, "key_01HCUPDATE");
        let vref = env.adapter.issue(&req).await?;
        // Check-out two days later, check-in one day earlier.
        req.validity = lockstep_domain::ValidityWindow::new(
            req.validity.from() - chrono::Duration::days(1),
            req.validity.until() + chrono::Duration::days(2),
        )?;
        env.adapter.update(&req, &vref).await?;

        let entries = env.adapter.list(&F::device(0)).await?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].vendor_ref, vref, "same object at the vendor");
        assert_eq!(entries[0].label, req.label, "the name is not touched");
        assert_eq!(entries[0].valid_from, req.validity.from());
        assert_eq!(entries[0].valid_until, req.validity.until());
        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&req)]
        );
        F::check_stored(&env.handle, &req, &vref);
        let tally = F::tally(&env.handle);
        assert_eq!((tally.created, tally.updated), (1, 1));
        assert_eq!(env.adapter.find(&req).await?, Some(vref));
        Ok(())
    }

    /// Updating what was revoked is `NotFound`: not the vendor's fault, not retryable.
    pub async fn update_of_a_revoked_credential_is_not_found<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let mut req = request::<F>(0, "key_01HCUPDGONE");
        let vref = env.adapter.issue(&req).await?;
        env.adapter.revoke(&F::device(0), &vref).await?;
        req.validity = shifted(&req.validity, 1);
        let err = env
            .adapter
            .update(&req, &vref)
            .await
            .expect_err("nothing to change");
        assert_eq!(err, VendorError::NotFound);
        assert!(!err.is_vendor_unwell() && !err.is_retryable());
        assert_redacted::<F>(&err, pin_of(&req), Some(&vref), &[]);
        assert_eq!(F::tally(&env.handle).updated, 0);
        Ok(())
    }

    /// `revoke` removes that credential only; a second revoke is `Ok` and sends no delete.
    pub async fn revoke_removes_it_and_a_second_revoke_is_ok<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let keep = request::<F>(0, "key_01HCKEEP");
        let kept = env.adapter.issue(&keep).await?;
        let req = request::<F>(0, "key_01HCREVOKE");
        let vref = env.adapter.issue(&req).await?;
        env.adapter.revoke(&F::device(0), &vref).await?;

        let entries = env.adapter.list(&F::device(0)).await?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].vendor_ref, kept);
        assert!(env.adapter.find(&req).await?.is_none());
        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&keep)]
        );
        F::check_gone(&env.handle, &req);

        env.adapter.revoke(&F::device(0), &vref).await?;
        assert_eq!(F::tally(&env.handle).deleted, 1);
        Ok(())
    }

    /// The issue was applied but its response lost: the error says "try again", and
    /// reconciling before the retry (find, then issue if absent) ends with exactly one.
    pub async fn lost_issue_response_then_find_yields_exactly_one<F: Fixture>() -> Result {
        let env = spawn::<F>();
        env.adapter.health().await?;
        let req = request::<F>(0, "key_01HCLOST");
        F::inject(&env.handle, Fault::LoseResponses);
        let err = env.adapter.issue(&req).await.expect_err("response lost");
        assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
        assert_redacted::<F>(&err, pin_of(&req), None, &[]);
        F::inject(&env.handle, Fault::Clear);
        assert_eq!(F::tally(&env.handle).lost_responses, 1);

        let found = env.adapter.find(&req).await?;
        if F::SINGLE_WRITE_ISSUE {
            assert!(found.is_some(), "the vendor did act");
            assert_eq!(F::tally(&env.handle).created, 1);
        }
        let vref = match found {
            Some(v) => v,
            None => env.adapter.issue(&req).await?,
        };
        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&req)]
        );
        let entries = env.adapter.list(&F::device(0)).await?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].vendor_ref, vref);
        assert_eq!(env.adapter.find(&req).await?, Some(vref));
        Ok(())
    }

    /// Setting a window is idempotent: after a lost update response the retry sets it
    /// again, one object with the new window.
    pub async fn lost_update_response_then_retry_sets_the_window_once<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let mut req = request::<F>(0, "key_01HCUPDLOST");
        let vref = env.adapter.issue(&req).await?;
        req.validity = shifted(&req.validity, 2);
        F::inject(&env.handle, Fault::LoseResponses);
        let err = env.adapter.update(&req, &vref).await.expect_err("lost");
        assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
        assert_redacted::<F>(&err, pin_of(&req), Some(&vref), &[]);
        assert_eq!(F::tally(&env.handle).lost_responses, 1);
        F::inject(&env.handle, Fault::Clear);

        env.adapter.update(&req, &vref).await?;
        let entries = env.adapter.list(&F::device(0)).await?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].vendor_ref, vref);
        assert_eq!(entries[0].valid_from, req.validity.from());
        assert_eq!(entries[0].valid_until, req.validity.until());
        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&req)]
        );
        assert_eq!(F::tally(&env.handle).created, 1);
        Ok(())
    }

    /// A revoke whose response was lost is retried and ends `Ok` with nothing left.
    pub async fn lost_revoke_response_then_retry_is_ok<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let req = request::<F>(0, "key_01HCLOSTDEL");
        let vref = env.adapter.issue(&req).await?;
        F::inject(&env.handle, Fault::LoseResponses);
        let err = env
            .adapter
            .revoke(&F::device(0), &vref)
            .await
            .expect_err("lost");
        assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
        assert_redacted::<F>(&err, pin_of(&req), Some(&vref), &[]);
        F::inject(&env.handle, Fault::Clear);
        env.adapter.revoke(&F::device(0), &vref).await?;
        assert!(F::held(&env.handle, &F::device(0)).is_empty());
        assert!(env.adapter.list(&F::device(0)).await?.is_empty());
        Ok(())
    }

    /// During an outage every call is `Unavailable` (the vendor is unwell, the domain
    /// reads it as unreachable) and nothing changes at the vendor.
    pub async fn outage_is_unavailable_and_changes_nothing<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let req = request::<F>(0, "key_01HCOUTKEEP");
        let vref = env.adapter.issue(&req).await?;
        F::inject(&env.handle, Fault::Outage);

        let other = request::<F>(0, "key_01HCOUT");
        let err = env.adapter.issue(&other).await.expect_err("outage");
        assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
        assert!(err.is_vendor_unwell() && err.is_retryable());
        assert_eq!(err.to_domain_issue(), DomainError::VendorUnreachable);
        assert_redacted::<F>(&err, pin_of(&other), None, &[]);

        let mut moved = req.clone();
        moved.validity = shifted(&req.validity, 1);
        let err = env.adapter.update(&moved, &vref).await.expect_err("outage");
        assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
        assert_redacted::<F>(&err, pin_of(&req), Some(&vref), &[]);

        let err = env
            .adapter
            .revoke(&F::device(0), &vref)
            .await
            .expect_err("outage");
        assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
        assert_eq!(err.to_domain_revoke(), DomainError::VendorUnreachable);
        assert_redacted::<F>(&err, pin_of(&req), Some(&vref), &[]);

        let err = env.adapter.health().await.expect_err("outage");
        assert!(err.is_vendor_unwell(), "{err:?}");

        F::inject(&env.handle, Fault::Clear);
        env.adapter.health().await?;
        assert_eq!(
            F::held(&env.handle, &F::device(0)),
            vec![held_as_issued::<F>(&req)]
        );
        let tally = F::tally(&env.handle);
        assert_eq!((tally.created, tally.updated, tally.deleted), (1, 0, 0));
        assert!(tally.rejected_by_faults >= 4);
        Ok(())
    }

    /// A 500 is the vendor unwell, with the status as the detail.
    pub async fn server_error_is_unavailable<F: Fixture>() -> Result {
        let env = spawn::<F>();
        // Before a token is cached (where the vendor has tokens), then after.
        F::inject(&env.handle, Fault::ServerErrors);
        let err = env.adapter.health().await.expect_err("500");
        assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
        F::inject(&env.handle, Fault::Clear);
        env.adapter.health().await?;
        F::inject(&env.handle, Fault::ServerErrors);
        let err = env.adapter.health().await.expect_err("500");
        assert_eq!(
            err,
            VendorError::Unavailable {
                detail: "http status 500".into()
            }
        );
        let req = request::<F>(0, "key_01HC500");
        let err = env.adapter.issue(&req).await.expect_err("500");
        assert!(err.is_vendor_unwell() && err.is_retryable(), "{err:?}");
        assert_redacted::<F>(&err, pin_of(&req), None, &[]);
        assert!(F::tally(&env.handle).rejected_by_faults >= 3);
        Ok(())
    }

    /// A 429 is `RateLimited` with the vendor's `Retry-After`, and counts against the
    /// vendor; the simulator's per-second limit lets the first calls through.
    pub async fn rate_limit_is_rate_limited_with_retry_after<F: Fixture>() -> Result {
        let env = spawn::<F>();
        env.adapter.health().await?; // a token cached before the limit applies
        F::inject(&env.handle, Fault::RateLimit(0));
        let req = request::<F>(0, "key_01HC429");
        let err = env.adapter.issue(&req).await.expect_err("rate limited");
        assert_eq!(
            err,
            VendorError::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert!(err.is_vendor_unwell() && err.is_retryable());
        assert_redacted::<F>(&err, pin_of(&req), None, &[]);
        assert!(F::tally(&env.handle).rejected_by_faults >= 1);
        assert!(F::held(&env.handle, &F::device(0)).is_empty());

        F::inject(&env.handle, Fault::RateLimit(1));
        let mut limited = 0;
        for i in 0..3 {
            match env
                .adapter
                .issue(&request::<F>(0, &format!("key_01HCRL{i}")))
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    assert!(matches!(e, VendorError::RateLimited { .. }), "{e:?}");
                    limited += 1;
                }
            }
        }
        assert!(limited > 0, "three issues in a second exceed 1/s");
        Ok(())
    }

    /// Wrong credentials are `Auth` (the account's state: not the vendor unwell, not
    /// retried), and the wrong value shows nowhere; nothing is created.
    pub async fn rejected_credentials_are_auth_errors<F: Fixture>() -> Result {
        for (wrong, tweak) in F::bad_credentials() {
            let env = spawn_with::<F>(tweak, Arc::new(SystemClock));
            let req = request::<F>(0, "key_01HCAUTH");
            let err = env.adapter.issue(&req).await.expect_err("auth");
            assert!(matches!(err, VendorError::Auth { .. }), "{wrong}: {err:?}");
            assert!(!err.is_vendor_unwell() && !err.is_retryable());
            assert!(err.is_account_level());
            assert_redacted::<F>(&err, pin_of(&req), None, &[wrong]);
            let err = env.adapter.health().await.expect_err("auth");
            assert!(matches!(err, VendorError::Auth { .. }), "{wrong}: {err:?}");
            assert_redacted::<F>(&err, None, None, &[wrong]);
            assert!(!format!("{:?}", env.adapter).contains(wrong));
            assert!(F::held(&env.handle, &F::device(0)).is_empty());
            assert_eq!(F::tally(&env.handle).created, 0);
            if let Some(tokens) = F::tokens_issued(&env.handle) {
                assert_eq!(tokens, 0, "{wrong}");
            }
        }
        Ok(())
    }

    /// A token the vendor expired is fetched again once, and the call (an issue, an
    /// update) goes through.
    pub async fn expired_token_is_refreshed_transparently<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let mut first = request::<F>(0, "key_01HCTOKEN1");
        let vref = env.adapter.issue(&first).await?;
        if let Some(tokens) = F::tokens_issued(&env.handle) {
            assert_eq!(tokens, 1);
        }
        F::expire_tokens(&env.handle);
        env.adapter
            .issue(&request::<F>(0, "key_01HCTOKEN2"))
            .await?;
        if let Some(tokens) = F::tokens_issued(&env.handle) {
            assert_eq!(tokens, 2);
        }
        assert_eq!(F::tally(&env.handle).created, 2);

        F::expire_tokens(&env.handle);
        first.validity = shifted(&first.validity, 1);
        env.adapter.update(&first, &vref).await?;
        if let Some(tokens) = F::tokens_issued(&env.handle) {
            assert_eq!(tokens, 3);
        }
        let entries = env.adapter.list(&F::device(0)).await?;
        let moved = entries
            .iter()
            .find(|e| e.vendor_ref == vref)
            .expect("still there");
        assert_eq!(moved.valid_from, first.validity.from());
        Ok(())
    }

    /// The token is cached, and fetched again before it expires on our clock.
    pub async fn token_is_fetched_again_before_it_expires_on_our_clock<F: Fixture>() -> Result {
        let clock = ManualClock::new(SystemClock.now());
        let env = spawn_with::<F>(|_| {}, Arc::new(clock.clone()));
        env.adapter.health().await?;
        env.adapter.health().await?;
        let lifetime = chrono::Duration::seconds(F::TOKEN_LIFETIME_SECS.unwrap_or(86_400));
        if F::TOKEN_LIFETIME_SECS.is_some() {
            assert_eq!(
                F::tokens_issued(&env.handle),
                Some(1),
                "the token is cached"
            );
        }
        clock.advance(lifetime);
        env.adapter.health().await?;
        if F::TOKEN_LIFETIME_SECS.is_some() {
            assert_eq!(F::tokens_issued(&env.handle), Some(2));
        }
        Ok(())
    }

    /// A vendor slower than the call timeout is `Unavailable` with "timeout".
    pub async fn slow_vendor_times_out_as_unavailable<F: Fixture>() -> Result {
        let env = spawn_with::<F>(
            |c| F::set_call_timeout(c, Duration::from_millis(300)),
            Arc::new(SystemClock),
        );
        F::inject(&env.handle, Fault::Latency(2_000));
        let err = env.adapter.health().await.expect_err("timeout");
        assert_eq!(
            err,
            VendorError::Unavailable {
                detail: "timeout".into()
            }
        );
        Ok(())
    }

    /// Nothing listening at the vendor's address is the vendor unwell.
    pub async fn unreachable_vendor_is_unavailable<F: Fixture>() -> Result {
        let Env { sim, adapter, .. } = spawn_with::<F>(
            |c| F::set_call_timeout(c, Duration::from_secs(2)),
            Arc::new(SystemClock),
        );
        sim.stop().await?;
        let err = adapter.health().await.expect_err("nothing listens");
        assert!(err.is_vendor_unwell(), "{err:?}");
        Ok(())
    }

    /// Every kind of error an adapter answers renders without a secret, a PIN or a ref.
    pub async fn every_error_kind_renders_without_secrets<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let req = request::<F>(0, "key_01HCRED");
        let vref = env.adapter.issue(&req).await?;
        // A moved window, so that every update writes.
        let mut moved = req.clone();
        moved.validity = shifted(&req.validity, 1);
        let mut errors = Vec::new();
        F::inject(&env.handle, Fault::Outage);
        errors.push(env.adapter.issue(&req).await.expect_err("outage"));
        errors.push(env.adapter.update(&moved, &vref).await.expect_err("outage"));
        F::inject(&env.handle, Fault::Clear);
        F::inject(&env.handle, Fault::RateLimit(0));
        errors.push(
            env.adapter
                .revoke(&F::device(0), &vref)
                .await
                .expect_err("429"),
        );
        errors.push(env.adapter.update(&moved, &vref).await.expect_err("429"));
        F::inject(&env.handle, Fault::Clear);
        F::inject(&env.handle, Fault::LoseResponses);
        errors.push(env.adapter.update(&moved, &vref).await.expect_err("lost"));
        F::inject(&env.handle, Fault::Clear);
        let mut elsewhere = req.clone();
        elsewhere.device = DeviceRef::new(F::UNKNOWN_DEVICE);
        errors.push(env.adapter.issue(&elsewhere).await.expect_err("refused"));
        env.adapter.revoke(&F::device(0), &vref).await?;
        errors.push(env.adapter.update(&req, &vref).await.expect_err("gone"));
        let mut wrong_values = Vec::new();
        for (wrong, tweak) in F::bad_credentials() {
            let bad = spawn_with::<F>(tweak, Arc::new(SystemClock));
            errors.push(bad.adapter.issue(&req).await.expect_err("auth"));
            errors.push(bad.adapter.update(&req, &vref).await.expect_err("auth"));
            wrong_values.push(wrong);
        }

        let kinds: std::collections::BTreeSet<&str> =
            errors.iter().map(VendorError::metric_label).collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            vec![
                "auth",
                "not_found",
                "rate_limited",
                "refused",
                "unavailable"
            ]
        );
        for e in &errors {
            assert_redacted::<F>(e, pin_of(&req), Some(&vref), &wrong_values);
        }
        Ok(())
    }

    /// The adapter names its vendor and capabilities (spec `003` §6.1), and neither it nor
    /// its configuration shows a secret in `Debug`.
    pub async fn identity_and_debug_output_carry_no_secret<F: Fixture>() -> Result {
        let env = spawn::<F>();
        assert_eq!(env.adapter.vendor(), F::VENDOR);
        let caps = env.adapter.capabilities();
        assert_eq!(capability_flags(&caps), F::CAPABILITIES);
        assert!(caps.supports(F::KIND));
        let shown = [
            format!("{:?}", env.adapter),
            format!("{:?}", F::config(&env.sim)),
        ];
        for s in &shown {
            for secret in F::SECRETS {
                assert!(!s.contains(secret), "{s}");
            }
        }
        Ok(())
    }

    /// The health probe (spec `003` §2): a healthy device's reading; an unreachable lock
    /// is `online: false` (no clock), not an error; an unknown device is `NotFound`; an
    /// outage is the vendor unwell.
    pub async fn probe_reads_reachability_and_refuses_unknown_devices<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let p = env.adapter.probe(&F::device(0)).await?;
        assert!(p.online);
        assert_eq!(p.battery_percent, F::HEALTHY_PROBE.battery_percent);
        assert_eq!(p.firmware.as_deref(), F::HEALTHY_PROBE.firmware);
        match p.device_time {
            Some(t) => {
                assert!(F::HEALTHY_PROBE.reads_clock, "{t}");
                let skew = t - SystemClock.now();
                assert!(skew.num_seconds().abs() <= 2, "{skew}");
            }
            None => assert!(!F::HEALTHY_PROBE.reads_clock, "the lock's clock"),
        }

        F::set_online(&env.handle, 0, false);
        let away = env.adapter.probe(&F::device(0)).await?;
        assert!(!away.online);
        assert_eq!(away.device_time, None);
        assert!(env.adapter.probe(&F::device(1)).await?.online);
        F::set_online(&env.handle, 0, true);
        assert!(env.adapter.probe(&F::device(0)).await?.online);

        assert_eq!(
            env.adapter.probe(&DeviceRef::new(F::UNKNOWN_DEVICE)).await,
            Err(VendorError::NotFound)
        );
        F::inject(&env.handle, Fault::Outage);
        let down = env.adapter.probe(&F::device(0)).await;
        assert!(
            matches!(down, Err(ref e) if e.is_vendor_unwell()),
            "{down:?}"
        );
        Ok(())
    }

    /// An issue on a device the vendor does not know is refused (not the vendor unwell)
    /// and creates nothing.
    pub async fn unknown_device_is_refused<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let mut req = request::<F>(0, "key_01HCNODEVICE");
        req.device = DeviceRef::new(F::UNKNOWN_DEVICE);
        let err = env.adapter.issue(&req).await.expect_err("unknown device");
        assert!(is_refused(&err, F::UNKNOWN_DEVICE_CODE), "{err:?}");
        assert!(!err.is_vendor_unwell() && !err.is_retryable());
        assert_redacted::<F>(&err, pin_of(&req), None, &[]);
        assert_eq!(F::tally(&env.handle).created, 0);
        Ok(())
    }

    /// Kinds the adapter does not issue are refused as `unsupported_kind` on issue and on
    /// update, and nothing reaches the vendor.
    pub async fn other_kinds_are_refused_before_any_call<F: Fixture>() -> Result {
        let env = spawn::<F>();
        for kind in F::REFUSED_KINDS {
            let mut req = request::<F>(0, "key_01HCKIND");
            req.kind = *kind;
            req.pin = Some(pin_for(&req.label));
            let err = env.adapter.issue(&req).await.expect_err("unsupported");
            assert!(is_refused(&err, "unsupported_kind"), "{kind:?}: {err:?}");
            assert!(!err.is_vendor_unwell() && !err.is_retryable());
            assert_redacted::<F>(&err, pin_of(&req), None, &[]);
            if F::UPDATE_CHECKS_KIND {
                let some_ref = VendorRef::new("910001");
                let err = env
                    .adapter
                    .update(&req, &some_ref)
                    .await
                    .expect_err("unsupported");
                assert!(is_refused(&err, "unsupported_kind"), "{kind:?}: {err:?}");
            }
        }
        assert!(F::held(&env.handle, &F::device(0)).is_empty());
        let tally = F::tally(&env.handle);
        assert_eq!((tally.created, tally.updated), (0, 0));
        if let Some(tokens) = F::tokens_issued(&env.handle) {
            assert_eq!(tokens, 0, "no call at all");
        }
        Ok(())
    }

    /// A vendor ref no object could have is refused before any call, and not shown.
    pub async fn malformed_vendor_ref_is_refused<F: Fixture>() -> Result {
        let env = spawn::<F>();
        let bad = VendorRef::new(F::MALFORMED_REF);
        let err = env
            .adapter
            .revoke(&F::device(0), &bad)
            .await
            .expect_err("bad ref");
        assert!(is_refused(&err, "invalid_vendor_ref"), "{err:?}");
        assert_redacted::<F>(&err, None, Some(&bad), &[]);
        assert_eq!(F::tally(&env.handle).deleted, 0);
        Ok(())
    }

    /// PIN adapters: a PIN another credential holds on the lock is a `PinCollision` (the
    /// request's failure, not retried as is); a forced one too, and the next try passes.
    pub async fn pin_held_by_another_credential_is_a_collision<F: PinFixture>() -> Result {
        let env = spawn::<F>();
        let first = request::<F>(0, "key_01HCPINA");
        let first_ref = env.adapter.issue(&first).await?;
        let mut twin = request::<F>(0, "key_01HCPINB");
        twin.pin = first.pin.clone();
        let err = env.adapter.issue(&twin).await.expect_err("same pin");
        assert_eq!(err, VendorError::PinCollision);
        assert!(!err.is_vendor_unwell() && !err.is_retryable());
        assert_redacted::<F>(&err, pin_of(&twin), Some(&first_ref), &[]);

        F::force_pin_collision_next(&env.handle);
        let third = request::<F>(0, "key_01HCPINC");
        assert_eq!(
            env.adapter.issue(&third).await.expect_err("forced"),
            VendorError::PinCollision
        );
        let third_ref = env.adapter.issue(&third).await?;
        F::check_stored(&env.handle, &third, &third_ref);
        let mut held = F::held(&env.handle, &F::device(0));
        held.sort_by(|a, b| a.label.cmp(&b.label));
        assert_eq!(
            held,
            vec![held_as_issued::<F>(&first), held_as_issued::<F>(&third)]
        );
        Ok(())
    }
}

/// Expands one `#[tokio::test]` per named behaviour for one fixture.
macro_rules! contract_tests {
    ($fixture:ty; $($behaviour:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() -> anyhow::Result<()> {
                $crate::contract::behaviours::$behaviour::<$fixture>().await
            }
        )+
    };
}

/// The behaviours of every [`LockPort`].
macro_rules! lock_port_behaviours {
    ($fixture:ty) => {
        contract_tests!($fixture;
            issued_credential_is_listed_with_its_window,
            find_by_label_returns_the_issued_ref_and_none_when_absent,
            update_moves_the_window_and_keeps_the_credential,
            update_of_a_revoked_credential_is_not_found,
            revoke_removes_it_and_a_second_revoke_is_ok,
            lost_issue_response_then_find_yields_exactly_one,
            lost_update_response_then_retry_sets_the_window_once,
            lost_revoke_response_then_retry_is_ok,
            outage_is_unavailable_and_changes_nothing,
            server_error_is_unavailable,
            rate_limit_is_rate_limited_with_retry_after,
            rejected_credentials_are_auth_errors,
            expired_token_is_refreshed_transparently,
            token_is_fetched_again_before_it_expires_on_our_clock,
            slow_vendor_times_out_as_unavailable,
            unreachable_vendor_is_unavailable,
            every_error_kind_renders_without_secrets,
            identity_and_debug_output_carry_no_secret,
            probe_reads_reachability_and_refuses_unknown_devices,
            unknown_device_is_refused,
            other_kinds_are_refused_before_any_call,
            malformed_vendor_ref_is_refused,
        );
    };
}

/// The behaviours of a [`LockPort`] that puts PINs on locks ([`PinFixture`]).
macro_rules! pin_behaviours {
    ($fixture:ty) => {
        contract_tests!($fixture; pin_held_by_another_credential_is_a_collision);
    };
}

/// Runs every behaviour of the [`LockPort`] contract against each adapter: one module per
/// adapter (`contract::<name>`), one test per behaviour; `with pin_behaviours` adds those
/// of adapters that put PINs on locks.
macro_rules! lock_port_contract_tests {
    ($($name:ident: $fixture:ty $(, with $extra:ident)*;)+) => {
        $(
            mod $name {
                lock_port_behaviours!($fixture);
                $( $extra!($fixture); )*
            }
        )+
    };
}

lock_port_contract_tests! {
    ttlock: crate::ttlock_adapter::TtlockFixture , with pin_behaviours;
    salto: crate::salto::SaltoFixture , with pin_behaviours;
    vostio: crate::vostio::VostioFixture;
    kisi: crate::kisi::KisiFixture;
    brivo: crate::brivo::BrivoFixture , with pin_behaviours;
}
