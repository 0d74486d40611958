//! How a desktop proves who it is (DESIGN §8): it signs this connection's single-use nonce
//! with the Ed25519 key its offline-issuance certificate binds. The server accepts only a
//! certificate that exists for the tenant and property named, is unexpired (O-1) and
//! unrevoked, is bound to the desktop named, carries Lockstep's signature when the relay
//! has the issuer key, and whose key verifies the signature over [`auth_payload`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::TimeDelta;
use lockstep_domain::{
    offline::CERT_LIFETIME_DAYS, Clock, OfflineIssuance, OfflineIssuanceId, PropertyId, TenantId,
};

use crate::protocol::{
    auth_payload, Auth, EncoderInfo, Hello, Nonce, RefusalReason, RenewalRefusalReason,
};

/// A certificate as the host stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate.
    pub certificate: OfflineIssuance,
    /// Lockstep's signature over [`OfflineIssuance::signed_payload`], when the host keeps
    /// it (otherwise the desktop's copy from `hello` is checked).
    pub issuer_signature: Option<ed25519_dalek::Signature>,
}

/// A successor certificate (rotation), stored and signed by Lockstep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewedCertificate {
    /// The certificate, naming the one it replaces.
    pub certificate: OfflineIssuance,
    /// Lockstep's signature over [`OfflineIssuance::signed_payload`].
    pub issuer_signature: ed25519_dalek::Signature,
}

/// The directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("certificate directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// Where the relay looks certificates up (the host's `offline_issuance` table) and, when the
/// host offers it, renews them (rotation, issue 12).
#[async_trait]
pub trait CertificateDirectory: Send + Sync + 'static {
    /// The certificate `id` of `tenant`, revoked or not; `None` when the tenant has none by
    /// that id.
    async fn certificate(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
    ) -> Result<Option<IssuedCertificate>, DirectoryError>;

    /// Issues, signs and stores the successor of `tenant`'s certificate `id` for a desktop
    /// that proved it holds `public_key_ed25519` (the relay checked the proof). The host
    /// decides with [`OfflineIssuance::renew`] on its stored copy: only an unrevoked,
    /// unexpired certificate in its last 7 days is renewed. The old one stays in force
    /// until [`CertificateDirectory::in_use`] hears of the new one. By default the relay
    /// renews nothing (`not_offered`).
    async fn renew(
        &self,
        _tenant: TenantId,
        _id: &OfflineIssuanceId,
        _public_key_ed25519: &str,
        _now: lockstep_domain::Timestamp,
    ) -> Result<RenewedCertificate, RenewalRefusalReason> {
        Err(RenewalRefusalReason::NotOffered)
    }

    /// A desktop authenticated with `certificate`. When it renewed an earlier one, the host
    /// revokes that one (`rotation`: no O-2 cascade, what it minted while in force stays
    /// valid) and every other renewal of it, never used; it answers the ids it revoked, whose
    /// sessions the relay closes. By default nothing is revoked.
    async fn in_use(
        &self,
        _certificate: &OfflineIssuance,
        _now: lockstep_domain::Timestamp,
    ) -> Result<Vec<OfflineIssuanceId>, DirectoryError> {
        Ok(Vec::new())
    }
}

/// Certificates in memory (tests, the embedded demo). With an issuer key it renews them
/// too, as a host would.
#[derive(Default)]
pub struct MemoryCertificateDirectory {
    certificates: Mutex<HashMap<(TenantId, OfflineIssuanceId), IssuedCertificate>>,
    issuer: Option<ed25519_dalek::SigningKey>,
}

impl std::fmt::Debug for MemoryCertificateDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCertificateDirectory")
            .field("renews", &self.issuer.is_some())
            .finish_non_exhaustive()
    }
}

impl MemoryCertificateDirectory {
    /// A directory that renews certificates, signing the successors with `issuer`.
    pub fn with_issuer(issuer: ed25519_dalek::SigningKey) -> Self {
        Self {
            certificates: Mutex::default(),
            issuer: Some(issuer),
        }
    }

