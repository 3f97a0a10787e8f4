//! `kubectl hallmark`: rendering and grouping over recorded API responses, and the
//! commands end to end against a mock API server on 127.0.0.1.
//!
//! Recorded data (tests/data/plugin, see its README): `deploy-platform-agent.json` is
//! the real `kubectl get -o json --show-managed-fields` of a Flux-applied Deployment;
//! the others are real objects with hallmark annotations added.

use hallmark::admission::UserInfo;
use hallmark::plugin::app::{PluginCli, run};
use hallmark::plugin::check::{self, parse_manifests, render_check};
use hallmark::plugin::cluster::Cluster;
use hallmark::plugin::list::{ListFilter, list_document, list_rows, render_list};
use hallmark::plugin::owners::{PolicySource, owners, render_owners};
use hallmark::plugin::show::{render_show, show_document};
use hallmark::policy::{CompiledPolicy, Enforcement, PolicySet};
use hallmark::provenance::{Keys, Stamper};
use hallmark::review::{Engine, OnError};
use serde_json::{Value, json};

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/plugin/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> jiff::Timestamp {
    "2026-11-27T08:40:00Z".parse().expect("timestamp")
}

fn keys() -> Keys {
    Keys::new("hallmark.dev/")
}

fn platform_policy() -> Vec<CompiledPolicy> {
    let path = format!("{}/tests/data/plugin/policy-platform.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("policy file");
    hallmark::policy::load::parse_documents(&text, "policy-platform.yaml").expect("valid policy")
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

// ---- show ----------------------------------------------------------------------------

#[test]
fn show_prints_the_current_stamp_and_the_history_newest_first() {
    let out = render_show(&data("deploy-shop-stamped.json"), &keys(), now(), true);
    assert_eq!(
        lines(&out),
        [
            "Name:            shop",
            "Namespace:       team-a",
            "Kind:            Deployment (apps/v1)",
            "Applied-By:      gha:acme/shop",
            "Applied-At:      2026-11-27T05:40:00Z (3h ago)",
            "Channel:         push",
            "Trust:           verified",
            "Committer:       octo-lead",
            "Pipeline:        deploy#9876543311",
            "Branch:          main",
            "Commit:          89e6c98d92887913cadf06b2adb97f26cde4849b",
            "Repository:      acme/shop",
            "Field-Manager:   kubectl-client-side-apply",
            "History:",
            "  AGE     BY              CHANNEL   TRUST      OP       MANAGER                     COMMITTER   BRANCH   COMMIT     CHANGED",
            "  3h      gha:acme/shop   push      verified   update   kubectl-client-side-apply   octo-lead   main     89e6c98d   spec.template.spec.containers[name=shop].image",
            "  5h37m   dev             push      none       update   kubectl-set                 <none>      <none>   <none>     spec.template.spec.containers[name=shop].env[name=LOG_LEVEL].value, spec.template.spec.containers[name=shop].resources.limits.memory",
            "  6h51m   gha:acme/shop   push      verified   create   kubectl-client-side-apply   octo-dev    main     3f786850   <none>",
        ]
    );
}

#[test]
fn show_no_headers_leaves_out_the_history_header_row() {
    let out = render_show(&data("deploy-shop-stamped.json"), &keys(), now(), false);
    assert!(!out.contains("AGE "), "{out}");
    assert!(out.ends_with("  6h51m   gha:acme/shop   push   verified   create   kubectl-client-side-apply   octo-dev    main     3f786850   <none>\n"), "{out}");
}

#[test]
fn show_of_an_object_without_hallmark_annotations_says_it_has_no_stamp() {
    let out = render_show(&data("deploy-platform-agent.json"), &keys(), now(), true);
    assert_eq!(
        lines(&out),
        [
            "Name:        platform-agent",
            "Namespace:   team-a",
            "Kind:        Deployment (apps/v1)",
            "Stamp:       <none> (no hallmark.dev/ annotations: not written since hallmark was installed)",
        ]
    );
}

#[test]
fn show_reads_the_keys_of_the_annotation_prefix_it_is_given() {
    let text = serde_json::to_string(&data("deploy-shop-stamped.json"))
        .expect("json")
        .replace("hallmark.dev/", "audit.example.com/");
    let obj: Value = serde_json::from_str(&text).expect("json");
    assert!(render_show(&obj, &keys(), now(), true).contains("Stamp:       <none> (no hallmark.dev/ annotations"));
    let out = render_show(&obj, &Keys::new("audit.example.com/"), now(), true);
    assert!(out.contains("Applied-By:      gha:acme/shop\n"), "{out}");
}

#[test]
fn show_as_json_carries_the_identity_the_stamp_and_the_history() {
    let doc = show_document(&data("deploy-shop-stamped.json"), &keys());
    assert_eq!(doc["kind"], "Deployment");
    assert_eq!(doc["namespace"], "team-a");
    assert_eq!(doc["stamp"]["appliedBy"], "gha:acme/shop");
    assert_eq!(doc["stamp"]["commit"], "89e6c98d92887913cadf06b2adb97f26cde4849b");
    let history = doc["stamp"]["history"].as_array().expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["op"], "create");
    assert_eq!(history[1]["changed"][0], "spec.template.spec.containers[name=shop].env[name=LOG_LEVEL].value");
    assert_eq!(show_document(&data("deploy-platform-agent.json"), &keys())["stamp"], Value::Null);
}

// ---- owners --------------------------------------------------------------------------

#[test]
fn owners_under_the_builtin_default_gives_git_what_kustomize_controller_applied() {
    let obj = data("deploy-platform-agent.json");
    let set = PolicySet::default();
    let grouped = owners(&obj, "deployments", set.effective());
    let out = render_owners(&obj, &grouped, &PolicySource::BuiltinNoCrd, true);
    assert_eq!(
        lines(&out),
        [
            "Name:         platform-agent",
            "Namespace:    team-a",
            "Kind:         Deployment (apps/v1)",
            "Git owner:    git",
            "Git source:   Flux Kustomization flux-system/infra",
            "Policies:     built-in default (the cluster has no OwnershipPolicy CRD)",
            "",
            "OWNER              VIA                    ENFORCE   FIELD",
            "Git                kustomize-controller   warn      metadata.labels[\"app.kubernetes.io/name\"]",
            "Git                kustomize-controller   warn      metadata.labels[\"app.kubernetes.io/part-of\"]",
            "Git                kustomize-controller   warn      metadata.labels[\"kustomize.toolkit.fluxcd.io/name\"]",
            "Git                kustomize-controller   warn      metadata.labels[\"kustomize.toolkit.fluxcd.io/namespace\"]",
            "Git                kustomize-controller   warn      spec.replicas",
            "Git                kustomize-controller   warn      spec.selector",
            "Git                kustomize-controller   warn      spec.template.metadata.labels[\"app.kubernetes.io/name\"]",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].args",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].env[name=CLUSTER_NAME].value",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].image",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].ports[containerPort=9090,protocol=TCP].name",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].resources.limits.cpu",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].resources.limits.memory",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].resources.requests.cpu",
            "Git                kustomize-controller   warn      spec.template.spec.containers[name=agent].resources.requests.memory",
            "kubectl-annotate   Update                 <none>    metadata.annotations[\"team-a.example.com/oncall\"]",
            "kubectl-set        Update                 <none>    spec.template.spec.containers[name=agent].env[name=DEBUG_PROFILING].value",
        ]
    );
}

