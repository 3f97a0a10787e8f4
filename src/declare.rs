//! `hallmark declare` (also `kubectl hallmark declare`): manifests in, the same manifests
//! out with the declared provenance annotations (`<prefix>committer`, `pipeline`,
//! `branch`, `commit`, `repository`) taken from the CI environment (DESIGN.md
//! "Additions": `hallmark declare`).
//!
//! A pipeline that authenticates with a service-account token cannot carry verified
//! provenance; a declarer (docs/provenance.md, "Declarers") can state it as annotations, which the
//! webhook then stamps as `trust: declared`. This step writes those annotations, so that
//! it fits between `kustomize build` / `helm template` and `kubectl apply -f -`, and as
//! Helm's `--post-renderer` (Helm 3 `pkg/postrender/exec.go` runs the binary with
//! `--post-renderer-args` as its arguments, the rendered manifests on stdin, and reads
//! stdout; stderr is shown only when the post-renderer fails).
//!
//! Everything but reading the process environment and stdin is pure: [`resolve`] maps an
//! environment map (and the flags) to values, [`declare`] maps input texts to output text.

use crate::config::DEFAULT_PREFIX;
use crate::provenance::{GitField, Keys, clean_value};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Exit code for bad input, no CI recognised and no flag given (as `hallmark check`).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code when stdout cannot be written.
pub const EXIT_ERROR: i32 = 1;

/// The process environment, or a test's: variable name -> value.
pub type Env = BTreeMap<String, String>;

/// A CI provider whose documented environment variables `declare` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    /// GitHub Actions, "Variables reference" / "Default environment variables":
    /// <https://docs.github.com/en/actions/reference/variables-reference>.
    /// Recognised by `GITHUB_ACTIONS=true`. committer `GITHUB_ACTOR`; pipeline
    /// `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`; branch
    /// `GITHUB_HEAD_REF` (pull requests) else `GITHUB_REF_NAME`; commit `GITHUB_SHA`;
    /// repository `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY`.
    #[value(name = "github-actions", alias = "github", help = "GitHub Actions (GITHUB_ACTIONS=true)")]
    GithubActions,
    /// GitLab CI/CD, "Predefined CI/CD variables reference":
    /// <https://docs.gitlab.com/ci/variables/predefined_variables/>. Recognised by
    /// `GITLAB_CI=true`. committer `GITLAB_USER_LOGIN`; pipeline `CI_PIPELINE_URL`; branch
    /// `CI_COMMIT_BRANCH`, else `CI_MERGE_REQUEST_SOURCE_BRANCH_NAME`, else
    /// `CI_COMMIT_REF_NAME`; commit `CI_COMMIT_SHA`; repository `CI_PROJECT_URL`.
    #[value(name = "gitlab-ci", alias = "gitlab", help = "GitLab CI (GITLAB_CI=true)")]
    GitlabCi,
    /// Jenkins: the core variables (`BUILD_URL`, `BRANCH_NAME`, `CHANGE_AUTHOR`, `JENKINS_URL`;
    /// <https://www.jenkins.io/doc/book/pipeline/jenkinsfile/#using-environment-variables>,
    /// `${JENKINS_URL}env-vars.html`) and the Git plugin's (`GIT_COMMIT`, `GIT_BRANCH`,
    /// `GIT_LOCAL_BRANCH`, `GIT_URL`, `GIT_AUTHOR_NAME`, `GIT_COMMITTER_NAME`;
    /// <https://plugins.jenkins.io/git/#plugin-content-environment-variables>). Recognised
    /// by `JENKINS_URL` or `JENKINS_HOME`. committer `CHANGE_AUTHOR` (change requests),
    /// else `GIT_AUTHOR_NAME`, else `GIT_COMMITTER_NAME` (the Git plugin sets these two
    /// only with its "custom user name/e-mail" behaviour: Jenkins often has no committer,
    /// pass `--committer`); pipeline `BUILD_URL`; branch `BRANCH_NAME`, else
    /// `GIT_LOCAL_BRANCH`, else `GIT_BRANCH` without `origin/`; commit `GIT_COMMIT`;
    /// repository `GIT_URL`.
    #[value(help = "Jenkins (JENKINS_URL or JENKINS_HOME)")]
    Jenkins,
    /// Azure Pipelines, "Use predefined variables":
    /// <https://learn.microsoft.com/en-us/azure/devops/pipelines/build/variables>
    /// (`Build.SourceVersion` is the environment variable `BUILD_SOURCEVERSION`).
    /// Recognised by `TF_BUILD=True`. committer `BUILD_REQUESTEDFOR`; pipeline
    /// `$SYSTEM_COLLECTIONURI$SYSTEM_TEAMPROJECT/_build/results?buildId=$BUILD_BUILDID`;
    /// branch `SYSTEM_PULLREQUEST_SOURCEBRANCH` (pull requests) else `BUILD_SOURCEBRANCH`,
    /// without `refs/heads/`; commit `BUILD_SOURCEVERSION`; repository
    /// `BUILD_REPOSITORY_URI`.
    #[value(name = "azure-pipelines", alias = "azure", help = "Azure Pipelines (TF_BUILD=True)")]
    AzurePipelines,
    /// Bitbucket Pipelines, "Variables and secrets" / "Default variables":
    /// <https://support.atlassian.com/bitbucket-cloud/docs/variables-and-secrets/>.
    /// Recognised by `BITBUCKET_BUILD_NUMBER`. committer `BITBUCKET_STEP_TRIGGERER_UUID`
    /// (Bitbucket documents no user name: the UUID of the person who started the build);
    /// pipeline `$BITBUCKET_GIT_HTTP_ORIGIN/pipelines/results/$BITBUCKET_BUILD_NUMBER`;
    /// branch `BITBUCKET_BRANCH`, else `BITBUCKET_TAG`; commit `BITBUCKET_COMMIT`;
    /// repository `BITBUCKET_GIT_HTTP_ORIGIN`, else `BITBUCKET_REPO_FULL_NAME`.
    #[value(name = "bitbucket-pipelines", alias = "bitbucket", help = "Bitbucket Pipelines (BITBUCKET_BUILD_NUMBER)")]
    BitbucketPipelines,
    /// CircleCI, "Project values and variables" / "Built-in environment variables":
    /// <https://circleci.com/docs/reference/variables/>. Recognised by `CIRCLECI=true`.
    /// committer `CIRCLE_USERNAME`; pipeline `CIRCLE_BUILD_URL`; branch `CIRCLE_BRANCH`,
    /// else `CIRCLE_TAG`; commit `CIRCLE_SHA1`; repository `CIRCLE_REPOSITORY_URL`.
    #[value(name = "circleci", alias = "circle", help = "CircleCI (CIRCLECI=true)")]
    Circleci,
    /// Buildkite, "Environment variables":
    /// <https://buildkite.com/docs/pipelines/environment_variables>. Recognised by
    /// `BUILDKITE=true`. committer `BUILDKITE_BUILD_CREATOR`, else
    /// `BUILDKITE_BUILD_AUTHOR`; pipeline `BUILDKITE_BUILD_URL`; branch `BUILDKITE_BRANCH`,
    /// else `BUILDKITE_TAG`; commit `BUILDKITE_COMMIT` (not the placeholder `HEAD`);
    /// repository `BUILDKITE_REPO`.
    #[value(help = "Buildkite (BUILDKITE=true)")]
    Buildkite,
}

