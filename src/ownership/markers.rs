//! The markers with which a GitOps reconciler is told to leave an object alone.
//!
//! Ownership means what the reconciler will actually enforce: where it has been told not
//! to re-apply an object, the fields its managedFields entry lists are not Git-owned for
//! hallmark either (explicit policy rules still are). docs/reconciler-markers.md says which
//! markers of Flux, Argo CD and Helm are honoured, which are not and why, with the
//! controllers' source that decides.
//!
//! Flux reads its markers with `fluxcd/pkg` `ssa/utils.AnyInMetadata`: a label or an
//! annotation, the key exactly, the value case-insensitively (`strings.EqualFold`), an
//! empty value never matching.

use super::fieldsv1::FieldSet;
use super::managed;
use super::path::Segment;
use serde_json::Value;

/// Why a reconciler does not enforce an object's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    /// The controller, as users know it (`Flux`).
    pub controller: &'static str,
    /// The marker key (`kustomize.toolkit.fluxcd.io/ssa`).
    pub key: &'static str,
    /// Where it stands: `annotations` or `labels`.
    pub map: &'static str,
    /// The marker value as written on the object.
    pub value: String,
    /// The reconciler recreates the object if it is deleted (Flux `IfNotPresent`, or a
    /// marker set on the cluster's copy only, which the Git manifest lacks):
    /// `deleteProtection` still applies.
    pub recreates: bool,
}

impl OptOut {
    /// `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent`.
    pub fn marker(&self) -> String {
        format!("{}: {}", self.key, self.value)
    }

    /// The marker's field path: `metadata.annotations["kustomize.toolkit.fluxcd.io/ssa"]`.
    pub fn path(&self) -> String {
        format!("metadata.{}[{}]", self.map, Value::String(self.key.to_owned()))
    }

    /// The clause for messages: `Flux will not revert it (kustomize.toolkit.fluxcd.io/ssa: IfNotPresent)`.
    pub fn will_not_revert(&self) -> String {
        format!("{} will not revert it ({})", self.controller, self.marker())
    }
}

/// The field manager of Flux's kustomize-controller.
pub const FLUX_KUSTOMIZE_MANAGER: &str = "kustomize-controller";
/// `kustomize.toolkit.fluxcd.io/ssa`: `IfNotPresent`, `Ignore` (and `Merge`, `Override`,
/// which do not stop the apply).
pub const FLUX_SSA: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// `kustomize.toolkit.fluxcd.io/reconcile: disabled`.
pub const FLUX_RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";

/// Where a marker with one of `values` (compared case-insensitively) stands, as Flux's
/// `AnyInMetadata` reads it: an annotation or a label, empty values never counting.
fn marker<'a>(obj: &'a Value, key: &str, values: &[&str]) -> Option<(&'static str, &'a str)> {
    let meta = obj.get("metadata")?;
    ["annotations", "labels"].into_iter().find_map(|map| {
        let value = meta.get(map).and_then(|m| m.get(key)).and_then(Value::as_str)?;
        values.iter().any(|v| v.eq_ignore_ascii_case(value)).then_some((map, value))
    })
}

/// True when the marker came from Git: the reconciler's own managedFields entry owns it.
fn applied_by(obj: &Value, manager: &str, map: &str, key: &str) -> bool {
    let path = [Segment::Field("metadata".into()), Segment::Field(map.into()), Segment::Field(key.into())];
    managed::entries(obj)
        .iter()
        .filter(|e| e.manager == manager && e.subresource.is_empty())
        .any(|e| e.fields().and_then(|f| FieldSet::decode(&f).ok()).is_some_and(|set| set.touches(&path)))
}

