//! Provenance: who, what and where of a write -> the stamp (docs/reference.md
//! "Annotation keys" and "Stamping rules").
//!
//! Pure: a function of the request, the diff, the channel and the clock. It only ever
//! touches `metadata.annotations`, and only hallmark's own keys.

use crate::admission::{AdmissionRequest, Operation, truncate};
use crate::config::Settings;
use crate::ownership::diff::Change;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The Git fields of a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitField {
    Committer,
    Pipeline,
    Branch,
    Commit,
    Repository,
}

impl GitField {
    pub const ALL: [GitField; 5] =
        [GitField::Committer, GitField::Pipeline, GitField::Branch, GitField::Commit, GitField::Repository];

    pub fn name(self) -> &'static str {
        match self {
            GitField::Committer => "committer",
            GitField::Pipeline => "pipeline",
            GitField::Branch => "branch",
            GitField::Commit => "commit",
            GitField::Repository => "repository",
        }
    }
}

/// How the write reached the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Push,
    Gitops,
    BreakGlass,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Gitops => "gitops",
            Channel::BreakGlass => "break-glass",
        }
    }
}

/// Where the Git fields of a stamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Verified,
    /// Read by hallmark from the reconciler's source objects (a Flux Kustomization or
    /// HelmRelease and its source, an Argo CD Application): [`crate::gitops`].
    Source,
    Declared,
    None,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Verified => "verified",
            Trust::Source => "source",
            Trust::Declared => "declared",
            Trust::None => "none",
        }
    }
}

/// The full annotation keys, built once from the prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub applied_by: String,
    pub applied_at: String,
    pub field_manager: String,
    pub channel: String,
    pub trust: String,
    pub history: String,
    /// Indexed like [`GitField::ALL`].
    pub git: [String; 5],
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{prefix}{name}");
        Keys {
            applied_by: k("applied-by"),
            applied_at: k("applied-at"),
            field_manager: k("field-manager"),
            channel: k("channel"),
            trust: k("trust"),
            history: k("history"),
            git: GitField::ALL.map(|f| k(f.name())),
        }
    }

    pub fn git(&self, field: GitField) -> &str {
        &self.git[field as usize]
    }

    /// Every key hallmark writes, in a stable order.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [&self.applied_by, &self.applied_at, &self.field_manager, &self.channel, &self.trust]
            .into_iter()
            .chain(self.git.iter())
            .chain(std::iter::once(&self.history))
            .map(String::as_str)
    }

    /// Keys nobody but hallmark may set: a request's value for them is always replaced.
    fn derived(&self) -> [&str; 6] {
        [&self.applied_by, &self.applied_at, &self.field_manager, &self.channel, &self.trust, &self.history]
    }
}

/// Upper bound of a provenance value copied from a request, so that a hostile value cannot
/// blow the object's 256 KiB annotation budget.
const MAX_VALUE_CHARS: usize = 1024;
/// kube-apiserver's limit on the total size of an object's annotations (keys + values).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Paths a history entry names before it only counts the rest.
const HISTORY_PATHS: usize = 8;

/// The provenance engine, built once from the settings.
#[derive(Debug, Clone)]
pub struct Stamper {
    pub keys: Keys,
    pub settings: Settings,
}

/// Paths the `changed` audit annotation names before it only counts them.
pub const AUDIT_PATHS: usize = 20;
/// Upper bound, in bytes, of the `changed` audit annotation's value (a JSON list).
pub const AUDIT_CHANGED_BYTES: usize = 4096;

/// The stamp of one write: the patch to `request.object` and warnings for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StampResult {
    pub ops: Vec<PatchOperation>,
    pub warnings: Vec<String>,
    /// True when the write changed nothing and the previous stamp was kept.
    pub noop: bool,
    /// `response.auditAnnotations` for kube-apiserver's audit log, which it records as
    /// `<webhook name>/<key>` (e.g. `stamp.hallmark.dev/commit`; Kubernetes
    /// `admission/plugin/webhook/mutating/dispatcher.go` prefixes `h.Name + "/"`, and
    /// `admission/attributes.go` `checkKeyFormat` requires the whole key to be a qualified
    /// name: one `/`, a name part of at most 63 characters `[A-Za-z0-9][-A-Za-z0-9_.]*`).
    ///
    /// A stamped write: `channel`, `trust`, the Git fields it carries (`committer`,
    /// `pipeline`, `branch`, `commit`, `repository`; cleaned, at most 1024 characters),
    /// and for an UPDATE `changed` (a JSON list of the first [`AUDIT_PATHS`] changed paths,
    /// at most [`AUDIT_CHANGED_BYTES`] bytes) and `changed-count` (all of them). A no-op
    /// write: nothing, unless it tried to alter the stamp, then only `restored` (the
    /// hallmark keys put back, comma-separated). Paths name fields, never values.
    pub audit: BTreeMap<String, String>,
    /// A no-op write's patch puts these hallmark keys back (full annotation keys, in key
    /// order); empty otherwise.
    pub restored: Vec<String>,
}

