//! The relay's wire protocol (`docs/relay/README.md`): JSON objects in WebSocket text frames,
//! each `{"v": 1, "type": "...", ...}`. These are wire types: they carry strings where the
//! domain has validated ids, and the server converts them at the edge (STYLE "Types").
//!
//! Versioning rule: `v` is the protocol version; every message of a version has exactly the
//! fields its schema lists (unknown fields are refused, like the events'). Any change to a
//! message is a new version; the server's `challenge` lists the versions it speaks.

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every version the server accepts (named in `challenge.versions`).
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// Why a text frame is not a message of this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, not an object, an unknown `type`, a missing or unknown field, a bad value.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// `v` names a version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
}

/// Serializes a message with its `v` field.
pub fn encode<M: Serialize>(message: &M) -> String {
    #[derive(Serialize)]
    struct Versioned<'a, M> {
        v: u32,
        #[serde(flatten)]
        message: &'a M,
    }
    serde_json::to_string(&Versioned {
        v: PROTOCOL_VERSION,
        message,
    })
    .expect("protocol messages are maps of strings, numbers and arrays: they always serialize")
}

/// Parses a frame sent by a desktop.
pub fn decode_desktop(text: &str) -> Result<DesktopMessage, ProtocolError> {
    decode(text)
}

/// Parses a frame sent by the server.
pub fn decode_server(text: &str) -> Result<ServerMessage, ProtocolError> {
    decode(text)
}

