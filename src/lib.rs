//! hallmark: a Kubernetes admission webhook that stamps trusted provenance on every
//! direct write and enforces Git field ownership.
//!
//! The decisions are pure functions of the request, the policy snapshot and the clock
//! (`admission`, `provenance`, `ownership`, `policy`, `review`); the server, TLS, loading
//! and the Kubernetes client are thin shells around them.
#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod changecause;
pub mod cli;
pub mod config;
pub mod declare;
pub mod gitops;
pub mod metrics;
pub mod ownership;
pub mod plugin;
pub mod policy;
pub mod provenance;
pub mod review;
pub mod server;
pub mod webhook_config;
