//! `hallmark webhook-config` and the committed webhook configurations, and
//! `--watch-policies` keeping the ownership webhook's matchConditions current against a
//! local stand-in for the Kubernetes API.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use hallmark::config::Settings;
use hallmark::policy::{PolicySet, load_paths};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::AppState;
use hallmark::server::webhook_sync::{SyncOptions, patch_body, sync_with};
use hallmark::webhook_config::{Target, mutating, ownership_conditions, policies, validating};
use serde::Deserialize as _;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn platform() -> PolicySet {
    PolicySet {
        policies: load_paths(&[root().join("manifests/examples/ownershippolicy-platform.yaml")]).expect("policy"),
    }
}

/// A committed manifest as JSON (its comments are not part of the document).
fn committed(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("manifests/base").join(file)).expect("read");
    let y: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    serde_json::to_value(y).expect("json")
}

#[test]
fn committed_webhook_configurations_are_what_webhook_config_generates() {
    let hint =
        "stale: regenerate with `hallmark webhook-config --only mutating|validating` (keep the comments at the top)";
    let m = serde_json::to_value(mutating(&Target::default())).expect("json");
    assert_eq!(committed("mutatingwebhookconfiguration.yaml"), m, "mutatingwebhookconfiguration.yaml is {hint}");
    let v = serde_json::to_value(validating(&Target::default(), &PolicySet::default())).expect("json");
    assert_eq!(committed("validatingwebhookconfiguration.yaml"), v, "validatingwebhookconfiguration.yaml is {hint}");
    let p = serde_json::to_value(policies(&Target::default())).expect("json");
    assert_eq!(
        committed("validatingwebhookconfiguration-policies.yaml"),
        p,
        "validatingwebhookconfiguration-policies.yaml is {hint} (--only policies)"
    );
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hallmark")).args(args).output().expect("run hallmark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_prints_both_configurations_for_the_given_policies_and_service() {
    let policy = root().join("manifests/examples/ownershippolicy-platform.yaml");
    let (code, out, err) = run(&[
        "webhook-config",
        "--policy",
        policy.to_str().expect("utf-8"),
        "--namespace",
        "webhooks",
        "--service",
        "hm",
    ]);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).expect("a YAML document")).expect("json"))
        .collect();
    assert_eq!(docs.len(), 3, "{out}");
    assert_eq!(docs[0]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(docs[1]["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(
        (docs[2]["kind"].as_str(), docs[2]["metadata"]["name"].as_str()),
        (Some("ValidatingWebhookConfiguration"), Some("hallmark-policies"))
    );
    assert_eq!(docs[2]["webhooks"][0]["clientConfig"]["service"]["path"], "/validate-policy");
    for d in &docs {
        let service = &d["webhooks"][0]["clientConfig"]["service"];
        assert_eq!((service["namespace"].as_str(), service["name"].as_str()), (Some("webhooks"), Some("hm")));
        if d["metadata"]["name"] == "hallmark-policies" {
            continue; // cluster-scoped OwnershipPolicies only: no namespaceSelector
        }
        let excluded = &d["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"];
        assert_eq!(excluded, &json!(["kube-system", "webhooks"]));
    }
    let want = serde_json::to_value(ownership_conditions(&platform())).expect("json");
    assert_eq!(docs[1]["webhooks"][0]["matchConditions"], want, "the platform policy's conditions");
    assert_ne!(
        want,
        serde_json::to_value(ownership_conditions(&PolicySet::default())).expect("json"),
        "the conditions depend on the policies"
    );

    let (code, _, err) = run(&["webhook-config", "--policy", "/nonexistent/policy.yaml"]);
    assert_eq!(code, 2, "a missing policy is bad input");
    assert!(err.contains("/nonexistent/policy.yaml"), "{err}");
}

// ---- --watch-policies keeps the matchConditions current ----

#[derive(Default)]
struct Stand {
    object: Value,
    /// (content type, body) of every PATCH.
    patches: Vec<(String, Value)>,
    gets: usize,
    /// Answer 403 to everything.
    forbidden: bool,
}

type Shared = Arc<Mutex<Stand>>;

const PATH: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}";

async fn get_config(State(s): State<Shared>, Path(name): Path<String>) -> axum::response::Response {
    let mut s = s.lock().expect("lock");
    s.gets += 1;
    if s.forbidden || name != "hallmark" {
        return forbidden(&name);
    }
    axum::Json(s.object.clone()).into_response()
}

fn forbidden(name: &str) -> axum::response::Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": format!("validatingwebhookconfigurations \"{name}\" is forbidden")});
    (StatusCode::FORBIDDEN, axum::Json(status)).into_response()
}

