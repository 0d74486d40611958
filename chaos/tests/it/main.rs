//! The chaos crate's integration tests: its infrastructure (own Postgres, own RabbitMQ node,
//! fault proxy, the simulators' door journals) and one test per scenario on the short
//! profile. They need PostgreSQL and RabbitMQ installed (`scripts/services`) and root (the
//! cluster and node run as their service users); `.config/nextest.toml` runs them one at a
//! time.
//!
//! Deadlines here are wall-clock on purpose: they bound real processes.
#![allow(clippy::disallowed_methods)]

mod infra;
mod regressions;
mod scenarios;
mod vendors;

/// Builds the `lockstep` binary the scenarios run (unless `LOCKSTEP_BIN` names one), so a
/// test never runs a stale binary: `cargo build` of the same profile into the same target
/// directory as this test executable (a no-op when it is fresh).
pub fn ensure_lockstep_built() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("LOCKSTEP_BIN").is_some() {
            return;
        }
        let exe = std::env::current_exe().expect("the test executable has a path");
        // target/<profile>/deps/<test exe>
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executables live in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "lockstep-orchestrator",
                "--bin",
                "lockstep",
            ])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build for the lockstep binary");
        assert!(status.success(), "building the lockstep binary failed");
    });
}
