//! Spawning the binary, fresh databases and vhosts, waiting on conditions.
//!
//! Deadlines here are wall-clock on purpose: they bound how long a test waits for a real
//! process, not any business time.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lockstep_vendors::ttlock::{RunningSimulator, TtlockSimulator};
use serde_json::{json, Value};

/// Waits until `f` returns `Some`, polling; fails with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `lockstep` process.
pub struct Lockstep {
    child: Child,
    /// Base URL of its HTTP API.
    pub http: String,
    /// Its combined log.
    pub log: PathBuf,
}

impl Lockstep {
    /// Starts the binary with `args` in `dir`, and waits until it listens.
    pub async fn spawn(dir: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("lockstep-{}.log", ulid::Ulid::new()));
        let out = File::create(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        cmd.args(args)
            .current_dir(dir)
            .env(
                "LOCKSTEP_LOG",
                "info,lapin=warn,sqlx=warn,actix_server=warn",
            )
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning lockstep")?;
        let mut me = Self {
            child,
            http: String::new(),
            log,
        };
        let line = me
            .wait_log("lockstep http listening on ", Duration::from_secs(60))
            .await?;
        me.http = line
            .split("listening on ")
            .nth(1)
            .map(|s| s.trim().to_owned())
            .context("no address in the listening line")?;
        Ok(me)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits for a log line containing `needle`; returns it. Fails early if the process died.
    pub async fn wait_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_text().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "lockstep exited ({status}) before logging {needle:?}; log:\n{}",
                    tail(&self.log_text())
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {needle:?}; log:\n{}",
                    tail(&self.log_text())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; returns the exit status and how
    /// long the process took to stop.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!(
                    "still running {timeout:?} after SIGTERM; log:\n{}",
                    tail(&self.log_text())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh RabbitMQ vhost for one test, deleted on drop.
pub struct Vhost {
    /// Name.
    pub name: String,
    /// AMQP URL as the `lockstep` user.
    pub url: String,
}

impl Vhost {
    /// Creates the vhost and gives the `lockstep` user every permission on it.
    pub fn fresh() -> anyhow::Result<Self> {
        let name = format!(
            "lockstep_t_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        rabbitmqctl(&["add_vhost", &name])?;
        rabbitmqctl(&["set_permissions", "-p", &name, "lockstep", ".*", ".*", ".*"])?;
        let url = format!("amqp://lockstep:lockstep@127.0.0.1:5672/{name}");
        Ok(Self { name, url })
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .context("running rabbitmqctl (is RabbitMQ installed? run scripts/services)")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A test-side AMQP client: publishes like the reservation system, reads what Lockstep
/// publishes.
pub struct Broker {
    _conn: Connection,
    /// Channel with publisher confirms.
    pub ch: Channel,
}

impl Broker {
    /// Connects and declares the platform exchange.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.exchange_declare(
            "melmastoon.events".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        Ok(Self { _conn: conn, ch })
    }

    /// Publishes one event body with `routing_key`, waiting for the broker's confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        self.ch
            .basic_publish(
                "melmastoon.events".into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Publishes like [`Self::publish`] with the AMQP `user_id` set (RabbitMQ refuses a
    /// `user_id` other than the connection's user).
    pub async fn publish_as(
        &self,
        routing_key: &str,
        body: &[u8],
        user: &str,
    ) -> anyhow::Result<()> {
        self.ch
            .basic_publish(
                "melmastoon.events".into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_user_id(user.into()),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Declares `queue` bound to `pattern` and collects every message into the returned
    /// buffer (body as JSON, or a string; headers kept).
    pub async fn collect(
        &self,
        queue: &str,
        exchange: &str,
        pattern: &str,
    ) -> anyhow::Result<Collected> {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if !exchange.is_empty() {
            self.ch
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    pattern.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        self.consume(queue).await
    }

    /// Consumes an existing queue into a buffer.
    pub async fn consume(&self, queue: &str) -> anyhow::Result<Collected> {
        let buf = Collected::default();
        let mut consumer = self
            .ch
            .basic_consume(
                queue.into(),
                format!("test-{}", ulid::Ulid::new()).as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let sink = buf.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let body = serde_json::from_slice(&d.data).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&d.data).into_owned())
                });
                let header = |name: &str| {
                    d.properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get(name).cloned())
                        .and_then(|v| match v {
                            AMQPValue::LongString(s) => Some(s.to_string()),
                            _ => None,
                        })
                };
                let message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
                sink.0.lock().unwrap().push(json!({
                    "body": body,
                    "reason": header("x-lockstep-reason"),
                    "detail": header("x-lockstep-detail"),
                    "originalUser": header("x-lockstep-original-user-id"),
                    "messageId": message_id,
                    "routingKey": d.routing_key.as_str(),
                }));
            }
        });
        Ok(buf)
    }
}

/// Messages collected by [`Broker::collect`].
#[derive(Clone, Default)]
pub struct Collected(pub std::sync::Arc<std::sync::Mutex<Vec<Value>>>);

impl Collected {
    /// A copy of everything so far.
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    /// Distinct `data.keyId`s of events with `subject`.
    pub fn key_ids(&self, subject: &str) -> std::collections::BTreeSet<String> {
        self.all()
            .iter()
            .filter(|m| m["body"]["subject"] == subject)
            .filter_map(|m| m["body"]["data"]["keyId"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The in-process TTLock simulator with `locks`.
pub fn simulator(locks: &[i64]) -> anyhow::Result<RunningSimulator> {
    let sim = TtlockSimulator::start("127.0.0.1:0".parse()?)?;
    for l in locks {
        sim.handle().add_lock(*l);
    }
    Ok(sim)
}

/// A `reservation.confirmed.v1` envelope.
#[allow(clippy::too_many_arguments)]
pub fn confirmed(
    id: &str,
    tenant: &str,
    property: &str,
    reservation: &str,
    revision: i64,
    rooms: &[&str],
    from: &str,
    until: &str,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "subject": "melmastoon.reservation.confirmed.v1",
        "time": "2026-11-24T10:00:00Z",
        "tenantId": tenant,
        "propertyId": property,
        "data": {
            "reservationId": reservation,
            "revision": revision,
            "guestId": format!("gst_{reservation}"),
            "roomIds": rooms,
            "validFrom": from,
            "validUntil": until,
        }
    }))
    .expect("a JSON value serializes")
}

/// A `reservation.cancelled.v1` envelope.
pub fn cancelled(
    id: &str,
    tenant: &str,
    property: &str,
    reservation: &str,
    revision: i64,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "subject": "melmastoon.reservation.cancelled.v1",
        "time": "2026-11-24T10:00:00Z",
        "tenantId": tenant,
        "propertyId": property,
        "data": { "reservationId": reservation, "revision": revision }
    }))
    .expect("a JSON value serializes")
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lockstep-it-{name}-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// GETs `url` with a bearer `token` (and the tenant header, if given) and reads its JSON;
/// `None` on any failure (for condition waits, which ask again).
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    tenant: Option<&str>,
) -> Option<serde_json::Value> {
    let mut rb = http.get(url).bearer_auth(token);
    if let Some(t) = tenant {
        rb = rb.header("x-tenant-id", t);
    }
    rb.send().await.ok()?.json().await.ok()
}

