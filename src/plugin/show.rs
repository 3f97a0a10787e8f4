//! `kubectl hallmark show`: the stamp and history of one object.

use super::age;
use super::stamp::{Stamp, short_commit};
use super::table::{Table, cell};
use crate::provenance::{HistoryEntry, Keys};
use serde_json::{Value, json};

/// What an object is, read from the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    pub fn of(obj: &Value) -> ObjectId {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_owned);
        ObjectId {
            api_version: s("/apiVersion").unwrap_or_default(),
            kind: s("/kind").unwrap_or_default(),
            namespace: s("/metadata/namespace").filter(|n| !n.is_empty()),
            name: s("/metadata/name").unwrap_or_default(),
        }
    }

    pub fn group(&self) -> &str {
        self.api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
    }

    /// The `Name:`, `Namespace:` and `Kind:` lines every describing command starts with.
    pub fn describe_rows(&self, table: &mut Table) {
        table.push(["Name:".to_owned(), cell(Some(&self.name))]);
        if let Some(ns) = &self.namespace {
            table.push(["Namespace:".to_owned(), cell(Some(ns))]);
        }
        table.push(["Kind:".to_owned(), format!("{} ({})", cell(Some(&self.kind)), cell(Some(&self.api_version)))]);
    }

    pub fn to_json(&self) -> Value {
        json!({"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name})
    }
}

/// The text `show` prints: the current stamp, then the history, newest first, each with
/// the fields the write changed. `headers: false` leaves out the history's header row.
pub fn render_show(obj: &Value, keys: &Keys, now: jiff::Timestamp, headers: bool) -> String {
    let id = ObjectId::of(obj);
    let mut top = Table::default();
    id.describe_rows(&mut top);
    let Some(stamp) = Stamp::read(obj, keys) else {
        let prefix = keys.applied_by.strip_suffix("applied-by").unwrap_or(&keys.applied_by);
        top.push([
            "Stamp:".to_owned(),
            format!("<none> (no {prefix} annotations: not written since hallmark was installed)"),
        ]);
        return top.render(false, "");
    };
    let applied_at = match &stamp.applied_at {
        Some(at) => format!("{at} ({} ago)", age::age(at, now)),
        None => "<none>".to_owned(),
    };
    let rows: [(&str, String); 11] = [
        ("Applied-By:", cell(stamp.applied_by.as_deref())),
        ("Applied-At:", applied_at),
        ("Channel:", cell(stamp.channel.as_deref())),
        ("Trust:", cell(stamp.trust.as_deref())),
        ("Committer:", cell(stamp.committer.as_deref())),
        ("Pipeline:", cell(stamp.pipeline.as_deref())),
        ("Branch:", cell(stamp.branch.as_deref())),
        ("Commit:", cell(stamp.commit.as_deref())),
        ("Repository:", cell(stamp.repository.as_deref())),
        ("Field-Manager:", cell(stamp.field_manager.as_deref())),
        ("History:", if stamp.history.is_empty() { "<none>".to_owned() } else { String::new() }),
    ];
    for (label, value) in rows {
        top.push([label.to_owned(), value]);
    }
    let mut out = top.render(false, "");
    if !stamp.history.is_empty() {
        out.push_str(&history_table(&stamp.history, now).render(headers, "  "));
    }
    out
}

/// The history as a table, newest first.
pub fn history_table(history: &[HistoryEntry], now: jiff::Timestamp) -> Table {
    let mut t =
        Table::new(["AGE", "BY", "CHANNEL", "TRUST", "OP", "MANAGER", "COMMITTER", "BRANCH", "COMMIT", "CHANGED"]);
    for e in history {
        t.push([
            age::age(&e.at, now),
            cell(Some(&e.by)),
            cell(Some(&e.channel)),
            cell(Some(&e.trust)),
            cell(Some(e.op.as_deref().unwrap_or("update"))),
            cell(e.manager.as_deref()),
            cell(e.committer.as_deref()),
            cell(e.branch.as_deref()),
            cell(e.commit.as_deref().map(short_commit).as_deref()),
            changed_text(e),
        ]);
    }
    t
}

/// `spec.replicas, metadata.labels["tier"], +3 more`.
pub fn changed_text(e: &HistoryEntry) -> String {
    let mut parts: Vec<String> = e.changed.iter().map(|p| cell(Some(p))).collect();
    if e.more > 0 {
        parts.push(format!("+{} more", e.more));
    }
    if parts.is_empty() { "<none>".to_owned() } else { parts.join(", ") }
}

/// `show -o json|yaml`: the object's identity and its stamp (`null` without one).
pub fn show_document(obj: &Value, keys: &Keys) -> Value {
    let mut doc = ObjectId::of(obj).to_json();
    doc["stamp"] = Stamp::read(obj, keys).map_or(Value::Null, |s| serde_json::to_value(s).unwrap_or(Value::Null));
    doc
}
