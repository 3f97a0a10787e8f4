//! Checks the deployment manifests under `manifests/` (the kustomize base, its overlays and
//! the examples) without a cluster: every document parses into its Kubernetes type without
//! losing a field, the kustomizations are complete, and the pieces agree with each other
//! and with the server's interface (paths, ports, flags, certificates).
//!
//! Depends only on k8s-openapi/serde: nothing from the `hallmark` crate. When `kustomize`
//! or `kubectl` is on PATH the base and both overlays are also rendered and re-checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

// ---------------------------------------------------------------------------------------
// The interface the manifests rely on (docs/reference.md and the `hallmark serve` flags).
// ---------------------------------------------------------------------------------------

/// `hallmark serve` flags and whether each takes a value.
const SERVE_FLAGS: &[(&str, bool)] = &[
    ("--listen", true),
    ("--metrics-listen", true),
    ("--tls-cert", true),
    ("--tls-key", true),
    ("--client-ca", true),
    ("--config", true),
    ("--policy", true),
    ("--watch-policies", false),
    ("--annotation-prefix", true),
    ("--on-error", true),
    ("--drain-seconds", true),
    ("--log-format", true),
];

const NAMESPACE: &str = "hallmark-system";
const NAME: &str = "hallmark";
const TLS_SECRET: &str = "hallmark-tls";
const CONFIG_MAP: &str = "hallmark-config";
const STAMP_WEBHOOK: &str = "stamp.hallmark.dev";
const OWNERSHIP_WEBHOOK: &str = "ownership.hallmark.dev";
const INJECT_CA_FROM: &str = "cert-manager.io/inject-ca-from";
/// base64 of "hallmark-ca-bundle-placeholder"; documented in manifests/README.md.
const CA_BUNDLE_PLACEHOLDER: &str = "aGFsbG1hcmstY2EtYnVuZGxlLXBsYWNlaG9sZGVy";
/// The distroless `nonroot` user the image runs as.
const NONROOT_UID: i64 = 65532;

/// The resources people and pipelines apply directly: (API group, stable version, resource).
const DIRECT_RESOURCES: &[(&str, &str, &str)] = &[
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "daemonsets"),
    ("apps", "v1", "replicasets"),
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("", "v1", "serviceaccounts"),
    ("", "v1", "namespaces"),
    ("", "v1", "persistentvolumeclaims"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
];
const CLUSTER_SCOPED: &[&str] = &["namespaces", "clusterroles", "clusterrolebindings"];
const SCALE_SUBRESOURCES: &[&str] = &["deployments/scale", "statefulsets/scale", "replicasets/scale"];

/// matchConditions both webhooks must carry (whitespace-insensitive).
const REQUIRED_MATCH_CONDITIONS: &[&str] = &[
    "!has(request.userInfo.username) || !(request.userInfo.username in ['system:kube-controller-manager','system:kube-scheduler'])",
    "!has(request.userInfo.username) || !request.userInfo.username.startsWith('system:node:')",
];

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifests_dir() -> PathBuf {
    repo_root().join("manifests")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A resource listed by a kustomization (or an orphan, which a test reports).
    Resource,
    /// A strategic-merge patch file listed under `patches:`.
    Patch,
    /// Under `manifests/examples/`: applied by hand, never by a kustomization.
    Example,
}

#[derive(Clone, Debug)]
struct Doc {
    /// Path relative to `manifests/`, with `/` separators.
    file: String,
    index: usize,
    role: Role,
    yaml: Yaml,
    json: Json,
}

impl Doc {
    fn at(&self) -> String {
        format!("{}#{}", self.file, self.index)
    }
    fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or("")
    }
    fn api_version(&self) -> &str {
        self.json["apiVersion"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.json["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.json["metadata"]["namespace"].as_str()
    }
    fn typed<T: DeserializeOwned>(&self) -> T {
        serde_yaml::from_value(self.yaml.clone())
            .unwrap_or_else(|e| panic!("{}: not a valid {}: {e}", self.at(), self.kind()))
    }
}

#[derive(Debug)]
struct Kustomization {
    /// Directory relative to `manifests/` ("" for manifests/ itself).
    dir: String,
    json: Json,
}

impl Kustomization {
    fn file(&self) -> String {
        join_rel(&self.dir, "kustomization.yaml")
    }
    fn strings(&self, key: &str) -> Vec<String> {
        self.json[key]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().expect("a string entry").to_owned()).collect())
            .unwrap_or_default()
    }
    fn resources(&self) -> Vec<String> {
        self.strings("resources")
    }
    fn patches(&self) -> Vec<&Json> {
        self.json["patches"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
    }
    fn patch_paths(&self) -> Vec<String> {
        self.patches().into_iter().filter_map(|p| p["path"].as_str().map(str::to_owned)).collect()
    }
    /// Inline patches: (target, parsed patch body).
    fn inline_patches(&self) -> Vec<(Json, Json)> {
        self.patches()
            .into_iter()
            .filter_map(|p| {
                let body = p["patch"].as_str()?;
                let parsed: Yaml = serde_yaml::from_str(body)
                    .unwrap_or_else(|e| panic!("{}: inline patch is not YAML: {e}", self.file()));
                Some((p["target"].clone(), yaml_to_json(&parsed)))
            })
            .collect()
    }
}

struct Tree {
    docs: Vec<Doc>,
    kustomizations: Vec<Kustomization>,
    /// Files (relative) that were symlinks and so not loaded twice.
    symlinks: Vec<String>,
}

fn yaml_to_json(y: &Yaml) -> Json {
    serde_json::to_value(y).expect("YAML with string keys converts to JSON")
}

fn rel(path: &Path) -> String {
    let r = path.strip_prefix(manifests_dir()).expect("under manifests/");
    r.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

fn join_rel(dir: &str, entry: &str) -> String {
    // Normalise "a/b" + "../c" without touching the file system.
    let mut parts: Vec<String> = if dir.is_empty() { vec![] } else { dir.split('/').map(str::to_owned).collect() };
    for c in Path::new(entry).components() {
        match c {
            Component::ParentDir => {
                parts.pop().unwrap_or_else(|| panic!("{dir}/{entry} leaves manifests/"));
            }
            Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            other => panic!("{dir}: absolute or odd path {entry:?} ({other:?})"),
        }
    }
    parts.join("/")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn is_kustomization(p: &Path) -> bool {
    matches!(p.file_name().and_then(|n| n.to_str()), Some("kustomization.yaml" | "kustomization.yml" | "Kustomization"))
}

fn parse_documents(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let v: Yaml =
            serde::Deserialize::deserialize(de).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
        // A document of comments only is null: nothing to apply.
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(load_tree)
}

fn load_tree() -> Tree {
    let root = manifests_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);

    let mut kustomizations = Vec::new();
    let mut symlinks = Vec::new();
    let mut yaml_files = Vec::new();
    for f in files {
        if !is_yaml(&f) && !is_kustomization(&f) {
            continue;
        }
        if std::fs::symlink_metadata(&f).unwrap().file_type().is_symlink() {
            symlinks.push(rel(&f));
            continue;
        }
        if is_kustomization(&f) {
            let docs = parse_documents(&f);
            assert_eq!(docs.len(), 1, "{}: one document expected", rel(&f));
            let dir = rel(f.parent().unwrap());
            kustomizations.push(Kustomization { dir, json: yaml_to_json(&docs[0]) });
        } else {
            yaml_files.push(f);
        }
    }

    let patch_files: BTreeSet<String> =
        kustomizations.iter().flat_map(|k| k.patch_paths().into_iter().map(|p| join_rel(&k.dir, &p))).collect();

    let mut docs = Vec::new();
    for f in yaml_files {
        let file = rel(&f);
        let role = if file.starts_with("examples/") {
            Role::Example
        } else if patch_files.contains(&file) {
            Role::Patch
        } else {
            Role::Resource
        };
        for (index, yaml) in parse_documents(&f).into_iter().enumerate() {
            let json = yaml_to_json(&yaml);
            docs.push(Doc { file: file.clone(), index, role, yaml, json });
        }
    }
    Tree { docs, kustomizations, symlinks }
}

impl Tree {
    fn kustomization(&self, dir: &str) -> &Kustomization {
        self.kustomizations
            .iter()
            .find(|k| k.dir == dir)
            .unwrap_or_else(|| panic!("no kustomization in manifests/{dir}"))
    }

    /// Every resource file a kustomization directory builds from, following directory
    /// resources into other kustomizations.
    fn resource_files(&self, dir: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in self.kustomization(dir).resources() {
            let target = join_rel(dir, &r);
            if manifests_dir().join(&target).is_dir() {
                out.extend(self.resource_files(&target));
            } else {
                out.insert(target);
            }
        }
        out
    }

    fn docs_of(&self, dir: &str) -> Vec<&Doc> {
        let files = self.resource_files(dir);
        self.docs.iter().filter(|d| files.contains(&d.file) && d.role == Role::Resource).collect()
    }

    /// Documents that an overlay adds itself (its own directory, not the base's).
    fn own_docs(&self, dir: &str) -> Vec<&Doc> {
        let prefix = format!("{dir}/");
        self.docs_of(dir).into_iter().filter(|d| d.file.starts_with(&prefix)).collect()
    }

    fn base_one<T: DeserializeOwned>(&self, kind: &str) -> T {
        let docs: Vec<_> = self.docs_of("base").into_iter().filter(|d| d.kind() == kind).collect();
        assert_eq!(docs.len(), 1, "the base must hold exactly one {kind}, found {}", docs.len());
        docs[0].typed()
    }

    fn base_named<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let docs: Vec<_> = self.docs_of("base").into_iter().filter(|d| d.kind() == kind && d.name() == name).collect();
        assert_eq!(docs.len(), 1, "the base must hold exactly one {kind} {name}, found {}", docs.len());
        docs[0].typed()
    }
}