#[test]
fn owners_puts_the_rules_of_policies_that_match_the_object_first() {
    let obj = data("deploy-platform-agent.json");
    let policies = platform_policy();
    let grouped = owners(&obj, "deployments", policies.iter());
    let out = render_owners(&obj, &grouped, &PolicySource::Files(vec!["policy-platform.yaml".into()]), true);
    let got = lines(&out);
    assert_eq!(got[3], "Git owner:    platform-config (https://git.example.com/sre/cluster-config)");
    assert_eq!(got[5], "Policies:     policy-platform.yaml (--policy)");
    assert_eq!(
        got[8],
        "Git                policy platform        deny      spec.template.spec.containers[*].resources"
    );
    assert_eq!(got[9], "Git                policy platform        deny      spec.replicas");
    assert_eq!(
        got[10],
        "Git                kustomize-controller   warn      metadata.labels[\"app.kubernetes.io/name\"]"
    );
    // The second rule selects tier=web, which platform-agent is not.
    assert!(!out.contains("priorityClassName"), "{out}");
}

#[test]
fn owners_with_managed_fields_ignored_lists_the_reconciler_as_a_plain_manager() {
    let obj = data("deploy-platform-agent.json");
    let mut policies = platform_policy();
    policies[0].managed_fields = Enforcement::Ignore;
    let grouped = owners(&obj, "deployments", policies.iter());
    assert_eq!(grouped.git.len(), 2, "only the rule patterns: {:?}", grouped.git);
    assert_eq!(grouped.managers[0].manager, "kustomize-controller");
    assert_eq!(grouped.managers[0].operation, "Apply");
    assert!(grouped.managers[0].fields.contains(&"spec.replicas".to_owned()));
}

#[test]
fn owners_of_an_object_flux_was_told_to_leave_alone_lists_only_the_rules() {
    let mut obj = data("deploy-platform-agent.json");
    obj["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"] = json!("disabled");
    let policies = platform_policy();
    let grouped = owners(&obj, "deployments", policies.iter());
    assert!(grouped.git.iter().all(|g| g.manager.is_none()), "only the rule patterns: {:?}", grouped.git);
    assert_eq!(grouped.git.len(), 2);
    assert_eq!(
        grouped.not_enforced,
        ["kustomize-controller: Flux will not revert it (kustomize.toolkit.fluxcd.io/reconcile: disabled)"]
    );
    assert!(grouped.managers.iter().any(|m| m.manager == "kustomize-controller"), "listed as a plain manager");
    let out = render_owners(&obj, &grouped, &PolicySource::Files(vec!["policy-platform.yaml".into()]), true);
    let line = out.lines().find(|l| l.starts_with("Not enforced:")).unwrap_or_default();
    assert!(
        line.ends_with(
            " kustomize-controller: Flux will not revert it (kustomize.toolkit.fluxcd.io/reconcile: disabled)"
        ),
        "{out}"
    );
}

#[test]
fn owners_no_headers_prints_the_rows_alone() {
    let obj = data("deploy-platform-agent.json");
    let set = PolicySet::default();
    let grouped = owners(&obj, "deployments", set.effective());
    let out = render_owners(&obj, &grouped, &PolicySource::BuiltinNoCrd, false);
    let got = lines(&out);
    assert_eq!(got.len(), 17);
    assert_eq!(
        got[0],
        "Git                kustomize-controller   warn     metadata.labels[\"app.kubernetes.io/name\"]"
    );
    assert_eq!(
        got[16],
        "kubectl-set        Update                 <none>   spec.template.spec.containers[name=agent].env[name=DEBUG_PROFILING].value"
    );
}

#[test]
fn owners_of_an_argo_cd_object_names_the_application() {
    let mut obj = data("deploy-platform-agent.json");
    let labels = obj["metadata"]["labels"].as_object_mut().expect("labels");
    labels.retain(|k, _| !k.starts_with("kustomize.toolkit.fluxcd.io/"));
    obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
        json!("platform:apps/Deployment:team-a/platform-agent");
    let set = PolicySet::default();
    let grouped = owners(&obj, "deployments", set.effective());
    assert_eq!(grouped.gitops_source.as_deref(), Some("Argo CD application platform"));
}

// ---- list ----------------------------------------------------------------------------

fn recorded_list() -> Vec<Value> {
    data("deployments-team-a.metadata-list.json")["items"].as_array().expect("items").clone()
}