impl Ci {
    /// In the order they are tried.
    pub const ALL: [Ci; 7] = [
        Ci::GithubActions,
        Ci::GitlabCi,
        Ci::AzurePipelines,
        Ci::BitbucketPipelines,
        Ci::Circleci,
        Ci::Buildkite,
        Ci::Jenkins,
    ];

    /// The provider's own name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Ci::GithubActions => "GitHub Actions",
            Ci::GitlabCi => "GitLab CI",
            Ci::Jenkins => "Jenkins",
            Ci::AzurePipelines => "Azure Pipelines",
            Ci::BitbucketPipelines => "Bitbucket Pipelines",
            Ci::Circleci => "CircleCI",
            Ci::Buildkite => "Buildkite",
        }
    }

    /// The variable that gives the provider away, and whether `env` has it.
    fn marker(self, env: &Env) -> Option<&'static str> {
        let is = |k: &str, v: &str| env.get(k).is_some_and(|x| x.trim().eq_ignore_ascii_case(v));
        let set = |k: &str| env.get(k).is_some_and(|x| !x.trim().is_empty());
        match self {
            Ci::GithubActions => is("GITHUB_ACTIONS", "true").then_some("GITHUB_ACTIONS=true"),
            Ci::GitlabCi => is("GITLAB_CI", "true").then_some("GITLAB_CI=true"),
            Ci::AzurePipelines => is("TF_BUILD", "true").then_some("TF_BUILD=True"),
            Ci::BitbucketPipelines => set("BITBUCKET_BUILD_NUMBER").then_some("BITBUCKET_BUILD_NUMBER"),
            Ci::Circleci => is("CIRCLECI", "true").then_some("CIRCLECI=true"),
            Ci::Buildkite => is("BUILDKITE", "true").then_some("BUILDKITE=true"),
            Ci::Jenkins => {
                if set("JENKINS_URL") {
                    Some("JENKINS_URL")
                } else {
                    set("JENKINS_HOME").then_some("JENKINS_HOME")
                }
            }
        }
    }

    /// The provenance this provider's documented variables give, indexed like
    /// [`GitField::ALL`]; a variable that is unset or empty gives nothing.
    pub fn values(self, env: &Env) -> [Option<String>; 5] {
        let v = |k: &str| env.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
        let first = |keys: &[&str]| keys.iter().find_map(|k| v(k));
        match self {
            Ci::GithubActions => {
                let repo_url = match (v("GITHUB_SERVER_URL"), v("GITHUB_REPOSITORY")) {
                    (Some(server), Some(repo)) => Some(format!("{}/{repo}", server.trim_end_matches('/'))),
                    (None, repo) => repo,
                    (Some(_), None) => None,
                };
                let pipeline = match (&repo_url, v("GITHUB_RUN_ID")) {
                    (Some(url), Some(id)) if url.contains("://") => Some(format!("{url}/actions/runs/{id}")),
                    (_, id) => id,
                };
                [v("GITHUB_ACTOR"), pipeline, first(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]), v("GITHUB_SHA"), repo_url]
            }
            Ci::GitlabCi => [
                v("GITLAB_USER_LOGIN"),
                first(&["CI_PIPELINE_URL", "CI_PIPELINE_ID"]),
                first(&["CI_COMMIT_BRANCH", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "CI_COMMIT_REF_NAME"]),
                v("CI_COMMIT_SHA"),
                first(&["CI_PROJECT_URL", "CI_PROJECT_PATH"]),
            ],
            Ci::Jenkins => {
                let branch = v("BRANCH_NAME")
                    .or_else(|| v("GIT_LOCAL_BRANCH"))
                    .or_else(|| v("GIT_BRANCH").map(|b| strip_ref(b.strip_prefix("origin/").unwrap_or(&b)).to_owned()));
                let pipeline = v("BUILD_URL").or_else(|| match (v("JOB_NAME"), v("BUILD_NUMBER")) {
                    (Some(job), Some(n)) => Some(format!("{job}#{n}")),
                    _ => None,
                });
                [
                    first(&["CHANGE_AUTHOR", "GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"]),
                    pipeline,
                    branch,
                    v("GIT_COMMIT"),
                    v("GIT_URL"),
                ]
            }
            Ci::AzurePipelines => {
                let pipeline = match (v("SYSTEM_COLLECTIONURI"), v("SYSTEM_TEAMPROJECT"), v("BUILD_BUILDID")) {
                    (Some(collection), Some(project), Some(id)) => Some(format!(
                        "{}/{}/_build/results?buildId={id}",
                        collection.trim_end_matches('/'),
                        project.replace(' ', "%20")
                    )),
                    (_, _, id) => id,
                };
                let branch = first(&["SYSTEM_PULLREQUEST_SOURCEBRANCH", "BUILD_SOURCEBRANCH"])
                    .map(|b| strip_ref(&b).to_owned())
                    .or_else(|| v("BUILD_SOURCEBRANCHNAME"));
                [
                    v("BUILD_REQUESTEDFOR"),
                    pipeline,
                    branch,
                    v("BUILD_SOURCEVERSION"),
                    first(&["BUILD_REPOSITORY_URI", "BUILD_REPOSITORY_NAME"]),
                ]
            }
            Ci::BitbucketPipelines => {
                let origin = v("BITBUCKET_GIT_HTTP_ORIGIN");
                let pipeline = match (&origin, v("BITBUCKET_BUILD_NUMBER")) {
                    (Some(o), Some(n)) => Some(format!("{}/pipelines/results/{n}", o.trim_end_matches('/'))),
                    (None, Some(n)) => Some(format!("#{n}")),
                    _ => None,
                };
                [
                    v("BITBUCKET_STEP_TRIGGERER_UUID"),
                    pipeline,
                    first(&["BITBUCKET_BRANCH", "BITBUCKET_TAG"]),
                    v("BITBUCKET_COMMIT"),
                    origin.or_else(|| v("BITBUCKET_REPO_FULL_NAME")),
                ]
            }
            Ci::Circleci => {
                let repo = v("CIRCLE_REPOSITORY_URL").or_else(|| {
                    match (v("CIRCLE_PROJECT_USERNAME"), v("CIRCLE_PROJECT_REPONAME")) {
                        (Some(u), Some(r)) => Some(format!("{u}/{r}")),
                        _ => None,
                    }
                });
                [
                    v("CIRCLE_USERNAME"),
                    first(&["CIRCLE_BUILD_URL", "CIRCLE_BUILD_NUM"]),
                    first(&["CIRCLE_BRANCH", "CIRCLE_TAG"]),
                    v("CIRCLE_SHA1"),
                    repo,
                ]
            }
            Ci::Buildkite => [
                first(&["BUILDKITE_BUILD_CREATOR", "BUILDKITE_BUILD_AUTHOR"]),
                first(&["BUILDKITE_BUILD_URL", "BUILDKITE_BUILD_NUMBER"]),
                first(&["BUILDKITE_BRANCH", "BUILDKITE_TAG"]),
                v("BUILDKITE_COMMIT").filter(|c| c != "HEAD"),
                v("BUILDKITE_REPO"),
            ],
        }
    }
}

