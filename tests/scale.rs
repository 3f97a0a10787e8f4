//! `/validate` on `scale` writes as kube-apiserver really sends them to a validating
//! webhook: a `Scale` with no managedFields, labels or annotations
//! (`tests/fixtures/validating/deploy-platform-agent-scale-dev-flux-owned-replicas.validating.json`).
//! hallmark reads the parent Deployment's metadata from a local stand-in for the
//! Kubernetes API and judges `spec.replicas` with the parent's owners and labels.

mod common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::policy::load::parse_documents;
use hallmark::server::parents::ParentLookup;
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn label_policy(app: &str) -> String {
    label_policy_owning(app, "[spec.replicas]")
}

/// A rule selecting Deployments by label that owns `fields` (a YAML flow list).
fn label_policy_owning(app: &str, fields: &str) -> String {
    format!(
        r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: replicas
spec:
  owner:
    name: sizing
    reconcilers:
      fieldManagers: ["kustomize-controller"]
  managedFields: ignore
  rules:
    - match:
        groups: ["apps"]
        kinds: ["Deployment"]
        labelSelector: {{matchLabels: {{app: {app}}}}}
      fields: {fields}
      action: deny
"#
    )
}

/// What the stand-in API server was asked: (path, Accept header).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone)]
struct Api {
    seen: Seen,
    /// Status to answer with; 200 serves the parent.
    status: StatusCode,
    delay: Duration,
}

async fn get_deployment(
    State(api): State<Api>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    api.seen.lock().expect("lock").push((format!("{ns}/{name}"), accept));
    tokio::time::sleep(api.delay).await;
    if api.status != StatusCode::OK {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": api.status.as_u16(),
            "reason": "Forbidden", "message": format!("deployments.apps \"{name}\" is forbidden: User \"system:serviceaccount:hallmark-system:hallmark\" cannot get resource \"deployments\"")});
        return (api.status, axum::Json(status)).into_response();
    }
    let stored = fixture(SCALE_PARENT)["request"]["oldObject"].clone();
    axum::Json(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": stored["metadata"]}))
        .into_response()
}

async fn api(status: StatusCode, delay: Duration) -> (kube::Client, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/apis/apps/v1/namespaces/{ns}/deployments/{name}", axum::routing::get(get_deployment))
        .with_state(Api { seen: seen.clone(), status, delay });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    (kube::Client::try_from(config).expect("client"), seen, task)
}

async fn server(policy: &str, client: Option<kube::Client>, timeout: Duration) -> TestServer {
    let policies = PolicySet { policies: parse_documents(policy, "policy.yaml").expect("valid policy") };
    let server = TestServer::start_with(Settings::default(), policies, ServeOptions::default()).await;
    if let Some(client) = client {
        server.state.set_parent_lookup(ParentLookup::new(client, timeout));
    }
    server
}

fn as_user(mut review: Value, username: &str, groups: &[&str]) -> Value {
    review["request"]["userInfo"] = json!({"username": username, "groups": groups});
    review
}

