//! `kubernetes.io/change-cause` on the writes that start a new rollout revision, so that
//! `kubectl rollout history` says who made each revision, from which commit, branch and
//! pipeline (docs/audit-trail.md "kubectl rollout history").
//!
//! `kubectl rollout history` prints, per revision, the `kubernetes.io/change-cause`
//! annotation of the revision's ReplicaSet (Deployment) or ControllerRevision
//! (StatefulSet, DaemonSet); the controllers copy the workload's annotations onto the
//! revision they create for a new pod template. So the annotation must be on the workload
//! in the very write that changes `spec.template`: that is the write hallmark stamps.
//!
//! Pure, like the stamp: a function of the request, the diff and the stamp's audit values.

use crate::admission::{AdmissionRequest, Operation, truncate};
use crate::ownership::diff::Change;
use crate::ownership::path::Segment;
use crate::provenance::{StampResult, Stamper, annotations};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::{Map, Value};

/// The annotation `kubectl rollout history` reads (`ChangeCauseAnnotation` in
/// `staging/src/k8s.io/kubectl/pkg/polymorphichelpers/history.go`).
pub const KEY: &str = "kubernetes.io/change-cause";

/// The workloads whose revisions `kubectl rollout history` lists: (group, kind).
pub const KINDS: [(&str, &str); 3] = [("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet")];

/// A change-cause line is cut to this many characters (it is one table cell).
pub const MAX_CHARS: usize = 256;

/// Commits are shown with this many characters, as `git log --oneline` would (enough to
/// be unique in practice; the stamp keeps the full value).
const COMMIT_CHARS: usize = 12;

/// kube-apiserver's limit on the total size of an object's annotations (keys + values).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// The change-cause line of a stamped write, from the stamp's audit values (`channel` and
/// the Git fields, cleaned): `WHO (CHANNEL)`, then `: BRANCH@COMMIT` (either alone when the
/// other is unknown), then `, pipeline PIPELINE`. At most [`MAX_CHARS`] characters.
pub fn line(by: &str, stamp: &StampResult) -> String {
    let get = |k: &str| stamp.audit.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut out = format!("{by} ({})", get("channel").unwrap_or("push"));
    let commit = get("commit").map(short_commit);
    match (get("branch"), commit.as_deref()) {
        (Some(b), Some(c)) => out.push_str(&format!(": {b}@{c}")),
        (Some(b), None) => out.push_str(&format!(": {b}")),
        (None, Some(c)) => out.push_str(&format!(": {c}")),
        (None, None) => {}
    }
    if let Some(p) = get("pipeline") {
        out.push_str(&format!(", pipeline {p}"));
    }
    truncate(&out, MAX_CHARS)
}

/// A commit as shown in a change-cause: the first [`COMMIT_CHARS`] characters of a hex
/// SHA, or the whole value when it is something else (a tag, a digest name).
fn short_commit(commit: &str) -> String {
    if commit.len() > COMMIT_CHARS && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        commit[..COMMIT_CHARS].to_owned()
    } else {
        commit.to_owned()
    }
}

