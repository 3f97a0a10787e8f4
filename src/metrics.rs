//! Prometheus metrics, served in text format on the separate plain-HTTP metrics port.
//!
//! Labels are low-cardinality by construction (endpoint, outcome, error kind, and the
//! name of an ownership policy, capped at [`MAX_POLICY_LABELS`] names): never an object
//! name, a user or anything from the object's content.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Distinct `policy` label values kept per process; further policy names are counted as
/// `policy="other"` (policies are named by operators, but renamed and deleted ones would
/// otherwise accumulate until a restart).
pub const MAX_POLICY_LABELS: usize = 64;

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

/// `outcome` (`denied`, `warned`, `break-glass`) and `policy` (an OwnershipPolicy name,
/// or `other` past [`MAX_POLICY_LABELS`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub outcome: &'static str,
    pub policy: String,
}

/// `reason` of a failed TLS handshake: `certificate-refused`, `timeout`, `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `source`: where policies come from, `files` (`--policy`) or `crd` (`--watch-policies`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// `kind`: a GitOps resource hallmark caches (`kustomizations`, `gitrepositories`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitopsKindLabels {
    pub kind: &'static str,
}

/// `result` of a GitOps source lookup (`found`, `no-source`, `missing`, `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub result: &'static str,
}

/// The GitOps source caches' metrics (docs/audit-trail.md), shared with
/// `server::sources` (families are handles: clones count into the same series).
#[derive(Clone, Default)]
pub struct GitopsMetrics {
    /// `hallmark_gitops_sources{kind}`: 1 while the kind is cached, 0 when its CRD is not
    /// installed or hallmark may not list and watch it.
    pub sources: Family<GitopsKindLabels, Gauge>,
    /// `hallmark_gitops_source_lookups_total{result}`: reconciler writes looked up.
    pub lookups: Family<LookupLabels, Counter>,
}

impl GitopsMetrics {
    pub fn set_source(&self, kind: &'static str, cached: bool) {
        self.sources.get_or_create(&GitopsKindLabels { kind }).set(i64::from(cached));
    }

    pub fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&LookupLabels { result }).inc();
    }
}

/// `reason` (`OwnershipDenied`, `BreakGlass`) and `result` (`sent`, `dropped`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: &'static str,
    pub result: &'static str,
}

/// `hallmark_events_total{reason,result}`: Kubernetes Events for denied and break-glass
/// writes, sent, dropped (queue full) or failed (the API refused them).
#[derive(Clone, Default)]
pub struct EventMetrics {
    pub events: Family<EventLabels, Counter>,
}

