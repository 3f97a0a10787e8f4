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
    /// A client must finish sending a request body within this time (else 408), and a
    /// write of the answer that makes no progress for this long ends the connection.
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
        // half_close: a client that sends its request and then shuts down its write side still
        // gets the answer (hyper's default would close at once).
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .half_close(true)
            .header_read_timeout(opts.idle_timeout);
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
            let timeouts = Timeouts { header: opts.header_timeout, idle: opts.idle_timeout, write: opts.body_timeout };
            let conn_state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let open = OpenConnection(conn_state);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        handshake_failed(&open.0, peer, &e.to_string());
                        return;
                    }
                    Err(_) => {
                        handshake_failed(&open.0, peer, "timed out");
                        return;
                    }
                };
                // A client certificate that verified against --client-ca, made visible to the
                // handlers, which require it for the review endpoints when one is configured.
                let verified = ClientCert(tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));
                let clock = Arc::new(HeaderClock::new());
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
                let io = HeaderDeadline::new(tls, clock, timeouts);
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

/// How often at most a failed TLS handshake is logged (the others are counted, and the
/// next line says how many there were).
pub const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The `reason` of a failed handshake: the client refused hallmark's certificate (it sent
/// a certificate alert: a caBundle that does not match), the handshake timed out, or
/// anything else (not TLS, a closed connection, no shared protocol version).
pub fn handshake_failure_reason(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("timed out") {
        "timeout"
    } else if e.contains("alert")
        && ["unknownca", "badcertificate", "certificateunknown", "certificateexpired", "decrypterror"]
            .iter()
            .any(|a| e.contains(a))
    {
        "certificate-refused"
    } else {
        "other"
    }
}

/// Counts a failed handshake in `hallmark_tls_handshake_failures_total{reason}` and logs
/// it at `warn`, at most once per [`HANDSHAKE_LOG_INTERVAL`].
fn handshake_failed(state: &AppState, peer: SocketAddr, error: &str) {
    use std::sync::atomic::AtomicU64;
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    static SINCE_LOG: AtomicU64 = AtomicU64::new(0);
    let reason = handshake_failure_reason(error);
    state.metrics.handshake_failure(reason);
    let since = SINCE_LOG.fetch_add(1, Ordering::Relaxed) + 1;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST_LOG.load(Ordering::Relaxed);
    if last != 0 && now < last + HANDSHAKE_LOG_INTERVAL.as_secs() {
        tracing::debug!(%peer, error, reason, "TLS handshake failed");
        return;
    }
    if LAST_LOG.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    SINCE_LOG.store(0, Ordering::Relaxed);
    let hint = match reason {
        "certificate-refused" => {
            "the client does not trust hallmark's serving certificate: the webhook configurations' caBundle must be the CA that signed it"
        }
        "timeout" => "the client sent no complete TLS handshake in time",
        _ => "not a TLS client, or one that shares no protocol version or cipher suite with hallmark",
    };
    tracing::warn!(%peer, error, reason, failures = since, "TLS handshake failed: {hint}");
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

/// The deadlines [`HeaderDeadline`] enforces on one connection.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    /// A request head must be complete this long after the connection's start or after
    /// the first byte of an HTTP/1.1 request.
    header: Duration,
    /// An HTTP/2 connection with no request in flight is closed after this (hyper's
    /// HTTP/2 server has no idle timeout of its own; HTTP/1.1 idling is bounded by hyper's
    /// `header_read_timeout`, set to the same value).
    idle: Duration,
    /// A write that cannot make progress for this long (a client that does not read its
    /// answers) ends the connection.
    write: Duration,
}

/// When a connection must have sent a complete request head, shared by its IO
/// ([`HeaderDeadline`]) and its service (which sees each parsed request).
///
/// hyper's own `header_read_timeout` also runs while a keep-alive connection is idle, so
/// it cannot be both the idle timeout (which must outlive kube-apiserver's 90 s) and a
/// short header deadline. This clock arms at the connection's start and, on HTTP/1.1, at
/// the first byte of each later request, and disarms when the request head has been
/// parsed. The protocol is taken from the connection's first bytes (the HTTP/2 preface),
/// as hyper-util's `auto::Builder` decides it, not from ALPN. On HTTP/2, where streams
/// interleave and PINGs flow while idle, bytes never arm the clock: it guards the first
/// request, then arms for the idle timeout whenever no stream is in flight.
struct HeaderClock {
    origin: std::time::Instant,
    /// Nanoseconds after `origin` + 1 when the deadline was armed; 0 = disarmed.
    armed_at: std::sync::atomic::AtomicU64,
    /// Armed for the idle timeout (HTTP/2, no stream in flight) rather than the header one.
    idle: AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    h2: AtomicBool,
}