// ---------------------------------------------------------------------------------------
// Round trip: the typed value must keep every field of the original
// ---------------------------------------------------------------------------------------

/// Paths present in `original` that the typed round trip lost or changed.
fn lost_fields(original: &Json, round: &Json, path: &str, out: &mut Vec<String>) {
    match (original, round) {
        (Json::Object(o), Json::Object(r)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match r.get(k) {
                    Some(rv) => lost_fields(v, rv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(format!("{p} (dropped: unknown field or wrong place)")),
                }
            }
        }
        (Json::Array(o), Json::Array(r)) => {
            if o.len() != r.len() {
                out.push(format!("{path}: {} items became {}", o.len(), r.len()));
            } else {
                for (i, (ov, rv)) in o.iter().zip(r).enumerate() {
                    lost_fields(ov, rv, &format!("{path}[{i}]"), out);
                }
            }
        }
        (o, r) if o == r => {}
        // `minimum: 0` read into an f64 field comes back as 0.0: the same number.
        (Json::Number(o), Json::Number(r)) if o.as_f64() == r.as_f64() => {}
        (o, r) => out.push(format!("{path}: {o} became {r}")),
    }
}

fn assert_round_trip<T: DeserializeOwned + Serialize>(doc: &Doc) {
    let typed: T = doc.typed();
    let round = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    lost_fields(&doc.json, &round, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{} ({}): fields lost in the typed round trip:\n  {}",
        doc.at(),
        doc.kind(),
        lost.join("\n  ")
    );
}

fn check_typed(doc: &Doc) {
    match (doc.api_version(), doc.kind()) {
        ("apps/v1", "Deployment") => assert_round_trip::<Deployment>(doc),
        ("v1", "Service") => assert_round_trip::<Service>(doc),
        ("v1", "ServiceAccount") => assert_round_trip::<ServiceAccount>(doc),
        ("v1", "Namespace") => assert_round_trip::<Namespace>(doc),
        ("v1", "ConfigMap") => assert_round_trip::<ConfigMap>(doc),
        ("v1", "Secret") => assert_round_trip::<Secret>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => assert_round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => assert_round_trip::<ClusterRoleBinding>(doc),
        ("policy/v1", "PodDisruptionBudget") => assert_round_trip::<PodDisruptionBudget>(doc),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            assert_round_trip::<MutatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            assert_round_trip::<ValidatingWebhookConfiguration>(doc)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => assert_round_trip::<CustomResourceDefinition>(doc),
        ("cert-manager.io/v1", "Issuer" | "ClusterIssuer") => check_issuer(doc),
        ("cert-manager.io/v1", "Certificate") => check_certificate(doc),
        ("hallmark.dev/v1alpha1", "OwnershipPolicy") => check_policy_shape(doc),
        // Prometheus Operator objects of manifests/monitoring/ (no k8s-openapi type; their
        // content is checked in tests/monitoring.rs).
        ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule") => check_monitoring(doc),
        (api_version, kind) => {
            panic!("{}: unexpected {api_version} {kind}; teach tests/manifests.rs about it", doc.at())
        }
    }
}

fn check_monitoring(doc: &Doc) {
    assert!(!doc.name().is_empty(), "{}: {} without a name", doc.at(), doc.kind());
    assert_eq!(doc.namespace(), Some(NAMESPACE), "{}: {} lives with hallmark", doc.at(), doc.kind());
    assert!(doc.json["spec"].as_object().is_some_and(|s| !s.is_empty()), "{}: {} without a spec", doc.at(), doc.kind());
}

fn check_issuer(doc: &Doc) {
    assert!(!doc.name().is_empty(), "{}: Issuer without a name", doc.at());
    let spec = doc.json["spec"].as_object().unwrap_or_else(|| panic!("{}: Issuer without spec", doc.at()));
    let kinds: Vec<_> =
        spec.keys().filter(|k| ["selfSigned", "ca", "acme", "vault", "venafi"].contains(&k.as_str())).collect();
    assert_eq!(kinds.len(), 1, "{}: an Issuer has exactly one issuer type, found {kinds:?}", doc.at());
    if let Some(ca) = spec.get("ca") {
        assert!(ca["secretName"].is_string(), "{}: a CA Issuer names its secretName", doc.at());
    }
}

fn check_certificate(doc: &Doc) {
    let spec = &doc.json["spec"];
    assert!(spec["secretName"].is_string(), "{}: Certificate without secretName", doc.at());
    assert!(spec["issuerRef"]["name"].is_string(), "{}: Certificate without issuerRef.name", doc.at());
    let known: BTreeSet<&str> = [
        "secretName",
        "secretTemplate",
        "commonName",
        "dnsNames",
        "ipAddresses",
        "uris",
        "emailAddresses",
        "duration",
        "renewBefore",
        "isCA",
        "usages",
        "privateKey",
        "issuerRef",
        "subject",
        "revisionHistoryLimit",
        "additionalOutputFormats",
        "keystores",
        "literalSubject",
    ]
    .into();
    for k in spec.as_object().unwrap().keys() {
        assert!(known.contains(k.as_str()), "{}: unknown Certificate field spec.{k}", doc.at());
    }
    for k in spec["privateKey"].as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default() {
        assert!(
            ["algorithm", "size", "encoding", "rotationPolicy"].contains(&k.as_str()),
            "{}: unknown spec.privateKey.{k}",
            doc.at()
        );
    }
}

fn check_policy_shape(doc: &Doc) {
    assert!(doc.namespace().is_none(), "{}: OwnershipPolicy is cluster-scoped: no namespace", doc.at());
    let spec = doc.json["spec"].as_object().unwrap_or_else(|| panic!("{}: no spec", doc.at()));
    for k in spec.keys() {
        assert!(
            ["owner", "rules", "managedFields", "deleteProtection", "breakGlass"].contains(&k.as_str()),
            "{}: spec.{k} is not in the OwnershipPolicy of docs/reference.md",
            doc.at()
        );
    }
    assert!(doc.json["spec"]["owner"]["name"].is_string(), "{}: spec.owner.name is required", doc.at());
}

// ---------------------------------------------------------------------------------------
// Small helpers on typed objects
// ---------------------------------------------------------------------------------------

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("pod template has a spec")
}

fn container(d: &Deployment) -> &Container {
    let containers = &pod_spec(d).containers;
    assert_eq!(containers.len(), 1, "one container expected");
    &containers[0]
}

/// Port number a probe/Service port reference resolves to in the container.
fn resolve_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// The `serve` flags as `--flag -> Some(value) / None`, checking that only known flags are used.
fn serve_flags(c: &Container) -> BTreeMap<String, Vec<Option<String>>> {
    let args = c.args.as_ref().expect("container args");
    let mut it = args.iter();
    let first = it.next().map(String::as_str);
    let via_command = c.command.as_ref().map(|cmd| cmd.last().map(String::as_str) == Some("serve")).unwrap_or(false);
    assert!(first == Some("serve") || via_command, "the container must run `hallmark serve`, args: {args:?}");
    let mut flags: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for a in it {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let takes_value = SERVE_FLAGS
            .iter()
            .find(|(f, _)| *f == flag)
            .unwrap_or_else(|| panic!("`{a}`: `hallmark serve` has no flag {flag}"))
            .1;
        assert_eq!(
            takes_value,
            value.is_some(),
            "`{a}`: {flag} {} (use the --flag=value form)",
            if takes_value { "takes a value" } else { "takes no value" }
        );
        flags.entry(flag.to_owned()).or_default().push(value);
    }
    for (flag, values) in &flags {
        assert!(flag == "--policy" || values.len() == 1, "{flag} given {} times", values.len());
    }
    flags
}

