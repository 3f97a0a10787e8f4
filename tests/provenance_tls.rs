//! Black-box tests of `/mutate` over real TLS with the captured kube-apiserver reviews.

mod common;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::{PolicySet, Subjects};
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};

fn rfc3339_utc(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && s.parse::<jiff::Timestamp>().is_ok()
}

fn history(obj: &Value) -> Vec<Value> {
    serde_json::from_str(stamp(obj).get("hallmark.dev/history").expect("history annotation")).expect("history is JSON")
}

#[tokio::test]
async fn update_by_developer_is_stamped_with_exactly_the_design_keys() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let review = fixture("deploy-web-update-csa-image-dev.json");
    let reply = client.post("/mutate", fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
    assert_eq!(reply.status, 200);
    let out = reply.json();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    let object = patched(&review, &response);
    let s = stamp(&object);
    let keys: Vec<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "hallmark.dev/applied-at",
            "hallmark.dev/applied-by",
            "hallmark.dev/channel",
            "hallmark.dev/field-manager",
            "hallmark.dev/history",
            "hallmark.dev/trust",
        ]
    );
    assert_eq!(s["hallmark.dev/applied-by"], "dev");
    assert_eq!(s["hallmark.dev/channel"], "push");
    assert_eq!(s["hallmark.dev/trust"], "none");
    assert_eq!(s["hallmark.dev/field-manager"], "kubectl-client-side-apply");
    assert!(rfc3339_utc(&s["hallmark.dev/applied-at"]), "{}", s["hallmark.dev/applied-at"]);
    let h = history(&object);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["by"], "dev");
    assert_eq!(h[0]["at"], s["hallmark.dev/applied-at"].as_str());
    assert_eq!(h[0]["changed"], json!(["spec.template.spec.containers[name=web].image"]));
    // The image change is a new revision: `kubectl rollout history` will say who made it.
    assert_eq!(object["metadata"]["annotations"]["kubernetes.io/change-cause"], "dev (push)");
    // Everything but hallmark's annotations (and that change-cause) is exactly what the
    // apiserver sent.
    let mut without = object.clone();
    let mut original = review["request"]["object"].clone();
    for o in [&mut without, &mut original] {
        if let Some(a) = o.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !k.starts_with("hallmark.dev/") && k != "kubernetes.io/change-cause");
        }
    }
    assert_eq!(without, original);
    server.stop().await;
}

#[tokio::test]
async fn patch_is_a_base64_string_and_only_touches_annotations() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in [
        "deploy-web-create-csa-dev.json",
        "deploy-web-update-csa-image-dev.json",
        "deploy-web-update-rollout-restart-dev.json",
        "cm-odd-keys-create-csa-dev.json",
    ] {
        let reply = client.post("/mutate", fixture_bytes(name)).await;
        let response = reply.response();
        assert!(response["patch"].is_string(), "{name}: patch must be a base64 string");
        let patch = patch_of(&response).expect("a patch");
        for op in patch.0.iter() {
            let path = serde_json::to_value(op).expect("op")["path"].as_str().unwrap_or_default().to_owned();
            assert!(path.starts_with("/metadata/annotations"), "{name}: patch touches {path}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn pod_template_is_never_touched() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-web-update-rollout-restart-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let object = patched(&review, &response);
    assert_eq!(object["spec"]["template"], review["request"]["object"]["spec"]["template"]);
    assert_eq!(object["spec"], review["request"]["object"]["spec"]);
    server.stop().await;
}

#[tokio::test]
async fn create_without_annotations_gets_the_map_created() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut review = fixture("svc-web-create-csa-dev.json");
    review["request"]["object"]["metadata"].as_object_mut().expect("meta").remove("annotations");
    let response = client.post("/mutate", body(&review)).await.response();
    let object = patched(&review, &response);
    assert_eq!(stamp(&object)["hallmark.dev/applied-by"], "dev");
    let h = history(&object);
    assert_eq!(h[0]["op"], "create");
    server.stop().await;
}

#[tokio::test]
async fn untrusted_branch_annotation_is_removed_with_a_warning() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut review = fixture("deploy-web-update-csa-image-dev.json");
    review["request"]["object"]["metadata"]["annotations"]["hallmark.dev/branch"] = json!("main");
    let response = client.post("/mutate", body(&review)).await.response();
    assert_eq!(response["allowed"], true);
    let object = patched(&review, &response);
    assert!(!stamp(&object).contains_key("hallmark.dev/branch"));
    let warnings: Vec<String> = serde_json::from_value(response["warnings"].clone()).expect("warnings");
    assert!(warnings.iter().any(|w| w.contains("hallmark.dev/branch") && w.contains("dev")), "{warnings:?}");
    server.stop().await;
}

