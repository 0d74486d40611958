//! `lockstep`: the physical-access boundary service.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "lockstep",
    version,
    about = "Reservation and shift events in, working door credentials out"
)]
struct Cli {
    /// TOML config file (production mode). Without it, Lockstep runs embedded: SQLite,
    /// in-process bus, built-in TTLock simulator and a demo tenant.
    #[arg(long, global = true, env = "LOCKSTEP_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations (Postgres: as the owner role) and exit.
    Migrate,
    /// The tamper-evident audit: seal chains with a signed root, or verify them.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Mint a development JWT signed with a local Ed25519 key (its public half goes in
    /// `[auth] keys`).
    Token {
        /// File with the Ed25519 signing key's seed (64 hex digits); written (0600) with a
        /// fresh key when it does not exist.
        #[arg(long)]
        key_file: PathBuf,
        /// `kid` of the key in `[auth] keys`.
        #[arg(long, default_value = "dev")]
        kid: String,
        /// The tenant (uuid) the token is confined to.
        #[arg(long)]
        tenant: String,
        /// Roles (repeat for several).
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<lockstep_orchestrator::auth::Role>,
        /// `sub`.
        #[arg(long, default_value = "dev-user")]
        subject: String,
        /// Lifetime in seconds. Negative mints a token that has already expired, for
        /// testing refusals (`--ttl-secs -60`).
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
        ttl_secs: i64,
        /// `iss` (default: `[auth] issuer`, or `lockstep-dev` without a config file).
        #[arg(long)]
        issuer: Option<String>,
        /// `aud` (default: `[auth] audience`, or `lockstep` without a config file).
        #[arg(long)]
        audience: Option<String>,
    },
    /// A running node's state: readiness, breakers, accounts held, backlog and oldest due
    /// timer, outbox lag and unroutable rows, partitions, relay connections.
    Status {
        /// The node's base URL (default: from `[http] bind`).
        #[arg(long)]
        url: Option<String>,
        /// A bearer token with role admin or service (default: `[http] service_token`, or
        /// the embedded data dir's token file).
        #[arg(long, env = "LOCKSTEP_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue (`<prefix>.dlq`, production): list, show, replay.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The front-desk agent: connects a desktop's card encoders to a relay (`keygen` once,
    /// then `run`; see the README's "Front desk").
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Run a standalone TTLock simulator.
    Simulator {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        bind: std::net::SocketAddr,
        /// Lock ids to create (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1001,1002,1003,1004")]
        locks: Vec<i64>,
    },
}

// Parsed once per process: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum AgentAction {
    /// Writes a fresh Ed25519 key for this desktop (mode 0600) and prints its public half
    /// (base64): the `publicKeyEd25519` of `POST /api/v1/offline-issuance/certificates`.
    Keygen {
        /// Where to write the key (64 hex digits); refused if it exists.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Connects to the relay, authenticates with the key and certificate, encodes the
    /// jobs it is sent on simulated USB encoders and keeps the local SQLite mirror; runs
    /// until SIGTERM or ctrl-c, reconnecting with backoff.
    Run {
        /// The relay's URL (printed by the node: `lockstep relay listening on ws://…`).
        #[arg(long, env = "LOCKSTEP_RELAY_URL")]
        url: String,
        /// The desktop's key (written by `lockstep agent keygen`).
        #[arg(long)]
        key_file: PathBuf,
        /// The offline-issuance certificate binding the key (`oki_…`).
        #[arg(long)]
        certificate_id: String,
        /// Lockstep's signature over the certificate (base64, the `signature` the
        /// certificate endpoint answered); needed only if the node does not keep it.
        #[arg(long)]
        certificate_signature: Option<String>,
        /// The tenant (uuid).
        #[arg(long)]
        tenant: String,
        /// The property.
        #[arg(long)]
        property: String,
        /// The desktop id the certificate binds.
        #[arg(long)]
        desktop_id: String,
        /// The local SQLite mirror (spec 004 §7).
        #[arg(long, default_value = "lockstep-desk.sqlite")]
        mirror: PathBuf,
        /// Sign only for a relay announcing this audience.
        #[arg(long)]
        audience: Option<String>,
        /// Simulated encoders attached.
        #[arg(long, default_value_t = 1)]
        encoders: usize,
        /// Time the simulated encoder takes per card, ms.
        #[arg(long, default_value_t = 500)]
        encode_ms: u64,
        /// Longest reconnect delay, ms.
        #[arg(long, default_value_t = 30_000)]
        backoff_max_ms: u64,
    },
    /// Mints a provisional key while the desk is cut off from Lockstep (spec 003 §5): the
    /// card is encoded on a simulated encoder, signed with the desktop's key and kept in
    /// the mirror until `run` syncs it (the reconciler materializes or revokes it). Prints
    /// its id. At most 48 hours (I-7).
    Mint {
        /// The local SQLite mirror `run` uses.
        #[arg(long, default_value = "lockstep-desk.sqlite")]
        mirror: PathBuf,
        /// The desktop's key (written by `lockstep agent keygen`).
        #[arg(long)]
        key_file: PathBuf,
        /// The offline-issuance certificate binding the key (`oki_…`).
        #[arg(long)]
        certificate_id: String,
        /// The tenant (uuid).
        #[arg(long)]
        tenant: String,
        /// The property.
        #[arg(long)]
        property: String,
        /// The stay the key is for.
        #[arg(long)]
        reservation: String,
        /// A room the key opens (repeat for several).
        #[arg(long = "room", required = true)]
        rooms: Vec<String>,
        /// The kind: `rfid_card` (a card encoded at the desk).
        #[arg(long, default_value = "rfid_card")]
        kind: String,
        /// End of validity (RFC 3339); default 24 hours from now, at most 48.
        #[arg(long)]
        valid_until: Option<String>,
        /// Time the simulated encoder takes per card, ms.
        #[arg(long, default_value_t = 500)]
        encode_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// Dead letters with their reasons (left in the queue).
    List {
        /// Read at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: properties, headers and body (left in the queue).
    Show {
        /// Its id, as `list` prints it.
        id: String,
        /// Look among the first this many.
        #[arg(long, default_value_t = 1000)]
        scan: usize,
        /// The whole body, however long (default: its first 4 KiB).
        #[arg(long)]
        full: bool,
    },
    /// Republishes dead letters to intake, validated like new messages and applied once;
    /// each replay is audited, and leaves the queue once the broker confirmed it.
    Replay {
        /// Ids, as `list` prints them.
        ids: Vec<String>,
        /// Every dead letter with this reason (repeat for several).
        #[arg(long)]
        reason: Vec<String>,
        /// Every dead letter read.
        #[arg(long)]
        all: bool,
        /// Who replays (recorded in the message and the audit).
        #[arg(long, env = "USER")]
        operator: Option<String>,
        /// Look among the first this many.
        #[arg(long, default_value_t = 1000)]
        scan: usize,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AuditAction {
    /// Sign a Merkle root over each chain's rows not yet sealed (run daily).
    Seal {
        /// File with the Ed25519 signing key's seed (64 hex digits), kept outside the
        /// database.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Check every chain's links and signed roots; exits 1 if anything was tampered with.
    Verify {
        /// The signing key's public half (64 hex digits, printed by `seal`).
        #[arg(long)]
        public_key: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("LOCKSTEP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // lapin logs every message the broker returns at WARN with its whole body as a byte
    // dump (kilobytes a line, and an event's payload in the log): Lockstep counts returns
    // itself (`lockstep_outbox_publish_failures_total{reason="returned"}`), so that target
    // is always off, whatever LOCKSTEP_LOG says.
    let filter = filter.add_directive(
        "lapin::returned_messages=off"
            .parse()
            .expect("a constant directive parses"),
    );
    // The operator tools print their answers on stdout, for scripts and pipes: their log
    // lines go to stderr. The service logs to stdout.
    let tool = matches!(
        cli.command,
        Some(
            Command::Status { .. }
                | Command::Dlq { .. }
                | Command::Agent {
                    action: AgentAction::Mint { .. }
                }
        )
    );
    let writer = move || -> Box<dyn std::io::Write> {
        if tool {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = if tool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    if cli.json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(ansi)
            .init();
    }
    let system = actix::System::new();
    system.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Simulator { bind, locks } => {
                println!("ttlock simulator on http://{bind}");
                lockstep_vendors::ttlock::run_standalone(bind, locks, Vec::new())
                    .await
                    .context("running the simulator")
            }
            Command::Agent { action } => match action {
                AgentAction::Keygen { key_file } => lockstep_orchestrator::agent::keygen(&key_file),
                AgentAction::Mint {
                    mirror,
                    key_file,
                    certificate_id,
                    tenant,
                    property,
                    reservation,
                    rooms,
                    kind,
                    valid_until,
                    encode_ms,
                } => {
                    lockstep_orchestrator::agent::mint(lockstep_orchestrator::agent::MintArgs {
                        mirror,
                        key_file,
                        certificate_id,
                        tenant,
                        property,
                        reservation,
                        rooms,
                        kind,
                        valid_until,
                        encode_time: std::time::Duration::from_millis(encode_ms),
                    })
                    .await
                }
                AgentAction::Run {
                    url,
                    key_file,
                    certificate_id,
                    certificate_signature,
                    tenant,
                    property,
                    desktop_id,
                    mirror,
                    audience,
                    encoders,
                    encode_ms,
                    backoff_max_ms,
                } => {
                    lockstep_orchestrator::agent::run(lockstep_orchestrator::agent::AgentArgs {
                        url,
                        key_file,
                        certificate_id,
                        tenant,
                        property,
                        desktop_id,
                        certificate_signature,
                        audience,
                        mirror,
                        encoders,
                        encode_time: std::time::Duration::from_millis(encode_ms),
                        backoff_max: std::time::Duration::from_millis(backoff_max_ms),
                    })
                    .await
                }
            },
            Command::Audit { action } => {
                let settings = lockstep_config::load(cli.config.as_deref())?;
                match action {
                    AuditAction::Seal { key_file } => {
                        lockstep_orchestrator::app::audit_seal(&settings, &key_file).await
                    }
                    AuditAction::Verify { public_key } => {
                        if lockstep_orchestrator::app::audit_verify(&settings, &public_key).await? {
                            Ok(())
                        } else {
                            std::process::exit(1)
                        }
                    }
                }
            }
            Command::Token {
                key_file,
                kid,
                tenant,
                roles,
                subject,
                ttl_secs,
                issuer,
                audience,
            } => {
                let settings = lockstep_config::load(cli.config.as_deref())?;
                let token = lockstep_orchestrator::app::dev_token(
                    &settings,
                    &key_file,
                    lockstep_orchestrator::app::TokenRequest {
                        kid,
                        tenant,
                        roles,
                        subject,
                        ttl_secs,
                        issuer,
                        audience,
                    },
                )?;
                // the token alone on stdout (scripts capture it); the rest on stderr
                if token.created_key {
                    eprintln!("wrote a new signing key to {}", key_file.display());
                }
                eprintln!(
                    "the node verifies this token with this entry in its config:\n{}",
                    token.auth_key
                );
                println!("{}", token.token);
                Ok(())
            }
            Command::Status { url, token, json } => {
                let settings = lockstep_config::load(cli.config.as_deref())?;
                lockstep_orchestrator::status::cli(&settings, url, token, json).await
            }
            Command::Dlq { action } => {
                use lockstep_orchestrator::dlq;
                let settings = lockstep_config::load(cli.config.as_deref())?;
                match action {
                    DlqAction::List { limit, json } => dlq::cli_list(&settings, limit, json).await,
                    DlqAction::Show { id, scan, full } => {
                        dlq::cli_show(&settings, &id, scan, full).await
                    }
                    DlqAction::Replay {
                        ids,
                        reason,
                        all,
                        operator,
                        scan,
                        json,
                    } => {
                        let sel = dlq::Selection {
                            ids,
                            reasons: reason,
                            all,
                        };
                        dlq::cli_replay(&settings, &sel, operator, scan, json).await
                    }
                }
            }
            Command::Migrate => {
                let settings = lockstep_config::load(cli.config.as_deref())?;
                lockstep_orchestrator::app::migrate(&settings).await
            }
            Command::Serve => {
                let settings = lockstep_config::load(cli.config.as_deref())?;
                lockstep_orchestrator::app::serve(settings).await
            }
        }
    })
}
