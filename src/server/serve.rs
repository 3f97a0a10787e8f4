//! The accept loop: TLS handshakes, HTTP/1.1 keep-alive and HTTP/2, graceful shutdown.
//!
//! kube-apiserver reuses keep-alive connections (up to 25 idle per host), closes idle ones
//! after 90 s, does not resume TLS sessions and does not retry a POST that failed in
//! transport. So the idle timeout here outlives the client's, a shutdown first turns
//! `/readyz` false and keeps answering for a drain period while endpoints are removed,
//! then stops accepting and finishes every request in flight.

use super::tls::{CertStore, server_config};
use super::{AppState, ClientCert, app, metrics_app};
use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after the drain period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub client_ca: Option<PathBuf>,
    /// Keep answering this long after the shutdown signal, with `/readyz` false.
    pub drain: Duration,
    /// An idle keep-alive connection (or one that does not finish its headers) is closed
    /// after this long. Must outlive kube-apiserver's 90 s idle timeout.
    pub idle_timeout: Duration,
    /// A client must finish sending a request body within this time (else 408).
    pub body_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            client_ca: None,
            drain: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            body_timeout: super::BODY_TIMEOUT,
        }
    }
}

/// A bound server, ready to serve: the addresses are known (tests bind port 0).
pub struct Bound {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    listener: TcpListener,
    metrics_listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    opts: ServeOptions,
}

/// Binds both ports and prepares TLS.
pub async fn bind(state: Arc<AppState>, store: Arc<CertStore>, opts: ServeOptions) -> anyhow::Result<Bound> {
    let config = server_config(store, opts.client_ca.as_deref())?;
    state.require_client_cert.store(opts.client_ca.is_some(), Ordering::SeqCst);
    state.set_body_timeout(opts.body_timeout);
    let listener = TcpListener::bind(opts.listen).await.with_context(|| format!("cannot listen on {}", opts.listen))?;
    let metrics_listener = TcpListener::bind(opts.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} (metrics)", opts.metrics_listen))?;
    Ok(Bound {
        addr: listener.local_addr()?,
        metrics_addr: metrics_listener.local_addr()?,
        listener,
        metrics_listener,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        state,
        opts,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves, then drains and finishes in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let router = app(self.state.clone());
        self.serve_router(router, shutdown).await
    }

    /// Serves another router on the same TLS stack (the benchmark's floor server).
    pub async fn serve_router(
        self,
        router: axum::Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Bound { listener, metrics_listener, acceptor, state, opts, .. } = self;
        let (metrics_stop_tx, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = tokio::spawn(
            axum::serve(metrics_listener, metrics_app(state.clone()))
                .with_graceful_shutdown(async move {
                    let _ = metrics_stop_rx.await;
                })
                .into_future(),
        );

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).keep_alive(true).header_read_timeout(opts.idle_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(250);
        let graceful = GracefulShutdown::new();
        state.ready.store(true, Ordering::SeqCst);

        tokio::pin!(shutdown);
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown, if drain_deadline.is_none() => {
                    state.ready.store(false, Ordering::SeqCst);
                    state.draining.store(true, Ordering::SeqCst);
                    tracing::info!(drain_seconds = opts.drain.as_secs(), "shutting down: draining");
                    drain_deadline = Some(tokio::time::Instant::now() + opts.drain);
                    continue;
                }
                _ = sleep_until(drain_deadline), if drain_deadline.is_some() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            state.metrics.connections.inc();
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let router = router.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                // A client certificate that verified against --client-ca, made visible to the
                // handlers, which require it for the review endpoints when one is configured.
                let verified = ClientCert(tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));
                let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                    router,
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(verified);
                        req
                    },
                ));
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("no longer accepting; finishing in-flight requests");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections did not finish within the shutdown grace period");
        }
        let _ = metrics_stop_tx.send(());
        let _ = metrics_task.await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
