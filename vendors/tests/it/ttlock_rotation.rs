//! Issue 5, point 4 (US-MEL-0081): secrets rotated while 1,000 issuances run; zero
//! failures. The new secret is picked up without a restart, the old one is rejected after
//! the overlap, and no request fails.

use std::sync::Arc;

use chrono::Duration;
use futures_util::stream::{self, StreamExt};
use lockstep_domain::{Clock, DeviceRef, KeyCredentialKind, Pin, SystemClock, ValidityWindow};
use lockstep_vendors::secrets::{MemorySecrets, SecretRef};
use lockstep_vendors::ttlock::simulator::{
    SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_PASSWORD, SIM_USERNAME,
};
use lockstep_vendors::ttlock::{RotatingSecrets, SimAccount, TtlockSimulator};
use lockstep_vendors::{IssueRequest, LockPort, TtlockAdapter};

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
    let start = clock.now() + Duration::days(1);

    let results: Vec<Result<(), String>> = stream::iter(0..N)
        .map(|i| {
            let (adapter, sim, store) = (adapter.clone(), sim.handle(), store.clone());
            async move {
                if i == 300 {
                    // rotation begins: the vendor accepts the new secret too, and the
                    // secret store now holds it
                    sim.add_account(SimAccount::new(
                        SIM_CLIENT_ID,
                        "sim-client-secret-2",
                        SIM_USERNAME,
                        SIM_PASSWORD,
                    ));
                    store.set("client_secret", "sim-client-secret-2");
                }
                if i == 600 {
                    // overlap over: the old secret is rejected and every token it got dies
                    sim.remove_accounts_with_secret(SIM_CLIENT_SECRET);
                    sim.expire_all_tokens();
                }
                let from = start + Duration::hours(i as i64 % 24);
                let req = IssueRequest {
                    device: DeviceRef::new(((i % 4) + 1).to_string()),
                    kind: KeyCredentialKind::PinCode,
                    label: format!("key_rotation_{i:04}"),
                    pin: Some(Pin::parse(&format!("{}", 100_000 + i)).expect("six digits")),
                    validity: ValidityWindow::new(from, from + Duration::hours(20))
                        .expect("valid window"),
                };
                adapter
                    .issue(&req)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{i}: {e}"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {N} issuances failed during rotation: {failures:?}",
        failures.len()
    );
    assert_eq!(sim.handle().all_passcodes().len(), N);
    let tokens = sim.handle().counters().tokens_issued;
    assert!(
        tokens >= 2,
        "a new token was fetched with the rotated secret ({tokens} tokens)"
    );
    // and the old secret is really gone: a fresh adapter with it is refused
    let mut old = sim.default_adapter_config();
    old.call_timeout = std::time::Duration::from_secs(5);
    let stale = TtlockAdapter::new(old, clock)?;
    assert!(
        matches!(
            stale.health().await,
            Err(lockstep_vendors::VendorError::Auth { .. })
        ),
        "the old secret is rejected"
    );
    println!("rotation: {N} issuances, 0 failures, {tokens} tokens fetched");
    Ok(())
}
