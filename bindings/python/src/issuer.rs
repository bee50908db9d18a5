//! In-process issuing (core's `TokenIssuer`) and RFC 8705 certificate thumbprints.

use std::sync::Arc;

use heartgate_core::jose::{json, JoseError, KeyRing, SigningKey};
use heartgate_core::mtls::{
    leaf_from_pem, parse_client_cert_header, thumbprint as x5t_s256, Confirmation,
};
use heartgate_core::token::{AccessTokenGrant, IssuedAccessToken, TokenFormat, TokenIssuer};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Map;

use crate::convert::to_json_text;
use crate::keys::{text_or_bytes, PyKeySet, PySigningKey};
use crate::{guarded, now, Error};

/// A client certificate given as PEM (str or bytes; the first block is the leaf, M6) or
/// DER bytes, as DER.
pub(crate) fn cert_der(cert: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let bytes = text_or_bytes(cert)?;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::Mtls(heartgate_core::mtls::MtlsError::BadPem))?;
        return Ok(leaf_from_pem(text).map_err(Error::from)?);
    }
    Ok(bytes.to_vec())
}

/// `x5t#S256` of a certificate (PEM or DER): base64url SHA-256 of the leaf's DER
/// (RFC 8705 §3.1).
#[pyfunction]
fn thumbprint(cert: &Bound<'_, PyAny>) -> PyResult<String> {
    let der = cert_der(cert)?;
    Ok(x5t_s256(&der).map_err(Error::from)?.to_base64url())
}

/// The DER certificate of an RFC 9440 `Client-Cert` header value (`:base64:`), strictly
/// parsed (THREATS C17). Only for a header set by a trusted TLS-terminating proxy.
#[pyfunction]
fn parse_client_cert_header_value(value: &str) -> PyResult<Vec<u8>> {
    Ok(parse_client_cert_header(value).map_err(Error::from)?)
}

/// Issues access tokens (RFC 9068 JWT, opaque, wrapper) for one issuer, in process.
#[pyclass(frozen, module = "heartgate", name = "TokenIssuer")]
pub struct PyTokenIssuer {
    inner: TokenIssuer,
}

/// An access token just issued, with what an authorization server stores for it.
#[pyclass(frozen, module = "heartgate", name = "IssuedToken")]
pub struct IssuedToken {
    issued: IssuedAccessToken,
}

#[pymethods]
impl IssuedToken {
    /// The token string for the client.
    #[getter]
    fn token(&self) -> String {
        self.issued.token.expose().to_owned()
    }

    /// `jwt`, `opaque` or `wrapper`.
    #[getter]
    fn format(&self) -> &'static str {
        match self.issued.format {
            TokenFormat::Jwt => "jwt",
            TokenFormat::Opaque => "opaque",
            TokenFormat::Wrapper => "wrapper",
        }
    }

    /// The token id.
    #[getter]
    fn jti(&self) -> String {
        self.issued.jti.clone()
    }

    /// Expiry (seconds since the epoch).
    #[getter]
    fn expires_at(&self) -> i64 {
        self.issued.expires_at.secs()
    }

    /// Seconds to expiry.
    #[getter]
    fn expires_in(&self) -> u32 {
        self.issued.expires_in
    }

    /// The RFC 7662 introspection response for this token now, as JSON text (what an
    /// introspection endpoint answers for the token, or for a wrapper's reference).
    fn introspection_response(&self) -> PyResult<String> {
        let r = self
            .issued
            .record
            .introspection_response(now())
            .map_err(Error::from)?;
        Ok(r.to_json_string())
    }

    fn __repr__(&self) -> String {
        format!(
            "IssuedToken(format={:?}, expires_in={})",
            self.format(),
            self.issued.expires_in
        )
    }
}

fn format_arg(name: &str) -> Result<TokenFormat, Error> {
    match name {
        "jwt" => Ok(TokenFormat::Jwt),
        "opaque" => Ok(TokenFormat::Opaque),
        "wrapper" => Ok(TokenFormat::Wrapper),
        _ => Err(Error::Argument("format must be jwt, opaque or wrapper")),
    }
}

#[pymethods]
impl PyTokenIssuer {
    /// An issuer named `issuer` signing with `key`.
    #[new]
    fn new(py: Python<'_>, issuer: String, key: &Bound<'_, PySigningKey>) -> PyResult<Self> {
        let k = &key.get().inner;
        let (alg, kid, der) = (k.algorithm(), k.kid().to_owned(), k.to_pkcs8_der());
        let owned = guarded(py, || {
            Ok(SigningKey::from_pkcs8_der(alg, &der)?.with_kid(kid)?)
        })?;
        Ok(PyTokenIssuer {
            inner: TokenIssuer::new(issuer, Arc::new(KeyRing::new(owned))),
        })
    }

    /// The issuer identifier.
    #[getter]
    fn issuer(&self) -> String {
        self.inner.issuer().to_owned()
    }

    /// The public JWK Set document to publish.
    fn jwks(&self) -> String {
        self.inner.keys().load().jwks_json().to_string()
    }

    /// The public keys as a `KeySet`.
    fn key_set(&self) -> PyKeySet {
        PyKeySet {
            inner: Arc::new(self.inner.keys().load().jwks().clone()),
        }
    }

    /// Issue an access token. `client_cert` (PEM or DER) binds it (RFC 8705 §3);
    /// `context` holds SMART launch context (`patient`, `fhirUser`, ...).
    #[pyo3(signature = (subject, client_id, audience, scope = "", lifetime = 300, format = "jwt", client_cert = None, context = None, pairwise_subject = None))]
    #[allow(clippy::too_many_arguments)] // reason: one keyword argument per grant member
    fn issue(
        &self,
        py: Python<'_>,
        subject: String,
        client_id: String,
        audience: &Bound<'_, PyAny>,
        scope: &str,
        lifetime: u32,
        format: &str,
        client_cert: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyDict>>,
        pairwise_subject: Option<String>,
    ) -> PyResult<IssuedToken> {
        let aud: Vec<String> = match audience.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => audience.extract()?,
        };
        let cnf = match client_cert {
            Some(c) => Some(Confirmation::for_certificate(&cert_der(c)?).map_err(Error::from)?),
            None => None,
        };
        let context = match context {
            Some(d) => json::parse_object(to_json_text(d.as_any())?.as_bytes())
                .map_err(|e| Error::Jose(JoseError::Json(e)))?,
            None => Map::new(),
        };
        let grant = AccessTokenGrant {
            client_id,
            sub: subject,
            pairwise_sub: pairwise_subject,
            scope: scope.to_owned(),
            aud,
            cnf,
            lifetime,
            format: format_arg(format)?,
            auth_time: None,
            acr: None,
            family_id: None,
            context,
        };
        let t = now();
        let issued = guarded(py, || Ok(self.inner.issue_access_token(&grant, t)?))?;
        Ok(IssuedToken { issued })
    }

    fn __repr__(&self) -> String {
        format!("TokenIssuer(issuer={:?})", self.inner.issuer())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(thumbprint, m)?)?;
    m.add_function(wrap_pyfunction!(parse_client_cert_header_value, m)?)?;
    m.add_class::<PyTokenIssuer>()?;
    m.add_class::<IssuedToken>()?;
    Ok(())
}
