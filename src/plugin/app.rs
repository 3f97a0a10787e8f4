//! The `kubectl-hallmark` command line and the commands, over a [`Cluster`].

use super::check::{self, CheckResult, Manifest};
use super::cluster::{Cluster, ConnectOptions, connect, not_found};
use super::discovery::{Discovery, DiscoveryError, Resource};
use super::list::{ListFilter, list_document, list_rows, render_list};
use super::owners::{PolicySource, owners, owners_document, render_owners};
use super::show::{render_show, show_document};
use crate::admission::UserInfo;
use crate::config::Settings;
use crate::policy::PolicySet;
use crate::provenance::{Keys, Stamper};
use crate::review::{Engine, OnError};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit codes, as `hallmark check`: 0 fine / allowed, 1 an error or a denial, 2 bad input.
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

const DEFAULT_LIST_KINDS: &str = "deployments,statefulsets,daemonsets,services,configmaps";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-hallmark",
    bin_name = "kubectl hallmark",
    version,
    about = "Provenance stamps and Git field ownership of Kubernetes objects (hallmark)"
)]
pub struct PluginCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file to use.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Don't print headers.
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// hallmark's annotation prefix [default: hallmark.dev/, or check's --config].
    #[arg(long, global = true)]
    pub annotation_prefix: Option<String>,
    /// Username to impersonate for the operation.
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Group to impersonate (repeatable).
    #[arg(long = "as-group", global = true)]
    pub as_groups: Vec<String>,
    /// User extra to impersonate, KEY=VALUE (repeatable).
    #[arg(long = "as-user-extra", global = true, value_parser = key_value)]
    pub as_user_extra: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug, Clone)]
pub enum PluginCommand {
    /// Print the provenance stamp and history of an object: show KIND/NAME or KIND NAME.
    Show {
        #[arg(required = true, num_args = 1..=2, value_name = "KIND/NAME")]
        target: Vec<String>,
    },
    /// Print which fields Git owns (policies + managedFields) and who manages the rest.
    Owners {
        #[arg(required = true, num_args = 1..=2, value_name = "KIND/NAME")]
        target: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Say what the webhook would answer for a manifest against the live objects.
    Check(CheckArgs),
    /// List objects with their last stamp.
    List(ListArgs),
    /// Add the declared provenance annotations from the CI environment to manifests
    /// (stdin or -f) and print them. Needs no cluster.
    Declare(crate::declare::DeclareArgs),
    /// For each field (or the FIELDs given, in the policy path syntax), the last write that
    /// changed it: blame KIND/NAME [FIELD...] or KIND NAME [FIELD...].
    Blame {
        #[arg(required = true, num_args = 1.., value_name = "KIND/NAME [FIELD]")]
        args: Vec<String>,
    },
    /// The Git-owned fields someone other than their reconciler holds now (after a
    /// break-glass write or a forced apply): drift [KIND/NAME | KIND NAME] [-A]. Exit 1
    /// when there is drift.
    Drift(DriftArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DriftArgs {
    /// One object (KIND/NAME or KIND NAME); without it, every object of --kind.
    #[arg(num_args = 0..=2, value_name = "KIND/NAME")]
    pub target: Vec<String>,
    /// Across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Resource types to look at without a target, comma-separated.
    #[arg(long, default_value = DEFAULT_LIST_KINDS)]
    pub kind: String,
    /// Print, per object, a patch (YAML) holding the drifted fields at their live values.
    #[arg(long)]
    pub patch: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// Ownership policy file or directory (repeatable). Default: the cluster's
    /// OwnershipPolicy resources, or the built-in default without them.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Manifest file or directory (repeatable); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Kustomization directory, rendered with `kubectl kustomize`.
    #[arg(short = 'k', long = "kustomize", conflicts_with = "files")]
    pub kustomize: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The field manager of the write (`kubectl apply` sends kubectl-client-side-apply).
    #[arg(long, default_value = "kubectl-client-side-apply")]
    pub field_manager: String,
    /// The webhook's config file (trusted declarers, extra keys), to judge as it does.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Resource types, comma-separated (short names allowed).
    #[arg(long, default_value = DEFAULT_LIST_KINDS)]
    pub kind: String,
    /// Only objects last written from this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// Only objects last written by this committer.
    #[arg(long)]
    pub committer: Option<String>,
    /// Only objects written since: a duration (2h, 1d, 1h30m) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Also list objects without a stamp (not written since hallmark was installed).
    #[arg(long, conflicts_with_all = ["branch", "committer", "since"])]
    pub unstamped: bool,
}

/// A failure, printed to stderr in kubectl's words, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    pub fn error(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: EXIT_ERROR }
    }

    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: EXIT_BAD_INPUT }
    }

    /// `error: ...`, or the server's own `Error from server (...)` line.
    pub fn line(&self) -> String {
        if self.message.starts_with("Error from server") {
            self.message.clone()
        } else {
            format!("error: {}", self.message)
        }
    }
}

