//! `--watch-policies` against a local stand-in for the Kubernetes API: valid resources
//! come into force, an invalid one is reported in its status and does not displace the
//! rest.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn policy(name: &str, fields: &str) -> Value {
    json!({
        "apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicy",
        "metadata": {"name": name, "resourceVersion": "5", "generation": 1, "uid": format!("uid-{name}")},
        "spec": {
            "owner": {"name": format!("{name}-owner"), "reconcilers": {"fieldManagers": ["kustomize-controller"]}},
            "rules": [{"match": {"kinds": ["Deployment"]}, "fields": [fields], "action": "deny"}]
        }
    })
}

type Patches = Arc<Mutex<Vec<(String, Value)>>>;

/// Events posted to events.k8s.io/v1 (namespace, body).
type Events = Arc<Mutex<Vec<(String, Value)>>>;

async fn event_post(State(e): State<Events>, Path(ns): Path<String>, body: axum::body::Bytes) -> axum::Json<Value> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    e.lock().expect("lock").push((ns, v.clone()));
    axum::Json(v)
}

async fn list_or_watch(RawQuery(q): RawQuery) -> axum::response::Response {
    if q.unwrap_or_default().contains("watch=true") {
        // A watch that stays open with no events.
        return axum::response::Response::new(Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()));
    }
    let list = json!({
        "apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicyList",
        "metadata": {"resourceVersion": "10"},
        "items": [policy("good", "spec.replicas"), policy("bad", "spec.template[")]
    });
    axum::Json(list).into_response()
}

async fn status_patch(
    State(p): State<Patches>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    p.lock().expect("lock").push((name.clone(), v));
    axum::Json(policy(&name, "spec.replicas"))
}

#[tokio::test]
async fn watched_policies_load_and_an_invalid_one_gets_a_failed_condition_and_a_warning_event() {
    let patches: Patches = Arc::default();
    let events: Events = Arc::default();
    let app = Router::new()
        .route("/apis/hallmark.dev/v1alpha1/ownershippolicies", get(list_or_watch))
        .route("/apis/hallmark.dev/v1alpha1/ownershippolicies/{name}/status", patch(status_patch))
        .with_state(patches.clone())
        .merge(
            Router::new()
                .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", post(event_post))
                .with_state(events.clone()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = tokio::spawn(async move { axum::serve(listener, app).await });

    let state =
        Arc::new(AppState::new(Engine::new(Stamper::new(Settings::default()), OnError::Allow), PolicySet::default()));
    state.expect_source("crd");
    state.set_policies(PolicySet::default());
    assert!(!state.policies_loaded.load(Ordering::SeqCst), "not ready before the first list");
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let watcher = tokio::spawn(hallmark::server::crd::watch_with(state.clone(), client));

    let start = std::time::Instant::now();
    while !(state.policies_loaded.load(Ordering::SeqCst)
        && patches.lock().expect("lock").len() >= 2
        && events.lock().expect("lock").len() >= 2)
    {
        assert!(start.elapsed() < Duration::from_secs(15), "the watcher loaded the list");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = state.policies.load().policies.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["good"], "the valid policy is in force, the invalid one is not");
    let patches = patches.lock().expect("lock").clone();
    let bad = patches.iter().find(|(n, _)| n == "bad").expect("the invalid policy's status was written");
    let condition = &bad.1["status"]["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Invalid");
    assert!(condition["message"].as_str().unwrap_or_default().contains("spec.rules[0].fields[0]"), "{condition}");
    let good = patches.iter().find(|(n, _)| n == "good").expect("the valid policy's status was written");
    assert_eq!(good.1["status"]["conditions"][0]["status"], "True");
    // An Event on each: Warning Invalid with the reason, Normal Ready (cluster-scoped
    // objects' Events go to namespace default).
    let events = events.lock().expect("lock").clone();
    let on = |name: &str| {
        events
            .iter()
            .find(|(_, e)| e["regarding"]["name"] == name)
            .unwrap_or_else(|| panic!("no Event regarding {name}: {events:?}"))
            .clone()
    };
    let (ns, bad) = on("bad");
    assert_eq!(ns, "default");
    assert_eq!((bad["type"].as_str(), bad["reason"].as_str()), (Some("Warning"), Some("Invalid")), "{bad}");
    assert_eq!(bad["regarding"]["kind"], "OwnershipPolicy");
    assert_eq!(bad["reportingController"], "hallmark");
    let note = bad["note"].as_str().unwrap_or_default();
    assert!(note.contains("refused, the policy is not in force") && note.contains("spec.rules[0].fields[0]"), "{note}");
    let (_, good) = on("good");
    assert_eq!((good["type"].as_str(), good["reason"].as_str()), (Some("Normal"), Some("Ready")), "{good}");
    // What the HallmarkPolicyRejected alert reads.
    let scrape = state.metrics.encode();
    assert!(scrape.contains(r#"hallmark_policies_rejected{source="crd"} 1"#), "{scrape}");
    watcher.abort();
    api.abort();
}
