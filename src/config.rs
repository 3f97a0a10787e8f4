//! `hallmark serve --config FILE`: the provenance settings (docs/reference.md "Config file").
//!
//! Every key is optional; unknown keys are errors; a flag given on the command line wins
//! over the file. Errors name the file, the line and the field.

use crate::policy::{Subjects, check_name};
use crate::provenance::GitField;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

pub const DEFAULT_PREFIX: &str = "hallmark.dev/";
pub const DEFAULT_HISTORY: usize = 5;
/// The history annotation keeps at most this many entries, whatever the config says:
/// annotations share a 256 KiB budget per object.
pub const MAX_HISTORY: usize = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    annotation_prefix: Option<String>,
    history: Option<usize>,
    provenance: Option<ProvenanceFile>,
    reconcilers: Option<SubjectsFile>,
    system_writers: Option<SubjectsFile>,
    change_cause: Option<bool>,
    gitops_sources: Option<GitopsSourcesFile>,
    events: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GitopsSourcesFile {
    enabled: Option<bool>,
    argocd_instance_label_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvenanceFile {
    declarers: Option<SubjectsFile>,
    extra: Option<BTreeMap<String, GitField>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectsFile {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

impl SubjectsFile {
    /// Validates every name ([`check_name`]) and compiles the lists. `field` is the
    /// section (`reconcilers`, `provenance.declarers`); errors are
    /// `file:line: field.users[1]: why`.
    fn compile(self, text: &str, source: &str, field: &str) -> Result<Subjects, ConfigError> {
        let section = field.rsplit('.').next().unwrap_or(field);
        for (list, names) in [("users", &self.users), ("groups", &self.groups)] {
            for (i, name) in names.iter().enumerate() {
                if let Err(why) = check_name(name) {
                    let line = line_of_entry(text, section, list, name).map(|l| format!(":{l}")).unwrap_or_default();
                    return Err(ConfigError(format!("{source}{line}: {field}.{list}[{i}]: {why}")));
                }
            }
        }
        Ok(Subjects::new(self.users, self.groups))
    }
}

/// The effective provenance settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub annotation_prefix: String,
    pub history: usize,
    /// May declare Git fields as annotations on the object.
    pub declarers: Subjects,
    /// `userInfo.extra` key -> provenance field.
    pub extra: Vec<(String, GitField)>,
    /// Writers whose writes are `channel=gitops`, besides the policies' reconcilers and
    /// the built-in Flux / Argo CD identities (exact names or globs, e.g.
    /// `system:serviceaccount:*:flux-reconciler`).
    pub reconcilers: Subjects,
    /// Writers whose writes the ownership check never denies and whose writes do not
    /// replace a person's stamp (config key `systemWriters`; exact names and globs, see
    /// [`Subjects`]). Why: with a webhook configuration that does not exclude them
    /// (hand-written, another chart, an older cluster), kube-apiserver sends the namespace
    /// controller's DELETE of every object of a deleted namespace (with no
    /// `request.name`), the garbage collector's, and the HPA's `scale` writes; denying
    /// any of them stalls namespace deletion or scaling.
    pub system_writers: Subjects,
    /// Set `kubernetes.io/change-cause` on writes that change a Deployment's,
    /// StatefulSet's or DaemonSet's pod template (config `changeCause`, `--change-cause`;
    /// see [`crate::changecause`]).
    pub change_cause: bool,
    /// Stamp reconciler writes with the Git source of their Flux Kustomization or
    /// HelmRelease or Argo CD Application, read from watch caches (config
    /// `gitopsSources.enabled`; see [`crate::gitops`]).
    pub gitops_sources: bool,
    /// Argo CD's `application.instanceLabelKey`, for label tracking (config
    /// `gitopsSources.argocdInstanceLabelKey`).
    pub argocd_instance_label: String,
    /// Record a Kubernetes Event on the object for each denied and break-glass write
    /// (config `events`; see `server::events`).
    pub events: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            annotation_prefix: DEFAULT_PREFIX.to_owned(),
            history: DEFAULT_HISTORY,
            declarers: Subjects::default(),
            extra: default_extra(DEFAULT_PREFIX),
            reconcilers: Subjects::default(),
            system_writers: default_system_writers(),
            change_cause: true,
            gitops_sources: true,
            argocd_instance_label: crate::gitops::ARGOCD_INSTANCE_LABEL.to_owned(),
            events: true,
        }
    }
}

