//! The ownership webhook's generated `matchConditions`, evaluated with a CEL interpreter
//! (the `cel` crate, which follows cel-go's semantics for `has()` on non-maps, missing
//! keys and errors under `&&`/`||`) against the reviews kube-apiserver really sent, the way
//! kube-apiserver binds them (`request` without `object`/`oldObject`, `object` and
//! `oldObject` as the review's values or null; see `src/webhook_config.rs`).
//!
//! The property everything here checks: **a skipped call is one that hallmark's
//! `Engine::validate` answers "allowed", with no warning and no audit annotation**, and no
//! condition ever fails to evaluate to a bool (an error would reject the write under
//! `failurePolicy: Fail`).

use hallmark::admission::Review;
use hallmark::config::Settings;
use hallmark::policy::{PolicySet, load_paths, parse_documents};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::webhook_config::ownership_conditions;
use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every capture: the top-level reviews (not the `.after.json` stored objects) and both
/// views in `validating/`.
fn captures() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures", "tests/fixtures/validating"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("fixtures")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.ends_with(".json") && !name.ends_with(".after.json")
            })
            .collect();
        files.sort();
        for f in files {
            let v: Value = serde_json::from_slice(&std::fs::read(&f).expect("read")).expect("json");
            let name = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
            out.push((name, v));
        }
    }
    assert!(out.len() >= 45, "found {} captures", out.len());
    out
}

fn platform() -> PolicySet {
    let path = root().join("manifests/examples/ownershippolicy-platform.yaml");
    PolicySet { policies: load_paths(&[path]).expect("example policy") }
}

fn policy_sets() -> Vec<(&'static str, PolicySet)> {
    vec![("built-in default", PolicySet::default()), ("platform example", platform())]
}

fn engine() -> Engine {
    Engine::new(Stamper::new(Settings::default()), OnError::Allow)
}

/// Compiled conditions, so that the property tests do not parse them on every case.
struct Compiled(Vec<(String, cel::Program)>);

impl Compiled {
    fn new(conditions: &[MatchCondition]) -> Compiled {
        Compiled(
            conditions
                .iter()
                .map(|c| {
                    let p = on_a_large_stack(|| cel::Program::compile(&c.expression))
                        .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{}", c.name, c.expression));
                    (c.name.clone(), p)
                })
                .collect(),
        )
    }

    /// Whether kube-apiserver calls the webhook: all conditions true. Err when any
    /// condition does not evaluate to a bool.
    fn calls(&self, review: &Value) -> Result<bool, String> {
        on_a_large_stack(|| self.evaluate(review))
    }