/// Why a request could not be stamped (it is then allowed without a patch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("object has no metadata object")]
    NoMetadata,
    #[error("object metadata.annotations is not a map")]
    AnnotationsNotAMap,
}

/// One entry of the `history` annotation. Short keys: the annotation lives on the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HistoryEntry {
    pub at: String,
    pub by: String,
    pub channel: String,
    pub trust: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl HistoryEntry {
    pub fn git(&self, field: GitField) -> Option<&str> {
        match field {
            GitField::Committer => self.committer.as_deref(),
            GitField::Pipeline => self.pipeline.as_deref(),
            GitField::Branch => self.branch.as_deref(),
            GitField::Commit => self.commit.as_deref(),
            GitField::Repository => self.repository.as_deref(),
        }
    }

    fn set_git(&mut self, field: GitField, value: Option<String>) {
        let slot = match field {
            GitField::Committer => &mut self.committer,
            GitField::Pipeline => &mut self.pipeline,
            GitField::Branch => &mut self.branch,
            GitField::Commit => &mut self.commit,
            GitField::Repository => &mut self.repository,
        };
        *slot = value;
    }
}

/// Reads a `history` annotation value; anything that is not a list of entries reads as
/// empty (it was not written by hallmark, so it is not history).
pub fn parse_history(value: Option<&Value>) -> Vec<HistoryEntry> {
    value.and_then(Value::as_str).and_then(|s| serde_json::from_str::<Vec<HistoryEntry>>(s).ok()).unwrap_or_default()
}

pub fn annotations(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("annotations")?.as_object()
}

impl Stamper {
    pub fn new(settings: Settings) -> Stamper {
        Stamper { keys: Keys::new(&settings.annotation_prefix), settings }
    }

