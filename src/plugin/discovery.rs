//! Resource names to API resources, the way kubectl resolves them: plural, singular,
//! short name (`deploy`, `cm`, `sts`) or kind, optionally qualified with a group
//! (`deployments.apps`) or version and group (`deployments.v1.apps`), CRDs included.
//!
//! The catalog is pure (built from discovery documents, tested with recorded ones); the
//! loader asks the API server for as little as it can: aggregated discovery (`/api` and
//! `/apis`, two requests) when the server offers it, otherwise the legacy documents,
//! group by group in priority order until the name resolves.

use kube::core::ApiResource;
use kube::core::discovery::v2::ACCEPT_AGGREGATED_DISCOVERY_V2;
use serde::Deserialize;
use serde_json::Value;
use std::collections::VecDeque;

/// One API resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The URL name: `deployments`.
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// The group's preferred version (names resolve to it).
    pub preferred: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps`, or `configmaps` for the core group: how kubectl names the
    /// resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// The collection URL, in `namespace` when the resource is namespaced and one is given.
    pub fn url_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    fn is_called(&self, name: &str) -> bool {
        self.plural.eq_ignore_ascii_case(name)
            || self.singular.eq_ignore_ascii_case(name)
            || self.kind.eq_ignore_ascii_case(name)
            || self.short_names.iter().any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// A resource name as typed: `deploy`, `deployments.apps`, `deployments.v1.apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceName {
    pub name: String,
    pub group: Option<String>,
    pub version: Option<String>,
}

impl ResourceName {
    pub fn parse(text: &str) -> ResourceName {
        let text = text.trim();
        let Some((name, rest)) = text.split_once('.') else {
            return ResourceName { name: text.to_owned(), group: None, version: None };
        };
        if let Some((first, group)) = rest.split_once('.').filter(|(first, _)| is_version(first)) {
            return ResourceName {
                name: name.to_owned(),
                group: Some(group.to_owned()),
                version: Some(first.to_owned()),
            };
        }
        ResourceName { name: name.to_owned(), group: Some(rest.to_owned()), version: None }
    }
}

/// `v1`, `v2beta1`, `v1alpha3`.
fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else { return false };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let tail = &rest[digits..];
    tail.is_empty()
        || ["alpha", "beta"]
            .iter()
            .any(|p| tail.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
}

/// The resources known so far, in priority order (core first, then the groups in the
/// order the server lists them).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub resources: Vec<Resource>,
}

impl Catalog {
    /// The resource `name` means, among the preferred versions (or the named version).
    pub fn find(&self, name: &ResourceName) -> Option<&Resource> {
        self.resources.iter().find(|r| {
            r.is_called(&name.name)
                && name.group.as_deref().is_none_or(|g| g == r.group)
                && match &name.version {
                    Some(v) => *v == r.version,
                    None => r.preferred,
                }
        })
    }

    /// The resource serving `kind` at `group`/`version` (for manifests).
    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    fn has_version(&self, group: &str, version: &str) -> bool {
        self.resources.iter().any(|r| r.group == group && r.version == version)
    }