fn flag<'a>(flags: &'a BTreeMap<String, Vec<Option<String>>>, name: &str) -> &'a str {
    flags.get(name).and_then(|v| v[0].as_deref()).unwrap_or_else(|| panic!("the container must pass {name}"))
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "only matchLabels selectors are used here");
    let ml = selector.match_labels.as_ref().expect("matchLabels");
    !ml.is_empty() && ml.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn norm(expr: &str) -> String {
    expr.chars().filter(|c| !c.is_whitespace()).collect()
}

fn webhooks() -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    (tree().base_one("MutatingWebhookConfiguration"), tree().base_named("ValidatingWebhookConfiguration", NAME))
}

/// (group, resource, operation) triples a rule list covers, checking versions and scope.
fn rule_triples(what: &str, rules: &[RuleWithOperations]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        let groups = r.api_groups.as_ref().unwrap_or_else(|| panic!("{what}: rule without apiGroups"));
        let versions = r.api_versions.as_ref().unwrap_or_else(|| panic!("{what}: rule without apiVersions"));
        let resources = r.resources.as_ref().unwrap_or_else(|| panic!("{what}: rule without resources"));
        let ops = r.operations.as_ref().unwrap_or_else(|| panic!("{what}: rule without operations"));
        for g in groups {
            assert_ne!(g, "*", "{what}: no wildcard groups");
            for res in resources {
                assert!(!res.contains('*'), "{what}: no wildcard resources ({res})");
                let base = res.split('/').next().unwrap();
                let stable = DIRECT_RESOURCES
                    .iter()
                    .find(|(gg, _, rr)| gg == g && *rr == base)
                    .unwrap_or_else(|| panic!("{what}: {g}/{res} is not a directly applied resource"))
                    .1;
                assert_eq!(versions, &vec![stable.to_owned()], "{what}: {g}/{res} should match version {stable}");
                let want_scope = if CLUSTER_SCOPED.contains(&base) { "Cluster" } else { "Namespaced" };
                assert_eq!(r.scope.as_deref(), Some(want_scope), "{what}: scope of {g}/{res}");
                for op in ops {
                    out.insert((g.clone(), res.clone(), op.clone()));
                }
            }
        }
    }
    out
}

fn expected_triples(ops: &[&str]) -> BTreeSet<(String, String, String)> {
    DIRECT_RESOURCES
        .iter()
        .flat_map(|(g, _, r)| ops.iter().map(move |op| (g.to_string(), r.to_string(), op.to_string())))
        .collect()
}

fn check_service_reference(what: &str, cc: &WebhookClientConfig, svc: &Service, path: &str) {
    assert!(cc.url.is_none(), "{what}: must call the Service, not a URL");
    let s = cc.service.as_ref().unwrap_or_else(|| panic!("{what}: clientConfig.service"));
    assert_eq!(s.path.as_deref(), Some(path), "{what}: path");
    assert_eq!(Some(s.name.as_str()), svc.metadata.name.as_deref(), "{what}: service name");
    assert_eq!(Some(s.namespace.as_str()), svc.metadata.namespace.as_deref(), "{what}: service namespace");
    let port = s.port.unwrap_or(443);
    assert!(
        svc.spec.as_ref().unwrap().ports.iter().flatten().any(|p| p.port == port),
        "{what}: port {port} is not a port of Service {}",
        s.name
    );
}

/// The matchCondition of the ownership webhook generated from the policies
/// (`hallmark webhook-config`, checked against the captures in tests/match_conditions.rs).
const GENERATED_CONDITION: &str = "ownership-may-apply";

fn check_match_conditions(what: &str, conds: Option<&Vec<MatchCondition>>) {
    let conds = conds.unwrap_or_else(|| panic!("{what}: matchConditions"));
    let have: BTreeSet<String> = conds.iter().map(|c| norm(&c.expression)).collect();
    for want in REQUIRED_MATCH_CONDITIONS {
        assert!(have.contains(&norm(want)), "{what}: missing matchCondition {want}");
    }
    let names: BTreeSet<&str> = conds.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), conds.len(), "{what}: matchCondition names must be unique");
    for c in conds.iter().filter(|c| c.name != GENERATED_CONDITION) {
        // Every condition may only skip requests (a negation or an inequality); none may
        // widen what is intercepted, and each must be about who writes.
        assert!(c.expression.contains("request.userInfo.username"), "{what}: {} should be about the writer", c.name);
        assert!(
            c.expression.trim_start().starts_with('!') || c.expression.contains("!="),
            "{what}: {} must only exclude",
            c.name
        );
    }
}

fn check_namespace_selector(what: &str, sel: Option<&LabelSelector>, own_namespace: &str) {
    let sel = sel.unwrap_or_else(|| panic!("{what}: namespaceSelector"));
    let exprs = sel.match_expressions.as_ref().unwrap_or_else(|| panic!("{what}: matchExpressions"));
    let excluded: BTreeSet<&str> = exprs
        .iter()
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.iter().flatten().map(String::as_str))
        .collect();
    for ns in ["kube-system", own_namespace] {
        assert!(excluded.contains(ns), "{what}: namespaceSelector must exclude {ns}");
    }
}

fn read(rel_to_repo: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel_to_repo)).unwrap_or_else(|e| panic!("{rel_to_repo}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Tests: files and kustomizations
// ---------------------------------------------------------------------------------------

#[test]
fn every_manifest_parses_into_its_kubernetes_type_without_losing_fields() {
    let t = tree();
    assert!(t.docs.len() >= 12, "expected the base, overlays and examples, found {} documents", t.docs.len());
    for doc in &t.docs {
        check_typed(doc);
    }
}

#[test]
fn every_kustomization_entry_points_at_an_existing_file() {
    let t = tree();
    for k in &t.kustomizations {
        assert_eq!(k.json["apiVersion"], "kustomize.config.k8s.io/v1beta1", "{}", k.file());
        assert_eq!(k.json["kind"], "Kustomization", "{}", k.file());
        for key in ["bases", "patchesStrategicMerge", "patchesJson6902", "commonLabels", "vars"] {
            assert!(k.json.get(key).is_none(), "{}: `{key}` is deprecated in kustomize v5", k.file());
        }
        for r in k.resources() {
            let target = manifests_dir().join(join_rel(&k.dir, &r));
            if target.is_dir() {
                assert!(
                    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                        .iter()
                        .any(|n| target.join(n).is_file()),
                    "{}: resource {r} is a directory without a kustomization",
                    k.file()
                );
            } else {
                assert!(target.is_file(), "{}: resource {r} does not exist", k.file());
            }
        }
        for p in k.patch_paths() {
            assert!(manifests_dir().join(join_rel(&k.dir, &p)).is_file(), "{}: patch {p} does not exist", k.file());
        }
        for patch in k.patches() {
            assert!(
                patch.get("path").is_some() != patch.get("patch").is_some(),
                "{}: a patch has either path or patch",
                k.file()
            );
        }
    }
}

#[test]
fn every_manifest_file_is_used_by_a_kustomization_except_examples() {
    let t = tree();
    let mut used = BTreeSet::new();
    for k in &t.kustomizations {
        for r in k.resources() {
            used.insert(join_rel(&k.dir, &r));
        }
        for p in k.patch_paths() {
            used.insert(join_rel(&k.dir, &p));
        }
    }
    let files: BTreeSet<&str> = t.docs.iter().map(|d| d.file.as_str()).collect();
    for f in files {
        if f.starts_with("examples/") {
            assert!(!used.contains(f), "{f}: examples must not be part of a kustomization");
        } else if f == "crd.yaml" {
            panic!(
                "manifests/crd.yaml became a regular file: it must stay a symlink to \
                 base/crd.yaml (write through it: `hallmark crd > manifests/crd.yaml`)"
            );
        } else {
            assert!(used.contains(f), "{f}: not listed by any kustomization (forgotten resource?)");
        }
    }
    // The only symlink is the documented alias of the CRD.
    assert_eq!(
        t.symlinks,
        vec!["crd.yaml".to_owned()],
        "manifests/crd.yaml must stay a symlink to base/crd.yaml (write through it: \
         `hallmark crd > manifests/crd.yaml`), and there must be no other symlinks"
    );
}

#[test]
fn top_level_manifests_directory_applies_the_base() {
    let t = tree();
    assert_eq!(t.kustomization("").resources(), vec!["base".to_owned()]);
    // Both overlays build on the base and not on manifests/ (kustomize rejects an overlay
    // inside the directory of its base as a cycle).
    for overlay in ["cert-manager", "hallmark-certs"] {
        assert!(t.kustomization(overlay).resources().contains(&"../base".to_owned()), "{overlay} must use ../base");
    }
}

#[test]
fn crd_at_manifests_crd_yaml_is_the_base_crd_for_ownershippolicies() {
    // `hallmark crd > manifests/crd.yaml` must update the CRD that the base applies.
    let alias = std::fs::read_to_string(manifests_dir().join("crd.yaml")).expect("manifests/crd.yaml");
    let base = std::fs::read_to_string(manifests_dir().join("base/crd.yaml")).expect("manifests/base/crd.yaml");
    assert_eq!(alias, base, "manifests/crd.yaml must be (a link to) manifests/base/crd.yaml");

    let crd: CustomResourceDefinition = tree().base_one("CustomResourceDefinition");
    assert_eq!(crd.metadata.name.as_deref(), Some("ownershippolicies.hallmark.dev"));
    assert_eq!(crd.spec.group, "hallmark.dev");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, "OwnershipPolicy");
    assert_eq!(crd.spec.names.plural, "ownershippolicies");
    let v = crd.spec.versions.iter().find(|v| v.name == "v1alpha1").expect("version v1alpha1");
    assert!(v.served && v.storage, "v1alpha1 is served and stored");
    assert!(
        v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
        "status subresource (hallmark reports policy errors there)"
    );
    assert!(v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).is_some(), "a structural schema is required");
}