    /// The stamp for a CREATE or UPDATE of a main resource. `changes` is the diff of
    /// `oldObject` -> `object` (ignored for CREATE); `channel` is decided by the caller,
    /// which knows the reconcilers and the ownership verdict.
    pub fn stamp(
        &self,
        req: &AdmissionRequest,
        object: &Value,
        changes: &[Change<'_>],
        channel: Channel,
        now: jiff::Timestamp,
    ) -> Result<StampResult, StampError> {
        self.stamp_with(req, object, changes, channel, now, None)
    }

    /// [`Stamper::stamp`], with the Git source of a reconciler's write as read from its
    /// Kustomization, HelmRelease or Application (`trust: source`): it comes after
    /// verified extras and before declared annotations.
    pub fn stamp_with(
        &self,
        req: &AdmissionRequest,
        object: &Value,
        changes: &[Change<'_>],
        channel: Channel,
        now: jiff::Timestamp,
        source: Option<&crate::gitops::GitSource>,
    ) -> Result<StampResult, StampError> {
        let current = current_annotations(object)?;
        let old = match req.operation {
            Operation::Update => req.old_object.as_ref(),
            _ => None,
        };
        let old_ann = old.and_then(annotations);
        let mut warnings = Vec::new();

        if old.is_some() && changes.is_empty() {
            // A no-op write keeps the previous stamp exactly, so the apiserver stores nothing.
            return Ok(self.keep_previous(current, old_ann));
        }

        let user = &req.user_info;
        let manager = req.field_manager();

        // Git fields: verified extras first, then a trusted declarer's annotations.
        let mut verified: Vec<(GitField, String)> = Vec::new();
        for (extra_key, field) in &self.settings.extra {
            if verified.iter().any(|(f, _)| f == field) {
                continue;
            }
            if let Some(values) = user.extra.get(extra_key) {
                let joined = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect::<Vec<_>>().join(",");
                if !joined.is_empty() {
                    verified.push((*field, clean_value(&joined)));
                }
            }
        }
        let supplied: Vec<(GitField, &str)> = GitField::ALL
            .iter()
            .filter_map(|&f| {
                let key = self.keys.git(f);
                let value = get(current, key)?;
                let is_new = get(old_ann, key) != Some(value);
                (is_new || old.is_none() || manager.is_some_and(|m| manages_annotation(object, m, key)))
                    .then_some((f, value))
            })
            .collect();
        let declarer = self.settings.declarers.contains(&user.username, &user.groups);
        // A supplied annotation that the stamp's own value replaces, with a warning.
        let mut replaced = |git: &[(GitField, String)], from: &str| {
            for (f, v) in &supplied {
                if git.iter().all(|(gf, gv)| gf != f || gv != v) {
                    warnings.push(format!("{} was replaced: provenance comes from {from}", self.keys.git(*f)));
                }
            }
        };
        let (trust, git): (Trust, Vec<(GitField, String)>) = if !verified.is_empty() {
            replaced(&verified, &format!("the verified identity of {}", user.username));
            (Trust::Verified, verified)
        } else if let Some(src) = source {
            let git: Vec<(GitField, String)> = [
                (GitField::Pipeline, Some(&src.pipeline)),
                (GitField::Branch, src.branch.as_ref()),
                (GitField::Commit, src.commit.as_ref()),
                (GitField::Repository, src.repository.as_ref()),
            ]
            .into_iter()
            .filter_map(|(f, v)| v.filter(|v| !v.is_empty()).map(|v| (f, clean_value(v))))
            .collect();
            replaced(&git, &src.pipeline);
            (Trust::Source, git)
        } else if declarer && !supplied.is_empty() {
            (Trust::Declared, supplied.iter().map(|(f, v)| (*f, clean_value(v))).collect())
        } else {
            for (f, _) in &supplied {
                warnings.push(format!(
                    "{} was removed: {} is not a trusted provenance declarer",
                    self.keys.git(*f),
                    user.username
                ));
            }
            (Trust::None, Vec::new())
        };

        let applied_at = now.round(jiff::Unit::Second).unwrap_or(now).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let applied_by = clean_value(&user.username);
        let mut desired: Vec<(&str, String)> =
            vec![(&self.keys.applied_by, applied_by.clone()), (&self.keys.applied_at, applied_at.clone())];
        if let Some(m) = manager {
            desired.push((&self.keys.field_manager, clean_value(m)));
        }
        desired.push((&self.keys.channel, channel.as_str().to_owned()));
        desired.push((&self.keys.trust, trust.as_str().to_owned()));
        for (f, v) in &git {
            desired.push((self.keys.git(*f), v.clone()));
        }

        // Somebody tried to set what only hallmark writes.
        for key in self.keys.derived() {
            if let Some(v) = current.and_then(|m| m.get(key)) {
                let set_by_request = old.is_none() || old_ann.and_then(|m| m.get(key)) != Some(v);
                let ours = desired.iter().find(|(k, _)| *k == key).map(|(_, d)| d.as_str());
                if set_by_request && v.as_str() != ours && key != self.keys.applied_at {
                    warnings.push(format!("{key} is written by hallmark: the request's value was replaced"));
                }
            }
        }

        if self.settings.history > 0 {
            let mut entry = HistoryEntry {
                at: applied_at,
                by: applied_by,
                channel: channel.as_str().to_owned(),
                trust: trust.as_str().to_owned(),
                op: (req.operation == Operation::Create).then(|| "create".to_owned()),
                manager: manager.map(clean_value),
                ..HistoryEntry::default()
            };
            for (f, v) in &git {
                entry.set_git(*f, Some(truncate(v, 256)));
            }
            if old.is_some() {
                entry.changed = changes.iter().take(HISTORY_PATHS).map(|c| c.path.to_string()).collect();
                entry.more = changes.len().saturating_sub(HISTORY_PATHS);
            }
            let mut history = vec![entry];
            history.extend(parse_history(old_ann.and_then(|m| m.get(&self.keys.history))));
            history.truncate(self.settings.history);
            desired.push((&self.keys.history, serde_json::to_string(&history).unwrap_or_default()));
        }

        // The apiserver refuses objects whose annotations exceed 256 KiB in all; a stamp must
        // never be what makes a write fail. Drop the history first, then the whole stamp.
        let others: usize = current
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !self.keys.all().any(|ours| ours == k.as_str()))
                    .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                    .sum()
            })
            .unwrap_or(0);
        let size = |d: &[(&str, String)]| others + d.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size(&desired) > MAX_ANNOTATIONS_BYTES {
            desired.retain(|(k, _)| *k != self.keys.history);
            warnings.push(format!("{} was left out: the object's annotations would exceed 256 KiB", self.keys.history));
            if size(&desired) > MAX_ANNOTATIONS_BYTES {
                desired.clear();
                warnings.truncate(warnings.len() - 1);
                warnings.push("hallmark did not stamp this object: its annotations would exceed 256 KiB".to_owned());
            }
        }

