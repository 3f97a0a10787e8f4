//! The local path (docs/install.md, "On a laptop"): hallmark on the developer's machine,
//! registered with any kube-apiserver by URL, in the documented commands:
//!
//! ```text
//! hallmark certs --out DIR --dns HOST
//! hallmark serve --listen ADDR --tls-cert DIR/tls.crt --tls-key DIR/tls.key
//! hallmark webhook-config --url https://HOST:PORT --ca-file DIR/ca.crt | kubectl apply -f -
//! ```
//!
//! With no apiserver here, the test does with the printed configurations what
//! kube-apiserver does with them: for each webhook, it trusts only `clientConfig.caBundle`,
//! connects to `clientConfig.url` and POSTs a captured review to its path. The binaries
//! are the real ones (`CARGO_BIN_EXE_*`); servers bind 127.0.0.1 and are ended here.

mod common;

use base64::Engine as _;
use common::*;
use serde::Deserialize as _;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hallmark(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hallmark")).args(args).output().expect("run hallmark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(args: &[&str], stdout: &Path, stderr: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(args)
        .env("HALLMARK_LOG", "warn")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).expect("stdout file"))
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("start hallmark serve");
    Server(child)
}

/// Waits until `addr` answers a TLS handshake verified against `ca`.
async fn wait_tls(addr: SocketAddr, ca: &str) {
    let ca = ca.to_owned();
    wait_until("hallmark serve to come up", || {
        let ca = ca.clone();
        async move { handshake_ok(addr, &ca).await }
    })
    .await;
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).expect("a YAML document")).expect("json"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Calls one webhook of a printed configuration as kube-apiserver would: only its
/// caBundle is trusted, and the review goes to its URL.
async fn call(webhook: &Value, review: Vec<u8>) -> Value {
    let cc = &webhook["clientConfig"];
    assert!(cc.get("service").is_none(), "{}: a URL, not a Service: {cc}", webhook["name"]);
    let ca = base64::engine::general_purpose::STANDARD.decode(cc["caBundle"].as_str().expect("caBundle")).expect("b64");
    let ca = String::from_utf8(ca).expect("PEM");
    let url: hyper::Uri = cc["url"].as_str().expect("url").parse().expect("a URL");
    assert_eq!(url.scheme_str(), Some("https"));
    let host = url.host().expect("host");
    let addr: SocketAddr = format!("{host}:{}", url.port_u16().expect("port")).parse().expect("addr");
    // kube-apiserver verifies the certificate for the URL's host.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("name");
    if let Err(e) = tls_connector(&ca, b"http/1.1").connect(name, tcp).await {
        panic!("{}: the certificate does not verify for {host} with the caBundle: {e}", webhook["name"]);
    }
    let mut client = ApiserverClient::connect(addr, &ca).await;
    let reply = client.post(url.path(), review).await;
    assert_eq!(reply.status, 200, "{}: {}", webhook["name"], reply.text());
    reply.response()
}

#[tokio::test]
async fn certs_serve_and_webhook_config_url_register_a_hallmark_that_stamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs_s = certs.to_str().expect("utf-8");
    // The URL's host, and localhost for the test client's own connection.
    let (code, _, err) = hallmark(&["certs", "--out", certs_s, "--dns", "127.0.0.1", "--dns", "localhost"]);
    assert_eq!(code, 0, "{err}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    let _server = spawn(
        &[
            "serve",
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
        &dir.path().join("out"),
        &dir.path().join("err"),
    );
    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("ca.crt");
    wait_tls(listen.parse().expect("addr"), &ca).await;

    let url = format!("https://127.0.0.1:{port}");
    let ca_file = certs.join("ca.crt");
    let (code, out, err) = hallmark(&["webhook-config", "--url", &url, "--ca-file", ca_file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "no warning with --ca-file: {err}");
    let docs = documents(&out);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(kinds.contains(&"MutatingWebhookConfiguration") && kinds.contains(&"ValidatingWebhookConfiguration"));

    // The same configurations as for a Service, but for clientConfig (so the generated
    // matchConditions, rules and failure policies are kept).
    let (code, by_service, _) = hallmark(&["webhook-config", "--ca-file", ca_file.to_str().expect("utf-8")]);
    assert_eq!(code, 0);
    let mut by_service = documents(&by_service);
    for d in &mut by_service {
        for w in d["webhooks"].as_array_mut().expect("webhooks") {
            let path = w["clientConfig"]["service"]["path"].as_str().expect("path").to_owned();
            w["clientConfig"] =
                serde_json::json!({"caBundle": w["clientConfig"]["caBundle"], "url": format!("{url}{path}")});
        }
    }
    assert_eq!(docs, by_service, "--url changes clientConfig only");

    let stamp = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").expect("mutating");
    let stamp = &stamp["webhooks"][0];
    assert_eq!(stamp["clientConfig"]["url"], format!("{url}/mutate"));
    assert!(stamp["matchConditions"].as_array().is_some_and(|c| !c.is_empty()), "{stamp}");
    let response = call(stamp, fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
    assert_eq!(response["allowed"], true);
    let review = fixture("deploy-web-update-csa-image-dev.json");
    let after = patched(&review, &response);
    assert_eq!(annotations(&after).get("hallmark.dev/applied-by").and_then(Value::as_str), Some("dev"));

    let validating = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration" && d["metadata"]["name"] == "hallmark")
        .expect("validating");
    let ownership = &validating["webhooks"][0];
    assert_eq!(ownership["clientConfig"]["url"], format!("{url}/validate"));
    let names: Vec<&str> = ownership["matchConditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"ownership-may-apply"), "the generated condition is kept: {names:?}");
    let response = call(ownership, fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
    assert_eq!(response["allowed"], true);

    // The policy webhook: a CREATE of an OwnershipPolicy as kube-apiserver sends it (the
    // object with its managedFields), refused with the loader's reason; a valid one passes.
    let policies =
        docs.iter().find(|d| d["metadata"]["name"] == "hallmark-policies").expect("the policy webhook's configuration");
    let check = &policies["webhooks"][0];
    assert_eq!(check["clientConfig"]["url"], format!("{url}/validate-policy"));
    let invalid = serde_json::json!({"owner": {"name": "platform"},
        "rules": [{"match": {"kinds": ["Deployment"]}, "fields": ["spec.replicas"], "action": "deny"}]});
    let response = call(check, policy_review("bad", invalid)).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "OwnershipPolicy \"bad\" is invalid: spec.owner.reconcilers: rules need reconcilers: name at least one user, group or fieldManager that may change the owned fields"
    );
    let valid = serde_json::json!({"owner": {"name": "platform", "reconcilers": {"fieldManagers": ["kustomize-controller"]}},
        "rules": [{"match": {"kinds": ["Deployment"]}, "fields": ["spec.replicas"], "action": "deny"}]});
    assert_eq!(call(check, policy_review("good", valid)).await["allowed"], true);
}

/// An AdmissionReview of a CREATE of an OwnershipPolicy, shaped as kube-apiserver sends
/// it (metadata with uid, creationTimestamp and managedFields; requestKind; options).
fn policy_review(name: &str, spec: Value) -> Vec<u8> {
    let gvk = serde_json::json!({"group": "hallmark.dev", "version": "v1alpha1", "kind": "OwnershipPolicy"});
    let gvr = serde_json::json!({"group": "hallmark.dev", "version": "v1alpha1", "resource": "ownershippolicies"});
    let review = serde_json::json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "5b0e6c1f-2f2a-4d0e-9a55-0c1b7cf3a001",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": {
                "apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicy",
                "metadata": {
                    "name": name, "uid": "0f7c2d64-1a0b-4d6e-8c3e-2b9f1f0e7a11", "generation": 1,
                    "creationTimestamp": "2026-12-03T11:25:46Z",
                    "managedFields": [{"apiVersion": "hallmark.dev/v1alpha1", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {".": {}, "f:owner": {".": {}, "f:name": {}}, "f:rules": {}}},
                        "manager": "kubectl-client-side-apply", "operation": "Update", "time": "2026-12-03T11:25:46Z"}]
                },
                "spec": spec
            },
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    });
    serde_json::to_vec(&review).expect("json")
}

