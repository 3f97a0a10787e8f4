//! Request bodies shared by `benches/load.rs` and `benches/core.rs`: realistic
//! AdmissionReviews built in-process from the captured kube-apiserver fixtures in
//! `tests/fixtures`, and the policies they are judged by.
//!
//! Every body is compact JSON ending in a newline, as kube-apiserver sends it. A body has
//! one placeholder `request.uid` whose 36 bytes are overwritten per request (`Body::with_uid`),
//! so that every request carries a unique uid without re-serialising.
#![allow(dead_code)]

use hallmark::policy::PolicySet;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// The uid written into every template; replaced in place per request.
pub const UID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let p = fixtures_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).expect("fixture is JSON")
}

/// One kind of request the benchmarks send.
#[derive(Clone)]
pub struct Body {
    /// Short name used in tables and JSON (`create-6k`, `update-16k`, ...).
    pub name: &'static str,
    /// The exact bytes, with `UID_PLACEHOLDER` as `request.uid`.
    pub bytes: Vec<u8>,
    /// Byte offset of the placeholder uid.
    pub uid_at: usize,
    /// hallmark's `/mutate` answers this one with a patch (the floor never patches).
    pub mutate_patches: bool,
}

impl Body {
    fn new(name: &'static str, bytes: Vec<u8>, mutate_patches: bool) -> Body {
        let needle = UID_PLACEHOLDER.as_bytes();
        let hits: Vec<usize> =
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
        assert_eq!(hits.len(), 1, "{name}: the placeholder uid must occur exactly once");
        Body { name, uid_at: hits[0], bytes, mutate_patches }
    }

