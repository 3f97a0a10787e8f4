//! Security properties over real TLS: protocol versions, client-certificate authentication,
//! forged provenance, impersonated reconcilers, and what reaches logs and metrics.

mod common;
mod support;

use bytes::Bytes;
use common::*;
use hallmark::config::Settings;
use hallmark::policy::{Enforcement, PolicySet, Subjects};
use hallmark::server::serve::ServeOptions;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// ---- TLS versions ----

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(&str, &str)>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(hallmark::server::tls::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().expect("chain");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

async fn get_with(config: rustls::ClientConfig, addr: SocketAddr, path: &str) -> Result<u16, String> {
    request_with(config, addr, "GET", path, Vec::new()).await
}

async fn post_with(config: rustls::ClientConfig, addr: SocketAddr, path: &str, body: Vec<u8>) -> Result<u16, String> {
    request_with(config, addr, "POST", path, body).await
}

/// One request over a fresh connection with `config`; Err describes where it failed.
async fn request_with(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<u16, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served() {
    let server = TestServer::start().await;
    for (name, v) in [("TLS 1.2", &rustls::version::TLS12), ("TLS 1.3", &rustls::version::TLS13)] {
        let status = post_with(
            client_config(&server.ca_pem, &[v], None),
            server.addr,
            "/mutate",
            fixture_bytes("deploy-web-create-csa-dev.json"),
        )
        .await;
        assert_eq!(status, Ok(200), "{name}");
    }
    server.stop().await;
}

/// Runs `openssl s_client` against the server; None when openssl is not installed.
fn s_client(addr: SocketAddr, args: &[&str]) -> Option<(bool, String)> {
    let out = std::process::Command::new("timeout")
        .arg("10")
        .arg("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    if out.status.code() == Some(127) {
        return None;
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // s_client exits 0 once a session was established (stdin at EOF closes it).
    let established = out.status.success() && !text.contains("Cipher is (NONE)");
    Some((established, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_1_0_and_weak_ciphers_are_refused() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let run = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || s_client(addr, args));
    let Some((ok, text)) = run(&["-tls1_2"]).await.expect("join") else {
        println!("openssl CLI not found: TLS 1.1/1.0 refusal is covered by rustls' configuration only");
        server.stop().await;
        return;
    };
    assert!(ok, "control: openssl speaks TLS 1.2 to hallmark:\n{text}");
    assert!(text.contains("TLSv1.2"), "{text}");
    // @SECLEVEL=0 so that it is the server, not the local OpenSSL policy, that refuses.
    for args in [
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        // Static RSA key exchange and CBC suites are not offered.
        &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"][..],
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"][..],
    ] {
        let (ok, text) = run(args).await.expect("join").expect("openssl");
        assert!(!ok, "{args:?} must be refused:\n{text}");
        assert!(!text.contains("New, TLSv1"), "{args:?}: no session:\n{text}");
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

// ---- client certificates ----

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("ca");
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

/// A client certificate (kube-apiserver's admission client identity) signed by `ca`.
fn client_cert(ca: &Ca, cn: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.issuer).expect("client cert");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn client_ca_requires_a_client_certificate_from_that_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = new_ca("kube-apiserver client CA");
    let other = new_ca("somebody else");
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, &trusted.pem).expect("write ca");
    let opts = ServeOptions { client_ca: Some(ca_path), ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let review = fixture_bytes("deploy-web-create-csa-dev.json");
    let (cert, key) = client_cert(&trusted, "kube-apiserver-admission");
    let (bad_cert, bad_key) = client_cert(&other, "kube-apiserver-admission");
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // No certificate: the handshake completes (kubelet probes send none) but the review
        // endpoints answer 401; the probes stay open.
        for path in ["/mutate", "/validate"] {
            let status = post_with(client_config(&server.ca_pem, &[v], None), server.addr, path, review.clone()).await;
            assert_eq!(status, Ok(401), "{v:?} {path}: a client without a certificate is refused");
        }
        let status = get_with(client_config(&server.ca_pem, &[v], None), server.addr, "/readyz").await;
        assert_eq!(status, Ok(200), "{v:?}: probes need no certificate");
        // A certificate from another CA: the handshake fails.
        let config = client_config(&server.ca_pem, &[v], Some((&bad_cert, &bad_key)));
        let status = post_with(config, server.addr, "/mutate", review.clone()).await;
        assert!(status.is_err(), "{v:?}: a certificate from another CA is refused: {status:?}");
        // A certificate from the client CA: served.
        let config = client_config(&server.ca_pem, &[v], Some((&cert, &key)));
        assert_eq!(post_with(config, server.addr, "/mutate", review.clone()).await, Ok(200), "{v:?}");
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"hallmark_errors_total{endpoint="mutate",kind="unauthenticated"} 2"#), "{metrics}");
    server.stop().await;
}

// ---- forged provenance ----

const GIT_KEYS: [&str; 5] = ["committer", "pipeline", "branch", "commit", "repository"];
const ALL_KEYS: [&str; 11] = [
    "applied-by",
    "applied-at",
    "field-manager",
    "channel",
    "trust",
    "history",
    "committer",
    "pipeline",
    "branch",
    "commit",
    "repository",
];

fn forge_all(obj: &mut Value) {
    let ann = obj["metadata"]["annotations"].as_object_mut().expect("annotations");
    for key in ALL_KEYS {
        ann.insert(format!("hallmark.dev/{key}"), json!(format!("forged-{key}")));
    }
    ann.insert("hallmark.dev/applied-at".into(), json!("2001-01-01T00:00:00Z"));
    ann.insert(
        "hallmark.dev/history".into(),
        json!(r#"[{"at":"2001-01-01T00:00:00Z","by":"root","channel":"gitops","trust":"verified"}]"#),
    );
}

fn assert_nothing_forged(s: &std::collections::BTreeMap<String, String>, history_len: usize) {
    assert_eq!(s["hallmark.dev/applied-by"], "dev");
    assert_ne!(s["hallmark.dev/applied-at"], "2001-01-01T00:00:00Z");
    assert_eq!(s["hallmark.dev/field-manager"], "kubectl-client-side-apply");
    assert_eq!(s["hallmark.dev/channel"], "push");
    assert_eq!(s["hallmark.dev/trust"], "none");
    for key in GIT_KEYS {
        assert!(!s.contains_key(&format!("hallmark.dev/{key}")), "{key} removed");
    }
    let history: Vec<Value> = serde_json::from_str(&s["hallmark.dev/history"]).expect("history");
    assert_eq!(history.len(), history_len, "{history:?}");
    assert_eq!(history[0]["by"], "dev");
    assert!(history.iter().all(|h| h["by"] != "root"), "forged history is not kept");
}

fn assert_warned_about_every_key(response: &Value) {
    let w = warnings(response);
    // applied-at is replaced without a word: a stored manifest re-applied carries an old one.
    for key in ALL_KEYS.iter().filter(|k| **k != "applied-at") {
        let key = format!("hallmark.dev/{key}");
        assert!(w.iter().any(|w| w.starts_with(&format!("{key} "))), "a warning names {key}: {w:#?}");
    }
}

#[tokio::test]
async fn an_untrusted_user_cannot_forge_any_provenance_key() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // CREATE.
    let mut create = fixture("deploy-web-create-csa-dev.json");
    forge_all(&mut create["request"]["object"]);
    let response = client.post("/mutate", body(&create)).await.response();
    assert_nothing_forged(&stamp(&patched(&create, &response)), 1);
    assert_warned_about_every_key(&response);
    // UPDATE over a genuine stamp.
    let mut update = fixture("deploy-web-update-csa-image-dev.json");
    let created = patched(&fixture("deploy-web-create-csa-dev.json"), &{
        let c = fixture("deploy-web-create-csa-dev.json");
        client.post("/mutate", body(&c)).await.response()
    });
    for (k, v) in stamp(&created) {
        update["request"]["oldObject"]["metadata"]["annotations"][&k] = json!(v);
    }
    forge_all(&mut update["request"]["object"]);
    let response = client.post("/mutate", body(&update)).await.response();
    assert_nothing_forged(&stamp(&patched(&update, &response)), 2);
    assert_warned_about_every_key(&response);
    // A no-op write that only rewrites the stamp: the old stamp comes back exactly.
    let mut noop = update.clone();
    noop["request"]["object"] = update["request"]["oldObject"].clone();
    forge_all(&mut noop["request"]["object"]);
    let response = client.post("/mutate", body(&noop)).await.response();
    assert_eq!(stamp(&patched(&noop, &response)), stamp(&update["request"]["oldObject"]));
    assert_warned_about_every_key(&response);
    server.stop().await;
}

#[tokio::test]
async fn a_trusted_declarer_still_cannot_forge_the_derived_keys() {
    let settings = Settings {
        declarers: Subjects::new(vec!["system:serviceaccount:ci:deployer".into()], vec![]),
        ..Settings::default()
    };
    let server = TestServer::start_with(settings, PolicySet::default(), ServeOptions::default()).await;
    let mut client = server.client().await;
    let mut review = fixture("deploy-checkout-create-csa-ci-deployer-declared-provenance.json");
    let ann = review["request"]["object"]["metadata"]["annotations"].as_object_mut().expect("annotations");
    for (k, v) in [("applied-by", "admin"), ("channel", "gitops"), ("trust", "verified"), ("field-manager", "helm")] {
        ann.insert(format!("hallmark.dev/{k}"), json!(v));
    }
    let response = client.post("/mutate", body(&review)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/applied-by"], "system:serviceaccount:ci:deployer");
    assert_eq!(s["hallmark.dev/channel"], "push");
    assert_eq!(s["hallmark.dev/trust"], "declared");
    assert_eq!(s["hallmark.dev/field-manager"], "kubectl-client-side-apply");
    let w = warnings(&response);
    for k in ["applied-by", "channel", "trust", "field-manager"] {
        assert!(w.iter().any(|w| w.starts_with(&format!("hallmark.dev/{k} "))), "{k}: {w:?}");
    }
    server.stop().await;
}

// ---- reconciler identity ----

const OWNED_CPU: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";

fn flux_pod_user() -> Value {
    json!({
        "username": FLUX_SA,
        "uid": "723306a6-a1f6-46ae-b88a-ada3517f8a5d",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": ["JTI=d4c55f54-2257-41d1-954f-d0fe8df79672"],
            "authentication.kubernetes.io/node-name": ["worker-1"],
            "authentication.kubernetes.io/node-uid": ["864cb7ad-3780-426c-a79e-2afb7145d137"],
            "authentication.kubernetes.io/pod-name": ["kustomize-controller-5f7d8c9b4-x2k4q"],
            "authentication.kubernetes.io/pod-uid": ["6160a45f-1973-4e2b-bf74-063886afc5e8"],
        }
    })
}

/// `kubectl --as=system:serviceaccount:flux-system:kustomize-controller`: no uid, no extras.
fn flux_impersonated() -> Value {
    json!({
        "username": FLUX_SA,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"],
    })
}

fn owned_cpu_write(user: Value, field_manager: &str) -> Value {
    let mut review = fixture(OWNED_CPU);
    review["request"]["userInfo"] = user;
    review["request"]["options"]["fieldManager"] = json!(field_manager);
    review
}

async fn verdict(client: &mut ApiserverClient, review: &Value) -> (bool, String) {
    let response = client.post("/validate", body(review)).await.response();
    let allowed = response["allowed"].as_bool().expect("allowed");
    (allowed, response["status"]["message"].as_str().unwrap_or_default().to_owned())
}

async fn channel(client: &mut ApiserverClient, review: &Value) -> String {
    let response = client.post("/mutate", body(review)).await.response();
    stamp(&patched(review, &response))["hallmark.dev/channel"].clone()
}

#[tokio::test]
async fn an_impersonated_reconciler_is_not_a_reconciler_when_a_pod_token_is_required() {
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, true)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    // The real, pod-bound kustomize-controller: allowed, gitops.
    let real = owned_cpu_write(flux_pod_user(), "kustomize-controller");
    assert_eq!(verdict(&mut client, &real).await, (true, String::new()));
    assert_eq!(channel(&mut client, &real).await, "gitops");
    // Impersonated without pod-bound extras: denied, stamped as a push.
    let fake = owned_cpu_write(flux_impersonated(), "kustomize-controller");
    let (allowed, message) = verdict(&mut client, &fake).await;
    assert!(!allowed, "impersonation is not enough");
    assert!(message.contains("spec.template.spec.containers[name=agent].resources.limits.cpu"), "{message}");
    assert_eq!(channel(&mut client, &fake).await, "push");
    // Impersonated with unrelated extras (e.g. --as-user-extra hallmark.dev/commit=x).
    let mut user = flux_impersonated();
    user["extra"] = json!({"hallmark.dev/commit": ["abc"], "authentication.kubernetes.io/pod-name": []});
    let fake = owned_cpu_write(user, "kustomize-controller");
    assert!(!verdict(&mut client, &fake).await.0);
    server.stop().await;

    // Without requirePodToken the identity alone decides (documented): allowed.
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, false)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    let fake = owned_cpu_write(flux_impersonated(), "kustomize-controller");
    assert!(verdict(&mut client, &fake).await.0);
    server.stop().await;
}

#[tokio::test]
async fn naming_the_reconcilers_field_manager_does_not_make_a_reconciler() {
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, false)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    let dev = json!({"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]});
    let mut review = owned_cpu_write(dev.clone(), "kustomize-controller");
    // The apiserver records the write under the manager the client named.
    for entry in review["request"]["object"]["metadata"]["managedFields"].as_array_mut().expect("managedFields") {
        if entry["manager"] == "kubectl-patch" {
            entry["manager"] = json!("kustomize-controller");
        }
    }
    let (allowed, message) = verdict(&mut client, &review).await;
    assert!(!allowed, "a field manager is free text, never identity");
    assert!(message.contains("owned by platform-config"), "{message}");
    let response = client.post("/mutate", body(&review)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/channel"], "push");
    assert_eq!(s["hallmark.dev/applied-by"], "dev");
    // Nor does a reconciler-looking username in a group that is not the reconciler's.
    let lookalike = json!({"username": format!("{FLUX_SA} "), "groups": ["system:authenticated"]});
    assert!(!verdict(&mut client, &owned_cpu_write(lookalike, "kustomize-controller")).await.0);
    server.stop().await;
}

// ---- nothing secret in logs, metrics or answers ----

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, at TRACE, from every thread.
fn captured_logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

/// Secret data of the fixture: base64 values, their plaintext, and last-applied's plaintext.
fn secrets_of(review: &Value) -> Vec<String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for v in review["request"]["object"]["data"].as_object().expect("data").values() {
        let b64 = v.as_str().expect("str");
        out.push(b64.to_owned());
        let plain = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        out.push(String::from_utf8(plain).expect("utf8"));
    }
    out.push("not-a-real-password-e2e".to_owned());
    out.push("postgres://".to_owned());
    out.push("JTI=".to_owned());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_data_in_logs_metrics_or_answers() {
    let logs = captured_logs();
    let name = "secret-db-credentials-create-csa-dev.json";
    let secret = fixture(name);
    let secrets = secrets_of(&secret);
    let password_b64 = secret["request"]["object"]["data"]["password"].as_str().expect("pw").to_owned();
    // An UPDATE of the Secret, data applied by Flux (with a SOPS-decrypted Secret, a
    // common case), changed by a developer: the denial names the field, not the values.
    let mut old = secret["request"]["object"].clone();
    old["metadata"]["managedFields"] = json!([{
        "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:password": {}, "f:DATABASE_URL": {}, "f:username": {}}},
    }]);
    old["metadata"]["uid"] = json!("9d0c7a80-0000-4000-8000-000000000001");
    let mut new = old.clone();
    new["data"]["password"] = json!("bmV3LXNlY3JldC1wYXNzd29yZA==");
    let mut update = secret.clone();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = old;
    update["request"]["object"] = new;
    update["request"]["userInfo"]["extra"] =
        json!({"authentication.kubernetes.io/credential-id": ["JTI=f711a7a2-1ed7-43f6-b9db-b209ae4fa785"]});
    let mut secrets = secrets;
    secrets.push("bmV3LXNlY3JldC1wYXNzd29yZA==".to_owned());
    secrets.push("new-secret-password".to_owned());

    // Malformed variants: truncated inside data, and secret values where the decoder
    // expects other types (serde's messages would quote them).
    let text = String::from_utf8(fixture_bytes(name)).expect("utf8");
    let cut = text.find(&password_b64).expect("password") + 6;
    let mut malformed: Vec<Vec<u8>> = vec![text.as_bytes()[..cut].to_vec()];
    for (pointer, value) in [
        ("/request/operation", json!(password_b64)),
        ("/request/dryRun", json!(password_b64)),
        ("/request/userInfo/groups", json!(password_b64)),
        ("/request/kind", json!(password_b64)),
        ("/request/uid", secret["request"]["object"]["data"].clone()),
        ("/request/object", json!(password_b64)),
        ("/kind", json!(password_b64)),
        ("/apiVersion", json!(password_b64)),
    ] {
        let mut bad = secret.clone();
        *bad.pointer_mut(pointer).expect("pointer") = value;
        malformed.push(body(&bad));
    }

    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, false)),
        ServeOptions::default(),
    )
    .await;
    let mut answers = Vec::new();
    for h2 in [false, true] {
        let mut client =
            if h2 { ApiserverClient::connect_h2(server.addr, &server.ca_pem).await } else { server.client().await };
        for path in ["/mutate", "/validate"] {
            let reply = client.post(path, fixture_bytes(name)).await;
            assert_eq!(reply.status, 200);
            answers.push(reply.text());
            let reply = client.post(path, body(&update)).await;
            assert_eq!(reply.status, 200);
            answers.push(reply.text());
            for bad in &malformed {
                let reply = client.post(path, bad.clone()).await;
                assert_eq!(reply.status, 400, "{}", reply.text());
                answers.push(reply.text());
            }
        }
    }
    // The 400s still say what is wrong, without the value.
    assert!(answers.iter().any(|a| a.contains("unknown variant `…`, expected one of `CREATE`")), "{answers:#?}");
    assert!(answers.iter().any(|a| a.contains("invalid type: string \"…\", expected a boolean")), "{answers:#?}");
    assert!(answers.iter().any(|a| a.contains("unexpected kind \"(not shown)\"")), "{answers:#?}");
    // The denial is there and says which field.
    assert!(answers.iter().any(|a| a.contains("data.password is owned by platform-config")), "{answers:#?}");
    let metrics = server.metrics().await;
    server.stop().await;
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(logged.contains("malformed review"), "debug logs were captured:\n{logged}");
    assert!(logged.contains("admission decision"), "{logged}");
    // Decode the patches too: the stamp must not carry secret data either.
    let mut patches = String::new();
    for a in &answers {
        if let Some(p) = serde_json::from_str::<Value>(a).ok().and_then(|v| patch_of(&v["response"])) {
            patches.push_str(&serde_json::to_string(&p).expect("json"));
        }
    }
    for s in &secrets {
        assert!(!logged.contains(s.as_str()), "logs contain {s:?}");
        assert!(!metrics.contains(s.as_str()), "metrics contain {s:?}");
        assert!(!patches.contains(s.as_str()), "a patch contains {s:?}");
        for a in &answers {
            assert!(!a.contains(s.as_str()), "an answer contains {s:?}: {a}");
        }
    }
    println!(
        "checked {} log bytes, {} metrics bytes, {} answers for {} secret strings",
        logged.len(),
        metrics.len(),
        answers.len(),
        secrets.len()
    );
}