/// `refs/heads/main` -> `main`; anything else unchanged.
fn strip_ref(branch: &str) -> &str {
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
}

/// Removes `user:password@` from a URL (`https://x-token:abc@git.example.com/a/b` ->
/// `https://git.example.com/a/b`): CI variables such as `GIT_URL` may carry credentials,
/// which must not end up in an annotation. `git@host:path` (no scheme) is kept.
pub fn without_credentials(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else { return value.to_owned() };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &value[..scheme_end + 3], &rest[at + 1..]),
        None => value.to_owned(),
    }
}

/// Values given on the command line; they win over the environment. An empty value
/// declares nothing for that field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explicit {
    /// Indexed like [`GitField::ALL`].
    pub values: [Option<String>; 5],
}

impl Explicit {
    fn any(&self) -> bool {
        self.values.iter().any(Option::is_some)
    }
}

/// What will be declared, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The CI recognised (or forced with `--ci`), with the variable that gave it away.
    pub ci: Option<(Ci, &'static str)>,
    /// Cleaned and bounded values, indexed like [`GitField::ALL`]; `None`: not declared
    /// (and removed from the objects, so that no earlier declaration rides along).
    pub values: [Option<String>; 5],
}

impl Declaration {
    pub fn declared(&self) -> impl Iterator<Item = (GitField, &str)> {
        GitField::ALL.iter().zip(&self.values).filter_map(|(f, v)| v.as_deref().map(|v| (*f, v)))
    }
}

