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
//! label, labelled `hallmark.dev/e2e-run`) and deletes them whatever the outcome (a guard
//! that cleans up when dropped, also on a failed assertion or a time-out); configurations
//! an earlier, killed run left behind are deleted before registering.
//!
//! What the cluster needs: a kube-apiserver (tested on v1.36) that can reach HOST:PORT,
//! kube-controller-manager running beside it (the scale and namespace-deletion cases rely
//! on its controllers), the `edit` ClusterRole, and for `e2e_audit_trail` the Flux
//! (`kustomize.toolkit.fluxcd.io`, `helm.toolkit.fluxcd.io`, `source.toolkit.fluxcd.io`)
//! and Argo CD (`argoproj.io`) CRDs — that case is skipped without them. No nodes are
//! needed. Other mutating webhooks may be registered: the assertions are on what hallmark
//! controls (a patch retried on a conflict runs admission again; another webhook may
//! change the object in the same write). The tests take turns on the listen port; run
//! them with `--test-threads=1` for readable output.

mod common;

use hallmark::config::Settings;
use hallmark::policy::{PolicySet, Subjects};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use hallmark::server::serve::{ServeOptions, bind};
use hallmark::server::tls::{CertStore, certified_key_from_pem};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The tests of this file share one listen address (`HALLMARK_E2E_WEBHOOK_URL`'s port):
/// each holds this for its whole run, so they take turns whatever `--test-threads` says.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone)]
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

/// The CI service account of the declare case (a trusted declarer).
const DECLARER: &str = "hallmark-e2e-deployer";

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
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        namespaces: ["hallmark-e2e-*"]
        labelSelector: {matchLabels: {replicas-from: git}}
      fields:
        - spec.replicas
      action: deny
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        namespaces: ["hallmark-e2e-*"]
        labelSelector: {matchLabels: {app: agent}}
      fields:
        - metadata.labels["cost-center"]
        - metadata.finalizers
      action: deny
  managedFields: warn
  deleteProtection: true
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
    start_and_register_with(env, ns, false).await.0
}

/// As `start_and_register`; with `conditions`, the ownership webhook is registered as
/// `hallmark webhook-config` generates it for POLICY (no CREATE, the generated
/// matchConditions). Also returns the server's state, for its request counters, and the
/// CA (PEM) of its serving certificate.
async fn start_and_register_with(
    env: &Env,
    ns: &str,
    conditions: bool,
) -> (tokio::sync::oneshot::Sender<()>, Arc<AppState>, String) {
    let url: hyper::Uri = env.url.parse().expect("HALLMARK_E2E_WEBHOOK_URL is a URL");
    let host = url.host().expect("URL has a host").trim_matches(['[', ']']).to_owned();
    let port = url.port_u16().unwrap_or(443);
    let listen = std::env::var("HALLMARK_E2E_LISTEN").unwrap_or_else(|_| format!("0.0.0.0:{port}"));
    let bundle = hallmark::certs::generate(&[host.clone(), "localhost".into()], 1).expect("certs");
    let ck = certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).expect("pair");
    let store = Arc::new(CertStore::new(ck));
    let policies = hallmark::policy::load::parse_documents(POLICY, "e2e-policy.yaml").expect("policy");
    // The CI deployer of the declare case is a trusted declarer.
    let settings = Settings { declarers: Subjects::new(vec![DECLARER.to_owned()], vec![]), ..Settings::default() };
    // Reconcilers' writes are stamped with their Git source, read from watch caches as
    // `hallmark serve` does (kinds whose CRDs the cluster lacks stay empty).
    let caches = Arc::new(hallmark::server::sources::SourceCaches::new());
    let engine =
        Engine::new(Stamper::new(settings), OnError::Allow).with_sources(hallmark::gitops::Sources(caches.clone()));
    let state = Arc::new(AppState::new(engine, PolicySet::default()));
    caches.set_metrics(state.metrics.gitops.clone());
    hallmark::server::sources::watch(caches, client_as(env, None).await).await;
    state.set_policies(PolicySet { policies: policies.clone() });
    // Scale writes: the parent is read as the deployed hallmark reads it (RBAC get).
    state.set_parent_lookup(hallmark::server::parents::ParentLookup::new(
        client_as(env, None).await,
        Duration::from_secs(2),
    ));
    let opts = ServeOptions {
        listen: listen.parse().expect("HALLMARK_E2E_LISTEN"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        drain: Duration::from_millis(0),
        ..ServeOptions::default()
    };
    // The tests of this file take turns (see `SERIAL`); the previous one's listener may
    // take a moment to go away.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let bound = loop {
        match bind(state.clone(), store.clone(), opts.clone()).await {
            Ok(b) => break b,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("e2e: waiting for {}: {e:#}", opts.listen);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("bind the e2e webhook: {e:#}"),
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));

    let admin = client_as(env, None).await;
    sweep_leftovers(&admin).await;
    let ca_pem = bundle.ca_pem.clone();
    let ca = k8s_openapi::ByteString(bundle.ca_pem.into_bytes());
    let selector = json!({"matchLabels": {"hallmark-e2e": ns}});
    let rules = json!([{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["deployments", "deployments/scale"]}]);
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("{ns}-stamp"), "labels": {RUN_LABEL: ns}},
        "webhooks": [{"name": "stamp.hallmark.dev", "clientConfig": {"url": format!("{}/mutate", env.url), "caBundle": ca},
            "rules": rules, "namespaceSelector": selector, "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "IfNeeded"}]
    }))
    .expect("mutating config");
    let mut validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": format!("{ns}-ownership"), "labels": {RUN_LABEL: ns}},
        "webhooks": [{"name": "ownership.hallmark.dev", "clientConfig": {"url": format!("{}/validate", env.url), "caBundle": ca},
            "rules": rules, "namespaceSelector": selector, "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail", "timeoutSeconds": 5}]
    }))
    .expect("validating config");
    if conditions {
        let hook = &mut validating.webhooks.as_mut().expect("webhooks")[0];
        hook.match_conditions = Some(hallmark::webhook_config::ownership_conditions(&PolicySet { policies }));
        hook.rules = serde_json::from_value(json!([{"apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["UPDATE", "DELETE"], "resources": ["deployments", "deployments/scale"]}]))
        .expect("rules");
    }
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
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "hallmark-e2e-flux"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DECLARER}
        ]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin, ns).create(&PostParams::default(), &binding).await.expect("rolebinding");
    // Webhook configurations take a moment to be picked up by the apiserver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    (tx, state, ca_pem)
}

