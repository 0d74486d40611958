//! A running node's state for operators: `GET /api/v1/status` (roles `admin`, `service`;
//! node-wide figures only, no tenant's ids — the numbers `/metrics` carries, read fresh)
//! and `lockstep status`, which asks a node and prints it.
//!
//! What it tells: readiness (store, bus, draining); each vendor breaker's state; vendor
//! accounts held; the backlog (open mailbox entries and the oldest due timer); the outbox
//! lag and the unroutable rows by subject; the door truth still to confirm; partitions
//! owned out of those configured; desktop relay connections when a relay runs in this
//! process. Each store read has a deadline: during an outage the answer still comes, with
//! the parts it could not read named in `unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use lockstep_domain::Timestamp;
use serde_json::{json, Value};

use crate::app::Shared;
use crate::auth::Role;
use crate::http::{authenticate_node, ApiError};

/// How long each store read may take.
const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Who may read a node's status.
const STATUS_READERS: &[Role] = &[Role::Admin, Role::Service];

type Labels = BTreeMap<String, String>;

/// Every series of gauge family `name`: its labels and value.
fn gauges(families: &[prometheus::proto::MetricFamily], name: &str) -> Vec<(Labels, f64)> {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            (labels, m.get_gauge().get_value())
        })
        .collect()
}

fn label(l: &Labels, k: &str) -> String {
    l.get(k).cloned().unwrap_or_default()
}

async fn read<T, E: std::fmt::Display>(
    what: &'static str,
    unavailable: &mut Vec<&'static str>,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(READ_DEADLINE, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(part = what, error = %e, "status: store read failed");
            unavailable.push(what);
            None
        }
        Err(_) => {
            unavailable.push(what);
            None
        }
    }
}

fn age(now: Timestamp, t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!((now - t).num_seconds().max(0)))
}

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// The status document of this node.
pub async fn collect(shared: &Shared) -> Value {
    let rt = &shared.rt;
    let now = rt.clock.now();
    let mut unavailable = Vec::new();
    let store_ok = read("store", &mut unavailable, rt.store.ping())
        .await
        .is_some();
    let mailbox = read("mailbox", &mut unavailable, rt.store.mailbox_depth()).await;
    let outbox = read("outbox", &mut unavailable, rt.store.outbox_lag()).await;
    let unroutable = read("unroutable", &mut unavailable, rt.store.unroutable_topics()).await;
    let door = read("door", &mut unavailable, rt.store.door_backlog()).await;
    let families = rt.metrics.registry.gather();
    let breakers: Vec<Value> = gauges(&families, "lockstep_vendor_breaker_state")
        .into_iter()
        .filter(|(_, v)| *v >= 1.0)
        .map(|(l, _)| {
            json!({
                "vendor": label(&l, "vendor"),
                "environment": label(&l, "environment"),
                "state": label(&l, "state"),
            })
        })
        .collect();
    let held: Vec<Value> = gauges(&families, "lockstep_vendor_accounts_held")
        .into_iter()
        .map(|(l, v)| json!({ "vendor": label(&l, "vendor"), "accounts": v as i64 }))
        .collect();
    let configured = rt.metrics.partitions_configured.get();
    let owned: Vec<i64> = (0..configured)
        .filter(|p| i32::try_from(*p).is_ok_and(|p| rt.fences.get(p).is_some()))
        .collect();
    let relay = gauges(&families, "lockstep_relay_connected_desktops")
        .first()
        .map_or(
            Value::Null,
            |(_, v)| json!({ "connectedDesktops": *v as i64 }),
        );
    json!({
        "nodeId": shared.node_id,
        "checkedAt": now.to_rfc3339(),
        "ready": {
            "store": store_ok,
            "bus": shared.bus_ready.load(std::sync::atomic::Ordering::SeqCst),
            "draining": shared.shutdown.is_begun(),
        },
        "breakers": breakers,
        "vendorAccountsHeld": held,
        "backlog": mailbox.map_or(Value::Null, |(n, oldest)| json!({
            "openMailboxEntries": n,
            "oldestDueAt": time(oldest),
            "oldestDueAgeSeconds": age(now, oldest),
        })),
        "outbox": outbox.map_or(Value::Null, |(n, oldest)| {
            let topics = unroutable.clone().unwrap_or_default();
            json!({
                "unpublishedRows": n,
                "oldestUnpublishedAt": time(oldest),
                "lagSeconds": age(now, oldest),
                "unroutableRows": topics.iter().map(|(_, n)| n).sum::<i64>(),
                "unroutableSubjects": topics
                    .iter()
                    .map(|(s, n)| json!({ "subject": s, "rows": n }))
                    .collect::<Vec<_>>(),
            })
        }),
        "door": door.map_or(Value::Null, |b| json!({
            "pendingRemovals": b.pending_removals,
            "oldestPendingRemovalAt": time(b.oldest_pending_removal),
            "oldestPendingRemovalAgeSeconds": age(now, b.oldest_pending_removal),
            "pendingIssues": b.pending_issues,
        })),
        "partitions": { "configured": configured, "owned": owned },
        "relay": relay,
        "unavailable": unavailable,
    })
}

/// `GET /api/v1/status`.
pub(crate) async fn get_status(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
) -> Result<HttpResponse, ApiError> {
    authenticate_node(&req, &shared, STATUS_READERS)?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(collect(&shared).await))
}

/// Why `lockstep status` could not tell.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The node did not answer.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The node refused.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// Where.
        url: String,
        /// Status.
        status: u16,
        /// Its error body.
        body: String,
    },
}

