//! Hostile and malformed input over real TLS. Every test asserts the precise answer and
//! that the server still answers a normal review afterwards, on a new connection.

mod common;
mod support;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::{Enforcement, PolicySet};
use hallmark::server::serve::ServeOptions;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;

/// A 400 whose body is one line containing `expect`.
async fn assert_400(client: &mut ApiserverClient, path: &str, body: Vec<u8>, expect: &str) {
    let reply = client.post(path, body).await;
    let text = reply.text();
    assert_eq!(reply.status, 400, "{path}: {text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(text.len() < 400, "the reason is short: {} bytes", text.len());
    assert!(text.contains(expect), "{path}: expected {expect:?} in {text}");
}

#[tokio::test]
async fn invalid_json_and_invalid_utf8_get_400() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for path in ["/mutate", "/validate"] {
        assert_400(&mut client, path, b"{".to_vec(), "not a valid AdmissionReview").await;
        assert_400(&mut client, path, b"".to_vec(), "not a valid AdmissionReview").await;
        assert_400(&mut client, path, b"null".to_vec(), "not a valid AdmissionReview").await;
        // Not an object at all: said so, not what serde met first.
        assert_400(&mut client, path, b"[]".to_vec(), "not a valid AdmissionReview: expected a JSON object").await;
        assert_400(&mut client, path, b"[1,2]".to_vec(), "not a valid AdmissionReview: expected a JSON object").await;
        assert_400(&mut client, path, b"\"AdmissionReview\"".to_vec(), "not a valid AdmissionReview").await;
        // A valid review followed by garbage.
        let mut trailing = fixture_bytes("deploy-web-create-csa-dev.json");
        trailing.extend_from_slice(b"{}");
        assert_400(&mut client, path, trailing, "trailing characters").await;
        // Invalid UTF-8 inside a string of an otherwise valid review.
        let mut bad = fixture_bytes("deploy-web-create-csa-dev.json");
        let at = bad.windows(5).position(|w| w == b"\"dev\"").expect("username") + 1;
        bad[at] = 0xff;
        assert_400(&mut client, path, bad, "not a valid AdmissionReview").await;
        // A lone UTF-16 surrogate escape.
        let lone = fixture("deploy-web-create-csa-dev.json").to_string().replace("\"dev\"", "\"\\ud800\"");
        assert_400(&mut client, path, lone.into_bytes(), "not a valid AdmissionReview").await;
        // Binary noise.
        assert_400(&mut client, path, (0..=255u8).cycle().take(4096).collect(), "not a valid AdmissionReview").await;
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_api_version_or_kind_gets_400() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = fixture("deploy-web-create-csa-dev.json");
    for (field, value, expect) in [
        ("apiVersion", json!("admission.k8s.io/v2"), "unsupported AdmissionReview apiVersion"),
        ("apiVersion", json!(""), "unsupported AdmissionReview apiVersion"),
        ("apiVersion", json!("x".repeat(10_000)), "unsupported AdmissionReview apiVersion"),
        ("kind", json!("ConversionReview"), "unexpected kind"),
        ("kind", json!("admissionreview"), "unexpected kind"),
    ] {
        let mut review = good.clone();
        review[field] = value;
        assert_400(&mut client, "/mutate", body(&review), expect).await;
        assert_400(&mut client, "/validate", body(&review), expect).await;
    }
    // apiVersion of the wrong type.
    let mut review = good.clone();
    review["apiVersion"] = json!(1);
    assert_400(&mut client, "/mutate", body(&review), "not a valid AdmissionReview").await;
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn missing_request_uid_or_operation_gets_400() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = fixture("deploy-web-update-csa-image-dev.json");
    let mut no_request = good.clone();
    no_request.as_object_mut().expect("review").remove("request");
    let mut null_request = good.clone();
    null_request["request"] = Value::Null;
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().expect("request").remove("uid");
    let mut empty_uid = good.clone();
    empty_uid["request"]["uid"] = json!("");
    let mut no_operation = good.clone();
    no_operation["request"].as_object_mut().expect("request").remove("operation");
    let mut bad_operation = good.clone();
    bad_operation["request"]["operation"] = json!("PATCH");
    for path in ["/mutate", "/validate"] {
        assert_400(&mut client, path, body(&no_request), "has no request").await;
        assert_400(&mut client, path, body(&null_request), "has no request").await;
        assert_400(&mut client, path, body(&no_uid), "missing field `uid`").await;
        assert_400(&mut client, path, body(&empty_uid), "empty uid").await;
        assert_400(&mut client, path, body(&no_operation), "missing field `operation`").await;
        assert_400(&mut client, path, body(&bad_operation), "unknown variant").await;
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn update_without_object_is_answered_not_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = fixture("deploy-web-update-csa-image-dev.json");
    for missing in ["object", "oldObject"] {
        for how in ["absent", "null"] {
            let mut review = good.clone();
            if how == "absent" {
                review["request"].as_object_mut().expect("request").remove(missing);
            } else {
                review["request"][missing] = Value::Null;
            }
            // /mutate: stamping never blocks a write: allowed, no patch.
            let reply = client.post("/mutate", body(&review)).await;
            assert_eq!(reply.status, 200, "{missing} {how}: {}", reply.text());
            let response = reply.response();
            assert_eq!(response["uid"], good["request"]["uid"]);
            assert_eq!(response["allowed"], true);
            assert!(response.get("patch").is_none(), "{missing} {how}: {response}");
            // /validate: --on-error allow (the default): allowed with a warning.
            let reply = client.post("/validate", body(&review)).await;
            assert_eq!(reply.status, 200);
            let response = reply.response();
            assert_eq!(response["allowed"], true);
            let w = warnings(&response);
            assert!(
                w.len() == 1 && w[0].contains("hallmark could not check Git field ownership"),
                "{missing} {how}: {w:?}"
            );
        }
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"hallmark_errors_total{endpoint="validate",kind="no-object"} 4"#), "{metrics}");
    assert!(metrics.contains(r#"hallmark_admission_requests_total{endpoint="mutate",outcome="error"} 4"#), "{metrics}");
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn objects_that_are_not_json_objects_get_400() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = fixture("deploy-web-update-csa-image-dev.json");
    for field in ["object", "oldObject"] {
        for value in [json!([1, 2]), json!("a string"), json!(42), json!(true), json!([])] {
            let mut review = good.clone();
            review["request"][field] = value.clone();
            for path in ["/mutate", "/validate"] {
                assert_400(&mut client, path, body(&review), &format!("request.{field} must be a JSON object")).await;
            }
        }
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn metadata_and_annotations_of_the_wrong_shape_are_allowed_unstamped() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = fixture("deploy-web-create-csa-dev.json");
    for (pointer, value) in [
        ("/request/object/metadata", json!("not a map")),
        ("/request/object/metadata", json!(null)),
        ("/request/object/metadata/annotations", json!(["a", "b"])),
        ("/request/object/metadata/annotations", json!("a=b")),
    ] {
        let mut review = good.clone();
        *review.pointer_mut(pointer).expect("pointer") = value.clone();
        let response = client.post("/mutate", body(&review)).await.response();
        assert_eq!(response["allowed"], true, "{pointer}={value}");
        assert!(response.get("patch").is_none(), "{pointer}={value}: {response}");
        assert!(
            warnings(&response).iter().any(|w| w.starts_with("hallmark did not stamp this object")),
            "{pointer}={value}: {response}"
        );
        let response = client.post("/validate", body(&review)).await.response();
        assert_eq!(response["allowed"], true);
    }
    // `annotations: null` is no annotations: the map is created.
    let mut review = good.clone();
    review["request"]["object"]["metadata"]["annotations"] = Value::Null;
    let response = client.post("/mutate", body(&review)).await.response();
    assert_eq!(stamp(&patched(&review, &response))["hallmark.dev/applied-by"], "dev");
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for path in ["/mutate", "/validate"] {
        // 10,000 `[` as the whole body (refused at the first element), and inside an
        // otherwise valid review (where serde_json's recursion limit stops it).
        assert_400(&mut client, path, vec![b'['; 10_000], "not a valid AdmissionReview").await;
        let mut review = fixture("deploy-web-create-csa-dev.json").to_string();
        let at = review.find("\"spec\":").expect("spec") + "\"spec\":".len();
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        review.insert_str(at, &format!("{{\"deep\":{nested},\"was\":"));
        assert_400(&mut client, path, review.into_bytes(), "recursion limit exceeded").await;
        let mut objects = String::new();
        for _ in 0..10_000 {
            objects.push_str("{\"a\":");
        }
        // (Unknown fields are skipped without recursion: this one ends at EOF.)
        assert_400(&mut client, path, objects.into_bytes(), "not a valid AdmissionReview").await;
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

/// A chain `{"a":{"a":…}}` of `depth` maps around `leaf`.
fn nested(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn nesting_just_under_the_parser_limit_is_answered() {
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, false)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    // The review, request, object and spec levels plus this chain stay under 128.
    let depth = 118;
    let mut old = config_map(json!({"k": "v"}));
    old["spec"] = nested(depth, json!("old"));
    let mut new = old.clone();
    new["spec"] = nested(depth, json!("new"));
    let mut deep_fields = json!({});
    for _ in 0..depth {
        deep_fields = json!({ "f:a": deep_fields });
    }
    old["metadata"]["managedFields"] = json!([{
        "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": deep_fields},
    }]);
    let review = review("UPDATE", "ConfigMap", Some(old), Some(new));
    let reply = client.post("/mutate", body(&review)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let object = patched(&review, &reply.response());
    let history: Vec<Value> = serde_json::from_str(&stamp(&object)["hallmark.dev/history"]).expect("history");
    let changed = history[0]["changed"][0].as_str().expect("a changed path");
    assert_eq!(changed, format!("spec{}", ".a".repeat(depth)));
    let reply = client.post("/validate", body(&review)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.response();
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response["status"]["message"].as_str().is_some_and(|m| m.contains("kustomize-controller")));
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn five_mib_string_values_are_stamped_and_never_echoed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let big = "x".repeat(5 * 1024 * 1024);
    // A 5 MiB data value.
    let create = review("CREATE", "ConfigMap", None, Some(config_map(json!({ "big": big }))));
    let reply = client.post("/mutate", body(&create)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.len() < 16 * 1024, "the answer does not copy the object: {} bytes", reply.body.len());
    let object = patched(&create, &reply.response());
    assert_eq!(stamp(&object)["hallmark.dev/applied-by"], "dev");
    assert_eq!(object["data"]["big"].as_str().map(str::len), Some(big.len()));
    // 5 MiB in a forged provenance annotation, in the field manager and in the username.
    // (2 MiB each: the three together stay under the 8 MiB limit.)
    let big = "x".repeat(2 * 1024 * 1024);
    let mut cm = config_map(json!({"k": "v"}));
    cm["metadata"]["annotations"]["hallmark.dev/committer"] = json!(big);
    cm["metadata"]["annotations"]["hallmark.dev/applied-by"] = json!(big);
    let mut forged = review("CREATE", "ConfigMap", None, Some(cm));
    forged["request"]["options"]["fieldManager"] = json!(big);
    let reply = client.post("/mutate", body(&forged)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.len() < 64 * 1024, "the answer stays small: {} bytes", reply.body.len());
    let response = reply.response();
    let s = stamp(&patched(&forged, &response));
    assert_eq!(s["hallmark.dev/applied-by"], "dev");
    assert!(!s.contains_key("hallmark.dev/committer"));
    assert!(s["hallmark.dev/field-manager"].len() <= 1024 * 4, "bounded field manager");
    let w = warnings(&response);
    assert!(w.iter().any(|w| w.contains("hallmark.dev/committer")), "{w:?}");
    assert!(w.iter().all(|w| !w.contains("xxxxxxxxxx")), "warnings never repeat the value");
    let reply = client.post("/validate", body(&forged)).await;
    assert_eq!(reply.status, 200);
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_map_of_100k_entries_with_one_change_is_answered_correctly() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let data: serde_json::Map<String, Value> = (0..100_000).map(|i| (format!("k{i:06}"), json!("value"))).collect();
    let old = config_map(Value::Object(data));
    let mut new = old.clone();
    new["data"]["k050000"] = json!("changed");
    let update = review("UPDATE", "ConfigMap", Some(old.clone()), Some(new));
    let started = Instant::now();
    let reply = client.post("/mutate", body(&update)).await;
    println!("100k-entry map UPDATE (debug build): {:?}", started.elapsed());
    assert_eq!(reply.status, 200);
    let object = patched(&update, &reply.response());
    let history: Vec<Value> = serde_json::from_str(&stamp(&object)["hallmark.dev/history"]).expect("history");
    assert_eq!(history[0]["changed"], json!(["data.k050000"]));
    assert!(history[0].get("more").is_none());
    let reply = client.post("/validate", body(&update)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.response()["allowed"], true);
    // The same map, unchanged: a no-op.
    let noop = review("UPDATE", "ConfigMap", Some(old.clone()), Some(old));
    let reply = client.post("/mutate", body(&noop)).await;
    assert!(reply.response().get("patch").is_none());
    assert_still_serves(&server).await;
    server.stop().await;
}

fn with_managed_fields(mut obj: Value, entries: Vec<Value>) -> Value {
    obj["metadata"]["managedFields"] = Value::Array(entries);
    obj
}

#[tokio::test]
async fn thousands_of_managed_fields_entries() {
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Warn, false)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    let data: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let mut entries: Vec<Value> = (0..5000)
        .map(|i| {
            json!({
                "manager": format!("manager-{i}"), "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-27T01:48:51Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {format!("f:k{i}"): {}}},
            })
        })
        .collect();
    entries.push(json!({
        "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k42": {}}},
    }));
    let old = with_managed_fields(config_map(Value::Object(data)), entries.clone());
    let mut new = old.clone();
    new["data"]["k42"] = json!("drift");
    new["data"]["k43"] = json!("fine");
    let update = review("UPDATE", "ConfigMap", Some(old), Some(new));
    let response = client.post("/validate", body(&update)).await.response();
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("data.k42 is owned by platform-config (field manager kustomize-controller"), "{w:?}");
    let response = client.post("/mutate", body(&update)).await.response();
    let history: Vec<Value> =
        serde_json::from_str(&stamp(&patched(&update, &response))["hallmark.dev/history"]).expect("history");
    assert_eq!(history[0]["changed"], json!(["data.k42", "data.k43"]));
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_fields_v1_takes_the_on_error_path() {
    let server = TestServer::start_with(
        Settings::default(),
        policies(flux_policy(Enforcement::Deny, false)),
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    for bad in [
        json!("a string"),
        json!({"f:data": "not a map"}),
        json!({"f:data": {"k:{not json": {}}}),
        json!({"f:data": {"x:unknown": {}}}),
        json!({"f:data": [1, 2]}),
        json!({"f:data": {"i:minus-one": {}}}),
    ] {
        let entries = vec![json!({
            "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": bad,
        })];
        let old = with_managed_fields(config_map(json!({"k": "v"})), entries);
        let mut new = old.clone();
        new["data"]["k"] = json!("changed");
        let update = review("UPDATE", "ConfigMap", Some(old), Some(new));
        let reply = client.post("/validate", body(&update)).await;
        assert_eq!(reply.status, 200, "{bad}: {}", reply.text());
        let response = reply.response();
        assert_eq!(response["allowed"], true, "{bad}: on-error=allow: {response}");
        let w = warnings(&response);
        assert!(
            w.len() == 1
                && w[0].contains("hallmark could not check Git field ownership: managedFields of kustomize-controller"),
            "{bad}: {w:?}"
        );
        // /mutate stamps regardless.
        let response = client.post("/mutate", body(&update)).await.response();
        assert_eq!(stamp(&patched(&update, &response))["hallmark.dev/applied-by"], "dev", "{bad}");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"hallmark_errors_total{endpoint="validate",kind="unreadable-managed-fields"} 6"#),
        "{metrics}"
    );
    assert_still_serves(&server).await;
    server.stop().await;
}

#[test]
fn malformed_fields_v1_with_on_error_deny_denies() {
    use hallmark::admission::Review;
    use hallmark::provenance::Stamper;
    use hallmark::review::{Engine, OnError};
    let entries = vec![json!({
        "manager": "kustomize-controller", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": 7},
    })];
    let old = with_managed_fields(config_map(json!({"k": "v"})), entries);
    let mut new = old.clone();
    new["data"]["k"] = json!("changed");
    let update = review("UPDATE", "ConfigMap", Some(old), Some(new));
    let req = Review::decode(&body(&update)).expect("decodes").request;
    let engine = Engine::new(Stamper::new(Settings::default()), OnError::Deny);
    let d = engine.validate(&req, &policies(flux_policy(Enforcement::Deny, false)));
    assert!(!d.answer.allowed);
    assert_eq!(d.outcome, "error");
    let message = d.answer.denial.expect("a status").message;
    assert!(message.starts_with("hallmark could not check Git field ownership"), "{message}");
}

#[tokio::test]
async fn annotation_values_that_are_not_strings() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut cm = config_map(json!({"k": "v"}));
    cm["metadata"]["annotations"] = json!({
        "team": 5,
        "hallmark.dev/committer": {"name": "mallory"},
        "hallmark.dev/applied-by": ["root"],
        "hallmark.dev/history": 17,
        "hallmark.dev/trust": null,
    });
    let create = review("CREATE", "ConfigMap", None, Some(cm.clone()));
    let response = client.post("/mutate", body(&create)).await.response();
    assert_eq!(response["allowed"], true);
    let object = patched(&create, &response);
    let ann = annotations(&object);
    assert_eq!(ann["team"], json!(5), "other annotations are left alone, even if invalid");
    assert_eq!(ann["hallmark.dev/applied-by"], "dev");
    assert_eq!(ann["hallmark.dev/trust"], "none");
    assert!(!ann.contains_key("hallmark.dev/committer"));
    let history: Vec<Value> = serde_json::from_str(ann["hallmark.dev/history"].as_str().expect("str")).expect("json");
    assert_eq!(history.len(), 1);
    // An UPDATE whose old stamp is of the wrong type: the history is not history.
    let mut new = cm.clone();
    new["data"]["k"] = json!("w");
    let update = review("UPDATE", "ConfigMap", Some(cm.clone()), Some(new));
    let response = client.post("/mutate", body(&update)).await.response();
    let object = patched(&update, &response);
    assert_eq!(stamp(&object)["hallmark.dev/applied-by"], "dev");
    // The same as a no-op: values that are not strings are no stamp (kube-apiserver could
    // never have stored them); they are removed, other annotations stay.
    let noop = review("UPDATE", "ConfigMap", Some(cm.clone()), Some(cm.clone()));
    let response = client.post("/mutate", body(&noop)).await.response();
    let object = patched(&noop, &response);
    assert_eq!(annotations(&object), json!({"team": 5}).as_object().cloned().expect("map"), "{response}");
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn annotation_keys_needing_pointer_escapes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut cm = config_map(json!({"k": "v"}));
    cm["metadata"]["annotations"] = json!({
        "a/b~c": "1", "~1": "2", "~0": "3", "/": "4", "~": "5", "": "6", "hallmark.dev~1branch": "7",
        "hallmark.dev/branch": "forged",
    });
    let create = review("CREATE", "ConfigMap", None, Some(cm.clone()));
    let response = client.post("/mutate", body(&create)).await.response();
    let patch = patch_of(&response).expect("a patch");
    let text = serde_json::to_string(&patch).expect("json");
    assert!(text.contains("/metadata/annotations/hallmark.dev~1branch"), "{text}");
    let object = patched(&create, &response);
    let ann = annotations(&object);
    for (k, v) in
        [("a/b~c", "1"), ("~1", "2"), ("~0", "3"), ("/", "4"), ("~", "5"), ("", "6"), ("hallmark.dev~1branch", "7")]
    {
        assert_eq!(ann.get(k), Some(&json!(v)), "annotation {k:?} kept");
    }
    assert!(!ann.contains_key("hallmark.dev/branch"));
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_8_mib_get_413_and_8_mib_is_accepted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // With a Content-Length.
    let reply = client.post("/mutate", vec![b' '; 8 * 1024 * 1024 + 1]).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.text(), "request body is larger than 8 MiB\n");
    // Exactly 8 MiB: a valid review padded with whitespace.
    let mut exact = fixture_bytes("deploy-web-create-csa-dev.json");
    exact.resize(8 * 1024 * 1024, b' ');
    let mut client = server.client().await;
    let reply = client.post("/validate", exact.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Chunked, with no Content-Length: counted as it streams. The client stops writing once
    // it has crossed the limit (a client that keeps writing into a closed connection gets a
    // reset, which may discard the 413 before it is read: HTTP/1.1 has no better way).
    let tls = raw_tls(server.addr, &server.ca_pem).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = tokio::spawn(async move { read_until_closed(&mut rd, Duration::from_secs(20)).await.0 });
    let _ = wr
        .write_all(
            b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await;
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(8 * 16 + 1) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if wr.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = wr.flush().await;
    let answer = reader.await.expect("reader");
    assert_eq!(status_of(&answer), Some(413), "{}", String::from_utf8_lossy(&answer));
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_closed_by_the_header_timeout() {
    let opts = ServeOptions { header_timeout: Duration::from_secs(1), ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Ty").await.expect("write");
    tls.flush().await.expect("flush");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(closed, "the server closes a connection whose headers never finish");
    assert!(waited >= Duration::from_millis(800), "not before the timeout: {waited:?}");
    println!("stalled headers closed after {waited:?} (header timeout 1 s)");
    // A connection that never even starts its TLS handshake blocks nobody.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_in_its_body_gets_408() {
    let opts = ServeOptions { body_timeout: Duration::from_secs(1), ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let review = fixture_bytes("deploy-web-create-csa-dev.json");
    tls.write_all(request_head("/mutate", review.len()).as_bytes()).await.expect("head");
    tls.write_all(&review[..review.len() / 2]).await.expect("half a body");
    tls.flush().await.expect("flush");
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert_eq!(status_of(&answer), Some(408), "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("request body was not received in time"));
    assert!(closed, "the half-read connection is not reused");
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    println!("stalled body answered 408 after {waited:?} (body timeout 1 s)");
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn other_methods_get_405_and_unknown_paths_404() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for path in ["/mutate", "/validate"] {
        for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            let reply = client.request(method, path, vec![]).await;
            assert_eq!(reply.status, 405, "{method} {path}");
        }
    }
    for method in ["POST", "PUT", "DELETE"] {
        for path in ["/healthz", "/readyz"] {
            assert_eq!(client.request(method, path, vec![]).await.status, 405, "{method} {path}");
        }
    }
    for path in ["/", "/mutate/", "/Mutate", "/mutate/x", "/metrics", "/../mutate", "/%2e%2e/mutate", "/validate%00"] {
        let reply = client.request("POST", path, fixture_bytes("deploy-web-create-csa-dev.json")).await;
        assert_eq!(reply.status, 404, "POST {path}");
    }
    assert_still_serves(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_disturb_normal_ones() {
    let opts = ServeOptions {
        idle_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let server = std::sync::Arc::new(TestServer::start_with(Settings::default(), PolicySet::default(), opts).await);
    let run_for = Duration::from_secs(3);
    let mut hostile = Vec::new();
    // Stalled headers, stalled bodies, garbage, deep nesting, oversize bodies, no TLS.
    for kind in 0..5 {
        let s = server.clone();
        hostile.push(tokio::spawn(async move {
            let until = Instant::now() + run_for;
            let mut held = Vec::new();
            let mut held_tcp = Vec::new();
            let mut n = 0u32;
            while Instant::now() < until {
                match kind {
                    0 => {
                        let mut t = raw_tls(s.addr, &s.ca_pem).await;
                        let _ = t.write_all(b"POST /mutate HTTP/1.1\r\nHost: loc").await;
                        held.push(t);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    1 => {
                        let mut t = raw_tls(s.addr, &s.ca_pem).await;
                        let _ = t.write_all(request_head("/validate", 5000).as_bytes()).await;
                        let _ = t.write_all(&[b'{'; 100]).await;
                        held.push(t);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    2 => {
                        let mut c = ApiserverClient::connect(s.addr, &s.ca_pem).await;
                        let noise: Vec<u8> = (0..2048u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
                        assert_eq!(c.post("/mutate", noise).await.status, 400);
                        assert_eq!(c.post("/validate", vec![b'['; 50_000]).await.status, 400);
                    }
                    3 => {
                        if n < 4 {
                            let mut c = ApiserverClient::connect(s.addr, &s.ca_pem).await;
                            assert_eq!(c.post("/mutate", vec![b' '; 8 * 1024 * 1024 + 1]).await.status, 413);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => {
                        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.expect("tcp");
                        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello").await;
                        held_tcp.push(tcp);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
            }
            n
        }));
    }
    let mut normal = Vec::new();
    for _ in 0..3 {
        let s = server.clone();
        normal.push(tokio::spawn(async move {
            let until = Instant::now() + run_for;
            let mut client = ApiserverClient::connect(s.addr, &s.ca_pem).await;
            let review = fixture("deploy-web-update-csa-image-dev.json");
            let (mut ok, mut bad) = (0u32, 0u32);
            while Instant::now() < until {
                let reply = client.post("/mutate", fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
                let good = reply.status == 200 && {
                    let r = reply.response();
                    r["uid"] == review["request"]["uid"]
                        && stamp(&patched(&review, &r))["hallmark.dev/applied-by"] == "dev"
                };
                if good { ok += 1 } else { bad += 1 }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for t in normal {
        let (o, b) = t.await.expect("normal client");
        ok += o;
        bad += b;
    }
    let mut attacks = 0;
    for t in hostile {
        attacks += t.await.expect("hostile client");
    }
    println!("concurrent: {ok} normal reviews answered correctly, {bad} wrong, {attacks} hostile attempts");
    assert_eq!(bad, 0);
    assert!(ok > 0);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_refused() {
    let server = TestServer::start().await;
    let review = fixture_bytes("deploy-web-create-csa-dev.json");
    // One header of 1 MiB.
    let mut head = request_head("/mutate", review.len());
    head.insert_str(head.len() - 2, &format!("X-Big: {}\r\n", "a".repeat(1024 * 1024)));
    let answer = raw_exchange(&server, &[head.as_bytes(), &review].concat(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(431), "{}", String::from_utf8_lossy(&answer));
    // 1,000 headers.
    let mut head = request_head("/mutate", review.len());
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    head.insert_str(head.len() - 2, &many);
    let answer = raw_exchange(&server, &[head.as_bytes(), &review].concat(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(431), "{}", String::from_utf8_lossy(&answer));
    assert_still_serves(&server).await;
    server.stop().await;
}
