//! `kubectl hallmark blame KIND/NAME [FIELD...]`: like `git blame`, for a live object.
//!
//! For each field, the last write that changed it: the newest entry of the `history`
//! annotation whose `changed` paths touch the field (a path covers everything below it,
//! and a change below a field changes the field), or the create at the bottom of the
//! history. A field the history does not reach (the history keeps the last N writes) is
//! answered from `metadata.managedFields`: the field manager that owns it, with the time
//! of that manager's last write (to any of its fields), marked as such.
//!
//! A history entry names at most 8 changed paths and counts the rest in `more`; when an
//! entry newer than the answer had unlisted paths, that write may have changed the field
//! too, and the answer says it may be incomplete.

use super::age;
use super::show::ObjectId;
use super::stamp::{Stamp, short_commit};
use super::table::{Table, cell};
use crate::ownership::fieldsv1::FieldSet;
use crate::ownership::path::{self, FieldPath, Segment, overlaps};
use crate::provenance::{HistoryEntry, Keys};
use serde::Serialize;
use serde_json::Value;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    /// A `history` entry (hallmark's stamp of that write).
    #[serde(rename = "history")]
    History,
    /// `metadata.managedFields`: older than the history.
    #[serde(rename = "managedFields")]
    ManagedFields,
    /// Neither knows the field.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::History => "history",
            Source::ManagedFields => "managedFields",
            Source::Unknown => "unknown",
        }
    }
}

/// The last write of one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blamed {
    /// The field, in the policy path syntax.
    pub field: String,
    pub source: Source,
    /// RFC 3339: the write's time (history), or the manager's last write (managedFields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The Kubernetes user of the write (history only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The field manager of the write, or the managedFields manager that owns the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// `create` or `update` (history); `Apply` or `Update` (managedFields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Newer writes changed this many fields their history entries do not name: one of
    /// them may have changed this field, so the answer may be older than the truth.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_newer: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Blamed {
    fn empty(field: &FieldPath, source: Source) -> Blamed {
        Blamed {
            field: field.to_string(),
            source,
            at: None,
            by: None,
            manager: None,
            operation: None,
            channel: None,
            trust: None,
            committer: None,
            pipeline: None,
            branch: None,
            commit: None,
            repository: None,
            unlisted_newer: 0,
        }
    }

    fn from_history(field: &FieldPath, e: &HistoryEntry) -> Blamed {
        Blamed {
            at: Some(e.at.clone()),
            by: Some(e.by.clone()),
            manager: e.manager.clone(),
            operation: Some(e.op.clone().unwrap_or_else(|| "update".to_owned())),
            channel: Some(e.channel.clone()),
            trust: Some(e.trust.clone()),
            committer: e.committer.clone(),
            pipeline: e.pipeline.clone(),
            branch: e.branch.clone(),
            commit: e.commit.clone(),
            repository: e.repository.clone(),
            ..Blamed::empty(field, Source::History)
        }
    }
}

/// The answer for an object: one row per field, and notes on what could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlameReport {
    pub rows: Vec<Blamed>,
    /// managedFields entries that could not be decoded (named by manager).
    pub errors: Vec<String>,
}

/// One managedFields entry, decoded.
struct Owned {
    manager: String,
    operation: Option<String>,
    subresource: Option<String>,
    time: Option<String>,
    set: FieldSet,
}

fn managed(obj: &Value, errors: &mut Vec<String>) -> Vec<Owned> {
    let list = obj.pointer("/metadata/managedFields").and_then(Value::as_array);
    let mut out = Vec::new();
    for entry in list.into_iter().flatten() {
        let s = |k: &str| entry.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        let manager = s("manager").unwrap_or_default();
        let Some(fields) = entry.get("fieldsV1") else { continue };
        match FieldSet::decode(fields) {
            Ok(set) => out.push(Owned {
                manager,
                operation: s("operation"),
                subresource: s("subresource"),
                time: s("time"),
                set,
            }),
            Err(e) => errors.push(format!("managedFields of {manager}: {e}")),
        }
    }
    out
}

/// True for `metadata.annotations["<prefix>..."]`: hallmark's own keys, which every
/// stamped write rewrites.
fn is_stamp_key(path: &FieldPath, prefix: &str) -> bool {
    matches!(path.segments(), [Segment::Field(m), Segment::Field(a), Segment::Field(k), ..]
        if m == "metadata" && a == "annotations" && k.starts_with(prefix))
}

