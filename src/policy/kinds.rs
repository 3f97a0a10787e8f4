//! Field paths checked against the kinds a rule names.
//!
//! A rule that owns `spec.replica` of a Deployment owns nothing (the field is
//! `spec.replicas`): it would load, list as Git-owned in `kubectl hallmark owners`, and
//! never deny. For the built-in kinds, hallmark knows the schema (the Kubernetes OpenAPI
//! definitions, through `k8s-openapi`'s JSON schemas) and refuses a path that names no
//! field of any kind the rule names, with the nearest field name as a suggestion. Custom
//! resources are checked against their CRD's `openAPIV3Schema` where hallmark can read it
//! ([`check_path_in_schema`]).

use crate::ownership::path::{FieldPath, Segment};
use k8s_openapi::api;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// A built-in kind hallmark knows the schema of.
struct Known {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    schema: fn() -> Value,
}

fn schema_of<T: JsonSchema>() -> Value {
    SchemaGenerator::default().into_root_schema_for::<T>().to_value()
}

macro_rules! known {
    ($group:literal, $version:literal, $kind:literal, $plural:literal, $ty:ty) => {
        Known { group: $group, version: $version, kind: $kind, plural: $plural, schema: schema_of::<$ty> }
    };
}

/// The built-in kinds whose fields policies are checked against: the workloads and the
/// cluster-global configuration SREs keep in Git.
static KNOWN: &[Known] = &[
    known!("", "v1", "ConfigMap", "configmaps", api::core::v1::ConfigMap),
    known!("", "v1", "Secret", "secrets", api::core::v1::Secret),
    known!("", "v1", "Service", "services", api::core::v1::Service),
    known!("", "v1", "ServiceAccount", "serviceaccounts", api::core::v1::ServiceAccount),
    known!("", "v1", "Namespace", "namespaces", api::core::v1::Namespace),
    known!("", "v1", "Pod", "pods", api::core::v1::Pod),
    known!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", api::core::v1::PersistentVolumeClaim),
    known!("", "v1", "ResourceQuota", "resourcequotas", api::core::v1::ResourceQuota),
    known!("", "v1", "LimitRange", "limitranges", api::core::v1::LimitRange),
    known!("apps", "v1", "Deployment", "deployments", api::apps::v1::Deployment),
    known!("apps", "v1", "StatefulSet", "statefulsets", api::apps::v1::StatefulSet),
    known!("apps", "v1", "DaemonSet", "daemonsets", api::apps::v1::DaemonSet),
    known!("apps", "v1", "ReplicaSet", "replicasets", api::apps::v1::ReplicaSet),
    known!("batch", "v1", "Job", "jobs", api::batch::v1::Job),
    known!("batch", "v1", "CronJob", "cronjobs", api::batch::v1::CronJob),
    known!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        api::autoscaling::v2::HorizontalPodAutoscaler
    ),
    known!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", api::policy::v1::PodDisruptionBudget),
    known!("networking.k8s.io", "v1", "Ingress", "ingresses", api::networking::v1::Ingress),
    known!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", api::networking::v1::NetworkPolicy),
    known!("rbac.authorization.k8s.io", "v1", "Role", "roles", api::rbac::v1::Role),
    known!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", api::rbac::v1::RoleBinding),
    known!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", api::rbac::v1::ClusterRole),
    known!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        api::rbac::v1::ClusterRoleBinding
    ),
    known!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", api::scheduling::v1::PriorityClass),
    known!("storage.k8s.io", "v1", "StorageClass", "storageclasses", api::storage::v1::StorageClass),
    known!(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        api::admissionregistration::v1::MutatingWebhookConfiguration
    ),
    known!(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        api::admissionregistration::v1::ValidatingWebhookConfiguration
    ),
];

/// Schemas are built on first use (a few hundred KB each, with descriptions) and kept.
static SCHEMAS: LazyLock<Mutex<HashMap<&'static str, &'static Value>>> = LazyLock::new(Mutex::default);

