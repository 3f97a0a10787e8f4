//! The invariants the fuzz targets check, shared with the regression test that replays
//! `tests/data/crashers/<target>/*` (`tests/properties.rs`). Each function panics when an
//! invariant does not hold; any input is acceptable otherwise.
//!
//! Included by path from `fuzz/fuzz_targets/*.rs`: keep it free of test-only crates (it may
//! use hallmark, serde_json, json-patch and jiff).
#![allow(dead_code)]

use hallmark::admission::{Answer, Review, encode_response};
use hallmark::config::Settings;
use hallmark::ownership::diff::{DiffOptions, ListKeys, diff, is_noop};
use hallmark::ownership::fieldsv1::FieldSet;
use hallmark::ownership::path::{FieldPath, parse};
use hallmark::policy::{CompiledPolicy, Enforcement, PolicySet, Subjects};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use serde_json::Value;

pub const TARGETS: [&str; 5] = ["review_decode", "fieldsv1_decode", "path_parse", "diff", "mutate"];

/// Runs the checks of one target on one input.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "review_decode" => review_decode(data),
        "fieldsv1_decode" => fieldsv1_decode(data),
        "path_parse" => path_parse(data),
        "diff" => diff_pair(data),
        "mutate" => mutate(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// `Review::decode` never panics; what it accepts has a uid and object-shaped objects, and
/// its answer is valid JSON with that uid.
pub fn review_decode(data: &[u8]) {
    let Ok(review) = Review::decode(data) else { return };
    let req = &review.request;
    assert!(!req.uid.is_empty());
    for o in [&req.object, &req.old_object].into_iter().flatten() {
        assert!(o.is_object());
    }
    let out: Value = serde_json::from_slice(&encode_response(review.api_version, &req.uid, &Answer::allow()))
        .expect("the answer is JSON");
    assert_eq!(out["response"]["uid"].as_str(), Some(req.uid.as_str()));
    assert_eq!(out["apiVersion"].as_str(), Some(review.api_version));
}

/// `FieldSet::decode` never panics on any JSON; every path of a decoded set is touched by it.
pub fn fieldsv1_decode(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let Ok(set) = FieldSet::decode(&value) else { return };
    let paths = set.paths();
    if set.is_empty() {
        assert!(paths.is_empty(), "an empty set has no paths");
    }
    for p in &paths {
        assert!(set.touches(p.segments()), "a set touches its own path {p}");
        // Printed paths read back (the empty path has no text).
        if !p.segments().is_empty() {
            let text = p.to_string();
            assert_eq!(parse(&text).as_ref(), Ok(p), "{text}");
        }
    }
    let mut keys = ListKeys::new();
    set.learn_list_keys(&mut keys);
}

/// `path::parse` never panics; a parsed path prints canonically and reads back equal.
pub fn path_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(path) = parse(text) else { return };
    let printed = path.to_string();
    let again: FieldPath = parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
    assert_eq!(again, path, "{text:?} -> {printed:?}");
    assert_eq!(again.to_string(), printed, "printing is canonical");
    assert!(hallmark::ownership::path::overlaps(path.segments(), path.segments()), "a path overlaps itself");
}

/// Two JSON values, one after the other.
fn two_values(data: &[u8]) -> Option<(Value, Value)> {
    let mut it = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let a = it.next()?.ok()?;
    let b = it.next()?.ok()?;
    Some((a, b))
}

/// `diff` never panics; it is sorted, unique, agrees with `is_noop`, is empty on equal
/// values, and prints paths that read back.
pub fn diff_pair(data: &[u8]) {
    let Some((old, new)) = two_values(data) else { return };
    let keys = ListKeys::from_objects(&[&old, &new]);
    for opts in [DiffOptions::new("hallmark.dev/"), DiffOptions::new("hallmark.dev/").with_list_keys(&keys)] {
        let changes = diff(&old, &new, &opts);
        assert_eq!(is_noop(&old, &new, &opts), changes.is_empty());
        assert!(changes.windows(2).all(|w| w[0].path < w[1].path), "sorted and unique");
        assert!(diff(&old, &old, &opts).is_empty() && diff(&new, &new, &opts).is_empty());
        for c in &changes {
            assert!(c.old != c.new, "a change changes something: {}", c.path);
            if !c.path.segments().is_empty() {
                let text = c.path.to_string();
                assert_eq!(parse(&text).as_ref(), Ok(&c.path), "{text}");
            }
        }
    }
}

