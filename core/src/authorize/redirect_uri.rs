//! Redirect URIs: what may be registered, and how a presented one is matched.
//!
//! Registration (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1, THREATS D1/P10): absolute,
//! at most 2 KiB, ASCII only (no IDN homographs: register the punycode form), no
//! fragment, no userinfo, no wildcard, no dot-segments or `..;`, no control characters
//! or spaces, no trailing-dot host, no `code`/`state`/`iss`/`response`/`error` query
//! parameters (Keycloak CVE-2026-9689 class), never `javascript:`/`data:`/`file:`/
//! `vbscript:`. Schemes: `https`; `http` only for a loopback IP literal (`127.0.0.1` or
//! `[::1]`, RFC 8252 §7.3, never `localhost` — CVE-2024-8883); a private-use scheme
//! (RFC 8252 §7.1, reverse-domain with a dot) only where the profile allows it.
//!
//! Matching (HEART §2.3, FAPI, A9–A12): exact string comparison, byte for byte. The one
//! exception is RFC 8252 §7.3: for a registered loopback IP-literal `http` URI, any port
//! may be presented, everything else equal.

use url::{Host, Url};

/// Longest redirect URI accepted, in bytes.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 20;

const RESERVED_PARAMS: [&str; 6] = ["code", "state", "iss", "response", "error", "id_token"];

/// Why a redirect URI is refused (→ `invalid_redirect_uri` at registration,
/// `invalid_request` and an error page at the authorization endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectUriError {
    /// Not an absolute URI, too long, non-ASCII, spaces or control characters.
    #[error("malformed redirect_uri")]
    Malformed,
    /// A scheme that is never allowed, or `http` for a non-loopback host.
    #[error("redirect_uri scheme not allowed")]
    Scheme,
    /// A fragment.
    #[error("redirect_uri has a fragment")]
    Fragment,
    /// Userinfo in the authority.
    #[error("redirect_uri has userinfo")]
    Userinfo,
    /// A wildcard, dot-segment, `..;` or a trailing-dot host.
    #[error("redirect_uri has a wildcard or path trick")]
    Pattern,
    /// A query parameter reserved for the authorization response.
    #[error("redirect_uri carries a response parameter")]
    ReservedParameter,
    /// The presented URI is not one of the registered ones.
    #[error("redirect_uri is not registered")]
    NotRegistered,
    /// More redirect URIs than [`MAX_REDIRECT_URIS`] (D1).
    #[error("too many redirect_uris")]
    TooMany,
}

/// Whether private-use URI schemes (`com.example.app:/cb`) may be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateUseSchemes {
    /// Native apps may use them (HEART, SMART).
    Allowed,
    /// Not allowed (FAPI profiles: https or loopback only).
    Refused,
}

fn is_loopback_literal(u: &Url) -> bool {
    match u.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Check a redirect URI for registration.
pub fn validate_for_registration(
    raw: &str,
    private_use: PrivateUseSchemes,
) -> Result<(), RedirectUriError> {
    if raw.is_empty()
        || raw.len() > MAX_REDIRECT_URI_LEN
        || !raw.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(RedirectUriError::Malformed);
    }
    if raw.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    if raw.contains('*') || raw.contains("..;") {
        return Err(RedirectUriError::Pattern);
    }
    let u = Url::parse(raw).map_err(|_| RedirectUriError::Malformed)?;
    match u.scheme() {
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss" => {
            return Err(RedirectUriError::Scheme)
        }
        "https" => {}
        "http" if is_loopback_literal(&u) => {}
        "http" => return Err(RedirectUriError::Scheme),
        other => {
            let reverse_domain = other.contains('.') && other.split('.').all(|p| !p.is_empty());
            if private_use == PrivateUseSchemes::Refused || !reverse_domain {
                return Err(RedirectUriError::Scheme);
            }
        }
    }
    if !u.username().is_empty() || u.password().is_some() || authority(raw).contains('@') {
        return Err(RedirectUriError::Userinfo);
    }
    if let Some(host) = u.host_str() {
        if host.ends_with('.') || host.is_empty() {
            return Err(RedirectUriError::Pattern);
        }
    }
    // url normalises dot-segments away; refuse them in the raw text instead.
    let path = raw_path(raw);
    if path.split('/').any(|seg| {
        seg == "."
            || seg == ".."
            || seg.eq_ignore_ascii_case("%2e")
            || seg.eq_ignore_ascii_case("%2e%2e")
    }) {
        return Err(RedirectUriError::Pattern);
    }
    if u.query_pairs()
        .any(|(k, _)| RESERVED_PARAMS.contains(&k.as_ref()))
    {
        return Err(RedirectUriError::ReservedParameter);
    }
    Ok(())
}

