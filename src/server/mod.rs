//! The HTTPS server: router, TLS (and its reload), health, shutdown.

pub mod crd;
pub mod events;
pub mod parents;
pub mod reload;
pub mod serve;
pub mod sources;
pub mod tls;
pub mod webhook_sync;

pub use reload::policy_watch;

use crate::admission::{Review, encode_response, one_line};
use crate::metrics::{EndpointLabels, Metrics, RequestLabels};
use crate::policy::{CompiledPolicy, PolicySet};
use crate::review::{Decision, Engine, describe, object_name};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Request bodies up to this size are accepted (an UPDATE carries two objects of up to
/// 1.5 MiB each in etcd, plus the review around them); larger ones get 413.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Bodies above this are decoded off the async worker threads.
const BLOCKING_THRESHOLD: usize = 256 * 1024;
/// A client must finish sending its body within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared, swappable state of a running server.
pub struct AppState {
    pub engine: Engine,
    pub policies: ArcSwap<PolicySet>,
    pub metrics: Metrics,
    /// False until certificates and policies are loaded, and during shutdown.
    pub ready: AtomicBool,
    /// A shutdown signal arrived: answering, but no longer ready.
    pub draining: AtomicBool,
    /// `--client-ca` is configured: the review endpoints need a verified client certificate.
    pub require_client_cert: AtomicBool,
    /// Every policy source has loaded at least once (stays true once set).
    pub policies_loaded: AtomicBool,
    /// The policies of each source (`files`, `crd`); the snapshot is their union.
    sources: Mutex<BTreeMap<&'static str, Vec<CompiledPolicy>>>,
    /// Sources that must load before the server is ready.
    expected_sources: Mutex<Vec<&'static str>>,
    /// A client must finish sending its body within this many milliseconds (`BODY_TIMEOUT`
    /// unless `ServeOptions::body_timeout` says otherwise).
    body_timeout_ms: AtomicU64,
    /// Reads the parent of a `scale` write (set when a Kubernetes client is available).
    parent_lookup: std::sync::OnceLock<parents::ParentLookup>,
    /// Queues Events for denied and break-glass writes (set when a client is available).
    events: std::sync::OnceLock<events::EventSink>,
}

impl AppState {
    pub fn new(engine: Engine, policies: PolicySet) -> AppState {
        let metrics = Metrics::new();
        metrics.policies.set(policies.policies.len() as i64);
        metrics.policies_in_force(policies.effective().map(|p| p.name.as_str()));
        AppState {
            engine,
            policies: ArcSwap::from_pointee(policies),
            metrics,
            ready: AtomicBool::new(false),
            policies_loaded: AtomicBool::new(false),
            require_client_cert: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            sources: Mutex::new(BTreeMap::new()),
            expected_sources: Mutex::new(vec!["files"]),
            body_timeout_ms: AtomicU64::new(BODY_TIMEOUT.as_millis() as u64),
            parent_lookup: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
        }
    }

    /// Sets how long a client may take to send its request body.
    pub fn set_body_timeout(&self, timeout: Duration) {
        self.body_timeout_ms.store(timeout.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms.load(Ordering::Relaxed))
    }

    /// Lets `/validate` read the parents of `scale` writes (once; later calls are ignored).
    pub fn set_parent_lookup(&self, lookup: parents::ParentLookup) {
        let _ = self.parent_lookup.set(lookup);
    }

    /// Sends Events for denied and break-glass writes through `sink` (once).
    pub fn set_events(&self, sink: events::EventSink) {
        let _ = self.events.set(sink);
    }

    /// Declares a source (e.g. `crd`) that must load once before `/readyz` is true.
    pub fn expect_source(&self, name: &'static str) {
        let mut e = self.expected_sources.lock().unwrap_or_else(|p| p.into_inner());
        if !e.contains(&name) {
            e.push(name);
        }
        self.policies_loaded.store(false, Ordering::SeqCst);
    }

    /// Replaces the policies of one source and publishes the union as the new snapshot.
    pub fn set_source(&self, name: &'static str, policies: Vec<CompiledPolicy>) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.insert(name, policies);
        let all: Vec<CompiledPolicy> = sources.values().flatten().cloned().collect();
        self.metrics.policies.set(all.len() as i64);
        let set = PolicySet { policies: all };
        self.metrics.policies_in_force(set.effective().map(|p| p.name.as_str()));
        self.policies.store(Arc::new(set));
        let expected = self.expected_sources.lock().unwrap_or_else(|p| p.into_inner());
        if expected.iter().all(|e| sources.contains_key(e)) {
            self.policies_loaded.store(true, Ordering::SeqCst);
        }
    }

    /// Sets the file policies (startup and tests).
    pub fn set_policies(&self, policies: PolicySet) {
        self.set_source("files", policies.policies);
    }
}

/// The TLS router: the two review endpoints and health.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/validate-policy", post(validate_policy))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), close_when_draining))
        .with_state(state)
}

