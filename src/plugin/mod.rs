//! `kubectl-hallmark`, the kubectl plugin: `show`, `owners`, `check`, `list`, `blame`, `drift` and `declare`.
//!
//! Rendering and grouping are pure functions over the objects as the API server returns
//! them (`serde_json::Value`), tested with recorded responses; [`cluster`] and
//! [`discovery`] are the thin shell that talks to the API server.

pub mod age;
pub mod app;
pub mod blame;
pub mod check;
pub mod cluster;
pub mod discovery;
pub mod drift;
pub mod list;
pub mod merge;
pub mod owners;
pub mod show;
pub mod stamp;
pub mod table;

pub use app::main;