/// Why `declare` cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclareError {
    #[error(
        "no CI recognised (looked for GitHub Actions, GitLab CI, Azure Pipelines, Bitbucket Pipelines, CircleCI, Buildkite, Jenkins) and no --committer, --pipeline, --branch, --commit or --repository given: nothing to declare"
    )]
    NoCi,
    #[error(
        "{0} gives no provenance: none of its variables are set (pass --committer, --pipeline, --branch, --commit or --repository)"
    )]
    Empty(&'static str),
    #[error("{input}: document {document}{item}: {message}")]
    Document { input: String, document: usize, item: String, message: String },
    #[error("{0}")]
    Input(String),
}

/// The declaration for `env` and the flags: `--ci` forces a provider, else the first
/// recognised one in [`Ci::ALL`] order; each explicit value wins over the provider's.
/// Values are cleaned (control characters removed), stripped of URL credentials and
/// bounded to 1024 characters, as the stamp does.
///
/// Errors: [`DeclareError::NoCi`] when no provider is recognised and no value is given;
/// [`DeclareError::Empty`] when the result declares nothing.
pub fn resolve(env: &Env, forced: Option<Ci>, explicit: &Explicit) -> Result<Declaration, DeclareError> {
    let ci = match forced {
        Some(ci) => Some((ci, "--ci")),
        None => Ci::ALL.iter().find_map(|&ci| ci.marker(env).map(|m| (ci, m))),
    };
    if ci.is_none() && !explicit.any() {
        return Err(DeclareError::NoCi);
    }
    let from_env = ci.map(|(c, _)| c.values(env)).unwrap_or_default();
    let mut values: [Option<String>; 5] = Default::default();
    for (i, slot) in values.iter_mut().enumerate() {
        let raw = match &explicit.values[i] {
            Some(given) => Some(given.clone()),
            None => from_env[i].clone(),
        };
        *slot = raw.map(|v| clean_value(&without_credentials(&v))).filter(|v| !v.is_empty());
    }
    let declaration = Declaration { ci, values };
    if declaration.declared().next().is_none() {
        return Err(DeclareError::Empty(ci.map_or("the command line", |(c, _)| c.name())));
    }
    Ok(declaration)
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    /// JSON when every input was JSON, else YAML.
    Auto,
}

/// One input: where it came from (`STDIN`, a path) and its text.
#[derive(Debug, Clone)]
pub struct Input {
    pub source: String,
    pub text: String,
}

/// The result of [`declare`]: the output text and how many objects were annotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub text: String,
    pub objects: usize,
    /// Some input had YAML comments, which the output does not keep.
    pub dropped_comments: bool,
}

