//! The Git source of a reconciler's write: which commit, branch (or tag) and repository a
//! Flux Kustomization, a Flux HelmRelease or an Argo CD Application is applying
//! (docs/audit-trail.md "GitOps writes carry their source").
//!
//! Pure: the objects come from a [`SourceStore`] (in the server, kube-rs reflector caches
//! filled by `server::sources`; in tests, a map), never from a request to the API server.
//! Which field holds the revision being applied *during* a reconcile:
//!
//! - Flux kustomize-controller sets `status.lastAttemptedRevision` to the source's
//!   artifact revision and patches the status before it builds and applies the manifests
//!   (`reconcile()` in `internal/controller/kustomization_controller.go` of
//!   fluxcd/kustomize-controller); `status.lastAppliedRevision` only follows after a
//!   successful apply and health check. So: `lastAttemptedRevision`, then
//!   `lastAppliedRevision`, then the source's `status.artifact.revision`.
//! - Flux helm-controller records the chart version it is installing or upgrading in
//!   `status.lastAttemptedRevision`; the Git commit is the chart source's artifact revision.
//! - Argo CD resolves an ambiguous sync revision (a branch, `HEAD`) to a commit and keeps
//!   it in `status.operationState.syncResult.revision(s)` while the operation runs
//!   (`SyncAppState` in `controller/sync.go` of argoproj/argo-cd); before that it is
//!   `status.operationState.operation.sync.revision(s)`. Outside a running operation,
//!   `status.sync.revision(s)`, the revision the application was last compared with.

use crate::admission::truncate;
use kube::core::DynamicObject;
use serde_json::Value;
use std::sync::Arc;

/// The custom resources hallmark reads to find a write's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Kustomization,
    HelmRelease,
    GitRepository,
    OCIRepository,
    Bucket,
    HelmRepository,
    Application,
}

impl SourceKind {
    pub const ALL: [SourceKind; 7] = [
        SourceKind::Kustomization,
        SourceKind::HelmRelease,
        SourceKind::GitRepository,
        SourceKind::OCIRepository,
        SourceKind::Bucket,
        SourceKind::HelmRepository,
        SourceKind::Application,
    ];

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            SourceKind::Kustomization => "kustomize.toolkit.fluxcd.io",
            SourceKind::HelmRelease => "helm.toolkit.fluxcd.io",
            SourceKind::GitRepository | SourceKind::OCIRepository | SourceKind::Bucket | SourceKind::HelmRepository => {
                "source.toolkit.fluxcd.io"
            }
            SourceKind::Application => "argoproj.io",
        }
    }

    /// The kind, as in `spec.sourceRef.kind`.
    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::Kustomization => "Kustomization",
            SourceKind::HelmRelease => "HelmRelease",
            SourceKind::GitRepository => "GitRepository",
            SourceKind::OCIRepository => "OCIRepository",
            SourceKind::Bucket => "Bucket",
            SourceKind::HelmRepository => "HelmRepository",
            SourceKind::Application => "Application",
        }
    }

    /// The resource (plural), for RBAC and messages.
    pub fn plural(self) -> &'static str {
        match self {
            SourceKind::Kustomization => "kustomizations",
            SourceKind::HelmRelease => "helmreleases",
            SourceKind::GitRepository => "gitrepositories",
            SourceKind::OCIRepository => "ocirepositories",
            SourceKind::Bucket => "buckets",
            SourceKind::HelmRepository => "helmrepositories",
            SourceKind::Application => "applications",
        }
    }

    fn of_source_ref(kind: &str) -> Option<SourceKind> {
        [SourceKind::GitRepository, SourceKind::OCIRepository, SourceKind::Bucket, SourceKind::HelmRepository]
            .into_iter()
            .find(|k| k.kind() == kind)
    }
}