#[tokio::test]
async fn a_developers_scale_of_git_owned_replicas_is_denied_with_the_usual_message() {
    let (client, seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
    let server = server(PLATFORM_MANAGED_FIELDS_DENY, Some(client), Duration::from_secs(2)).await;
    let mut c = server.client().await;
    let review = fixture(SCALE_VALIDATING);
    assert!(review["request"]["oldObject"]["metadata"].get("managedFields").is_none(), "the validating view");
    let reply = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await;
    let response = reply.response();
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "spec.replicas is owned by platform-config (field manager kustomize-controller, Git: \
         https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); change it there. \
         Requested 2 -> 5."
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one read of the parent");
    assert_eq!(seen[0].0, "team-a/platform-agent");
    assert!(seen[0].1.contains("as=PartialObjectMetadata"), "metadata only: {}", seen[0].1);
    server.stop().await;
    api_task.abort();
}

#[tokio::test]
async fn an_on_call_sres_scale_is_allowed_and_audited_as_break_glass() {
    let (client, _seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
    let server = server(PLATFORM_MANAGED_FIELDS_DENY, Some(client), Duration::from_secs(2)).await;
    let mut c = server.client().await;
    let review = as_user(fixture(SCALE_VALIDATING), "sre-alice", &["sre-oncall", "system:authenticated"]);
    let response = c.post("/validate", body(&review)).await.response();
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = warnings_of(&response);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("break-glass: spec.replicas is owned by platform-config (field manager kustomize-controller"),
        "{}",
        warnings[0]
    );
    assert_eq!(response["auditAnnotations"]["break-glass"], "spec.replicas");
    assert_eq!(response["auditAnnotations"]["break-glass-user"], "sre-alice");
    server.stop().await;
    api_task.abort();
}

#[tokio::test]
async fn a_label_rule_matches_scale_writes_only_for_labelled_parents() {
    for (app, denied) in [("agent", true), ("web", false)] {
        let (client, _seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
        let server = server(&label_policy(app), Some(client), Duration::from_secs(2)).await;
        let mut c = server.client().await;
        let response = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await.response();
        assert_eq!(response["allowed"], !denied, "app={app}: {response}");
        if denied {
            assert_eq!(
                response["status"]["message"],
                "spec.replicas is owned by sizing (Flux Kustomization flux-system/infra); change it there. Requested 2 -> 5."
            );
        } else {
            assert!(response.get("warnings").is_none(), "a parent the selector does not select: {response}");
        }
        server.stop().await;
        api_task.abort();
    }
}

/// A `kubectl scale` changes `spec.replicas` only. The old view rebuilt from the parent
/// carries the parent's labels and annotations and the new Scale does not: that difference
/// is not a change of the write (it was once denied as `metadata.labels ... -> (unset)`).
#[tokio::test]
async fn a_scale_changes_nothing_but_replicas_whatever_the_rule_owns() {
    let fields = r#"["metadata.labels[\"cost-center\"]", metadata.labels, metadata.annotations, spec.template]"#;
    let (client, seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
    let server = server(&label_policy_owning("agent", fields), Some(client), Duration::from_secs(2)).await;
    let mut c = server.client().await;
    let response = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await.response();
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
    assert_eq!(seen.lock().expect("lock").len(), 1, "the parent was read: the rule selects by label");
    server.stop().await;
    api_task.abort();
}

#[tokio::test]
async fn system_writers_and_reconcilers_scale_without_a_read() {
    let (client, seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
    let server = server(PLATFORM_MANAGED_FIELDS_DENY, Some(client), Duration::from_secs(2)).await;
    let mut c = server.client().await;
    for (user, groups) in [
        ("system:serviceaccount:kube-system:horizontal-pod-autoscaler", vec!["system:serviceaccounts"]),
        ("system:kube-controller-manager", vec![]),
        ("system:serviceaccount:flux-system:kustomize-controller", vec!["system:serviceaccounts"]),
    ] {
        let response = c.post("/validate", body(&as_user(fixture(SCALE_VALIDATING), user, &groups))).await.response();
        assert_eq!(response["allowed"], true, "{user}: {response}");
        assert!(response.get("warnings").is_none(), "{user}: {response}");
    }
    assert!(seen.lock().expect("lock").is_empty(), "no parent read for writers no policy judges");
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_system_writes_total{endpoint=\"validate\"} 2"), "{metrics}");
    server.stop().await;
    api_task.abort();
}

#[tokio::test]
async fn a_parent_that_cannot_be_read_is_answered_as_on_error_says() {
    // Forbidden by RBAC, too slow, and no client at all: allowed with a warning that says
    // why (the default --on-error allow), counted as an error.
    let cases: Vec<(Option<(StatusCode, Duration)>, &str)> = vec![
        (Some((StatusCode::FORBIDDEN, Duration::ZERO)), "cannot get resource \"deployments\""),
        (Some((StatusCode::OK, Duration::from_secs(3))), "was not read within 200 ms"),
        (None, "hallmark has no Kubernetes client"),
    ];
    for (api_answer, why) in cases {
        let (client, task) = match api_answer {
            Some((status, delay)) => {
                let (client, _seen, task) = api(status, delay).await;
                (Some(client), Some(task))
            }
            None => (None, None),
        };
        let server = server(PLATFORM_MANAGED_FIELDS_DENY, client, Duration::from_millis(200)).await;
        let mut c = server.client().await;
        let response = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await.response();
        assert_eq!(response["allowed"], true, "{response}");
        let warnings = warnings_of(&response);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("hallmark could not check Git field ownership: "), "{}", warnings[0]);
        assert!(warnings[0].contains(why), "{why}: {}", warnings[0]);
        let metrics = server.metrics().await;
        assert!(metrics.contains("hallmark_errors_total{endpoint=\"validate\",kind=\"parent-lookup\"} 1"), "{metrics}");
        server.stop().await;
        if let Some(t) = task {
            t.abort();
        }
    }
}

#[tokio::test]
async fn the_mutating_view_of_a_scale_needs_no_read_for_managed_fields() {
    // A mutating webhook's Scale carries the translated managedFields: judged as it is.
    let (client, seen, api_task) = api(StatusCode::OK, Duration::ZERO).await;
    let server = server(PLATFORM_MANAGED_FIELDS_DENY, Some(client), Duration::from_secs(2)).await;
    let mut c = server.client().await;
    let name = "validating/deploy-platform-agent-scale-dev-flux-owned-replicas.mutating.json";
    let response = c.post("/validate", fixture_bytes(name)).await.response();
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("spec.replicas is owned by platform-config")
    );
    assert!(seen.lock().expect("lock").is_empty());
    server.stop().await;
    api_task.abort();
}

fn warnings_of(response: &Value) -> Vec<String> {
    serde_json::from_value(response.get("warnings").cloned().unwrap_or(json!([]))).expect("warnings are strings")
}
