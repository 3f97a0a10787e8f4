//! Adversarial tests of the accept loop (header deadline, connection limit, refusals) and
//! of `/validate`'s parent reads for `scale` writes, written to break them. Six defects
//! they found were fixed (h2 told by its preface rather than ALPN, an idle timeout for
//! HTTP/2, a write timeout, half-close, parent reads only for valid names) and their tests
//! now hold; the one marked `#[ignore = "KNOWN LIMITATION: ..."]` documents what is not.

mod common;
mod support;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::policy::load::parse_documents;
use hallmark::server::parents::ParentLookup;
use hallmark::server::serve::ServeOptions;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const CREATE: &str = "deploy-web-create-csa-dev.json";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn start(opts: ServeOptions) -> TestServer {
    TestServer::start_with(Settings::default(), PolicySet::default(), opts).await
}

fn header_opts(header: Duration) -> ServeOptions {
    ServeOptions { header_timeout: header, ..ServeOptions::default() }
}

/// A TLS connection that offers exactly `alpn` (nothing when empty).
async fn tls_with_alpn(addr: SocketAddr, ca_pem: &str, alpn: &[u8]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connector = if alpn.is_empty() {
        let mut c = tls_connector(ca_pem, b"x").config().as_ref().clone();
        c.alpn_protocols.clear();
        tokio_rustls::TlsConnector::from(Arc::new(c))
    } else {
        tls_connector(ca_pem, alpn)
    };
    connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.expect("TLS handshake")
}

/// A complete raw request for `path` with `body` (keep-alive).
fn raw_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = request_head(path, body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads exactly one HTTP/1.1 response (head + Content-Length body) and returns
/// (status, head, body). `buf` keeps bytes read past it.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Option<(u16, String, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = status_of(head.as_bytes())?;
            if status == 100 {
                buf.drain(..end + 4);
                return Some((100, head, Vec::new()));
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Some((status, head, body));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Is the connection still open after `wait`? (Reads nothing meaningful meanwhile.)
async fn still_open_after<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let (_, closed) = read_until_closed(stream, wait).await;
    !closed
}

async fn gauge(server: &TestServer, name: &str) -> Option<i64> {
    let text = server.metrics().await;
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// Waits until `hallmark_open_connections` is `want` (or fails after 5 s).
async fn wait_open_connections(server: &TestServer, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = gauge(server, "hallmark_open_connections").await;
        if now == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "hallmark_open_connections stays at {now:?}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request body fed by the test, chunk by chunk.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

// ---------------------------------------------------------------------------------------
// A stand-in for the Kubernetes API (parent reads)
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct FakeApi {
    delay: Duration,
    /// The parent's metadata as served (None: the fixture's).
    metadata: Option<Value>,
    reads: Arc<AtomicUsize>,
}

async fn get_parent(
    State(api): State<FakeApi>,
    Path((_ns, _name)): Path<(String, String)>,
) -> axum::response::Response {
    api.reads.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(api.delay).await;
    let metadata =
        api.metadata.clone().unwrap_or_else(|| fixture(SCALE_PARENT)["request"]["oldObject"]["metadata"].clone());
    axum::Json(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata}))
        .into_response()
}

async fn fake_api(api: FakeApi) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/apis/apps/v1/namespaces/{ns}/deployments/{name}", axum::routing::get(get_parent))
        .route("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}", axum::routing::get(get_parent))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    (kube::Client::try_from(config).expect("client"), task)
}

async fn scale_server(api: FakeApi, timeout: Duration) -> (TestServer, tokio::task::JoinHandle<()>) {
    let (client, task) = fake_api(api).await;
    let policies =
        PolicySet { policies: parse_documents(PLATFORM_MANAGED_FIELDS_DENY, "policy.yaml").expect("valid policy") };
    let server = TestServer::start_with(Settings::default(), policies, ServeOptions::default()).await;
    server.state.set_parent_lookup(ParentLookup::new(client, timeout));
    (server, task)
}

fn api(delay: Duration, metadata: Option<Value>) -> (FakeApi, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    (FakeApi { delay, metadata, reads: reads.clone() }, reads)
}