fn decode<M: DeserializeOwned>(text: &str) -> Result<M, ProtocolError> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ProtocolError::Malformed("not a json object".into()))?;
    let version = object
        .remove("v")
        .ok_or_else(|| ProtocolError::Malformed("missing field `v`".into()))?;
    let version = version
        .as_u64()
        .ok_or_else(|| ProtocolError::Malformed("`v` is not a number".into()))?;
    if !SUPPORTED_VERSIONS.iter().any(|s| u64::from(*s) == version) {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

macro_rules! token {
    ($(#[$doc:meta])* $name:ident, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Accepts 1 to
            #[doc = stringify!($max)]
            /// characters of `[A-Za-z0-9_-]`: safe to log, store and route on.
            pub fn parse(s: &str) -> Result<Self, ProtocolError> {
                if s.is_empty()
                    || s.len() > $max
                    || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(ProtocolError::Malformed(format!(
                        "{} must be 1 to {} letters, digits, '_' or '-'",
                        stringify!($name),
                        $max
                    )));
                }
                Ok(Self(s.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtocolError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token!(
    /// One encode job (the host's id for it; a re-dispatch may use a new one).
    JobId,
    64
);
token!(
    /// What makes two jobs the same job: the desktop encodes a key once and answers the
    /// earlier result to any later job with the same key.
    IdempotencyKey,
    128
);
token!(
    /// An encoder attached to a desktop (its name on that desktop).
    EncoderId,
    64
);
token!(
    /// A batch of provisional credentials sent by a desktop.
    BatchId,
    64
);
token!(
    /// A provisional credential minted offline, named by the desktop.
    ProvisionalId,
    64
);
token!(
    /// A certificate renewal request, named by the desktop (its answer names it too).
    RenewalId,
    64
);

/// The single-use value the server asks a desktop to sign: 32 bytes from the OS CSPRNG,
/// base64url without padding.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nonce(String);

impl Nonce {
    /// A fresh nonce from the OS CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The nonce as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Nonce {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&s)
            .map(|b| b.len() == 32)
            .unwrap_or(false);
        if ok {
            Ok(Self(s))
        } else {
            Err(ProtocolError::Malformed(
                "nonce must be 32 bytes in base64url without padding".into(),
            ))
        }
    }
}

impl From<Nonce> for String {
    fn from(n: Nonce) -> String {
        n.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Single-use and public once sent, but a log line has no use for it.
        f.write_str("Nonce(<redacted>)")
    }
}

/// An Ed25519 signature, base64 (standard alphabet, padded), as the certificates use.
/// `Debug` redacts it: nothing that authenticates reaches a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignatureB64(String);

impl SignatureB64 {
    /// Encodes a signature.
    pub fn from_signature(signature: &ed25519_dalek::Signature) -> Self {
        Self(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
    }

    /// The signature's bytes.
    pub fn to_signature(&self) -> ed25519_dalek::Signature {
        let bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .ok()
            .and_then(|b| b.try_into().ok())
            .expect("a SignatureB64 holds 64 bytes in base64 by construction");
        ed25519_dalek::Signature::from_bytes(&bytes)
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SignatureB64 {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = base64::engine::general_purpose::STANDARD
            .decode(&s)
            .map(|b| b.len() == 64)
            .unwrap_or(false);
        if ok {
            Ok(Self(s))
        } else {
            Err(ProtocolError::Malformed(
                "signature must be 64 bytes in base64".into(),
            ))
        }
    }
}

impl From<SignatureB64> for String {
    fn from(s: SignatureB64) -> String {
        s.0
    }
}

impl fmt::Debug for SignatureB64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(<redacted>)")
    }
}

/// An Ed25519 public key, base64 (standard alphabet, padded), as certificates carry it:
/// 32 bytes that decode to a curve point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKeyB64(String);

impl PublicKeyB64 {
    /// The key.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        decode_public_key(&self.0)
            .expect("a PublicKeyB64 holds a valid ed25519 key by construction")
    }

    /// The text as sent (and as the certificate carries it).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn decode_public_key(s: &str) -> Option<ed25519_dalek::VerifyingKey> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
}

impl TryFrom<String> for PublicKeyB64 {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match decode_public_key(&s) {
            Some(_) => Ok(Self(s)),
            None => Err(ProtocolError::Malformed(
                "publicKeyEd25519 must be a 32-byte ed25519 key in base64".into(),
            )),
        }
    }
}

impl From<PublicKeyB64> for String {
    fn from(k: PublicKeyB64) -> String {
        k.0
    }
}

/// The number the desk reader read from an encoded card (what TTLock registers an IC card
/// by). It opens a door once registered: `Debug` redacts it and it has no `Display`; the
/// one way out is [`CardNumber::expose`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CardNumber(String);

impl CardNumber {
    /// Accepts 4 to 32 hexadecimal digits (decimal numbers are hexadecimal digits too).
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        if (4..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ProtocolError::Malformed(
                "cardNumber must be 4 to 32 hexadecimal digits".into(),
            ))
        }
    }

    /// The number: only for the adapter that registers the card at the vendor.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CardNumber {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CardNumber> for String {
    fn from(c: CardNumber) -> String {
        c.0
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardNumber(<redacted>)")
    }
}

/// Every message the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame of every connection.
    Challenge(Challenge),
    /// The desktop is authenticated; its session is open.
    Welcome(Welcome),
    /// The connection or a frame is refused; the server closes the connection after it.
    Refused(Refused),
    /// Heartbeat request.
    Ping(Heartbeat),
    /// Heartbeat answer.
    Pong(Heartbeat),
    /// Encode a card.
    EncodeJob(EncodeJob),
    /// What became of a `provisional_batch`.
    SyncResult(SyncResult),
    /// The successor certificate a `renew_certificate` asked for.
    CertificateRenewed(CertificateRenewed),
    /// A `renew_certificate` was not granted; the session goes on.
    RenewalRefused(RenewalRefused),
}

/// Every message a desktop sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DesktopMessage {
    /// Who the desktop is (answer to `challenge`).
    Hello(Hello),
    /// Its signature over the challenge.
    Auth(Auth),
    /// Heartbeat request.
    Ping(Heartbeat),
    /// Heartbeat answer.
    Pong(Heartbeat),
    /// The desktop accepted a job (within the ack timeout, 8 s by default).
    JobAck(JobAck),
    /// The job's outcome.
    JobResult(JobResult),
    /// Provisional credentials minted offline.
    ProvisionalBatch(ProvisionalBatch),
    /// A successor certificate for a new key (rotation).
    RenewCertificate(RenewCertificate),
}

