//! Ownership policies: the `OwnershipPolicy` schema (file or custom resource), its
//! validation, compilation into a form the verdict can evaluate cheaply, and loading.

pub mod kinds;
pub mod load;
pub mod schema;

pub use load::{PolicyError, load_paths, parse_documents};
pub use schema::*;

use crate::ownership::path::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use wildmatch::WildMatch;

/// `deny` or `warn` for a rule; `ignore|warn|deny` for managedFields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    Ignore,
    Warn,
    Deny,
}

/// Names of users or of groups, as compared with `userInfo.username` or an entry of
/// `userInfo.groups`: exact names and globs, compiled once when the policy or config is
/// loaded so that matching a request allocates nothing.
///
/// A name containing `*` or `?` is a glob (wildmatch syntax: `*` any run of characters,
/// `:` included; `?` exactly one character; no escapes), e.g.
/// `system:serviceaccount:*:flux-reconciler`, the service account `flux-reconciler` of
/// every namespace. Any other name is compared exactly.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// As written, in order (for messages).
    written: Vec<String>,
    exact: Vec<String>,
    globs: Vec<WildMatch>,
}

/// True when `name` is a glob (contains `*` or `?`).
pub fn is_glob(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// Why a user or group name cannot be used in `users`/`groups` lists: empty, leading or
/// trailing whitespace (a typo that would silently match nobody), or a glob made of
/// wildcards only (`*`, `?*`), which matches every identity. The error is a sentence
/// without the field, e.g. `"*" matches every user or group; ...`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.trim() != name {
        return Err(format!("{name:?} has leading or trailing whitespace; remove it"));
    }
    if name.chars().all(|c| c == '*' || c == '?') {
        return Err(format!(
            "{name:?} matches every user or group; name the identities, e.g. system:serviceaccount:*:flux-reconciler"
        ));
    }
    Ok(())
}

impl Names {
    /// Compiles `names` (globs and exact names; see [`Names`]). Validation is the
    /// caller's ([`check_name`]).
    pub fn new(names: Vec<String>) -> Names {
        let mut exact = Vec::new();
        let mut globs = Vec::new();
        for name in &names {
            if is_glob(name) {
                globs.push(WildMatch::new(name));
            } else {
                exact.push(name.clone());
            }
        }
        Names { written: names, exact, globs }
    }

    /// True when `name` equals an exact name or matches a glob.
    pub fn matches(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name) || self.globs.iter().any(|g| g.matches(name))
    }

    /// The names as written.
    pub fn as_written(&self) -> &[String] {
        &self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// True when at least one name is a glob.
    pub fn has_globs(&self) -> bool {
        !self.globs.is_empty()
    }
}

/// Users and groups, as compared with `userInfo` (each list: exact names and globs, see
/// [`Names`]).
#[derive(Clone, Debug, Default)]
pub struct Subjects {
    pub users: Names,
    pub groups: Names,
}

impl Subjects {
    pub fn new(users: Vec<String>, groups: Vec<String>) -> Subjects {
        Subjects { users: Names::new(users), groups: Names::new(groups) }
    }

    /// True when `username` is one of the users or one of `groups` one of the groups.
    /// On every write: allocation-free.
    pub fn contains(&self, username: &str, groups: &[String]) -> bool {
        self.users.matches(username) || (!self.groups.is_empty() && groups.iter().any(|g| self.groups.matches(g)))
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// For messages: `users: a, b; groups: none` (at most 5 names of each list shown).
    pub fn describe(&self) -> String {
        fn list(names: &[String]) -> String {
            if names.is_empty() {
                return "none".to_owned();
            }
            let mut s = names.iter().take(5).map(|n| crate::admission::truncate(n, 120)).collect::<Vec<_>>().join(", ");
            if names.len() > 5 {
                s.push_str(&format!(" and {} more", names.len() - 5));
            }
            s
        }
        format!("users: {}; groups: {}", list(self.users.as_written()), list(self.groups.as_written()))
    }
}

/// A policy ready to evaluate: patterns parsed, globs compiled.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub owner_name: String,
    pub repository: Option<String>,
    pub reconcilers: Subjects,
    pub reconciler_field_managers: Vec<String>,
    pub require_pod_token: bool,
    pub rules: Vec<CompiledRule>,
    pub managed_fields: Enforcement,
    pub delete_protection: bool,
    pub break_glass: Subjects,
}

