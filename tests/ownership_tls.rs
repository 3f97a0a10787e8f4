//! Black-box tests of `/validate` (Git field ownership) over real TLS, with captured
//! reviews of a Flux-managed Deployment (`platform-agent`, applied by kustomize-controller).

mod common;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::policy::load::parse_documents;
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};

const PLATFORM: &str = r#"
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
  rules:
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        namespaces: ["team-*"]
      fields:
        - spec.template.spec.containers[*].resources
      action: deny
  deleteProtection: true
  breakGlass:
    groups: ["sre-oncall"]
"#;

async fn server(policy: Option<&str>) -> TestServer {
    let policies = match policy {
        Some(text) => PolicySet { policies: parse_documents(text, "policy.yaml").expect("valid policy") },
        None => PolicySet::default(),
    };
    TestServer::start_with(Settings::default(), policies, ServeOptions::default()).await
}

fn warnings(response: &Value) -> Vec<String> {
    serde_json::from_value(response.get("warnings").cloned().unwrap_or(json!([]))).expect("warnings are strings")
}

fn flux_user() -> Value {
    fixture("deploy-platform-agent-create-ssa-flux.json")["request"]["userInfo"].clone()
}

const CPU: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";

#[tokio::test]
async fn developer_changing_an_owned_cpu_limit_is_denied_with_a_precise_message() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let review = fixture(CPU);
    let reply = client.post("/validate", fixture_bytes(CPU)).await;
    assert_eq!(reply.status, 200);
    let response = reply.response();
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert!(response.get("patch").is_none(), "/validate never patches");
    let message = response["status"]["message"].as_str().expect("message");
    assert_eq!(
        message,
        "spec.template.spec.containers[name=agent].resources.limits.cpu is owned by platform-config \
         (Git: https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); \
         change it there. Requested \"500m\" -> \"750m\"."
    );
    assert_eq!(
        response["auditAnnotations"]["ownership-denied"],
        "spec.template.spec.containers[name=agent].resources.limits.cpu"
    );
    server.stop().await;
}

#[tokio::test]
async fn dry_run_is_judged_like_a_real_write() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let mut review = fixture(CPU);
    review["request"]["dryRun"] = json!(true);
    review["request"]["options"]["dryRun"] = json!(["All"]);
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], false);
    server.stop().await;
}

#[tokio::test]
async fn the_same_change_by_the_reconciler_is_allowed_silently() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let mut review = fixture(CPU);
    review["request"]["userInfo"] = flux_user();
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).is_empty());
    // And Flux's own revert of the drift.
    let response = client
        .post("/validate", fixture_bytes("deploy-platform-agent-update-ssa-flux-revert-drift.json"))
        .await
        .response();
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn naming_the_reconcilers_field_manager_does_not_make_a_reconciler() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let mut review = fixture(CPU);
    review["request"]["options"]["fieldManager"] = json!("kustomize-controller");
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], false);
    server.stop().await;
}

#[tokio::test]
async fn impersonated_reconciler_without_pod_token_is_denied_when_required() {
    let policy = PLATFORM.replace(
        "      fieldManagers: [\"kustomize-controller\"]",
        "      fieldManagers: [\"kustomize-controller\"]\n      requirePodToken: true",
    );
    let server = server(Some(&policy)).await;
    let mut client = server.client().await;
    let mut review = fixture(CPU);
    review["request"]["userInfo"] = json!({
        "username": "system:serviceaccount:flux-system:kustomize-controller",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"]
    });
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], false, "impersonation without a pod-bound token is not the reconciler");
    review["request"]["userInfo"] = flux_user();
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], true, "the real pod-bound token is");
    server.stop().await;
}

#[tokio::test]
async fn break_glass_is_allowed_warned_audited_and_stamped() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let name = "deploy-platform-agent-update-patch-memory-sre-alice-break-glass.json";
    let review = fixture(name);
    let response = client.post("/validate", fixture_bytes(name)).await.response();
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("break-glass: spec.template.spec.containers[name=agent].resources.limits.memory"),
        "{w:?}"
    );
    assert_eq!(response["auditAnnotations"]["break-glass-user"], "sre-alice");
    let mutated = client.post("/mutate", fixture_bytes(name)).await.response();
    assert_eq!(stamp(&patched(&review, &mutated))["hallmark.dev/channel"], "break-glass");
    server.stop().await;
}

