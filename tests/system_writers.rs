//! Kubernetes' own controllers are never blocked and never replace a person's stamp,
//! whatever the webhook configuration sends hallmark (config `systemWriters`).

mod common;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::policy::load::parse_documents;
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config
    reconcilers:
      users: ["system:serviceaccount:flux-system:kustomize-controller"]
      fieldManagers: ["kustomize-controller"]
  managedFields: deny
  deleteProtection: true
"#;

/// The Flux-managed Deployment as stored (kustomize-controller owns it).
fn stored() -> Value {
    fixture("validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa.validating.json")["request"]
        ["oldObject"]
        .clone()
}

/// The DELETE that a namespace deletion makes: the namespace controller deletes the
/// collection, so the review has no `request.name` (DELETE shape from
/// `validating/deploy-web-delete-dev.validating.json`).
fn collection_delete(username: &str) -> Value {
    let mut review = fixture("validating/deploy-web-delete-dev.validating.json");
    let request = &mut review["request"];
    request["oldObject"] = stored();
    request["namespace"] = json!("team-a");
    request.as_object_mut().expect("request").remove("name");
    request["userInfo"] = json!({"username": username, "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]});
    review
}

async fn server(settings: Settings) -> TestServer {
    let policies = PolicySet { policies: parse_documents(POLICY, "policy.yaml").expect("valid policy") };
    TestServer::start_with(settings, policies, ServeOptions::default()).await
}

#[tokio::test]
async fn the_namespace_controllers_delete_of_a_git_managed_object_is_allowed() {
    let server = server(Settings::default()).await;
    let mut c = server.client().await;
    // The policy does protect the object: a person's DELETE is denied.
    let dev = c.post("/validate", body(&collection_delete("dev"))).await.response();
    assert_eq!(dev["allowed"], false, "{dev}");
    for user in [
        "system:serviceaccount:kube-system:namespace-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:kube-controller-manager",
    ] {
        let response = c.post("/validate", body(&collection_delete(user))).await.response();
        assert_eq!(response["allowed"], true, "{user}: {response}");
        assert!(response.get("warnings").is_none(), "{user}: {response}");
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_system_writes_total{endpoint=\"validate\"} 3"), "{metrics}");
    assert!(metrics.contains("hallmark_admission_requests_total{endpoint=\"validate\",outcome=\"system-writer\"} 3"));
    server.stop().await;
}

#[tokio::test]
async fn the_set_of_system_writers_is_configurable() {
    let settings = Settings::from_yaml(
        "systemWriters:\n  users: [\"system:serviceaccount:kube-system:*\", \"system:serviceaccount:platform:janitor\"]\n",
        "config.yaml",
    )
    .expect("valid config");
    let server = server(settings).await;
    let mut c = server.client().await;
    let janitor = c.post("/validate", body(&collection_delete("system:serviceaccount:platform:janitor"))).await;
    assert_eq!(janitor.response()["allowed"], true);
    // Left out of the configured set: judged like anyone.
    let kcm = c.post("/validate", body(&collection_delete("system:kube-controller-manager"))).await;
    assert_eq!(kcm.response()["allowed"], false);
    server.stop().await;
}

/// An UPDATE by the deployment controller that sets its revision annotation on an object
/// that dev stamped.
fn controller_update(keep_stamp: bool) -> (Value, Value) {
    let mut review = fixture("deploy-web-update-csa-image-dev.json");
    let request = &mut review["request"];
    let mut old = request["oldObject"].clone();
    let person = json!({
        "hallmark.dev/applied-by": "dev", "hallmark.dev/applied-at": "2026-11-27T10:00:01Z",
        "hallmark.dev/channel": "push", "hallmark.dev/trust": "none",
        "hallmark.dev/field-manager": "kubectl-client-side-apply",
    });
    let annotations = old["metadata"]["annotations"].as_object_mut().expect("annotations");
    for (k, v) in person.as_object().expect("map") {
        annotations.insert(k.clone(), v.clone());
    }
    let mut new = old.clone();
    let new_annotations = new["metadata"]["annotations"].as_object_mut().expect("annotations");
    new_annotations.insert("deployment.kubernetes.io/revision".into(), json!("2"));
    if !keep_stamp {
        new_annotations.retain(|k, _| !k.starts_with("hallmark.dev/"));
    }
    request["oldObject"] = old;
    request["object"] = new;
    request["options"] =
        json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kube-controller-manager"});
    request["userInfo"] = json!({"username": "system:serviceaccount:kube-system:deployment-controller",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]});
    (review, person)
}

#[tokio::test]
async fn a_controllers_write_keeps_the_persons_stamp() {
    let server = server(Settings::default()).await;
    let mut c = server.client().await;
    let (review, _) = controller_update(true);
    let response = c.post("/mutate", body(&review)).await.response();
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "nothing to change: {response}");

    // A controller that wrote a stale copy without the stamp: the stamp is put back.
    let (review, person) = controller_update(false);
    let response = c.post("/mutate", body(&review)).await.response();
    let after = patched(&review, &response);
    let stamp: std::collections::BTreeMap<String, String> = stamp(&after);
    let want: std::collections::BTreeMap<String, String> = person
        .as_object()
        .expect("map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(stamp, want, "the person's stamp, not the controller's");
    assert_eq!(annotations(&after)["deployment.kubernetes.io/revision"], "2", "the controller's own change stays");

    // A CREATE by the control plane (a ReplicaSet made by the deployment controller,
    // which copies the Deployment's annotations) is left as it is.
    let mut create = fixture("deploy-web-create-csa-dev.json");
    create["request"]["userInfo"] = json!({"username": "system:serviceaccount:kube-system:replicaset-controller"});
    let response = c.post("/mutate", body(&create)).await.response();
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_system_writes_total{endpoint=\"mutate\"} 3"), "{metrics}");
    server.stop().await;
}