    /// Every certificate of `tenant` as stored now (tests).
    pub fn all(&self, tenant: TenantId) -> Vec<OfflineIssuance> {
        let mut all: Vec<OfflineIssuance> = self
            .lock()
            .values()
            .filter(|c| c.certificate.tenant_id == tenant)
            .map(|c| c.certificate.clone())
            .collect();
        all.sort_by(|a, b| (a.issued_at, a.id.as_str()).cmp(&(b.issued_at, b.id.as_str())));
        all
    }

    /// Adds or replaces a certificate.
    pub fn insert(&self, certificate: IssuedCertificate) {
        self.lock().insert(
            (
                certificate.certificate.tenant_id,
                certificate.certificate.id.clone(),
            ),
            certificate,
        );
    }

    /// Revokes a certificate; `false` when there is none by that id.
    pub fn revoke(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
        reason: lockstep_domain::OfflineRevokeReason,
        now: lockstep_domain::Timestamp,
    ) -> bool {
        match self.lock().get_mut(&(tenant, id.clone())) {
            Some(c) => {
                c.certificate.revoke(reason, now);
                true
            }
            None => false,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(TenantId, OfflineIssuanceId), IssuedCertificate>> {
        self.certificates
            .lock()
            .expect("certificate directory mutex is never poisoned")
    }
}

#[async_trait]
impl CertificateDirectory for MemoryCertificateDirectory {
    async fn certificate(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
    ) -> Result<Option<IssuedCertificate>, DirectoryError> {
        Ok(self.lock().get(&(tenant, id.clone())).cloned())
    }

    async fn renew(
        &self,
        tenant: TenantId,
        id: &OfflineIssuanceId,
        public_key_ed25519: &str,
        now: lockstep_domain::Timestamp,
    ) -> Result<RenewedCertificate, RenewalRefusalReason> {
        let Some(issuer) = &self.issuer else {
            return Err(RenewalRefusalReason::NotOffered);
        };
        let mut all = self.lock();
        let current = all
            .get(&(tenant, id.clone()))
            .ok_or(RenewalRefusalReason::CertificateRevoked)?;
        let next = current.certificate.renew(public_key_ed25519, now)?;
        let issuer_signature =
            ed25519_dalek::Signer::sign(issuer, next.signed_payload().as_bytes());
        all.insert(
            (tenant, next.id.clone()),
            IssuedCertificate {
                certificate: next.clone(),
                issuer_signature: Some(issuer_signature),
            },
        );
        Ok(RenewedCertificate {
            certificate: next,
            issuer_signature,
        })
    }

    async fn in_use(
        &self,
        certificate: &OfflineIssuance,
        now: lockstep_domain::Timestamp,
    ) -> Result<Vec<OfflineIssuanceId>, DirectoryError> {
        let Some(replaced) = &certificate.replaces else {
            return Ok(Vec::new());
        };
        let mut revoked = Vec::new();
        for c in self.lock().values_mut() {
            let c = &mut c.certificate;
            let renewal_of_it = c.replaces.as_ref() == Some(replaced) && c.id != certificate.id;
            if c.tenant_id == certificate.tenant_id
                && (&c.id == replaced || renewal_of_it)
                && c.revoked_at.is_none()
                && c.revoke(lockstep_domain::OfflineRevokeReason::Rotation, now)
            {
                revoked.push(c.id.clone());
            }
        }
        Ok(revoked)
    }
}

/// A desktop that proved who it is.
#[derive(Clone, Debug)]
pub(crate) struct AuthenticatedDesktop {
    pub(crate) tenant_id: TenantId,
    pub(crate) property_id: PropertyId,
    pub(crate) certificate: OfflineIssuance,
    pub(crate) desktop_device_id: String,
    pub(crate) encoders: Vec<EncoderInfo>,
    pub(crate) agent_version: String,
}

/// A refusal: the reason and a lowercase message for the desktop.
pub(crate) type Refusal = (RefusalReason, String);

fn refuse<T>(reason: RefusalReason, message: impl Into<String>) -> Result<T, Refusal> {
    Err((reason, message.into()))
}

/// The nonces already answered, kept long enough to tell a replay from garbage. A nonce
/// is only ever valid on the connection that received it, so a replay is refused either
/// way; the book makes the refusal say so.
#[derive(Debug)]
struct NonceBook {
    used: HashSet<String>,
    order: VecDeque<(tokio::time::Instant, String)>,
    keep: Duration,
}

impl NonceBook {
    const MAX: usize = 200_000;

    fn consume(&mut self, nonce: &Nonce) {
        let now = tokio::time::Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) > self.keep || self.order.len() >= Self::MAX {
                if let Some((_, n)) = self.order.pop_front() {
                    self.used.remove(&n);
                }
            } else {
                break;
            }
        }
        if self.used.insert(nonce.as_str().to_owned()) {
            self.order.push_back((now, nonce.as_str().to_owned()));
        }
    }

