//! Serving certificates, as an operator meets them: an expired or not-yet-valid
//! certificate is refused at start and on reload (the last good one kept, the refusal
//! logged and counted), `hallmark certs --days 0` is refused, and a client that does not
//! trust hallmark's certificate (a wrong caBundle) is counted and logged at warn, at most
//! once per interval. The real binary, on 127.0.0.1, ended by each test.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn hallmark(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run hallmark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn serve_args(dir: &Path, addr: SocketAddr, metrics: SocketAddr) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    ["serve", "--listen", &addr.to_string(), "--metrics-listen", &metrics.to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--tls-cert".into(), p("tls.crt"), "--tls-key".into(), p("tls.key")])
        .collect()
}

fn spawn(dir: &Path) -> Proc {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let stderr = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(serve_args(dir, addr, metrics))
        .env("HALLMARK_LOG", "info")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start hallmark");
    Proc { child, addr, metrics, stderr }
}

/// Writes a pair valid from `from` to `to` (seconds relative to now) into `dir`,
/// replacing the files atomically; returns the CA PEM.
fn write_pair_valid(dir: &Path, from: i64, to: i64) -> String {
    let now = time::OffsetDateTime::now_utc();
    let b = hallmark::certs::generate_between(
        &["localhost".into(), "127.0.0.1".into()],
        now + time::Duration::seconds(from),
        now + time::Duration::seconds(to),
    )
    .expect("certs");
    write_bundle(dir, &b)
}

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

const DAY: i64 = 86_400;

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let args = serve_args(dir.path(), addr, metrics);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (from, to, want) in [(-2 * DAY, -DAY, "expired at"), (DAY, 2 * DAY, "not valid before")] {
        write_pair_valid(dir.path(), from, to);
        let (code, out, err) = hallmark(&args);
        assert_eq!(code, 2, "refused as bad input: {err}");
        assert!(err.contains(want) && err.contains("tls.crt"), "{want}: {err}");
        assert!(!out.contains("caBundle"), "{out}");
    }
}

#[tokio::test]
async fn an_expired_certificate_is_refused_on_reload_and_the_last_good_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_pair_valid(dir.path(), -60, DAY);
    let p = spawn(dir.path());
    wait_until("hallmark to serve", || handshake_ok(p.addr, &good)).await;
    let m = p.metrics;
    let refused = r#"hallmark_reloads_total{what="certificate",result="error"}"#;
    assert_eq!(value(&metrics_text(m).await, refused), Some(0.0));

    let expired = write_pair_valid(dir.path(), -2 * DAY, -DAY);
    wait_until("the refusal to be counted", || async move { value(&metrics_text(m).await, refused) == Some(1.0) })
        .await;
    assert!(handshake_ok(p.addr, &good).await, "the last good certificate is still served");
    assert!(!handshake_ok(p.addr, &expired).await, "the expired one is not");
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("new serving certificate refused") && l.contains("expired at")),
        "{log}"
    );
    // Polled again and again, the same refusal is logged and counted once.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(value(&metrics_text(m).await, refused), Some(1.0));
    assert_eq!(p.log().matches("new serving certificate refused").count(), 1);

    // A valid pair is taken again.
    let renewed = write_pair_valid(dir.path(), -60, 30 * DAY);
    let ok = r#"hallmark_reloads_total{what="certificate",result="ok"}"#;
    wait_until("the renewed pair", || async move { value(&metrics_text(m).await, ok) == Some(1.0) }).await;
    assert!(handshake_ok(p.addr, &renewed).await);
}

#[test]
fn certs_refuses_a_validity_below_one_day_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    for days in ["--days=0", "--days=-5"] {
        let (code, _, err) = hallmark(&["certs", "--out", out.to_str().expect("utf-8"), "--dns", "localhost", days]);
        assert_eq!(code, 2, "--days {days}: {err}");
        assert!(err.contains("at least one day"), "{err}");
        assert!(!out.exists(), "nothing written");
    }
    let (code, stdout, err) =
        hallmark(&["certs", "--out", out.to_str().expect("utf-8"), "--dns", "hallmark.team-a.svc", "--days", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("caBundle:"));
    // The CA says which install it belongs to.
    let ca = std::fs::read(out.join("ca.crt")).expect("ca.crt");
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&ca).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
    let subject = cert.subject().to_string();
    assert!(subject.contains("CN=hallmark CA hallmark.team-a.svc "), "{subject}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_counted_and_logged_at_warn_once_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_pair_valid(dir.path(), -60, DAY);
    let p = spawn(dir.path());
    wait_until("hallmark to serve", || handshake_ok(p.addr, &good)).await;
    // A caBundle of another CA: the client refuses hallmark's certificate.
    let wrong = hallmark::certs::generate(&["localhost".into()], 1).expect("certs").ca_pem;
    for _ in 0..3 {
        assert!(!handshake_ok(p.addr, &wrong).await);
    }
    let m = p.metrics;
    let series = r#"hallmark_tls_handshake_failures_total{reason="certificate-refused"}"#;
    wait_until("three counted failures", || async move { value(&metrics_text(m).await, series) == Some(3.0) }).await;
    let log = p.log();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("TLS handshake failed")).collect();
    assert_eq!(warned.len(), 1, "logged once per interval:\n{log}");
    assert!(warned[0].contains("WARN") && warned[0].contains("caBundle"), "{}", warned[0]);
    assert!(warned[0].contains("127.0.0.1"), "names the peer: {}", warned[0]);
}
