//! The data directory: what the first start creates and every later start reuses.
//!
//! ```text
//! heartgate-data/
//!   keys/state.json          which key is active, which sign other algorithms, which
//!                            are published for verification only
//!   keys/<kid>.pem           PKCS#8 private keys (0600)
//!   pki/ca.pem               development CA (trust it to call the server)
//!   pki/ca-key.pem           its key (0600), used to issue the server certificate
//!   pki/server.pem           server certificate for 127.0.0.1 / localhost
//!   pki/server-key.pem       its key (0600)
//!   secrets/pairwise         32 random bytes: pairwise subjects and audit pseudonyms
//!   secrets/session          32 random bytes: login cookies and CSRF tokens
//!   initial-access-token     the registration bearer token (0600)
//!   users.json               local users (argon2id hashes only)
//!   store.redb               the embedded store
//!   audit.log                the hash-chained audit log
//! ```
//!
//! Every file is written to a temporary name, synced, then renamed, so a crash never
//! leaves half a key. Secrets are created with mode 0600 on Unix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heartgate_core::jose::{Algorithm, KeyRing, SigningKey, VerifyingKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Why the data directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file has unexpected content.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("generation failed: {0}")]
    Generate(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SetupError {
    SetupError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename), mode 0600 when
/// `secret`.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), SetupError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Create the secret file `path` (mode 0600) with `bytes`; an existing file is an error,
/// never overwritten (a key-encryption key replaced by mistake would lock a cluster out
/// of its keys).
pub fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, SetupError> {
    let mut b = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(&mut *b)
        .map_err(|_| SetupError::Generate("randomness".into()))?;
    Ok(b)
}

/// Which keys the ring holds, as persisted in `keys/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyState {
    /// The active key's kid.
    pub active: String,
    /// Further signing keys' kids, one per algorithm.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Keys published for verification only (previous active keys), newest first.
    #[serde(default)]
    pub published: Vec<String>,
    /// The algorithm of every key above (an RSA PKCS#8 key does not say whether it is
    /// for RS256 or PS256).
    #[serde(default)]
    pub algorithms: std::collections::BTreeMap<String, String>,
}

/// The private keys of a ring (see [`DataDir::key_material`]).
pub struct LocalKeys {
    /// The active key.
    pub active: SigningKey,
    /// Further signing keys, one per other algorithm.
    pub signers: Vec<SigningKey>,
    /// Previous keys, published for verification only, newest first.
    pub published: Vec<SigningKey>,
}

/// How many previous keys stay published after a rotation (tokens live ≤ 1 h, ID
/// tokens 5 min; two rotations back is ample).
pub const KEEP_PUBLISHED: usize = 2;

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// What `DataDir::bootstrap` produced.
pub struct Bootstrapped {
    /// The signing keys.
    pub keys: Arc<KeyRing>,
    /// The initial access token (from the data directory), to print.
    pub initial_access_token: Zeroizing<String>,
    /// Pairwise / audit pseudonym secret.
    pub pairwise_secret: Zeroizing<[u8; 32]>,
    /// Cookie and CSRF secret.
    pub session_secret: Zeroizing<[u8; 32]>,
    /// Whether this start created the directory's contents.
    pub first_start: bool,
}