fn engine() -> Engine {
    let settings = Settings {
        declarers: Subjects::new(vec!["system:serviceaccount:ci:deployer".into()], vec![]),
        ..Settings::default()
    };
    Engine::new(Stamper::new(settings), OnError::Allow)
}

fn policies() -> [PolicySet; 2] {
    let flux = CompiledPolicy {
        name: "platform".into(),
        owner_name: "platform-config".into(),
        repository: Some("https://git.example.com/sre/cluster-config".into()),
        reconcilers: Subjects::new(vec!["system:serviceaccount:flux-system:kustomize-controller".into()], vec![]),
        reconciler_field_managers: vec!["kustomize-controller".into()],
        require_pod_token: true,
        rules: vec![],
        managed_fields: Enforcement::Deny,
        delete_protection: true,
        break_glass: Subjects::new(vec![], vec!["sre-oncall".into()]),
    };
    [PolicySet::default(), PolicySet { policies: vec![flux] }]
}

fn without_stamp(obj: &Value, prefix: &str) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !k.starts_with(prefix));
        }
        if meta.get("annotations").is_some_and(|a| a.is_null() || a.as_object().is_some_and(|m| m.is_empty())) {
            meta.remove("annotations");
        }
    }
    o
}

/// The full `/mutate` on an arbitrary review: the patch is a JSONPatch that applies to
/// `request.object`, only touches hallmark's annotations, and the same write repeated on
/// the stored object gets no patch. `/validate` never patches.
pub fn mutate(data: &[u8]) {
    let Ok(review) = Review::decode(data) else { return };
    let engine = engine();
    let prefix = engine.stamper.settings.annotation_prefix.clone();
    let now: jiff::Timestamp = "2026-11-27T10:00:00Z".parse().expect("ts");
    for policies in policies() {
        let req = &review.request;
        let d = engine.mutate(req, &policies, now);
        assert!(d.answer.allowed && d.answer.denial.is_none(), "stamping never blocks a write");
        let v = engine.validate(req, &policies);
        assert!(v.answer.patch.is_none(), "/validate never patches");
        let Some(bytes) = &d.answer.patch else { continue };
        let object = req.object.as_ref().expect("a patch implies an object");
        let patch: json_patch::Patch = serde_json::from_slice(bytes).expect("the patch is a JSONPatch");
        let pointer_prefix = format!("/metadata/annotations/{}", prefix.replace('~', "~0").replace('/', "~1"));
        // Besides the stamp, the change-cause of a workload (docs/audit-trail.md).
        let workload = hallmark::changecause::KINDS.contains(&(req.kind.group.as_str(), req.kind.kind.as_str()));
        let cause_pointer = "/metadata/annotations/kubernetes.io~1change-cause";
        for op in &patch.0 {
            let op = serde_json::to_value(op).expect("op");
            let path = op["path"].as_str().unwrap_or_default();
            assert!(
                path == "/metadata/annotations"
                    || path.starts_with(&pointer_prefix)
                    || (workload && path == cause_pointer),
                "the patch touches {path}"
            );
        }
        let mut stored = object.clone();
        json_patch::patch(&mut stored, &patch).expect("the patch applies to request.object");
        let mut compared = stored.clone();
        if workload && stored.pointer(cause_pointer) != object.pointer(cause_pointer) {
            let annotations = compared.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut);
            match (annotations, object.pointer(cause_pointer)) {
                (Some(a), Some(before)) => {
                    a.insert("kubernetes.io/change-cause".into(), before.clone());
                }
                (Some(a), None) => {
                    a.remove("kubernetes.io/change-cause");
                }
                (None, _) => {}
            }
        }
        assert_eq!(without_stamp(&compared, &prefix), without_stamp(object, &prefix), "only the stamp changes");
        // The same write again, an hour later.
        let mut again = req.clone();
        again.operation = hallmark::admission::Operation::Update;
        again.old_object = Some(stored.clone());
        again.object = Some(stored.clone());
        let later = "2026-11-27T11:00:00Z".parse().expect("ts");
        let d2 = engine.mutate(&again, &policies, later);
        assert!(
            d2.answer.patch.is_none(),
            "a repeated write gets no patch: {:?}",
            d2.answer.patch.as_ref().map(|p| String::from_utf8_lossy(p).into_owned())
        );
    }
}