        let ops = self.ops_for(current, &desired);
        let audit = audit_annotations(channel, trust, &git, old.is_some().then_some(changes));
        Ok(StampResult { ops, warnings, noop: false, audit, restored: Vec::new() })
    }

    /// The patch that makes hallmark's keys in `current` exactly `desired` (others removed),
    /// leaving every other annotation alone.
    /// The patch that leaves the previous stamp (`oldObject`'s hallmark annotations) on
    /// the object exactly: used for no-op writes and for system writers' writes, which
    /// do not replace a person's stamp. Restoring a key the write altered or dropped
    /// comes with a warning.
    pub fn keep(&self, req: &AdmissionRequest, object: &Value) -> Result<StampResult, StampError> {
        let current = current_annotations(object)?;
        Ok(self.keep_previous(current, req.old_object.as_ref().and_then(annotations)))
    }

    fn keep_previous(&self, current: Option<&Map<String, Value>>, old_ann: Option<&Map<String, Value>>) -> StampResult {
        let mut warnings = Vec::new();
        let mut desired: Vec<(&str, String)> = Vec::new();
        let mut restored: Vec<&str> = Vec::new();
        for key in self.keys.all() {
            let before = get(old_ann, key);
            let now_value = current.and_then(|m| m.get(key));
            if let (Some(b), Some(n)) = (before, now_value) {
                if n.as_str() != Some(b) {
                    warnings.push(format!("{key} is written by hallmark: the change to it was reverted"));
                    restored.push(key);
                }
            } else if before.is_none() && now_value.is_some() {
                warnings.push(format!("{key} is written by hallmark: the annotation was removed"));
                restored.push(key);
            } else if before.is_some() && now_value.is_none() {
                restored.push(key);
            }
            if let Some(b) = before {
                desired.push((key, b.to_owned()));
            }
        }
        let ops = self.ops_for(current, &desired);
        let mut audit = BTreeMap::new();
        if ops.is_empty() {
            restored.clear();
        } else if !restored.is_empty() {
            audit.insert("restored".to_owned(), restored.join(","));
        }
        let restored = restored.into_iter().map(str::to_owned).collect();
        StampResult { ops, warnings, noop: true, audit, restored }
    }

    fn ops_for(&self, current: Option<&Map<String, Value>>, desired: &[(&str, String)]) -> Vec<PatchOperation> {
        let Some(current) = current else {
            if desired.is_empty() {
                return Vec::new();
            }
            let map: Map<String, Value> =
                desired.iter().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
            return vec![PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations"]),
                value: Value::Object(map),
            })];
        };
        let mut ops = Vec::new();
        for key in self.keys.all() {
            let want = desired.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
            match (current.get(key), want) {
                (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation {
                    path: PointerBuf::from_tokens(["metadata", "annotations", key]),
                })),
                (have, Some(want)) if have.and_then(Value::as_str) != Some(want.as_str()) => {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: PointerBuf::from_tokens(["metadata", "annotations", key]),
                        value: Value::String(want.clone()),
                    }))
                }
                _ => {}
            }
        }
        ops
    }
}