impl DataDir {
    /// The directory at `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// A path inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn secret32(&self, rel: &str) -> Result<(Zeroizing<[u8; 32]>, bool), SetupError> {
        let p = self.path(rel);
        match std::fs::read(&p) {
            Ok(b) => {
                let arr: [u8; 32] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(&p, "expected 32 bytes"))?;
                Ok((Zeroizing::new(arr), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let b = random_bytes::<32>()?;
                write_atomic(&p, &*b, true)?;
                Ok((b, true))
            }
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn initial_access_token(&self) -> Result<(Zeroizing<String>, bool), SetupError> {
        let p = self.path("initial-access-token");
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok((Zeroizing::new(t.trim().to_owned()), false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let b = random_bytes::<32>()?;
                let t = Zeroizing::new(format!("hgiat_{}", heartgate_core::jose::b64::encode(*b)));
                write_atomic(&p, t.as_bytes(), true)?;
                Ok((t, true))
            }
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn key_path(&self, kid: &str) -> Result<PathBuf, SetupError> {
        // Kids are RFC 7638 thumbprints (base64url); refuse anything else as a file name.
        if kid.is_empty()
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(corrupt(&self.path("keys/state.json"), "bad kid"));
        }
        Ok(self.path(&format!("keys/{kid}.pem")))
    }

    fn load_key(&self, state: &KeyState, kid: &str) -> Result<SigningKey, SetupError> {
        let p = self.key_path(kid)?;
        let alg = state
            .algorithms
            .get(kid)
            .and_then(|a| Algorithm::from_name(a).ok())
            .ok_or_else(|| corrupt(&self.path("keys/state.json"), "key without algorithm"))?;
        let text = Zeroizing::new(std::fs::read_to_string(&p).map_err(io(&p))?);
        match SigningKey::from_pkcs8_pem(alg, &text) {
            Ok(k) if k.kid() == kid => Ok(k),
            _ => Err(corrupt(&p, "not a usable PKCS#8 signing key for its kid")),
        }
    }

    fn save_key(&self, state: &mut KeyState, k: &SigningKey) -> Result<(), SetupError> {
        write_atomic(&self.key_path(k.kid())?, k.to_pkcs8_pem().as_bytes(), true)?;
        state
            .algorithms
            .insert(k.kid().to_owned(), k.algorithm().as_str().to_owned());
        Ok(())
    }

    /// The key state file, if present.
    pub fn key_state(&self) -> Result<Option<KeyState>, SetupError> {
        let p = self.path("keys/state.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| corrupt(&p, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn save_key_state(&self, s: &KeyState) -> Result<(), SetupError> {
        let json = serde_json::to_vec_pretty(s).map_err(|e| SetupError::Generate(e.to_string()))?;
        write_atomic(&self.path("keys/state.json"), &json, false)
    }

    /// Load the key ring, creating keys for `algorithm` and `additional` where missing.
    pub fn keys(
        &self,
        algorithm: Algorithm,
        additional: &[Algorithm],
    ) -> Result<(Arc<KeyRing>, bool), SetupError> {
        let (mut state, created) = match self.key_state()? {
            Some(s) => (s, false),
            None => {
                let k = SigningKey::generate(algorithm)
                    .map_err(|e| SetupError::Generate(e.to_string()))?;
                let mut s = KeyState {
                    active: k.kid().to_owned(),
                    ..Default::default()
                };
                self.save_key(&mut s, &k)?;
                (s, true)
            }
        };
        let active = self.load_key(&state, &state.active)?;
        let mut signers = Vec::new();
        for kid in &state.signers {
            signers.push(self.load_key(&state, kid)?);
        }
        let mut changed = false;
        for alg in additional {
            if *alg != active.algorithm() && !signers.iter().any(|s| s.algorithm() == *alg) {
                let k =
                    SigningKey::generate(*alg).map_err(|e| SetupError::Generate(e.to_string()))?;
                self.save_key(&mut state, &k)?;
                state.signers.push(k.kid().to_owned());
                signers.push(k);
                changed = true;
            }
        }
        let mut published: Vec<VerifyingKey> = Vec::new();
        for kid in &state.published {
            published.push(self.load_key(&state, kid)?.verifying_key().clone());
        }
        let ring = KeyRing::with_published(active, published)
            .map_err(|e| corrupt(&self.path("keys/state.json"), e.to_string()))?;
        for s in signers {
            ring.add_signer(s)
                .map_err(|e| corrupt(&self.path("keys/state.json"), e.to_string()))?;
        }
        if created || changed {
            self.save_key_state(&state)?;
        }
        Ok((Arc::new(ring), created))
    }

    /// The keys of the ring as `keys` would load them, private parts included: the
    /// active key, the further signers and the previous keys still published. A node
    /// that starts a cluster hands them to the shared store (`keyshare`).
    pub fn key_material(&self) -> Result<LocalKeys, SetupError> {
        let state = self
            .key_state()?
            .ok_or_else(|| corrupt(&self.path("keys/state.json"), "no keys yet"))?;
        let load = |kids: &[String]| -> Result<Vec<SigningKey>, SetupError> {
            kids.iter().map(|k| self.load_key(&state, k)).collect()
        };
        Ok(LocalKeys {
            active: self.load_key(&state, &state.active)?,
            signers: load(&state.signers)?,
            published: load(&state.published)?,
        })
    }

    /// `heartgate keys rotate`: a new active key of the same algorithm; the previous one
    /// stays published for verification. Returns the new kid.
    pub fn rotate_keys(&self) -> Result<String, SetupError> {
        let mut state = self
            .key_state()?
            .ok_or_else(|| corrupt(&self.path("keys/state.json"), "no keys yet"))?;
        let current = self.load_key(&state, &state.active)?;
        let next = SigningKey::generate(current.algorithm())
            .map_err(|e| SetupError::Generate(e.to_string()))?;
        self.save_key(&mut state, &next)?;
        state.published.insert(0, state.active.clone());
        for gone in state
            .published
            .split_off(KEEP_PUBLISHED.min(state.published.len()))
        {
            state.algorithms.remove(&gone);
            let _ = std::fs::remove_file(self.key_path(&gone)?);
        }
        state.active = next.kid().to_owned();
        self.save_key_state(&state)?;
        Ok(state.active)
    }

    /// Set up everything: keys, secrets, the initial access token.
    pub fn bootstrap(
        &self,
        algorithm: Algorithm,
        additional: &[Algorithm],
    ) -> Result<Bootstrapped, SetupError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let (keys, created) = self.keys(algorithm, additional)?;
        let (pairwise_secret, _) = self.secret32("secrets/pairwise")?;
        let (session_secret, _) = self.secret32("secrets/session")?;
        let (initial_access_token, _) = self.initial_access_token()?;
        Ok(Bootstrapped {
            keys,
            initial_access_token,
            pairwise_secret,
            session_secret,
            first_start: created,
        })
    }
}

/// The development PKI: a CA and a server certificate for 127.0.0.1 and localhost (and
/// the issuer's host), created once in `pki/`.
pub struct DevPki {
    /// The CA certificate file to trust.
    pub ca_path: PathBuf,
    /// Server certificate chain PEM file.
    pub cert_path: PathBuf,
    /// Server key PEM file.
    pub key_path: PathBuf,
}

impl DataDir {
    /// Create (once) or reuse the development PKI for `host`.
    pub fn dev_pki(&self, host: &str) -> Result<DevPki, SetupError> {
        let ca_path = self.path("pki/ca.pem");
        let cert_path = self.path("pki/server.pem");
        let key_path = self.path("pki/server-key.pem");
        if ca_path.exists() && cert_path.exists() && key_path.exists() {
            return Ok(DevPki {
                ca_path,
                cert_path,
                key_path,
            });
        }
        let gen = |e: rcgen::Error| SetupError::Generate(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "heartgate development CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(gen)?;
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
        let srv_key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut srv = rcgen::CertificateParams::new(names).map_err(gen)?;
        srv.distinguished_name
            .push(rcgen::DnType::CommonName, "heartgate development server");
        srv.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let srv_cert = srv.signed_by(&srv_key, &issuer).map_err(gen)?;
        write_atomic(
            &self.path("pki/ca-key.pem"),
            ca_key.serialize_pem().as_bytes(),
            true,
        )?;
        write_atomic(&key_path, srv_key.serialize_pem().as_bytes(), true)?;
        let chain = format!("{}{}", srv_cert.pem(), ca_cert.pem());
        write_atomic(&cert_path, chain.as_bytes(), false)?;
        write_atomic(&ca_path, ca_cert.pem().as_bytes(), false)?;
        Ok(DevPki {
            ca_path,
            cert_path,
            key_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_creates_once_and_reuses_everything() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let a = dir
            .bootstrap(Algorithm::ES256, &[Algorithm::RS256])
            .unwrap();
        assert!(a.first_start);
        let b = dir
            .bootstrap(Algorithm::ES256, &[Algorithm::RS256])
            .unwrap();
        assert!(!b.first_start);
        assert_eq!(
            a.keys.snapshot().jwks_json().as_ref(),
            b.keys.snapshot().jwks_json().as_ref()
        );
        assert_eq!(*a.initial_access_token, *b.initial_access_token);
        assert_eq!(*a.pairwise_secret, *b.pairwise_secret);
        assert!(b.keys.snapshot().signer(Algorithm::RS256).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let st = dir.key_state().unwrap().unwrap();
            let mode = std::fs::metadata(dir.path(&format!("keys/{}.pem", st.active)))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "private keys are owner-only");
        }
    }

    #[test]
    fn rotation_keeps_the_previous_key_published() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let a = dir.bootstrap(Algorithm::ES256, &[]).unwrap();
        let old = a.keys.snapshot().active().kid().to_owned();
        let new = dir.rotate_keys().unwrap();
        let b = dir.bootstrap(Algorithm::ES256, &[]).unwrap();
        let s = b.keys.snapshot();
        assert_eq!(s.active().kid(), new);
        assert!(s.jwks().keys().iter().any(|k| k.kid() == old));
        for _ in 0..3 {
            dir.rotate_keys().unwrap();
        }
        let s = dir
            .bootstrap(Algorithm::ES256, &[])
            .unwrap()
            .keys
            .snapshot();
        assert_eq!(s.jwks().keys().len(), 1 + KEEP_PUBLISHED);
    }

    #[test]
    fn a_tampered_key_file_is_an_error_not_a_new_key() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let a = dir.bootstrap(Algorithm::ES256, &[]).unwrap();
        let kid = a.keys.snapshot().active().kid().to_owned();
        std::fs::write(dir.path(&format!("keys/{kid}.pem")), b"garbage").unwrap();
        assert!(matches!(
            dir.bootstrap(Algorithm::ES256, &[]),
            Err(SetupError::Corrupt { .. })
        ));
    }

    #[test]
    fn dev_pki_is_created_once() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let p = dir.dev_pki("127.0.0.1").unwrap();
        let first = std::fs::read(&p.cert_path).unwrap();
        let p2 = dir.dev_pki("127.0.0.1").unwrap();
        assert_eq!(std::fs::read(&p2.cert_path).unwrap(), first);
        assert!(std::fs::read_to_string(&p.ca_path)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }
}
