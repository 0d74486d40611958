//! Every message has a JSON Schema in docs/relay/; every example validates and round-trips
//! through the serde types; what the Rust side builds validates too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lockstep_relay::protocol::{
    self, decode_desktop, decode_server, CertificateBody, CertificateRenewed, Challenge,
    DesktopMessage, Heartbeat, Nonce, PublicKeyB64, RefusalReason, RenewCertificate, RenewalId,
    RenewalRefusalReason, RenewalRefused, ServerMessage, SignatureB64,
};
use serde_json::Value;

const FROM_DESKTOP: &[&str] = &[
    "hello",
    "auth",
    "job_ack",
    "job_result",
    "provisional_batch",
    "renew_certificate",
];
const FROM_SERVER: &[&str] = &[
    "challenge",
    "welcome",
    "refused",
    "encode_job",
    "sync_result",
    "certificate_renewed",
    "renewal_refused",
];
const EITHER_WAY: &[&str] = &["ping", "pong"];

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/relay")
}

fn schema(kind: &str) -> (Value, jsonschema::Validator) {
    let text = std::fs::read_to_string(docs().join(format!("{kind}.schema.json")))
        .unwrap_or_else(|e| panic!("docs/relay/{kind}.schema.json: {e}"));
    let value: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&value).unwrap();
    (value, validator)
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| e.to_string()).collect()
}

/// Decodes and re-encodes a frame through the serde types of its direction(s).
fn round_trip(kind: &str, example: &Value) -> Vec<Value> {
    let text = example.to_string();
    let mut out = Vec::new();
    if FROM_DESKTOP.contains(&kind) || EITHER_WAY.contains(&kind) {
        let m = decode_desktop(&text).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
        assert_eq!(m.kind(), kind);
        out.push(serde_json::from_str(&protocol::encode(&m)).unwrap());
    }
    if FROM_SERVER.contains(&kind) || EITHER_WAY.contains(&kind) {
        let m = decode_server(&text).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
        assert_eq!(m.kind(), kind);
        out.push(serde_json::from_str(&protocol::encode(&m)).unwrap());
    }
    out
}

fn all_kinds() -> Vec<&'static str> {
    FROM_DESKTOP
        .iter()
        .chain(FROM_SERVER)
        .chain(EITHER_WAY)
        .copied()
        .collect()
}

#[test]
fn every_message_type_has_a_schema_and_no_schema_is_orphaned() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(docs())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".schema.json").map(str::to_owned)
        })
        .collect();
    let expected: BTreeSet<String> = all_kinds().into_iter().map(str::to_owned).collect();
    assert_eq!(on_disk, expected);
}

#[test]
fn every_example_validates_against_its_schema_and_round_trips() {
    let mut checked = 0;
    for kind in all_kinds() {
        let (value, validator) = schema(kind);
        let examples = value["examples"]
            .as_array()
            .expect("each schema has examples");
        assert!(!examples.is_empty(), "{kind} has no example");
        for example in examples {
            assert_eq!(
                errors(&validator, example),
                Vec::<String>::new(),
                "{kind}: {example}"
            );
            for back in round_trip(kind, example) {
                assert_eq!(&back, example, "{kind} does not round-trip");
                assert!(validator.is_valid(&back));
            }
            checked += 1;
        }
    }
    assert!(checked >= 12);
}

#[test]
fn unknown_fields_are_refused_by_schema_and_types_alike() {
    for kind in all_kinds() {
        let (value, validator) = schema(kind);
        let mut example = value["examples"][0].clone();
        example["surprise"] = Value::from(1);
        assert!(
            !validator.is_valid(&example),
            "{kind} schema accepts an unknown field"
        );
        let text = example.to_string();
        if FROM_DESKTOP.contains(&kind) {
            assert!(decode_desktop(&text).is_err(), "{kind}");
        } else {
            assert!(decode_server(&text).is_err(), "{kind}");
        }
        let mut wrong_version = value["examples"][0].clone();
        wrong_version["v"] = Value::from(2);
        assert!(!validator.is_valid(&wrong_version));
        let text = wrong_version.to_string();
        let refused = if FROM_DESKTOP.contains(&kind) {
            decode_desktop(&text).err()
        } else {
            decode_server(&text).err()
        };
        assert_eq!(
            refused,
            Some(protocol::ProtocolError::UnsupportedVersion(2)),
            "{kind}"
        );
    }
}

