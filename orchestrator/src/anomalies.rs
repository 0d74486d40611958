//! Door anomaly detection at the door attempts (epic `000` US-MEL-0079): every attempt a
//! webhook or a read-back records is judged by the property's rules
//! (`[properties.anomalies]`, validated by `lockstep_domain::anomaly` at start-up); each
//! anomaly becomes, in the same commit as the attempt, a
//! `melmastoon.lock.anomaly.detected.v1` event and an audit row (`action = "anomaly"`,
//! `reason` = the rule), and once committed a `lockstep_door_anomalies_total{rule}` count
//! and a WARN line with ids (never a PIN, card number, vendor reference or vendor event id).
//!
//! The two rules that look across attempts (`denied_burst`, `impossible_travel`) keep a
//! bounded memory in this process ([`lockstep_domain::AnomalyDetector`]): with several
//! nodes, each node sees only the webhooks it receives, so a burst or a pair split across
//! nodes (the vendor calling back two nodes behind a load balancer) is not seen as one.

use std::collections::HashMap;
use std::sync::Mutex;

use lockstep_actors::events_out;
use lockstep_actors::Metrics;
use lockstep_config::{RawAnomalies, RawAnomalyRule, RawProperty};
use lockstep_domain::{
    Anomaly, AnomalyDetail, AnomalyDetector, AnomalyId, AnomalyRules, AnomalyRulesInput,
    AttemptContext, DomainError, KeyCredential, KeyCredentialAttempt, PropertyId, RuleInput,
    TenantId, Timestamp,
};
use lockstep_persistence::{AuditRow, OutboxRow};
use serde_json::{json, Value};
use tracing::warn;

/// The subject of a detected anomaly.
pub const DETECTED: &str = "melmastoon.lock.anomaly.detected.v1";

/// A property's anomaly rules that do not validate.
#[derive(Debug, thiserror::Error)]
#[error("config key `properties.anomalies.{field}` of property {property} is invalid: {reason}")]
pub struct RulesError {
    /// The property.
    pub property: String,
    /// The rule's key (`denied_burst.threshold`).
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn rule_input(r: &RawAnomalyRule) -> RuleInput {
    RuleInput {
        enabled: r.enabled,
        grace_secs: r.grace_secs,
        include_denied: r.include_denied,
        threshold: r.threshold,
        window_secs: r.window_secs,
    }
}

/// Validates one property's `[properties.anomalies]`.
pub fn rules_of(property: &str, raw: &RawAnomalies) -> Result<AnomalyRules, RulesError> {
    AnomalyRules::new(AnomalyRulesInput {
        invalid_credential_entry: rule_input(&raw.invalid_credential_entry),
        wrong_room: rule_input(&raw.wrong_room),
        master_outside_shift: rule_input(&raw.master_outside_shift),
        denied_burst: rule_input(&raw.denied_burst),
        impossible_travel: rule_input(&raw.impossible_travel),
    })
    .map_err(|e| match e {
        DomainError::Validation { field, reason } => RulesError {
            property: property.to_owned(),
            field,
            reason,
        },
        other => RulesError {
            property: property.to_owned(),
            field: "rules",
            reason: other.to_string(),
        },
    })
}

/// Every property's rules and the process's memory of recent attempts.
#[derive(Debug, Default)]
pub struct Anomalies {
    rules: HashMap<(TenantId, PropertyId), AnomalyRules>,
    defaults: AnomalyRules,
    detector: Mutex<AnomalyDetector>,
}

impl Anomalies {
    /// The configured properties' rules (a property without `[properties.anomalies]` gets
    /// the defaults); the first invalid one is refused with its key.
    pub fn new(properties: &[RawProperty]) -> Result<Self, RulesError> {
        let mut rules = HashMap::new();
        for p in properties {
            let (Some(raw), Ok(tenant), Ok(property)) = (
                &p.anomalies,
                TenantId::parse(&p.tenant_id),
                PropertyId::parse(&p.property_id),
            ) else {
                // ids are checked where the property is registered
                continue;
            };
            rules.insert((tenant, property), rules_of(&p.property_id, raw)?);
        }
        Ok(Self {
            rules,
            ..Self::default()
        })
    }

    /// The rules of a property.
    pub fn rules(&self, tenant: TenantId, property: &PropertyId) -> &AnomalyRules {
        self.rules
            .get(&(tenant, property.clone()))
            .unwrap_or(&self.defaults)
    }

