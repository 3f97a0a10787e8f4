//! The one pure decision: `review(request, policy snapshot, clock) -> answer`.
//!
//! `/mutate` and `/validate` share this core. `/mutate` also computes the ownership
//! verdict, so that a break-glass write is stamped `channel=break-glass`, and the diff,
//! so that the history names the fields each write changed.

use crate::admission::{AdmissionRequest, Answer, Operation};
use crate::ownership::diff::{self, Change, DiffOptions};
use crate::ownership::path::{FieldPath, Segment};
use crate::ownership::verdict::{self, Finding, Standing, Verdict};
use crate::policy::{BUILTIN_RECONCILER_USERS, Enforcement, PolicySet};
use crate::provenance::{Channel, Stamper};
use serde_json::Value;

/// The resources (group, plural) whose `scale` writes `/validate` judges with the
/// parent's managedFields and labels, read through the API (RBAC `get` on these).
pub const SCALE_PARENTS: [(&str, &str); 3] =
    [("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")];

/// What `/validate` answers for a review it cannot judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnError {
    #[default]
    Allow,
    Deny,
}

/// An answer and how it is counted in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub answer: Answer,
    /// `stamped`, `unchanged`, `restored`, `skipped`, `allowed`, `warned`, `denied`,
    /// `break-glass`, `system-writer`, `error`.
    pub outcome: &'static str,
    /// Why the review could not be evaluated (for metrics and logs, never object content).
    pub error: Option<&'static str>,
    /// The fields the decision is about, for the decision log and the per-policy metrics.
    /// Empty (no allocation) for a plain allow.
    pub involved: Involved,
}

/// Most field paths an [`Involved`] keeps; the rest are only counted (`more`).
pub const MAX_INVOLVED_PATHS: usize = 20;

/// The fields a decision that is not a plain allow is about: never their values.
///
/// - `denied`: the denied fields; `warned`: the fields warned about; `break-glass`: the
///   fields a break-glass writer overrode — each with the policies that own them.
/// - `restored`: hallmark's own annotations that a no-op write changed and the stamp put
///   back (`metadata.annotations["hallmark.dev/applied-by"]`, ...); no policy.
/// - a stamp with warnings: hallmark's annotations the write set, changed or removed
///   itself (forged or untrusted provenance); no policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Involved {
    /// Field paths in the policy path syntax (`spec.template.spec.containers[name=web].image`),
    /// at most [`MAX_INVOLVED_PATHS`], in the order the verdict found them.
    pub paths: Vec<String>,
    /// How many more paths there were beyond `paths`.
    pub more: usize,
    /// The distinct names of the policies that own the fields (sorted).
    pub policies: Vec<String>,
}

impl Involved {
    /// The fields of these findings, and the policies that own them.
    fn of<'a>(findings: impl Iterator<Item = &'a Finding>) -> Involved {
        let mut out = Involved::default();
        for f in findings {
            out.push(f.path.clone());
            if let Err(at) = out.policies.binary_search(&f.policy) {
                out.policies.insert(at, f.policy.clone());
            }
        }
        out
    }

    /// Adds a path, or counts it once [`MAX_INVOLVED_PATHS`] are kept.
    fn push_path(&mut self, path: FieldPath) {
        self.push(path.to_string());
    }

    fn push(&mut self, path: String) {
        if self.paths.len() < MAX_INVOLVED_PATHS {
            self.paths.push(path);
        } else {
            self.more += 1;
        }
    }

    /// The paths as one comma-separated text, `,+N` when some were left out (the format of
    /// the `ownership-denied` audit annotation).
    pub fn paths_text(&self) -> String {
        let mut s = self.paths.join(",");
        if self.more > 0 {
            s.push_str(&format!(",+{}", self.more));
        }
        s
    }
}

impl Decision {
    fn new(answer: Answer, outcome: &'static str) -> Decision {
        Decision { answer, outcome, error: None, involved: Involved::default() }
    }

    /// A review that could not be evaluated (`outcome` `error`), answered with `answer`.
    pub fn failed(answer: Answer, kind: &'static str) -> Decision {
        Decision { answer, outcome: "error", error: Some(kind), involved: Involved::default() }
    }

