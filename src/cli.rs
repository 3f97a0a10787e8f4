//! The `hallmark` command line: `serve`, `check`, `certs`, `crd`, `declare`, `webhook-config`.

use crate::admission::{AdmissionRequest, Answer, GroupVersionKind, GroupVersionResource, Operation, Review, UserInfo};
use crate::config::Settings;
use crate::policy::{PolicySet, load_paths};
use crate::provenance::Stamper;
use crate::review::{Engine, OnError};
use crate::server::serve::{ServeOptions, bind, shutdown_signal};
use crate::server::tls::{CertStore, certified_key_from_pem, load_pair, record_expiry, reload_counter, watch_pair};
use crate::server::{AppState, policy_watch};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exit codes: 0 ok / allowed, 1 denied (check) or runtime failure, 2 bad input.
pub const EXIT_DENIED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "hallmark",
    version,
    about = "Kubernetes admission webhook: provenance stamps and Git field ownership"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the webhook server.
    Serve(ServeArgs),
    /// Evaluate a write offline and print what the webhook would answer.
    Check(CheckArgs),
    /// Write a CA and a serving certificate/key.
    Certs(CertsArgs),
    /// Print the OwnershipPolicy CustomResourceDefinition.
    Crd,
    /// Print the webhook configurations, with the ownership webhook's matchConditions
    /// generated from the policies (YAML).
    WebhookConfig(WebhookConfigArgs),
    /// Add the declared provenance annotations from the CI environment to manifests
    /// (stdin or -f) and print them: after `kustomize build`, before `kubectl apply -f -`,
    /// or as Helm's post-renderer.
    Declare(DeclareCliArgs),
}

