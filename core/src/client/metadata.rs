//! Client metadata (RFC 7591 §2, RFC 8705 §2.1.2, RFC 9126 §6, JARM, CIBA §4) and the
//! checks that refuse contradictions for the client's profile (THREATS D1, D3, D4, D6).
//! Errors are `invalid_redirect_uri` or `invalid_client_metadata` (RFC 7591 §3.2.2).

use serde::{Deserialize, Serialize};

use crate::authorize::redirect_uri::{
    validate_for_registration, PrivateUseSchemes, RedirectUriError, MAX_REDIRECT_URIS,
};
use crate::jose::{Algorithm, AlgorithmSet, JwkSet, JwkSetOptions, KeyError};
use crate::mtls::TlsClientAuthRule;
use crate::profile::Profile;
use crate::scope::ScopeSet;
use crate::token::TokenFormat;

/// `token_endpoint_auth_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// RFC 7523 client assertion signed with a registered key.
    PrivateKeyJwt,
    /// RFC 8705 §2.1 PKI mTLS.
    TlsClientAuth,
    /// RFC 8705 §2.2 self-signed certificate mTLS.
    SelfSignedTlsClientAuth,
    /// A public client (PKCE required).
    None,
}

/// `grant_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantType {
    /// `authorization_code`.
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// `refresh_token`.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// `client_credentials`.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// `urn:openid:params:grant-type:ciba`.
    #[serde(rename = "urn:openid:params:grant-type:ciba")]
    Ciba,
}

/// `backchannel_token_delivery_mode` (CIBA §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The client polls the token endpoint.
    Poll,
    /// The AS notifies, the client fetches.
    Ping,
    /// The AS delivers the tokens (never under FAPI-CIBA).
    Push,
}

/// OpenID Connect `subject_type` (OIDC Core §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// The same `sub` for every client.
    #[default]
    Public,
    /// A different `sub` per sector (the host of the client's redirect URIs), so that
    /// clients of different sectors cannot correlate a patient (OIDC Core §8.1).
    Pairwise,
}

/// Registered client metadata. Unknown members are refused at parse time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    /// Server-assigned client identifier (D7: never chosen by the client).
    #[serde(default)]
    pub client_id: String,
    /// Human-readable name (escaped wherever rendered, D7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The client's profile.
    pub profile: Profile,
    /// Registered redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Grant types (default `authorization_code`).
    #[serde(default = "default_grants")]
    pub grant_types: Vec<GrantType>,
    /// Response types (only `code`).
    #[serde(default = "default_response_types")]
    pub response_types: Vec<String>,
    /// Client authentication method.
    pub token_endpoint_auth_method: AuthMethod,
    /// The client's public keys by value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// The client's public keys by reference (fetched by the server, https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// RFC 8705 §2.1.2 subject DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// RFC 8705 §2.1.2 dNSName SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    /// RFC 8705 §2.1.2 URI SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    /// RFC 8705 §2.1.2 IP SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    /// RFC 8705 §2.1.2 rfc822Name SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
    /// Algorithm of the client's assertions (RFC 7591 `token_endpoint_auth_signing_alg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg: Option<String>,
    /// Algorithm of the client's request objects (RFC 9101).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object_signing_alg: Option<String>,
    /// JARM signing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_signed_response_alg: Option<String>,
    /// RFC 9126 §6.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// RFC 8705 §3.4.
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// Access-token format for this client.
    #[serde(default)]
    pub access_token_format: TokenFormat,
    /// Scopes the client may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// CIBA delivery mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_token_delivery_mode: Option<DeliveryMode>,
    /// CIBA ping/push endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_client_notification_endpoint: Option<String>,
    /// CIBA request-object algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_authentication_request_signing_alg: Option<String>,
    /// CIBA `user_code` support.
    #[serde(default)]
    pub backchannel_user_code_parameter: bool,
    /// OIDC `subject_type`: `public` (default) or `pairwise`.
    #[serde(default)]
    pub subject_type: SubjectType,
    /// Algorithm of the ID tokens for this client (OIDC Registration §2); the AS signs
    /// with its active key, so it must be that key's algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
    /// RFC 9701 §6: answer this client's introspection requests with a signed JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_signed_response_alg: Option<String>,
    /// heartgate extension: the resource-server identifiers (RFC 8707 resource values,
    /// as they appear in tokens' `aud`) this client serves. A resource server may
    /// introspect a token only when the token's `aud` names one of these or the
    /// client's own `client_id` (RFC 7662 §4, THREATS I2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