impl From<DiscoveryError> for Failure {
    fn from(e: DiscoveryError) -> Failure {
        match e {
            DiscoveryError::Api(e) => Failure::error(super::cluster::api_error(e)),
            // A resource type or kind the server does not serve is bad input (exit 2).
            e @ (DiscoveryError::Unknown(_) | DiscoveryError::UnknownKind { .. }) => Failure::bad_input(e.to_string()),
            other => Failure::error(other.to_string()),
        }
    }
}

/// Where output goes; tests pass buffers.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// The process entry point of `kubectl-hallmark`.
pub fn main() -> i32 {
    let cli = match PluginCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if let PluginCommand::Declare(args) = &cli.command {
        let format = match cli.global.output {
            OutputFormat::Json => crate::declare::Format::Json,
            OutputFormat::Yaml => crate::declare::Format::Yaml,
            OutputFormat::Table => crate::declare::Format::Auto,
        };
        return crate::declare::run(
            args,
            cli.global.annotation_prefix.as_deref(),
            format,
            &crate::declare::process_env(),
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    runtime.block_on(async {
        let mut io = Io { out: &mut out, err: &mut err };
        let cluster = match connect(&connect_options(&cli.global)).await {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(io.err, "{}", Failure::error(e).line());
                return EXIT_ERROR;
            }
        };
        run(&cli, &cluster, jiff::Timestamp::now(), &mut io).await
    })
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `--as-user-extra` entries by key.
fn impersonated_extra(global: &GlobalArgs) -> BTreeMap<String, Vec<String>> {
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &global.as_user_extra {
        extra.entry(k.clone()).or_default().push(v.clone());
    }
    extra
}

/// `--kubeconfig`, `--context`, `--as`, ... as connection options.
pub fn connect_options(global: &GlobalArgs) -> ConnectOptions {
    ConnectOptions {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
        impersonate: global.as_user.clone(),
        impersonate_groups: global.as_groups.clone(),
        impersonate_extra: impersonated_extra(global),
    }
}

/// Runs one command against `cluster`; returns the exit code.
pub async fn run(cli: &PluginCli, cluster: &Cluster, now: jiff::Timestamp, io: &mut Io<'_>) -> i32 {
    let mut warnings = Vec::new();
    let result = match &cli.command {
        PluginCommand::Show { target } => show(&cli.global, cluster, target, now).await,
        PluginCommand::Owners { target, policy } => {
            owners_cmd(&cli.global, cluster, target, policy, &mut warnings).await
        }
        PluginCommand::Check(args) => check_cmd(&cli.global, cluster, args, now, &mut warnings).await,
        PluginCommand::List(args) => list_cmd(&cli.global, cluster, args, now).await,
        PluginCommand::Declare(_) => Err(Failure::bad_input("declare runs without a cluster: call plugin::main")),
        PluginCommand::Blame { args } => blame_cmd(&cli.global, cluster, args, now, &mut warnings).await,
        PluginCommand::Drift(args) => drift_cmd(&cli.global, cluster, args, now, &mut warnings).await,
    };
    for w in &warnings {
        let _ = writeln!(io.err, "Warning: {w}");
    }
    match result {
        Ok(Done { stdout, stderr, code }) => {
            let _ = io.err.write_all(stderr.as_bytes());
            let _ = io.out.write_all(stdout.as_bytes());
            let _ = io.out.flush();
            code
        }
        Err(f) => {
            let _ = writeln!(io.err, "{}", f.line());
            f.code
        }
    }
}

/// A command's output and exit code.
struct Done {
    stdout: String,
    /// Notes for stderr (kubectl's "No resources found").
    stderr: String,
    code: i32,
}

impl Done {
    fn ok(stdout: String) -> Done {
        Done { stdout, stderr: String::new(), code: 0 }
    }
}

fn keys(global: &GlobalArgs) -> Result<Keys, Failure> {
    let prefix = global.annotation_prefix.as_deref().unwrap_or(crate::config::DEFAULT_PREFIX);
    crate::config::validate_prefix(prefix).map_err(|why| Failure::bad_input(format!("--annotation-prefix: {why}")))?;
    Ok(Keys::new(prefix))
}

fn document(format: OutputFormat, doc: &Value) -> Result<String, Failure> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(doc)
            .map(|s| s + "\n")
            .map_err(|e| Failure::error(format!("cannot print JSON: {e}"))),
        OutputFormat::Yaml | OutputFormat::Table => {
            serde_yaml::to_string(doc).map_err(|e| Failure::error(format!("cannot print YAML: {e}")))
        }
    }
}

