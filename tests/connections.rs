//! Slow and stalled clients are cut off by the header timeout, while idle keep-alive
//! connections (which kube-apiserver reuses for up to 90 s) are not; connections past
//! `--max-connections` get a clear 503.

mod common;
mod support;

use common::*;
use hallmark::config::Settings;
use hallmark::policy::PolicySet;
use hallmark::server::serve::ServeOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;

const CREATE: &str = "deploy-web-create-csa-dev.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stalled_clients_are_closed_within_the_header_timeout_while_reviews_are_answered() {
    let header_timeout = Duration::from_secs(2);
    let opts = ServeOptions { header_timeout, ..ServeOptions::default() };
    let server = Arc::new(TestServer::start_with(Settings::default(), PolicySet::default(), opts).await);

    // Normal reviews on one keep-alive connection, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let normal = {
        let (server, stop, answered) = (server.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut client = server.client().await;
            while !stop.load(Ordering::SeqCst) {
                let reply = client.post("/mutate", fixture_bytes(CREATE)).await;
                assert_eq!(reply.status, 200);
                assert_eq!(reply.response()["allowed"], true);
                answered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Fifty connections that send a request line and one header, then stall.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut tls = raw_tls(server.addr, &server.ca_pem).await;
        tls.write_all(b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
        tls.flush().await.expect("flush");
        stalled.push((tls, Instant::now()));
    }
    let mut waits = Vec::new();
    for (mut tls, since) in stalled {
        let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(8)).await;
        assert!(closed, "a stalled connection is closed");
        assert!(answer.is_empty() || status_of(&answer).is_some_and(|s| s >= 400), "{answer:?}");
        waits.push(since.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    normal.await.expect("normal client");
    let slowest = waits.iter().max().copied().unwrap_or_default();
    let fastest = waits.iter().min().copied().unwrap_or_default();
    assert!(fastest >= header_timeout - Duration::from_millis(200), "not before the timeout: {fastest:?}");
    assert!(slowest <= header_timeout + Duration::from_millis(1500), "closed in time: {slowest:?}");
    let answered = answered.load(Ordering::SeqCst);
    assert!(answered >= 20, "normal reviews kept being answered: {answered}");
    println!(
        "50 stalled connections closed after {fastest:?}..{slowest:?} (header timeout {header_timeout:?}); {answered} reviews answered meanwhile"
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let opts = ServeOptions { header_timeout: Duration::from_secs(1), ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let mut client = server.client().await;
    assert_eq!(client.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    // Idle for longer than the header timeout: the connection is kept (the idle timeout
    // is 120 s), and the next review on it is answered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = client.post("/mutate", fixture_bytes(CREATE)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.response()["allowed"], true);
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_tls_connections_total 1"), "one connection for both: {metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_after_the_handshake_is_closed() {
    let opts = ServeOptions { header_timeout: Duration::from_secs(1), ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let mut tls = raw_tls(server.addr, &server.ca_pem).await;
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(6)).await;
    assert!(closed);
    assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_a_503_and_the_rest_keep_working() {
    let opts = ServeOptions { max_connections: 3, ..ServeOptions::default() };
    let server = TestServer::start_with(Settings::default(), PolicySet::default(), opts).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = server.client().await;
        assert_eq!(client.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
        held.push(client);
    }
    let mut extra = raw_tls(server.addr, &server.ca_pem).await;
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed, "the refused connection is closed");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), Some(503), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.contains("hallmark: too many connections (--max-connections 3); retry later"), "{text}");
    // The held connections keep being served.
    for client in &mut held {
        assert_eq!(client.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("hallmark_connections_refused_total 1"), "{metrics}");
    assert!(metrics.contains("hallmark_open_connections 3"), "{metrics}");
    // A closed connection frees its slot.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if server.metrics().await.contains("hallmark_open_connections 2") {
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection was released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = server.client().await;
    assert_eq!(again.post("/mutate", fixture_bytes(CREATE)).await.status, 200);
    server.stop().await;
}
