//! The ownership verdict of a write: which changed fields are owned by Git, and what the
//! policies say about that for this writer.

use super::diff::Change;
use super::fieldsv1::FieldSet;
use super::managed;
use super::markers::{OptOut, opt_out, opt_out_any};
use super::path::overlaps;
use crate::admission::{AdmissionRequest, Operation, UserInfo, truncate};
use crate::policy::{BUILTIN_DEFAULT_NAME, CompiledPolicy, CompiledRule, Enforcement, PolicySet};
use serde_json::{Map, Value};

/// Deny messages listed before the rest are only counted.
pub const MAX_LISTED: usize = 5;

/// One changed field that a policy owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The changed field, in the policy path syntax with concrete keys.
    pub path: String,
    /// The sentence shown to the user.
    pub message: String,
    pub action: Enforcement,
    /// The writer may override (break-glass): allowed, warned, recorded.
    pub break_glass: bool,
    pub policy: String,
    /// When `message` carries the reconciler explanation ([`reconciler_hint`]): the same
    /// sentence with a short reference instead, shown for the policy's further fields so
    /// that the explanation is given once per answer.
    pub repeat: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    /// Set when the write could not be judged (e.g. unreadable managedFields).
    pub error: Option<String>,
}

impl Verdict {
    pub fn denials(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.action == Enforcement::Deny && !f.break_glass)
    }

    pub fn is_denied(&self) -> bool {
        self.denials().next().is_some()
    }

    /// A break-glass writer changed a field that would otherwise be denied or warned.
    pub fn is_break_glass(&self) -> bool {
        self.findings.iter().any(|f| f.break_glass)
    }

    /// The deny message: one sentence per owned field, the list capped; a policy's
    /// reconciler explanation is given with its first field only.
    pub fn deny_message(&self) -> Option<String> {
        let denials: Vec<&Finding> = self.denials().collect();
        if denials.is_empty() {
            return None;
        }
        let mut parts = messages(denials.iter().take(MAX_LISTED).copied());
        let more = denials.len().saturating_sub(MAX_LISTED);
        let tail;
        if more > 0 {
            tail = format!("and {more} more owned field{}", if more == 1 { "" } else { "s" });
            parts.push(&tail);
        }
        Some(parts.join("; "))
    }

    /// The warnings: one sentence per finding, a policy's reconciler explanation with its
    /// first finding only.
    pub fn warnings(&self) -> Vec<&str> {
        messages(self.findings.iter())
    }
}

/// The findings' sentences, each policy's reconciler explanation given once.
fn messages<'a>(findings: impl Iterator<Item = &'a Finding>) -> Vec<&'a str> {
    let mut explained: Vec<&str> = Vec::new();
    findings
        .map(|f| match &f.repeat {
            Some(short) if explained.contains(&f.policy.as_str()) => short.as_str(),
            Some(_) => {
                explained.push(&f.policy);
                f.message.as_str()
            }
            None => f.message.as_str(),
        })
        .collect()
}

/// True when kube-apiserver authenticated this request with a service account token (it
/// adds these extras itself; an impersonated request lacks them unless RBAC explicitly
/// allows impersonating `userextras`).
pub fn has_pod_token(user: &UserInfo) -> bool {
    ["authentication.kubernetes.io/credential-id", "authentication.kubernetes.io/pod-name"]
        .iter()
        .any(|k| user.extra.get(*k).is_some_and(|v| !v.is_empty()))
}

/// How a writer stands with a policy's reconcilers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// One of its reconcilers: may change the fields the policy owns.
    Reconciler,
    /// Named by its reconcilers (`users`/`groups`, globs included), but the policy has
    /// `requirePodToken` and the request carries no pod-bound token extras.
    NoPodToken,
    /// Not named by its reconcilers.
    NotListed,
}

/// How `user` stands with this policy's reconcilers: its username or one of its groups
/// against `spec.owner.reconcilers.users`/`groups` (exact names and globs, compiled at
/// load: no allocation), then `requirePodToken`. Identity only: the field manager a
/// request names is free text and never counts.
pub fn standing(policy: &CompiledPolicy, user: &UserInfo) -> Standing {
    if !policy.reconcilers.contains(&user.username, &user.groups) {
        Standing::NotListed
    } else if policy.require_pod_token && !has_pod_token(user) {
        Standing::NoPodToken
    } else {
        Standing::Reconciler
    }
}

/// Whether `user` is one of this policy's reconcilers ([`standing`]). The one identity
/// check: the verdict, the `channel` of the stamp (`Engine::is_gitops`) and
/// `kubectl hallmark check` all use it.
pub fn is_reconciler(policy: &CompiledPolicy, user: &UserInfo) -> bool {
    standing(policy, user) == Standing::Reconciler
}

/// The explanation for a write whose field manager (`options.fieldManager`) is one of
/// the policy's reconciler field managers while its identity is not one of its
/// reconcilers: typically a GitOps controller impersonating a tenant service account
/// (Flux `spec.serviceAccountName`, Argo CD `destinationServiceAccounts`) that the policy
/// does not name. `None` for any other write.
pub fn reconciler_hint(policy: &CompiledPolicy, req: &AdmissionRequest) -> Option<String> {
    let manager = req.field_manager().filter(|m| policy.is_reconciler_field_manager(m))?;
    let manager = truncate(manager, 120);
    let user = &req.user_info;
    let who = truncate(&user.username, 120);
    let owner = &policy.owner_name;
    Some(match standing(policy, user) {
        Standing::NoPodToken => format!(
            "field manager {manager} is a reconciler field manager of {owner}, and user {who} is one of its reconcilers, but policy {} requires a pod-bound service account token (requirePodToken) and this request carries none (an impersonated request never does); let the controller write as its own service account, or drop requirePodToken",
            policy.name
        ),
        _ => {
            let fix = if policy.name == BUILTIN_DEFAULT_NAME {
                "list it under reconcilers.users in hallmark's config file, or give hallmark an OwnershipPolicy whose spec.owner.reconcilers.users names it (globs allowed, e.g. system:serviceaccount:*:flux-reconciler); the built-in default knows only the controllers' own service accounts".to_owned()
            } else {
                format!(
                    "add it to spec.owner.reconcilers.users of OwnershipPolicy {} (globs allowed, e.g. system:serviceaccount:*:flux-reconciler)",
                    policy.name
                )
            };
            format!(
                "field manager {manager} is a reconciler field manager of {owner}, but user {who} is not one of its reconcilers ({}); if this is your GitOps controller impersonating a tenant service account, {fix}",
                policy.reconcilers.describe()
            )
        }
    })
}

/// The kind a resource's `scale` subresource belongs to, for matching rules by kind.
pub fn kind_of_resource(resource: &str) -> &str {
    match resource {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "replicasets" => "ReplicaSet",
        "replicationcontrollers" => "ReplicationController",
        _ => "",
    }
}

