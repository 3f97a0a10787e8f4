//! Black-box tests over real TLS of GitOps controllers as they really write: Flux's
//! kustomize-controller applying the next Git revision while impersonating the tenant
//! service account `system:serviceaccount:team-a:flux-reconciler` (captured from a real
//! kube-apiserver: `validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa`,
//! userInfo = the tenant SA and its groups, no extra), and the same write shaped as
//! helm-controller's and Argo CD's. `/validate` gets the `.validating.json` view, `/mutate`
//! the `.mutating.json` one, byte for byte where the capture is used unchanged.

mod common;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::policy::load::parse_documents;
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};

const VALIDATING: &str = "validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa.validating.json";
const MUTATING: &str = "validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa.mutating.json";
const TENANT_SA: &str = "system:serviceaccount:team-a:flux-reconciler";
const CPU: &str = "spec.template.spec.containers[name=agent].resources.limits.cpu";

/// Owns the container resources of team Deployments and everything the GitOps
/// controllers' field managers own. `USERS` is replaced by the reconciler users.
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
      users: USERS
      fieldManagers: ["kustomize-controller", "helm-controller", "argocd-controller"]
  rules:
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        namespaces: ["team-*"]
      fields:
        - spec.template.spec.containers[*].resources
      action: deny
  managedFields: deny
"#;

const FLUX_OWN: &str = "system:serviceaccount:flux-system:kustomize-controller";

fn platform(users: &str) -> PolicySet {
    PolicySet { policies: parse_documents(&PLATFORM.replace("USERS", users), "platform.yaml").expect("valid policy") }
}

fn with_globs() -> PolicySet {
    platform(&format!(
        r#"["{FLUX_OWN}", "system:serviceaccount:*:flux-reconciler", "system:serviceaccount:*:argocd-sync"]"#
    ))
}