fn schema(known: &'static Known) -> &'static Value {
    let mut cache = SCHEMAS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.entry(known.kind).or_insert_with(|| Box::leak(Box::new((known.schema)())))
}

/// What a rule's `match` names: the kinds hallmark knows, and whether it also names kinds
/// it does not (custom resources, globs) or every kind.
pub struct Named {
    known: Vec<&'static Known>,
    /// Kinds named that are not built-in ones hallmark knows (as written).
    pub unknown: Vec<String>,
    /// No `kinds`, or `*`: the rule applies to every kind and no schema decides.
    pub any_kind: bool,
}

/// The kinds a rule's `match.groups`/`match.kinds` name (a kind by name or plural,
/// case-insensitively, as `CompiledRule::matches_kind`).
pub fn named(groups: &[String], kinds: &[String]) -> Named {
    let any_kind = kinds.is_empty() || kinds.iter().any(|k| k == "*");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for k in kinds.iter().filter(|k| *k != "*") {
        let found: Vec<&'static Known> = KNOWN
            .iter()
            .filter(|n| {
                super::names_group(groups, n.group)
                    && (k.eq_ignore_ascii_case(n.kind) || k.eq_ignore_ascii_case(n.plural))
            })
            .collect();
        if found.is_empty() {
            unknown.push(k.clone());
        }
        known.extend(found);
    }
    Named { known, unknown, any_kind }
}

impl Named {
    /// `Err(message)` when `path` names no field of any of the named kinds and every kind
    /// the rule names is one hallmark knows; `Ok` otherwise (a path a known kind has, or a
    /// rule whose other kinds hallmark cannot check here: see [`check_with_crds`]).
    pub fn check(&self, path: &FieldPath) -> Result<(), String> {
        if self.any_kind || !self.unknown.is_empty() || self.known.is_empty() {
            return Ok(());
        }
        judge(path, &self.built_in())
    }

    /// The named built-in kinds with their schemas.
    fn built_in(&self) -> Vec<(String, &Value)> {
        self.known.iter().map(|k| (describe(k), schema(k))).collect()
    }
}

/// `Ok` when `path` is a field of one of the kinds (description, schema); otherwise why
/// not, with the suggestion of the kind whose schema matched the most of the path.
fn judge(path: &FieldPath, kinds: &[(String, &Value)]) -> Result<(), String> {
    let mut misses = Vec::new();
    for (_, root) in kinds {
        match check_path_in_schema(root, path) {
            Ok(()) => return Ok(()),
            Err(miss) => misses.push(miss),
        }
    }
    let names: Vec<&str> = kinds.iter().map(|(d, _)| d.as_str()).collect();
    let mut message = format!("{path} names no field of {}", names.join(" or "));
    if let Some(m) = misses.iter().max_by_key(|m| m.depth) {
        message.push_str(&format!(": {}", m.reason));
        if let Some(s) = &m.suggestion {
            message.push_str(&format!("; did you mean {s}?"));
        }
    }
    Err(message)
}

/// What checking a policy's rules against the cluster's CustomResourceDefinitions found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrdCheck {
    /// `spec.rules[I].fields[J]: PATH names no field of Widget (example.com/v1): ...`.
    pub errors: Vec<String>,
    /// Kinds the rules name that neither hallmark nor a CRD of the cluster describes: their
    /// paths are not checked.
    pub unchecked: Vec<String>,
}

