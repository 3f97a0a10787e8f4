//! Prometheus metrics, served in text format on the separate plain-HTTP metrics port.
//!
//! Labels are low-cardinality by construction (endpoint, outcome, error kind): never an
//! object name, a user or anything from the object's content.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: &'static str,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<EndpointLabels, Histogram>,
    pub patches: Counter,
    pub warnings: Family<EndpointLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub policies: Gauge,
    pub connections: Counter,
    /// Reviews of writes by system writers (`systemWriters`), by endpoint.
    pub system_writes: Family<EndpointLabels, Counter>,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Connections refused past `--max-connections`.
    pub connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hallmark");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~3.3 s: hallmark answers in well under a millisecond.
            Histogram::new(exponential_buckets(0.00005, 2.0, 17))
        });
        let patches = Counter::default();
        let warnings = Family::<EndpointLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let policies = Gauge::default();
        let connections = Counter::default();
        let system_writes = Family::<EndpointLabels, Counter>::default();
        let open_connections = Gauge::default();
        let connections_refused = Counter::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint and outcome",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the encoded answer",
            duration.clone(),
        );
        registry.register("patches", "Reviews answered with a JSONPatch", patches.clone());
        registry.register("warnings", "Warnings returned to clients", warnings.clone());
        registry.register("errors", "Requests that could not be read or evaluated", errors.clone());
        registry.register("reloads", "Reloads of certificates and policies, by result", reloads.clone());
        registry.register("policies", "Ownership policies in force (0 = built-in default)", policies.clone());
        registry.register("tls_connections", "TLS connections accepted", connections.clone());
        registry.register(
            "system_writes",
            "Reviews of writes by Kubernetes' own control plane (systemWriters): never denied, never stamped",
            system_writes.clone(),
        );
        registry.register("open_connections", "Connections open now (TLS and HTTP)", open_connections.clone());
        registry.register(
            "connections_refused",
            "Connections refused with a 503 because --max-connections were open",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            patches,
            warnings,
            errors,
            reloads,
            policies,
            connections,
            system_writes,
            open_connections,
            connections_refused,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn error(&self, endpoint: &'static str, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { endpoint, kind }).inc();
    }

    pub fn reload(&self, what: &'static str, ok: bool) {
        self.reloads.get_or_create(&ReloadLabels { what, result: if ok { "ok" } else { "error" } }).inc();
    }
}
