//! Loading policy documents from files and directories.
//!
//! A file holds one or more YAML (or JSON) documents separated by `---`; empty documents
//! are skipped. Every problem is reported as one line that names the file, the line and
//! column, and the field: `policies/platform.yaml:14:9: spec.rules[0].fields[1]: column
//! 22: expected ']'`.
//!
//! Positions of semantic errors (found after deserialising) are recovered by reading the
//! document again with a probe that walks to the offending key or value and fails there:
//! serde_yaml attaches the position of the node being read to the error, so the
//! position is exact for block and flow style alike.

use super::CompiledPolicy;
use super::schema::{
    API_VERSION, FieldError, KIND, OwnershipPolicy, OwnershipPolicySpec, Step, compile, steps_to_string,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// A policy document that could not be loaded: one line, `file:line:column: field:
/// message` (line, column and field where known).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyError {
    /// The file (as given) or another name of the source (`<stdin>`).
    pub file: String,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// The offending field, e.g. `spec.rules[0].fields[1]`.
    pub field: Option<String>,
    pub message: String,
}

impl PolicyError {
    fn render(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = self.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(": ");
        if let Some(field) = &self.field {
            out.push_str(field);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }

    fn new(file: &str, location: Option<Location>, field: Option<String>, message: String) -> Self {
        PolicyError {
            file: file.to_string(),
            line: location.map(|l| l.line),
            column: location.map(|l| l.column),
            field,
            message,
        }
    }
}

/// A 1-based position in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    line: usize,
    column: usize,
}

impl From<serde_yaml::Location> for Location {
    fn from(l: serde_yaml::Location) -> Self {
        Location { line: l.line(), column: l.column() }
    }
}

/// A file document, read strictly: unknown top-level keys are errors. `apiVersion` and
/// `kind` are checked before this is read; `status` (as in `kubectl get -o yaml`) is
/// accepted and ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    metadata: ObjectMeta,
    spec: OwnershipPolicySpec,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// One compiled document of a file, with what is needed to point at it later.
struct Loaded {
    policy: CompiledPolicy,
    doc_index: usize,
}

/// Parses and compiles every `OwnershipPolicy` document of `text` (multi-document YAML
/// or JSON); `source` names the file in errors. Empty documents are skipped. Two
/// documents with the same name are an error.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<CompiledPolicy>, PolicyError> {
    let loaded = parse_located(text, source)?;
    let mut seen = Names::default();
    let texts = [(source.to_string(), text.to_string())];
    for l in &loaded {
        seen.check(&l.policy.name, 0, l.doc_index, &texts)?;
    }
    Ok(loaded.into_iter().map(|l| l.policy).collect())
}

/// Checks an `OwnershipPolicy` custom resource as kube-apiserver hands it to the policy
/// webhook (`POST /validate-policy`): the object as JSON, read by the same loader as
/// files and `--watch-policies`. An object has no file and no lines, so the error is
/// `OwnershipPolicy "NAME" is invalid: FIELD: MESSAGE`, the text kube-apiserver returns
/// to `kubectl apply`.
pub fn check_object(object: &serde_json::Value) -> Result<CompiledPolicy, String> {
    let name = object.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default();
    let invalid = |field: Option<String>, message: String| {
        let mut out = format!("{KIND} {name:?} is invalid: ");
        if let Some(field) = field {
            out.push_str(&field);
            out.push_str(": ");
        }
        out.push_str(&message);
        out
    };
    // managedFields says nothing about the policy, and an object decoded from a review
    // keeps it as JSON text (`admission::Review::decode`), which ObjectMeta would refuse.
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let text = serde_json::to_string(&object).map_err(|e| invalid(None, e.to_string()))?;
    let mut loaded = parse_located(&text, "").map_err(|e| invalid(e.field, e.message))?;
    match loaded.len() {
        1 => Ok(loaded.remove(0).policy),
        _ => Err(invalid(None, format!("expected one {KIND} object"))),
    }
}