/// `KIND/NAME` or `KIND NAME`.
fn split_target(target: &[String]) -> Result<(String, String), Failure> {
    match target {
        [one] => match one.split_once('/') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((kind.to_owned(), name.to_owned()))
            }
            _ => Err(Failure::bad_input(format!(
                "arguments in resource/name form must have a single resource and name: \"{one}\""
            ))),
        },
        [kind, name] if !kind.contains('/') && !name.contains('/') => Ok((kind.clone(), name.clone())),
        _ => Err(Failure::bad_input(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form",
        )),
    }
}

/// The namespace to use for `resource`: `-n`, else the context's; none for cluster-scoped.
fn namespace_for<'a>(resource: &Resource, global: &'a GlobalArgs, cluster: &'a Cluster) -> Option<&'a str> {
    resource.namespaced.then(|| global.namespace.as_deref().unwrap_or(&cluster.default_namespace))
}

async fn fetch(global: &GlobalArgs, cluster: &Cluster, target: &[String]) -> Result<(Resource, Value), Failure> {
    let (kind, name) = split_target(target)?;
    let mut discovery = Discovery::new(cluster.client.clone());
    let resource = discovery.resolve(&kind).await?;
    let ns = namespace_for(&resource, global, cluster);
    match cluster.get(&resource, ns, &name).await.map_err(Failure::error)? {
        Some(obj) => Ok((resource, obj)),
        None => Err(Failure::error(not_found(&resource, &name))),
    }
}

async fn show(
    global: &GlobalArgs,
    cluster: &Cluster,
    target: &[String],
    now: jiff::Timestamp,
) -> Result<Done, Failure> {
    let keys = keys(global)?;
    let (_, obj) = fetch(global, cluster, target).await?;
    match global.output {
        OutputFormat::Table => Ok(Done::ok(render_show(&obj, &keys, now, !global.no_headers))),
        format => document(format, &show_document(&obj, &keys)).map(Done::ok),
    }
}

/// `blame KIND/NAME FIELD...` or `blame KIND NAME FIELD...`: the target, then the fields.
fn split_blame_args(args: &[String]) -> (&[String], &[String]) {
    let target_len = if args.first().is_some_and(|a| a.contains('/')) { 1 } else { 2.min(args.len()) };
    args.split_at(target_len)
}

async fn blame_cmd(
    global: &GlobalArgs,
    cluster: &Cluster,
    args: &[String],
    now: jiff::Timestamp,
    warnings: &mut Vec<String>,
) -> Result<Done, Failure> {
    let keys = keys(global)?;
    let (target, fields) = split_blame_args(args);
    let fields = super::blame::parse_fields(fields).map_err(Failure::bad_input)?;
    let (_, obj) = fetch(global, cluster, target).await?;
    let report = super::blame::blame(&obj, &keys, &fields);
    warnings.extend(report.errors.iter().cloned());
    match global.output {
        OutputFormat::Table => {
            let stderr = super::blame::incomplete_note(&report).map(|n| n + "\n").unwrap_or_default();
            Ok(Done { stdout: super::blame::render_blame(&obj, &report, now, !global.no_headers), stderr, code: 0 })
        }
        format => document(format, &super::blame::blame_document(&obj, &report)).map(Done::ok),
    }
}