#[test]
fn list_branch_main_keeps_the_objects_last_written_from_main() {
    let filter = ListFilter { branch: Some("main".into()), ..ListFilter::default() };
    let rows = list_rows("Deployment", &recorded_list(), &keys(), &filter);
    assert_eq!(
        lines(&render_list(&rows, false, true, now())),
        [
            "KIND         NAME       APPLIED-BY                          CHANNEL   BRANCH   COMMIT     AGE",
            "Deployment   checkout   system:serviceaccount:ci:deployer   push      main     9fceb02d   10h",
            "Deployment   orders     ci-bot                              push      main     abc123     30m",
            "Deployment   shop       gha:acme/shop                       push      main     89e6c98d   3h",
        ]
    );
}

#[test]
fn list_all_namespaces_adds_the_namespace_column_and_shows_unfiltered_rows() {
    let rows = list_rows("Deployment", &recorded_list(), &keys(), &ListFilter::default());
    assert_eq!(
        lines(&render_list(&rows, true, false, now())),
        [
            "team-a   Deployment   checkout         system:serviceaccount:ci:deployer                        push     main     9fceb02d   10h",
            "team-a   Deployment   orders           ci-bot                                                   push     main     abc123     30m",
            "team-a   Deployment   platform-agent   system:serviceaccount:flux-system:kustomize-controller   gitops   <none>   <none>     90s",
            "team-a   Deployment   shop             gha:acme/shop                                            push     main     89e6c98d   3h",
            "team-a   Deployment   web              dev                                                      push     <none>   <none>     45m",
        ]
    );
}

#[test]
fn list_filters_by_committer_and_by_time() {
    let names = |filter: ListFilter| -> Vec<String> {
        list_rows("Deployment", &recorded_list(), &keys(), &filter).into_iter().map(|r| r.name).collect()
    };
    assert_eq!(names(ListFilter { committer: Some("octo-lead".into()), ..ListFilter::default() }), ["shop"]);
    let since = hallmark::plugin::age::parse_since("1h", now()).expect("since");
    assert_eq!(names(ListFilter { since: Some(since), ..ListFilter::default() }), ["orders", "platform-agent", "web"]);
    let since = hallmark::plugin::age::parse_since("2026-11-27T05:00:00Z", now()).expect("since");
    let filter = ListFilter { since: Some(since), branch: Some("main".into()), ..ListFilter::default() };
    assert_eq!(names(filter), ["orders", "shop"]);
}

#[test]
fn list_leaves_out_objects_never_stamped_unless_asked() {
    // The kube-root-ca.crt ConfigMap that Kubernetes puts into every namespace: never
    // written by anyone hallmark stamps.
    let root_ca = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "team-a",
                     "annotations": {"kubernetes.io/description": "Contains a CA bundle"}}
    });
    let mut items = recorded_list();
    items.push(root_ca);
    let names = |filter: ListFilter| -> Vec<String> {
        list_rows("ConfigMap", &items, &keys(), &filter).into_iter().map(|r| r.name).collect()
    };
    let stamped = names(ListFilter::default());
    assert!(!stamped.contains(&"kube-root-ca.crt".to_owned()), "{stamped:?}");
    assert_eq!(stamped.len(), recorded_list().len(), "every recorded Deployment carries a stamp");
    let all = names(ListFilter { unstamped: true, ..ListFilter::default() });
    assert_eq!(all.len(), stamped.len() + 1);
    assert!(all.contains(&"kube-root-ca.crt".to_owned()));
    // An unstamped row shows <none> for its stamp.
    let rows = list_rows("ConfigMap", &items, &keys(), &ListFilter { unstamped: true, ..ListFilter::default() });
    let text = render_list(&rows, false, false, now());
    assert!(
        text.lines().any(|l| l.starts_with("ConfigMap") && l.contains("kube-root-ca.crt") && l.contains("<none>")),
        "{text}"
    );
}

#[test]
fn list_as_json_is_a_list_of_objects_with_their_stamps() {
    let rows = list_rows("Deployment", &recorded_list(), &keys(), &ListFilter::default());
    let doc = list_document(&rows);
    assert_eq!(doc["kind"], "List");
    assert_eq!(doc["items"][3]["name"], "shop");
    assert_eq!(doc["items"][3]["stamp"]["branch"], "main");
    assert_eq!(doc["items"][3]["kind"], "Deployment");
}

// ---- check (offline part) ------------------------------------------------------------

fn dev() -> UserInfo {
    UserInfo {
        username: "dev".into(),
        uid: None,
        groups: vec!["developers".into(), "system:authenticated".into()],
        extra: Default::default(),
    }
}

fn engine() -> Engine {
    Engine::new(Stamper::new(Default::default()), OnError::Allow)
}

fn write<'a>(qualified: &'a str, live: Option<Value>, manifest: &'a Value, user: UserInfo) -> check::Write<'a> {
    check::Write { qualified, live, manifest, user, field_manager: Some("kubectl-client-side-apply".to_owned()) }
}

fn cpu_manifest() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "platform-agent", "namespace": "team-a"},
           "spec": {"template": {"spec": {"containers": [{"name": "agent", "resources": {"limits": {"cpu": "1"}}}]}}}})
}

#[test]
fn check_denies_a_direct_change_of_a_field_a_policy_gives_git() {
    let set = PolicySet { policies: platform_policy() };
    let live = data("deploy-platform-agent.json");
    let r = check::evaluate(&engine(), &set, write("deployments.apps", Some(live), &cpu_manifest(), dev()), now());
    assert!(!r.allowed);
    assert_eq!(
        lines(&render_check(&[r])),
        [
            "UPDATE deployments.apps/platform-agent -n team-a: denied",
            "  Denied: spec.template.spec.containers[name=agent].resources.limits.cpu is owned by platform-config (Git: https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); change it there. Requested \"500m\" -> \"1\".",
        ]
    );
}

