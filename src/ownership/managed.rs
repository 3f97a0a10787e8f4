//! Reading `metadata.managedFields` without building it as a tree.
//!
//! managedFields are about a third of a Deployment review's bytes and, being made of
//! tiny `{}` objects, more than half of the cost of decoding it into a `Value` tree. So
//! [`crate::admission::Review::decode`] keeps each object's managedFields as its JSON text
//! (a `Value::String` in place of the list), and the few readers go through [`entries`],
//! which reads either form: that text, or a plain list (objects from manifests, tests or
//! the Kubernetes API). Only the entries a reader needs have their `fieldsV1` decoded.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One managedFields entry: who, for which subresource, and its `fieldsV1`.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub manager: Cow<'a, str>,
    /// `Apply` or `Update`.
    pub operation: Cow<'a, str>,
    /// Empty for the main resource.
    pub subresource: Cow<'a, str>,
    fields: Fields<'a>,
}

#[derive(Debug, Clone)]
enum Fields<'a> {
    Tree(&'a Value),
    Text(&'a RawValue),
    Absent,
}

impl<'a> Entry<'a> {
    /// The entry's `fieldsV1` as a value (decoded from text on demand).
    pub fn fields(&self) -> Option<Cow<'a, Value>> {
        match &self.fields {
            Fields::Tree(v) => Some(Cow::Borrowed(*v)),
            Fields::Text(raw) => serde_json::from_str(raw.get()).ok().map(Cow::Owned),
            Fields::Absent => None,
        }
    }

    /// True when both entries have the same `fieldsV1`, compared as written (text with
    /// text, tree with tree) without decoding; `false` when the forms differ.
    pub fn same_fields(&self, other: &Entry<'_>) -> bool {
        match (&self.fields, &other.fields) {
            (Fields::Tree(a), Fields::Tree(b)) => a == b,
            (Fields::Text(a), Fields::Text(b)) => a.get() == b.get(),
            (Fields::Absent, Fields::Absent) => true,
            _ => false,
        }
    }

    /// True when `fieldsV1` is a non-empty object, without decoding it.
    pub fn has_fields(&self) -> bool {
        match &self.fields {
            Fields::Tree(v) => v.as_object().is_some_and(|m| !m.is_empty()),
            Fields::Text(raw) => {
                let t = raw.get().trim();
                t.starts_with('{') && t[1..].trim_start() != "}"
            }
            Fields::Absent => false,
        }
    }
}

#[derive(Deserialize)]
struct TextEntry<'a> {
    #[serde(borrow, default)]
    manager: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subresource: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "fieldsV1")]
    fields: Option<&'a RawValue>,
}

