//! End-to-end tests against a real cluster.
//!
//! They run only when `HALLMARK_E2E_KUBECONFIG` points at a kubeconfig whose user may
//! create webhook configurations, namespaces and RBAC and impersonate users (cluster-admin),
//! and `HALLMARK_E2E_WEBHOOK_URL` is the `https://HOST:PORT` at which that cluster's
//! kube-apiserver can reach a hallmark this test starts (it listens on
//! `HALLMARK_E2E_LISTEN`, default `0.0.0.0:PORT`, with a certificate for HOST). Otherwise
//! every test prints that it was skipped and passes.
//!
//! Each run uses its own namespace and webhook configurations (selected by a namespace
//! label) and deletes them at the end.

mod common;

use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use hallmark::server::serve::{ServeOptions, bind};
use hallmark::server::tls::{CertStore, certified_key_from_pem};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Env {
    kubeconfig: String,
    url: String,
}

fn env() -> Option<Env> {
    match (std::env::var("HALLMARK_E2E_KUBECONFIG"), std::env::var("HALLMARK_E2E_WEBHOOK_URL")) {
        (Ok(k), Ok(u)) if !k.is_empty() && !u.is_empty() => {
            Some(Env { kubeconfig: k, url: u.trim_end_matches('/').to_owned() })
        }
        _ => {
            eprintln!(
                "SKIPPED: end-to-end tests need HALLMARK_E2E_KUBECONFIG and HALLMARK_E2E_WEBHOOK_URL (see tests/e2e.rs)"
            );
            None
        }
    }
}

async fn config(env: &Env) -> Config {
    let kc = Kubeconfig::read_from(&env.kubeconfig).expect("HALLMARK_E2E_KUBECONFIG readable");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig usable")
}

async fn client_as(env: &Env, user: Option<(&str, &[&str])>) -> Client {
    client_with_extras(env, user, &[]).await
}

async fn client_with_extras(env: &Env, user: Option<(&str, &[&str])>, extras: &[(&str, &str)]) -> Client {
    let mut cfg = config(env).await;
    if let Some((name, groups)) = user {
        cfg.auth_info.impersonate = Some(name.to_owned());
        cfg.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    if !extras.is_empty() {
        cfg.auth_info.impersonate_user_extra =
            Some(extras.iter().map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()])).collect());
    }
    Client::try_from(cfg).expect("client")
}

/// Runs the kubectl plugin against the cluster; returns (exit code, stdout + stderr).
fn plugin(env: &Env, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hallmark"))
        .args(args)
        .args(["--kubeconfig", &env.kubeconfig])
        .output()
        .expect("run kubectl-hallmark");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

const POLICY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform-e2e
spec:
  owner:
    name: platform-e2e
    repository: https://git.example.com/sre/cluster-config
    reconcilers:
      # Flux as itself, and the tenant service account it impersonates in every namespace.
      users: ["hallmark-e2e-flux", "system:serviceaccount:*:flux-reconciler"]
      fieldManagers: ["kustomize-controller"]
  rules:
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        namespaces: ["hallmark-e2e-*"]
      fields:
        - spec.template.spec.containers[*].resources
      action: deny
  managedFields: warn
  breakGlass:
    groups: ["hallmark-e2e-oncall"]
"#;

fn deployment(ns: &str, image: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": ns, "labels": {"app": "agent"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": image,
                    "resources": {"limits": {"cpu": cpu, "memory": "128Mi"}}}]}
            }
        }
    })
}