/// While draining (after SIGTERM, `/readyz` false), every HTTP/1.1 response says
/// `Connection: close`: the client then closes its keep-alive connection itself after a
/// complete response and opens the next one to another replica, instead of racing a
/// server-side close with its next POST (which kube-apiserver would not retry).
async fn close_when_draining(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = req.version() < axum::http::Version::HTTP_2;
    let mut resp = next.run(req).await;
    if http1 && !state.ready.load(Ordering::Relaxed) && state.draining.load(Ordering::Relaxed) {
        resp.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    resp
}

/// The benchmark's floor: the same stack, but it merely parses the AdmissionReview (the
/// whole body into a JSON tree, as any webhook that reads the review must) and answers
/// `allowed` with no logic. hallmark's cost is measured against it.
pub fn floor_app() -> Router {
    async fn floor(body: Bytes) -> Response {
        let review: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "request body is not a valid AdmissionReview"),
        };
        let version = match review.get("apiVersion").and_then(serde_json::Value::as_str) {
            Some(crate::admission::V1BETA1) => crate::admission::V1BETA1,
            _ => crate::admission::V1,
        };
        let uid = review.pointer("/request/uid").and_then(serde_json::Value::as_str).unwrap_or_default();
        let out = encode_response(version, uid, &crate::admission::Answer::allow());
        ([(header::CONTENT_TYPE, "application/json")], out).into_response()
    }
    Router::new()
        .route("/mutate", post(floor))
        .route("/validate", post(floor))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The plain-HTTP metrics router.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    s.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::SeqCst) && s.policies_loaded.load(Ordering::SeqCst) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Mutate,
    Validate,
    /// `OwnershipPolicy` objects (the `policies.hallmark.dev` webhook).
    Policy,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
            Endpoint::Policy => "validate-policy",
        }
    }
}

/// Whether the connection presented a client certificate that verified against
/// `--client-ca` (set per connection by the accept loop).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCert(pub bool);

async fn mutate(State(s): State<Arc<AppState>>, cert: Option<Extension<ClientCert>>, body: Body) -> Response {
    handle(s, Endpoint::Mutate, cert, body).await
}

async fn validate(State(s): State<Arc<AppState>>, cert: Option<Extension<ClientCert>>, body: Body) -> Response {
    handle(s, Endpoint::Validate, cert, body).await
}

async fn validate_policy(State(s): State<Arc<AppState>>, cert: Option<Extension<ClientCert>>, body: Body) -> Response {
    handle(s, Endpoint::Policy, cert, body).await
}