/// Whether the reconciler that applies with field manager `manager` has been told to leave
/// `obj` alone; `None` when it enforces it. Read on the object as it is before a write.
pub fn opt_out(obj: &Value, manager: &str) -> Option<OptOut> {
    if manager != FLUX_KUSTOMIZE_MANAGER {
        return None;
    }
    let stop = |key: &'static str, map: &'static str, value: &str, recreates: bool| OptOut {
        controller: "Flux",
        key,
        map,
        value: value.to_owned(),
        recreates,
    };
    // `reconcile: disabled` and `ssa: Ignore` are honoured on the Git manifest and on the
    // cluster's copy alike (`shouldSkipApply`); set on the cluster's copy only, the Git
    // manifest still recreates a deleted object.
    for (key, value) in [(FLUX_RECONCILE, "disabled"), (FLUX_SSA, "Ignore")] {
        if let Some((map, value)) = marker(obj, key, &[value]) {
            return Some(stop(key, map, value, !applied_by(obj, manager, map, key)));
        }
    }
    // `IfNotPresent` is read on the Git manifest only: it counts when Flux applied it, and
    // Flux still creates the object when it is missing.
    let (map, value) = marker(obj, FLUX_SSA, &["IfNotPresent"])?;
    applied_by(obj, manager, map, FLUX_SSA).then(|| stop(FLUX_SSA, map, value, true))
}

/// The first opt-out on `obj` of a reconciler applying with one of `managers`.
pub fn opt_out_any<'m>(obj: &Value, managers: impl IntoIterator<Item = &'m String>) -> Option<OptOut> {
    managers.into_iter().find_map(|m| opt_out(obj, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(annotations: Value, labels: Value, owned: Value) -> Value {
        json!({"metadata": {"name": "a", "annotations": annotations, "labels": labels,
            "managedFields": [{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": owned}]}})
    }

    #[test]
    fn flux_markers_as_flux_reads_them() {
        let from_git_ann = |k: &str| json!({"f:metadata": {"f:annotations": {format!("f:{k}"): {}}}});
        let from_git_label = |k: &str| json!({"f:metadata": {"f:labels": {format!("f:{k}"): {}}}});
        let none = json!({});
        // (object, opted out, recreates)
        let cases = [
            (object(json!({FLUX_SSA: "IfNotPresent"}), none.clone(), from_git_ann(FLUX_SSA)), Some(true)),
            // Case-insensitive value, as a label.
            (object(none.clone(), json!({FLUX_SSA: "ifnotpresent"}), from_git_label(FLUX_SSA)), Some(true)),
            // IfNotPresent only on the cluster's copy: Flux reads it on the Git manifest only.
            (object(json!({FLUX_SSA: "IfNotPresent"}), none.clone(), none.clone()), None),
            (object(json!({FLUX_SSA: "Ignore"}), none.clone(), from_git_ann(FLUX_SSA)), Some(false)),
            (object(json!({FLUX_SSA: "IGNORE"}), none.clone(), none.clone()), Some(true)),
            (object(json!({FLUX_SSA: "Merge"}), none.clone(), from_git_ann(FLUX_SSA)), None),
            (object(json!({FLUX_SSA: "Override"}), none.clone(), none.clone()), None),
            (object(json!({FLUX_RECONCILE: "Disabled"}), none.clone(), none.clone()), Some(true)),
            (object(none.clone(), json!({FLUX_RECONCILE: "disabled"}), from_git_label(FLUX_RECONCILE)), Some(false)),
            (object(json!({FLUX_RECONCILE: "enabled"}), none.clone(), none.clone()), None),
            (object(json!({FLUX_RECONCILE: ""}), none.clone(), none.clone()), None),
            // Either place counts, as with Flux.
            (object(json!({FLUX_RECONCILE: "enabled"}), json!({FLUX_RECONCILE: "disabled"}), none.clone()), Some(true)),
            // Another key that merely resembles one.
            (object(json!({"kustomize.toolkit.fluxcd.io/SSA": "Ignore"}), none.clone(), none.clone()), None),
        ];
        for (i, (obj, want)) in cases.into_iter().enumerate() {
            let got = opt_out(&obj, FLUX_KUSTOMIZE_MANAGER);
            assert_eq!(got.as_ref().map(|o| o.recreates), want, "case {i}: {got:?}");
            // Other reconcilers' entries are not affected by Flux's markers.
            assert_eq!(opt_out(&obj, "argocd-controller"), None, "case {i}");
        }
    }
}
