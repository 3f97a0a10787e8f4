//! The audit trail where people look (docs/audit-trail.md), through the server as
//! kube-apiserver calls it: `kubernetes.io/change-cause` for `kubectl rollout history`.

mod common;

use common::{TestServer, fixture, fixture_bytes, patched};
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::server::serve::ServeOptions;
use serde_json::Value;

fn change_cause(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get("kubernetes.io/change-cause"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[tokio::test]
async fn each_pushed_revision_says_who_and_which_commit() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // A GitHub Actions deploy with verified provenance (OIDC claims as userInfo.extra).
    let name = "deploy-shop-update-csa-oidc-gha.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let stored = patched(&fixture(name), &response);
    assert_eq!(
        change_cause(&stored).as_deref(),
        Some("gha:acme/shop (push): main@89e6c98d9288, pipeline deploy#9876543311")
    );
    // A developer's image change.
    let name = "deploy-web-update-csa-image-dev.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let review = fixture(name);
    let who = review["request"]["userInfo"]["username"].as_str().expect("user").to_owned();
    assert_eq!(change_cause(&patched(&review, &response)), Some(format!("{who} (push)")));
    // A scale is no new revision: no change-cause.
    let name = "deploy-web-update-replace-dev.json";
    let review = fixture(name);
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    let template_changed =
        review["request"]["object"]["spec"]["template"] != review["request"]["oldObject"]["spec"]["template"];
    assert_eq!(change_cause(&patched(&review, &response)).is_some(), template_changed);
    server.stop().await;
}

#[tokio::test]
async fn change_cause_can_be_turned_off() {
    let settings = Settings::from_yaml("changeCause: false\n", "c.yaml").expect("config");
    let server = TestServer::start_with(settings, PolicySet::default(), ServeOptions::default()).await;
    let mut client = server.client().await;
    let name = "deploy-shop-update-csa-oidc-gha.json";
    let response = client.post("/mutate", fixture_bytes(name)).await.response();
    assert_eq!(change_cause(&patched(&fixture(name), &response)), None);
    server.stop().await;
}
