//! TLS: a certificate resolver whose key swaps without locks, its reload from files, and
//! the rustls server configuration.
//!
//! Reload polls the files (every `RELOAD_INTERVAL`) and compares their bytes rather than
//! relying on inotify: Kubernetes updates a Secret volume by atomically swapping the
//! `..data` symlink, which file watches on the linked files do not see reliably.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Validity(String),
}

/// The crypto provider hallmark uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate in force; swapped atomically on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> CertStore {
        CertStore { current: ArcSwap::from_pointee(key) }
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds a certified key from PEM text, checking that key and certificate belong together.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pair(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pair("no certificate in the certificate file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pair(format!("private key PEM: {e}")))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Pair(e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.display().to_string(), message: e.to_string() })
}

/// Reads the bytes of a certificate/key pair.
fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((read(cert)?, read(key)?))
}

/// What a pair's files held, to notice when they change.
fn fingerprint(cert: &[u8], key: &[u8]) -> Vec<u8> {
    [cert, key].concat()
}

/// notAfter of the leaf (first) certificate of `key`, in Unix seconds; `None` when it
/// cannot be parsed as X.509 (rustls accepted it, so this does not happen in practice).
pub fn expiry(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Sets `hallmark_certificate_expiry_timestamp_seconds` to the notAfter of `key`.
pub fn record_expiry(metrics: &Metrics, key: &CertifiedKey) {
    match expiry(key) {
        Some(t) => {
            metrics.certificate_expiry.set(t);
        }
        None => tracing::warn!("cannot read notAfter of the serving certificate; its expiry is not exported"),
    }
}

/// The leaf certificate of `key` is valid at `now` (Unix seconds): not expired and not
/// yet to come. kube-apiserver refuses a certificate outside its validity, so serving
/// one would fail every call; the error says which bound and when, in UTC.
pub fn check_validity(key: &CertifiedKey, now: i64) -> Result<(), TlsError> {
    let Some(leaf) = key.cert.first() else {
        return Err(TlsError::Pair("no certificate".into()));
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::Pair(format!("the certificate is not X.509: {e}")))?;
    let validity = cert.validity();
    let at = |t: i64| {
        jiff::Timestamp::from_second(t).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
    };
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if now > not_after {
        return Err(TlsError::Validity(format!(
            "the serving certificate expired at {}; issue a new one (hallmark certs, or renew it in cert-manager)",
            at(not_after)
        )));
    }
    if now < not_before {
        return Err(TlsError::Validity(format!(
            "the serving certificate is not valid before {}; check the clock of the machine that issued it",
            at(not_before)
        )));
    }
    Ok(())
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A usable pair from PEM text: key and certificate belong together, and the certificate
/// is valid now.
fn usable_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let ck = certified_key_from_pem(cert_pem, key_pem)?;
    check_validity(&ck, unix_now())?;
    Ok(ck)
}

/// Reads a certificate/key pair from files, refusing one that is expired or not yet
/// valid; also returns their fingerprint.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>), TlsError> {
    let (c, k) = read_pair(cert, key)?;
    let ck = usable_pair(&c, &k).map_err(|e| match e {
        TlsError::Validity(why) => TlsError::File { path: cert.display().to_string(), message: why },
        e => e,
    })?;
    Ok((ck, fingerprint(&c, &k)))
}

/// The rustls configuration: TLS 1.2 and 1.3 with rustls' safe defaults, ALPN h2 and
/// http/1.1, optional client-certificate authentication of kube-apiserver.
pub fn server_config(store: Arc<CertStore>, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read(path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| TlsError::File { path: path.display().to_string(), message: e.to_string() })?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::File { path: path.display().to_string(), message: e.to_string() })?;
            }
            if roots.is_empty() {
                return Err(TlsError::File { path: path.display().to_string(), message: "no CA certificate".into() });
            }
            // Unauthenticated clients still complete the handshake (the kubelet's probes send
            // no certificate); the review endpoints then refuse them (see `server::handle`).
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What a reload reports: `Some(key)` when a new pair was swapped in, `None` when a new
/// pair was refused.
pub type ReloadObserver = Arc<dyn Fn(Option<&CertifiedKey>) + Send + Sync>;

/// Watches a certificate/key pair on disk and swaps it into `store` when it changes. A
/// broken new pair, or one that is expired or not yet valid, is refused with an error
/// (logged once per distinct error, counted each time it is seen anew); the old one
/// stays in force.
pub async fn watch_pair(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    mut last_seen: Vec<u8>,
    metrics: ReloadObserver,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let (c, k) = (cert.clone(), key.clone());
        let (cert_pem, key_pem) = match tokio::task::spawn_blocking(move || read_pair(&c, &k)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                report(&mut last_error, e.to_string(), &metrics);
                continue;
            }
            Err(_) => continue,
        };
        let now = fingerprint(&cert_pem, &key_pem);
        if now == last_seen {
            continue;
        }
        // Parsed from the very bytes compared above: no second read that could see a
        // rotation half done.
        match usable_pair(&cert_pem, &key_pem) {
            Ok(ck) => {
                metrics(Some(&ck));
                store.swap(ck);
                last_seen = now;
                last_error = None;
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            }
            Err(e) => report(&mut last_error, e.to_string(), &metrics),
        }
    }
}

fn report(last: &mut Option<String>, error: String, metrics: &ReloadObserver) {
    if last.as_deref() != Some(error.as_str()) {
        tracing::error!(%error, "new serving certificate refused; the previous one stays in force");
        metrics(None);
        *last = Some(error);
    }
}

/// Keeps the metrics type out of the watcher's signature: counts each reload in
/// `hallmark_reloads_total{what="certificate"}` and exports the expiry of a new pair.
pub fn reload_counter(state: Arc<crate::server::AppState>) -> ReloadObserver {
    Arc::new(move |reloaded| {
        state.metrics.reload("certificate", reloaded.is_some());
        if let Some(key) = reloaded {
            record_expiry(&state.metrics, key);
        }
    })
}
