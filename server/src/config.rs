//! Configuration: a TOML file (`heartgate --config heartgate.toml`), every setting also
//! from `HEARTGATE_*` environment variables, and defaults that make `heartgate` with no
//! arguments start on the embedded development setup.
//!
//! Environment variables name a setting by its path, sections joined by a double
//! underscore: `HEARTGATE_ISSUER`, `HEARTGATE_TLS__CERT`, `HEARTGATE_LIMITS__MAX_BODY_BYTES`.
//! A value is read as a TOML value when it parses as one (`30`, `true`,
//! `["10.0.0.5"]`), otherwise as a string. Environment wins over the file.
//!
//! `heartgate.example.toml` at the repository root documents every setting.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use heartgate_core::client::ClientMetadata;
use heartgate_core::jose::Algorithm;
use heartgate_core::token::TokenFormat;
use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML (file or environment) does not parse or has unknown settings.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A setting has an invalid value.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's path.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Where state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded redb file in the data directory (the default).
    Embedded,
    /// In memory: lost on restart (tests, demos).
    Memory,
    /// A Redis server shared by every node (`redis://` or `rediss://`).
    Redis(RedisUrl),
}

/// A `redis://` or `rediss://` URL. It may hold a password, so `Debug` and `Display` show
/// it with the password replaced by `[redacted]`; [`RedisUrl::expose`] gives the URL itself.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Parse `s`: a `redis` or `rediss` URL with a host.
    pub fn parse(s: &str) -> Option<RedisUrl> {
        let u = url::Url::parse(s).ok()?;
        (matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some())
            .then(|| RedisUrl(s.to_owned()))
    }

    /// The URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Not echoed: it may hold a password.
        RedisUrl::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("not a redis:// or rediss:// URL with a host"))
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(u) = url::Url::parse(&self.0) else {
            return f.write_str("[redacted]");
        };
        write!(f, "{}://", u.scheme())?;
        match (u.username(), u.password().is_some()) {
            ("", false) => {}
            (user, false) => write!(f, "{user}@")?,
            (user, true) => write!(f, "{user}:[redacted]@")?,
        }
        f.write_str(u.host_str().unwrap_or_default())?;
        if let Some(port) = u.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(u.path())
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Embedded => f.write_str("embedded"),
            StoreKind::Memory => f.write_str("memory"),
            StoreKind::Redis(url) => write!(f, "{url}"),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl<'de> Deserialize<'de> for StoreKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "embedded" | "file" | "redb" => Ok(StoreKind::Embedded),
            "memory" => Ok(StoreKind::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                RedisUrl::parse(url).map(StoreKind::Redis).ok_or_else(|| {
                    serde::de::Error::custom(
                        "invalid Redis URL in `store` (redis://host[:port][/db])",
                    )
                })
            }
            // Not echoed if it might hold a password.
            other if other.contains('@') => Err(serde::de::Error::custom(
                "unknown store (embedded, memory, redis://...)",
            )),
            other => Err(serde::de::Error::custom(format!(
                "unknown store `{other}` (embedded, memory, redis://...)"
            ))),
        }
    }
}

/// Settings of the Redis store (`store = "redis://..."`); ignored by the other stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The first part of every key, so deployments can share one Redis: 1 to 64 of
    /// `A-Z a-z 0-9 _ - .`.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// Bound on opening a connection, in milliseconds.
    #[serde(default = "default_redis_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on each command, in milliseconds: a Redis slower than this is unavailable
    /// (requests fail closed with 503).
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// How long after an entry's expiry Redis deletes it, in seconds: how far the nodes'
    /// clocks may run behind Redis's without Redis dropping entries they consider live.
    #[serde(default = "default_redis_ttl_margin")]
    pub ttl_margin_secs: u64,
    /// The key-encryption key (32 bytes, base64url; `heartgate keys generate-kek FILE`
    /// makes one). Required with a Redis store: the nodes share their signing keys and
    /// secrets through Redis only sealed under it. Every node needs the same file.
    #[serde(default)]
    pub key_encryption_key_file: Option<PathBuf>,
    /// How often a node re-reads the shared keys without a rotation announcement, in
    /// seconds (announcements travel by pub/sub, which may lose one).
    #[serde(default = "default_key_refresh")]
    pub key_refresh_secs: u64,
    /// Replicas that must confirm each write (`WAIT`) before it is acknowledged (0–16;
    /// 0, the default, waits for none): closes the window in which a failover to a
    /// replica loses an acknowledged consumption (THREATS S4).
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long a write waits for those replicas, in milliseconds (1 to less than
    /// `timeout_ms`); then it fails closed (503).
    #[serde(default = "default_wait_timeout")]
    pub wait_timeout_ms: u64,
    /// Whether `store` names a node of a Redis Cluster (database 0 only); the store then
    /// learns the other nodes from the cluster and routes each key to its slot's primary.
    #[serde(default)]
    pub cluster: bool,
    /// Further cluster nodes to start from when the one in `store` is down (only with
    /// `cluster = true`). They may hold a password; they are never logged.
    #[serde(default)]
    pub cluster_nodes: Vec<RedisUrl>,
}

