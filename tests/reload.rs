//! Operating the real binary: certificates and policies reload without a restart, and a
//! SIGTERM drains before it stops.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    let (port, mport) = (free_port(), free_port());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().expect("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .arg("serve")
        .args(["--listen", &addr.to_string(), "--metrics-listen", &metrics.to_string()])
        .args(args)
        .env("HALLMARK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hallmark");
    Proc { child, addr, metrics }
}

/// Writes a fresh CA + pair into `dir`; returns the CA PEM.
fn write_pair_in(dir: &Path) -> String {
    write_pair(&dir.join("tls.crt"), &dir.join("tls.key"))
}

/// Lays out a directory like a Kubernetes Secret volume: files are symlinks through
/// `..data`, which points at a timestamped directory and is swapped atomically.
fn secret_volume(root: &Path, generation: u32) -> String {
    let data = root.join(format!("..gen{generation}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    let ca = write_pair_in(&data);
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen{generation}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("..data")).expect("atomic swap");
    for f in ["tls.crt", "tls.key"] {
        let link = root.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).expect("symlink");
        }
    }
    ca
}

async fn try_connect(addr: std::net::SocketAddr, ca: &str) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tls_connector(ca, b"http/1.1").connect(name, tcp).await.is_ok()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn rotated_secret_volume_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca1 = secret_volume(dir.path(), 1);
    let cert = path_str(&dir.path().join("tls.crt"));
    let key = path_str(&dir.path().join("tls.key"));
    let p = spawn(&["--tls-cert", &cert, "--tls-key", &key]);
    wait_until("the server", Duration::from_secs(20), || try_connect(p.addr, &ca1)).await;
    let mut old_conn = ApiserverClient::connect(p.addr, &ca1).await;
    assert_eq!(old_conn.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await.status, 200);

    let ca2 = secret_volume(dir.path(), 2);
    wait_until("the rotated certificate", Duration::from_secs(15), || try_connect(p.addr, &ca2)).await;
    assert!(!try_connect(p.addr, &ca1).await, "new connections no longer get the old certificate");
    // The connection made before the rotation keeps working.
    assert_eq!(old_conn.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await.status, 200);
}

#[tokio::test]
async fn broken_new_certificate_is_refused_and_the_old_one_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_pair_in(dir.path());
    let cert = path_str(&dir.path().join("tls.crt"));
    let key = path_str(&dir.path().join("tls.key"));
    let p = spawn(&["--tls-cert", &cert, "--tls-key", &key]);
    wait_until("the server", Duration::from_secs(20), || try_connect(p.addr, &ca)).await;
    // A key that does not belong to the certificate.
    let other = hallmark::certs::generate(&["localhost".into()], 1).expect("certs");
    std::fs::write(dir.path().join("tls.key"), other.key_pem).expect("write");
    let metrics_addr = p.metrics;
    wait_until("the refusal to be counted", Duration::from_secs(15), || async move {
        metrics_text(metrics_addr).await.contains(r#"hallmark_reloads_total{what="certificate",result="error"} 1"#)
    })
    .await;
    assert!(try_connect(p.addr, &ca).await, "the old certificate is still served");
}

async fn cpu_verdict(addr: std::net::SocketAddr, ca: &str) -> bool {
    let mut c = ApiserverClient::connect(addr, ca).await;
    let r = c.post("/validate", fixture_bytes("deploy-platform-agent-update-patch-cpu-dev-flux-owned.json")).await;
    r.response()["allowed"].as_bool().unwrap_or(false)
}

#[tokio::test]
async fn edited_policy_changes_the_verdict_and_an_invalid_one_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_pair_in(dir.path());
    let policy = dir.path().join("policy.yaml");
    write_policy(&policy, "deny");
    let p = spawn(&[
        "--tls-cert",
        &path_str(&dir.path().join("tls.crt")),
        "--tls-key",
        &path_str(&dir.path().join("tls.key")),
        "--policy",
        &path_str(&policy),
    ]);
    wait_until("the server", Duration::from_secs(20), || try_connect(p.addr, &ca)).await;
    assert!(!cpu_verdict(p.addr, &ca).await, "denied under the first policy");

    // Invalid: reported, the old verdict stays.
    write_policy(&policy, "forbid");
    let metrics_addr = p.metrics;
    wait_until("the invalid policy to be reported", Duration::from_secs(15), || async move {
        metrics_text(metrics_addr).await.contains(r#"hallmark_reloads_total{what="policy",result="error"}"#)
    })
    .await;
    assert!(!cpu_verdict(p.addr, &ca).await, "the last good policy stays in force");

    // Valid again, with warn: allowed within seconds.
    write_policy(&policy, "warn");
    let ca2 = ca.clone();
    wait_until("the new verdict", Duration::from_secs(15), || cpu_verdict(p.addr, &ca2)).await;
}

#[tokio::test]
async fn sigterm_turns_readiness_off_keeps_answering_then_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_pair_in(dir.path());
    let mut p = spawn(&[
        "--tls-cert",
        &path_str(&dir.path().join("tls.crt")),
        "--tls-key",
        &path_str(&dir.path().join("tls.key")),
        "--drain-seconds",
        "2",
    ]);
    wait_until("the server", Duration::from_secs(20), || try_connect(p.addr, &ca)).await;
    let mut conn = ApiserverClient::connect(p.addr, &ca).await;
    assert_eq!(conn.request("GET", "/readyz", vec![]).await.status, 200);
    let status = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = conn.request("GET", "/readyz", vec![]).await;
    assert_eq!(ready.status, 503, "not ready while draining");
    assert_eq!(ready.connection.as_deref(), Some("close"));
    let mut conn = ApiserverClient::connect(p.addr, &ca).await;
    let reply = conn.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
    assert_eq!(reply.status, 200, "still answering during the drain period");
    assert_eq!(reply.connection.as_deref(), Some("close"), "clients are told to reconnect elsewhere");
    let mut fresh = ApiserverClient::connect(p.addr, &ca).await;
    assert_eq!(fresh.post("/validate", fixture_bytes("deploy-web-create-csa-dev.json")).await.status, 200);
    let start = Instant::now();
    let code = loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            break s.code();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "exited after drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(0));
    assert!(start.elapsed() >= Duration::from_millis(1000), "it waited for the drain period");
}