/// The label on every webhook configuration an e2e run registers (value: its namespace).
const RUN_LABEL: &str = "hallmark.dev/e2e-run";

/// Configurations an earlier run left behind (killed before its cleanup, or from before
/// the guard): they fail closed and would call this run's server on the same port with a
/// CA it does not have. Deleted by label, and by the names runs have always used.
async fn sweep_leftovers(admin: &Client) {
    let names = |list: Vec<String>| -> Vec<String> {
        list.into_iter().filter(|n| n.starts_with("hallmark-e2e-") || n.starts_with("hallmark-cel-")).collect()
    };
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let lp = kube::api::ListParams::default();
    let m = mutating.list(&lp).await.map(|l| l.items.into_iter().filter_map(|c| c.metadata.name).collect());
    let v = validating.list(&lp).await.map(|l| l.items.into_iter().filter_map(|c| c.metadata.name).collect());
    for name in names(m.unwrap_or_default()) {
        eprintln!("e2e: deleting leftover MutatingWebhookConfiguration {name}");
        let _ = mutating.delete(&name, &DeleteParams::default()).await;
    }
    for name in names(v.unwrap_or_default()) {
        eprintln!("e2e: deleting leftover ValidatingWebhookConfiguration {name}");
        let _ = validating.delete(&name, &DeleteParams::default()).await;
    }
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

/// Deletes a run's webhook configurations and namespace when dropped — after the
/// scenario, after a failed assertion (a panic unwinds through it) and after a time-out —
/// and stops its server. Drop cannot await: it cleans up on a thread of its own.
struct Registered {
    kubeconfig: String,
    url: String,
    ns: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Registered {
    fn new(env: &Env, ns: &str, stop: tokio::sync::oneshot::Sender<()>) -> Registered {
        Registered { kubeconfig: env.kubeconfig.clone(), url: env.url.clone(), ns: ns.to_owned(), stop: Some(stop) }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Unregister first: a configuration left behind fails closed.
        let env = Env { kubeconfig: self.kubeconfig.clone(), url: self.url.clone() };
        let ns = self.ns.clone();
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), cleanup(&env, &ns)).await })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("e2e: cleanup of {} did not finish: delete its webhook configurations by hand", self.ns);
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn annotation(d: &Deployment, key: &str) -> Option<String> {
    d.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

#[tokio::test]
async fn e2e_stamps_denies_and_keeps_noops_quiet() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-{}", std::process::id());
    let (stop, state, _) = start_and_register_with(&env, &ns, false).await;
    let _registered = Registered::new(&env, &ns, stop);
    let result = tokio::time::timeout(Duration::from_secs(180), async {
        scenario(&env, &ns, &state).await;
        apiserver_webhook_metrics(&env).await;
        gitops_scenario(&env, &ns).await;
    })
    .await;
    result.expect("scenario finished in time");
}

async fn scenario(env: &Env, ns: &str, state: &AppState) {
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
    // Other mutating webhooks of the cluster may change the object in the same write.
    let changed = history[0]["changed"].as_array().cloned().unwrap_or_default();
    assert!(changed.contains(&json!("spec.template.spec.containers[name=agent].image")), "{changed:?}");
    assert!(changed.iter().all(|p| !p.as_str().unwrap_or_default().contains("change-cause")), "{changed:?}");
    assert_eq!(history.len(), 2);

    // Break-glass: allowed, recorded.
    let oncall_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"memory": "256Mi"}}}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
    let glass = oncall.patch("agent", &params, &Patch::Strategic(&oncall_patch)).await.expect("break-glass allowed");
    assert_eq!(annotation(&glass, "hallmark.dev/channel").as_deref(), Some("break-glass"));

    // Re-applying the same manifest. Where nothing else in the cluster changes the object
    // (kube-apiserver stores no new resourceVersion), hallmark answers without a patch and
    // its stamp stays as it was. Where another mutating webhook changes it on every write,
    // the write is no no-op: hallmark stamps it, and records only what really changed,
    // never the re-applied fields.
    let mine = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent", "namespace": ns,
        "annotations": {"team.example.com/oncall": "dev"}}});
    let first = dev.patch("agent", &PatchParams::apply("dev-apply"), &Patch::Apply(&mine)).await.expect("apply");
    let (stamped, unchanged) = (mutate_count(state, "stamped"), mutate_count(state, "unchanged"));
    let second = dev.patch("agent", &PatchParams::apply("dev-apply"), &Patch::Apply(&mine)).await.expect("re-apply");
    let stamp = |d: &Deployment| {
        d.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with("hallmark.dev/"))
            .collect::<Vec<_>>()
    };
    if first.metadata.resource_version == second.metadata.resource_version {
        assert_eq!(mutate_count(state, "stamped"), stamped, "a no-op re-apply is not stamped");
        assert!(mutate_count(state, "unchanged") > unchanged, "a no-op re-apply is answered without a patch");
        assert_eq!(stamp(&first), stamp(&second), "the stamp of the first apply stays");
    } else {
        let history: Vec<Value> =
            serde_json::from_str(&annotation(&second, "hallmark.dev/history").unwrap_or_default()).expect("history");
        let changed = history[0]["changed"].as_array().cloned().unwrap_or_default();
        eprintln!("e2e: the re-apply stored a new resourceVersion (another mutating webhook?); changed: {changed:?}");
        assert!(!changed.is_empty(), "something changed, and the history says what");
        assert!(
            changed.iter().all(|p| !p.as_str().unwrap_or_default().contains("team.example.com/oncall")),
            "the re-applied annotation is no change: {changed:?}"
        );
    }

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

    declare_scenario(env, ns).await;
    blame_scenario(env, ns).await;
}

