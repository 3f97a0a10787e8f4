//! The verdict of `/validate` for every kind of write hallmark is registered for, by each
//! kind of writer: a developer, the policy's reconciler (Flux), a system writer
//! (kube-controller-manager's deployment controller) and an on-call SRE with break-glass.
//!
//! Every write is built from the review kube-apiserver sent a validating webhook for a
//! developer's `kubectl patch` of a Flux-managed Deployment
//! (`tests/fixtures/validating/deploy-platform-agent-update-patch-cpu-dev-flux-owned.validating.json`),
//! judged under the example policy (`manifests/examples/ownershippolicy-platform.yaml`:
//! `managedFields: deny`, `deleteProtection`, break-glass for `sre-oncall`).

mod common;

use common::{SCALE_PARENT, SCALE_VALIDATING, fixture};
use hallmark::admission::Review;
use hallmark::config::Settings;
use hallmark::ownership::managed::scale_with_parent;
use hallmark::policy::{PolicySet, load_paths};
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use serde_json::{Value, json};

/// What `/validate` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    /// Allowed with no warning.
    Allow,
    /// Denied.
    Deny,
    /// Allowed as break-glass: warned and audited.
    Glass,
}
use V::*;

const CAPTURE: &str = "validating/deploy-platform-agent-update-patch-cpu-dev-flux-owned.validating.json";