    /// A copy of the body whose `request.uid` is `uid` (36 ASCII bytes).
    pub fn with_uid(&self, uid: &[u8; 36]) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[self.uid_at..self.uid_at + 36].copy_from_slice(uid);
        b
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The body with the placeholder uid (for the in-process micro-benchmarks).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

/// A unique, well-formed uid: `run` tells servers/runs apart, `n` counts requests.
pub fn uid(run: u32, n: u64) -> [u8; 36] {
    let s = format!("{run:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", (n >> 48) & 0xffff, 0, 0, n & 0xffff_ffff_ffff);
    let mut out = [0u8; 36];
    out.copy_from_slice(s.as_bytes());
    out
}

fn encode(review: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(review).expect("json");
    b.push(b'\n');
    b
}

/// Deployment CREATE, exactly as captured (`deploy-web-create-csa-dev.json`, ~6 KB):
/// `kubectl apply` by a developer, with the last-applied annotation.
pub fn create_6k() -> Body {
    let mut bytes = fixture_bytes("deploy-web-create-csa-dev.json");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let uid = v["request"]["uid"].as_str().expect("uid").to_owned();
    assert_eq!(uid.len(), 36);
    let at = bytes.windows(36).position(|w| w == uid.as_bytes()).expect("uid in the bytes");
    bytes[at..at + 36].copy_from_slice(UID_PLACEHOLDER.as_bytes());
    Body::new("create-6k", bytes, true)
}

/// Deployment UPDATE of ~16 KB: a client-side `kubectl apply` that changes the image of the
/// `web` container, with object and oldObject, three managedFields managers
/// (`kubectl-client-side-apply`, `kustomize-controller` owning the containers' resources,
/// `kube-controller-manager` on status), the last-applied annotation and a previous
/// hallmark stamp with five history entries.
pub fn update_16k() -> Body {
    let review = deployment_update(2, 16 * 1024);
    Body::new("update-16k", encode(&review), true)
}

/// The 16 KB UPDATE, but the write also changes the `web` container's CPU limit, a field
/// `POLICY_YAML` gives to Git: `/validate` denies it (the load benchmark checks that the
/// policy is in force with it).
pub fn update_16k_owned_change() -> Body {
    let mut review = deployment_update(2, 16 * 1024);
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("2");
    Body::new("update-16k-owned", encode(&review), true)
}

/// The same write on a Deployment with ten containers (~64 KB).
pub fn update_64k() -> Body {
    let review = deployment_update(10, 64 * 1024);
    Body::new("update-64k", encode(&review), true)
}

/// A ~3 MiB UPDATE: a ConfigMap of ~1.5 MiB (48 keys of ~32 KB, server-side applied by
/// `kubectl`, so no last-applied annotation) whose write changes one key.
pub fn update_3mib() -> Body {
    let review = configmap_update(48, 32 * 1024);
    Body::new("update-3mib", encode(&review), true)
}

/// The four bodies the load benchmark and the micro-benchmarks use.
pub fn all() -> Vec<Body> {
    vec![create_6k(), update_16k(), update_64k(), update_3mib()]
}

// ---------------------------------------------------------------------------------------

const HALLMARK: &str = "hallmark.dev/";

/// Builds a Deployment UPDATE with `containers` containers, adding env vars to every
/// container until the body is at least `target` bytes.
pub fn deployment_update(containers: usize, target: usize) -> Value {
    let mut env = 0;
    loop {
        let review = deployment_update_with(containers, env);
        if encode(&review).len() >= target || env > 10_000 {
            return review;
        }
        // Each env var adds ~300 bytes per container (spec, last-applied and managedFields,
        // in object and oldObject): approach the target in a few steps.
        let missing = target - encode(&review).len();
        env += (missing / (300 * containers)).max(1);
    }
}

fn deployment_update_with(containers: usize, extra_env: usize) -> Value {
    let fx = fixture("deploy-web-update-csa-image-dev.json");
    let req = &fx["request"];
    let base = req["object"].clone();
    // The stored object: the captured one, widened, with managers and a stamp.
    let mut old = base.clone();
    set_containers(&mut old, containers, extra_env, "registry.example.com/acme/web:1.5.0");
    set_status(&mut old);
    set_stamp(&mut old);
    let csa_fields = csa_fields(&old);
    old["metadata"]["managedFields"] = json!([
        managed("kubectl-client-side-apply", "Update", "2026-11-27T01:48:29Z", None, csa_fields),
        managed("kustomize-controller", "Apply", "2026-11-27T01:50:00Z", None, flux_fields(&old)),
        managed("kube-controller-manager", "Update", "2026-11-27T01:50:02Z", Some("status"), status_fields()),
    ]);
    // The write: `kubectl apply` with a new image for `web`.
    let mut new = old.clone();
    set_containers(&mut new, containers, extra_env, "registry.example.com/acme/web:1.6.0");
    new["metadata"]["managedFields"][0]["time"] = json!("2026-11-27T02:10:41Z");

    let mut r = req.clone();
    r["uid"] = json!(UID_PLACEHOLDER);
    r["object"] = new;
    r["oldObject"] = old;
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": r})
}

/// Replaces the containers of the pod template (and of the last-applied manifest) with
/// `n` containers cloned from the captured `web` and `sidecar`, each with `extra_env`
/// more env vars; `web` gets `image`.
fn set_containers(obj: &mut Value, n: usize, extra_env: usize, image: &str) {
    let widen = |containers: &Value| -> Vec<Value> {
        let list = containers.as_array().expect("containers");
        (0..n)
            .map(|i| {
                let mut c = if i == 0 { list[0].clone() } else { list[1].clone() };
                if i == 0 {
                    c["image"] = json!(image);
                } else if i > 1 {
                    c["name"] = json!(format!("sidecar-{i}"));
                }
                let env = c["env"].as_array_mut().expect("env");
                env.truncate(if i == 0 { 3 } else { 2 });
                for j in 0..extra_env {
                    env.push(json!({"name": format!("EXTRA_{j:03}"), "value": format!("value-{j:03}-of-{i}")}));
                }
                c
            })
            .collect()
    };
    let spec = &mut obj["spec"]["template"]["spec"];
    let wide = widen(&spec["containers"]);
    spec["containers"] = Value::Array(wide);

    let ann = &mut obj["metadata"]["annotations"];
    let last = ann["kubectl.kubernetes.io/last-applied-configuration"].as_str().expect("last-applied");
    let mut manifest: Value = serde_json::from_str(last).expect("last-applied is JSON");
    let wide = widen(&manifest["spec"]["template"]["spec"]["containers"]);
    manifest["spec"]["template"]["spec"]["containers"] = Value::Array(wide);
    let mut text = serde_json::to_string(&manifest).expect("json");
    text.push('\n');
    ann["kubectl.kubernetes.io/last-applied-configuration"] = json!(text);
}

fn set_status(obj: &mut Value) {
    obj["status"] = json!({
        "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-27T01:48:40Z",
             "lastTransitionTime": "2026-11-27T01:48:40Z", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-27T01:50:02Z",
             "lastTransitionTime": "2026-11-27T01:48:25Z", "reason": "NewReplicaSetAvailable",
             "message": "ReplicaSet \"web-7c9d8b6f5d\" has successfully progressed."}
        ]
    });
}

/// The stamp hallmark left on the previous write, with five history entries.
fn set_stamp(obj: &mut Value) {
    let history: Vec<Value> = (0..5)
        .map(|i| {
            json!({"at": format!("2026-11-2{}T0{}:48:29Z", 6 - i / 3, 9 - i), "by": "dev", "channel": "push",
                   "trust": "none", "manager": "kubectl-client-side-apply",
                   "changed": ["spec.template.spec.containers[name=web].image"]})
        })
        .collect();
    let ann = obj["metadata"]["annotations"].as_object_mut().expect("annotations");
    for (k, v) in [
        ("applied-by", "dev".to_owned()),
        ("applied-at", "2026-11-26T09:48:29Z".to_owned()),
        ("field-manager", "kubectl-client-side-apply".to_owned()),
        ("channel", "push".to_owned()),
        ("trust", "none".to_owned()),
        ("history", serde_json::to_string(&history).expect("json")),
    ] {
        ann.insert(format!("{HALLMARK}{k}"), json!(v));
    }
}