async fn handle(state: Arc<AppState>, endpoint: Endpoint, cert: Option<Extension<ClientCert>>, body: Body) -> Response {
    if state.require_client_cert.load(Ordering::Relaxed) && !cert.is_some_and(|Extension(c)| c.0) {
        state.metrics.error(endpoint.name(), "unauthenticated");
        return plain(
            StatusCode::UNAUTHORIZED,
            "a client certificate signed by the configured --client-ca is required",
        );
    }
    let bytes = match read_body(body, state.body_timeout()).await {
        Ok(b) => b,
        Err(resp) => {
            state.metrics.error(endpoint.name(), "body");
            return resp;
        }
    };
    let step = if bytes.len() > BLOCKING_THRESHOLD {
        let st = state.clone();
        match tokio::task::spawn_blocking(move || answer(&st, endpoint, &bytes)).await {
            Ok(step) => step,
            Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    } else {
        answer(&state, endpoint, &bytes)
    };
    match step {
        Step::Done(response) => response,
        Step::NeedsParent(review, started) => {
            let parent = match state.parent_lookup.get() {
                Some(lookup) => lookup.metadata(&review.request).await,
                None => Err("the scale subresource's parent cannot be read: hallmark has no Kubernetes client \
                             (in a pod it uses its service account; elsewhere KUBECONFIG)"
                    .to_owned()),
            };
            finish(&state, endpoint, &review, started, Some(parent))
        }
    }
}

/// What [`answer`] leaves to do.
enum Step {
    Done(Response),
    /// A `scale` write that `/validate` judges with its parent's metadata, to be read first.
    NeedsParent(Box<Review>, Instant),
}

async fn read_body(body: Body, timeout: Duration) -> Result<Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => Err(plain(StatusCode::REQUEST_TIMEOUT, "request body was not received in time")),
        Ok(Err(e)) => {
            // axum reports an over-limit body through the error's source chain.
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than 8 MiB"))
            } else {
                Err(plain(StatusCode::BAD_REQUEST, "request body could not be read"))
            }
        }
        Ok(Ok(b)) => Ok(b),
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// Decodes, decides and encodes one review. Synchronous: the whole of it is CPU work,
/// except a `scale` write whose parent must be read first ([`Step::NeedsParent`]).
fn answer(state: &AppState, endpoint: Endpoint, body: &[u8]) -> Step {
    let started = Instant::now();
    let review = match Review::decode(body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error(endpoint.name(), "malformed");
            state
                .metrics
                .requests
                .get_or_create(&RequestLabels { endpoint: endpoint.name(), outcome: "malformed" })
                .inc();
            tracing::debug!(endpoint = endpoint.name(), error = %e, "malformed review");
            return Step::Done(plain(StatusCode::BAD_REQUEST, &one_line(&e.to_string())));
        }
    };
    // Like the decision itself (see `finish`), a panic here must not drop the connection:
    // it reads as "no parent needed", and the decision's own guard answers.
    let needs_parent = endpoint == Endpoint::Validate
        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.engine.scale_needs_parent(&review.request, &state.policies.load())
        }))
        .unwrap_or(false);
    if needs_parent {
        return Step::NeedsParent(Box::new(review), started);
    }
    Step::Done(finish(state, endpoint, &review, started, None))
}