/// `kubectl hallmark blame`: the right write for a field changed two writes ago, and the
/// managedFields owner for a field the history does not reach.
async fn blame_scenario(env: &Env, ns: &str) {
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let mut git = deployment(ns, "registry.example.com/blame:1", "100m");
    git["metadata"]["name"] = json!("blame-app");
    flux.patch("blame-app", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&git))
        .await
        .expect("reconciler creates blame-app");
    let set = |patch: Value, manager: &str| {
        let params = PatchParams { field_manager: Some(manager.into()), ..PatchParams::default() };
        (params, patch)
    };
    // Two writes ago: the developer changes the image; then an unrelated label change.
    let (params, patch) = set(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "registry.example.com/blame:2"}]}}}}),
        "kubectl-set",
    );
    dev.patch("blame-app", &params, &Patch::Strategic(&patch)).await.expect("image change");
    let (params, patch) = set(json!({"metadata": {"labels": {"team": "shop"}}}), "kubectl-label");
    dev.patch("blame-app", &params, &Patch::Strategic(&patch)).await.expect("label change");

    let image = "spec.template.spec.containers[name=agent].image";
    let (code, out) = plugin(env, &["blame", "deploy/blame-app", image, "spec.replicas", "-n", ns, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let doc: Value = serde_json::from_str(&out).expect("blame -o json");
    let rows = doc["fields"].as_array().expect("fields");
    assert_eq!(rows[0]["field"], image);
    assert_eq!(rows[0]["source"], "history");
    assert_eq!(rows[0]["by"], "hallmark-e2e-dev");
    assert_eq!(rows[0]["manager"], "kubectl-set");
    // spec.replicas was set by the reconciler's create, which is still in the history
    // (3 writes, 5 kept): the create answers.
    assert_eq!(rows[1]["source"], "history");
    assert_eq!(rows[1]["operation"], "create");
    assert_eq!(rows[1]["by"], "hallmark-e2e-flux");

    // Five more writes push the create out of the history (5 kept): a field never changed
    // since is answered from managedFields.
    for i in 0..5 {
        let (params, patch) = set(json!({"metadata": {"labels": {"rev": format!("r{i}")}}}), "kubectl-label");
        dev.patch("blame-app", &params, &Patch::Strategic(&patch)).await.expect("label change");
    }
    let (code, out) = plugin(env, &["blame", "deploy/blame-app", "spec.replicas", "-n", ns, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let doc: Value = serde_json::from_str(&out).expect("blame -o json");
    assert_eq!(doc["fields"][0]["source"], "managedFields", "{doc}");
    assert_eq!(doc["fields"][0]["manager"], "kustomize-controller", "{doc}");
}

/// A CI service account applies `hallmark declare`'s output, made with GitHub Actions'
/// variables: the stored stamp carries them as `trust: declared`.
async fn declare_scenario(env: &Env, ns: &str) {
    let mut app = deployment(ns, "registry.example.com/declared:1", "100m");
    app["metadata"]["name"] = json!("declared-app");
    let github = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_ACTOR", "octo-lead"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY", "acme/declared"),
        ("GITHUB_RUN_ID", "4242"),
        ("GITHUB_REF_NAME", "main"),
        ("GITHUB_SHA", "0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a"),
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(["declare", "-o", "json"])
        .env_clear()
        .envs(github)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hallmark declare");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), app.to_string().as_bytes()).expect("stdin");
    let out = child.wait_with_output().expect("declare finished");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let declared: Value = serde_json::from_slice(&out.stdout).expect("declare prints JSON");

    let deployer: Api<Deployment> = Api::namespaced(client_as(env, Some((DECLARER, &[]))).await, ns);
    let stored = deployer
        .patch("declared-app", &PatchParams::apply("ci-deploy"), &Patch::Apply(&declared))
        .await
        .expect("the CI service account applies declare's output");
    assert_eq!(annotation(&stored, "hallmark.dev/trust").as_deref(), Some("declared"));
    assert_eq!(annotation(&stored, "hallmark.dev/applied-by").as_deref(), Some(DECLARER));
    assert_eq!(annotation(&stored, "hallmark.dev/commit").as_deref(), Some("0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a"));
    assert_eq!(annotation(&stored, "hallmark.dev/branch").as_deref(), Some("main"));
    assert_eq!(
        annotation(&stored, "hallmark.dev/pipeline").as_deref(),
        Some("https://github.com/acme/declared/actions/runs/4242")
    );
    assert_eq!(annotation(&stored, "hallmark.dev/committer").as_deref(), Some("octo-lead"));
}

#[tokio::test]
async fn e2e_scale_writes_and_namespace_deletion() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-scale-{}", std::process::id());
    let stop = start_and_register(&env, &ns).await;
    let _registered = Registered::new(&env, &ns, stop);
    let result = tokio::time::timeout(Duration::from_secs(180), scale_scenario(&env, &ns)).await;
    result.expect("scenario finished in time");
}

async fn scale_scenario(env: &Env, ns: &str) {
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let oncall: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-sre", &["hallmark-e2e-oncall"]))).await, ns);
    // Two Git-applied Deployments; only `sized` carries the label the replicas rule selects.
    for (name, labelled) in [("sized", true), ("free", false)] {
        let mut d = deployment(ns, "registry.example.com/agent:1.0", "100m");
        d["metadata"]["name"] = json!(name);
        if labelled {
            d["metadata"]["labels"]["replicas-from"] = json!("git");
        }
        flux.patch(name, &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&d))
            .await
            .expect("reconciler apply");
    }
    let scale = |n: i64| Patch::Merge(json!({"spec": {"replicas": n}}));

    // kubectl scale of Git-owned replicas by a developer: denied with the usual message,
    // although a validating webhook's Scale carries no managedFields and no labels.
    let err = dev.patch_scale("sized", &PatchParams::default(), &scale(5)).await.expect_err("denied");
    let text = err.to_string();
    assert!(text.contains("spec.replicas is owned by platform-e2e"), "{text}");
    assert!(text.contains("https://git.example.com/sre/cluster-config") && text.contains("Requested 1 -> 5"), "{text}");
    // The label rule matches only the labelled parent: `free` is managedFields: warn.
    dev.patch_scale("free", &PatchParams::default(), &scale(2)).await.expect("unlabelled parent: allowed (warned)");
    // The on-call SRE may: break-glass.
    oncall.patch_scale("sized", &PatchParams::default(), &scale(3)).await.expect("break-glass scale allowed");

    // Kubernetes' own controllers are never blocked: a developer may not delete the
    // Git-managed Deployment (deleteProtection), but deleting the namespace completes —
    // the namespace controller's collection DELETE goes through hallmark, which is
    // registered here without the shipped matchConditions.
    let err = dev.delete("sized", &DeleteParams::default()).await.expect_err("delete protection");
    assert!(err.to_string().contains("delete it there"), "{err}");
    let admin = client_as(env, None).await;
    let namespaces: Api<Namespace> = Api::all(admin);
    namespaces.delete(ns, &DeleteParams::default()).await.expect("delete namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match namespaces.get_opt(ns).await.expect("get namespace") {
            None => break,
            Some(n) => {
                let phase = n.status.and_then(|s| s.phase).unwrap_or_default();
                assert!(std::time::Instant::now() < deadline, "namespace {ns} still {phase} after 120 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// After the scenario (stamps, denials): kube-apiserver's own admission-webhook metrics
/// carry hallmark's webhook names the way the dashboard and the alerts of
/// manifests/monitoring/ query them (one kube-apiserver: with several, the one that served
/// the writes holds the series).
async fn apiserver_webhook_metrics(env: &Env) {
    let admin = client_as(env, None).await;
    let text = admin
        .request_text(hyper::Request::get("/metrics").body(Vec::new()).expect("request"))
        .await
        .expect("kube-apiserver /metrics");
    let series = |metric: &str, labels: &[&str]| {
        text.lines().any(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|want| l.contains(want)))
    };
    for webhook in ["stamp.hallmark.dev", "ownership.hallmark.dev"] {
        let name = format!("name=\"{webhook}\"");
        for metric in [
            "apiserver_admission_webhook_admission_duration_seconds_bucket",
            "apiserver_admission_webhook_request_total",
        ] {
            assert!(series(metric, &[&name]), "kube-apiserver exports no {metric}{{{name}}}");
        }
    }
    // hallmark's denial, as the dashboard's "Rejections by error type" panel reads it.
    assert!(
        series(
            "apiserver_admission_webhook_rejection_count",
            &["name=\"ownership.hallmark.dev\"", "error_type=\"no_error\""]
        ),
        "the denial is counted as a webhook rejection"
    );
}

/// Reviews `/validate` answered so far, whatever the outcome.
fn validate_calls(state: &AppState) -> u64 {
    answered(state, "validate", None)
}

/// Reviews `/mutate` answered with this outcome so far.
fn mutate_count(state: &AppState, outcome: &str) -> u64 {
    answered(state, "mutate", Some(outcome))
}

/// Reviews `/validate` answered with this outcome so far.
fn validate_count(state: &AppState, outcome: &str) -> u64 {
    answered(state, "validate", Some(outcome))
}

fn answered(state: &AppState, endpoint: &str, outcome: Option<&str>) -> u64 {
    let endpoint = format!("endpoint=\"{endpoint}\"");
    let outcome = outcome.map(|o| format!("outcome=\"{o}\""));
    state
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("hallmark_admission_requests_total{") && l.contains(&endpoint))
        .filter(|l| outcome.as_ref().is_none_or(|o| l.contains(o.as_str())))
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

#[tokio::test]
async fn e2e_writes_hallmark_cannot_judge_are_not_sent_to_validate() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    // Outside POLICY's `hallmark-e2e-*` namespaces: only managedFields and reconcilers matter.
    let ns = format!("hallmark-cel-{}", std::process::id());
    let (stop, state, _) = start_and_register_with(&env, &ns, true).await;
    let _registered = Registered::new(&env, &ns, stop);
    let result = tokio::time::timeout(Duration::from_secs(120), skipped_scenario(&env, &ns, &state)).await;
    result.expect("scenario finished in time");
}

async fn skipped_scenario(env: &Env, ns: &str, state: &AppState) {
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let before = validate_calls(state);

    // CREATEs are never sent (not in the rules).
    let git = deployment(ns, "registry.example.com/agent:1.0", "500m");
    flux.patch("agent", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&git))
        .await
        .expect("reconciler apply");
    let mut mine = deployment(ns, "registry.example.com/mine:1.0", "100m");
    mine["metadata"]["name"] = json!("mine");
    dev.patch("mine", &PatchParams::apply("dev-apply"), &Patch::Apply(&mine)).await.expect("dev creates");
    assert_eq!(validate_calls(state), before, "no CREATE reaches /validate");

    // An UPDATE of an object no reconciler manages, in a namespace no rule names: skipped.
    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": i}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-set".into()), ..PatchParams::default() };
    dev.patch("mine", &params, &Patch::Strategic(&image("registry.example.com/mine:1.1"))).await.expect("update");
    assert_eq!(validate_calls(state), before, "a write to an unowned object is decided in kube-apiserver");

    // The reconciler's own re-apply: skipped too.
    let next = deployment(ns, "registry.example.com/agent:1.1", "500m");
    flux.patch("agent", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&next))
        .await
        .expect("reconciler re-apply");
    assert_eq!(validate_calls(state), before, "the reconciler's writes are not sent");

    // dev changes a field Flux owns: sent, and warned about (managedFields: warn).
    let cpu = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "750m"}}}]}}}});
    dev.patch("agent", &params, &Patch::Strategic(&cpu)).await.expect("warned, allowed");
    // At least once: kube-apiserver runs admission again each time it retries a patch
    // after a conflict (kube-controller-manager writes the Deployment's status meanwhile).
    assert!(validate_calls(state) > before, "a write to a Flux-managed object is sent");

    // What --watch-policies does when the policies change, on the real API: the strategic
    // merge patch replaces exactly that webhook's matchConditions and nothing else.
    use hallmark::server::webhook_sync::{Outcome, reconcile};
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client_as(env, None).await);
    let name = format!("{ns}-ownership");
    let old = api.get(&name).await.expect("the configuration");
    let wanted = hallmark::webhook_config::ownership_conditions(&PolicySet::default());
    assert_eq!(reconcile(&api, &name, &wanted).await.expect("patched"), Outcome::Patched);
    let new = api.get(&name).await.expect("the configuration");
    let (old, new) = (&old.webhooks.expect("webhooks")[0], &new.webhooks.expect("webhooks")[0]);
    assert_eq!(new.match_conditions.as_ref(), Some(&wanted), "replaced as a whole, in order");
    assert_eq!(
        (&new.client_config, &new.rules, &new.failure_policy),
        (&old.client_config, &old.rules, &old.failure_policy)
    );
    assert_eq!(reconcile(&api, &name, &wanted).await.expect("read"), Outcome::Current);
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