fn managed(manager: &str, operation: &str, time: &str, subresource: Option<&str>, fields: Value) -> Value {
    let mut m = json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1", "time": time,
                       "fieldsType": "FieldsV1", "fieldsV1": fields});
    if let Some(s) = subresource {
        m["subresource"] = json!(s);
    }
    m
}

fn key(field: &str, value: &str) -> String {
    format!("k:{{{}:{}}}", json!(field), json!(value))
}

/// What client-side apply owns: every field of the manifest, the annotations included
/// (hallmark's stamp was patched in by the webhook during the previous write, so the
/// apiserver attributed it to that write's manager).
fn csa_fields(obj: &Value) -> Value {
    let mut containers = Map::new();
    for c in obj["spec"]["template"]["spec"]["containers"].as_array().expect("containers") {
        let mut env = Map::new();
        for e in c["env"].as_array().expect("env") {
            let leaf = if e.get("valueFrom").is_some() {
                json!({".": {}, "f:name": {}, "f:valueFrom": {"f:fieldRef": {}}})
            } else {
                json!({".": {}, "f:name": {}, "f:value": {}})
            };
            env.insert(key("name", e["name"].as_str().expect("name")), leaf);
        }
        let mut ports = Map::new();
        for p in c["ports"].as_array().expect("ports") {
            ports.insert(
                format!("k:{}", json!({"containerPort": p["containerPort"], "protocol": "TCP"})),
                json!({".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}),
            );
        }
        let mut entry = json!({".": {}, "f:env": env, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                               "f:ports": ports,
                               "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}},
                                               "f:requests": {"f:cpu": {}, "f:memory": {}}},
                               "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}});
        if c.get("readinessProbe").is_some() {
            entry["f:readinessProbe"] = json!({"f:failureThreshold": {}, "f:httpGet": {"f:path": {}, "f:port": {},
                                               "f:scheme": {}}, "f:periodSeconds": {}, "f:successThreshold": {},
                                               "f:timeoutSeconds": {}});
        }
        containers.insert(key("name", c["name"].as_str().expect("name")), entry);
    }
    let mut annotations = Map::new();
    for k in obj["metadata"]["annotations"].as_object().expect("annotations").keys() {
        annotations.insert(format!("f:{k}"), json!({}));
    }
    json!({
        "f:metadata": {"f:annotations": annotations,
                       "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {},
                                    "f:tier": {}}},
        "f:spec": {"f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
                   "f:selector": {}, "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {},
                                                                        "f:maxUnavailable": {}}, "f:type": {}},
                   "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {},
                                                              "f:tier": {}}},
                                  "f:spec": {"f:containers": containers, "f:dnsPolicy": {}, "f:restartPolicy": {},
                                             "f:schedulerName": {}, "f:securityContext": {},
                                             "f:terminationGracePeriodSeconds": {}}}}
    })
}

/// What Flux (kustomize-controller) applies: the `tier` label and every container's resources.
fn flux_fields(obj: &Value) -> Value {
    let mut containers = Map::new();
    for c in obj["spec"]["template"]["spec"]["containers"].as_array().expect("containers") {
        containers.insert(
            key("name", c["name"].as_str().expect("name")),
            json!({".": {}, "f:name": {}, "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}},
                                                           "f:requests": {"f:cpu": {}, "f:memory": {}}}}),
        );
    }
    json!({"f:metadata": {"f:labels": {"f:tier": {}}},
           "f:spec": {"f:template": {"f:spec": {"f:containers": containers}}}})
}

