//! The `OwnershipPolicy` document (hallmark.dev/v1alpha1), the same YAML whether it is a
//! file or a custom resource, and its validation and compilation into a
//! [`CompiledPolicy`](super::CompiledPolicy).

use super::{CompiledPolicy, CompiledRule, Enforcement, Subjects, check_name, is_glob};
use crate::ownership::path;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use wildmatch::WildMatch;

/// The API group, version and kind of the document.
pub const API_VERSION: &str = "hallmark.dev/v1alpha1";
pub const KIND: &str = "OwnershipPolicy";

// `OwnershipPolicy::crd()` (from `kube::CustomResourceExt`) yields the
// CustomResourceDefinition; doc comments below become its field descriptions.
/// Which fields Git owns, who the owner is and who may change them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hallmark.dev",
    version = "v1alpha1",
    kind = "OwnershipPolicy",
    status = "OwnershipPolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether hallmark loaded the policy's last generation (False: it keeps the last good version)"}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner.name"}"#,
    printcolumn = r#"{"name":"ManagedFields","type":"string","jsonPath":".spec.managedFields"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnershipPolicySpec {
    /// The owner of the fields: shown to users in deny messages.
    pub owner: Owner,
    /// Fields that Git owns, by resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Also own every field that `metadata.managedFields` shows a reconciler field
    /// manager owns.
    #[serde(default)]
    pub managed_fields: ManagedFieldsMode,
    /// Deny DELETE of objects that a reconciler manages.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete_protection: bool,
    /// Who may override: allowed, warned, `channel=break-glass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Owner {
    /// Shown to users, e.g. `platform-config`.
    pub name: String,
    /// Where in Git to change the fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Who may change owned fields.
    #[serde(default)]
    pub reconcilers: Reconcilers,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reconcilers {
    /// Kubernetes usernames (e.g. `system:serviceaccount:flux-system:kustomize-controller`) or globs (`*`, `?`).
    /// `system:serviceaccount:*:flux-reconciler` matches the tenant service account that Flux or Argo CD impersonates, in every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Kubernetes groups (e.g. `system:serviceaccounts:flux-system`), or globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// managedFields managers whose entries mark Git-owned fields: exact names, never identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_managers: Vec<String>,
    /// Also require the extras of a real pod-bound token (not an impersonation).
    /// Not with globs in users or groups: the impersonated tenant service accounts they match never carry these extras.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_pod_token: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Which objects the rule applies to; absent = every object.
    #[serde(rename = "match", default)]
    pub match_: RuleMatch,
    /// Field paths that Git owns (`spec.template.spec.containers[*].resources`).
    pub fields: Vec<String>,
    pub action: RuleAction,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleMatch {
    /// API groups; `""` is the core group; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Kinds (`Deployment`) or `*`; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Namespace globs (`team-*`); empty = any namespace and cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// On the object's labels.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "strict_label_selector")]
    pub label_selector: Option<LabelSelector>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Deny,
    Warn,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagedFieldsMode {
    #[default]
    Ignore,
    Warn,
    Deny,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakGlass {
    /// Kubernetes usernames, or globs (`*`, `?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Kubernetes groups, or globs (`*`, `?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Written by the policy watcher: whether the last generation was accepted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnershipPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl From<RuleAction> for Enforcement {
    fn from(action: RuleAction) -> Self {
        match action {
            RuleAction::Deny => Enforcement::Deny,
            RuleAction::Warn => Enforcement::Warn,
        }
    }
}

impl From<ManagedFieldsMode> for Enforcement {
    fn from(mode: ManagedFieldsMode) -> Self {
        match mode {
            ManagedFieldsMode::Ignore => Enforcement::Ignore,
            ManagedFieldsMode::Warn => Enforcement::Warn,
            ManagedFieldsMode::Deny => Enforcement::Deny,
        }
    }
}

/// k8s-openapi's `LabelSelector` ignores unknown fields; a typo there (`matchLabel`)
/// would silently widen a rule to every object, so policy documents read it strictly.
fn strict_label_selector<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<LabelSelector>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Strict {
        #[serde(default)]
        match_labels: Option<BTreeMap<String, String>>,
        #[serde(default)]
        match_expressions: Option<Vec<StrictRequirement>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictRequirement {
        key: String,
        operator: String,
        #[serde(default)]
        values: Option<Vec<String>>,
    }
    let strict = Option::<Strict>::deserialize(deserializer)?;
    Ok(strict.map(|s| LabelSelector {
        match_labels: s.match_labels,
        match_expressions: s.match_expressions.map(|exprs| {
            exprs
                .into_iter()
                .map(|r| LabelSelectorRequirement { key: r.key, operator: r.operator, values: r.values })
                .collect()
        }),
    }))
}

/// One step from the document root to a field: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A problem with one field of a policy document.
///
/// `Display`: `spec.rules[0].fields[1]: column 22: expected ']'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// From the document root, e.g. `spec`, `rules`, `0`, `fields`, `1`.
    pub steps: Vec<Step>,
    /// True when the error is about the key itself (a missing or empty child, a setting
    /// that conflicts with another), rather than its value: the location then points at
    /// the key.
    pub at_key: bool,
    pub message: String,
}

impl FieldError {
    fn new(steps: Vec<Step>, message: impl Into<String>) -> Self {
        FieldError { steps, at_key: false, message: message.into() }
    }

    fn at_key(steps: Vec<Step>, message: impl Into<String>) -> Self {
        FieldError { steps, at_key: true, message: message.into() }
    }

    /// The field in the usual notation: `spec.rules[0].fields[1]`.
    pub fn field(&self) -> String {
        steps_to_string(&self.steps)
    }
}

/// `spec.rules[0].fields[1]`.
pub fn steps_to_string(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.message)
    }
}

