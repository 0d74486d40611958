//! The relay's metrics and the log lines that go with them: each event that is both logged
//! and counted is one method here, so the two cannot drift (STYLE "Logs, metrics").

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::events::CloseReason;
use crate::protocol::RefusalReason;

/// Job outcomes (`lockstep_relay_jobs_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobOutcomeLabel {
    Encoded,
    Failed,
    EncoderOffline,
    ResultTimeout,
    Invalid,
}

impl JobOutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Encoded => "encoded",
            Self::Failed => "failed",
            Self::EncoderOffline => "encoder_offline",
            Self::ResultTimeout => "result_timeout",
            Self::Invalid => "invalid",
        }
    }
}

/// Every metric of the relay, registered in the host's registry.
#[derive(Clone, Debug)]
pub(crate) struct RelayMetrics {
    connected: IntGauge,
    unauthenticated: IntGauge,
    jobs: IntCounterVec,
    dispatch: Histogram,
    reroutes: IntCounter,
    refused: IntCounterVec,
    closed: IntCounterVec,
    renewals: IntCounterVec,
}

impl RelayMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            connected: IntGauge::new(
                "lockstep_relay_connected_desktops",
                "Authenticated desktop sessions open now",
            )?,
            unauthenticated: IntGauge::new(
                "lockstep_relay_unauthenticated_connections",
                "Connections accepted and not yet authenticated",
            )?,
            jobs: IntCounterVec::new(
                Opts::new(
                    "lockstep_relay_jobs_total",
                    "Encode jobs dispatched, by outcome",
                ),
                &["outcome"],
            )?,
            dispatch: Histogram::with_opts(
                HistogramOpts::new(
                    "lockstep_relay_dispatch_duration_seconds",
                    "From dispatch to the job's outcome, re-routes included",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0,
                ]),
            )?,
            reroutes: IntCounter::new(
                "lockstep_relay_job_reroutes_total",
                "Jobs given to another desktop after an ack timeout or a disconnect",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "lockstep_relay_refused_total",
                    "Connections and frames refused, by reason",
                ),
                &["reason"],
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "lockstep_relay_sessions_closed_total",
                    "Desktop sessions closed, by reason",
                ),
                &["reason"],
            )?,
            renewals: IntCounterVec::new(
                Opts::new(
                    "lockstep_relay_certificate_renewals_total",
                    "Certificate renewal requests, by outcome (renewed or the refusal's reason)",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.unauthenticated.clone()))?;
        registry.register(Box::new(m.jobs.clone()))?;
        registry.register(Box::new(m.dispatch.clone()))?;
        registry.register(Box::new(m.reroutes.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        registry.register(Box::new(m.renewals.clone()))?;
        Ok(m)
    }

    pub(crate) fn dispatch_timer(&self) -> prometheus::HistogramTimer {
        self.dispatch.start_timer()
    }

    pub(crate) fn job(&self, outcome: JobOutcomeLabel) {
        self.jobs.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(crate) fn rerouted(&self, job_id: &str, desktop: &str, why: &'static str) {
        tracing::info!(job_id, desktop, why, "encode job re-routed");
        self.reroutes.inc();
    }

    pub(crate) fn refused(&self, reason: RefusalReason, peer: &str) {
        tracing::warn!(reason = reason.as_str(), peer, "relay connection refused");
        self.refused.with_label_values(&[reason.as_str()]).inc();
    }

    pub(crate) fn renewal(&self, certificate: &str, desktop: &str, outcome: &'static str) {
        match outcome {
            "renewed" => tracing::info!(certificate, desktop, "certificate renewed"),
            // an agent that does not know its expiry asks once and is told
            "not_due" => tracing::info!(certificate, desktop, "certificate not due for renewal"),
            _ => tracing::warn!(
                certificate,
                desktop,
                reason = outcome,
                "certificate renewal refused"
            ),
        }
        self.renewals.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn unauthenticated(&self) -> &IntGauge {
        &self.unauthenticated
    }

    pub(crate) fn session_opened(
        &self,
        session: &str,
        tenant: &str,
        property: &str,
        desktop: &str,
    ) {
        tracing::info!(session, tenant, property, desktop, "desktop session opened");
        self.connected.inc();
    }

    pub(crate) fn session_closed(&self, session: &str, desktop: &str, reason: CloseReason) {
        tracing::info!(
            session,
            desktop,
            reason = reason.as_str(),
            "desktop session closed"
        );
        self.connected.dec();
        self.closed.with_label_values(&[reason.as_str()]).inc();
    }
}