/// Starts hallmark where the cluster can reach it and registers both webhooks for one
/// namespace. Returns the server's stop handle.
async fn start_and_register(env: &Env, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let url: hyper::Uri = env.url.parse().expect("HALLMARK_E2E_WEBHOOK_URL is a URL");
    let host = url.host().expect("URL has a host").trim_matches(['[', ']']).to_owned();
    let port = url.port_u16().unwrap_or(443);
    let listen = std::env::var("HALLMARK_E2E_LISTEN").unwrap_or_else(|_| format!("0.0.0.0:{port}"));
    let bundle = hallmark::certs::generate(&[host.clone(), "localhost".into()], 1).expect("certs");
    let ck = certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).expect("pair");
    let store = Arc::new(CertStore::new(ck));
    let policies = hallmark::policy::load::parse_documents(POLICY, "e2e-policy.yaml").expect("policy");
    let state =
        Arc::new(AppState::new(Engine::new(Stamper::new(Settings::default()), OnError::Allow), PolicySet::default()));
    state.set_policies(PolicySet { policies });
    let opts = ServeOptions {
        listen: listen.parse().expect("HALLMARK_E2E_LISTEN"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        drain: Duration::from_millis(0),
        ..ServeOptions::default()
    };
    let bound = bind(state, store, opts).await.expect("bind the e2e webhook");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));

    let admin = client_as(env, None).await;
    let ca = k8s_openapi::ByteString(bundle.ca_pem.into_bytes());
    let selector = json!({"matchLabels": {"hallmark-e2e": ns}});
    let rules = json!([{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["deployments", "deployments/scale"]}]);
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("{ns}-stamp")},
        "webhooks": [{"name": "stamp.hallmark.dev", "clientConfig": {"url": format!("{}/mutate", env.url), "caBundle": ca},
            "rules": rules, "namespaceSelector": selector, "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "IfNeeded"}]
    }))
    .expect("mutating config");
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": format!("{ns}-ownership")},
        "webhooks": [{"name": "ownership.hallmark.dev", "clientConfig": {"url": format!("{}/validate", env.url), "caBundle": ca},
            "rules": rules, "namespaceSelector": selector, "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail", "timeoutSeconds": 5}]
    }))
    .expect("validating config");
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .expect("register mutating");
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &validating)
        .await
        .expect("register validating");

    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"hallmark-e2e": ns}}})).expect("ns");
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await.expect("namespace");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "hallmark-e2e-edit", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "hallmark-e2e-devs"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "hallmark-e2e-oncall"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "hallmark-e2e-flux"}
        ]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin, ns).create(&PostParams::default(), &binding).await.expect("rolebinding");
    // Webhook configurations take a moment to be picked up by the apiserver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx
}

