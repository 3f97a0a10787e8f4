//! `kubectl hallmark list`: objects with their last stamp, filtered client-side.

use super::age;
use super::stamp::{Stamp, short_commit};
use super::table::{Table, cell};
use crate::provenance::Keys;
use serde_json::{Value, json};

/// `--branch`, `--committer`, `--since`: an object passes when its stamp matches all
/// that are given (an object without the field does not). Objects without any stamp
/// (never written since hallmark was installed, such as the `kube-root-ca.crt` ConfigMap
/// of every namespace) pass only with `--unstamped`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub branch: Option<String>,
    pub committer: Option<String>,
    pub since: Option<jiff::Timestamp>,
    pub unstamped: bool,
}

impl ListFilter {
    pub fn is_empty(&self) -> bool {
        self.branch.is_none() && self.committer.is_none() && self.since.is_none()
    }

    pub fn matches(&self, stamp: Option<&Stamp>) -> bool {
        let Some(stamp) = stamp else { return self.unstamped && self.is_empty() };
        if self.is_empty() {
            return true;
        }
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        let recent = match self.since {
            None => true,
            Some(since) => {
                stamp.applied_at.as_deref().and_then(|a| a.parse::<jiff::Timestamp>().ok()).is_some_and(|t| t >= since)
            }
        };
        eq(&self.branch, &stamp.branch) && eq(&self.committer, &stamp.committer) && recent
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
    pub stamp: Option<Stamp>,
}

/// The rows for the items of one list response (a full list or a metadata-only one, whose
/// items say `PartialObjectMetadata`: then `kind` names them).
pub fn list_rows(kind: &str, items: &[Value], keys: &Keys, filter: &ListFilter) -> Vec<ListRow> {
    items
        .iter()
        .filter_map(|item| {
            let stamp = Stamp::read(item, keys);
            if !filter.matches(stamp.as_ref()) {
                return None;
            }
            let s = |p: &str| item.pointer(p).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
            let item_kind = s("/kind").filter(|k| k != "PartialObjectMetadata").unwrap_or_else(|| kind.to_owned());
            Some(ListRow {
                namespace: s("/metadata/namespace"),
                kind: item_kind,
                name: s("/metadata/name").unwrap_or_default(),
                stamp,
            })
        })
        .collect()
}

/// The `list` table. The NAMESPACE column is there with `-A` only (kubectl's habit); AGE
/// is the age of the last stamp.
pub fn render_list(rows: &[ListRow], all_namespaces: bool, headers: bool, now: jiff::Timestamp) -> String {
    let mut header = vec!["KIND", "NAME", "APPLIED-BY", "CHANNEL", "BRANCH", "COMMIT", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(header);
    for r in rows {
        let st = r.stamp.as_ref();
        let mut row = vec![
            cell(Some(&r.kind)),
            cell(Some(&r.name)),
            cell(st.and_then(|s| s.applied_by.as_deref())),
            cell(st.and_then(|s| s.channel.as_deref())),
            cell(st.and_then(|s| s.branch.as_deref())),
            cell(st.and_then(|s| s.commit.as_deref()).map(short_commit).as_deref()),
            st.and_then(|s| s.applied_at.as_deref()).map_or_else(|| "<none>".to_owned(), |at| age::age(at, now)),
        ];
        if all_namespaces {
            row.insert(0, cell(r.namespace.as_deref()));
        }
        t.push(row);
    }
    t.render(headers, "")
}

/// `list -o json|yaml`: a kubectl-like `List` of the objects and their stamps.
pub fn list_document(rows: &[ListRow]) -> Value {
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "kind": r.kind,
                "namespace": r.namespace,
                "name": r.name,
                "stamp": r.stamp.as_ref().map_or(Value::Null, |s| serde_json::to_value(s).unwrap_or(Value::Null)),
            })
        })
        .collect();
    json!({"kind": "List", "items": items})
}
