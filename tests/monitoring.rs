//! What an SRE on call relies on: the alerts and the dashboard in `manifests/monitoring/`
//! query metrics that `hallmark serve` really exports (or kube-apiserver's own
//! admission-webhook metrics), every PromQL expression parses, each alert has a runbook in
//! docs/operating.md, the overlay renders, and the logs are what a log pipeline can read: JSON in
//! the manifests, no colour escape codes off a terminal, one line per notable decision
//! with the fields involved and never their values.

mod common;

use common::*;
use promql_parser::parser::{self as promql, Expr};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------------------------------
// The files
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Json {
    let y: serde_yaml::Value = serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::to_value(y).expect("YAML as JSON")
}

fn rule_file() -> Json {
    yaml("manifests/monitoring/prometheusrule.yaml")
}

fn dashboard() -> Json {
    serde_json::from_str(&read("manifests/monitoring/dashboards/hallmark.json")).expect("dashboard JSON")
}

/// Every alert rule of the PrometheusRule.
fn alerts() -> Vec<Json> {
    let rules = rule_file();
    rules["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("group rules").iter().cloned())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

/// Grafana's template variables as the dashboard's queries use them, and what stands in
/// for them when the expression is parsed as plain PromQL.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[("$__rate_interval", "5m"), ("$namespace", "hallmark-system")];

/// (where, PromQL) of every expression: the rules' `expr` and the dashboard panels'
/// targets (Grafana variables replaced).
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rule_file()["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).expect("alert or record name");
            out.push((format!("rule {name}"), r["expr"].as_str().expect("expr is a string").to_owned()));
        }
    }
    fn panels(v: &Json, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            panels(&p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                let mut expr = t["expr"].as_str().expect("a target has an expr").to_owned();
                for (var, value) in GRAFANA_VARIABLES {
                    expr = expr.replace(var, value);
                }
                assert!(!expr.contains('$'), "panel {:?}: unknown Grafana variable in {expr}", p["title"]);
                out.push((format!("panel {:?} {}", p["title"].as_str().unwrap_or(""), t["refId"]), expr));
            }
        }
    }
    panels(&dashboard()["panels"], &mut out);
    out
}