/// Annotates every object of `inputs` (multi-document YAML or JSON; the items of a `List`,
/// not the List itself) with `declaration` under `keys`, in input order. Empty documents
/// are dropped. Errors name the source and the 1-based document (and item) index; no
/// output is produced unless every document succeeded.
pub fn declare(
    inputs: &[Input],
    keys: &Keys,
    declaration: &Declaration,
    format: Format,
) -> Result<Declared, DeclareError> {
    let mut documents: Vec<Value> = Vec::new();
    let mut objects = 0;
    let mut all_json = true;
    let mut dropped_comments = false;
    for input in inputs {
        all_json &= matches!(input.text.trim_start().chars().next(), Some('{' | '['));
        // A full-line comment, or an inline one after a space (a `#` inside a quoted value
        // also counts: the note is only a note).
        dropped_comments |= input.text.lines().any(|l| l.trim_start().starts_with('#') || l.contains(" #"));
        for (i, doc) in serde_yaml::Deserializer::from_str(&input.text).enumerate() {
            let err = |item: String, message: String| DeclareError::Document {
                input: input.source.clone(),
                document: i + 1,
                item,
                message,
            };
            let mut value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
                let at = e.location().map(|l| format!(" (line {})", l.line())).unwrap_or_default();
                err(String::new(), format!("invalid YAML{at}: {e}"))
            })?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(Value::as_str) == Some("List") {
                let Some(items) = value.get_mut("items").and_then(Value::as_sequence_mut) else {
                    return Err(err(String::new(), "a List needs an items list".to_owned()));
                };
                for (j, item) in items.iter_mut().enumerate() {
                    annotate(item, keys, declaration).map_err(|m| err(format!(", item {}", j + 1), m))?;
                    objects += 1;
                }
            } else {
                annotate(&mut value, keys, declaration).map_err(|m| err(String::new(), m))?;
                objects += 1;
            }
            documents.push(value);
        }
    }
    let json = match format {
        Format::Json => true,
        Format::Yaml => false,
        Format::Auto => all_json && !inputs.is_empty(),
    };
    let mut text = String::new();
    for (i, doc) in documents.iter().enumerate() {
        if json {
            let s = serde_json::to_string_pretty(doc)
                .map_err(|e| DeclareError::Input(format!("cannot write document {} as JSON: {e}", i + 1)))?;
            text.push_str(&s);
            text.push('\n');
        } else {
            if i > 0 {
                text.push_str("---\n");
            }
            let s = serde_yaml::to_string(doc)
                .map_err(|e| DeclareError::Input(format!("cannot write document {} as YAML: {e}", i + 1)))?;
            text.push_str(&s);
        }
    }
    Ok(Declared { text, objects, dropped_comments: dropped_comments && !json })
}

/// Sets the declared annotations of one object; a field not declared is removed.
fn annotate(object: &mut Value, keys: &Keys, declaration: &Declaration) -> Result<(), String> {
    let Some(map) = object.as_mapping_mut() else {
        return Err("not a Kubernetes object (expected a map with apiVersion, kind and metadata)".to_owned());
    };
    let metadata = match map.get_mut("metadata") {
        Some(Value::Mapping(m)) => m,
        _ => return Err("not a Kubernetes object: it has no metadata map".to_owned()),
    };
    let key = Value::String("annotations".to_owned());
    if metadata.get(&key).is_none_or(Value::is_null) {
        metadata.insert(key.clone(), Value::Mapping(Mapping::new()));
    }
    let Some(annotations) = metadata.get_mut(&key).and_then(Value::as_mapping_mut) else {
        return Err("metadata.annotations is not a map".to_owned());
    };
    for (field, value) in GitField::ALL.iter().zip(&declaration.values) {
        let k = Value::String(keys.git(*field).to_owned());
        match value {
            Some(v) => {
                annotations.insert(k, Value::String(v.clone()));
            }
            None => {
                annotations.remove(&k);
            }
        }
    }
    if annotations.is_empty() {
        metadata.remove(&key);
    }
    Ok(())
}

/// The flags of `declare`, shared by `hallmark declare` and `kubectl hallmark declare`
/// (which has `--annotation-prefix` and `-o` as global flags).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeclareArgs {
    /// Manifest file (repeatable); `-` or none reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Use this CI provider's variables even if it is not recognised.
    #[arg(long, value_enum)]
    pub ci: Option<Ci>,
    /// The person behind the change (wins over the CI environment).
    #[arg(long)]
    pub committer: Option<String>,
    /// The pipeline or run, e.g. its URL (wins over the CI environment).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// The source branch (wins over the CI environment).
    #[arg(long)]
    pub branch: Option<String>,
    /// The commit SHA (wins over the CI environment).
    #[arg(long)]
    pub commit: Option<String>,
    /// The source repository (wins over the CI environment).
    #[arg(long)]
    pub repository: Option<String>,
}

impl DeclareArgs {
    pub fn explicit(&self) -> Explicit {
        Explicit {
            values: [
                self.committer.clone(),
                self.pipeline.clone(),
                self.branch.clone(),
                self.commit.clone(),
                self.repository.clone(),
            ],
        }
    }
}

/// The process environment as an [`Env`] (values that are not UTF-8 are read lossily).
pub fn process_env() -> Env {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}