impl std::error::Error for FieldError {}

/// Steps of mapping keys: `keys(&["spec", "owner"])`.
fn keys(names: &[&str]) -> Vec<Step> {
    names.iter().map(|n| Step::Key((*n).to_string())).collect()
}

fn with(mut base: Vec<Step>, more: impl IntoIterator<Item = Step>) -> Vec<Step> {
    base.extend(more);
    base
}

fn key(name: &str) -> Step {
    Step::Key(name.to_string())
}

/// The label selector operators of Kubernetes.
pub const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Validates a policy and compiles it: paths parsed, globs compiled. Returns every
/// problem found, in document order.
pub fn compile(doc: &OwnershipPolicy) -> Result<CompiledPolicy, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = doc.metadata.name.clone().unwrap_or_default();
    if name.trim().is_empty() {
        errors.push(FieldError::at_key(keys(&["metadata", "name"]), "missing: every policy needs a name"));
    }
    let spec = &doc.spec;
    let owner = &spec.owner;
    if owner.name.trim().is_empty() {
        errors.push(FieldError::new(keys(&["spec", "owner", "name"]), "the owner name must not be empty"));
    }
    if let Some(repository) = &owner.repository
        && repository.trim().is_empty()
    {
        errors.push(FieldError::new(
            keys(&["spec", "owner", "repository"]),
            "the repository must not be empty (leave it out instead)",
        ));
    }
    let reconcilers = &owner.reconcilers;
    let reconciler_path = keys(&["spec", "owner", "reconcilers"]);
    check_names(&mut errors, &reconciler_path, "users", &reconcilers.users);
    check_names(&mut errors, &reconciler_path, "groups", &reconcilers.groups);
    check_non_empty_entries(&mut errors, &reconciler_path, "fieldManagers", &reconcilers.field_managers);
    for (j, manager) in reconcilers.field_managers.iter().enumerate() {
        if is_glob(manager) {
            errors.push(FieldError::new(
                with(reconciler_path.clone(), [key("fieldManagers"), Step::Index(j)]),
                format!(
                    "{manager:?}: fieldManagers are exact names, not globs (a client chooses its field manager freely)"
                ),
            ));
        }
    }
    if reconcilers.require_pod_token
        && let Some((list, j, name)) = first_glob(&[("users", &reconcilers.users), ("groups", &reconcilers.groups)])
    {
        errors.push(FieldError::new(
            with(reconciler_path.clone(), [key("requirePodToken")]),
            format!(
                "requirePodToken cannot be combined with the glob {list}[{j}] {name:?}: globs exist to match the tenant service accounts that Flux and Argo CD impersonate, and an impersonated request carries no pod-bound token extras (authentication.kubernetes.io/credential-id, pod-name), so every write of theirs would count as a direct write; drop requirePodToken, or list only the controllers' own service accounts"
            ),
        ));
    }
    if let Some(bg) = &spec.break_glass {
        let bg_path = keys(&["spec", "breakGlass"]);
        check_names(&mut errors, &bg_path, "users", &bg.users);
        check_names(&mut errors, &bg_path, "groups", &bg.groups);
    }

    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = with(keys(&["spec", "rules"]), [Step::Index(i)]);
        if let Some(rule) = compile_rule(rule, &rule_path, &mut errors) {
            rules.push(rule);
        }
    }

    let no_reconcilers =
        reconcilers.users.is_empty() && reconcilers.groups.is_empty() && reconcilers.field_managers.is_empty();
    if !spec.rules.is_empty() && no_reconcilers {
        errors.push(FieldError::at_key(
            keys(&["spec", "owner", "reconcilers"]),
            "rules need reconcilers: name at least one user, group or fieldManager that may change the owned fields",
        ));
    }
    if spec.managed_fields != ManagedFieldsMode::Ignore && reconcilers.field_managers.is_empty() {
        errors.push(FieldError::new(
            keys(&["spec", "managedFields"]),
            "managedFields: warn|deny needs spec.owner.reconcilers.fieldManagers (the managers whose managedFields entries mark Git-owned fields)",
        ));
    }
    if spec.delete_protection && reconcilers.field_managers.is_empty() {
        errors.push(FieldError::new(
            keys(&["spec", "deleteProtection"]),
            "deleteProtection needs spec.owner.reconcilers.fieldManagers (the managers whose managedFields entries mark an object as reconciled)",
        ));
    }
    if spec.rules.is_empty() && spec.managed_fields == ManagedFieldsMode::Ignore && !spec.delete_protection {
        errors.push(FieldError::at_key(
            keys(&["spec"]),
            "the policy does nothing: give it rules, managedFields: warn|deny, or deleteProtection: true",
        ));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let break_glass = spec.break_glass.clone().unwrap_or_default();
    Ok(CompiledPolicy {
        name,
        owner_name: owner.name.clone(),
        repository: owner.repository.clone(),
        reconcilers: Subjects::new(reconcilers.users.clone(), reconcilers.groups.clone()),
        reconciler_field_managers: reconcilers.field_managers.clone(),
        require_pod_token: reconcilers.require_pod_token,
        rules,
        managed_fields: spec.managed_fields.into(),
        delete_protection: spec.delete_protection,
        break_glass: Subjects::new(break_glass.users, break_glass.groups),
    })
}