fn exact_only() -> PolicySet {
    platform(&format!(r#"["{FLUX_OWN}"]"#))
}

async fn server(settings: Settings, policies: PolicySet) -> TestServer {
    TestServer::start_with(settings, policies, ServeOptions::default()).await
}

fn warnings(response: &Value) -> Vec<String> {
    serde_json::from_value(response.get("warnings").cloned().unwrap_or(json!([]))).expect("warnings are strings")
}

/// The captured review with another user and field manager (helm-controller, Argo CD).
fn reshaped(name: &str, user: Value, manager: &str) -> Value {
    let mut review = fixture(name);
    review["request"]["userInfo"] = user;
    review["request"]["options"]["fieldManager"] = json!(manager);
    review
}

fn tenant_sa(ns: &str, name: &str) -> Value {
    json!({"username": format!("system:serviceaccount:{ns}:{name}"),
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]})
}

#[tokio::test]
async fn the_capture_is_what_the_tests_assume() {
    for name in [VALIDATING, MUTATING] {
        let request = &fixture(name)["request"];
        assert_eq!(request["userInfo"]["username"], TENANT_SA, "{name}");
        assert!(request["userInfo"].get("extra").is_none(), "{name}: an impersonated request carries no extra");
        assert_eq!(request["options"]["fieldManager"], "kustomize-controller", "{name}");
        assert_eq!(request["operation"], "UPDATE", "{name}");
    }
}

#[tokio::test]
async fn flux_impersonating_a_tenant_sa_matched_by_a_glob_is_allowed_and_stamped_gitops() {
    let server = server(Settings::default(), with_globs()).await;
    let mut client = server.client().await;
    let reply = client.post("/validate", fixture_bytes(VALIDATING)).await;
    assert_eq!(reply.status, 200);
    let response = reply.response();
    assert_eq!(response["uid"], fixture(VALIDATING)["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");
    assert!(warnings(&response).is_empty(), "{response}");

    let review = fixture(MUTATING);
    let response = client.post("/mutate", fixture_bytes(MUTATING)).await.response();
    assert_eq!(response["allowed"], true);
    let stamp = stamp(&patched(&review, &response));
    assert_eq!(stamp["hallmark.dev/channel"], "gitops", "{stamp:?}");
    assert_eq!(stamp["hallmark.dev/applied-by"], TENANT_SA);
    assert_eq!(stamp["hallmark.dev/field-manager"], "kustomize-controller");
    assert_eq!(stamp["hallmark.dev/trust"], "none");
    server.stop().await;
}

#[tokio::test]
async fn without_the_glob_flux_is_denied_with_a_message_that_names_the_fix() {
    let server = server(Settings::default(), exact_only()).await;
    let mut client = server.client().await;
    let response = client.post("/validate", fixture_bytes(VALIDATING)).await.response();
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().expect("message");
    assert_eq!(
        message,
        format!(
            "{CPU} is owned by platform-config (Git: https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); \
             field manager kustomize-controller is a reconciler field manager of platform-config, but user {TENANT_SA} is not one of its reconcilers \
             (users: {FLUX_OWN}; groups: none); if this is your GitOps controller impersonating a tenant service account, \
             add it to spec.owner.reconcilers.users of OwnershipPolicy platform (globs allowed, e.g. system:serviceaccount:*:flux-reconciler). \
             Requested \"500m\" -> \"600m\"."
        )
    );
    assert!(!message.contains("change it there"));
    // And /mutate stamps it as a direct write.
    let review = fixture(MUTATING);
    let response = client.post("/mutate", fixture_bytes(MUTATING)).await.response();
    assert_eq!(stamp(&patched(&review, &response))["hallmark.dev/channel"], "push");
    server.stop().await;
}

#[tokio::test]
async fn helm_controller_and_argo_cd_impersonating_tenant_accounts() {
    let server = server(Settings::default(), with_globs()).await;
    let mut client = server.client().await;
    let cases = [
        (tenant_sa("team-a", "flux-reconciler"), "helm-controller", true),
        (tenant_sa("team-a", "argocd-sync"), "argocd-controller", true),
        (tenant_sa("team-a", "default"), "helm-controller", false),
        (tenant_sa("team-a", "argocd-syncer"), "argocd-controller", false),
    ];
    for (user, manager, reconciler) in cases {
        let who = user["username"].as_str().unwrap_or_default().to_owned();
        let response = client.post("/validate", body(&reshaped(VALIDATING, user.clone(), manager))).await.response();
        assert_eq!(response["allowed"], reconciler, "{who} {manager}: {response}");
        if !reconciler {
            let message = response["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!(
                    "field manager {manager} is a reconciler field manager of platform-config, but user {who} is not one of its reconcilers"
                )),
                "{message}"
            );
        }
        let review = reshaped(MUTATING, user, manager);
        let response = client.post("/mutate", body(&review)).await.response();
        let stamp = stamp(&patched(&review, &response));
        assert_eq!(stamp["hallmark.dev/channel"], if reconciler { "gitops" } else { "push" }, "{who} {manager}");
        assert_eq!(stamp["hallmark.dev/field-manager"], manager);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_developer_changing_the_same_field_is_still_denied() {
    let server = server(Settings::default(), with_globs()).await;
    let mut client = server.client().await;
    let dev = json!({"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]});
    // With its own field manager: the usual message.
    let response = client.post("/validate", body(&reshaped(VALIDATING, dev.clone(), "kubectl"))).await.response();
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("{CPU} is owned by platform-config")), "{message}");
    assert!(message.contains("; change it there. Requested \"500m\" -> \"600m\"."), "{message}");
    // Naming the reconciler's field manager: denied, and told that the identity is what counts.
    let response =
        client.post("/validate", body(&reshaped(VALIDATING, dev.clone(), "kustomize-controller"))).await.response();
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "field manager kustomize-controller is a reconciler field manager of platform-config, but user dev is not one of its reconcilers \
             (users: system:serviceaccount:flux-system:kustomize-controller, system:serviceaccount:*:flux-reconciler, system:serviceaccount:*:argocd-sync; groups: none)"
        ),
        "{message}"
    );
    let review = reshaped(MUTATING, dev, "kustomize-controller");
    let response = client.post("/mutate", body(&review)).await.response();
    assert_eq!(stamp(&patched(&review, &response))["hallmark.dev/channel"], "push");
    server.stop().await;
}