impl ServerMessage {
    /// The message's `type`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Challenge(_) => "challenge",
            Self::Welcome(_) => "welcome",
            Self::Refused(_) => "refused",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
            Self::EncodeJob(_) => "encode_job",
            Self::SyncResult(_) => "sync_result",
            Self::CertificateRenewed(_) => "certificate_renewed",
            Self::RenewalRefused(_) => "renewal_refused",
        }
    }
}

impl DesktopMessage {
    /// The message's `type`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Auth(_) => "auth",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
            Self::JobAck(_) => "job_ack",
            Self::JobResult(_) => "job_result",
            Self::ProvisionalBatch(_) => "provisional_batch",
            Self::RenewCertificate(_) => "renew_certificate",
        }
    }
}

/// `challenge`: the nonce to sign, the server's time and the audience to sign for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Challenge {
    /// Single use, valid for this connection's handshake only.
    pub nonce: Nonce,
    /// The server's clock, so a desktop can see its own skew.
    pub server_time: DateTime<Utc>,
    /// The server's name; part of the signed bytes, so a signature made for one relay is
    /// worthless at another.
    pub audience: String,
    /// Protocol versions the server speaks.
    pub versions: Vec<u32>,
}

/// How an encoder is attached (spec `003` §5 `EncoderSession.transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// USB HID.
    UsbHid,
    /// A serial port.
    Serial,
}

impl Transport {
    /// The spec's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UsbHid => "usb_hid",
            Self::Serial => "serial",
        }
    }
}

/// One encoder a desktop drives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncoderInfo {
    /// Its name on the desktop.
    pub encoder_id: EncoderId,
    /// The model (`hid_omnikey`, `serial_acr122u`...; spec `003` §6).
    pub model: String,
    /// How it is attached.
    pub transport: Transport,
}

/// `hello`: who the desktop says it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The offline-issuance certificate whose key the desktop signs with (`oki_`).
    pub certificate_id: String,
    /// Tenant (UUID).
    pub tenant_id: String,
    /// Property.
    pub property_id: String,
    /// The desktop the certificate is bound to.
    pub desktop_device_id: String,
    /// The encoders it drives (1 to 16).
    pub encoders: Vec<EncoderInfo>,
    /// The agent's version, for the session record and logs.
    pub agent_version: String,
    /// Lockstep's signature over the certificate, as the pairing call returned it; checked
    /// against the issuer key when the server has one and the host stores no signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_signature: Option<SignatureB64>,
}

/// `auth`: the desktop's signature over [`auth_payload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auth {
    /// The nonce of this connection's challenge.
    pub nonce: Nonce,
    /// When the desktop signed, by its clock (checked within the skew tolerance).
    pub signed_at: DateTime<Utc>,
    /// Ed25519 over [`auth_payload`] with the certificate's key.
    pub signature: SignatureB64,
}

/// The canonical bytes a desktop signs to authenticate: one `key=value` line per field, in
/// this order. The audience and the nonce make a signature worthless at another relay and
/// on any other connection; the certificate, tenant, property and desktop bind it to the
/// `hello` it answers.
#[allow(clippy::too_many_arguments)]
pub fn auth_payload(
    audience: &str,
    nonce: &Nonce,
    certificate_id: &str,
    tenant_id: &str,
    property_id: &str,
    desktop_device_id: &str,
    signed_at: DateTime<Utc>,
) -> String {
    format!(
        "lockstep-relay-auth-v1\naudience={audience}\nnonce={}\ncertificate={certificate_id}\ntenant={tenant_id}\nproperty={property_id}\ndesktop={desktop_device_id}\nsignedAt={}\n",
        nonce.as_str(),
        signed_at.timestamp_millis(),
    )
}