/// The users kube-apiserver authenticates Kubernetes' own control plane as: the
/// controller manager (one identity, or with `--use-service-account-credentials`, the
/// kubeadm default, one service account per controller in `kube-system`: namespace,
/// garbage collector, deployment, horizontal-pod-autoscaler, ...), the scheduler, the
/// kubelets (`system:node:<node>`), and kube-apiserver's own bootstrap writes.
pub const DEFAULT_SYSTEM_WRITERS: [&str; 5] = [
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:apiserver",
    "system:node:*",
    "system:serviceaccount:kube-system:*",
];

/// The default `systemWriters` (users; no groups), as [`Subjects`] globs.
pub fn default_system_writers() -> Subjects {
    Subjects::new(DEFAULT_SYSTEM_WRITERS.iter().map(|s| s.to_string()).collect(), Vec::new())
}

/// The default extra keys are the annotation keys: `hallmark.dev/committer` -> committer.
pub fn default_extra(prefix: &str) -> Vec<(String, GitField)> {
    GitField::ALL.iter().map(|f| (format!("{prefix}{}", f.name()), *f)).collect()
}

/// A config file that cannot be used; its Display is one line: `file:line:col: field: why`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read config: {e}", path.display())))?;
        Settings::from_yaml(&text, &path.display().to_string())
    }

    pub fn from_yaml(text: &str, source: &str) -> Result<Settings, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            let located = |e: serde_yaml::Error| {
                let loc = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
                ConfigError(format!("{source}{loc}: {}", crate::admission::one_line(&strip_location(&e.to_string()))))
            };
            // YAML syntax first: a broken file is reported as such, not as the first key
            // the schema happened to reject before reaching the broken part.
            serde_yaml::from_str::<serde_yaml::Value>(text).map_err(located)?;
            serde_yaml::from_str(text).map_err(located)?
        };
        let at = |key: &str| line_of(text, key).map(|l| format!(":{l}")).unwrap_or_default();
        let mut s = Settings::default();
        if let Some(prefix) = file.annotation_prefix {
            validate_prefix(&prefix)
                .map_err(|why| ConfigError(format!("{source}{}: annotationPrefix: {why}", at("annotationPrefix"))))?;
            s.extra = default_extra(&prefix);
            s.annotation_prefix = prefix;
        }
        if let Some(h) = file.history {
            s.set_history(h).map_err(|why| ConfigError(format!("{source}{}: history: {why}", at("history"))))?;
        }
        if let Some(p) = file.provenance {
            if let Some(d) = p.declarers {
                s.declarers = d.compile(text, source, "provenance.declarers")?;
            }
            if let Some(extra) = p.extra {
                s.extra = extra.into_iter().collect();
            }
        }
        if let Some(r) = file.reconcilers {
            s.reconcilers = r.compile(text, source, "reconcilers")?;
        }
        if let Some(w) = file.system_writers {
            s.system_writers = w.compile(text, source, "systemWriters")?;
        }
        if let Some(c) = file.change_cause {
            s.change_cause = c;
        }
        if let Some(e) = file.events {
            s.events = e;
        }
        if let Some(g) = file.gitops_sources {
            if let Some(on) = g.enabled {
                s.gitops_sources = on;
            }
            if let Some(key) = g.argocd_instance_label_key {
                let valid = match key.split_once('/') {
                    Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
                    None => is_label_name(&key),
                };
                if !valid {
                    return Err(ConfigError(format!(
                        "{source}{}: gitopsSources.argocdInstanceLabelKey: {key:?} is not a label key",
                        at("argocdInstanceLabelKey")
                    )));
                }
                s.argocd_instance_label = key;
            }
        }
        Ok(s)
    }

    /// Sets how many stamps the history keeps (`history`, `--history`).
    pub fn set_history(&mut self, history: usize) -> Result<(), String> {
        if history > MAX_HISTORY {
            return Err(format!("{history} is more than the maximum of {MAX_HISTORY}"));
        }
        self.history = history;
        Ok(())
    }

    /// Applies `--annotation-prefix` (which also moves the default extra keys along).
    pub fn set_prefix(&mut self, prefix: String) -> Result<(), ConfigError> {
        validate_prefix(&prefix).map_err(|why| ConfigError(format!("--annotation-prefix: {why}")))?;
        if self.extra == default_extra(&self.annotation_prefix) {
            self.extra = default_extra(&prefix);
        }
        self.annotation_prefix = prefix;
        Ok(())
    }
}

