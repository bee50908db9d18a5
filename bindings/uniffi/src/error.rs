//! The one public error of the bindings (application-services style): a few variants
//! grouped by who is at fault, each with a fixed, short reason. Reasons are constants
//! from this crate, never token content, secrets or a dependency's message (STYLE.md
//! "Errors"; THREATS F3: every input-derived failure is one of these, never a panic).

/// Why a call failed. Kotlin gets `HeartgateException.<Variant>`, Swift `HeartgateError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum HeartgateError {
    /// Something the app passed in is malformed: a JWK, a PEM, a URL, a parameter.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// A fixed, short reason.
        reason: String,
    },
    /// A response, JWT or token did not pass verification (signature, `iss`, `aud`,
    /// `exp`, `state`, shape). To the app it is just invalid; `reason` says which check.
    #[error("verification failed: {reason}")]
    VerificationFailed {
        /// A fixed, short reason.
        reason: String,
    },
    /// The authorization server answered with an OAuth error (RFC 6749 §5.2, §4.1.2.1),
    /// in a JSON error body or inside a verified JARM response.
    #[error("authorization server error: {error}")]
    ServerError {
        /// The RFC error code (`access_denied`, `invalid_client`, ...).
        error: String,
        /// `error_description`, if the server sent one.
        description: Option<String>,
        /// The HTTP status (0 for an authorization response).
        status: u16,
    },
    /// The `Signer` callback failed or returned a signature that does not verify with
    /// its own public JWK (e.g. a DER-encoded ECDSA signature instead of JOSE r‖s).
    #[error("signer failed: {reason}")]
    SignerFailed {
        /// A fixed, short reason.
        reason: String,
    },
    /// Randomness or the system clock failed.
    #[error("internal error: {reason}")]
    Internal {
        /// A fixed, short reason.
        reason: String,
    },
}

impl HeartgateError {
    pub(crate) fn argument(reason: &'static str) -> Self {
        HeartgateError::InvalidArgument {
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn verification(reason: &'static str) -> Self {
        HeartgateError::VerificationFailed {
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn signer(reason: &'static str) -> Self {
        HeartgateError::SignerFailed {
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn internal(reason: &'static str) -> Self {
        HeartgateError::Internal {
            reason: reason.to_owned(),
        }
    }
}

/// A foreign `Signer` that throws something other than `HeartgateError` (or a Rust
/// panic inside a callback) arrives here.
impl From<uniffi::UnexpectedUniFFICallbackError> for HeartgateError {
    fn from(_: uniffi::UnexpectedUniFFICallbackError) -> Self {
        HeartgateError::signer("callback_error")
    }
}

/// Short alias used throughout the crate.
pub type Result<T> = std::result::Result<T, HeartgateError>;