/// The verdicts of issue 18, as a user meets them: no false deny on `kubectl scale` or on
/// a finalizer during a deletion, no way around Git ownership through managedFields, and
/// Flux's opt-out markers honoured.
#[tokio::test]
async fn e2e_verdicts_people_can_trust() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-verdicts-{}", std::process::id());
    let (stop, state, _) = start_and_register_with(&env, &ns, false).await;
    let _registered = Registered::new(&env, &ns, stop);
    let result = tokio::time::timeout(Duration::from_secs(180), verdicts_scenario(&env, &ns, &state)).await;
    result.expect("scenario finished in time");
}

async fn verdicts_scenario(env: &Env, ns: &str, state: &AppState) {
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let operator: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-operator", &["hallmark-e2e-devs"]))).await, ns);
    let apply = PatchParams::apply("kustomize-controller").force();
    let named = |name: &str, image: &str| {
        let mut d = deployment(ns, image, "100m");
        d["metadata"]["name"] = json!(name);
        d["metadata"]["labels"]["cost-center"] = json!("42");
        d
    };

    // 1. `kubectl scale` of a Deployment nobody's Git manages, under a label rule that owns
    // a label: allowed, like the same change through `kubectl patch`.
    dev.patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&named("web", "registry.example.com/web:1")))
        .await
        .expect("dev creates web");
    dev.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .expect("kubectl scale of an unmanaged Deployment is allowed");
    let params = PatchParams { field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
    dev.patch("web", &params, &Patch::Merge(json!({"spec": {"replicas": 4}}))).await.expect("kubectl patch allowed");

    // 2. Git ownership cannot be erased through managedFields (denied also under
    // `managedFields: warn`: without them hallmark would not even warn).
    flux.patch("agent", &apply, &Patch::Apply(&named("agent", "registry.example.com/agent:1")))
        .await
        .expect("Flux applies agent");
    let reset = json!({"metadata": {"managedFields": [{}]}});
    let text = dev.patch("agent", &params, &Patch::Merge(&reset)).await.expect_err("reset denied").to_string();
    assert!(
        text.contains("metadata.managedFields: this write takes away field manager kustomize-controller's ownership"),
        "{text}"
    );
    let live = dev.get("agent").await.expect("get agent");
    let managers: Vec<String> =
        live.metadata.managed_fields.iter().flatten().filter_map(|e| e.manager.clone()).collect();
    assert!(managers.iter().any(|m| m == "kustomize-controller"), "Flux's entry is still there: {managers:?}");
    let index = managers.iter().position(|m| m == "kustomize-controller").unwrap_or_default();
    let remove: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": format!("/metadata/managedFields/{index}")}]))
            .expect("json patch");
    let text = dev.patch("agent", &params, &Patch::<()>::Json(remove)).await.expect_err("removal denied").to_string();
    assert!(text.contains("field manager kustomize-controller"), "{text}");
    // A change to a Git-owned field is still judged: warned (managedFields: warn), allowed.
    let warned = validate_count(state, "warned");
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "registry.example.com/agent:2"}]}}}});
    dev.patch("agent", &params, &Patch::Strategic(&image)).await.expect("warned, allowed");
    assert!(validate_count(state, "warned") > warned, "the image Flux owns is still Git-owned");

    // 3. A finalizer Git applied leaves freely once the object is being deleted.
    let mut guarded = named("guarded", "registry.example.com/agent:1");
    guarded["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    flux.patch("guarded", &apply, &Patch::Apply(&guarded)).await.expect("Flux applies guarded");
    let drop_finalizers = json!({"metadata": {"finalizers": null}});
    let text = operator
        .patch("guarded", &params, &Patch::Merge(&drop_finalizers))
        .await
        .expect_err("not being deleted: a Git-owned field")
        .to_string();
    assert!(text.contains("metadata.finalizers"), "{text}");
    flux.delete("guarded", &DeleteParams::default()).await.expect("Flux deletes guarded");
    let terminating = operator.get("guarded").await.expect("still there, terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some(), "terminating");
    operator
        .patch("guarded", &params, &Patch::Merge(&drop_finalizers))
        .await
        .expect("the operator removes its finalizer");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while operator.get_opt("guarded").await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "guarded was never deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. Flux's opt-outs: an object applied with `ssa: IfNotPresent` from Git belongs to
    // whoever changes it next (cert-manager, an operator): no warning for what Flux
    // applied, while an explicit rule still denies and says Flux will not revert it.
    let mut seeded = named("seeded", "registry.example.com/agent:1");
    seeded["metadata"]["annotations"] = json!({"kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"});
    flux.patch("seeded", &apply, &Patch::Apply(&seeded)).await.expect("Flux creates seeded");
    let (warned, allowed) = (validate_count(state, "warned"), validate_count(state, "allowed"));
    operator.patch("seeded", &params, &Patch::Strategic(&image)).await.expect("allowed");
    assert_eq!(validate_count(state, "warned"), warned, "no warning: Flux will not revert it");
    assert!(validate_count(state, "allowed") > allowed);
    let cpu = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "750m"}}}]}}}});
    let text = operator.patch("seeded", &params, &Patch::Strategic(&cpu)).await.expect_err("rule").to_string();
    assert!(text.contains("Flux will not revert it (kustomize.toolkit.fluxcd.io/ssa: IfNotPresent)"), "{text}");
    // Another writer may not opt an object out of Flux.
    let opt_out = json!({"metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}}});
    let text = dev.patch("agent", &params, &Patch::Merge(&opt_out)).await.expect_err("opting out").to_string();
    assert!(text.contains("only Git may opt an object out of reconciliation"), "{text}");
}

/// The audit trail (docs/audit-trail.md) on a real kube-apiserver and
/// kube-controller-manager with Flux's and Argo CD's CRDs installed (no controllers: their
/// writes are made with their identities and field managers, their status set by hand).
/// Skipped without the CRDs. Uses its own namespace and webhook configurations, deleted
/// at the end, whatever happens.
#[tokio::test]
async fn e2e_audit_trail() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-trail-{}", std::process::id());
    let admin = client_as(&env, None).await;
    for group in ["kustomize.toolkit.fluxcd.io", "source.toolkit.fluxcd.io", "argoproj.io"] {
        if kube::discovery::group(&admin, group).await.is_err() {
            eprintln!("SKIPPED: e2e_audit_trail needs the Flux and Argo CD CRDs ({group} is not served)");
            return;
        }
    }
    let (stop, state, _) = start_and_register_with(&env, &ns, false).await;
    let _registered = Registered::new(&env, &ns, stop);
    let result = tokio::time::timeout(Duration::from_secs(240), audit_trail_scenario(&env, &ns, &state)).await;
    result.expect("scenario finished in time");
}

