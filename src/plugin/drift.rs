//! `kubectl hallmark drift`: the Git-owned fields that someone other than their reconciler
//! holds now (after a break-glass write or a forced apply), with their live values, who
//! changed them and when; and, with `--patch`, a patch that puts those live values into
//! Git (docs/audit-trail.md "Drift").
//!
//! A field is drift when a managedFields entry of the main resource (or `scale`) that is
//! not a reconciler field manager of a policy in force owns it, no reconciler field manager
//! owns it too, and it is Git-owned: a rule of a policy matches it, or a break-glass write
//! since the reconciler's last write changed it (such a write is only stamped
//! `channel: break-glass` when it overrode Git-owned fields).

use super::blame::{Blamed, blame};
use super::owners::owners;
use super::show::ObjectId;
use super::table::{Table, cell};
use crate::ownership::path::{self, FieldPath, Segment, overlaps};
use crate::policy::CompiledPolicy;
use crate::provenance::{Keys, parse_history};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// One Git-owned field held outside Git.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drifted {
    pub field: String,
    /// The live value (`null` when the field is gone).
    pub value: Value,
    /// The field manager that holds it now.
    pub manager: String,
    /// The policies that own it (a matching rule's, or those owning the object's
    /// managedFields for a field a break-glass write overrode).
    pub policies: Vec<String>,
    /// The last write that changed it, from the history (or managedFields).
    pub changed: Blamed,
}

/// The drift of one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftReport {
    pub fields: Vec<Drifted>,
    /// managedFields entries that could not be read.
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// The Git-owned fields of `obj` held by a field manager that is not their reconciler.
pub fn drift(obj: &Value, resource: &str, policies: &[&CompiledPolicy], keys: &Keys) -> DriftReport {
    let grouped = owners(obj, resource, policies.iter().copied());
    let mut report = DriftReport { errors: grouped.errors.clone(), ..DriftReport::default() };
    // What the rules claim (patterns), and what reconcilers hold (concrete paths).
    let mut rule_patterns: Vec<(FieldPath, String)> = Vec::new();
    let mut held_by_git: Vec<FieldPath> = Vec::new();
    for g in &grouped.git {
        let Ok(p) = path::parse(&g.field) else { continue };
        match g.manager {
            None => rule_patterns.push((p, g.policy.clone())),
            Some(_) => held_by_git.push(p),
        }
    }
    let managed_owners: Vec<String> = {
        let mut v: Vec<String> = grouped.git.iter().filter(|g| g.manager.is_some()).map(|g| g.policy.clone()).collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            // Every field taken: the policies that read managedFields.
            v = policies
                .iter()
                .filter(|p| p.managed_fields != crate::policy::Enforcement::Ignore)
                .map(|p| p.name.clone())
                .collect();
        }
        v
    };
    // Fields break-glass writes changed since the reconciler's last write (newest first).
    let history = parse_history(obj.pointer("/metadata/annotations").and_then(|a| a.get(&keys.history)));
    let overridden: Vec<FieldPath> = history
        .iter()
        .take_while(|e| e.channel != "gitops")
        .filter(|e| e.channel == "break-glass")
        .flat_map(|e| e.changed.iter().filter_map(|c| path::parse(c).ok()))
        .collect();

    // A reconciler field manager's entry that `owners` left unclaimed (a policy with
    // `managedFields: ignore`) is still the reconciler's.
    let is_reconciler = |manager: &str| policies.iter().any(|p| p.is_reconciler_field_manager(manager));
    for m in grouped.managers.iter().filter(|m| is_reconciler(&m.manager)) {
        held_by_git.extend(m.fields.iter().filter_map(|f| path::parse(f).ok()));
    }
    for m in &grouped.managers {
        if m.subresource.as_deref().is_some_and(|s| s != "scale") || is_reconciler(&m.manager) {
            continue;
        }
        for field in &m.fields {
            let Ok(p) = path::parse(field) else { continue };
            if held_by_git.iter().any(|g| g == &p || p.segments().starts_with(g.segments())) {
                continue;
            }
            let mut policies: Vec<String> = rule_patterns
                .iter()
                .filter(|(pattern, _)| overlaps(pattern.segments(), p.segments()))
                .map(|(_, policy)| policy.clone())
                .collect();
            if policies.is_empty() && overridden.iter().any(|o| overlaps(o.segments(), p.segments())) {
                policies = managed_owners.clone();
            }
            if policies.is_empty() {
                continue;
            }
            policies.sort();
            policies.dedup();
            let changed = blame(obj, keys, std::slice::from_ref(&p)).rows.into_iter().next();
            let Some(changed) = changed else { continue };
            let value = value_at(obj, &p).cloned().unwrap_or(Value::Null);
            report.fields.push(Drifted { field: p.to_string(), value, manager: m.manager.clone(), policies, changed });
        }
    }
    report
}