/// Every entry of a `users` or `groups` list: [`check_name`].
fn check_names(errors: &mut Vec<FieldError>, parent: &[Step], list: &str, entries: &[String]) {
    for (j, entry) in entries.iter().enumerate() {
        if let Err(why) = check_name(entry) {
            errors.push(FieldError::new(with(parent.to_vec(), [key(list), Step::Index(j)]), why));
        }
    }
}

/// The first glob of the lists: (list, index, name).
fn first_glob<'a>(lists: &[(&'a str, &'a Vec<String>)]) -> Option<(&'a str, usize, &'a str)> {
    lists.iter().find_map(|(list, entries)| {
        entries.iter().enumerate().find(|(_, e)| is_glob(e)).map(|(j, e)| (*list, j, e.as_str()))
    })
}

fn check_non_empty_entries(errors: &mut Vec<FieldError>, parent: &[Step], list: &str, entries: &[String]) {
    for (j, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            errors.push(FieldError::new(with(parent.to_vec(), [key(list), Step::Index(j)]), "must not be empty"));
        }
    }
}

fn compile_rule(rule: &Rule, rule_path: &[Step], errors: &mut Vec<FieldError>) -> Option<CompiledRule> {
    let before = errors.len();
    let match_path = with(rule_path.to_vec(), [key("match")]);
    check_non_empty_entries(errors, &match_path, "kinds", &rule.match_.kinds);
    check_non_empty_entries(errors, &match_path, "namespaces", &rule.match_.namespaces);

    if let Some(selector) = &rule.match_.label_selector {
        let selector_path = with(match_path.clone(), [key("labelSelector")]);
        validate_selector(selector, &selector_path, errors);
    }

    let fields_path = with(rule_path.to_vec(), [key("fields")]);
    if rule.fields.is_empty() {
        errors.push(FieldError::new(fields_path.clone(), "a rule needs at least one field path"));
    }
    let mut fields = Vec::new();
    let kinds = super::kinds::named(&rule.match_.groups, &rule.match_.kinds);
    for (j, text) in rule.fields.iter().enumerate() {
        match path::parse(text).map_err(|e| e.to_string()).and_then(|p| kinds.check(&p).map(|()| p)) {
            Ok(p) => fields.push(p),
            Err(e) => errors.push(FieldError::new(with(fields_path.clone(), [Step::Index(j)]), e)),
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(CompiledRule {
        groups: rule.match_.groups.clone(),
        kinds: rule.match_.kinds.clone(),
        namespaces: rule.match_.namespaces.iter().map(|ns| WildMatch::new(ns)).collect(),
        label_selector: rule.match_.label_selector.clone(),
        fields,
        action: rule.action.into(),
    })
}

fn validate_selector(selector: &LabelSelector, at: &[Step], errors: &mut Vec<FieldError>) {
    if let Some(labels) = &selector.match_labels {
        for key in labels.keys() {
            if key.is_empty() {
                errors.push(FieldError::new(
                    with(at.to_vec(), [Step::Key("matchLabels".into())]),
                    "a label key must not be empty",
                ));
            }
        }
    }
    for (k, req) in selector.match_expressions.iter().flatten().enumerate() {
        let req_path = with(at.to_vec(), [key("matchExpressions"), Step::Index(k)]);
        if req.key.is_empty() {
            errors.push(FieldError::new(with(req_path.clone(), [key("key")]), "a label key must not be empty"));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errors.push(FieldError::at_key(
                        with(req_path.clone(), [key("operator")]),
                        format!("operator {} needs at least one value", req.operator),
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errors.push(FieldError::new(
                        with(req_path.clone(), [key("values")]),
                        format!("operator {} takes no values", req.operator),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                with(req_path.clone(), [key("operator")]),
                format!("unknown operator {other:?}, expected one of {}", SELECTOR_OPERATORS.join(", ")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd() {
        let crd = OwnershipPolicy::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("ownershippolicies.hallmark.dev"));
        assert_eq!(crd.spec.group, "hallmark.dev");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, "OwnershipPolicy");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()));
        let json = serde_json::to_value(&crd).unwrap_or_default();
        let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["owner"]));
        for key in ["owner", "rules", "managedFields", "deleteProtection", "breakGlass"] {
            assert!(spec["properties"].get(key).is_some(), "{key}");
        }
        let rule = &spec["properties"]["rules"]["items"];
        assert_eq!(rule["required"], serde_json::json!(["action", "fields"]));
        assert!(
            rule["properties"]["match"]["properties"]["labelSelector"]["properties"].get("matchExpressions").is_some()
        );
        assert_eq!(rule["properties"]["action"]["enum"], serde_json::json!(["deny", "warn"]));
        // A structural schema: no additionalProperties beside properties.
        let text = serde_json::to_string(&json).unwrap_or_default();
        assert!(!text.contains("\"additionalProperties\":false"), "{text}");
    }

    fn policy(spec: serde_json::Value) -> OwnershipPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hallmark.dev/v1alpha1",
            "kind": "OwnershipPolicy",
            "metadata": {"name": "p"},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn compiles_a_custom_resource() {
        let p = policy(serde_json::json!({
            "owner": {"name": "sre", "reconcilers": {"groups": ["flux"], "fieldManagers": ["flux"], "requirePodToken": true}},
            "rules": [
                {"match": {"kinds": ["Deployment"]}, "fields": ["spec.replicas", "spec.template.spec.containers[name=web].image"], "action": "warn"},
                {"fields": ["metadata.annotations[\"example.com/x\"]"], "action": "deny"}
            ],
            "breakGlass": {"users": ["oncall"]}
        }));
        let c = compile(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.name, "p");
        assert_eq!(c.managed_fields, Enforcement::Ignore);
        assert!(c.require_pod_token);
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].action, Enforcement::Warn);
        assert_eq!(c.rules[1].action, Enforcement::Deny);
        assert_eq!(c.rules[0].fields[1].to_string(), "spec.template.spec.containers[name=web].image");
        assert!(c.break_glass.contains("oncall", &[]));
        assert!(c.reconcilers.contains("x", &["flux".into()]));
    }

    #[test]
    fn compile_reports_every_problem() {
        let p = policy(serde_json::json!({
            "owner": {"name": " ", "reconcilers": {"users": [""]}},
            "rules": [
                {"fields": ["a..b", "ok", "c["], "action": "deny"},
                {"match": {"labelSelector": {"matchExpressions": [
                    {"key": "a", "operator": "Exists", "values": ["x"]},
                    {"key": "", "operator": "NotIn"}
                ]}}, "fields": ["x"], "action": "warn"}
            ],
            "managedFields": "deny"
        }));
        let errors: Vec<String> = compile(&p).err().unwrap_or_default().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "spec.owner.name: the owner name must not be empty",
                "spec.owner.reconcilers.users[0]: must not be empty",
                "spec.rules[0].fields[0]: column 3: expected a field name after '.'",
                "spec.rules[0].fields[2]: column 2: unclosed '['",
                "spec.rules[1].match.labelSelector.matchExpressions[0].values: operator Exists takes no values",
                "spec.rules[1].match.labelSelector.matchExpressions[1].key: a label key must not be empty",
                "spec.rules[1].match.labelSelector.matchExpressions[1].operator: operator NotIn needs at least one value",
                "spec.managedFields: managedFields: warn|deny needs spec.owner.reconcilers.fieldManagers (the managers whose managedFields entries mark Git-owned fields)",
            ]
        );
    }

    #[test]
    fn delete_protection_alone_is_a_policy() {
        let p = policy(serde_json::json!({
            "owner": {"name": "o", "reconcilers": {"fieldManagers": ["f"]}},
            "deleteProtection": true
        }));
        assert!(compile(&p).is_ok_and(|c| c.delete_protection && c.rules.is_empty()));
    }

    #[test]
    fn serializes_back() {
        let p = policy(serde_json::json!({
            "owner": {"name": "o", "reconcilers": {"fieldManagers": ["f"]}},
            "managedFields": "warn"
        }));
        let json = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(json["apiVersion"], "hallmark.dev/v1alpha1");
        assert_eq!(json["kind"], "OwnershipPolicy");
        assert_eq!(json["spec"]["managedFields"], "warn");
        let back: OwnershipPolicy = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
    }
}
