//! A RabbitMQ node of the scenario's own (DESIGN §11): a second node of the installed
//! RabbitMQ with its own node name (`chaos-<ulid>@localhost`), AMQP port (on 127.0.0.1),
//! distribution port, data and log directories, config, enabled plugins
//! (`rabbitmq_consistent_hash_exchange`) and `HOME` (its Erlang cookie), run as the
//! `rabbitmq` OS user. It shares only epmd with the system's node on 5672, which it never
//! touches.
//!
//! Users come from a definitions file loaded at every boot: `lockstep`/`lockstep`
//! (administrator, every permission on `/`) and `reservation-service`/`reservation-service`
//! (write on `melmastoon.events` only), as `scripts/services` sets them up.
//!
//! [`RabbitNode::kill`] SIGKILLs the node's whole process group (`beam.smp`, its port
//! programs); [`RabbitNode::start`] boots it again on the same data, so quorum queues and
//! their messages come back. Dropping the node kills it and removes its directory.
//!
//! One trap, measured on Debian's 3.10.8: the registry of quorum-queue members (Ra's
//! `names.dets`) reaches the disk only every 3 minutes or at a clean stop. A node SIGKILLed
//! within 3 minutes of a queue's declaration restarts that queue as a new, empty member
//! that never elects a leader: its messages (publisher-confirmed) are gone and every call to
//! it times out. A production topology is older than that; a scenario's is seconds old, so
//! call [`RabbitNode::persist_metadata`] once the topology is declared and before any
//! fault.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::util;

/// The broker user Lockstep connects as.
pub const LOCKSTEP_USER: &str = "lockstep";
/// The reservation system's broker user (may only publish to `melmastoon.events`).
pub const RESERVATION_USER: &str = "reservation-service";

/// Where the installed RabbitMQ keeps its scripts (run directly, not through the
/// `/usr/sbin` wrappers, which would switch to the system node's settings).
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A node of the scenario's own.
#[derive(Debug)]
pub struct RabbitNode {
    dir: PathBuf,
    node_name: String,
    amqp_port: u16,
    dist_port: u16,
    user: (u32, u32),
    child: Option<Child>,
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)).
fn password_hash(password: &str) -> String {
    let salt: [u8; 4] = rand::thread_rng().gen();
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn definitions() -> serde_json::Value {
    let user = |name: &str, tags: &[&str]| {
        serde_json::json!({
            "name": name,
            "password_hash": password_hash(name),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        })
    };
    serde_json::json!({
        "users": [user(LOCKSTEP_USER, &["administrator"]), user(RESERVATION_USER, &[])],
        "vhosts": [{ "name": "/" }],
        "permissions": [
            { "user": LOCKSTEP_USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*" },
            { "user": RESERVATION_USER, "vhost": "/", "configure": "", "write": "melmastoon\\.events", "read": "" },
        ],
    })
}

impl RabbitNode {
    /// Sets up a node in a scratch directory, starts it and waits until `lockstep` can log
    /// in.
    pub async fn start_new() -> anyhow::Result<Self> {
        if !PathBuf::from(RABBITMQ_BIN).join("rabbitmq-server").exists() {
            bail!("RabbitMQ is not installed under {RABBITMQ_BIN} (run scripts/services)");
        }
        let user = util::os_user("rabbitmq")?;
        let dir = util::scratch_dir("rabbit")?;
        let node_name = format!(
            "chaos-{}@localhost",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let amqp_port = util::free_port()?;
        let dist_port = util::free_port()?;
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let cookie: String = (0..32)
            .map(|_| char::from(b'A' + rand::thread_rng().gen_range(0..26u8)))
            .collect();
        std::fs::write(dir.join("home/.erlang.cookie"), cookie)?;
        std::fs::write(
            dir.join("definitions.json"),
            serde_json::to_vec_pretty(&definitions())?,
        )?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n\
                 load_definitions = {defs}\n\
                 log.console = false\n\
                 log.file.level = info\n",
                defs = dir.join("definitions.json").display(),
            ),
        )?;
        std::fs::write(
            dir.join("enabled_plugins"),
            "[rabbitmq_consistent_hash_exchange].\n",
        )?;
        std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
        util::chown_r(&dir, "rabbitmq")?;
        util::set_mode(&dir.join("home/.erlang.cookie"), 0o400)?;
        let mut me = Self {
            dir,
            node_name,
            amqp_port,
            dist_port,
            user,
            child: None,
        };
        me.start().await?;
        Ok(me)
    }

    /// Its node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Its AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.amqp_port
    }

    /// The AMQP URL of `user` (whose password is its name) on vhost `/`.
    pub fn url(&self, user: &str) -> String {
        format!("amqp://{user}:{user}@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The node's own log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(PathBuf::from(RABBITMQ_BIN).join(script));
        let d = |p: &str| self.dir.join(p);
        cmd.uid(self.user.0)
            .gid(self.user.1)
            .current_dir(&self.dir)
            .env("HOME", d("home"))
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_USE_LONGNAME", "false")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", d("rabbit.pid"));
        cmd
    }

    /// Runs `rabbitmqctl <args>` against this node (as the `rabbitmq` user, with the node's
    /// cookie); returns what it printed.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node_name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes the node's dets tables (quorum-queue member registry included) to disk, as
    /// they would be after 3 minutes or a clean stop (see the module doc).
    pub fn persist_metadata(&self) -> anyhow::Result<()> {
        self.ctl(&["eval", "[dets:sync(T) || T <- dets:all()]."])
            .map(|_| ())
            .context("syncing the node's dets tables")
    }

    /// Boots the node (again, on the same data); returns once `lockstep` can log in.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("log/startup.log"))?;
        let mut cmd = self.command("rabbitmq-server");
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        self.child = Some(cmd.spawn().context("spawning rabbitmq-server")?);
        let started = Instant::now();
        let url = self.url(LOCKSTEP_USER);
        loop {
            if let Ok(Ok(conn)) = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&url, ConnectionProperties::default()),
            )
            .await
            {
                let _ = conn.close(200, "ready".into()).await;
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "rabbitmq-server exited ({status}) while starting; see {}",
                    self.log_dir().display()
                );
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "rabbitmq node {} did not accept logins within 120 s; see {}",
                    self.node_name,
                    self.log_dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The node's process id while running (also its process group's: `beam.smp` and its
    /// port programs are in it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the node's process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the node's process group (a crashed broker host) and waits until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pgid = child.id();
        util::signal_group(pgid, "KILL")?;
        let _ = child.wait();
        util::wait_group_gone(pgid, Duration::from_secs(30)).await
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = util::signal_group(pgid, "KILL");
            let _ = child.wait();
            for _ in 0..100 {
                if !util::signal_group(pgid, "0").unwrap_or(false) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        crate::util::remove_unless_kept(&self.dir);
    }
}
