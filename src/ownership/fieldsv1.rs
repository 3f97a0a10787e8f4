//! `metadata.managedFields[].fieldsV1`: which fields each field manager owns.

use super::path::Segment;
use serde_json::Value;

/// A decoded FieldsV1 set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    root: Node,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    /// `{}` in FieldsV1: the field as a whole (everything below it).
    leaf: bool,
    /// `".": {}`: the element itself (its existence), not its children.
    itself: bool,
    children: Vec<(Segment, Node)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FieldsV1 at {at}: {message}")]
pub struct FieldsV1Error {
    pub at: String,
    pub message: String,
}

impl FieldSet {
    pub fn decode(_fields: &Value) -> Result<FieldSet, FieldsV1Error> {
        Ok(FieldSet::default())
    }

    /// True when a change at `path` touches a field of this set.
    pub fn touches(&self, _path: &[Segment]) -> bool {
        let _ = &self.root;
        false
    }
}