/// `kubectl get ownershippolicies` shows READY from the `Ready` condition hallmark writes
/// (tests/crd_watch.rs checks the condition), and the condition's message with -o wide.
#[test]
fn the_crd_prints_a_ready_column_from_the_ready_condition() {
    let crd: CustomResourceDefinition = tree().base_one("CustomResourceDefinition");
    let version = &crd.spec.versions[0];
    let columns = version.additional_printer_columns.as_ref().expect("additionalPrinterColumns");
    let ready = columns.iter().find(|c| c.name == "Ready").expect("a Ready column");
    assert_eq!(ready.json_path, r#".status.conditions[?(@.type=="Ready")].status"#);
    assert_eq!(ready.priority, None, "shown by default");
    let message = columns.iter().find(|c| c.name == "Message").expect("a Message column");
    assert_eq!(message.json_path, r#".status.conditions[?(@.type=="Ready")].message"#);
    assert_eq!(message.priority, Some(1), "shown with -o wide");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status is a subresource");
}

#[test]
fn examples_are_ownershippolicies_the_crd_accepts_and_the_policy_readers_binding() {
    let examples: Vec<_> = tree().docs.iter().filter(|d| d.role == Role::Example).collect();
    assert!(
        examples.iter().any(|d| d.kind() == "OwnershipPolicy"),
        "manifests/examples/ should hold an OwnershipPolicy"
    );
    for d in examples {
        match (d.api_version(), d.kind()) {
            ("hallmark.dev/v1alpha1", "OwnershipPolicy") => {}
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                let b: ClusterRoleBinding = d.typed();
                assert_eq!(b.role_ref.name, "hallmark-view", "{}: binds the read-only role", d.at());
                let subjects = b.subjects.unwrap_or_default();
                assert_eq!(subjects.len(), 1);
                assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("Group", "system:authenticated"));
            }
            other => panic!("{}: unexpected example {other:?}", d.at()),
        }
    }
}

