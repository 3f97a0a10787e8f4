//! The audit trail where people look (docs/audit-trail.md), through the server as
//! kube-apiserver calls it: `kubernetes.io/change-cause` for `kubectl rollout history`.

mod common;

use common::{TestServer, fixture, fixture_bytes, patched};
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::server::serve::ServeOptions;
use serde_json::Value;

fn change_cause(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get("kubernetes.io/change-cause"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[tokio::test]
async fn each_pushed_revision_says_who_and_which_commit() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // A GitHub Actions deploy with verified provenance (OIDC claims as userInfo.extra).
    let name = "deploy-shop-update-csa-oidc-gha.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let stored = patched(&fixture(name), &response);
    assert_eq!(
        change_cause(&stored).as_deref(),
        Some("gha:acme/shop (push): main@89e6c98d9288, pipeline deploy#9876543311")
    );
    // A developer's image change.
    let name = "deploy-web-update-csa-image-dev.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let review = fixture(name);
    let who = review["request"]["userInfo"]["username"].as_str().expect("user").to_owned();
    assert_eq!(change_cause(&patched(&review, &response)), Some(format!("{who} (push)")));
    // A scale is no new revision: no change-cause.
    let name = "deploy-web-update-replace-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let template_changed =
        review["request"]["object"]["spec"]["template"] != review["request"]["oldObject"]["spec"]["template"];
    assert_eq!(change_cause(&patched(&review, &response)).is_some(), template_changed);
    server.stop().await;
}

#[tokio::test]
async fn change_cause_can_be_turned_off() {
    let settings = Settings::from_yaml("changeCause: false\n", "c.yaml").expect("config");
    let server = TestServer::start_with(settings, PolicySet::default(), ServeOptions::default()).await;
    let mut client = server.client().await;
    let name = "deploy-shop-update-csa-oidc-gha.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    assert_eq!(change_cause(&patched(&fixture(name), &response)), None);
    server.stop().await;
}

/// A stand-in for kube-apiserver with Flux's CRDs (Kustomization, GitRepository) and not
/// Argo CD's: discovery, LIST and a WATCH that stays open.
mod flux_api {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::{Path, RawQuery};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use serde_json::{Value, json};

    pub const SHA: &str = "0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a";

    fn resources(group_version: &str, kind: &str, plural: &str) -> Value {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": [
            {"name": plural, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
             "verbs": ["get", "list", "watch"]}]})
    }

    fn items(plural: &str) -> Vec<Value> {
        match plural {
            "kustomizations" => vec![json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": "infra", "namespace": "flux-system", "resourceVersion": "7"},
                "spec": {"sourceRef": {"kind": "GitRepository", "name": "fleet"}, "path": "./infra"},
                "status": {"lastAttemptedRevision": format!("main@sha1:{SHA}"), "inventory": {"entries": []}}})],
            "gitrepositories" => vec![json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "fleet", "namespace": "flux-system", "resourceVersion": "8"},
                "spec": {"url": "https://github.com/acme/fleet", "ref": {"branch": "main"}},
                "status": {"artifact": {"revision": format!("main@sha1:{SHA}")}}})],
            _ => vec![],
        }
    }

    async fn collection(
        Path((group, version, plural)): Path<(String, String, String)>,
        RawQuery(q): RawQuery,
    ) -> axum::response::Response {
        if q.unwrap_or_default().contains("watch=true") {
            return axum::response::Response::new(Body::from_stream(futures_util::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >()));
        }
        axum::Json(json!({"apiVersion": format!("{group}/{version}"), "kind": "List",
            "metadata": {"resourceVersion": "10"}, "items": items(&plural)}))
        .into_response()
    }

    pub fn app() -> Router {
        let groups = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "kustomize.toolkit.fluxcd.io", "versions": [{"groupVersion": "kustomize.toolkit.fluxcd.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "kustomize.toolkit.fluxcd.io/v1", "version": "v1"}},
            {"name": "source.toolkit.fluxcd.io", "versions": [{"groupVersion": "source.toolkit.fluxcd.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "source.toolkit.fluxcd.io/v1", "version": "v1"}}]});
        Router::new()
            .route("/apis", get(move || async move { axum::Json(groups.clone()) }))
            .route(
                "/apis/kustomize.toolkit.fluxcd.io/v1",
                get(|| async {
                    axum::Json(resources("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "kustomizations"))
                }),
            )
            .route(
                "/apis/source.toolkit.fluxcd.io/v1",
                get(|| async {
                    axum::Json(resources("source.toolkit.fluxcd.io/v1", "GitRepository", "gitrepositories"))
                }),
            )
            .route("/apis/{group}/{version}/{plural}", get(collection))
    }
}

#[tokio::test]
async fn a_flux_write_is_stamped_with_the_commit_and_repository_of_its_kustomization() {
    use hallmark::gitops::{SourceKind, SourceStore, Sources};
    use hallmark::provenance::Stamper;
    use hallmark::review::{Engine, OnError};
    use hallmark::server::sources::SourceCaches;
    use std::sync::Arc;
    use std::time::Duration;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = tokio::spawn(async move { axum::serve(listener, flux_api::app()).await });
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");

    let metrics = hallmark::metrics::Metrics::new();
    let caches = Arc::new(SourceCaches::new());
    caches.set_metrics(metrics.gitops.clone());
    hallmark::server::sources::watch(caches.clone(), client).await;
    let start = std::time::Instant::now();
    while !(caches.watching(SourceKind::Kustomization) && caches.watching(SourceKind::GitRepository)) {
        assert!(start.elapsed() < Duration::from_secs(15), "the Flux kinds were listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Trimmed in the cache: the inventory is never read.
    let cached = caches.get(SourceKind::Kustomization, "flux-system", "infra").expect("cached");
    assert!(cached.data.pointer("/status/inventory").is_none());

    let engine = Engine::new(Stamper::new(Settings::default()), OnError::Allow).with_sources(Sources(caches.clone()));
    let review = fixture("deploy-platform-agent-update-ssa-flux-revert-drift.json");
    let req = hallmark::admission::Review::decode(&common::body(&review)).expect("review").request;
    let d = engine.mutate(&req, &PolicySet::default(), jiff::Timestamp::now());
    let response = serde_json::json!({"patch": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d.answer.patch.expect("a patch")), "patchType": "JSONPatch"});
    let s = common::stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/channel"], "gitops");
    assert_eq!(s["hallmark.dev/trust"], "source");
    assert_eq!(s["hallmark.dev/commit"], flux_api::SHA);
    assert_eq!(s["hallmark.dev/branch"], "main");
    assert_eq!(s["hallmark.dev/repository"], "https://github.com/acme/fleet");
    assert_eq!(s["hallmark.dev/pipeline"], "Kustomization/flux-system/infra");
    assert_eq!(d.answer.audit_annotations["commit"], flux_api::SHA);

    // Argo CD's CRD is not installed: said in the metrics, and its writes stamped as before.
    let start = std::time::Instant::now();
    loop {
        let text = metrics.encode();
        if text.contains(r#"hallmark_gitops_sources{kind="applications"} 0"#) {
            assert!(text.contains(r#"hallmark_gitops_sources{kind="kustomizations"} 1"#), "{text}");
            assert!(text.contains(r#"hallmark_gitops_source_lookups_total{result="found"} 1"#), "{text}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.abort();
}

#[test]
fn gitops_source_settings_are_read_and_checked() {
    let s = Settings::from_yaml(
        "gitopsSources:\n  enabled: false\n  argocdInstanceLabelKey: argocd.example.com/app\n",
        "c.yaml",
    )
    .expect("valid");
    assert!(!s.gitops_sources);
    assert_eq!(s.argocd_instance_label, "argocd.example.com/app");
    let e = Settings::from_yaml("gitopsSources:\n  argocdInstanceLabelKey: \"not a key\"\n", "c.yaml")
        .expect_err("not a label key");
    assert_eq!(e.to_string(), "c.yaml:2: gitopsSources.argocdInstanceLabelKey: \"not a key\" is not a label key");
}

/// A stand-in for kube-apiserver's events.k8s.io/v1 API that keeps what it was sent.
mod events_api {
    use axum::Router;
    use axum::extract::{Path, State};
    use axum::routing::{patch, post};
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    pub type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    async fn create(State(seen): State<Seen>, Path(ns): Path<String>, body: axum::body::Bytes) -> axum::Json<Value> {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().expect("lock").push((format!("POST {ns}"), v.clone()));
        axum::Json(v)
    }

    async fn update(
        State(seen): State<Seen>,
        Path((ns, name)): Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> axum::Json<Value> {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().expect("lock").push((format!("PATCH {ns}/{name}"), v.clone()));
        axum::Json(v)
    }

    pub fn app(seen: Seen) -> Router {
        Router::new()
            .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", post(create))
            .route("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}", patch(update))
            .with_state(seen)
    }
}

#[tokio::test]
async fn denied_and_break_glass_writes_leave_aggregated_events_on_the_object() {
    use hallmark::server::events::{EventSink, QUEUE, send_all};
    use std::time::Duration;

    let seen = events_api::Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = events_api::app(seen.clone());
    let api = tokio::spawn(async move { axum::serve(listener, app).await });
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");

    let policies =
        hallmark::policy::load::parse_documents(common::PLATFORM_MANAGED_FIELDS_DENY, "p.yaml").expect("policy");
    let server = TestServer::start_with(Settings::default(), PolicySet { policies }, ServeOptions::default()).await;
    let metrics = server.state.metrics.events.clone();
    let (sink, queue) = EventSink::new(metrics.clone(), QUEUE);
    server.state.set_events(sink);
    let sender = tokio::spawn(send_all(client, queue, metrics));
    let mut client = server.client().await;

    let denied = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";
    for _ in 0..2 {
        let r = client.post("/validate", fixture_bytes(denied)).await.response();
        assert_eq!(r["allowed"], false);
    }
    // A dry run is answered the same, and leaves no Event.
    let mut dry = fixture(denied);
    dry["request"]["dryRun"] = serde_json::json!(true);
    assert_eq!(client.post("/validate", common::body(&dry)).await.response()["allowed"], false);
    let glass = "deploy-platform-agent-update-patch-memory-sre-alice-break-glass.json";
    assert_eq!(client.post("/validate", fixture_bytes(glass)).await.response()["allowed"], true);

    let start = std::time::Instant::now();
    while seen.lock().expect("lock").len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", seen.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "two denials aggregate into one Event, the dry run adds none: {seen:?}");
    let (first, denial) = &seen[0];
    assert_eq!(first, "POST team-a");
    assert_eq!(denial["reason"], "OwnershipDenied");
    assert_eq!(denial["type"], "Warning");
    assert_eq!(denial["reportingController"], "hallmark");
    assert_eq!(denial["regarding"]["kind"], "Deployment");
    assert_eq!(denial["regarding"]["apiVersion"], "apps/v1");
    assert_eq!(denial["regarding"]["name"], "platform-agent");
    assert_eq!(denial["regarding"]["uid"], "8bdec130-94a9-42b5-bb43-48c6225832f0");
    let note = denial["note"].as_str().expect("note");
    assert!(
        note.starts_with(
            "dev was denied a change of Git-owned fields spec.template.spec.containers[name=agent].resources.limits.cpu"
        ),
        "{note}"
    );
    assert!(
        note.contains("platform-config (Git: https://git.example.com/sre/cluster-config; policy platform)"),
        "{note}"
    );
    let name = denial["metadata"]["name"].as_str().expect("name");
    assert_eq!(seen[1].0, format!("PATCH team-a/{name}"), "the repeat is a series on the same Event");
    assert_eq!(seen[1].1["series"]["count"], 2);
    assert_eq!(seen[2].1["reason"], "BreakGlass");
    assert!(seen[2].1["note"].as_str().expect("note").starts_with("sre-alice overrode (break-glass) Git-owned fields spec.template.spec.containers[name=agent].resources.limits.memory"));
    let text = server.metrics().await;
    assert!(text.contains(r#"hallmark_events_total{reason="OwnershipDenied",result="sent"} 2"#), "{text}");
    assert!(text.contains(r#"hallmark_events_total{reason="BreakGlass",result="sent"} 1"#), "{text}");
    sender.abort();
    api.abort();
    server.stop().await;
}

#[test]
fn a_full_queue_drops_events_and_counts_them() {
    use hallmark::server::events::EventSink;
    let policies =
        hallmark::policy::load::parse_documents(common::PLATFORM_MANAGED_FIELDS_DENY, "p.yaml").expect("policy");
    let policies = PolicySet { policies };
    let engine = hallmark::review::Engine::new(
        hallmark::provenance::Stamper::new(Settings::default()),
        hallmark::review::OnError::Allow,
    );
    let req = hallmark::admission::Review::decode(&fixture_bytes(
        "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json",
    ))
    .expect("review")
    .request;
    let decision = engine.validate(&req, &policies);
    assert_eq!(decision.outcome, "denied");
    let metrics = hallmark::metrics::Metrics::new();
    let (sink, mut queue) = EventSink::new(metrics.events.clone(), 1);
    sink.offer(&req, &decision, &policies);
    sink.offer(&req, &decision, &policies);
    let text = metrics.encode();
    assert!(text.contains(r#"hallmark_events_total{reason="OwnershipDenied",result="dropped"} 1"#), "{text}");
    assert!(queue.try_recv().is_ok(), "the first one is queued");
    assert!(queue.try_recv().is_err());
}