/// The value at a field path in an object (keyed list elements by their key fields).
pub fn value_at<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut at = obj;
    for seg in path.segments() {
        at = match seg {
            Segment::Field(k) => at.get(k)?,
            Segment::Index(i) => at.get(*i)?,
            Segment::Value(json) => {
                let want: Value = serde_json::from_str(json).ok()?;
                at.as_array()?.iter().find(|item| **item == want)?
            }
            Segment::Any => return None,
            Segment::Key(pairs) => at.as_array()?.iter().find(|item| has_keys(item, pairs))?,
        };
    }
    Some(at)
}

/// Is `item` the keyed list element `[k=v,…]`?
fn has_keys(item: &Value, pairs: &[(String, String)]) -> bool {
    pairs.iter().all(|(k, v)| item.get(k).is_some_and(|x| scalar_text(x).as_deref() == Some(v.as_str())))
}

/// A key field's value as the path syntax writes it (a string unquoted).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// A key field's value back as JSON: a number or bool when it reads as one.
fn key_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// Puts `value` at `path` in `into`, creating maps and keyed list elements (strategic
/// merge patch shape: a list element is identified by its key fields). `false` for a
/// path with an unkeyed list position, which such a patch cannot address.
fn insert(into: &mut Value, path: &[Segment], value: &Value) -> bool {
    let Some((first, rest)) = path.split_first() else {
        *into = value.clone();
        return true;
    };
    match first {
        Segment::Index(_) | Segment::Any => false,
        Segment::Value(json) => {
            // A set element: the value itself (a strategic merge patch merges sets).
            let Ok(element) = serde_json::from_str::<Value>(json) else { return false };
            if !into.is_array() {
                *into = Value::Array(Vec::new());
            }
            let Some(list) = into.as_array_mut() else { return false };
            if !list.contains(&element) {
                list.push(element);
            }
            rest.is_empty()
        }
        Segment::Field(k) => {
            if !into.is_object() {
                *into = Value::Object(Map::new());
            }
            let Some(map) = into.as_object_mut() else { return false };
            let child = map.entry(k.clone()).or_insert(Value::Null);
            insert(child, rest, value)
        }
        Segment::Key(pairs) => {
            if !into.is_array() {
                *into = Value::Array(Vec::new());
            }
            let Some(list) = into.as_array_mut() else { return false };
            let pos = list.iter().position(|item| has_keys(item, pairs));
            let pos = match pos {
                Some(p) => p,
                None => {
                    let element: Map<String, Value> = pairs.iter().map(|(k, v)| (k.clone(), key_value(v))).collect();
                    list.push(Value::Object(element));
                    list.len() - 1
                }
            };
            insert(&mut list[pos], rest, value)
        }
    }
}

