//! Strict base64url (RFC 7515 §2, RFC 4648 §5): no padding, no whitespace, no `+`/`/`,
//! and no non-zero trailing bits in the last character (J14).
//!
//! The `base64` crate's `URL_SAFE_NO_PAD` engine already decodes that strictly
//! (`DecodePaddingMode::RequireNone`, trailing bits refused), so this module only fixes
//! the engine in one place and maps its error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::JoseError;

/// base64url-encode without padding.
pub fn encode(input: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

/// base64url-encode without padding, appending to `out`.
pub fn encode_into(input: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(input, out)
}

/// Decode strict base64url. Padding, whitespace, characters of the standard alphabet
/// and non-canonical trailing bits are all refused.
pub fn decode(input: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD.decode(input).map_err(|_| JoseError::Base64)
}

/// Decode strict base64url into exactly `N` bytes.
pub fn decode_array<const N: usize>(input: &str) -> Result<[u8; N], JoseError> {
    let v = decode(input)?;
    v.try_into().map_err(|_| JoseError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn j14_rejects_padding() {
        assert_eq!(decode("YQ=="), Err(JoseError::Base64));
        assert_eq!(decode("YQ"), Ok(b"a".to_vec()));
    }

    #[test]
    fn j14_rejects_standard_alphabet() {
        // 0xfb 0xff encodes as "-_8" in base64url and "+/8" in standard base64.
        assert_eq!(decode("-_8"), Ok(vec![0xfb, 0xff]));
        assert_eq!(decode("+/8"), Err(JoseError::Base64));
    }

    #[test]
    fn j14_rejects_whitespace_and_newlines() {
        for s in ["YW Jj", "YWJj\n", " YWJj", "YW\tJj", "YW\r\nJj"] {
            assert_eq!(decode(s), Err(JoseError::Base64), "{s:?}");
        }
    }

    #[test]
    fn j14_rejects_non_zero_trailing_bits() {
        // "YQ" is canonical for "a"; "YR" decodes to the same byte with trailing bits set.
        assert_eq!(decode("YR"), Err(JoseError::Base64));
        // A single leftover character can never be canonical.
        assert_eq!(decode("Y"), Err(JoseError::Base64));
    }

    #[test]
    fn decode_array_requires_exact_length() {
        assert!(decode_array::<2>("-_8").is_ok());
        assert_eq!(decode_array::<3>("-_8"), Err(JoseError::Base64));
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = encode(&bytes);
            prop_assert_eq!(decode(&s).unwrap(), bytes);
        }

        /// Property 4.2.5 (THREATS): any accepted string re-encodes to itself.
        #[test]
        fn accepted_strings_are_canonical(s in "[A-Za-z0-9_\\-+/= ]{0,40}") {
            if let Ok(bytes) = decode(&s) {
                prop_assert_eq!(encode(bytes), s);
            }
        }
    }
}
