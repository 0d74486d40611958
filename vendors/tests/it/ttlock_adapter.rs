//! The TTLock adapter against the simulator over loopback HTTP: what only TTLock does
//! (finding a passcode by its digits, its refusals, paging, its probe readings) and its
//! fixture of the `LockPort` contract (`crate::contract`), which runs the rest.

use lockstep_domain::{DeviceRef, KeyCredentialKind, SystemClock, VendorRef};
use lockstep_vendors::ttlock::Secret;
use lockstep_vendors::{LockPort, TtlockAdapter, VendorError};

use crate::support::{assert_redacted, device, pin_request, shifted, spawn, LOCK};

#[tokio::test]
async fn find_by_digits_needs_the_same_window() -> anyhow::Result<()> {
    let env = spawn();
    let req = pin_request("key_01HDIGITS:24451", "650913");
    let vref = env.adapter.issue(&req).await?;
    // Same digits and window under another name (renamed at the vendor): ours.
    let renamed = pin_request("key_01HRENAMED:24451", "650913");
    assert_eq!(env.adapter.find(&renamed).await?, Some(vref.clone()));
    // Same digits, different window: another guest's PIN, not ours.
    let mut other = pin_request("key_01HGUEST:24451", "650913");
    other.validity = lockstep_domain::ValidityWindow::new(
        req.validity.from() + chrono::Duration::days(10),
        req.validity.until() + chrono::Duration::days(10),
    )?;
    assert!(env.adapter.find(&other).await?.is_none());
    // After a moved window, the digits with the new window are still ours.
    let mut moved = req.clone();
    moved.validity = shifted(&req.validity, 1);
    env.adapter.update(&moved, &vref).await?;
    let mut renamed = moved.clone();
    renamed.label = "key_01HRENAMEDUPD:24451".to_owned();
    assert_eq!(env.adapter.find(&renamed).await?, Some(vref));
    Ok(())
}

#[tokio::test]
async fn update_refuses_bad_refs_without_calling() {
    let env = spawn();
    let req = pin_request("key_01HUPDBAD:24451", "192038");
    let bad_ref = VendorRef::new("not-a-number-kbpwd");
    let err = env
        .adapter
        .update(&req, &bad_ref)
        .await
        .expect_err("bad ref");
    assert!(
        matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"),
        "{err:?}"
    );
    assert_redacted(&err, Some("192038"), Some(&bad_ref));
    // the ref names the kind: a malformed eKey or card ref is refused the same way
    for bad in ["ekey:", "card:12x", "ekey:-"] {
        let err = env
            .adapter
            .update(&req, &VendorRef::new(bad))
            .await
            .expect_err("bad ref");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "invalid_vendor_ref"),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(env.handle.counters().changes, 0);
    assert_eq!(env.handle.counters().tokens_issued, 0);
}

/// TTLock refuses a passcode of consecutive or repeated digits with -2032; the simulator
/// does too (so a generated PIN that is too simple would be seen end to end), and the
/// adapter reports it as a refused PIN, nothing stored.
#[tokio::test]
async fn too_simple_pin_is_refused_as_ttlock_does() -> anyhow::Result<()> {
    let env = spawn();
    for (n, simple) in ["123456", "987654", "777777", "1212", "828282"]
        .into_iter()
        .enumerate()
    {
        let err = env
            .adapter
            .issue(&pin_request(&format!("key_01HS{n}:24451"), simple))
            .await
            .expect_err("too simple");
        assert!(
            matches!(&err, VendorError::Refused { code, .. } if code == "invalid_pin"),
            "{simple}: {err:?}"
        );
        assert_redacted(&err, Some(simple), None);
    }
    assert!(env.handle.passcodes(LOCK).is_empty());
    env.adapter
        .issue(&pin_request("key_01HS9:24451", "828292"))
        .await?;
    assert_eq!(env.handle.passcodes(LOCK).len(), 1);
    Ok(())
}