fn default_wait_timeout() -> u64 {
    100
}

fn default_redis_prefix() -> String {
    "heartgate".into()
}

fn default_redis_timeout_ms() -> u64 {
    1000
}

fn default_redis_ttl_margin() -> u64 {
    300
}

fn default_key_refresh() -> u64 {
    30
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            key_prefix: default_redis_prefix(),
            connect_timeout_ms: default_redis_timeout_ms(),
            timeout_ms: default_redis_timeout_ms(),
            ttl_margin_secs: default_redis_ttl_margin(),
            key_encryption_key_file: None,
            key_refresh_secs: default_key_refresh(),
            wait_replicas: 0,
            wait_timeout_ms: default_wait_timeout(),
            cluster: false,
            cluster_nodes: Vec::new(),
        }
    }
}

impl Config {
    /// The Redis URLs to reach the store at `url` by: `url`, then the further cluster
    /// nodes (secret: they may hold passwords).
    pub fn redis_urls(&self, url: &RedisUrl) -> Vec<String> {
        std::iter::once(url)
            .chain(&self.redis.cluster_nodes)
            .map(|u| u.expose().to_owned())
            .collect()
    }
}

impl RedisConfig {
    /// The store options these settings give.
    pub fn options(&self) -> crate::stores::redis::RedisOptions {
        crate::stores::redis::RedisOptions {
            key_prefix: self.key_prefix.clone(),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            io_timeout: std::time::Duration::from_millis(self.timeout_ms),
            ttl_margin: std::time::Duration::from_secs(self.ttl_margin_secs),
            wait_replicas: self.wait_replicas,
            wait_timeout: std::time::Duration::from_millis(self.wait_timeout_ms),
            cluster: self.cluster,
            cluster_nodes: self
                .cluster_nodes
                .iter()
                .map(|u| u.expose().to_owned())
                .collect(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// TLS settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server; absent: the development PKI of the data
    /// directory is used (created on first start).
    pub cert: Option<PathBuf>,
    /// PEM private key of the server (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// PEM bundles of the CAs whose client certificates `tls_client_auth` accepts
    /// (RFC 8705 §2.1). Self-signed client certificates (§2.2) need no CA.
    #[serde(default)]
    pub client_ca: Vec<PathBuf>,
    /// Addresses of reverse proxies trusted to pass the client certificate in the RFC
    /// 9440 `Client-Cert` header. From anyone else the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

/// Signing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The algorithm of the active key (access tokens; responses for clients that
    /// registered no algorithm).
    #[serde(default = "default_alg")]
    pub algorithm: String,
    /// Further algorithms to keep one signing key each for (e.g. `RS256` for HEART
    /// clients' ID tokens and JARM while the default is `ES256`).
    #[serde(default)]
    pub additional_algorithms: Vec<String>,
}

fn default_alg() -> String {
    "ES256".into()
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            algorithm: default_alg(),
            additional_algorithms: Vec::new(),
        }
    }
}

/// Audit log settings (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// fsync after at most this many lines (1–100000).
    #[serde(default = "default_sync_every")]
    pub sync_every: usize,
    /// fsync when a written line has waited this long, milliseconds (1–60000).
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Events queued for the writer before requests wait (1–1000000).
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
}

fn default_sync_every() -> usize {
    crate::audit_log::SYNC_EVERY
}

fn default_sync_interval_ms() -> u64 {
    u64::try_from(crate::audit_log::SYNC_INTERVAL.as_millis()).unwrap_or(500)
}

fn default_audit_queue() -> usize {
    crate::audit_log::QUEUE
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            sync_every: default_sync_every(),
            sync_interval_ms: default_sync_interval_ms(),
            queue: default_audit_queue(),
        }
    }
}

impl AuditSettings {
    /// The audit log's options.
    pub fn options(&self) -> crate::audit_log::AuditLogOptions {
        crate::audit_log::AuditLogOptions {
            sync_every: self.sync_every,
            sync_interval: std::time::Duration::from_millis(self.sync_interval_ms),
            queue: self.queue,
            ..crate::audit_log::AuditLogOptions::default()
        }
    }
}

/// Password-guessing limits of the sign-in forms (`[login]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Failures allowed per username within the window (1–1000).
    #[serde(default = "default_per_username")]
    pub per_username: u32,
    /// Failures allowed per client address (IPv6: per /64) within the window (1–100000).
    #[serde(default = "default_per_address")]
    pub per_address: u32,
    /// The window, seconds (60–86400).
    #[serde(default = "default_window_secs")]
    pub window_secs: i64,
    /// argon2id memory for new password hashes, KiB (default 19456, OWASP 2024).
    #[serde(default = "default_argon2_memory_kib")]
    pub argon2_memory_kib: u32,
    /// argon2id passes for new password hashes (default 2).
    #[serde(default = "default_argon2_iterations")]
    pub argon2_iterations: u32,
    /// argon2id lanes for new password hashes (default 1).
    #[serde(default = "default_argon2_lanes")]
    pub argon2_lanes: u32,
}