/// Loads every policy of the given files and directories (a directory: its `*.yaml`,
/// `*.yml` and `*.json` files, sorted by name, not recursively; names starting with `.`
/// are skipped). A file given twice is read once. Policy names must be unique across
/// all files.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<CompiledPolicy>, PolicyError> {
    let files = policy_files(paths)?;
    let mut seen = Names::default();
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut policies = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyError::new(&name, None, None, format!("cannot read: {e}")))?;
        let loaded = parse_located(&text, &name)?;
        texts.push((name, text));
        for l in loaded {
            seen.check(&l.policy.name, texts.len() - 1, l.doc_index, &texts)?;
            policies.push(l.policy);
        }
    }
    Ok(policies)
}

/// The files that `paths` name, in order, each once.
fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PolicyError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |files: &mut Vec<PathBuf>, file: PathBuf| {
        let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if seen.insert(key) {
            files.push(file);
        }
    };
    for path in paths {
        let shown = path.display().to_string();
        let cannot = |e: std::io::Error| PolicyError::new(&shown, None, None, format!("cannot read: {e}"));
        let meta = std::fs::metadata(path).map_err(cannot)?;
        if !meta.is_dir() {
            push(&mut files, path.clone());
            continue;
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path).map_err(cannot)? {
            let entry = entry.map_err(cannot)?;
            let file = entry.path();
            if is_policy_file_name(&file) && file.is_file() {
                entries.push(file);
            }
        }
        entries.sort();
        for file in entries {
            push(&mut files, file);
        }
    }
    Ok(files)
}

fn is_policy_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// Policy names seen so far, with where they were defined.
#[derive(Default)]
struct Names {
    /// name -> (index into the texts, document index)
    seen: HashMap<String, (usize, usize)>,
}

impl Names {
    /// Records `name`, defined in document `doc_index` of `texts[file]` (file name,
    /// text); a name seen before is an error that points at both definitions.
    fn check(
        &mut self,
        name: &str,
        file: usize,
        doc_index: usize,
        texts: &[(String, String)],
    ) -> Result<(), PolicyError> {
        let Some(&(first_file, first_index)) = self.seen.get(name) else {
            self.seen.insert(name.to_string(), (file, doc_index));
            return Ok(());
        };
        let name_steps = [Step::Key("metadata".into()), Step::Key("name".into())];
        let (first_name, first_text) = texts.get(first_file).map_or(("", ""), |(f, t)| (f, t));
        let first_at = match locate(first_text, first_index, &name_steps, false) {
            Some(l) => format!("{first_name}:{}:{}", l.line, l.column),
            None => first_name.to_string(),
        };
        let (this_name, this_text) = texts.get(file).map_or(("", ""), |(f, t)| (f, t));
        Err(PolicyError::new(
            this_name,
            locate(this_text, doc_index, &name_steps, false),
            Some("metadata.name".into()),
            format!("duplicate policy name {name:?} (first defined at {first_at})"),
        ))
    }
}

/// Parses and compiles the documents of one text.
fn parse_located(text: &str, source: &str) -> Result<Vec<Loaded>, PolicyError> {
    // Pass 1: syntax, and the kind of every document. (serde_yaml's document iterator
    // repeats a syntax error forever: stop at the first.)
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(value) => values.push(value),
            Err(e) => return Err(yaml_error(source, &e)),
        }
    }
    // Pass 2: the typed documents, in one more read of the text.
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let Some(value) = values.get(i) else {
            break;
        };
        if value.is_null() {
            continue;
        }
        check_kind(text, source, i, value)?;
        let document = PolicyDocument::deserialize(doc).map_err(|e| yaml_error(source, &e))?;
        let policy = OwnershipPolicy { metadata: document.metadata, spec: document.spec, status: None };
        match compile(&policy) {
            Ok(policy) => out.push(Loaded { policy, doc_index: i }),
            Err(errors) => {
                // Report the first problem; the others are usually consequences or
                // show up on the next try.
                let Some(first) = errors.into_iter().next() else {
                    continue;
                };
                return Err(field_error(text, source, i, &first));
            }
        }
    }
    Ok(out)
}