fn writers() -> [(&'static str, Value); 4] {
    [
        ("developer", json!({"username": "dev", "groups": ["developers", "system:authenticated"]})),
        (
            "reconciler",
            json!({"username": "system:serviceaccount:flux-system:kustomize-controller",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"]}),
        ),
        (
            "system writer",
            json!({"username": "system:serviceaccount:kube-system:deployment-controller",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]}),
        ),
        ("break-glass", json!({"username": "sre-alice", "groups": ["sre-oncall", "system:authenticated"]})),
    ]
}

fn policies() -> PolicySet {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/ownershippolicy-platform.yaml");
    PolicySet::new(load_paths(&[path]).expect("example policy"))
}

/// The capture's request with its old object, and `edit` applied to a copy as the new one.
fn update(edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = fixture(CAPTURE);
    let mut new = review["request"]["oldObject"].clone();
    edit(&mut new);
    review["request"]["object"] = new;
    review
}

fn containers(o: &mut Value) -> &mut Value {
    &mut o["spec"]["template"]["spec"]["containers"][0]
}

/// Removes the kustomize-controller entry as kube-apiserver leaves managedFields after
/// a write that set them to `[{}]` (only the writer's entry).
fn reset_managed_fields(o: &mut Value) {
    o["metadata"]["managedFields"] = json!([{"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {}}]);
}

fn being_deleted(review: &mut Value) {
    for side in ["oldObject", "object"] {
        let meta = &mut review["request"][side]["metadata"];
        meta["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
        meta["finalizers"] = json!(["example.com/cleanup"]);
    }
}

fn delete(dry_run: bool, collection: bool) -> Value {
    let mut review = fixture(CAPTURE);
    let r = &mut review["request"];
    r["operation"] = json!("DELETE");
    r["object"] = Value::Null;
    r["dryRun"] = json!(dry_run);
    r["options"] = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
    if collection {
        // A collection DELETE has no request.name.
        r.as_object_mut().map(|m| m.remove("name"));
    }
    review
}

/// A `scale` write as `/validate` judges it once the parent is read: the Scale rebuilt
/// with the parent's replicas owners and labels (`scale_with_parent`).
fn scale() -> Value {
    let mut review = fixture(SCALE_VALIDATING);
    let parent = fixture(SCALE_PARENT)["request"]["oldObject"]["metadata"].clone();
    let old = review["request"]["oldObject"].clone();
    review["request"]["oldObject"] = scale_with_parent(&old, &parent);
    review
}

fn verdict(review: &Value) -> (V, String) {
    let engine = Engine::new(Stamper::new(Settings::default()), OnError::Allow);
    let bytes = serde_json::to_vec(review).expect("json");
    let request = Review::decode(&bytes).expect("review").request;
    let d = engine.validate(&request, &policies());
    let v = match (d.answer.allowed, d.outcome) {
        (false, _) => Deny,
        (true, "break-glass") => Glass,
        (true, _) if d.answer.warnings.is_empty() => Allow,
        (true, other) => panic!("unexpected warned outcome {other}: {:?}", d.answer.warnings),
    };
    let text = d.answer.denial.as_ref().map(|s| s.message.clone()).unwrap_or_else(|| d.answer.warnings.join("; "));
    (v, text)
}

#[test]
fn every_write_by_every_writer() {
    let mut dry_run_patch = fixture(CAPTURE);
    dry_run_patch["request"]["dryRun"] = json!(true);
    let mut status = update(|o| o["status"]["replicas"] = json!(7));
    status["request"]["subResource"] = json!("status");
    let mut create = fixture(CAPTURE);
    create["request"]["operation"] = json!("CREATE");
    create["request"]["oldObject"] = Value::Null;
    let mut finalizer_during_deletion = update(|_| {});
    being_deleted(&mut finalizer_during_deletion);
    finalizer_during_deletion["request"]["object"]["metadata"]["finalizers"] = json!([]);
    reset_managed_fields(&mut finalizer_during_deletion["request"]["object"]);
    let mut image_during_deletion = update(|o| containers(o)["image"] = json!("registry.example.com/agent:9"));
    being_deleted(&mut image_during_deletion);

    // (write, [developer, reconciler, system writer, break-glass])
    let table: Vec<(&str, Value, [V; 4])> = vec![
        ("CREATE (never judged)", create, [Allow, Allow, Allow, Allow]),
        ("UPDATE of a Git-owned field (the capture)", fixture(CAPTURE), [Deny, Allow, Allow, Glass]),
        ("the same UPDATE on a server-side dry run", dry_run_patch, [Deny, Allow, Allow, Glass]),
        (
            "UPDATE of a field nobody's Git owns (a new annotation)",
            update(|o| o["metadata"]["annotations"] = json!({"team.example.com/oncall": "dev"})),
            [Allow, Allow, Allow, Allow],
        ),
        (
            "metadata-only: a Git-owned label",
            update(|o| o["metadata"]["labels"]["app"] = json!("other")),
            [Deny, Allow, Allow, Glass],
        ),
        (
            "metadata-only: a label nobody owns",
            update(|o| o["metadata"]["labels"]["team"] = json!("shop")),
            [Allow, Allow, Allow, Allow],
        ),
        ("managedFields-only: reset with [{}]", update(reset_managed_fields), [Deny, Allow, Allow, Glass]),
        (
            "managedFields-only: Flux's entry emptied",
            update(|o| {
                let entries = o["metadata"]["managedFields"].as_array_mut().expect("entries");
                entries[0]["fieldsV1"] = json!({});
            }),
            [Deny, Allow, Allow, Glass],
        ),
        (
            "finalizer-only: adding one nobody's Git owns",
            update(|o| o["metadata"]["finalizers"] = json!(["example.com/cleanup"])),
            [Allow, Allow, Allow, Allow],
        ),
        (
            "finalizer-only: removed (with its ownership) while being deleted",
            finalizer_during_deletion,
            [Allow, Allow, Allow, Allow],
        ),
        ("a Git-owned field while being deleted is still Git's", image_during_deletion, [Deny, Allow, Allow, Glass]),
        ("status subresource (never judged)", status, [Allow, Allow, Allow, Allow]),
        ("scale of Git-owned replicas", scale(), [Deny, Allow, Allow, Glass]),
        ("DELETE of a Flux-managed object (deleteProtection)", delete(false, false), [Deny, Allow, Allow, Glass]),
        ("DELETE on a dry run", delete(true, false), [Deny, Allow, Allow, Glass]),
        ("collection DELETE (no request.name)", delete(false, true), [Deny, Allow, Allow, Glass]),
    ];
    for (what, review, want) in table {
        for ((writer, user), want) in writers().into_iter().zip(want) {
            let mut review = review.clone();
            review["request"]["userInfo"] = user;
            let (got, text) = verdict(&review);
            assert_eq!(got, want, "{what}, by the {writer}: {text}");
        }
    }
}

/// The deny messages of the table's new cases, as a developer reads them.
#[test]
fn the_messages_a_developer_reads() {
    let (_, reset) = verdict(&update(reset_managed_fields));
    assert!(
        reset.starts_with(
            "metadata.managedFields: this write takes away field manager kustomize-controller's ownership of "
        ),
        "{reset}"
    );
    assert!(reset.contains("platform-config (Git: https://git.example.com/sre/cluster-config"), "{reset}");
    assert!(reset.contains("Leave metadata.managedFields out of the write"), "{reset}");
    let (_, delete) = verdict(&delete(false, true));
    assert!(delete.starts_with("deployments/platform-agent is managed by platform-config"), "{delete}");
    assert!(delete.contains("delete it there"), "{delete}");
}

/// The writes of issue 18 as kube-apiserver v1.36 really sent them to a validating webhook
/// (`tests/fixtures/validating/README.md`, "Validating-only captures"), judged under the
/// example policy: the writer is `admin`, neither a reconciler nor a system writer.
#[test]
fn captured_writes_that_take_ownership_away_or_finish_a_deletion() {
    let cases = [
        ("validating/deploy-agent-update-managedfields-reset-admin.validating.json", Deny),
        ("validating/deploy-agent-update-jsonpatch-remove-flux-entry-admin.validating.json", Deny),
        ("validating/deploy-guarded-update-remove-finalizer-while-deleting-admin.validating.json", Allow),
    ];
    for (name, want) in cases {
        let review = fixture(name);
        let (got, text) = verdict(&review);
        assert_eq!(got, want, "{name}: {text}");
        if want == Deny {
            assert!(
                text.starts_with(
                    "metadata.managedFields: this write takes away field manager kustomize-controller's ownership of"
                ),
                "{name}: {text}"
            );
        }
        // The same write by the reconciler is never judged.
        let mut by_flux = review.clone();
        by_flux["request"]["userInfo"] = writers()[1].1.clone();
        assert_eq!(verdict(&by_flux).0, Allow, "{name} by the reconciler");
    }
}