/// The managedFields entries of an object; entries that are not objects are skipped,
/// and unreadable managedFields read as none.
pub fn entries(obj: &Value) -> Vec<Entry<'_>> {
    match obj.get("metadata").and_then(|m| m.get("managedFields")) {
        Some(Value::Array(list)) => list
            .iter()
            .filter(|e| e.is_object())
            .map(|e| Entry {
                manager: Cow::Borrowed(e.get("manager").and_then(Value::as_str).unwrap_or("")),
                operation: Cow::Borrowed(e.get("operation").and_then(Value::as_str).unwrap_or("")),
                subresource: Cow::Borrowed(e.get("subresource").and_then(Value::as_str).unwrap_or("")),
                fields: e.get("fieldsV1").map_or(Fields::Absent, Fields::Tree),
            })
            .collect(),
        Some(Value::String(text)) => serde_json::from_str::<Vec<&RawValue>>(text)
            .map(|list| {
                list.into_iter()
                    .filter_map(|raw| serde_json::from_str::<TextEntry<'_>>(raw.get()).ok())
                    .map(|e| Entry {
                        manager: e.manager.unwrap_or_default(),
                        operation: e.operation.unwrap_or_default(),
                        subresource: e.subresource.unwrap_or_default(),
                        fields: e.fields.map_or(Fields::Absent, Fields::Text),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The `oldObject` of a `scale` write as a validating webhook needs it, rebuilt from the
/// parent's metadata (a `PartialObjectMetadata`'s `metadata`: the parent Deployment,
/// StatefulSet or ReplicaSet as kube-apiserver stores it).
///
/// kube-apiserver gives a *validating* webhook a `Scale` built from the parent with only
/// name, namespace, uid, resourceVersion and creationTimestamp — no managedFields, labels
/// or annotations (`toScaleUpdateValidation` -> `scaleFromDeployment` in
/// `pkg/registry/apps/deployment/storage/storage.go`; StatefulSets and ReplicaSets alike;
/// captured in `tests/fixtures/validating/deploy-platform-agent-scale-dev-flux-owned-replicas.validating.json`).
/// A *mutating* webhook's `Scale` carries managedFields translated from the parent, where
/// `spec.replicas` keeps its path (`f:spec.f:replicas`). This returns `scale` with:
/// - `metadata.managedFields`: the parent's entries that own `f:spec.f:replicas` (other
///   than `status` ones), each reduced to `{"f:spec":{"f:replicas":{}}}` — the translation
///   the mutating view shows;
/// - `metadata.labels` and `metadata.annotations`: the parent's (an empty map when it has
///   none, so that a label rule is matched against the parent rather than failing closed).
pub fn scale_with_parent(scale: &Value, parent_metadata: &Value) -> Value {
    let mut out = scale.clone();
    let owners: Vec<Value> = parent_metadata
        .get("managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("subresource").and_then(Value::as_str) != Some("status"))
        .filter(|e| e.pointer("/fieldsV1/f:spec/f:replicas").is_some())
        .map(|e| {
            let mut entry = serde_json::Map::new();
            for key in ["manager", "operation", "apiVersion", "time", "subresource"] {
                if let Some(v) = e.get(key) {
                    entry.insert(key.to_owned(), v.clone());
                }
            }
            entry.insert("fieldsType".to_owned(), Value::String("FieldsV1".to_owned()));
            entry.insert("fieldsV1".to_owned(), serde_json::json!({"f:spec": {"f:replicas": {}}}));
            Value::Object(entry)
        })
        .collect();
    let map_or_empty = |key: &str| match parent_metadata.get(key) {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => Value::Object(serde_json::Map::new()),
    };
    if let Some(out) = out.as_object_mut() {
        let metadata = out.entry("metadata").or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(serde_json::Map::new());
        }
        if let Some(m) = metadata.as_object_mut() {
            m.insert("managedFields".to_owned(), Value::Array(owners));
            m.insert("labels".to_owned(), map_or_empty("labels"));
            m.insert("annotations".to_owned(), map_or_empty("annotations"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!([{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
               {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {}},
               "not an entry",
               {"operation": "Update"}])
    }

    #[test]
    fn both_forms_read_the_same() {
        let tree = json!({"metadata": {"managedFields": sample()}});
        let text = json!({"metadata": {"managedFields": sample().to_string()}});
        let names = |o: &Value| {
            entries(o)
                .iter()
                .map(|e| (e.manager.to_string(), e.subresource.to_string(), e.has_fields()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&tree), names(&text));
        assert_eq!(names(&tree)[0], ("kustomize-controller".to_owned(), String::new(), true));
        assert_eq!(names(&tree)[1], ("kubectl".to_owned(), "scale".to_owned(), false));
        assert_eq!(entries(&text)[0].fields().as_deref(), Some(&json!({"f:spec": {"f:replicas": {}}})));
    }

    #[test]
    fn a_validating_scale_gets_the_parents_replicas_owners_and_labels() {
        let scale =
            json!({"kind": "Scale", "metadata": {"name": "web", "namespace": "team-a"}, "spec": {"replicas": 2}});
        let parent = json!({
            "name": "web", "labels": {"tier": "web"}, "annotations": {"a": "b"},
            "managedFields": [
                {"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "apps/v1",
                 "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:replicas": {}, "f:template": {}}}},
                {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kubectl", "operation": "Update", "subresource": "scale",
                 "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            ]
        });
        let view = scale_with_parent(&scale, &parent);
        let owners: Vec<(String, String)> =
            entries(&view).iter().map(|e| (e.manager.to_string(), e.subresource.to_string())).collect();
        assert_eq!(
            owners,
            [("kustomize-controller".to_owned(), String::new()), ("kubectl".to_owned(), "scale".to_owned())]
        );
        assert_eq!(entries(&view)[0].fields().as_deref(), Some(&json!({"f:spec": {"f:replicas": {}}})));
        assert_eq!(view["metadata"]["labels"], json!({"tier": "web"}));
        assert_eq!(view["metadata"]["annotations"], json!({"a": "b"}));
        assert_eq!(view["spec"], scale["spec"], "the Scale itself is unchanged");
        // A parent without labels gives an empty map (matched as such), not an absent one.
        let bare = scale_with_parent(&scale, &json!({"name": "web"}));
        assert_eq!(bare["metadata"]["labels"], json!({}));
        assert_eq!(bare["metadata"]["managedFields"], json!([]));
    }

    #[test]
    fn unreadable_managed_fields_read_as_none() {
        for bad in [json!("not json"), json!("{}"), json!(7), json!(null)] {
            assert!(entries(&json!({"metadata": {"managedFields": bad}})).is_empty());
        }
    }
}
