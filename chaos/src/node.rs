//! Lockstep nodes: the real `lockstep` binary in production mode, as an operator runs it.
//!
//! [`NodeConfig`] holds every knob a scenario turns and renders the production TOML (the
//! README's "Production mode"; `config/src/lib.rs` for every key). [`Node`] writes it into
//! the node's directory, spawns the binary with `--config` (its log in that directory, the
//! filter `LOCKSTEP_LOG=info,lapin=warn,sqlx=warn,actix_server=warn`), learns its HTTP
//! address from the "lockstep http listening on " line, and kills, stops or restarts it.
//!
//! The binary is `$LOCKSTEP_BIN`, else `lockstep` next to the current executable or in its
//! parent directory (test executables live in `target/<profile>/deps/`): build it first
//! (`cargo build -p lockstep-orchestrator --bin lockstep`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pg::PgUrls;
use crate::util;

/// The log filter every node runs with.
pub const LOG_FILTER: &str = "info,lapin=warn,sqlx=warn,actix_server=warn";

/// Finds the `lockstep` binary: `$LOCKSTEP_BIN`, else beside the current executable or in
/// its parent directory.
pub fn lockstep_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("LOCKSTEP_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("LOCKSTEP_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("lockstep");
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    bail!(
        "no lockstep binary at {tried:?}: build it (`cargo build -p lockstep-orchestrator --bin lockstep`) or set LOCKSTEP_BIN"
    )
}

/// `[saga]` knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaKnobs {
    /// Issue attempts before failing (unset: Lockstep's default, 40).
    pub max_issue_attempts: Option<i32>,
    /// First retry delay, ms.
    pub retry_base_ms: u64,
    /// Longest retry delay, ms.
    pub retry_cap_ms: u64,
    /// Vendor call timeout, ms (unset: Lockstep's default, 15 s: a Salto issue is a dozen
    /// requests, each slow under latency faults).
    pub vendor_call_timeout_ms: Option<u64>,
}

impl Default for SagaKnobs {
    /// Fast retries (as the orchestrator's production tests use), so short runs converge in
    /// seconds; Lockstep's own attempt budget and call timeout.
    fn default() -> Self {
        Self {
            max_issue_attempts: None,
            retry_base_ms: 100,
            retry_cap_ms: 2_000,
            vendor_call_timeout_ms: None,
        }
    }
}

/// `[breaker]` knobs; unset ones keep Lockstep's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BreakerKnobs {
    /// Sliding window, ms.
    pub window_ms: Option<u64>,
    /// Calls in the window before it may trip.
    pub min_calls: Option<u32>,
    /// Error share that trips it.
    pub error_rate: Option<f64>,
    /// p99 latency that trips it, ms.
    pub p99_ms: Option<u64>,
    /// How long it stays open, ms.
    pub open_ms: Option<u64>,
    /// Probes while half-open.
    pub half_open_probes: Option<u32>,
    /// How often a held vendor account is tried again, ms.
    pub account_probe_ms: Option<u64>,
}

/// Everything a scenario may set on one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `node_id`.
    pub node_id: String,
    /// `[amqp] node_index`.
    pub node_index: u32,
    /// `[amqp] node_count`.
    pub node_count: u32,
    /// `[amqp] partitions` (the same on every node).
    pub partitions: u32,
    /// `[amqp] tick_interval_ms`.
    pub tick_interval_ms: u64,
    /// `[amqp] standby_delay_ms`.
    pub standby_delay_ms: u64,
    /// `[amqp] delivery_limit` (unset: Lockstep's default, 20).
    pub delivery_limit: Option<u32>,
    /// Whether `[amqp.publishers]` is set as in the README (reservations only from
    /// `reservation-service`).
    pub check_publishers: bool,
    /// `[clock] scale` (unset: the wall).
    pub clock_scale: Option<f64>,
    /// `[saga]`.
    pub saga: SagaKnobs,
    /// `[breaker]`.
    pub breaker: BreakerKnobs,
    /// `[drift] interval_ms` (unset: Lockstep's default; 0: off).
    pub drift_interval_ms: Option<u64>,
    /// `[database] max_connections`.
    pub db_max_connections: u32,
    /// Postgres URLs (point them at a proxy to partition the node).
    pub db: PgUrls,
    /// RabbitMQ URL of the `lockstep` user (point it at a proxy to partition the node).
    pub amqp_url: String,
    /// `[http] service_token`.
    pub service_token: String,
    /// `[encryption] key`, 64 hex digits (the same on every node).
    pub encryption_key: String,
    /// The `[[properties]]` tables (adapters, devices, policies).
    pub properties_toml: String,
    /// Raw TOML appended at the end, for a key this struct does not name.
    pub extra_toml: String,
}

