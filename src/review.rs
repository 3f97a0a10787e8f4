//! The one pure decision: `review(request, policy snapshot, clock) -> answer`.
//!
//! `/mutate` and `/validate` share this core. `/mutate` also computes the ownership
//! verdict, so that a break-glass write is stamped `channel=break-glass`, and the diff,
//! so that the history names the fields each write changed.

use crate::admission::{AdmissionRequest, Answer, Operation};
use crate::ownership::diff::{self, Change, DiffOptions};
use crate::ownership::verdict::{self, Verdict};
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
}

impl Decision {
    fn new(answer: Answer, outcome: &'static str) -> Decision {
        Decision { answer, outcome, error: None }
    }
}

/// The engine: provenance settings plus the ownership policies of the moment.
#[derive(Debug, Clone)]
pub struct Engine {
    pub stamper: Stamper,
    pub on_error: OnError,
}

impl Engine {
    pub fn new(stamper: Stamper, on_error: OnError) -> Engine {
        Engine { stamper, on_error }
    }

    fn diff_options(&self) -> DiffOptions<'_> {
        DiffOptions::new(&self.stamper.settings.annotation_prefix)
    }

    /// The changed fields of an UPDATE (of a main resource or a `scale` subresource).
    fn changes<'a>(&self, req: &'a AdmissionRequest) -> Option<Vec<Change<'a>>> {
        match (&req.old_object, &req.object) {
            (Some(old), Some(new)) => Some(diff::diff(old, new, &self.diff_options())),
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

    /// Is the writer a Git reconciler (`channel=gitops`)?
    pub fn is_gitops(&self, req: &AdmissionRequest, policies: &PolicySet) -> bool {
        let user = &req.user_info;
        let settings = &self.stamper.settings;
        if policies.effective().any(|p| verdict::is_reconciler(p, user)) {
            return true;
        }
        // A policy that requires a pod-bound token for this identity is not bypassed
        // through the built-in or configured lists.
        let demands_token =
            policies.effective().any(|p| p.require_pod_token && p.reconcilers.contains(&user.username, &user.groups));
        let listed = settings.reconcilers.contains(&user.username, &user.groups)
            || BUILTIN_RECONCILER_USERS.contains(&user.username.as_str());
        listed && (!demands_token || verdict::has_pod_token(user))
    }

    /// `POST /mutate`: the provenance stamp. Never blocks a write.
    pub fn mutate(&self, req: &AdmissionRequest, policies: &PolicySet, now: jiff::Timestamp) -> Decision {
        if !matches!(req.operation, Operation::Create | Operation::Update) || req.subresource().is_some() {
            return Decision::new(Answer::allow(), "skipped");
        }
        let Some(object) = req.object.as_ref() else {
            return Decision { answer: Answer::allow(), outcome: "error", error: Some("no-object") };
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
            match self.changes(req) {
                Some(c) => c,
                None => return Decision { answer: Answer::allow(), outcome: "error", error: Some("no-old-object") },
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
        match self.stamper.stamp(req, object, &changes, channel, now) {
            Ok(stamp) => {
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
                Decision::new(answer, outcome)
            }
            Err(e) => {
                let mut answer = Answer::allow();
                answer.warnings.push(format!("hallmark did not stamp this object: {e}"));
                Decision { answer, outcome: "error", error: Some("unstampable") }
            }
        }
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
        Decision { answer, outcome: "error", error: Some(kind) }
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
        return Decision::new(answer, "denied");
    }
    let mut answer = Answer::allow();
    answer.warnings = verdict.findings.iter().map(|f| f.message.clone()).collect();
    if verdict.is_break_glass() {
        answer.audit_annotations.insert(
            "break-glass".to_owned(),
            listed(&mut verdict.findings.iter().filter(|f| f.break_glass).map(|f| f.path.as_str())),
        );
        answer.audit_annotations.insert("break-glass-user".to_owned(), username.to_owned());
        return Decision::new(answer, "break-glass");
    }
    let outcome = if answer.warnings.is_empty() { "allowed" } else { "warned" };
    Decision::new(answer, outcome)
}

/// The object a decision is about, for logs: kind, namespace, name — never content.
pub fn describe(req: &AdmissionRequest) -> String {
    let ns = req.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    let name = req
        .name
        .as_deref()
        .or_else(|| req.object.as_ref().and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str));
    format!("{}/{ns}{}", req.resource.resource, name.unwrap_or(""))
}
