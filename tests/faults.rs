//! Faults under steady load, on the real binary: two instances behind a client that acts
//! like kube-apiserver behind a Service (keep-alive connections, no retry of a POST that
//! failed in transport, endpoints follow `/readyz`, a connection the server closes is
//! replaced by one to a ready instance). While the load runs:
//!
//! 1. instance A's certificate is rotated on disk (to one from a new CA): new connections
//!    get it, connections made before keep working;
//! 2. the policy file is replaced by an invalid document, then by a valid one: the verdict
//!    stays the old one while the file is invalid and changes once it is valid;
//! 3. instance A gets SIGTERM (`--drain-seconds 2`): the load moves to B.
//!
//! Every request that failed in transport (including a dial or handshake to an instance
//! the client believed ready) or got a wrong answer is counted; both counts must be zero.
//! Run with `--nocapture` to see the figures.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::{fixture, fixture_bytes, free_port, write_pair, write_policy};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Changes a Git-owned CPU limit: denied under `deny`, allowed under `warn`.
const OWNED_CPU: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";
/// Load traffic: answers that do not depend on the policy phase.
const LOAD_MUTATE: &str = "deploy-web-create-csa-dev.json";
const LOAD_VALIDATE: &str = "deploy-web-update-csa-image-dev.json";

/// A `hallmark serve` process; killed if the test ends early.
struct Instance {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(name: &'static str, dir: &Path, cert: &Path, key: &Path, policy: &Path) -> Instance {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .arg("serve")
        .args(["--listen", &addr.to_string(), "--metrics-listen", &metrics.to_string()])
        .args(["--tls-cert", &cert.display().to_string(), "--tls-key", &key.display().to_string()])
        .args(["--policy", &policy.display().to_string(), "--drain-seconds", "2"])
        .env("HALLMARK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start hallmark");
    Instance { name, child, addr, metrics }
}

fn connector(cas: &[&str]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add ca");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(hallmark::server::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// One keep-alive connection.
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    born: Instant,
}

struct Answer {
    status: u16,
    body: Bytes,
    close: bool,
}

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Conn, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tls.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    Ok(Conn { send, born: Instant::now() })
}

impl Conn {
    /// Usable for another request (the server has not closed it)?
    async fn usable(&mut self) -> bool {
        !self.send.is_closed() && self.send.ready().await.is_ok()
    }

    async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> Result<Answer, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{path}?timeout=10s"))
            .header("host", "localhost")
            .header("user-agent", "kube-apiserver-admission")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), self.send.send_request(req))
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let close = resp.headers().get("connection").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Answer { status, body, close })
    }
}

/// `/readyz` over a fresh connection, as the kubelet probes it.
async fn probe_ready(addr: SocketAddr, tls: &TlsConnector) -> bool {
    match connect(addr, tls).await {
        Ok(mut c) => c.request("GET", "/readyz", vec![]).await.is_ok_and(|a| a.status == 200),
        Err(_) => false,
    }
}