#[test]
fn messages_the_server_builds_validate_against_their_schemas() {
    let (_, refused) = schema("refused");
    for reason in [
        RefusalReason::MalformedFrame,
        RefusalReason::FrameTooLarge,
        RefusalReason::UnsupportedVersion,
        RefusalReason::UnexpectedMessage,
        RefusalReason::HandshakeTimeout,
        RefusalReason::TooManyConnections,
        RefusalReason::CertificateUnknown,
        RefusalReason::CertificateRevoked,
        RefusalReason::OfflineCertExpired,
        RefusalReason::CertificateInvalid,
        RefusalReason::PropertyMismatch,
        RefusalReason::DesktopMismatch,
        RefusalReason::NonceReplayed,
        RefusalReason::NonceUnknown,
        RefusalReason::ClockSkew,
        RefusalReason::SignatureInvalid,
        RefusalReason::DirectoryUnavailable,
    ] {
        let m = ServerMessage::Refused(reason.refusal("x".repeat(300)));
        let v: Value = serde_json::from_str(&protocol::encode(&m)).unwrap();
        assert_eq!(errors(&refused, &v), Vec::<String>::new(), "{reason:?}");
    }
    let (_, challenge) = schema("challenge");
    let m = ServerMessage::Challenge(Challenge {
        nonce: Nonce::generate(),
        server_time: chrono::DateTime::from_timestamp(1_796_133_600, 123_000_000).unwrap(),
        audience: "lockstep-relay".into(),
        versions: vec![1],
    });
    let v: Value = serde_json::from_str(&protocol::encode(&m)).unwrap();
    assert_eq!(errors(&challenge, &v), Vec::<String>::new());
    let (_, ping) = schema("ping");
    let v: Value = serde_json::from_str(&protocol::encode(&ServerMessage::Ping(Heartbeat {
        seq: 7,
    })))
    .unwrap();
    assert!(ping.is_valid(&v));
}

#[test]
fn renewal_messages_built_from_real_certificates_validate_and_round_trip() {
    use lockstep_domain::{KeyCredentialKind, OfflineIssuance, PropertyId, TenantId};
    use lockstep_relay::agent::AgentKey;
    let old_key = AgentKey::generate();
    let new_key = AgentKey::generate();
    let issued = chrono::DateTime::from_timestamp(1_796_133_600, 123_000_000).unwrap();
    let old = OfflineIssuance::issue(
        TenantId::generate(),
        PropertyId::parse("ppt_demo").unwrap(),
        "desk-01",
        &old_key.public_key_base64(),
        vec![KeyCredentialKind::RfidCard, KeyCredentialKind::PinCode],
        &[KeyCredentialKind::RfidCard, KeyCredentialKind::PinCode],
        24,
        issued,
    )
    .unwrap();
    let due = old.rotation_due_at();
    let next = old.renew(&new_key.public_key_base64(), due).unwrap();
    let request_id = RenewalId::parse("01JD8Z7A2B3C4D5E6F7G8H9J0K").unwrap();

    let (_, request_schema) = schema("renew_certificate");
    let public_key = PublicKeyB64::try_from(new_key.public_key_base64()).unwrap();
    let request = DesktopMessage::RenewCertificate(RenewCertificate {
        request_id: request_id.clone(),
        public_key_ed25519: public_key,
        signed_at: due,
        signature: SignatureB64::from_signature(&new_key.sign(b"anything")),
    });
    let text = protocol::encode(&request);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(errors(&request_schema, &v), Vec::<String>::new());
    assert_eq!(decode_desktop(&text).unwrap(), request);

    let (_, renewed_schema) = schema("certificate_renewed");
    let signature = SignatureB64::from_signature(&new_key.sign(next.signed_payload().as_bytes()));
    let renewed = ServerMessage::CertificateRenewed(CertificateRenewed {
        request_id: request_id.clone(),
        replaces: old.id.as_str().to_owned(),
        certificate: CertificateBody::from(&next),
        signature,
    });
    let text = protocol::encode(&renewed);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(errors(&renewed_schema, &v), Vec::<String>::new());
    let ServerMessage::CertificateRenewed(back) = decode_server(&text).unwrap() else {
        panic!("certificate_renewed decodes as itself")
    };
    // what the desktop rebuilds is the certificate Lockstep signed, byte for byte
    let rebuilt = back
        .certificate
        .to_certificate(Some(&back.replaces))
        .unwrap();
    assert_eq!(rebuilt, next);
    assert_eq!(rebuilt.signed_payload(), next.signed_payload());

    let (_, refused_schema) = schema("renewal_refused");
    for reason in [
        RenewalRefusalReason::NotDue,
        RenewalRefusalReason::CertificateRevoked,
        RenewalRefusalReason::CertificateExpired,
        RenewalRefusalReason::CertificateInvalid,
        RenewalRefusalReason::SameKey,
        RenewalRefusalReason::SignatureInvalid,
        RenewalRefusalReason::ClockSkew,
        RenewalRefusalReason::AlreadyRenewed,
        RenewalRefusalReason::NotOffered,
        RenewalRefusalReason::Unavailable,
    ] {
        let m = ServerMessage::RenewalRefused(RenewalRefused {
            request_id: request_id.clone(),
            reason,
            message: "x".into(),
            certificate_expires_at: old.expires_at,
            renewable_from: (reason == RenewalRefusalReason::NotDue).then_some(due),
        });
        let text = protocol::encode(&m);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            errors(&refused_schema, &v),
            Vec::<String>::new(),
            "{reason:?}"
        );
        assert_eq!(v["reason"], reason.as_str());
        assert_eq!(decode_server(&text).unwrap(), m);
    }
    // a key that is not 32 bytes of a curve point is no frame of the protocol
    let bad = text_with(&request, "publicKeyEd25519", "bm90LWEta2V5");
    assert!(decode_desktop(&bad).is_err());
}

fn text_with(message: &DesktopMessage, field: &str, value: &str) -> String {
    let mut v: Value = serde_json::from_str(&protocol::encode(message)).unwrap();
    v[field] = Value::from(value);
    v.to_string()
}