#[test]
fn check_under_the_builtin_default_allows_with_a_warning_and_shows_the_stamp() {
    let live = data("deploy-platform-agent.json");
    let r = check::evaluate(
        &engine(),
        &PolicySet::default(),
        write("deployments.apps", Some(live), &cpu_manifest(), dev()),
        now(),
    );
    assert!(r.allowed);
    assert_eq!(
        lines(&render_check(&[r])),
        [
            "UPDATE deployments.apps/platform-agent -n team-a: allowed",
            "  Warning: spec.template.spec.containers[name=agent].resources.limits.cpu is owned by git (field manager kustomize-controller, Flux Kustomization flux-system/infra); Git will revert this change at the next reconcile. Requested \"500m\" -> \"1\".",
            "  Stamp:",
            "    Applied-By:      dev",
            "    Channel:         push",
            "    Trust:           none",
            "    Field-Manager:   kubectl-client-side-apply",
            "    Changes:         spec.template.spec.containers[name=agent].resources.limits.cpu",
        ]
    );
}

#[test]
fn check_of_an_object_that_does_not_exist_is_a_create() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "team-a"}, "data": {"a": "1"}});
    let r = check::evaluate(&engine(), &PolicySet::default(), write("configmaps", None, &cm, dev()), now());
    assert_eq!((r.operation.as_str(), r.allowed), ("CREATE", true));
    assert_eq!(lines(&render_check(&[r]))[0], "CREATE configmaps/settings -n team-a: allowed");
}

#[test]
fn check_of_a_manifest_that_changes_nothing_keeps_the_stamp() {
    let live = data("deploy-platform-agent.json");
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "platform-agent", "namespace": "team-a"}, "spec": {"replicas": 2}});
    let r =
        check::evaluate(&engine(), &PolicySet::default(), write("deployments.apps", Some(live), &same, dev()), now());
    assert!(r.unchanged && r.allowed && r.stamp.is_none());
    assert_eq!(
        lines(&render_check(&[r])),
        [
            "UPDATE deployments.apps/platform-agent -n team-a: allowed",
            "  Unchanged: the write changes nothing; the object keeps its stamp",
        ]
    );
}

#[test]
fn check_trusts_the_verified_extras_of_the_user_for_the_git_fields() {
    let live = data("deploy-shop-stamped.json");
    let mut manifest = live.clone();
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.example.com/acme/shop:2.3.0");
    let mut user = UserInfo { username: "gha:acme/shop".into(), ..dev() };
    user.extra.insert("hallmark.dev/branch".into(), vec!["main".into()]);
    user.extra.insert("hallmark.dev/commit".into(), vec!["0123456789abcdef0123456789abcdef01234567".into()]);
    let r = check::evaluate(
        &engine(),
        &PolicySet::default(),
        write("deployments.apps", Some(live), &manifest, user),
        now(),
    );
    let stamp = r.stamp.expect("stamp");
    assert_eq!(stamp.trust.as_deref(), Some("verified"));
    assert_eq!(stamp.branch.as_deref(), Some("main"));
    assert_eq!(stamp.committer, None, "a Git field this write does not supply is removed");
    assert_eq!(stamp.history.len(), 4);
    assert_eq!(stamp.history[0].changed, ["spec.template.spec.containers[name=shop].image"]);
}