#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// API groups (`""` is core); empty = any.
    pub groups: Vec<String>,
    /// Kinds; empty = any.
    pub kinds: Vec<String>,
    /// Namespace globs; empty = any (and cluster-scoped objects).
    pub namespaces: Vec<WildMatch>,
    pub label_selector: Option<LabelSelector>,
    pub fields: Vec<FieldPath>,
    pub action: Enforcement,
}

/// The live set of policies. Empty `policies` means the built-in default is in force.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<CompiledPolicy>,
}

impl PolicySet {
    pub fn new(policies: Vec<CompiledPolicy>) -> Self {
        PolicySet { policies }
    }

    /// The policies in force: the loaded ones, or the built-in default when none are.
    pub fn effective(&self) -> impl Iterator<Item = &CompiledPolicy> {
        let policies: &[CompiledPolicy] =
            if self.policies.is_empty() { std::slice::from_ref(&*BUILTIN_DEFAULT) } else { &self.policies };
        policies.iter()
    }

    /// True when no policy is loaded and the built-in default is in force.
    pub fn is_builtin_default(&self) -> bool {
        self.policies.is_empty()
    }
}

/// The well-known Git reconciler identities (Flux, Argo CD): the controllers' own
/// service accounts in their default install namespaces.
///
/// Deliberately no glob for the tenant service accounts that Flux and Argo CD
/// impersonate (`spec.serviceAccountName`, `--default-service-account`, AppProject
/// `destinationServiceAccounts`): their names are the cluster's own choice (Flux's
/// lockdown example uses `default`, `flux create tenant` names the account after the
/// tenant), and whoever may create a service account of that name in a namespace, or a
/// token for one, would become a reconciler. Clusters name theirs in a policy or in the
/// config file's `reconcilers`.
pub const BUILTIN_RECONCILER_USERS: [&str; 3] = [
    "system:serviceaccount:flux-system:kustomize-controller",
    "system:serviceaccount:flux-system:helm-controller",
    "system:serviceaccount:argocd:argocd-application-controller",
];

/// The field managers with which Flux and Argo CD apply.
pub const BUILTIN_RECONCILER_FIELD_MANAGERS: [&str; 4] =
    ["kustomize-controller", "helm-controller", "argocd-controller", "argocd-application-controller"];

/// The name of the built-in default policy.
pub const BUILTIN_DEFAULT_NAME: &str = "builtin-default";

static BUILTIN_DEFAULT: LazyLock<CompiledPolicy> = LazyLock::new(build_builtin_default);

/// The built-in default (docs/reference.md, "OwnershipPolicy"), in force when no policy is given: owner "git",
/// the Flux and Argo CD reconcilers, `managedFields: warn`, no rules.
pub fn builtin_default() -> CompiledPolicy {
    BUILTIN_DEFAULT.clone()
}

fn build_builtin_default() -> CompiledPolicy {
    CompiledPolicy {
        name: BUILTIN_DEFAULT_NAME.to_string(),
        owner_name: "git".to_string(),
        repository: None,
        reconcilers: Subjects::new(BUILTIN_RECONCILER_USERS.iter().map(|s| s.to_string()).collect(), Vec::new()),
        reconciler_field_managers: BUILTIN_RECONCILER_FIELD_MANAGERS.iter().map(|s| s.to_string()).collect(),
        require_pod_token: false,
        rules: Vec::new(),
        managed_fields: Enforcement::Warn,
        delete_protection: false,
        break_glass: Subjects::default(),
    }
}

impl CompiledPolicy {
    /// True when `manager` (a managedFields entry's manager) is a reconciler field manager.
    pub fn is_reconciler_field_manager(&self, manager: &str) -> bool {
        self.reconciler_field_managers.iter().any(|m| m == manager)
    }
}

/// Labels to match a selector against: a `BTreeMap<String, String>`, or the JSON value
/// of `metadata.labels` (a non-object, or a non-string label value, counts as absent).
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for serde_json::Map<String, serde_json::Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(serde_json::Value::as_str)
    }
}