/// Judges a write. `changes` is the diff of `oldObject` -> `object` (for a `scale` write,
/// of the two Scale objects, whose `spec.replicas` is the parent's).
pub fn evaluate(req: &AdmissionRequest, changes: &[Change<'_>], policies: &PolicySet) -> Verdict {
    let mut verdict = Verdict::default();
    let user = &req.user_info;
    let Some(old) = req.old_object.as_ref() else {
        return verdict;
    };
    let scale = req.subresource() == Some("scale");
    match req.subresource() {
        None | Some("scale") => {}
        Some(_) => return verdict,
    }
    let deleting = is_being_deleted(old);
    let judged = judged_changes(changes, scale, deleting);
    let changes: &[Change<'_>] = &judged;
    let new_object = req.object.as_ref();
    let (group, kind) = if scale {
        (req.resource.group.as_str(), kind_of_resource(&req.resource.resource))
    } else {
        (req.kind.group.as_str(), req.kind.kind.as_str())
    };
    fn labels(o: &Value) -> Option<&Map<String, Value>> {
        o.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object)
    }
    let old_labels = labels(old);
    let new_labels = req.object.as_ref().and_then(labels);
    // Only needed for messages; most writes have none.
    let source_cell = std::cell::OnceCell::new();
    let source = || source_cell.get_or_init(|| gitops_source(old));
    // A Secret's values are never repeated in a message (the writer may not read them).
    let secret = !scale && group.is_empty() && kind == "Secret";

    let entries_cell = std::cell::OnceCell::new();
    // The new object's entries, read at most once whatever the number of policies.
    let new_entries_cell = std::cell::OnceCell::new();
    let mut decoded: std::collections::HashMap<usize, Option<Result<FieldSet, super::fieldsv1::FieldsV1Error>>> =
        std::collections::HashMap::new();
    for policy in policies.effective() {
        if is_reconciler(policy, user) {
            continue;
        }
        let break_glass = policy.break_glass.contains(&user.username, &user.groups);
        // Only needed for messages.
        let hint_cell = std::cell::OnceCell::new();
        let hint = || hint_cell.get_or_init(|| reconciler_hint(policy, req)).as_deref();
        // Only needed for messages: a reconciler of the policy told to leave the object alone.
        let opted_cell = std::cell::OnceCell::new();
        let opted = || opted_cell.get_or_init(|| opt_out_any(old, &policy.reconciler_field_managers)).as_ref();

        if req.operation == Operation::Delete {
            if policy.delete_protection {
                let managers = reconciler_managers(old, policy);
                if let Some(manager) = managers.first() {
                    // A collection DELETE has no request.name: the object's own name.
                    let name = req.name.as_deref().or_else(|| old.pointer("/metadata/name").and_then(Value::as_str));
                    let what = format!("{}/{}", req.resource.resource, name.unwrap_or(""));
                    let message = if break_glass {
                        format!(
                            "break-glass: {what} is managed by {} (field manager {manager}); deleting it is allowed for {}, recorded as channel=break-glass. Remove it from Git too, or the next reconcile recreates it",
                            owner_text(policy, source()),
                            user.username
                        )
                    } else {
                        format!(
                            "{what} is managed by {} (field manager {manager}); delete it there",
                            owner_text(policy, source())
                        )
                    };
                    push_managed_fields_finding(&mut verdict, policy, what, message, break_glass);
                }
            }
            continue;
        }
        if req.operation != Operation::Update {
            continue;
        }

        // Explicit rules.
        for rule in &policy.rules {
            if !rule_applies(rule, group, kind, &req.resource.resource, req.namespace(), scale, old_labels, new_labels)
            {
                continue;
            }
            // While the rule selects the object, the labels its selector reads are its own:
            // a write that unselects the object would let the next one change its fields.
            let unselects = !scale
                && rule.label_selector.is_some()
                && rule.matches_labels(&old_labels)
                && !rule.matches_labels(&new_labels);
            for change in changes {
                let owned = rule.fields.iter().any(|p| overlaps(p.segments(), change.path.segments()));
                if owned || (unselects && is_under(change, "metadata", "labels")) {
                    push_finding(
                        &mut verdict,
                        policy,
                        rule.action,
                        break_glass,
                        &redact(change, secret),
                        None,
                        source(),
                        &user.username,
                        hint(),
                        opted(),
                    );
                }
            }
        }

        // deleteProtection: an owner reference added to an object a reconciler manages
        // would let the garbage collector (a system writer) delete it.
        if policy.delete_protection && !scale {
            let added = changes
                .iter()
                .find(|c| c.new.is_some() && c.old.is_none() && is_under(c, "metadata", "ownerReferences"));
            if let Some(change) = added
                && let Some(manager) = reconciler_managers(old, policy).first()
            {
                let path = change.path.to_string();
                let message = if break_glass {
                    format!(
                        "break-glass: {path}: an owner reference lets the garbage collector delete this object, which {} manages (field manager {manager}); allowed for {}, recorded as channel=break-glass",
                        owner_text(policy, source()),
                        user.username
                    )
                } else {
                    format!(
                        "{path}: an owner reference lets the garbage collector delete this object, which {} manages (field manager {manager}) and protects from deletion; add it in Git",
                        owner_text(policy, source())
                    )
                };
                push_managed_fields_finding(&mut verdict, policy, path, message, break_glass);
            }
        }

        // Fields that managedFields shows a reconciler owns.
        let nothing_to_judge = || changes.is_empty() && new_object.is_none_or(|new| managed_fields_unchanged(old, new));
        // managedFields give the policy its owned fields (`managedFields: warn|deny`) and
        // its protected objects (`deleteProtection`).
        let reads_managed_fields = policy.managed_fields != Enforcement::Ignore || policy.delete_protection;
        if reads_managed_fields && !nothing_to_judge() {
            // Read managedFields once and decode each entry at most once, whatever the
            // number of policies that name its manager.
            let entries = entries_cell.get_or_init(|| managed::entries(old));
            let mut wanted: Vec<usize> = (0..entries.len())
                .filter(|&i| {
                    policy.is_reconciler_field_manager(&entries[i].manager) && entries[i].subresource != "status"
                })
                .collect();
            // A reconciler told to leave the object alone enforces none of its fields; and
            // telling it so is Git's to do, not another writer's.
            if !scale
                && let Some(new) = new_object
                && let Some(i) = wanted.iter().copied().find(|&i| {
                    opt_out(new, &entries[i].manager).is_some() && opt_out(old, &entries[i].manager).is_none()
                })
                && let Some(marker) = opt_out(new, &entries[i].manager)
            {
                push_opt_out(&mut verdict, policy, break_glass, &entries[i].manager, marker, source(), &user.username);
            }
            wanted.retain(|&i| opt_out(old, &entries[i].manager).is_none());
            if wanted.is_empty() {
                continue;
            }
            for &i in &wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(i) {
                    slot.insert(entries[i].fields().map(|f| FieldSet::decode(&f)));
                }
            }
            let mut sets: Vec<(&str, &FieldSet)> = Vec::new();
            for &i in &wanted {
                match decoded.get(&i) {
                    Some(Some(Ok(set))) => sets.push((&entries[i].manager, set)),
                    Some(Some(Err(e))) if policy.managed_fields != Enforcement::Ignore => {
                        verdict.error = Some(format!("managedFields of {}: {e}", entries[i].manager))
                    }
                    _ => {}
                }
            }
            for change in changes.iter().filter(|_| policy.managed_fields != Enforcement::Ignore) {
                let path = change.path.segments();
                if let Some((manager, _)) =
                    sets.iter().find(|(_, s)| s.touches(path) && !owns_only_the_field(s, path, old))
                {
                    let manager: &str = manager;
                    push_finding(
                        &mut verdict,
                        policy,
                        policy.managed_fields,
                        break_glass,
                        &redact(change, secret),
                        Some(manager),
                        source(),
                        &user.username,
                        hint(),
                        None,
                    );
                }
            }
            // The write itself may take the reconciler's ownership away (managedFields reset
            // with `[{}]`, its entry removed or shrunk by a JSON patch or a PUT): once gone,
            // nothing would show that Git owns those fields. A deletion finishing is exempt.
            if !scale
                && !deleting
                && let Some(new) = new_object
            {
                let wanted_entries: Vec<&managed::Entry<'_>> = wanted.iter().map(|&i| &entries[i]).collect();
                let dropped = (!managed_fields_unchanged(old, new))
                    .then(|| {
                        dropped_ownership(
                            &wanted_entries,
                            &sets,
                            old,
                            new,
                            new_entries_cell.get_or_init(|| managed::entries(new)),
                        )
                    })
                    .flatten();
                if let Some((manager, paths)) = dropped {
                    push_dropped(&mut verdict, policy, break_glass, manager, &paths, source(), &user.username, hint());
                }
            }
        }
    }
    verdict
}

