//! Git field ownership: field paths, managedFields (FieldsV1), the structural diff of a
//! write, and the verdict of the ownership policies on it.

pub mod diff;
pub mod fieldsv1;
pub mod managed;
pub mod markers;
pub mod path;
pub mod verdict;