fn default_grants() -> Vec<GrantType> {
    vec![GrantType::AuthorizationCode]
}

fn default_response_types() -> Vec<String> {
    vec!["code".to_owned()]
}

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A redirect URI is not acceptable → `invalid_redirect_uri`.
    #[error("invalid redirect_uri: {0}")]
    InvalidRedirectUri(RedirectUriError),
    /// Contradictory or forbidden metadata → `invalid_client_metadata`; the name says
    /// which rule (for the error description and tests).
    #[error("invalid client metadata: {0}")]
    InvalidClientMetadata(&'static str),
    /// The JWK Set was refused (D4) → `invalid_client_metadata`.
    #[error("invalid jwks: {0}")]
    InvalidJwks(KeyError),
}

/// Metadata that passed [`ClientMetadata::validate`], with its parsed parts.
#[derive(Debug, Clone)]
pub struct ValidatedClient {
    metadata: ClientMetadata,
    jwks: Option<std::sync::Arc<JwkSet>>,
    tls_rule: Option<TlsClientAuthRule>,
}

impl ValidatedClient {
    /// The metadata.
    pub fn metadata(&self) -> &ClientMetadata {
        &self.metadata
    }

    /// The client's keys, when registered by value.
    pub fn jwks(&self) -> Option<&JwkSet> {
        self.jwks.as_deref()
    }

    /// The client's keys, shared (what a `ClientDirectory` hands out: no copy per
    /// request).
    pub fn shared_jwks(&self) -> Option<std::sync::Arc<JwkSet>> {
        self.jwks.clone()
    }

    /// The `tls_client_auth` rule, for that method.
    pub fn tls_rule(&self) -> Option<&TlsClientAuthRule> {
        self.tls_rule.as_ref()
    }
}

fn alg_allowed(
    profile: Profile,
    alg: &Option<String>,
    what: &'static str,
) -> Result<Option<Algorithm>, MetadataError> {
    match alg {
        None => Ok(None),
        Some(name) => {
            let a = Algorithm::from_name(name)
                .map_err(|_| MetadataError::InvalidClientMetadata(what))?;
            if profile.policy().algorithms.contains(a) {
                Ok(Some(a))
            } else {
                Err(MetadataError::InvalidClientMetadata(what))
            }
        }
    }
}

impl ClientMetadata {
    /// The algorithms accepted from this client for a JWT whose algorithm it registered
    /// as `registered` (assertion, request object...): the profile's set, narrowed to the
    /// registered one; a registered algorithm outside the profile allows nothing.
    pub fn algorithms_for(&self, registered: Option<&str>) -> AlgorithmSet {
        let allowed = self.profile.policy().algorithms;
        match registered.map(Algorithm::from_name) {
            None => allowed,
            Some(Ok(a)) if allowed.contains(a) => AlgorithmSet::of(&[a]),
            Some(_) => AlgorithmSet::NONE,
        }
    }
}

impl ClientMetadata {
    /// The pairwise sector of this client (OIDC Core §8.1): the one host shared by all
    /// its redirect URIs; `None` without redirect URIs or with several hosts.
    pub fn sector_identifier(&self) -> Option<String> {
        let mut hosts = self.redirect_uris.iter().map(|u| {
            url::Url::parse(u)
                .ok()
                .and_then(|p| p.host_str().map(str::to_owned))
        });
        let first = hosts.next()??;
        for h in hosts {
            if h.as_deref() != Some(first.as_str()) {
                return None;
            }
        }
        Some(first)
    }
}

/// An absolute `https` URL with a host and no fragment.
pub(crate) fn https_url(u: &str) -> bool {
    url::Url::parse(u)
        .is_ok_and(|p| p.scheme() == "https" && p.host_str().is_some() && p.fragment().is_none())
}

/// Longest `backchannel_client_notification_endpoint` accepted.
pub const MAX_NOTIFICATION_ENDPOINT_LEN: usize = 2048;

