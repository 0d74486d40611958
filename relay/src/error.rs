//! The relay's errors.

use lockstep_domain::DomainError;

/// What can go wrong in the relay, as the host sees it.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No authenticated desktop of the property could take the job (spec `003` §8
    /// `CardEncoderOfflineError`).
    #[error("card encoder offline")]
    EncoderOffline,
    /// A desktop acknowledged the job but sent no result within the result timeout. The
    /// job is not re-routed (the card may be on the encoder): dispatch it again with the
    /// same idempotency key and `prefer_desktop` set.
    #[error("no encode result within the result timeout")]
    ResultTimeout {
        /// The desktop that acknowledged it.
        desktop_device_id: String,
    },
    /// The job cannot be sent (a kind no encoder makes, an empty room list...).
    #[error("invalid encode job: {0}")]
    InvalidJob(String),
    /// The host could not record where the job was going (its [`crate::hub::DispatchJournal`]
    /// failed); nothing was sent.
    #[error("dispatch journal: {0}")]
    Journal(String),
    /// The relay is shutting down.
    #[error("relay is shutting down")]
    ShuttingDown,
    /// A setting is out of range.
    #[error("relay config {field}: {reason}")]
    Config {
        /// Which setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("relay bind failed: {0}")]
    Bind(#[source] std::io::Error),
    /// A metric could not be registered (a name registered twice in the registry).
    #[error("relay metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl RelayError {
    /// The domain error the host reports for it, where there is one.
    pub fn to_domain(&self) -> Option<DomainError> {
        match self {
            Self::EncoderOffline | Self::ShuttingDown => Some(DomainError::CardEncoderOffline),
            Self::InvalidJob(reason) => Some(DomainError::validation("encodeJob", reason.clone())),
            _ => None,
        }
    }
}