/// `apiVersion: hallmark.dev/v1alpha1` and `kind: OwnershipPolicy`.
fn check_kind(text: &str, source: &str, doc_index: usize, value: &serde_yaml::Value) -> Result<(), PolicyError> {
    let Some(map) = value.as_mapping() else {
        return Err(PolicyError::new(
            source,
            locate(text, doc_index, &[], false),
            None,
            format!("expected an {KIND} document (a mapping), found {}", describe_value(value)),
        ));
    };
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match map.get(field) {
            None => {
                return Err(PolicyError::new(
                    source,
                    locate(text, doc_index, &[], false),
                    None,
                    format!("missing {field}: expected {field}: {want}"),
                ));
            }
            Some(serde_yaml::Value::String(s)) if s == want => {}
            Some(other) => {
                let found = match other {
                    serde_yaml::Value::String(s) => format!("{s:?}"),
                    other => describe_value(other).to_string(),
                };
                let hint = if field == "apiVersion" && other.as_str().is_some_and(|s| s.starts_with("hallmark.dev/")) {
                    " (this version of hallmark reads v1alpha1)"
                } else {
                    ""
                };
                return Err(PolicyError::new(
                    source,
                    locate(text, doc_index, &[Step::Key(field.into())], false),
                    Some(field.to_string()),
                    format!("expected {want}, found {found}{hint}"),
                ));
            }
        }
    }
    Ok(())
}

