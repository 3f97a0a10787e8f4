//! The stamp an object carries, read from its annotations.

use crate::provenance::{GitField, HistoryEntry, Keys, annotations, parse_history};
use serde::Serialize;
use serde_json::Value;

/// hallmark's annotations on one object. Every field is optional: an object written
/// before hallmark was installed has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// Newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

impl Stamp {
    /// The stamp on `obj`, or `None` when it carries none of hallmark's annotations.
    pub fn read(obj: &Value, keys: &Keys) -> Option<Stamp> {
        let ann = annotations(obj)?;
        let get = |key: &str| ann.get(key).and_then(Value::as_str).map(str::to_owned);
        let git = |f: GitField| get(keys.git(f));
        let stamp = Stamp {
            applied_by: get(&keys.applied_by),
            applied_at: get(&keys.applied_at),
            channel: get(&keys.channel),
            trust: get(&keys.trust),
            committer: git(GitField::Committer),
            pipeline: git(GitField::Pipeline),
            branch: git(GitField::Branch),
            commit: git(GitField::Commit),
            repository: git(GitField::Repository),
            field_manager: get(&keys.field_manager),
            history: parse_history(ann.get(&keys.history)),
        };
        (stamp != Stamp::default()).then_some(stamp)
    }

    pub fn git(&self, field: GitField) -> Option<&str> {
        match field {
            GitField::Committer => self.committer.as_deref(),
            GitField::Pipeline => self.pipeline.as_deref(),
            GitField::Branch => self.branch.as_deref(),
            GitField::Commit => self.commit.as_deref(),
            GitField::Repository => self.repository.as_deref(),
        }
    }
}

/// A commit as list and history columns show it: the first 8 characters.
pub fn short_commit(commit: &str) -> String {
    commit.chars().take(8).collect()
}
