//! `application/x-www-form-urlencoded` parameters (WHATWG URL §5.1), as the endpoints read
//! request bodies and query strings.
//!
//! What it refuses: a repeated parameter name (RFC 6749 §3.1: parameters "MUST NOT be
//! included more than once"; THREATS H6) and more than [`MAX_PARAMS`] parameters. Empty
//! values are kept here and count as absent in the flows (H7). It never does I/O: the
//! server bounds the body's size before calling it.

use crate::authorize::par::Params;

/// Most parameters in a form or query.
pub const MAX_PARAMS: usize = 64;

/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// A parameter appears twice (RFC 6749 §3.1: "MUST NOT be included more than once").
    #[error("repeated parameter")]
    Repeated,
    /// Too many parameters.
    #[error("too many parameters")]
    TooMany,
}

/// Parse `application/x-www-form-urlencoded` (body or query). Empty values count as
/// absent for the flows (RFC 6749 §3.1), but a repeated name is refused.
pub fn parse_form(bytes: &[u8]) -> Result<Params, FormError> {
    let mut out = Params::new();
    for (i, (k, v)) in url::form_urlencoded::parse(bytes).enumerate() {
        if i >= MAX_PARAMS {
            return Err(FormError::TooMany);
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(FormError::Repeated);
        }
    }
    Ok(out)
}