#[derive(Args, Debug)]
pub struct DeclareCliArgs {
    #[command(flatten)]
    pub declare: crate::declare::DeclareArgs,
    /// Annotation prefix (default hallmark.dev/), as the webhook's.
    #[arg(long, env = "HALLMARK_ANNOTATION_PREFIX")]
    pub annotation_prefix: Option<String>,
    /// Output format [default: JSON when every input is JSON, else YAML].
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DeclareFormat>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DeclareFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ProvenanceArgs {
    /// Config file (YAML): trusted declarers, extra-key mapping, reconcilers, history.
    #[arg(long, env = "HALLMARK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Annotation prefix (default hallmark.dev/); wins over the config file.
    #[arg(long, env = "HALLMARK_ANNOTATION_PREFIX")]
    pub annotation_prefix: Option<String>,
    /// Stamps kept in the history annotation (0 turns it off); wins over the config file.
    #[arg(long, env = "HALLMARK_HISTORY")]
    pub history: Option<usize>,
    /// Ownership policy file or directory (repeatable). Without any, the built-in default applies.
    #[arg(long = "policy", env = "HALLMARK_POLICY", value_delimiter = ',')]
    pub policies: Vec<PathBuf>,
    /// Set kubernetes.io/change-cause on writes that change a Deployment's, StatefulSet's or
    /// DaemonSet's pod template (true/false); wins over the config file's changeCause.
    #[arg(long, env = "HALLMARK_CHANGE_CAUSE", value_name = "BOOL")]
    pub change_cause: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the TLS webhook endpoint.
    #[arg(long, env = "HALLMARK_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP metrics endpoint.
    #[arg(long, env = "HALLMARK_METRICS_LISTEN", default_value = "127.0.0.1:8080")]
    pub metrics_listen: SocketAddr,
    /// Serving certificate (PEM). Without it, an in-memory self-signed one is generated.
    #[arg(long, env = "HALLMARK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "HALLMARK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Without --tls-cert: write the CA of the generated certificate (PEM) to this file,
    /// for `hallmark webhook-config --ca-file`. The generated CA changes at every start;
    /// for one that stays, use `hallmark certs` and --tls-cert/--tls-key.
    #[arg(long, env = "HALLMARK_WRITE_CA", conflicts_with = "tls_cert")]
    pub write_ca: Option<PathBuf>,
    /// Require client certificates signed by this CA (kube-apiserver's admission client cert).
    #[arg(long, env = "HALLMARK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
    /// Also watch OwnershipPolicy custom resources through the Kubernetes API.
    #[arg(long, env = "HALLMARK_WATCH_POLICIES")]
    pub watch_policies: bool,
    /// With --watch-policies: the ValidatingWebhookConfiguration whose ownership webhook's
    /// matchConditions hallmark keeps in line with the policies ("" turns this off).
    #[arg(long, env = "HALLMARK_WEBHOOK_CONFIG_NAME", default_value = "hallmark")]
    pub webhook_config_name: String,
    /// What /validate answers when it cannot evaluate a review.
    #[arg(long, env = "HALLMARK_ON_ERROR", value_enum, default_value = "allow")]
    pub on_error: OnError,
    /// Seconds to keep answering after SIGTERM (with /readyz false) before closing.
    #[arg(long, env = "HALLMARK_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Seconds an idle keep-alive connection stays open (keep it above kube-apiserver's 90).
    #[arg(long, env = "HALLMARK_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub idle_timeout_seconds: u64,
    /// Seconds a client has to send a request's headers, counted from the connection's
    /// start or from the first byte of the request (an idle keep-alive connection waits
    /// for --idle-timeout-seconds instead). Slow or stalled clients are closed after it.
    #[arg(long, env = "HALLMARK_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Open connections at most; past it a new connection gets a 503 and is closed.
    #[arg(long, env = "HALLMARK_MAX_CONNECTIONS", default_value_t = crate::server::serve::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds /validate waits for the parent of a scale write (Deployment,
    /// StatefulSet, ReplicaSet) from the Kubernetes API; a failed read is answered as
    /// --on-error says.
    #[arg(long, env = "HALLMARK_PARENT_LOOKUP_TIMEOUT_MS", default_value_t = 2000)]
    pub parent_lookup_timeout_ms: u64,
    /// Log format.
    #[arg(long, env = "HALLMARK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Args, Debug)]
pub struct WebhookConfigArgs {
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
    /// metadata.name of the stamp and ownership configurations (the policy one is NAME-policies).
    #[arg(long, default_value = "hallmark")]
    pub name: String,
    /// Namespace of hallmark's Service.
    #[arg(long, default_value = "hallmark-system")]
    pub namespace: String,
    /// Name of hallmark's Service.
    #[arg(long, default_value = "hallmark")]
    pub service: String,
    /// Port of hallmark's Service (HTTPS).
    #[arg(long, default_value_t = 443)]
    pub port: i32,
    /// Call hallmark at https://HOST:PORT (clientConfig.url, `/mutate` and `/validate`
    /// appended) instead of a Service: for a hallmark running outside the cluster, e.g.
    /// `hallmark serve --listen 0.0.0.0:8443` on a laptop beside kind or minikube.
    #[arg(long, conflicts_with_all = ["service", "port"])]
    pub url: Option<String>,
    /// CA certificate (PEM) that signed hallmark's serving certificate; without it, the
    /// placeholder of the committed manifests.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// failurePolicy of the ownership webhook.
    #[arg(long, default_value = "Fail", value_parser = ["Fail", "Ignore"])]
    pub ownership_failure_policy: String,
    /// Print only one of the configurations: mutating (stamp), validating (ownership) or
    /// policies (the OwnershipPolicy check, `<name>-policies`).
    #[arg(long, value_enum)]
    pub only: Option<crate::webhook_config::Which>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
    /// The writer's username.
    #[arg(long, default_value = "unknown-user")]
    pub user: String,
    /// The writer's groups (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// userInfo.extra entries, KEY=VALUE (repeatable).
    #[arg(long = "extra")]
    pub extra: Vec<String>,
    /// Field manager of the write.
    #[arg(long)]
    pub field_manager: Option<String>,
    /// The object as it is now (YAML or JSON). Without it, the write is a CREATE.
    #[arg(long, conflicts_with = "review")]
    pub old: Option<PathBuf>,
    /// The object as the write would leave it (YAML or JSON).
    #[arg(long, conflicts_with = "review", required_unless_present_any = ["review", "delete"])]
    pub new: Option<PathBuf>,
    /// A whole AdmissionReview (JSON) instead of --old/--new.
    #[arg(long)]
    pub review: Option<PathBuf>,
    /// Judge a DELETE of --old instead of a write.
    #[arg(long, requires = "old", conflicts_with = "new")]
    pub delete: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// DNS names or IP addresses of the serving certificate (repeatable).
    #[arg(long = "dns", required = true)]
    pub names: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return 1;
                }
            };
            runtime.block_on(serve(args))
        }
        Command::Check(args) => check(args),
        Command::Certs(args) => certs(args),
        Command::Declare(args) => {
            let format = match args.output {
                Some(DeclareFormat::Yaml) => crate::declare::Format::Yaml,
                Some(DeclareFormat::Json) => crate::declare::Format::Json,
                None => crate::declare::Format::Auto,
            };
            crate::declare::run(
                &args.declare,
                args.annotation_prefix.as_deref(),
                format,
                &crate::declare::process_env(),
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
        }
        Command::WebhookConfig(args) => webhook_config(args),
        Command::Crd => match crate::policy::crd_yaml() {
            Ok(y) => {
                write_stdout(&y);
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

/// Logs go to stderr. Text logs carry ANSI colours only when stderr is a terminal (and
/// `NO_COLOR` is unset): in a pod or a file they are plain text. JSON logs never do.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = format == LogFormat::Text
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Settings from the config file and the flags that win over it.
pub fn settings(args: &ProvenanceArgs) -> Result<Settings, String> {
    let mut s = match &args.config {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    if let Some(prefix) = &args.annotation_prefix {
        s.set_prefix(prefix.clone()).map_err(|e| e.to_string())?;
    }
    if let Some(h) = args.history {
        s.set_history(h).map_err(|why| format!("--history: {why}"))?;
    }
    if let Some(c) = args.change_cause {
        s.change_cause = c;
    }
    Ok(s)
}

/// The settings and the policies that `serve` and `check` start from.
fn inputs(args: &ProvenanceArgs) -> Result<(Settings, PolicySet), String> {
    let settings = settings(args)?;
    if args.policies.is_empty() {
        return Ok((settings, PolicySet::default()));
    }
    let policies = load_paths(&args.policies).map_err(|e| e.to_string())?;
    Ok((settings, PolicySet { policies }))
}

async fn serve(args: ServeArgs) -> i32 {
    let (settings, policies) = match inputs(&args.provenance) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    // Reconcilers' Git sources (Flux, Argo CD), read from watch caches filled below.
    let gitops_sources = settings.gitops_sources;
    let events = settings.events;
    let caches = Arc::new(crate::server::sources::SourceCaches::new());
    let mut engine = Engine::new(Stamper::new(settings), args.on_error);
    if gitops_sources {
        engine = engine.with_sources(crate::gitops::Sources(caches.clone()));
    }
    let state = Arc::new(AppState::new(engine, PolicySet::default()));
    caches.set_metrics(state.metrics.gitops.clone());
    if args.watch_policies {
        // Not ready until the first list of OwnershipPolicy resources has loaded.
        state.expect_source("crd");
    }
    state.set_policies(policies);

    // A generated certificate's CA is printed (and written) once the ports are bound: a
    // caBundle for a server that then fails to start would only mislead.
    let mut generated: Option<(Vec<String>, crate::certs::Bundle)> = None;
    let (store, watched) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match load_pair(cert, key) {
            Ok((ck, fp)) => (Arc::new(CertStore::new(ck)), Some((cert.clone(), key.clone(), fp))),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        _ => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            let ip = args.listen.ip();
            if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
            let bundle = match crate::certs::generate(&names, 365) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot generate a certificate: {e}");
                    return 1;
                }
            };
            let ck = match certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()) {
                Ok(ck) => ck,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            generated = Some((names, bundle));
            (Arc::new(CertStore::new(ck)), None)
        }
    };
    record_expiry(&state.metrics, &store.current());
    let opts = ServeOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        client_ca: args.client_ca.clone(),
        drain: Duration::from_secs(args.drain_seconds),
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
        header_timeout: Duration::from_secs(args.header_timeout_seconds.max(1)),
        max_connections: args.max_connections.max(1),
        ..ServeOptions::default()
    };
    let bound = match bind(state.clone(), store.clone(), opts).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    if let Some((names, bundle)) = &generated {
        if let Some(path) = &args.write_ca
            && let Err(e) = write_private(path, bundle.ca_pem.as_bytes(), false)
        {
            eprintln!("error: --write-ca {}: {e}", path.display());
            return 1;
        }
        let mut text = format!("hallmark: generated a self-signed serving certificate for {}\n", names.join(", "));
        if let Some(path) = &args.write_ca {
            text.push_str(&format!("hallmark: wrote its CA to {}\n", path.display()));
        }
        text.push_str(&format!("caBundle: {}\n", bundle.ca_bundle_base64()));
        write_stdout(&text);
    }
    // The parents of scale writes are read through the API (RBAC: get on deployments,
    // statefulsets, replicasets). Without a client, such writes follow --on-error.
    match kube::Client::try_default().await {
        Ok(client) => {
            if gitops_sources {
                crate::server::sources::watch(caches, client.clone()).await;
            }
            if events {
                let metrics = state.metrics.events.clone();
                let (sink, queue) =
                    crate::server::events::EventSink::new(metrics.clone(), crate::server::events::QUEUE);
                state.set_events(sink);
                tokio::spawn(crate::server::events::send_all(client.clone(), queue, metrics));
            }
            state.set_parent_lookup(crate::server::parents::ParentLookup::new(
                client,
                Duration::from_millis(args.parent_lookup_timeout_ms.max(1)),
            ))
        }
        Err(e) => {
            if gitops_sources {
                caches.unavailable(&crate::admission::one_line(&e.to_string()));
            }
            tracing::info!(
                "no Kubernetes API access (not in a pod, no kubeconfig): a scale write whose parent must be read is answered as --on-error says"
            );
            tracing::debug!(error = %crate::admission::one_line(&e.to_string()), "Kubernetes client");
        }
    }
    if let Some((cert, key, fp)) = watched {
        tokio::spawn(watch_pair(store, cert, key, fp, reload_counter(state.clone())));
    }
    if !args.provenance.policies.is_empty() {
        tokio::spawn(policy_watch(state.clone(), args.provenance.policies.clone()));
    }
    if args.watch_policies {
        tokio::spawn(crate::server::crd::watch(state.clone()));
        if !args.webhook_config_name.is_empty() {
            let options = crate::server::webhook_sync::SyncOptions::new(args.webhook_config_name.clone());
            tokio::spawn(crate::server::webhook_sync::sync(state.clone(), options));
        }
    }
    tracing::info!(listen = %bound.addr, metrics = %bound.metrics_addr, "hallmark serving");
    match bound.serve(shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            1
        }
    }
}

