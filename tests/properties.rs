//! Properties of the pure core, for arbitrary objects and arbitrary writes (no sockets):
//!
//! * the `/mutate` patch applies cleanly to `request.object` and changes nothing but
//!   hallmark's own annotations;
//! * applying the same write again (`oldObject` = `object` = the patched object) yields no
//!   patch, at any later time (no-op writes stay no-ops);
//! * the diff of an object with itself is empty;
//! * every path the diff prints parses back to the same path.

#[path = "support/checks.rs"]
mod checks;

use hallmark::admission::Review;
use hallmark::config::Settings;
use hallmark::ownership::diff::{DiffOptions, ListKeys, diff};
use hallmark::ownership::path::parse;
use hallmark::policy::{CompiledPolicy, Enforcement, PolicySet, Subjects};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const PREFIX: &str = "hallmark.dev/";
const STAMP_KEYS: [&str; 11] = [
    "applied-by",
    "applied-at",
    "field-manager",
    "channel",
    "trust",
    "history",
    "committer",
    "pipeline",
    "branch",
    "commit",
    "repository",
];

// ---- generators ----

/// Map keys, including ones that need quoting in a path or escaping in a JSON pointer.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-d]{1,3}",
        1 => prop::sample::select(vec![
            "name", "image", "a.b", "a/b", "~", "~1", "a~b/c", "", " ", "[x]", "k=v", "\"q\"", "a,b", "*", "é", "$x",
            "-", "0", "containers", "env", "ports", "metadata", "status",
        ])
        .prop_map(str::to_owned),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..300).prop_map(|n| json!(n)),
        Just(json!(1.5)),
        "[a-c =,\\]\\[\"\\\\]{0,4}".prop_map(Value::String),
    ]
}

/// A list element of a keyed list (containers, env): a map with a `name`.
fn named_element(inner: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["web", "side", "a b", "x]", "=", "\"", "1"]), inner)
        .prop_map(|(name, v)| json!({"name": name, "value": v}))
}

fn json_tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner.clone(), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            prop::collection::vec(named_element(inner.clone()), 0..3).prop_map(|items| json!({ "containers": items })),
        ]
    })
}

fn string_map(keys: impl Strategy<Value = String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(keys, "[a-z0-9 ]{0,6}", 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn annotation_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(STAMP_KEYS.to_vec()).prop_map(|k| format!("{PREFIX}{k}")),
        2 => key(),
        1 => Just("kubectl.kubernetes.io/last-applied-configuration".to_owned()),
    ]
}

/// A value hallmark may find in one of its annotations: anything, including a valid history.
fn annotation_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[a-z0-9:/.# -]{0,12}".prop_map(Value::String),
        1 => Just(json!(r#"[{"at":"2026-01-01T00:00:00Z","by":"x","channel":"push","trust":"none"}]"#)),
        1 => Just(json!("[not json")),
        1 => scalar(),
    ]
}

fn managed_fields() -> impl Strategy<Value = Value> {
    let entry = (
        prop::sample::select(vec!["kustomize-controller", "kubectl-client-side-apply", "kubectl-patch", "helm"]),
        prop::sample::select(vec!["Apply", "Update"]),
        prop::sample::select(vec![
            json!({"f:spec": {"f:replicas": {}}}),
            json!({"f:metadata": {"f:annotations": {"f:hallmark.dev/branch": {}, "f:team": {}}}}),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:value": {}}}}}),
            json!({"f:data": {".": {}, "f:a": {}}}),
            json!({"f:spec": "bad"}),
            json!({}),
        ]),
        prop::option::of(Just("2026-11-27T01:48:51Z")),
    )
        .prop_map(|(manager, operation, fields, time)| {
            let mut e = json!({"manager": manager, "operation": operation, "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": fields});
            if let Some(t) = time {
                e["time"] = json!(t);
            }
            e
        });
    prop::collection::vec(entry, 0..3).prop_map(Value::Array)
}

/// An object: metadata (labels, annotations, managedFields, maintained fields) and trees.
fn object() -> impl Strategy<Value = Value> {
    (
        string_map(key()),
        prop::option::of(prop::collection::btree_map(annotation_key(), annotation_value(), 0..6)),
        managed_fields(),
        json_tree(),
        prop::option::of(json_tree()),
        0..3u8,
    )
        .prop_map(|(labels, annotations, mf, spec, data, shape)| {
            let mut meta = json!({"name": "x", "namespace": "team-a", "labels": labels, "managedFields": mf,
                                  "resourceVersion": "1", "generation": 1});
            match (annotations, shape) {
                (Some(a), _) => meta["annotations"] = Value::Object(a.into_iter().collect()),
                (None, 1) => meta["annotations"] = Value::Null,
                _ => {}
            }
            let mut obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec});
            if let Some(d) = data {
                obj["data"] = d;
            }
            obj
        })
}

