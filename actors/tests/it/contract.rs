//! Issue 5, point 1: one contract suite run against every adapter/simulator pair, through
//! the real vendor worker: issue, update, revoke; a lost response then a retry leaves
//! exactly one credential at the vendor; a 429 storm sends no request over the limit; an
//! outage is a typed error the breaker sees.
#![allow(clippy::disallowed_methods)] // test deadlines are wall-clock

use std::any::Any;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use lockstep_actors::{
    AdapterInfo, Metrics, PortRegistry, RateLimit, VendorDeps, VendorOp, VendorReply,
    WorkerSettings,
};
use lockstep_domain::breaker::BreakerPolicy;
use lockstep_domain::{
    Clock, DeviceRef, KeyCredentialKind, Pin, PropertyId, SystemClock, TenantId, ValidityWindow,
    VendorAdapterId, VendorRef,
};
use lockstep_persistence::testing::{test_cipher, TempSqlite};
use lockstep_vendors::{
    brivo, kisi, salto, ttlock, vostio, CardNumber, IssueRequest, LockPort, VendorError,
};

mod wiegand;

type Faults = Box<dyn Fn(bool, f64, Option<u32>)>;

/// One adapter with its simulator and a device there.
struct Pair {
    name: &'static str,
    port: Arc<dyn LockPort>,
    device: DeviceRef,
    kind: KeyCredentialKind,
    /// (outage, lose_response_rate, rate_limit_per_sec)
    faults: Faults,
    /// The label of a test's credential: the base itself, or (where the vendor needs a real
    /// credential id, like a desk's encode job) a `key_` id derived from it.
    label: fn(&str) -> String,
    _sim: Box<dyn Any>,
}

fn plain_label(base: &str) -> String {
    base.to_owned()
}

/// A `key_` id derived from `base`, the same every time.
fn credential_label(base: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, base).hash(&mut h);
        h.finish()
    };
    let bits = (u128::from(half(1)) << 64 | u128::from(half(2))) >> 2;
    lockstep_domain::KeyCredentialId::from_ulid(ulid::Ulid(bits))
        .as_str()
        .to_owned()
}

