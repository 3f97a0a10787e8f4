//! The benchmark's floor server: the same stack as `hallmark serve` (the same `bind`,
//! rustls configuration, accept loop, HTTP/1.1 keep-alive and HTTP/2, body limit and
//! metrics port), but the review endpoints only decode the AdmissionReview and answer
//! `allowed` (`hallmark::server::floor_app`). `benches/load.rs` runs it next to hallmark:
//! the difference between the two is the cost of hallmark's own logic.
//!
//! ```text
//! cargo build --release --example floor
//! target/release/examples/floor --tls-cert tls.crt --tls-key tls.key \
//!     --listen 127.0.0.1:9443 --metrics-listen 127.0.0.1:9080
//! ```
//!
//! Without `--tls-cert`/`--tls-key` it generates an in-memory certificate for
//! `localhost`/`127.0.0.1` (its CA is not printed: use files for a verifying client).
//! Exits on SIGTERM or SIGINT, after finishing the requests in flight.

use anyhow::Context as _;
use clap::Parser;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use hallmark::server::serve::{ServeOptions, bind, shutdown_signal};
use hallmark::server::tls::{CertStore, certified_key_from_pem};
use hallmark::server::{AppState, floor_app};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The floor server: decode the AdmissionReview, answer allowed.
#[derive(Parser, Debug)]
#[command(name = "floor")]
struct Args {
    /// Address of the TLS endpoint.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Address of the plain-HTTP metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9080")]
    metrics_listen: SocketAddr,
    /// Serving certificate (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds to keep answering after SIGTERM before closing (hallmark's default is 5;
    /// the floor is only ever a benchmark target).
    #[arg(long, default_value_t = 0)]
    drain_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The same runtime as `hallmark serve`: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let key = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert).with_context(|| format!("{}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("{}", key.display()))?;
            certified_key_from_pem(&cert, &key)?
        }
        _ => {
            let bundle = hallmark::certs::generate(&["localhost".to_owned(), "127.0.0.1".to_owned()], 30)?;
            certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())?
        }
    };
    let store = Arc::new(CertStore::new(key));
    // The floor never consults the engine; the state carries readiness and metrics.
    let engine = Engine::new(Stamper::new(Settings::default()), OnError::Allow);
    let state = Arc::new(AppState::new(engine, PolicySet::default()));
    state.set_policies(PolicySet::default());
    let opts = ServeOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        drain: Duration::from_secs(args.drain_seconds),
        ..ServeOptions::default()
    };
    let bound = bind(state, store, opts).await?;
    eprintln!("floor: listening on https://{} (metrics http://{})", bound.addr, bound.metrics_addr);
    bound.serve_router(floor_app(), shutdown_signal()).await
}
