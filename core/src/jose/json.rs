//! Strict JSON for JOSE headers and JWT claim sets.
//!
//! serde_json into a `Map` silently keeps the last of two members with the same name;
//! RFC 7515 §5.2 lets us reject instead, and we do (J11), at every depth. The input
//! must be a single JSON object (J12): no BOM, no trailing bytes, valid UTF-8, no lone
//! surrogates (J35, serde_json refuses them), and no deeper than [`MAX_DEPTH`] (J19).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects accepted in a header or claim set.
pub const MAX_DEPTH: usize = 32;

/// Why a JSON document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not well-formed JSON (syntax, encoding, trailing data, lone surrogate...).
    #[error("not well-formed JSON")]
    Syntax,
    /// Well-formed, but the top level is not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// An object has two members with the same name.
    #[error("duplicate member name")]
    DuplicateMember,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested too deeply")]
    TooDeep,
}

/// Parse `bytes` as one JSON object, refusing duplicate names at any depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    let fault = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed {
        depth: 0,
        fault: &fault,
    }
    .deserialize(&mut de)
    .map_err(|_| fault.get().unwrap_or(JsonError::Syntax))?;
    de.end().map_err(|_| JsonError::Syntax)?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotAnObject),
    }
}

struct StrictSeed<'f> {
    depth: usize,
    fault: &'f Cell<Option<JsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, why: JsonError) -> E {
        self.fault.set(Some(why));
        E::custom(why)
    }

    fn nested(&self) -> Result<StrictSeed<'_>, JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
            fault: self.fault,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json yields ±inf for out-of-range literals such as 1e400; refuse them.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.fail(JsonError::Syntax))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|w| self.fail(w))?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed {
            depth: inner.depth,
            fault: inner.fault,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|w| self.fail(w))?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictSeed {
                depth: inner.depth,
                fault: inner.fault,
            })?;
            if out.insert(key, value).is_some() {
                return Err(self.fail(JsonError::DuplicateMember));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn j11_duplicate_member_rejected_at_top_level() {
        assert_eq!(
            parse_object(br#"{"alg":"ES256","alg":"none"}"#),
            Err(JsonError::DuplicateMember)
        );
    }

    #[test]
    fn j11_duplicate_member_rejected_when_nested() {
        assert_eq!(
            parse_object(br#"{"cnf":{"x5t#S256":"a","x5t#S256":"b"}}"#),
            Err(JsonError::DuplicateMember)
        );
        assert_eq!(
            parse_object(br#"{"a":[{"b":1,"b":1}]}"#),
            Err(JsonError::DuplicateMember)
        );
    }

    #[test]
    fn j12_non_objects_rejected() {
        for s in ["null", "[]", "\"str\"", "1", "true"] {
            assert_eq!(
                parse_object(s.as_bytes()),
                Err(JsonError::NotAnObject),
                "{s}"
            );
        }
    }

    #[test]
    fn j12_bom_trailing_garbage_and_bad_utf8_rejected() {
        assert_eq!(parse_object(b"\xef\xbb\xbf{}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{} x"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{}{}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}"), Err(JsonError::Syntax));
        assert!(parse_object(b" {} \n").is_ok());
    }

    #[test]
    fn j19_deep_nesting_rejected_without_overflow() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse_object(deep.as_bytes()), Err(JsonError::TooDeep));
        let ok = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse_object(ok.as_bytes()).is_ok());
    }

    #[test]
    fn j35_lone_surrogate_rejected_other_strings_byte_exact() {
        assert_eq!(parse_object(br#"{"a":"\ud800"}"#), Err(JsonError::Syntax));
        let m = parse_object("{\"a\":\"x\u{202e}y\\u0007\"}".as_bytes()).unwrap();
        assert_eq!(m["a"], Value::String("x\u{202e}y\u{7}".into()));
        // Raw control characters are not JSON.
        assert_eq!(parse_object(b"{\"a\":\"\x01\"}"), Err(JsonError::Syntax));
    }

    #[test]
    fn j20_out_of_range_float_literal_rejected() {
        assert_eq!(parse_object(br#"{"exp":1e400}"#), Err(JsonError::Syntax));
    }
}