/// Checks the field paths of the rules that name kinds other than the built-in ones
/// against these CustomResourceDefinitions (their `openAPIV3Schema`, every served
/// version): a path must name a field of at least one kind the rule names.
pub fn check_with_crds(
    policy: &crate::policy::CompiledPolicy,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> CrdCheck {
    let mut out = CrdCheck::default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let named = named(&rule.groups, &rule.kinds);
        if named.any_kind || named.unknown.is_empty() {
            continue;
        }
        let mut custom: Vec<(String, Value)> = Vec::new();
        let mut complete = true;
        for wanted in &named.unknown {
            let mut found = false;
            for crd in crds.iter().filter(|c| {
                let n = &c.spec.names;
                super::names_group(&rule.groups, &c.spec.group)
                    && (n.kind.eq_ignore_ascii_case(wanted) || n.plural.eq_ignore_ascii_case(wanted))
            }) {
                for version in crd.spec.versions.iter().filter(|v| v.served) {
                    let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
                    if let Some(schema) = schema.and_then(|s| serde_json::to_value(s).ok()) {
                        let desc = format!("{} ({}/{})", crd.spec.names.kind, crd.spec.group, version.name);
                        custom.push((desc, schema));
                        found = true;
                    }
                }
            }
            if !found {
                complete = false;
                if !out.unchecked.contains(wanted) {
                    out.unchecked.push(wanted.clone());
                }
            }
        }
        if !complete {
            continue;
        }
        let mut kinds = named.built_in();
        kinds.extend(custom.iter().map(|(d, v)| (d.clone(), v)));
        for (j, path) in rule.fields.iter().enumerate() {
            if let Err(e) = judge(path, &kinds) {
                out.errors.push(format!("spec.rules[{i}].fields[{j}]: {e}"));
            }
        }
    }
    out
}

fn describe(k: &Known) -> String {
    let api = if k.group.is_empty() { k.version.to_owned() } else { format!("{}/{}", k.group, k.version) };
    format!("{} ({api})", k.kind)
}

/// Why a path is not in a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// How many segments matched before the miss.
    pub depth: usize,
    pub reason: String,
    /// The path with the missing segment replaced by the nearest field name.
    pub suggestion: Option<String>,
}