fn pairs() -> anyhow::Result<Vec<Pair>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let any = || "127.0.0.1:0".parse().expect("an address");
    let mut v = Vec::new();

    // TTLock three times: passcodes, eKeys (mobile keys) and IC cards
    for (name, kind) in [
        ("ttlock", KeyCredentialKind::PinCode),
        ("ttlock-ekey", KeyCredentialKind::MobileApp),
        ("ttlock-card", KeyCredentialKind::RfidCard),
    ] {
        let s = ttlock::TtlockSimulator::start(any())?;
        s.handle().add_lock(1);
        let h = s.handle();
        v.push(Pair {
            name,
            port: Arc::new(lockstep_vendors::TtlockAdapter::new(
                s.default_adapter_config(),
                clock.clone(),
            )?),
            device: DeviceRef::new("1"),
            kind,
            label: plain_label,
            faults: Box::new(move |o, l, r| {
                h.update_faults(|f| {
                    f.outage = o;
                    f.lose_response_rate = l;
                    f.rate_limit_per_sec = r;
                })
            }),
            _sim: Box::new(s),
        });
    }

    let s = salto::SaltoSimulator::start(any())?;
    s.handle().add_lock("lock-1");
    let h = s.handle();
    v.push(Pair {
        name: "salto",
        port: Arc::new(salto::SaltoAdapter::new(
            s.default_adapter_config(),
            clock.clone(),
        )?),
        device: DeviceRef::new("lock-1"),
        kind: KeyCredentialKind::PinCode,
        label: plain_label,
        faults: Box::new(move |o, l, r| {
            h.update_faults(|f| {
                f.outage = o;
                f.lose_response_rate = l;
                f.rate_limit_per_sec = r;
            })
        }),
        _sim: Box::new(s),
    });

    let s = vostio::VostioSimulator::start(any())?;
    let cfg = s.default_adapter_config();
    s.handle().add_door(&cfg.environment_ref, "door-1");
    let h = s.handle();
    v.push(Pair {
        name: "vostio",
        port: Arc::new(vostio::VostioAdapter::new(cfg, clock.clone())?),
        device: DeviceRef::new("door-1"),
        kind: KeyCredentialKind::MobileApp,
        label: plain_label,
        faults: Box::new(move |o, l, r| {
            h.update_faults(|f| {
                f.outage = o;
                f.lose_response_rate = l;
                f.rate_limit_per_sec = r;
            })
        }),
        _sim: Box::new(s),
    });

    let s = kisi::KisiSimulator::start(any())?;
    s.handle().add_group_lock(1, 10);
    let h = s.handle();
    v.push(Pair {
        name: "kisi",
        port: Arc::new(kisi::KisiAdapter::new(
            s.default_adapter_config(),
            clock.clone(),
        )?),
        device: DeviceRef::new("1:10"),
        kind: KeyCredentialKind::MobileApp,
        label: plain_label,
        faults: Box::new(move |o, l, r| {
            h.update_faults(|f| {
                f.outage = o;
                f.lose_response_rate = l;
                f.rate_limit_per_sec = r;
            })
        }),
        _sim: Box::new(s),
    });

    let s = brivo::BrivoSimulator::start(any())?;
    s.handle().add_access_point(100);
    let h = s.handle();
    v.push(Pair {
        name: "brivo",
        port: Arc::new(brivo::BrivoAdapter::new(s.default_adapter_config(), clock)?),
        device: DeviceRef::new("100"),
        kind: KeyCredentialKind::PinCode,
        label: plain_label,
        faults: Box::new(move |o, l, r| {
            h.update_faults(|f| {
                f.outage = o;
                f.lose_response_rate = l;
                f.rate_limit_per_sec = r;
            })
        }),
        _sim: Box::new(s),
    });
    Ok(v)
}

fn request(p: &Pair, label: &str, n: u32, days: i64) -> IssueRequest {
    let from = SystemClock.now() + chrono::Duration::days(2);
    IssueRequest {
        device: p.device.clone(),
        kind: p.kind,
        label: label.to_owned(),
        pin: (p.kind == KeyCredentialKind::PinCode)
            .then(|| Pin::parse(&format!("{}", 300_000 + n)).expect("six digits")),
        card_number: (p.kind == KeyCredentialKind::RfidCard)
            .then(|| CardNumber::parse(&format!("{}", 3_661_413_000 + n)).expect("digits")),
        validity: ValidityWindow::new(from, from + chrono::Duration::days(days)).expect("a window"),
    }
}

async fn held(p: &Pair, label: &str) -> anyhow::Result<usize> {
    Ok(p.port
        .list(&p.device)
        .await?
        .iter()
        .filter(|e| e.label == label)
        .count())
}