/// Decides and encodes a decoded review. `parent`: for a `scale` write, the parent's
/// metadata as read (or why it could not be), judged in place of the bare Scale.
fn finish(
    state: &AppState,
    endpoint: Endpoint,
    review: &Review,
    started: Instant,
    parent: Option<Result<serde_json::Value, String>>,
) -> Response {
    let policies = state.policies.load();
    let mut parent = parent;
    let with_parent;
    let req = match (&parent, &review.request.old_object) {
        (Some(Ok(meta)), Some(old)) => {
            let rebuilt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::ownership::managed::scale_with_parent(old, meta)
            }));
            match rebuilt {
                Ok(view) => {
                    let mut r = review.request.clone();
                    r.old_object = Some(view);
                    with_parent = r;
                    &with_parent
                }
                // Unevaluable, as --on-error says (never judged on the bare Scale, which
                // would miss the parent's owners).
                Err(_) => {
                    parent = Some(Err("internal error while reading the parent".to_owned()));
                    &review.request
                }
            }
        }
        _ => &review.request,
    };
    // A bug must not turn into a dropped connection (which kube-apiserver would not retry):
    // a panic is answered like any review that cannot be evaluated.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match (endpoint, &parent) {
        (Endpoint::Validate, Some(Err(why))) => {
            tracing::warn!(object = %describe(req), uid = %req.uid, error = %why, "scale write: parent not read");
            state.engine.unevaluable("parent-lookup", why)
        }
        (Endpoint::Mutate, _) => state.engine.mutate(req, &policies, jiff::Timestamp::now()),
        (Endpoint::Validate, _) => state.engine.validate(req, &policies),
        (Endpoint::Policy, _) => crate::review::review_policy(req),
    }));
    let decision: Decision = match decided {
        Ok(d) => d,
        Err(_) => {
            tracing::error!(endpoint = endpoint.name(), uid = %req.uid, "internal error while evaluating a review");
            match endpoint {
                Endpoint::Mutate => Decision::failed(crate::admission::Answer::allow(), "internal"),
                Endpoint::Validate => state.engine.unevaluable("internal", "internal error"),
                // The policy webhook fails open (failurePolicy: Ignore); so does a bug.
                Endpoint::Policy => Decision::failed(crate::admission::Answer::allow(), "internal"),
            }
        }
    };
    let out = encode_response(review.api_version, &req.uid, &decision.answer);
    record(state, endpoint, req, &decision, started);
    if endpoint == Endpoint::Validate
        && let Some(sink) = state.events.get()
    {
        sink.offer(req, &decision, &policies);
    }
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn record(
    state: &AppState,
    endpoint: Endpoint,
    req: &crate::admission::AdmissionRequest,
    d: &Decision,
    started: Instant,
) {
    let m = &state.metrics;
    let name = endpoint.name();
    m.requests.get_or_create(&RequestLabels { endpoint: name, outcome: d.outcome }).inc();
    m.duration.get_or_create(&EndpointLabels { endpoint: name }).observe(started.elapsed().as_secs_f64());
    if d.answer.patch.is_some() {
        m.patches.inc();
    }
    if !d.answer.warnings.is_empty() {
        m.warnings.get_or_create(&EndpointLabels { endpoint: name }).inc_by(d.answer.warnings.len() as u64);
    }
    if let Some(kind) = d.error {
        m.error(name, kind);
    }
    if d.outcome == "system-writer" {
        m.system_writes.get_or_create(&EndpointLabels { endpoint: name }).inc();
        tracing::debug!(
            endpoint = name,
            object = %describe(req),
            user = %req.user_info.username,
            operation = req.operation.as_str(),
            "system writer: allowed, not stamped"
        );
        return;
    }
    if !d.is_notable() {
        tracing::debug!(endpoint = name, outcome = d.outcome, object = %describe(req), uid = %req.uid, "admission decision");
        return;
    }
    if matches!(d.outcome, "denied" | "warned" | "break-glass") {
        for policy in &d.involved.policies {
            m.ownership_decision(d.outcome, policy);
        }
    }
    // One line per notable decision: who wrote which object, what hallmark answered and
    // the fields involved (paths only: never a value, objects may be Secrets).
    macro_rules! decision {
        ($level:ident) => {
            tracing::$level!(
                endpoint = name,
                outcome = d.outcome,
                kind = %req.kind.kind,
                namespace = req.namespace().unwrap_or(""),
                name = object_name(req),
                operation = req.operation.as_str(),
                subresource = req.subresource().unwrap_or(""),
                user = %req.user_info.username,
                fields = %d.involved.paths_text(),
                policies = %d.involved.policies.join(","),
                warnings = d.answer.warnings.len(),
                error = d.error.unwrap_or(""),
                dry_run = req.dry_run.unwrap_or(false),
                uid = %req.uid,
                "admission decision"
            )
        };
    }
    if d.outcome == "error" {
        decision!(warn);
    } else {
        decision!(info);
    }
}