    /// Judges one recorded attempt (see `lockstep_domain::anomaly`).
    pub fn detect(&self, ctx: &AttemptContext<'_>) -> Vec<Anomaly> {
        let rules = self.rules(ctx.attempt.tenant_id, &ctx.attempt.property_id);
        // the lock is held only for the pure evaluation, never across an await
        let mut detector = self
            .detector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        detector.detect(rules, ctx)
    }
}

/// One anomaly, ready to be committed beside its attempt.
#[derive(Debug, Clone)]
pub struct Detected {
    id: AnomalyId,
    anomaly: Anomaly,
    attempt: KeyCredentialAttempt,
    holder_kind: Option<&'static str>,
    at: Timestamp,
}

impl Detected {
    /// `anomaly`, found on `attempt` (of `credential`) at `at`.
    pub fn new(
        anomaly: Anomaly,
        attempt: &KeyCredentialAttempt,
        credential: Option<&KeyCredential>,
        at: Timestamp,
    ) -> Self {
        Self {
            id: AnomalyId::generate(),
            anomaly,
            attempt: attempt.clone(),
            holder_kind: credential.map(|c| c.holder_kind().as_str()),
            at,
        }
    }

    fn details(&self) -> Value {
        let ts = |t: Timestamp| t.to_rfc3339();
        match &self.anomaly.detail {
            AnomalyDetail::InvalidCredentialEntry { status, since } => json!({
                "credentialStatus": status.as_str(),
                "since": ts(*since),
            }),
            AnomalyDetail::WrongRoom {
                credential_rooms,
                device_rooms,
            } => json!({
                "credentialRoomIds": credential_rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "deviceRoomIds": device_rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            }),
            AnomalyDetail::MasterOutsideShift { shift } => json!({
                "shiftFrom": ts(shift.from()),
                "shiftUntil": ts(shift.until()),
            }),
            AnomalyDetail::DeniedBurst {
                denials,
                window,
                first_at,
            } => json!({
                "denials": denials,
                "windowSeconds": window.num_seconds(),
                "firstAttemptAt": ts(*first_at),
            }),
            AnomalyDetail::ImpossibleTravel {
                other_device,
                other_at,
                apart,
            } => json!({
                "otherDeviceId": other_device.as_str(),
                "otherAttemptedAt": ts(*other_at),
                "secondsApart": apart.num_milliseconds() as f64 / 1000.0,
            }),
        }
    }

    /// The `anomaly.detected.v1` outbox row.
    pub fn event_row(&self) -> OutboxRow {
        let a = &self.attempt;
        events_out::event_row(
            DETECTED,
            a.tenant_id,
            &a.property_id,
            self.id.as_str(),
            json!({
                "anomalyId": self.id.as_str(),
                "rule": self.anomaly.rule().as_str(),
                "tenantId": a.tenant_id.to_string(),
                "propertyId": a.property_id.as_str(),
                "deviceId": a.device_id.as_str(),
                "attemptId": a.id.as_str(),
                "keyCredentialId": a.key_credential_id.as_ref().map(|k| k.as_str()),
                "holderKind": self.holder_kind,
                "outcome": a.outcome.as_str(),
                "method": a.method,
                "vendor": a.vendor.as_str(),
                "attemptedAt": a.attempted_at.to_rfc3339(),
                "detectedAt": self.at.to_rfc3339(),
                "details": self.details(),
            }),
            self.at,
        )
    }

    /// The audit row: `action = "anomaly"`, `reason` = the rule, in the property's chain
    /// (and the credential's trail when there is one).
    pub fn audit_row(&self) -> AuditRow {
        let a = &self.attempt;
        AuditRow {
            id: ulid::Ulid::new().to_string(),
            tenant_id: a.tenant_id,
            property_id: a.property_id.clone(),
            credential_id: a.key_credential_id.clone(),
            device_id: Some(a.device_id.clone()),
            actor_kind: "detector".into(),
            action: "anomaly".into(),
            reason: Some(self.anomaly.rule().as_str().to_owned()),
            vendor: Some(a.vendor),
            trace_id: None,
            created_at: self.at,
            payload: json!({
                "anomalyId": self.id.as_str(),
                "attemptId": a.id.as_str(),
                "outcome": a.outcome.as_str(),
                "attemptedAt": a.attempted_at.to_rfc3339(),
                "details": self.details(),
            }),
        }
    }

    /// Once committed: the count and the WARN line (ids only).
    pub fn report(&self, metrics: &Metrics) {
        let a = &self.attempt;
        let rule = self.anomaly.rule().as_str();
        metrics.door_anomalies.with_label_values(&[rule]).inc();
        warn!(
            rule,
            anomaly = %self.id,
            attempt = %a.id,
            tenant = %a.tenant_id,
            property = %a.property_id,
            device = %a.device_id,
            credential = a.key_credential_id.as_ref().map(|k| k.as_str()),
            outcome = a.outcome.as_str(),
            "door anomaly detected"
        );
    }
}

/// Every rule's series at 0 from the start, so the first anomaly is an increase.
pub fn touch_series(metrics: &Metrics) {
    for r in lockstep_domain::AnomalyRule::ALL {
        metrics.door_anomalies.with_label_values(&[r.as_str()]);
    }
}
