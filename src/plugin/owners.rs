//! `kubectl hallmark owners`: an object's fields grouped by owner. Git first (the fields
//! of the policies in force: explicit rules that match the object, and what
//! managedFields shows a reconciler field manager owns), then every other field manager.

use super::show::ObjectId;
use super::table::{Table, cell};
use crate::ownership::fieldsv1::FieldSet;
use crate::ownership::markers::opt_out;
use crate::ownership::path::{FieldPath, Segment};
use crate::ownership::verdict::gitops_source;
use crate::policy::{CompiledPolicy, Enforcement};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// One field (or field pattern) that Git owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitOwned {
    /// A concrete path (from managedFields) or a rule's pattern (may contain `[*]`).
    pub field: String,
    /// The reconciler field manager whose managedFields entry owns it; `None` for a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    pub policy: String,
    /// `deny` or `warn`: what a direct write that changes it gets.
    pub enforce: &'static str,
}

/// A policy that owns fields of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitOwner {
    pub policy: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Who may change the fields: the policy's `spec.owner.reconcilers` users and groups,
    /// as written (globs included), matched by the webhook as `verdict::is_reconciler` does.
    pub reconcilers: Reconcilers,
}

/// A policy's reconciler identities, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconcilers {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// The fields of one managedFields entry that Git does not claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerFields {
    pub manager: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Owners {
    /// The Flux Kustomization / HelmRelease or Argo CD application, when the object names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitops_source: Option<String>,
    pub git_owners: Vec<GitOwner>,
    pub git: Vec<GitOwned>,
    pub managers: Vec<ManagerFields>,
    /// Reconcilers told to leave the object alone (`ownership::markers`): their entries'
    /// fields are not Git-owned, e.g. `Flux will not revert it (kustomize.toolkit.fluxcd.io/ssa: Ignore)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_enforced: Vec<String>,
    /// managedFields entries that could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn enforcement_name(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Ignore => "ignore",
        Enforcement::Warn => "warn",
        Enforcement::Deny => "deny",
    }
}

/// Groups `obj`'s fields by owner under `policies` (the policies in force).
/// `resource` is the object's plural resource name (`deployments`), which rules may name.
pub fn owners<'p>(obj: &Value, resource: &str, policies: impl IntoIterator<Item = &'p CompiledPolicy>) -> Owners {
    let id = ObjectId::of(obj);
    let empty = Map::new();
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
    let entries: Vec<&Value> = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut out = Owners { gitops_source: gitops_source(obj), ..Owners::default() };
    // Which entries Git claims (by index), so the rest are listed per manager.
    let mut claimed = vec![false; entries.len()];

    for policy in policies {
        let before = out.git.len();
        for rule in &policy.rules {
            let applies = rule.matches_kind(id.group(), &id.kind, resource)
                && rule.matches_namespace(id.namespace.as_deref())
                && rule.matches_labels(labels);
            if !applies {
                continue;
            }
            for field in &rule.fields {
                push_git(&mut out.git, field.to_string(), None, policy, rule.action);
            }
        }
        if policy.managed_fields != Enforcement::Ignore {
            for (i, entry) in entries.iter().enumerate() {
                let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
                if !policy.is_reconciler_field_manager(manager) || is_status(entry) {
                    continue;
                }
                if let Some(opted) = opt_out(obj, manager) {
                    let note = format!("{manager}: {}", opted.will_not_revert());
                    if !out.not_enforced.contains(&note) {
                        out.not_enforced.push(note);
                    }
                    continue;
                }
                let Some(fields) = entry.get("fieldsV1") else { continue };
                match FieldSet::decode(fields) {
                    Ok(set) => {
                        claimed[i] = true;
                        for path in compact(set.paths()) {
                            push_git(&mut out.git, path.to_string(), Some(manager), policy, policy.managed_fields);
                        }
                    }
                    Err(e) => out.errors.push(format!("managedFields of {manager}: {e}")),
                }
            }
        }
        if out.git.len() > before && !out.git_owners.iter().any(|o| o.policy == policy.name) {
            out.git_owners.push(GitOwner {
                policy: policy.name.clone(),
                owner: policy.owner_name.clone(),
                repository: policy.repository.clone(),
                reconcilers: Reconcilers {
                    users: policy.reconcilers.users.as_written().to_vec(),
                    groups: policy.reconcilers.groups.as_written().to_vec(),
                },
            });
        }
    }

    for (i, entry) in entries.iter().enumerate() {
        if claimed[i] {
            continue;
        }
        let s = |k: &str| entry.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        let manager = s("manager").unwrap_or_default();
        let fields = match entry.get("fieldsV1").map(FieldSet::decode) {
            Some(Ok(set)) => compact(set.paths()).iter().map(ToString::to_string).collect(),
            Some(Err(e)) => {
                out.errors.push(format!("managedFields of {manager}: {e}"));
                continue;
            }
            None => Vec::new(),
        };
        out.managers.push(ManagerFields {
            manager,
            operation: s("operation").unwrap_or_default(),
            subresource: s("subresource"),
            time: s("time"),
            fields,
        });
    }
    out
}