/// The HTTP/2 connection preface's first line (RFC 9113 §3.4), enough to tell it apart.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl HeaderClock {
    fn new() -> HeaderClock {
        HeaderClock {
            origin: std::time::Instant::now(),
            armed_at: std::sync::atomic::AtomicU64::new(1),
            idle: AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            h2: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64 + 1
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.armed_at.store(0, Ordering::Release);
    }

    fn request_finished(&self) {
        let left = self.in_flight.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if left == 0 && self.h2.load(Ordering::Acquire) {
            self.idle.store(true, Ordering::Release);
            self.armed_at.store(self.now(), Ordering::Release);
        }
    }

    /// Bytes arrived: on HTTP/1.1, a new request head starts unless one is being served.
    fn bytes_read(&self) {
        if self.h2.load(Ordering::Acquire) {
            return;
        }
        if self.in_flight.load(Ordering::Acquire) == 0 && self.armed_at.load(Ordering::Acquire) == 0 {
            self.idle.store(false, Ordering::Release);
            let _ = self.armed_at.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn deadline(&self, t: &Timeouts) -> Option<tokio::time::Instant> {
        match self.armed_at.load(Ordering::Acquire) {
            0 => None,
            n => {
                let after = if self.idle.load(Ordering::Acquire) { t.idle } else { t.header };
                Some(tokio::time::Instant::from_std(self.origin + Duration::from_nanos(n - 1) + after))
            }
        }
    }
}

/// The connection's IO with the deadlines of its [`HeaderClock`] and a write deadline: a
/// read still waiting past the clock's deadline, or a write that made no progress for
/// [`Timeouts::write`], fails with `TimedOut`, and hyper closes the connection.
struct HeaderDeadline<T> {
    inner: T,
    clock: Arc<HeaderClock>,
    timeouts: Timeouts,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_deadline: Option<tokio::time::Instant>,
    /// The connection's first bytes, until they tell HTTP/2 from HTTP/1.1.
    sniffed: Option<Vec<u8>>,
    write_timer: Pin<Box<tokio::time::Sleep>>,
    write_stalled: bool,
}

impl<T> HeaderDeadline<T> {
    fn new(inner: T, clock: Arc<HeaderClock>, timeouts: Timeouts) -> HeaderDeadline<T> {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        HeaderDeadline {
            inner,
            clock,
            timeouts,
            timer: Box::pin(tokio::time::sleep_until(far)),
            timer_deadline: None,
            sniffed: Some(Vec::with_capacity(H2_PREFACE.len())),
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stalled: false,
        }
    }

    /// Watches the first bytes for the HTTP/2 preface.
    fn sniff(&mut self, bytes: &[u8]) {
        let Some(seen) = self.sniffed.as_mut() else {
            return;
        };
        let take = (H2_PREFACE.len() - seen.len()).min(bytes.len());
        seen.extend_from_slice(&bytes[..take]);
        if !H2_PREFACE.starts_with(seen) {
            self.sniffed = None;
        } else if seen.len() == H2_PREFACE.len() {
            self.clock.h2.store(true, Ordering::Release);
            self.sniffed = None;
        }
    }

    /// A write returned `Pending`: start (or check) the write deadline.
    fn write_pending(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        if !self.write_stalled {
            self.write_stalled = true;
            self.write_timer.as_mut().reset(tokio::time::Instant::now() + self.timeouts.write);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read the answer in time",
            ));
        }
        Ok(())
    }

    fn watch_write<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        match polled {
            std::task::Poll::Pending => match self.write_pending(cx) {
                Ok(()) => std::task::Poll::Pending,
                Err(e) => std::task::Poll::Ready(Err(e)),
            },
            ready => {
                self.write_stalled = false;
                ready
            }
        }
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
                    if this.sniffed.is_some() {
                        this.sniff(&buf.filled()[before..]);
                    }
                    this.clock.bytes_read();
                }
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Pending => {
                if let Some(deadline) = this.clock.deadline(&this.timeouts) {
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
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
