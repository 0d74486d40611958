//! `wrong_secret`: the TTLock adapter starts with a wrong account password (read from a
//! secret file, as in production) while stays are confirmed and cancelled. TTLock refuses
//! the account (errcode 10007): Lockstep must hold the account's work, not fail each
//! guest's key or walk the fallback chain. Mid-run the operator fixes the file; the
//! account is probed again (`[breaker] account_probe_ms`, 2 s here), and every held key
//! goes out with the policy's preferred kind, removals first.
//!
//! Figures: `held_after` (wall seconds from the first stay to the account held),
//! `fixed_after`, and the usual invariants (a fallback kind would be `wrong_kind`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check::Figures;
use crate::rig::{now, Rig};
use crate::scenarios::Spec;
use crate::vendors::Vendor;
use crate::world::LoadPlan;

const HELD: &str = "lockstep_vendor_accounts_held{vendor=\"ttlock\"}";

/// Runs it (TTLock: its password is one of the secrets a hotel rotates by hand).
pub async fn run(spec: &Spec) -> anyhow::Result<Figures> {
    let profile = spec.profile;
    let secret_file = std::env::temp_dir().join(format!(
        "lockstep-chaos-ttlock-password-{}",
        ulid::Ulid::new()
    ));
    std::fs::write(&secret_file, "not-the-password")?;
    let right = Arc::new(Mutex::new(None::<String>));
    let mut options = spec.options_or("wrong_secret", &[Vendor::Ttlock]);
    options.vendors = vec![Vendor::Ttlock];
    {
        let (right, file) = (right.clone(), secret_file.clone());
        options.configure = Some(Arc::new(move |_, cfg| {
            cfg.breaker.account_probe_ms = Some(2_000);
            let mut toml = String::new();
            for line in cfg.properties_toml.lines() {
                match line
                    .strip_prefix("password = { value = \"")
                    .and_then(|r| r.strip_suffix("\" }"))
                {
                    Some(value) => {
                        if let Ok(mut r) = right.lock() {
                            *r = Some(value.to_owned());
                        }
                        toml.push_str(&format!("password = {{ file = \"{}\" }}", file.display()));
                    }
                    None => toml.push_str(line),
                }
                toml.push('\n');
            }
            cfg.properties_toml = toml;
        }));
    }
    let result = play(options, &right, &secret_file, profile).await;
    let _ = std::fs::remove_file(&secret_file);
    result
}

async fn play(
    options: crate::rig::RigOptions,
    right: &Mutex<Option<String>>,
    secret_file: &std::path::Path,
    profile: super::Profile,
) -> anyhow::Result<Figures> {
    let mut rig = Rig::start(options).await?;
    let right =
        right.lock().ok().and_then(|r| r.clone()).ok_or_else(|| {
            anyhow::anyhow!("the TTLock adapter's password was not in the config")
        })?;
    let progress = rig.progress();
    rig.fault();
    let started = Instant::now();
    let load = rig.world.spawn_load(LoadPlan::standard(
        profile.pick(150, 600),
        profile.pick(6.0, 8.0),
    ));
    let mut failures = Vec::new();
    let held_after = loop {
        if rig.nodes[0].metric(HELD).await == Some(1.0) {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures.push("the account was never held".to_owned());
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // the front desk calls; someone finds the typo in the secret file
    tokio::time::sleep(Duration::from_secs(profile.pick(15, 60))).await;
    std::fs::write(secret_file, &right)?;
    let fixed_after = started.elapsed();
    let healed_at = now();
    load.finish().await?;
    let c = rig
        .converge(Instant::now(), profile.converge_timeout())
        .await;
    progress.stop().await;
    let mut f = rig.figures("wrong_secret", c, healed_at, false).await;
    if rig.nodes[0].metric(HELD).await != Some(0.0) {
        failures.push("the account is still held after the fix".to_owned());
    }
    f.extra.push((
        "held_after".into(),
        held_after.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64())),
    ));
    f.extra.push((
        "fixed_after".into(),
        format!("{:.1}s", fixed_after.as_secs_f64()),
    ));
    f.failures.extend(failures);
    super::note_panics(&rig, &mut f);
    Ok(f)
}