/// The fields of a set as a reader wants them: the most specific ones. A key field of a
/// list element (`env[name=A].name`) goes with the element, and a map or element that is
/// listed only because its children are (`metadata.annotations`, `containers[name=web]`)
/// is left out for them; what remains still covers every owned field.
pub fn compact(paths: Vec<FieldPath>) -> Vec<FieldPath> {
    let is_key_field = |p: &FieldPath| match p.segments() {
        [.., Segment::Key(pairs), Segment::Field(f)] => pairs.iter().any(|(k, _)| k == f),
        _ => false,
    };
    let kept: Vec<FieldPath> = paths.into_iter().filter(|p| !is_key_field(p)).collect();
    let is_parent = |p: &FieldPath| {
        kept.iter().any(|q| q.segments().len() > p.segments().len() && q.segments().starts_with(p.segments()))
    };
    kept.iter().filter(|p| !is_parent(p)).cloned().collect()
}

fn is_status(entry: &Value) -> bool {
    entry.get("subresource").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn push_git(
    git: &mut Vec<GitOwned>,
    field: String,
    manager: Option<&str>,
    policy: &CompiledPolicy,
    action: Enforcement,
) {
    let enforce = enforcement_name(action);
    let row = GitOwned { field, manager: manager.map(str::to_owned), policy: policy.name.clone(), enforce };
    if !git.contains(&row) {
        git.push(row);
    }
}

/// Where the policies in force came from, for the `Policies:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--policy` files and directories.
    Files(Vec<String>),
    /// The cluster's OwnershipPolicy resources (their names).
    Cluster(Vec<String>),
    /// The CRD exists but there are no (valid) resources.
    BuiltinNoResources,
    /// The cluster has no OwnershipPolicy CRD.
    BuiltinNoCrd,
}

impl PolicySource {
    pub fn describe(&self) -> String {
        match self {
            PolicySource::Files(paths) => format!("{} (--policy)", paths.join(", ")),
            PolicySource::Cluster(names) => format!("{} (OwnershipPolicy resources)", names.join(", ")),
            PolicySource::BuiltinNoResources => "built-in default (no OwnershipPolicy resources in the cluster)".into(),
            PolicySource::BuiltinNoCrd => "built-in default (the cluster has no OwnershipPolicy CRD)".into(),
        }
    }
}

/// The text `owners` prints: a few describing lines, then one row per field, grouped by
/// owner (Git first). `headers: false` prints the rows alone.
pub fn render_owners(obj: &Value, owners: &Owners, source: &PolicySource, headers: bool) -> String {
    let mut out = String::new();
    if headers {
        let mut top = Table::default();
        ObjectId::of(obj).describe_rows(&mut top);
        let git = if owners.git_owners.is_empty() {
            "<none>".to_owned()
        } else {
            owners
                .git_owners
                .iter()
                .map(|o| match &o.repository {
                    Some(r) => format!("{} ({r})", o.owner),
                    None => o.owner.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        top.push(["Git owner:".to_owned(), git]);
        top.push(["Git source:".to_owned(), cell(owners.gitops_source.as_deref())]);
        if !owners.not_enforced.is_empty() {
            top.push(["Not enforced:".to_owned(), owners.not_enforced.join("; ")]);
        }
        top.push(["Policies:".to_owned(), source.describe()]);
        out.push_str(&top.render(false, ""));
        out.push('\n');
    }
    let mut t = Table::new(["OWNER", "VIA", "ENFORCE", "FIELD"]);
    for g in &owners.git {
        let via = match &g.manager {
            Some(m) => m.clone(),
            None => format!("policy {}", g.policy),
        };
        t.push(["Git".to_owned(), via, g.enforce.to_owned(), cell(Some(&g.field))]);
    }
    for m in &owners.managers {
        let via = match &m.subresource {
            Some(sub) => format!("{}/{sub}", m.operation),
            None => m.operation.clone(),
        };
        for f in &m.fields {
            t.push([cell(Some(&m.manager)), cell(Some(&via)), "<none>".to_owned(), cell(Some(f))]);
        }
    }
    out.push_str(&t.render(headers, ""));
    out
}

/// `owners -o json|yaml`.
pub fn owners_document(obj: &Value, owners: &Owners, source: &PolicySource) -> Value {
    let mut doc = ObjectId::of(obj).to_json();
    doc["policies"] = json!(source.describe());
    if let (Value::Object(d), Ok(Value::Object(extra))) = (&mut doc, serde_json::to_value(owners)) {
        d.extend(extra);
    }
    doc
}