/// A CIBA notification endpoint (CIBA §4, THREATS B14): an absolute `https` URL with a
/// host, no fragment, no userinfo, whose host is not a literal loopback, private,
/// link-local (169.254.169.254 included), unique-local, CGNAT, multicast, unspecified or
/// otherwise reserved address, nor `localhost`. A DNS name that *resolves* to such an
/// address can only be caught when the notification is sent: the server re-checks the
/// resolved address then (core does no DNS).
pub(crate) fn notification_endpoint(u: &str) -> bool {
    use url::Host;
    if u.len() > MAX_NOTIFICATION_ENDPOINT_LEN || !https_url(u) {
        return false;
    }
    let Ok(p) = url::Url::parse(u) else {
        return false;
    };
    if !p.username().is_empty() || p.password().is_some() {
        return false;
    }
    match p.host() {
        None => false,
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d != "localhost" && !d.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => !forbidden_ip(std::net::IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => !forbidden_ip(std::net::IpAddr::V6(ip)),
    }
}

/// An https endpoint with no userinfo whose host is one the operator allowed.
fn operator_allowed(u: &str, hosts: &[String]) -> bool {
    if hosts.is_empty() || u.len() > MAX_NOTIFICATION_ENDPOINT_LEN || !https_url(u) {
        return false;
    }
    url::Url::parse(u).is_ok_and(|p| {
        p.username().is_empty()
            && p.password().is_none()
            && p.host_str().is_some_and(|h| {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                hosts.iter().any(|a| a.eq_ignore_ascii_case(h))
            })
    })
}

/// Whether an address is one that notifications and other outbound calls must never
/// reach unless the operator allowed the host: loopback, private, link-local (cloud
/// metadata at 169.254.169.254), unique-local, site-local, CGNAT, NAT64, 6to4, Teredo and
/// the other IETF protocol assignments, discard-only, SRv6, multicast, unspecified,
/// documentation and reserved ranges, and IPv4 inside IPv6 forms of those (D2, B14): the
/// IANA special-purpose registries' blocks that are not globally reachable, and the
/// blocks that carry an IPv4 address a relay would reach. The `dcr_metadata` fuzz target
/// checks it against an independent table on every address it sees.
pub fn forbidden_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, RFC 3879)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20 (RFC 9637)
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments, Teredo
                || s[0] == 0x2002 // 6to4 (RFC 7526): an IPv4 address behind a relay
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
                || s[0] == 0x5f00 // SRv6 SIDs 5f00::/16
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        }
    }
}