/// The audit annotations of a stamped write (see [`StampResult::audit`]); `changes` is
/// `None` for a CREATE.
pub fn audit_annotations(
    channel: Channel,
    trust: Trust,
    git: &[(GitField, String)],
    changes: Option<&[Change<'_>]>,
) -> BTreeMap<String, String> {
    let mut audit = BTreeMap::new();
    audit.insert("channel".to_owned(), channel.as_str().to_owned());
    audit.insert("trust".to_owned(), trust.as_str().to_owned());
    for (field, value) in git {
        audit.insert(field.name().to_owned(), clean_value(value));
    }
    if let Some(changes) = changes {
        let mut listed: Vec<String> = Vec::new();
        let mut bytes: usize = 2;
        for change in changes.iter().take(AUDIT_PATHS) {
            let path = change.path.to_string();
            // The JSON text of the path, its quotes and a comma.
            let cost = serde_json::to_string(&path).map_or(usize::MAX, |s| s.len() + 1);
            if bytes.saturating_add(cost) > AUDIT_CHANGED_BYTES {
                break;
            }
            bytes += cost;
            listed.push(path);
        }
        audit.insert("changed".to_owned(), serde_json::to_string(&listed).unwrap_or_default());
        audit.insert("changed-count".to_owned(), changes.len().to_string());
    }
    audit
}

/// True when `object.metadata.managedFields` shows field manager `manager` (on the main
/// resource) owning annotation `key`: the write itself supplied it, even when its value
/// did not change (a server-side or client-side re-apply of the same manifest).
pub(crate) fn manages_annotation(object: &Value, manager: &str, key: &str) -> bool {
    annotation_owned_by(object, key, |e| e.manager == manager)
}

/// True when a main-resource managedFields entry for which `which` holds owns the
/// annotation `key`.
pub(crate) fn annotation_owned_by(
    object: &Value,
    key: &str,
    which: impl Fn(&crate::ownership::managed::Entry<'_>) -> bool,
) -> bool {
    let field = format!("f:{key}");
    crate::ownership::managed::entries(object).iter().any(|e| {
        which(e)
            && e.subresource.is_empty()
            && e.fields().is_some_and(|f| {
                f.get("f:metadata").and_then(|m| m.get("f:annotations")).and_then(|a| a.get(&field)).is_some()
            })
    })
}

/// `metadata.annotations` of the object being written: absent or null is `None`; a
/// non-map cannot be stamped.
fn current_annotations(object: &Value) -> Result<Option<&Map<String, Value>>, StampError> {
    let metadata = object.get("metadata").and_then(Value::as_object).ok_or(StampError::NoMetadata)?;
    match metadata.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(StampError::AnnotationsNotAMap),
    }
}

fn get<'a>(m: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a str> {
    m.and_then(|m| m.get(key)).and_then(Value::as_str)
}

