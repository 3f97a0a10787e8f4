//! The object a `kubectl apply` of a manifest over the live object would leave, for
//! `check`: the manifest laid over the live object (maps merged, keyed lists merged by
//! key, other values replaced), and what the previous apply set but the manifest no
//! longer has removed (kubectl's three-way merge against
//! `kubectl.kubernetes.io/last-applied-configuration`).
//!
//! An approximation of strategic merge: good enough to see which fields a write changes,
//! which is what ownership and the stamp's history are about.

use serde_json::{Map, Value};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `live` after applying `manifest`.
pub fn apply(live: &Value, manifest: &Value) -> Value {
    let last: Option<Value> = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    merge(live, &as_kubectl_sends(manifest), last.as_ref(), "")
}

/// The manifest as `kubectl apply` sends it: with its own text as the last-applied
/// annotation (kubectl's `GetModifiedConfiguration`). So the object always has
/// `metadata.annotations`, and a previous apply's `"annotations": {}` (kubectl stores the
/// manifest less that annotation) never reads as "remove every annotation".
fn as_kubectl_sends(manifest: &Value) -> Value {
    let mut out = manifest.clone();
    let Some(root) = out.as_object_mut() else { return out };
    let metadata = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(LAST_APPLIED.to_owned(), Value::String(manifest.to_string()));
        }
    }
    out
}

fn merge(live: &Value, manifest: &Value, last: Option<&Value>, field: &str) -> Value {
    match (live, manifest) {
        (Value::Object(l), Value::Object(m)) => {
            let mut out: Map<String, Value> = l.clone();
            for (k, mv) in m {
                if mv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, mv, last.and_then(|x| x.get(k)), k),
                    // kube-apiserver stores no empty map or list the object lacks (the API
                    // types omit them when empty): `nodeSelector: {}` is no change.
                    None if is_empty_collection(mv) => continue,
                    None => mv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            if let Some(Value::Object(last)) = last {
                for k in last.keys() {
                    if !m.contains_key(k) {
                        out.remove(k);
                    }
                }
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(m)) => match list_keys(field, m) {
            Some(keys) => merge_keyed(l, m, last.and_then(Value::as_array), keys),
            None => manifest.clone(),
        },
        _ => manifest.clone(),
    }
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

/// The merge key fields of a list, by its field name (the standard Kubernetes ones).
fn list_keys(field: &str, elements: &[Value]) -> Option<&'static [&'static str]> {
    if !elements.iter().all(Value::is_object) {
        return None;
    }
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => &["containerPort"],
        "ports" => &["port"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "conditions" => &["type"],
        _ => return None,
    })
}

fn same_key(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| a.get(*k) == b.get(*k))
}

fn merge_keyed(live: &[Value], manifest: &[Value], last: Option<&Vec<Value>>, keys: &[&str]) -> Value {
    let mut out: Vec<Value> = live.to_vec();
    for m in manifest {
        let previous = last.and_then(|l| l.iter().find(|e| same_key(e, m, keys)));
        match out.iter_mut().find(|e| same_key(e, m, keys)) {
            Some(existing) => *existing = merge(existing, m, previous, ""),
            None => out.push(m.clone()),
        }
    }
    if let Some(last) = last {
        out.retain(|e| {
            let applied_before = last.iter().any(|x| same_key(x, e, keys));
            let still_applied = manifest.iter().any(|x| same_key(x, e, keys));
            !applied_before || still_applied
        });
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_manifest_is_laid_over_the_live_object_and_keyed_lists_merge_by_key() {
        let live = json!({"metadata": {"name": "web", "uid": "u", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "imagePullPolicy": "IfNotPresent",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "side:1"}]}}},
            "status": {"replicas": 2}});
        let manifest = json!({"metadata": {"name": "web", "labels": {"b": "2"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "env": [{"name": "A", "value": "9"}]}]}}}});
        let mut out = apply(&live, &manifest);
        assert_eq!(
            out["metadata"]["annotations"].as_object().map(|a| a.keys().cloned().collect::<Vec<_>>()),
            Some(vec![LAST_APPLIED.to_owned()]),
            "kubectl sets the last-applied annotation"
        );
        out["metadata"].as_object_mut().map(|m| m.remove("annotations"));
        assert_eq!(out["metadata"], json!({"name": "web", "uid": "u", "labels": {"a": "1", "b": "2"}}));
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(out["status"], json!({"replicas": 2}));
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers[0],
            json!({"name": "web", "image": "web:2", "imagePullPolicy": "IfNotPresent",
                   "env": [{"name": "A", "value": "9"}, {"name": "B", "value": "2"}]})
        );
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn what_the_last_apply_set_and_the_manifest_dropped_is_removed() {
        let last = json!({"metadata": {"labels": {"a": "1", "gone": "x"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "OLD", "value": "1"}]}]}}}});
        let live = json!({"metadata": {"labels": {"a": "1", "gone": "x", "other": "kept"},
                "annotations": {LAST_APPLIED: last.to_string()}},
            "spec": {"template": {"spec": {"containers": [{"name": "web",
                "env": [{"name": "OLD", "value": "1"}, {"name": "INJECTED", "value": "2"}]}]}}}});
        let manifest = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "env": []}]}}}});
        let out = apply(&live, &manifest);
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "other": "kept"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "INJECTED", "value": "2"}])
        );
    }

    /// `kubectl apply -k` of a manifest without annotations over a Deployment the
    /// controller annotated: kubectl's last-applied has `"annotations": {}`, and the
    /// controller's annotation stays.
    #[test]
    fn annotations_the_manifest_never_had_are_kept() {
        let last = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"annotations": {}, "name": "web"}, "spec": {"replicas": 2}});
        let live = json!({"metadata": {"name": "web", "annotations": {
                "deployment.kubernetes.io/revision": "3", LAST_APPLIED: last.to_string()}},
            "spec": {"replicas": 2}});
        let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let out = apply(&live, &manifest);
        assert_eq!(out["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
        let stored: Value =
            serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(stored, manifest, "the new last-applied is the manifest");
    }

    #[test]
    fn empty_maps_and_lists_the_live_object_lacks_are_no_change() {
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}});
        let manifest = json!({"spec": {"template": {"spec": {"nodeSelector": {}, "tolerations": [],
            "containers": [{"name": "app", "resources": {}}]}}}});
        let out = apply(&live, &manifest);
        assert_eq!(out["spec"], live["spec"]);
    }

    #[test]
    fn unkeyed_lists_and_scalars_are_replaced_and_null_removes() {
        let live = json!({"spec": {"args": ["a", "b"], "paused": true, "x": 1}});
        let manifest = json!({"spec": {"args": ["c"], "paused": null}});
        assert_eq!(apply(&live, &manifest)["spec"], json!({"args": ["c"], "x": 1}));
    }
}