fn webhook_config(args: WebhookConfigArgs) -> i32 {
    let (settings, policies) = match inputs(&args.provenance) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Some(url) = &args.url
        && let Err(why) = crate::webhook_config::check_url(url)
    {
        eprintln!("error: --url {url:?}: {why}");
        return EXIT_BAD_INPUT;
    }
    let mut target = crate::webhook_config::Target {
        url: args.url.clone(),
        name: args.name,
        namespace: args.namespace,
        service: args.service,
        port: args.port,
        ownership_failure_policy: args.ownership_failure_policy,
        system_writers: (
            settings.system_writers.users.as_written().to_vec(),
            settings.system_writers.groups.as_written().to_vec(),
        ),
        ..crate::webhook_config::Target::default()
    };
    match &args.ca_file {
        Some(path) => match read_ca_file(path) {
            Ok(pem) => target.ca_bundle = pem,
            Err(e) => {
                eprintln!("error: --ca-file {e}");
                return EXIT_BAD_INPUT;
            }
        },
        None => eprintln!(
            "hallmark webhook-config: no --ca-file: the caBundle is a placeholder, and the ownership webhook \
             (failurePolicy: {}) rejects the writes it covers until a certificate overlay or cert-manager \
             replaces it; pass --ca-file ca.crt to apply the output directly",
            target.ownership_failure_policy
        ),
    }
    match crate::webhook_config::yaml(&target, &policies, args.only) {
        Ok(y) => {
            write_stdout(&y);
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The bytes of a CA file for a caBundle: PEM with at least one certificate, and nothing
/// that does not parse (kube-apiserver would only fail later, on every call).
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut certs = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let der = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: not an X.509 certificate: {e}", path.display()))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file; pass the ca.crt that `hallmark certs` wrote",
            path.display()
        ));
    }
    Ok(pem)
}

