//! `kubectl hallmark check`: what the webhook would answer for a manifest, written over
//! the live object by the current user. The evaluation is the offline one of
//! `hallmark check` (the same `Engine`); only fetching the live object and the user
//! needs the cluster.

use super::merge;
use super::show::ObjectId;
use super::stamp::Stamp;
use super::table::{Table, cell};
use crate::admission::{Operation, UserInfo};
use crate::cli::request_for;
use crate::policy::PolicySet;
use crate::review::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the webhook would answer for one object of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `deployments.apps/web`.
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// The write changes nothing: the object keeps its stamp (and nothing is stored).
    pub unchanged: bool,
    /// The stamp the write would carry (when allowed and not unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// One document of a manifest, with where it came from for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub source: String,
    pub object: Value,
}

/// Reads every document of a YAML (or JSON) stream; a `List` contributes its items, empty
/// documents are skipped. Errors name the source and the line.
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| {
            let at = e.location().map(|l| format!(":{}", l.line())).unwrap_or_default();
            format!("error parsing {source}{at}: {e}")
        })?;
        match value {
            Value::Null => continue,
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in o.get("items").and_then(Value::as_array).into_iter().flatten() {
                    out.push(object(item.clone(), source, i)?);
                }
            }
            v => out.push(object(v, source, i)?),
        }
    }
    Ok(out)
}

fn object(v: Value, source: &str, index: usize) -> Result<Manifest, String> {
    let ok = v.get("apiVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        && v.get("kind").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        && v.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if !ok {
        return Err(format!(
            "error validating {source} (document {}): an object needs apiVersion, kind and metadata.name",
            index + 1
        ));
    }
    Ok(Manifest { source: source.to_owned(), object: v })
}

/// One write to judge: `manifest` applied over `live` (`None`: the object does not exist,
/// so the write is a CREATE) by `user` with `field_manager`.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    /// The resource as discovery names it: `deployments.apps`.
    pub qualified: &'a str,
    pub live: Option<Value>,
    pub manifest: &'a Value,
    pub user: UserInfo,
    pub field_manager: Option<String>,
}

/// What the webhook would answer for `write`.
pub fn evaluate(engine: &Engine, policies: &PolicySet, write: Write<'_>, now: jiff::Timestamp) -> CheckResult {
    let Write { qualified, live, manifest, user, field_manager } = write;
    let new = match &live {
        Some(live) => merge::apply(live, manifest),
        None => manifest.clone(),
    };
    let mut request = request_for(live, Some(new.clone()), user, field_manager);
    // The resource as discovery names it, not as `request_for` guesses it from the kind.
    request.resource.resource = qualified.split('.').next().unwrap_or(qualified).to_owned();
    let validation = engine.validate(&request, policies);
    let mutation = engine.mutate(&request, policies, now);
    let mut warnings: Vec<String> = Vec::new();
    for w in mutation.answer.warnings.iter().chain(validation.answer.warnings.iter()) {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }
    let allowed = validation.answer.allowed;
    let unchanged = matches!(mutation.outcome, "unchanged" | "restored");
    let stamp = if allowed && !unchanged {
        let patch: Option<json_patch::Patch> =
            mutation.answer.patch.as_deref().and_then(|p| serde_json::from_slice(p).ok());
        let mut stamped = new;
        match patch {
            Some(p) if json_patch::patch(&mut stamped, &p).is_ok() => Stamp::read(&stamped, &engine.stamper.keys),
            _ => Stamp::read(&stamped, &engine.stamper.keys),
        }
    } else {
        None
    };
    let id = ObjectId::of(manifest);
    CheckResult {
        object: format!("{qualified}/{}", id.name),
        namespace: request.namespace.clone(),
        operation: match request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
        .to_owned(),
        allowed,
        message: validation.answer.denial.map(|d| d.message),
        warnings,
        unchanged,
        stamp,
    }
}

/// The text `check` prints for each object: the verdict line, the deny message, the
/// warnings, and the stamp the webhook would apply.
pub fn render_check(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let ns = r.namespace.as_deref().map(|n| format!(" -n {n}")).unwrap_or_default();
        let verdict = if r.allowed { "allowed" } else { "denied" };
        out.push_str(&format!("{} {}{ns}: {verdict}\n", r.operation, r.object));
        if let Some(m) = &r.message {
            out.push_str(&format!("  Denied: {}\n", one_line(m)));
        }
        for w in &r.warnings {
            out.push_str(&format!("  Warning: {}\n", one_line(w)));
        }
        if r.unchanged {
            out.push_str("  Unchanged: the write changes nothing; the object keeps its stamp\n");
        }
        if let Some(s) = &r.stamp {
            out.push_str("  Stamp:\n");
            let mut t = Table::default();
            let mut row = |label: &str, v: Option<&str>| {
                if let Some(v) = v {
                    t.push([label.to_owned(), cell(Some(v))]);
                }
            };
            row("Applied-By:", s.applied_by.as_deref());
            row("Channel:", s.channel.as_deref());
            row("Trust:", s.trust.as_deref());
            row("Committer:", s.committer.as_deref());
            row("Pipeline:", s.pipeline.as_deref());
            row("Branch:", s.branch.as_deref());
            row("Commit:", s.commit.as_deref());
            row("Repository:", s.repository.as_deref());
            row("Field-Manager:", s.field_manager.as_deref());
            if let Some(latest) = s.history.first().filter(|_| r.operation == "UPDATE") {
                t.push(["Changes:".to_owned(), super::show::changed_text(latest)]);
            }
            out.push_str(&t.render(false, "    "));
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
