//! A test client that behaves like kube-apiserver's admission client, and a hallmark
//! server started on 127.0.0.1 with a freshly generated CA.
//!
//! The client verifies the server certificate against the CA bundle only, pins ALPN to
//! `http/1.1` (or `h2` where a test asks), keeps its connection alive across requests,
//! POSTs `AdmissionReview` JSON to `<path>?timeout=10s` with kube-apiserver's headers, and
//! applies the returned base64 JSONPatch with json-patch.
#![allow(dead_code)]

use base64::Engine as _;
use bytes::Bytes;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use hallmark::server::serve::{ServeOptions, bind};
use hallmark::server::tls::{CertStore, certified_key_from_pem};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The bytes of a captured review, exactly as kube-apiserver sent them.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let p = fixtures_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).expect("fixture is JSON")
}

/// The captured `kubectl scale` of Flux-owned replicas as a *validating* webhook receives
/// it (a Scale without managedFields, labels or annotations).
pub const SCALE_VALIDATING: &str = "validating/deploy-platform-agent-scale-dev-flux-owned-replicas.validating.json";
/// The stored Deployment around that scale write (kustomize-controller owns spec.replicas;
/// Flux labels), as the validating webhook saw it as `oldObject` of the next write.
pub const SCALE_PARENT: &str =
    "validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa.validating.json";

/// A policy that gives every field Flux applied (managedFields: deny) to platform-config,
/// with the on-call SREs as break-glass.
pub const PLATFORM_MANAGED_FIELDS_DENY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config
    repository: https://git.example.com/sre/cluster-config
    reconcilers:
      users: ["system:serviceaccount:flux-system:kustomize-controller"]
      fieldManagers: ["kustomize-controller"]
  managedFields: deny
  breakGlass:
    groups: ["sre-oncall"]
"#;

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub ca_pem: String,
    pub state: Arc<AppState>,
    pub store: Arc<CertStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Settings::default(), PolicySet::default(), ServeOptions::default()).await
    }

    pub async fn start_with(settings: Settings, policies: PolicySet, mut opts: ServeOptions) -> TestServer {
        let bundle = hallmark::certs::generate(&["localhost".into(), "127.0.0.1".into()], 1).expect("certs");
        let ck = certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).expect("pair");
        let store = Arc::new(CertStore::new(ck));
        let engine = Engine::new(Stamper::new(settings), OnError::Allow);
        let state = Arc::new(AppState::new(engine, PolicySet::default()));
        state.set_policies(policies);
        opts.listen = "127.0.0.1:0".parse().expect("addr");
        opts.metrics_listen = "127.0.0.1:0".parse().expect("addr");
        if opts.drain == ServeOptions::default().drain {
            opts.drain = Duration::from_millis(0);
        }
        let bound = bind(state.clone(), store.clone(), opts).await.expect("bind");
        let (addr, metrics_addr) = (bound.addr, bound.metrics_addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        TestServer { addr, metrics_addr, ca_pem: bundle.ca_pem, state, store, stop: Some(tx), task: Some(task) }
    }

    pub async fn client(&self) -> ApiserverClient {
        ApiserverClient::connect(self.addr, &self.ca_pem).await
    }

    /// Sends the shutdown signal and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }

    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn metrics(&self) -> String {
        let text = metrics_text(self.metrics_addr).await;
        assert!(!text.is_empty(), "the metrics endpoint answered");
        text
    }
}