async fn audit_trail_scenario(env: &Env, ns: &str, state: &Arc<AppState>) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let admin = client_as(env, None).await;
    // The webhook configurations of this file say sideEffects None; the deployed ones say
    // NoneOnDryRun: Events are never sent for a dry run either way (tested below).
    let sha = "0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a";
    let argo_sha = "9a1f4b5c6d7e8f9a0b1c2d3e4f5a0f2b6b7d3c8e";
    let dynamic = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let create = |ar: ApiResource, namespace: &str, body: Value| {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), namespace, &ar);
        async move {
            let obj: DynamicObject = serde_json::from_value(body).expect("object");
            let name = obj.metadata.name.clone().expect("name");
            let created = api.create(&PostParams::default(), &obj).await.expect("create");
            let mut status = serde_json::to_value(&obj).expect("json");
            status["metadata"]["resourceVersion"] = json!(created.metadata.resource_version);
            let status: DynamicObject = serde_json::from_value(status).expect("status object");
            api.replace_status(&name, &PostParams::default(), &status).await.expect("status set by hand");
        }
    };
    // Flux: a GitRepository and a Kustomization in the middle of a reconcile.
    create(dynamic("source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories"), ns, json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "fleet", "namespace": ns},
        "spec": {"url": "https://github.com/acme/fleet", "interval": "1m", "ref": {"branch": "main"}},
        "status": {"artifact": {"revision": format!("main@sha1:{sha}"), "path": "x", "url": "http://x", "digest": "sha256:00", "lastUpdateTime": "2026-11-27T10:00:00Z"}}})).await;
    create(dynamic("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations"), ns, json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": ns},
        "spec": {"interval": "5m", "prune": true, "path": "./apps", "sourceRef": {"kind": "GitRepository", "name": "fleet"}},
        "status": {"lastAttemptedRevision": format!("main@sha1:{sha}")}})).await;
    // Argo CD: an Application whose sync is running.
    create(
        dynamic("argoproj.io", "v1alpha1", "Application", "applications"),
        ns,
        json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "guestbook", "namespace": ns},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": ns},
                 "source": {"repoURL": "https://github.com/acme/apps", "targetRevision": "main", "path": "guestbook"}},
        "status": {"sync": {"status": "OutOfSync", "revision": argo_sha},
                   "operationState": {"phase": "Running", "startedAt": "2026-11-27T10:00:00Z",
                       "operation": {"sync": {"revision": "main"}}, "syncResult": {"revision": argo_sha}}}}),
    )
    .await;
    // The server under test reads them through its watch caches (kube-rs reflectors).
    let cached = std::time::Instant::now() + Duration::from_secs(30);
    while !["kustomizations", "gitrepositories", "applications"]
        .iter()
        .all(|k| state.metrics.encode().contains(&format!("hallmark_gitops_sources{{kind=\"{k}\"}} 1")))
    {
        assert!(std::time::Instant::now() < cached, "the GitOps kinds were cached: {}", state.metrics.encode());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Flux write and an Argo CD write are stamped with the commit and repository of
    // their Kustomization / Application (the caches may take a moment to receive the
    // objects created above).
    let argocd_sa = "system:serviceaccount:argocd:argocd-application-controller";
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "argocd-application-controller", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "argocd-application-controller", "namespace": "argocd"}]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("rolebinding");
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let argo: Api<Deployment> = Api::namespaced(
        client_as(env, Some((argocd_sa, &["system:serviceaccounts", "system:serviceaccounts:argocd"]))).await,
        ns,
    );
    let mut flux_app = deployment(ns, "registry.example.com/agent:1.0", "100m");
    flux_app["metadata"]["name"] = json!("flux-app");
    flux_app["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("apps");
    flux_app["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ns);
    let mut argo_app = deployment(ns, "registry.example.com/agent:1.0", "100m");
    argo_app["metadata"]["name"] = json!("argo-app");
    argo_app["metadata"]["annotations"] =
        json!({"argocd.argoproj.io/tracking-id": format!("{ns}_guestbook:apps/Deployment:{ns}/argo-app")});
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut replicas = 1;
    loop {
        replicas += 1;
        flux_app["spec"]["replicas"] = json!(replicas);
        argo_app["spec"]["replicas"] = json!(replicas);
        let f = flux
            .patch("flux-app", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&flux_app))
            .await
            .expect("Flux applies");
        let a = argo
            .patch("argo-app", &PatchParams::apply("argocd-controller").force(), &Patch::Apply(&argo_app))
            .await
            .expect("Argo CD applies");
        let stamped = |d: &Deployment| (annotation(d, "hallmark.dev/commit"), annotation(d, "hallmark.dev/repository"));
        let want_flux = (Some(sha.to_owned()), Some("https://github.com/acme/fleet".to_owned()));
        let want_argo = (Some(argo_sha.to_owned()), Some("https://github.com/acme/apps".to_owned()));
        if stamped(&f) == want_flux && stamped(&a) == want_argo {
            assert_eq!(annotation(&f, "hallmark.dev/channel").as_deref(), Some("gitops"));
            assert_eq!(annotation(&f, "hallmark.dev/trust").as_deref(), Some("source"));
            assert_eq!(annotation(&a, "hallmark.dev/trust").as_deref(), Some("source"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writes carry their sources: Flux {:?}, Argo CD {:?}",
            stamped(&f),
            stamped(&a)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Two pushes: kubectl rollout history tells who made each revision.
    let ci: Api<Deployment> = Api::namespaced(
        client_with_extras(
            env,
            Some(("hallmark-e2e-ci", &["hallmark-e2e-devs"])),
            &[("hallmark.dev/branch", "main"), ("hallmark.dev/commit", sha)],
        )
        .await,
        ns,
    );
    let dev: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-dev", &["hallmark-e2e-devs"]))).await, ns);
    let mut web = deployment(ns, "registry.example.com/web:1", "100m");
    web["metadata"]["name"] = json!("web");
    ci.patch("web", &PatchParams::apply("ci-apply"), &Patch::Apply(&web)).await.expect("first push");
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "registry.example.com/web:2"}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-set".into()), ..PatchParams::default() };
    dev.patch("web", &params, &Patch::Strategic(&image)).await.expect("second push");
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(admin.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let causes = loop {
        let list = rs.list(&Default::default()).await.expect("replicasets");
        let mut causes: Vec<(String, String)> = list
            .items
            .iter()
            // The ReplicaSets of `web` (the Flux and Argo CD writes above made their own).
            .filter(|r| r.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")))
            .filter_map(|r| {
                let a = r.metadata.annotations.as_ref()?;
                Some((
                    a.get("deployment.kubernetes.io/revision")?.clone(),
                    a.get("kubernetes.io/change-cause")?.clone(),
                ))
            })
            .collect();
        causes.sort();
        if causes.len() >= 2 {
            break causes;
        }
        assert!(std::time::Instant::now() < deadline, "kube-controller-manager made two ReplicaSets: {causes:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(causes[0], ("1".to_owned(), "hallmark-e2e-ci (push): main@0f2b6b7d3c8e".to_owned()));
    assert_eq!(causes[1], ("2".to_owned(), "hallmark-e2e-dev (push)".to_owned()));

    // A denied write and a break-glass write leave Events (sent by the server's queue).
    let metrics = state.metrics.events.clone();
    let (sink, queue) = hallmark::server::events::EventSink::new(metrics.clone(), 64);
    state.set_events(sink);
    tokio::spawn(hallmark::server::events::send_all(admin.clone(), queue, metrics));
    let flux: Api<Deployment> = Api::namespaced(client_as(env, Some(("hallmark-e2e-flux", &[]))).await, ns);
    let git = deployment(ns, "registry.example.com/agent:1.0", "500m");
    flux.patch("agent", &PatchParams::apply("kustomize-controller").force(), &Patch::Apply(&git))
        .await
        .expect("reconciler");
    let cpu = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "750m"}}}]}}}});
    let params = PatchParams { field_manager: Some("kubectl-patch".into()), ..PatchParams::default() };
    dev.patch("agent", &params, &Patch::Strategic(&cpu)).await.expect_err("denied");
    let oncall: Api<Deployment> =
        Api::namespaced(client_as(env, Some(("hallmark-e2e-sre", &["hallmark-e2e-oncall"]))).await, ns);
    let memory = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"memory": "256Mi"}}}]}}}});
    oncall.patch("agent", &params, &Patch::Strategic(&memory)).await.expect("break-glass");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("hallmark"))
            .filter_map(|e| e.reason.clone())
            .collect();
        if reasons.contains(&"OwnershipDenied".to_owned()) && reasons.contains(&"BreakGlass".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Events recorded: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // drift lists the break-glass change with who, and --patch holds the live value.
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write policy");
    let policy = policy.display().to_string();
    let (code, out) = plugin(env, &["drift", "deploy/agent", "-n", ns, "--policy", &policy]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("resources.limits.memory") && out.contains("hallmark-e2e-sre") && out.contains("break-glass"),
        "{out}"
    );
    let (code, out) = plugin(env, &["drift", "deploy/agent", "-n", ns, "--policy", &policy, "--patch"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("memory: 256Mi") && out.contains("name: agent"), "{out}");
}

/// What the issue "install, learn and operate" is checked by on a real kube-apiserver: an
/// invalid OwnershipPolicy is refused by `kubectl apply` with hallmark's reason (the
/// policy webhook as `hallmark webhook-config --url` prints it, limited by an
/// objectSelector to this run's policies), a valid one is accepted, and a user bound only
/// to the default `view` ClusterRole can list policies once hallmark's aggregated
/// `hallmark-view` role exists. The CRD is created if the cluster has none (and then
/// removed); every other object this creates is its own and removed at the end.
#[tokio::test]
async fn e2e_an_invalid_policy_is_refused_at_apply_and_view_lists_policies() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-p{}", std::process::id());
    let (stop, _, ca_pem) = start_and_register_with(&env, &ns, false).await;
    let admin = client_as(&env, None).await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd_name = "ownershippolicies.hallmark.dev";
    let created_crd = match crds.get_opt(crd_name).await.expect("read CRDs") {
        Some(_) => false,
        None => {
            use kube::CustomResourceExt as _;
            crds.create(&PostParams::default(), &hallmark::policy::OwnershipPolicy::crd())
                .await
                .expect("create the CRD");
            true
        }
    };
    // In a task of its own, so that a failed assertion still gets to the cleanup below.
    let scenario = {
        let (env, ns, admin) = (env.clone(), ns.clone(), admin.clone());
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(180), policy_scenario(&env, &ns, &admin, ca_pem)).await
        })
    };
    let result = scenario.await;
    // Cleanup, whatever happened.
    let _ = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .delete(&format!("{ns}-policies"), &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone()).delete(&format!("{ns}-view"), &DeleteParams::default()).await;
    let _ =
        Api::<ClusterRole>::all(admin.clone()).delete(&format!("{ns}-hallmark-view"), &DeleteParams::default()).await;
    let policies: Api<hallmark::policy::OwnershipPolicy> = Api::all(admin.clone());
    let _ = policies.delete(&format!("{ns}-good"), &DeleteParams::default()).await;
    let _ = policies.delete(&format!("{ns}-bad"), &DeleteParams::default()).await;
    if created_crd {
        let _ = crds.delete(crd_name, &DeleteParams::default()).await;
    }
    cleanup(&env, &ns).await;
    let _ = stop.send(());
    match result {
        Ok(finished) => finished.expect("policy scenario finished in time"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn policy_scenario(env: &Env, ns: &str, admin: &Client, ca_pem: String) {
    // The CRD serves once Established.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let established = |c: &CustomResourceDefinition| {
        c.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Established" && c.status == "True")
    };
    let start = std::time::Instant::now();
    while !crds.get("ownershippolicies.hallmark.dev").await.is_ok_and(|c| established(&c)) {
        assert!(start.elapsed() < Duration::from_secs(30), "the CRD became Established");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The policy webhook as `hallmark webhook-config --url URL --ca-file CA` prints it, for
    // this run's policies only.
    let target = hallmark::webhook_config::Target {
        name: ns.to_owned(),
        url: Some(env.url.clone()),
        ca_bundle: ca_pem.into_bytes(),
        ..hallmark::webhook_config::Target::default()
    };
    let mut config = hallmark::webhook_config::policies(&target);
    for w in config.webhooks.iter_mut().flatten() {
        w.object_selector =
            Some(serde_json::from_value(json!({"matchLabels": {"hallmark-e2e": ns}})).expect("selector"));
    }
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &config)
        .await
        .expect("register the policy webhook");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = |name: &str, spec: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata:\n  name: {name}\n  labels: {{hallmark-e2e: {ns}}}\nspec:\n{spec}"
            ),
        )
        .expect("write");
        path
    };
    let bad = manifest(
        &format!("{ns}-bad"),
        "  owner: {name: platform}\n  rules:\n  - match: {kinds: [Deployment]}\n    fields: [spec.replicas]\n    action: deny\n",
    );
    let good = manifest(
        &format!("{ns}-good"),
        "  owner: {name: platform, reconcilers: {fieldManagers: [kustomize-controller]}}\n  rules:\n  - match: {kinds: [Deployment], namespaces: [nowhere-e2e]}\n    fields: [spec.replicas]\n    action: warn\n",
    );
    // --validate=false: kubectl's client-side schema check downloads the OpenAPI documents
    // first, which a bare control plane can fail to serve; the refusal under test comes
    // from admission on the server either way.
    // Off the test's thread: the webhook this test serves must answer while kubectl waits.
    let kubectl = |file: std::path::PathBuf| {
        let kubeconfig = env.kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("kubectl")
                .args(["--kubeconfig", &kubeconfig, "apply", "--validate=false", "-f"])
                .arg(file)
                .output()
                .expect("run kubectl (on PATH for the e2e tests)");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.code().unwrap_or(-1), text)
        })
    };
    let (code, text) = kubectl(bad).await.expect("kubectl");
    assert_ne!(code, 0, "an invalid policy is refused: {text}");
    let want = format!(
        "admission webhook \"policies.hallmark.dev\" denied the request: OwnershipPolicy \"{ns}-bad\" is invalid: spec.owner.reconcilers: rules need reconcilers"
    );
    assert!(text.contains(&want), "kubectl apply says why:\n{text}");
    let (code, text) = kubectl(good).await.expect("kubectl");
    assert_eq!(code, 0, "a valid policy is created: {text}");

    // view, through the aggregated role: before it exists, Forbidden; then allowed.
    let viewer = client_as(env, Some(("hallmark-e2e-viewer", &[]))).await;
    let as_viewer: Api<hallmark::policy::OwnershipPolicy> = Api::all(viewer);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-view")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "hallmark-e2e-viewer"}]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &binding).await.expect("bind view");
    // The base's hallmark-view, under this run's name (the aggregation selects the label).
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/rbac-aggregated.yaml"))
        .expect("rbac-aggregated.yaml");
    let first = serde_yaml::Deserializer::from_str(&base).next().expect("a document");
    let mut role: ClusterRole = serde::Deserialize::deserialize(first).expect("ClusterRole");
    assert_eq!(role.metadata.name.as_deref(), Some("hallmark-view"));
    role.metadata.name = Some(format!("{ns}-hallmark-view"));
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.expect("hallmark-view");
    let start = std::time::Instant::now();
    loop {
        match as_viewer.list(&Default::default()).await {
            Ok(list) => {
                assert!(list.items.iter().any(|p| p.metadata.name.as_deref() == Some(&format!("{ns}-good"))));
                break;
            }
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(60), "view never listed OwnershipPolicies: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