impl EventMetrics {
    pub fn count(&self, reason: &'static str, result: &'static str) {
        self.events.get_or_create(&EventLabels { reason, result }).inc();
    }
}
/// The label values each labelled series can take, created with a zero sample when the
/// metrics are (Prometheus: "avoid missing metrics"): the first scrape already has every
/// series the shipped alerts and dashboard select, so `rate()` and `increase()` see the
/// first event as a change from 0 instead of a new series that starts at 1.
///
/// `outcome` of `hallmark_admission_requests_total`, by endpoint (`src/review.rs` and
/// `server::answer`).
pub const OUTCOMES: &[(&str, &[&str])] = &[
    ("mutate", &["stamped", "unchanged", "restored", "skipped", "system-writer", "error", "malformed"]),
    ("validate", &["allowed", "warned", "denied", "break-glass", "skipped", "system-writer", "error", "malformed"]),
    ("validate-policy", &["allowed", "denied", "error", "malformed"]),
];
/// `kind` of `hallmark_errors_total`, by endpoint.
pub const ERROR_KINDS: &[(&str, &[&str])] = &[
    ("mutate", &["malformed", "body", "unauthenticated", "no-object", "no-old-object", "unstampable", "internal"]),
    (
        "validate",
        &[
            "malformed",
            "body",
            "unauthenticated",
            "no-object",
            "unreadable-managed-fields",
            "parent-lookup",
            "internal",
        ],
    ),
    ("validate-policy", &["malformed", "body", "unauthenticated", "no-object", "internal"]),
];
/// `what` of `hallmark_reloads_total` (each with `result` `ok` and `error`).
pub const RELOADS: &[&str] = &["certificate", "policy", "crd", "webhook-config"];
/// `source` of `hallmark_policies_rejected`.
pub const POLICY_SOURCES: &[&str] = &["files", "crd"];
/// `reason` of `hallmark_tls_handshake_failures_total`.
pub const HANDSHAKE_REASONS: &[&str] = &["certificate-refused", "timeout", "other"];
/// `outcome` of `hallmark_ownership_decisions_total` (with a `policy` per policy in force).
pub const OWNERSHIP_OUTCOMES: &[&str] = &["denied", "warned", "break-glass"];

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
    /// `hallmark_ownership_decisions_total{outcome,policy}`: `/validate` reviews denied,
    /// warned or allowed through break-glass, once per policy that owns a field involved.
    pub ownership: Family<PolicyLabels, Counter>,
    /// `hallmark_policies_rejected{source}`: OwnershipPolicy resources refused at the last
    /// publish (`crd`, a count), or whether the last change of the `--policy` files was
    /// refused (`files`, 0 or 1: they load as a whole). The last good version stays in force.
    pub policies_rejected: Family<SourceLabels, Gauge>,
    /// `hallmark_certificate_expiry_timestamp_seconds`: notAfter of the serving certificate
    /// in force, in Unix seconds (set at start and on every reload).
    pub certificate_expiry: Gauge,
    /// GitOps source caches and lookups.
    pub gitops: GitopsMetrics,
    /// Events for denied and break-glass writes.
    pub events: EventMetrics,
    /// `hallmark_tls_handshake_failures_total{reason}`: connections whose TLS handshake
    /// failed (see `server::serve::handshake_failure_reason`).
    pub handshake_failures: Family<ReasonLabels, Counter>,
    policy_names: Mutex<BTreeSet<String>>,
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
            // 50 µs .. ~6.6 s: hallmark answers in well under a millisecond; the top buckets
            // reach past the webhooks' timeoutSeconds (5), which the latency alert watches.
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
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
        let ownership = Family::<PolicyLabels, Counter>::default();
        let policies_rejected = Family::<SourceLabels, Gauge>::default();
        let certificate_expiry = Gauge::default();
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
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
        registry.register("open_connections", "Connections open now on the TLS port", open_connections.clone());
        registry.register(
            "connections_refused",
            "Connections refused with a 503 because --max-connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "ownership_decisions",
            "Reviews denied, warned or allowed by break-glass, by outcome and owning policy",
            ownership.clone(),
        );
        registry.register(
            "policies_rejected",
            "Policy documents refused at the last load of their source (files: 1 when the set was refused); the last good version stays in force",
            policies_rejected.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in force, in Unix seconds",
            certificate_expiry.clone(),
        );
        let gitops = GitopsMetrics::default();
        registry.register(
            "gitops_sources",
            "GitOps resources hallmark caches to stamp reconciler writes with their Git source: 1 cached, 0 not installed or not readable",
            gitops.sources.clone(),
        );
        registry.register(
            "gitops_source_lookups",
            "Reconciler writes whose Git source was looked up, by result (found, no-source, missing, unavailable)",
            gitops.lookups.clone(),
        );
        let events = EventMetrics::default();
        registry.register(
            "events",
            "Kubernetes Events for denied and break-glass writes, by reason and result (sent, dropped: queue full, failed)",
            events.events.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason (certificate-refused: the client does not trust the serving certificate)",
            handshake_failures.clone(),
        );
        let m = Metrics {
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
            ownership,
            policies_rejected,
            certificate_expiry,
            gitops,
            events,
            handshake_failures,
            policy_names: Mutex::new(BTreeSet::new()),
        };
        m.create_known_series();
        m
    }

    /// A zero sample for every label set listed above.
    fn create_known_series(&self) {
        for (endpoint, outcomes) in OUTCOMES {
            for outcome in *outcomes {
                let _ = self.requests.get_or_create(&RequestLabels { endpoint, outcome });
            }
            let _ = self.duration.get_or_create(&EndpointLabels { endpoint });
            let _ = self.warnings.get_or_create(&EndpointLabels { endpoint });
            let _ = self.system_writes.get_or_create(&EndpointLabels { endpoint });
        }
        for (endpoint, kinds) in ERROR_KINDS {
            for kind in *kinds {
                let _ = self.errors.get_or_create(&ErrorLabels { endpoint, kind });
            }
        }
        for what in RELOADS {
            for result in ["ok", "error"] {
                let _ = self.reloads.get_or_create(&ReloadLabels { what, result });
            }
        }
        for source in POLICY_SOURCES {
            let _ = self.policies_rejected.get_or_create(&SourceLabels { source });
        }
        for reason in HANDSHAKE_REASONS {
            let _ = self.handshake_failures.get_or_create(&ReasonLabels { reason });
        }
    }

    /// Zero samples of `hallmark_ownership_decisions_total` for the policies in force
    /// (within [`MAX_POLICY_LABELS`]), so that the first denial by a policy is an increase.
    pub fn policies_in_force<'a>(&self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            let policy = self.policy_label(name);
            for outcome in OWNERSHIP_OUTCOMES {
                let _ = self.ownership.get_or_create(&PolicyLabels { outcome, policy: policy.clone() });
            }
        }
    }

    /// The `policy` label value of a policy name: its own for the first
    /// [`MAX_POLICY_LABELS`] names, `other` after them.
    fn policy_label(&self, policy: &str) -> String {
        let mut names = self.policy_names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(policy) {
            policy.to_owned()
        } else if names.len() < MAX_POLICY_LABELS {
            names.insert(policy.to_owned());
            policy.to_owned()
        } else {
            "other".to_owned()
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn error(&self, endpoint: &'static str, kind: &'static str) {
        let _ = self.errors.get_or_create(&ErrorLabels { endpoint, kind }).inc();
    }

    /// Counts one ownership decision (`denied`, `warned`, `break-glass`) for a policy. The
    /// first [`MAX_POLICY_LABELS`] policy names get their own label value, later ones
    /// `other`.
    pub fn ownership_decision(&self, outcome: &'static str, policy: &str) {
        let policy = self.policy_label(policy);
        let _ = self.ownership.get_or_create(&PolicyLabels { outcome, policy }).inc();
    }

    /// Sets how many policy documents of `source` were refused at its last load.
    pub fn set_policies_rejected(&self, source: &'static str, count: usize) {
        let _ = self.policies_rejected.get_or_create(&SourceLabels { source }).set(count.min(i64::MAX as usize) as i64);
    }

    /// Counts one failed TLS handshake.
    pub fn handshake_failure(&self, reason: &'static str) {
        let _ = self.handshake_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn reload(&self, what: &'static str, ok: bool) {
        let _ = self.reloads.get_or_create(&ReloadLabels { what, result: if ok { "ok" } else { "error" } }).inc();
    }
}