/// True when the write leaves `metadata.managedFields` exactly as it was (compared as
/// decoded: the JSON text [`crate::admission::Review::decode`] keeps, or the list).
fn managed_fields_unchanged(old: &Value, new: &Value) -> bool {
    fn get(o: &Value) -> Option<&Value> {
        o.get("metadata").and_then(|m| m.get("managedFields"))
    }
    get(old) == get(new)
}

/// Maps and structs Kubernetes replaces as a whole (`+mapType=atomic`, `+structType=atomic`
/// in the API types): a reconciler that applied one owns what others add under it (it
/// reverts it). Every other map or struct is granular.
const ATOMIC_FIELDS: &[&str] = &[
    "nodeSelector",
    "selector",
    "namespaceSelector",
    "labelSelector",
    "podSelector",
    "matchLabels",
    "matchExpressions",
    "secretKeyRef",
    "configMapKeyRef",
    "fieldRef",
    "resourceFieldRef",
    "requiredDuringSchedulingIgnoredDuringExecution",
];

/// True when the set covers `path` only through a `{}` leaf on a granular map or struct
/// above it: server-side apply records a map or struct applied empty from Git
/// (`annotations: {}`, `resources: {}`) that way, and it owns the field, not the keys
/// others add under it (the reconciler's next apply keeps them).
fn owns_only_the_field(set: &FieldSet, path: &[super::path::Segment], old: &Value) -> bool {
    use super::path::Segment;
    let Some(depth) = set.leaf_depth(path).filter(|&d| d < path.len()) else {
        return false;
    };
    let prefix = &path[..depth];
    let Some(Segment::Field(name)) = prefix.last() else {
        return false;
    };
    if ATOMIC_FIELDS.contains(&name.as_str()) {
        return false;
    }
    matches!(super::diff::value_at(old, prefix), None | Some(Value::Object(_)))
}

/// True when the change is at or below `first.second` (`metadata.labels`).
fn is_under(change: &Change<'_>, first: &str, second: &str) -> bool {
    use super::path::Segment;
    matches!(change.path.segments(), [Segment::Field(a), Segment::Field(b), ..] if a == first && b == second)
}

/// True when the object is being deleted (`metadata.deletionTimestamp` is set): its
/// finalizers are being removed and nothing may stand in the way of that.
pub fn is_being_deleted(obj: &Value) -> bool {
    obj.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some_and(|t| !t.is_null())
}

/// The changes a verdict judges. A `scale` write can change nothing but `spec.replicas`
/// (whatever else differs between the two Scale views, such as the parent's labels the
/// rebuilt old view carries, is not a change of the write). While the object is being
/// deleted, removing its finalizers is how the deletion finishes, never a change of a
/// Git-owned field.
fn judged_changes<'c, 'a>(
    changes: &'c [Change<'a>],
    scale: bool,
    deleting: bool,
) -> std::borrow::Cow<'c, [Change<'a>]> {
    use super::path::Segment;
    let is = |change: &Change<'_>, first: &str, second: &str| matches!(change.path.segments(), [Segment::Field(a), Segment::Field(b), ..] if a == first && b == second);
    let keep = |c: &Change<'_>| {
        if scale { is(c, "spec", "replicas") } else { !(deleting && is(c, "metadata", "finalizers")) }
    };
    if changes.iter().all(keep) {
        std::borrow::Cow::Borrowed(changes)
    } else {
        std::borrow::Cow::Owned(changes.iter().filter(|c| keep(c)).cloned().collect())
    }
}

/// The fields that the reconciler entries of `old` (with their decoded sets) owned and that
/// no entry of the same field managers owns in `new`, though the write left their values
/// as they were: a reconciler's ownership taken away without a change of the field (a
/// managedFields reset with `[{}]`, an entry removed or shrunk by a patch or a PUT). A
/// field whose value the write changed is not listed: its ownership moved with the change,
/// which the rules and the managedFields findings judge. `now` is `new`'s managedFields
/// entries; the caller skips a write that left managedFields as they were. Returns the
/// first field manager that lost fields, with them.
fn dropped_ownership<'e>(
    wanted: &[&'e managed::Entry<'_>],
    sets: &[(&'e str, &FieldSet)],
    old: &Value,
    new: &Value,
    now: &[managed::Entry<'_>],
) -> Option<(&'e str, Vec<super::path::FieldPath>)> {
    let kept = |e: &managed::Entry<'_>| {
        now.iter().any(|n| n.manager == e.manager && n.subresource == e.subresource && n.same_fields(e))
    };
    if wanted.iter().all(|e| kept(e)) {
        return None;
    }
    let mut now_sets = Vec::new();
    for entry in now {
        // kube-apiserver merges the oldest Update entries beyond ten into one entry of
        // manager `ancient-changes` (`capManagersManager`, staging/src/k8s.io/apimachinery/
        // pkg/util/managedfields/internal/capmanagers.go): a reconciler's Update entry
        // merged there by someone else's write was not taken away by that writer.
        if entry.subresource != "status"
            && (entry.manager == ANCIENT_CHANGES || wanted.iter().any(|w| w.manager == entry.manager))
        {
            match entry.fields().map(|f| FieldSet::decode(&f)) {
                Some(Ok(set)) => now_sets.push(set),
                // managedFields kube-apiserver accepted but hallmark cannot read: judge
                // nothing rather than a field it cannot see.
                Some(Err(_)) => return None,
                None => {}
            }
        }
    }
    for (manager, set) in sets {
        let dropped: Vec<super::path::FieldPath> = set
            .paths()
            .into_iter()
            .filter(|p| !now_sets.iter().any(|s| s.touches(p.segments())))
            .filter(|p| {
                let before = super::diff::value_at(old, p.segments());
                before.is_some() && before == super::diff::value_at(new, p.segments())
            })
            .collect();
        if !dropped.is_empty() {
            return Some((manager, dropped));
        }
    }
    None
}

/// The manager kube-apiserver gives the entry into which it merges the oldest Update
/// entries once an object has more than ten.
const ANCIENT_CHANGES: &str = "ancient-changes";

/// The finding for a write by another writer that puts a reconciler's opt-out marker on an
/// object the reconciler manages: it would take the object away from Git.
fn push_opt_out(
    verdict: &mut Verdict,
    policy: &CompiledPolicy,
    break_glass: bool,
    manager: &str,
    marker: OptOut,
    source: &Option<String>,
    username: &str,
) {
    let path = marker.path();
    let what = format!(
        "{path}: {} tells {} (field manager {manager}) to stop applying this object, which {} manages",
        marker.value,
        marker.controller,
        owner_text(policy, source)
    );
    let message = if break_glass {
        format!(
            "break-glass: {what}; allowed for {username}, recorded as channel=break-glass. Put the marker in Git too"
        )
    } else {
        format!("{what}; only Git may opt an object out of reconciliation: add the marker there")
    };
    push_managed_fields_finding(verdict, policy, path, message, break_glass);
}

/// A denial of a write that would take the object away from Git (a protected deletion, an
/// owner reference, its reconciler's managedFields, Flux's opt-out), whatever
/// `managedFields` says: what managedFields record is also what `deleteProtection` and the
/// generated matchConditions rely on. Replaces any other finding at its path.
fn push_managed_fields_finding(
    verdict: &mut Verdict,
    policy: &CompiledPolicy,
    path: String,
    message: String,
    break_glass: bool,
) {
    verdict.findings.retain(|f| f.path != path);
    verdict.findings.push(Finding {
        path,
        message,
        action: Enforcement::Deny,
        break_glass,
        policy: policy.name.clone(),
        repeat: None,
    });
}

/// The finding for a write that takes a reconciler's ownership away ([`dropped_ownership`]).
#[allow(clippy::too_many_arguments)]
fn push_dropped(
    verdict: &mut Verdict,
    policy: &CompiledPolicy,
    break_glass: bool,
    manager: &str,
    paths: &[super::path::FieldPath],
    source: &Option<String>,
    username: &str,
    hint: Option<&str>,
) {
    const SHOWN: usize = 3;
    let mut listed: Vec<String> = paths.iter().take(SHOWN).map(ToString::to_string).collect();
    if paths.len() > SHOWN {
        listed.push(format!("{} more", paths.len() - SHOWN));
    }
    let count = paths.len();
    let what = format!(
        "metadata.managedFields: this write takes away field manager {manager}'s ownership of {count} field{} of {} ({}) without changing {}",
        if count == 1 { "" } else { "s" },
        owner_text(policy, source),
        listed.join(", "),
        if count == 1 { "it" } else { "them" },
    );
    let message = if break_glass {
        format!(
            "break-glass: {what}; allowed for {username}, recorded as channel=break-glass. The next reconcile by {manager} takes them back"
        )
    } else if let Some(hint) = hint {
        format!("{what}; {hint}")
    } else {
        format!(
            "{what}; managedFields are how Git's ownership is known, so only the reconcilers of {} may rewrite them. Leave metadata.managedFields out of the write (or as read), and change these fields in Git",
            policy.owner_name
        )
    };
    let path = "metadata.managedFields".to_owned();
    push_managed_fields_finding(verdict, policy, path, message, break_glass);
}

/// The change with its values replaced by a placeholder when they must not be shown
/// (a Secret's fields other than its metadata).
fn redact<'a>(change: &Change<'a>, secret: bool) -> Change<'a> {
    static HIDDEN: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::String("(secret)".into()));
    let metadata = matches!(change.path.segments().first(), Some(super::path::Segment::Field(f)) if f == "metadata");
    let hide = secret && !metadata;
    if !hide {
        return change.clone();
    }
    let hidden: &'static Value = &HIDDEN;
    Change { path: change.path.clone(), old: change.old.map(|_| hidden), new: change.new.map(|_| hidden) }
}