/// An annotation prefix is a DNS subdomain followed by `/`, as in `hallmark.dev/`.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let Some(domain) = prefix.strip_suffix('/') else {
        return Err(format!("{prefix:?} must end with '/', e.g. \"hallmark.dev/\""));
    };
    if is_dns_subdomain(domain) { Ok(()) } else { Err(format!("{prefix:?} is not a DNS subdomain followed by '/'")) }
}

/// A namespace name: an RFC 1123 label (lower-case alphanumerics and `-`, starting and
/// ending alphanumeric, at most 63 characters), as `apimachinery`'s `IsDNS1123Label`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain (labels joined by `.`, at most 253 characters), as
/// `apimachinery`'s `IsDNS1123Subdomain`: the name of most Kubernetes objects (a
/// Deployment, ...) and an annotation prefix's domain.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The name part of a label key: at most 63 characters, alphanumerics, `-`, `_` and `.`,
/// starting and ending alphanumeric (`IsQualifiedName` in apimachinery).
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// serde_yaml appends " at line X column Y"; the location is printed in front instead.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The 1-based line of an entry of the list `list` under the section `section:`: the
/// first line from the list's key on that holds the entry (quoted or not), else the
/// list's or the section's line.
fn line_of_entry(text: &str, section: &str, list: &str, entry: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = line_of(text, section)?;
    let list_line = lines
        .iter()
        .enumerate()
        .skip(start - 1)
        .find(|(_, l)| l.trim_start().starts_with(&format!("{list}:")))
        .map(|(i, _)| i + 1);
    let from = list_line.unwrap_or(start);
    let quoted = format!("{entry:?}");
    let found = lines.iter().enumerate().skip(from - 1).find(|(_, l)| {
        if entry.trim().is_empty() {
            l.contains("\"\"") || l.contains("''")
        } else {
            l.contains(&quoted) || l.contains(entry)
        }
    });
    Some(found.map(|(i, _)| i + 1).unwrap_or(from))
}