fn describe_value(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// A serde_yaml error as one line: its position, its path (serde_yaml prefixes the
/// message with it) and its message without the position.
fn yaml_error(source: &str, e: &serde_yaml::Error) -> PolicyError {
    let location = e.location().map(Location::from);
    let mut message = e.to_string();
    if let Some(l) = location {
        let suffix = format!(" at line {} column {}", l.line, l.column);
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    // "spec.owner: unknown field ..." -> field "spec.owner".
    let mut field = None;
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.is_empty()
        && !prefix.contains(|c: char| c.is_whitespace() || c == '`' || c == '"')
    {
        field = Some(prefix.to_string());
        message = rest.to_string();
    }
    PolicyError::new(source, location, field, message)
}

/// A compile error, located in the text.
fn field_error(text: &str, source: &str, doc_index: usize, e: &FieldError) -> PolicyError {
    PolicyError::new(
        source,
        locate(text, doc_index, &e.steps, e.at_key),
        Some(steps_to_string(&e.steps)),
        e.message.clone(),
    )
}

/// Where `steps` is in document `doc_index` of `text`: the key itself (`at_key`) or its
/// value. A step that is not in the document falls back to its nearest ancestor.
fn locate(text: &str, doc_index: usize, steps: &[Step], at_key: bool) -> Option<Location> {
    let mut steps = steps;
    let mut at_key = at_key;
    loop {
        let doc = serde_yaml::Deserializer::from_str(text).nth(doc_index)?;
        match (Probe { steps, at_key }).deserialize(doc) {
            Err(e) if e.to_string().contains(MARKER) => return e.location().map(Location::from),
            _ => {}
        }
        let (_, parent) = steps.split_last()?;
        steps = parent;
        // Point at the parent's key when there is one.
        at_key = matches!(parent.last(), Some(Step::Key(_)));
    }
}

/// The message of the error with which a probe stops at its target.
const MARKER: &str = "\u{1}hallmark-probe-target\u{1}";

/// Walks a document along `steps` and fails at the target node (or its key).
struct Probe<'a> {
    steps: &'a [Step],
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.steps.is_empty() { deserializer.deserialize_any(Target) } else { deserializer.deserialize_any(self) }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(want), rest)) = self.steps.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let hit_key = self.at_key && rest.is_empty();
        while let Some(key) = map.next_key_seed(KeyName { hit: hit_key.then_some(want.as_str()) })? {
            if key.as_deref() == Some(want.as_str()) {
                map.next_value_seed(Probe { steps: rest, at_key: self.at_key })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(want), rest)) = self.steps.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            let more = if i == *want {
                seq.next_element_seed(Probe { steps: rest, at_key: self.at_key })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(variant)?;
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A mapping key: its text when it is a string; fails at the key when it is `hit`.
struct KeyName<'a> {
    hit: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for KeyName<'_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyName<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if self.hit == Some(key) { Err(E::custom(MARKER)) } else { Ok(Some(key.to_string())) }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Fails on whatever node it is given, so that the error carries the node's position.
struct Target;

impl<'de> Visitor<'de> for Target {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the target")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DESIGN_EXAMPLE: &str = r#"apiVersion: hallmark.dev/v1alpha1
kind: OwnershipPolicy
metadata:
  name: platform
spec:
  owner:
    name: platform-config                       # shown to users
    repository: https://git.example.com/sre/cluster-config
    reconcilers:                                # who may change owned fields
      users: ["system:serviceaccount:flux-system:kustomize-controller"]
      fieldManagers: ["kustomize-controller"]
      requirePodToken: false                    # see "Who counts as a reconciler"
  rules:
    - match:
        groups: ["apps"]                        # "" is the core group
        kinds: ["Deployment", "StatefulSet"]
        namespaces: ["team-*"]                  # optional globs
        labelSelector: {matchLabels: {tier: web}}   # optional, on the object
      fields:
        - spec.template.spec.containers[*].resources
        - spec.template.spec.priorityClassName
        - metadata.labels["cost-center"]
      action: deny                              # deny | warn
  managedFields: deny       # ignore | warn | deny: also own every field that
                            # metadata.managedFields shows a reconciler fieldManager owns
  deleteProtection: true    # deny DELETE of objects that a reconciler manages
  breakGlass:
    groups: ["sre-oncall"]  # may override: allowed, warned, channel=break-glass
"#;

    fn err(text: &str) -> String {
        match parse_documents(text, "policies/platform.yaml") {
            Ok(p) => panic!("parsed: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn minimal(name: &str) -> String {
        format!(
            "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata:\n  name: {name}\nspec:\n  owner:\n    name: o\n    reconcilers: {{fieldManagers: [flux]}}\n  managedFields: warn\n"
        )
    }

    #[test]
    fn design_example_loads() {
        let policies = parse_documents(DESIGN_EXAMPLE, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policies.len(), 1);
        let p = &policies[0];
        assert_eq!(p.name, "platform");
        assert_eq!(p.owner_name, "platform-config");
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].fields.len(), 3);
        assert_eq!(p.rules[0].fields[2].to_string(), "metadata.labels.cost-center");
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let cases: Vec<(String, &str)> = vec![
            (
                DESIGN_EXAMPLE.replace("    reconcilers:", "    reconciler:"),
                "policies/platform.yaml:9:5: spec.owner: unknown field `reconciler`, expected one of `name`, `repository`, `reconcilers`",
            ),
            (
                DESIGN_EXAMPLE.replace(
                    "spec.template.spec.priorityClassName",
                    "spec.template.spec[name=x",
                ),
                "policies/platform.yaml:21:11: spec.rules[0].fields[1]: column 19: unclosed '['",
            ),
            (
                DESIGN_EXAMPLE.replace(
                    "spec.template.spec.priorityClassName",
                    "spec.template.spec.x/y",
                ),
                "policies/platform.yaml:21:11: spec.rules[0].fields[1]: column 21: unexpected '/' in a field name; quote names with other characters: [\"...\"]",
            ),
            (
                DESIGN_EXAMPLE.replace("action: deny ", "action: block"),
                "policies/platform.yaml:23:15: spec.rules[0].action: unknown variant `block`, expected `deny` or `warn`",
            ),
            (
                DESIGN_EXAMPLE.replace("      action: deny", "      #"),
                "policies/platform.yaml:14:7: spec.rules[0]: missing field `action`",
            ),
            (
                DESIGN_EXAMPLE.replace("managedFields: deny ", "managedFields: on  "),
                "policies/platform.yaml:24:18: spec.managedFields: unknown variant `on`, expected one of `ignore`, `warn`, `deny`",
            ),
            (
                DESIGN_EXAMPLE.replace("apiVersion: hallmark.dev/v1alpha1", "apiVersion: apps/v1"),
                "policies/platform.yaml:1:13: apiVersion: expected hallmark.dev/v1alpha1, found \"apps/v1\"",
            ),
            (
                DESIGN_EXAMPLE.replace("apiVersion: hallmark.dev/v1alpha1", "apiVersion: hallmark.dev/v1"),
                "policies/platform.yaml:1:13: apiVersion: expected hallmark.dev/v1alpha1, found \"hallmark.dev/v1\" (this version of hallmark reads v1alpha1)",
            ),
            (
                DESIGN_EXAMPLE.replace("kind: OwnershipPolicy", "kind: Deployment"),
                "policies/platform.yaml:2:7: kind: expected OwnershipPolicy, found \"Deployment\"",
            ),
            (
                DESIGN_EXAMPLE.replace("kind: OwnershipPolicy\n", ""),
                "policies/platform.yaml:1:1: missing kind: expected kind: OwnershipPolicy",
            ),
            (
                DESIGN_EXAMPLE.replace("name: platform-config", "name: \"\""),
                "policies/platform.yaml:7:11: spec.owner.name: the owner name must not be empty",
            ),
            (
                DESIGN_EXAMPLE.replace("{matchLabels: {tier: web}}", "{matchLabel: {tier: web}}"),
                "policies/platform.yaml:18:25: spec.rules[0].match.labelSelector: unknown field `matchLabel`, expected `matchLabels` or `matchExpressions`",
            ),
            (
                DESIGN_EXAMPLE.replace(
                    "{matchLabels: {tier: web}}",
                    "{matchExpressions: [{key: tier, operator: Equals, values: [a]}]}",
                ),
                "policies/platform.yaml:18:66: spec.rules[0].match.labelSelector.matchExpressions[0].operator: unknown operator \"Equals\", expected one of In, NotIn, Exists, DoesNotExist",
            ),
            (
                DESIGN_EXAMPLE.replace(
                    "{matchLabels: {tier: web}}",
                    "\n          matchExpressions:\n          - key: tier\n            operator: In",
                ),
                "policies/platform.yaml:21:13: spec.rules[0].match.labelSelector.matchExpressions[0].operator: operator In needs at least one value",
            ),
            (
                DESIGN_EXAMPLE.replace("        namespaces: [\"team-*\"]", "        namespaces: [\"team-*\", \"\"]"),
                "policies/platform.yaml:17:32: spec.rules[0].match.namespaces[1]: must not be empty",
            ),
            (
                DESIGN_EXAMPLE.replace(
                    "      fields:\n        - spec.template.spec.containers[*].resources\n        - spec.template.spec.priorityClassName\n        - metadata.labels[\"cost-center\"]\n",
                    "      fields: []\n",
                ),
                "policies/platform.yaml:19:15: spec.rules[0].fields: a rule needs at least one field path",
            ),
            (
                DESIGN_EXAMPLE.replace("      fieldManagers: [\"kustomize-controller\"]\n", ""),
                "policies/platform.yaml:23:18: spec.managedFields: managedFields: warn|deny needs spec.owner.reconcilers.fieldManagers (the managers whose managedFields entries mark Git-owned fields)",
            ),
            (
                format!("{DESIGN_EXAMPLE}---\n{DESIGN_EXAMPLE}"),
                "policies/platform.yaml:33:9: metadata.name: duplicate policy name \"platform\" (first defined at policies/platform.yaml:4:9)",
            ),
            (
                "a: [1\n".to_string(),
                "policies/platform.yaml:2:1: did not find expected ',' or ']', while parsing a flow sequence at line 1 column 4",
            ),
            (
                "- 1\n".to_string(),
                "policies/platform.yaml:1:1: expected an OwnershipPolicy document (a mapping), found a list",
            ),
            (
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: x}\nspec:\n  owner: {name: o}\n".to_string(),
                "policies/platform.yaml:4:1: spec: the policy does nothing: give it rules, managedFields: warn|deny, or deleteProtection: true",
            ),
            (
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: x}\nspec:\n  owner: {name: o}\n  rules:\n  - fields: [a]\n    action: warn\n".to_string(),
                "policies/platform.yaml:5:3: spec.owner.reconcilers: rules need reconcilers: name at least one user, group or fieldManager that may change the owned fields",
            ),
            (
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {}\nspec:\n  owner: {name: o, reconcilers: {fieldManagers: [f]}}\n  deleteProtection: true\n".to_string(),
                "policies/platform.yaml:3:1: metadata.name: missing: every policy needs a name",
            ),
            (
                minimal("x").replace("spec:", "specs: {}\nspec:"),
                "policies/platform.yaml:5:1: unknown field `specs`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`",
            ),
            (
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: x}\n".to_string(),
                "policies/platform.yaml:1:1: missing field `spec`",
            ),
            (
                // The second document is the bad one: lines count from the file's start.
                format!("{}---\n# comment\n{}", minimal("a"), minimal("b").replace("name: o", "name: o\n    repo: x")),
                "policies/platform.yaml:19:5: spec.owner: unknown field `repo`, expected one of `name`, `repository`, `reconcilers`",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(&text), want);
        }
    }

    #[test]
    fn reconciler_globs_load_and_match() {
        let text = DESIGN_EXAMPLE.replace(
            r#"users: ["system:serviceaccount:flux-system:kustomize-controller"]"#,
            r#"users: ["system:serviceaccount:flux-system:kustomize-controller", "system:serviceaccount:*:flux-reconciler"]
      groups: ["gitops-?"]"#,
        );
        let p = &parse_documents(&text, "p.yaml").unwrap_or_else(|e| panic!("{e}"))[0];
        let tenant = |ns: &str| vec!["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{ns}")];
        assert!(p.reconcilers.contains("system:serviceaccount:team-a:flux-reconciler", &tenant("team-a")));
        assert!(p.reconcilers.contains("system:serviceaccount:team-b:flux-reconciler", &tenant("team-b")));
        assert!(p.reconcilers.contains("system:serviceaccount:flux-system:kustomize-controller", &[]));
        assert!(p.reconcilers.contains("bot", &["gitops-1".to_owned()]));
        assert!(!p.reconcilers.contains("bot", &["gitops-12".to_owned()]));
        assert!(!p.reconcilers.contains("system:serviceaccount:team-a:default", &tenant("team-a")));
        assert!(!p.reconcilers.contains("system:serviceaccount:team-a:flux-reconciler-2", &[]));
        assert!(!p.reconcilers.contains("flux-reconciler", &[]));
        assert!(p.reconcilers.users.has_globs());
        assert_eq!(p.reconcilers.users.as_written()[1], "system:serviceaccount:*:flux-reconciler");
    }

    #[test]
    fn bad_reconciler_names_and_require_pod_token_with_globs_are_refused() {
        let users = r#"users: ["system:serviceaccount:flux-system:kustomize-controller"]"#;
        let cases = [
            (
                DESIGN_EXAMPLE
                    .replace(users, r#"users: ["system:serviceaccount:*:flux-reconciler"]"#)
                    .replace("requirePodToken: false", "requirePodToken: true "),
                "policies/platform.yaml:12:24: spec.owner.reconcilers.requirePodToken: requirePodToken cannot be combined with the glob users[0] \"system:serviceaccount:*:flux-reconciler\": globs exist to match the tenant service accounts that Flux and Argo CD impersonate, and an impersonated request carries no pod-bound token extras (authentication.kubernetes.io/credential-id, pod-name), so every write of theirs would count as a direct write; drop requirePodToken, or list only the controllers' own service accounts",
            ),
            (
                DESIGN_EXAMPLE
                    .replace(users, "users: [a]\n      groups: [b, \"tenants-*\"]")
                    .replace("requirePodToken: false", "requirePodToken: true "),
                "policies/platform.yaml:13:24: spec.owner.reconcilers.requirePodToken: requirePodToken cannot be combined with the glob groups[1] \"tenants-*\": globs exist to match the tenant service accounts that Flux and Argo CD impersonate, and an impersonated request carries no pod-bound token extras (authentication.kubernetes.io/credential-id, pod-name), so every write of theirs would count as a direct write; drop requirePodToken, or list only the controllers' own service accounts",
            ),
            (
                DESIGN_EXAMPLE.replace(users, r#"users: [flux, "*"]"#),
                "policies/platform.yaml:10:21: spec.owner.reconcilers.users[1]: \"*\" matches every user or group; name the identities, e.g. system:serviceaccount:*:flux-reconciler",
            ),
            (
                DESIGN_EXAMPLE.replace(users, r#"users: ["flux "]"#),
                "policies/platform.yaml:10:15: spec.owner.reconcilers.users[0]: \"flux \" has leading or trailing whitespace; remove it",
            ),
            (
                DESIGN_EXAMPLE
                    .replace(r#"fieldManagers: ["kustomize-controller"]"#, r#"fieldManagers: ["kustomize-*"]"#),
                "policies/platform.yaml:11:23: spec.owner.reconcilers.fieldManagers[0]: \"kustomize-*\": fieldManagers are exact names, not globs (a client chooses its field manager freely)",
            ),
            (
                DESIGN_EXAMPLE.replace(r#"groups: ["sre-oncall"]"#, r#"groups: ["?*"]"#),
                "policies/platform.yaml:28:14: spec.breakGlass.groups[0]: \"?*\" matches every user or group; name the identities, e.g. system:serviceaccount:*:flux-reconciler",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(&text), want);
        }
        // requirePodToken with exact names only still loads.
        let exact = DESIGN_EXAMPLE.replace("requirePodToken: false", "requirePodToken: true ");
        assert!(parse_documents(&exact, "p.yaml").is_ok_and(|p| p[0].require_pod_token));
    }

    #[test]
    fn an_object_is_checked_by_the_same_loader_with_the_field_and_no_position() {
        let object = |text: &str| -> serde_json::Value {
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).expect("yaml")).expect("json")
        };
        let ok = object(DESIGN_EXAMPLE);
        assert_eq!(check_object(&ok).map(|p| p.name), Ok("platform".to_owned()));
        // As a review decodes it: managedFields kept as JSON text.
        let mut decoded = ok.clone();
        decoded["metadata"]["managedFields"] = serde_json::Value::String(r#"[{"manager":"kubectl"}]"#.into());
        assert_eq!(check_object(&decoded).map(|p| p.name), Ok("platform".to_owned()));
        let cases = [
            (
                "apiVersion: hallmark.dev/v1alpha1\nkind: OwnershipPolicy\nmetadata: {name: x}\nspec:\n  owner: {name: o}\n  rules:\n  - fields: [a]\n    action: warn\n".to_owned(),
                "OwnershipPolicy \"x\" is invalid: spec.owner.reconcilers: rules need reconcilers: name at least one user, group or fieldManager that may change the owned fields",
            ),
            (
                DESIGN_EXAMPLE.replace("spec.template.spec.priorityClassName", "spec.template["),
                "OwnershipPolicy \"platform\" is invalid: spec.rules[0].fields[1]: column 14: unclosed '['",
            ),
            (
                DESIGN_EXAMPLE.replace("kind: OwnershipPolicy", "kind: Deployment"),
                "OwnershipPolicy \"platform\" is invalid: kind: expected OwnershipPolicy, found \"Deployment\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(check_object(&object(&text)).err().as_deref(), Some(want));
        }
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let text =
            format!("# leading comment\n---\n{}---\n---\n# only a comment\n---\n{}...\n", minimal("a"), minimal("b"));
        let names: Vec<String> =
            parse_documents(&text, "x.yaml").unwrap_or_else(|e| panic!("{e}")).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(parse_documents("", "x.yaml").unwrap_or_else(|e| panic!("{e}")).is_empty());
        assert!(parse_documents("# nothing\n", "x.yaml").unwrap_or_else(|e| panic!("{e}")).is_empty());
    }

    #[test]
    fn status_of_a_custom_resource_is_ignored() {
        let text = format!("{}status:\n  observedGeneration: 2\n  conditions: []\n", minimal("a"));
        assert_eq!(parse_documents(&text, "x.yaml").map(|p| p.len()), Ok(1));
    }

    #[test]
    fn json_documents() {
        let text = "{\n\t\"apiVersion\": \"hallmark.dev/v1alpha1\",\n\t\"kind\": \"OwnershipPolicy\",\n\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\n\t\t\"owner\": {\"name\": \"o\", \"reconcilers\": {\"fieldManagers\": [\"f\"]}},\n\t\t\"managedFields\": \"deny\",\n\t\t\"rules\": [{\"fields\": [\"spec.x[\"], \"action\": \"deny\"}]\n\t}\n}\n";
        assert_eq!(err(text), "policies/platform.yaml:8:25: spec.rules[0].fields[0]: column 7: unclosed '['");
        let ok = text.replace("spec.x[", "spec.x");
        assert_eq!(parse_documents(&ok, "p.json").map(|p| p[0].name.clone()), Ok("j".to_string()));
    }

    #[test]
    fn directories_and_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write("b.yaml", &minimal("b"));
        write("a.yml", &format!("{}---\n{}", minimal("a1"), minimal("a2")));
        write(
            "c.json",
            r#"{"apiVersion": "hallmark.dev/v1alpha1", "kind": "OwnershipPolicy", "metadata": {"name": "c"}, "spec": {"owner": {"name": "o", "reconcilers": {"fieldManagers": ["f"]}}, "deleteProtection": true}}"#,
        );
        write("README.md", "not a policy");
        write(".hidden.yaml", "not: a policy");
        write("empty.yaml", "");
        std::fs::create_dir(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("sub/d.yaml"), minimal("d")).unwrap_or_else(|e| panic!("{e}"));

        let names = |paths: &[PathBuf]| -> Result<Vec<String>, String> {
            load_paths(paths).map(|ps| ps.into_iter().map(|p| p.name).collect()).map_err(|e| e.to_string())
        };
        let root = dir.path().to_path_buf();
        assert_eq!(names(std::slice::from_ref(&root)), Ok(vec!["a1".into(), "a2".into(), "b".into(), "c".into()]));
        // A file named again (directly and through its directory) is read once.
        assert_eq!(
            names(&[root.join("sub/d.yaml"), root.clone(), root.join("b.yaml")]),
            Ok(vec!["d".into(), "a1".into(), "a2".into(), "b".into(), "c".into()])
        );
        assert_eq!(names(&[]), Ok(vec![]));

        // The same name in two files.
        write("z.yaml", &format!("# another\n{}", minimal("b")));
        let b = root.join("b.yaml").display().to_string();
        let z = root.join("z.yaml").display().to_string();
        assert_eq!(
            names(std::slice::from_ref(&root)),
            Err(format!("{z}:5:9: metadata.name: duplicate policy name \"b\" (first defined at {b}:4:9)"))
        );

        // Errors name the file.
        write("z.yaml", &minimal("z").replace("owner:", "ownr:"));
        assert_eq!(
            names(std::slice::from_ref(&root)),
            Err(format!(
                "{z}:6:3: spec: unknown field `ownr`, expected one of `owner`, `rules`, `managedFields`, `deleteProtection`, `breakGlass`"
            ))
        );
        let missing = root.join("missing.yaml");
        let e = names(std::slice::from_ref(&missing)).err().unwrap_or_default();
        assert!(e.starts_with(&format!("{}: cannot read: ", missing.display())), "{e}");
    }
}
