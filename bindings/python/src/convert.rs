//! JSON values to Python objects. Depth is bounded by core's parser (32 levels, J19), so
//! the recursion here is bounded too.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

/// A JSON value as the Python object `json.loads` would give.
pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for item in a {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => map_to_py(py, m)?.into_any(),
    })
}

/// A JSON object as a Python dict.
pub(crate) fn map_to_py<'py>(
    py: Python<'py>,
    m: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, value_to_py(py, v)?)?;
    }
    Ok(d)
}

/// A Python object as JSON text, through the standard library's `json.dumps` (used for
/// JWK dicts; payloads arrive already serialised by the Python layer).
pub(crate) fn to_json_text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let json = obj.py().import("json")?;
    json.call_method1("dumps", (obj,))?.extract()
}

/// Deepest nesting [`compact_json`] writes itself; deeper payloads (and cycles, which look
/// infinitely deep) are left to `json.dumps`, which refuses cycles with its own error.
const COMPACT_JSON_MAX_DEPTH: usize = 32;

/// The JSON text `json.dumps(obj, separators=(",", ":"), allow_nan=False)` gives, written
/// without the `json` module's per-call setup, for the plain values claims are made of:
/// `dict` with `str` keys, `list`, `tuple`, `str`, `int`, finite `float`, `bool`, `None`
/// (exact types only, so no Python code runs). `Ok(None)` for anything else (datetime,
/// subclasses, non-str keys, NaN, huge ints, lone surrogates, deep nesting): the caller
/// then uses `json.dumps`, which converts it or raises the usual error.
pub(crate) fn compact_json(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(256);
    Ok(write_json(obj, &mut out, 0)?.then_some(out))
}

fn write_json(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<bool> {
    if obj.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = obj.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        let Ok(text) = s.to_cow() else {
            return Ok(false);
        };
        write_json_string(&text, out);
    } else if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            out.extend_from_slice(i.to_string().as_bytes());
        } else if let Ok(u) = obj.extract::<u64>() {
            out.extend_from_slice(u.to_string().as_bytes());
        } else {
            return Ok(false);
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        if !f.value().is_finite() {
            return Ok(false);
        }
        // float.__repr__, as the json module writes floats ("1e+16", not "1e16").
        out.extend_from_slice(f.repr()?.to_cow()?.as_bytes());
    } else if depth >= COMPACT_JSON_MAX_DEPTH {
        return Ok(false);
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        out.push(b'{');
        // A snapshot of the items, not pyo3's dict iterator: that one panics if the dict
        // changes size meanwhile, which a finaliser run by the garbage collector during
        // one of the allocations below could in theory make happen.
        for (i, item) in d.items().iter().enumerate() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let Ok(k) = k.cast_exact::<PyString>() else {
                return Ok(false);
            };
            let Ok(k) = k.to_cow() else {
                return Ok(false);
            };
            if i > 0 {
                out.push(b',');
            }
            write_json_string(&k, out);
            out.push(b':');
            if !write_json(&v, out, depth + 1)? {
                return Ok(false);
            }
        }
        out.push(b'}');
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        out.push(b'[');
        for (i, v) in l.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if !write_json(&v, out, depth + 1)? {
                return Ok(false);
            }
        }
        out.push(b']');
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        out.push(b'[');
        for (i, v) in t.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if !write_json(&v, out, depth + 1)? {
                return Ok(false);
            }
        }
        out.push(b']');
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// A JSON string as `json.dumps` writes it with `ensure_ascii=True`: `\"`, `\\`, `\b`,
/// `\f`, `\n`, `\r`, `\t`, and `\uXXXX` (lower-case hex, surrogate pairs above U+FFFF)
/// for every other character outside printable ASCII (U+0020..U+007E).
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[usize::from((*u >> shift) & 0xf)]);
                    }
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        let mut out = Vec::new();
        write_json_string(text, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_written_as_json_dumps_with_ensure_ascii() {
        // Expected values from CPython's json.dumps (ensure_ascii=True).
        assert_eq!(s("plain /:."), r#""plain /:.""#);
        assert_eq!(s("\"\\\n\r\t\u{8}\u{c}"), r#""\"\\\n\r\t\b\f""#);
        assert_eq!(s("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
        assert_eq!(s("é\u{2028}"), r#""\u00e9\u2028""#);
        assert_eq!(s("\u{1f600}"), r#""\ud83d\ude00""#);
        assert_eq!(s(""), r#""""#);
    }
}