/// True when the write starts a new revision of a workload: a CREATE, or an UPDATE that
/// changes something under `spec.template`.
fn changes_pod_template(req: &AdmissionRequest, object: &Value, changes: &[Change<'_>]) -> bool {
    match req.operation {
        Operation::Create => object.pointer("/spec/template").is_some(),
        Operation::Update => changes.iter().any(|c| {
            matches!(c.path.segments(), [Segment::Field(spec), Segment::Field(template), ..]
                if spec == "spec" && template == "template")
        }),
        _ => false,
    }
}

impl Stamper {
    /// The patch operation that sets `kubernetes.io/change-cause` for a stamped write, or
    /// `None` when it must not: the setting is off, the object is not a Deployment,
    /// StatefulSet or DaemonSet, the write does not change the pod template, the stamp
    /// was left out, the annotations would pass 256 KiB, or a person set the
    /// change-cause in this write (a value that differs from `oldObject`'s, any value on a
    /// CREATE, or one the write's field manager owns in managedFields: a re-applied
    /// manifest that carries it). A value carried over from the previous revision is
    /// replaced: it describes that revision, which keeps it.
    pub fn change_cause(
        &self,
        req: &AdmissionRequest,
        object: &Value,
        changes: &[Change<'_>],
        stamp: &StampResult,
    ) -> Option<PatchOperation> {
        if !self.settings.change_cause
            || stamp.noop
            || stamp.ops.is_empty()
            || !KINDS.contains(&(req.kind.group.as_str(), req.kind.kind.as_str()))
            || !changes_pod_template(req, object, changes)
        {
            return None;
        }
        let current = annotations(object);
        let stamped = stamp.ops.iter().any(|op| match op {
            PatchOperation::Add(a) => {
                a.path.as_str() == "/metadata/annotations"
                    || a.path.as_str().ends_with(&format!("/{}", escape(&self.keys.applied_by)))
            }
            _ => false,
        });
        if !stamped {
            // The stamp was left out (annotations at their limit): so is the cause.
            return None;
        }
        if let Some(value) = current.and_then(|m| m.get(KEY)) {
            let before = req.old_object.as_ref().and_then(annotations).and_then(|m| m.get(KEY));
            let set_by_write = req.operation == Operation::Create || before != Some(value);
            let managed = req.field_manager().is_some_and(|m| crate::provenance::manages_annotation(object, m, KEY));
            // A manifest carries it (Git through the reconciler's server-side apply, or a
            // person's): an Apply entry owns it. hallmark's own change-causes never are:
            // an Apply entry owns only what the applied manifest holds.
            let applied = req
                .old_object
                .as_ref()
                .is_some_and(|old| crate::provenance::annotation_owned_by(old, KEY, |e| e.operation == "Apply"));
            if set_by_write || managed || applied {
                return None;
            }
        }
        let cause = line(&crate::provenance::clean_value(&req.user_info.username), stamp);
        // Room for it: the annotations as the stamp leaves them, plus the cause.
        if size_after(current, &stamp.ops) + KEY.len() + cause.len() > MAX_ANNOTATIONS_BYTES {
            return None;
        }
        Some(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", KEY]),
            value: Value::String(cause),
        }))
    }
}

/// The size (keys + values) of the annotations as the stamp's patch leaves them, the
/// change-cause left out: the current ones less those the patch adds or removes, plus
/// what it adds. Computed from the patch, without copying the annotations (a client-side
/// apply's `last-applied-configuration` alone is kilobytes, on every write).
fn size_after(current: Option<&Map<String, Value>>, ops: &[PatchOperation]) -> usize {
    let entry = |k: &str, v: &Value| if k == KEY { 0 } else { k.len() + v.as_str().map_or(0, str::len) };
    let key_of =
        |path: &str| path.strip_prefix("/metadata/annotations/").map(|t| t.replace("~1", "/").replace("~0", "~"));
    let mut touched: Vec<String> = Vec::new();
    let mut added = 0;
    for op in ops {
        match op {
            PatchOperation::Add(a) if a.path.as_str() == "/metadata/annotations" => {
                // The whole map, on an object that had none.
                if let Value::Object(m) = &a.value {
                    added += m.iter().map(|(k, v)| entry(k, v)).sum::<usize>();
                }
            }
            PatchOperation::Add(a) => {
                if let Some(key) = key_of(a.path.as_str()) {
                    added += entry(&key, &a.value);
                    touched.push(key);
                }
            }
            PatchOperation::Replace(r) => {
                if let Some(key) = key_of(r.path.as_str()) {
                    added += entry(&key, &r.value);
                    touched.push(key);
                }
            }
            PatchOperation::Remove(r) => touched.extend(key_of(r.path.as_str())),
            _ => {}
        }
    }
    let kept: usize = current
        .map(|m| m.iter().filter(|(k, _)| !touched.iter().any(|t| t == *k)).map(|(k, v)| entry(k, v)).sum())
        .unwrap_or(0);
    kept + added
}