#[test]
fn manifests_are_read_document_by_document_and_lists_are_expanded() {
    let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# nothing\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n- {apiVersion: v1, kind: Service, metadata: {name: c}}\n";
    let docs = parse_manifests(text, "m.yaml").expect("valid");
    let names: Vec<&str> = docs.iter().filter_map(|d| d.object.pointer("/metadata/name")?.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let err = parse_manifests("apiVersion: v1\nkind: [\n", "bad.yaml").expect_err("invalid YAML");
    assert!(err.starts_with("error parsing bad.yaml:"), "{err}");
    let err = parse_manifests("kind: ConfigMap\nmetadata: {name: a}\n", "m.yaml").expect_err("no apiVersion");
    assert_eq!(err, "error validating m.yaml (document 1): an object needs apiVersion, kind and metadata.name");
}

// ---- end to end against a mock API server --------------------------------------------

mod mock {
    use super::data;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// An API server that knows team-a's Deployments `shop` and `platform-agent`, serves
    /// discovery (legacy, or aggregated when asked for it and `aggregated` is set), lists
    /// Deployments, answers SelfSubjectReviews as `dev`, and has no OwnershipPolicy CRD.
    pub struct ApiServer {
        pub addr: SocketAddr,
        log: Arc<Mutex<Vec<String>>>,
    }

    struct Shared {
        aggregated: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl ApiServer {
        pub async fn start(aggregated: bool) -> ApiServer {
            let log = Arc::new(Mutex::new(Vec::new()));
            let shared = Arc::new(Shared { aggregated, log: log.clone() });
            let app = axum::Router::new().fallback(handle).with_state(shared);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            ApiServer { addr, log }
        }

        /// `METHOD /path` of every request so far.
        pub fn requests(&self) -> Vec<String> {
            self.log.lock().map(|l| l.clone()).unwrap_or_default()
        }
    }

    fn discovery_file(group: &str) -> bool {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/plugin/discovery");
        std::path::Path::new(&format!("{dir}/apis-{group}-v1.json")).is_file()
    }

    fn discovery(name: &str) -> Value {
        data(&format!("discovery/{name}"))
    }

    /// The aggregated (apidiscovery.k8s.io/v2) form of legacy resource lists.
    fn aggregate(lists: &[Value]) -> Value {
        let items: Vec<Value> = lists
            .iter()
            .map(|list| {
                let gv = list["groupVersion"].as_str().unwrap_or_default();
                let (group, version) = gv.split_once('/').unwrap_or(("", gv));
                let resources: Vec<Value> = list["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| !r["name"].as_str().unwrap_or_default().contains('/'))
                    .map(|r| {
                        json!({
                            "resource": r["name"], "singularResource": r["singularName"],
                            "scope": if r["namespaced"] == json!(true) { "Namespaced" } else { "Cluster" },
                            "responseKind": {"group": group, "version": version, "kind": r["kind"]},
                            "verbs": r["verbs"], "shortNames": r.get("shortNames").cloned().unwrap_or(json!([])),
                        })
                    })
                    .collect();
                json!({"metadata": {"name": group}, "versions": [{"version": version, "resources": resources, "freshness": "Current"}]})
            })
            .collect();
        json!({"apiVersion": "apidiscovery.k8s.io/v2", "kind": "APIGroupDiscoveryList", "metadata": {}, "items": items})
    }

    fn not_found_status(resource: &str, name: &str) -> Response {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{resource} \"{name}\" not found"), "reason": "NotFound",
            "details": {"name": name, "group": resource.split_once('.').map(|(_, g)| g).unwrap_or(""),
                        "kind": resource.split('.').next().unwrap_or(resource)},
            "code": 404});
        (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
    }

    async fn handle(
        State(shared): State<Arc<Shared>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        _body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        if let Ok(mut log) = shared.log.lock() {
            log.push(format!("{method} {path}"));
        }
        let wants_aggregated = shared.aggregated
            && headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
        let ok = |v: Value| axum::Json(v).into_response();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["api"]) if wants_aggregated => ok(aggregate(&[discovery("api-v1.json")])),
            ("GET", ["apis"]) if wants_aggregated => ok(aggregate(&[
                discovery("apis-apiregistration.k8s.io-v1.json"),
                discovery("apis-apps-v1.json"),
                discovery("apis-events.k8s.io-v1.json"),
                discovery("apis-authentication.k8s.io-v1.json"),
            ])),
            ("GET", ["api"]) => ok(discovery("api.json")),
            ("GET", ["apis"]) => ok(discovery("apis.json")),
            ("GET", ["api", "v1"]) => ok(discovery("api-v1.json")),
            ("GET", ["apis", group, "v1"]) if discovery_file(group) => ok(discovery(&format!("apis-{group}-v1.json"))),
            ("GET", ["apis", "apps", "v1", "namespaces", "team-a", "statefulsets"]) => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "statefulsets.apps is forbidden: User \"dev\" cannot list resource \"statefulsets\" in API group \"apps\" in the namespace \"team-a\"",
                    "reason": "Forbidden", "details": {"group": "apps", "kind": "statefulsets"}, "code": 403});
                (StatusCode::FORBIDDEN, axum::Json(status)).into_response()
            }
            ("GET", ["apis", "apps", "v1", "namespaces", "team-a", "deployments"]) => {
                ok(data("deployments-team-a.metadata-list.json"))
            }
            ("GET", ["apis", "apps", "v1", "namespaces", "team-a", "deployments", "shop"]) => {
                ok(data("deploy-shop-stamped.json"))
            }
            ("GET", ["apis", "apps", "v1", "namespaces", "team-a", "deployments", "platform-agent"]) => {
                ok(data("deploy-platform-agent.json"))
            }
            ("GET", ["apis", "apps", "v1", "namespaces", _, "deployments", name]) => {
                not_found_status("deployments.apps", name)
            }
            ("GET", ["api", "v1", "namespaces", _, "configmaps", name]) => not_found_status("configmaps", name),
            // Who the caller is: dev, or whom the caller impersonates (as the real server says).
            ("POST", ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"]) => {
                let header = |name: &str| -> Vec<String> {
                    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
                };
                let user_info = match header("impersonate-user").first() {
                    Some(user) => {
                        let mut groups = header("impersonate-group");
                        groups.push("system:authenticated".into());
                        json!({"username": user, "groups": groups})
                    }
                    None => {
                        json!({"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]})
                    }
                };
                ok(json!({
                    "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null}, "status": {"userInfo": user_info}
                }))
            }
            // What kube-apiserver answers for a path nothing serves (a CRD not installed).
            _ => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        }
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn kubectl_hallmark(server: &mock::ApiServer, args: &[&str]) -> Outcome {
    let argv = std::iter::once("kubectl-hallmark").chain(args.iter().copied());
    let cli = <PluginCli as clap::Parser>::try_parse_from(argv).expect("valid arguments");
    let url = format!("http://{}", server.addr).parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    let cluster = Cluster { client, default_namespace: "team-a".into(), kubeconfig_user: Some("dev".into()) };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(&cli, &cluster, now(), &mut hallmark::plugin::app::Io { out: &mut out, err: &mut err }).await;
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

#[tokio::test]
async fn show_runs_end_to_end_resolving_a_short_name_through_legacy_discovery() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["show", "deploy/shop", "-n", "team-a"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert_eq!(got.stdout, render_show(&data("deploy-shop-stamped.json"), &keys(), now(), true));
    assert_eq!(lines(&got.stdout)[4], "Applied-At:      2026-11-27T05:40:00Z (3h ago)");
    assert_eq!(
        server.requests(),
        [
            "GET /api",
            "GET /apis",
            "GET /api/v1",
            "GET /apis/apiregistration.k8s.io/v1",
            "GET /apis/apps/v1",
            "GET /apis/apps/v1/namespaces/team-a/deployments/shop",
        ]
    );
}

#[tokio::test]
async fn show_with_aggregated_discovery_needs_two_discovery_requests() {
    let server = mock::ApiServer::start(true).await;
    let got = kubectl_hallmark(&server, &["show", "deployment", "shop", "-o", "json"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    let doc: Value = serde_json::from_str(&got.stdout).expect("JSON output");
    assert_eq!(doc["stamp"]["committer"], "octo-lead");
    assert_eq!(server.requests(), ["GET /api", "GET /apis", "GET /apis/apps/v1/namespaces/team-a/deployments/shop"]);
}

#[tokio::test]
async fn show_of_a_missing_object_prints_kubectls_not_found_error_and_exits_1() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["show", "deployments.apps", "nope"]).await;
    assert_eq!(got.code, 1);
    assert_eq!(got.stdout, "");
    assert_eq!(got.stderr, "error: deployments.apps \"nope\" not found\n");
}

#[tokio::test]
async fn show_of_a_resource_type_the_server_does_not_have_says_so() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["show", "widgets/w1"]).await;
    assert_eq!((got.code, got.stdout.as_str()), (2, ""), "an unknown kind is bad input");
    assert_eq!(got.stderr, "error: the server doesn't have a resource type \"widgets\"\n");
}