/// `welcome`: the session is open; the limits the desktop must respect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Welcome {
    /// The session (`enc_`).
    pub session_id: String,
    /// The server's clock.
    pub server_time: DateTime<Utc>,
    /// The server pings this often.
    pub heartbeat_interval_ms: u64,
    /// The server disconnects after this long without a frame from the desktop.
    pub idle_timeout_ms: u64,
    /// Frames larger than this are refused and the connection closed.
    pub max_frame_bytes: u64,
    /// A job not acknowledged within this is given to another desktop.
    pub ack_timeout_ms: u64,
}

/// Why the server refuses a connection or a frame (`refused.subCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not a message of the protocol, or a field breaks its schema.
    MalformedFrame,
    /// Larger than `maxFrameBytes`.
    FrameTooLarge,
    /// `v` is not a version the server speaks.
    UnsupportedVersion,
    /// A valid message at the wrong moment (a job result before authentication, a second
    /// hello...).
    UnexpectedMessage,
    /// No valid `hello` + `auth` within the handshake timeout.
    HandshakeTimeout,
    /// Too many connections are authenticating at once; try again later.
    TooManyConnections,
    /// No such certificate for that tenant.
    CertificateUnknown,
    /// The certificate is revoked.
    CertificateRevoked,
    /// The certificate is past `expiresAt` (spec `003` §8 `OfflineCertExpiredError`).
    OfflineCertExpired,
    /// The certificate breaks O-1, or Lockstep's signature over it does not verify.
    CertificateInvalid,
    /// The certificate is for another property than the one named.
    PropertyMismatch,
    /// The certificate is bound to another desktop.
    DesktopMismatch,
    /// The nonce was already used.
    NonceReplayed,
    /// The nonce is not this connection's.
    NonceUnknown,
    /// `signedAt` is further from the server's time than the tolerated skew.
    ClockSkew,
    /// The signature does not verify with the certificate's key.
    SignatureInvalid,
    /// The certificate directory could not be read; nothing was decided.
    DirectoryUnavailable,
}

impl RefusalReason {
    /// The spec's canonical code (`003` §8, and the general codes the HTTP API uses).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedFrame | Self::UnsupportedVersion | Self::UnexpectedMessage => {
                "MELMASTOON.GENERAL.VALIDATION_FAILED"
            }
            Self::FrameTooLarge => "MELMASTOON.GENERAL.PAYLOAD_TOO_LARGE",
            Self::TooManyConnections | Self::DirectoryUnavailable => {
                "MELMASTOON.GENERAL.UNAVAILABLE"
            }
            Self::OfflineCertExpired => lockstep_domain::DomainError::OfflineCertExpired.code(),
            Self::PropertyMismatch => "MELMASTOON.GENERAL.CROSS_TENANT_REFERENCE",
            Self::HandshakeTimeout
            | Self::CertificateUnknown
            | Self::CertificateRevoked
            | Self::CertificateInvalid
            | Self::DesktopMismatch
            | Self::NonceReplayed
            | Self::NonceUnknown
            | Self::ClockSkew
            | Self::SignatureInvalid => "MELMASTOON.GENERAL.UNAUTHENTICATED",
        }
    }

    /// The sub-code (`refused.subCode`), also the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnexpectedMessage => "unexpected_message",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::CertificateUnknown => "certificate_unknown",
            Self::CertificateRevoked => "certificate_revoked",
            Self::OfflineCertExpired => "offline_cert_expired",
            Self::CertificateInvalid => "certificate_invalid",
            Self::PropertyMismatch => "property_mismatch",
            Self::DesktopMismatch => "desktop_mismatch",
            Self::NonceReplayed => "nonce_replayed",
            Self::NonceUnknown => "nonce_unknown",
            Self::ClockSkew => "clock_skew",
            Self::SignatureInvalid => "signature_invalid",
            Self::DirectoryUnavailable => "directory_unavailable",
        }
    }

    /// Whether trying again with the same certificate and key can succeed: an agent stops
    /// reconnecting after a permanent refusal.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::CertificateUnknown
                | Self::CertificateRevoked
                | Self::OfflineCertExpired
                | Self::CertificateInvalid
                | Self::PropertyMismatch
                | Self::DesktopMismatch
                | Self::SignatureInvalid
                | Self::UnsupportedVersion
        )
    }

    /// The refusal message for this reason.
    pub fn refusal(self, message: impl Into<String>) -> Refused {
        let mut message: String = message.into();
        if message.len() > 256 {
            let mut end = 256;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Refused {
            code: self.code().to_owned(),
            sub_code: self,
            message,
        }
    }
}