#[tokio::test]
async fn unowned_change_is_allowed_without_warnings() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let response = client
        .post("/validate", fixture_bytes("deploy-platform-agent-update-annotate-dev-unowned.json"))
        .await
        .response();
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).is_empty(), "{response}");
    assert!(response.get("auditAnnotations").is_none());
    server.stop().await;
}

#[tokio::test]
async fn without_policy_a_flux_owned_field_change_is_warned_about() {
    let server = server(None).await;
    let mut client = server.client().await;
    let response = client.post("/validate", fixture_bytes(CPU)).await.response();
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("spec.template.spec.containers[name=agent].resources.limits.cpu"), "{w:?}");
    assert!(w[0].contains("kustomize-controller") && w[0].contains("revert"), "{w:?}");
    server.stop().await;
}

#[tokio::test]
async fn scale_of_flux_owned_replicas_is_judged_as_spec_replicas() {
    // Built-in default: a warning.
    let server_default = server(None).await;
    let mut client = server_default.client().await;
    let name = "deploy-platform-agent-scale-dev-flux-owned-replicas.json";
    let response = client.post("/validate", fixture_bytes(name)).await.response();
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).iter().any(|w| w.starts_with("spec.replicas is owned by git")), "{response}");
    server_default.stop().await;

    // managedFields: deny: denied.
    let policy = PLATFORM.replace("  deleteProtection: true", "  deleteProtection: true\n  managedFields: deny");
    let server = server(Some(&policy)).await;
    let mut client = server.client().await;
    let response = client.post("/validate", fixture_bytes(name)).await.response();
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("spec.replicas is owned by platform-config (field manager kustomize-controller"),
        "{message}"
    );
    assert!(message.ends_with("Requested 2 -> 3."), "{message}");
    // A scale of an object Flux does not own is fine.
    let response = client.post("/validate", fixture_bytes("deploy-web-scale-dev.json")).await.response();
    assert_eq!(response["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn delete_protection_denies_deleting_what_a_reconciler_manages() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let mut review = fixture("deploy-web-delete-dev.json");
    review["request"]["oldObject"] = fixture(CPU)["request"]["oldObject"].clone();
    review["request"]["name"] = json!("platform-agent");
    let response = client.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap_or_default().contains("kustomize-controller"));
    // An object no reconciler manages can be deleted.
    let response = client.post("/validate", fixture_bytes("deploy-web-delete-dev.json")).await.response();
    assert_eq!(response["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn creates_and_status_writes_are_not_judged() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    for name in ["deploy-web-create-csa-dev.json", "deploy-web-status-patch-admin.json"] {
        let response = client.post("/validate", fixture_bytes(name)).await.response();
        assert_eq!(response["allowed"], true, "{name}");
        assert!(warnings(&response).is_empty(), "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn many_owned_fields_are_listed_up_to_a_cap() {
    let server = server(Some(PLATFORM)).await;
    let mut client = server.client().await;
    let mut review = fixture(CPU);
    let containers = review["request"]["oldObject"]["spec"]["template"]["spec"]["containers"].clone();
    let mut old_list = Vec::new();
    let mut new_list = Vec::new();
    for i in 0..8 {
        let mut c = containers[0].clone();
        c["name"] = json!(format!("c{i}"));
        old_list.push(c.clone());
        c["resources"]["limits"]["cpu"] = json!("2");
        new_list.push(c);
    }
    review["request"]["oldObject"]["spec"]["template"]["spec"]["containers"] = json!(old_list);
    review["request"]["object"]["spec"]["template"]["spec"]["containers"] = json!(new_list);
    let response = client.post("/validate", body(&review)).await.response();
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(message.matches("is owned by platform-config").count(), 5, "{message}");
    assert!(message.ends_with("and 3 more owned fields"), "{message}");
    server.stop().await;
}
