//! Ownership policies: the `OwnershipPolicy` schema (file or custom resource), its
//! validation, compilation into a form the verdict can evaluate cheaply, and loading.

pub mod load;
pub mod schema;

pub use schema::*;

use crate::ownership::path::FieldPath;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use wildmatch::WildMatch;

/// `deny` or `warn` for a rule; `ignore|warn|deny` for managedFields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    Ignore,
    Warn,
    Deny,
}

/// Users and groups, as compared with `userInfo`.
#[derive(Clone, Debug, Default)]
pub struct Subjects {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Subjects {
    pub fn contains(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == username)
            || self.groups.iter().any(|g| groups.iter().any(|ug| ug == g))
    }
}

/// A policy ready to evaluate: patterns parsed, globs compiled.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub owner_name: String,
    pub repository: Option<String>,
    pub reconcilers: Subjects,
    pub reconciler_field_managers: Vec<String>,
    pub require_pod_token: bool,
    pub rules: Vec<CompiledRule>,
    pub managed_fields: Enforcement,
    pub delete_protection: bool,
    pub break_glass: Subjects,
}

#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// API groups (`""` is core); empty = any.
    pub groups: Vec<String>,
    /// Kinds; empty = any.
    pub kinds: Vec<String>,
    /// Namespace globs; empty = any (and cluster-scoped objects).
    pub namespaces: Vec<WildMatch>,
    pub label_selector: Option<LabelSelector>,
    pub fields: Vec<FieldPath>,
    pub action: Enforcement,
}

/// The live set of policies. Empty `policies` means the built-in default is in force.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<CompiledPolicy>,
}