#[actix_rt::test]
async fn every_adapter_honours_the_lock_port_contract() -> anyhow::Result<()> {
    let db = TempSqlite::new();
    let store: Arc<dyn lockstep_persistence::Store> = Arc::new(db.open(test_cipher()).await?);
    let mut all = pairs()?;
    all.push(wiegand::pair(store.clone()).await?);
    for (i, p) in all.iter().enumerate() {
        let name = p.name;
        // issue → update → revoke (twice)
        let label = (p.label)(&format!("key_contract_{name}"));
        let req = request(p, &label, 0, 1);
        let vref: VendorRef = p
            .port
            .issue(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: issue: {e}"))?;
        assert_eq!(held(p, &label).await?, 1, "{name}: issued");
        let longer = request(p, &label, 0, 3);
        p.port
            .update(&longer, &vref)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: update: {e}"))?;
        let entry = p
            .port
            .list(&p.device)
            .await?
            .into_iter()
            .find(|e| e.label == label)
            .expect("still held");
        assert_eq!(
            entry.valid_until.timestamp() / 60,
            longer.validity.until().timestamp() / 60,
            "{name}: the window moved"
        );
        p.port
            .revoke(&p.device, &vref)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: revoke: {e}"))?;
        assert_eq!(held(p, &label).await?, 0, "{name}: revoked");
        p.port
            .revoke(&p.device, &vref)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: second revoke: {e}"))?;

        // a lost response, then the retry reconciles: exactly one at the vendor
        let label = (p.label)(&format!("key_lost_{name}"));
        let req = request(p, &label, 1, 1);
        (p.faults)(false, 1.0, None);
        assert!(
            p.port.issue(&req).await.is_err(),
            "{name}: the answer was lost"
        );
        (p.faults)(false, 0.0, None);
        let found = p
            .port
            .find(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: find: {e}"))?;
        let found = match found {
            Some(v) => v,
            None => p
                .port
                .issue(&req)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: reissue: {e}"))?,
        };
        assert_eq!(
            held(p, &label).await?,
            1,
            "{name}: exactly one after the retry"
        );
        p.port.revoke(&p.device, &found).await?;

        // a 429 storm through the worker: the vendor allows 30 requests a second, the account
        // is configured at 20 a second. Salto, Kisi and Brivo make several requests per
        // operation (token, lookup, create, assign): the limit is taken per request.
        let metrics = Metrics::new();
        let ports = PortRegistry::default();
        let adapter = VendorAdapterId::generate();
        let deps = VendorDeps {
            clock: Arc::new(SystemClock),
            store: store.clone(),
            metrics: metrics.clone(),
            worker: WorkerSettings {
                rate: RateLimit::PerMinute(NonZeroU32::new(1200).expect("non-zero")),
                ..WorkerSettings::simulator()
            },
            breaker: BreakerPolicy {
                min_calls: 5,
                ..BreakerPolicy::default()
            },
        };
        let info = AdapterInfo {
            id: adapter.clone(),
            tenant_id: TenantId::generate(),
            property_id: PropertyId::parse("ppt_contract")?,
            environment: format!("sandbox-{i}"),
            enabled: true,
            precedence: 100,
        };
        ports.insert(info, p.port.clone(), &deps);
        (p.faults)(false, 0.0, Some(30));
        #[allow(clippy::disallowed_methods)]
        let storm_started = std::time::Instant::now();
        let storm: Vec<_> = (0..25)
            .map(|n| {
                let (ports, adapter, req) = (
                    ports.clone(),
                    adapter.clone(),
                    request(
                        p,
                        &(p.label)(&format!("key_storm_{name}_{n:02}")),
                        100 + n,
                        1,
                    ),
                );
                async move { ports.call(&adapter, VendorOp::Issue(req)).await }
            })
            .collect();
        let results = futures_util::future::join_all(storm).await;
        let rate_limited = results
            .iter()
            .filter(|r| matches!(r, Err(VendorError::RateLimited { .. })))
            .count();
        assert_eq!(
            rate_limited, 0,
            "{name}: no request over the vendor's limit"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(VendorReply::Issued(_)))),
            "{name}: every storm call succeeded"
        );
        println!(
            "contract: {name}: 25 issues under 20 requests/s in {:.1} s",
            storm_started.elapsed().as_secs_f64()
        );
        (p.faults)(false, 0.0, None);

        // an outage is a typed error that counts against the vendor: the breaker opens and
        // then answers at once
        (p.faults)(true, 0.0, None);
        // 24 failures over the 25 storm successes still in the window: surely above 25 %
        // (the lower bound of the 99.9 % interval is 0.29; 16 failures, a raw 39 %, are not)
        for n in 0..24 {
            let r = ports
                .call(
                    &adapter,
                    VendorOp::Issue(request(
                        p,
                        &(p.label)(&format!("key_out_{name}_{n}")),
                        200 + n,
                        1,
                    )),
                )
                .await;
            // the vendor's own answer is Unavailable; once the breaker opened, the gate in
            // front of it answers at once, without sending (V-3: `circuit_open`, then
            // `removals_first` for new credentials until the account's removals are done)
            assert!(
                matches!(r, Err(ref e) if e.is_vendor_unwell()
                    || matches!(e, VendorError::NotSent { .. })),
                "{name}: outage is Unavailable: {r:?}"
            );
        }
        let text = prometheus::TextEncoder::new().encode_to_string(&metrics.registry.gather())?;
        assert!(
            text.lines()
                .any(|l| l.starts_with("lockstep_vendor_breaker_state{")
                    && l.contains("state=\"open\"")
                    && l.ends_with(" 1")),
            "{name}: the breaker saw the outage"
        );
        assert!(
            text.contains("outcome=\"circuit_open\""),
            "{name}: calls answered at once while open"
        );
        (p.faults)(false, 0.0, None);
        println!("contract: {name} ok");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// DESIGN §6: a vendor account shared by properties served on different nodes has one
/// limit, through the store's GCRA row. Two "nodes" (two registries, each with its own
/// store connection) serve one TTLock account each through its own adapter; the vendor
/// allows 15 requests a second and the account is configured at 10. Each node alone would
/// send 10 a second, 20 together: without the shared row the vendor answers 429.
#[actix_rt::test]
async fn an_account_shared_by_two_nodes_keeps_one_limit() -> anyhow::Result<()> {
    let db = lockstep_persistence::testing::fresh_pg_database().await?;
    let sim = ttlock::TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_lock(1);
    let tenant = TenantId::generate();
    let mut nodes = Vec::new();
    for node in 0..2 {
        let store: Arc<dyn lockstep_persistence::Store> =
            Arc::new(db.connect_store(test_cipher(), 4).await?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let port: Arc<dyn LockPort> = Arc::new(lockstep_vendors::TtlockAdapter::new(
            sim.default_adapter_config(),
            clock.clone(),
        )?);
        let ports = PortRegistry::default();
        let adapter = VendorAdapterId::generate();
        let deps = VendorDeps {
            clock,
            store,
            metrics: Metrics::new(),
            worker: WorkerSettings {
                rate: RateLimit::PerMinute(NonZeroU32::new(600).expect("non-zero")),
                ..WorkerSettings::simulator()
            },
            breaker: BreakerPolicy::default(),
        };
        ports.insert(
            AdapterInfo {
                id: adapter.clone(),
                tenant_id: tenant,
                property_id: PropertyId::parse(&format!("ppt_node{node}"))?,
                environment: "sandbox".into(),
                enabled: true,
                precedence: 100,
            },
            port,
            &deps,
        );
        nodes.push((ports, adapter));
    }
    sim.handle()
        .update_faults(|f| f.rate_limit_per_sec = Some(15));
    let from = SystemClock.now() + chrono::Duration::days(2);
    let calls: Vec<_> = (0..40u32)
        .map(|n| {
            let (ports, adapter) = nodes[(n % 2) as usize].clone();
            let req = IssueRequest {
                device: DeviceRef::new("1"),
                kind: KeyCredentialKind::PinCode,
                label: format!("key_shared_{n:02}"),
                pin: Some(Pin::parse(&format!("{}", 400_000 + n)).expect("six digits")),
                card_number: None,
                validity: ValidityWindow::new(from, from + chrono::Duration::days(1))
                    .expect("a window"),
            };
            async move { ports.call(&adapter, VendorOp::Issue(req)).await }
        })
        .collect();
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all(calls).await;
    let elapsed = started.elapsed().as_secs_f64();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(VendorError::RateLimited { .. })))
        .count();
    println!("shared limit: 40 issues from two nodes in {elapsed:.1} s, {limited} answered 429");
    assert_eq!(limited, 0, "no request over the vendor's limit");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(VendorReply::Issued(_)))),
        "every call succeeded: {results:?}"
    );
    Ok(())
}