    /// True for the decisions that are logged at `info` and above: a denial, a warning
    /// (`warned`, or any answer that carries warnings, such as a stamp that replaced forged
    /// provenance), a break-glass write, an error or a restored stamp. Plain allows
    /// (`stamped`, `unchanged`, `skipped`, `allowed`, ... without warnings) are not.
    pub fn is_notable(&self) -> bool {
        matches!(self.outcome, "denied" | "warned" | "break-glass" | "error" | "restored")
            || !self.answer.warnings.is_empty()
    }
}

/// `POST /validate-policy`: an `OwnershipPolicy` about to be created or updated, judged
/// by the loader that `--policy` files and `--watch-policies` use
/// ([`crate::policy::load::check_object`]): allowed when it compiles, denied with the
/// loader's one-line error otherwise, so that `kubectl apply` of an invalid policy fails
/// with hallmark's own reason instead of being stored and reported later.
pub fn review_policy(req: &AdmissionRequest) -> Decision {
    if req.operation == Operation::Delete {
        return Decision::new(Answer::allow(), "allowed");
    }
    let Some(object) = &req.object else {
        return Decision::failed(Answer::allow(), "no-object");
    };
    match crate::policy::load::check_object(object) {
        Ok(_) => Decision::new(Answer::allow(), "allowed"),
        Err(why) => Decision::new(Answer::deny(why), "denied"),
    }
}

/// The engine: provenance settings plus the ownership policies of the moment.
#[derive(Debug, Clone)]
pub struct Engine {
    pub stamper: Stamper,
    pub on_error: OnError,
    /// The watch caches of the GitOps sources (docs/audit-trail.md), when the server has them.
    pub sources: Option<crate::gitops::Sources>,
}

impl Engine {
    pub fn new(stamper: Stamper, on_error: OnError) -> Engine {
        Engine { stamper, on_error, sources: None }
    }

    /// Reads reconcilers' Git sources from `sources` (`gitopsSources.enabled`).
    pub fn with_sources(mut self, sources: crate::gitops::Sources) -> Engine {
        self.sources = Some(sources);
        self
    }