#[allow(clippy::too_many_arguments)]
fn rule_applies(
    rule: &CompiledRule,
    group: &str,
    kind: &str,
    resource: &str,
    namespace: Option<&str>,
    scale: bool,
    old_labels: Option<&Map<String, Value>>,
    new_labels: Option<&Map<String, Value>>,
) -> bool {
    if !rule.matches_kind(group, kind, resource) || !rule.matches_namespace(namespace) {
        return false;
    }
    if rule.label_selector.is_none() {
        return true;
    }
    // A Scale carries none of its parent's labels. When the parent was read (see
    // `managed::scale_with_parent`, which always sets `labels`), the rule matches the
    // parent's labels; otherwise a rule that selects by label is applied to every scale
    // write of a matching kind and namespace (fail closed).
    if scale {
        return old_labels.is_none_or(|labels| rule.matches_labels(labels));
    }
    let empty = Map::new();
    rule.matches_labels(old_labels.unwrap_or(&empty)) || rule.matches_labels(new_labels.unwrap_or(&empty))
}

#[allow(clippy::too_many_arguments)]
fn push_finding(
    verdict: &mut Verdict,
    policy: &CompiledPolicy,
    action: Enforcement,
    break_glass: bool,
    change: &Change<'_>,
    manager: Option<&str>,
    source: &Option<String>,
    username: &str,
    hint: Option<&str>,
    opted: Option<&OptOut>,
) {
    let path = change.path.to_string();
    if let Some(existing) = verdict.findings.iter_mut().find(|f| f.path == path) {
        if existing.action == Enforcement::Warn && action == Enforcement::Deny {
            existing.action = Enforcement::Deny;
        } else {
            return;
        }
    }
    let owner = match manager {
        Some(m) => format!("{} (field manager {m}{})", policy.owner_name, owner_details(policy, source, true)),
        None => owner_text(policy, source),
    };
    let requested = format!("Requested {} -> {}.", short(change.old), short(change.new));
    let mut repeat = None;
    let message = if let Some(opted) = opted {
        let stays = opted.will_not_revert();
        if break_glass {
            format!(
                "break-glass: {path} is owned by {owner}; allowed for {username}, recorded as channel=break-glass. Change it in Git too ({stays}). {requested}"
            )
        } else if action == Enforcement::Deny {
            format!("{path} is owned by {owner}; change it there ({stays}, so a change here would stay). {requested}")
        } else {
            format!("{path} is owned by {owner}; {stays}, so this change stays until Git changes it. {requested}")
        }
    } else if break_glass {
        format!(
            "break-glass: {path} is owned by {owner}; allowed for {username}, recorded as channel=break-glass. Change it in Git too, or the next reconcile reverts it. {requested}"
        )
    } else if let Some(hint) = hint {
        repeat = Some(format!(
            "{path} is owned by {owner}; user {} may not change it (see above). {requested}",
            truncate(username, 120)
        ));
        format!("{path} is owned by {owner}; {hint}. {requested}")
    } else if action == Enforcement::Deny {
        format!("{path} is owned by {owner}; change it there. {requested}")
    } else {
        format!("{path} is owned by {owner}; Git will revert this change at the next reconcile. {requested}")
    };
    verdict.findings.retain(|f| f.path != path);
    verdict.findings.push(Finding { path, message, action, break_glass, policy: policy.name.clone(), repeat });
}

fn owner_text(policy: &CompiledPolicy, source: &Option<String>) -> String {
    let details = owner_details(policy, source, false);
    if details.is_empty() { policy.owner_name.clone() } else { format!("{} ({})", policy.owner_name, details) }
}

fn owner_details(policy: &CompiledPolicy, source: &Option<String>, continued: bool) -> String {
    let mut parts = Vec::new();
    if let Some(repo) = &policy.repository {
        parts.push(format!("Git: {repo}"));
    }
    if let Some(s) = source {
        parts.push(s.clone());
    }
    let joined = parts.join(", ");
    if continued && !joined.is_empty() { format!(", {joined}") } else { joined }
}

/// The Flux Kustomization / HelmRelease or Argo CD application that applied the object,
/// as its labels and annotations name it.
pub fn gitops_source(obj: &Value) -> Option<String> {
    let meta = obj.get("metadata")?;
    let label = |k: &str| meta.get("labels").and_then(|l| l.get(k)).and_then(Value::as_str);
    let annotation = |k: &str| meta.get("annotations").and_then(|l| l.get(k)).and_then(Value::as_str);
    if let (Some(name), Some(ns)) =
        (label("kustomize.toolkit.fluxcd.io/name"), label("kustomize.toolkit.fluxcd.io/namespace"))
    {
        return Some(format!("Flux Kustomization {ns}/{name}"));
    }
    if let (Some(name), Some(ns)) = (label("helm.toolkit.fluxcd.io/name"), label("helm.toolkit.fluxcd.io/namespace")) {
        return Some(format!("Flux HelmRelease {ns}/{name}"));
    }
    if let Some(tracking) = annotation("argocd.argoproj.io/tracking-id") {
        let app = tracking.split(':').next().unwrap_or(tracking);
        return Some(format!("Argo CD application {}", truncate(app, 120)));
    }
    let argo_managed = managed::entries(obj).iter().any(|e| e.manager.starts_with("argocd"));
    if argo_managed && let Some(app) = label("app.kubernetes.io/instance") {
        return Some(format!("Argo CD application {}", truncate(app, 120)));
    }
    None
}

/// The policy's reconciler field managers that manage fields of `obj` (main resource).
fn reconciler_managers(obj: &Value, policy: &CompiledPolicy) -> Vec<String> {
    managed::entries(obj)
        .into_iter()
        .filter(|e| e.subresource.is_empty() && e.has_fields())
        .filter(|e| policy.is_reconciler_field_manager(&e.manager))
        // A reconciler that will not recreate the object does not protect it.
        .filter(|e| opt_out(obj, &e.manager).is_none_or(|o| o.recreates))
        .map(|e| e.manager.into_owned())
        .collect()
}

