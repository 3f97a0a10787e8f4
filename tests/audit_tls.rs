//! `response.auditAnnotations` of `/mutate` over TLS, as kube-apiserver receives them: it
//! records each as `<webhook name>/<key>` in the audit event of the write, and refuses a
//! key that is not then a qualified name (`admission/attributes.go` `checkKeyFormat`).

mod common;

use common::{TestServer, body, fixture, fixture_bytes, patched, stamp};
use serde_json::{Map, Value, json};

/// The webhook name kube-apiserver prefixes (manifests/ registers `stamp.hallmark.dev`).
const WEBHOOK: &str = "stamp.hallmark.dev";
const GIT: [&str; 5] = ["committer", "pipeline", "branch", "commit", "repository"];

/// Kubernetes `IsQualifiedName` for `prefix/name`: a DNS-subdomain prefix, one `/`, and a
/// name of at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn is_qualified_name(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else { return false };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !name.contains('/')
        && !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|l| {
            !l.is_empty() && l.starts_with(alnum) && l.ends_with(alnum) && l.chars().all(|c| alnum(c) || c == '-')
        })
        && !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || "-_.".contains(c))
}

fn audit(response: &Value) -> Map<String, Value> {
    response.get("auditAnnotations").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn assert_valid_keys(audit: &Map<String, Value>) {
    for (k, v) in audit {
        assert!(is_qualified_name(&format!("{WEBHOOK}/{k}")), "{k} is not a valid audit annotation key");
        assert!(v.is_string(), "{k}: {v}");
    }
}

#[tokio::test]
async fn an_update_records_channel_trust_and_the_changed_paths_never_values() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-web-update-csa-image-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let a = audit(&response);
    assert_valid_keys(&a);
    let history: Vec<Value> =
        serde_json::from_str(&stamp(&patched(&review, &response))["hallmark.dev/history"]).expect("history");
    let changed = history[0]["changed"].as_array().expect("changed paths").clone();
    assert!(!changed.is_empty());
    let expected = json!({
        "channel": "push",
        "trust": "none",
        "changed": serde_json::to_string(&changed).expect("json"),
        "changed-count": changed.len().to_string(),
    });
    assert_eq!(Value::Object(a.clone()), expected);
    // The new image (an object value) appears nowhere in them.
    let image = review.pointer("/request/object/spec/template/spec/containers/0/image").and_then(Value::as_str);
    let image = image.expect("image");
    assert!(a.values().all(|v| !v.as_str().unwrap_or("").contains(image)));
    server.stop().await;
}

#[tokio::test]
async fn a_verified_create_records_the_git_fields_of_its_stamp() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-shop-create-csa-oidc-gha.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let a = audit(&response);
    assert_valid_keys(&a);
    let s = stamp(&patched(&review, &response));
    assert_eq!(a["trust"], "verified");
    assert_eq!(a["channel"], s["hallmark.dev/channel"].as_str());
    for field in GIT {
        assert_eq!(a.get(field).and_then(Value::as_str), s.get(&format!("hallmark.dev/{field}")).map(String::as_str));
    }
    assert!(a.contains_key("commit"), "{a:?}");
    assert!(!a.contains_key("changed") && !a.contains_key("changed-count"), "a create changes no field: {a:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_noop_write_records_nothing_and_a_restored_stamp_only_what_was_put_back() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let response = client.post("/mutate", fixture_bytes("deploy-web-update-ssa-noop-dev.json")).await.response();
    assert!(response.get("auditAnnotations").is_none(), "{response}");
    assert!(response.get("patch").is_none(), "{response}");

    let response =
        client.post("/mutate", fixture_bytes("deploy-web-update-annotate-forged-committer-dev.json")).await.response();
    assert!(response.get("patch").is_some(), "the forged stamp is reverted: {response}");
    let a = audit(&response);
    assert_valid_keys(&a);
    assert_eq!(Value::Object(a), json!({"restored": "hallmark.dev/committer"}));
    server.stop().await;
}

#[tokio::test]
async fn audit_annotations_are_bounded() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // 300 changed keys of 100 characters each, and a 5,000-character verified committer.
    let data = |v: &str| (0..300).map(|i| (format!("{i:03}{}", "k".repeat(97)), json!(v))).collect::<Map<_, _>>();
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": "a"}, "data": data(v)});
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-big", "operation": "UPDATE",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "big", "namespace": "a",
            "userInfo": {"username": "ci", "extra": {"hallmark.dev/committer": ["x".repeat(5000)]}},
            "object": cm("new"), "oldObject": cm("old"),
        }
    });
    let response = client.post("/mutate", body(&review)).await.response();
    let a = audit(&response);
    assert_valid_keys(&a);
    let changed: Vec<String> = serde_json::from_str(a["changed"].as_str().expect("changed")).expect("a JSON list");
    assert!(!changed.is_empty() && changed.len() <= 20, "{}", changed.len());
    assert!(a["changed"].as_str().map_or(0, str::len) <= 4096);
    assert_eq!(a["changed-count"], "300");
    assert_eq!(a["committer"].as_str().map(|c| c.chars().count()), Some(1024));
    assert!(changed.iter().all(|p| !p.contains("new") && !p.contains("old")), "paths, not values");
    server.stop().await;
}