/// The authority part of a raw absolute URI (`//authority/...`), or empty.
fn authority(raw: &str) -> &str {
    raw.split_once("//")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .unwrap_or("")
}

/// The path part of a raw URI, without query.
fn raw_path(raw: &str) -> &str {
    let after_scheme = raw.split_once(':').map(|(_, r)| r).unwrap_or(raw);
    let after_authority = match after_scheme.strip_prefix("//") {
        Some(r) => r.find('/').map(|i| &r[i..]).unwrap_or(""),
        None => after_scheme,
    };
    after_authority.split('?').next().unwrap_or("")
}

/// Find the registered URI that `presented` matches: byte-equal, or the same loopback
/// IP-literal `http` URI with another port (RFC 8252 §7.3).
pub fn match_registered<'r>(
    registered: &'r [String],
    presented: &str,
) -> Result<&'r str, RedirectUriError> {
    if let Some(r) = registered.iter().find(|r| r.as_str() == presented) {
        return Ok(r);
    }
    let p = Url::parse(presented).map_err(|_| RedirectUriError::NotRegistered)?;
    if p.scheme() != "http" || !is_loopback_literal(&p) {
        return Err(RedirectUriError::NotRegistered);
    }
    registered
        .iter()
        .find(|r| {
            Url::parse(r).is_ok_and(|mut reg| {
                reg.scheme() == "http"
                    && is_loopback_literal(&reg)
                    && reg.set_port(p.port()).is_ok()
                    && reg.as_str() == p.as_str()
                    && without_port(r) == without_port(presented)
            })
        })
        .map(String::as_str)
        .ok_or(RedirectUriError::NotRegistered)
}