#[tokio::test]
async fn owners_without_the_ownershippolicy_crd_applies_the_builtin_default_and_says_so() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["owners", "deploy/platform-agent"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    let out = lines(&got.stdout);
    assert_eq!(out[5], "Policies:     built-in default (the cluster has no OwnershipPolicy CRD)");
    assert_eq!(
        out[8],
        "Git                kustomize-controller   warn      metadata.labels[\"app.kubernetes.io/name\"]"
    );
    assert!(server.requests().contains(&"GET /apis/hallmark.dev/v1alpha1/ownershippolicies".to_owned()));
}

#[tokio::test]
async fn list_with_a_branch_filters_the_listed_stamps_client_side() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["list", "--kind", "deploy", "--branch", "main"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert_eq!(
        lines(&got.stdout),
        [
            "KIND         NAME       APPLIED-BY                          CHANNEL   BRANCH   COMMIT     AGE",
            "Deployment   checkout   system:serviceaccount:ci:deployer   push      main     9fceb02d   10h",
            "Deployment   orders     ci-bot                              push      main     abc123     30m",
            "Deployment   shop       gha:acme/shop                       push      main     89e6c98d   3h",
        ]
    );
    assert_eq!(server.requests().last().map(String::as_str), Some("GET /apis/apps/v1/namespaces/team-a/deployments"));
}

#[tokio::test]
async fn list_that_matches_nothing_says_no_resources_found_like_kubectl() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["list", "--kind", "deployments.apps", "--committer", "nobody"]).await;
    assert_eq!((got.code, got.stdout.as_str()), (0, ""));
    assert_eq!(got.stderr, "No resources found in team-a namespace.\n");
}

#[tokio::test]
async fn list_reports_a_kind_it_may_not_list_and_still_lists_the_others() {
    let server = mock::ApiServer::start(false).await;
    let got =
        kubectl_hallmark(&server, &["list", "--kind", "sts,deploy", "--committer", "octo-lead", "--no-headers"]).await;
    assert_eq!(got.code, 1);
    assert_eq!(got.stdout, "Deployment   shop   gha:acme/shop   push   main   89e6c98d   3h\n");
    assert_eq!(
        got.stderr,
        "Error from server (Forbidden): statefulsets.apps is forbidden: User \"dev\" cannot list resource \"statefulsets\" in API group \"apps\" in the namespace \"team-a\"\n"
    );
}

#[tokio::test]
async fn a_bad_annotation_prefix_is_bad_input_and_a_kind_without_list_is_reported() {
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["show", "deploy/shop", "--annotation-prefix", "hallmark"]).await;
    assert_eq!(got.code, 2);
    assert_eq!(got.stderr, "error: --annotation-prefix: \"hallmark\" must end with '/', e.g. \"hallmark.dev/\"\n");
    let got = kubectl_hallmark(&server, &["list", "--kind", "selfsubjectreviews"]).await;
    assert_eq!((got.code, got.stdout.as_str()), (1, ""));
    assert_eq!(got.stderr, "error: selfsubjectreviews.authentication.k8s.io cannot be listed\n");
}

fn manifest_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write manifest");
    f
}