impl ClientMetadata {
    /// Parse registration JSON strictly (unknown members refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, MetadataError> {
        crate::jose::json::parse_object(bytes)
            .map_err(|_| MetadataError::InvalidClientMetadata("json"))?;
        serde_json::from_slice(bytes).map_err(|_| MetadataError::InvalidClientMetadata("member"))
    }

    /// Check the metadata against its profile.
    pub fn validate(self) -> Result<ValidatedClient, MetadataError> {
        self.validate_with(&[])
    }

    /// [`ClientMetadata::validate`] for a client the operator configured: its CIBA
    /// notification endpoint may be on one of `notification_hosts` even when that host is
    /// loopback or private (an on-premises partner; the server's outbound allow-list).
    /// Dynamic registration never gets this exception (THREATS B14).
    pub fn validate_with(
        self,
        notification_hosts: &[String],
    ) -> Result<ValidatedClient, MetadataError> {
        use MetadataError::InvalidClientMetadata as Bad;
        let profile = self.profile;
        let policy = profile.policy();

        // Auth method per profile (D6).
        match self.token_endpoint_auth_method {
            AuthMethod::None if !policy.public_clients_allowed => {
                return Err(Bad("token_endpoint_auth_method"))
            }
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
                if profile == Profile::SmartBackend =>
            {
                return Err(Bad("token_endpoint_auth_method"))
            }
            _ => {}
        }

        // Keys (D3, D4).
        if self.jwks.is_some() && self.jwks_uri.is_some() {
            return Err(Bad("jwks and jwks_uri"));
        }
        if let Some(u) = &self.jwks_uri {
            if !https_url(u) {
                return Err(Bad("jwks_uri"));
            }
        }
        let jwks = match &self.jwks {
            None => None,
            Some(v) => {
                let opts = JwkSetOptions {
                    rsa_alg_when_absent: alg_allowed(
                        profile,
                        &self.token_endpoint_auth_signing_alg,
                        "token_endpoint_auth_signing_alg",
                    )?,
                };
                let set = JwkSet::from_json(v.to_string().as_bytes(), &opts)
                    .map_err(MetadataError::InvalidJwks)?;
                if set
                    .keys()
                    .iter()
                    .any(|k| !policy.algorithms.contains(k.algorithm()))
                {
                    return Err(Bad("jwks algorithm"));
                }
                Some(set)
            }
        };
        let has_keys = jwks.as_ref().is_some_and(|s| !s.is_empty()) || self.jwks_uri.is_some();
        alg_allowed(
            profile,
            &self.token_endpoint_auth_signing_alg,
            "token_endpoint_auth_signing_alg",
        )?;
        alg_allowed(
            profile,
            &self.request_object_signing_alg,
            "request_object_signing_alg",
        )?;
        alg_allowed(
            profile,
            &self.authorization_signed_response_alg,
            "authorization_signed_response_alg",
        )?;
        alg_allowed(
            profile,
            &self.backchannel_authentication_request_signing_alg,
            "backchannel_authentication_request_signing_alg",
        )?;
        alg_allowed(
            profile,
            &self.id_token_signed_response_alg,
            "id_token_signed_response_alg",
        )?;
        alg_allowed(
            profile,
            &self.introspection_signed_response_alg,
            "introspection_signed_response_alg",
        )?;
        if self.resources.len() > 16 || self.resources.iter().any(|r| !https_url(r)) {
            return Err(Bad("resources"));
        }

        // The method's own requirements.
        let san = [
            self.tls_client_auth_subject_dn
                .clone()
                .map(TlsClientAuthRule::SubjectDn),
            self.tls_client_auth_san_dns
                .clone()
                .map(TlsClientAuthRule::SanDns),
            self.tls_client_auth_san_uri
                .clone()
                .map(TlsClientAuthRule::SanUri),
            match &self.tls_client_auth_san_ip {
                None => None,
                Some(ip) => Some(TlsClientAuthRule::SanIp(
                    ip.parse().map_err(|_| Bad("tls_client_auth_san_ip"))?,
                )),
            },
            self.tls_client_auth_san_email
                .clone()
                .map(TlsClientAuthRule::SanEmail),
        ];
        let mut rules: Vec<TlsClientAuthRule> = san.into_iter().flatten().collect();
        let tls_rule = match self.token_endpoint_auth_method {
            AuthMethod::TlsClientAuth => {
                if rules.len() != 1 {
                    return Err(Bad("tls_client_auth needs exactly one subject or SAN"));
                }
                let rule = rules.remove(0);
                rule.validate()
                    .map_err(|_| Bad("tls_client_auth subject"))?;
                Some(rule)
            }
            _ if !rules.is_empty() => return Err(Bad("tls_client_auth_* without tls_client_auth")),
            _ => None,
        };
        match self.token_endpoint_auth_method {
            AuthMethod::PrivateKeyJwt | AuthMethod::SelfSignedTlsClientAuth if !has_keys => {
                return Err(Bad("jwks or jwks_uri required"))
            }
            _ => {}
        }

        // Grant and response types (D6; HEART §4; FAPI 2.0 code only).
        if self.grant_types.is_empty() {
            return Err(Bad("grant_types"));
        }
        if self.response_types.iter().any(|r| r != "code") {
            return Err(Bad("response_types"));
        }
        let has = |g| self.grant_types.contains(&g);
        if policy.client_credentials_only && self.grant_types != [GrantType::ClientCredentials] {
            return Err(Bad("grant_types"));
        }
        if has(GrantType::ClientCredentials) && self.token_endpoint_auth_method == AuthMethod::None
        {
            return Err(Bad("client_credentials needs client authentication"));
        }
        if has(GrantType::RefreshToken) && policy.refresh_token_lifetime.is_none() {
            return Err(Bad("refresh_token not allowed"));
        }
        if profile == Profile::Heart {
            let primary = self
                .grant_types
                .iter()
                .filter(|g| **g != GrantType::RefreshToken)
                .count();
            if primary != 1 {
                return Err(Bad("HEART: one grant type per client"));
            }
        }
        if has(GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            return Err(MetadataError::InvalidRedirectUri(
                RedirectUriError::NotRegistered,
            ));
        }
        if self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(MetadataError::InvalidRedirectUri(RedirectUriError::TooMany));
        }
        let private_use = if profile.is_fapi() {
            PrivateUseSchemes::Refused
        } else {
            PrivateUseSchemes::Allowed
        };
        for u in &self.redirect_uris {
            validate_for_registration(u, private_use).map_err(MetadataError::InvalidRedirectUri)?;
        }

        // Sender constraint (FAPI 2.0 §5.3.2.1 item 4: mTLS binding, DPoP not yet built).
        if policy.sender_constraint_required && !self.tls_client_certificate_bound_access_tokens {
            return Err(Bad("tls_client_certificate_bound_access_tokens required"));
        }
        if policy.par_required
            && !self.require_pushed_authorization_requests
            && has(GrantType::AuthorizationCode)
        {
            return Err(Bad("require_pushed_authorization_requests required"));
        }
        if policy.jarm_required
            && has(GrantType::AuthorizationCode)
            && self.authorization_signed_response_alg.is_none()
        {
            return Err(Bad("authorization_signed_response_alg required"));
        }
        if policy.signed_request_object_required
            && has(GrantType::AuthorizationCode)
            && self.request_object_signing_alg.is_none()
        {
            return Err(Bad("request_object_signing_alg required"));
        }

        // CIBA (SPECS b.6 items 2 and 12; THREATS B14).
        if has(GrantType::Ciba) {
            // CIBA §7.1: the backchannel endpoint authenticates the client like the token
            // endpoint; FAPI-CIBA: confidential clients only. A public client cannot.
            if self.token_endpoint_auth_method == AuthMethod::None {
                return Err(Bad("CIBA needs client authentication"));
            }
            match self.backchannel_token_delivery_mode {
                None => return Err(Bad("backchannel_token_delivery_mode")),
                Some(DeliveryMode::Push) if !policy.ciba_push_allowed => {
                    return Err(Bad("push delivery not allowed"))
                }
                // Pushed tokens are minted when the user decides, on no request of the
                // client: there is no certificate to bind them to (RFC 8705 §3).
                Some(DeliveryMode::Push) if self.tls_client_certificate_bound_access_tokens => {
                    return Err(Bad("push delivery cannot bind tokens to a certificate"))
                }
                Some(DeliveryMode::Ping | DeliveryMode::Push) => {
                    if self.backchannel_client_notification_endpoint.is_none() {
                        return Err(Bad("backchannel_client_notification_endpoint"));
                    }
                }
                Some(DeliveryMode::Poll) => {}
            }
        }
        if let Some(u) = &self.backchannel_client_notification_endpoint {
            if !notification_endpoint(u) && !operator_allowed(u, notification_hosts) {
                return Err(Bad("backchannel_client_notification_endpoint"));
            }
        }
        if let Some(s) = &self.scope {
            ScopeSet::parse(s).map_err(|_| Bad("scope"))?;
        }
        // OIDC Core §8.1: without a sector_identifier_uri (which heartgate does not
        // fetch), the sector is the host of the redirect URIs, so they must share one.
        if self.subject_type == SubjectType::Pairwise && self.sector_identifier().is_none() {
            return Err(Bad("pairwise subject_type needs redirect_uris on one host"));
        }
        if self.client_name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(Bad("client_name"));
        }
        Ok(ValidatedClient {
            metadata: self,
            jwks: jwks.map(std::sync::Arc::new),
            tls_rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use serde_json::json;

    fn jwks(alg: Algorithm) -> serde_json::Value {
        let k = SigningKey::generate(alg).unwrap();
        json!({"keys": [k.verifying_key().to_jwk()]})
    }

    fn fapi() -> serde_json::Value {
        json!({
            "profile": "fapi2-message-signing",
            "redirect_uris": ["https://app.example.com/cb"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks(Algorithm::ES256),
            "require_pushed_authorization_requests": true,
            "tls_client_certificate_bound_access_tokens": true,
            "request_object_signing_alg": "PS256",
            "authorization_signed_response_alg": "ES256",
            "grant_types": ["authorization_code", "refresh_token"],
        })
    }

    fn check(v: serde_json::Value) -> Result<ValidatedClient, MetadataError> {
        ClientMetadata::from_json(v.to_string().as_bytes())?.validate()
    }

    fn with(mut v: serde_json::Value, k: &str, x: serde_json::Value) -> serde_json::Value {
        v[k] = x;
        v
    }

    fn without(mut v: serde_json::Value, k: &str) -> serde_json::Value {
        v.as_object_mut().unwrap().remove(k);
        v
    }

    fn bad(v: serde_json::Value) {
        assert!(
            matches!(
                check(v.clone()),
                Err(MetadataError::InvalidClientMetadata(_))
            ),
            "{v}"
        );
    }

    #[test]
    fn a_complete_fapi_client_validates() {
        let c = check(fapi()).unwrap();
        assert_eq!(c.jwks().unwrap().keys().len(), 1);
    }

    #[test]
    fn d6_fapi_refuses_public_clients_rs256_and_unbound_tokens() {
        bad(with(
            without(fapi(), "jwks"),
            "token_endpoint_auth_method",
            json!("none"),
        ));
        bad(with(fapi(), "request_object_signing_alg", json!("RS256")));
        bad(with(fapi(), "jwks", jwks(Algorithm::RS256)));
        bad(with(
            fapi(),
            "tls_client_certificate_bound_access_tokens",
            json!(false),
        ));
        bad(with(
            fapi(),
            "require_pushed_authorization_requests",
            json!(false),
        ));
        bad(without(fapi(), "authorization_signed_response_alg"));
        bad(without(fapi(), "request_object_signing_alg"));
        bad(with(fapi(), "response_types", json!(["token"])));
        bad(with(fapi(), "request_object_signing_alg", json!("HS256")));
        bad(with(fapi(), "request_object_signing_alg", json!("none")));
    }

    #[test]
    fn d6_implicit_grant_and_unknown_members_are_refused() {
        bad(with(fapi(), "grant_types", json!(["implicit"])));
        bad(with(fapi(), "client_secret", json!("s")));
        bad(with(fapi(), "grant_types", json!([])));
    }

    #[test]
    fn d3_jwks_and_jwks_uri_together_are_refused() {
        bad(with(
            fapi(),
            "jwks_uri",
            json!("https://app.example.com/jwks"),
        ));
        bad(with(
            without(fapi(), "jwks"),
            "jwks_uri",
            json!("http://app.example.com/jwks"),
        ));
        assert!(check(with(
            without(fapi(), "jwks"),
            "jwks_uri",
            json!("https://app.example.com/jwks")
        ))
        .is_ok());
    }

    #[test]
    fn d4_private_symmetric_and_duplicate_keys_are_refused() {
        let mut priv_jwks = jwks(Algorithm::ES256);
        priv_jwks["keys"][0]["d"] = json!("AAAA");
        assert_eq!(
            check(with(fapi(), "jwks", priv_jwks)).unwrap_err(),
            MetadataError::InvalidJwks(KeyError::PrivateMembers)
        );
        let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert_eq!(
            check(with(fapi(), "jwks", oct)).unwrap_err(),
            MetadataError::InvalidJwks(KeyError::Symmetric)
        );
        let k = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("a")
            .unwrap();
        let k2 = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("a")
            .unwrap();
        let dup = json!({"keys": [k.verifying_key().to_jwk(), k2.verifying_key().to_jwk()]});
        assert_eq!(
            check(with(fapi(), "jwks", dup)).unwrap_err(),
            MetadataError::InvalidJwks(KeyError::DuplicateKid)
        );
        bad(with(fapi(), "jwks", json!({"keys": []})));
    }

    #[test]
    fn d1_bad_redirect_uris_are_invalid_redirect_uri() {
        for u in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#f",
            "javascript:alert(1)",
            "com.example.app:/cb",
        ] {
            let r = check(with(fapi(), "redirect_uris", json!([u])));
            assert!(
                matches!(r, Err(MetadataError::InvalidRedirectUri(_))),
                "{u}: {r:?}"
            );
        }
        assert!(matches!(
            check(with(fapi(), "redirect_uris", json!([]))),
            Err(MetadataError::InvalidRedirectUri(_))
        ));
        let many: Vec<String> = (0..21)
            .map(|i| format!("https://app.example.com/cb{i}"))
            .collect();
        assert_eq!(
            check(with(fapi(), "redirect_uris", json!(many))).unwrap_err(),
            MetadataError::InvalidRedirectUri(RedirectUriError::TooMany)
        );
    }

    #[test]
    fn d6_tls_client_auth_needs_exactly_one_valid_subject() {
        let mtls = with(
            with(
                without(fapi(), "jwks"),
                "token_endpoint_auth_method",
                json!("tls_client_auth"),
            ),
            "tls_client_auth_subject_dn",
            json!("CN=client,O=Clinic"),
        );
        assert!(check(mtls.clone()).unwrap().tls_rule().is_some());
        bad(without(mtls.clone(), "tls_client_auth_subject_dn"));
        bad(with(
            mtls.clone(),
            "tls_client_auth_san_dns",
            json!("client.example"),
        ));
        bad(with(mtls.clone(), "tls_client_auth_subject_dn", json!("")));
        bad(with(
            fapi(),
            "tls_client_auth_san_dns",
            json!("client.example"),
        ));
        bad(with(
            without(mtls, "tls_client_auth_subject_dn"),
            "tls_client_auth_san_ip",
            json!("not-an-ip"),
        ));
    }

    #[test]
    fn private_key_jwt_and_self_signed_need_keys() {
        bad(without(fapi(), "jwks"));
        bad(with(
            without(fapi(), "jwks"),
            "token_endpoint_auth_method",
            json!("self_signed_tls_client_auth"),
        ));
    }

    #[test]
    fn smart_backend_is_client_credentials_with_private_key_jwt_only() {
        let backend = json!({"profile": "smart-backend", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks(Algorithm::RS256), "grant_types": ["client_credentials"], "scope": "system/Observation.rs"});
        assert!(check(backend.clone()).is_ok());
        bad(with(
            backend.clone(),
            "grant_types",
            json!(["client_credentials", "refresh_token"]),
        ));
        bad(with(
            backend.clone(),
            "grant_types",
            json!(["authorization_code"]),
        ));
        bad(with(
            backend.clone(),
            "token_endpoint_auth_method",
            json!("none"),
        ));
        bad(with(backend, "scope", json!("system/../Observation.r")));
    }

    /// SPECS.md b.2 item 10, b.12, THREATS J17: ES384 (P-384) and RS384 keys and
    /// algorithms register under the SMART profiles only.
    #[test]
    fn spec_b2_10_es384_and_rs384_register_under_smart_only() {
        let backend = |jwks: serde_json::Value| {
            json!({"profile": "smart-backend", "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks, "grant_types": ["client_credentials"], "scope": "system/Observation.rs"})
        };
        let p384 = jwks(Algorithm::ES384);
        assert_eq!(p384["keys"][0]["crv"], "P-384");
        let c = check(backend(p384.clone())).unwrap();
        assert_eq!(c.jwks().unwrap().keys()[0].algorithm(), Algorithm::ES384);
        assert!(check(with(
            backend(p384.clone()),
            "token_endpoint_auth_signing_alg",
            json!("ES384")
        ))
        .is_ok());
        // An RSA key without `alg` is bound to the registered RS384.
        let rsa = SigningKey::generate(Algorithm::RS384).unwrap();
        let mut rsa_jwk = rsa.verifying_key().to_jwk();
        assert_eq!(rsa_jwk["alg"], "RS384");
        rsa_jwk.remove("alg");
        let c = check(with(
            backend(json!({"keys": [rsa_jwk]})),
            "token_endpoint_auth_signing_alg",
            json!("RS384"),
        ))
        .unwrap();
        assert_eq!(c.jwks().unwrap().keys()[0].algorithm(), Algorithm::RS384);

        // FAPI 2.0 and HEART: the same keys and algorithms are outside the profile.
        bad(with(fapi(), "jwks", p384.clone()));
        bad(with(
            fapi(),
            "token_endpoint_auth_signing_alg",
            json!("ES384"),
        ));
        bad(with(fapi(), "request_object_signing_alg", json!("RS384")));
        let heart = json!({"profile": "heart", "redirect_uris": ["https://app.example.com/cb"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(Algorithm::ES256)});
        assert!(check(heart.clone()).is_ok());
        bad(with(heart.clone(), "jwks", p384));
        bad(with(
            heart,
            "token_endpoint_auth_signing_alg",
            json!("RS384"),
        ));
    }

    #[test]
    fn heart_limits_a_client_to_one_grant_type_and_allows_public_native_clients() {
        let native = json!({"profile": "heart", "token_endpoint_auth_method": "none",
            "redirect_uris": ["com.example.app:/cb", "http://127.0.0.1/cb"],
            "grant_types": ["authorization_code", "refresh_token"]});
        assert!(check(native.clone()).is_ok());
        bad(with(
            native.clone(),
            "grant_types",
            json!(["authorization_code", "client_credentials"]),
        ));
        bad(with(native, "grant_types", json!(["client_credentials"])));
    }

    #[test]
    fn b14_only_the_operator_allows_a_private_notification_host() {
        let md = |endpoint: &str| {
            let v = json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks(Algorithm::ES256), "grant_types": ["urn:openid:params:grant-type:ciba"],
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": endpoint});
            ClientMetadata::from_json(v.to_string().as_bytes()).unwrap()
        };
        let local = "https://127.0.0.1:8444/cb";
        let allowed = ["127.0.0.1".to_owned()];
        // Dynamic registration and every other caller: refused.
        assert!(md(local).validate().is_err());
        assert!(md(local).validate_with(&["10.0.0.1".to_owned()]).is_err());
        // A static client with the host on the operator's allow-list: accepted.
        assert!(md(local).validate_with(&allowed).is_ok());
        // Still https only, no userinfo.
        assert!(md("http://127.0.0.1:8444/cb")
            .validate_with(&allowed)
            .is_err());
        assert!(md("https://u:p@127.0.0.1:8444/cb")
            .validate_with(&allowed)
            .is_err());
        // A public host never needs the list.
        assert!(md("https://clinic.example/cb").validate().is_ok());
    }

    #[test]
    fn ciba_delivery_rules() {
        let ciba = json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks(Algorithm::ES256), "grant_types": ["urn:openid:params:grant-type:ciba"],
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": "https://clinic.example/ciba"});
        assert!(check(ciba.clone()).is_ok());
        bad(without(ciba.clone(), "backchannel_token_delivery_mode"));
        bad(with(
            ciba.clone(),
            "backchannel_client_notification_endpoint",
            json!("http://clinic.example/ciba"),
        ));
        bad(without(
            ciba.clone(),
            "backchannel_client_notification_endpoint",
        ));
        assert!(check(with(
            ciba.clone(),
            "backchannel_token_delivery_mode",
            json!("push")
        ))
        .is_ok());
        let fapi_ciba = with(
            with(ciba, "profile", json!("fapi2-security")),
            "tls_client_certificate_bound_access_tokens",
            json!(true),
        );
        assert!(check(fapi_ciba.clone()).is_ok());
        bad(with(
            fapi_ciba,
            "backchannel_token_delivery_mode",
            json!("push"),
        ));
    }

    #[test]
    fn b14_notification_endpoints_on_local_or_private_addresses_are_refused() {
        let ping = json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks(Algorithm::ES256), "grant_types": ["urn:openid:params:grant-type:ciba"],
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": "https://clinic.example/ciba"});
        for u in [
            "https://127.0.0.1/cb",
            "https://127.1/cb",
            "https://2130706433/cb",
            "https://10.0.0.7/cb",
            "https://172.16.3.4/cb",
            "https://192.168.1.1/cb",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/cb",
            "https://0.0.0.0/cb",
            "https://[::1]/cb",
            "https://[fd00::1]/cb",
            "https://[fe80::1]/cb",
            "https://[::ffff:169.254.169.254]/cb",
            "https://localhost/cb",
            "https://api.localhost./cb",
            "https://user:pw@clinic.example/cb",
            "https://clinic.example/cb#frag",
            "http://clinic.example/cb",
            "clinic.example/cb",
        ] {
            bad(with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!(u),
            ));
        }
        for u in [
            "https://clinic.example:8443/ciba",
            "https://93.184.216.34/cb",
        ] {
            assert!(
                check(with(
                    ping.clone(),
                    "backchannel_client_notification_endpoint",
                    json!(u)
                ))
                .is_ok(),
                "{u}"
            );
        }
    }

    #[test]
    fn ciba_refuses_public_clients_and_certificate_bound_push() {
        let ciba = json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks(Algorithm::ES256), "grant_types": ["urn:openid:params:grant-type:ciba"],
            "backchannel_token_delivery_mode": "push",
            "backchannel_client_notification_endpoint": "https://clinic.example/ciba"});
        assert!(check(ciba.clone()).is_ok());
        bad(with(
            ciba.clone(),
            "tls_client_certificate_bound_access_tokens",
            json!(true),
        ));
        bad(with(
            without(
                with(ciba, "backchannel_token_delivery_mode", json!("poll")),
                "jwks",
            ),
            "token_endpoint_auth_method",
            json!("none"),
        ));
    }

    #[test]
    fn pairwise_subject_needs_one_redirect_host_oidc_core_8_1() {
        let one = with(fapi(), "subject_type", json!("pairwise"));
        let c = check(one.clone()).unwrap();
        assert_eq!(
            c.metadata().sector_identifier().as_deref(),
            Some("app.example.com")
        );
        bad(with(
            one,
            "redirect_uris",
            json!(["https://app.example.com/cb", "https://other.example.net/cb"]),
        ));
        bad(with(fapi(), "subject_type", json!("secret")));
    }

    #[test]
    fn signed_response_algorithms_follow_the_profile() {
        assert!(check(with(
            fapi(),
            "introspection_signed_response_alg",
            json!("ES256")
        ))
        .is_ok());
        bad(with(
            fapi(),
            "introspection_signed_response_alg",
            json!("RS256"),
        ));
        bad(with(fapi(), "id_token_signed_response_alg", json!("none")));
        bad(with(fapi(), "id_token_signed_response_alg", json!("HS256")));
    }

    #[test]
    fn i2_resources_must_be_https_identifiers() {
        assert!(check(with(
            fapi(),
            "resources",
            json!(["https://fhir.example/r4"])
        ))
        .is_ok());
        bad(with(fapi(), "resources", json!(["http://fhir.example/r4"])));
        bad(with(fapi(), "resources", json!(["fhir"])));
    }
}