async fn metrics_text(addr: SocketAddr) -> String {
    let Ok(stream) = TcpStream::connect(addr).await else { return String::new() };
    let Ok((mut send, conn)) = http1::handshake(TokioIo::new(stream)).await else { return String::new() };
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).expect("req");
    match send.send_request(req).await {
        Ok(r) => String::from_utf8_lossy(&r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
            .into_owned(),
        Err(_) => String::new(),
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The verdict of `/validate` on the Git-owned CPU change, asked of one instance.
async fn cpu_allowed(addr: SocketAddr, tls: &TlsConnector) -> Option<bool> {
    let mut c = connect(addr, tls).await.ok()?;
    let a = c.request("POST", "/validate", fixture_bytes(OWNED_CPU)).await.ok()?;
    let v: Value = serde_json::from_slice(&a.body).ok()?;
    v["response"]["allowed"].as_bool()
}

#[derive(Default)]
struct Figures {
    sent: AtomicU64,
    ok: AtomicU64,
    transport_failed: AtomicU64,
    dial_failed: AtomicU64,
    wrong: AtomicU64,
    connections: AtomicU64,
    closed_by_server: AtomicU64,
    /// Requests answered on connections opened before the rotation, after it took effect.
    old_conn_after_rotation: AtomicU64,
    served: [AtomicU64; 2],
}

/// Is this answer right for the request? (`Err` says why not.)
fn check(path: &str, expected_uid: &Value, a: &Answer) -> Result<(), String> {
    if a.status != 200 {
        return Err(format!("status {}: {}", a.status, String::from_utf8_lossy(&a.body)));
    }
    let v: Value = serde_json::from_slice(&a.body).map_err(|e| format!("not JSON: {e}"))?;
    let r = &v["response"];
    if &r["uid"] != expected_uid || r["allowed"] != true {
        return Err(format!("wrong answer: {r}"));
    }
    if path == "/mutate" {
        let b64 = r["patch"].as_str().ok_or("no patch")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| e.to_string())?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let mut obj = fixture(LOAD_MUTATE)["request"]["object"].clone();
        json_patch::patch(&mut obj, &patch).map_err(|e| e.to_string())?;
        if obj["metadata"]["annotations"]["hallmark.dev/applied-by"] != "dev" {
            return Err("not stamped".into());
        }
    } else if r.get("patch").is_some() || r.get("warnings").is_some() {
        return Err(format!("unexpected patch or warning: {r}"));
    }
    Ok(())
}

struct Shared {
    addrs: [SocketAddr; 2],
    ready: [AtomicBool; 2],
    stop: AtomicBool,
    rotated_at: std::sync::Mutex<Option<Instant>>,
    figures: Figures,
    tls: TlsConnector,
    errors: std::sync::Mutex<Vec<String>>,
}

/// One connection slot of a client: keeps a connection to a ready instance and sends
/// reviews on it back to back.
async fn slot(shared: Arc<Shared>, n: usize) {
    let f = &shared.figures;
    let mut conn: Option<(usize, Conn)> = None;
    let reviews = [("/mutate", LOAD_MUTATE), ("/validate", LOAD_VALIDATE)];
    let bodies: Vec<(&str, Vec<u8>, Value)> =
        reviews.iter().map(|(p, name)| (*p, fixture_bytes(name), fixture(name)["request"]["uid"].clone())).collect();
    let mut i = n;
    while !shared.stop.load(Ordering::SeqCst) {
        // A connection the server closed is replaced, with one to a ready instance.
        if let Some((_, c)) = conn.as_mut()
            && !c.usable().await
        {
            f.closed_by_server.fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
        if conn.is_none() {
            let ready: Vec<usize> = (0..2).filter(|&k| shared.ready[k].load(Ordering::SeqCst)).collect();
            if ready.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let k = ready[(i / 2) % ready.len()];
            match connect(shared.addrs[k], &shared.tls).await {
                Ok(c) => {
                    f.connections.fetch_add(1, Ordering::Relaxed);
                    conn = Some((k, c));
                }
                Err(e) => {
                    f.dial_failed.fetch_add(1, Ordering::Relaxed);
                    shared.errors.lock().expect("errors").push(format!("dial {k}: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let (k, c) = conn.as_mut().expect("connection");
        let (path, body, uid) = &bodies[i % bodies.len()];
        i += 1;
        f.sent.fetch_add(1, Ordering::Relaxed);
        match c.request("POST", path, body.clone()).await {
            Err(e) => {
                f.transport_failed.fetch_add(1, Ordering::Relaxed);
                shared.errors.lock().expect("errors").push(format!("instance {k} {path}: {e}"));
                conn = None;
            }
            Ok(a) => {
                match check(path, uid, &a) {
                    Ok(()) => {
                        f.ok.fetch_add(1, Ordering::Relaxed);
                        f.served[*k].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        f.wrong.fetch_add(1, Ordering::Relaxed);
                        shared.errors.lock().expect("errors").push(format!("instance {k} {path}: {e}"));
                    }
                }
                let rotated_at = *shared.rotated_at.lock().expect("rotated");
                if let Some(at) = rotated_at
                    && *k == 0
                    && c.born < at
                {
                    f.old_conn_after_rotation.fetch_add(1, Ordering::Relaxed);
                }
                if a.close {
                    conn = None;
                }
            }
        }
    }
}

/// Keeps `ready` in step with each instance's `/readyz`, like endpoints behind a Service.
async fn endpoints(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        for k in 0..2 {
            let up = probe_ready(shared.addrs[k], &shared.tls).await;
            shared.ready[k].store(up, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn exited(child: &mut Child) -> Option<std::process::ExitStatus> {
    child.try_wait().expect("wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_policy_reload_and_sigterm_under_load_lose_no_request() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_a, key_a) = (dir.path().join("a.crt"), dir.path().join("a.key"));
    let (cert_b, key_b) = (dir.path().join("b.crt"), dir.path().join("b.key"));
    let policy = dir.path().join("policy.yaml");
    let ca_a1 = write_pair(&cert_a, &key_a);
    let ca_b = write_pair(&cert_b, &key_b);
    write_policy(&policy, "deny");
    let mut a = start("a", dir.path(), &cert_a, &key_a, &policy);
    let mut b = start("b", dir.path(), &cert_b, &key_b, &policy);
    // The client's CA bundle holds the CAs of both instances, and A's next CA (a rotation
    // publishes the new CA before the new certificate).
    let cert_a_next = dir.path().join("next.crt");
    let key_a_next = dir.path().join("next.key");
    let ca_a2 = write_pair(&cert_a_next, &key_a_next);
    let tls = connector(&[&ca_a1, &ca_a2, &ca_b]);
    for inst in [&a, &b] {
        let addr = inst.addr;
        let tls = tls.clone();
        wait_until(inst.name, Duration::from_secs(20), || {
            let tls = tls.clone();
            async move { probe_ready(addr, &tls).await }
        })
        .await;
    }
    assert_eq!(cpu_allowed(a.addr, &tls).await, Some(false), "denied under the first policy");
    assert_eq!(cpu_allowed(b.addr, &tls).await, Some(false));

    let shared = Arc::new(Shared {
        addrs: [a.addr, b.addr],
        ready: [AtomicBool::new(true), AtomicBool::new(true)],
        stop: AtomicBool::new(false),
        rotated_at: std::sync::Mutex::new(None),
        figures: Figures::default(),
        tls: tls.clone(),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let mut tasks = vec![tokio::spawn(endpoints(shared.clone()))];
    // 3 clients x 4 keep-alive connections.
    for n in 0..12 {
        tasks.push(tokio::spawn(slot(shared.clone(), n)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Rotate A's certificate to one from the new CA.
    std::fs::copy(&key_a_next, dir.path().join("k.tmp")).expect("copy");
    std::fs::copy(&cert_a_next, dir.path().join("c.tmp")).expect("copy");
    std::fs::rename(dir.path().join("k.tmp"), &key_a).expect("rename");
    std::fs::rename(dir.path().join("c.tmp"), &cert_a).expect("rename");
    let only_new = connector(&[&ca_a2]);
    let only_old = connector(&[&ca_a1]);
    let a_addr = a.addr;
    let took = wait_until("the rotated certificate", Duration::from_secs(10), || {
        let only_new = only_new.clone();
        async move { connect(a_addr, &only_new).await.is_ok() }
    })
    .await;
    *shared.rotated_at.lock().expect("rotated") = Some(Instant::now());
    assert!(connect(a.addr, &only_old).await.is_err(), "new connections no longer get the old certificate");
    println!("certificate rotation seen by new connections after {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. An invalid policy: reported by both, the old verdict stays.
    write_policy(&policy, "forbid");
    for inst in [&a, &b] {
        let m = inst.metrics;
        wait_until("the invalid policy to be reported", Duration::from_secs(10), || async move {
            metrics_text(m).await.contains(r#"hallmark_reloads_total{what="policy",result="error"}"#)
        })
        .await;
        assert_eq!(cpu_allowed(inst.addr, &tls).await, Some(false), "{}: the last good policy stays", inst.name);
    }
    // A valid one: the verdict changes.
    write_policy(&policy, "warn");
    for inst in [&a, &b] {
        let addr = inst.addr;
        let tls = tls.clone();
        let took = wait_until("the new verdict", Duration::from_secs(10), || {
            let tls = tls.clone();
            async move { cpu_allowed(addr, &tls).await == Some(true) }
        })
        .await;
        println!("{}: new policy in force after {took:?}", inst.name);
    }

    // 3. SIGTERM to A: readiness goes false, the load moves to B, A exits cleanly.
    // A keep-alive connection that stays idle through the drain (as kube-apiserver keeps up
    // to 25): the server closes it once the drain ends, so the client sees the close
    // before it would reuse it.
    let mut idle = connect(a.addr, &tls).await.expect("idle connection");
    let warm = idle.request("POST", "/validate", fixture_bytes(LOAD_VALIDATE)).await.expect("answer");
    assert_eq!(warm.status, 200);
    let served_a_before = shared.figures.served[0].load(Ordering::SeqCst);
    let term = Instant::now();
    let status = Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let code = loop {
        if let Some(s) = exited(&mut a.child) {
            break s.code();
        }
        assert!(term.elapsed() < Duration::from_secs(20), "A exits after its drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("A exited with {code:?} {:?} after SIGTERM", term.elapsed());
    assert_eq!(code, Some(0));
    assert!(!idle.usable().await, "the idle connection was closed by the server, not left to fail a request");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    let _ = Command::new("kill").args(["-TERM", &b.child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while exited(&mut b.child).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let f = &shared.figures;
    let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
    println!(
        "faults under load ({:?}): sent {}, ok {}, failed in transport {}, wrong {}, dial failures {}; \
         connections {}, closed by the server {}, answered on pre-rotation connections after rotation {}; \
         served by A {} (before SIGTERM {}), by B {}",
        started.elapsed(),
        g(&f.sent),
        g(&f.ok),
        g(&f.transport_failed),
        g(&f.wrong),
        g(&f.dial_failed),
        g(&f.connections),
        g(&f.closed_by_server),
        g(&f.old_conn_after_rotation),
        g(&f.served[0]),
        served_a_before,
        g(&f.served[1]),
    );
    let errors = shared.errors.lock().expect("errors").clone();
    for e in errors.iter().take(20) {
        println!("  {e}");
    }
    if !errors.is_empty() {
        for name in ["a", "b"] {
            let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            println!("--- {name}.log (tail)\n{}", log.lines().rev().take(15).collect::<Vec<_>>().join("\n"));
        }
    }
    assert_eq!(g(&f.transport_failed), 0, "requests failed in transport");
    assert_eq!(g(&f.wrong), 0, "wrong answers");
    assert_eq!(g(&f.dial_failed), 0, "dials to an instance believed ready failed");
    assert!(g(&f.ok) > 100, "the load ran");
    assert!(g(&f.old_conn_after_rotation) > 0, "connections made before the rotation kept working");
    assert!(g(&f.served[1]) > 0 && g(&f.served[0]) > 0);
    assert_eq!(g(&f.sent), g(&f.ok));
}