#[tokio::test]
async fn forged_annotations_are_replaced_and_warned_about() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-web-update-csa-forged-annotations-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let object = patched(&review, &response);
    let s = stamp(&object);
    assert_eq!(s["hallmark.dev/applied-by"], "dev", "applied-by cannot be forged");
    assert!(!s.contains_key("hallmark.dev/committer"), "committer from an untrusted user is removed");
    let warnings = response["warnings"].to_string();
    assert!(warnings.contains("hallmark.dev/committer"), "{warnings}");
    assert!(warnings.contains("hallmark.dev/applied-by"), "{warnings}");
    server.stop().await;
}

#[tokio::test]
async fn oidc_identity_gives_verified_provenance() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-shop-create-csa-oidc-gha.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/trust"], "verified");
    assert_eq!(s["hallmark.dev/applied-by"], "gha:acme/shop");
    assert_eq!(s["hallmark.dev/committer"], "octo-dev");
    assert_eq!(s["hallmark.dev/pipeline"], "deploy#9876543210");
    assert_eq!(s["hallmark.dev/branch"], "main");
    assert_eq!(s["hallmark.dev/commit"], "3f786850e387550fdab836ed7e6dc881de23001b");
    assert_eq!(s["hallmark.dev/repository"], "acme/shop");
    assert_eq!(s["hallmark.dev/channel"], "push");
    server.stop().await;
}

#[tokio::test]
async fn oidc_update_replaces_the_whole_stamp_and_keeps_history() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Create, then feed the stamped object back as oldObject of the captured update.
    let create = fixture("deploy-shop-create-csa-oidc-gha.json");
    let created = patched(&create, &client.post("/mutate", body(&create)).await.response());
    let mut update = fixture("deploy-shop-update-csa-oidc-gha.json");
    let old_stamp = stamp(&created);
    for (k, v) in &old_stamp {
        update["request"]["oldObject"]["metadata"]["annotations"][k] = json!(v);
        update["request"]["object"]["metadata"]["annotations"][k] = json!(v);
    }
    let response = client.post("/mutate", body(&update)).await.response();
    let s = stamp(&patched(&update, &response));
    assert_eq!(s["hallmark.dev/committer"], "octo-lead");
    assert_eq!(s["hallmark.dev/commit"], "89e6c98d92887913cadf06b2adb97f26cde4849b");
    assert_eq!(s["hallmark.dev/pipeline"], "deploy#9876543311");
    let h: Vec<Value> = serde_json::from_str(&s["hallmark.dev/history"]).expect("json");
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["committer"], "octo-lead");
    assert_eq!(h[1]["committer"], "octo-dev");
    assert_eq!(h[0]["changed"], json!(["spec.template.spec.containers[name=shop].image"]));
    server.stop().await;
}

#[tokio::test]
async fn impersonated_extras_are_verified_and_missing_fields_absent() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-orders-create-csa-impersonated-ci-bot.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/trust"], "verified");
    assert_eq!(s["hallmark.dev/branch"], "main");
    assert_eq!(s["hallmark.dev/commit"], "abc123");
    assert!(!s.contains_key("hallmark.dev/committer"));
    assert!(!s.contains_key("hallmark.dev/pipeline"));
    server.stop().await;
}

#[tokio::test]
async fn trusted_declarer_annotations_are_kept_as_declared() {
    let settings = Settings {
        declarers: Subjects::new(vec!["system:serviceaccount:ci:deployer".into()], vec![]),
        ..Settings::default()
    };
    let server = TestServer::start_with(settings, PolicySet::default(), ServeOptions::default()).await;
    let mut client = server.client().await;
    let name = "deploy-checkout-create-csa-ci-deployer-declared-provenance.json";
    let review = fixture(name);
    let declared = stamp(&review["request"]["object"]);
    assert!(!declared.is_empty(), "the fixture declares provenance");
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    assert!(response.get("warnings").is_none(), "{response}");
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/trust"], "declared");
    for field in ["committer", "pipeline", "branch", "commit", "repository"] {
        let key = format!("hallmark.dev/{field}");
        assert_eq!(s.get(&key), declared.get(&key), "{key}");
    }
    server.stop().await;
}