impl Labels for serde_json::Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(serde_json::Value::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for Option<&L> {
    fn label(&self, key: &str) -> Option<&str> {
        self.and_then(|l| l.label(key))
    }
}

/// Kubernetes label selector semantics: every `matchLabels` pair present, and every
/// expression true (`In`: present with one of the values; `NotIn`: absent or none of
/// the values; `Exists`; `DoesNotExist`). An empty selector matches everything; an
/// unknown operator matches nothing.
pub fn selector_matches<L: Labels + ?Sized>(selector: &LabelSelector, labels: &L) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.label(k) == Some(v.as_str()));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|req| {
            let value = labels.label(&req.key);
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Kubernetes' `UnsafeGuessKindToResource`: `Deployment` -> `deployments`,
/// `NetworkPolicy` -> `networkpolicies`, `Ingress` -> `ingresses`.
pub fn guess_resource(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// `guess_resource(kind) == resource`, without allocating.
fn is_guessed_resource(kind: &str, resource: &str) -> bool {
    let lower_eq =
        |a: &str, b: &str| a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x.to_ascii_lowercase() == y);
    if !kind.is_ascii() {
        return guess_resource(kind) == resource;
    }
    let k = kind.as_bytes();
    if k.last().is_some_and(|c| c.eq_ignore_ascii_case(&b's')) {
        resource.strip_suffix("es").is_some_and(|stem| lower_eq(kind, stem))
    } else if k.last().is_some_and(|c| c.eq_ignore_ascii_case(&b'y')) {
        resource.strip_suffix("ies").is_some_and(|stem| lower_eq(&kind[..kind.len() - 1], stem))
    } else {
        resource.strip_suffix('s').is_some_and(|stem| lower_eq(kind, stem))
    }
}

/// True when a rule's `match.groups` names this API group: none given, `*`, or the group.
pub fn names_group(groups: &[String], group: &str) -> bool {
    groups.is_empty() || groups.iter().any(|g| g == "*" || g == group)
}

impl CompiledRule {
    /// True when the rule applies to objects of this API group (`""` is core), kind
    /// (`Deployment`) and resource (`deployments`; a `/subresource` suffix is ignored).
    /// A `kinds` entry matches the kind (case-insensitively), the resource, or is `*`;
    /// matching the resource lets a write to a subresource such as `scale` (whose object
    /// is a `Scale`) be matched by its parent's resource.
    pub fn matches_kind(&self, group: &str, kind: &str, resource: &str) -> bool {
        // Runs for every rule on every write: no allocation, group first.
        if !names_group(&self.groups, group) {
            return false;
        }
        let resource = resource.split('/').next().unwrap_or(resource);
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                k == "*"
                    || k.eq_ignore_ascii_case(kind)
                    || (!resource.is_empty() && (k.eq_ignore_ascii_case(resource) || is_guessed_resource(k, resource)))
            })
    }

    /// True when the rule applies in this namespace (`None`: a cluster-scoped object,
    /// which only a rule without `namespaces` covers).
    pub fn matches_namespace(&self, namespace: Option<&str>) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        namespace.is_some_and(|ns| self.namespaces.iter().any(|glob| glob.matches(ns)))
    }

    /// True when the rule's `labelSelector` (if any) selects these labels.
    pub fn matches_labels<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.label_selector.as_ref().is_none_or(|selector| selector_matches(selector, labels))
    }

    /// [`matches_labels`](Self::matches_labels) on `metadata.labels` of a whole object.
    pub fn matches_object_labels(&self, object: &serde_json::Value) -> bool {
        self.matches_labels(&object.pointer("/metadata/labels"))
    }
}

/// Compiles one `OwnershipPolicy` resource (from `--watch-policies` or the plugin); the
/// error is one line listing every problem, for a status condition or an event.
pub fn compile_resource(doc: &OwnershipPolicy) -> Result<CompiledPolicy, String> {
    compile(doc).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

/// The `OwnershipPolicy` CustomResourceDefinition as YAML (`hallmark crd`).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt as _;
    serde_yaml::to_string(&OwnershipPolicy::crd())
}

#[cfg(test)]
mod tests {

    #[test]
    fn guessed_resource_check_agrees_with_guess_resource() {
        for kind in
            ["Deployment", "Ingress", "NetworkPolicy", "Status", "deployment", "HorizontalPodAutoscaler", "Gateway"]
        {
            let resource = guess_resource(kind);
            assert!(is_guessed_resource(kind, &resource), "{kind} -> {resource}");
            for wrong in ["deployment", "deploymentss", "ingresss", "networkpolicys", "", "s"] {
                assert_eq!(is_guessed_resource(kind, wrong), guess_resource(kind) == wrong, "{kind} vs {wrong}");
            }
        }
    }

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn rule(groups: &[&str], kinds: &[&str], namespaces: &[&str]) -> CompiledRule {
        CompiledRule {
            groups: groups.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            namespaces: namespaces.iter().map(|s| WildMatch::new(s)).collect(),
            label_selector: None,
            fields: Vec::new(),
            action: Enforcement::Deny,
        }
    }