fn default_argon2_memory_kib() -> u32 {
    crate::users::PasswordParams::OWASP_2024.memory_kib
}

fn default_argon2_iterations() -> u32 {
    crate::users::PasswordParams::OWASP_2024.iterations
}

fn default_argon2_lanes() -> u32 {
    crate::users::PasswordParams::OWASP_2024.lanes
}

fn default_per_username() -> u32 {
    crate::users::MAX_FAILURES
}

fn default_per_address() -> u32 {
    crate::users::MAX_FAILURES_PER_ADDRESS
}

fn default_window_secs() -> i64 {
    crate::users::WINDOW_SECS
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            per_username: default_per_username(),
            per_address: default_per_address(),
            window_secs: default_window_secs(),
            argon2_memory_kib: default_argon2_memory_kib(),
            argon2_iterations: default_argon2_iterations(),
            argon2_lanes: default_argon2_lanes(),
        }
    }
}

impl LoginSettings {
    /// The argon2id parameters new password hashes get (`heartgate users add`, the demo
    /// user); existing hashes keep the parameters they hold.
    pub fn password_params(&self) -> crate::users::PasswordParams {
        crate::users::PasswordParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            lanes: self.argon2_lanes,
        }
    }

    /// The user directory's limits.
    pub fn limits(&self) -> crate::users::LoginLimits {
        crate::users::LoginLimits {
            per_username: self.per_username,
            per_address: self.per_address,
            window_secs: self.window_secs,
            ..crate::users::LoginLimits::default()
        }
    }
}

/// CIBA settings (`[ciba]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CibaSettings {
    /// `expires_in` when a request asks for none, seconds (1–600).
    #[serde(default = "default_ciba_expiry")]
    pub expiry: u32,
    /// Polling interval given to clients, seconds (1–600).
    #[serde(default = "default_ciba_interval")]
    pub interval: u32,
    /// Longest `binding_message`, characters (1–200).
    #[serde(default = "default_binding_message_max")]
    pub binding_message_max: usize,
    /// `true`: a `login_hint` naming nobody gets `unknown_user_id` (CIBA §13); `false`:
    /// an `auth_req_id` nobody can approve, so clients cannot probe for users (B10).
    #[serde(default = "default_true")]
    pub reveal_unknown_users: bool,
}

fn default_ciba_expiry() -> u32 {
    heartgate_core::ciba::DEFAULT_EXPIRY
}

fn default_ciba_interval() -> u32 {
    heartgate_core::ciba::DEFAULT_INTERVAL
}

fn default_binding_message_max() -> usize {
    heartgate_core::ciba::DEFAULT_BINDING_MESSAGE_MAX
}

fn default_true() -> bool {
    true
}

impl Default for CibaSettings {
    fn default() -> Self {
        CibaSettings {
            expiry: default_ciba_expiry(),
            interval: default_ciba_interval(),
            binding_message_max: default_binding_message_max(),
            reveal_unknown_users: true,
        }
    }
}

impl CibaSettings {
    /// Core's configuration for `issuer`.
    pub fn to_core(&self, issuer: &str) -> heartgate_core::ciba::CibaConfig {
        let mut c = heartgate_core::ciba::CibaConfig::new(issuer);
        c.default_expiry = self.expiry;
        c.interval = self.interval;
        c.binding_message_max = self.binding_message_max;
        c.unknown_users = if self.reveal_unknown_users {
            heartgate_core::ciba::UnknownUserPolicy::Reveal
        } else {
            heartgate_core::ciba::UnknownUserPolicy::Conceal
        };
        c
    }
}

/// Token settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// The audience of access tokens whose request named no `resource` (the FHIR server).
    #[serde(default = "default_audience")]
    pub default_audience: String,
    /// Format for clients that registered none.
    #[serde(default)]
    pub default_format: TokenFormat,
    /// Lifetime of pushed authorization requests, seconds (5–599).
    #[serde(default = "default_par_lifetime")]
    pub par_lifetime: u32,
    /// Confidential clients rotate refresh tokens with this grace window (seconds)
    /// instead of the profile's policy (FAPI 2.0 §5.3.2.1 allows both). Absent: the
    /// profile's policy.
    pub refresh_grace_seconds: Option<u32>,
}

fn default_audience() -> String {
    "https://fhir.example/r4".into()
}

fn default_par_lifetime() -> u32 {
    60
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            default_audience: default_audience(),
            default_format: TokenFormat::Jwt,
            par_lifetime: default_par_lifetime(),
            refresh_grace_seconds: None,
        }
    }
}