fn warnings_of(response: &Value) -> Vec<String> {
    serde_json::from_value(response.get("warnings").cloned().unwrap_or(json!([]))).expect("warnings are strings")
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1: pipelining, trickles, slow bodies, Expect
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_all_answered_in_order() {
    let server = start(header_opts(Duration::from_secs(1))).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let mut all = Vec::new();
    for path in ["/mutate", "/validate", "/healthz-not-a-route", "/mutate"] {
        all.extend(raw_request(path, &fixture_bytes(CREATE)));
    }
    tls.write_all(&all).await.expect("write");
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _, body) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("a response");
        if status == 200 {
            let v: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["response"]["uid"], fixture(CREATE)["request"]["uid"]);
        }
        statuses.push(status);
    }
    // (POST to an unknown path: 404 or 405, but answered, in order.)
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[1], 200);
    assert!(statuses[2] == 404 || statuses[2] == 405, "{statuses:?}");
    assert_eq!(statuses[3], 200);
    // The pipelined connection is an ordinary keep-alive one afterwards: idle past the
    // header timeout, it is kept.
    assert!(still_open_after(&mut tls, Duration::from_millis(1500)).await, "idle keep-alive kept");
    tls.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let (status, _, _) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("a response");
    assert_eq!(status, 200);
    drop(tls);
    wait_open_connections(&server, 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_second_request_head_is_cut_by_the_header_timeout() {
    let header = Duration::from_secs(1);
    let server = start(header_opts(header)).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("first answer");
    assert_eq!(status, 200);
    // Idle first (must not count), then one byte every 200 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let head = request_head("/mutate", 10);
    let started = Instant::now();
    let mut closed_after = None;
    for b in head.as_bytes() {
        if tls.write_all(&[*b]).await.is_err() || tls.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_until_closed(&mut tls, Duration::from_millis(200)).await;
        if closed {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the trickle was cut");
    assert!(closed_after >= header - Duration::from_millis(250), "not before the deadline: {closed_after:?}");
    assert!(closed_after <= header + Duration::from_millis(1200), "cut by the header timeout: {closed_after:?}");
    wait_open_connections(&server, 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_body_is_not_cut_by_the_header_timeout_and_still_gets_its_answer() {
    // Header timeout 1 s, body timeout 10 s, body sent over ~2.5 s: answered 200.
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    let server = start(opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let body = fixture_bytes(CREATE);
    tls.write_all(request_head("/mutate", body.len()).as_bytes()).await.expect("head");
    tls.flush().await.expect("flush");
    let parts = 10;
    let step = body.len().div_ceil(parts);
    for chunk in body.chunks(step) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tls.write_all(chunk).await.expect("body chunk: the connection must stay open");
        tls.flush().await.expect("flush");
    }
    let mut buf = Vec::new();
    let (status, _, out) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_at_the_body_timeout_not_a_cut_at_the_header_timeout() {
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    };
    let server = start(opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(request_head("/validate", 5000).as_bytes()).await.expect("head");
    tls.write_all(b"{\"apiVersion\":").await.expect("some body");
    tls.flush().await.expect("flush");
    let started = Instant::now();
    let mut buf = Vec::new();
    let (status, _, out) = read_response(&mut tls, &mut buf, Duration::from_secs(8)).await.expect("a 408, not a cut");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("request body was not received in time"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2700) && took < Duration::from_secs(5), "{took:?}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_errors_total{endpoint=\"validate\",kind=\"body\"} 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_honoured_and_the_wait_for_the_body_is_not_a_header_wait() {
    let server = start(header_opts(Duration::from_secs(1))).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let body = fixture_bytes(CREATE);
    let head = request_head("/mutate", body.len()).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.flush().await.expect("flush");
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut tls, &mut buf, Duration::from_secs(3)).await.expect("100 Continue");
    assert_eq!(status, 100);
    // Think for longer than the header timeout before sending the body.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(&body).await.expect("body");
    tls.flush().await.expect("flush");
    let (status, _, out) = read_response(&mut tls, &mut buf, Duration::from_secs(3)).await.expect("answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    server.stop().await;
}

#[tokio::test]
async fn half_close_after_tls_is_closed_promptly_and_released() {
    let server = start(ServeOptions::default()).await;
    // TLS, then close_notify + FIN with nothing sent.
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.shutdown().await.expect("half-close");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(closed, "the server closes a connection whose client half-closed");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Same with TCP FIN only (no close_notify), straight after the handshake.
    let tls = raw_tls(server.addr, &server.ca_pem).await;
    let (tcp, _) = tls.into_inner();
    let mut tcp = tcp;
    tcp.shutdown().await.expect("FIN");
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
    assert!(closed);
    wait_open_connections(&server, 0).await;
    assert_still_serves(&server).await;
    server.stop().await;
}

/// hyper's HTTP/1 `half_close` is off (the default): a client that sends a complete
/// request and then shuts down its write side (close_notify or FIN, as `curl`-like tools
/// and `openssl s_client` do at end of input) gets no answer: the EOF aborts the request.
/// kube-apiserver never half-closes, so low severity. Fix: `.half_close(true)` on
/// `builder.http1()` in serve.rs (verified: this test then passes, and so does
/// `half_close_after_tls_is_closed_promptly_and_released`).
#[tokio::test]
async fn a_request_followed_by_half_close_still_gets_its_answer() {
    let server = start(ServeOptions::default()).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    tls.shutdown().await.expect("half-close");
    let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(closed);
    assert_eq!(status_of(&answer), Some(200), "{}", String::from_utf8_lossy(&answer));
    wait_open_connections(&server, 0).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// HTTP/2
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn h2_clients_that_never_send_a_request_are_cut_by_the_header_timeout() {
    let header = Duration::from_secs(1);
    let server = start(header_opts(header)).await;
    // (a) ALPN h2, nothing sent; (b) the preface and SETTINGS, then nothing; (c) the
    // preface, SETTINGS and a PING every 300 ms (traffic, but no request).
    let mut a = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    let mut b = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    let mut c = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    b.write_all(preface).await.expect("preface");
    c.write_all(preface).await.expect("preface");
    let started = Instant::now();
    let pinger = tokio::spawn(async move {
        let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00hallmark";
        loop {
            if c.write_all(ping).await.is_err() {
                return started.elapsed();
            }
            let (_, closed) = read_until_closed(&mut c, Duration::from_millis(300)).await;
            if closed || started.elapsed() > Duration::from_secs(6) {
                return started.elapsed();
            }
        }
    });
    for s in [&mut a, &mut b] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(4)).await;
        assert!(closed, "an h2 connection without a request is closed");
    }
    let pinged = pinger.await.expect("pinger");
    assert!(pinged < Duration::from_secs(3), "PINGs do not keep a request-less h2 connection: {pinged:?}");
    assert!(started.elapsed() >= header - Duration::from_millis(200));
    wait_open_connections(&server, 0).await;
    server.stop().await;
}

#[tokio::test]
async fn an_h2_stream_that_stalls_mid_body_gets_408_while_other_streams_are_answered() {
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let server = start(opts).await;
    let tls = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, ChannelBody>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::from_static(b"{\"apiVersion\":")).await.expect("first chunk");
    let stalled_req = hyper::Request::post("https://localhost/validate?timeout=10s")
        .header("content-type", "application/json")
        .header("content-length", "4000")
        .body(ChannelBody(rx))
        .expect("request");
    let started = Instant::now();
    let stalled = tokio::spawn({
        let mut s = sender.clone();
        async move {
            let resp = s.send_request(stalled_req).await.expect("answered");
            (resp.status().as_u16(), started.elapsed())
        }
    });
    // Other streams on the same connection, during the stall and past the header timeout.
    for i in 0..10 {
        let (tx2, rx2) = tokio::sync::mpsc::channel(1);
        tx2.send(Bytes::from(fixture_bytes(CREATE))).await.expect("body");
        drop(tx2);
        let req = hyper::Request::post("https://localhost/mutate?timeout=10s")
            .header("content-type", "application/json")
            .body(ChannelBody(rx2))
            .expect("request");
        let t = Instant::now();
        let resp = sender.send_request(req).await.expect("another stream is answered");
        assert_eq!(resp.status(), 200, "stream {i}");
        assert!(t.elapsed() < Duration::from_millis(1000), "no head-of-line blocking: {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (status, took) = stalled.await.expect("stalled stream");
    assert_eq!(status, 408);
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_secs(4), "{took:?}");
    drop(tx);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_h2_connection_outlives_the_header_timeout() {
    let server = start(header_opts(Duration::from_secs(1))).await;
    let mut client = ApiserverClient::connect_h2(server.addr, &server.ca_pem).await;
    assert_eq!(client.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = client.post("/mutate", fixture_bytes(CREATE)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, hyper::Version::HTTP_2);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Connection limit and refusals
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_reviews_continue_refusals_are_503_and_the_gauge_returns_to_zero() {
    let opts = ServeOptions { max_connections: 4, header_timeout: Duration::from_secs(10), ..ServeOptions::default() };
    let server = start(opts).await;
    let mut normal = server.client().await;
    assert_eq!(normal.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    // Three more connections fill the limit and send nothing.
    let mut squatters = Vec::new();
    for _ in 0..3 {
        squatters.push(raw_tls(server.addr, &server.ca_pem).await);
    }
    wait_open_connections(&server, 4).await;
    // Ten over-limit connections, each a 503; reviews keep flowing meanwhile.
    for _ in 0..10 {
        let mut extra = raw_tls(server.addr, &server.ca_pem).await;
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
        assert!(closed);
        assert_eq!(status_of(&answer), Some(503), "{}", String::from_utf8_lossy(&answer));
        let reply = normal.post("/validate", fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
        assert_eq!(reply.status, 200);
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_connections_refused_total 10"), "{metrics}");
    assert!(metrics.contains("hallmark_open_connections 4"), "{metrics}");
    drop(squatters);
    drop(normal);
    wait_open_connections(&server, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_flood_is_bounded_and_the_server_recovers() {
    let opts = ServeOptions { max_connections: 1, ..ServeOptions::default() };
    let server = start(opts).await;
    let mut held = server.client().await;
    assert_eq!(held.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    // 100 TCP connections that never start TLS: 32 refusals wait for a handshake (2 s at
    // most), the rest are closed at once.
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        flood.push(tokio::spawn(async move {
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            (closed, started.elapsed())
        }));
    }
    // The held connection is served all along.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(held.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    }
    let mut closed_fast = 0;
    for f in flood {
        let (closed, at) = f.await.expect("flood reader");
        assert!(closed, "every flooding connection is closed");
        assert!(at < Duration::from_millis(3500), "within the refusal timeout: {at:?}");
        if at < Duration::from_millis(1000) {
            closed_fast += 1;
        }
    }
    assert!(
        (50..=68).contains(&closed_fast),
        "past 32 refusals in flight, connections are dropped at once: {closed_fast}"
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_connections_refused_total 100"), "{metrics}");
    // Refusal slots are free again: a proper client gets its 503.
    let mut extra = raw_tls(server.addr, &server.ca_pem).await;
    let (answer, _) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    assert_eq!(status_of(&answer), Some(503), "{}", String::from_utf8_lossy(&answer));
    drop(held);
    wait_open_connections(&server, 0).await;
    assert_still_serves(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Scale writes and their parents
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hanging_parent_read_is_bounded_and_blocks_no_other_stream() {
    let (api, reads) = api(Duration::from_secs(30), None);
    let (server, task) = scale_server(api, Duration::from_millis(800)).await;
    let mut h2 = ApiserverClient::connect_h2(server.addr, &server.ca_pem).await;
    let scale = {
        let mut c = ApiserverClient::connect_h2(server.addr, &server.ca_pem).await;
        tokio::spawn(async move {
            let t = Instant::now();
            let r = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await;
            (r.response(), t.elapsed())
        })
    };
    // Reviews on another connection and on the same kind of connection keep flowing.
    for _ in 0..5 {
        let t = Instant::now();
        let r = h2.post("/validate", fixture_bytes("deploy-web-update-csa-image-dev.json")).await;
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
    }
    let (response, took) = scale.await.expect("scale");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "bounded: {took:?}");
    assert_eq!(response["allowed"], true, "--on-error allow: {response}");
    let w = warnings_of(&response);
    assert!(w.len() == 1 && w[0].contains("was not read within 800 ms"), "{w:?}");
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    server.stop().await;
    task.abort();
}

#[tokio::test]
async fn hanging_parent_reads_on_one_h2_connection_do_not_block_its_other_streams() {
    let (api, _reads) = api(Duration::from_secs(30), None);
    let (server, task) = scale_server(api, Duration::from_millis(1500)).await;
    let tls = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    let post = |path: &'static str, body: Vec<u8>| {
        let mut s = sender.clone();
        async move {
            let req = hyper::Request::post(format!("https://localhost{path}?timeout=10s"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from(body)))
                .expect("req");
            let resp = s.send_request(req).await.expect("response");
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    let started = Instant::now();
    let hanging: Vec<_> = (0..5).map(|_| tokio::spawn(post("/validate", fixture_bytes(SCALE_VALIDATING)))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _) = post("/mutate", fixture_bytes(CREATE)).await;
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
    }
    for h in hanging {
        let (status, v) = h.await.expect("scale");
        assert_eq!(status, 200);
        assert_eq!(v["response"]["allowed"], true);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    server.stop().await;
    task.abort();
}

fn scale_review(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut r = fixture(SCALE_VALIDATING);
    edit(&mut r);
    body(&r)
}

#[tokio::test]
async fn scale_reviews_with_odd_shapes_are_answered_precisely() {
    let (api, reads) = api(Duration::ZERO, None);
    let (server, task) = scale_server(api, Duration::from_secs(2)).await;
    let mut c = server.client().await;

    // No name, no namespace: no read, answered as --on-error says.
    for field in ["name", "namespace"] {
        let r = scale_review(|r| {
            r["request"].as_object_mut().expect("req").remove(field);
        });
        let reply = c.post("/validate", r).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let response = reply.response();
        assert_eq!(response["allowed"], true, "{field}: {response}");
        let w = warnings_of(&response);
        assert!(w.len() == 1 && w[0].contains("names no namespace or name"), "{field}: {w:?}");
    }
    assert_eq!(reads.load(Ordering::SeqCst), 0, "nothing read for a review without a name");

    // A scale of something outside apps (a CRD with a scale subresource, an RC): no read.
    for (group, resource) in [("", "replicationcontrollers"), ("example.com", "deployments"), ("apps", "daemonsets")] {
        let r = scale_review(|r| {
            r["request"]["resource"] = json!({"group": group, "version": "v1", "resource": resource});
        });
        let reply = c.post("/validate", r).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(reads.load(Ordering::SeqCst), 0, "no read for non-apps parents");

    // Replicas that are not numbers: answered (judged, with the parent read), not a 500.
    for bad in [json!("5"), json!(null), json!(-1), json!(1e300), json!({"x": 1})] {
        let r = scale_review(|r| {
            r["request"]["object"]["spec"]["replicas"] = bad.clone();
        });
        let reply = c.post("/validate", r).await;
        assert_eq!(reply.status, 200, "{bad}: {}", reply.text());
        assert!(reply.response().get("allowed").is_some(), "{bad}");
    }
    server.stop().await;
    task.abort();
}

#[tokio::test]
async fn a_parent_with_malformed_managed_fields_is_answered_not_dropped() {
    let base = fixture(SCALE_PARENT)["request"]["oldObject"]["metadata"].clone();
    let variants = [
        json!("not a list"),
        json!([1, "x", null]),
        json!([{"manager": 7, "fieldsV1": "f:spec"}]),
        json!([{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {"f:spec": "not an object"}}]),
        json!([{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": null}}}]),
        json!([{"manager": "kustomize-controller", "operation": "Apply", "time": "not a time", "fieldsV1": {}}]),
    ];
    for mf in variants {
        let mut meta = base.clone();
        meta["managedFields"] = mf.clone();
        let (api, reads) = api(Duration::ZERO, Some(meta));
        let (server, task) = scale_server(api, Duration::from_secs(2)).await;
        let mut c = server.client().await;
        let reply = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await;
        assert_eq!(reply.status, 200, "{mf}: {}", reply.text());
        let response = reply.response();
        assert_eq!(response["uid"], fixture(SCALE_VALIDATING)["request"]["uid"], "{mf}");
        assert!(response.get("allowed").is_some(), "{mf}: {response}");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "{mf}");
        // The connection survives.
        assert_eq!(c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await.status, 200, "{mf}");
        server.stop().await;
        task.abort();
    }
}

#[tokio::test]
async fn parent_metadata_with_a_non_object_labels_or_annotations_is_judged() {
    let mut meta = fixture(SCALE_PARENT)["request"]["oldObject"]["metadata"].clone();
    meta["labels"] = json!(null);
    meta["annotations"] = json!({});
    let (api, _) = api(Duration::ZERO, Some(meta));
    let (server, task) = scale_server(api, Duration::from_secs(2)).await;
    let mut c = server.client().await;
    let response = c.post("/validate", fixture_bytes(SCALE_VALIDATING)).await.response();
    assert_eq!(response["allowed"], false, "still owned by Flux: {response}");
    server.stop().await;
    task.abort();
}

// ---------------------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------------------

/// The header clock takes HTTP/2 from ALPN, but hyper-util's auto builder picks the
/// protocol by sniffing the first bytes. A client that negotiates `h2` and then speaks
/// HTTP/1.1 gets an HTTP/1.1 connection whose clock is in "HTTP/2 mode": after its first
/// request the clock never re-arms, and the next head can be trickled (or stalled) for
/// hyper's 120 s idle timeout instead of the header timeout.
#[tokio::test]
async fn alpn_h2_speaking_http1_keeps_the_header_timeout() {
    let header = Duration::from_secs(1);
    let server = start(header_opts(header)).await;
    let mut tls = tls_with_alpn(server.addr, &server.ca_pem, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("HTTP/1.1 answer");
    assert_eq!(status, 200, "hyper served HTTP/1.1 on an h2-negotiated connection");
    // Start the next head and stall.
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
    tls.flush().await.expect("flush");
    let (_, closed) = read_until_closed(&mut tls, header * 4).await;
    assert!(closed, "a stalled head must be cut by the header timeout ({header:?}), like on an http/1.1 connection");
    server.stop().await;
}

/// The clock ignores bytes read while a request is being served ("in_request"). A client
/// that pipelines a complete request and the first half of the next head in one write
/// has that half read while request 1 is in flight: once request 1 is answered the clock
/// is disarmed with the partial head already buffered, no further byte arrives, and the
/// connection is held until hyper's 120 s header read timeout.
#[tokio::test]
#[ignore = "KNOWN LIMITATION: a partial head pipelined behind a request is bounded by the 120 s idle timeout, not the header timeout (the IO wrapper cannot see what hyper has buffered); kube-apiserver does not pipeline"]
async fn bug_a_partial_head_pipelined_behind_a_request_escapes_the_header_timeout() {
    let header = Duration::from_secs(1);
    let server = start(header_opts(header)).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let mut bytes = raw_request("/mutate", &fixture_bytes(CREATE));
    bytes.extend_from_slice(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n");
    tls.write_all(&bytes).await.expect("write");
    tls.flush().await.expect("flush");
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut tls, &mut buf, Duration::from_secs(5)).await.expect("first answer");
    assert_eq!(status, 200);
    let (_, closed) = read_until_closed(&mut tls, header * 4).await;
    assert!(closed, "the unfinished second head must be cut by the header timeout ({header:?})");
    server.stop().await;
}

/// Without ALPN, hyper-util's auto builder still serves HTTP/2 when the client opens with
/// the h2 preface ("prior knowledge"), but the clock is then in HTTP/1 mode: each finished
/// stream marks the connection as between requests, so the DATA frames of a stream that is
/// still in flight arm the header deadline, and the whole connection (every stream on it)
/// is cut `--header-timeout-seconds` later, well before the body timeout.
#[tokio::test]
async fn an_h2_prior_knowledge_connection_is_not_cut_during_a_slow_stream() {
    assert_eq!(
        slow_stream_after_a_quick_one(b"").await,
        Some(200),
        "the slow stream is answered, its connection not cut"
    );
}

#[tokio::test]
async fn with_alpn_h2_a_slow_stream_after_a_quick_one_is_answered() {
    assert_eq!(slow_stream_after_a_quick_one(b"h2").await, Some(200));
}

/// On an HTTP/2 connection (ALPN `alpn`, or none: prior knowledge), a quick stream
/// finishes while another sends its body over ~2.5 s (header timeout 1 s, body timeout
/// 10 s). Returns the slow stream's status, None if its connection failed.
async fn slow_stream_after_a_quick_one(alpn: &[u8]) -> Option<u16> {
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    let server = start(opts).await;
    let tls = tls_with_alpn(server.addr, &server.ca_pem, alpn).await;
    assert_eq!(tls.get_ref().1.alpn_protocol().unwrap_or_default(), alpn);
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, ChannelBody>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let body = fixture_bytes(CREATE);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let slow_req = hyper::Request::post("https://localhost/mutate?timeout=10s")
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(ChannelBody(rx))
        .expect("request");
    let slow = tokio::spawn({
        let mut s = sender.clone();
        async move { s.send_request(slow_req).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A quick stream finishes while the slow one is in flight.
    let (tx2, rx2) = tokio::sync::mpsc::channel(1);
    tx2.send(Bytes::from(body.clone())).await.expect("body");
    drop(tx2);
    let quick = hyper::Request::post("https://localhost/mutate?timeout=10s")
        .header("content-type", "application/json")
        .body(ChannelBody(rx2))
        .expect("request");
    assert_eq!(sender.send_request(quick).await.expect("quick stream").status(), 200);
    // The slow stream's body over ~2.5 s (within the 10 s body timeout).
    for chunk in body.chunks(body.len().div_ceil(10)) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let status = tokio::time::timeout(Duration::from_secs(5), slow).await.expect("in time").expect("task");
    server.stop().await;
    status.ok()
}

/// `ServeOptions::idle_timeout` says an idle keep-alive connection is closed after it;
/// hyper's `header_read_timeout` does that for HTTP/1.1, but nothing does it for HTTP/2
/// (hyper's HTTP/2 server has no idle timeout, and the header clock stops after the first
/// request). A client that makes one request and then answers PINGs holds its
/// `--max-connections` slot forever: 1024 such clients lock kube-apiserver out with 503s.
#[tokio::test]
async fn an_idle_h2_connection_is_closed_at_the_idle_timeout() {
    let opts = ServeOptions { idle_timeout: Duration::from_secs(2), max_connections: 1, ..ServeOptions::default() };
    let server = start(opts).await;
    let mut client = ApiserverClient::connect_h2(server.addr, &server.ca_pem).await;
    assert_eq!(client.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Past the idle timeout the slot must be free again.
    let mut next = raw_tls(server.addr, &server.ca_pem).await;
    next.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let mut buf = Vec::new();
    let answer = read_response(&mut next, &mut buf, Duration::from_secs(3)).await;
    assert_eq!(answer.map(|a| a.0), Some(200), "the idle h2 connection still holds the only slot (503)");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_at_the_idle_timeout_and_frees_its_slot() {
    let opts = ServeOptions { idle_timeout: Duration::from_secs(2), max_connections: 1, ..ServeOptions::default() };
    let server = start(opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    tls.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut tls, &mut buf, Duration::from_secs(3)).await.map(|a| a.0), Some(200));
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(4)).await;
    assert!(closed, "idle HTTP/1.1 connection closed");
    assert!(t.elapsed() >= Duration::from_millis(1800), "{:?}", t.elapsed());
    wait_open_connections(&server, 0).await;
    let mut next = raw_tls(server.addr, &server.ca_pem).await;
    next.write_all(&raw_request("/mutate", &fixture_bytes(CREATE))).await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut next, &mut buf, Duration::from_secs(3)).await.map(|a| a.0), Some(200));
    server.stop().await;
}

/// A client that pipelines requests and never reads the answers: once the socket buffers
/// fill, hyper blocks writing, stops reading, and none of the header, body or idle
/// timeouts applies. Returns `hallmark_open_connections` `wait` after the stall.
async fn open_connections_after_a_read_stall(wait: Duration) -> Option<i64> {
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let server = start(opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let chunk = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(1000);
    let mut written = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), tls.write_all(chunk.as_bytes())).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(_)) => break,
            Err(_) => break,
        }
        assert!(written < 512 * 1024 * 1024, "the server never stopped reading");
    }
    tokio::time::sleep(wait).await;
    let open = gauge(&server, "hallmark_open_connections").await;
    drop(tls);
    server.stop().await;
    open
}

/// Slow read: a client pipelines requests (here `GET /healthz`) and never reads the
/// answers. Once the socket buffers are full hyper blocks on the write and stops reading;
/// no timeout covers a stalled write (the header deadline and hyper's header read timeout
/// only run while a head is being read, the body timeout only while a body is), so the
/// connection and its `--max-connections` slot are held forever (observed: still open
/// 13 s later with header/body/idle timeouts of 1/1/2 s). 1024 such clients lock
/// kube-apiserver out.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_by_the_write_timeout() {
    let open = open_connections_after_a_read_stall(Duration::from_secs(6)).await;
    assert_eq!(open, Some(0), "the stalled connection must be closed by some timeout (here all are 1-2 s)");
}

/// The parent read builds its URL from the review's `name` and `namespace` without
/// escaping them (kube-core's `Request::get_metadata` formats `{url_path}/{name}`;
/// `Api::namespaced` formats the namespace into the path): a review naming
/// `../../../../api/v1/namespaces/kube-system/secrets/token` makes hallmark GET another
/// API path with its own credentials, and a `?` in the name adds query parameters. Not
/// reachable through kube-apiserver (it only sends names of stored objects), but anyone
/// who can reach the webhook port directly (no `--client-ca`) can steer hallmark's reads,
/// and the API's answer comes back in the warning. Fixed: src/server/parents.rs reads only
/// for a namespace and name Kubernetes would accept (RFC 1123), so none of these is read.
#[tokio::test]
async fn a_scale_review_name_cannot_steer_the_parent_read_to_another_api_path() {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move |uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(uri.to_string());
                (axum::http::StatusCode::NOT_FOUND, "not found")
            }
        }
    };
    let app = axum::Router::new().fallback(record);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("uri"))).expect("client");
    let policies =
        PolicySet { policies: parse_documents(PLATFORM_MANAGED_FIELDS_DENY, "policy.yaml").expect("valid policy") };
    let server = TestServer::start_with(Settings::default(), policies, ServeOptions::default()).await;
    server.state.set_parent_lookup(ParentLookup::new(client, Duration::from_secs(2)));
    let mut c = server.client().await;
    for (name, namespace) in [
        ("../../../../api/v1/namespaces/kube-system/secrets/token", "team-a"),
        ("web?watch=true&labelSelector=x", "team-a"),
        ("web", "../../../../api/v1/namespaces/kube-system/secrets/token#"),
    ] {
        let r = scale_review(|r| {
            r["request"]["name"] = json!(name);
            r["request"]["namespace"] = json!(namespace);
        });
        assert_eq!(c.post("/validate", r).await.status, 200);
    }
    let seen = seen.lock().expect("lock").clone();
    println!("the stand-in API was asked for: {seen:#?}");
    assert!(seen.is_empty(), "no read for names Kubernetes would not accept: {seen:?}");
    for uri in &seen {
        let path = uri.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        assert!(
            segments.len() == 7
                && segments[..4] == ["apis", "apps", "v1", "namespaces"]
                && !segments.contains(&"..")
                && !uri.contains('?'),
            "hallmark read outside the parent's URL: {uri}"
        );
    }
    server.stop().await;
    task.abort();
}