/// The 1-based line on which `key:` first appears.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_start().starts_with(&format!("{key}:"))).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_the_defaults() {
        let s = Settings::from_yaml("", "c.yaml").expect("valid");
        assert_eq!(s.annotation_prefix, "hallmark.dev/");
        assert_eq!(s.history, 5);
        assert_eq!(s.extra.len(), 5);
        assert!(s.extra.contains(&("hallmark.dev/commit".to_owned(), GitField::Commit)));
    }

    #[test]
    fn full_config_from_design_parses() {
        let text = r#"
annotationPrefix: audit.example.com/
history: 3
provenance:
  declarers:
    users: ["system:serviceaccount:ci:deployer"]
    groups: ["ci-pipelines"]
  extra:
    gitlab.com/sha: commit
    gitlab.com/user_login: committer
reconcilers:
  users: ["system:serviceaccount:argocd:argocd-application-controller"]
"#;
        let s = Settings::from_yaml(text, "c.yaml").expect("valid");
        assert_eq!(s.annotation_prefix, "audit.example.com/");
        assert_eq!(s.history, 3);
        assert_eq!(s.declarers.groups.as_written(), ["ci-pipelines"]);
        assert_eq!(
            s.extra,
            vec![
                ("gitlab.com/sha".to_owned(), GitField::Commit),
                ("gitlab.com/user_login".to_owned(), GitField::Committer)
            ]
        );
        assert_eq!(s.reconcilers.users.as_written().len(), 1);
    }

    #[test]
    fn unknown_key_is_an_error_with_file_and_line() {
        let err = Settings::from_yaml("history: 2\nprovenance:\n  declarer: {}\n", "conf/c.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("conf/c.yaml:3:"), "{msg}");
        assert!(msg.contains("unknown field `declarer`"), "{msg}");
    }

    #[test]
    fn a_yaml_syntax_error_is_reported_as_one() {
        let err = Settings::from_yaml("history: 2\nkey: [unclosed\n", "c.yaml").unwrap_err().to_string();
        assert!(err.starts_with("c.yaml:3:"), "{err}");
        assert!(!err.contains("unknown field"), "the syntax error, not the schema's: {err}");
    }

    #[test]
    fn unknown_provenance_field_is_an_error() {
        let err = Settings::from_yaml("provenance:\n  extra:\n    a/b: author\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("c.yaml:3:"), "{err}");
        assert!(err.to_string().contains("author"), "{err}");
    }

    #[test]
    fn bad_prefix_names_its_line() {
        let err = Settings::from_yaml("history: 1\nannotationPrefix: Hallmark\n", "c.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.yaml:2: annotationPrefix: \"Hallmark\" must end with '/', e.g. \"hallmark.dev/\""
        );
    }

    #[test]
    fn too_long_history_is_refused() {
        let err = Settings::from_yaml("history: 500\n", "c.yaml").unwrap_err();
        assert!(err.to_string().starts_with("c.yaml:1: history:"), "{err}");
    }

    #[test]
    fn system_writers_default_to_the_control_plane_and_take_globs() {
        let s = Settings::default();
        let w = &s.system_writers;
        for user in [
            "system:kube-controller-manager",
            "system:kube-scheduler",
            "system:apiserver",
            "system:node:worker-1",
            "system:serviceaccount:kube-system:namespace-controller",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        ] {
            assert!(w.contains(user, &[]), "{user}");
        }
        for user in ["dev", "system:serviceaccount:flux-system:kustomize-controller", "system:nodes", "system:node"] {
            assert!(!w.contains(user, &["system:authenticated".into()]), "{user}");
        }
        let s = Settings::from_yaml(
            "systemWriters:\n  users: [\"system:serviceaccount:kyverno:*\"]\n  groups: [\"system:nodes\"]\n",
            "c.yaml",
        )
        .expect("valid");
        let w = &s.system_writers;
        assert!(w.contains("system:serviceaccount:kyverno:background-controller", &[]));
        assert!(w.contains("anyone", &["system:nodes".into()]));
        assert!(!w.contains("system:kube-controller-manager", &[]), "the config replaces the default set");
        let err = Settings::from_yaml("history: 1\nsystemWriters:\n  users: [\"\"]\n", "c.yaml").unwrap_err();
        assert!(err.to_string().starts_with("c.yaml:3: systemWriters.users[0]: must not be empty"), "{err}");
    }

    #[test]
    fn reconcilers_take_globs() {
        let text = "reconcilers:\n  users:\n    - \"system:serviceaccount:*:flux-reconciler\"\n    - system:serviceaccount:argocd:argocd-application-controller\n  groups: [\"tenant-?-gitops\"]\n";
        let s = Settings::from_yaml(text, "c.yaml").expect("valid");
        let tenant_groups = ["system:serviceaccounts".to_owned(), "system:serviceaccounts:team-a".to_owned()];
        assert!(s.reconcilers.contains("system:serviceaccount:team-a:flux-reconciler", &tenant_groups));
        assert!(s.reconcilers.contains("system:serviceaccount:team-b:flux-reconciler", &[]));
        assert!(s.reconcilers.contains("system:serviceaccount:argocd:argocd-application-controller", &[]));
        assert!(s.reconcilers.contains("bot", &["tenant-a-gitops".to_owned()]));
        assert!(!s.reconcilers.contains("bot", &["tenant-ab-gitops".to_owned()]));
        assert!(!s.reconcilers.contains("system:serviceaccount:team-a:default", &tenant_groups));
        assert!(!s.reconcilers.contains("dev", &["developers".to_owned()]));
    }

    #[test]
    fn bad_reconciler_and_declarer_names_name_their_line() {
        let cases = [
            (
                "history: 1\nreconcilers:\n  users:\n    - ok\n    - \"*\"\n",
                "c.yaml:5: reconcilers.users[1]: \"*\" matches every user or group; name the identities, e.g. system:serviceaccount:*:flux-reconciler",
            ),
            ("reconcilers:\n  groups: [a, \"\"]\n", "c.yaml:2: reconcilers.groups[1]: must not be empty"),
            (
                "provenance:\n  declarers:\n    users: [\" ci\"]\n",
                "c.yaml:3: provenance.declarers.users[0]: \" ci\" has leading or trailing whitespace; remove it",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Settings::from_yaml(text, "c.yaml").map(|_| ()).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn prefix_flag_moves_default_extra_keys() {
        let mut s = Settings::default();
        s.set_prefix("audit.example.com/".into()).expect("valid");
        assert!(s.extra.contains(&("audit.example.com/branch".to_owned(), GitField::Branch)));
        assert!(s.set_prefix("nope".into()).is_err());
    }
}