async fn drift_cmd(
    global: &GlobalArgs,
    cluster: &Cluster,
    args: &DriftArgs,
    now: jiff::Timestamp,
    warnings: &mut Vec<String>,
) -> Result<Done, Failure> {
    use super::drift::{ObjectDrift, drift, drift_document, patch_yaml, render_drift};
    let keys = keys(global)?;
    let mut objects: Vec<(Resource, Value)> = Vec::new();
    let mut errors = String::new();
    if args.target.is_empty() {
        let mut discovery = Discovery::new(cluster.client.clone());
        for kind in args.kind.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let resource = discovery.resolve(kind).await?;
            let ns = if args.all_namespaces { None } else { namespace_for(&resource, global, cluster) };
            match cluster.list(&resource, ns).await {
                Ok(items) => objects.extend(items.into_iter().map(|o| (resource.clone(), o))),
                Err(e) => errors.push_str(&format!("{}\n", Failure::error(e).line())),
            }
        }
    } else {
        objects.push(fetch(global, cluster, &args.target).await?);
    }
    let (set, _) = policies(cluster, &args.policy, warnings).await?;
    let effective: Vec<&crate::policy::CompiledPolicy> = set.effective().collect();
    let items: Vec<ObjectDrift> = objects
        .into_iter()
        .map(|(resource, object)| {
            let report = drift(&object, &resource.plural, &effective, &keys);
            ObjectDrift { object, report }
        })
        .filter(|i| {
            warnings.extend(i.report.errors.iter().cloned());
            !i.report.fields.is_empty()
        })
        .collect();
    let code = if !errors.is_empty() || !items.is_empty() { EXIT_ERROR } else { 0 };
    let stdout = if args.patch {
        items.iter().map(|i| patch_yaml(&i.object, &i.report)).collect::<Vec<_>>().join("---\n")
    } else {
        match global.output {
            OutputFormat::Table if items.is_empty() => {
                if errors.is_empty() {
                    errors.push_str("No drift: every Git-owned field is held by its reconciler.\n");
                }
                String::new()
            }
            OutputFormat::Table => render_drift(&items, args.all_namespaces, !global.no_headers, now),
            format => document(format, &drift_document(&items))?,
        }
    };
    Ok(Done { stdout, stderr: errors, code })
}

async fn policies(
    cluster: &Cluster,
    args: &PolicyArgs,
    warnings: &mut Vec<String>,
) -> Result<(PolicySet, PolicySource), Failure> {
    if !args.policies.is_empty() {
        let loaded = crate::policy::load::load_paths(&args.policies).map_err(|e| Failure::bad_input(e.to_string()))?;
        let names = args.policies.iter().map(|p| p.display().to_string()).collect();
        return Ok((PolicySet { policies: loaded }, PolicySource::Files(names)));
    }
    cluster.policies(warnings).await.map_err(Failure::error)
}

async fn owners_cmd(
    global: &GlobalArgs,
    cluster: &Cluster,
    target: &[String],
    policy: &PolicyArgs,
    warnings: &mut Vec<String>,
) -> Result<Done, Failure> {
    let (resource, obj) = fetch(global, cluster, target).await?;
    let (set, source) = policies(cluster, policy, warnings).await?;
    let grouped = owners(&obj, &resource.plural, set.effective());
    warnings.extend(grouped.errors.iter().cloned());
    match global.output {
        OutputFormat::Table => Ok(Done::ok(render_owners(&obj, &grouped, &source, !global.no_headers))),
        format => document(format, &owners_document(&obj, &grouped, &source)).map(Done::ok),
    }
}

async fn list_cmd(
    global: &GlobalArgs,
    cluster: &Cluster,
    args: &ListArgs,
    now: jiff::Timestamp,
) -> Result<Done, Failure> {
    let keys = keys(global)?;
    let since = match &args.since {
        Some(s) => Some(super::age::parse_since(s, now).map_err(Failure::bad_input)?),
        None => None,
    };
    let filter =
        ListFilter { branch: args.branch.clone(), committer: args.committer.clone(), since, unstamped: args.unstamped };
    let mut discovery = Discovery::new(cluster.client.clone());
    let mut resources = Vec::new();
    for kind in args.kind.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        resources.push(discovery.resolve(kind).await?);
    }
    // Like kubectl, a kind that cannot be listed (forbidden) is reported and the others
    // are still listed.
    let mut rows = Vec::new();
    let mut errors = String::new();
    for resource in &resources {
        if !resource.supports("list") {
            errors.push_str(&format!("error: {} cannot be listed\n", resource.qualified()));
            continue;
        }
        let ns = if args.all_namespaces { None } else { namespace_for(resource, global, cluster) };
        match cluster.list_metadata(resource, ns).await {
            Ok(items) => rows.extend(list_rows(&resource.kind, &items, &keys, &filter)),
            Err(e) => errors.push_str(&format!("{}\n", Failure::error(e).line())),
        }
    }
    let code = if errors.is_empty() { 0 } else { EXIT_ERROR };
    let stdout = match global.output {
        OutputFormat::Table if rows.is_empty() => {
            if errors.is_empty() {
                let ns = global.namespace.as_deref().unwrap_or(&cluster.default_namespace);
                if args.all_namespaces {
                    errors.push_str("No resources found\n");
                } else {
                    errors.push_str(&format!("No resources found in {ns} namespace.\n"));
                }
            }
            String::new()
        }
        OutputFormat::Table => render_list(&rows, args.all_namespaces, !global.no_headers, now),
        format => document(format, &list_document(&rows))?,
    };
    Ok(Done { stdout, stderr: errors, code })
}