/// Dynamic registration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Lowercase hex SHA-256 of the initial access token. Absent: the token in the data
    /// directory (`initial-access-token`, created on first start) is used.
    pub initial_access_token_sha256: Option<String>,
    /// Close dynamic registration entirely.
    #[serde(default)]
    pub disabled: bool,
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Largest header section, bytes.
    #[serde(default = "default_headers")]
    pub max_header_bytes: usize,
    /// Time to read the request headers, milliseconds (slowloris); also the idle timeout
    /// of a connection with no request being answered (closed one to three of these after
    /// its last byte, gracefully first).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// Time to read a request body, milliseconds.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_ms: u64,
    /// Concurrent connections; further ones wait in the listen backlog.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Requests per second one connection may make, on average (0: no limit). Requests
    /// beyond it wait (they are paced, not refused) until the connection is back within
    /// its rate, so that one client flooding a connection with valid requests — HTTP/2
    /// lets it keep 256 in flight — cannot take the CPU from every other client.
    #[serde(default = "default_connection_rate")]
    pub requests_per_second_per_connection: u32,
    /// How many requests a connection may make at once above its rate before pacing
    /// starts (the bucket's size; 0: the same as the rate, one second's worth).
    #[serde(default)]
    pub request_burst_per_connection: u32,
    /// Pushed authorization requests one authenticated client may make per minute
    /// (RFC 9126 §2.3, THREATS P19; 0: no limit), with a burst of the same size: beyond
    /// it, 429 with `Retry-After`. Counted per node.
    #[serde(default = "default_par_per_client")]
    pub par_per_client_per_minute: u32,
    /// Backchannel authentication requests (`/bc-authorize`) one authenticated client may
    /// make per minute (THREATS B10: probing `login_hint`s for which users exist; 0: no
    /// limit), with a burst of the same size: beyond it, 429 with `Retry-After`. Per node.
    #[serde(default = "default_ciba_per_client")]
    pub ciba_per_client_per_minute: u32,
}

fn default_body() -> usize {
    64 * 1024
}
fn default_headers() -> usize {
    16 * 1024
}
fn default_header_timeout() -> u64 {
    5_000
}
fn default_body_timeout() -> u64 {
    10_000
}
fn default_connections() -> usize {
    4096
}
fn default_connection_rate() -> u32 {
    500
}
fn default_par_per_client() -> u32 {
    600
}
fn default_ciba_per_client() -> u32 {
    120
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_body(),
            max_header_bytes: default_headers(),
            header_read_timeout_ms: default_header_timeout(),
            body_read_timeout_ms: default_body_timeout(),
            max_connections: default_connections(),
            requests_per_second_per_connection: default_connection_rate(),
            request_burst_per_connection: 0,
            par_per_client_per_minute: default_par_per_client(),
            ciba_per_client_per_minute: default_ciba_per_client(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `heartgate_server=debug`...).
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: default_level(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The issuer identifier (https URL, no query or fragment). Default: from `listen`.
    pub issuer: Option<String>,
    /// The listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The data directory: keys, development PKI, the embedded store, the audit log.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where state is kept.
    #[serde(default = "default_store")]
    pub store: StoreKind,
    /// The Redis store's settings.
    #[serde(default)]
    pub redis: RedisConfig,
    /// TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Signing keys.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Tokens.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Dynamic registration.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// CIBA.
    #[serde(default)]
    pub ciba: CibaSettings,
    /// The audit log's fsync policy and queue.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Sign-in limits.
    #[serde(default)]
    pub login: LoginSettings,
    /// Local users (besides those added with `heartgate users add`), as
    /// [`crate::users`] entries.
    #[serde(default)]
    pub users: Vec<toml::Table>,
    /// Statically registered clients: RFC 7591 metadata with a `client_id`.
    #[serde(default)]
    pub clients: Vec<toml::Table>,
    /// Outbound https (client `jwks_uri`, CIBA notifications), as
    /// [`crate::outbound`]'s policy.
    #[serde(default)]
    pub outbound: toml::Table,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./heartgate-data")
}

fn default_store() -> StoreKind {
    StoreKind::Embedded
}

/// Environment variables, as (name, value) pairs.
pub type Env = Vec<(String, String)>;

/// The process environment's `HEARTGATE_*` variables.
pub fn process_env() -> Env {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("HEARTGATE_"))
        .collect()
}

fn env_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.into())),
        Err(_) => toml::Value::String(v.into()),
    }
}

fn apply_env(table: &mut toml::Table, env: &Env) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix("HEARTGATE_") else {
            continue;
        };
        // Command-line conveniences handled elsewhere.
        if path == "CONFIG" {
            continue;
        }
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(ConfigError::Parse(format!("bad variable name {name}")));
        }
        let mut t = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(inner) => inner,
                _ => return Err(ConfigError::Parse(format!("{name}: {p} is not a section"))),
            };
        }
        if let Some(last) = parts.last() {
            t.insert(last.clone(), env_value(value));
        }
    }
    Ok(())
}