#[test]
fn decode_errors_name_the_problem_but_not_the_value() {
    use hallmark::admission::Review;
    let mut review = fixture("secret-db-credentials-create-csa-dev.json");
    let err = |r: &Value| Review::decode(&body(r)).expect_err("malformed").to_string();
    review["request"]["uid"] = json!({"password": "hunter2"});
    assert_eq!(
        err(&review).split(" at line").next(),
        Some("request body is not a valid AdmissionReview: invalid type: map, expected a string")
    );
    review["request"]["uid"] = json!("u");
    review["request"]["name"] = json!(["hunter2 \"quoted\" `tick`"]);
    assert!(err(&review).contains("invalid type: sequence, expected a string"), "{}", err(&review));
    review["request"]["name"] = json!("n");
    review["request"]["userInfo"]["username"] = json!(12345678);
    let e = err(&review);
    assert!(e.contains("invalid type: integer `…`, expected a string") && !e.contains("12345678"), "{e}");
    review["request"]["userInfo"]["username"] = json!("dev");
    review["request"]["operation"] = json!("hunter2\"\\`x");
    let e = err(&review);
    assert!(e.contains("unknown variant `…`, expected one of `CREATE`") && !e.contains("hunter2"), "{e}");
    review["request"]["operation"] = json!("CREATE");
    review["request"].as_object_mut().expect("request").remove("uid");
    assert!(err(&review).contains("missing field `uid`"), "{}", err(&review));
    review["apiVersion"] = json!("admission.k8s.io/v2");
    assert!(err(&review).contains("apiVersion \"admission.k8s.io/v2\""), "{}", err(&review));
    review["apiVersion"] = json!("hunter2");
    assert!(err(&review).contains("apiVersion \"(not shown)\""), "{}", err(&review));
}