/// One change a writer (or the apiserver) makes to an object.
#[derive(Debug, Clone)]
enum Edit {
    SetSpec(Vec<String>, Value),
    RemoveSpecKey(String),
    SetLabel(String, String),
    RemoveLabel(String),
    SetAnnotation(String, Value),
    RemoveAnnotation(String),
    DropAnnotations,
    Maintained(u8),
    PushContainer(String),
    FirstContainerImage(Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => (prop::collection::vec(key(), 1..4), json_tree()).prop_map(|(p, v)| Edit::SetSpec(p, v)),
        1 => key().prop_map(Edit::RemoveSpecKey),
        1 => (key(), "[a-z]{0,3}").prop_map(|(k, v)| Edit::SetLabel(k, v)),
        1 => key().prop_map(Edit::RemoveLabel),
        3 => (annotation_key(), annotation_value()).prop_map(|(k, v)| Edit::SetAnnotation(k, v)),
        1 => annotation_key().prop_map(Edit::RemoveAnnotation),
        1 => Just(Edit::DropAnnotations),
        1 => (0u8..4).prop_map(Edit::Maintained),
        1 => prop::sample::select(vec!["web", "new", "x]"]).prop_map(|n| Edit::PushContainer(n.to_owned())),
        1 => scalar().prop_map(Edit::FirstContainerImage),
    ]
}

fn meta(o: &mut Value) -> Option<&mut Map<String, Value>> {
    o.get_mut("metadata")?.as_object_mut()
}