fn status_fields() -> Value {
    json!({"f:status": {"f:availableReplicas": {}, "f:conditions": {".": {},
            "k:{\"type\":\"Available\"}": {".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {},
                                            "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}},
            "k:{\"type\":\"Progressing\"}": {".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {},
                                              "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}},
           "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}})
}

/// A ConfigMap UPDATE: `keys` data entries of about `value_len` bytes each, server-side
/// applied by `kubectl`; the write changes the value of one key.
pub fn configmap_update(keys: usize, value_len: usize) -> Value {
    let fx = fixture("cm-odd-keys-create-csa-dev.json");
    let req = &fx["request"];
    let mut data = Map::new();
    let mut owned = Map::new();
    for k in 0..keys {
        let name = format!("dashboard-{k:03}.json");
        data.insert(name.clone(), json!(text_block(k, value_len)));
        owned.insert(format!("f:{name}"), json!({}));
    }
    let meta = |time: &str| {
        json!({"name": "dashboards", "namespace": "team-a", "uid": "0e6c2f0b-5a43-4d7e-9a8e-2a8f6c1d9b11",
               "resourceVersion": "4711", "creationTimestamp": "2026-11-27T01:40:00Z",
               "labels": {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/part-of": "observability"},
               "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": time,
                                  "fieldsType": "FieldsV1",
                                  "fieldsV1": {"f:data": owned.clone(),
                                               "f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {},
                                                                           "f:app.kubernetes.io/part-of": {}}}}}]})
    };
    let old = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("2026-11-27T01:40:00Z"),
                     "data": data.clone()});
    let mut new_data = data;
    new_data
        .insert("dashboard-007.json".to_owned(), json!(format!("{{\"revision\": 2}}\n{}", text_block(7, value_len))));
    let new =
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("2026-11-27T02:12:00Z"), "data": new_data});
    let mut r = req.clone();
    r["uid"] = json!(UID_PLACEHOLDER);
    r["name"] = json!("dashboards");
    r["operation"] = json!("UPDATE");
    r["options"] = json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"});
    r["object"] = new;
    r["oldObject"] = old;
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": r})
}

/// Deterministic, JSON-ish text of about `len` bytes (a Grafana dashboard stand-in).
fn text_block(seed: usize, len: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    let mut i = 0usize;
    while s.len() < len {
        let x = seed.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(40_503)) % 100_000;
        s.push_str(&format!(
            "{{\"id\": {i}, \"title\": \"panel {x}\", \"expr\": \"rate(http_requests_total[5m])\"}}\n"
        ));
        i += 1;
    }
    s
}

// ---------------------------------------------------------------------------------------

/// The policy file the load benchmark gives `hallmark serve --policy`: Flux owns the
/// containers' resources and priority class of Deployments in `team-*` (deny), and every
/// field its field manager applied (`managedFields: warn`).
pub const POLICY_YAML: &str = r#"apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config
    repository: https://git.example.com/sre/cluster-config
    reconcilers:
      users: ["system:serviceaccount:flux-system:kustomize-controller"]
      fieldManagers: ["kustomize-controller"]
  rules:
    - match:
        groups: ["apps"]
        kinds: ["Deployment", "StatefulSet"]
        namespaces: ["team-*"]
      fields:
        - spec.template.spec.containers[*].resources
        - spec.template.spec.priorityClassName
        - metadata.labels["cost-center"]
      action: deny
  managedFields: warn
  deleteProtection: true
  breakGlass:
    groups: ["sre-oncall"]
"#;

/// The policy of `POLICY_YAML` with `rules` rules, loaded by `hallmark::policy::parse_documents`:
/// the first rule is the Deployment rule above; the others match other groups, kinds or
/// namespaces (so a request is checked against all of them and matched by one), as a
/// large multi-team policy would.
pub fn policy_yaml(rules: usize) -> String {
    let head = POLICY_YAML.split("  rules:\n").next().expect("rules");
    let tail = POLICY_YAML.split("  managedFields:").nth(1).expect("managedFields");
    let mut y = format!("{head}  rules:\n");
    for i in 0..rules {
        let (groups, kinds, ns) = match (i, i % 3) {
            (0, _) => ("\"apps\"".to_owned(), "\"Deployment\", \"StatefulSet\"".to_owned(), "team-*".to_owned()),
            (_, 0) => ("\"apps\"".to_owned(), "\"Deployment\"".to_owned(), format!("tenant-{i}-*")),
            (_, 1) => ("\"\"".to_owned(), "\"ConfigMap\", \"Service\"".to_owned(), format!("team-{i}")),
            _ => (format!("\"example{i}.dev\""), format!("\"Widget{i}\""), "*".to_owned()),
        };
        y.push_str(&format!(
            "    - match:\n        groups: [{groups}]\n        kinds: [{kinds}]\n        namespaces: [\"{ns}\"]\n      \
             fields:\n        - spec.template.spec.containers[*].resources\n        - spec.template.spec.priorityClassName\n        \
             - metadata.labels[\"cost-center-{i}\"]\n      action: deny\n"
        ));
    }
    y.push_str("  managedFields:");
    y.push_str(tail);
    y
}

/// `policy_yaml(rules)`, compiled.
pub fn policy_set(rules: usize) -> PolicySet {
    let policies = hallmark::policy::parse_documents(&policy_yaml(rules), "bench-policy.yaml")
        .unwrap_or_else(|e| panic!("bench policy: {e}"));
    PolicySet::new(policies)
}