/// The user the write would come from: the server's answer to a SelfSubjectReview (which
/// also reflects `--as`), else the impersonation flags or the kubeconfig user name.
async fn current_user(global: &GlobalArgs, cluster: &Cluster, warnings: &mut Vec<String>) -> UserInfo {
    match cluster.whoami().await {
        Ok(user) => user,
        Err(why) => {
            let username = global
                .as_user
                .clone()
                .or_else(|| cluster.kubeconfig_user.clone())
                .unwrap_or_else(|| "unknown-user".to_owned());
            warnings.push(format!(
                "cannot ask the server who you are (SelfSubjectReview: {why}); judging the write as user \"{username}\""
            ));
            let mut groups = global.as_groups.clone();
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".to_owned());
            }
            UserInfo { username, uid: None, groups, extra: impersonated_extra(global) }
        }
    }
}

/// The manifests of `-f` (files, directories, `-`) or `-k`.
fn read_inputs(args: &CheckArgs) -> Result<Vec<Manifest>, Failure> {
    if let Some(dir) = &args.kustomize {
        let text = kustomize(dir)?;
        return check::parse_manifests(&text, &dir.display().to_string()).map_err(Failure::bad_input);
    }
    if args.files.is_empty() {
        return Err(Failure::bad_input("must specify one of -f and -k"));
    }
    let mut out = Vec::new();
    for file in &args.files {
        if file == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Failure::bad_input(format!("reading stdin: {e}")))?;
            out.extend(check::parse_manifests(&text, "STDIN").map_err(Failure::bad_input)?);
            continue;
        }
        let path = Path::new(file);
        let paths = if path.is_dir() { manifest_files(path)? } else { vec![path.to_path_buf()] };
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Failure::bad_input(format!("the path \"{}\" cannot be read: {e}", p.display())))?;
            out.extend(check::parse_manifests(&text, &p.display().to_string()).map_err(Failure::bad_input)?);
        }
    }
    Ok(out)
}

/// The `.yaml`, `.yml` and `.json` files of a directory, sorted (kubectl's `-f DIR`).
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Failure::bad_input(format!("the path \"{}\": {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// `kubectl kustomize DIR`.
fn kustomize(dir: &Path) -> Result<String, Failure> {
    kustomize_with("kubectl", dir)
}

fn kustomize_with(kubectl: &str, dir: &Path) -> Result<String, Failure> {
    let output = std::process::Command::new(kubectl).arg("kustomize").arg(dir).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure::bad_input(format!(
                "-k needs {kubectl} on PATH to run `{kubectl} kustomize {}`; render it yourself and pass -f FILE",
                dir.display()
            ))
        } else {
            Failure::bad_input(format!("cannot run kubectl kustomize: {e}"))
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::bad_input(format!("kubectl kustomize {}: {}", dir.display(), stderr.trim())));
    }
    String::from_utf8(output.stdout).map_err(|e| Failure::bad_input(format!("kubectl kustomize output: {e}")))
}