fn certs(args: CertsArgs) -> i32 {
    for name in &args.names {
        if let Err(why) = crate::certs::check_name(name) {
            eprintln!("error: --dns {name:?}: {why}");
            return EXIT_BAD_INPUT;
        }
    }
    let bundle = match crate::certs::generate(&args.names, args.days) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot generate certificates: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: {}: {e}", args.out.display());
        return 1;
    }
    for (name, text) in [("ca.crt", &bundle.ca_pem), ("tls.crt", &bundle.cert_pem), ("tls.key", &bundle.key_pem)] {
        let path = args.out.join(name);
        if let Err(e) = write_private(&path, text.as_bytes(), name == "tls.key") {
            eprintln!("error: {}: {e}", path.display());
            return 1;
        }
    }
    println!("wrote {}/ca.crt, tls.crt, tls.key for {}", args.out.display(), args.names.join(", "));
    println!("caBundle: {}", bundle.ca_bundle_base64());
    0
}

fn write_private(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    std::fs::write(path, bytes)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = secret;
    Ok(())
}

/// Reads a YAML or JSON manifest into a JSON value.
pub fn read_manifest(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_yaml::from_str(&text).map_err(|e| {
        let loc = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        format!("{}{loc}: {e}", path.display())
    })?;
    if !v.is_object() {
        return Err(format!("{}: not a Kubernetes object", path.display()));
    }
    Ok(v)
}