/// `refused`: the server closes the connection right after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refused {
    /// The canonical code ([`RefusalReason::code`]).
    pub code: String,
    /// The precise reason.
    pub sub_code: RefusalReason,
    /// Lowercase, for a person; never a secret.
    pub message: String,
}

/// `ping` / `pong`: the answer echoes `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// Sequence number of the ping.
    pub seq: u64,
}

/// What to encode (only cards go through encoders).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// An RFID card.
    RfidCard,
}

/// A door the card must open: the room, Lockstep's device id and the lock's identifier in
/// the encoder's own system (a lock number, never a credential's vendorRef).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Door {
    /// The room.
    pub room_id: String,
    /// Lockstep's lock device (`lck_`), when the property registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The lock's identifier as the encoder writes it onto the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ref: Option<String>,
}

/// `encode_job`: encode one card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncodeJob {
    /// This dispatch of the job.
    pub job_id: JobId,
    /// The credential the card carries (`key_`).
    pub credential_id: String,
    /// Always `rfid_card` in v1.
    pub kind: CardKind,
    /// The rooms the card opens.
    pub rooms: Vec<String>,
    /// The doors, when the encoder must write lock identifiers.
    pub doors: Vec<Door>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    pub valid_until: DateTime<Utc>,
    /// Jobs with the same key are one job: encoded once, the earlier result answered.
    pub idempotency_key: IdempotencyKey,
}

/// `job_ack`: the desktop accepted the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobAck {
    /// The job.
    pub job_id: JobId,
}

/// How a job ended at the desktop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcomeKind {
    /// A card was encoded and read back.
    Encoded,
    /// No card was encoded.
    Failed,
}

/// Why a desktop could not encode a card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodeFailure {
    /// The encoder reported an error.
    EncoderError,
    /// The encoder is unplugged or not answering.
    EncoderUnavailable,
    /// No card was presented in time.
    NoCard,
    /// The card could not be written or read back.
    CardRejected,
    /// The job asks for something this desktop cannot do.
    Unsupported,
}

impl EncodeFailure {
    /// The wire spelling, also the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::EncoderError => "encoder_error",
            Self::EncoderUnavailable => "encoder_unavailable",
            Self::NoCard => "no_card",
            Self::CardRejected => "card_rejected",
            Self::Unsupported => "unsupported",
        }
    }
}

/// `job_result`: the outcome of a job. `encoded` carries the card number the reader read;
/// `failed` carries the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobResult {
    /// The job this answers.
    pub job_id: JobId,
    /// The job's idempotency key (a repeated job is answered with the first result).
    pub idempotency_key: IdempotencyKey,
    /// Encoded or failed.
    pub outcome: JobOutcomeKind,
    /// The encoder that did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_id: Option<EncoderId>,
    /// When `encoded`: what the reader read back from the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_number: Option<CardNumber>,
    /// When `failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<EncodeFailure>,
    /// When `failed`: a lowercase detail for operators, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the encoder finished, by the desktop's clock.
    pub completed_at: DateTime<Utc>,
}