#[tokio::test]
async fn config_file_reconciler_globs_under_the_builtin_default() {
    // Without configuration the built-in default warns, and names the way out.
    let server_plain = server(Settings::default(), PolicySet::default()).await;
    let mut client = server_plain.client().await;
    let response = client.post("/validate", fixture_bytes(VALIDATING)).await.response();
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("list it under reconcilers.users in hallmark's config file"), "{w:?}");
    let review = fixture(MUTATING);
    let response = client.post("/mutate", fixture_bytes(MUTATING)).await.response();
    assert_eq!(stamp(&patched(&review, &response))["hallmark.dev/channel"], "push");
    server_plain.stop().await;

    let settings =
        Settings::from_yaml("reconcilers:\n  users: [\"system:serviceaccount:*:flux-reconciler\"]\n", "config.yaml")
            .expect("valid config");
    let server = server(settings, PolicySet::default()).await;
    let mut client = server.client().await;
    let response = client.post("/validate", fixture_bytes(VALIDATING)).await.response();
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).is_empty(), "{response}");
    let response = client.post("/mutate", fixture_bytes(MUTATING)).await.response();
    assert_eq!(stamp(&patched(&review, &response))["hallmark.dev/channel"], "gitops");
    // A developer is still warned.
    let dev = json!({"username": "dev", "groups": ["developers", "system:authenticated"]});
    let response = client.post("/validate", body(&reshaped(VALIDATING, dev, "kubectl"))).await.response();
    assert_eq!(warnings(&response).len(), 1, "{response}");
    server.stop().await;
}

/// `kubectl hallmark check` (its offline evaluation) uses the same matching: the tenant
/// account Flux impersonates is a reconciler, a developer naming Flux's field manager is not.
#[tokio::test]
async fn kubectl_hallmark_check_judges_impersonated_writes_the_same_way() {
    use hallmark::admission::UserInfo;
    use hallmark::plugin::check;
    use hallmark::provenance::Stamper;
    use hallmark::review::{Engine, OnError};

    let request = &fixture(VALIDATING)["request"];
    let live = request["oldObject"].clone();
    let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "platform-agent", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "600m"}}}]}}}});
    let user = |v: &Value| -> UserInfo { serde_json::from_value(v.clone()).expect("userInfo") };
    let engine = Engine::new(Stamper::new(Settings::default()), OnError::Allow);
    let now: jiff::Timestamp = "2026-11-30T04:00:00Z".parse().expect("time");
    let judge = |policies: &PolicySet, who: UserInfo| {
        check::evaluate(
            &engine,
            policies,
            check::Write {
                qualified: "deployments.apps",
                live: Some(live.clone()),
                manifest: &manifest,
                user: who,
                field_manager: Some("kustomize-controller".to_owned()),
            },
            now,
        )
    };
    let tenant = user(&request["userInfo"]);
    let r = judge(&with_globs(), tenant.clone());
    assert!(r.allowed, "{r:?}");
    assert_eq!(r.stamp.as_ref().and_then(|s| s.channel.as_deref()), Some("gitops"), "{r:?}");
    let r = judge(&exact_only(), tenant);
    assert!(!r.allowed);
    assert!(r.message.as_deref().unwrap_or_default().contains("is not one of its reconcilers"), "{r:?}");
    let dev = user(&json!({"username": "dev", "groups": ["developers", "system:authenticated"]}));
    let r = judge(&with_globs(), dev);
    assert!(!r.allowed);
    assert!(r.message.as_deref().unwrap_or_default().contains("but user dev is not one of its reconcilers"), "{r:?}");
}

/// `kubectl hallmark owners -o json` shows who may change the Git-owned fields, globs as
/// written.
#[tokio::test]
async fn kubectl_hallmark_owners_names_the_reconcilers() {
    use hallmark::plugin::owners::{PolicySource, owners, owners_document};
    let obj = fixture(VALIDATING)["request"]["oldObject"].clone();
    let set = with_globs();
    let grouped = owners(&obj, "deployments", set.effective());
    let doc = owners_document(&obj, &grouped, &PolicySource::Files(vec!["platform.yaml".into()]));
    assert_eq!(
        doc["gitOwners"][0]["reconcilers"],
        json!({"users": [FLUX_OWN, "system:serviceaccount:*:flux-reconciler", "system:serviceaccount:*:argocd-sync"], "groups": []})
    );
    assert!(grouped.git.iter().any(|g| g.field == CPU && g.manager.as_deref() == Some("kustomize-controller")));
}
