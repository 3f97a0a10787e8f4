//! Helpers shared by the reliability and security tests: raw TLS connections that misbehave
//! on purpose, review builders, and a policy builder (the same `CompiledPolicy` a policy
//! document compiles to).
#![allow(dead_code)]

use crate::common::{ApiserverClient, TestServer, fixture_bytes, patch_of, tls_connector};
use hallmark::policy::{CompiledPolicy, Enforcement, PolicySet, Subjects};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const FLUX_SA: &str = "system:serviceaccount:flux-system:kustomize-controller";

/// A TLS connection (ALPN http/1.1) to write raw bytes into.
pub async fn raw_tls(addr: SocketAddr, ca_pem: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tls_connector(ca_pem, b"http/1.1")
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the peer closes the connection (or fails it) or `limit` passes. Returns
/// what was read and whether the connection ended within `limit`.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// kube-apiserver's request head for a POST of `len` bytes.
pub fn request_head(path: &str, len: usize) -> String {
    format!(
        "POST {path}?timeout=10s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kube-apiserver-admission\r\n\
         Content-Type: application/json\r\nAccept: application/json, */*\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Sends a raw request on a fresh TLS connection and returns the raw answer.
pub async fn raw_exchange(server: &TestServer, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(bytes).await.expect("write");
    tls.flush().await.expect("flush");
    read_until_closed(&mut tls, limit).await.0
}

/// The server still answers a normal review correctly, on a new connection, on both
/// endpoints.
pub async fn assert_still_serves(server: &TestServer) {
    let mut client = ApiserverClient::connect(server.addr, &server.ca_pem).await;
    let reply = client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.response();
    assert_eq!(response["uid"], crate::common::fixture("deploy-web-create-csa-dev.json")["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert!(patch_of(&response).is_some(), "a create is stamped: {response}");
    let reply = client.post("/validate", fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.response()["allowed"], true);
}

/// A v1 review of `kind` in namespace team-a by user `dev`.
pub fn review(operation: &str, kind: &str, old: Option<Value>, new: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "hostile-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": "x",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"},
        }
    })
}

/// A ConfigMap named x with the given data.
pub fn config_map(data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "team-a", "annotations": {"team": "a"}},
        "data": data,
    })
}

/// A policy whose reconciler is Flux's kustomize-controller and which owns every field
/// that managedFields shows kustomize-controller applied.
pub fn flux_policy(managed_fields: Enforcement, require_pod_token: bool) -> CompiledPolicy {
    CompiledPolicy {
        name: "platform".into(),
        owner_name: "platform-config".into(),
        repository: Some("https://git.example.com/sre/cluster-config".into()),
        reconcilers: Subjects::new(vec![FLUX_SA.into()], vec![]),
        reconciler_field_managers: vec!["kustomize-controller".into()],
        require_pod_token,
        rules: vec![],
        managed_fields,
        delete_protection: false,
        break_glass: Subjects::new(vec![], vec!["sre-oncall".into()]),
    }
}

pub fn policies(p: CompiledPolicy) -> PolicySet {
    PolicySet { policies: vec![p] }
}

/// The warnings of a response, as strings.
pub fn warnings(response: &Value) -> Vec<String> {
    response
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}