/// A value for a message: compact JSON, shortened; `(unset)` when absent.
pub fn short(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(unset)".to_owned(),
        Some(v) => truncate(&v.to_string(), 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Review;
    use crate::ownership::diff::{DiffOptions, diff};
    use crate::policy::parse_documents;
    use serde_json::json;

    const POLICY: &str = r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata: {name: p}
spec:
  owner:
    name: platform
    repository: https://git.example.com/cfg
    reconcilers:
      users: [flux]
      groups: [reconcilers]
      fieldManagers: [kustomize-controller]
  rules:
    - match: {groups: [apps], kinds: [Deployment], namespaces: ["team-*"], labelSelector: {matchLabels: {tier: web}}}
      fields: ["spec.template.spec.containers[*].resources", "metadata.labels[\"cost-center\"]"]
      action: deny
    - match: {kinds: [Deployment]}
      fields: [spec.template.spec.priorityClassName]
      action: warn
  managedFields: MF
  deleteProtection: true
  breakGlass: {groups: [oncall]}
"#;

    fn policies(managed_fields: &str) -> PolicySet {
        PolicySet::new(parse_documents(&POLICY.replace("MF", managed_fields), "p.yaml").expect("valid"))
    }

    fn object(cpu: &str, prio: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "team-a", "labels": {"tier": "web", "cost-center": "42"},
                "managedFields": [{"manager": "kustomize-controller", "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": replicas, "template": {"spec": {"priorityClassName": prio,
                "containers": [{"name": "web", "image": "a", "resources": {"limits": {"cpu": cpu}}}]}}}
        })
    }

    fn request(op: &str, user: Value, old: Value, new: Value, sub: Option<&str>) -> AdmissionRequest {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "operation": op, "userInfo": user, "namespace": "team-a", "name": "web",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": sub, "object": new, "oldObject": old}});
        Review::decode(&serde_json::to_vec(&review).expect("json")).expect("review").request
    }

    fn judge(req: &AdmissionRequest, set: &PolicySet) -> Verdict {
        let changes = match (&req.old_object, &req.object) {
            (Some(o), Some(n)) => diff(o, n, &DiffOptions::new("hallmark.dev/")),
            _ => Vec::new(),
        };
        evaluate(req, &changes, set)
    }

    /// A writer: username and groups.
    type Writer<'a> = (&'a str, Vec<&'a str>);
    /// What a verdict should say: denied, warnings, break-glass.
    type Expect = (bool, usize, bool);

    /// (case, writer, new object, managedFields mode) -> expectation
    #[test]
    fn verdict_table() {
        let dev = ("dev", vec!["developers"]);
        let old = object("500m", "low", 2);
        let cases: Vec<(&str, Writer, Value, &str, Expect)> = vec![
            ("owned field by a developer", dev.clone(), object("750m", "low", 2), "ignore", (true, 0, false)),
            ("warn rule", dev.clone(), object("500m", "high", 2), "ignore", (false, 1, false)),
            (
                "unowned field",
                dev.clone(),
                {
                    let mut o = object("500m", "low", 2);
                    o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
                    o
                },
                "deny",
                (false, 0, false),
            ),
            ("reconciler user", ("flux", vec![]), object("750m", "high", 3), "deny", (false, 0, false)),
            ("reconciler group", ("x", vec!["reconcilers"]), object("750m", "high", 3), "deny", (false, 0, false)),
            ("break-glass", ("sre", vec!["oncall"]), object("750m", "low", 2), "ignore", (false, 1, true)),
            ("managedFields warn", dev.clone(), object("500m", "low", 3), "warn", (false, 1, false)),
            ("managedFields deny", dev.clone(), object("500m", "low", 3), "deny", (true, 0, false)),
            ("managedFields ignore", dev.clone(), object("500m", "low", 3), "ignore", (false, 0, false)),
            (
                "owned map key",
                dev.clone(),
                {
                    let mut o = object("500m", "low", 2);
                    o["metadata"]["labels"]["cost-center"] = json!("43");
                    o
                },
                "ignore",
                (true, 0, false),
            ),
        ];
        for (name, (user, groups), new, mf, (denied, warned, glass)) in cases {
            let req = request("UPDATE", json!({"username": user, "groups": groups}), old.clone(), new, None);
            let v = judge(&req, &policies(mf));
            assert_eq!(v.is_denied(), denied, "{name}: {v:?}");
            let warnings = v.findings.iter().filter(|f| f.action == Enforcement::Warn || f.break_glass).count();
            assert_eq!(warnings, warned, "{name}: {v:?}");
            assert_eq!(v.is_break_glass(), glass, "{name}: {v:?}");
        }
    }

    #[test]
    fn label_selector_and_namespace_scope_the_rule() {
        let mut other_ns =
            request("UPDATE", json!({"username": "dev"}), object("500m", "low", 2), object("750m", "low", 2), None);
        other_ns.namespace = Some("prod".into());
        assert!(!judge(&other_ns, &policies("ignore")).is_denied());
        let mut unlabelled_old = object("500m", "low", 2);
        unlabelled_old["metadata"]["labels"] = json!({});
        let mut unlabelled_new = object("750m", "low", 2);
        unlabelled_new["metadata"]["labels"] = json!({});
        let req = request("UPDATE", json!({"username": "dev"}), unlabelled_old, unlabelled_new, None);
        assert!(!judge(&req, &policies("ignore")).is_denied());
        // Removing the label in the same write does not escape the rule.
        let mut escaping = object("750m", "low", 2);
        escaping["metadata"]["labels"] = json!({});
        let req = request("UPDATE", json!({"username": "dev"}), object("500m", "low", 2), escaping, None);
        assert!(judge(&req, &policies("ignore")).is_denied());
    }

    #[test]
    fn scale_write_is_judged_as_spec_replicas() {
        let scale = |n: i64| {
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "team-a", "managedFields": [{"manager": "kustomize-controller",
                "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": n}})
        };
        let mut req = request("UPDATE", json!({"username": "dev"}), scale(2), scale(5), Some("scale"));
        req.kind = crate::admission::GroupVersionKind {
            group: "autoscaling".into(),
            version: "v1".into(),
            kind: "Scale".into(),
        };
        let v = judge(&req, &policies("deny"));
        assert!(v.is_denied());
        assert_eq!(v.findings[0].path, "spec.replicas");
        assert!(v.findings[0].message.ends_with("Requested 2 -> 5."), "{}", v.findings[0].message);
    }

    #[test]
    fn delete_protection_covers_reconciler_managed_objects_only() {
        let req = request("DELETE", json!({"username": "dev"}), object("500m", "low", 2), Value::Null, None);
        assert!(judge(&req, &policies("ignore")).is_denied());
        let req = request("DELETE", json!({"username": "flux"}), object("500m", "low", 2), Value::Null, None);
        assert!(!judge(&req, &policies("ignore")).is_denied());
        let req = request(
            "DELETE",
            json!({"username": "sre", "groups": ["oncall"]}),
            object("500m", "low", 2),
            Value::Null,
            None,
        );
        let v = judge(&req, &policies("ignore"));
        assert!(!v.is_denied() && v.is_break_glass());
        let mut unmanaged = object("500m", "low", 2);
        unmanaged["metadata"]["managedFields"] =
            json!([{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]);
        let req = request("DELETE", json!({"username": "dev"}), unmanaged, Value::Null, None);
        assert!(!judge(&req, &policies("ignore")).is_denied());
    }

    #[test]
    fn status_writes_and_creates_are_not_judged() {
        let req = request(
            "UPDATE",
            json!({"username": "dev"}),
            object("500m", "low", 2),
            object("750m", "low", 3),
            Some("status"),
        );
        assert!(judge(&req, &policies("deny")).findings.is_empty());
        let req = request("CREATE", json!({"username": "dev"}), Value::Null, object("750m", "low", 3), None);
        assert!(judge(&req, &policies("deny")).findings.is_empty());
    }

    #[test]
    fn several_policies_judge_the_same_managed_fields() {
        let second = POLICY.replace("MF", "warn").replace("metadata: {name: p}", "metadata: {name: q}");
        let mut all = parse_documents(&POLICY.replace("MF", "deny"), "p.yaml").expect("valid");
        all.extend(parse_documents(&second, "q.yaml").expect("valid"));
        let set = PolicySet::new(all);
        let req =
            request("UPDATE", json!({"username": "dev"}), object("500m", "low", 2), object("500m", "low", 3), None);
        let v = judge(&req, &set);
        assert!(v.is_denied(), "{v:?}");
        assert_eq!(v.findings.len(), 1, "one finding per field, the strongest: {v:?}");
        assert_eq!(v.findings[0].path, "spec.replicas");
    }

    #[test]
    fn unreadable_managed_fields_are_reported_not_ignored() {
        let mut old = object("500m", "low", 2);
        old["metadata"]["managedFields"][0]["fieldsV1"] = json!({"x:bad": {}});
        let req = request("UPDATE", json!({"username": "dev"}), old, object("500m", "low", 3), None);
        let v = judge(&req, &policies("deny"));
        assert!(v.error.as_deref().is_some_and(|e| e.contains("kustomize-controller")), "{v:?}");
    }

    /// The captured review of Flux's kustomize-controller applying the next Git revision
    /// while impersonating the tenant service account `team-a/flux-reconciler` (no extras).
    fn impersonated(user: Option<Value>, manager: &str) -> AdmissionRequest {
        let mut review = crate::ownership::diff::test_support::fixture(
            "validating/deploy-platform-agent-update-ssa-flux-impersonating-tenant-sa.validating.json",
        );
        if let Some(user) = user {
            review["request"]["userInfo"] = user;
        }
        review["request"]["options"]["fieldManager"] = json!(manager);
        Review::decode(&serde_json::to_vec(&review).expect("json")).expect("review").request
    }

    /// A platform policy owning every field its reconciler field managers own; `users`
    /// and `extra` are spliced into `spec.owner.reconcilers`.
    fn platform(users: &str, extra: &str) -> PolicySet {
        let text = format!(
            r#"
apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata: {{name: platform}}
spec:
  owner:
    name: platform-config
    repository: https://git.example.com/sre/cluster-config
    reconcilers:
      users: {users}
      fieldManagers: [kustomize-controller, helm-controller, argocd-controller]{extra}
  managedFields: deny
"#
        );
        PolicySet::new(parse_documents(&text, "platform.yaml").expect("valid"))
    }

    const FLUX_SA: &str = "system:serviceaccount:flux-system:kustomize-controller";
    const CPU: &str = "spec.template.spec.containers[name=agent].resources.limits.cpu";

    #[test]
    fn impersonated_tenant_service_account_is_a_reconciler_when_a_glob_names_it() {
        let req = impersonated(None, "kustomize-controller");
        assert_eq!(req.user_info.username, "system:serviceaccount:team-a:flux-reconciler");
        assert!(req.user_info.extra.is_empty(), "an impersonated request carries no extras");
        let glob = platform(&format!(r#"["{FLUX_SA}", "system:serviceaccount:*:flux-reconciler"]"#), "");
        let v = judge(&req, &glob);
        assert!(v.findings.is_empty(), "{v:?}");
        assert!(is_reconciler(&glob.policies[0], &req.user_info));

        // The same write without the glob: denied, and the message says why and how to fix it.
        let exact = platform(&format!(r#"["{FLUX_SA}"]"#), "");
        let v = judge(&req, &exact);
        assert!(v.is_denied());
        assert_eq!(
            v.deny_message().as_deref(),
            Some(
                format!(
                    "{CPU} is owned by platform-config (field manager kustomize-controller, Git: https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); \
                     field manager kustomize-controller is a reconciler field manager of platform-config, but user system:serviceaccount:team-a:flux-reconciler is not one of its reconcilers \
                     (users: {FLUX_SA}; groups: none); if this is your GitOps controller impersonating a tenant service account, add it to spec.owner.reconcilers.users of OwnershipPolicy platform \
                     (globs allowed, e.g. system:serviceaccount:*:flux-reconciler). Requested \"500m\" -> \"600m\"."
                )
                .as_str()
            )
        );
    }

    #[test]
    fn helm_controller_and_argo_cd_impersonating_tenant_accounts() {
        let policies = platform(
            r#"["system:serviceaccount:*:flux-reconciler", "system:serviceaccount:*:argocd-sync"]"#,
            "\n      groups: [\"system:serviceaccounts:gitops-*\"]",
        );
        let sa = |ns: &str, name: &str| {
            json!({"username": format!("system:serviceaccount:{ns}:{name}"),
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]})
        };
        let cases = [
            (sa("team-a", "flux-reconciler"), "helm-controller", false),
            (sa("team-b", "argocd-sync"), "argocd-controller", false),
            // Matched through its group: any service account of a gitops-* namespace.
            (sa("gitops-apps", "deployer"), "argocd-controller", false),
            // Not named: denied, and told why.
            (sa("team-a", "default"), "helm-controller", true),
            (sa("team-a", "argocd-syncer"), "argocd-controller", true),
        ];
        for (user, manager, denied) in cases {
            let req = impersonated(Some(user.clone()), manager);
            let v = judge(&req, &policies);
            assert_eq!(v.is_denied(), denied, "{user} {manager}: {v:?}");
            if denied {
                let message = v.deny_message().unwrap_or_default();
                let want = format!(
                    "field manager {manager} is a reconciler field manager of platform-config, but user {} is not one of its reconcilers (users: system:serviceaccount:*:flux-reconciler, system:serviceaccount:*:argocd-sync; groups: system:serviceaccounts:gitops-*)",
                    user["username"].as_str().unwrap_or_default()
                );
                assert!(message.contains(&want), "{message}");
            }
        }
    }

    #[test]
    fn developer_naming_a_reconciler_field_manager_is_told_it_is_not_a_reconciler() {
        let policies = platform(r#"["system:serviceaccount:*:flux-reconciler"]"#, "");
        let dev = json!({"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]});
        let v = judge(&impersonated(Some(dev.clone()), "kustomize-controller"), &policies);
        assert!(v.is_denied());
        let message = v.deny_message().unwrap_or_default();
        assert!(
            message.contains("field manager kustomize-controller is a reconciler field manager of platform-config, but user dev is not one of its reconcilers (users: system:serviceaccount:*:flux-reconciler; groups: none); if this is your GitOps controller impersonating a tenant service account, add it to spec.owner.reconcilers.users"),
            "{message}"
        );
        assert!(!message.contains("change it there"), "{message}");
        // A developer with its own field manager gets the usual message.
        let v = judge(&impersonated(Some(dev), "kubectl"), &policies);
        let message = v.deny_message().unwrap_or_default();
        assert!(message.ends_with("change it there. Requested \"500m\" -> \"600m\"."), "{message}");
        assert!(!message.contains("reconciler field manager"), "{message}");
    }

    #[test]
    fn the_explanation_is_given_once_per_answer() {
        // The next revision changes the image and both limits: three Git-owned fields.
        let mut req = impersonated(None, "kustomize-controller");
        let container = req.object.as_mut().and_then(|o| o.pointer_mut("/spec/template/spec/containers/0"));
        let container = container.expect("a container");
        container["image"] = json!("registry.invalid/agent:2");
        container["resources"]["limits"]["memory"] = json!("512Mi");
        let exact = platform(&format!(r#"["{FLUX_SA}"]"#), "");
        let v = judge(&req, &exact);
        assert_eq!(v.denials().count(), 3, "{v:?}");
        let message = v.deny_message().unwrap_or_default();
        assert_eq!(message.matches("if this is your GitOps controller").count(), 1, "{message}");
        assert_eq!(
            message.matches("user system:serviceaccount:team-a:flux-reconciler may not change it (see above)").count(),
            2,
            "{message}"
        );
        // As warnings (managedFields: warn), the same.
        let warn = platform(&format!(r#"["{FLUX_SA}"]"#), "").policies.into_iter().map(|mut p| {
            p.managed_fields = Enforcement::Warn;
            p
        });
        let v = judge(&req, &PolicySet::new(warn.collect()));
        let warnings = v.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("if this is your GitOps controller"), "{warnings:?}");
        assert!(warnings[1..].iter().all(|w| w.contains("(see above)")), "{warnings:?}");
    }

    #[test]
    fn require_pod_token_names_the_missing_token() {
        let policies = platform(r#"["system:serviceaccount:team-a:flux-reconciler"]"#, "\n      requirePodToken: true");
        let req = impersonated(None, "kustomize-controller");
        assert_eq!(standing(&policies.policies[0], &req.user_info), Standing::NoPodToken);
        let message = judge(&req, &policies).deny_message().unwrap_or_default();
        assert!(
            message.contains("user system:serviceaccount:team-a:flux-reconciler is one of its reconcilers, but policy platform requires a pod-bound service account token (requirePodToken) and this request carries none"),
            "{message}"
        );
    }

    #[test]
    fn builtin_default_warns_and_points_at_a_policy() {
        let v = judge(&impersonated(None, "kustomize-controller"), &PolicySet::default());
        assert!(!v.is_denied());
        assert_eq!(v.findings.len(), 1, "{v:?}");
        let message = &v.findings[0].message;
        assert!(message.contains("field manager kustomize-controller is a reconciler field manager of git, but user system:serviceaccount:team-a:flux-reconciler is not one of its reconcilers (users: system:serviceaccount:flux-system:kustomize-controller, system:serviceaccount:flux-system:helm-controller, system:serviceaccount:argocd:argocd-application-controller; groups: none)"), "{message}");
        assert!(
            message.contains("give hallmark an OwnershipPolicy whose spec.owner.reconcilers.users names it"),
            "{message}"
        );
    }

    #[test]
    fn flux_and_argo_sources_are_named() {
        let flux = json!({"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}}});
        assert_eq!(gitops_source(&flux).as_deref(), Some("Flux Kustomization flux-system/apps"));
        let argo =
            json!({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:team-a/web"}}});
        assert_eq!(gitops_source(&argo).as_deref(), Some("Argo CD application shop"));
        let helm_only = json!({"metadata": {"labels": {"app.kubernetes.io/instance": "web"}}});
        assert_eq!(gitops_source(&helm_only), None, "an instance label alone is not Argo CD");
    }

    fn with_managed_fields(mut o: Value, entries: Value) -> Value {
        o["metadata"]["managedFields"] = entries;
        o
    }

    fn flux_entry(fields: Value) -> Value {
        json!({"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": fields})
    }

    /// A write that takes the reconciler's managedFields away: reset, entry removed or
    /// shrunk, while the owned values stay.
    #[test]
    fn taking_a_reconcilers_ownership_away_is_judged() {
        let old = object("500m", "low", 2);
        let dev = json!({"username": "dev", "groups": ["developers"]});
        let kubectl = json!({"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {}});
        // What kube-apiserver leaves after `managedFields: [{}]`, a removed entry, a shrunk one.
        let reset = with_managed_fields(object("500m", "low", 2), json!([kubectl]));
        let removed = with_managed_fields(object("500m", "low", 2), json!([]));
        let shrunk = with_managed_fields(object("500m", "low", 2), json!([flux_entry(json!({}))]));
        for (name, new) in [("reset", &reset), ("removed", &removed), ("shrunk", &shrunk)] {
            let req = request("UPDATE", dev.clone(), old.clone(), new.clone(), None);
            let v = judge(&req, &policies("deny"));
            assert!(v.is_denied(), "{name}: {v:?}");
            let message = v.deny_message().unwrap_or_default();
            assert!(message.starts_with("metadata.managedFields: this write takes away field manager kustomize-controller's ownership of 1 field of platform (Git: https://git.example.com/cfg) (spec.replicas) without changing it; managedFields are how Git's ownership is known"), "{name}: {message}");
            // Denied whatever managedFields says, as long as the policy reads them
            // (managedFields warn|deny, or deleteProtection); nothing otherwise.
            assert!(judge(&req, &policies("warn")).is_denied(), "{name}");
            assert!(judge(&req, &policies("ignore")).is_denied(), "{name}: deleteProtection reads managedFields");
            let neither = POLICY.replace("MF", "ignore").replace("deleteProtection: true", "deleteProtection: false");
            let neither = PolicySet::new(parse_documents(&neither, "p.yaml").expect("valid"));
            assert!(judge(&req, &neither).findings.is_empty(), "{name}");
            // The reconciler itself may rewrite its entries; break-glass is allowed, recorded.
            let flux = request("UPDATE", json!({"username": "flux"}), old.clone(), new.clone(), None);
            assert!(judge(&flux, &policies("deny")).findings.is_empty(), "{name}");
            let sre =
                request("UPDATE", json!({"username": "sre", "groups": ["oncall"]}), old.clone(), new.clone(), None);
            let v = judge(&sre, &policies("deny"));
            assert!(!v.is_denied() && v.is_break_glass(), "{name}: {v:?}");
            assert!(v.warnings()[0].starts_with("break-glass: metadata.managedFields"), "{name}: {v:?}");
        }
        // kube-apiserver merged the reconciler's (Update) entry into `ancient-changes`
        // because the write added an eleventh Update manager: nothing taken away.
        let bucketed = with_managed_fields(
            object("500m", "low", 2),
            json!([{"manager": "ancient-changes", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}, kubectl]),
        );
        let req = request("UPDATE", dev.clone(), old.clone(), bucketed, None);
        assert!(judge(&req, &policies("deny")).findings.is_empty());
        // The entry kept as it was (another manager's entry added): nothing.
        let kept = with_managed_fields(
            object("500m", "low", 2),
            json!([flux_entry(json!({"f:spec": {"f:replicas": {}}})), kubectl]),
        );
        let req = request("UPDATE", dev.clone(), old.clone(), kept, None);
        assert!(judge(&req, &policies("deny")).findings.is_empty());
        // Ownership that moved with a change of the value is judged as that change only.
        let moved = with_managed_fields(object("500m", "low", 3), json!([flux_entry(json!({})), kubectl]));
        let req = request("UPDATE", dev, old, moved, None);
        let v = judge(&req, &policies("warn"));
        assert_eq!(v.findings.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["spec.replicas"], "{v:?}");
    }

    /// While an object is being deleted its finalizers go, whoever owns them.
    #[test]
    fn finalizers_removed_during_a_deletion_are_never_a_git_owned_change() {
        let finalizer = json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"example.com/cleanup\"": {}}}});
        let mut old = with_managed_fields(object("500m", "low", 2), json!([flux_entry(finalizer)]));
        old["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        let mut new = with_managed_fields(object("500m", "low", 2), json!([flux_entry(json!({}))]));
        new["metadata"]["finalizers"] = json!([]);
        let operator = json!({"username": "system:serviceaccount:ops:cleanup-operator"});
        // Not being deleted: removing Git's finalizer is a change of a Git-owned field.
        let req = request("UPDATE", operator.clone(), old.clone(), new.clone(), None);
        assert!(judge(&req, &policies("deny")).is_denied());
        // Being deleted: allowed, also with a rule that names the finalizers.
        old["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
        new["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
        let req = request("UPDATE", operator, old, new, None);
        let v = judge(&req, &policies("deny"));
        assert!(v.findings.is_empty(), "{v:?}");
        let rule =
            POLICY.replace("MF", "deny").replace("[spec.template.spec.priorityClassName]", "[metadata.finalizers]");
        let set = PolicySet::new(parse_documents(&rule, "p.yaml").expect("valid"));
        assert!(judge(&req, &set).findings.is_empty());
    }

    /// Flux's opt-outs turn off what managedFields derive; the explicit rules stay and say
    /// Flux will not revert the change.
    #[test]
    fn flux_opt_outs_turn_off_managed_fields_ownership() {
        let dev = json!({"username": "dev", "groups": ["developers"]});
        let owned = |marker: Option<&str>| {
            let mut fields = json!({"f:spec": {"f:replicas": {}}});
            if let Some(key) = marker {
                fields["f:metadata"] = json!({"f:annotations": {format!("f:{key}"): {}}});
            }
            fields
        };
        let marked = |value: &str, from_git: bool, cpu: &str, replicas: i64| {
            let key = "kustomize.toolkit.fluxcd.io/ssa";
            let mut o =
                with_managed_fields(object(cpu, "low", replicas), json!([flux_entry(owned(from_git.then_some(key)))]));
            o["metadata"]["annotations"] = json!({key: value});
            o
        };
        // (marker value, marker applied by Flux, replicas change denied)
        for (value, from_git, denied) in [
            ("IfNotPresent", true, false),
            ("IfNotPresent", false, true),
            ("ignore", false, false),
            ("Merge", true, true),
        ] {
            let req = request(
                "UPDATE",
                dev.clone(),
                marked(value, from_git, "500m", 2),
                marked(value, from_git, "500m", 3),
                None,
            );
            assert_eq!(judge(&req, &policies("deny")).is_denied(), denied, "{value} from Git: {from_git}");
        }
        // The explicit rule still denies, and says why a change would stay.
        let req = request(
            "UPDATE",
            dev.clone(),
            marked("IfNotPresent", true, "500m", 2),
            marked("IfNotPresent", true, "750m", 2),
            None,
        );
        let message = judge(&req, &policies("deny")).deny_message().unwrap_or_default();
        assert!(
            message.contains("change it there (Flux will not revert it (kustomize.toolkit.fluxcd.io/ssa: IfNotPresent), so a change here would stay)"),
            "{message}"
        );
        // Another writer may not opt the object out.
        let old = object("500m", "low", 2);
        let mut new = object("500m", "low", 2);
        new["metadata"]["annotations"] = json!({"kustomize.toolkit.fluxcd.io/reconcile": "disabled"});
        let req = request("UPDATE", dev, old, new, None);
        let v = judge(&req, &policies("deny"));
        assert_eq!(
            v.denials().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [r#"metadata.annotations["kustomize.toolkit.fluxcd.io/reconcile"]"#]
        );
        assert!(v.deny_message().unwrap_or_default().contains("only Git may opt an object out of reconciliation"));
    }

    #[test]
    fn delete_protection_follows_whether_flux_would_recreate_the_object() {
        let dev = json!({"username": "dev"});
        let key = "kustomize.toolkit.fluxcd.io/ssa";
        let mut from_git = with_managed_fields(
            object("500m", "low", 2),
            json!([flux_entry(json!({"f:metadata": {"f:annotations": {format!("f:{key}"): {}}}}))]),
        );
        for (value, protected) in [("IfNotPresent", true), ("Ignore", false)] {
            from_git["metadata"]["annotations"] = json!({key: value});
            let req = request("DELETE", dev.clone(), from_git.clone(), Value::Null, None);
            assert_eq!(judge(&req, &policies("ignore")).is_denied(), protected, "{value}");
        }
        // Ignore set on the cluster's copy only: Git still has the object, Flux recreates it.
        let mut local = object("500m", "low", 2);
        local["metadata"]["annotations"] = json!({key: "Ignore"});
        let req = request("DELETE", dev, local, Value::Null, None);
        assert!(judge(&req, &policies("ignore")).is_denied());
    }

    /// Git applied empty maps and structs (`annotations: {}`, `resources: {}`: Helm and
    /// kustomize output): the reconciler owns the field, not what others add under it;
    /// an atomic map (`nodeSelector`) it owns whole. Finalizers are a set.
    #[test]
    fn empty_granular_maps_and_finalizer_sets_own_only_what_git_applied() {
        let dev = json!({"username": "dev", "groups": ["developers"]});
        let base = |annotations: Value, node_selector: Value, finalizers: Value| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "prod", "annotations": annotations, "finalizers": finalizers,
                    "managedFields": [{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {
                        "f:metadata": {"f:annotations": {}, "f:finalizers": {"v:\"example.com/git\"": {}}},
                        "f:spec": {"f:template": {"f:metadata": {"f:annotations": {}}, "f:spec": {
                            "f:nodeSelector": {},
                            "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:resources": {}}}}}}}}]},
                "spec": {"template": {"metadata": {}, "spec": {"nodeSelector": node_selector,
                    "containers": [{"name": "web", "image": "a"}]}}}
            })
        };
        let old = base(json!({}), json!({}), json!(["example.com/git"]));
        let judged = |new: Value| judge(&request("UPDATE", dev.clone(), old.clone(), new, None), &policies("deny"));
        let allowed = [
            ("an annotation added", base(json!({"foo": "bar"}), json!({}), json!(["example.com/git"]))),
            ("rollout restart", {
                let mut n = old.clone();
                n["spec"]["template"]["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "now"});
                n
            }),
            ("resources set under an empty struct", {
                let mut n = old.clone();
                n["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "200m"}});
                n
            }),
            ("another finalizer added", base(json!({}), json!({}), json!(["example.com/git", "op.example.com/x"]))),
        ];
        for (what, new) in allowed {
            let v = judged(new);
            assert!(v.findings.is_empty(), "{what}: {v:?}");
        }
        let denied = [
            ("a key added to an atomic map", base(json!({}), json!({"disk": "ssd"}), json!(["example.com/git"]))),
            ("Git's finalizer removed", base(json!({}), json!({}), json!([]))),
        ];
        for (what, new) in denied {
            let v = judged(new);
            assert!(v.is_denied(), "{what}: {v:?}");
        }
        // A change-cause Git applied is Git's, like any annotation it applied.
        let mut git_cause = old.clone();
        git_cause["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "release 1.2"});
        git_cause["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:annotations"] =
            json!({"f:kubernetes.io/change-cause": {}});
        let mut hacked = git_cause.clone();
        hacked["metadata"]["annotations"]["kubernetes.io/change-cause"] = json!("hacked");
        let req = request("UPDATE", dev.clone(), git_cause, hacked, None);
        assert!(judge(&req, &policies("deny")).is_denied());
        let v = judged(base(json!({}), json!({}), json!(["op.example.com/x"])));
        assert_eq!(
            v.denials().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [r#"metadata.finalizers[="example.com/git"]"#],
            "only Git's finalizer is Git's"
        );
    }

    /// Two ways around a policy found on a real cluster: unselecting an object from a
    /// label rule, then changing its fields; and handing a protected object to the garbage
    /// collector with an owner reference.
    #[test]
    fn no_way_around_a_label_rule_or_delete_protection() {
        let dev = json!({"username": "dev", "groups": ["developers"]});
        // The rule selects tier=web in team-* namespaces; the object is in team-a.
        let old = object("500m", "low", 2);
        let mut unlabelled = object("500m", "low", 2);
        unlabelled["metadata"]["labels"] = json!({"cost-center": "42"});
        let req = request("UPDATE", dev.clone(), old.clone(), unlabelled.clone(), None);
        let v = judge(&req, &policies("ignore"));
        assert_eq!(v.denials().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["metadata.labels.tier"], "{v:?}");
        // A label change that keeps the object selected is free.
        let mut relabelled = object("500m", "low", 2);
        relabelled["metadata"]["labels"]["team"] = json!("shop");
        assert!(
            judge(&request("UPDATE", dev.clone(), old.clone(), relabelled, None), &policies("ignore"))
                .findings
                .is_empty()
        );

        let mut owned = object("500m", "low", 2);
        owned["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": "u-1"}]);
        let req = request("UPDATE", dev, old.clone(), owned.clone(), None);
        let v = judge(&req, &policies("ignore"));
        assert!(v.is_denied(), "{v:?}");
        assert!(
            v.deny_message()
                .unwrap_or_default()
                .contains("an owner reference lets the garbage collector delete this object")
        );
        let sre = request("UPDATE", json!({"username": "sre", "groups": ["oncall"]}), old, owned, None);
        let v = judge(&sre, &policies("ignore"));
        assert!(!v.is_denied() && v.is_break_glass(), "{v:?}");
    }
}