/// A JSON pointer token (`/` → `~1`, `~` → `~0`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::admission::Review;
    use crate::config::Settings;
    use crate::ownership::diff::{DiffOptions, diff};
    use crate::provenance::Channel;
    use serde_json::json;

    fn request(op: &str, kind: &str, old: Option<Value>, new: Value, user: Value, manager: &str) -> AdmissionRequest {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "operation": op, "userInfo": user,
                "kind": {"group": "apps", "version": "v1", "kind": kind},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "object": new, "oldObject": old, "options": {"fieldManager": manager},
            }
        });
        Review::decode(&serde_json::to_vec(&review).expect("json")).expect("review").request
    }

    fn workload(image: &str, annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "team-a", "annotations": annotations},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    /// Stamps the write and returns the change-cause the object ends with (after the whole
    /// patch), if any.
    fn cause(stamper: &Stamper, req: &AdmissionRequest) -> Option<String> {
        let object = req.object.clone().expect("object");
        let changes = match &req.old_object {
            Some(old) => diff(old, &object, &DiffOptions::new(&stamper.settings.annotation_prefix)),
            None => Vec::new(),
        };
        let mut stamp =
            stamper.stamp(req, &object, &changes, Channel::Push, jiff::Timestamp::UNIX_EPOCH).expect("stamp");
        if let Some(op) = stamper.change_cause(req, &object, &changes, &stamp) {
            stamp.ops.push(op);
        }
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &stamp.ops).expect("the patch applies");
        patched.pointer("/metadata/annotations").and_then(|a| a.get(KEY)).and_then(Value::as_str).map(str::to_owned)
    }

    fn ci() -> Value {
        json!({"username": "ci-bot", "extra": {
            "hallmark.dev/commit": ["0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a"],
            "hallmark.dev/branch": ["main"],
            "hallmark.dev/pipeline": ["https://ci.example.com/runs/42"]}})
    }

    #[test]
    fn a_template_change_gets_who_commit_branch_and_pipeline() {
        let s = Stamper::new(Settings::default());
        let req = request(
            "UPDATE",
            "Deployment",
            Some(workload("a:1", json!(null))),
            workload("a:2", json!(null)),
            ci(),
            "ci-apply",
        );
        assert_eq!(
            cause(&s, &req).as_deref(),
            Some("ci-bot (push): main@0f2b6b7d3c8e, pipeline https://ci.example.com/runs/42")
        );
        // A CREATE is revision 1.
        let req = request("CREATE", "StatefulSet", None, workload("a:1", json!({"team": "x"})), ci(), "ci-apply");
        assert!(cause(&s, &req).is_some_and(|c| c.starts_with("ci-bot (push): main@")));
    }

    #[test]
    fn only_template_changes_of_the_three_workload_kinds() {
        let s = Stamper::new(Settings::default());
        let dev = json!({"username": "dev"});
        let mut scaled = workload("a:1", json!(null));
        scaled["spec"]["replicas"] = json!(3);
        let req = request("UPDATE", "Deployment", Some(workload("a:1", json!(null))), scaled, dev.clone(), "kubectl");
        assert_eq!(cause(&s, &req), None, "a replicas change is no new revision");
        let req = request(
            "UPDATE",
            "ReplicaSet",
            Some(workload("a:1", json!(null))),
            workload("a:2", json!(null)),
            dev.clone(),
            "kubectl",
        );
        assert_eq!(cause(&s, &req), None, "not a workload kubectl rollout history lists");
        let req = request(
            "UPDATE",
            "DaemonSet",
            Some(workload("a:1", json!(null))),
            workload("a:2", json!(null)),
            dev,
            "kubectl-set",
        );
        assert_eq!(cause(&s, &req).as_deref(), Some("dev (push)"));
    }

    #[test]
    fn a_change_cause_a_person_sets_is_kept() {
        let s = Stamper::new(Settings::default());
        let dev = json!({"username": "dev"});
        let mine = json!({KEY: "hotfix for INC-42"});
        // Set in this write.
        let req = request(
            "UPDATE",
            "Deployment",
            Some(workload("a:1", json!(null))),
            workload("a:2", mine.clone()),
            dev.clone(),
            "kubectl",
        );
        assert_eq!(cause(&s, &req).as_deref(), Some("hotfix for INC-42"));
        // Set on a CREATE.
        let req = request("CREATE", "Deployment", None, workload("a:2", mine.clone()), dev.clone(), "kubectl");
        assert_eq!(cause(&s, &req).as_deref(), Some("hotfix for INC-42"));
        // Re-applied unchanged by the manager that owns it.
        let mut new = workload("a:2", mine.clone());
        new["metadata"]["managedFields"] = json!([{"manager": "dev-apply", "operation": "Apply",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:kubernetes.io/change-cause": {}}}}}]);
        let req = request("UPDATE", "Deployment", Some(workload("a:1", mine.clone())), new, dev.clone(), "dev-apply");
        assert_eq!(cause(&s, &req).as_deref(), Some("hotfix for INC-42"));
        // Carried over from the previous revision by a write that does not set it: replaced.
        let req = request(
            "UPDATE",
            "Deployment",
            Some(workload("a:1", mine.clone())),
            workload("a:2", mine),
            dev,
            "kubectl-set",
        );
        assert_eq!(cause(&s, &req).as_deref(), Some("dev (push)"));
    }

    /// Git's change-cause (the reconciler's applied manifest carries it) is Git's: a
    /// developer's `kubectl rollout restart` does not overwrite it.
    #[test]
    fn a_change_cause_git_applied_is_kept() {
        let s = Stamper::new(Settings::default());
        let git = json!({KEY: "release 1.2 from git"});
        let mut old = workload("a:1", git.clone());
        old["metadata"]["managedFields"] = json!([{"manager": "kustomize-controller", "operation": "Apply",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:kubernetes.io/change-cause": {}}}}}]);
        let req =
            request("UPDATE", "Deployment", Some(old), workload("a:2", git), json!({"username": "dev"}), "kubectl");
        assert_eq!(cause(&s, &req).as_deref(), Some("release 1.2 from git"));
    }

    /// The size from the patch is the size of the patched annotations, on captured writes.
    #[test]
    fn the_size_after_the_stamp_is_read_from_its_patch() {
        let s = Stamper::new(Settings::default());
        for fixture in [
            "deploy-web-update-csa-image-dev.json",
            "deploy-web-create-csa-dev.json",
            "deploy-web-update-csa-forged-annotations-dev.json",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
            let req = Review::decode(&std::fs::read(path).expect("fixture")).expect("review").request;
            let object = req.object.clone().expect("object");
            let changes = match &req.old_object {
                Some(old) => diff(old, &object, &DiffOptions::new("hallmark.dev/")),
                None => Vec::new(),
            };
            let stamp = s.stamp(&req, &object, &changes, Channel::Push, jiff::Timestamp::UNIX_EPOCH).expect("stamp");
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &stamp.ops).expect("applies");
            let want: usize = annotations(&patched)
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() != KEY)
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                        .sum()
                })
                .unwrap_or(0);
            assert_eq!(size_after(annotations(&object), &stamp.ops), want, "{fixture}");
        }
    }

    #[test]
    fn it_can_be_turned_off() {
        let mut settings = Settings::default();
        settings.change_cause = false;
        let s = Stamper::new(settings);
        let req = request(
            "UPDATE",
            "Deployment",
            Some(workload("a:1", json!(null))),
            workload("a:2", json!(null)),
            ci(),
            "ci",
        );
        assert_eq!(cause(&s, &req), None);
    }

    #[test]
    fn no_cause_without_a_stamp_or_over_the_size_limit() {
        let s = Stamper::new(Settings::default());
        let dev = json!({"username": "dev"});
        let full = json!({"big": "x".repeat(MAX_ANNOTATIONS_BYTES - 10)});
        let req = request(
            "UPDATE",
            "Deployment",
            Some(workload("a:1", full.clone())),
            workload("a:2", full),
            dev.clone(),
            "k",
        );
        assert_eq!(cause(&s, &req), None, "the stamp was left out, and so is the cause");
        // Room for the stamp but not for the cause as well.
        let near = json!({"big": "x".repeat(MAX_ANNOTATIONS_BYTES - 300)});
        let mut settings = Settings::default();
        settings.history = 0;
        let s = Stamper::new(settings);
        let long = json!({"username": "u".repeat(200)});
        let req =
            request("UPDATE", "Deployment", Some(workload("a:1", near.clone())), workload("a:2", near), long, "k");
        assert_eq!(cause(&s, &req), None);
    }

    #[test]
    fn lines_are_short() {
        let mut stamp = StampResult::default();
        stamp.audit.insert("channel".into(), "gitops".into());
        stamp.audit.insert("commit".into(), "v1.2.3".into());
        assert_eq!(line("flux", &stamp), "flux (gitops): v1.2.3", "a non-SHA commit is shown whole");
        stamp.audit.insert("pipeline".into(), "p".repeat(400));
        assert_eq!(line("flux", &stamp).chars().count(), MAX_CHARS);
    }
}