    #[test]
    fn builtin_default_is_in_force_without_policies() {
        let set = PolicySet::default();
        let effective: Vec<&CompiledPolicy> = set.effective().collect();
        assert_eq!(effective.len(), 1);
        let d = effective[0];
        assert_eq!(d.owner_name, "git");
        assert_eq!(d.repository, None);
        assert_eq!(d.managed_fields, Enforcement::Warn);
        assert!(d.rules.is_empty());
        assert!(!d.delete_protection);
        assert!(d.break_glass.is_empty());
        assert!(d.reconcilers.contains("system:serviceaccount:flux-system:kustomize-controller", &[]));
        assert!(d.reconcilers.contains("system:serviceaccount:argocd:argocd-application-controller", &[]));
        assert!(!d.reconcilers.contains("alice", &["system:masters".into()]));
        for m in ["kustomize-controller", "helm-controller", "argocd-controller", "argocd-application-controller"] {
            assert!(d.is_reconciler_field_manager(m), "{m}");
        }
        assert!(!d.is_reconciler_field_manager("kubectl-client-side-apply"));
        assert!(set.is_builtin_default());

        let mut mine = builtin_default();
        mine.name = "mine".into();
        let set = PolicySet::new(vec![mine]);
        let names: Vec<&str> = set.effective().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["mine"]);
    }

    #[test]
    fn names_match_exactly_or_by_glob() {
        let names = Names::new(vec![
            "system:serviceaccount:flux-system:kustomize-controller".into(),
            "system:serviceaccount:*:flux-reconciler".into(),
            "tenant-?".into(),
        ]);
        let cases = [
            ("system:serviceaccount:flux-system:kustomize-controller", true),
            ("system:serviceaccount:team-a:flux-reconciler", true),
            ("system:serviceaccount:team-b:flux-reconciler", true),
            // `*` spans any characters, `:` included (a service account name has none).
            ("system:serviceaccount:a:b:flux-reconciler", true),
            ("system:serviceaccount:team-a:default", false),
            ("system:serviceaccount:team-a:flux-reconciler-x", false),
            ("flux-reconciler", false),
            ("tenant-a", true),
            ("tenant-ab", false),
            ("tenant-", false),
            ("system:serviceaccount:flux-system:kustomize-controller2", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(names.matches(name), want, "{name}");
        }
        assert!(names.has_globs());
        assert!(!Names::new(vec!["a".into()]).has_globs());
        assert!(!Names::default().matches(""));

        let s = Subjects::new(vec!["dev".into()], vec!["system:serviceaccounts:team-*".into()]);
        assert!(s.contains("dev", &[]));
        assert!(s.contains("x", &["system:authenticated".into(), "system:serviceaccounts:team-a".into()]));
        assert!(!s.contains("x", &["system:serviceaccounts".into(), "system:serviceaccounts:prod".into()]));
        assert_eq!(s.describe(), "users: dev; groups: system:serviceaccounts:team-*");
        let many = Subjects::new((0..7).map(|i| format!("u{i}")).collect(), vec![]);
        assert_eq!(many.describe(), "users: u0, u1, u2, u3, u4 and 2 more; groups: none");
    }

    #[test]
    fn name_checks() {
        assert_eq!(check_name("system:serviceaccount:*:flux-reconciler"), Ok(()));
        assert_eq!(check_name("dev"), Ok(()));
        for bad in ["", " ", " dev", "dev\t", "*", "**", "?", "*?*"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builtin_default_has_no_tenant_glob() {
        let d = builtin_default();
        assert!(!d.reconcilers.users.has_globs() && d.reconcilers.groups.is_empty());
        assert!(!d.reconcilers.contains(
            "system:serviceaccount:team-a:flux-reconciler",
            &["system:serviceaccounts".into(), "system:serviceaccounts:team-a".into()]
        ));
    }

    #[test]
    fn kinds_and_groups() {
        let r = rule(&["apps"], &["Deployment", "StatefulSet"], &[]);
        let cases = [
            ("apps", "Deployment", "deployments", true),
            ("apps", "StatefulSet", "statefulsets", true),
            ("apps", "DaemonSet", "daemonsets", false),
            ("", "Deployment", "deployments", false),
            ("extensions", "Deployment", "deployments", false),
            // The scale subresource: a Scale object, matched by the parent's resource.
            ("apps", "Scale", "deployments", true),
            ("apps", "Scale", "deployments/scale", true),
            ("apps", "Scale", "replicasets", false),
            ("apps", "deployment", "", true),
        ];
        for (group, kind, resource, want) in cases {
            assert_eq!(r.matches_kind(group, kind, resource), want, "{group} {kind} {resource}");
        }
        let core = rule(&[""], &["ConfigMap"], &[]);
        assert!(core.matches_kind("", "ConfigMap", "configmaps"));
        assert!(!core.matches_kind("apps", "ConfigMap", "configmaps"));
        let any = rule(&[], &[], &[]);
        assert!(any.matches_kind("whatever.io", "Thing", "things"));
        let star = rule(&["*"], &["*"], &[]);
        assert!(star.matches_kind("x.io", "Thing", "things"));
        let plural = rule(&["networking.k8s.io"], &["networkpolicies", "Ingress"], &[]);
        assert!(plural.matches_kind("networking.k8s.io", "NetworkPolicy", "networkpolicies"));
        assert!(plural.matches_kind("networking.k8s.io", "Scale", "ingresses"));
        assert_eq!(guess_resource("NetworkPolicy"), "networkpolicies");
        assert_eq!(guess_resource("Ingress"), "ingresses");
        assert_eq!(guess_resource("Deployment"), "deployments");
    }

    #[test]
    fn namespaces() {
        let r = rule(&[], &[], &["team-*", "prod"]);
        assert!(r.matches_namespace(Some("team-a")));
        assert!(r.matches_namespace(Some("prod")));
        assert!(!r.matches_namespace(Some("production")));
        assert!(!r.matches_namespace(Some("kube-system")));
        assert!(!r.matches_namespace(None));
        let any = rule(&[], &[], &[]);
        assert!(any.matches_namespace(Some("x")));
        assert!(any.matches_namespace(None));
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> =
            [("tier", "web"), ("env", "prod")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let sel = |match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: (!match_labels.is_empty())
                .then(|| match_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        };
        let cases = [
            (sel(&[], vec![]), true),
            (sel(&[("tier", "web")], vec![]), true),
            (sel(&[("tier", "web"), ("env", "prod")], vec![]), true),
            (sel(&[("tier", "db")], vec![]), false),
            (sel(&[("team", "a")], vec![]), false),
            (sel(&[], vec![req("tier", "In", &["web", "api"])]), true),
            (sel(&[], vec![req("tier", "In", &["db"])]), false),
            (sel(&[], vec![req("team", "In", &["a"])]), false),
            (sel(&[], vec![req("tier", "NotIn", &["db"])]), true),
            (sel(&[], vec![req("tier", "NotIn", &["web"])]), false),
            (sel(&[], vec![req("team", "NotIn", &["a"])]), true),
            (sel(&[], vec![req("tier", "Exists", &[])]), true),
            (sel(&[], vec![req("team", "Exists", &[])]), false),
            (sel(&[], vec![req("team", "DoesNotExist", &[])]), true),
            (sel(&[], vec![req("tier", "DoesNotExist", &[])]), false),
            (sel(&[], vec![req("tier", "Bogus", &[])]), false),
            (sel(&[("env", "prod")], vec![req("tier", "In", &["web"]), req("team", "DoesNotExist", &[])]), true),
            (sel(&[("env", "prod")], vec![req("tier", "In", &["web"]), req("env", "DoesNotExist", &[])]), false),
        ];
        let json = serde_json::json!({"tier": "web", "env": "prod"});
        let object = serde_json::json!({"metadata": {"labels": {"tier": "web", "env": "prod"}}});
        for (i, (selector, want)) in cases.into_iter().enumerate() {
            assert_eq!(selector_matches(&selector, &labels), want, "case {i}");
            assert_eq!(selector_matches(&selector, &json), want, "case {i} (json)");
            let mut r = rule(&[], &[], &[]);
            r.label_selector = Some(selector);
            assert_eq!(r.matches_labels(&labels), want, "case {i} (rule)");
            assert_eq!(r.matches_object_labels(&object), want, "case {i} (object)");
        }
        // No selector: every object; an object without labels.
        let r = rule(&[], &[], &[]);
        assert!(r.matches_labels(&BTreeMap::new()));
        let mut r = rule(&[], &[], &[]);
        r.label_selector = Some(sel(&[], vec![req("tier", "DoesNotExist", &[])]));
        assert!(r.matches_object_labels(&serde_json::json!({"kind": "Scale"})));
        r.label_selector = Some(sel(&[("tier", "web")], vec![]));
        assert!(!r.matches_object_labels(&serde_json::json!({"kind": "Scale"})));
        // Non-string label values count as absent.
        assert!(!r.matches_labels(&serde_json::json!({"tier": 1})));
    }
}