impl NodeConfig {
    /// A single node's config with the chaos defaults: 4 partitions, 500 ms ticks, no
    /// standby delay, fast saga retries, publishers checked.
    pub fn new(node_id: &str, db: PgUrls, amqp_url: String, properties_toml: String) -> Self {
        Self {
            node_id: node_id.to_owned(),
            node_index: 0,
            node_count: 1,
            partitions: 4,
            tick_interval_ms: 500,
            standby_delay_ms: 0,
            delivery_limit: None,
            check_publishers: true,
            clock_scale: None,
            saga: SagaKnobs::default(),
            breaker: BreakerKnobs::default(),
            drift_interval_ms: None,
            db_max_connections: 8,
            db,
            amqp_url,
            service_token: "chaos-service-token".into(),
            encryption_key: "3c".repeat(32),
            properties_toml,
            extra_toml: String::new(),
        }
    }

    /// The production TOML.
    pub fn to_toml(&self) -> String {
        let mut t = format!(
            r#"mode = "production"
node_id = "{node_id}"

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "{token}" }}

[database]
url = {{ value = "{app}" }}
worker_url = {{ value = "{worker}" }}
owner_url = {{ value = "{owner}" }}
max_connections = {maxconn}

[encryption]
key = {{ value = "{key}" }}

[amqp]
url = {{ value = "{amqp}" }}
partitions = {partitions}
node_index = {node_index}
node_count = {node_count}
tick_interval_ms = {tick}
standby_delay_ms = {standby}
"#,
            node_id = self.node_id,
            token = self.service_token,
            app = self.db.app,
            worker = self.db.worker,
            owner = self.db.owner,
            maxconn = self.db_max_connections,
            key = self.encryption_key,
            amqp = self.amqp_url,
            partitions = self.partitions,
            node_index = self.node_index,
            node_count = self.node_count,
            tick = self.tick_interval_ms,
            standby = self.standby_delay_ms,
        );
        if let Some(limit) = self.delivery_limit {
            t.push_str(&format!("delivery_limit = {limit}\n"));
        }
        if self.check_publishers {
            t.push_str(
                "\n[amqp.publishers]\n\
                 \"melmastoon.reservation.\" = \"reservation-service\"\n\
                 \"melmastoon.booking.\" = \"coworking-service\"\n\
                 \"melmastoon.staff.shift.\" = \"staffing-service\"\n\
                 \"melmastoon.tenant.\" = \"tenant-service\"\n\
                 \"melmastoon.iam.\" = \"iam-service\"\n",
            );
        }
        let s = &self.saga;
        t.push_str(&format!(
            "\n[saga]\nretry_base_ms = {}\nretry_cap_ms = {}\n",
            s.retry_base_ms, s.retry_cap_ms
        ));
        if let Some(ms) = s.vendor_call_timeout_ms {
            t.push_str(&format!("vendor_call_timeout_ms = {ms}\n"));
        }
        if let Some(n) = s.max_issue_attempts {
            t.push_str(&format!("max_issue_attempts = {n}\n"));
        }
        let b = &self.breaker;
        let breaker: Vec<String> = [
            b.window_ms.map(|v| format!("window_ms = {v}")),
            b.min_calls.map(|v| format!("min_calls = {v}")),
            b.error_rate.map(|v| format!("error_rate = {v:?}")),
            b.p99_ms.map(|v| format!("p99_ms = {v}")),
            b.open_ms.map(|v| format!("open_ms = {v}")),
            b.half_open_probes
                .map(|v| format!("half_open_probes = {v}")),
            b.account_probe_ms
                .map(|v| format!("account_probe_ms = {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !breaker.is_empty() {
            t.push_str(&format!("\n[breaker]\n{}\n", breaker.join("\n")));
        }
        if let Some(scale) = self.clock_scale {
            t.push_str(&format!("\n[clock]\nscale = {scale:?}\n"));
        }
        if let Some(ms) = self.drift_interval_ms {
            t.push_str(&format!("\n[drift]\ninterval_ms = {ms}\n"));
        }
        t.push_str("\n[demo]\nenabled = false\n");
        t.push_str(&self.properties_toml);
        t.push('\n');
        t.push_str(&self.extra_toml);
        t
    }
}