/// An AdmissionRequest for an offline write of `new` over `old`.
pub fn request_for(
    old: Option<Value>,
    new: Option<Value>,
    user: UserInfo,
    field_manager: Option<String>,
) -> AdmissionRequest {
    let operation = match (&old, &new) {
        (Some(_), Some(_)) => Operation::Update,
        (Some(_), None) => Operation::Delete,
        _ => Operation::Create,
    };
    let any = new.as_ref().or(old.as_ref());
    let s = |p: &str| any.and_then(|o| o.pointer(p)).and_then(Value::as_str).map(str::to_owned);
    let api_version = s("/apiVersion").unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    let kind = s("/kind").unwrap_or_default();
    let resource = crate::policy::guess_resource(&kind);
    AdmissionRequest {
        uid: "hallmark-check".to_owned(),
        kind: GroupVersionKind { group: group.clone(), version: version.clone(), kind },
        resource: GroupVersionResource { group, version, resource },
        sub_resource: None,
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        operation,
        user_info: user,
        object: new,
        old_object: old,
        dry_run: Some(true),
        options: crate::admission::RequestOptions { field_manager },
    }
}

fn check(args: CheckArgs) -> i32 {
    let (settings, policies) = match inputs(&args.provenance) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let (request, api_version) = match &args.review {
        Some(path) => {
            let body = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_BAD_INPUT;
                }
            };
            match Review::decode(&body) {
                Ok(r) => (r.request, r.api_version),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return EXIT_BAD_INPUT;
                }
            }
        }
        None => {
            let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
            for kv in &args.extra {
                let Some((k, v)) = kv.split_once('=') else {
                    eprintln!("error: --extra {kv:?}: expected KEY=VALUE");
                    return EXIT_BAD_INPUT;
                };
                extra.entry(k.to_owned()).or_default().push(v.to_owned());
            }
            let read = |p: &Option<PathBuf>| p.as_deref().map(read_manifest).transpose();
            let (old, new) = match (read(&args.old), read(&args.new)) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return EXIT_BAD_INPUT;
                }
            };
            let user = UserInfo { username: args.user.clone(), uid: None, groups: args.groups.clone(), extra };
            let new = if args.delete { None } else { new };
            (request_for(old, new, user, args.field_manager.clone()), crate::admission::V1)
        }
    };
    let engine = Engine::new(Stamper::new(settings), OnError::Allow);
    let validation = engine.validate(&request, &policies);
    let mutation = engine.mutate(&request, &policies, jiff::Timestamp::now());
    print_check(&request, api_version, &mutation.answer, &validation.answer, args.json);
    if validation.answer.allowed { 0 } else { EXIT_DENIED }
}

fn print_check(req: &AdmissionRequest, api_version: &str, mutation: &Answer, validation: &Answer, json: bool) {
    use std::fmt::Write as _;
    let patch: Option<Value> = mutation.patch.as_ref().and_then(|p| serde_json::from_slice(p).ok());
    let mut warnings: Vec<&String> = mutation.warnings.iter().chain(validation.warnings.iter()).collect();
    warnings.dedup();
    if json {
        let out = serde_json::json!({
            "apiVersion": api_version,
            "object": crate::review::describe(req),
            "operation": req.operation,
            "allowed": validation.allowed,
            "message": validation.denial.as_ref().map(|d| d.message.clone()),
            "warnings": warnings,
            "patch": patch,
            "auditAnnotations": validation.audit_annotations,
        });
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&out).unwrap_or_default()));
        return;
    }
    // Writing into a String cannot fail.
    let mut text = String::new();
    let _ = writeln!(text, "{} {}", req.operation.as_str(), crate::review::describe(req));
    let _ = match &validation.denial {
        Some(d) => writeln!(text, "denied: {}", d.message),
        None => writeln!(text, "allowed"),
    };
    for w in warnings {
        let _ = writeln!(text, "warning: {w}");
    }
    if let Some(p) = patch {
        let _ = writeln!(text, "patch: {}", serde_json::to_string(&p).unwrap_or_default());
    }
    write_stdout(&text);
}

/// Writes a command's output to stdout. A reader that went away (`| head -1`: a broken
/// pipe) is not an error of the command: the rest is dropped quietly, where `print!`
/// would panic.
pub fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
