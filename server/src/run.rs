//! Putting the server together from a resolved configuration: data directory, keys,
//! TLS, store, users, audit log, outbound fetching; then serving until a signal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use heartgate_core::audit::AuditSink;
use heartgate_core::client::RegistrarConfig;
use heartgate_core::introspect::{CacheConfig, IntrospectionCache};
use heartgate_core::oidc::PairwiseSubjects;
use heartgate_core::store::{MemoryStore, Store};
use heartgate_core::token::{TokenHash, TokenIssuer};
use tokio::net::TcpListener;

use crate::app::{discovery, App, Settings, Users};
use crate::audit_log::AuditLog;
use crate::config::{Resolved, StoreKind};
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::setup::{DataDir, SetupError};
use crate::tls::{self, ClientCas};
use crate::users::UserDirectory;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
}

fn other(context: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Other(format!("{context}: {e}"))
}

/// What a start prints: where to find things (never a secret other than the demo
/// password on the very first start, and the initial access token's file path).
#[derive(Debug, Clone)]
pub struct Banner {
    /// The issuer.
    pub issuer: String,
    /// The development CA to trust, when the development PKI is used.
    pub ca_path: Option<PathBuf>,
    /// The file holding the initial access token.
    pub initial_access_token_path: PathBuf,
    /// The demo user's password, only on the first start.
    pub demo_password: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl Banner {
    /// The text printed at start.
    pub fn render(&self) -> String {
        let mut s = format!(
            "heartgate {} listening\n  issuer:        {}\n  data dir:      {}\n",
            env!("CARGO_PKG_VERSION"),
            self.issuer,
            self.data_dir.display()
        );
        if let Some(ca) = &self.ca_path {
            s.push_str(&format!(
                "  trust this CA: {} (development PKI)\n",
                ca.display()
            ));
        }
        if let Some(p) = &self.demo_password {
            s.push_str(&format!(
                "  demo user:     username `demo`, password `{p}` (shown once; `heartgate users add` for more)\n"
            ));
        }
        let ca = self
            .ca_path
            .as_ref()
            .map(|p| format!(" --cacert {}", p.display()))
            .unwrap_or_default();
        s.push_str(&format!(
            "\nRegister a client:\n  curl{ca} -X POST {}/register \\\n    -H \"Authorization: Bearer $(cat {})\" \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"profile\":\"smart\",\"client_name\":\"My app\",\"redirect_uris\":[\"http://127.0.0.1:8080/cb\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\",\"refresh_token\"]}}'\n",
            self.issuer,
            self.initial_access_token_path.display()
        ));
        s
    }
}

/// A server ready to listen.
pub struct Server {
    /// The application.
    pub app: Arc<App>,
    /// TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Limits.
    pub limits: crate::config::LimitsConfig,
    /// Where to listen.
    pub listen: SocketAddr,
    /// What to print.
    pub banner: Banner,
    /// The audit log, to close on shutdown.
    pub audit_log: Option<Arc<AuditLog>>,
}

/// The users of the configuration and of the data directory's `users.json`; on the first
/// start a demo user is created and its password returned.
fn users(cfg: &Resolved, dir: &DataDir) -> Result<(UserDirectory, Option<String>), RunError> {
    let path = dir.path("users.json");
    let mut entries = crate::users::load_entries(&path).map_err(|e| other("users.json", e))?;
    let mut demo = None;
    if entries.is_empty() && cfg.config.users.is_empty() {
        let (entry, password) = crate::users::demo_user(cfg.config.login.password_params())
            .map_err(|e| other("demo user", e))?;
        entries.push(entry);
        crate::users::save_entries(&path, &entries).map_err(|e| other("users.json", e))?;
        demo = Some(password);
    }
    for t in &cfg.config.users {
        let e: crate::users::UserEntry = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| other("users", e.message()))?;
        entries.push(e);
    }
    let dir = UserDirectory::with_limits(entries, cfg.config.login.limits())
        .map_err(|e| other("users", e))?;
    Ok((dir, demo))
}