fn apply_edit(obj: &mut Value, e: &Edit) {
    match e {
        Edit::SetSpec(path, v) => {
            let mut at = &mut obj["spec"];
            for k in path {
                if !at.is_object() {
                    *at = json!({});
                }
                at = at.as_object_mut().expect("map").entry(k.clone()).or_insert(Value::Null);
            }
            *at = v.clone();
        }
        Edit::RemoveSpecKey(k) => {
            if let Some(m) = obj["spec"].as_object_mut() {
                m.remove(k);
            }
        }
        Edit::SetLabel(k, v) => {
            if let Some(m) = meta(obj) {
                let labels = m.entry("labels").or_insert(json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert(k.clone(), json!(v));
                }
            }
        }
        Edit::RemoveLabel(k) => {
            if let Some(l) = meta(obj).and_then(|m| m.get_mut("labels")).and_then(Value::as_object_mut) {
                l.remove(k);
            }
        }
        Edit::SetAnnotation(k, v) => {
            if let Some(m) = meta(obj) {
                let a = m.entry("annotations").or_insert(json!({}));
                if a.is_null() {
                    *a = json!({});
                }
                if let Some(a) = a.as_object_mut() {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
        Edit::RemoveAnnotation(k) => {
            if let Some(a) = meta(obj).and_then(|m| m.get_mut("annotations")).and_then(Value::as_object_mut) {
                a.remove(k);
            }
        }
        Edit::DropAnnotations => {
            if let Some(m) = meta(obj) {
                m.remove("annotations");
            }
        }
        Edit::Maintained(n) => {
            if let Some(m) = meta(obj) {
                match n {
                    0 => m.insert("resourceVersion".into(), json!("2")),
                    1 => m.insert("generation".into(), json!(2)),
                    2 => m.insert("uid".into(), json!("0d1e2f")),
                    _ => m.insert(
                        "managedFields".into(),
                        json!([{"manager": "kubectl", "operation": "Update",
                        "time": "2026-11-27T02:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {}}]),
                    ),
                };
            }
        }
        Edit::PushContainer(name) => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            let list = spec.as_object_mut().expect("map").entry("containers").or_insert(json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(json!({"name": name, "image": "img"}));
            }
        }
        Edit::FirstContainerImage(v) => {
            if let Some(first) = obj.pointer_mut("/spec/containers/0").and_then(Value::as_object_mut) {
                first.insert("image".into(), v.clone());
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Writer {
    user: Value,
    field_manager: Option<&'static str>,
}

fn writer() -> impl Strategy<Value = Writer> {
    let user = prop::sample::select(vec![
        json!({"username": "dev", "uid": "uid-dev", "groups": ["developers", "system:authenticated"]}),
        json!({"username": "system:serviceaccount:ci:deployer", "groups": ["ci-pipelines"],
               "extra": {"authentication.kubernetes.io/credential-id": ["JTI=1"]}}),
        json!({"username": "gha:acme/shop", "groups": ["ci-pipelines"],
               "extra": {"hallmark.dev/commit": ["3f78"], "hallmark.dev/branch": ["main", " "], "other": ["x"]}}),
        json!({"username": "system:serviceaccount:flux-system:kustomize-controller", "groups": [],
               "extra": {"authentication.kubernetes.io/pod-name": ["kc-1"]}}),
        json!({"username": "sre-alice", "groups": ["sre-oncall"]}),
        json!({"username": "", "groups": null, "extra": null}),
    ]);
    let manager =
        prop::option::of(prop::sample::select(vec!["kubectl-client-side-apply", "kustomize-controller", "kubectl"]));
    (user, manager).prop_map(|(user, field_manager)| Writer { user, field_manager })
}

// ---- the engine ----

fn engine(history: usize) -> Engine {
    let settings =
        Settings { history, declarers: Subjects::new(vec![], vec!["ci-pipelines".into()]), ..Settings::default() };
    Engine::new(Stamper::new(settings), OnError::Allow)
}

fn policy_set(with_policy: bool) -> PolicySet {
    if !with_policy {
        return PolicySet::default();
    }
    PolicySet {
        policies: vec![CompiledPolicy {
            name: "platform".into(),
            owner_name: "platform-config".into(),
            repository: None,
            reconcilers: Subjects::new(vec!["system:serviceaccount:flux-system:kustomize-controller".into()], vec![]),
            reconciler_field_managers: vec!["kustomize-controller".into()],
            require_pod_token: true,
            rules: vec![],
            managed_fields: Enforcement::Deny,
            delete_protection: true,
            break_glass: Subjects::new(vec![], vec!["sre-oncall".into()]),
        }],
    }
}

fn review(uid: &str, w: &Writer, old: Option<&Value>, new: &Value) -> Review {
    let v = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "x", "namespace": "team-a",
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": w.user,
            "object": new, "oldObject": old, "dryRun": false,
            "options": w.field_manager.map(|m| json!({"kind": "UpdateOptions", "fieldManager": m})),
        }
    });
    Review::decode(&serde_json::to_vec(&v).expect("json")).expect("a well-formed review")
}

/// The object with hallmark's annotations taken out (and an emptied map dropped).
fn without_stamp(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !k.starts_with(PREFIX));
        }
        if meta.get("annotations").is_some_and(|a| a.is_null() || a.as_object().is_some_and(Map::is_empty)) {
            meta.remove("annotations");
        }
    }
    o
}

/// Applies the decision's patch to `object`, checking every operation's path.
fn apply(answer_patch: Option<&Vec<u8>>, object: &Value) -> Result<Value, TestCaseError> {
    let mut out = object.clone();
    if let Some(bytes) = answer_patch {
        let patch: json_patch::Patch =
            serde_json::from_slice(bytes).map_err(|e| TestCaseError::fail(format!("patch is not a JSONPatch: {e}")))?;
        for op in &patch.0 {
            let path = serde_json::to_value(op).expect("op")["path"].as_str().unwrap_or_default().to_owned();
            prop_assert!(
                path == "/metadata/annotations"
                    || path.starts_with(&format!("/metadata/annotations/{}", "hallmark.dev~1")),
                "the patch touches {}",
                path
            );
        }
        json_patch::patch(&mut out, &patch).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    }
    Ok(out)
}

fn now() -> jiff::Timestamp {
    "2026-11-27T10:00:00Z".parse().expect("ts")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_patch_applies_touches_only_the_stamp_and_a_repeat_is_a_noop(
        old in object(),
        edits in prop::collection::vec(edit(), 0..5),
        create in prop::bool::weighted(0.25),
        w in writer(),
        history in prop::sample::select(vec![0usize, 1, 5]),
        with_policy in any::<bool>(),
    ) {
        let mut new = old.clone();
        for e in &edits {
            apply_edit(&mut new, e);
        }
        let engine = engine(history);
        let policies = policy_set(with_policy);
        let first = review("first", &w, (!create).then_some(&old), &new);
        let d = engine.mutate(&first.request, &policies, now());
        prop_assert!(d.answer.allowed, "stamping never blocks a write");
        prop_assert!(d.answer.denial.is_none());
        let stored = apply(d.answer.patch.as_ref(), &new)?;
        prop_assert_eq!(without_stamp(&stored), without_stamp(&new), "only hallmark's annotations change");
        if d.outcome == "stamped" {
            // A stamp names the writer.
            let by = stored.pointer("/metadata/annotations/hallmark.dev~1applied-by");
            prop_assert!(by.is_some_and(Value::is_string), "applied-by is set: {:?}", by);
        }

        // The same write again, later: the stored object is both old and new.
        let again = review("again", &w, Some(&stored), &stored);
        let later = now().checked_add(jiff::SignedDuration::from_hours(1)).expect("ts");
        let d2 = engine.mutate(&again.request, &policies, later);
        prop_assert!(d2.answer.patch.is_none(), "a repeated write gets no patch: {:?}",
            d2.answer.patch.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()));
        prop_assert!(d2.answer.warnings.is_empty(), "{:?}", d2.answer.warnings);
        // /validate never patches and never fails on these.
        let v = engine.validate(&first.request, &policies);
        prop_assert!(v.answer.patch.is_none());
    }

    #[test]
    fn diff_of_an_object_with_itself_is_empty(obj in object(), tree in json_tree()) {
        let keys = ListKeys::from_objects(&[&obj]);
        for opts in [DiffOptions::new(PREFIX), DiffOptions::new(""), DiffOptions::new(PREFIX).with_list_keys(&keys)] {
            prop_assert!(diff(&obj, &obj.clone(), &opts).is_empty());
            prop_assert!(diff(&tree, &tree.clone(), &opts).is_empty());
        }
    }

    #[test]
    fn changed_paths_parse_back_to_the_same_path(
        old in object(),
        edits in prop::collection::vec(edit(), 1..5),
        a in json_tree(),
        b in json_tree(),
    ) {
        let mut new = old.clone();
        for e in &edits {
            apply_edit(&mut new, e);
        }
        let keys = ListKeys::from_objects(&[&old, &new]);
        let opts = DiffOptions::new(PREFIX).with_list_keys(&keys);
        // Objects are maps: wrap the arbitrary trees (a change of the root has no path).
        let (a, b) = (json!({ "spec": a }), json!({ "spec": b }));
        for (x, y) in [(&old, &new), (&a, &b)] {
            for change in diff(x, y, &opts) {
                let text = change.path.to_string();
                let parsed = parse(&text);
                prop_assert_eq!(parsed.as_ref(), Ok(&change.path), "{}", text);
                prop_assert!(change.old != change.new);
            }
        }
    }
}

/// Inputs the fuzzers found (after the fix), and every captured review, through the fuzz
/// targets' checks: `tests/data/crashers/<target>/*`.
#[test]
fn fuzz_crashers_and_fixtures_pass_the_fuzz_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crashers");
    let mut replayed = 0;
    for target in checks::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read crasher");
            let outcome = std::panic::catch_unwind(|| checks::run(target, &data));
            assert!(outcome.is_ok(), "{} fails {target} again", file.display());
            replayed += 1;
        }
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut reviews = 0;
    for entry in std::fs::read_dir(&fixtures).expect("fixtures").filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with(".after.json") {
            continue;
        }
        let data = std::fs::read(entry.path()).expect("fixture");
        checks::review_decode(&data);
        checks::mutate(&data);
        let v: Value = serde_json::from_slice(&data).expect("json");
        if let (Some(old), Some(new)) = (v["request"].get("oldObject"), v["request"].get("object")) {
            let pair = format!("{old}\n{new}");
            checks::diff_pair(pair.as_bytes());
            for o in [old, new] {
                for e in o.pointer("/metadata/managedFields").and_then(Value::as_array).into_iter().flatten() {
                    checks::fieldsv1_decode(e["fieldsV1"].to_string().as_bytes());
                }
            }
        }
        reviews += 1;
    }
    assert!(reviews > 30, "the fixtures were read");
    println!("replayed {replayed} crashers and {reviews} fixtures");
}