/// A value copied into an annotation: control characters removed, trimmed, bounded to
/// 1024 characters (marked with `…` when cut).
pub fn clean_value(v: &str) -> String {
    let v: String = v.chars().filter(|c| !c.is_control()).collect();
    truncate(v.trim(), MAX_VALUE_CHARS)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::admission::{Review, UserInfo};
    use crate::ownership::diff::{DiffOptions, diff};
    use crate::policy::Subjects;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2026-11-27T10:00:00.750Z".parse().expect("ts")
    }

    fn request(
        op: &str,
        user: Value,
        old: Option<Value>,
        new: Option<Value>,
        manager: Option<&str>,
    ) -> AdmissionRequest {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "operation": op, "userInfo": user,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "object": new, "oldObject": old,
                "options": manager.map(|m| json!({"fieldManager": m})),
            }
        });
        Review::decode(&serde_json::to_vec(&review).expect("json")).expect("valid review").request
    }

    fn deploy(image: &str, annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "team-a", "annotations": annotations},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    /// Runs the stamper and returns the annotations after the patch, plus the warnings.
    fn run(stamper: &Stamper, req: &AdmissionRequest, channel: Channel) -> (Map<String, Value>, StampResult) {
        let object = req.object.clone().expect("object");
        let changes = match &req.old_object {
            Some(old) => diff(old, &object, &DiffOptions::new(&stamper.settings.annotation_prefix)),
            None => Vec::new(),
        };
        let result = stamper.stamp(req, &object, &changes, channel, now()).expect("stampable");
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &result.ops).expect("patch applies");
        (annotations(&patched).cloned().unwrap_or_default(), result)
    }

    fn ours(a: &Map<String, Value>) -> Vec<(String, String)> {
        a.iter()
            .filter(|(k, _)| k.starts_with("hallmark.dev/") && *k != "hallmark.dev/history")
            .map(|(k, v)| (k.trim_start_matches("hallmark.dev/").to_owned(), v.as_str().unwrap_or("").to_owned()))
            .collect()
    }

    fn dev() -> Value {
        json!({"username": "dev", "groups": ["developers", "system:authenticated"]})
    }

    #[test]
    fn create_by_plain_user_has_no_git_fields_and_trust_none() {
        let s = Stamper::new(Settings::default());
        let req = request("CREATE", dev(), None, Some(deploy("a:1", json!({"team": "x"}))), Some("kubectl"));
        let (a, r) = run(&s, &req, Channel::Push);
        assert_eq!(
            ours(&a),
            [
                ("applied-at", "2026-11-27T10:00:01Z"),
                ("applied-by", "dev"),
                ("channel", "push"),
                ("field-manager", "kubectl"),
                ("trust", "none")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(a["team"], "x", "other annotations stay");
        assert!(r.warnings.is_empty());
        let h = parse_history(a.get("hallmark.dev/history"));
        assert_eq!(h[0].op.as_deref(), Some("create"));
        assert!(h[0].changed.is_empty());
    }

    #[test]
    fn extras_are_verified_through_a_custom_mapping() {
        let mut settings = Settings::default();
        settings.extra =
            vec![("gitlab.com/sha".into(), GitField::Commit), ("gitlab.com/user".into(), GitField::Committer)];
        let s = Stamper::new(settings);
        let user = json!({"username": "ci", "extra": {"gitlab.com/sha": ["abc"], "gitlab.com/user": ["ann", "bob"],
                                                      "hallmark.dev/branch": ["main"]}});
        let req = request("CREATE", user, None, Some(deploy("a:1", json!(null))), None);
        let (a, _) = run(&s, &req, Channel::Push);
        let o = ours(&a);
        assert!(o.contains(&("commit".into(), "abc".into())));
        assert!(o.contains(&("committer".into(), "ann,bob".into())), "multiple values are joined");
        assert!(o.contains(&("trust".into(), "verified".into())));
        assert!(!o.iter().any(|(k, _)| k == "branch"), "unmapped extra keys are ignored");
        assert!(!o.iter().any(|(k, _)| k == "field-manager"), "no field manager, no annotation");
    }

    #[test]
    fn declarer_group_may_declare_and_others_may_not() {
        let mut settings = Settings::default();
        settings.declarers = Subjects::new(vec![], vec!["ci-pipelines".into()]);
        let s = Stamper::new(settings);
        let declared = json!({"hallmark.dev/commit": "c0ffee", "hallmark.dev/branch": "release"});
        let ci = json!({"username": "ci-bot", "groups": ["ci-pipelines"]});
        let (a, r) = run(&s, &request("CREATE", ci, None, Some(deploy("a:1", declared.clone())), None), Channel::Push);
        assert!(ours(&a).contains(&("trust".into(), "declared".into())));
        assert_eq!(a["hallmark.dev/commit"], "c0ffee");
        assert!(r.warnings.is_empty());

        let (a, r) = run(&s, &request("CREATE", dev(), None, Some(deploy("a:1", declared)), None), Channel::Push);
        assert!(!a.contains_key("hallmark.dev/commit") && !a.contains_key("hallmark.dev/branch"));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings.iter().all(|w| w.contains("dev is not a trusted provenance declarer")));
    }

    #[test]
    fn verified_values_win_over_declared_ones() {
        let mut settings = Settings::default();
        settings.declarers = Subjects::new(vec!["ci".into()], vec![]);
        let s = Stamper::new(settings);
        let user = json!({"username": "ci", "extra": {"hallmark.dev/commit": ["real"]}});
        let req = request(
            "CREATE",
            user,
            None,
            Some(deploy("a:1", json!({"hallmark.dev/commit": "fake", "hallmark.dev/branch": "b"}))),
            None,
        );
        let (a, r) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/commit"], "real");
        assert!(!a.contains_key("hallmark.dev/branch"), "verified stamps carry only verified fields");
        assert_eq!(a["hallmark.dev/trust"], "verified");
        assert_eq!(r.warnings.len(), 2);
    }

    #[test]
    fn a_stamp_replaces_the_previous_one_whole() {
        let s = Stamper::new(Settings::default());
        let old_stamp = json!({"hallmark.dev/applied-by": "gha", "hallmark.dev/commit": "abc", "hallmark.dev/trust": "verified",
                               "hallmark.dev/channel": "push", "hallmark.dev/applied-at": "2026-01-01T00:00:00Z"});
        let req = request(
            "UPDATE",
            dev(),
            Some(deploy("a:1", old_stamp.clone())),
            Some(deploy("a:2", old_stamp)),
            Some("kubectl-set"),
        );
        let (a, r) = run(&s, &req, Channel::Push);
        assert!(!a.contains_key("hallmark.dev/commit"), "a Git field not supplied by this write is removed");
        assert_eq!(a["hallmark.dev/applied-by"], "dev");
        assert_eq!(a["hallmark.dev/trust"], "none");
        assert!(r.warnings.is_empty(), "left-over stamp values are not the writer's: {:?}", r.warnings);
        let h = parse_history(a.get("hallmark.dev/history"));
        assert_eq!(h[0].changed, vec!["spec.template.spec.containers[name=web].image"]);
    }

    #[test]
    fn declarer_reapplying_the_same_declaration_keeps_it() {
        let mut settings = Settings::default();
        settings.declarers = Subjects::new(vec!["ci".into()], vec![]);
        let s = Stamper::new(settings);
        let ann = json!({"hallmark.dev/commit": "abc"});
        let mut new = deploy("a:2", ann.clone());
        new["metadata"]["managedFields"] = json!([{"manager": "kubectl-client-side-apply", "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:hallmark.dev/commit": {}}}}}]);
        let req = request(
            "UPDATE",
            json!({"username": "ci"}),
            Some(deploy("a:1", ann)),
            Some(new),
            Some("kubectl-client-side-apply"),
        );
        let (a, _) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/commit"], "abc");
        assert_eq!(a["hallmark.dev/trust"], "declared");
    }

    #[test]
    fn noop_write_keeps_or_restores_the_previous_stamp() {
        let s = Stamper::new(Settings::default());
        let stamp = json!({"hallmark.dev/applied-by": "gha", "hallmark.dev/commit": "abc"});
        // Unchanged: no ops at all.
        let req =
            request("UPDATE", dev(), Some(deploy("a:1", stamp.clone())), Some(deploy("a:1", stamp.clone())), None);
        let (_, r) = run(&s, &req, Channel::Push);
        assert!(r.ops.is_empty() && r.noop && r.warnings.is_empty());
        // Rewritten by `kubectl annotate`: restored, with a warning.
        let forged =
            json!({"hallmark.dev/applied-by": "gha", "hallmark.dev/commit": "evil", "hallmark.dev/branch": "x"});
        let req = request("UPDATE", dev(), Some(deploy("a:1", stamp.clone())), Some(deploy("a:1", forged)), None);
        let (a, r) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/commit"], "abc");
        assert!(!a.contains_key("hallmark.dev/branch"));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        // Dropped by a server-side apply that no longer lists it: restored silently.
        let req = request("UPDATE", dev(), Some(deploy("a:1", stamp)), Some(deploy("a:1", json!(null))), None);
        let (a, r) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/commit"], "abc");
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn noop_on_an_unstamped_object_adds_nothing() {
        let s = Stamper::new(Settings::default());
        let req = request(
            "UPDATE",
            dev(),
            Some(deploy("a:1", json!({"x": "1"}))),
            Some(deploy("a:1", json!({"x": "1"}))),
            None,
        );
        let (_, r) = run(&s, &req, Channel::Push);
        assert!(r.ops.is_empty());
    }

    #[test]
    fn history_keeps_the_last_n_newest_first() {
        let mut settings = Settings::default();
        settings.history = 2;
        let s = Stamper::new(settings);
        let old_history = json!([{"at": "t2", "by": "b", "channel": "push", "trust": "none"},
                                 {"at": "t1", "by": "a", "channel": "push", "trust": "none"}])
        .to_string();
        let ann = json!({"hallmark.dev/history": old_history});
        let req = request("UPDATE", dev(), Some(deploy("a:1", ann.clone())), Some(deploy("a:2", ann)), None);
        let (a, _) = run(&s, &req, Channel::Push);
        let h = parse_history(a.get("hallmark.dev/history"));
        assert_eq!(h.iter().map(|e| e.by.as_str()).collect::<Vec<_>>(), ["dev", "b"]);
    }

    #[test]
    fn history_zero_turns_it_off_and_removes_it() {
        let mut settings = Settings::default();
        settings.history = 0;
        let s = Stamper::new(settings);
        let ann = json!({"hallmark.dev/history": "[]"});
        let req = request("UPDATE", dev(), Some(deploy("a:1", ann.clone())), Some(deploy("a:2", ann)), None);
        let (a, _) = run(&s, &req, Channel::Push);
        assert!(!a.contains_key("hallmark.dev/history"));
    }

    #[test]
    fn history_names_eight_paths_then_counts() {
        let s = Stamper::new(Settings::default());
        let old = json!({"metadata": {"name": "c"}, "data": (0..11).map(|i| (format!("k{i:02}"), json!("a"))).collect::<Map<_, _>>()});
        let new = json!({"metadata": {"name": "c"}, "data": (0..11).map(|i| (format!("k{i:02}"), json!("b"))).collect::<Map<_, _>>()});
        let req = request("UPDATE", dev(), Some(old), Some(new), None);
        let (a, _) = run(&s, &req, Channel::Push);
        let h = parse_history(a.get("hallmark.dev/history"));
        assert_eq!(h[0].changed.len(), 8);
        assert_eq!(h[0].changed[0], "data.k00");
        assert_eq!(h[0].more, 3);
    }

    #[test]
    fn custom_prefix_moves_every_key() {
        let mut settings = Settings::default();
        settings.set_prefix("audit.example.com/".into()).expect("valid");
        let s = Stamper::new(settings);
        let user = json!({"username": "ci", "extra": {"audit.example.com/commit": ["abc"]}});
        let req = request("CREATE", user, None, Some(deploy("a:1", json!(null))), None);
        let (a, _) = run(&s, &req, Channel::Gitops);
        assert_eq!(a["audit.example.com/commit"], "abc");
        assert_eq!(a["audit.example.com/channel"], "gitops");
        assert!(!a.keys().any(|k| k.starts_with("hallmark.dev/")));
    }

    #[test]
    fn hostile_values_are_cleaned_and_bounded() {
        let s = Stamper::new(Settings::default());
        let long = "x".repeat(5000);
        let user = json!({"username": "a\nb", "extra": {"hallmark.dev/pipeline": [long]}});
        let req = request("CREATE", user, None, Some(deploy("a:1", json!(null))), Some("m\u{7}"));
        let (a, _) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/applied-by"], "ab");
        assert_eq!(a["hallmark.dev/field-manager"], "m");
        assert_eq!(a["hallmark.dev/pipeline"].as_str().map(|v| v.chars().count()), Some(MAX_VALUE_CHARS));
    }

    #[test]
    fn a_stamp_never_pushes_annotations_over_the_apiserver_limit() {
        let s = Stamper::new(Settings::default());
        let big = |n: usize| json!({"big": "x".repeat(n)});
        // Room for the stamp but not for the history: the history is left out.
        let history =
            json!([{"at": "t", "by": "b", "channel": "push", "trust": "none", "changed": ["x".repeat(2000)]}])
                .to_string();
        let mut old_ann = big(MAX_ANNOTATIONS_BYTES - 1500);
        old_ann["hallmark.dev/history"] = json!(history);
        let req = request("UPDATE", dev(), Some(deploy("a:1", old_ann.clone())), Some(deploy("a:2", old_ann)), None);
        let (a, r) = run(&s, &req, Channel::Push);
        assert!(!a.contains_key("hallmark.dev/history"));
        assert_eq!(a["hallmark.dev/applied-by"], "dev");
        assert!(r.warnings.iter().any(|w| w.contains("hallmark.dev/history was left out")), "{:?}", r.warnings);
        let total: usize = a.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        assert!(total <= MAX_ANNOTATIONS_BYTES);
        // No room at all: no stamp, and no stale one left behind.
        let mut full = big(MAX_ANNOTATIONS_BYTES - 10);
        full["hallmark.dev/applied-by"] = json!("someone-before");
        let req = request("UPDATE", dev(), Some(deploy("a:1", full.clone())), Some(deploy("a:2", full)), None);
        let (a, r) = run(&s, &req, Channel::Push);
        assert!(!a.keys().any(|k| k.starts_with("hallmark.dev/")), "{:?}", a.keys().collect::<Vec<_>>());
        assert!(r.warnings.iter().any(|w| w.contains("did not stamp")), "{:?}", r.warnings);
    }

    #[test]
    fn annotations_that_are_not_a_map_cannot_be_stamped() {
        let s = Stamper::new(Settings::default());
        let req = request("CREATE", dev(), None, Some(deploy("a:1", json!(["x"]))), None);
        let object = req.object.clone().expect("object");
        assert_eq!(s.stamp(&req, &object, &[], Channel::Push, now()), Err(StampError::AnnotationsNotAMap));
        let req = request("CREATE", dev(), None, Some(json!({"kind": "X"})), None);
        let object = req.object.clone().expect("object");
        assert_eq!(s.stamp(&req, &object, &[], Channel::Push, now()), Err(StampError::NoMetadata));
    }

    #[test]
    fn non_string_annotation_values_are_overwritten() {
        let s = Stamper::new(Settings::default());
        let req = request("CREATE", dev(), None, Some(deploy("a:1", json!({"hallmark.dev/channel": 7}))), None);
        let (a, r) = run(&s, &req, Channel::Push);
        assert_eq!(a["hallmark.dev/channel"], "push");
        assert!(r.warnings.iter().any(|w| w.contains("hallmark.dev/channel")));
    }

    #[test]
    fn user_info_defaults_when_fields_are_null() {
        let req = request(
            "CREATE",
            json!({"username": "x", "groups": null, "extra": null}),
            None,
            Some(deploy("a:1", json!(null))),
            None,
        );
        assert_eq!(req.user_info, UserInfo { username: "x".into(), ..UserInfo::default() });
    }
}