/// Applies the strategic merge patch the way kube-apiserver does for this shape: the
/// webhook with the patch's name gets the patch's matchConditions, less the `$patch`
/// directive element.
async fn patch_config(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let mut s = s.lock().expect("lock");
    if s.forbidden || name != "hallmark" {
        return forbidden(&name);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.patches.push((content_type, patch.clone()));
    let wanted = &patch["webhooks"][0];
    let conditions: Vec<Value> = wanted["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("$patch").is_none())
        .cloned()
        .collect();
    if let Some(hooks) = s.object["webhooks"].as_array_mut() {
        for h in hooks {
            if h["name"] == wanted["name"] {
                h["matchConditions"] = Value::Array(conditions.clone());
            }
        }
    }
    axum::Json(s.object.clone()).into_response()
}

fn reloads(state: &AppState, result: &str) -> u64 {
    let needle = format!("hallmark_reloads_total{{what=\"webhook-config\",result=\"{result}\"}} ");
    state
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn conditions_json(p: &PolicySet) -> Value {
    serde_json::to_value(ownership_conditions(p)).expect("json")
}

#[tokio::test]
async fn watched_policies_patch_only_the_ownership_webhooks_match_conditions_when_they_differ() {
    // The cluster has the committed configuration (built-in default), as after `kubectl apply -k`.
    let mut object = committed("validatingwebhookconfiguration.yaml");
    object["webhooks"][0]["clientConfig"]["caBundle"] = json!("aW5qZWN0ZWQ="); // e.g. cert-manager's
    let stand: Shared = Arc::new(Mutex::new(Stand { object, ..Stand::default() }));
    let app = Router::new().route(PATH, get(get_config).patch(patch_config)).with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = tokio::spawn(async move { axum::serve(listener, app).await });

    let state =
        Arc::new(AppState::new(Engine::new(Stamper::new(Settings::default()), OnError::Allow), PolicySet::default()));
    state.set_policies(PolicySet::default());
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");
    let options = SyncOptions {
        name: "hallmark".into(),
        poll: Duration::from_millis(20),
        resync: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
    };
    let sync = tokio::spawn(sync_with(state.clone(), client, options));
    let patches = || stand.lock().expect("lock").patches.clone();

    // Already current: read, not patched.
    until("a first successful check", || reloads(&state, "ok") >= 1).await;
    assert!(patches().is_empty(), "the committed conditions are the built-in default's");

    // A policy arrives: one strategic merge patch of only that list, then quiet again.
    state.set_policies(platform());
    until("the patch for the new policy", || patches().len() == 1).await;
    let (content_type, body) = patches()[0].clone();
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    assert_eq!(body, patch_body(&ownership_conditions(&platform())));
    assert_eq!(body["webhooks"].as_array().map(Vec::len), Some(1));
    let keys: Vec<&String> = body["webhooks"][0].as_object().expect("object").keys().collect();
    assert_eq!(keys, ["matchConditions", "name"], "only the webhook's key and its matchConditions");
    assert_eq!(body["webhooks"][0]["matchConditions"][0], json!({"$patch": "replace"}));
    let after = stand.lock().expect("lock").object.clone();
    assert_eq!(after["webhooks"][0]["matchConditions"], conditions_json(&platform()));
    assert_eq!(after["webhooks"][0]["clientConfig"]["caBundle"], "aW5qZWN0ZWQ=", "the rest is untouched");
    let ok = reloads(&state, "ok");
    until("two more resyncs", || reloads(&state, "ok") >= ok + 2).await;
    assert_eq!(patches().len(), 1, "no patch while the conditions are current");

    // `kubectl apply -k manifests/` puts the built-in default's back: the resync repairs it.
    stand.lock().expect("lock").object["webhooks"][0]["matchConditions"] = conditions_json(&PolicySet::default());
    until("the repair", || patches().len() == 2).await;
    assert_eq!(stand.lock().expect("lock").object["webhooks"][0]["matchConditions"], conditions_json(&platform()));

    // RBAC missing or the API down: errors are counted and retried; the server goes on.
    stand.lock().expect("lock").forbidden = true;
    state.set_policies(PolicySet::default());
    until("an error is counted", || reloads(&state, "error") >= 2).await;
    assert!(!sync.is_finished(), "errors never stop the sync");
    stand.lock().expect("lock").forbidden = false;
    until("the patch after recovery", || patches().len() == 3).await;
    assert_eq!(
        stand.lock().expect("lock").object["webhooks"][0]["matchConditions"],
        conditions_json(&PolicySet::default())
    );
    sync.abort();
    api.abort();
}

#[tokio::test]
async fn nothing_is_read_or_written_before_every_policy_source_has_loaded() {
    let stand: Shared =
        Arc::new(Mutex::new(Stand { object: committed("validatingwebhookconfiguration.yaml"), ..Stand::default() }));
    let app = Router::new().route(PATH, get(get_config).patch(patch_config)).with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = tokio::spawn(async move { axum::serve(listener, app).await });
    let state =
        Arc::new(AppState::new(Engine::new(Stamper::new(Settings::default()), OnError::Allow), PolicySet::default()));
    state.expect_source("crd");
    state.set_policies(platform());
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");
    let options = SyncOptions { poll: Duration::from_millis(10), ..SyncOptions::new("hallmark") };
    let sync = tokio::spawn(sync_with(state.clone(), client, options));
    // The file policies alone would narrow the conditions: nothing happens until the CRD
    // source has loaded too (the sync polls every 10 ms meanwhile).
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(stand.lock().expect("lock").gets, 0, "not read before the policies are complete");
    state.set_source("crd", Vec::new());
    until("the patch once loaded", || stand.lock().expect("lock").patches.len() == 1).await;
    sync.abort();
    api.abort();
}