/// The fields `blame` answers when none are given: every field a managedFields entry of
/// the main resource or `scale` owns (the most specific ones), then the history's changed
/// paths that none of them covers (fields since removed), minus hallmark's own keys.
fn default_fields(owned: &[Owned], history: &[HistoryEntry], prefix: &str) -> Vec<FieldPath> {
    let mut paths: Vec<FieldPath> = owned
        .iter()
        .filter(|o| o.subresource.as_deref().is_none_or(|s| s == "scale"))
        .flat_map(|o| o.set.paths())
        .collect();
    paths.sort();
    paths.dedup();
    let mut fields = super::owners::compact(paths);
    for changed in history.iter().flat_map(|e| &e.changed) {
        let Ok(p) = path::parse(changed) else { continue };
        if !fields.iter().any(|f| overlaps(f.segments(), p.segments())) {
            fields.push(p);
        }
    }
    fields.retain(|f| !is_stamp_key(f, prefix));
    fields.sort();
    fields.dedup();
    fields
}

/// Blames `fields` of `obj` (all of its fields when empty; see [`default_fields`]).
pub fn blame(obj: &Value, keys: &Keys, fields: &[FieldPath]) -> BlameReport {
    let mut errors = Vec::new();
    let owned = managed(obj, &mut errors);
    let history = Stamp::read(obj, keys).map(|s| s.history).unwrap_or_default();
    let prefix = keys.applied_by.strip_suffix("applied-by").unwrap_or(&keys.applied_by);
    let fields = if fields.is_empty() { default_fields(&owned, &history, prefix) } else { fields.to_vec() };
    // Each entry's changed paths, parsed once.
    let changed: Vec<Vec<FieldPath>> =
        history.iter().map(|e| e.changed.iter().filter_map(|c| path::parse(c).ok()).collect()).collect();
    let rows = fields
        .iter()
        .map(|field| {
            let mut unlisted = 0;
            for (entry, paths) in history.iter().zip(&changed) {
                let touched = paths.iter().any(|p| overlaps(field.segments(), p.segments()));
                if touched || entry.op.as_deref() == Some("create") {
                    return Blamed { unlisted_newer: unlisted, ..Blamed::from_history(field, entry) };
                }
                unlisted += entry.more;
            }
            // Older than the history: the newest managedFields owner.
            let owner = owned.iter().filter(|o| o.set.touches(field.segments())).max_by(|a, b| a.time.cmp(&b.time));
            match owner {
                Some(o) => Blamed {
                    at: o.time.clone(),
                    manager: Some(o.manager.clone()),
                    operation: o.operation.clone(),
                    unlisted_newer: unlisted,
                    ..Blamed::empty(field, Source::ManagedFields)
                },
                None => Blamed { unlisted_newer: unlisted, ..Blamed::empty(field, Source::Unknown) },
            }
        })
        .collect();
    BlameReport { rows, errors }
}

/// Parses the FIELD arguments (policy path syntax).
pub fn parse_fields(args: &[String]) -> Result<Vec<FieldPath>, String> {
    args.iter().map(|a| path::parse(a).map_err(|e| format!("invalid field \"{a}\": {e}"))).collect()
}

/// The table `blame` prints; rows whose answer may be incomplete are marked `*` in SOURCE,
/// explained by [`incomplete_note`].
pub fn render_blame(obj: &Value, report: &BlameReport, now: jiff::Timestamp, headers: bool) -> String {
    let mut table = Table::new(["FIELD", "AGE", "BY", "COMMITTER", "CHANNEL", "TRUST", "COMMIT", "PIPELINE", "SOURCE"]);
    for r in &report.rows {
        let by = match r.source {
            Source::History => cell(r.by.as_deref()),
            // Only the field manager is known: say that it is one.
            Source::ManagedFields => format!("{} (manager)", cell(r.manager.as_deref())),
            Source::Unknown => cell(None),
        };
        let mut source = r.source.as_str().to_owned();
        if r.unlisted_newer > 0 {
            source.push('*');
        }
        table.push([
            cell(Some(&r.field)),
            r.at.as_deref().map_or_else(|| cell(None), |at| age::age(at, now)),
            by,
            cell(r.committer.as_deref()),
            cell(r.channel.as_deref()),
            cell(r.trust.as_deref()),
            cell(r.commit.as_deref().map(short_commit).as_deref()),
            cell(r.pipeline.as_deref()),
            source,
        ]);
    }
    if !headers {
        return table.render(false, "");
    }
    let mut top = Table::default();
    ObjectId::of(obj).describe_rows(&mut top);
    let mut out = top.render(false, "");
    out.push('\n');
    out.push_str(&table.render(true, ""));
    out
}

/// The note for rows marked `*`, or `None` when every answer is complete.
pub fn incomplete_note(report: &BlameReport) -> Option<String> {
    report.rows.iter().any(|r| r.unlisted_newer > 0).then(|| {
        "* may be incomplete: a newer write changed more fields than its history entry names (`more`); it may have changed this field".to_owned()
    })
}

/// `blame -o json|yaml`: the object's identity and one item per field.
pub fn blame_document(obj: &Value, report: &BlameReport) -> Value {
    let mut doc = ObjectId::of(obj).to_json();
    doc["fields"] = serde_json::to_value(&report.rows).unwrap_or(Value::Null);
    doc
}
