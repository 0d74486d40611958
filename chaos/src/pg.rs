//! A Postgres cluster of the scenario's own (DESIGN §11: a scenario that stops Postgres
//! never disturbs other tests): `initdb` into a scratch directory, `postgres` on a free port
//! of 127.0.0.1 run as the `postgres` OS user, the unix socket in the scratch directory,
//! `fsync` on (durability is the point), `max_connections = 300`, and the roles and database
//! `scripts/services` creates (`lockstep_owner` with `CREATEDB` owning database `lockstep`,
//! `lockstep_worker` with `BYPASSRLS`, `lockstep_app` without). The schema is Lockstep's to
//! make: `lockstep migrate` as the owner (see [`crate::node::migrate`]).
//!
//! The server runs in a process group of its own, so [`PgCluster::stop`] with
//! [`StopMode::Kill`] takes every backend down with the postmaster, as a crashed host
//! would. Dropping the cluster kills it and removes its directory.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util;

/// How to stop the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Fast shutdown (SIGINT): clients are disconnected, work is checkpointed.
    Fast,
    /// SIGKILL to the postmaster and every backend: a crash.
    Kill,
}

/// Connection URLs of the three roles (to 127.0.0.1 and the cluster's port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgUrls {
    /// `lockstep_owner`: migrations.
    pub owner: String,
    /// `lockstep_worker`: outbox, timers, partition scans.
    pub worker: String,
    /// `lockstep_app`: the service, under RLS.
    pub app: String,
}

impl PgUrls {
    /// The same URLs with the port replaced (to go through a proxy).
    pub fn with_port(&self, from: u16, to: u16) -> Self {
        let swap = |u: &str| u.replace(&format!(":{from}/"), &format!(":{to}/"));
        Self {
            owner: swap(&self.owner),
            worker: swap(&self.worker),
            app: swap(&self.app),
        }
    }
}

/// A running (or stopped) cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    user: (u32, u32),
    child: Option<Child>,
}

/// The roles and database of `scripts/services`, with their passwords.
const SETUP_SQL: &str = "
CREATE ROLE lockstep_owner LOGIN CREATEDB PASSWORD 'lockstep_owner';
CREATE ROLE lockstep_worker LOGIN BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'lockstep_worker';
CREATE ROLE lockstep_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD 'lockstep_app';
CREATE DATABASE lockstep OWNER lockstep_owner;
GRANT CONNECT ON DATABASE lockstep TO lockstep_app;
";

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .with_context(|| {
            format!(
                "no PostgreSQL under {} (run scripts/services)",
                root.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin);
    newest.context("no PostgreSQL server binary found (run scripts/services)")
}

/// Extra server settings from `LOCKSTEP_CHAOS_PG_SETTINGS` (`name=value` pairs separated
/// by spaces), for diagnosing a run (e.g. `session_preload_libraries=auto_explain
/// auto_explain.log_min_duration=50`); none by default.
fn extra_settings() -> Vec<String> {
    std::env::var("LOCKSTEP_CHAOS_PG_SETTINGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

impl PgCluster {
    /// Initializes a cluster in a scratch directory, starts it and creates Lockstep's roles
    /// and database.
    pub async fn start_new() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = util::os_user("postgres")?;
        let dir = util::scratch_dir("pg")?;
        util::chown_r(&dir, "postgres")?;
        let port = util::free_port()?;
        let mut me = Self {
            dir,
            bin,
            port,
            user,
            child: None,
        };
        let mut initdb = me.as_postgres(&me.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(me.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                // only initdb's own writes skip fsync; the server runs with fsync on
                "--no-sync",
            ])
            .stdout(Stdio::null());
        util::run_ok(&mut initdb).context("initdb")?;
        std::fs::create_dir_all(me.socket_dir())?;
        util::chown_r(&me.socket_dir(), "postgres")?;
        me.start().await?;
        // one statement per call: CREATE DATABASE refuses a multi-command string
        for statement in SETUP_SQL
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            me.psql(statement)
                .with_context(|| format!("creating Lockstep's roles: {statement}"))?;
        }
        Ok(me)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.user.0)
            .gid(self.user.1)
            .current_dir(&self.dir)
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        cmd
    }

    /// Starts the server (again) on its data and port; returns once it accepts connections.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the postgres log")?;
        let mut cmd = self.as_postgres(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                // the benchmark names the statements Postgres spends its time on
                "-c",
                "shared_preload_libraries=pg_stat_statements",
            ])
            // more settings for a diagnosis (`auto_explain.log_min_duration=50 ...`)
            .args(
                extra_settings()
                    .into_iter()
                    .flat_map(|kv| ["-c".to_owned(), kv]),
            )
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().context("spawning postgres")?);
        let started = Instant::now();
        loop {
            if self.psql("SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "postgres exited ({status}) while starting; log:\n{}",
                    util::tail(
                        &std::fs::read_to_string(self.log_path()).unwrap_or_default(),
                        20
                    )
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("postgres did not accept connections within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The postmaster's process id while running (also its process group's: every backend
    /// is in it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client program of the cluster's installation (`pgbench`, `createdb`, ...) run as
    /// the `postgres` OS user, with `PGHOST`, `PGPORT` and `PGUSER` pointing it at this
    /// cluster's unix socket as the superuser.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = self.as_postgres(&self.bin.join(program));
        cmd.env("PGHOST", self.socket_dir())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        cmd
    }

    /// Whether the postmaster runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server and waits until every process of it is gone.
    pub async fn stop(&mut self, mode: StopMode) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        match mode {
            StopMode::Fast => {
                util::signal(pid, "INT")?;
            }
            StopMode::Kill => {
                util::signal_group(pid, "KILL")?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                util::signal_group(pid, "KILL")?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // backends notice a dead postmaster on their own; a restart must wait for them
        util::wait_group_gone(pid, Duration::from_secs(30)).await
    }

    /// URLs of the three roles.
    pub fn urls(&self) -> PgUrls {
        let url = |role: &str| format!("postgres://{role}:{role}@127.0.0.1:{}/lockstep", self.port);
        PgUrls {
            owner: url("lockstep_owner"),
            worker: url("lockstep_worker"),
            app: url("lockstep_app"),
        }
    }

    /// Runs SQL through TCP as the role and database of `url` (e.g. one of [`Self::urls`]);
    /// returns what it printed.
    pub fn psql_url(&self, url: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs SQL as the superuser over the unix socket; returns what it printed.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = self
            .as_postgres(&self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = util::signal_group(pid, "KILL");
            let _ = child.wait();
            // the backends die with the postmaster; give them a moment before the rm
            for _ in 0..100 {
                if !util::signal_group(pid, "0").unwrap_or(false) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        crate::util::remove_unless_kept(&self.dir);
    }
}