/// A scrape of `GET /metrics` at `addr` (plain HTTP); empty when nothing answers there
/// (yet), so that tests can poll a starting or restarting process.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let Ok(stream) = TcpStream::connect(addr).await else { return String::new() };
    let Ok((mut send, conn)) = http1::handshake(TokioIo::new(stream)).await else {
        return String::new();
    };
    tokio::spawn(conn);
    let req = Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).expect("req");
    match send.send_request(req).await {
        Ok(r) => String::from_utf8_lossy(&r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
            .into_owned(),
        Err(_) => String::new(),
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn tls_connector(ca_pem: &str, alpn: &[u8]) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(hallmark::server::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    // kube-apiserver does not resume TLS sessions.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One keep-alive connection, as kube-apiserver holds them.
pub struct ApiserverClient {
    sender: Sender,
}

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub version: hyper::Version,
    /// The `Connection` header of the response, if any.
    pub connection: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn response(&self) -> Value {
        self.json()["response"].clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl ApiserverClient {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> ApiserverClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = tls_connector(ca_pem, b"http/1.1")
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake verified against the CA bundle");
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.expect("http1 handshake");
        tokio::spawn(conn);
        ApiserverClient { sender: Sender::H1(sender) }
    }

    pub async fn connect_h2(addr: SocketAddr, ca_pem: &str) -> ApiserverClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = tls_connector(ca_pem, b"h2")
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "server negotiated h2");
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2 handshake");
        tokio::spawn(conn);
        ApiserverClient { sender: Sender::H2(sender) }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("{path}?timeout=10s"))
            .header("host", "localhost")
            .header("user-agent", "kube-apiserver-admission")
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .header("accept-encoding", "gzip")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.expect("connection still usable (keep-alive)");
                s.send_request(req).await
            }
            Sender::H2(s) => {
                let req = {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = format!("https://localhost{}", parts.uri).parse().expect("uri");
                    parts.headers.remove("host");
                    Request::from_parts(parts, body)
                };
                s.ready().await.expect("h2 ready");
                s.send_request(req).await
            }
        }
        .expect("response");
        let status = resp.status().as_u16();
        let version = resp.version();
        let connection = resp.headers().get("connection").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply { status, body, version, connection }
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Reply {
        self.request("POST", path, body).await
    }
}

/// Decodes `response.patch` (a base64 string, as kube-apiserver requires) into operations.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let b64 = response.get("patch")?;
    let s = b64.as_str().expect("patch must be a base64 string, not an array of bytes");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSONPatch"))
}

/// The object as kube-apiserver would store it after applying the response's patch.
pub fn patched(review: &Value, response: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(p) = patch_of(response) {
        json_patch::patch(&mut object, &p).expect("patch applies to request.object");
    }
    object
}

pub fn annotations(obj: &Value) -> serde_json::Map<String, Value> {
    obj.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// hallmark's annotations of an object (prefix hallmark.dev/).
pub fn stamp(obj: &Value) -> std::collections::BTreeMap<String, String> {
    annotations(obj)
        .into_iter()
        .filter(|(k, _)| k.starts_with("hallmark.dev/"))
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A review body from a JSON value.
pub fn body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).expect("json")
}

/// A free port on 127.0.0.1 for a server the test starts as a process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Writes a serving pair signed by a fresh CA, replacing each file atomically; returns the
/// CA PEM.
pub fn write_pair(cert: &std::path::Path, key: &std::path::Path) -> String {
    let b = hallmark::certs::generate(&["localhost".into(), "127.0.0.1".into()], 1).expect("certs");
    for (path, text) in [(key, &b.key_pem), (cert, &b.cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
    b.ca_pem
}

/// A policy under which Flux owns every container's resources of Deployments; `action`
/// is `deny`, `warn` or anything else (an invalid policy).
pub const FLUX_CPU_POLICY: &str = r#"apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config
    reconcilers:
      fieldManagers: ["kustomize-controller"]
  rules:
    - match: {kinds: ["Deployment"]}
      fields: ["spec.template.spec.containers[*].resources"]
      action: ACTION
"#;

/// Writes [`FLUX_CPU_POLICY`] with `action`, replacing the file atomically.
pub fn write_policy(path: &std::path::Path, action: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, FLUX_CPU_POLICY.replace("ACTION", action)).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Writes a CA's serving pair (`tls.crt`, `tls.key`) into `dir`, replacing each file
/// atomically; returns the CA PEM.
pub fn write_bundle(dir: &std::path::Path, b: &hallmark::certs::Bundle) -> String {
    for (name, text) in [("tls.key", &b.key_pem), ("tls.crt", &b.cert_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
    b.ca_pem.clone()
}

/// Whether `addr` completes a TLS handshake whose certificate verifies against `ca` for
/// the name `localhost`.
pub async fn handshake_ok(addr: SocketAddr, ca: &str) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else { return false };
    let name = ServerName::try_from("localhost").expect("name");
    tls_connector(ca, b"http/1.1").connect(name, tcp).await.is_ok()
}

/// Polls `f` until it holds; gives up (fails) after a generous bound.
pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