/// Asks the node at `base` (e.g. `http://127.0.0.1:8080`) for its status with `token`.
pub async fn fetch(base: &str, token: &str) -> Result<Value, StatusError> {
    let url = format!("{}/api/v1/status", base.trim_end_matches('/'));
    let unreachable = |source| StatusError::Unreachable {
        url: url.clone(),
        source,
    };
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(unreachable)?
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(unreachable)?;
    let status = r.status();
    if !status.is_success() {
        return Err(StatusError::Refused {
            url: url.clone(),
            status: status.as_u16(),
            body: r.text().await.unwrap_or_default(),
        });
    }
    r.json().await.map_err(unreachable)
}

fn n(v: &Value) -> String {
    match v {
        Value::Null => "?".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The status as lines for a terminal.
pub fn render(s: &Value) -> String {
    let mut out = Vec::new();
    let r = &s["ready"];
    let ok = |b: &Value| if b == true { "ok" } else { "DOWN" };
    out.push(format!(
        "node {} at {}: store {}, bus {}{}",
        n(&s["nodeId"]),
        n(&s["checkedAt"]),
        ok(&r["store"]),
        ok(&r["bus"]),
        if r["draining"] == true {
            ", DRAINING"
        } else {
            ""
        }
    ));
    let breakers: Vec<String> = s["breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{}/{} {}",
                n(&b["vendor"]),
                n(&b["environment"]),
                n(&b["state"])
            )
        })
        .collect();
    out.push(format!(
        "breakers:      {}",
        if breakers.is_empty() {
            "none yet".to_owned()
        } else {
            breakers.join(", ")
        }
    ));
    let held: Vec<String> = s["vendorAccountsHeld"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["accounts"].as_i64().unwrap_or(0) > 0)
        .map(|h| format!("{} ({})", n(&h["vendor"]), n(&h["accounts"])))
        .collect();
    out.push(format!(
        "accounts held: {}",
        if held.is_empty() {
            "none".to_owned()
        } else {
            held.join(", ")
        }
    ));
    let b = &s["backlog"];
    let when = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    out.push(if b.is_null() {
        "backlog:       unavailable".to_owned()
    } else {
        let timer = match (when(&b["oldestDueAt"]), when(&s["checkedAt"])) {
            (None, _) => "no timer".to_owned(),
            (Some(due), Some(now)) if due > now => {
                format!("next timer due {}", n(&b["oldestDueAt"]))
            }
            _ => format!(
                "oldest due timer {}, {} s overdue",
                n(&b["oldestDueAt"]),
                n(&b["oldestDueAgeSeconds"])
            ),
        };
        format!(
            "backlog:       {} open mailbox entries; {timer}",
            n(&b["openMailboxEntries"]),
        )
    });
    let o = &s["outbox"];
    out.push(if o.is_null() {
        "outbox:        unavailable".to_owned()
    } else {
        let subjects: Vec<String> = o["unroutableSubjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| format!("{} ({})", n(&u["subject"]), n(&u["rows"])))
            .collect();
        format!(
            "outbox:        {} unpublished, lag {} s; {} unroutable{}",
            n(&o["unpublishedRows"]),
            n(&o["lagSeconds"]).replace('?', "0"),
            n(&o["unroutableRows"]),
            if subjects.is_empty() {
                String::new()
            } else {
                format!(": {}", subjects.join(", "))
            }
        )
    });
    let d = &s["door"];
    if !d.is_null() {
        out.push(format!(
            "door:          {} removals to confirm{}, {} issues to confirm",
            n(&d["pendingRemovals"]),
            if d["pendingRemovals"].as_i64().unwrap_or(0) > 0 {
                format!(" (oldest {} s)", n(&d["oldestPendingRemovalAgeSeconds"]))
            } else {
                String::new()
            },
            n(&d["pendingIssues"])
        ));
    }
    let p = &s["partitions"];
    let owned: Vec<String> = p["owned"].as_array().into_iter().flatten().map(n).collect();
    out.push(if p["configured"] == 0 {
        "partitions:    none (embedded mode)".to_owned()
    } else {
        format!(
            "partitions:    owns {} of {}{}",
            owned.len(),
            n(&p["configured"]),
            if owned.is_empty() {
                String::new()
            } else {
                format!(" ({})", owned.join(", "))
            }
        )
    });
    out.push(match s["relay"].get("connectedDesktops") {
        Some(c) => format!("relay:         {} desktops connected", n(c)),
        None => "relay:         not running on this node".to_owned(),
    });
    if let Some(u) = s["unavailable"].as_array().filter(|u| !u.is_empty()) {
        out.push(format!(
            "unavailable:   {}",
            u.iter().map(n).collect::<Vec<_>>().join(", ")
        ));
    }
    out.join("\n")
}

/// `lockstep status`: asks the node at `url` (default: `[http] bind` of `settings`) with
/// `token` (default: `[http] service_token`, or the embedded data dir's token file) and
/// prints its status, as JSON with `json`.
pub async fn cli(
    settings: &lockstep_config::Settings,
    url: Option<String>,
    token: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u,
        None => {
            let bind = settings.http_bind;
            anyhow::ensure!(
                bind.port() != 0,
                "http.bind has port 0: name the node with --url"
            );
            let host = if bind.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                bind.ip().to_string()
            };
            format!("http://{host}:{}", bind.port())
        }
    };
    let token = match token {
        Some(t) => t,
        None => match &settings.service_token {
            Some(src) => lockstep_config::resolve_secret(src)?,
            None => {
                let path = settings.sqlite_path.with_file_name("service-token");
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "no token: give --token (or LOCKSTEP_TOKEN); {} unreadable: {e}",
                            path.display()
                        )
                    })?
            }
        },
    };
    let status = fetch(&url, &token).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("{}", render(&status));
    }
    Ok(())
}