    fn evaluate(&self, review: &Value) -> Result<bool, String> {
        let request = &review["request"];
        let mut bound = request.clone();
        if let Some(m) = bound.as_object_mut() {
            // kube-apiserver's `request` variable has neither (cel/filter.go).
            m.remove("object");
            m.remove("oldObject");
            m.remove("uid");
        }
        let mut ctx = cel::Context::default();
        ctx.add_variable("request", &bound).map_err(|e| e.to_string())?;
        ctx.add_variable("object", request.get("object").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
        ctx.add_variable("oldObject", request.get("oldObject").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
        let mut all = true;
        for (name, program) in &self.0 {
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => all &= b,
                Ok(other) => return Err(format!("{name} evaluated to {other:?}")),
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        Ok(all)
    }
}

/// Runs `f` on a thread with a 64 MiB stack: the `cel` crate's interpreter recurses once
/// per operator, which a debug build's 2 MiB test thread cannot always hold for the longer
/// generated expressions (cel-go, in kube-apiserver, has no such limit below its own
/// nesting limits).
fn on_a_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(scope, f)
            .expect("spawn")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What hallmark answers on /validate: (allowed, no warnings, no audit annotations).
fn quiet_allow(review: &Value, policies: &PolicySet) -> bool {
    let review = Review::decode(&serde_json::to_vec(review).expect("json")).expect("decodes");
    let d = engine().validate(&review.request, policies);
    d.answer.allowed && d.answer.warnings.is_empty() && d.answer.audit_annotations.is_empty()
}

/// Evaluates one review; panics when a skipped call would have been answered otherwise.
fn check(name: &str, review: &Value, policies: &PolicySet, compiled: &Compiled) -> bool {
    let calls = compiled.calls(review).unwrap_or_else(|e| panic!("{name}: a condition failed to evaluate: {e}"));
    if !calls {
        assert!(quiet_allow(review, policies), "{name}: skipped, but hallmark would not answer a quiet allow");
    }
    calls
}

/// Whether the ownership webhook's `rules` select the request (operation, group,
/// resource and subresource), before any matchCondition.
fn registered(review: &Value) -> bool {
    let r = &review["request"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut resource = s(&r["resource"]["resource"]);
    if let Some(sub) = r.get("subResource").and_then(Value::as_str) {
        resource = format!("{resource}/{sub}");
    }
    let config = hallmark::webhook_config::validating(&Default::default(), &PolicySet::default());
    let webhooks = config.webhooks.unwrap_or_default();
    webhooks[0].rules.iter().flatten().any(|rule| {
        let has = |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v);
        has(&rule.operations, &s(&r["operation"]))
            && has(&rule.api_groups, &s(&r["resource"]["group"]))
            && has(&rule.resources, &resource)
    })
}

#[test]
fn every_capture_that_is_skipped_is_a_quiet_allow() {
    let captures = captures();
    // Writes the rules select: every UPDATE/DELETE of the listed resources and scale.
    let selected: Vec<&(String, Value)> = captures.iter().filter(|(_, r)| registered(r)).collect();
    let creates = captures.iter().filter(|(_, r)| r["request"]["operation"] == "CREATE").count();
    assert!(captures.iter().all(|(_, r)| r["request"]["operation"] != "CREATE" || !registered(r)), "no CREATE is sent");
    for (label, policies) in policy_sets() {
        let compiled = Compiled::new(&ownership_conditions(&policies));
        let mut skipped = Vec::new();
        for (name, review) in &captures {
            // Every capture, selected by the rules or not, is checked.
            if !check(name, review, &policies, &compiled) && registered(review) {
                skipped.push(name.as_str());
            }
        }
        eprintln!(
            "{label}: {} captures ({creates} CREATE, no longer sent); of the {} UPDATE/DELETE/scale writes the rules select, {} are skipped by the conditions: {skipped:#?}",
            captures.len(),
            selected.len(),
            skipped.len(),
        );
        // The conditions are not vacuous: they skip UPDATEs and DELETEs of objects no
        // policy touches (and the cases below show they send the others).
        assert!(!skipped.is_empty(), "{label}: some UPDATE or DELETE is skipped");
    }
}

#[test]
fn captures_hallmark_warns_or_denies_on_are_sent() {
    for (label, policies) in policy_sets() {
        let compiled = Compiled::new(&ownership_conditions(&policies));
        let mut answered = 0;
        for (name, review) in &captures() {
            if !quiet_allow(review, &policies) {
                answered += 1;
                assert!(compiled.calls(review).expect("evaluates"), "{label}: {name} must be sent");
            }
        }
        assert!(answered > 0, "{label}: some capture gets a warning or a denial");
    }
}

fn capture(name: &str) -> Value {
    let path = root().join("tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("json")
}

/// dev's `kubectl patch` of the CPU limit Flux owns, as the validating webhook saw it.
fn flux_owned_patch() -> Value {
    capture("validating/deploy-platform-agent-update-patch-cpu-dev-flux-owned.validating.json")
}

fn flux_user(pod_token: bool) -> Value {
    let mut u = json!({"username": "system:serviceaccount:flux-system:kustomize-controller",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"]});
    if pod_token {
        u["extra"] = json!({"authentication.kubernetes.io/credential-id": ["JTI=x"],
            "authentication.kubernetes.io/pod-name": ["kustomize-controller-0"]});
    }
    u
}

fn with_user(mut review: Value, user: Value) -> Value {
    review["request"]["userInfo"] = user;
    review
}

/// A policy like the example, with `requirePodToken` and a rule for team namespaces only.
const STRICT: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata: {name: strict}
spec:
  owner:
    name: platform-config
    reconcilers:
      users: ["system:serviceaccount:flux-system:kustomize-controller"]
      groups: ["flux-reconcilers"]
      fieldManagers: ["kustomize-controller"]
      requirePodToken: true
  rules:
    - match: {groups: ["apps"], kinds: ["deployments"], namespaces: ["team-*", "prod?"]}
      fields: ["spec.template.spec.containers[*].resources"]
      action: deny
  managedFields: MF
  deleteProtection: DP
  breakGlass: {groups: ["sre-oncall"]}
"#;

fn strict(managed_fields: &str, delete_protection: bool) -> PolicySet {
    let text = STRICT.replace("MF", managed_fields).replace("DP", &delete_protection.to_string());
    PolicySet { policies: parse_documents(&text, "strict.yaml").expect("valid") }
}

/// (case, review, policies, sent?) — and every skipped one is a quiet allow (`check`).
#[test]
fn table_of_writes_built_from_captures() {
    let dev_patch = flux_owned_patch();
    let break_glass = with_user(
        dev_patch.clone(),
        json!({"username": "sre-alice", "groups": ["sre-oncall", "system:authenticated"]}),
    );
    let delete = capture("validating/deploy-web-delete-dev.validating.json");
    let mut flux_managed_delete = delete.clone();
    flux_managed_delete["request"]["oldObject"]["metadata"]["managedFields"][0]["manager"] =
        json!("kustomize-controller");
    let mut unmanaged_patch = dev_patch.clone();
    for e in unmanaged_patch["request"]["oldObject"]["metadata"]["managedFields"].as_array_mut().expect("list") {
        e["manager"] = json!("kubectl");
    }
    let in_namespace = |review: &Value, ns: &str| {
        let mut r = review.clone();
        r["request"]["namespace"] = json!(ns);
        r
    };
    let scale = capture("validating/deploy-platform-agent-scale-dev-flux-owned-replicas.validating.json");

    let cases: Vec<(&str, Value, PolicySet, bool)> = vec![
        ("dev changes a Flux-owned field (default: warning)", dev_patch.clone(), PolicySet::default(), true),
        ("dev changes a Flux-owned field (platform: denied)", dev_patch.clone(), platform(), true),
        ("the same write by the reconciler", with_user(dev_patch.clone(), flux_user(false)), platform(), false),
        (
            "the reconciler without a pod token under requirePodToken",
            with_user(dev_patch.clone(), flux_user(false)),
            strict("deny", true),
            true,
        ),
        (
            "the reconciler with a pod token under requirePodToken",
            with_user(dev_patch.clone(), flux_user(true)),
            strict("deny", true),
            false,
        ),
        (
            "a member of the reconcilers' group with a pod token",
            with_user(
                dev_patch.clone(),
                json!({"username": "x", "groups": ["flux-reconcilers"],
                    "extra": {"authentication.kubernetes.io/credential-id": ["JTI=y"]}}),
            ),
            strict("deny", true),
            false,
        ),
        ("a break-glass user (platform: warned)", break_glass.clone(), platform(), true),
        ("a break-glass user (default: warned)", break_glass, PolicySet::default(), true),
        ("DELETE of a Flux-managed object, deleteProtection", flux_managed_delete.clone(), platform(), true),
        (
            "DELETE of a Flux-managed object, no deleteProtection",
            flux_managed_delete.clone(),
            PolicySet::default(),
            false,
        ),
        ("DELETE of an object only dev manages", delete.clone(), platform(), false),
        ("DELETE by the reconciler", with_user(delete, flux_user(false)), platform(), false),
        ("unmanaged object in a namespace a rule names", unmanaged_patch.clone(), strict("ignore", false), true),
        (
            "unmanaged object outside the rule's globs",
            in_namespace(&unmanaged_patch, "production"),
            strict("ignore", false),
            false,
        ),
        ("a namespace the `?` glob names", in_namespace(&unmanaged_patch, "prod1"), strict("ignore", false), true),
        ("unmanaged object, default policy", unmanaged_patch.clone(), PolicySet::default(), false),
        (
            "Flux-managed object outside the rule's globs, managedFields deny",
            in_namespace(&dev_patch, "production"),
            strict("deny", false),
            true,
        ),
        (
            "Flux-managed object outside the rule's globs, managedFields ignore",
            in_namespace(&dev_patch, "production"),
            strict("ignore", false),
            false,
        ),
        (
            "managedFields reset by dev (`[{}]`), default policy",
            reset_managed_fields(&dev_patch),
            PolicySet::default(),
            true,
        ),
        ("managedFields reset by dev, platform", reset_managed_fields(&dev_patch), platform(), true),
        (
            "Flux told to leave the object alone (reconcile: disabled), managedFields deny",
            in_namespace(
                &with_marker(&dev_patch, "annotations", "kustomize.toolkit.fluxcd.io/reconcile", "Disabled"),
                "production",
            ),
            strict("deny", false),
            false,
        ),
        (
            "Flux told to leave the object alone (ssa: ignore label), managedFields deny",
            in_namespace(&with_marker(&dev_patch, "labels", "kustomize.toolkit.fluxcd.io/ssa", "ignore"), "production"),
            strict("deny", false),
            false,
        ),
        (
            "ssa: IfNotPresent is left to hallmark (it counts only when Flux applied it)",
            in_namespace(
                &with_marker(&dev_patch, "annotations", "kustomize.toolkit.fluxcd.io/ssa", "IfNotPresent"),
                "production",
            ),
            strict("deny", false),
            true,
        ),
        (
            "ssa: Merge does not stop Flux",
            in_namespace(
                &with_marker(&dev_patch, "annotations", "kustomize.toolkit.fluxcd.io/ssa", "Merge"),
                "production",
            ),
            strict("deny", false),
            true,
        ),
        (
            "reconcile: disabled, but a rule names the namespace",
            with_marker(&dev_patch, "annotations", "kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
            platform(),
            true,
        ),
        (
            "DELETE of an object Flux was told to ignore, deleteProtection (sent: Flux may recreate it)",
            with_marker(&flux_managed_delete, "annotations", "kustomize.toolkit.fluxcd.io/ssa", "Ignore"),
            platform(),
            true,
        ),
        ("a scale write (no managedFields in its Scale)", scale.clone(), PolicySet::default(), true),
        ("a scale write by the reconciler", with_user(scale, flux_user(false)), platform(), true),
    ];
    for (name, review, policies, sent) in cases {
        let compiled = Compiled::new(&ownership_conditions(&policies));
        assert_eq!(check(name, &review, &policies, &compiled), sent, "{name}");
    }
}

/// The write with `metadata.managedFields` as kube-apiserver leaves it after a client sent
/// `[{}]`: only the writer's own entry.
fn reset_managed_fields(review: &Value) -> Value {
    let mut r = review.clone();
    r["request"]["object"]["metadata"]["managedFields"] = json!([{"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {
                "f:resources": {"f:limits": {"f:cpu": {}}}}}}}}}}]);
    r
}

/// The write with a marker on both the old and the new object.
fn with_marker(review: &Value, map: &str, key: &str, value: &str) -> Value {
    let mut r = review.clone();
    for side in ["oldObject", "object"] {
        if r["request"][side].is_object() {
            let meta = &mut r["request"][side]["metadata"];
            if !meta[map].is_object() {
                meta[map] = json!({});
            }
            meta[map][key] = json!(value);
        }
    }
    r
}

// ---- properties: arbitrary writes assembled from captures ----

const USERS: [&str; 5] = [
    "dev",
    "sre-alice",
    "system:serviceaccount:flux-system:kustomize-controller",
    "system:serviceaccount:argocd:argocd-application-controller",
    "x",
];
const GROUPS: [&str; 4] = ["developers", "sre-oncall", "flux-reconcilers", "system:authenticated"];
const MANAGERS: [&str; 6] =
    ["kubectl", "kubectl-patch", "kustomize-controller", "helm-controller", "argocd-controller", "before-first-apply"];
const NAMESPACES: [Option<&str>; 5] = [Some("team-a"), Some("team-b"), Some("prod1"), Some("production"), None];
const KINDS: [(&str, &str); 4] =
    [("Deployment", "deployments"), ("StatefulSet", "statefulsets"), ("DaemonSet", "daemonsets"), ("Job", "jobs")];

fn policy_pool() -> Vec<PolicySet> {
    let mut both = platform().policies;
    both.extend(strict("warn", false).policies);
    vec![
        PolicySet::default(),
        platform(),
        strict("deny", true),
        strict("ignore", false),
        strict("warn", true),
        PolicySet { policies: both },
    ]
}

#[derive(Debug, Clone)]
struct Write {
    base: usize,
    delete: bool,
    user: usize,
    groups: Vec<usize>,
    token: bool,
    managers: Vec<usize>,
    namespace: usize,
    kind: usize,
    policies: usize,
    /// An index into [`MARKERS`], put on the old object (and the new one unless `added`).
    marker: usize,
    /// The marker is added by this write (absent from the old object).
    added: bool,
    /// The write resets managedFields (`[{}]`): only its own entry is left.
    reset: bool,
}

/// (where, key, value) of reconciler markers; the first is none.
const MARKERS: [Option<(&str, &str, &str)>; 6] = [
    None,
    Some(("annotations", "kustomize.toolkit.fluxcd.io/reconcile", "disabled")),
    Some(("labels", "kustomize.toolkit.fluxcd.io/reconcile", "DISABLED")),
    Some(("annotations", "kustomize.toolkit.fluxcd.io/ssa", "Ignore")),
    Some(("labels", "kustomize.toolkit.fluxcd.io/ssa", "IfNotPresent")),
    Some(("annotations", "kustomize.toolkit.fluxcd.io/ssa", "Merge")),
];

fn write() -> impl Strategy<Value = Write> {
    (
        0usize..3,
        any::<bool>(),
        0..USERS.len(),
        prop::collection::vec(0..GROUPS.len(), 0..3),
        any::<bool>(),
        prop::collection::vec(0..MANAGERS.len(), 1..4),
        0..NAMESPACES.len(),
        0..KINDS.len(),
        0usize..6,
        (0..MARKERS.len(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(base, delete, user, groups, token, managers, namespace, kind, policies, (marker, added, reset))| Write {
                base,
                delete,
                user,
                groups,
                token,
                managers,
                namespace,
                kind,
                policies,
                marker,
                added,
                reset,
            },
        )
}

fn bases() -> Vec<Value> {
    vec![
        flux_owned_patch(),
        capture("deploy-web-update-csa-image-dev.json"),
        capture("deploy-platform-agent-update-ssa-flux-revert-drift.json"),
    ]
}

fn build(w: &Write, bases: &[Value]) -> Value {
    let mut review = bases[w.base].clone();
    let r = &mut review["request"];
    let mut user =
        json!({"username": USERS[w.user], "groups": w.groups.iter().map(|g| GROUPS[*g]).collect::<Vec<_>>()});
    if w.token {
        user["extra"] = json!({"authentication.kubernetes.io/credential-id": ["JTI=z"]});
    }
    r["userInfo"] = user;
    if let Some(entries) = r["oldObject"]["metadata"]["managedFields"].as_array_mut() {
        for (i, e) in entries.iter_mut().enumerate() {
            e["manager"] = json!(MANAGERS[w.managers[i % w.managers.len()]]);
        }
    }
    match NAMESPACES[w.namespace] {
        Some(ns) => r["namespace"] = json!(ns),
        None => {
            if let Some(m) = r.as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    let (kind, resource) = KINDS[w.kind];
    r["kind"]["kind"] = json!(kind);
    r["resource"]["resource"] = json!(resource);
    if w.reset && r["object"].is_object() {
        r["object"]["metadata"]["managedFields"] =
            json!([{"manager": "kubectl-patch", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
    }
    if w.delete {
        r["operation"] = json!("DELETE");
        r["object"] = Value::Null;
    }
    if let Some((map, key, value)) = MARKERS[w.marker] {
        review = with_marker(&review, map, key, value);
        if w.added
            && let Some(m) = review["request"]["oldObject"]["metadata"][map].as_object_mut()
        {
            m.remove(key);
        }
    }
    review
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn a_skipped_write_is_always_a_quiet_allow(w in write()) {
        thread_local! {
            static FIXED: (Vec<Value>, Vec<(PolicySet, Compiled)>) = (
                bases(),
                policy_pool().into_iter().map(|p| { let c = Compiled::new(&ownership_conditions(&p)); (p, c) }).collect(),
            );
        }
        FIXED.with(|(bases, pool)| {
            let review = build(&w, bases);
            let (policies, compiled) = &pool[w.policies];
            let calls = compiled.calls(&review).map_err(|e| TestCaseError::fail(format!("{w:?}: {e}")))?;
            prop_assert!(calls || quiet_allow(&review, policies), "{:?}: skipped but not a quiet allow", w);
            Ok(())
        })?;
    }
}

#[test]
fn reviews_without_optional_fields_evaluate_without_error() {
    // The fields kube-apiserver omits when empty: username, groups, extra, namespace,
    // subResource; managedFields entries without a manager; objects without metadata.
    let mut review = flux_owned_patch();
    let r = &mut review["request"];
    r["userInfo"] = json!({});
    r.as_object_mut().expect("object").remove("namespace");
    r["oldObject"]["metadata"]["managedFields"] = json!([{"operation": "Update"}]);
    for policies in policy_pool() {
        // All of them, the shipped system-writer conditions included: without a username
        // they send (an error would reject the write under failurePolicy: Fail).
        let all = hallmark::webhook_config::ownership_conditions(&policies);
        assert_eq!(Compiled::new(&all[..4]).calls(&review), Ok(true), "the system-writer conditions send");
        let compiled = Compiled::new(&all);
        compiled.calls(&review).expect("no error with fields absent");
        let mut bare = review.clone();
        bare["request"]["oldObject"] = json!({"kind": "Deployment"});
        compiled.calls(&bare).expect("no error without metadata");
    }
}

#[test]
fn expressions_stay_far_below_the_cost_budget() {
    // RuntimeCELCostBudgetMatchConditions (k8s.io/apiserver/pkg/apis/cel/config.go).
    const BUDGET: u64 = 2_500_000;
    for policies in policy_pool() {
        let cost = hallmark::webhook_config::estimated_cost(&policies, 1000);
        assert!(cost < BUDGET / 20, "estimated {cost} for 1000 managedFields entries");
    }
}

/// A configured `systemWriters` set (not the default) gets one generated condition that
/// skips exactly those writers — names and globs, users and groups — and hallmark, given
/// the same config, answers their writes "allowed" with nothing to add.
#[test]
fn configured_system_writers_are_skipped_as_hallmark_allows_them() {
    let settings = Settings::from_yaml(
        "systemWriters:\n  users: [\"system:serviceaccount:kube-system:*\", \"ops-janitor\"]\n  groups: [\"system:nodes\"]\n",
        "config.yaml",
    )
    .expect("config");
    let writers = &settings.system_writers;
    let conditions = hallmark::webhook_config::ownership_conditions_for(
        writers.users.as_written(),
        writers.groups.as_written(),
        &platform(),
    );
    assert_eq!(conditions[0].name, "not-a-system-writer");
    assert_eq!(conditions.len(), 2, "one system-writer condition, then the ownership one");
    let compiled = Compiled::new(&conditions);
    let engine = Engine::new(Stamper::new(settings.clone()), OnError::Allow);
    let base = capture("deploy-platform-agent-update-patch-cpu-dev-flux-owned.json");
    for (user, groups, skipped) in [
        ("system:serviceaccount:kube-system:namespace-controller", json!(["system:serviceaccounts"]), true),
        ("ops-janitor", json!([]), true),
        ("system:node:worker-1", json!(["system:nodes", "system:authenticated"]), true),
        // Not in the configured set any more (it replaced the default): sent.
        ("system:kube-controller-manager", json!(["system:authenticated"]), false),
        ("dev", json!(["developers", "system:authenticated"]), false),
        ("ops-janitor-2", json!([]), false),
    ] {
        let mut review = base.clone();
        review["request"]["userInfo"] = json!({"username": user, "groups": groups});
        let calls = compiled.calls(&review).unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(!calls, skipped, "{user}");
        let decoded = Review::decode(&serde_json::to_vec(&review).expect("json")).expect("decodes");
        let answer = engine.validate(&decoded.request, &platform()).answer;
        if skipped {
            assert!(answer.allowed && answer.warnings.is_empty(), "{user}: skipped, so hallmark must allow quietly");
        } else {
            assert!(!answer.allowed, "{user}: the Flux-owned CPU limit change is judged and denied: {answer:?}");
        }
    }
    // Empty lists: no system-writer condition at all.
    assert_eq!(hallmark::webhook_config::ownership_conditions_for(&[], &[], &platform()).len(), 1);
}
