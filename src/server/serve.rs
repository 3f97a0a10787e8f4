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
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after the drain period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default bound on open connections (`--max-connections`). kube-apiserver keeps up to
/// 25 idle connections per webhook host and opens more under load; a few apiservers,
/// probes and scrapes stay far below this.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Refusals (a TLS handshake and a 503) in progress at most; past it, new connections
/// over the limit are closed without a word.
const MAX_REFUSALS_IN_FLIGHT: usize = 32;
/// A refused connection gets this long for its handshake and the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// A client must finish a request's headers within this time, counted from the
    /// connection's start (after the TLS handshake) or from the first byte of a request.
    pub header_timeout: Duration,
    /// Open connections at most; past it a new connection gets a 503 and is closed.
    pub max_connections: usize,
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
            header_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
        let connections = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
        let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
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
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                refuse(tcp, peer, &acceptor, &refusals, &state, opts.max_connections);
                continue;
            };
            state.metrics.connections.inc();
            state.metrics.open_connections.inc();
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let router = router.clone();
            let watcher = graceful.watcher();
            let header_timeout = opts.header_timeout;
            let conn_state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _open = OpenConnection(conn_state);
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
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                let clock = Arc::new(HeaderClock::new(h2));
                let service_clock = clock.clone();
                let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(verified);
                    service_clock.request_started();
                    let clock = service_clock.clone();
                    let response = tower::ServiceExt::oneshot(router.clone(), req);
                    async move {
                        let r = response.await;
                        clock.request_finished();
                        r
                    }
                });
                let io = HeaderDeadline::new(tls, clock, header_timeout);
                let conn = builder.serve_connection(TokioIo::new(io), service);
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

/// Counts a connection in `hallmark_open_connections` while it lives.
struct OpenConnection(Arc<AppState>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
    }
}

/// A connection past `--max-connections`: answered `503 Service Unavailable` with
/// `Connection: close` and a one-line reason (after a TLS handshake bounded by
/// [`REFUSAL_TIMEOUT`]), so that the client sees why; closed without a word when
/// [`MAX_REFUSALS_IN_FLIGHT`] refusals are already in progress. Counted in
/// `hallmark_connections_refused_total`; logged at most once a second.
fn refuse(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    refusals: &Arc<tokio::sync::Semaphore>,
    state: &Arc<AppState>,
    limit: usize,
) {
    use std::sync::atomic::AtomicU64;
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    state.metrics.connections_refused.inc();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LAST_LOG.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(%peer, limit, "too many connections: refusing new ones (--max-connections)");
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let acceptor = acceptor.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async move {
            use tokio::io::AsyncWriteExt as _;
            let mut tls = acceptor.accept(tcp).await?;
            let body = format!("hallmark: too many connections (--max-connections {limit}); retry later\n");
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(body.as_bytes()).await?;
            tls.shutdown().await
        })
        .await;
    });
}

/// When a connection must have sent a complete request head, shared by its IO
/// ([`HeaderDeadline`]) and its service (which sees each parsed request).
///
/// hyper's own `header_read_timeout` also runs while a keep-alive connection is idle, so
/// it cannot be both the idle timeout (which must outlive kube-apiserver's 90 s) and a
/// short header deadline. This clock arms at the connection's start and at the first
/// byte of each later request, and disarms when the request head has been parsed.
struct HeaderClock {
    origin: std::time::Instant,
    /// Nanoseconds after `origin` + 1 when the deadline was armed; 0 = disarmed.
    armed_at: std::sync::atomic::AtomicU64,
    in_request: AtomicBool,
    /// HTTP/2 multiplexes requests: the clock only guards the first one.
    h2: bool,
}

impl HeaderClock {
    fn new(h2: bool) -> HeaderClock {
        HeaderClock {
            origin: std::time::Instant::now(),
            armed_at: std::sync::atomic::AtomicU64::new(1),
            in_request: AtomicBool::new(false),
            h2,
        }
    }

    fn request_started(&self) {
        self.in_request.store(true, Ordering::Release);
        self.armed_at.store(0, Ordering::Release);
    }

    fn request_finished(&self) {
        if !self.h2 {
            self.in_request.store(false, Ordering::Release);
        }
    }

    /// Bytes arrived: a new request head starts unless one is being served.
    fn bytes_read(&self) {
        if !self.in_request.load(Ordering::Acquire) && self.armed_at.load(Ordering::Acquire) == 0 {
            let since = self.origin.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64 + 1;
            let _ = self.armed_at.compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        match self.armed_at.load(Ordering::Acquire) {
            0 => None,
            n => Some(tokio::time::Instant::from_std(self.origin + Duration::from_nanos(n - 1) + timeout)),
        }
    }
}

/// The connection's IO with the header deadline of its [`HeaderClock`]: a read that is
/// still waiting past the deadline fails with `TimedOut`, and hyper closes the connection.
struct HeaderDeadline<T> {
    inner: T,
    clock: Arc<HeaderClock>,
    timeout: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_deadline: Option<tokio::time::Instant>,
}

impl<T> HeaderDeadline<T> {
    fn new(inner: T, clock: Arc<HeaderClock>, timeout: Duration) -> HeaderDeadline<T> {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        HeaderDeadline { inner, clock, timeout, timer: Box::pin(tokio::time::sleep_until(far)), timer_deadline: None }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeaderDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_read();
                }
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Pending => {
                if let Some(deadline) = this.clock.deadline(this.timeout) {
                    if this.timer_deadline != Some(deadline) {
                        this.timer.as_mut().reset(deadline);
                        this.timer_deadline = Some(deadline);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request headers were not received in time",
                        )));
                    }
                }
                std::task::Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeaderDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