    fn diff_options(&self) -> DiffOptions<'_> {
        DiffOptions::new(&self.stamper.settings.annotation_prefix)
    }

    /// The changed fields of an UPDATE (of a main resource or a `scale` subresource).
    fn changes<'a>(&self, req: &'a AdmissionRequest) -> Option<Vec<Change<'a>>> {
        self.changes_with(req, &self.diff_options())
    }

    fn changes_with<'a>(&self, req: &'a AdmissionRequest, opts: &DiffOptions<'_>) -> Option<Vec<Change<'a>>> {
        match (&req.old_object, &req.object) {
            (Some(old), Some(new)) => Some(diff::diff(old, new, opts)),
            _ => None,
        }
    }

    /// Is the writer Kubernetes' own control plane (config `systemWriters`)?
    pub fn is_system_writer(&self, req: &AdmissionRequest) -> bool {
        self.stamper.settings.system_writers.contains(&req.user_info.username, &req.user_info.groups)
    }

    /// Does `/validate` need the parent's metadata to judge this write? True for an UPDATE
    /// of the `scale` subresource of a Deployment, StatefulSet or ReplicaSet ([`SCALE_PARENTS`])
    /// that changes `spec.replicas`, by a writer who is neither a system writer nor a
    /// reconciler of some policy that would read what the Scale lacks: managedFields (a
    /// validating webhook's Scale has none) for `managedFields: warn|deny`, or labels for
    /// a `labelSelector` rule of this kind and namespace. The caller reads the parent and
    /// judges [`crate::ownership::managed::scale_with_parent`]'s view instead.
    pub fn scale_needs_parent(&self, req: &AdmissionRequest, policies: &PolicySet) -> bool {
        let group = req.resource.group.as_str();
        let resource = req.resource.resource.as_str();
        if req.operation != Operation::Update
            || req.subresource() != Some("scale")
            || !SCALE_PARENTS.contains(&(group, resource))
            || self.is_system_writer(req)
        {
            return false;
        }
        let (Some(old), Some(new)) = (req.old_object.as_ref(), req.object.as_ref()) else {
            return false;
        };
        if old.pointer("/spec/replicas") == new.pointer("/spec/replicas") {
            return false;
        }
        let has_managed_fields = old.pointer("/metadata/managedFields").is_some();
        let has_labels = old.pointer("/metadata/labels").is_some();
        let kind = verdict::kind_of_resource(resource);
        policies.effective().any(|p| {
            !verdict::is_reconciler(p, &req.user_info)
                && ((p.managed_fields != Enforcement::Ignore && !has_managed_fields)
                    || (!has_labels
                        && p.rules.iter().any(|r| {
                            r.label_selector.is_some()
                                && r.matches_kind(group, kind, resource)
                                && r.matches_namespace(req.namespace())
                        })))
        })
    }

    /// Is the writer a Git reconciler (`channel=gitops`)? One of the reconcilers of a
    /// policy in force ([`verdict::is_reconciler`]: exact names and globs), of the config
    /// file's `reconcilers` (the same matching), or a built-in Flux / Argo CD service
    /// account. A policy that names the identity but requires a pod-bound token the
    /// request lacks is not bypassed through the configured or built-in lists.
    pub fn is_gitops(&self, req: &AdmissionRequest, policies: &PolicySet) -> bool {
        let user = &req.user_info;
        let settings = &self.stamper.settings;
        if policies.effective().any(|p| verdict::is_reconciler(p, user)) {
            return true;
        }
        if policies.effective().any(|p| verdict::standing(p, user) == Standing::NoPodToken) {
            return false;
        }
        settings.reconcilers.contains(&user.username, &user.groups)
            || BUILTIN_RECONCILER_USERS.contains(&user.username.as_str())
    }

    /// Under the built-in default (no policy loaded), the config file's `reconcilers` are
    /// its reconcilers too: their writes are `channel=gitops` and not warned about.
    fn is_configured_reconciler_under_builtin(&self, req: &AdmissionRequest, policies: &PolicySet) -> bool {
        policies.is_builtin_default()
            && self.stamper.settings.reconcilers.contains(&req.user_info.username, &req.user_info.groups)
    }

    /// `POST /mutate`: the provenance stamp. Never blocks a write.
    pub fn mutate(&self, req: &AdmissionRequest, policies: &PolicySet, now: jiff::Timestamp) -> Decision {
        if !matches!(req.operation, Operation::Create | Operation::Update) || req.subresource().is_some() {
            return Decision::new(Answer::allow(), "skipped");
        }
        let Some(object) = req.object.as_ref() else {
            return Decision::failed(Answer::allow(), "no-object");
        };
        if self.is_system_writer(req) {
            // The control plane's writes (a controller's annotation, a kubelet's update)
            // are not provenance: the object keeps the stamp of the person who wrote it.
            let mut answer = Answer::allow();
            if req.operation == Operation::Update
                && let Ok(kept) = self.stamper.keep(req, object)
                && !kept.ops.is_empty()
            {
                answer.patch = serde_json::to_vec(&kept.ops).ok();
                answer.warnings = kept.warnings;
                answer.audit_annotations = kept.audit;
            }
            return Decision::new(answer, "system-writer");
        }
        let changes = if req.operation == Operation::Update {
            let opts = DiffOptions { leave_out_change_cause: true, ..self.diff_options() };
            match self.changes_with(req, &opts) {
                Some(c) => c,
                None => return Decision::failed(Answer::allow(), "no-old-object"),
            }
        } else {
            Vec::new()
        };
        let channel = if self.is_gitops(req, policies) {
            Channel::Gitops
        } else if req.operation == Operation::Update
            && policies.effective().any(|p| p.break_glass.contains(&req.user_info.username, &req.user_info.groups))
            && verdict::evaluate(req, &changes, policies).is_break_glass()
        {
            Channel::BreakGlass
        } else {
            Channel::Push
        };
        // A reconciler's write: the commit, branch and repository of what it applies.
        let source = match (&self.sources, channel) {
            (Some(sources), Channel::Gitops) if self.stamper.settings.gitops_sources => crate::gitops::lookup(
                object,
                req.field_manager(),
                &self.stamper.settings.argocd_instance_label,
                sources.0.as_ref(),
            )
            .found(),
            _ => None,
        };
        match self.stamper.stamp_with(req, object, &changes, channel, now, source.as_ref()) {
            Ok(mut stamp) => {
                if let Some(op) = self.stamper.change_cause(req, object, &changes, &stamp) {
                    stamp.ops.push(op);
                }
                let mut answer = Answer::allow();
                answer.warnings = stamp.warnings;
                answer.audit_annotations = stamp.audit;
                let outcome = match (stamp.ops.is_empty(), stamp.noop) {
                    (true, _) => "unchanged",
                    (false, true) => "restored",
                    (false, false) => "stamped",
                };
                if !stamp.ops.is_empty() {
                    answer.patch = serde_json::to_vec(&stamp.ops).ok();
                }
                let mut decision = Decision::new(answer, outcome);
                if outcome == "restored" {
                    for key in &stamp.restored {
                        decision.involved.push_path(annotation_path(key));
                    }
                } else if !decision.answer.warnings.is_empty() {
                    decision.involved = self.supplied_annotations(req, object);
                }
                decision
            }
            Err(e) => {
                let mut answer = Answer::allow();
                answer.warnings.push(format!("hallmark did not stamp this object: {e}"));
                Decision::failed(answer, "unstampable")
            }
        }
    }

    /// hallmark's annotations that a write set, changed or removed itself (what the stamp's
    /// warnings are about: forged or untrusted provenance), as field paths.
    fn supplied_annotations(&self, req: &AdmissionRequest, object: &Value) -> Involved {
        use crate::provenance::annotations;
        let (now, before) = (annotations(object), req.old_object.as_ref().and_then(annotations));
        let mut out = Involved::default();
        for key in self.stamper.keys.all() {
            if now.and_then(|m| m.get(key)) != before.and_then(|m| m.get(key)) {
                out.push_path(annotation_path(key));
            }
        }
        out
    }

    /// `POST /validate`: Git field ownership. Never patches.
    pub fn validate(&self, req: &AdmissionRequest, policies: &PolicySet) -> Decision {
        let judged = match req.operation {
            Operation::Delete => req.old_object.is_some(),
            Operation::Update => !matches!(req.subresource(), Some(s) if s != "scale"),
            _ => false,
        };
        if !judged {
            return Decision::new(Answer::allow(), "skipped");
        }
        if self.is_system_writer(req) {
            // Never deny the control plane: a namespace could not finish deleting, the
            // garbage collector and the HPA would stall.
            return Decision::new(Answer::allow(), "system-writer");
        }
        let changes = if req.operation == Operation::Update {
            match self.changes(req) {
                Some(c) => c,
                None => return self.unevaluable("no-object", "the review carries no object or oldObject"),
            }
        } else {
            Vec::new()
        };
        if self.is_configured_reconciler_under_builtin(req, policies) {
            return Decision::new(Answer::allow(), "allowed");
        }
        let verdict = verdict::evaluate(req, &changes, policies);
        if let Some(reason) = &verdict.error
            && !verdict.is_denied()
        {
            return self.unevaluable("unreadable-managed-fields", reason);
        }
        answer_for(&verdict, &req.user_info.username)
    }

    /// The answer for a review that cannot be judged, as `--on-error` says.
    pub fn unevaluable(&self, kind: &'static str, reason: &str) -> Decision {
        let answer = match self.on_error {
            OnError::Allow => {
                let mut a = Answer::allow();
                a.warnings.push(format!("hallmark could not check Git field ownership: {reason}"));
                a
            }
            OnError::Deny => Answer::deny(format!("hallmark could not check Git field ownership: {reason}")),
        };
        Decision::failed(answer, kind)
    }
}

