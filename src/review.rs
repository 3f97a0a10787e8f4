//! The one pure decision: `review(request, policy snapshot, clock) -> answer`.
//!
//! `/mutate` and `/validate` share this core. `/mutate` also computes the ownership
//! verdict, so that a break-glass write is stamped `channel=break-glass`, and the diff,
//! so that the history names the fields each write changed.

use crate::admission::{AdmissionRequest, Answer, Operation};
use crate::ownership::diff::{self, Change, DiffOptions};
use crate::ownership::verdict::{self, Standing, Verdict};
use crate::policy::{BUILTIN_RECONCILER_USERS, PolicySet};
use crate::provenance::{Channel, Stamper};
use serde_json::Value;

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
    /// `break-glass`, `error`.
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
            return Decision { answer: Answer::allow(), outcome: "error", error: Some("no-object") };
        };
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
    answer.warnings = verdict.warnings().into_iter().map(str::to_owned).collect();
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

#[cfg(test)]
mod tests {
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