/// The raw string with the port of its authority removed, so that the loopback rule
/// compares everything but the port byte for byte. Only ASCII digits are a port (RFC 3986
/// §3.2.3): anything else after the last `:` stays, so the comparison fails. `url` strips
/// tabs and newlines before parsing, so without this a port such as `:\t8080` would match
/// (THREATS A11, test `a11_loopback_port_with_whitespace_is_not_a_port`). The digit rule
/// also leaves an IPv6 literal's own colons alone (`[::1]` ends in `1]`).
fn without_port(raw: &str) -> String {
    let auth = authority(raw);
    let host = match auth.rfind(':') {
        Some(i) if auth[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &auth[..i],
        _ => auth,
    };
    raw.replacen(auth, host, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(u: &str) {
        assert_eq!(
            validate_for_registration(u, PrivateUseSchemes::Allowed),
            Ok(()),
            "{u}"
        );
    }

    fn bad(u: &str, e: RedirectUriError) {
        assert_eq!(
            validate_for_registration(u, PrivateUseSchemes::Allowed),
            Err(e),
            "{u}"
        );
    }

    #[test]
    fn acceptable_redirect_uris() {
        ok("https://app.example.com/cb");
        ok("https://app.example.com/cb?tenant=1");
        ok("http://127.0.0.1/cb");
        ok("http://[::1]:8080/cb");
        ok("com.example.app:/oauth2redirect");
    }

    #[test]
    fn d1_p10_schemes_never_allowed() {
        for u in [
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "vbscript:x",
            "http://app.example.com/cb",
            "http://localhost/cb",
            "http://127.0.0.1.evil.com/cb",
            "myapp:/cb",
        ] {
            bad(u, RedirectUriError::Scheme);
        }
        assert_eq!(
            validate_for_registration("com.example.app:/cb", PrivateUseSchemes::Refused),
            Err(RedirectUriError::Scheme)
        );
    }

    #[test]
    fn d1_p10_fragments_userinfo_wildcards_and_path_tricks_are_refused() {
        bad("https://app.example.com/cb#x", RedirectUriError::Fragment);
        bad("https://app.example.com/cb#", RedirectUriError::Fragment);
        bad("https://a@b@evil.com/cb", RedirectUriError::Userinfo);
        bad(
            "https://user:pw@app.example.com/cb",
            RedirectUriError::Userinfo,
        );
        bad("https://*.example.com/cb", RedirectUriError::Pattern);
        bad(
            "https://app.example.com/a/..;/cb",
            RedirectUriError::Pattern,
        );
        bad("https://app.example.com/a/../cb", RedirectUriError::Pattern);
        bad("https://app.example.com/./cb", RedirectUriError::Pattern);
        bad("https://app.example.com./cb", RedirectUriError::Pattern);
    }

    #[test]
    fn d1_p10_response_parameters_in_the_query_are_refused() {
        for p in ["code", "state", "iss", "response", "error"] {
            bad(
                &format!("https://app.example.com/cb?{p}=x"),
                RedirectUriError::ReservedParameter,
            );
        }
    }

    #[test]
    fn d1_malformed_relative_long_and_non_ascii_uris_are_refused() {
        bad("/cb", RedirectUriError::Malformed);
        bad("", RedirectUriError::Malformed);
        bad("https://app.example.com/c b", RedirectUriError::Malformed);
        bad("https://аpp.example.com/cb", RedirectUriError::Malformed); // Cyrillic а
        bad(
            &format!("https://app.example.com/{}", "a".repeat(2100)),
            RedirectUriError::Malformed,
        );
    }

    #[test]
    fn a9_a10_matching_is_exact() {
        let reg = vec!["https://app.example.com/cb?x=1".to_owned()];
        assert!(match_registered(&reg, "https://app.example.com/cb?x=1").is_ok());
        for p in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1&y=2",
            "https://app.example.com/cb?x=2",
            "https://APP.example.com/cb?x=1",
            "https://app.example.com/cb/?x=1",
            "https://app.example.com:443/cb?x=1",
            "https://app.example.com/%63b?x=1",
            "https://evil.example.com/cb?x=1",
        ] {
            assert_eq!(
                match_registered(&reg, p),
                Err(RedirectUriError::NotRegistered),
                "{p}"
            );
        }
    }

    #[test]
    fn a11_loopback_ip_literals_may_vary_only_the_port() {
        let reg = vec![
            "http://127.0.0.1/cb".to_owned(),
            "http://[::1]:9000/cb".to_owned(),
        ];
        assert!(match_registered(&reg, "http://127.0.0.1:51234/cb").is_ok());
        assert!(match_registered(&reg, "http://[::1]:1/cb").is_ok());
        for p in [
            "http://127.0.0.1:51234/cb2",
            "http://localhost:51234/cb",
            "http://127.0.0.1.evil.com/cb",
            "http://127.0.0.2:1/cb",
            "https://127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb?x=1",
        ] {
            assert_eq!(
                match_registered(&reg, p),
                Err(RedirectUriError::NotRegistered),
                "{p}"
            );
        }
        let https_only = vec!["https://app.example.com/cb".to_owned()];
        assert_eq!(
            match_registered(&https_only, "https://app.example.com:8443/cb"),
            Err(RedirectUriError::NotRegistered)
        );
    }
    #[test]
    fn a11_loopback_port_with_whitespace_is_not_a_port() {
        // Found by the redirect-URI property (core/tests/properties.rs): `url` strips tabs
        // and newlines, so these parsed as the registered URI with port 8080.
        let reg = vec![
            "http://127.0.0.1/cb".to_owned(),
            "http://[::1]:8080/cb".to_owned(),
        ];
        for p in [
            "http://127.0.0.1:\t8080/cb",
            "http://127.0.0.1:80\n80/cb",
            "http://127.0.0.1:8080\r/cb",
            "http://[::1]:\t8080/cb",
            "http://[::1]:80\n80/cb",
        ] {
            assert_eq!(
                match_registered(&reg, p),
                Err(RedirectUriError::NotRegistered),
                "{p:?}"
            );
        }
        // Digits only are a port; the rule itself still holds.
        assert_eq!(
            match_registered(&reg, "http://127.0.0.1:8080/cb"),
            Ok("http://127.0.0.1/cb")
        );
        assert_eq!(
            match_registered(&reg, "http://[::1]:9/cb"),
            Ok("http://[::1]:8080/cb")
        );
    }
}
