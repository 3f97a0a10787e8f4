//! `--watch-policies` checks the field paths of rules that name custom resources against
//! the CRDs of the cluster (a local stand-in for the Kubernetes API): a path the CRD's
//! schema lacks rejects the policy (`Ready=False`, with a did-you-mean), a kind no CRD
//! names or CRDs hallmark may not read are said in the `Ready` message.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch};
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn policy(name: &str, kind: &str, field: &str) -> Value {
    json!({
        "apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicy",
        "metadata": {"name": name, "resourceVersion": "5", "generation": 1, "uid": format!("uid-{name}")},
        "spec": {
            "owner": {"name": "platform", "reconcilers": {"fieldManagers": ["kustomize-controller"]}},
            "rules": [{"match": {"groups": ["example.com"], "kinds": [kind]}, "fields": [field], "action": "deny"}]
        }
    })
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "ports": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }}
                }
            }}}]
        }
    })
}

#[derive(Clone)]
struct Api {
    policies: Vec<Value>,
    crds: StatusCode,
    patches: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn policies(State(api): State<Api>, RawQuery(q): RawQuery) -> axum::response::Response {
    if q.unwrap_or_default().contains("watch=true") {
        return axum::response::Response::new(Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()));
    }
    axum::Json(json!({"apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicyList",
        "metadata": {"resourceVersion": "10"}, "items": api.policies}))
    .into_response()
}

async fn crds(State(api): State<Api>) -> axum::response::Response {
    if api.crds != StatusCode::OK {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "customresourcedefinitions.apiextensions.k8s.io is forbidden: User \"system:serviceaccount:hallmark-system:hallmark\" cannot list resource \"customresourcedefinitions\""});
        return (api.crds, axum::Json(status)).into_response();
    }
    axum::Json(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinitionList",
        "metadata": {"resourceVersion": "3"}, "items": [widget_crd()]}))
    .into_response()
}

async fn status_patch(State(api): State<Api>, Path(name): Path<String>, body: axum::body::Bytes) -> axum::Json<Value> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    api.patches.lock().expect("lock").push((name.clone(), v));
    let p = api.policies.iter().find(|p| p["metadata"]["name"] == name.as_str()).cloned().unwrap_or(Value::Null);
    axum::Json(p)
}

/// Runs the watcher against the stand-in until every policy's status was written; returns
/// (the names in force, the Ready condition of each policy).
async fn watch(policies: Vec<Value>, crd_status: StatusCode) -> (Vec<String>, Vec<(String, Value)>) {
    let count = policies.len();
    let api = Api { policies, crds: crd_status, patches: Arc::default() };
    let patches = api.patches.clone();
    let app = Router::new()
        .route("/apis/hallmark.dev/v1alpha1/ownershippolicies", get(self::policies))
        .route("/apis/hallmark.dev/v1alpha1/ownershippolicies/{name}/status", patch(status_patch))
        .route("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", get(crds))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let state =
        Arc::new(AppState::new(Engine::new(Stamper::new(Settings::default()), OnError::Allow), PolicySet::default()));
    state.expect_source("crd");
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");
    let watcher = tokio::spawn(hallmark::server::crd::watch_with(state.clone(), client));
    let start = std::time::Instant::now();
    while patches.lock().expect("lock").len() < count {
        assert!(start.elapsed() < Duration::from_secs(15), "every policy's status was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    server.abort();
    let names = state.policies.load().policies.iter().map(|p| p.name.clone()).collect();
    let conditions =
        patches.lock().expect("lock").iter().map(|(n, v)| (n.clone(), v["status"]["conditions"][0].clone())).collect();
    (names, conditions)
}

fn condition<'a>(conditions: &'a [(String, Value)], name: &str) -> &'a Value {
    &conditions.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no status for {name}")).1
}

#[tokio::test]
async fn paths_of_custom_resources_are_checked_against_their_crd() {
    let (names, conditions) = watch(
        vec![
            policy("good", "Widget", "spec.ports[*].name"),
            policy("preserved", "widgets", "spec.extra.anything.below"),
            policy("typo", "Widget", "spec.sise"),
            policy("unknown", "Gadget", "spec.whatever"),
        ],
        StatusCode::OK,
    )
    .await;
    assert_eq!(names, ["good", "preserved", "unknown"], "the policy with a path its CRD lacks is not in force");
    let typo = condition(&conditions, "typo");
    assert_eq!(typo["status"], "False");
    assert_eq!(
        typo["message"],
        "spec.rules[0].fields[0]: spec.sise names no field of Widget (example.com/v1): spec has no field \"sise\"; did you mean spec.size?"
    );
    assert_eq!(condition(&conditions, "good")["message"], "policy is in force");
    let unknown = condition(&conditions, "unknown");
    assert_eq!(unknown["status"], "True");
    assert_eq!(
        unknown["message"],
        "policy is in force; field paths of Gadget not checked: no CustomResourceDefinition of the cluster names them"
    );
}

#[tokio::test]
async fn crds_hallmark_may_not_read_are_said_in_the_ready_message() {
    let (names, conditions) = watch(vec![policy("typo", "Widget", "spec.sise")], StatusCode::FORBIDDEN).await;
    assert_eq!(names, ["typo"], "not checked, so in force");
    let message = condition(&conditions, "typo")["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.starts_with("policy is in force; field paths of Widget not checked: hallmark cannot read CustomResourceDefinitions (Error from server (Forbidden): customresourcedefinitions.apiextensions.k8s.io is forbidden"),
        "{message}"
    );
}
