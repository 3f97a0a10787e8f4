//! `hallmark declare` and `kubectl hallmark declare` as processes (a clean environment
//! with only a CI's variables, manifests on stdin), and the round trip: what `declare`
//! writes, created by a trusted declarer through `/mutate` over TLS, is stamped
//! `trust: declared` with those values.

mod common;

use common::{TestServer, body, fixture, fixtures_dir, patched, stamp};
use hallmark::config::Settings;
use hallmark::policy::{PolicySet, Subjects};
use hallmark::server::serve::ServeOptions;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const GITHUB: &[(&str, &str)] = &[
    ("GITHUB_ACTIONS", "true"),
    ("GITHUB_ACTOR", "octo-lead"),
    ("GITHUB_SERVER_URL", "https://github.com"),
    ("GITHUB_REPOSITORY", "acme/checkout"),
    ("GITHUB_RUN_ID", "9876543999"),
    ("GITHUB_REF_NAME", "release/3.1"),
    ("GITHUB_SHA", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn hallmark(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    run(env!("CARGO_BIN_EXE_hallmark"), args, env, stdin)
}

fn manifest(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join("manifests").join(name)).expect("fixture manifest")
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML out"))
        .collect()
}

#[test]
fn github_actions_variables_on_stdin_are_declared_on_every_document() {
    let input = format!("{}---\n{}", manifest("deploy-web-v1.yaml"), manifest("svc-web.yaml"));
    let r = hallmark(&["declare"], GITHUB, &input);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("GitHub Actions recognised (GITHUB_ACTIONS=true)"), "{}", r.stderr);
    let docs = yaml_docs(&r.stdout);
    assert_eq!(docs.iter().map(|d| d["kind"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["Deployment", "Service"]);
    for d in &docs {
        let a = &d["metadata"]["annotations"];
        assert_eq!(a["hallmark.dev/committer"], "octo-lead");
        assert_eq!(a["hallmark.dev/pipeline"], "https://github.com/acme/checkout/actions/runs/9876543999");
        assert_eq!(a["hallmark.dev/branch"], "release/3.1");
        assert_eq!(a["hallmark.dev/commit"], "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(a["hallmark.dev/repository"], "https://github.com/acme/checkout");
    }
    // Nothing else of the object changed.
    let mut web = docs[0].clone();
    web["metadata"].as_object_mut().expect("metadata").remove("annotations");
    let original: Value = serde_yaml::from_str(&manifest("deploy-web-v1.yaml")).expect("fixture");
    assert_eq!(web, original);
}

#[test]
fn flags_win_and_a_custom_prefix_moves_the_keys() {
    let r = hallmark(
        &["declare", "--branch", "hotfix", "--annotation-prefix", "audit.example.com/", "-f", "-"],
        GITHUB,
        &manifest("svc-web.yaml"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let a = &yaml_docs(&r.stdout)[0]["metadata"]["annotations"];
    assert_eq!(a["audit.example.com/branch"], "hotfix");
    assert_eq!(a["audit.example.com/committer"], "octo-lead");
    assert!(a.get("hallmark.dev/branch").is_none());
}

#[test]
fn no_ci_and_no_flag_exits_2_with_nothing_on_stdout() {
    let r = hallmark(&["declare"], &[("PATH", "/usr/bin")], &manifest("svc-web.yaml"));
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("no CI recognised"), "{}", r.stderr);
}

#[test]
fn an_invalid_document_exits_2_and_writes_nothing() {
    let input = format!("{}---\nkind: Oops\n", manifest("svc-web.yaml"));
    let r = hallmark(&["declare"], GITHUB, &input);
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("STDIN: document 2: not a Kubernetes object"), "{}", r.stderr);
}

#[test]
fn json_in_json_out_through_the_kubectl_plugin() {
    let json =
        serde_json::to_string(&serde_yaml::from_str::<Value>(&manifest("svc-web.yaml")).expect("yaml")).expect("json");
    let r = run(env!("CARGO_BIN_EXE_kubectl-hallmark"), &["declare"], GITHUB, &json);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON out");
    assert_eq!(v["metadata"]["annotations"]["hallmark.dev/commit"], "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    // The plugin needs no kubeconfig for declare (the environment has none).
    let r = run(env!("CARGO_BIN_EXE_kubectl-hallmark"), &["declare"], &[], &json);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[tokio::test]
async fn declared_output_created_by_a_declarer_is_stamped_declared() {
    let r = hallmark(&["declare", "-o", "json"], GITHUB, &manifest("deploy-checkout-v1-declared.yaml"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let object: Value = serde_json::from_str(&r.stdout).expect("JSON");

    // The captured CREATE by the declarer, carrying declare's output as the object.
    let mut review = fixture("deploy-checkout-create-csa-ci-deployer-declared-provenance.json");
    let user = review["request"]["userInfo"]["username"].as_str().expect("username").to_owned();
    review["request"]["object"] = object;
    let settings = Settings { declarers: Subjects::new(vec![user], vec![]), ..Settings::default() };
    let server = TestServer::start_with(settings, PolicySet::default(), ServeOptions::default()).await;
    let mut client = server.client().await;
    let response = client.post("/mutate", body(&review)).await.response();
    assert!(response.get("warnings").is_none(), "{response}");
    let s = stamp(&patched(&review, &response));
    assert_eq!(s["hallmark.dev/trust"], "declared");
    assert_eq!(s["hallmark.dev/committer"], "octo-lead");
    assert_eq!(s["hallmark.dev/pipeline"], "https://github.com/acme/checkout/actions/runs/9876543999");
    assert_eq!(s["hallmark.dev/branch"], "release/3.1");
    assert_eq!(s["hallmark.dev/commit"], "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    assert_eq!(s["hallmark.dev/repository"], "https://github.com/acme/checkout");
    server.stop().await;
}

#[test]
fn an_empty_input_or_a_missing_file_is_an_error_that_writes_nothing() {
    // A failed `kustomize build` before the pipe leaves stdin empty: not a silent success.
    let r = hallmark(&["declare"], GITHUB, "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("no Kubernetes objects in the input"), "{}", r.stderr);
    // A missing file is reported before anything about the CI environment.
    let r = hallmark(&["declare", "-f", "/nonexistent/app.yaml"], &[("GITHUB_ACTIONS", "true")], "");
    assert_eq!(r.code, 2);
    assert!(r.stderr.starts_with("error: /nonexistent/app.yaml:"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn an_inline_comment_is_noted_as_dropped_too() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a   # the app's settings\ndata: {k: v}\n";
    let r = hallmark(&["declare", "--commit", "abc123"], &[], input);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("comments in the input are not kept"), "{}", r.stderr);
    assert!(!r.stdout.contains('#'), "{}", r.stdout);
}