/// Runs `lockstep migrate --config <config>` (the owner role applies the schema).
pub fn migrate(config: &Path) -> anyhow::Result<()> {
    let bin = lockstep_bin()?;
    util::run_ok(
        Command::new(bin)
            .arg("migrate")
            .arg("--config")
            .arg(config)
            .env("LOCKSTEP_LOG", "warn"),
    )
    .context("lockstep migrate")
}

/// How a node ended after SIGTERM.
#[derive(Clone, Debug)]
pub struct Exit {
    /// From the signal to the process's exit (or to the SIGKILL that ended the wait).
    pub took: Duration,
    /// Its exit status.
    pub status: Option<ExitStatus>,
    /// Whether it had to be SIGKILLed because it outlived the bound.
    pub killed: bool,
}

/// One Lockstep node: its directory, config and (while running) process.
#[derive(Debug)]
pub struct Node {
    name: String,
    dir: PathBuf,
    config: NodeConfig,
    child: Option<Child>,
    http: Option<String>,
    /// Where this incarnation's output starts in the log.
    log_offset: u64,
    incarnations: u32,
    env: Vec<(String, String)>,
}

impl Node {
    /// A node (not started) in `dir/<node_id>`, its config written.
    pub fn new(dir: &Path, config: NodeConfig) -> anyhow::Result<Self> {
        let dir = dir.join(&config.node_id);
        std::fs::create_dir_all(&dir)?;
        let me = Self {
            name: config.node_id.clone(),
            dir,
            config,
            child: None,
            http: None,
            log_offset: 0,
            incarnations: 0,
            env: Vec::new(),
        };
        me.write_config()?;
        Ok(me)
    }

    /// Its `node_id`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its config.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Changes its config; takes effect at the next [`Node::spawn`].
    pub fn update_config(&mut self, f: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<()> {
        f(&mut self.config);
        self.write_config()
    }

    /// An extra environment variable for the next spawns (e.g. a failpoint).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("lockstep.toml")
    }

