//! HTTP on the wire: bounded form and JSON parsing, and the one place where errors become
//! responses (status, JSON body, `Cache-Control: no-store`, `WWW-Authenticate` on 401,
//! `Retry-After` on 503).

use bytes::Bytes;
use heartgate_core::error::{ToWire, WireError};
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The response type of every handler.
pub type Resp = Response<Full<Bytes>>;

// The form parser lives in core (pure, and fuzzed there: `heartgate_core::fuzzing`).
pub use heartgate_core::form::{parse_form, FormError, MAX_PARAMS};

fn base(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A JSON response with `Cache-Control: no-store`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    base(status, "application/json", Bytes::from(value.to_string()))
}

/// A JSON response from already serialised text.
pub fn json_text(status: StatusCode, text: impl Into<Bytes>) -> Resp {
    base(status, "application/json", text.into())
}

/// A response of another media type (JWT responses, JWKS...).
pub fn typed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    base(status, content_type, body.into())
}

/// An empty response.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = base(status, "text/plain", Bytes::new());
    r.headers_mut().remove(header::CONTENT_TYPE);
    r
}

/// An HTML page with a strict content security policy and no framing.
pub fn html(status: StatusCode, body: String) -> Resp {
    let mut r = base(status, "text/html; charset=utf-8", Bytes::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            // No form-action: the consent form's 303 goes to the client's redirect URI,
            // which may be any registered https, loopback or private-use URI.
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// A 303 redirect (never 307: FAPI 2.0 §5.3.2.2 item 20).
pub fn see_other(location: &str) -> Resp {
    let mut r = empty(StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The one mapping from a flow error to its response.
pub fn error(w: WireError) -> Resp {
    let status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = serde_json::Map::new();
    body.insert("error".into(), w.code.into());
    if let Some(d) = w.description {
        body.insert("error_description".into(), d.into());
    }
    let mut r = json(status, &serde_json::Value::Object(body));
    let h = r.headers_mut();
    match w.status {
        401 if w.code == "invalid_token" => {
            let v = format!("Bearer error=\"{}\"", w.code);
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        // RFC 6749 §5.2: invalid_client with 401 carries a challenge for the scheme the
        // client used; heartgate's schemes are assertions and mTLS, so a generic one.
        401 => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"heartgate\""),
            );
        }
        503 => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    r
}

/// A flow error's response.
pub fn flow_error(e: &impl ToWire) -> Resp {
    error(e.to_wire())
}

/// `invalid_request` with a description.
pub fn invalid_request(description: &'static str) -> Resp {
    error(WireError::new(400, "invalid_request", description))
}

/// 429 Too Many Requests (RFC 6585 §4) with `Retry-After` (RFC 9110 §10.2.3) in
/// seconds, and `invalid_request` with a description as the OAuth error body.
pub fn too_many_requests(description: &'static str, retry_after_secs: u64) -> Resp {
    let mut r = error(WireError::new(429, "invalid_request", description));
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    );
    r
}

/// 503.
pub fn unavailable() -> Resp {
    error(WireError::UNAVAILABLE)
}

/// The form parser's refusal (H6, H8) as `invalid_request`.
pub fn form_error(e: FormError) -> Resp {
    invalid_request(match e {
        FormError::Repeated => "repeated parameter",
        FormError::TooMany => "too many parameters",
        FormError::Encoding => "malformed parameter encoding",
        _ => "malformed parameters",
    })
}

/// Whether a `Content-Type` is `application/x-www-form-urlencoded`, with no parameter
/// other than `charset=utf-8` (H9: the parser decodes UTF-8 only).
pub fn is_form_media_type(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        && parts.all(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            name.trim().eq_ignore_ascii_case("charset")
                && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
}

/// `r` with `Connection: close`: after a refusal whose request was not read to its end.
pub fn closing(mut r: Resp) -> Resp {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_rfc6749_3_1() {
        assert_eq!(parse_form(b"a=1&a=2"), Err(FormError::Repeated));
        let p = parse_form(b"a=1&b=%20x").unwrap();
        assert_eq!(p["b"], " x");
        let many: String = (0..65).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(parse_form(many.as_bytes()), Err(FormError::TooMany));
    }

    #[test]
    fn h9_only_form_urlencoded_in_utf8_is_a_form() {
        for ok in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            "application/x-www-form-urlencoded; charset=UTF-8",
            "application/x-www-form-urlencoded;charset=\"utf-8\"",
        ] {
            assert!(is_form_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "application/json",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/x-www-form-urlencoded; charset=latin1",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            "application/x-www-form-urlencodedx",
            "application/x-www-form-urlencoded; boundary=x",
        ] {
            assert!(!is_form_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn errors_carry_no_store_and_their_challenge_or_retry() {
        let r = error(WireError::UNAVAILABLE);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = error(WireError::bare(401, "invalid_token"));
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let r = error(WireError::new(401, "invalid_client", "x"));
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