#[tokio::test]
async fn declared_provenance_from_a_non_declarer_is_removed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-checkout-create-csa-ci-deployer-declared-provenance.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/trust"], "none");
    for field in ["committer", "pipeline", "branch", "commit", "repository"] {
        assert!(!s.contains_key(&format!("hallmark.dev/{field}")), "{field}");
    }
    assert!(response["warnings"].as_array().is_some_and(|w| !w.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn noop_server_side_apply_gets_no_patch() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in [
        "deploy-web-update-ssa-noop-dev.json",
        "deploy-platform-agent-update-ssa-noop-flux.json",
        "deploy-platform-agent-update-ssa-dryrun-noop-flux.json",
        "deploy-web-update-ssa-force-first-after-csa-dev.2-ssa-apply-last-applied-annotation.json",
        "deploy-web-update-ssa-force-first-after-csa-dev.3-jsonpatch-managedfields-migration.json",
    ] {
        let response = client.post("/mutate", fixture_bytes(name)).await.response();
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response.get("patch").is_none(), "{name}: a no-op write gets no patch: {response}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_same_object_applied_twice_gets_no_patch_the_second_time() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first = fixture("deploy-web-update-csa-image-dev.json");
    let stored = patched(&first, &client.post("/mutate", body(&first)).await.response());
    // The same apply again: oldObject is what was stored, object is the same content.
    let mut again = first.clone();
    again["request"]["uid"] = json!("second-apply");
    again["request"]["oldObject"] = stored.clone();
    again["request"]["object"] = stored.clone();
    let response = client.post("/mutate", body(&again)).await.response();
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn noop_write_that_rewrites_a_stamp_gets_it_restored() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-web-update-annotate-forged-committer-dev.json";
    let review = fixture(name);
    let old_stamp = stamp(&review["request"]["oldObject"]);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let object = patched(&review, &response);
    assert_eq!(stamp(&object), old_stamp, "the previous stamp is kept exactly");
    assert!(response["warnings"].to_string().contains("hallmark.dev/committer"));
    server.stop().await;
}

#[tokio::test]
async fn delete_and_subresources_are_not_stamped() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in [
        "deploy-web-delete-dev.json",
        "deploy-web-delete-dryrun-dev.json",
        "deploy-web-scale-dev.json",
        "deploy-web-status-patch-admin.json",
    ] {
        let response = client.post("/mutate", fixture_bytes(name)).await.response();
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response.get("patch").is_none(), "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn dry_run_is_stamped_like_a_real_write() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-preview-create-ssa-dryrun-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/applied-by"], "dev");
    assert_eq!(s["hallmark.dev/field-manager"], "kubectl");
    server.stop().await;
}

#[tokio::test]
async fn reconciler_write_is_channel_gitops() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "deploy-platform-agent-create-ssa-flux.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/channel"], "gitops");
    assert_eq!(s["hallmark.dev/field-manager"], "kustomize-controller");
    server.stop().await;
}

#[tokio::test]
async fn keys_needing_pointer_escapes_are_patched_correctly() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "cm-odd-keys-create-csa-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let object = patched(&review, &response);
    let before = annotations(&review["request"]["object"]);
    let after = annotations(&object);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "annotation {k} kept");
    }
    assert_eq!(stamp(&object)["hallmark.dev/applied-by"], "dev");
    server.stop().await;
}

#[tokio::test]
async fn v1beta1_review_is_answered_in_v1beta1() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let name = "cm-v1beta1-demo-create-csa-admin.v1beta1.json";
    let review = fixture(name);
    let reply = client.post("/mutate", fixture_bytes(name)).await;
    let out = reply.json();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(out["response"]["uid"], review["request"]["uid"]);
    assert_eq!(stamp(&patched(&review, &out["response"]))["hallmark.dev/applied-by"], "admin");
    server.stop().await;
}

#[tokio::test]
async fn many_requests_share_one_keep_alive_connection() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for _ in 0..20 {
        let reply = client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, hyper::Version::HTTP_11);
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_tls_connections_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"hallmark_admission_requests_total{endpoint="mutate",outcome="stamped"} 20"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let server = TestServer::start().await;
    let mut client = ApiserverClient::connect_h2(server.addr, &server.ca_pem).await;
    let reply = client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, hyper::Version::HTTP_2);
    assert!(reply.response()["patch"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn malformed_body_gets_400_with_one_line_reason() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for (bad, expect) in [
        (b"not json".to_vec(), "not a valid AdmissionReview"),
        (br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#.to_vec(), "apiVersion"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{}}"#.to_vec(), "kind"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "no request"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","operation":"CREATE"}}"#.to_vec(), "uid"),
    ] {
        let reply = client.post("/mutate", bad).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        let text = reply.text();
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
        assert!(text.contains(expect), "{text}");
    }
    // The connection and the server keep working.
    let reply = client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
    assert_eq!(reply.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn body_over_8_mib_gets_413() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let reply = client.post("/mutate", vec![b' '; 8 * 1024 * 1024 + 1]).await;
    assert_eq!(reply.status, 413);
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(client.request("GET", "/healthz", vec![]).await.status, 200);
    assert_eq!(client.request("GET", "/readyz", vec![]).await.status, 200);
    assert_eq!(client.request("GET", "/mutate", vec![]).await.status, 405);
    server.stop().await;
}