    /// Adds the resources of a legacy `APIResourceList` (`/api/v1`, `/apis/apps/v1`).
    pub fn add_resource_list(&mut self, list: &Value, preferred: bool) -> Result<(), String> {
        let list = LegacyResourceList::deserialize(list).map_err(|e| format!("unreadable APIResourceList: {e}"))?;
        let (group, version) = match list.group_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), list.group_version.clone()),
        };
        if self.has_version(&group, &version) {
            return Ok(());
        }
        for r in list.resources {
            if r.name.contains('/') {
                continue;
            }
            self.resources.push(Resource {
                group: r.group.unwrap_or_else(|| group.clone()),
                version: r.version.unwrap_or_else(|| version.clone()),
                kind: r.kind,
                singular: if r.singular_name.is_empty() { r.name.clone() } else { r.singular_name },
                plural: r.name,
                short_names: r.short_names,
                namespaced: r.namespaced,
                verbs: r.verbs,
                preferred,
            });
        }
        Ok(())
    }

    /// Adds every group, version and resource of an aggregated `APIGroupDiscoveryList`.
    pub fn add_aggregated(&mut self, list: &Value) -> Result<(), String> {
        let list = AggregatedList::deserialize(list).map_err(|e| format!("unreadable APIGroupDiscoveryList: {e}"))?;
        for group in list.items {
            let name = group.metadata.name;
            for (i, version) in group.versions.into_iter().enumerate() {
                if self.has_version(&name, &version.version) {
                    continue;
                }
                for r in version.resources {
                    let kind = r.response_kind.map(|k| k.kind).unwrap_or_default();
                    self.resources.push(Resource {
                        group: name.clone(),
                        version: version.version.clone(),
                        kind,
                        singular: r.singular_resource.unwrap_or_else(|| r.resource.clone()),
                        plural: r.resource,
                        short_names: r.short_names,
                        namespaced: r.scope == "Namespaced",
                        verbs: r.verbs,
                        preferred: i == 0,
                    });
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyResourceList {
    group_version: String,
    #[serde(default)]
    resources: Vec<LegacyResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyResource {
    name: String,
    #[serde(default)]
    singular_name: String,
    #[serde(default)]
    namespaced: bool,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    short_names: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

#[derive(Deserialize)]
struct AggregatedList {
    #[serde(default)]
    items: Vec<AggregatedGroup>,
}

#[derive(Deserialize, Default)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct AggregatedGroup {
    #[serde(default)]
    metadata: NameOnly,
    #[serde(default)]
    versions: Vec<AggregatedVersion>,
}

#[derive(Deserialize)]
struct AggregatedVersion {
    #[serde(default)]
    version: String,
    #[serde(default)]
    resources: Vec<AggregatedResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AggregatedResource {
    resource: String,
    #[serde(default)]
    response_kind: Option<KindOnly>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    singular_resource: Option<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    short_names: Vec<String>,
}

#[derive(Deserialize)]
struct KindOnly {
    #[serde(default)]
    kind: String,
}

/// A group version still to be fetched (legacy discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    group: String,
    group_version: String,
}

/// Resolves names against a live server, fetching discovery documents lazily.
pub struct Discovery {
    client: kube::Client,
    catalog: Catalog,
    pending: VecDeque<Pending>,
    started: bool,
}

/// A name the server does not serve, or a failed discovery request.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    Unknown(String),
    #[error("no matches for kind \"{kind}\" in version \"{api_version}\"")]
    UnknownKind { kind: String, api_version: String },
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Document(String),
}

impl Discovery {
    pub fn new(client: kube::Client) -> Discovery {
        Discovery { client, catalog: Catalog::default(), pending: VecDeque::new(), started: false }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    async fn get(&self, path: &str, aggregated: bool) -> Result<Value, DiscoveryError> {
        let mut request = hyper::Request::get(path);
        if aggregated {
            request = request.header(hyper::header::ACCEPT, ACCEPT_AGGREGATED_DISCOVERY_V2);
        }
        let request = request.body(Vec::new()).map_err(|e| DiscoveryError::Document(e.to_string()))?;
        Ok(self.client.request::<Value>(request).await?)
    }

    /// `/api` and `/apis`: all of aggregated discovery, or the legacy group lists.
    async fn start(&mut self) -> Result<(), DiscoveryError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let core = self.get("/api", true).await?;
        match core.get("kind").and_then(Value::as_str) {
            Some("APIGroupDiscoveryList") => self.catalog.add_aggregated(&core).map_err(DiscoveryError::Document)?,
            _ => {
                let versions = core.get("versions").and_then(Value::as_array);
                let first = versions.and_then(|v| v.first()).and_then(Value::as_str).unwrap_or("v1");
                self.pending.push_back(Pending { group: String::new(), group_version: first.to_owned() });
            }
        }
        let groups = self.get("/apis", true).await?;
        match groups.get("kind").and_then(Value::as_str) {
            Some("APIGroupDiscoveryList") => self.catalog.add_aggregated(&groups).map_err(DiscoveryError::Document)?,
            _ => {
                for g in groups.get("groups").and_then(Value::as_array).into_iter().flatten() {
                    let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
                    let preferred = g
                        .pointer("/preferredVersion/groupVersion")
                        .or_else(|| g.pointer("/versions/0/groupVersion"))
                        .and_then(Value::as_str);
                    if let Some(gv) = preferred {
                        self.pending.push_back(Pending { group: name.to_owned(), group_version: gv.to_owned() });
                    }
                }
            }
        }
        Ok(())
    }

    async fn load(&mut self, pending: &Pending, preferred: bool) -> Result<(), DiscoveryError> {
        let path = if pending.group.is_empty() {
            format!("/api/{}", pending.group_version)
        } else {
            format!("/apis/{}", pending.group_version)
        };
        let list = self.get(&path, false).await?;
        self.catalog.add_resource_list(&list, preferred).map_err(DiscoveryError::Document)
    }

    /// Fetches one group version unless it is known; `Ok(false)` when the server does not
    /// serve it.
    async fn load_version(&mut self, group: &str, version: &str) -> Result<bool, DiscoveryError> {
        if self.catalog.has_version(group, version) {
            return Ok(true);
        }
        let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
        let preferred = self.pending.iter().any(|p| p.group_version == group_version);
        self.pending.retain(|p| p.group_version != group_version);
        match self.load(&Pending { group: group.to_owned(), group_version }, preferred).await {
            Ok(()) => Ok(true),
            Err(DiscoveryError::Api(kube::Error::Api(s))) if s.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The resource a typed name means.
    pub async fn resolve(&mut self, text: &str) -> Result<Resource, DiscoveryError> {
        let name = ResourceName::parse(text);
        self.start().await?;
        if let (Some(group), Some(version)) = (&name.group, &name.version) {
            self.load_version(group, version).await?;
            return self.catalog.find(&name).cloned().ok_or_else(|| DiscoveryError::Unknown(text.to_owned()));
        }
        loop {
            if let Some(r) = self.catalog.find(&name) {
                return Ok(r.clone());
            }
            // A qualified name only needs its own group.
            let next = match &name.group {
                Some(g) => self.pending.iter().position(|p| p.group == *g).and_then(|i| self.pending.remove(i)),
                None => self.pending.pop_front(),
            };
            match next {
                Some(next) => self.load(&next, true).await?,
                None => return Err(DiscoveryError::Unknown(text.to_owned())),
            }
        }
    }

    /// The resource serving a manifest's `apiVersion` and `kind`.
    pub async fn resolve_kind(&mut self, api_version: &str, kind: &str) -> Result<Resource, DiscoveryError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let unknown = || DiscoveryError::UnknownKind { kind: kind.to_owned(), api_version: api_version.to_owned() };
        if kind.is_empty() || version.is_empty() {
            return Err(unknown());
        }
        self.start().await?;
        self.load_version(group, version).await?;
        self.catalog.find_kind(group, version, kind).cloned().ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy() -> Catalog {
        let mut c = Catalog::default();
        c.add_resource_list(
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap",
                 "verbs": ["get", "list"], "shortNames": ["cm"]},
                {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["get"],
                 "shortNames": ["ev"]},
                {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                 "verbs": ["get"], "shortNames": ["ns"]},
                {"name": "namespaces/status", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["get"]}
            ]}),
            true,
        )
        .expect("core");
        c.add_resource_list(
            &json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
                {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment",
                 "verbs": ["get", "list"], "shortNames": ["deploy"]},
                {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
                 "version": "v1", "kind": "Scale", "verbs": ["get"]}
            ]}),
            true,
        )
        .expect("apps");
        c.add_resource_list(
            &json!({"kind": "APIResourceList", "groupVersion": "events.k8s.io/v1", "resources": [
                {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["get"],
                 "shortNames": ["ev"]}
            ]}),
            true,
        )
        .expect("events");
        c
    }

    fn find(c: &Catalog, name: &str) -> Option<String> {
        c.find(&ResourceName::parse(name)).map(|r| format!("{} {}", r.qualified(), r.version))
    }

    #[test]
    fn names_resolve_by_plural_singular_short_name_and_kind() {
        let c = legacy();
        for name in
            ["deployments", "deployment", "deploy", "Deployment", "DEPLOY", "deployments.apps", "deploy.v1.apps"]
        {
            assert_eq!(find(&c, name).as_deref(), Some("deployments.apps v1"), "{name}");
        }
        assert_eq!(find(&c, "cm").as_deref(), Some("configmaps v1"));
        assert_eq!(find(&c, "deployments.extensions"), None);
        assert_eq!(find(&c, "deployments.v2.apps"), None);
        assert_eq!(find(&c, "scale"), None, "subresources are not resources");
    }

    #[test]
    fn the_core_group_wins_an_ambiguous_name_and_a_group_selects_the_other() {
        let c = legacy();
        assert_eq!(find(&c, "ev").as_deref(), Some("events v1"));
        assert_eq!(find(&c, "events.events.k8s.io").as_deref(), Some("events.events.k8s.io v1"));
    }

    #[test]
    fn versions_parse_only_when_they_look_like_versions() {
        assert_eq!(
            ResourceName::parse("ingresses.networking.k8s.io"),
            ResourceName { name: "ingresses".into(), group: Some("networking.k8s.io".into()), version: None }
        );
        assert_eq!(
            ResourceName::parse("cronjobs.v1beta1.batch"),
            ResourceName { name: "cronjobs".into(), group: Some("batch".into()), version: Some("v1beta1".into()) }
        );
        assert!(!is_version("v1beta"));
        assert!(!is_version("version"));
    }

    #[test]
    fn aggregated_discovery_gives_every_version_and_prefers_the_first() {
        let mut c = Catalog::default();
        c.add_aggregated(&json!({"kind": "APIGroupDiscoveryList", "items": [
            {"metadata": {"name": "hallmark.dev"}, "versions": [
                {"version": "v1beta1", "resources": [{"resource": "ownershippolicies", "scope": "Cluster",
                    "singularResource": "ownershippolicy", "shortNames": ["op"], "verbs": ["get", "list"],
                    "responseKind": {"group": "hallmark.dev", "version": "v1beta1", "kind": "OwnershipPolicy"}}]},
                {"version": "v1alpha1", "resources": [{"resource": "ownershippolicies", "scope": "Cluster",
                    "singularResource": "ownershippolicy", "verbs": ["get", "list"],
                    "responseKind": {"group": "hallmark.dev", "version": "v1alpha1", "kind": "OwnershipPolicy"}}]}
            ]}
        ]}))
        .expect("aggregated");
        let r = c.find(&ResourceName::parse("op")).expect("short name");
        assert_eq!((r.version.as_str(), r.namespaced), ("v1beta1", false));
        assert_eq!(r.url_path(Some("ignored")), "/apis/hallmark.dev/v1beta1/ownershippolicies");
        assert!(c.find_kind("hallmark.dev", "v1alpha1", "OwnershipPolicy").is_some());
    }
}