/// Cached objects by kind, namespace and name (kube-rs `DynamicObject`s: `metadata`, and
/// `spec` and `status` in `data`).
pub trait SourceStore: Send + Sync {
    /// The object, when its kind is watched and it is in the cache.
    fn get(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<Arc<DynamicObject>>;
    /// The Argo CD Applications named `name`, in any namespace.
    fn applications_named(&self, name: &str) -> Vec<Arc<DynamicObject>>;
    /// Whether the kind's cache is in use (its CRD exists and hallmark may watch it).
    fn watching(&self, kind: SourceKind) -> bool;
    /// Counts a lookup's result (see [`Lookup::label`]).
    fn record(&self, _lookup: &Lookup) {}
}

/// A shared [`SourceStore`], as the engine holds it.
#[derive(Clone)]
pub struct Sources(pub Arc<dyn SourceStore>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

/// The Git fields of a reconciler's write, and the object they were read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitSource {
    pub repository: Option<String>,
    /// The branch or tag.
    pub branch: Option<String>,
    /// The commit (or, for a source with no Git origin, the revision it applies: an OCI
    /// digest, a chart version).
    pub commit: Option<String>,
    /// `KIND/NAMESPACE/NAME` of the Kustomization, HelmRelease or Application.
    pub pipeline: String,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(GitSource),
    /// The object names no Kustomization, HelmRelease or Application.
    NoSource,
    /// It names one, but that kind (or its source's kind) is not watched: no CRD, no RBAC.
    Unavailable(SourceKind),
    /// It names one that is not in the cache (deleted, or not yet listed).
    Missing(SourceKind),
}

impl Lookup {
    /// The `result` label of `hallmark_gitops_source_lookups_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Found(_) => "found",
            Lookup::NoSource => "no-source",
            Lookup::Unavailable(_) => "unavailable",
            Lookup::Missing(_) => "missing",
        }
    }

    pub fn found(self) -> Option<GitSource> {
        match self {
            Lookup::Found(s) => Some(s),
            _ => None,
        }
    }
}

/// The Flux owner labels (`SetOwnerLabels` of fluxcd/pkg/ssa, called by both controllers).
pub const KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
pub const HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Argo CD's annotation tracking: `APP:GROUP/KIND:NAMESPACE/NAME`, APP being
/// `NAMESPACE_NAME` for an Application outside Argo CD's own namespace.
pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's label tracking key (argocd-cm `application.instanceLabelKey`) by default.
pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Upper bound of a value read from a source object.
const MAX_CHARS: usize = 1024;

/// Finds the source of `object` (the object a reconciler writes). `instance_label` is Argo
/// CD's `application.instanceLabelKey`, read only when `field_manager` is an Argo CD one
/// and the object has no tracking annotation.
pub fn lookup(object: &Value, field_manager: Option<&str>, instance_label: &str, store: &dyn SourceStore) -> Lookup {
    let meta = object.get("metadata");
    let label = |k: &str| meta.and_then(|m| m.get("labels")).and_then(|l| l.get(k)).and_then(Value::as_str);
    let annotation = |k: &str| meta.and_then(|m| m.get("annotations")).and_then(|l| l.get(k)).and_then(Value::as_str);
    let result = if let (Some(name), Some(ns)) = (label(KUSTOMIZE_NAME), label(KUSTOMIZE_NAMESPACE)) {
        flux(SourceKind::Kustomization, ns, name, store)
    } else if let (Some(name), Some(ns)) = (label(HELM_NAME), label(HELM_NAMESPACE)) {
        flux(SourceKind::HelmRelease, ns, name, store)
    } else if let Some(tracking) = annotation(ARGOCD_TRACKING_ID) {
        let app = tracking.split(':').next().unwrap_or_default();
        argocd(app, store)
    } else if field_manager.is_some_and(|m| m.starts_with("argocd"))
        && let Some(app) = label(instance_label)
    {
        argocd(app, store)
    } else {
        Lookup::NoSource
    };
    store.record(&result);
    result
}

fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn clean(v: &str) -> String {
    let v: String = v.chars().filter(|c| !c.is_control()).collect();
    truncate(v.trim(), MAX_CHARS)
}

/// A Flux revision (RFC-0005 of fluxcd/flux2: `<named pointer>@<algo>:<checksum>`, e.g.
/// `main@sha1:0f2b…`, `v1.2.0@sha1:…`, `latest@sha256:…`, `sha256:…`; before Flux 2.0
/// `main/0f2b…`) as (pointer, checksum): the pointer without `refs/heads/` or
/// `refs/tags/`, a Git checksum without its `sha1:` prefix.
pub fn parse_revision(revision: &str) -> (Option<String>, Option<String>) {
    let revision = revision.trim();
    if revision.is_empty() {
        return (None, None);
    }
    let (pointer, checksum) = match revision.rsplit_once('@') {
        Some((p, c)) => (Some(p), c),
        None if revision.contains(':') => (None, revision),
        None => match revision.rsplit_once('/') {
            // The old `<branch>/<sha>` form.
            Some((p, c)) if c.len() >= 7 && c.bytes().all(|b| b.is_ascii_hexdigit()) => (Some(p), c),
            _ => (None, revision),
        },
    };
    let pointer = pointer
        .map(|p| p.strip_prefix("refs/heads/").or_else(|| p.strip_prefix("refs/tags/")).unwrap_or(p))
        .filter(|p| !p.is_empty())
        .map(clean);
    let checksum = checksum.strip_prefix("sha1:").unwrap_or(checksum);
    (pointer, (!checksum.is_empty()).then(|| clean(checksum)))
}