/// The patch of one object: its identity and only the drifted fields at their live values,
/// as YAML, the provenance in comments. A field the patch cannot address (an unkeyed list
/// position) is named in a comment instead.
pub fn patch_yaml(obj: &Value, report: &DriftReport) -> String {
    let id = ObjectId::of(obj);
    let mut doc = json!({"apiVersion": id.api_version, "kind": id.kind, "metadata": {"name": id.name}});
    if let Some(ns) = &id.namespace {
        doc["metadata"]["namespace"] = json!(ns);
    }
    let mut comments = vec![format!(
        "# kubectl hallmark drift --patch: Git-owned fields of {}/{} changed outside Git, at their live values.",
        id.kind, id.name
    )];
    comments.push(
        "# Commit it to the Git repository (e.g. as a kustomize patch) before the next reconcile reverts it.".into(),
    );
    for d in &report.fields {
        let Ok(p) = path::parse(&d.field) else { continue };
        let who = d.changed.by.clone().unwrap_or_else(|| match &d.changed.manager {
            Some(m) => format!("{m} (manager)"),
            None => "unknown".to_owned(),
        });
        let channel = d.changed.channel.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let at = d.changed.at.as_deref().map(|a| format!(" at {a}")).unwrap_or_default();
        let addressed = insert(&mut doc, p.segments(), &d.value);
        let note = if addressed { "" } else { " (not in the patch: a list position a patch cannot address)" };
        comments.push(format!(
            "# {}: {who}{channel}{at}; held by field manager {}; owned by {}{note}",
            d.field,
            d.manager,
            d.policies.join(", ")
        ));
    }
    let body = serde_yaml::to_string(&doc).unwrap_or_default();
    format!("{}\n{body}", comments.join("\n"))
}

/// One object's drift, for the table and the documents.
pub struct ObjectDrift {
    pub object: Value,
    pub report: DriftReport,
}

/// The drift table: `KIND NAME FIELD VALUE BY CHANNEL AGE MANAGER`, with `NAMESPACE`
/// first for `-A`.
pub fn render_drift(items: &[ObjectDrift], all_namespaces: bool, headers: bool, now: jiff::Timestamp) -> String {
    let mut head = vec!["KIND", "NAME", "FIELD", "VALUE", "BY", "CHANNEL", "AGE", "MANAGER"];
    if all_namespaces {
        head.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(head);
    for item in items {
        let id = ObjectId::of(&item.object);
        for d in &item.report.fields {
            let value = super::super::admission::truncate(&d.value.to_string(), 40);
            let mut row = vec![
                id.kind.clone(),
                id.name.clone(),
                d.field.clone(),
                value,
                // Only the field manager is known when the history does not reach back.
                d.changed.by.clone().unwrap_or_else(|| format!("{} (manager)", cell(d.changed.manager.as_deref()))),
                cell(d.changed.channel.as_deref()),
                d.changed.at.as_deref().map_or_else(|| cell(None), |at| super::age::age(at, now)),
                d.manager.clone(),
            ];
            if all_namespaces {
                row.insert(0, id.namespace.clone().unwrap_or_default());
            }
            table.push(row);
        }
    }
    table.render(headers, "")
}

/// `drift -o json|yaml`: one item per object with drift.
pub fn drift_document(items: &[ObjectDrift]) -> Value {
    let list: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut doc = ObjectId::of(&i.object).to_json();
            doc["fields"] = serde_json::to_value(&i.report.fields).unwrap_or(Value::Null);
            doc
        })
        .collect();
    json!({"items": list})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::parse_documents;

    const POLICY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata: {name: platform}
spec:
  owner: {name: platform-config, repository: "https://git.example.com/sre/cluster-config",
          reconcilers: {fieldManagers: [kustomize-controller]}}
  rules:
    - match: {kinds: [Deployment]}
      fields: ["spec.replicas"]
      action: deny
  managedFields: deny
  breakGlass: {groups: [sre-oncall]}