/// A credential a desktop minted while offline (spec `003` §5, I-7), signed with the
/// desktop's certificate key over [`ProvisionalCredential::signed_payload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionalCredential {
    /// The desktop's id for it.
    pub provisional_id: ProvisionalId,
    /// The certificate it was minted under (`oki_`).
    pub certificate_id: String,
    /// The kind minted.
    pub kind: String,
    /// The stay it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// Rooms it opens.
    pub room_ids: Vec<String>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (at most 48 h after the start, O-3).
    pub valid_until: DateTime<Utc>,
    /// When it was minted, by the desktop's clock.
    pub minted_at: DateTime<Utc>,
    /// When a card was encoded for it: the number the reader read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_number: Option<CardNumber>,
    /// Ed25519 over [`ProvisionalCredential::signed_payload`].
    pub signature: SignatureB64,
}

impl ProvisionalCredential {
    /// The canonical bytes the desktop signs: one `key=value` line per field, in this
    /// order (rooms joined with `,`; absent values empty).
    pub fn signed_payload(&self) -> String {
        format!(
            "lockstep-provisional-v1\nid={}\ncertificate={}\nkind={}\nreservation={}\nrooms={}\nvalidFrom={}\nvalidUntil={}\nmintedAt={}\ncard={}\n",
            self.provisional_id,
            self.certificate_id,
            self.kind,
            self.reservation_id.as_deref().unwrap_or(""),
            self.room_ids.join(","),
            self.valid_from.timestamp_millis(),
            self.valid_until.timestamp_millis(),
            self.minted_at.timestamp_millis(),
            self.card_number.as_ref().map(|c| c.expose()).unwrap_or(""),
        )
    }
}

/// `provisional_batch`: provisional credentials minted offline, sent on reconnect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionalBatch {
    /// The batch (answered by a `sync_result` with the same id).
    pub batch_id: BatchId,
    /// 1 to 100 credentials.
    pub items: Vec<ProvisionalCredential>,
}

/// What the reconciler made of one provisional credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    /// Materialized into the saga.
    Accepted,
    /// Refused and revoked (`revoked.v1` with `wasProvisional = true`).
    Revoked,
    /// Not decided yet; send it again later.
    Deferred,
}

/// One provisional credential's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncItem {
    /// The desktop's id for it.
    pub provisional_id: ProvisionalId,
    /// The outcome.
    pub outcome: SyncOutcome,
    /// When accepted: the server's credential (`key_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// When revoked or deferred: why, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `sync_result`: the answer to a `provisional_batch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncResult {
    /// The batch answered.
    pub batch_id: BatchId,
    /// One per item of the batch.
    pub items: Vec<SyncItem>,
}

/// `renew_certificate`: on an authenticated session, the desktop asks for a successor of
/// its certificate binding a new key, and proves it holds that key: `signature` is made
/// with the new key over [`renewal_payload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewCertificate {
    /// The desktop's id for this request.
    pub request_id: RenewalId,
    /// The new key the successor binds.
    pub public_key_ed25519: PublicKeyB64,
    /// When the desktop signed, by its clock (checked within the skew tolerance).
    pub signed_at: DateTime<Utc>,
    /// Ed25519 over [`renewal_payload`] with the new key (proof of possession).
    pub signature: SignatureB64,
}

/// The canonical bytes a desktop signs with its new key to renew: one `key=value` line per
/// field, in this order. The nonce is the one this connection's `challenge` sent (spent by
/// the handshake, still known to both ends): it binds the proof to this session, as the
/// audience binds it to this relay and the remaining lines to the certificate renewed and
/// the request.
#[allow(clippy::too_many_arguments)]
pub fn renewal_payload(
    audience: &str,
    nonce: &Nonce,
    certificate_id: &str,
    tenant_id: &str,
    property_id: &str,
    desktop_device_id: &str,
    public_key: &PublicKeyB64,
    request_id: &RenewalId,
    signed_at: DateTime<Utc>,
) -> String {
    format!(
        "lockstep-relay-renew-v1\naudience={audience}\nnonce={}\ncertificate={certificate_id}\ntenant={tenant_id}\nproperty={property_id}\ndesktop={desktop_device_id}\npublicKey={}\nrequest={request_id}\nsignedAt={}\n",
        nonce.as_str(),
        public_key.as_str(),
        signed_at.timestamp_millis(),
    )
}