#[tokio::test]
async fn full_lock_is_refused_not_unwell() {
    let env = spawn();
    let w = crate::support::window();
    for i in 0..250 {
        env.handle.seed_passcode(
            LOCK,
            &format!("{}", 500_000 + i),
            &format!("seed{i}"),
            w.from().timestamp_millis(),
            w.until().timestamp_millis(),
        );
    }
    let err = env
        .adapter
        .issue(&pin_request("key_01HFULL:24451", "987650"))
        .await
        .expect_err("full");
    match &err {
        VendorError::Refused { code, .. } => assert_eq!(code, "storage_full"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_vendor_unwell());
    assert!(matches!(
        err.to_domain_issue(),
        lockstep_domain::DomainError::KeyIssueFailed { .. }
    ));
    assert_redacted(&err, Some("987650"), None);
}

#[tokio::test]
async fn list_pages_through_every_page() -> anyhow::Result<()> {
    let env = spawn();
    let w = crate::support::window();
    for i in 0..230 {
        env.handle.seed_passcode(
            LOCK,
            &format!("{}", 700_000 + i),
            &format!("seed{i}"),
            w.from().timestamp_millis(),
            w.until().timestamp_millis(),
        );
    }
    let entries = env.adapter.list(&device()).await?;
    assert_eq!(entries.len(), 230);
    assert_eq!(env.handle.counters().lists, 2);
    Ok(())
}

/// Drift's view (issue 14): a lock's three lists answer apart, so a failing card list
/// leaves the passcodes and eKeys read, each listing naming its kind; `list` (everything
/// or nothing) fails.
#[tokio::test]
async fn listings_answer_each_of_a_locks_lists_apart() -> anyhow::Result<()> {
    let env = spawn();
    let w = crate::support::window();
    env.handle.seed_passcode(
        LOCK,
        "583920",
        "seeded",
        w.from().timestamp_millis(),
        w.until().timestamp_millis(),
    );
    env.handle
        .update_faults(|f| f.fail_list = Some("cards".into()));
    let listings = env.adapter.listings(&device()).await;
    let kinds: Vec<_> = listings.iter().map(|l| l.kinds.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            vec![KeyCredentialKind::PinCode],
            vec![KeyCredentialKind::MobileApp],
            vec![KeyCredentialKind::RfidCard]
        ]
    );
    assert_eq!(listings[0].entries.as_ref().map(Vec::len).ok(), Some(1));
    assert_eq!(listings[1].entries.as_ref().map(Vec::len).ok(), Some(0));
    assert!(
        matches!(listings[2].entries, Err(ref e) if e.is_vendor_unwell()),
        "{:?}",
        listings[2].entries
    );
    assert!(env.adapter.list(&device()).await.is_err());
    env.handle.update_faults(|f| f.fail_list = None);
    assert!(env
        .adapter
        .listings(&device())
        .await
        .iter()
        .all(|l| l.entries.is_ok()));
    Ok(())
}

/// Spec 003 §2 health probe, TTLock's readings (the rest is the contract's): battery and
/// the lock's clock as `/v3/lock/detail` and `/v3/lock/queryDate` report them; a lock
/// whose gateway is offline keeps the cloud's last battery reading.
#[tokio::test]
async fn probe_reads_a_low_battery_and_clock_skew_and_keeps_the_last_reading() -> anyhow::Result<()>
{
    use lockstep_domain::Clock as _;
    let env = spawn();
    env.handle.update_lock_health(LOCK, |h| {
        h.battery_percent = 12;
        h.clock_skew = chrono::Duration::minutes(7);
    });
    let drifting = env.adapter.probe(&device()).await?;
    assert_eq!(drifting.battery_percent, Some(12));
    let skew = drifting.device_time.expect("the lock's clock") - SystemClock.now();
    assert!((skew.num_seconds() - 420).abs() <= 2, "{skew}");

    env.handle.update_lock_health(LOCK, |h| h.offline = true);
    let away = env.adapter.probe(&device()).await?;
    assert!(!away.online);
    assert_eq!(
        away.battery_percent,
        Some(12),
        "the cloud's last reading stays"
    );
    Ok(())
}

/// TTLock in the `LockPort` contract (`crate::contract`): PIN passcodes on locks
/// `24451`, `24452`, ...
pub struct TtlockFixture;