/// Reads one metric's value from the text exposition.
pub async fn metric(http: &str, name_with_labels: &str) -> Option<f64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name_with_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `/readyz` answers 200 (store reachable, bus connected and declared).
pub async fn wait_ready(node: &Lockstep) -> anyhow::Result<()> {
    wait_for("readyz", Duration::from_secs(60), || {
        let url = format!("{}/readyz", node.http);
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await
}

/// A production-mode configuration of a test: one TTLock adapter per property on the
/// in-process simulator, one room per lock (`rmu_<lock>`).
pub struct ProdConfig<'a> {
    /// Node name.
    pub node_id: &'a str,
    /// Service bearer token.
    pub token: &'a str,
    /// Tenant UUID of every property.
    pub tenant: &'a str,
    /// (property, lock ids).
    pub properties: Vec<(&'a str, Vec<i64>)>,
    /// Body of a `[properties.policy]` table, if any.
    pub policy: Option<&'a str>,
    /// First number of the adapters' ULIDs.
    pub adapter_base: usize,
    /// Partition tick, ms.
    pub tick_ms: u64,
}

/// Writes `lockstep.toml` for `c` into `dir`.
pub fn write_production_config(
    dir: &Path,
    db: &lockstep_persistence::testing::PgTestDb,
    vhost: &Vhost,
    sim: &RunningSimulator,
    c: &ProdConfig<'_>,
) -> anyhow::Result<PathBuf> {
    let cfg = sim.default_adapter_config();
    let mut toml = format!(
        r#"mode = "production"
node_id = "{node_id}"

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "{token}" }}

[database]
url = {{ value = "{app}" }}
worker_url = {{ value = "{worker}" }}
max_connections = 8

[encryption]
key = {{ value = "{key}" }}

[amqp]
url = {{ value = "{amqp}" }}
partitions = 4
tick_interval_ms = {tick}
standby_delay_ms = 0
delivery_limit = 5

[saga]
retry_base_ms = 100
retry_cap_ms = 1000
vendor_call_timeout_ms = 5000

[demo]
enabled = false
"#,
        node_id = c.node_id,
        token = c.token,
        app = db.app_url,
        worker = db.worker_url,
        key = "11".repeat(32),
        amqp = vhost.url,
        tick = c.tick_ms,
    );
    for (i, (property, locks)) in c.properties.iter().enumerate() {
        // V-1: one adapter per (tenant, property, vendor, environment).
        let adapter = format!("vad_01J{:0>23}", c.adapter_base + i);
        toml.push_str(&format!(
            "\n[[properties]]\ntenant_id = \"{tenant}\"\nproperty_id = \"{property}\"\n",
            tenant = c.tenant
        ));
        if let Some(policy) = c.policy {
            toml.push_str(&format!("\n[properties.policy]\n{policy}\n"));
        }
        toml.push_str(&format!(
            r#"
[[properties.adapters]]
id = "{adapter}"
vendor = "ttlock"
api_base_url = "{url}"
client_id = "{client_id}"
client_secret = {{ value = "{secret}" }}
username = "{username}"
password = {{ value = "{password}" }}
rate_limit_per_min = 0
"#,
            url = cfg.api_base_url,
            client_id = cfg.client_id,
            secret = cfg.client_secret.expose(),
            username = cfg.username,
            password = cfg.password.expose(),
        ));
        for lock in locks {
            toml.push_str(&format!(
                "\n[[properties.devices]]\nid = \"lck_01J{lock:0>23}\"\nadapter = \"{adapter}\"\nvendor_device_ref = \"{lock}\"\nlabel = \"Room {lock}\"\nrooms = [\"rmu_{lock}\"]\n"
            ));
        }
    }
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// The identity provider of the JWT tests.
pub const JWT_ISSUER: &str = "https://id.melmastoon.test";
/// The audience Lockstep expects.
pub const JWT_AUDIENCE: &str = "lockstep";

/// Writes an embedded-mode config with the demo, a service token (`svc-token`) and the
/// identity provider's EdDSA key `key` (kid `k1`), and returns its path.
pub fn jwt_config(dir: &Path, key: &ed25519_dalek::SigningKey) -> anyhow::Result<PathBuf> {
    let public: String = key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = dir.join("lockstep.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[demo]
enabled = true
simulator_bind = "127.0.0.1:0"

[http]
bind = "127.0.0.1:0"
service_token = {{ value = "svc-token" }}

[auth]
issuer = "{JWT_ISSUER}"
audience = "{JWT_AUDIENCE}"
keys = [{{ kid = "k1", alg = "EdDSA", public_key = "{public}" }}]
"#
        ),
    )?;
    Ok(config)
}