/// The vector selectors of an expression (matrix selectors included).
fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a promql_parser::parser::VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(v) => out.push(v),
        Expr::MatrixSelector(m) => out.push(&m.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn metric_name(v: &promql_parser::parser::VectorSelector) -> Option<String> {
    v.name.clone().or_else(|| v.matchers.matchers.iter().find(|m| m.name == "__name__").map(|m| m.value.clone()))
}

/// kube-apiserver's admission-webhook metrics (k8s.io/apiserver/pkg/admission/metrics:
/// `webhook_admission_duration_seconds` is a histogram, `webhook_rejection_count` and
/// `webhook_fail_open_count` are counters whose names end in `_count`,
/// `webhook_request_total` a counter), and `up`.
const FOREIGN_METRICS: &[&str] = &[
    "up",
    "apiserver_admission_webhook_admission_duration_seconds_bucket",
    "apiserver_admission_webhook_admission_duration_seconds_count",
    "apiserver_admission_webhook_admission_duration_seconds_sum",
    "apiserver_admission_webhook_rejection_count",
    "apiserver_admission_webhook_fail_open_count",
    "apiserver_admission_webhook_request_total",
];

/// The names of the webhooks in manifests/base (what kube-apiserver's `name` label holds).
fn webhook_names() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for f in ["manifests/base/mutatingwebhookconfiguration.yaml", "manifests/base/validatingwebhookconfiguration.yaml"]
    {
        for w in yaml(f)["webhooks"].as_array().expect("webhooks") {
            out.insert(
                w["name"].as_str().expect("name").to_owned(),
                w["timeoutSeconds"].as_i64().unwrap_or(10), // the API default
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

struct Proc {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
    ca: String,
    dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }
}

/// Writes a serving pair valid for `days` days, replacing the files atomically; returns
/// the CA PEM.
fn write_pair_for(dir: &Path, days: i64) -> String {
    write_bundle(dir, &hallmark::certs::generate(&["localhost".into(), "127.0.0.1".into()], days).expect("certs"))
}

/// Starts `hallmark serve` on free ports with a 1-day certificate, the Flux CPU policy
/// (`deny`), stdout and stderr redirected to files (not a terminal), and `extra` flags.
async fn start(extra: &[&str]) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_pair_for(dir.path(), 1);
    write_policy(&dir.path().join("policy.yaml"), "deny");
    let (addr, metrics): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
    );
    let (stdout, stderr) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let path = |f: &str| dir.path().join(f).display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .arg("serve")
        .args(["--listen", &addr.to_string(), "--metrics-listen", &metrics.to_string()])
        .args(["--tls-cert", &path("tls.crt"), "--tls-key", &path("tls.key"), "--policy", &path("policy.yaml")])
        .args(extra)
        .env("HALLMARK_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("HALLMARK_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start hallmark");
    let p = Proc { child, addr, metrics, stdout, stderr, ca, dir };
    let m = p.metrics;
    wait_until("the metrics port", || async move { !metrics_text(m).await.is_empty() }).await;
    let (a, ca) = (p.addr, p.ca.clone());
    wait_until("the webhook port", || {
        let ca = ca.clone();
        async move { handshake_ok(a, &ca).await }
    })
    .await;
    p
}

/// The sample names a scrape exports, from its `# TYPE` lines: a counter `x` is exported
/// as `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`, a gauge as `x`.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        let name = name.to_owned();
        match kind.trim() {
            "counter" => {
                out.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            "gauge" | "unknown" => {
                out.insert(name);
            }
            other => panic!("unexpected metric type {other} for {name}"),
        }
    }
    out
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

const OWNED_CPU: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";
const FORGED: &str = "deploy-web-update-csa-forged-annotations-dev.json";

fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Tests: rules and dashboard
// ---------------------------------------------------------------------------------------

#[test]
fn every_promql_expression_in_the_rules_and_the_dashboard_parses() {
    let exprs = expressions();
    assert!(exprs.len() >= 20, "expected the rules and the dashboard's panels, found {}", exprs.len());
    let failures: Vec<String> =
        exprs.iter().filter_map(|(at, e)| promql::parse(e).err().map(|why| format!("{at}: {why}\n    {e}"))).collect();
    assert!(failures.is_empty(), "PromQL that does not parse:\n{}", failures.join("\n"));
}

#[test]
fn the_rules_alert_on_what_the_issue_names_each_with_severity_summary_and_runbook() {
    let names: BTreeSet<String> = alerts().iter().map(|a| a["alert"].as_str().unwrap().to_owned()).collect();
    for want in [
        "HallmarkDown",
        "HallmarkWebhookCallsFailing",
        "HallmarkErrorRatioHigh",
        "HallmarkLatencyNearTimeout",
        "HallmarkCertificateExpiresSoon",
        "HallmarkCertificateRefused",
        "HallmarkPolicyRejected",
        "HallmarkDenialBurst",
    ] {
        assert!(names.contains(want), "no alert {want}; have {names:?}");
    }
    let runbooks = read("docs/operating.md");
    let anchors: BTreeSet<String> = runbooks.lines().filter(|l| l.starts_with('#')).map(github_anchor).collect();
    for a in alerts() {
        let name = a["alert"].as_str().unwrap();
        assert!(
            matches!(a["labels"]["severity"].as_str(), Some("critical" | "warning" | "info")),
            "{name}: severity critical|warning|info"
        );
        assert!(a["annotations"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: summary");
        assert!(a["annotations"]["description"].as_str().is_some_and(|s| !s.is_empty()), "{name}: description");
        let url = a["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: runbook_url"));
        let (page, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{name}: runbook_url has no #anchor"));
        assert!(page.ends_with("/docs/operating.md"), "{name}: the runbooks are in docs/operating.md, not {page}");
        assert_eq!(anchor, name.to_lowercase(), "{name}: the anchor is the alert's own heading");
        assert!(anchors.contains(anchor), "{name}: docs/operating.md has no heading with anchor #{anchor}");
    }
}

/// GitHub's anchor of a Markdown heading line: lower case, punctuation dropped, spaces
/// turned into hyphens.
fn github_anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn latency_alert_fires_before_the_webhooks_time_out() {
    let hooks = webhook_names();
    let timeout = *hooks.values().min().expect("webhooks") as f64;
    let alert = alerts().into_iter().find(|a| a["alert"] == "HallmarkLatencyNearTimeout").expect("latency alert");
    let expr = promql::parse(alert["expr"].as_str().unwrap()).expect("parses");
    // Every `histogram_quantile(...) > N` in the expression.
    fn thresholds(e: &Expr, out: &mut Vec<f64>) {
        match e {
            Expr::Binary(b) => {
                if b.op.to_string() == ">"
                    && matches!(&*b.lhs, Expr::Call(c) if c.func.name == "histogram_quantile")
                    && let Expr::NumberLiteral(n) = &*b.rhs
                {
                    out.push(n.val);
                }
                thresholds(&b.lhs, out);
                thresholds(&b.rhs, out);
            }
            Expr::Paren(p) => thresholds(&p.expr, out),
            _ => {}
        }
    }
    let mut found = Vec::new();
    thresholds(&expr, &mut found);
    assert!(found.len() >= 2, "hallmark's own and kube-apiserver's p99, found {found:?}");
    for t in found {
        assert!(
            t < timeout && t >= timeout / 2.0,
            "threshold {t}s must be near, below, the webhooks' {timeout}s timeout"
        );
    }
    // hallmark's histogram must resolve latencies up to the timeout: its largest finite
    // bucket lies beyond it.
    let m = hallmark::metrics::Metrics::new();
    m.duration.get_or_create(&hallmark::metrics::EndpointLabels { endpoint: "validate" }).observe(0.001);
    let top = m
        .encode()
        .lines()
        .filter(|l| l.starts_with("hallmark_admission_duration_seconds_bucket"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(top > timeout, "largest finite bucket {top}s must exceed the {timeout}s timeout");
}

/// Runs promtool (when on PATH) on the rules: `check rules` (PromQL and the annotation
/// templates) and `test rules` with tests/data/monitoring/alerts.test.yaml, which feeds
/// each alert series that must and must not make it fire.
#[test]
fn promtool_checks_the_rules_and_each_alert_fires_on_its_test_series() {
    if !on_path("promtool") {
        eprintln!("SKIPPED: promtool not on PATH (Debian: apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rule_file();
    let write = |name: &str, groups: &Json| {
        let text = serde_yaml::to_string(&serde_json::json!({ "groups": groups })).expect("YAML");
        std::fs::write(dir.path().join(name), text).expect("write rules");
    };
    write("full.yaml", &rules["spec"]["groups"]);
    // The unit tests compare labels only: annotations are left out of what they load.
    let mut bare = rules["spec"]["groups"].clone();
    for g in bare.as_array_mut().expect("groups") {
        for r in g["rules"].as_array_mut().expect("rules") {
            r.as_object_mut().expect("rule").remove("annotations");
        }
    }
    write("rules.yaml", &bare);
    std::fs::copy(repo().join("tests/data/monitoring/alerts.test.yaml"), dir.path().join("alerts.test.yaml"))
        .expect("copy the rule tests");
    for args in [["check", "rules", "full.yaml"], ["test", "rules", "alerts.test.yaml"]] {
        let out = Command::new("promtool").args(args).current_dir(dir.path()).output().expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has at least one case.
    let cases = read("tests/data/monitoring/alerts.test.yaml");
    for a in alerts() {
        let name = a["alert"].as_str().unwrap();
        assert!(cases.contains(&format!("alertname: {name}")), "no promtool case for {name}");
    }
}

#[test]
fn the_policy_label_is_bounded() {
    use hallmark::metrics::{MAX_POLICY_LABELS, Metrics};
    let m = Metrics::new();
    for i in 0..MAX_POLICY_LABELS + 10 {
        m.ownership_decision("denied", &format!("policy-{i}"));
    }
    m.ownership_decision("denied", "policy-0");
    let scrape = m.encode();
    let series: Vec<&str> = scrape.lines().filter(|l| l.starts_with("hallmark_ownership_decisions_total{")).collect();
    assert_eq!(series.len(), MAX_POLICY_LABELS + 1, "{MAX_POLICY_LABELS} names and `other`");
    assert_eq!(sample(&scrape, r#"hallmark_ownership_decisions_total{outcome="denied",policy="other"}"#), Some(10.0));
    assert_eq!(sample(&scrape, r#"hallmark_ownership_decisions_total{outcome="denied",policy="policy-0"}"#), Some(2.0));
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_query_is_exported_or_kube_apiservers() {
    let p = start(&[]).await;
    // A metric family appears in a scrape once it has a sample: drive each kind of event.
    let mut client = ApiserverClient::connect(p.addr, &p.ca).await;
    assert_eq!(client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await.status, 200);
    assert_eq!(client.post("/validate", fixture_bytes(OWNED_CPU)).await.response()["allowed"], false);
    assert_eq!(client.post("/validate", b"{not a review".to_vec()).await.status, 400);
    write_policy(&p.dir.path().join("policy.yaml"), "warn");
    let m = p.metrics;
    wait_until("the policy reload", || async move {
        metrics_text(m).await.contains(r#"hallmark_reloads_total{what="policy",result="ok"} 1"#)
    })
    .await;
    let warned = client.post("/validate", fixture_bytes(OWNED_CPU)).await.response();
    assert!(warned["allowed"] == true && warned["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{warned}");
    let scrape = metrics_text(p.metrics).await;
    let exported = exported_names(&scrape);
    assert!(exported.contains("hallmark_admission_requests_total"), "scrape:\n{scrape}");
    let hooks = webhook_names();

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (at, e) in expressions() {
        let ast = promql::parse(&e).unwrap_or_else(|why| panic!("{at}: {why}"));
        let mut sels = Vec::new();
        selectors(&ast, &mut sels);
        for s in sels {
            let Some(name) = metric_name(s) else {
                problems.push(format!("{at}: a selector without a metric name"));
                continue;
            };
            used.insert(name.clone());
            if name.starts_with("hallmark_") {
                if !exported.contains(&name) {
                    problems.push(format!("{at}: {name} is not exported by hallmark serve"));
                }
            } else if !FOREIGN_METRICS.contains(&name.as_str()) {
                problems.push(format!("{at}: {name} is neither hallmark's nor kube-apiserver's webhook metric"));
            } else if name.starts_with("apiserver_admission_webhook_") {
                // Only hallmark's two webhooks, by the names the configurations give them.
                let m = s.matchers.matchers.iter().find(|m| m.name == "name");
                let values: Vec<&str> = m.map(|m| m.value.split('|').collect()).unwrap_or_default();
                if values.is_empty() || values.iter().any(|v| !hooks.contains_key(*v)) {
                    problems.push(format!("{at}: {name} must select name= one of {:?}", hooks.keys()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboard and the alerts cover the metrics the issue names.
    for want in [
        "hallmark_admission_requests_total",
        "hallmark_admission_duration_seconds_bucket",
        "hallmark_patches_total",
        "hallmark_ownership_decisions_total",
        "hallmark_reloads_total",
        "hallmark_certificate_expiry_timestamp_seconds",
        "hallmark_policies_rejected",
        "apiserver_admission_webhook_admission_duration_seconds_bucket",
        "apiserver_admission_webhook_request_total",
        "apiserver_admission_webhook_rejection_count",
    ] {
        assert!(used.contains(want), "nothing queries {want}");
    }
    drop(p);
}

// ---------------------------------------------------------------------------------------
// Tests: metrics and logs of the real binary
// ---------------------------------------------------------------------------------------

/// The samples of a scrape: (name, labels) of each line that is not a comment.
fn samples(scrape: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
            map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
        }
        out.push((name.to_owned(), map));
    }
    out
}

/// Labels Prometheus adds to every scraped series (target labels), not hallmark.
const TARGET_LABELS: &[&str] = &["namespace", "pod", "job", "instance", "service", "container", "endpoint_port"];

/// Prometheus' advice "avoid missing metrics": before any request, a scrape already has
/// a sample of every labelled series an alert or a dashboard panel selects, so that the
/// first error, refused certificate or denial is an increase from 0 (a counter that
/// first appears at 1 has no increase, and its alert never fires).
#[tokio::test]
async fn the_first_scrape_has_a_sample_of_every_series_the_rules_and_the_dashboard_select() {
    let p = start(&[]).await;
    let scrape = metrics_text(p.metrics).await;
    let found = samples(&scrape);
    let mut missing = Vec::new();
    let mut checked = 0;
    for (at, e) in expressions() {
        let ast = promql::parse(&e).unwrap_or_else(|why| panic!("{at}: {why}"));
        let mut sels = Vec::new();
        selectors(&ast, &mut sels);
        for s in sels {
            let Some(name) = metric_name(s) else { continue };
            if !name.starts_with("hallmark_") {
                continue;
            }
            checked += 1;
            let hit = found.iter().any(|(n, labels)| {
                n == &name
                    && s.matchers.matchers.iter().filter(|m| m.name != "__name__").all(|m| {
                        TARGET_LABELS.contains(&m.name.as_str())
                            || m.is_match(labels.get(&m.name).map(String::as_str).unwrap_or(""))
                    })
            });
            if !hit {
                missing.push(format!("{at}: no sample of {s} in the first scrape"));
            }
        }
    }
    assert!(checked >= 20, "the rules and the dashboard select hallmark series: {checked}");
    assert!(missing.is_empty(), "{}\nscrape:\n{scrape}", missing.join("\n"));
    // The series an alert computes increase() or rate() of start at 0.
    for series in [
        r#"hallmark_reloads_total{what="certificate",result="error"}"#,
        r#"hallmark_errors_total{endpoint="validate",kind="internal"}"#,
        r#"hallmark_admission_requests_total{endpoint="validate",outcome="denied"}"#,
        r#"hallmark_ownership_decisions_total{outcome="denied",policy="platform"}"#,
        r#"hallmark_policies_rejected{source="files"}"#,
        r#"hallmark_tls_handshake_failures_total{reason="certificate-refused"}"#,
    ] {
        assert_eq!(sample(&scrape, series), Some(0.0), "{series} in\n{scrape}");
    }

    // Traffic adds no series the first scrape lacked (the known label values are the
    // ones the code uses), the policy label aside.
    let mut client = ApiserverClient::connect(p.addr, &p.ca).await;
    for f in ["deploy-web-create-csa-dev.json", FORGED, OWNED_CPU] {
        client.post("/mutate", fixture_bytes(f)).await;
        client.post("/validate", fixture_bytes(f)).await;
    }
    client.post("/validate", b"{not a review".to_vec()).await;
    client.post("/mutate", b"[]".to_vec()).await;
    let after = samples(&metrics_text(p.metrics).await);
    let before: BTreeSet<_> = found.iter().cloned().collect();
    let new: Vec<_> = after
        .iter()
        .filter(|(n, l)| !before.contains(&(n.clone(), l.clone())) && !l.contains_key("le"))
        .filter(|(n, _)| !n.starts_with("hallmark_ownership_decisions_total"))
        .collect();
    assert!(new.is_empty(), "series that appeared only with traffic: {new:?}");
}

#[tokio::test]
async fn certificate_expiry_is_exported_at_start_and_after_every_reload() {
    let p = start(&[]).await;
    let series = "hallmark_certificate_expiry_timestamp_seconds";
    let expiry = sample(&metrics_text(p.metrics).await, series).expect("expiry exported at start");
    let day = 86_400.0;
    assert!((expiry - (now_unix() + day)).abs() < day / 2.0, "a 1-day certificate: {expiry}");

    let ca = write_pair_for(p.dir.path(), 30);
    let m = p.metrics;
    wait_until("the 30-day certificate's expiry", || async move {
        sample(&metrics_text(m).await, series).is_some_and(|e| (e - (now_unix() + 30.0 * day)).abs() < day / 2.0)
    })
    .await;
    assert!(handshake_ok(p.addr, &ca).await, "the reloaded certificate is served");
}

#[tokio::test]
async fn a_refused_policy_file_is_exported_as_rejected_until_a_good_one_loads() {
    let p = start(&[]).await;
    let policy = p.dir.path().join("policy.yaml");
    let m = p.metrics;
    let rejected = |v: f64| async move {
        sample(&metrics_text(m).await, r#"hallmark_policies_rejected{source="files"}"#) == Some(v)
    };
    write_policy(&policy, "not-an-action");
    wait_until("the refused policy", || rejected(1.0)).await;
    write_policy(&policy, "warn");
    wait_until("the good policy", || rejected(0.0)).await;
}

#[tokio::test]
async fn text_logs_carry_no_escape_codes_when_not_on_a_terminal() {
    let p = start(&[]).await;
    let mut client = ApiserverClient::connect(p.addr, &p.ca).await;
    let reply = client.post("/validate", fixture_bytes(OWNED_CPU)).await;
    assert_eq!(reply.response()["allowed"], false, "the Flux-owned CPU limit is denied");
    wait_until("the decision log line", || {
        let text = p.stderr_text();
        async move { text.contains("admission decision") }
    })
    .await;
    let err = std::fs::read(&p.stderr).expect("stderr");
    let out = std::fs::read(&p.stdout).expect("stdout");
    let text = String::from_utf8_lossy(&err);
    assert!(text.contains("INFO") && text.contains("hallmark serving"), "text logs on stderr:\n{text}");
    assert!(!err.contains(&0x1b), "stderr (a file) holds ANSI escape codes:\n{text:?}");
    assert!(!out.contains(&0x1b), "stdout (a file) holds ANSI escape codes");
}

#[tokio::test]
async fn json_logs_give_one_line_per_notable_decision_with_fields_and_no_values() {
    let p = start(&["--log-format", "json"]).await;
    let mut client = ApiserverClient::connect(p.addr, &p.ca).await;
    // A plain allow (a stamp) is not logged at info ...
    let stamped = client.post("/mutate", fixture_bytes("deploy-web-create-csa-dev.json")).await;
    assert_eq!(stamped.status, 200);
    // ... a denial is, and so is a stamp that had to replace forged provenance.
    let denied = client.post("/validate", fixture_bytes(OWNED_CPU)).await;
    assert_eq!(denied.response()["allowed"], false);
    let forged = client.post("/mutate", fixture_bytes(FORGED)).await.response();
    assert!(forged["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{forged}");
    wait_until("the decision log lines", || {
        let text = p.stderr_text();
        async move { text.matches("admission decision").count() >= 2 }
    })
    .await;
    let text = p.stderr_text();
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let decisions: Vec<&Json> = lines.iter().filter(|l| l["message"] == "admission decision").collect();
    assert_eq!(decisions.len(), 2, "a line for the denial and the forged stamp, none for the plain stamp:\n{text}");
    let d = decisions.iter().find(|d| d["outcome"] == "denied").expect("the denial's line");
    assert_eq!(d["level"], "INFO");
    // Flat: the event's fields beside timestamp and level, as log pipelines index them.
    let f = d;
    for (key, want) in [
        ("endpoint", "validate"),
        ("outcome", "denied"),
        ("kind", "Deployment"),
        ("namespace", "team-a"),
        ("name", "platform-agent"),
        ("operation", "UPDATE"),
        ("user", "dev"),
        ("policies", "platform"),
        ("fields", "spec.template.spec.containers[name=agent].resources.limits.cpu"),
    ] {
        assert_eq!(f[key], want, "{key} in {d}");
    }
    assert_eq!(f["warnings"], 0);
    let stamp = decisions.iter().find(|d| d["endpoint"] == "mutate").expect("the forged stamp's line");
    assert_eq!(stamp["outcome"], "stamped");
    assert_eq!(stamp["name"], "web");
    assert!(stamp["warnings"].as_u64().is_some_and(|n| n > 0), "{stamp}");
    let fields = stamp["fields"].as_str().expect("fields");
    assert!(fields.contains(r#"metadata.annotations["hallmark.dev/committer"]"#), "{fields}");
    // Never a value of the object: not the CPU limits (old and new), not the env value,
    // not the forged annotations' values.
    for value in ["750m", "500m", "prod-eu-1", "ghcr.io/acme", "torvalds", "kustomize-controller"] {
        assert!(!text.contains(value), "the logs carry an object value ({value}):\n{text}");
    }
    assert!(!text.as_bytes().contains(&0x1b), "JSON logs carry no escape codes");

    let scrape = metrics_text(p.metrics).await;
    assert_eq!(
        sample(&scrape, r#"hallmark_ownership_decisions_total{outcome="denied",policy="platform"}"#),
        Some(1.0),
        "denials are counted by policy:\n{scrape}"
    );
}

// ---------------------------------------------------------------------------------------
// Tests: manifests
// ---------------------------------------------------------------------------------------

#[test]
fn the_deployment_runs_json_logs() {
    let dep = yaml("manifests/base/deployment.yaml");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Json::as_str).collect();
    let from_args = args
        .iter()
        .find_map(|a| a.strip_prefix("--log-format="))
        .or_else(|| args.iter().position(|a| *a == "--log-format").and_then(|i| args.get(i + 1).copied()));
    let from_env = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "HALLMARK_LOG_FORMAT")
        .and_then(|e| e["value"].as_str());
    assert_eq!(from_args.or(from_env), Some("json"), "the Deployment must run --log-format=json: {args:?}");
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port_the_service_and_the_pods_expose() {
    let sm = yaml("manifests/monitoring/servicemonitor.yaml");
    let svc = yaml("manifests/base/service.yaml");
    let dep = yaml("manifests/base/deployment.yaml");
    // The selector picks the hallmark Service.
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selects label {k}={v}");
    }
    let ns = svc["metadata"]["namespace"].as_str().unwrap();
    let names: Vec<&str> =
        sm["spec"]["namespaceSelector"]["matchNames"].as_array().unwrap().iter().filter_map(Json::as_str).collect();
    assert_eq!(names, vec![ns]);
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["scheme"], "http", "the metrics port is plain HTTP");
    // Port name -> Service port -> container port -> --metrics-listen on all interfaces.
    let port = ep["port"].as_str().expect("endpoint port by name");
    let sp = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == port).expect("Service port");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let cp = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == sp["targetPort"] || p["containerPort"] == sp["targetPort"])
        .expect("the Service's targetPort is a container port");
    let listen = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .find_map(|a| a.strip_prefix("--metrics-listen="))
        .expect("--metrics-listen");
    let listen: SocketAddr = listen.parse().expect("address");
    assert!(listen.ip().is_unspecified(), "metrics must listen on all interfaces in the pod, not {listen}");
    assert_eq!(cp["containerPort"].as_u64(), Some(u64::from(listen.port())));
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

#[test]
fn the_monitoring_overlay_renders_with_kustomize() {
    let mut cmd = if on_path("kubectl") {
        let mut c = Command::new("kubectl");
        c.arg("kustomize");
        c
    } else if on_path("kustomize") {
        let mut c = Command::new("kustomize");
        c.arg("build");
        c
    } else {
        eprintln!("SKIPPED: neither kubectl nor kustomize on PATH");
        return;
    };
    let out = cmd.arg(repo().join("manifests/monitoring")).output().expect("run kustomize");
    assert!(out.status.success(), "kustomize failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<Json> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("YAML")).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect();
    let kinds: BTreeSet<(&str, &str)> =
        docs.iter().map(|d| (d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [("ConfigMap", "hallmark-dashboard"), ("PrometheusRule", "hallmark"), ("ServiceMonitor", "hallmark")].into(),
        "only monitoring objects: the overlay must not re-apply the base"
    );
    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], "hallmark-system", "{}", d["kind"]);
    }
    for d in docs.iter().filter(|d| d["kind"] != "ConfigMap") {
        assert_eq!(d["apiVersion"], "monitoring.coreos.com/v1");
    }
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "the Grafana sidecar's label");
    let json: Json = serde_json::from_str(cm["data"]["hallmark.json"].as_str().expect("dashboard key")).expect("JSON");
    assert_eq!(json, dashboard(), "the ConfigMap carries the dashboard file");
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    assert_eq!(rule["spec"], rule_file()["spec"]);
}