/// A certificate as Lockstep signs it: the fields of
/// [`lockstep_domain::OfflineIssuance::signed_payload`], so a desktop can check the issuer's
/// signature itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateBody {
    /// `oki_`.
    pub id: String,
    /// Tenant (UUID).
    pub tenant_id: String,
    /// Property.
    pub property_id: String,
    /// The desktop it is bound to.
    pub desktop_device_id: String,
    /// Serial.
    pub serial: String,
    /// The key it binds (base64).
    pub public_key_ed25519: String,
    /// The kinds the desktop may mint offline.
    pub allowed_kinds: Vec<String>,
    /// O-3.
    pub max_valid_window_hours: i64,
    /// Issued.
    pub issued_at: DateTime<Utc>,
    /// O-1: 90 days after `issuedAt`.
    pub expires_at: DateTime<Utc>,
}

impl From<&lockstep_domain::OfflineIssuance> for CertificateBody {
    fn from(c: &lockstep_domain::OfflineIssuance) -> Self {
        Self {
            id: c.id.as_str().to_owned(),
            tenant_id: c.tenant_id.to_string(),
            property_id: c.property_id.as_str().to_owned(),
            desktop_device_id: c.desktop_device_id.clone(),
            serial: c.serial.clone(),
            public_key_ed25519: c.public_key_ed25519.clone(),
            allowed_kinds: c
                .allowed_kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            max_valid_window_hours: c.max_valid_window_hours,
            issued_at: c.issued_at,
            expires_at: c.expires_at,
        }
    }
}

impl CertificateBody {
    /// The certificate, unrevoked, renewing `replaces` when given: what a desktop keeps
    /// and checks the issuer's signature over.
    pub fn to_certificate(
        &self,
        replaces: Option<&str>,
    ) -> Result<lockstep_domain::OfflineIssuance, ProtocolError> {
        let bad = |e: lockstep_domain::DomainError| ProtocolError::Malformed(e.to_string());
        Ok(lockstep_domain::OfflineIssuance {
            id: lockstep_domain::OfflineIssuanceId::parse(&self.id).map_err(bad)?,
            tenant_id: lockstep_domain::TenantId::parse(&self.tenant_id).map_err(bad)?,
            property_id: lockstep_domain::PropertyId::parse(&self.property_id).map_err(bad)?,
            desktop_device_id: self.desktop_device_id.clone(),
            serial: self.serial.clone(),
            public_key_ed25519: self.public_key_ed25519.clone(),
            allowed_kinds: self
                .allowed_kinds
                .iter()
                .map(|k| lockstep_domain::KeyCredentialKind::parse(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?,
            max_valid_window_hours: self.max_valid_window_hours,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            revoked_at: None,
            revoke_reason: None,
            replaces: replaces
                .map(lockstep_domain::OfflineIssuanceId::parse)
                .transpose()
                .map_err(bad)?,
        })
    }
}

/// `certificate_renewed`: the successor certificate, in force now. The desktop keeps it
/// and its key before it uses them; its first authentication with it revokes the one it
/// replaces (`revokeReason` `rotation`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRenewed {
    /// The request answered.
    pub request_id: RenewalId,
    /// The certificate it replaces (the session's).
    pub replaces: String,
    /// The successor.
    pub certificate: CertificateBody,
    /// Lockstep's signature over the successor's canonical payload.
    pub signature: SignatureB64,
}

/// Why a renewal was not granted (`renewal_refused.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalRefusalReason {
    /// More than 7 days before the certificate expires; ask from `renewableFrom`.
    NotDue,
    /// The certificate is revoked.
    CertificateRevoked,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate breaks a rule a new one must keep; pair the desktop again.
    CertificateInvalid,
    /// The new key is the certificate's own.
    SameKey,
    /// The signature does not verify with the new key.
    SignatureInvalid,
    /// `signedAt` is further from the server's time than the tolerated skew.
    ClockSkew,
    /// This session renewed its certificate already: reconnect with the new one.
    AlreadyRenewed,
    /// This relay does not renew certificates.
    NotOffered,
    /// Certificates cannot be written now; nothing was issued. Ask again later.
    Unavailable,
}