"#;

    fn object() -> Value {
        let history = json!([
            {"at": "2026-11-27T10:05:00Z", "by": "sre-alice", "channel": "break-glass", "trust": "none", "manager": "kubectl-patch",
             "changed": ["spec.template.spec.containers[name=agent].resources.limits.memory", "spec.replicas"]},
            {"at": "2026-11-27T10:00:00Z", "by": "flux", "channel": "gitops", "trust": "source", "op": "create"}
        ])
        .to_string();
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "agent", "namespace": "team-a", "annotations": {"hallmark.dev/history": history},
              "managedFields": [
                {"manager": "kustomize-controller", "operation": "Apply", "time": "2026-11-27T10:00:00Z", "fieldsV1": {
                  "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {
                    ".": {}, "f:name": {}, "f:image": {}, "f:resources": {"f:limits": {"f:cpu": {}}}}}}}}}},
                {"manager": "kubectl-patch", "operation": "Update", "time": "2026-11-27T10:05:00Z", "fieldsV1": {
                  "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {
                    "f:resources": {"f:limits": {"f:memory": {}}}}}}}}}},
                {"manager": "kubectl-edit", "operation": "Update", "time": "2026-11-27T10:06:00Z", "fieldsV1": {
                  "f:metadata": {"f:labels": {"f:team": {}}}}}
              ]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "agent", "image": "a:1",
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}]}}}})
    }

    #[test]
    fn break_glass_and_rule_owned_fields_held_outside_git_are_drift() {
        let policies = parse_documents(POLICY, "p.yaml").expect("policy");
        let keys = Keys::new("hallmark.dev/");
        let report = drift(&object(), "deployments", &policies.iter().collect::<Vec<_>>(), &keys);
        let fields: Vec<(&str, &Value, &str)> =
            report.fields.iter().map(|d| (d.field.as_str(), &d.value, d.manager.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("spec.replicas", &json!(3), "kubectl-patch"),
                ("spec.template.spec.containers[name=agent].resources.limits.memory", &json!("256Mi"), "kubectl-patch"),
            ]
        );
        let memory = &report.fields[1];
        assert_eq!(memory.changed.by.as_deref(), Some("sre-alice"));
        assert_eq!(memory.changed.channel.as_deref(), Some("break-glass"));
        assert_eq!(memory.changed.at.as_deref(), Some("2026-11-27T10:05:00Z"));
        assert_eq!(memory.policies, ["platform"]);
        // The label someone else set is not Git-owned: no drift.
        assert!(!report.fields.iter().any(|d| d.field.contains("labels")));
    }

    #[test]
    fn a_reconcile_after_the_break_glass_write_ends_the_drift() {
        let policies = parse_documents(POLICY, "p.yaml").expect("policy");
        let mut obj = object();
        let mut history = parse_history(obj.pointer("/metadata/annotations/hallmark.dev~1history"));
        history.insert(0, crate::provenance::HistoryEntry { channel: "gitops".into(), ..Default::default() });
        obj["metadata"]["annotations"]["hallmark.dev/history"] = json!(serde_json::to_string(&history).expect("json"));
        let report = drift(&obj, "deployments", &policies.iter().collect::<Vec<_>>(), &Keys::new("hallmark.dev/"));
        assert_eq!(
            report.fields.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["spec.replicas"],
            "the memory limit is no longer known to be Git-owned; the rule's field still is"
        );
    }

    #[test]
    fn the_patch_holds_only_the_drifted_fields_at_their_live_values() {
        let policies = parse_documents(POLICY, "p.yaml").expect("policy");
        let report = drift(&object(), "deployments", &policies.iter().collect::<Vec<_>>(), &Keys::new("hallmark.dev/"));
        let text = patch_yaml(&object(), &report);
        assert!(text.starts_with("# kubectl hallmark drift --patch"), "{text}");
        assert!(text.contains("# spec.template.spec.containers[name=agent].resources.limits.memory: sre-alice, break-glass at 2026-11-27T10:05:00Z; held by field manager kubectl-patch; owned by platform"), "{text}");
        let yaml: Value = serde_yaml::from_str(&text).expect("YAML");
        assert_eq!(
            yaml,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent", "namespace": "team-a"},
                   "spec": {"replicas": 3, "template": {"spec": {"containers": [
                       {"name": "agent", "resources": {"limits": {"memory": "256Mi"}}}]}}}})
        );
    }

    #[test]
    fn values_are_found_by_list_keys() {
        let obj = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]}});
        let p = path::parse("spec.ports[port=80,protocol=TCP].name").expect("path");
        assert_eq!(value_at(&obj, &p), Some(&json!("http")));
        let mut doc = json!({});
        assert!(insert(&mut doc, p.segments(), &json!("http")));
        assert_eq!(doc, json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]}}));
        assert!(!insert(&mut doc, path::parse("spec.args[0]").expect("path").segments(), &json!("x")));
    }
}