#[tokio::test]
async fn serve_writes_the_ca_of_its_generated_certificate_once_it_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.crt");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let out = dir.path().join("out");
    let _server = spawn(
        &["serve", "--listen", &listen, "--metrics-listen", &metrics, "--write-ca", ca_file.to_str().expect("utf-8")],
        &out,
        &dir.path().join("err"),
    );
    let start = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("caBundle:") {
        assert!(start.elapsed() < Duration::from_secs(30), "no caBundle line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = std::fs::read_to_string(&ca_file).expect("--write-ca wrote the CA");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    wait_tls(listen.parse().expect("addr"), &ca).await;
    let printed = std::fs::read_to_string(&out).expect("stdout");
    let b64 = printed.lines().find_map(|l| l.strip_prefix("caBundle: ")).expect("caBundle line");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).expect("b64"), ca.as_bytes());

    // webhook-config takes that file.
    let url = format!("https://127.0.0.1:{port}");
    let (code, out, err) = hallmark(&["webhook-config", "--url", &url, "--ca-file", ca_file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let docs = documents(&out);
    let response = call(&docs[0]["webhooks"][0], fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
    assert_eq!(response["allowed"], true);
}

#[test]
fn serve_on_a_busy_port_fails_without_printing_a_ca_bundle() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.crt");
    let out = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(["serve", "--listen", &addr, "--metrics-listen", &metrics])
        .args(["--write-ca", ca_file.to_str().expect("utf-8")])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("caBundle"), "a caBundle for a server that did not start: {stdout}");
    assert!(stderr.contains(&addr), "the error names the address: {stderr}");
    assert!(!ca_file.exists(), "no CA file for a server that did not start");
    drop(busy);
}