async fn cleanup(env: &Env, ns: &str) {
    let admin = client_as(env, None).await;
    let _ = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .delete(&format!("{ns}-stamp"), &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .delete(&format!("{ns}-ownership"), &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(admin).delete(ns, &DeleteParams::default()).await;
}

fn annotation(d: &Deployment, key: &str) -> Option<String> {
    d.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

#[tokio::test]
async fn e2e_stamps_denies_and_keeps_noops_quiet() {
    let Some(env) = env() else { return };
    let ns = format!("hallmark-e2e-{}", std::process::id());
    let stop = start_and_register(&env, &ns).await;
    let result = tokio::time::timeout(Duration::from_secs(180), async {
        scenario(&env, &ns).await;
        gitops_scenario(&env, &ns).await;
    })
    .await;
    cleanup(&env, &ns).await;
    let _ = stop.send(());
    result.expect("scenario finished in time");
}

async fn scenario(env: &Env, ns: &str) {
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let oncall: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-sre", &["hallmark-e2e-oncall"]))).await, ns);

    // The reconciler applies the Git version: channel=gitops.
    let git = deployment(ns, "registry.example.com/agent:1.0", "500m");
    let created = flux
        .patch("agent", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&git))
        .await
        .expect("reconciler apply");
    assert_eq!(annotation(&created, "hallmark.dev/channel").as_deref(), Some("gitops"));
    assert_eq!(annotation(&created, "hallmark.dev/applied-by").as_deref(), Some("hallmark-e2e-flux"));

    // A developer changes a Git-owned field: denied, also on a server-side dry run.
    let cpu_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "750m"}}}]}}}});
    for dry_run in [true, false] {
        let params = PatchParams { dry_run, field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
        let err =
            dev.patch("agent", &params, &Patch::Strategic(&cpu_patch)).await.expect_err("owned field change is denied");
        let text = err.to_string();
        assert!(text.contains("containers[name=agent].resources.limits.cpu"), "{text}");
        assert!(text.contains("platform-e2e") && text.contains("https://git.example.com/sre/cluster-config"), "{text}");
    }

    // An unowned change is allowed and stamped as a push.
    let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "registry.example.com/agent:1.1"}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-set".into()), ..PatchParams::default() };
    let updated = dev.patch("agent", &params, &Patch::Strategic(&image_patch)).await.expect("unowned change allowed");
    assert_eq!(annotation(&updated, "hallmark.dev/applied-by").as_deref(), Some("hallmark-e2e-dev"));
    assert_eq!(annotation(&updated, "hallmark.dev/channel").as_deref(), Some("push"));
    assert_eq!(annotation(&updated, "hallmark.dev/field-manager").as_deref(), Some("kubectl-set"));
    let history: Vec<Value> =
        serde_json::from_str(&annotation(&updated, "hallmark.dev/history").unwrap_or_default()).expect("history");
    assert_eq!(history[0]["changed"], json!(["spec.template.spec.containers[name=agent].image"]));
    assert_eq!(history.len(), 2);

    // Break-glass: allowed, recorded.
    let oncall_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"memory": "256Mi"}}}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
    let glass = oncall.patch("agent", &params, &Patch::Strategic(&oncall_patch)).await.expect("break-glass allowed");
    assert_eq!(annotation(&glass, "hallmark.dev/channel").as_deref(), Some("break-glass"));

    // Re-applying the same manifest creates no new resourceVersion.
    let mine = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent", "namespace": ns,
        "annotations": {"team.example.com/oncall": "dev"}}});
    let first = dev.patch("agent", &PatchParams::apply("dev-apply"), &Patch::Apply(&mine)).await.expect("apply");
    let second = dev.patch("agent", &PatchParams::apply("dev-apply"), &Patch::Apply(&mine)).await.expect("re-apply");
    assert_eq!(first.metadata.resource_version, second.metadata.resource_version, "a no-op re-apply stores nothing");
    assert_eq!(annotation(&first, "hallmark.dev/applied-at"), annotation(&second, "hallmark.dev/applied-at"));

    // Verified provenance from impersonation extras, and the plugin on the real objects.
    let ci: Api<Deployment> = Api::namespaced(
        client_with_extras(
            env,
            Some(("hallmark-e2e-ci", &["hallmark-e2e-devs"])),
            &[("hallmark.dev/branch", "main"), ("hallmark.dev/commit", "abc123")],
        )
        .await,
        ns,
    );
    let mut app = deployment(ns, "registry.example.com/app:1", "100m");
    app["metadata"]["name"] = json!("ci-app");
    let ci_app = ci.patch("ci-app", &PatchParams::apply("ci-apply"), &Patch::Apply(&app)).await.expect("ci apply");
    assert_eq!(annotation(&ci_app, "hallmark.dev/trust").as_deref(), Some("verified"));
    assert_eq!(annotation(&ci_app, "hallmark.dev/branch").as_deref(), Some("main"));

    let (code, out) = plugin(env, &["show", "deploy/agent", "-n", ns]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hallmark-e2e-dev") && out.contains("History:"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write policy");
    let policy = policy.display().to_string();
    let (code, out) = plugin(env, &["owners", "deploy/agent", "-n", ns, "--policy", &policy]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kustomize-controller"), "{out}");

    let manifest = dir.path().join("agent.yaml");
    let mut change = deployment(ns, "registry.example.com/agent:1.1", "900m");
    change["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("256Mi");
    std::fs::write(&manifest, serde_yaml::to_string(&change).expect("yaml")).expect("write manifest");
    let (code, out) = plugin(
        env,
        &[
            "check",
            "-f",
            &manifest.display().to_string(),
            "--policy",
            &policy,
            "--as",
            "hallmark-e2e-dev",
            "--as-group",
            "hallmark-e2e-devs",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("containers[name=agent].resources.limits.cpu"), "{out}");

    let (code, out) = plugin(env, &["list", "-n", ns, "--kind", "deployments", "--branch", "main"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ci-app") && !out.contains("agent "), "{out}");
}

/// Flux as it runs multi-tenant: it applies as itself, then the next revision while
/// impersonating the tenant service account (`spec.serviceAccountName`): user and groups,
/// no extras. The policy names that account with a glob.
async fn gitops_scenario(env: &Env, ns: &str) {
    // The tenant's service account, with the rights Flux's impersonated applies need.
    let admin = client_as(env, None).await;
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "flux-reconciler", "namespace": ns}})).expect("sa");
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("tenant service account");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "flux-reconciler", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "flux-reconciler", "namespace": ns}]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin, ns).create(&PostParams::default(), &binding).await.expect("rolebinding");

    let tenant_sa = format!("system:serviceaccount:{ns}:flux-reconciler");
    let tenant_groups = ["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{ns}")];
    let tenant_groups: Vec<&str> = tenant_groups.iter().map(String::as_str).collect();
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    // Impersonating like kustomize-controller does for spec.serviceAccountName: the user
    // and its groups, no extras.
    let flux_as_tenant: Api<Deployment> =
        Api::namespaced(client_as(env, Some((tenant_sa.as_str(), tenant_groups.as_slice()))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let apply = PatchParams::apply("kustomize-controller").force();
    let manifest = |cpu: &str| {
        let mut d = deployment(ns, "registry.example.com/agent:1.0", cpu);
        d["metadata"]["name"] = json!("gitops-agent");
        d
    };

    // Flux applies the first revision as itself.
    let git = manifest("500m");
    let created = flux.patch("gitops-agent", &apply, &Patch::Apply(&git)).await.expect("Flux applies as itself");
    assert_eq!(annotation(&created, "hallmark.dev/channel").as_deref(), Some("gitops"));

    // The next revision, impersonating the tenant service account, changes a Git-owned field.
    let next = manifest("600m");
    let updated = flux_as_tenant
        .patch("gitops-agent", &apply, &Patch::Apply(&next))
        .await
        .expect("Flux impersonating the tenant SA");
    assert_eq!(annotation(&updated, "hallmark.dev/channel").as_deref(), Some("gitops"));
    assert_eq!(annotation(&updated, "hallmark.dev/applied-by"), Some(tenant_sa.clone()));
    assert_eq!(annotation(&updated, "hallmark.dev/field-manager").as_deref(), Some("kustomize-controller"));
    let stored = serde_json::to_value(&updated).expect("json");
    let cpu = stored.pointer("/spec/template/spec/containers/0/resources/limits/cpu").and_then(Value::as_str);
    assert_eq!(cpu, Some("600m"));

    // A developer's change of the same field is still denied.
    let cpu_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "750m"}}}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
    let text = dev.patch("gitops-agent", &params, &Patch::Strategic(&cpu_patch)).await.expect_err("denied").to_string();
    assert!(text.contains("containers[name=agent].resources.limits.cpu") && text.contains("change it there"), "{text}");

    // A developer who names Flux's field manager is denied, and told why.
    let mine = manifest("750m");
    let text = dev.patch("gitops-agent", &apply, &Patch::Apply(&mine)).await.expect_err("denied").to_string();
    assert!(
        text.contains(
            "field manager kustomize-controller is a reconciler field manager of platform-e2e, but user hallmark-e2e-dev is not one of its reconcilers"
        ),
        "{text}"
    );
    assert!(text.contains("system:serviceaccount:*:flux-reconciler"), "{text}");
}
