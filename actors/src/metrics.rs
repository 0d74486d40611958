//! Prometheus metrics of the runtime (DESIGN §10). Names follow
//! `lockstep_<subsystem>_<name>_<unit>`; labels are bounded sets, never ids.

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// All metrics, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Consumed messages by outcome (`accepted`, `duplicate`, `dead_lettered`).
    pub intake_messages: IntCounterVec,
    /// Dead-lettered messages by reason.
    pub dead_letters: IntCounterVec,
    /// Vendor calls by vendor, op and outcome.
    pub vendor_calls: IntCounterVec,
    /// Vendor call latency.
    pub vendor_call_seconds: HistogramVec,
    /// Saga steps by step and outcome.
    pub saga_steps: IntCounterVec,
    /// Outbox rows published.
    pub outbox_published: IntCounterVec,
    /// Outbox publish failures by reason (`returned`, `nacked`, `unconfirmed`, `error`).
    pub outbox_failures: IntCounterVec,
    /// Open mailbox entries.
    pub mailbox_open: IntGauge,
    /// Age in seconds of the oldest due, open mailbox entry.
    pub mailbox_oldest_due_age_seconds: IntGauge,
    /// Unpublished outbox rows.
    pub outbox_unpublished: IntGauge,
    /// Age in seconds of the oldest unpublished outbox row.
    pub outbox_oldest_age_seconds: IntGauge,
    /// Live actors by kind.
    pub live_actors: IntGaugeVec,
    /// Partitions owned by this node.
    pub partitions_owned: IntGauge,
    /// Vendor workers restarted by their supervisor (panic or wedged call).
    pub vendor_worker_restarts: IntCounterVec,
    /// Breaker state per (vendor, environment): 1 for the current state, 0 for the others.
    pub breaker_state: IntGaugeVec,
    /// Breaker transitions by target state.
    pub breaker_transitions: IntCounterVec,
    /// Door truth: revocations not yet confirmed at the door (DESIGN §3.5).
    pub door_pending_removals: IntGauge,
    /// Door truth: age of the oldest unconfirmed revocation.
    pub door_oldest_pending_removal_age_seconds: IntGauge,
    /// Door truth: issuances and updates not yet confirmed at the door.
    pub door_pending_issues: IntGauge,
    /// Drift: Lockstep objects found at a device that should not be there, deleted.
    pub drift_orphans_deleted: IntCounterVec,
    /// Drift: credentials missing at a device, re-issued.
    pub drift_missing_reissued: IntCounterVec,
    /// Drift reconciliation runs.
    pub drift_runs: IntCounterVec,
    /// Device health probes, by vendor and outcome (`ok`, `vendor_error`).
    pub device_probes: IntCounterVec,
    /// Vendor webhooks handled, by vendor and outcome (`processed`, `ignored`,
    /// `unknown_device`).
    pub webhooks: IntCounterVec,
    /// Device health signals raised (offline, online, battery_low, clock_skew_warn,
    /// clock_skew_alert), by vendor.
    pub device_signals: IntCounterVec,
    /// Messages the broker dead-lettered on its own (delivery limit, expiry, rejection),
    /// by queue kind (`intake`, `partition`) and the broker's reason (DESIGN §4: counted
    /// and alerted; Lockstep's own refusals are `lockstep_intake_dead_letters_total`).
    pub broker_dead_letters: IntCounterVec,
    /// Outbox rows the broker returned as unroutable, kept until something is bound.
    pub outbox_unroutable: IntGauge,
    /// Store calls that failed on a path that holds its work and retries (`intake`,
    /// `partition`, `outbox`, `timers`): an outage is visible while it lasts.
    pub store_errors: IntCounterVec,
    /// RabbitMQ sessions that ended, by cause (`broker`, `shutdown`).
    pub amqp_session_ends: IntCounterVec,
    /// Commits refused because another node took the partition (a stale writer fenced).
    pub fenced_commits: IntCounterVec,
    /// Vendor accounts whose work is held for an account-level error (bad credentials,
    /// suspended account, exhausted quota), by vendor: 1 per held account.
    pub vendor_accounts_held: IntGaugeVec,
    /// The stale-key window, per device: from the moment Lockstep learned a key must go
    /// (the cancel, checkout, revoke or suspend arrived) to the vendor's confirmation that
    /// it is gone from the door, in business seconds.
    pub stale_key_window_seconds: HistogramVec,
    /// Partitions configured (every node the same): with `lockstep_partitions_owned` summed
    /// over the nodes, says whether a partition has no owner.
    pub partitions_configured: IntGauge,
    /// Real seconds vendor calls spent waiting for their account's rate limit.
    pub rate_limit_wait_seconds: CounterVec,
    /// Adapters whose vendor secret is due for rotation within 7 days (or overdue).
    pub vendor_secrets_rotation_due: IntGaugeVec,
    /// Unrevoked offline-issuance certificates expiring within 7 days.
    pub offline_certificates_expiring: IntGauge,
    /// 1 while the node is ready (store and broker reachable, not draining), as `/readyz`.
    pub ready: IntGauge,
    /// Door anomalies detected (US-MEL-0079), by rule.
    pub door_anomalies: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric names are valid");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// Creates the series of the bounded label values known up front at 0, so a counter's
    /// first event is an increase Prometheus can see (`increase()` misses a series that
    /// appears already at 1) and every series is on the dashboard from the start.
    pub fn touch_known_series(&self, vendors: &[&str]) {
        for reason in [
            "malformed",
            "unknown_subject",
            "invalid_payload",
            "unauthorized_publisher",
            "subject_mismatch",
            "unknown_property",
            "unserved_room",
            "window_ended",
            "property_deactivated",
            "store_refused",
        ] {
            self.dead_letters.with_label_values(&[reason]);
        }
        for queue in ["intake", "partition"] {
            for reason in ["delivery_limit", "expired", "rejected", "maxlen", "other"] {
                self.broker_dead_letters.with_label_values(&[queue, reason]);
            }
        }
        for path in ["intake", "partition", "outbox", "timers"] {
            self.store_errors.with_label_values(&[path]);
        }
        for path in ["intake", "step"] {
            self.fenced_commits.with_label_values(&[path]);
        }
        for cause in ["broker", "shutdown"] {
            self.amqp_session_ends.with_label_values(&[cause]);
        }
        for reason in ["returned", "nacked", "unconfirmed", "error"] {
            self.outbox_failures.with_label_values(&[reason]);
        }
        for vendor in vendors {
            self.vendor_accounts_held.with_label_values(&[vendor]);
            self.vendor_worker_restarts.with_label_values(&[vendor]);
            self.rate_limit_wait_seconds.with_label_values(&[vendor]);
            self.stale_key_window_seconds.with_label_values(&[vendor]);
            for outcome in [
                "processed",
                "ignored",
                "unknown_device",
                "signature_invalid",
            ] {
                self.webhooks.with_label_values(&[vendor, outcome]);
            }
        }
    }

    /// A fresh registry with every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let vendor_call_seconds = HistogramVec::new(
            HistogramOpts::new(
                "lockstep_vendor_call_duration_seconds",
                "Vendor API call latency",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["vendor", "op"],
        )
        .expect("metric names are valid");
        r.register(Box::new(vendor_call_seconds.clone()))
            .expect("metric registered once");
        let live_actors = IntGaugeVec::new(
            Opts::new("lockstep_actors_live", "Live actors by kind"),
            &["kind"],
        )
        .expect("metric names are valid");
        r.register(Box::new(live_actors.clone()))
            .expect("metric registered once");
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "lockstep_vendor_breaker_state",
                "Vendor circuit breaker state (1 = current)",
            ),
            &["vendor", "environment", "state"],
        )
        .expect("metric names are valid");
        r.register(Box::new(breaker_state.clone()))
            .expect("metric registered once");
        let stale_key_window_seconds = HistogramVec::new(
            HistogramOpts::new(
                "lockstep_stale_key_window_seconds",
                "From learning a key must go to the vendor confirming its removal, per device",
            )
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0,
            ]),
            &["vendor"],
        )
        .expect("metric names are valid");
        r.register(Box::new(stale_key_window_seconds.clone()))
            .expect("metric registered once");
        let rate_limit_wait_seconds = CounterVec::new(
            Opts::new(
                "lockstep_vendor_rate_limit_wait_seconds_total",
                "Real seconds vendor calls waited for their account's rate limit",
            ),
            &["vendor"],
        )
        .expect("metric names are valid");
        r.register(Box::new(rate_limit_wait_seconds.clone()))
            .expect("metric registered once");
        let vendor_secrets_rotation_due = IntGaugeVec::new(
            Opts::new(
                "lockstep_vendor_secrets_rotation_due",
                "Adapters whose vendor secret is due for rotation within 7 days",
            ),
            &["vendor"],
        )
        .expect("metric names are valid");
        r.register(Box::new(vendor_secrets_rotation_due.clone()))
            .expect("metric registered once");
        let vendor_accounts_held = IntGaugeVec::new(
            Opts::new(
                "lockstep_vendor_accounts_held",
                "Vendor accounts whose work is held for an account-level error",
            ),
            &["vendor"],
        )
        .expect("metric names are valid");
        r.register(Box::new(vendor_accounts_held.clone()))
            .expect("metric registered once");
        Self {
            stale_key_window_seconds,
            rate_limit_wait_seconds,
            vendor_secrets_rotation_due,
            partitions_configured: gauge(
                &r,
                "lockstep_partitions_configured",
                "Partitions configured (the same on every node)",
            ),
            ready: gauge(
                &r,
                "lockstep_ready",
                "1 while the node is ready: store and broker reachable, not draining",
            ),
            offline_certificates_expiring: gauge(
                &r,
                "lockstep_offline_certificates_expiring",
                "Unrevoked offline-issuance certificates expiring within 7 days",
            ),
            vendor_accounts_held,
            broker_dead_letters: counter(
                &r,
                "lockstep_broker_dead_letters_total",
                "Messages the broker dead-lettered on its own, by queue kind and reason",
                &["queue", "reason"],
            ),
            outbox_unroutable: gauge(
                &r,
                "lockstep_outbox_unroutable_rows",
                "Outbox rows returned as unroutable, kept until a consumer is bound",
            ),
            store_errors: counter(
                &r,
                "lockstep_store_errors_total",
                "Store calls that failed on a path that holds its work and retries",
                &["path"],
            ),
            amqp_session_ends: counter(
                &r,
                "lockstep_amqp_session_ends_total",
                "RabbitMQ sessions that ended, by cause",
                &["cause"],
            ),
            fenced_commits: counter(
                &r,
                "lockstep_partition_fenced_total",
                "Commits refused because another node owns the partition now",
                &["path"],
            ),
            breaker_state,
            drift_orphans_deleted: counter(
                &r,
                "lockstep_drift_orphans_deleted_total",
                "Lockstep objects found at a device that should not be there, deleted",
                &["vendor"],
            ),
            drift_missing_reissued: counter(
                &r,
                "lockstep_drift_missing_reissued_total",
                "Credentials missing at a device, re-issued",
                &["vendor"],
            ),
            drift_runs: counter(
                &r,
                "lockstep_drift_runs_total",
                "Drift reconciliation runs",
                &["outcome"],
            ),
            device_probes: counter(
                &r,
                "lockstep_device_probes_total",
                "Device health probes",
                &["vendor", "outcome"],
            ),
            webhooks: counter(
                &r,
                "lockstep_webhooks_total",
                "Vendor webhooks handled",
                &["vendor", "outcome"],
            ),
            device_signals: counter(
                &r,
                "lockstep_device_signals_total",
                "Device health signals raised (offline, online, battery_low, clock skew)",
                &["vendor", "signal"],
            ),
            door_pending_removals: gauge(
                &r,
                "lockstep_door_pending_removals",
                "Revocations not yet confirmed at the door",
            ),
            door_oldest_pending_removal_age_seconds: gauge(
                &r,
                "lockstep_door_oldest_pending_removal_age_seconds",
                "Age of the oldest revocation not yet confirmed at the door",
            ),
            door_pending_issues: gauge(
                &r,
                "lockstep_door_pending_issues",
                "Issuances and updates not yet confirmed at the door",
            ),
            breaker_transitions: counter(
                &r,
                "lockstep_vendor_breaker_transitions_total",
                "Vendor circuit breaker transitions by target state",
                &["vendor", "environment", "to"],
            ),
            intake_messages: counter(
                &r,
                "lockstep_intake_messages_total",
                "Consumed messages by outcome",
                &["outcome"],
            ),
            dead_letters: counter(
                &r,
                "lockstep_intake_dead_letters_total",
                "Messages sent to the dead-letter queue by reason",
                &["reason"],
            ),
            vendor_calls: counter(
                &r,
                "lockstep_vendor_calls_total",
                "Vendor API calls by outcome",
                &["vendor", "op", "outcome"],
            ),
            saga_steps: counter(
                &r,
                "lockstep_saga_steps_total",
                "Saga steps by step and outcome",
                &["step", "outcome"],
            ),
            outbox_published: counter(
                &r,
                "lockstep_outbox_published_total",
                "Outbox rows published with a clean broker ack",
                &["subject"],
            ),
            outbox_failures: counter(
                &r,
                "lockstep_outbox_publish_failures_total",
                "Outbox publish failures by reason",
                &["reason"],
            ),
            mailbox_open: gauge(&r, "lockstep_mailbox_open_entries", "Open mailbox entries"),
            mailbox_oldest_due_age_seconds: gauge(
                &r,
                "lockstep_mailbox_oldest_due_age_seconds",
                "Age of the oldest due open mailbox entry",
            ),
            outbox_unpublished: gauge(
                &r,
                "lockstep_outbox_unpublished_rows",
                "Unpublished outbox rows",
            ),
            outbox_oldest_age_seconds: gauge(
                &r,
                "lockstep_outbox_oldest_unpublished_age_seconds",
                "Age of the oldest unpublished outbox row",
            ),
            partitions_owned: gauge(&r, "lockstep_partitions_owned", "Partitions this node owns"),
            vendor_worker_restarts: counter(
                &r,
                "lockstep_vendor_worker_restarts_total",
                "Vendor workers restarted by their supervisor",
                &["vendor"],
            ),
            door_anomalies: counter(
                &r,
                "lockstep_door_anomalies_total",
                "Door anomalies detected, by rule",
                &["rule"],
            ),
            vendor_call_seconds,
            live_actors,
            registry: r,
        }
    }
}