    /// The log (every incarnation, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("lockstep.log")
    }

    fn write_config(&self) -> anyhow::Result<()> {
        std::fs::write(self.config_path(), self.config.to_toml())
            .with_context(|| format!("writing {}", self.config_path().display()))
    }

    /// How many times it was started.
    pub fn incarnations(&self) -> u32 {
        self.incarnations
    }

    /// Starts the binary and waits until it listens (not until it is ready: see
    /// [`Node::wait_ready`]).
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("node {} is already running", self.name);
        }
        let bin = lockstep_bin()?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        self.log_offset = log.metadata()?.len();
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(self.config_path())
            .current_dir(&self.dir)
            .env("LOCKSTEP_LOG", LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().context("spawning lockstep")?);
        self.incarnations += 1;
        self.http = None;
        let needle = "lockstep http listening on ";
        let started = Instant::now();
        loop {
            let text = self.incarnation_log();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                let url = line
                    .split(needle)
                    .nth(1)
                    .map(|s| s.trim().to_owned())
                    .context("no address in the listening line")?;
                self.http = Some(url);
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "node {} exited ({status}) before listening; log:\n{}",
                    self.name,
                    util::tail(&text, 30)
                );
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "node {} did not listen within 90 s; log:\n{}",
                    self.name,
                    util::tail(&text, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` answers 200; returns how long that took.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let url = format!("{}/readyz", self.http()?);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(started.elapsed());
                }
            }
            if !self.is_running() {
                bail!(
                    "node {} died before it was ready; log:\n{}",
                    self.name,
                    util::tail(&self.incarnation_log(), 30)
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "node {} not ready within {timeout:?}; log:\n{}",
                    self.name,
                    util::tail(&self.incarnation_log(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Node::spawn`] then [`Node::wait_ready`].
    pub async fn start(&mut self, ready_within: Duration) -> anyhow::Result<()> {
        self.spawn().await?;
        self.wait_ready(ready_within).await.map(|_| ())
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.http = None;
    }

    /// SIGTERM, then waits up to `bound` for the exit (SIGKILL after that); says how long it
    /// took.
    pub async fn sigterm(&mut self, bound: Duration) -> anyhow::Result<Exit> {
        let Some(mut child) = self.child.take() else {
            bail!("node {} is not running", self.name);
        };
        self.http = None;
        let started = Instant::now();
        util::signal(child.id(), "TERM")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Exit {
                    took: started.elapsed(),
                    status: Some(status),
                    killed: false,
                });
            }
            if started.elapsed() > bound {
                let took = started.elapsed();
                let _ = child.kill();
                let status = child.wait().ok();
                return Ok(Exit {
                    took,
                    status,
                    killed: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its HTTP base URL (`http://127.0.0.1:<port>`) while running.
    pub fn http(&self) -> anyhow::Result<&str> {
        self.http
            .as_deref()
            .with_context(|| format!("node {} is not running", self.name))
    }

    /// The whole log, every incarnation.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The log of the current (or last) incarnation.
    pub fn incarnation_log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            if f.seek(SeekFrom::Start(self.log_offset)).is_ok() {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> Option<String> {
        let url = format!("{}/metrics", self.http.as_deref()?);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .ok()?;
        client.get(url).send().await.ok()?.text().await.ok()
    }

    /// One sample of `/metrics`: `name_with_labels` is the sample's name with its labels as
    /// printed (`lockstep_intake_messages_total{outcome="accepted"}`), or a bare name for
    /// an unlabelled metric.
    pub async fn metric(&self, name_with_labels: &str) -> Option<f64> {
        metric_value(&self.metrics_text().await?, name_with_labels)
    }
}

/// Reads one sample's value from a Prometheus text exposition.
pub fn metric_value(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name_with_labels)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_found_by_their_exact_name_and_labels() {
        let text = "# HELP x\nlockstep_a_total{outcome=\"ok\"} 3\nlockstep_a_total{outcome=\"bad\"} 2\nlockstep_ab 7\nlockstep_a 1\n";
        assert_eq!(
            metric_value(text, "lockstep_a_total{outcome=\"ok\"}"),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "lockstep_a"), Some(1.0));
        assert_eq!(metric_sum(text, "lockstep_a_total"), 5.0);
    }

    #[test]
    fn the_config_renders_every_knob_a_scenario_sets_and_lockstep_accepts_it() {
        let db = PgUrls {
            owner: "postgres://o:o@127.0.0.1:1/d".into(),
            worker: "postgres://w:w@127.0.0.1:1/d".into(),
            app: "postgres://a:a@127.0.0.1:1/d".into(),
        };
        let mut c = NodeConfig::new("n1", db, "amqp://x@127.0.0.1:2/%2f".into(), String::new());
        c.clock_scale = Some(120.0);
        c.breaker.open_ms = Some(1000);
        c.breaker.error_rate = Some(0.5);
        c.delivery_limit = Some(3);
        c.saga.max_issue_attempts = Some(7);
        c.saga.vendor_call_timeout_ms = Some(9000);
        c.drift_interval_ms = Some(0);
        let dir = util::scratch_dir("node-config").expect("a scratch dir");
        let path = dir.join("lockstep.toml");
        std::fs::write(&path, c.to_toml()).expect("writable");
        let s = lockstep_config::load(Some(&path)).expect("lockstep accepts the config");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.mode, lockstep_config::Mode::Production);
        assert_eq!(s.clock_scale, 120.0);
        assert_eq!(s.breaker.open_ms, Some(1000));
        assert_eq!(s.saga.max_issue_attempts, 7);
        assert_eq!(
            s.saga.vendor_call_timeout,
            std::time::Duration::from_secs(9)
        );
        assert!(s.drift_interval.is_none());
        let a = s.amqp.expect("production mode has amqp settings");
        assert_eq!(a.delivery_limit, 3);
        assert!(a.may_publish(
            "melmastoon.reservation.confirmed.v1",
            Some("reservation-service")
        ));
        assert!(!a.may_publish("melmastoon.reservation.confirmed.v1", Some("lockstep")));
    }
}