/// A ten-minute token of `tenant` with `roles`, signed with `key`.
pub fn jwt(
    key: &ed25519_dalek::SigningKey,
    tenant: &str,
    roles: &[lockstep_orchestrator::auth::Role],
) -> String {
    let now = chrono::Utc::now().timestamp();
    lockstep_orchestrator::auth::mint(
        key,
        "k1",
        &lockstep_orchestrator::auth::Claims {
            iss: JWT_ISSUER.into(),
            aud: JWT_AUDIENCE.into(),
            sub: "usr_test_7".into(),
            exp: now + 600,
            nbf: None,
            iat: now,
            tenant_id: tenant.into(),
            roles: roles.to_vec(),
        },
    )
}

/// The built-in simulator's base URL, from the node's log.
pub fn demo_sim_url(node: &Lockstep) -> String {
    node.log_text()
        .lines()
        .find(|l| l.starts_with("ttlock simulator listening on "))
        .and_then(|l| l.split("listening on ").nth(1))
        .map(|s| s.trim().to_owned())
        .expect("the simulator's address is printed")
}

/// A RabbitMQ user of a test (another service's broker user), allowed everything on
/// `vhost`; deleted on drop.
pub struct BrokerUser {
    /// Its name (the AMQP `user_id` it may publish with).
    pub name: String,
    /// AMQP URL as this user on the vhost.
    pub url: String,
}

impl BrokerUser {
    /// Creates `<prefix>-<ulid>` with a random password and every permission on `vhost`.
    pub fn fresh(vhost: &Vhost, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase());
        let password = ulid::Ulid::new().to_string();
        rabbitmqctl(&["add_user", &name, &password])?;
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &name,
            ".*",
            ".*",
            ".*",
        ])?;
        let url = format!("amqp://{name}:{password}@127.0.0.1:5672/{}", vhost.name);
        Ok(Self { name, url })
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_user", &self.name]);
    }
}

/// What one run of an operator command of the binary printed.
#[derive(Debug)]
pub struct CliRun {
    /// Exit success.
    pub ok: bool,
    /// Its answer.
    pub stdout: String,
    /// Its log lines and errors.
    pub stderr: String,
}

/// Runs the `lockstep` binary with `args` (a tool such as `status` or `dlq`) to its end.
pub async fn lockstep_cli(args: &[&str]) -> anyhow::Result<CliRun> {
    lockstep_cli_in(std::path::Path::new("."), args).await
}

/// [`lockstep_cli`] run in `dir`, where whatever it writes by default (`.lockstep/`) goes.
pub async fn lockstep_cli_in(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<CliRun> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .current_dir(dir)
        .args(args)
        .env("LOCKSTEP_LOG", "warn,lapin=error")
        .output()
        .await
        .context("running the lockstep binary")?;
    Ok(CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
