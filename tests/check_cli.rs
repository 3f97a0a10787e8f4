//! `hallmark check`: the offline verdict, with its documented exit codes.

mod common;

use common::*;
use std::process::Command;

const POLICY: &str = r#"apiVersion: hallmark.dev/v1alpha1
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
        kinds: ["Deployment"]
      fields: ["spec.template.spec.containers[*].resources"]
      action: deny
"#;

fn hallmark(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hallmark")).args(args).output().expect("run hallmark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.yaml"), POLICY).expect("write");
        let review = fixture("deploy-platform-agent-update-patch-cpu-dev-flux-owned.json");
        for (name, key) in [("old.yaml", "oldObject"), ("new.yaml", "object")] {
            let yaml = serde_yaml::to_string(&review["request"][key]).expect("yaml");
            std::fs::write(dir.path().join(name), yaml).expect("write");
        }
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn owned_change_from_manifests_is_denied_with_exit_1() {
    let f = Files::new();
    let (code, out, _) = hallmark(&[
        "check",
        "--policy",
        &f.path("policy.yaml"),
        "--user",
        "dev",
        "--group",
        "developers",
        "--old",
        &f.path("old.yaml"),
        "--new",
        &f.path("new.yaml"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("UPDATE deployments/team-a/platform-agent\n"), "{out}");
    assert!(
        out.contains(
            "denied: spec.template.spec.containers[name=agent].resources.limits.cpu is owned by platform-config"
        ),
        "{out}"
    );
    assert!(out.contains("Requested \"500m\" -> \"750m\"."), "{out}");
}

#[test]
fn the_reconciler_may_make_the_same_change() {
    let f = Files::new();
    let (code, out, _) = hallmark(&[
        "check",
        "--policy",
        &f.path("policy.yaml"),
        "--user",
        "system:serviceaccount:flux-system:kustomize-controller",
        "--old",
        &f.path("old.yaml"),
        "--new",
        &f.path("new.yaml"),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["operation"], "UPDATE");
    assert!(v["patch"].is_array(), "{out}");
}

#[test]
fn captured_review_gives_the_same_verdict_as_the_webhook() {
    let f = Files::new();
    let review = fixtures_dir().join("deploy-platform-agent-update-patch-cpu-dev-flux-owned.json");
    let (code, out, _) =
        hallmark(&["check", "--policy", &f.path("policy.yaml"), "--review", &review.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("containers[name=agent].resources.limits.cpu"), "{out}");
    // Without a policy the built-in default warns instead.
    let (code, out, _) = hallmark(&["check", "--review", &review.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: spec.template.spec.containers[name=agent].resources.limits.cpu is owned by git"),
        "{out}"
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_error() {
    let f = Files::new();
    std::fs::write(f.path("broken.yaml"), "kind: [unclosed\n").expect("write");
    std::fs::write(f.path("bad-policy.yaml"), POLICY.replace("action: deny", "action: forbid")).expect("write");
    let cases: Vec<Vec<String>> = vec![
        vec!["check".into(), "--old".into(), f.path("broken.yaml"), "--new".into(), f.path("new.yaml")],
        vec!["check".into(), "--new".into(), f.path("missing.yaml")],
        vec!["check".into(), "--policy".into(), f.path("bad-policy.yaml"), "--new".into(), f.path("new.yaml")],
        vec!["check".into(), "--review".into(), f.path("new.yaml")],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = hallmark(&args);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn bad_config_exits_2_naming_file_and_line() {
    let f = Files::new();
    std::fs::write(f.path("config.yaml"), "history: 3\nprovenance:\n  declarers:\n    user: [x]\n").expect("write");
    let (code, _, err) = hallmark(&["check", "--config", &f.path("config.yaml"), "--new", &f.path("new.yaml")]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{}:4:", f.path("config.yaml"))), "{err}");
    assert!(err.contains("unknown field `user`"), "{err}");
}

#[test]
fn certs_writes_a_usable_ca_and_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let (code, stdout, err) =
        hallmark(&["certs", "--out", &out.display().to_string(), "--dns", "hallmark.hallmark-system.svc"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("caBundle: "), "{stdout}");
    let cert = std::fs::read(out.join("tls.crt")).expect("tls.crt");
    let key = std::fs::read(out.join("tls.key")).expect("tls.key");
    hallmark::server::tls::certified_key_from_pem(&cert, &key).expect("a matching pair");
    assert!(std::fs::read_to_string(out.join("ca.crt")).expect("ca").starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn certs_refuses_names_a_client_could_not_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    for bad in ["bad name!", "", "x y"] {
        let (code, _, err) = hallmark(&["certs", "--out", &out.display().to_string(), "--dns", bad]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("not a DNS name or an IP address"), "{err}");
    }
    assert!(!out.exists(), "nothing written for a refused name");
    for good in ["10.0.0.5", "::1", "*.hallmark-system.svc", "localhost"] {
        let (code, _, err) = hallmark(&["certs", "--out", &out.display().to_string(), "--dns", good]);
        assert_eq!(code, 0, "{good}: {err}");
    }
}

#[test]
fn delete_of_a_git_managed_object_is_judged_from_old_alone() {
    let f = Files::new();
    let policy = format!("{POLICY}  deleteProtection: true\n");
    std::fs::write(f.path("policy.yaml"), policy).expect("write");
    // The stored Deployment, with kustomize-controller's managedFields.
    let stored = fixture("deploy-platform-agent-update-ssa-flux-revert-drift.after.json");
    std::fs::write(f.path("stored.yaml"), serde_yaml::to_string(&stored).expect("yaml")).expect("write");
    let (code, out, err) = hallmark(&[
        "check",
        "--policy",
        &f.path("policy.yaml"),
        "--user",
        "dev",
        "--delete",
        "--old",
        &f.path("stored.yaml"),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("DELETE deployments/team-a/platform-agent"), "{out}");
    assert!(
        out.contains(
            "denied: deployments/platform-agent is managed by platform-config (Git: \
             https://git.example.com/sre/cluster-config, Flux Kustomization flux-system/infra) (field manager \
             kustomize-controller); delete it there"
        ),
        "{out}"
    );
    // The reconciler may delete it.
    let (code, out, err) = hallmark(&[
        "check",
        "--policy",
        &f.path("policy.yaml"),
        "--user",
        "system:serviceaccount:flux-system:kustomize-controller",
        "--delete",
        "--old",
        &f.path("stored.yaml"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // --delete with --new is a usage error.
    let (code, _, _) = hallmark(&["check", "--delete", "--old", &f.path("stored.yaml"), "--new", &f.path("new.yaml")]);
    assert_eq!(code, 2);
}