    fn was_used(&self, nonce: &Nonce) -> bool {
        self.used.contains(nonce.as_str())
    }
}

/// Checks `hello` + `auth` against the directory.
pub(crate) struct Authenticator {
    pub(crate) directory: Arc<dyn CertificateDirectory>,
    issuer_key: Option<ed25519_dalek::VerifyingKey>,
    audience: String,
    pub(crate) skew: TimeDelta,
    pub(crate) clock: Arc<dyn Clock>,
    nonces: Mutex<NonceBook>,
}

impl Authenticator {
    pub(crate) fn new(
        directory: Arc<dyn CertificateDirectory>,
        issuer_key: Option<ed25519_dalek::VerifyingKey>,
        audience: String,
        skew: Duration,
        handshake_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            directory,
            issuer_key,
            audience,
            skew: TimeDelta::from_std(skew).unwrap_or(TimeDelta::MAX),
            clock,
            nonces: Mutex::new(NonceBook {
                used: HashSet::new(),
                order: VecDeque::new(),
                keep: handshake_timeout + skew * 2,
            }),
        }
    }

    pub(crate) fn audience(&self) -> &str {
        &self.audience
    }

    /// Decides on one handshake. `issued` is the nonce this connection's challenge sent;
    /// it is spent whatever the outcome.
    pub(crate) async fn authenticate(
        &self,
        issued: &Nonce,
        hello: &Hello,
        auth: &Auth,
    ) -> Result<AuthenticatedDesktop, Refusal> {
        {
            let mut book = self
                .nonces
                .lock()
                .expect("nonce book mutex is never poisoned");
            if &auth.nonce != issued {
                let replayed = book.was_used(&auth.nonce);
                book.consume(issued);
                return if replayed {
                    refuse(RefusalReason::NonceReplayed, "nonce already used")
                } else {
                    refuse(
                        RefusalReason::NonceUnknown,
                        "nonce is not this connection's",
                    )
                };
            }
            book.consume(issued);
        }

        let malformed = |m: String| (RefusalReason::MalformedFrame, m);
        let tenant = TenantId::parse(&hello.tenant_id).map_err(|e| malformed(e.to_string()))?;
        let property =
            PropertyId::parse(&hello.property_id).map_err(|e| malformed(e.to_string()))?;
        let certificate_id = OfflineIssuanceId::parse(&hello.certificate_id)
            .map_err(|e| malformed(e.to_string()))?;
        let desktop = hello.desktop_device_id.as_str();
        if desktop.is_empty()
            || desktop.len() > 64
            || !desktop
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return refuse(
                RefusalReason::MalformedFrame,
                "desktopDeviceId must be 1 to 64 letters, digits, '-' or '_'",
            );
        }
        if hello.encoders.is_empty() || hello.encoders.len() > 16 {
            return refuse(RefusalReason::MalformedFrame, "1 to 16 encoders");
        }
        let mut seen = HashSet::new();
        for e in &hello.encoders {
            if e.model.is_empty() || e.model.len() > 64 || e.model.chars().any(|c| c.is_control()) {
                return refuse(
                    RefusalReason::MalformedFrame,
                    "encoder model: 1 to 64 characters",
                );
            }
            if !seen.insert(e.encoder_id.as_str()) {
                return refuse(RefusalReason::MalformedFrame, "encoder ids must be unique");
            }
        }
        if hello.agent_version.len() > 64 || hello.agent_version.chars().any(|c| c.is_control()) {
            return refuse(
                RefusalReason::MalformedFrame,
                "agentVersion: at most 64 characters",
            );
        }

        let entry = match self.directory.certificate(tenant, &certificate_id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return refuse(RefusalReason::CertificateUnknown, "no such certificate"),
            Err(e) => {
                tracing::warn!(error = %e, "certificate lookup failed");
                return refuse(
                    RefusalReason::DirectoryUnavailable,
                    "certificates cannot be read now; try again",
                );
            }
        };
        let cert = entry.certificate;
        if cert.tenant_id != tenant || cert.id != certificate_id {
            return refuse(RefusalReason::CertificateUnknown, "no such certificate");
        }
        if cert.property_id != property {
            return refuse(
                RefusalReason::PropertyMismatch,
                "the certificate is not for this property",
            );
        }
        if cert.revoked_at.is_some() {
            return refuse(
                RefusalReason::CertificateRevoked,
                "the certificate is revoked",
            );
        }
        let now = self.clock.now();
        if now >= cert.expires_at {
            return refuse(
                RefusalReason::OfflineCertExpired,
                "the certificate has expired",
            );
        }
        // O-1: a certificate lives exactly 90 days; anything else was not issued by us.
        if cert.expires_at - cert.issued_at != TimeDelta::days(CERT_LIFETIME_DAYS) {
            return refuse(
                RefusalReason::CertificateInvalid,
                "the certificate breaks O-1",
            );
        }
        if let Some(issuer) = &self.issuer_key {
            let signature = entry.issuer_signature.or_else(|| {
                hello
                    .certificate_signature
                    .as_ref()
                    .map(|s| s.to_signature())
            });
            let valid = signature.is_some_and(|s| {
                issuer
                    .verify_strict(cert.signed_payload().as_bytes(), &s)
                    .is_ok()
            });
            if !valid {
                return refuse(
                    RefusalReason::CertificateInvalid,
                    "the certificate's signature does not verify",
                );
            }
        }
        if cert.desktop_device_id != desktop {
            return refuse(
                RefusalReason::DesktopMismatch,
                "the certificate is bound to another desktop",
            );
        }
        if (auth.signed_at - now).abs() > self.skew {
            return refuse(
                RefusalReason::ClockSkew,
                "signedAt is too far from the server's time",
            );
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(cert.public_key_ed25519.trim())
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok());
        let Some(key) = key else {
            return refuse(
                RefusalReason::CertificateInvalid,
                "the certificate's public key is not an ed25519 key",
            );
        };
        let payload = auth_payload(
            &self.audience,
            issued,
            &hello.certificate_id,
            &hello.tenant_id,
            &hello.property_id,
            &hello.desktop_device_id,
            auth.signed_at,
        );
        if key
            .verify_strict(payload.as_bytes(), &auth.signature.to_signature())
            .is_err()
        {
            return refuse(
                RefusalReason::SignatureInvalid,
                "the signature does not verify",
            );
        }
        Ok(AuthenticatedDesktop {
            tenant_id: tenant,
            property_id: property,
            certificate: cert,
            desktop_device_id: desktop.to_owned(),
            encoders: hello.encoders.clone(),
            agent_version: hello.agent_version.clone(),
        })
    }
}
