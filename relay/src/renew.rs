//! Certificate rotation on an authenticated session (issue 12, spec `003` §5
//! `revokeReason: 'rotation'`): a desktop whose certificate is in its last 7 days sends
//! `renew_certificate` with a new Ed25519 key and a signature by that key over
//! [`renewal_payload`] (proof of possession, bound to this connection's nonce). The relay
//! checks the proof; the host ([`CertificateDirectory::renew`]) decides on its stored
//! certificate, issues the successor for the same tenant, property, desktop and kinds, and
//! signs it. The old certificate stays in force until the desktop authenticates with the
//! new one ([`CertificateDirectory::in_use`]), so a desktop that never stored the answer
//! still works with the old one.

use lockstep_domain::{OfflineIssuance, Timestamp};

use crate::auth::Authenticator;
use crate::protocol::{
    renewal_payload, CertificateBody, CertificateRenewed, Nonce, RenewCertificate,
    RenewalRefusalReason, RenewalRefused, ServerMessage, SignatureB64,
};

/// What a session knows that a renewal is checked against.
#[derive(Clone, Debug)]
pub(crate) struct RenewalContext {
    /// This connection's challenge nonce.
    pub(crate) nonce: Nonce,
    /// The certificate the session authenticated with.
    pub(crate) certificate: OfflineIssuance,
}

/// The answer to one `renew_certificate`: the successor, or why not.
pub(crate) async fn answer(
    auth: &Authenticator,
    session: &RenewalContext,
    request: &RenewCertificate,
) -> Result<CertificateRenewed, RenewalRefused> {
    let cert = &session.certificate;
    let now = auth.clock.now();
    let refuse = |reason: RenewalRefusalReason, message: &str| RenewalRefused {
        request_id: request.request_id.clone(),
        reason,
        message: message.to_owned(),
        certificate_expires_at: cert.expires_at,
        renewable_from: (reason == RenewalRefusalReason::NotDue).then(|| cert.rotation_due_at()),
    };
    if (request.signed_at - now).abs() > auth.skew {
        return Err(refuse(
            RenewalRefusalReason::ClockSkew,
            "signedAt is too far from the server's time",
        ));
    }
    let payload = renewal_payload(
        auth.audience(),
        &session.nonce,
        cert.id.as_str(),
        &cert.tenant_id.to_string(),
        cert.property_id.as_str(),
        &cert.desktop_device_id,
        &request.public_key_ed25519,
        &request.request_id,
        request.signed_at,
    );
    // Proof of possession: signed by the new key, so no one renews onto a key they lack.
    if request
        .public_key_ed25519
        .verifying_key()
        .verify_strict(payload.as_bytes(), &request.signature.to_signature())
        .is_err()
    {
        return Err(refuse(
            RenewalRefusalReason::SignatureInvalid,
            "the signature does not verify with the new key",
        ));
    }
    let renewed = match auth
        .directory
        .renew(
            cert.tenant_id,
            &cert.id,
            request.public_key_ed25519.as_str(),
            now,
        )
        .await
    {
        Ok(r) => r,
        Err(reason) => return Err(refuse(reason, refusal_message(reason))),
    };
    let next = &renewed.certificate;
    let faithful = next.replaces.as_ref() == Some(&cert.id)
        && next.tenant_id == cert.tenant_id
        && next.property_id == cert.property_id
        && next.desktop_device_id == cert.desktop_device_id
        && next.public_key_ed25519 == request.public_key_ed25519.as_str();
    if !faithful {
        // A host bug; the desktop must not store a certificate for another key or desk.
        tracing::error!(certificate = %cert.id, "the host renewed into a certificate that does not match the request");
        return Err(refuse(
            RenewalRefusalReason::Unavailable,
            refusal_message(RenewalRefusalReason::Unavailable),
        ));
    }
    Ok(CertificateRenewed {
        request_id: request.request_id.clone(),
        replaces: cert.id.as_str().to_owned(),
        certificate: CertificateBody::from(next),
        signature: SignatureB64::from_signature(&renewed.issuer_signature),
    })
}

/// The lowercase message of a refusal.
pub(crate) fn refusal_message(reason: RenewalRefusalReason) -> &'static str {
    match reason {
        RenewalRefusalReason::NotDue => "the certificate is not due for renewal yet",
        RenewalRefusalReason::CertificateRevoked => "the certificate is revoked",
        RenewalRefusalReason::CertificateExpired => "the certificate has expired",
        RenewalRefusalReason::CertificateInvalid => {
            "the certificate cannot be renewed as it is; pair the desktop again"
        }
        RenewalRefusalReason::SameKey => "the new key is the certificate's own",
        RenewalRefusalReason::SignatureInvalid => "the signature does not verify with the new key",
        RenewalRefusalReason::ClockSkew => "signedAt is too far from the server's time",
        RenewalRefusalReason::AlreadyRenewed => {
            "this session renewed its certificate already; reconnect with the new one"
        }
        RenewalRefusalReason::NotOffered => "this relay does not renew certificates",
        RenewalRefusalReason::Unavailable => "certificates cannot be renewed now; try again later",
    }
}

/// The refusal of a request this session may not make (it renewed already).
pub(crate) fn already_renewed(
    session: &RenewalContext,
    request: &RenewCertificate,
) -> RenewalRefused {
    RenewalRefused {
        request_id: request.request_id.clone(),
        reason: RenewalRefusalReason::AlreadyRenewed,
        message: refusal_message(RenewalRefusalReason::AlreadyRenewed).to_owned(),
        certificate_expires_at: session.certificate.expires_at,
        renewable_from: None,
    }
}

/// The frame answering a renewal.
pub(crate) fn frame(outcome: &Result<CertificateRenewed, RenewalRefused>) -> ServerMessage {
    match outcome {
        Ok(r) => ServerMessage::CertificateRenewed(r.clone()),
        Err(r) => ServerMessage::RenewalRefused(r.clone()),
    }
}

/// Revokes (rotation) what `certificate` replaced, now that a desktop authenticated with it;
/// answers the certificates revoked. A failure leaves the old one in force until the next
/// authentication tries again.
pub(crate) async fn in_use(
    auth: &Authenticator,
    certificate: &OfflineIssuance,
    now: Timestamp,
) -> Vec<lockstep_domain::OfflineIssuanceId> {
    if certificate.replaces.is_none() {
        return Vec::new();
    }
    match auth.directory.in_use(certificate, now).await {
        Ok(revoked) => {
            for id in &revoked {
                tracing::info!(certificate = %id, successor = %certificate.id, "certificate revoked for rotation");
            }
            revoked
        }
        Err(e) => {
            tracing::warn!(certificate = %certificate.id, error = %e, "revoking the rotated certificate failed; the next authentication tries again");
            Vec::new()
        }
    }
}
