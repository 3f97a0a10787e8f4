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
        self.users.iter().any(|u| u == username) || self.groups.iter().any(|g| groups.iter().any(|ug| ug == g))
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

// ---- TEMPORARY shims until the policy module lands (replaced on merge) ----
use serde_json::{Map, Value};

impl PolicySet {
    pub fn effective(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.policies.iter()
    }
}

impl CompiledRule {
    pub fn matches_kind(&self, _group: &str, _kind: &str, _resource: &str) -> bool {
        false
    }
    pub fn matches_namespace(&self, _ns: Option<&str>) -> bool {
        false
    }
    pub fn matches_labels(&self, _labels: &Map<String, Value>) -> bool {
        false
    }
}

#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct OwnershipPolicy {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}
impl kube::Resource for OwnershipPolicy {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "OwnershipPolicy".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "hallmark.dev".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "ownershippolicies".into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}
pub fn compile_resource(_doc: &OwnershipPolicy) -> Result<CompiledPolicy, String> {
    Err("shim".into())
}
pub fn crd_yaml() -> Result<String, String> {
    Err("shim".into())
}