/// The RBAC table of docs/install.md says exactly what the base's ClusterRoles grant:
/// one row per (role, API group, resources, verbs), backticked values.
#[test]
fn the_rbac_table_in_the_docs_is_what_the_manifests_grant() {
    let doc = read("docs/install.md");
    let start = doc.find("## Who may read and write policies (RBAC)").expect("the RBAC section of docs/install.md");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`').skip(1).step_by(2).map(|s| if s == "\"\"" { String::new() } else { s.to_owned() }).collect()
    };
    let mut in_docs = BTreeSet::new();
    let mut role = String::new();
    for line in doc[start..].lines().skip_while(|l| !l.starts_with("| ClusterRole")).skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "{line}");
        if let Some(r) = ticked(cells[0]).first() {
            role = r.clone();
        }
        let groups = ticked(cells[2]);
        let resources: Vec<String> = ticked(cells[3]).into_iter().filter(|r| !r.starts_with("resourceNames")).collect();
        for g in &groups {
            for r in &resources {
                for v in ticked(cells[4]) {
                    in_docs.insert((role.clone(), g.clone(), r.clone(), v));
                }
            }
        }
    }
    let mut in_manifests = BTreeSet::new();
    for d in tree().docs_of("base").into_iter().filter(|d| d.kind() == "ClusterRole") {
        let role: ClusterRole = d.typed();
        let name = role.metadata.name.clone().unwrap_or_default();
        for rule in role.rules.iter().flatten() {
            for g in rule.api_groups.iter().flatten() {
                for r in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        in_manifests.insert((name.clone(), g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }
    assert!(in_manifests.len() > 10, "{in_manifests:?}");
    assert_eq!(in_docs, in_manifests, "docs/install.md's RBAC table and manifests/base differ");
}

#[test]
fn aggregated_roles_give_view_the_policy_reads_and_edit_the_policy_writes() {
    let view: ClusterRole = tree().base_named("ClusterRole", "hallmark-view");
    let edit: ClusterRole = tree().base_named("ClusterRole", "hallmark-edit");
    let label = |r: &ClusterRole, k: &str| r.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned();
    // kube-apiserver's bootstrap roles `view` and `edit` select these labels
    // (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go).
    assert_eq!(label(&view, "rbac.authorization.k8s.io/aggregate-to-view").as_deref(), Some("true"));
    assert_eq!(label(&edit, "rbac.authorization.k8s.io/aggregate-to-edit").as_deref(), Some("true"));
    assert_eq!(
        label(&view, "rbac.authorization.k8s.io/aggregate-to-edit"),
        None,
        "view is aggregated into edit already"
    );
    let triples = |r: &ClusterRole| -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for rule in r.rules.iter().flatten() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for g in rule.api_groups.iter().flatten() {
                for res in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        out.insert((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        out
    };
    let set = |verbs: &[&str]| -> BTreeSet<(String, String, String)> {
        verbs.iter().map(|v| ("hallmark.dev".to_owned(), "ownershippolicies".to_owned(), v.to_string())).collect()
    };
    assert_eq!(triples(&view), set(&["get", "list", "watch"]));
    assert_eq!(triples(&edit), set(&["create", "update", "patch", "delete", "deletecollection"]));
    // No binding in the base: the roles reach users through view and edit only.
    let binding: ClusterRoleBinding = tree().base_one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, NAME);
}

// ---------------------------------------------------------------------------------------
// Tests: webhook configurations
// ---------------------------------------------------------------------------------------

#[test]
fn webhooks_call_mutate_and_validate_on_the_hallmark_service_https_port() {
    let (m, v) = webhooks();
    let svc: Service = tree().base_one("Service");
    let dep: Deployment = tree().base_one("Deployment");
    assert_eq!(m.metadata.name.as_deref(), Some(NAME));
    assert_eq!(v.metadata.name.as_deref(), Some(NAME));

    let mw = m.webhooks.as_ref().unwrap();
    let vw = v.webhooks.as_ref().unwrap();
    assert_eq!(mw.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), vec![STAMP_WEBHOOK]);
    assert_eq!(vw.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), vec![OWNERSHIP_WEBHOOK]);
    check_service_reference(STAMP_WEBHOOK, &mw[0].client_config, &svc, "/mutate");
    check_service_reference(OWNERSHIP_WEBHOOK, &vw[0].client_config, &svc, "/validate");

    // The Service port the webhooks call must reach the port hallmark listens on (TLS).
    let c = container(&dep);
    let listen: SocketAddr = flag(&serve_flags(c), "--listen").parse().expect("--listen is host:port");
    for cc in [&mw[0].client_config, &vw[0].client_config] {
        let port = cc.service.as_ref().unwrap().port.unwrap_or(443);
        let sp = svc.spec.as_ref().unwrap().ports.iter().flatten().find(|p| p.port == port).unwrap();
        let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
        assert_eq!(resolve_port(c, &target), i32::from(listen.port()), "Service port {port} must reach --listen");
    }
}

#[test]
fn webhooks_have_no_side_effects_on_dry_run_and_speak_admission_v1() {
    let (m, v) = webhooks();
    for w in m.webhooks.iter().flatten() {
        assert_eq!(w.side_effects, "NoneOnDryRun", "{}: Events only for real writes", w.name);
        assert_eq!(w.admission_review_versions, vec!["v1".to_owned()], "{}", w.name);
        assert_eq!(w.timeout_seconds, Some(5), "{}", w.name);
        assert_eq!(w.match_policy.as_deref(), Some("Equivalent"), "{}", w.name);
        assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"), "{}: stamp the final object", w.name);
        assert!(w.object_selector.is_none(), "{}: no objectSelector (labels are user-controlled)", w.name);
    }
    for w in v.webhooks.iter().flatten() {
        assert_eq!(w.side_effects, "NoneOnDryRun", "{}: Events only for real writes", w.name);
        assert_eq!(w.admission_review_versions, vec!["v1".to_owned()], "{}", w.name);
        assert_eq!(w.timeout_seconds, Some(5), "{}", w.name);
        assert_eq!(w.match_policy.as_deref(), Some("Equivalent"), "{}", w.name);
        assert!(
            w.object_selector.is_none(),
            "{}: no objectSelector: an object label must not opt out of ownership",
            w.name
        );
    }
}

#[test]
fn stamping_fails_open_and_ownership_fails_closed() {
    let (m, v) = webhooks();
    for w in m.webhooks.iter().flatten() {
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"), "{}: a down webhook must never block writes", w.name);
    }
    for w in v.webhooks.iter().flatten() {
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"), "{}: ownership is enforced by default", w.name);
    }
}

#[test]
fn stamping_covers_create_and_update_of_directly_applied_resources_only() {
    let (m, _) = webhooks();
    for w in m.webhooks.iter().flatten() {
        let have = rule_triples(&w.name, w.rules.as_deref().unwrap_or_default());
        assert_eq!(have, expected_triples(&["CREATE", "UPDATE"]), "{}: rules (no DELETE, no subresources)", w.name);
    }
}

#[test]
fn ownership_also_sees_deletes_and_scale_writes() {
    let (_, v) = webhooks();
    for w in v.webhooks.iter().flatten() {
        let have = rule_triples(&w.name, w.rules.as_deref().unwrap_or_default());
        // No CREATE: hallmark never judges one (Engine::validate), so it is not sent.
        let mut want = expected_triples(&["UPDATE", "DELETE"]);
        for s in SCALE_SUBRESOURCES {
            want.insert(("apps".into(), s.to_string(), "UPDATE".into()));
        }
        assert_eq!(have, want, "{}: rules", w.name);
    }
}

#[test]
fn webhooks_skip_system_namespaces_and_constant_system_writers() {
    let (m, v) = webhooks();
    let dep: Deployment = tree().base_one("Deployment");
    let own = dep.metadata.namespace.as_deref().unwrap();
    assert_eq!(own, NAMESPACE);
    for w in m.webhooks.iter().flatten() {
        check_namespace_selector(&w.name, w.namespace_selector.as_ref(), own);
        check_match_conditions(&w.name, w.match_conditions.as_ref());
    }
    for w in v.webhooks.iter().flatten() {
        check_namespace_selector(&w.name, w.namespace_selector.as_ref(), own);
        check_match_conditions(&w.name, w.match_conditions.as_ref());
    }
    // Both webhooks skip exactly the same system writers; the ownership webhook also has
    // its generated condition, and only that.
    let mc = |c: Option<&Vec<MatchCondition>>| {
        c.unwrap()
            .iter()
            .filter(|c| c.name != GENERATED_CONDITION)
            .map(|c| norm(&c.expression))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        mc(m.webhooks.as_ref().unwrap()[0].match_conditions.as_ref()),
        mc(v.webhooks.as_ref().unwrap()[0].match_conditions.as_ref())
    );
    let generated =
        |c: Option<&Vec<MatchCondition>>| c.unwrap().iter().filter(|c| c.name == GENERATED_CONDITION).count();
    assert_eq!(generated(m.webhooks.as_ref().unwrap()[0].match_conditions.as_ref()), 0);
    assert_eq!(generated(v.webhooks.as_ref().unwrap()[0].match_conditions.as_ref()), 1);
}

/// (kind, name) of the base's three webhook configurations.
fn webhook_configurations() -> BTreeSet<(String, String)> {
    [
        ("MutatingWebhookConfiguration", NAME),
        ("ValidatingWebhookConfiguration", NAME),
        ("ValidatingWebhookConfiguration", POLICY_CONFIG),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect()
}

/// The ValidatingWebhookConfiguration of the policy webhook.
const POLICY_CONFIG: &str = "hallmark-policies";
const POLICY_WEBHOOK: &str = "policies.hallmark.dev";

#[test]
fn the_policy_webhook_checks_ownershippolicy_writes_on_the_service_and_fails_open() {
    let p: ValidatingWebhookConfiguration = tree().base_named("ValidatingWebhookConfiguration", POLICY_CONFIG);
    let svc: Service = tree().base_one("Service");
    let w = p.webhooks.as_ref().expect("webhooks");
    assert_eq!(w.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), [POLICY_WEBHOOK]);
    let w = &w[0];
    check_service_reference(POLICY_WEBHOOK, &w.client_config, &svc, "/validate-policy");
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"), "policies can still be applied while hallmark is down");
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.admission_review_versions, ["v1"]);
    assert_eq!(w.timeout_seconds, Some(5));
    let rules = w.rules.as_ref().expect("rules");
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.api_groups.as_deref(), Some(&["hallmark.dev".to_owned()][..]));
    assert_eq!(r.resources.as_deref(), Some(&["ownershippolicies".to_owned()][..]));
    assert_eq!(r.operations.as_deref(), Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..]));
    assert_eq!(r.scope.as_deref(), Some("Cluster"));
    // The CRD serves the version the rule names.
    let crd: CustomResourceDefinition = tree().base_one("CustomResourceDefinition");
    assert_eq!(crd.spec.group, "hallmark.dev");
    assert!(crd.spec.versions.iter().any(|v| Some(&[v.name.clone()][..]) == r.api_versions.as_deref()));
    assert_eq!(
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
        Some(&b"hallmark-ca-bundle-placeholder"[..])
    );
}

#[test]
fn base_ca_bundle_is_the_documented_placeholder() {
    let (m, v) = webhooks();
    let bundles: Vec<_> = m
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.client_config.ca_bundle.clone())
        .chain(v.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.clone()))
        .collect();
    for b in bundles {
        assert_eq!(b.expect("caBundle").0, b"hallmark-ca-bundle-placeholder");
    }
    let readme = read("manifests/README.md");
    assert!(
        readme.contains(CA_BUNDLE_PLACEHOLDER),
        "manifests/README.md must show the placeholder it tells users to replace"
    );
}

// ---------------------------------------------------------------------------------------
// Tests: workload
// ---------------------------------------------------------------------------------------

#[test]
fn deployment_selector_matches_pod_labels_and_service_and_pdb_select_the_pods() {
    let dep: Deployment = tree().base_one("Deployment");
    let svc: Service = tree().base_one("Service");
    let pdb: PodDisruptionBudget = tree().base_one("PodDisruptionBudget");
    let spec = &dep.spec;
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("pod labels");
    assert!(selector_matches(&spec.selector, &labels), "Deployment selector must match its pod template");

    let svc_sel = svc.spec.as_ref().unwrap().selector.clone().expect("Service selector");
    assert!(
        !svc_sel.is_empty() && svc_sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "Service must select the pods"
    );
    assert_eq!(svc.metadata.namespace, dep.metadata.namespace);

    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert!(selector_matches(pdb_spec.selector.as_ref().unwrap(), &labels), "PDB must select the pods");
    assert_eq!(pdb.metadata.namespace, dep.metadata.namespace);
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert!(pdb_spec.max_unavailable.is_none());

    assert_eq!(spec.replicas, Some(2), "two replicas so that one is always serving");
    let spread = pod_spec(&dep).topology_spread_constraints.as_ref().expect("topologySpreadConstraints");
    assert!(
        spread.iter().any(|s| s.topology_key == "kubernetes.io/hostname"
            && s.max_skew == 1
            && s.label_selector.as_ref().is_some_and(|sel| selector_matches(sel, &labels))),
        "replicas must be spread over nodes"
    );
}

#[test]
fn container_args_use_only_the_serve_flags_and_listen_on_all_interfaces() {
    let dep: Deployment = tree().base_one("Deployment");
    let c = container(&dep);
    let flags = serve_flags(c);

    let listen: SocketAddr = flag(&flags, "--listen").parse().unwrap();
    let metrics: SocketAddr = flag(&flags, "--metrics-listen").parse().unwrap();
    assert_eq!(listen.to_string(), "0.0.0.0:8443", "in a cluster hallmark must listen on all interfaces");
    assert_eq!(metrics.to_string(), "0.0.0.0:8080");
    let port = |name: &str| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("container port {name}"))
            .container_port
    };
    assert_eq!(port("https"), i32::from(listen.port()));
    assert_eq!(port("metrics"), i32::from(metrics.port()));

    assert!(flags.contains_key("--watch-policies"), "the manifests install the CRD and RBAC for --watch-policies");
    let drain: i64 = flag(&flags, "--drain-seconds").parse().expect("--drain-seconds is a number");
    if let Some(v) = flags.get("--on-error") {
        assert!(matches!(v[0].as_deref(), Some("allow" | "deny")), "--on-error allow|deny");
    }
    if let Some(v) = flags.get("--log-format") {
        assert!(matches!(v[0].as_deref(), Some("text" | "json")), "--log-format text|json");
    }

    // Files the flags name are on the mounted volumes.
    let pod = pod_spec(&dep);
    let mount_of = |path: &str| {
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{path} is on no volume mount"));
        assert_eq!(m.read_only, Some(true), "{} must be read-only", m.mount_path);
        let vol = pod.volumes.iter().flatten().find(|v| v.name == m.name).expect("mounted volume exists");
        (m.mount_path.clone(), vol.clone())
    };
    for f in ["--tls-cert", "--tls-key"] {
        let (mount, vol) = mount_of(flag(&flags, f));
        let secret = vol.secret.expect("TLS comes from a Secret");
        assert_eq!(secret.secret_name.as_deref(), Some(TLS_SECRET));
        assert_eq!(mount, "/tls");
        assert_eq!(secret.default_mode, Some(0o440), "the key must not be world-readable");
    }
    let config_path = flag(&flags, "--config");
    let (mount, vol) = mount_of(config_path);
    let cm_ref = vol.config_map.expect("config comes from a ConfigMap");
    assert_eq!(cm_ref.name, CONFIG_MAP);
    let cm: ConfigMap = tree().base_one("ConfigMap");
    assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP));
    let file = config_path.strip_prefix(&format!("{mount}/")).unwrap();
    let key = match &cm_ref.items {
        Some(items) => items.iter().find(|i| i.path == file).expect("config file is projected").key.clone(),
        None => file.to_owned(),
    };
    assert!(cm.data.as_ref().is_some_and(|d| d.contains_key(&key)), "ConfigMap {CONFIG_MAP} has no key {key}");

    // Shutdown: the drain plus the longest request in flight fits in the grace period.
    let (m, v) = webhooks();
    let timeout = m
        .webhooks
        .iter()
        .flatten()
        .filter_map(|w| w.timeout_seconds)
        .chain(v.webhooks.iter().flatten().filter_map(|w| w.timeout_seconds))
        .max()
        .unwrap();
    let grace = pod.termination_grace_period_seconds.expect("terminationGracePeriodSeconds");
    assert!(grace > drain + i64::from(timeout), "grace {grace}s must exceed drain {drain}s + in-flight {timeout}s");

    // HALLMARK_* variables are the flags' environment forms: only known flags
    // (HALLMARK_LOG, the log level, is the one variable that is not a flag).
    for e in c.env.iter().flatten().filter(|e| e.name.starts_with("HALLMARK_") && e.name != "HALLMARK_LOG") {
        let as_flag = format!("--{}", e.name.trim_start_matches("HALLMARK_").to_lowercase().replace('_', "-"));
        assert!(SERVE_FLAGS.iter().any(|(f, _)| *f == as_flag), "{} is not the env form of a serve flag", e.name);
    }
}

#[test]
fn pod_runs_as_non_root_with_a_read_only_root_and_no_privileges() {
    let dep: Deployment = tree().base_one("Deployment");
    let c = container(&dep);
    let sc = c.security_context.as_ref().expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(NONROOT_UID));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert!(caps.add.as_ref().is_none_or(|a| a.is_empty()), "no capabilities added");
    assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));

    // Pod-level settings must not contradict the container's.
    let pod = pod_spec(&dep);
    if let Some(psc) = &pod.security_context {
        assert_ne!(psc.run_as_non_root, Some(false));
        assert!(psc.run_as_user.is_none_or(|u| u == NONROOT_UID));
        assert!(psc.seccomp_profile.as_ref().is_none_or(|s| s.type_ == "RuntimeDefault"));
    }
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
}

#[test]
fn probes_check_readyz_and_healthz_over_https_on_the_webhook_port() {
    let dep: Deployment = tree().base_one("Deployment");
    let c = container(&dep);
    let listen: SocketAddr = flag(&serve_flags(c), "--listen").parse().unwrap();
    for (probe, path) in [(&c.readiness_probe, "/readyz"), (&c.liveness_probe, "/healthz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path} probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{path}: the main port is TLS only");
        assert_eq!(resolve_port(c, &get.port), i32::from(listen.port()), "{path}: port");
    }
}

#[test]
fn container_requests_and_limits_cpu_and_memory() {
    let dep: Deployment = tree().base_one("Deployment");
    let r = container(&dep).resources.as_ref().expect("resources");
    let get = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()).unwrap_or_default()
    };
    assert_eq!(get(&r.requests, "cpu"), "50m");
    assert_eq!(get(&r.requests, "memory"), "64Mi");
    assert_eq!(get(&r.limits, "cpu"), "500m");
    assert_eq!(get(&r.limits, "memory"), "128Mi");
}

#[test]
fn pods_carry_prometheus_scrape_annotations_for_the_metrics_port() {
    let dep: Deployment = tree().base_one("Deployment");
    let c = container(&dep);
    let metrics: SocketAddr = flag(&serve_flags(c), "--metrics-listen").parse().unwrap();
    let ann = dep.spec.template.metadata.as_ref().and_then(|m| m.annotations.clone()).expect("pod annotations");
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port"), Some(&metrics.port().to_string()));
    assert_eq!(ann.get("prometheus.io/path").map(String::as_str), Some("/metrics"));
    let svc: Service = tree().base_one("Service");
    assert!(
        svc.spec
            .unwrap()
            .ports
            .iter()
            .flatten()
            .any(|p| p.target_port.as_ref().map(|t| resolve_port(c, t)) == Some(i32::from(metrics.port()))),
        "the Service exposes the metrics port"
    );
}

#[test]
fn config_map_holds_a_config_with_only_documented_keys() {
    let cm: ConfigMap = tree().base_one("ConfigMap");
    let text = cm.data.as_ref().and_then(|d| d.get("config.yaml")).expect("config.yaml");
    let cfg = yaml_to_json(&serde_yaml::from_str::<Yaml>(text).expect("config.yaml is YAML"));
    let obj = |v: &Json, at: &str, keys: &[&str]| {
        let o = v.as_object().unwrap_or_else(|| panic!("{at} must be a mapping"));
        for k in o.keys() {
            assert!(keys.contains(&k.as_str()), "config.yaml: unknown key {at}.{k} (unknown keys are errors)");
        }
    };
    let strings = |v: &Json, at: &str| {
        if !v.is_null() {
            assert!(v.as_array().is_some_and(|a| a.iter().all(Json::is_string)), "{at} must be a list of strings");
        }
    };
    obj(&cfg, "", &["annotationPrefix", "history", "provenance", "reconcilers", "systemWriters"]);
    // hallmark's own parser takes it, and the shipped system writers are the default set.
    let settings = hallmark::config::Settings::from_yaml(text, "configmap config.yaml").expect("hallmark accepts it");
    assert_eq!(settings.system_writers.users.as_written(), hallmark::config::DEFAULT_SYSTEM_WRITERS);
    assert!(settings.system_writers.groups.is_empty());
    if let Some(p) = cfg["annotationPrefix"].as_str() {
        assert!(p.ends_with('/'), "annotationPrefix ends with /");
    }
    if !cfg["history"].is_null() {
        assert!(cfg["history"].as_u64().is_some(), "history is a non-negative number");
    }
    if !cfg["provenance"].is_null() {
        obj(&cfg["provenance"], "provenance", &["declarers", "extra"]);
        if !cfg["provenance"]["declarers"].is_null() {
            obj(&cfg["provenance"]["declarers"], "provenance.declarers", &["users", "groups"]);
            strings(&cfg["provenance"]["declarers"]["users"], "provenance.declarers.users");
            strings(&cfg["provenance"]["declarers"]["groups"], "provenance.declarers.groups");
        }
        if let Some(extra) = cfg["provenance"]["extra"].as_object() {
            for (k, v) in extra {
                let field = v.as_str().unwrap_or_default();
                assert!(
                    ["committer", "pipeline", "branch", "commit", "repository"].contains(&field),
                    "provenance.extra.{k}: {v} is not a provenance field"
                );
            }
        }
    }
    if !cfg["reconcilers"].is_null() {
        obj(&cfg["reconcilers"], "reconcilers", &["users", "groups"]);
        strings(&cfg["reconcilers"]["users"], "reconcilers.users");
        strings(&cfg["reconcilers"]["groups"], "reconcilers.groups");
    }
}

#[test]
fn cluster_role_grants_only_policy_reads_status_writes_events_and_scale_parent_reads() {
    let role: ClusterRole = tree().base_named("ClusterRole", NAME);
    assert!(role.aggregation_rule.is_none());
    let mut have = BTreeSet::new();
    for r in role.rules.iter().flatten() {
        assert!(r.non_resource_urls.is_none(), "resource rules only");
        let own_config = r.resources.as_deref() == Some(&["validatingwebhookconfigurations".to_owned()][..]);
        if own_config {
            // Only hallmark's own configuration, by name, and only get/patch.
            assert_eq!(r.resource_names.as_deref(), Some(&[NAME.to_owned()][..]), "resourceNames of {r:?}");
            let v: ValidatingWebhookConfiguration = tree().base_named("ValidatingWebhookConfiguration", NAME);
            assert_eq!(v.metadata.name.as_deref(), Some(NAME));
        } else {
            assert!(r.resource_names.is_none(), "plain resource rules only");
        }
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    assert!(g != "*" && res != "*" && verb != "*", "no wildcards in RBAC");
                    have.insert((g.clone(), res.clone(), verb.clone()));
                }
            }
        }
    }
    let want: BTreeSet<(String, String, String)> = [
        ("hallmark.dev", "ownershippolicies", "get"),
        ("hallmark.dev", "ownershippolicies", "list"),
        ("hallmark.dev", "ownershippolicies", "watch"),
        ("hallmark.dev", "ownershippolicies/status", "update"),
        ("hallmark.dev", "ownershippolicies/status", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        // The parents of scale writes (hallmark::review::SCALE_PARENTS), get only.
        ("apps", "deployments", "get"),
        ("apps", "statefulsets", "get"),
        ("apps", "replicasets", "get"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "get"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"),
        // The schemas of the custom resources policies name (policy::kinds::check_with_crds).
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    // The GitOps sources a reconciler's write is stamped from, list and watch only.
    .chain(
        hallmark::gitops::SourceKind::ALL
            .iter()
            .flat_map(|k| ["list", "watch"].map(|verb| (k.group().to_owned(), k.plural().to_owned(), verb.to_owned()))),
    )
    .collect();
    assert_eq!(have, want, "ClusterRole rules");

    let binding: ClusterRoleBinding = tree().base_one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name.as_str()), role.metadata.name.as_deref());
    let sa: ServiceAccount = tree().base_one("ServiceAccount");
    let subjects = binding.subjects.as_ref().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(subjects[0].name.as_str()), sa.metadata.name.as_deref());
    assert_eq!(subjects[0].namespace.as_deref(), sa.metadata.namespace.as_deref());
    let ns: Namespace = tree().base_one("Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
    for d in tree().docs_of("base") {
        if ![
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
        .contains(&d.kind())
        {
            assert_eq!(d.namespace(), Some(NAMESPACE), "{}: namespaced objects live in {NAMESPACE}", d.at());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests: overlays
// ---------------------------------------------------------------------------------------

#[test]
fn cert_manager_overlay_injects_the_ca_into_both_webhook_configurations() {
    let t = tree();
    let k = t.kustomization("cert-manager");
    let mut annotated = BTreeMap::new();
    for p in k.patch_paths() {
        let file = join_rel(&k.dir, &p);
        for d in t.docs.iter().filter(|d| d.file == file) {
            if let Some(v) = d.json["metadata"]["annotations"][INJECT_CA_FROM].as_str() {
                annotated.insert((d.kind().to_owned(), d.name().to_owned()), v.to_owned());
            }
        }
    }
    for (kind, name) in webhook_configurations() {
        let v = annotated
            .get(&(kind.clone(), name.clone()))
            .unwrap_or_else(|| panic!("cert-manager overlay must annotate {kind} {name} with {INJECT_CA_FROM}"));
        assert_eq!(v, &format!("{NAMESPACE}/{TLS_SECRET}"));
    }

    // The placeholder caBundle is removed, so that re-applying never fights cainjector.
    let mut removed = BTreeSet::new();
    for (target, body) in k.inline_patches() {
        for op in body.as_array().into_iter().flatten() {
            if op["op"] == "remove" && op["path"].as_str().is_some_and(|p| p.ends_with("/clientConfig/caBundle")) {
                removed.insert((
                    target["kind"].as_str().unwrap_or_default().to_owned(),
                    target["name"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    assert_eq!(removed, webhook_configurations());

    // The annotation names a Certificate of the overlay that serves the webhook Service.
    let docs = t.own_docs("cert-manager");
    let cert = |name: &str| {
        docs.iter()
            .find(|d| d.kind() == "Certificate" && d.name() == name && d.namespace() == Some(NAMESPACE))
            .unwrap_or_else(|| panic!("no Certificate {NAMESPACE}/{name} in the overlay"))
    };
    let serving = &cert(TLS_SECRET).json["spec"];
    assert_eq!(serving["secretName"], TLS_SECRET, "the Deployment mounts Secret {TLS_SECRET}");
    let dns: BTreeSet<&str> = serving["dnsNames"].as_array().unwrap().iter().filter_map(Json::as_str).collect();
    for name in [format!("{NAME}.{NAMESPACE}.svc"), format!("{NAME}.{NAMESPACE}.svc.cluster.local")] {
        assert!(dns.contains(name.as_str()), "serving certificate must name {name}");
    }
    assert_ne!(serving["isCA"], true);

    // Issuer chain: serving <- CA Issuer <- CA Certificate <- self-signed Issuer.
    let issuer = |name: &str| {
        docs.iter()
            .find(|d| d.kind() == "Issuer" && d.name() == name)
            .unwrap_or_else(|| panic!("no Issuer {name} in the overlay"))
    };
    let ca_issuer = issuer(serving["issuerRef"]["name"].as_str().unwrap());
    let ca_secret = ca_issuer.json["spec"]["ca"]["secretName"].as_str().expect("serving cert is issued by a CA Issuer");
    let ca_cert = docs
        .iter()
        .find(|d| d.kind() == "Certificate" && d.json["spec"]["secretName"] == ca_secret)
        .expect("a Certificate writes the CA secret");
    assert_eq!(ca_cert.json["spec"]["isCA"], true);
    let root = issuer(ca_cert.json["spec"]["issuerRef"]["name"].as_str().unwrap());
    assert!(root.json["spec"]["selfSigned"].is_object(), "the CA is self-signed");
}

#[test]
fn hallmark_certs_overlay_makes_the_secret_and_both_ca_bundles_from_one_ca_file() {
    let t = tree();
    let k = t.kustomization("hallmark-certs");
    let gens = k.json["secretGenerator"].as_array().expect("secretGenerator");
    assert_eq!(gens.len(), 1);
    let g = &gens[0];
    assert_eq!(g["name"], TLS_SECRET);
    assert_eq!(g["namespace"], NAMESPACE);
    assert_eq!(g["type"], "kubernetes.io/tls");
    assert_eq!(g["options"]["disableNameSuffixHash"], true, "the Deployment mounts the plain name");
    let files: BTreeSet<&str> = g["files"].as_array().unwrap().iter().filter_map(Json::as_str).collect();
    assert_eq!(files, ["ca.crt=certs/ca.crt", "tls.crt=certs/tls.crt", "tls.key=certs/tls.key"].into());

    let reps = k.json["replacements"].as_array().expect("replacements");
    let mut filled = BTreeSet::new();
    for r in reps {
        assert_eq!(r["source"]["kind"], "Secret");
        assert_eq!(r["source"]["name"], TLS_SECRET);
        assert_eq!(r["source"]["fieldPath"], "data.[ca.crt]");
        for target in r["targets"].as_array().unwrap() {
            let paths: Vec<&str> = target["fieldPaths"].as_array().unwrap().iter().filter_map(Json::as_str).collect();
            assert_eq!(paths, vec!["webhooks.*.clientConfig.caBundle"]);
            filled.insert((
                target["select"]["kind"].as_str().unwrap().to_owned(),
                target["select"]["name"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(filled, webhook_configurations(), "every webhook configuration gets the CA");

    // `hallmark certs` writes the private key there: it must never be committed.
    let ignore =
        std::fs::read_to_string(manifests_dir().join("hallmark-certs/.gitignore")).expect("hallmark-certs/.gitignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "certs/" || l.trim() == "/certs/"),
        "hallmark-certs/.gitignore must ignore certs/"
    );
}

// ---------------------------------------------------------------------------------------
// Tests: image and docs
// ---------------------------------------------------------------------------------------

#[test]
fn image_runs_hallmark_serve_as_the_nonroot_user_the_pod_expects() {
    let df = read("Dockerfile");
    let lines: Vec<&str> = df.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let froms: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(froms[0].starts_with("FROM rust:1-bookworm"), "build stage: {}", froms[0]);
    assert_eq!(froms.last().copied(), Some("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(lines.iter().any(|l| l.contains("cargo build --release --locked --bin hallmark")));
    assert!(lines.contains(&r#"ENTRYPOINT ["/hallmark"]"#));
    assert!(lines.contains(&r#"CMD ["serve"]"#));
    assert!(lines.contains(&"EXPOSE 8443 8080"));
    assert!(lines.contains(&format!("USER {NONROOT_UID}:{NONROOT_UID}").as_str()));

    let ignore = read(".dockerignore");
    for entry in ["target", "fuzz/target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim().trim_start_matches('/') == entry),
            ".dockerignore must exclude {entry}"
        );
    }

    let dep: Deployment = tree().base_one("Deployment");
    let c = container(&dep);
    assert!(c.command.is_none(), "keep the image ENTRYPOINT /hallmark");
    assert_eq!(c.image.as_deref(), Some(NAME));
    let images = tree().kustomization("base").json["images"].as_array().cloned().unwrap_or_default();
    assert!(images.iter().any(|i| i["name"] == NAME), "the base kustomization sets the image tag");
}

#[test]
fn docs_give_install_and_recovery_commands_that_match_the_manifests() {
    let readme = read("manifests/README.md");
    for needle in [
        "kubectl delete validatingwebhookconfiguration hallmark",
        "kubectl delete mutatingwebhookconfiguration hallmark",
        "manifests/hallmark-certs",
        "manifests/cert-manager",
        "--dns hallmark.hallmark-system.svc",
        "failurePolicy",
    ] {
        assert!(readme.contains(needle), "manifests/README.md should mention `{needle}`");
    }
    let certs = read("certs/README.md");
    for needle in [
        "hallmark certs --out",
        "--dns hallmark.hallmark-system.svc --dns hallmark.hallmark-system.svc.cluster.local",
        "kubectl -n hallmark-system create secret tls hallmark-tls",
        "base64 -w0",
        "cert-manager",
        "..data",
    ] {
        assert!(certs.contains(needle), "certs/README.md should mention `{needle}`");
    }
}

// ---------------------------------------------------------------------------------------
// Rendering with kustomize (when available)
// ---------------------------------------------------------------------------------------

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn kustomize_build(dir: &Path) -> Option<Vec<Yaml>> {
    let mut cmd = if on_path("kustomize") {
        let mut c = Command::new("kustomize");
        c.arg("build");
        c
    } else if on_path("kubectl") {
        let mut c = Command::new("kubectl");
        c.arg("kustomize");
        c
    } else {
        return None;
    };
    let out = cmd.arg(dir).output().expect("run kustomize");
    assert!(
        out.status.success(),
        "kustomize build {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML"))
            .filter(|v: &Yaml| !v.is_null())
            .collect(),
    )
}

/// kustomize wraps long base64 values over lines; the API server's decoder ignores the
/// newlines, k8s-openapi's does not.
fn unwrap_base64(v: &mut Json) {
    let is_secret = v_kind(v) == "Secret";
    if let Some(data) = v.get_mut("data").filter(|_| is_secret) {
        for val in data.as_object_mut().unwrap().values_mut() {
            *val = Json::String(val.as_str().unwrap().split_whitespace().collect());
        }
    }
    if let Some(ws) = v.get_mut("webhooks").and_then(Json::as_array_mut) {
        for w in ws {
            if let Some(b) = w["clientConfig"].get_mut("caBundle") {
                *b = Json::String(b.as_str().unwrap().split_whitespace().collect());
            }
        }
    }
}

fn v_kind(v: &Json) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn rendered_docs(dir: &Path, label: &str) -> Option<Vec<Doc>> {
    let docs = kustomize_build(dir)?;
    Some(
        docs.into_iter()
            .enumerate()
            .map(|(index, y)| {
                let mut json = yaml_to_json(&y);
                unwrap_base64(&mut json);
                let yaml: Yaml = serde_yaml::to_value(&json).unwrap();
                Doc { file: format!("<kustomize build {label}>"), index, role: Role::Resource, yaml, json }
            })
            .collect(),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ft.is_file() {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("rendered output lacks {kind} {name}"))
}

#[test]
fn kustomize_renders_the_base_and_both_overlays_into_valid_objects() {
    let Some(base) = rendered_docs(&manifests_dir(), "manifests") else {
        eprintln!("SKIPPED: neither kustomize nor kubectl on PATH; the static checks above still ran");
        return;
    };
    for d in &base {
        check_typed(d);
    }
    let base_kinds: BTreeSet<&str> = base.iter().map(Doc::kind).collect();
    assert!(base_kinds.contains("Deployment") && base_kinds.contains("ValidatingWebhookConfiguration"));
    let dep: Deployment = find(&base, "Deployment", NAME).typed();
    assert_eq!(container(&dep).image.as_deref().map(|i| i.starts_with("hallmark:")), Some(true), "images: sets a tag");

    // cert-manager: annotation on both, no caBundle left to fight cainjector.
    let cm = rendered_docs(&manifests_dir().join("cert-manager"), "manifests/cert-manager").unwrap();
    for d in &cm {
        check_typed(d);
    }
    for (kind, name) in webhook_configurations() {
        let d = find(&cm, &kind, &name);
        assert_eq!(d.json["metadata"]["annotations"][INJECT_CA_FROM], format!("{NAMESPACE}/{TLS_SECRET}"));
        for w in d.json["webhooks"].as_array().unwrap() {
            assert!(w["clientConfig"].get("caBundle").is_none(), "{kind}: caBundle must be left to cainjector");
            assert!(w["clientConfig"]["service"].is_object(), "{kind}: rest of the webhook kept");
        }
    }
    find(&cm, "Certificate", TLS_SECRET);

    // hallmark-certs: with the files `hallmark certs` writes, the Secret and both caBundles.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("manifests");
    copy_tree(&manifests_dir(), &copy);
    let certs = copy.join("hallmark-certs/certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca_pem = "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3RjYQ==\n-----END CERTIFICATE-----\n";
    std::fs::write(certs.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(certs.join("tls.crt"), "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3R0bHM=\n-----END CERTIFICATE-----\n")
        .unwrap();
    std::fs::write(certs.join("tls.key"), "-----BEGIN PRIVATE KEY-----\nTUlJQnRlc3RrZXk=\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let hc = rendered_docs(&copy.join("hallmark-certs"), "manifests/hallmark-certs").unwrap();
    for d in &hc {
        check_typed(d);
    }
    let secret: Secret = find(&hc, "Secret", TLS_SECRET).typed();
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("data");
    assert_eq!(data.get("ca.crt").map(|b| b.0.as_slice()), Some(ca_pem.as_bytes()));
    assert!(data.contains_key("tls.crt") && data.contains_key("tls.key"));
    let m: MutatingWebhookConfiguration = find(&hc, "MutatingWebhookConfiguration", NAME).typed();
    let v: ValidatingWebhookConfiguration = find(&hc, "ValidatingWebhookConfiguration", NAME).typed();
    let p: ValidatingWebhookConfiguration = find(&hc, "ValidatingWebhookConfiguration", POLICY_CONFIG).typed();
    for b in m
        .webhooks
        .iter()
        .flatten()
        .map(|w| &w.client_config.ca_bundle)
        .chain(v.webhooks.iter().flatten().map(|w| &w.client_config.ca_bundle))
        .chain(p.webhooks.iter().flatten().map(|w| &w.client_config.ca_bundle))
    {
        assert_eq!(b.as_ref().map(|b| b.0.as_slice()), Some(ca_pem.as_bytes()), "caBundle = ca.crt");
    }
}

#[test]
fn crd_in_manifests_is_what_hallmark_crd_prints() {
    let generated = hallmark::policy::crd_yaml().expect("the CRD serialises");
    let on_disk =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/crd.yaml"))
            .expect("manifests/base/crd.yaml");
    assert!(
        on_disk == generated,
        "manifests/base/crd.yaml is stale: regenerate it with `cargo run -- crd > manifests/crd.yaml`"
    );
}