/// What a node signs with and its secrets: its data directory's, or on a Redis store
/// the ones every node shares (`keyshare`).
struct NodeSecrets {
    keys: Arc<heartgate_core::jose::KeyRing>,
    pairwise_secret: zeroize::Zeroizing<[u8; 32]>,
    session_secret: zeroize::Zeroizing<[u8; 32]>,
    initial_access_token: zeroize::Zeroizing<String>,
    share: Option<Arc<crate::keyshare::KeyShare>>,
}

/// How long a starting node waits for the store holding the shared keys.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

fn node_secrets(
    cfg: &Resolved,
    dir: &DataDir,
    boot: crate::setup::Bootstrapped,
    store: &dyn Store,
) -> Result<NodeSecrets, RunError> {
    use crate::keyshare::{Kek, KeyShare, ShareError, SharedSet};
    let c = &cfg.config;
    let (StoreKind::Redis(_), Some(kek_path)) = (&c.store, &c.redis.key_encryption_key_file) else {
        return Ok(NodeSecrets {
            keys: boot.keys,
            pairwise_secret: boot.pairwise_secret,
            session_secret: boot.session_secret,
            initial_access_token: boot.initial_access_token,
            share: None,
        });
    };
    let setting = "redis.key_encryption_key_file";
    let kek = Kek::from_file(kek_path).map_err(|e| other(setting, e))?;
    let share = KeyShare::new(
        kek,
        &c.redis.key_prefix,
        std::time::Duration::from_secs(c.redis.key_refresh_secs),
    );
    let mut wanted = vec![cfg.algorithm];
    wanted.extend(&cfg.additional_algorithms);
    let started = std::time::Instant::now();
    let set = loop {
        let local = || {
            let keys = dir
                .key_material()
                .map_err(|e| ShareError::Corrupt(e.to_string()))?;
            Ok(SharedSet::from_local(
                &keys,
                &boot.pairwise_secret,
                &boot.session_secret,
                &boot.initial_access_token,
            ))
        };
        match share.join(store, local, &wanted, crate::app::now()) {
            Ok(set) => break set,
            Err(ShareError::Store(_)) if started.elapsed() < JOIN_PATIENCE => {
                tracing::warn!("shared keys: the store is not reachable yet; retrying");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(other("shared keys", e)),
        }
    };
    let err = |e: ShareError| other("shared keys", e);
    let initial_access_token = set.initial_access_token();
    // The banner points at this file: keep it the cluster's token, not this node's own.
    crate::setup::write_atomic(
        &dir.path("initial-access-token"),
        initial_access_token.as_bytes(),
        true,
    )
    .map_err(|e| other("initial-access-token", e))?;
    tracing::info!(
        generation = set.generation(),
        "shared keys: joined the cluster's key set"
    );
    Ok(NodeSecrets {
        keys: set.ring().map_err(err)?,
        pairwise_secret: set.pairwise_secret().map_err(err)?,
        session_secret: set.session_secret().map_err(err)?,
        initial_access_token,
        share: Some(Arc::new(share)),
    })
}

/// What `heartgate keys rotate` did.
#[derive(Debug)]
pub enum Rotated {
    /// A new active key in the data directory; the server uses it after a restart.
    Local(String),
    /// A new generation of the cluster's shared keys, announced to `listening` nodes
    /// (`None`: the announcement failed; nodes take it within `key_refresh_secs`).
    Shared {
        /// The new active kid.
        kid: String,
        /// Nodes that received the announcement.
        listening: Option<i64>,
    },
}

/// `heartgate keys rotate`: on a Redis store the cluster's shared keys (every running
/// node takes them without a restart), otherwise the data directory's.
pub fn rotate_keys(cfg: &Resolved) -> Result<Rotated, RunError> {
    let c = &cfg.config;
    let (StoreKind::Redis(url), Some(kek_path)) = (&c.store, &c.redis.key_encryption_key_file)
    else {
        let dir = DataDir::new(&c.data_dir);
        dir.bootstrap(cfg.algorithm, &cfg.additional_algorithms)?;
        return Ok(Rotated::Local(dir.rotate_keys()?));
    };
    let kek = crate::keyshare::Kek::from_file(kek_path)
        .map_err(|e| other("redis.key_encryption_key_file", e))?;
    let share = crate::keyshare::KeyShare::new(
        kek,
        &c.redis.key_prefix,
        std::time::Duration::from_secs(c.redis.key_refresh_secs),
    );
    let store = crate::stores::redis::RedisStore::open(url.expose(), c.redis.options())
        .map_err(|e| other("store (redis)", e))?;
    let kid = share
        .rotate(&store, crate::app::now())
        .map_err(|e| other("shared keys", e))?;
    let listening = crate::cluster::announce_keys(&c.redis_urls(url), &c.redis.key_prefix).ok();
    Ok(Rotated::Shared { kid, listening })
}

/// Build the server from `cfg`.
pub fn build(cfg: &Resolved) -> Result<Server, RunError> {
    let c = &cfg.config;
    let dir = DataDir::new(&c.data_dir);
    let boot = dir.bootstrap(cfg.algorithm, &cfg.additional_algorithms)?;
    let (chain, key, ca_path) = match (&c.tls.cert, &c.tls.key) {
        (Some(cert), Some(key)) => (tls::load_certs(cert)?, tls::load_key(key)?, None),
        _ => {
            let host = url::Url::parse(&cfg.issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "127.0.0.1".into());
            let pki = dir.dev_pki(&host)?;
            (
                tls::load_certs(&pki.cert_path)?,
                tls::load_key(&pki.key_path)?,
                Some(pki.ca_path),
            )
        }
    };
    let tls_config = tls::server_config(chain, key)?;
    let client_cas = ClientCas::load(&c.tls.client_ca)?;
    let store: Arc<dyn Store> = match &c.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis(url) => {
            let s = crate::stores::redis::RedisStore::open(url.expose(), c.redis.options())
                .map_err(|e| other("store (redis)", e))?;
            // Not fatal: calls fail closed (503) until Redis answers, then recover.
            if s.ping().is_err() {
                tracing::warn!(endpoint = s.endpoint(), "redis store not reachable yet");
            }
            Arc::new(s)
        }
        StoreKind::Embedded => Arc::new(
            crate::stores::redb::RedbStore::open(dir.path("store.redb"))
                .map_err(|e| other("store.redb", e))?,
        ),
    };
    let shared = node_secrets(cfg, &dir, boot, &*store)?;
    let audit_log = Arc::new(
        AuditLog::open_with(dir.path("audit.log"), c.audit.options())
            .map_err(|e| other("audit.log", e))?,
    );
    let audit: Arc<dyn AuditSink> = audit_log.clone();
    let (users, demo_password) = users(cfg, &dir)?;
    let users: Arc<dyn Users> = Arc::new(users);
    let mut statics = HashMap::new();
    let notification_hosts = cfg.notification_hosts();
    for (id, md) in &cfg.clients {
        let v = md
            .clone()
            .validate_with(&notification_hosts)
            .map_err(|e| other("clients", e))?;
        statics.insert(id.clone(), Arc::new(v));
    }
    let iat_hash = match &c.registration.initial_access_token_sha256 {
        _ if c.registration.disabled => None,
        Some(h) => {
            let mut b = [0u8; 32];
            for (i, chunk) in h.as_bytes().chunks(2).enumerate() {
                let s = std::str::from_utf8(chunk).map_err(|e| other("registration", e))?;
                b[i] = u8::from_str_radix(s, 16).map_err(|e| other("registration", e))?;
            }
            Some(TokenHash(b))
        }
        None => Some(TokenHash::of(&shared.initial_access_token)),
    };
    let registrar = RegistrarConfig::new(format!("{}/register", cfg.issuer), iat_hash);
    let pairwise = PairwiseSubjects::new(&*shared.pairwise_secret)
        .ok_or_else(|| other("secrets/pairwise", "too short"))?;
    let signing = shared.keys.snapshot().signing_algorithms();
    let policy: crate::outbound::OutboundPolicy = toml::Value::Table(c.outbound.clone())
        .try_into()
        .map_err(|e: toml::de::Error| other("outbound", e.message()))?;
    let outbound = Arc::new(
        crate::outbound::OutboundClient::new(policy.clone()).map_err(|e| other("outbound", e))?,
    );
    let jwks = Arc::new(crate::outbound::JwksCache::new(
        crate::outbound::OutboundClient::new(policy).map_err(|e| other("outbound", e))?,
    ));
    let app = App {
        settings: Settings {
            issuer: cfg.issuer.clone(),
            default_audience: c.tokens.default_audience.clone(),
            default_format: c.tokens.default_format,
            par_lifetime: c.tokens.par_lifetime,
            refresh_grace: c.tokens.refresh_grace_seconds,
            max_body_bytes: c.limits.max_body_bytes,
            body_timeout: std::time::Duration::from_millis(c.limits.body_read_timeout_ms),
            trusted_proxies: c.tls.trusted_proxies.clone(),
            registration_open: !c.registration.disabled,
            ciba: c.ciba.to_core(&cfg.issuer),
            cluster: match (&c.store, shared.share) {
                (StoreKind::Redis(url), Some(share)) => Some(crate::cluster::Link::new(
                    c.redis_urls(url),
                    &c.redis.options().key_prefix,
                    share,
                )),
                _ => None,
            },
        },
        tokens: TokenIssuer::new(cfg.issuer.clone(), shared.keys.clone()),
        store,
        cache: IntrospectionCache::new(CacheConfig::default()).map_err(|e| other("cache", e))?,
        audit,
        audit_log: Some(audit_log.clone()),
        pairwise,
        statics,
        registrar,
        users,
        sessions: Sessions::new(&shared.session_secret),
        client_cas,
        jwks,
        outbound,
        pairing: crate::app::PairingLimiter::default(),
        metrics: Metrics::default(),
        discovery: discovery(&cfg.issuer, &signing),
        password_checks: Default::default(),
        par_quota: crate::app::ClientQuota::new(cfg.config.limits.par_per_client_per_minute),
        ciba_quota: crate::app::ClientQuota::new(cfg.config.limits.ciba_per_client_per_minute),
    };
    Ok(Server {
        app: Arc::new(app),
        tls: tls_config,
        limits: c.limits.clone(),
        listen: c.listen,
        banner: Banner {
            issuer: cfg.issuer.clone(),
            ca_path,
            initial_access_token_path: dir.path("initial-access-token"),
            demo_password,
            data_dir: c.data_dir.clone(),
        },
        audit_log: Some(audit_log),
    })
}

/// Wait for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// How often expired entries are purged from the store and the cache.
pub const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Purge expired entries periodically (off the async workers: a purge scans the store).
pub fn spawn_purger(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let a = app.clone();
            let started = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                let now = crate::app::now();
                a.cache.purge_expired(now);
                a.store.purge_expired(now)
            })
            .await;
            let ms = started.elapsed().as_millis();
            match r {
                Ok(Ok(n)) => tracing::info!(purged = n, ms, "expired entries purged"),
                Ok(Err(e)) => tracing::warn!(error = %e, "purge failed"),
                Err(_) => tracing::warn!("purge task failed"),
            }
        }
    })
}

/// Bind and serve until a signal.
pub async fn run(server: Server) -> Result<(), RunError> {
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(|e| other(&format!("listen {}", server.listen), e))?;
    println!("{}", server.banner.render());
    tracing::info!(addr = %server.listen, "listening");
    let purger = spawn_purger(server.app.clone());
    crate::http::serve(
        listener,
        server.tls.clone(),
        server.app.clone(),
        server.limits.clone(),
        shutdown_signal(),
    )
    .await;
    purger.abort();
    if let Some(a) = &server.audit_log {
        a.close();
    }
    Ok(())
}
