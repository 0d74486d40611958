//! Issue 5, point 4 (US-MEL-0081): secrets rotated while issuances run; zero failures.
//! The new secret is picked up without a restart, the old one is rejected after the
//! overlap, and no request fails: TTLock (1,000 issuances; password grant), Kisi (an API
//! key in every request) and Vostio (OAuth client credentials). Salto and Brivo read their
//! secrets through the same `SecretRefs` at each token fetch and request.

use std::sync::Arc;

use chrono::Duration;
use futures_util::stream::{self, StreamExt};
use lockstep_domain::{Clock, DeviceRef, KeyCredentialKind, Pin, SystemClock, ValidityWindow};
use lockstep_vendors::secrets::{MemorySecrets, SecretRef, SecretRefs};
use lockstep_vendors::ttlock::simulator::{
    SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_USERNAME,
};
use lockstep_vendors::ttlock::{RotatingSecrets, SimAccount, TtlockSimulator};
use lockstep_vendors::{IssueRequest, LockPort, TtlockAdapter, VendorError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotated_while_a_thousand_issuances_run_fail_none() -> anyhow::Result<()> {
    const N: usize = 1000;
    let sim = TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    for lock in 1..=4 {
        sim.handle().add_lock(lock);
    }
    let store = Arc::new(MemorySecrets::default());
    store.set("client_secret", SIM_CLIENT_SECRET);
    store.set("password", SIM_PASSWORD);
    let mut cfg = sim.default_adapter_config();
    cfg.rotating = Some(RotatingSecrets {
        client_secret: SecretRef::Shared(store.clone(), "client_secret".into()),
        password: SecretRef::Shared(store.clone(), "password".into()),
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let adapter = Arc::new(TtlockAdapter::new(cfg, clock.clone())?);
    let (handle, secrets) = (sim.handle(), store.clone());
    let failures = credentials_while(
        adapter,
        KeyCredentialKind::PinCode,
        N,
        &["1", "2", "3", "4"],
        ("rotation", 16),
        move |i| {
            if i == 300 {
                // rotation begins: the vendor accepts the new secret too, and the
                // secret store now holds it
                handle.add_account(SimAccount::new(
                    SIM_CLIENT_ID,
                    "sim-client-secret-2",
                    SIM_USERNAME,
                    SIM_PASSWORD,
                ));
                secrets.set("client_secret", "sim-client-secret-2");
            }
            if i == 600 {
                // overlap over: the old secret is rejected and every token it got dies
                handle.remove_accounts_with_secret(SIM_CLIENT_SECRET);
                handle.expire_all_tokens();
            }
        },
    )
    .await;
    let tokens = sim.handle().counters().tokens_issued;
    assert!(
        tokens >= 2,
        "a new token was fetched with the rotated secret ({tokens} tokens)"
    );
    // and the old secret is really gone: a fresh adapter with it is refused
    let mut old = sim.default_adapter_config();
    old.call_timeout = std::time::Duration::from_secs(5);
    let stale = TtlockAdapter::new(old, clock)?;
    let held = sim.handle().all_passcodes().len();
    assert_rotated("ttlock", N, &failures, held, stale.health().await.map(drop));
    Ok(())
}

/// The same for an API-key vendor (Kisi: the key goes in every request's header): 300
/// issuances, the key rotated after 100 and the old one retired after 200; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kisi_api_key_rotated_mid_run_fails_nothing() -> anyhow::Result<()> {
    use lockstep_vendors::kisi::{self, simulator::SIM_API_KEY};
    const N: usize = 300;
    const NEW: &str = "kisi-api-key-rotated-7f3a";
    let sim = kisi::KisiSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_group_lock(1, 10);
    let (store, refs) = shared_secret("api_key", SIM_API_KEY);
    let mut cfg = sim.default_adapter_config();
    cfg.secret_refs = refs;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let adapter = Arc::new(kisi::KisiAdapter::new(cfg, clock.clone())?);
    let (handle, secrets) = (sim.handle(), store.clone());
    let failures = mobile_keys_while(adapter, N, "1:10", "kisi_rotation", move |i| {
        if i == 100 {
            handle.add_api_key(NEW);
            secrets.set("api_key", NEW);
        }
        if i == 200 {
            handle.remove_api_key(SIM_API_KEY);
        }
    })
    .await;
    let held = sim.handle().role_assignments(1).len();
    let stale = kisi::KisiAdapter::new(sim.default_adapter_config(), clock)?;
    assert_rotated(
        "kisi",
        N,
        &failures,
        held,
        stale.list(&DeviceRef::new("1:10")).await.map(drop),
    );
    Ok(())
}

/// And for an OAuth client-credentials vendor (Vostio: the client secret is read at each
/// token fetch): the secret rotated after 100 issuances, the old one retired (and its
/// tokens revoked) after 200; none of 300 fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vostio_client_secret_rotated_mid_run_fails_nothing() -> anyhow::Result<()> {
    use lockstep_vendors::vostio::{self, SimClient};
    const N: usize = 300;
    const NEW: &str = "vostio-client-secret-rotated-51c0";
    let sim = vostio::VostioSimulator::start("127.0.0.1:0".parse()?)?;
    let mut cfg = sim.default_adapter_config();
    sim.handle().add_door(&cfg.environment_ref, "door-1");
    let old_secret = cfg.client_secret.expose().to_owned();
    let client_id = cfg.client_id.expose().to_owned();
    let (store, refs) = shared_secret("client_secret", &old_secret);
    cfg.secret_refs = refs;
    let env_ref = cfg.environment_ref.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let adapter = Arc::new(vostio::VostioAdapter::new(cfg, clock.clone())?);
    let (handle, secrets, env) = (sim.handle(), store.clone(), env_ref.clone());
    let failures = mobile_keys_while(adapter, N, "door-1", "vostio_rotation", move |i| {
        if i == 100 {
            handle.add_client(SimClient::new(client_id.clone(), NEW, vec![env.clone()]));
            secrets.set("client_secret", NEW);
        }
        if i == 200 {
            handle.remove_clients_with_secret(&old_secret);
            handle.expire_all_tokens();
        }
    })
    .await;
    let held = sim.handle().keys_on_door(&env_ref, "door-1").len();
    let stale = vostio::VostioAdapter::new(sim.default_adapter_config(), clock)?;
    assert_rotated("vostio", N, &failures, held, stale.health().await.map(drop));
    Ok(())
}

/// A secret store holding `name`, and the refs an adapter reads it through at each use.
fn shared_secret(name: &str, value: &str) -> (Arc<MemorySecrets>, SecretRefs) {
    let store = Arc::new(MemorySecrets::default());
    store.set(name, value);
    let refs = SecretRefs::default().with(name, SecretRef::Shared(store.clone(), name.into()));
    (store, refs)
}

/// Asserts a rotation's outcome: none of the `n` issuances failed, the vendor holds all
/// `n` (`held`), and a fresh adapter on the old secret is refused (`stale`: its answer).
fn assert_rotated(
    vendor: &str,
    n: usize,
    failures: &[String],
    held: usize,
    stale: Result<(), VendorError>,
) {
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(held, n);
    assert!(
        matches!(stale, Err(VendorError::Auth { .. })),
        "the old secret is rejected"
    );
    println!("{vendor} rotation: {n} issuances, 0 failures");
}

/// Issues `n` mobile keys on `device` through `adapter`, eight at a time, running
/// `step(i)` (the rotation's steps) before issuance `i`; returns the failures.
async fn mobile_keys_while(
    adapter: Arc<dyn LockPort>,
    n: usize,
    device: &str,
    label: &str,
    step: impl Fn(usize) + Clone,
) -> Vec<String> {
    credentials_while(
        adapter,
        KeyCredentialKind::MobileApp,
        n,
        &[device],
        (label, 8),
        step,
    )
    .await
}

/// Like [`mobile_keys_while`], for `kind` (PINs get distinct digits), issuance `i` on
/// `devices[i % devices.len()]`, labelled `key_<label>_<i>`, `in_flight` at a time.
async fn credentials_while(
    adapter: Arc<dyn LockPort>,
    kind: KeyCredentialKind,
    n: usize,
    devices: &[&str],
    (label, in_flight): (&str, usize),
    step: impl Fn(usize) + Clone,
) -> Vec<String> {
    let start = SystemClock.now() + Duration::days(1);
    let results: Vec<Result<(), String>> = stream::iter(0..n)
        .map(|i| {
            let (adapter, step) = (adapter.clone(), step.clone());
            let from = start + Duration::hours(i as i64 % 24);
            let req = IssueRequest {
                device: DeviceRef::new(devices[i % devices.len()]),
                kind,
                label: format!("key_{label}_{i:04}"),
                pin: (kind == KeyCredentialKind::PinCode)
                    .then(|| Pin::parse(&format!("{}", 100_000 + i)).expect("six digits")),
                card_number: None,
                validity: ValidityWindow::new(from, from + Duration::hours(20))
                    .expect("valid window"),
            };
            async move {
                step(i);
                adapter
                    .issue(&req)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{i}: {e}"))
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().filter_map(Result::err).collect()
}

/// Salto KS (password grant with HTTP Basic client credentials; the client secret read at
/// each token fetch): rotated after 100 of 300 issuances, the old secret retired and its
/// tokens revoked after 200; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salto_client_secret_rotated_mid_run_fails_nothing() -> anyhow::Result<()> {
    use lockstep_vendors::salto;
    const N: usize = 300;
    const NEW: &str = "salto-client-secret-rotated-7e11";
    let sim = salto::SaltoSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_lock("lock-1");
    let mut cfg = sim.default_adapter_config();
    let (store, refs) = shared_secret("client_secret", cfg.client_secret.expose());
    cfg.secret_refs = refs;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let adapter = Arc::new(salto::SaltoAdapter::new(cfg, clock.clone())?);
    let (handle, secrets) = (sim.handle(), store.clone());
    let failures = mobile_keys_while(adapter, N, "lock-1", "salto_rotation", move |i| {
        if i == 100 {
            handle.accept_client_secret(NEW);
            secrets.set("client_secret", NEW);
        }
        if i == 200 {
            handle.retire_configured_client_secret();
            handle.expire_all_tokens();
        }
    })
    .await;
    let held = sim.handle().access_groups().len();
    let stale = salto::SaltoAdapter::new(sim.default_adapter_config(), clock)?;
    assert_rotated("salto", N, &failures, held, stale.health().await.map(drop));
    Ok(())
}

/// Brivo (OAuth2 password grant, client secret in HTTP Basic): the same rotation, on PINs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brivo_client_secret_rotated_mid_run_fails_nothing() -> anyhow::Result<()> {
    use lockstep_vendors::brivo;
    const N: usize = 300;
    const NEW: &str = "brivo-client-secret-rotated-3d40";
    let sim = brivo::BrivoSimulator::start("127.0.0.1:0".parse()?)?;
    sim.handle().add_access_point(100);
    let mut cfg = sim.default_adapter_config();
    let old = brivo::simulator::SIM_CLIENT_SECRET;
    let (store, refs) = shared_secret("client_secret", old);
    cfg.secret_refs = refs;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let adapter = Arc::new(brivo::BrivoAdapter::new(cfg, clock.clone())?);
    let (handle, secrets) = (sim.handle(), store.clone());
    let failures = credentials_while(
        adapter,
        KeyCredentialKind::PinCode,
        N,
        &["100"],
        ("brivo_rotation", 8),
        move |i| {
            if i == 100 {
                handle.accept_client_secret(NEW);
                secrets.set("client_secret", NEW);
            }
            if i == 200 {
                handle.retire_client_secret(old);
                handle.expire_all_tokens();
            }
        },
    )
    .await;
    let held = sim.handle().users_on(100).len();
    let stale = brivo::BrivoAdapter::new(sim.default_adapter_config(), clock)?;
    assert_rotated("brivo", N, &failures, held, stale.health().await.map(drop));
    Ok(())
}
