//! Small helpers the other modules share: waiting on a condition with a deadline, scratch
//! directories, free ports, signals and OS users (through the `kill`, `id` and `chown`
//! commands: the workspace forbids `unsafe`, and these need no crate).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

/// The wall clock now (chaos runs measure real processes, not business time).
pub fn wall_now() -> DateTime<Utc> {
    Utc::now()
}

/// Polls `f` every `every` until it returns `Some`; fails naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A fresh directory `/tmp/lockstep-chaos-<name>-<ulid>` (or under `$TMPDIR`), readable by
/// the service users the cluster and broker run as.
pub fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "lockstep-chaos-{name}-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(&dir, 0o755)?;
    Ok(dir)
}

/// `chmod` without `unsafe`.
pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// An OS user's uid and primary gid (`id -u`, `id -g`).
pub fn os_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id")
            .args([flag, name])
            .output()
            .context("running id")?;
        if !out.status.success() {
            bail!("OS user {name} does not exist (is the package installed? run scripts/services)");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// `chown -R user: path`.
pub fn chown_r(path: &Path, user: &str) -> anyhow::Result<()> {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(path),
    )
}

/// Sends `signal` (`TERM`, `INT`, `KILL`, ...) to process `pid`; `Ok(false)` if it is gone.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<bool> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running kill")?;
    Ok(status.success())
}

/// Sends `signal` to every process of process group `pgid`; `Ok(false)` if none is left.
pub fn signal_group(pgid: u32, signal: &str) -> anyhow::Result<bool> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(std::process::Stdio::null())
        .status()
        .context("running kill")?;
    Ok(status.success())
}

/// Waits until no process of group `pgid` is left (signal 0 fails), up to `timeout`.
pub async fn wait_group_gone(pgid: u32, timeout: Duration) -> anyhow::Result<()> {
    wait_for(
        &format!("process group {pgid} to exit"),
        timeout,
        Duration::from_millis(50),
        || async move { (!signal_group(pgid, "0").unwrap_or(false)).then_some(()) },
    )
    .await
}

/// Runs a command and fails with its output if it does not succeed.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Set by [`keep_scratch_dirs`].
static KEEP: AtomicBool = AtomicBool::new(false);

/// Keeps every scratch directory from now on, as `LOCKSTEP_CHAOS_KEEP=1` does (for a
/// command-line flag: the environment is not ours to set).
pub fn keep_scratch_dirs() {
    KEEP.store(true, Ordering::SeqCst);
}

/// Removes a scratch directory, unless `LOCKSTEP_CHAOS_KEEP` is set or
/// [`keep_scratch_dirs`] was called (then says where it is, for the logs in it).
pub fn remove_unless_kept(dir: &Path) {
    if KEEP.load(Ordering::SeqCst) || std::env::var_os("LOCKSTEP_CHAOS_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `q` (0..=1) quantile of `values` (nearest rank); `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