/// The `/validate` answer for a verdict.
pub fn answer_for(verdict: &Verdict, username: &str) -> Decision {
    let listed = |it: &mut dyn Iterator<Item = &str>| {
        let all: Vec<&str> = it.collect();
        let mut s = all.iter().take(20).copied().collect::<Vec<_>>().join(",");
        if all.len() > 20 {
            s.push_str(&format!(",+{}", all.len() - 20));
        }
        s
    };
    if let Some(message) = verdict.deny_message() {
        let mut answer = Answer::deny(message);
        answer
            .audit_annotations
            .insert("ownership-denied".to_owned(), listed(&mut verdict.denials().map(|f| f.path.as_str())));
        let mut policies: Vec<&str> = verdict.denials().map(|f| f.policy.as_str()).collect();
        policies.dedup();
        answer.audit_annotations.insert("policy".to_owned(), policies.join(","));
        let mut decision = Decision::new(answer, "denied");
        decision.involved = Involved::of(verdict.denials());
        return decision;
    }
    let mut answer = Answer::allow();
    answer.warnings = verdict.warnings().into_iter().map(str::to_owned).collect();
    if verdict.is_break_glass() {
        answer.audit_annotations.insert(
            "break-glass".to_owned(),
            listed(&mut verdict.findings.iter().filter(|f| f.break_glass).map(|f| f.path.as_str())),
        );
        answer.audit_annotations.insert("break-glass-user".to_owned(), username.to_owned());
        let mut decision = Decision::new(answer, "break-glass");
        decision.involved = Involved::of(verdict.findings.iter().filter(|f| f.break_glass));
        return decision;
    }
    let outcome = if answer.warnings.is_empty() { "allowed" } else { "warned" };
    let mut decision = Decision::new(answer, outcome);
    if !verdict.findings.is_empty() {
        decision.involved = Involved::of(verdict.findings.iter());
    }
    decision
}