/// Runs `declare`: reads the inputs (`stdin` for `-` or no `-f`), writes the annotated
/// manifests to `out` only when all of them succeeded, and a summary or the error to
/// `err`. Returns the exit code: 0, [`EXIT_BAD_INPUT`] (no CI and no flag, unreadable or
/// invalid input, bad prefix), [`EXIT_ERROR`] (stdout not writable).
pub fn run(
    args: &DeclareArgs,
    prefix: Option<&str>,
    format: Format,
    env: &Env,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
    if let Err(why) = crate::config::validate_prefix(prefix) {
        let _ = writeln!(err, "error: --annotation-prefix: {why}");
        return EXIT_BAD_INPUT;
    }
    let keys = Keys::new(prefix);
    let mut inputs = Vec::new();
    let files: Vec<&str> =
        if args.files.is_empty() { vec!["-"] } else { args.files.iter().map(String::as_str).collect() };
    let mut stdin_read = false;
    for file in files {
        let input = if file == "-" {
            if stdin_read {
                continue;
            }
            stdin_read = true;
            let mut text = String::new();
            if let Err(e) = stdin.read_to_string(&mut text) {
                let _ = writeln!(err, "error: reading stdin: {e}");
                return EXIT_BAD_INPUT;
            }
            Input { source: "STDIN".to_owned(), text }
        } else {
            match std::fs::read_to_string(file) {
                Ok(text) => Input { source: file.to_owned(), text },
                Err(e) => {
                    let _ = writeln!(err, "error: {file}: {e}");
                    return EXIT_BAD_INPUT;
                }
            }
        };
        inputs.push(input);
    }
    // The inputs first: a missing file is the first thing to fix.
    let declaration = match resolve(env, args.ci, &args.explicit()) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let declared = match declare(&inputs, &keys, &declaration, format) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "error: {e}; nothing was written");
            return EXIT_BAD_INPUT;
        }
    };
    if declared.objects == 0 {
        // An empty stream is almost always a failed step before this one in a pipe
        // (`kustomize build … | hallmark declare | kubectl apply -f -`).
        let _ = writeln!(
            err,
            "error: no Kubernetes objects in the input (did the command before hallmark declare fail?); nothing was written"
        );
        return EXIT_BAD_INPUT;
    }
    if let Err(e) = out.write_all(declared.text.as_bytes()).and_then(|()| out.flush()) {
        let _ = writeln!(err, "error: writing stdout: {e}");
        return EXIT_ERROR;
    }
    let source = match declaration.ci {
        Some((ci, "--ci")) => format!("{} (--ci)", ci.name()),
        Some((ci, marker)) => format!("{} recognised ({marker})", ci.name()),
        None => "no CI recognised; from the command line".to_owned(),
    };
    let fields: Vec<&str> = declaration.declared().map(|(f, _)| f.name()).collect();
    let _ = writeln!(
        err,
        "hallmark declare: {source}; declared {} on {} object{}",
        fields.join(", "),
        declared.objects,
        if declared.objects == 1 { "" } else { "s" }
    );
    if declared.dropped_comments {
        let _ = writeln!(err, "hallmark declare: comments in the input are not kept in the output");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn keys() -> Keys {
        Keys::new(DEFAULT_PREFIX)
    }

    /// (CI, its environment, the expected committer, pipeline, branch, commit, repository).
    type Case = (Ci, Vec<(&'static str, &'static str)>, [Option<&'static str>; 5]);

    fn cases() -> Vec<Case> {
        vec![
            (
                Ci::GithubActions,
                vec![
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_ACTOR", "octo-lead"),
                    ("GITHUB_SERVER_URL", "https://github.com"),
                    ("GITHUB_REPOSITORY", "acme/shop"),
                    ("GITHUB_RUN_ID", "9876543311"),
                    ("GITHUB_REF_NAME", "main"),
                    ("GITHUB_HEAD_REF", ""),
                    ("GITHUB_SHA", "89e6c98d92887913cadf06b2adb97f26cde4849b"),
                ],
                [
                    Some("octo-lead"),
                    Some("https://github.com/acme/shop/actions/runs/9876543311"),
                    Some("main"),
                    Some("89e6c98d92887913cadf06b2adb97f26cde4849b"),
                    Some("https://github.com/acme/shop"),
                ],
            ),
            (
                Ci::GitlabCi,
                vec![
                    ("GITLAB_CI", "true"),
                    ("CI", "true"),
                    ("GITLAB_USER_LOGIN", "jane"),
                    ("CI_PIPELINE_URL", "https://gitlab.com/acme/shop/-/pipelines/1200"),
                    ("CI_COMMIT_REF_NAME", "feature/x"),
                    ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature/x"),
                    ("CI_COMMIT_SHA", "aaaa1111"),
                    ("CI_PROJECT_URL", "https://gitlab.com/acme/shop"),
                ],
                [
                    Some("jane"),
                    Some("https://gitlab.com/acme/shop/-/pipelines/1200"),
                    Some("feature/x"),
                    Some("aaaa1111"),
                    Some("https://gitlab.com/acme/shop"),
                ],
            ),
            (
                Ci::Jenkins,
                vec![
                    ("JENKINS_URL", "https://jenkins.example.com/"),
                    ("BUILD_URL", "https://jenkins.example.com/job/shop/42/"),
                    ("GIT_BRANCH", "origin/release/1.2"),
                    ("GIT_COMMIT", "bbbb2222"),
                    ("GIT_URL", "https://deploy:s3cret@git.example.com/acme/shop.git"),
                ],
                [
                    None,
                    Some("https://jenkins.example.com/job/shop/42/"),
                    Some("release/1.2"),
                    Some("bbbb2222"),
                    Some("https://git.example.com/acme/shop.git"),
                ],
            ),
            (
                Ci::AzurePipelines,
                vec![
                    ("TF_BUILD", "True"),
                    ("BUILD_REQUESTEDFOR", "Jane Doe"),
                    ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/acme/"),
                    ("SYSTEM_TEAMPROJECT", "Web Shop"),
                    ("BUILD_BUILDID", "314"),
                    ("BUILD_SOURCEBRANCH", "refs/heads/feature/cart"),
                    ("BUILD_SOURCEBRANCHNAME", "cart"),
                    ("BUILD_SOURCEVERSION", "cccc3333"),
                    ("BUILD_REPOSITORY_URI", "https://dev.azure.com/acme/Web%20Shop/_git/shop"),
                ],
                [
                    Some("Jane Doe"),
                    Some("https://dev.azure.com/acme/Web%20Shop/_build/results?buildId=314"),
                    Some("feature/cart"),
                    Some("cccc3333"),
                    Some("https://dev.azure.com/acme/Web%20Shop/_git/shop"),
                ],
            ),
            (
                Ci::BitbucketPipelines,
                vec![
                    ("CI", "true"),
                    ("BITBUCKET_BUILD_NUMBER", "77"),
                    ("BITBUCKET_STEP_TRIGGERER_UUID", "{d6c1e5a2-0000-4000-8000-000000000001}"),
                    ("BITBUCKET_GIT_HTTP_ORIGIN", "http://bitbucket.org/acme/shop"),
                    ("BITBUCKET_BRANCH", "main"),
                    ("BITBUCKET_COMMIT", "dddd4444"),
                    ("BITBUCKET_REPO_FULL_NAME", "acme/shop"),
                ],
                [
                    Some("{d6c1e5a2-0000-4000-8000-000000000001}"),
                    Some("http://bitbucket.org/acme/shop/pipelines/results/77"),
                    Some("main"),
                    Some("dddd4444"),
                    Some("http://bitbucket.org/acme/shop"),
                ],
            ),
            (
                Ci::Circleci,
                vec![
                    ("CIRCLECI", "true"),
                    ("CIRCLE_USERNAME", "octo"),
                    ("CIRCLE_BUILD_URL", "https://circleci.com/gh/acme/shop/501"),
                    ("CIRCLE_TAG", "v1.0.0"),
                    ("CIRCLE_SHA1", "eeee5555"),
                    ("CIRCLE_REPOSITORY_URL", "git@github.com:acme/shop.git"),
                ],
                [
                    Some("octo"),
                    Some("https://circleci.com/gh/acme/shop/501"),
                    Some("v1.0.0"),
                    Some("eeee5555"),
                    Some("git@github.com:acme/shop.git"),
                ],
            ),
            (
                Ci::Buildkite,
                vec![
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_BUILD_CREATOR", "Keith"),
                    ("BUILDKITE_BUILD_AUTHOR", "Someone Else"),
                    ("BUILDKITE_BUILD_URL", "https://buildkite.com/acme/shop/builds/1514"),
                    ("BUILDKITE_BRANCH", "main"),
                    ("BUILDKITE_COMMIT", "ffff6666"),
                    ("BUILDKITE_REPO", "git@github.com:acme/shop.git"),
                ],
                [
                    Some("Keith"),
                    Some("https://buildkite.com/acme/shop/builds/1514"),
                    Some("main"),
                    Some("ffff6666"),
                    Some("git@github.com:acme/shop.git"),
                ],
            ),
        ]
    }

    #[test]
    fn each_ci_is_recognised_and_its_documented_variables_declared() {
        for (ci, vars, expected) in cases() {
            let d = resolve(&env(&vars), None, &Explicit::default()).expect("recognised");
            assert_eq!(d.ci.map(|(c, _)| c), Some(ci), "{ci:?}");
            let got: Vec<Option<&str>> = d.values.iter().map(Option::as_deref).collect();
            assert_eq!(got, expected.to_vec(), "{ci:?}");
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_empty_flags_declare_nothing() {
        let (_, vars, _) = cases().remove(0);
        let explicit =
            Explicit { values: [Some("release-bot".into()), None, Some("hotfix".into()), None, Some(String::new())] };
        let d = resolve(&env(&vars), None, &explicit).expect("resolves");
        assert_eq!(d.values[0].as_deref(), Some("release-bot"));
        assert_eq!(d.values[1].as_deref(), Some("https://github.com/acme/shop/actions/runs/9876543311"));
        assert_eq!(d.values[2].as_deref(), Some("hotfix"));
        assert_eq!(d.values[4], None);
    }

    #[test]
    fn ci_can_be_forced_and_flags_alone_suffice() {
        let vars = env(&[("CIRCLE_SHA1", "abc"), ("CIRCLE_BRANCH", "main")]);
        assert_eq!(resolve(&vars, None, &Explicit::default()), Err(DeclareError::NoCi));
        let d = resolve(&vars, Some(Ci::Circleci), &Explicit::default()).expect("forced");
        assert_eq!(d.values[3].as_deref(), Some("abc"));
        let only = Explicit { values: [None, None, None, Some("123".into()), None] };
        let d = resolve(&Env::new(), None, &only).expect("flag alone");
        assert_eq!(d.ci, None);
        assert_eq!(d.declared().collect::<Vec<_>>(), [(GitField::Commit, "123")]);
        assert_eq!(
            resolve(&env(&[("GITHUB_ACTIONS", "true")]), None, &Explicit::default()),
            Err(DeclareError::Empty("GitHub Actions"))
        );
    }

    #[test]
    fn values_are_cleaned_bounded_and_stripped_of_credentials() {
        let long = "x".repeat(3000);
        let vars = env(&[("GITLAB_CI", "true"), ("GITLAB_USER_LOGIN", "ja\u{1b}[31mne\n"), ("CI_PIPELINE_URL", &long)]);
        let d = resolve(&vars, None, &Explicit::default()).expect("resolves");
        assert_eq!(d.values[0].as_deref(), Some("ja[31mne"));
        assert_eq!(d.values[1].as_ref().map(|v| v.chars().count()), Some(1024));
        assert_eq!(without_credentials("https://u:p@h.example/x@y"), "https://h.example/x@y");
        assert_eq!(without_credentials("git@github.com:a/b.git"), "git@github.com:a/b.git");
    }

    fn declaration() -> Declaration {
        Declaration { ci: None, values: [Some("jane".into()), None, Some("main".into()), Some("0123456".into()), None] }
    }

    fn yaml_docs(text: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("yaml"))
            .collect()
    }

    #[test]
    fn multi_document_yaml_keeps_order_and_removes_undeclared_fields() {
        let text = "# rendered\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations:\n    hallmark.dev/pipeline: stale\n    team: x\ndata: {k: v}\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports: [{port: 80}]\n";
        let input = Input { source: "STDIN".into(), text: text.into() };
        let out = declare(&[input], &keys(), &declaration(), Format::Auto).expect("declared");
        assert_eq!(out.objects, 2);
        assert!(out.dropped_comments);
        let docs = yaml_docs(&out.text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["metadata"]["name"], "a");
        assert_eq!(docs[1]["metadata"]["name"], "b");
        let a = &docs[0]["metadata"]["annotations"];
        assert_eq!(a["team"], "x");
        assert_eq!(a["hallmark.dev/committer"], "jane");
        assert_eq!(a["hallmark.dev/commit"], "0123456", "an all-digit SHA stays a string");
        assert!(a.get("hallmark.dev/pipeline").is_none(), "a stale declaration is removed");
        assert_eq!(docs[1]["metadata"]["annotations"]["hallmark.dev/branch"], "main");
        // Key order of the input is kept (apiVersion first, data last).
        assert!(out.text.starts_with("apiVersion: v1\nkind: ConfigMap\n"), "{}", out.text);
    }

    #[test]
    fn json_in_gives_json_out_and_list_items_are_annotated() {
        let text = r#"{"apiVersion":"v1","kind":"List","metadata":{},"items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b","annotations":null}}]}"#;
        let input = Input { source: "list.json".into(), text: text.into() };
        let out = declare(&[input], &keys(), &declaration(), Format::Auto).expect("declared");
        assert_eq!(out.objects, 2);
        let v: serde_json::Value = serde_json::from_str(&out.text).expect("JSON out");
        assert!(v.pointer("/metadata/annotations").is_none(), "the List itself is not annotated");
        for i in 0..2 {
            assert_eq!(v["items"][i]["metadata"]["annotations"]["hallmark.dev/committer"], "jane");
        }
    }

    #[test]
    fn bad_documents_are_named_by_index_and_nothing_is_written() {
        let cases = [
            ("apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n- just\n- a list\n", "document 2"),
            ("apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\nkind: B\n", "document 2: not a Kubernetes object"),
            ("kind: A\nmetadata: {name: a\n", "document 1: invalid YAML"),
            ("kind: List\nitems:\n- {kind: A, metadata: {name: a}}\n- {kind: B}\n", "document 1, item 2"),
            ("kind: A\nmetadata:\n  annotations: [x]\n", "metadata.annotations is not a map"),
        ];
        for (text, expected) in cases {
            let input = Input { source: "in.yaml".into(), text: text.into() };
            let e = declare(&[input], &keys(), &declaration(), Format::Auto).expect_err(text);
            assert!(e.to_string().starts_with("in.yaml: "), "{e}");
            assert!(e.to_string().contains(expected), "{e} should say {expected}");
        }
    }

    #[test]
    fn run_exits_2_without_ci_and_writes_nothing() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut stdin = "apiVersion: v1\nkind: A\nmetadata: {name: a}\n".as_bytes();
        let code = run(&DeclareArgs::default(), None, Format::Auto, &Env::new(), &mut stdin, &mut out, &mut err);
        assert_eq!(code, EXIT_BAD_INPUT);
        assert!(out.is_empty());
        assert!(String::from_utf8_lossy(&err).contains("no CI recognised"));
    }
}