#[test]
fn webhook_config_refuses_urls_kube_apiserver_refuses_and_files_that_are_not_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (url, why) in [
        ("http://127.0.0.1:8443", "https://"),
        ("127.0.0.1:8443", "https://"),
        ("https://", "no host"),
        ("https://user:pw@host:8443", "user name"),
        ("https://host:8443/?x=1", "query"),
        ("https://host:8443/#top", "fragment"),
    ] {
        let (code, out, err) = hallmark(&["webhook-config", "--url", url]);
        assert_eq!(code, 2, "{url}: bad input");
        assert!(out.is_empty(), "{url}: nothing printed: {out}");
        assert!(err.contains(why), "{url}: {err}");
    }
    let (code, _, err) = hallmark(&["webhook-config", "--url", "https://h:1", "--service", "x"]);
    assert_eq!(code, 2, "--url and --service conflict: {err}");

    let not_pem = dir.path().join("key.txt");
    std::fs::write(&not_pem, "hello").expect("write");
    let (code, out, err) = hallmark(&["webhook-config", "--ca-file", not_pem.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("no PEM certificate"), "{err}");
    // A private key is not a CA.
    let b = hallmark::certs::generate(&["localhost".into()], 1).expect("certs");
    let key = dir.path().join("tls.key");
    std::fs::write(&key, &b.key_pem).expect("write");
    let (code, _, err) = hallmark(&["webhook-config", "--ca-file", key.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    // A path prefix is kept.
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &b.ca_pem).expect("write");
    let (code, out, err) =
        hallmark(&["webhook-config", "--url", "https://10.0.0.1:9443/hm/", "--ca-file", ca.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("url: https://10.0.0.1:9443/hm/mutate"), "{out}");
    assert!(out.contains("url: https://10.0.0.1:9443/hm/validate"), "{out}");
}

/// `cargo install --path .` installs every binary target of the package: both must be
/// plain `[[bin]]` targets (no required features) of the one package.
#[test]
fn cargo_install_path_installs_hallmark_and_the_kubectl_plugin() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("json");
    let packages = meta["packages"].as_array().expect("packages");
    assert_eq!(packages.len(), 1, "one package at the top");
    let bins: Vec<(&str, bool)> = packages[0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .map(|t| {
            (t["name"].as_str().unwrap_or_default(), t["required-features"].as_array().is_some_and(|f| !f.is_empty()))
        })
        .collect();
    let mut names: Vec<&str> = bins.iter().map(|b| b.0).collect();
    names.sort();
    assert_eq!(names, ["hallmark", "kubectl-hallmark"]);
    assert!(bins.iter().all(|b| !b.1), "no binary needs a feature to be installed: {bins:?}");
}

/// `.krew.yaml`, the krew plugin manifest template, with its placeholders filled as
/// krew-release-bot fills them, is a krew `Plugin` whose every platform installs the
/// `kubectl-hallmark` binary this package builds (and the LICENSE it ships).
#[test]
fn the_krew_manifest_template_installs_the_plugin_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(root.join(".krew.yaml")).expect(".krew.yaml");
    let mut text = String::new();
    for line in template.lines() {
        if let Some(at) = line.find("{{ addURIAndSha ") {
            let indent = &line[..at];
            text.push_str(&format!(
                "{indent}uri: https://example.invalid/x.tar.gz\n{indent}sha256: {}\n",
                "0".repeat(64)
            ));
        } else {
            text.push_str(&line.replace("{{ .TagName }}", "v0.1.0"));
            text.push('\n');
        }
    }
    assert!(!text.contains("{{"), "every placeholder is one krew-release-bot fills: {text}");
    let doc: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).expect("YAML")).expect("json");
    assert_eq!(doc["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(doc["kind"], "Plugin");
    assert_eq!(doc["metadata"]["name"], "hallmark", "the plugin is `kubectl hallmark`");
    let platforms = doc["spec"]["platforms"].as_array().expect("platforms");
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-hallmark", "{p}");
        assert!(p["selector"]["matchLabels"]["os"].is_string() && p["selector"]["matchLabels"]["arch"].is_string());
        let files: Vec<&str> =
            p["files"].as_array().expect("files").iter().filter_map(|f| f["from"].as_str()).collect();
        assert!(files.contains(&"kubectl-hallmark") && files.contains(&"LICENSE"), "{files:?}");
    }
    assert!(root.join("LICENSE").is_file());
    assert!(root.join("src/bin/kubectl-hallmark.rs").is_file(), "the [[bin]] the archives carry");
}