async fn check_cmd(
    global: &GlobalArgs,
    cluster: &Cluster,
    args: &CheckArgs,
    now: jiff::Timestamp,
    warnings: &mut Vec<String>,
) -> Result<Done, Failure> {
    let mut settings = match &args.config {
        Some(path) => Settings::from_file(path).map_err(|e| Failure::bad_input(e.to_string()))?,
        None => Settings::default(),
    };
    if let Some(prefix) = &global.annotation_prefix {
        settings.set_prefix(prefix.clone()).map_err(|e| Failure::bad_input(e.to_string()))?;
    }
    let manifests = read_inputs(args)?;
    // Every object must map to a resource before anything is judged (bad input: exit 2).
    let mut discovery = Discovery::new(cluster.client.clone());
    let mut targets: Vec<(Resource, Value)> = Vec::new();
    for m in manifests {
        let s = |p: &str| m.object.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        let resource = match discovery.resolve_kind(&s("/apiVersion"), &s("/kind")).await {
            Ok(r) => r,
            Err(e @ DiscoveryError::UnknownKind { .. }) => {
                return Err(Failure::bad_input(format!(
                    "resource mapping not found for name: \"{}\" namespace: \"{}\" from \"{}\": {e}\nensure CRDs are installed first",
                    s("/metadata/name"),
                    s("/metadata/namespace"),
                    m.source
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let mut object = m.object;
        if resource.namespaced {
            let ns = match (s_ns(&object), &global.namespace) {
                (Some(own), Some(flag)) if own != *flag => {
                    return Err(Failure::bad_input(format!(
                        "the namespace from the provided object \"{own}\" does not match the namespace \"{flag}\". You must pass '--namespace={own}' to perform this operation."
                    )));
                }
                (Some(own), _) => own,
                (None, flag) => flag.clone().unwrap_or_else(|| cluster.default_namespace.clone()),
            };
            object["metadata"]["namespace"] = Value::String(ns);
        }
        targets.push((resource, object));
    }

    let (set, source) = policies(cluster, &args.policy, warnings).await?;
    let user = current_user(global, cluster, warnings).await;
    let engine = Engine::new(Stamper::new(settings), OnError::Allow);
    let mut results: Vec<CheckResult> = Vec::new();
    for (resource, object) in targets {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
        let live = cluster.get(&resource, ns.as_deref(), &name).await.map_err(Failure::error)?;
        let qualified = resource.qualified();
        let write = check::Write {
            qualified: &qualified,
            live,
            manifest: &object,
            user: user.clone(),
            field_manager: Some(args.field_manager.clone()),
        };
        results.push(check::evaluate(&engine, &set, write, now));
    }
    let code = if results.iter().all(|r| r.allowed) { 0 } else { EXIT_ERROR };
    let stdout = match global.output {
        OutputFormat::Table => {
            let mut text = String::new();
            if !global.no_headers {
                text.push_str(&format!("Policies: {}\nUser:     {}\n\n", source.describe(), user_line(&user)));
            }
            text.push_str(&check::render_check(&results));
            text
        }
        format => {
            let doc = serde_json::json!({
                "policies": source.describe(),
                "user": user,
                "items": results,
            });
            document(format, &doc)?
        }
    };
    Ok(Done { stdout, stderr: String::new(), code })
}

fn s_ns(object: &Value) -> Option<String> {
    object.pointer("/metadata/namespace").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn user_line(user: &UserInfo) -> String {
    let groups = user.groups.iter().filter(|g| *g != "system:authenticated").cloned().collect::<Vec<_>>();
    if groups.is_empty() { user.username.clone() } else { format!("{} (groups {})", user.username, groups.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomize_without_kubectl_on_path_is_a_clear_bad_input_error() {
        let f = kustomize_with("kubectl-not-installed-here", Path::new("overlays/prod")).expect_err("no such program");
        assert_eq!(f.code, EXIT_BAD_INPUT);
        assert_eq!(
            f.line(),
            "error: -k needs kubectl-not-installed-here on PATH to run `kubectl-not-installed-here kustomize overlays/prod`; render it yourself and pass -f FILE"
        );
    }

    #[test]
    fn targets_are_kind_slash_name_or_kind_and_name() {
        let t = |args: &[&str]| split_target(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["deploy/web"]), Ok(("deploy".into(), "web".into())));
        assert_eq!(t(&["deploy", "web"]), Ok(("deploy".into(), "web".into())));
        assert_eq!(t(&["deploy"]).map_err(|f| f.code), Err(EXIT_BAD_INPUT));
        assert_eq!(t(&["deploy/web", "x"]).map_err(|f| f.code), Err(EXIT_BAD_INPUT));
        assert_eq!(t(&["deploy/a/b"]).map_err(|f| f.code), Err(EXIT_BAD_INPUT));
    }

    #[test]
    fn server_errors_keep_kubectls_own_prefix() {
        assert_eq!(Failure::error("Error from server (Forbidden): no").line(), "Error from server (Forbidden): no");
        assert_eq!(Failure::error("x not found").line(), "error: x not found");
    }

    #[test]
    fn user_extras_must_be_key_value() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=v").is_err());
    }
}
