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
    let state = Arc::new(AppState::new(Engine::new(Stamper::new(settings), OnError::Allow), PolicySet::default()));
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
    let ca_pem = bundle.ca_pem.clone();
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
    let mut validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": format!("{ns}-ownership")},
        "webhooks": [{"name": "ownership.hallmark.dev", "clientConfig": {"url": format!("{}/validate", env.url), "caBundle": ca},
            "rules": rules, "namespaceSelector": selector, "sideEffects": "None", "admissionReviewVersions": ["v1"],
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
    let _serial = SERIAL.lock().await;
    let ns = format!("hallmark-e2e-{}", std::process::id());
    let stop = start_and_register(&env, &ns).await;
    let result = tokio::time::timeout(Duration::from_secs(180), async {
        scenario(&env, &ns).await;
        apiserver_webhook_metrics(&env).await;
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
    let result = tokio::time::timeout(Duration::from_secs(180), scale_scenario(&env, &ns)).await;
    cleanup(&env, &ns).await;
    let _ = stop.send(());
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
    state
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("hallmark_admission_requests_total{") && l.contains("endpoint=\"validate\""))
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
    let result = tokio::time::timeout(Duration::from_secs(120), skipped_scenario(&env, &ns, &state)).await;
    cleanup(&env, &ns).await;
    let _ = stop.send(());
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
    assert_eq!(validate_calls(state), before + 1, "a write to a Flux-managed object is sent");

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