/// Walks `path` through an OpenAPI v3 / JSON schema (`properties`, `additionalProperties`,
/// `items`, `$ref` into `$defs`/`definitions`, `allOf` of one). Where the schema says no
/// more (a string-or-int, a quantity, `x-kubernetes-preserve-unknown-fields`), everything
/// below is accepted.
pub fn check_path_in_schema(root: &Value, path: &FieldPath) -> Result<(), Miss> {
    let segments = path.segments();
    let mut node = resolve(root, root);
    for (i, segment) in segments.iter().enumerate() {
        if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        {
            return Ok(());
        }
        if let Some(scalar @ ("string" | "integer" | "number" | "boolean")) = node.get("type").and_then(Value::as_str) {
            let at = FieldPath(segments[..i].to_vec());
            return Err(Miss {
                depth: i,
                reason: format!("{at} is of type {scalar}, with nothing below it"),
                suggestion: None,
            });
        }
        match segment {
            Segment::Field(name) => {
                let props = node.get("properties").and_then(Value::as_object);
                if let Some(next) = props.and_then(|p| p.get(name)) {
                    node = resolve(root, next);
                    continue;
                }
                match node.get("additionalProperties") {
                    Some(Value::Bool(false)) => {}
                    Some(more @ Value::Object(_)) => {
                        node = resolve(root, more);
                        continue;
                    }
                    Some(_) => return Ok(()),
                    None if props.is_none() => return Ok(()),
                    None => {}
                }
                let at = FieldPath(segments[..i].to_vec());
                let within = if i == 0 { "the object".to_owned() } else { at.to_string() };
                let candidates: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                let suggestion = nearest(name, &candidates).map(|s| {
                    let mut fixed = segments.to_vec();
                    fixed[i] = Segment::Field(s.to_owned());
                    FieldPath(fixed).to_string()
                });
                return Err(Miss { depth: i, reason: format!("{within} has no field \"{name}\""), suggestion });
            }
            Segment::Key(_) | Segment::Index(_) | Segment::Value(_) | Segment::Any => {
                if let Some(items) = node.get("items") {
                    node = resolve(root, items);
                    continue;
                }
                if node.get("properties").is_some() || node.get("type").and_then(Value::as_str) == Some("object") {
                    let at = FieldPath(segments[..i].to_vec());
                    return Err(Miss { depth: i, reason: format!("{at} is not a list"), suggestion: None });
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Follows `$ref` (`#/$defs/NAME`, `#/definitions/NAME`) and a lone `allOf`.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            let defs = root.get("$defs").or_else(|| root.get("definitions"));
            match defs.and_then(|d| d.get(name)) {
                Some(next) => node = next,
                None => return node,
            }
        } else if let Some([one]) = node.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            node = one;
        } else {
            return node;
        }
    }
    node
}

/// The candidate nearest to `name` by edit distance, when near enough to be a typo.
fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (levenshtein(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(row[j + 1]) };
            prev = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(groups: &[&str], kinds: &[&str], path: &str) -> Result<(), String> {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        named(&s(groups), &s(kinds)).check(&crate::ownership::path::parse(path).expect("path"))
    }

    #[test]
    fn paths_of_built_in_kinds() {
        let ok = [
            (&["apps"][..], &["Deployment"][..], "spec.replicas"),
            (&[], &["deployments"], "spec.template.spec.containers[*].resources"),
            (&[], &["Deployment"], "spec.template.spec.containers[name=web].resources.limits.cpu"),
            (&[], &["Deployment"], r#"metadata.labels["cost-center"]"#),
            (&[], &["Deployment"], r#"metadata.annotations["a.b/c"]"#),
            (&[], &["Deployment"], "spec.strategy.rollingUpdate.maxSurge"),
            (&[], &["Deployment"], "spec.template.spec.containers[*].ports[containerPort=80,protocol=TCP].name"),
            (&[], &["ConfigMap"], r#"data["config.yaml"]"#),
            (&[], &["Deployment", "DaemonSet"], "spec.replicas"),
            (&[], &["NetworkPolicy"], "spec.ingress[*].from"),
            (&[], &["Widget"], "spec.whatever"),
            (&[], &["Deployment", "Widget"], "spec.whatever"),
            (&[], &[], "spec.whatever"),
            (&[], &["*"], "spec.whatever"),
            (&["apps"], &["ConfigMap"], "nothing.checked"),
        ];
        for (groups, kinds, path) in ok {
            assert_eq!(check(groups, kinds, path), Ok(()), "{kinds:?} {path}");
        }
        let bad = [
            (
                &["apps"][..],
                &["Deployment"][..],
                "spec.replica",
                "spec.replica names no field of Deployment (apps/v1): spec has no field \"replica\"; did you mean spec.replicas?",
            ),
            (
                &[],
                &["Deployment"],
                "spec.template.spec.containres[*]",
                "spec.template.spec.containres[*] names no field of Deployment (apps/v1): spec.template.spec has no field \"containres\"; did you mean spec.template.spec.containers[*]?",
            ),
            (
                &[],
                &["Deployment", "StatefulSet"],
                "spec.replicas.count",
                "spec.replicas.count names no field of Deployment (apps/v1) or StatefulSet (apps/v1): spec.replicas is of type integer, with nothing below it",
            ),
            (
                &[],
                &["DaemonSet"],
                "spec.replicas",
                "spec.replicas names no field of DaemonSet (apps/v1): spec has no field \"replicas\"",
            ),
            (
                &[],
                &["ConfigMap"],
                "dat",
                "dat names no field of ConfigMap (v1): the object has no field \"dat\"; did you mean data?",
            ),
            (&[], &["Deployment"], "spec[*]", "spec[*] names no field of Deployment (apps/v1): spec is not a list"),
        ];
        for (groups, kinds, path, want) in bad {
            assert_eq!(check(groups, kinds, path), Err(want.to_owned()), "{kinds:?} {path}");
        }
    }

    #[test]
    fn every_known_kind_has_a_walkable_schema() {
        for k in KNOWN {
            let root = schema(k);
            let path = crate::ownership::path::parse("metadata.name").expect("path");
            assert_eq!(check_path_in_schema(root, &path), Ok(()), "{}", k.kind);
            let path = crate::ownership::path::parse("metadata.nmae").expect("path");
            assert!(check_path_in_schema(root, &path).is_err(), "{}", k.kind);
        }
    }
}