impl RenewalRefusalReason {
    /// The wire spelling, also the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotDue => "not_due",
            Self::CertificateRevoked => "certificate_revoked",
            Self::CertificateExpired => "certificate_expired",
            Self::CertificateInvalid => "certificate_invalid",
            Self::SameKey => "same_key",
            Self::SignatureInvalid => "signature_invalid",
            Self::ClockSkew => "clock_skew",
            Self::AlreadyRenewed => "already_renewed",
            Self::NotOffered => "not_offered",
            Self::Unavailable => "unavailable",
        }
    }

    /// Whether asking again with this certificate can ever succeed: an agent stops asking
    /// after a final refusal.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::CertificateRevoked
                | Self::CertificateExpired
                | Self::CertificateInvalid
                | Self::NotOffered
        )
    }
}

impl From<lockstep_domain::RenewalRefusal> for RenewalRefusalReason {
    fn from(r: lockstep_domain::RenewalRefusal) -> Self {
        use lockstep_domain::RenewalRefusal as R;
        match r {
            R::NotDue { .. } => Self::NotDue,
            R::Revoked => Self::CertificateRevoked,
            R::Expired => Self::CertificateExpired,
            R::SameKey => Self::SameKey,
            R::Invalid => Self::CertificateInvalid,
        }
    }
}

/// `renewal_refused`: no certificate was issued; the session goes on with the current one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewalRefused {
    /// The request answered.
    pub request_id: RenewalId,
    /// Why.
    pub reason: RenewalRefusalReason,
    /// Lowercase, for a person.
    pub message: String,
    /// When the session's certificate expires.
    pub certificate_expires_at: DateTime<Utc>,
    /// With `not_due`: from when it may be renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewable_from: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_adds_the_version_and_decode_checks_it() {
        let msg = DesktopMessage::JobAck(JobAck {
            job_id: JobId::parse("job_1").unwrap(),
        });
        let text = encode(&msg);
        assert!(text.contains("\"v\":1"), "{text}");
        assert!(text.contains("\"type\":\"job_ack\""), "{text}");
        assert_eq!(decode_desktop(&text).unwrap(), msg);
        assert_eq!(
            decode_desktop(r#"{"v":2,"type":"job_ack","jobId":"j"}"#),
            Err(ProtocolError::UnsupportedVersion(2))
        );
        assert!(matches!(
            decode_desktop(r#"{"type":"job_ack","jobId":"j"}"#),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_fields_and_types_are_malformed() {
        assert!(matches!(
            decode_desktop(r#"{"v":1,"type":"job_ack","jobId":"j","extra":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_desktop(r#"{"v":1,"type":"encode_job","jobId":"j"}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_desktop("[1,2]"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let card = CardNumber::parse("3141592653").unwrap();
        assert!(!format!("{card:?}").contains("3141592653"));
        let sig =
            SignatureB64::try_from(base64::engine::general_purpose::STANDARD.encode([7u8; 64]))
                .unwrap();
        assert!(!format!("{sig:?}").contains(sig.as_str()));
        let result = JobResult {
            job_id: JobId::parse("j").unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            outcome: JobOutcomeKind::Encoded,
            encoder_id: None,
            card_number: Some(card),
            failure: None,
            detail: None,
            completed_at: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
        };
        assert!(!format!("{result:?}").contains("3141592653"));
    }
}