fn pipeline(kind: SourceKind, ns: &str, name: &str) -> String {
    clean(&format!("{}/{ns}/{name}", kind.kind()))
}

fn flux(kind: SourceKind, ns: &str, name: &str, store: &dyn SourceStore) -> Lookup {
    if !store.watching(kind) {
        return Lookup::Unavailable(kind);
    }
    let Some(found) = store.get(kind, ns, name) else {
        return Lookup::Missing(kind);
    };
    let obj = &found.data;
    // Where the source is: a Kustomization's spec.sourceRef; a HelmRelease's spec.chartRef
    // (OCIRepository, HelmChart) or spec.chart.spec.sourceRef.
    let source_ref = match kind {
        SourceKind::Kustomization => obj.pointer("/spec/sourceRef"),
        _ => obj.pointer("/spec/chartRef").or_else(|| obj.pointer("/spec/chart/spec/sourceRef")),
    };
    let mut out = GitSource { pipeline: pipeline(kind, ns, name), ..GitSource::default() };
    let attempted = s(obj, "/status/lastAttemptedRevision").or_else(|| s(obj, "/status/lastAppliedRevision"));
    let source = source_ref.and_then(|r| {
        let kind = SourceKind::of_source_ref(s(r, "/kind")?)?;
        let name = s(r, "/name")?;
        let namespace = s(r, "/namespace").unwrap_or(ns);
        Some((kind, namespace, name))
    });
    let Some((source_kind, source_ns, source_name)) = source else {
        // A source hallmark does not read (a HelmChart, an ExternalArtifact): the revision
        // the reconciler records is all there is.
        if kind == SourceKind::Kustomization {
            let (pointer, checksum) = attempted.map(parse_revision).unwrap_or_default();
            out.branch = pointer;
            out.commit = checksum;
        } else {
            out.commit = attempted.map(clean);
        }
        return Lookup::Found(out);
    };
    if !store.watching(source_kind) {
        return Lookup::Unavailable(source_kind);
    }
    let Some(src) = store.get(source_kind, source_ns, source_name) else {
        return Lookup::Missing(source_kind);
    };
    let src = &src.data;
    let artifact = s(src, "/status/artifact/revision");
    match source_kind {
        SourceKind::HelmRepository => {
            // A chart from a Helm repository: the chart version is the revision applied.
            out.repository = s(src, "/spec/url").map(clean);
            out.commit = attempted.map(clean);
        }
        SourceKind::Bucket => {
            out.repository = match (s(src, "/spec/endpoint"), s(src, "/spec/bucketName")) {
                (Some(e), Some(b)) => Some(clean(&format!("{}/{b}", e.trim_end_matches('/')))),
                (e, b) => e.or(b).map(clean),
            };
            let revision = if kind == SourceKind::Kustomization { attempted.or(artifact) } else { artifact };
            out.commit = revision.and_then(|r| parse_revision(r).1);
        }
        SourceKind::GitRepository | SourceKind::OCIRepository => {
            out.repository = s(src, "/spec/url").map(clean);
            // A Kustomization applies the revision it attempted; a HelmRelease records a
            // chart version, so the commit is the source's artifact.
            let revision = if kind == SourceKind::Kustomization { attempted.or(artifact) } else { artifact };
            let (pointer, checksum) = revision.map(parse_revision).unwrap_or_default();
            out.branch = pointer.or_else(|| {
                ["/spec/ref/branch", "/spec/ref/tag", "/spec/ref/name", "/spec/ref/semver"]
                    .iter()
                    .find_map(|p| s(src, p))
                    .map(clean)
            });
            out.commit = checksum;
            if source_kind == SourceKind::OCIRepository {
                // An artifact pushed with `flux push artifact` names its Git origin
                // (`org.opencontainers.image.source` and `.revision`): the commit to stamp.
                let meta =
                    |k: &str| src.pointer("/status/artifact/metadata").and_then(|m| m.get(k)).and_then(Value::as_str);
                if let Some(origin) = meta("org.opencontainers.image.revision") {
                    let (p, c) = parse_revision(origin);
                    out.branch = p.or(out.branch);
                    out.commit = c.or(out.commit);
                }
                if let Some(repo) = meta("org.opencontainers.image.source") {
                    out.repository = Some(clean(repo));
                }
            }
        }
        _ => {}
    }
    Lookup::Found(out)
}