/// A configuration ready to run: the file and environment merged, validated, with the
/// derived values (issuer, static clients) resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The settings.
    pub config: Config,
    /// The issuer identifier.
    pub issuer: String,
    /// The active key's algorithm.
    pub algorithm: Algorithm,
    /// Further signing algorithms.
    pub additional_algorithms: Vec<Algorithm>,
    /// Static clients, validated against their profiles.
    pub clients: BTreeMap<String, ClientMetadata>,
}

/// `[outbound] allow_hosts`: hosts operator-configured clients may name as CIBA
/// notification endpoints even when private or loopback (the outbound policy lets calls
/// reach them too).
fn allow_hosts(outbound: &toml::Table) -> Vec<String> {
    outbound
        .get("allow_hosts")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Resolved {
    /// The hosts static clients' CIBA notification endpoints may use although private.
    pub fn notification_hosts(&self) -> Vec<String> {
        allow_hosts(&self.config.outbound)
    }
}

impl Config {
    /// Parse TOML text merged with `env`, without validating.
    pub fn parse(text: &str, env: &Env) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        apply_env(&mut table, env)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_owned()))
    }

    /// Load `path` (or nothing: defaults) merged with `env`, and validate.
    pub fn load(path: Option<&Path>, env: &Env) -> Result<Resolved, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Config::parse(&text, env)?.resolve()
    }

    /// Validate and derive.
    pub fn resolve(self) -> Result<Resolved, ConfigError> {
        let issuer = match &self.issuer {
            Some(i) => i.trim_end_matches('/').to_owned(),
            None => format!("https://{}", self.listen),
        };
        let u = url::Url::parse(&issuer).map_err(|e| invalid("issuer", e.to_string()))?;
        if u.scheme() != "https" || u.query().is_some() || u.fragment().is_some() {
            return Err(invalid(
                "issuer",
                "must be an https URL without query or fragment (RFC 8414 §2)",
            ));
        }
        let algorithm = Algorithm::from_name(&self.keys.algorithm)
            .map_err(|_| invalid("keys.algorithm", "unknown algorithm"))?;
        let mut additional_algorithms = Vec::new();
        for a in &self.keys.additional_algorithms {
            let a = Algorithm::from_name(a)
                .map_err(|_| invalid("keys.additional_algorithms", "unknown algorithm"))?;
            if a == algorithm || additional_algorithms.contains(&a) {
                return Err(invalid(
                    "keys.additional_algorithms",
                    "each algorithm once, not the active one",
                ));
            }
            additional_algorithms.push(a);
        }
        if !(1..=100_000).contains(&self.audit.sync_every) {
            return Err(invalid("audit.sync_every", "1 to 100000 lines"));
        }
        if !(1..=60_000).contains(&self.audit.sync_interval_ms) {
            return Err(invalid("audit.sync_interval_ms", "1 to 60000 ms"));
        }
        if !(1..=1_000_000).contains(&self.audit.queue) {
            return Err(invalid("audit.queue", "1 to 1000000 events"));
        }
        if !(1..=1000).contains(&self.login.per_username) {
            return Err(invalid("login.per_username", "1 to 1000"));
        }
        if !(1..=100_000).contains(&self.login.per_address) {
            return Err(invalid("login.per_address", "1 to 100000"));
        }
        if !(60..=86_400).contains(&self.login.window_secs) {
            return Err(invalid("login.window_secs", "60 to 86400 seconds"));
        }
        self.login
            .password_params()
            .check()
            .map_err(|reason| invalid("login.argon2_*", reason))?;
        if !(1..=heartgate_core::ciba::MAX_EXPIRY).contains(&self.ciba.expiry) {
            return Err(invalid("ciba.expiry", "1 to 600 seconds"));
        }
        if !(1..=heartgate_core::ciba::MAX_INTERVAL).contains(&self.ciba.interval) {
            return Err(invalid("ciba.interval", "1 to 600 seconds"));
        }
        if !(1..=heartgate_core::ciba::MAX_BINDING_MESSAGE_MAX)
            .contains(&self.ciba.binding_message_max)
        {
            return Err(invalid("ciba.binding_message_max", "1 to 200 characters"));
        }
        if !(5..=599).contains(&self.tokens.par_lifetime) {
            return Err(invalid("tokens.par_lifetime", "5 to 599 seconds"));
        }
        if !url::Url::parse(&self.tokens.default_audience)
            .is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
        {
            return Err(invalid("tokens.default_audience", "must be an https URL"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid("tls", "cert and key go together"));
        }
        if let Some(h) = &self.registration.initial_access_token_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "registration.initial_access_token_sha256",
                    "64 hex digits",
                ));
            }
        }
        if self.limits.max_body_bytes < 1024 || self.limits.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid("limits.max_body_bytes", "1 KiB to 16 MiB"));
        }
        if !crate::stores::redis::valid_prefix(&self.redis.key_prefix) {
            return Err(invalid("redis.key_prefix", "1 to 64 of A-Z a-z 0-9 _ - ."));
        }
        for (setting, ms) in [
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.timeout_ms", self.redis.timeout_ms),
        ] {
            if !(1..=60_000).contains(&ms) {
                return Err(invalid(setting, "1 to 60000 milliseconds"));
            }
        }
        if self.redis.ttl_margin_secs > 86_400 {
            return Err(invalid("redis.ttl_margin_secs", "0 to 86400 seconds"));
        }
        if self.redis.wait_replicas > 16 {
            return Err(invalid("redis.wait_replicas", "0 to 16"));
        }
        if self.redis.wait_timeout_ms == 0 || self.redis.wait_timeout_ms >= self.redis.timeout_ms {
            return Err(invalid(
                "redis.wait_timeout_ms",
                "1 ms to less than redis.timeout_ms",
            ));
        }
        if !(1..=3600).contains(&self.redis.key_refresh_secs) {
            return Err(invalid("redis.key_refresh_secs", "1 to 3600 seconds"));
        }
        if !self.redis.cluster && !self.redis.cluster_nodes.is_empty() {
            return Err(invalid(
                "redis.cluster_nodes",
                "only with redis.cluster = true",
            ));
        }
        if self.redis.cluster {
            let urls = std::iter::once(match &self.store {
                StoreKind::Redis(u) => u,
                _ => return Err(invalid("redis.cluster", "only with a redis:// store")),
            })
            .chain(&self.redis.cluster_nodes);
            let mut schemes = std::collections::BTreeSet::new();
            for u in urls {
                if !crate::stores::redis::names_database_zero(u.expose()) {
                    return Err(invalid(
                        "redis.cluster",
                        "a Redis Cluster has database 0 only: no other database in the URLs",
                    ));
                }
                schemes.insert(u.expose().split(':').next().unwrap_or_default().to_owned());
            }
            if schemes.len() > 1 {
                return Err(invalid(
                    "redis.cluster_nodes",
                    "all redis:// or all rediss://: one cluster is reached over TLS or not",
                ));
            }
        }
        if matches!(self.store, StoreKind::Redis(_)) && self.redis.key_encryption_key_file.is_none()
        {
            return Err(invalid(
                "redis.key_encryption_key_file",
                "required with a Redis store: the nodes share their signing keys through Redis only sealed under it (`heartgate keys generate-kek FILE` makes one)",
            ));
        }
        let mut clients = BTreeMap::new();
        for (i, t) in self.clients.iter().enumerate() {
            let json = serde_json::to_vec(t).map_err(|e| invalid("clients", e.to_string()))?;
            let md = ClientMetadata::from_json(&json)
                .map_err(|e| invalid("clients", format!("client #{}: {e}", i + 1)))?;
            if md.client_id.is_empty() {
                return Err(invalid("clients", format!("client #{}: client_id", i + 1)));
            }
            let v = md
                .clone()
                .validate_with(&allow_hosts(&self.outbound))
                .map_err(|e| invalid("clients", format!("{}: {e}", md.client_id)))?;
            if clients
                .insert(md.client_id.clone(), v.metadata().clone())
                .is_some()
            {
                return Err(invalid("clients", format!("{} twice", md.client_id)));
            }
        }
        Ok(Resolved {
            issuer,
            algorithm,
            additional_algorithms,
            clients,
            config: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_file_and_no_environment_is_the_embedded_default() {
        let r = Config::load(None, &Env::new()).unwrap();
        assert_eq!(r.issuer, "https://127.0.0.1:8443");
        assert_eq!(r.config.store, StoreKind::Embedded);
        assert_eq!(r.config.data_dir, PathBuf::from("./heartgate-data"));
        assert_eq!(r.algorithm, Algorithm::ES256);
    }

    #[test]
    fn environment_overrides_the_file_by_path() {
        let text = "issuer = \"https://as.example\"\n[limits]\nmax_body_bytes = 4096\n";
        let r = Config::parse(
            text,
            &env(&[
                ("HEARTGATE_ISSUER", "https://as.hospital.example"),
                ("HEARTGATE_LIMITS__MAX_BODY_BYTES", "8192"),
                (
                    "HEARTGATE_LIMITS__REQUESTS_PER_SECOND_PER_CONNECTION",
                    "250",
                ),
                ("HEARTGATE_TLS__TRUSTED_PROXIES", "[\"10.0.0.5\"]"),
                ("HEARTGATE_STORE", "memory"),
                ("HEARTGATE_KEYS__ADDITIONAL_ALGORITHMS", "[\"RS256\"]"),
            ]),
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(r.issuer, "https://as.hospital.example");
        assert_eq!(r.config.limits.max_body_bytes, 8192);
        assert_eq!(r.config.limits.requests_per_second_per_connection, 250);
        assert_eq!(
            LimitsConfig::default().requests_per_second_per_connection,
            500
        );
        assert_eq!(
            r.config.tls.trusted_proxies,
            vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.config.store, StoreKind::Memory);
        assert_eq!(r.additional_algorithms, vec![Algorithm::RS256]);
    }

    #[test]
    fn unknown_settings_and_bad_values_are_refused_with_their_name() {
        for (text, what) in [
            ("isuer = \"https://x\"", "unknown"),
            ("issuer = \"http://as.example\"", "issuer"),
            ("[keys]\nalgorithm = \"HS256\"", "keys.algorithm"),
            ("[keys]\nalgorithm = \"none\"", "keys.algorithm"),
            ("[tokens]\npar_lifetime = 600", "tokens.par_lifetime"),
            ("[ciba]\nexpiry = 0", "ciba.expiry"),
            ("[audit]\nsync_every = 0", "audit.sync_every"),
            ("[audit]\nsync_interval_ms = 0", "audit.sync_interval_ms"),
            ("[audit]\nqueue = 0", "audit.queue"),
            ("[login]\nper_username = 0", "login.per_username"),
            ("[login]\nper_address = 0", "login.per_address"),
            ("[login]\nwindow_secs = 10", "login.window_secs"),
            ("[login]\nargon2_memory_kib = 4096", "login.argon2_*"),
            (
                "[login]\nargon2_memory_kib = 7168\nargon2_iterations = 2",
                "login.argon2_*",
            ),
            ("[login]\nargon2_lanes = 0", "login.argon2_*"),
            ("[login]\nargon2_iterations = 101", "login.argon2_*"),
            ("[login]\nargon2_memory_kib = 4194305", "login.argon2_*"),
            ("[ciba]\nexpiry = 601", "ciba.expiry"),
            ("[ciba]\ninterval = 0", "ciba.interval"),
            ("[ciba]\nbinding_message_max = 201", "ciba.binding_message_max"),
            ("[tls]\ncert = \"a.pem\"", "tls"),
            ("store = \"mongodb\"", "store"),
            ("store = \"redis://\"", "store"),
            ("[redis]\nkey_prefix = \"a:b\"", "redis.key_prefix"),
            ("[redis]\ntimeout_ms = 0", "redis.timeout_ms"),
            ("[redis]\nconnect_timeout_ms = 60001", "redis.connect_timeout_ms"),
            ("[redis]\nttl_margin_secs = 86401", "redis.ttl_margin_secs"),
            ("[redis]\nwait_replicas = 17", "redis.wait_replicas"),
            ("[redis]\nwait_timeout_ms = 0", "redis.wait_timeout_ms"),
            (
                "[redis]\ntimeout_ms = 500\nwait_timeout_ms = 500",
                "redis.wait_timeout_ms",
            ),
            ("[redis]\ncluster_nodes = [\"redis://h:7001\"]", "redis.cluster_nodes"),
            (
                "store = \"redis://h:7000\"\n[redis]\ncluster = true\nkey_encryption_key_file = \"/k\"\ncluster_nodes = [\"rediss://h:7001\"]",
                "redis.cluster_nodes",
            ),
            ("[redis]\ncluster = true", "redis.cluster"),
            (
                "store = \"redis://h:7000/1\"\n[redis]\ncluster = true\nkey_encryption_key_file = \"/k\"",
                "redis.cluster",
            ),
            (
                "store = \"redis://h:7000\"\n[redis]\ncluster = true\nkey_encryption_key_file = \"/k\"\ncluster_nodes = [\"redis://h:7001/2\"]",
                "redis.cluster",
            ),
            ("[[clients]]\nprofile = \"fapi2-security\"\nclient_id = \"c\"\ntoken_endpoint_auth_method = \"none\"\nredirect_uris = [\"https://a.example/cb\"]", "clients"),
        ] {
            let r = Config::parse(text, &Env::new()).and_then(Config::resolve);
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains(what) || what == "unknown",
                "{text}: {e}"
            );
        }
        assert!(Config::parse("", &env(&[("HEARTGATE_NOPE", "1")])).is_err());
    }

    #[test]
    fn a_redis_url_selects_the_redis_store_and_its_password_is_never_shown() {
        let text = "store = \"redis://user:hunter2@10.0.0.7:6380/3\"\n[redis]\nkey_prefix = \"prod-eu\"\ntimeout_ms = 500\nkey_encryption_key_file = \"/etc/heartgate/kek\"\n";
        let r = Config::parse(text, &Env::new()).unwrap().resolve().unwrap();
        let StoreKind::Redis(url) = &r.config.store else {
            panic!("{:?}", r.config.store);
        };
        assert_eq!(url.expose(), "redis://user:hunter2@10.0.0.7:6380/3");
        for shown in [
            format!("{url}"),
            format!("{:?}", r.config.store),
            format!("{r:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(url.to_string(), "redis://user:[redacted]@10.0.0.7:6380/3");
        let o = r.config.redis.options();
        assert_eq!(o.key_prefix, "prod-eu");
        assert_eq!(o.io_timeout, std::time::Duration::from_millis(500));
        let cluster = Config::parse(
            "store = \"redis://:pw@n1:7000\"\n[redis]\ncluster = true\nkey_encryption_key_file = \"/k\"\ncluster_nodes = [\"redis://:pw@n2:7000\", \"redis://n3:7000/0\"]",
            &Env::new(),
        )
        .unwrap()
        .resolve()
        .unwrap();
        let o = cluster.config.redis.options();
        assert!(o.cluster);
        assert_eq!(
            o.cluster_nodes,
            ["redis://:pw@n2:7000", "redis://n3:7000/0"]
        );
        assert!(
            !format!("{:?}", cluster.config).contains("pw@"),
            "passwords redacted"
        );
        let bad = Config::parse(
            "[redis]\ncluster = true\ncluster_nodes = [\"http://:hunter2@x\"]",
            &Env::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(!bad.contains("hunter2"), "{bad}");
        let tls = Config::parse("store = \"rediss://redis.internal\"", &Env::new()).unwrap();
        assert!(matches!(tls.store, StoreKind::Redis(_)));
        let bad = Config::parse("store = \"redis:/x:hunter2@h\"", &Env::new()).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        // Shared keys: a Redis store needs the key-encryption key; the refresh is bounded.
        let no_kek = text.replace("key_encryption_key_file", "# key_encryption_key_file");
        let e = Config::parse(&no_kek, &Env::new())
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            e.to_string().contains("redis.key_encryption_key_file"),
            "{e}"
        );
        for bad in ["0", "3601"] {
            let t = format!("{text}key_refresh_secs = {bad}\n");
            let e = Config::parse(&t, &Env::new())
                .unwrap()
                .resolve()
                .unwrap_err();
            assert!(e.to_string().contains("redis.key_refresh_secs"), "{e}");
        }
    }

    #[test]
    fn static_clients_are_validated_against_their_profile() {
        let text = r#"
[[clients]]
client_id = "fhir-server"
profile = "smart-backend"
token_endpoint_auth_method = "private_key_jwt"
grant_types = ["client_credentials"]
jwks_uri = "https://fhir.example/jwks"
resources = ["https://fhir.example/r4"]
"#;
        let r = Config::parse(text, &Env::new()).unwrap().resolve().unwrap();
        assert!(r.clients.contains_key("fhir-server"));
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../heartgate.example.toml");
        let r = Config::parse(text, &Env::new()).unwrap().resolve().unwrap();
        assert_eq!(r.issuer, "https://127.0.0.1:8443");
        assert_eq!(r.config.limits.max_body_bytes, 65536);
    }

    #[test]
    fn ciba_settings_reach_core() {
        let c = Config::parse(
            "[ciba]\nexpiry = 120\ninterval = 2\nbinding_message_max = 40\nreveal_unknown_users = false\n",
            &Env::new(),
        )
        .unwrap();
        let core = c.ciba.to_core("https://as.example");
        assert_eq!(
            (core.default_expiry, core.interval, core.binding_message_max),
            (120, 2, 40)
        );
        assert_eq!(
            core.unknown_users,
            heartgate_core::ciba::UnknownUserPolicy::Conceal
        );
        let d = Config::parse("", &Env::new())
            .unwrap()
            .ciba
            .to_core("https://as.example");
        assert_eq!(
            (
                d.default_expiry,
                d.interval,
                d.binding_message_max,
                d.unknown_users
            ),
            (300, 5, 20, heartgate_core::ciba::UnknownUserPolicy::Reveal)
        );
    }

    #[test]
    fn audit_and_login_settings_reach_the_log_and_the_user_directory() {
        let c = Config::parse(
            "[audit]\nsync_every = 1\nsync_interval_ms = 50\nqueue = 64\n[login]\nper_username = 3\nper_address = 7\nwindow_secs = 600\n",
            &Env::new(),
        )
        .unwrap();
        let o = c.audit.options();
        assert_eq!(
            (o.sync_every, o.sync_interval, o.queue),
            (1, std::time::Duration::from_millis(50), 64)
        );
        let l = c.login.limits();
        assert_eq!((l.per_username, l.per_address, l.window_secs), (3, 7, 600));
        let d = Config::parse("", &Env::new()).unwrap();
        assert_eq!(
            d.audit.options(),
            crate::audit_log::AuditLogOptions::default()
        );
        assert_eq!(
            (d.login.limits().per_username, d.login.limits().per_address),
            (5, 20)
        );
    }
}
