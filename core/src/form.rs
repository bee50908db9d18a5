//! `application/x-www-form-urlencoded` parameters (WHATWG URL §5.1), as the endpoints read
//! request bodies and query strings.
//!
//! What it refuses: a repeated parameter name (RFC 6749 §3.1: parameters "MUST NOT be
//! included more than once"; THREATS H6), more than [`MAX_PARAMS`] parameters, and what
//! cannot be a parameter of these protocols (H8): a `%` not followed by two hex digits,
//! bytes that do not decode to UTF-8, and NUL. `+` is a space, as `%20` is. Empty values
//! are kept here and count as absent in the flows (H7). It never does I/O: the server
//! bounds the body's size before calling it.

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
    /// A broken percent-escape, bytes that are not UTF-8, or NUL (H8).
    #[error("malformed parameter encoding")]
    Encoding,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One name or value: `+` is a space, `%XX` a byte; the result must be UTF-8 without NUL.
fn decode(part: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while let Some(&b) = part.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = part.get(i + 1).copied().and_then(hex);
                let lo = part.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(FormError::Encoding);
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    let s = String::from_utf8(out).map_err(|_| FormError::Encoding)?;
    if s.contains('\0') {
        return Err(FormError::Encoding);
    }
    Ok(s)
}

/// Parse `application/x-www-form-urlencoded` (body or query), split as WHATWG URL §5.1
/// does (empty sequences between `&` skipped; no `=` means an empty value) but decoded
/// strictly (module docs). Empty values count as absent for the flows (RFC 6749 §3.1),
/// but a repeated name is refused.
pub fn parse_form(bytes: &[u8]) -> Result<Params, FormError> {
    let mut out = Params::new();
    let pieces = bytes.split(|&b| b == b'&').filter(|p| !p.is_empty());
    for (i, piece) in pieces.enumerate() {
        if i >= MAX_PARAMS {
            return Err(FormError::TooMany);
        }
        let (k, v) = match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &piece[piece.len()..]),
        };
        if out.insert(decode(k)?, decode(v)?).is_some() {
            return Err(FormError::Repeated);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h8_broken_escapes_non_utf8_and_nul_are_refused() {
        for bad in [
            &b"a=%zz"[..],
            b"a=%",
            b"a=%4",
            b"%g1=x",
            b"a=\xff",
            b"a=%ff%fe",
            b"a=%00",
            b"a\0=b",
            b"a=%C3%28",
        ] {
            assert_eq!(parse_form(bad), Err(FormError::Encoding), "{bad:?}");
        }
    }

    #[test]
    fn h8_plus_and_percent_20_are_both_a_space() {
        let p = parse_form(b"scope=a+b&x=a%20b&e&&=v&k=%C3%A9").unwrap();
        assert_eq!(p["scope"], "a b");
        assert_eq!(p["x"], "a b");
        assert_eq!(p["e"], "");
        assert_eq!(p[""], "v");
        assert_eq!(p["k"], "\u{e9}");
        assert_eq!(p.len(), 5);
    }
}