fn argocd(app: &str, store: &dyn SourceStore) -> Lookup {
    if app.is_empty() {
        return Lookup::NoSource;
    }
    if !store.watching(SourceKind::Application) {
        return Lookup::Unavailable(SourceKind::Application);
    }
    // `NAMESPACE_NAME` names an Application outside Argo CD's namespace ("apps in any
    // namespace"); a plain name is one in Argo CD's namespace, whichever that is.
    let found = match app.split_once('_') {
        Some((ns, name)) => store.get(SourceKind::Application, ns, name),
        None => {
            let mut all = store.applications_named(app);
            if all.len() == 1 { all.pop() } else { None }
        }
    };
    let Some(found) = found else {
        return Lookup::Missing(SourceKind::Application);
    };
    let ns = found.metadata.namespace.as_deref().unwrap_or_default();
    let name = found.metadata.name.as_deref().unwrap_or(app);
    let obj = &found.data;
    let mut out = GitSource { pipeline: pipeline(SourceKind::Application, ns, name), ..GitSource::default() };
    // One source, or several (`spec.sources`): the revisions are listed in the same order.
    // With several, the first that is not only a `ref` for values files is the one shown.
    let (source, index) = match obj.pointer("/spec/sources").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let i = list.iter().position(|src| src.get("ref").is_none() || src.get("path").is_some()).unwrap_or(0);
            (list.get(i), Some(i))
        }
        _ => (obj.pointer("/spec/source"), None),
    };
    let revision_at = |base: &str| -> Option<&str> {
        match index {
            Some(i) => obj.pointer(&format!("{base}s/{i}")).and_then(Value::as_str).filter(|v| !v.is_empty()),
            None => s(obj, base),
        }
    };
    let running = s(obj, "/status/operationState/phase") == Some("Running");
    let revision = if running {
        revision_at("/status/operationState/syncResult/revision")
            .or_else(|| revision_at("/status/operationState/operation/sync/revision"))
    } else {
        None
    }
    .or_else(|| revision_at("/status/sync/revision"));
    if let Some(src) = source {
        out.repository = s(src, "/repoURL").map(clean);
        let target = s(src, "/targetRevision");
        let is_chart = s(src, "/chart").is_some();
        if !is_chart {
            out.branch = target.filter(|t| Some(*t) != revision).map(clean);
        }
    }
    out.commit = revision.map(clean);
    Lookup::Found(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Map {
        objects: BTreeMap<(SourceKind, String, String), Arc<DynamicObject>>,
        unwatched: Vec<SourceKind>,
    }

    impl Map {
        fn with(mut self, kind: SourceKind, obj: Value) -> Map {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            self.objects.insert((kind, ns, name), Arc::new(serde_json::from_value(obj).expect("object")));
            self
        }
    }

    impl SourceStore for Map {
        fn get(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
            self.objects.get(&(kind, namespace.to_owned(), name.to_owned())).cloned()
        }
        fn applications_named(&self, name: &str) -> Vec<Arc<DynamicObject>> {
            self.objects
                .iter()
                .filter(|((k, _, n), _)| *k == SourceKind::Application && n == name)
                .map(|(_, v)| v.clone())
                .collect()
        }
        fn watching(&self, kind: SourceKind) -> bool {
            !self.unwatched.contains(&kind)
        }
    }

    const SHA: &str = "0f2b6b7d3c8e9a1f4b5c6d7e8f9a0b1c2d3e4f5a";

    fn labelled(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "team-a", "labels": labels, "annotations": annotations}})
    }

    fn kustomization(source_kind: &str, attempted: &str) -> Value {
        json!({"metadata": {"name": "apps", "namespace": "flux-system"},
               "spec": {"sourceRef": {"kind": source_kind, "name": "fleet"}, "path": "./apps"},
               "status": {"lastAttemptedRevision": attempted, "lastAppliedRevision": "main@sha1:1111111111111111111111111111111111111111"}})
    }

    fn git_repository() -> Value {
        json!({"metadata": {"name": "fleet", "namespace": "flux-system"},
               "spec": {"url": "https://github.com/acme/fleet", "ref": {"branch": "main"}},
               "status": {"artifact": {"revision": format!("main@sha1:{SHA}")}}})
    }

    fn flux_object() -> Value {
        labelled(json!({KUSTOMIZE_NAME: "apps", KUSTOMIZE_NAMESPACE: "flux-system"}), json!(null))
    }

    #[test]
    fn a_kustomization_write_carries_the_attempted_revision_and_the_repository() {
        let store = Map::default()
            .with(SourceKind::Kustomization, kustomization("GitRepository", &format!("main@sha1:{SHA}")))
            .with(SourceKind::GitRepository, git_repository());
        let found = lookup(&flux_object(), Some("kustomize-controller"), ARGOCD_INSTANCE_LABEL, &store);
        assert_eq!(
            found,
            Lookup::Found(GitSource {
                repository: Some("https://github.com/acme/fleet".into()),
                branch: Some("main".into()),
                commit: Some(SHA.into()),
                pipeline: "Kustomization/flux-system/apps".into(),
            })
        );
    }

    #[test]
    fn flux_revisions_in_every_form() {
        assert_eq!(parse_revision(&format!("main@sha1:{SHA}")), (Some("main".into()), Some(SHA.into())));
        assert_eq!(parse_revision(&format!("refs/tags/v1.2@sha1:{SHA}")), (Some("v1.2".into()), Some(SHA.into())));
        assert_eq!(parse_revision(&format!("sha1:{SHA}")), (None, Some(SHA.into())));
        assert_eq!(parse_revision("latest@sha256:abcd"), (Some("latest".into()), Some("sha256:abcd".into())));
        assert_eq!(parse_revision(&format!("main/{SHA}")), (Some("main".into()), Some(SHA.into())));
        assert_eq!(parse_revision(""), (None, None));
    }

    #[test]
    fn an_oci_artifact_names_its_git_origin() {
        let oci = json!({"metadata": {"name": "fleet", "namespace": "flux-system"},
            "spec": {"url": "oci://ghcr.io/acme/manifests"},
            "status": {"artifact": {"revision": "latest@sha256:feed", "metadata": {
                "org.opencontainers.image.source": "https://github.com/acme/fleet",
                "org.opencontainers.image.revision": format!("main@sha1:{SHA}")}}}});
        let store = Map::default()
            .with(SourceKind::Kustomization, kustomization("OCIRepository", "latest@sha256:feed"))
            .with(SourceKind::OCIRepository, oci);
        let found = lookup(&flux_object(), None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.repository.as_deref(), Some("https://github.com/acme/fleet"));
        assert_eq!((found.branch.as_deref(), found.commit.as_deref()), (Some("main"), Some(SHA)));
    }

    #[test]
    fn a_helm_release_from_a_git_repository_and_from_a_helm_repository() {
        let object = labelled(json!({HELM_NAME: "podinfo", HELM_NAMESPACE: "apps"}), json!(null));
        let release = |source: Value| {
            json!({"metadata": {"name": "podinfo", "namespace": "apps"},
                   "spec": {"chart": {"spec": {"chart": "./charts/podinfo", "sourceRef": source}}},
                   "status": {"lastAttemptedRevision": "6.5.0"}})
        };
        let store = Map::default()
            .with(
                SourceKind::HelmRelease,
                release(json!({"kind": "GitRepository", "name": "fleet", "namespace": "flux-system"})),
            )
            .with(SourceKind::GitRepository, git_repository());
        let found = lookup(&object, None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.commit.as_deref(), Some(SHA));
        assert_eq!(found.pipeline, "HelmRelease/apps/podinfo");

        let repo = json!({"metadata": {"name": "podinfo", "namespace": "apps"},
                          "spec": {"url": "https://stefanprodan.github.io/podinfo"}});
        let store = Map::default()
            .with(SourceKind::HelmRelease, release(json!({"kind": "HelmRepository", "name": "podinfo"})))
            .with(SourceKind::HelmRepository, repo);
        let found = lookup(&object, None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.repository.as_deref(), Some("https://stefanprodan.github.io/podinfo"));
        assert_eq!(found.commit.as_deref(), Some("6.5.0"), "the chart version is the revision applied");
    }

    fn application(status: Value) -> Value {
        json!({"metadata": {"name": "guestbook", "namespace": "argocd"},
               "spec": {"source": {"repoURL": "https://github.com/acme/apps", "targetRevision": "main", "path": "guestbook"}},
               "status": status})
    }

    #[test]
    fn an_argocd_write_carries_the_revision_of_the_running_sync() {
        let tracking = labelled(json!(null), json!({ARGOCD_TRACKING_ID: "guestbook:apps/Deployment:team-a/web"}));
        let running = json!({"sync": {"revision": "2222222222222222222222222222222222222222"},
            "operationState": {"phase": "Running", "operation": {"sync": {"revision": "main"}},
                               "syncResult": {"revision": SHA}}});
        let store = Map::default().with(SourceKind::Application, application(running));
        let found = lookup(&tracking, Some("argocd-controller"), ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(
            found,
            GitSource {
                repository: Some("https://github.com/acme/apps".into()),
                branch: Some("main".into()),
                commit: Some(SHA.into()),
                pipeline: "Application/argocd/guestbook".into(),
            }
        );
        // Not running: the revision last compared with.
        let idle = json!({"sync": {"revision": SHA}, "operationState": {"phase": "Succeeded",
            "syncResult": {"revision": "3333333333333333333333333333333333333333"}}});
        let store = Map::default().with(SourceKind::Application, application(idle));
        let found = lookup(&tracking, None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.commit.as_deref(), Some(SHA));
    }

    #[test]
    fn label_tracking_needs_an_argocd_field_manager_and_a_unique_application() {
        let object = labelled(json!({ARGOCD_INSTANCE_LABEL: "guestbook"}), json!(null));
        let store = Map::default().with(SourceKind::Application, application(json!({"sync": {"revision": SHA}})));
        assert_eq!(lookup(&object, Some("helm"), ARGOCD_INSTANCE_LABEL, &store), Lookup::NoSource);
        assert!(matches!(lookup(&object, Some("argocd-controller"), ARGOCD_INSTANCE_LABEL, &store), Lookup::Found(_)));
        let mut other = application(json!({}));
        other["metadata"]["namespace"] = json!("team-b");
        let store = store.with(SourceKind::Application, other);
        assert_eq!(
            lookup(&object, Some("argocd-controller"), ARGOCD_INSTANCE_LABEL, &store),
            Lookup::Missing(SourceKind::Application),
            "two Applications of that name: neither is guessed"
        );
        // Apps in any namespace: NAMESPACE_NAME.
        let tracked = labelled(json!(null), json!({ARGOCD_TRACKING_ID: "team-b_guestbook:apps/Deployment:team-a/web"}));
        let found = lookup(&tracked, None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.pipeline, "Application/team-b/guestbook");
    }

    #[test]
    fn multi_source_applications_use_the_revision_of_the_same_index() {
        let app = json!({"metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"sources": [
                {"repoURL": "https://github.com/acme/values", "targetRevision": "main", "ref": "values"},
                {"repoURL": "https://github.com/acme/shop", "targetRevision": "release", "path": "deploy"}]},
            "status": {"sync": {"revisions": ["1111111111111111111111111111111111111111", SHA]}}});
        let object = labelled(json!(null), json!({ARGOCD_TRACKING_ID: "shop:apps/Deployment:team-a/web"}));
        let store = Map::default().with(SourceKind::Application, app);
        let found = lookup(&object, None, ARGOCD_INSTANCE_LABEL, &store).found().expect("found");
        assert_eq!(found.repository.as_deref(), Some("https://github.com/acme/shop"));
        assert_eq!((found.branch.as_deref(), found.commit.as_deref()), (Some("release"), Some(SHA)));
    }

    #[test]
    fn unwatched_and_missing_sources_are_told_apart() {
        let store = Map { unwatched: vec![SourceKind::Kustomization], ..Map::default() };
        assert_eq!(
            lookup(&flux_object(), None, ARGOCD_INSTANCE_LABEL, &store),
            Lookup::Unavailable(SourceKind::Kustomization)
        );
        let store =
            Map::default().with(SourceKind::Kustomization, kustomization("GitRepository", &format!("main@sha1:{SHA}")));
        assert_eq!(
            lookup(&flux_object(), None, ARGOCD_INSTANCE_LABEL, &store),
            Lookup::Missing(SourceKind::GitRepository)
        );
        assert_eq!(lookup(&labelled(json!(null), json!(null)), None, ARGOCD_INSTANCE_LABEL, &store), Lookup::NoSource);
    }
}
