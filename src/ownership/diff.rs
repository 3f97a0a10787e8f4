//! The structural diff of a write: which fields `object` changes relative to `oldObject`.

use super::path::FieldPath;
use serde_json::Value;

/// One changed field, borrowing its old and new values from the two objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    pub path: FieldPath,
    pub old: Option<&'a Value>,
    pub new: Option<&'a Value>,
}

/// What the diff leaves out.
#[derive(Debug, Clone)]
pub struct DiffOptions<'p> {
    /// hallmark's own annotations (`hallmark.dev/`): never a change of the object.
    pub annotation_prefix: &'p str,
}

/// The changed fields of a write, in a stable order (sorted by path).
pub fn diff<'a>(_old: &'a Value, _new: &'a Value, _opts: &DiffOptions<'_>) -> Vec<Change<'a>> {
    Vec::new()
}