/// `metadata.annotations["KEY"]`, the field path of one annotation.
fn annotation_path(key: &str) -> FieldPath {
    FieldPath(vec![Segment::Field("metadata".into()), Segment::Field("annotations".into()), Segment::Field(key.into())])
}

/// The object a decision is about, for logs: kind, namespace, name — never content.
pub fn describe(req: &AdmissionRequest) -> String {
    let ns = req.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    format!("{}/{ns}{}", req.resource.resource, object_name(req))
}

/// The name of the object a review is about: `request.name`, else the object's
/// `metadata.name`; empty for a CREATE with `generateName` (the name is not chosen yet).
pub fn object_name(req: &AdmissionRequest) -> &str {
    req.name
        .as_deref()
        .or_else(|| req.object.as_ref().and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Review;
    use crate::config::Settings;
    use crate::policy::load::parse_documents;

    const POLICY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config
    reconcilers:
      fieldManagers: ["kustomize-controller"]
  rules:
    - match: {kinds: ["Deployment"]}
      fields: ["spec.template.spec.containers[*].resources"]
      action: ACTION
  breakGlass:
    groups: ["sre-oncall"]
"#;

    fn engine() -> Engine {
        Engine::new(Stamper::new(Settings::default()), OnError::Allow)
    }

    fn policies(action: &str) -> PolicySet {
        PolicySet { policies: parse_documents(&POLICY.replace("ACTION", action), "policy.yaml").expect("policy") }
    }

    fn request(fixture: &str) -> AdmissionRequest {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        Review::decode(&std::fs::read(path).expect("fixture")).expect("review").request
    }

    const CPU: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";
    const CPU_PATH: &str = "spec.template.spec.containers[name=agent].resources.limits.cpu";

    #[test]
    fn a_denial_names_the_denied_fields_and_their_policy() {
        let d = engine().validate(&request(CPU), &policies("deny"));
        assert_eq!(d.outcome, "denied");
        assert!(d.is_notable());
        assert_eq!(d.involved, Involved { paths: vec![CPU_PATH.into()], more: 0, policies: vec!["platform".into()] });
    }

    #[test]
    fn a_warning_and_a_break_glass_write_name_their_fields() {
        let d = engine().validate(&request(CPU), &policies("warn"));
        assert_eq!(d.outcome, "warned");
        assert_eq!(d.involved.paths, vec![CPU_PATH.to_owned()]);
        assert_eq!(d.involved.policies, vec!["platform".to_owned()]);

        let req = request("deploy-platform-agent-update-patch-memory-sre-alice-break-glass.json");
        let d = engine().validate(&req, &policies("deny"));
        assert_eq!(d.outcome, "break-glass");
        assert_eq!(d.involved.paths, vec!["spec.template.spec.containers[name=agent].resources.limits.memory"]);
        assert_eq!(d.involved.policies, vec!["platform".to_owned()]);
    }

    #[test]
    fn plain_allows_involve_nothing_and_allocate_nothing() {
        let e = engine();
        let p = policies("deny");
        let allowed = e.validate(&request("deploy-web-update-csa-image-dev.json"), &p);
        let stamped = e.mutate(&request("deploy-web-create-csa-dev.json"), &p, jiff::Timestamp::now());
        for d in [allowed, stamped] {
            assert!(matches!(d.outcome, "allowed" | "stamped"), "{}", d.outcome);
            assert!(!d.is_notable());
            assert_eq!(d.involved, Involved::default());
            assert_eq!(d.involved.paths.capacity() + d.involved.policies.capacity(), 0);
        }
    }

    #[test]
    fn a_restored_stamp_names_the_annotations_put_back() {
        let req = request("deploy-web-update-annotate-forged-committer-dev.json");
        let d = engine().mutate(&req, &PolicySet::default(), jiff::Timestamp::now());
        assert_eq!(d.outcome, "restored");
        assert!(d.is_notable());
        assert_eq!(d.involved.paths, vec![r#"metadata.annotations["hallmark.dev/committer"]"#.to_owned()]);
        assert!(d.involved.policies.is_empty());
    }

    #[test]
    fn a_stamp_that_replaced_forged_provenance_names_the_forged_annotations() {
        let req = request("deploy-web-update-csa-forged-annotations-dev.json");
        let d = engine().mutate(&req, &PolicySet::default(), jiff::Timestamp::now());
        assert_eq!(d.outcome, "stamped");
        assert!(!d.answer.warnings.is_empty() && d.is_notable());
        let forged: Vec<String> = req.object.as_ref().unwrap()["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("hallmark.dev/"))
            .map(|k| format!(r#"metadata.annotations["{k}"]"#))
            .collect();
        assert!(!forged.is_empty());
        for path in &forged {
            assert!(d.involved.paths.contains(path), "{path} not in {:?}", d.involved.paths);
        }
        assert!(d.involved.policies.is_empty());
    }

    #[test]
    fn involved_paths_are_capped_and_the_rest_counted() {
        let findings: Vec<Finding> = (0..MAX_INVOLVED_PATHS + 3)
            .map(|i| Finding {
                path: format!("data.k{i}"),
                message: String::new(),
                action: crate::policy::Enforcement::Deny,
                break_glass: false,
                policy: if i % 2 == 0 { "b".into() } else { "a".into() },
                repeat: None,
            })
            .collect();
        let inv = Involved::of(findings.iter());
        assert_eq!(inv.paths.len(), MAX_INVOLVED_PATHS);
        assert_eq!(inv.more, 3);
        assert_eq!(inv.policies, vec!["a".to_owned(), "b".to_owned()]);
        assert!(inv.paths_text().ends_with(&format!("data.k{},+3", MAX_INVOLVED_PATHS - 1)));
    }
}

/// Reconciler identity (`is_gitops`) with globs and the config's reconcilers.
#[cfg(test)]
mod gitops_tests {
    use super::*;
    use crate::admission::Review;
    use crate::config::Settings;
    use crate::policy::parse_documents;
    use serde_json::json;

    fn request(user: serde_json::Value) -> AdmissionRequest {
        let obj =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "team-a"}});
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "operation": "UPDATE", "userInfo": user, "namespace": "team-a", "name": "a",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "options": {"fieldManager": "kustomize-controller"}, "object": obj, "oldObject": obj}});
        Review::decode(&serde_json::to_vec(&review).expect("json")).expect("review").request
    }

    fn policy(reconcilers: &str) -> PolicySet {
        let text = format!(
            "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {{name: p}}\nspec:\n  owner:\n    name: o\n    reconcilers: {reconcilers}\n  managedFields: deny\n"
        );
        PolicySet::new(parse_documents(&text, "p.yaml").expect("valid"))
    }

    fn engine(config: &str) -> Engine {
        Engine::new(Stamper::new(Settings::from_yaml(config, "c.yaml").expect("config")), OnError::Allow)
    }

    #[test]
    fn gitops_channel_follows_the_reconciler_globs() {
        let tenant = json!({"username": "system:serviceaccount:team-a:flux-reconciler",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]});
        let dev = json!({"username": "dev", "groups": ["developers", "system:authenticated"]});
        let glob =
            policy("{users: [\"system:serviceaccount:*:flux-reconciler\"], fieldManagers: [kustomize-controller]}");
        let exact = policy("{users: [x], fieldManagers: [kustomize-controller]}");
        let plain = engine("");
        let configured = engine("reconcilers:\n  groups: [\"system:serviceaccounts:team-*\"]\n");
        let cases = [
            (&plain, &glob, &tenant, true),
            (&plain, &exact, &tenant, false),
            (&plain, &glob, &dev, false),
            (&plain, &PolicySet::default(), &tenant, false),
            // The config file's reconcilers, by group glob, with any policy set.
            (&configured, &exact, &tenant, true),
            (&configured, &PolicySet::default(), &tenant, true),
            (&configured, &glob, &dev, false),
        ];
        for (i, (engine, policies, user, want)) in cases.into_iter().enumerate() {
            assert_eq!(engine.is_gitops(&request(user.clone()), policies), want, "case {i}");
        }
        // A policy that names the identity but requires a pod-bound token is not bypassed
        // through the configured list.
        let token = policy(
            "{users: [\"system:serviceaccount:team-a:flux-reconciler\"], fieldManagers: [k], requirePodToken: true}",
        );
        assert!(!configured.is_gitops(&request(tenant), &token));
    }
}