const TWO_DOCUMENTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: platform-agent
spec:
  template:
    spec:
      containers:
        - name: agent
          resources:
            limits: {cpu: \"1\"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  LOG_LEVEL: debug
";

#[tokio::test]
async fn check_judges_every_document_as_the_server_identified_user_and_exits_1_on_a_denial() {
    let server = mock::ApiServer::start(false).await;
    let file = manifest_file(TWO_DOCUMENTS);
    let path = file.path().to_str().expect("utf-8 path");
    let policy = "tests/data/plugin/policy-platform.yaml";
    let got = kubectl_hallmark(&server, &["check", "-f", path, "--policy", policy]).await;
    assert_eq!(got.stderr, "");
    assert_eq!(got.code, 1);
    assert_eq!(
        lines(&got.stdout),
        [
            "Policies: tests/data/plugin/policy-platform.yaml (--policy)",
            "User:     dev (groups developers)",
            "",
            "UPDATE deployments.apps/platform-agent -n team-a: denied",
            "  Denied: spec.template.spec.containers[name=agent].resources.limits.cpu is owned by platform-config (Git: https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra); change it there. Requested \"500m\" -> \"1\".",
            "",
            "CREATE configmaps/settings -n team-a: allowed",
            "  Stamp:",
            "    Applied-By:      dev",
            "    Channel:         push",
            "    Trust:           none",
            "    Field-Manager:   kubectl-client-side-apply",
        ]
    );
}

#[tokio::test]
async fn check_of_a_kind_the_server_does_not_serve_is_bad_input() {
    let server = mock::ApiServer::start(false).await;
    let file = manifest_file("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\n");
    let path = file.path().to_str().expect("utf-8 path");
    let got = kubectl_hallmark(&server, &["check", "-f", path]).await;
    assert_eq!((got.code, got.stdout.as_str()), (2, ""));
    assert_eq!(
        got.stderr,
        format!(
            "error: resource mapping not found for name: \"w1\" namespace: \"\" from \"{path}\": no matches for kind \"Widget\" in version \"example.com/v1\"\nensure CRDs are installed first\n"
        )
    );
}

#[tokio::test]
async fn check_refuses_a_namespace_flag_that_contradicts_the_manifest() {
    let server = mock::ApiServer::start(false).await;
    let file = manifest_file("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: team-b}\n");
    let path = file.path().to_str().expect("utf-8 path");
    let got = kubectl_hallmark(&server, &["check", "-f", path, "-n", "team-a"]).await;
    assert_eq!(got.code, 2);
    assert_eq!(
        got.stderr,
        "error: the namespace from the provided object \"team-b\" does not match the namespace \"team-a\". You must pass '--namespace=team-b' to perform this operation.\n"
    );
}

#[tokio::test]
async fn check_k_renders_the_kustomization_with_kubectl() {
    if std::process::Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("kubectl is not on PATH: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("kustomization.yaml"), "namespace: team-a\nresources: [cm.yaml]\n").expect("write");
    std::fs::write(dir.path().join("cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-kustomize}\n")
        .expect("write");
    let server = mock::ApiServer::start(false).await;
    let got = kubectl_hallmark(&server, &["check", "-k", dir.path().to_str().expect("utf-8"), "--no-headers"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert_eq!(lines(&got.stdout)[0], "CREATE configmaps/from-kustomize -n team-a: allowed");
}

/// Runs the real binary (off the runtime's thread, so the mock keeps answering).
async fn binary(args: Vec<String>) -> Outcome {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hallmark"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl-hallmark")
    })
    .await
    .expect("join");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_uses_the_kubeconfig_context_and_impersonates_with_as() {
    let server = mock::ApiServer::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: mock
  cluster: {{server: \"http://{}\"}}
- name: elsewhere
  cluster: {{server: \"http://127.0.0.1:1\"}}
users:
- name: dev-user
  user: {{token: dev-token}}
contexts:
- name: mock-team-a
  context: {{cluster: mock, user: dev-user, namespace: team-a}}
- name: broken
  context: {{cluster: elsewhere, user: dev-user}}
current-context: broken
",
        server.addr
    );
    std::fs::write(&kubeconfig, config).expect("write kubeconfig");
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n").expect("write manifest");
    let base = |more: &[&str]| -> Vec<String> {
        let kc = kubeconfig.to_str().expect("utf-8").to_owned();
        ["--kubeconfig", &kc, "--context", "mock-team-a"].iter().chain(more).map(|s| s.to_string()).collect()
    };

    let got = binary(base(&["show", "deploy/shop"])).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert_eq!(
        lines(&got.stdout)[..3],
        ["Name:            shop", "Namespace:       team-a", "Kind:            Deployment (apps/v1)"]
    );

    let path = manifest.to_str().expect("utf-8");
    let got = binary(base(&["check", "-f", path, "--as", "ci-bot", "--as-group", "ci-pipelines"])).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    let out = lines(&got.stdout);
    assert_eq!(out[1], "User:     ci-bot (groups ci-pipelines)");
    assert_eq!(out[3], "CREATE configmaps/settings -n team-a: allowed");
    assert_eq!(out[5], "    Applied-By:      ci-bot");

    let got = binary(base(&["show", "deploy/nope"])).await;
    assert_eq!((got.code, got.stdout.as_str()), (1, ""));
    assert_eq!(got.stderr, "error: deployments.apps \"nope\" not found\n");

    let kc = kubeconfig.to_str().expect("utf-8").to_owned();
    let got = binary(["--kubeconfig", &kc, "--context", "missing", "list"].map(String::from).to_vec()).await;
    assert_eq!(got.code, 1);
    assert!(got.stderr.starts_with("error: context \"missing\": "), "{}", got.stderr);
}

// ---- blame ---------------------------------------------------------------------------

use hallmark::plugin::blame::{Source, blame, blame_document, incomplete_note, parse_fields, render_blame};

fn fields(args: &[&str]) -> Vec<hallmark::ownership::path::FieldPath> {
    parse_fields(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).expect("valid fields")
}

/// The Flux-applied platform-agent with a short history that does not reach its create:
/// a developer's env change (newest), then an on-call write that changed 10 fields of
/// which its entry names 8.
fn agent_with_history() -> Value {
    let mut obj = data("deploy-platform-agent.json");
    let listed: Vec<String> = (0..8).map(|i| format!("metadata.labels[\"x{i}\"]")).collect();
    let history = json!([
        {"at": "2026-11-27T08:00:00Z", "by": "dev", "channel": "push", "trust": "none", "manager": "kubectl-set",
         "changed": ["spec.template.spec.containers[name=agent].env[name=DEBUG_PROFILING].value"]},
        {"at": "2026-11-27T07:00:00Z", "by": "sre-alice", "channel": "break-glass", "trust": "none",
         "manager": "kubectl-patch", "changed": listed, "more": 2},
    ]);
    obj["metadata"]["annotations"]["hallmark.dev/history"] = json!(history.to_string());
    obj
}

#[test]
fn blame_names_the_newest_write_that_changed_each_field_down_to_the_create() {
    let obj = data("deploy-shop-stamped.json");
    let report = blame(
        &obj,
        &keys(),
        &fields(&[
            "spec.template.spec.containers[name=shop].image",
            "spec.template.spec.containers[name=shop].resources",
            "spec.replicas",
        ]),
    );
    let who: Vec<(&str, Source, Option<&str>, Option<&str>)> =
        report.rows.iter().map(|r| (r.field.as_str(), r.source, r.by.as_deref(), r.at.as_deref())).collect();
    assert_eq!(
        who,
        [
            (
                "spec.template.spec.containers[name=shop].image",
                Source::History,
                Some("gha:acme/shop"),
                Some("2026-11-27T05:40:00Z")
            ),
            // A change below a field changes the field.
            (
                "spec.template.spec.containers[name=shop].resources",
                Source::History,
                Some("dev"),
                Some("2026-11-27T03:02:10Z")
            ),
            // Never changed since: the create set it.
            ("spec.replicas", Source::History, Some("gha:acme/shop"), Some("2026-11-27T01:48:45Z")),
        ]
    );
    assert_eq!(report.rows[0].commit.as_deref(), Some("89e6c98d92887913cadf06b2adb97f26cde4849b"));
    assert_eq!(report.rows[2].operation.as_deref(), Some("create"));
    assert_eq!(report.rows[2].commit.as_deref(), Some("3f786850e387550fdab836ed7e6dc881de23001b"));
    assert!(incomplete_note(&report).is_none());
}

#[test]
fn blame_falls_back_to_managed_fields_and_says_when_the_history_may_hide_a_write() {
    let obj = agent_with_history();
    let report = blame(
        &obj,
        &keys(),
        &fields(&["spec.template.spec.containers[*].env[name=DEBUG_PROFILING]", "spec.replicas", "spec.paused"]),
    );
    let env = &report.rows[0];
    assert_eq!((env.source, env.by.as_deref(), env.unlisted_newer), (Source::History, Some("dev"), 0));
    let replicas = &report.rows[1];
    assert_eq!(replicas.source, Source::ManagedFields);
    assert_eq!(replicas.manager.as_deref(), Some("kustomize-controller"));
    assert_eq!(replicas.operation.as_deref(), Some("Apply"));
    assert_eq!(replicas.unlisted_newer, 2, "sre-alice's write changed 2 fields it does not name");
    assert_eq!(report.rows[2].source, Source::Unknown);
    let out = render_blame(&obj, &report, now(), true);
    assert_eq!(
        lines(&out),
        [
            "Name:        platform-agent",
            "Namespace:   team-a",
            "Kind:        Deployment (apps/v1)",
            "",
            "FIELD                                                        AGE      BY                               COMMITTER   CHANNEL   TRUST    COMMIT   PIPELINE   SOURCE",
            "spec.template.spec.containers[*].env[name=DEBUG_PROFILING]   40m      dev                              <none>      push      none     <none>   <none>     history",
            "spec.replicas                                                6h51m    kustomize-controller (manager)   <none>      <none>    <none>   <none>   <none>     managedFields*",
            "spec.paused                                                  <none>   <none>                           <none>      <none>    <none>   <none>   <none>     unknown*",
        ]
    );
    assert!(incomplete_note(&report).is_some_and(|n| n.starts_with("* may be incomplete")));
}

#[test]
fn blame_without_fields_answers_every_field_but_the_stamp_itself() {
    let report = blame(&data("deploy-shop-stamped.json"), &keys(), &[]);
    let names: Vec<&str> = report.rows.iter().map(|r| r.field.as_str()).collect();
    assert!(names.contains(&"spec.replicas"), "{names:?}");
    assert!(names.contains(&"spec.template.spec.containers[name=shop].image"), "{names:?}");
    assert!(names.iter().all(|n| !n.contains("hallmark.dev/")), "{names:?}");
    assert!(report.rows.iter().all(|r| r.source == Source::History), "the history reaches the create");
    let doc = blame_document(&data("deploy-shop-stamped.json"), &report);
    assert_eq!(doc["name"], "shop");
    assert_eq!(doc["fields"].as_array().map(Vec::len), Some(report.rows.len()));
}

#[tokio::test]
async fn blame_runs_end_to_end_with_kubectls_flags_and_errors() {
    let server = mock::ApiServer::start(false).await;
    let field = "spec.template.spec.containers[name=shop].resources.limits.memory";
    let got = kubectl_hallmark(&server, &["blame", "deploy/shop", field, "-o", "json"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    let doc: Value = serde_json::from_str(&got.stdout).expect("JSON output");
    assert_eq!(doc["fields"][0]["field"], field);
    assert_eq!(doc["fields"][0]["by"], "dev");
    assert_eq!(doc["fields"][0]["source"], "history");

    let got = kubectl_hallmark(&server, &["blame", "deployment", "shop", "spec.replicas", "--no-headers"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert!(got.stdout.starts_with("spec.replicas   "), "{}", got.stdout);
    assert!(got.stdout.contains("gha:acme/shop") && got.stdout.contains("3f786850"), "{}", got.stdout);

    let got = kubectl_hallmark(&server, &["blame", "deploy/shop", "spec..replicas"]).await;
    assert_eq!((got.code, got.stdout.as_str()), (2, ""));
    assert!(got.stderr.starts_with("error: invalid field \"spec..replicas\": column"), "{}", got.stderr);

    let got = kubectl_hallmark(&server, &["blame", "deploy/nope"]).await;
    assert_eq!((got.code, got.stderr.as_str()), (1, "error: deployments.apps \"nope\" not found\n"));
}

/// `drift`: a rule makes the env Git-owned; the variable `kubectl set env` added is held by
/// kubectl-set, not by the reconciler: drift, exit 1, and a patch holding its live value.
#[tokio::test]
async fn drift_lists_git_owned_fields_held_outside_git_and_prints_their_patch() {
    let server = mock::ApiServer::start(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: platform}\nspec:\n  owner: {name: platform-config, reconcilers: {fieldManagers: [kustomize-controller]}}\n  rules:\n    - match: {kinds: [Deployment]}\n      fields: [\"spec.template.spec.containers[*].env\"]\n      action: deny\n",
    )
    .expect("write");
    let policy = policy.display().to_string();
    let got = kubectl_hallmark(&server, &["drift", "deploy/platform-agent", "--policy", &policy]).await;
    assert_eq!(got.code, 1, "{}", got.stderr);
    let row = lines(&got.stdout).into_iter().find(|l| l.contains("DEBUG_PROFILING")).expect("a drift row");
    assert!(row.contains("kubectl-set"), "{row}");
    let object = data("deploy-platform-agent.json");
    let live = object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "DEBUG_PROFILING"))
        .expect("the variable")["value"]
        .clone();
    let got = kubectl_hallmark(&server, &["drift", "deploy/platform-agent", "--policy", &policy, "--patch"]).await;
    assert_eq!(got.code, 1);
    let patch: Value = serde_yaml::from_str(&got.stdout).expect("YAML patch");
    assert_eq!(patch["metadata"], json!({"name": "platform-agent", "namespace": "team-a"}));
    let env = &patch["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env, &json!([{"name": "DEBUG_PROFILING", "value": live}]), "{}", got.stdout);
    // Without a rule the variable is not Git-owned (kubectl-set holds it, no break-glass).
    let none = dir.path().join("none.yaml");
    std::fs::write(
        &none,
        "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: platform}\nspec:\n  owner: {name: platform-config, reconcilers: {fieldManagers: [kustomize-controller]}}\n  deleteProtection: true\n",
    )
    .expect("write");
    let got =
        kubectl_hallmark(&server, &["drift", "deploy/platform-agent", "--policy", &none.display().to_string()]).await;
    assert_eq!((got.code, got.stdout.as_str()), (0, ""), "{}", got.stderr);
    assert!(got.stderr.contains("No drift"), "{}", got.stderr);
}