impl crate::contract::Fixture for TtlockFixture {
    type Handle = lockstep_vendors::ttlock::SimHandle;
    type Config = lockstep_vendors::TtlockConfig;
    type Adapter = TtlockAdapter;

    const VENDOR: lockstep_domain::VendorCode = lockstep_domain::VendorCode::Ttlock;
    const KIND: KeyCredentialKind = KeyCredentialKind::PinCode;
    const CAPABILITIES: &'static [&'static str] = &[
        "mobile_key",
        "card_encoding",
        "pin",
        "remote_revoke",
        "remote_issue",
        "offline_issuance",
    ];
    const REFUSED_KINDS: &'static [KeyCredentialKind] =
        &[KeyCredentialKind::QrCode, KeyCredentialKind::NfcTag];
    const SECRETS: &'static [&'static str] = &[
        lockstep_vendors::ttlock::simulator::SIM_CLIENT_SECRET,
        lockstep_vendors::ttlock::simulator::SIM_PASSWORD,
    ];
    const SINGLE_WRITE_ISSUE: bool = true;
    const FIND_IS_PER_DEVICE: bool = true;
    const UPDATE_CHECKS_KIND: bool = false;
    const UNKNOWN_DEVICE: &'static str = "999999";
    const MALFORMED_REF: &'static str = "not-a-number-kbpwd";
    const UNKNOWN_DEVICE_CODE: &'static str = "lock_not_found";
    const TOKEN_LIFETIME_SECS: Option<i64> = Some(90 * 86_400);
    const HEALTHY_PROBE: crate::contract::ProbeReading = crate::contract::ProbeReading {
        battery_percent: Some(87),
        firmware: Some("6.1.21.0424"),
        reads_clock: true,
    };

    crate::contract::simulator_fixture_fns!(TtlockAdapter, tokens);

    fn start() -> lockstep_vendors::ttlock::RunningSimulator {
        let sim = lockstep_vendors::ttlock::TtlockSimulator::start(crate::support::loopback())
            .expect("simulator binds on loopback");
        for i in 0..crate::contract::DEVICES {
            sim.handle().add_lock(LOCK + i as i64);
        }
        sim
    }

    fn bad_credentials() -> crate::contract::BadCredentials<Self::Config> {
        vec![
            ("wrong-secret-value", |c| {
                c.client_secret = Secret::new("wrong-secret-value")
            }),
            ("wrong-password", |c| {
                c.password = Secret::new("wrong-password")
            }),
        ]
    }

    fn device(i: usize) -> DeviceRef {
        DeviceRef::new((LOCK + i as i64).to_string())
    }

    fn tally(handle: &Self::Handle) -> crate::contract::Tally {
        let c = handle.counters();
        crate::contract::Tally::from([
            c.adds,
            c.changes,
            c.deletes,
            c.lost_responses,
            c.rejected_by_faults,
        ])
    }

    fn set_online(handle: &Self::Handle, device: usize, online: bool) {
        handle.update_lock_health(LOCK + device as i64, |h| h.offline = !online);
    }

    /// A custom passcode (`keyboardPwdType` 3) with the PIN and the label as its name.
    fn check_stored(handle: &Self::Handle, req: &lockstep_vendors::IssueRequest, vref: &VendorRef) {
        let lock: i64 = req.device.expose().parse().expect("a lockId");
        let at_sim = handle.passcodes(lock);
        let p = at_sim
            .iter()
            .find(|p| p.keyboard_pwd_id.to_string() == vref.expose())
            .expect("the passcode");
        assert_eq!(
            Some(p.keyboard_pwd.as_str()),
            req.pin.as_ref().map(|p| p.expose()),
            "the pin is not touched"
        );
        assert_eq!(p.keyboard_pwd_type, 3);
        assert_eq!(p.keyboard_pwd_name, req.label);
    }
}

impl crate::contract::PinFixture for TtlockFixture {
    fn force_pin_collision_next(handle: &Self::Handle) {
        handle.update_faults(|f| f.force_pin_collision_next = 1);
    }
}
