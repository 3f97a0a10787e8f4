//! Load benchmark: hallmark against its floor, driven the way kube-apiserver drives a webhook.
//!
//! Run it with ONE command (from the repository root):
//!
//! ```text
//! cargo bench --bench load
//! ```
//!
//! `cargo bench` builds the release `hallmark` binary for this benchmark; the benchmark
//! itself first runs `cargo build --release --example floor` (skip with
//! `HALLMARK_BENCH_NO_BUILD=1` when the floor is already built). It then:
//!
//! * writes a fresh CA + serving certificate (`hallmark::certs::generate`) and an
//!   `OwnershipPolicy` file into a temporary directory;
//! * starts `target/release/hallmark serve` and `target/release/examples/floor` on
//!   127.0.0.1 (distinct free ports), waits until both answer over TLS, and stops both at the
//!   end, also on a panic (a guard sends SIGTERM, then SIGKILL);
//! * drives each like kube-apiserver: HTTPS, ALPN `http/1.1`, CA-verified, no TLS session
//!   resumption, 25 keep-alive connections, `POST /mutate?timeout=10s` with
//!   kube-apiserver's headers, every request with a unique `request.uid`;
//! * runs, for each server, back to back (so that load from elsewhere on the machine hits
//!   both alike):
//!   - `open`: open loop at a fixed rate (default 1,000 req/s, 16 KB UPDATE). A pacer
//!     thread releases request *i* at `start + i/rate`, any idle connection takes it, and
//!     latency is measured from that intended send time, so a slow answer delays the
//!     requests behind it in the measurement too (no coordinated omission);
//!   - `sat`: closed-loop saturation, 25 connections as fast as they are answered, for a
//!     fixed time, for each body size and for `/validate`;
//!   - `hs`: a new TCP + TLS connection per request (full handshake, no resumption): handshakes/s;
//!   - `big`: the ~3 MiB UPDATE on one connection, sequentially, answer checked in depth;
//! * verifies every answer (HTTP 200, `response.uid` echoed, `allowed`, a base64 JSONPatch
//!   where hallmark must stamp) and counts every failure as an error;
//! * reads each server's CPU time from `/proc/<pid>/stat` (utime + stime) before and after
//!   every run (→ CPU µs per request), samples `VmRSS` every 10 ms, reads `VmHWM`;
//! * prints an aligned table, the hallmark/floor ratios and the targets with PASS/FAIL
//!   (never failing the process on them), and the same as JSON on stdout and in
//!   `<target dir>/bench-load.json`.
//!
//! Knobs (environment, or arguments after `--`, e.g. `cargo bench --bench load -- --rate 2000`):
//!
//! | env | argument | default | meaning |
//! |---|---|---|---|
//! | `LOAD_RATE` | `--rate` | 1000 | open-loop rate (req/s) |
//! | `LOAD_OPEN_SECS` | `--open-secs` | 15 | open-loop duration |
//! | `LOAD_OPEN_PATH` | `--open-path` | /mutate | open-loop endpoint |
//! | `LOAD_SAT_SECS` | `--sat-secs` | 5 | each saturation run |
//! | `LOAD_HS_SECS` | `--hs-secs` | 5 | the handshake run |
//! | `LOAD_BIG_N` | `--big-n` | 20 | 3 MiB requests per endpoint |
//! | `LOAD_CONNS` | `--conns` | 25 | keep-alive connections (and concurrent handshakes) |
//! | `LOAD_SERVERS` | `--servers` | hallmark,floor | which servers to measure |
//! | `LOAD_ONLY` | `--only` | open,sat,hs,big | which scenarios to run |
//! | `LOAD_ALT_BIN` | `--alt-bin` | – | another `hallmark` binary, run as server `alt` next to the others (A/B of a change; adds alt/hallmark ratios) |
//! | `LOAD_QUICK` | `--quick` | off | 1/5 of every duration (a smoke run) |
//!
//! The default run takes about two minutes. Only 127.0.0.1 is used.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::Body;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------------
// Configuration

#[derive(Clone, Debug)]
struct Config {
    rate: u64,
    open_secs: f64,
    open_path: String,
    sat_secs: f64,
    hs_secs: f64,
    big_n: usize,
    conns: usize,
    servers: Vec<String>,
    /// Scenarios to run: `open`, `sat`, `hs`, `big`.
    only: Vec<String>,
    /// Another `hallmark` binary, measured as server `alt` (an A/B of a change).
    alt_bin: Option<PathBuf>,
}

impl Config {
    fn load() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let get = |name: &str, env: &str| -> Option<String> {
            let flag = format!("--{name}");
            let mut it = args.iter();
            while let Some(a) = it.next() {
                if *a == flag {
                    return it.next().cloned().or(Some(String::new()));
                }
                if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                    return Some(v.to_owned());
                }
            }
            std::env::var(env).ok()
        };
        let num = |name: &str, env: &str, default: f64| -> f64 {
            get(name, env)
                .map(|v| v.parse().unwrap_or_else(|_| panic!("--{name}: not a number: {v:?}")))
                .unwrap_or(default)
        };
        let quick = args.iter().any(|a| a == "--quick") || std::env::var("LOAD_QUICK").is_ok_and(|v| v != "0");
        let scale = if quick { 0.2 } else { 1.0 };
        Config {
            rate: num("rate", "LOAD_RATE", 1000.0) as u64,
            open_secs: num("open-secs", "LOAD_OPEN_SECS", 15.0) * scale,
            open_path: get("open-path", "LOAD_OPEN_PATH").unwrap_or_else(|| "/mutate".to_owned()),
            sat_secs: num("sat-secs", "LOAD_SAT_SECS", 5.0) * scale,
            hs_secs: num("hs-secs", "LOAD_HS_SECS", 5.0) * scale,
            big_n: ((num("big-n", "LOAD_BIG_N", 20.0) * scale) as usize).max(3),
            conns: num("conns", "LOAD_CONNS", 25.0) as usize,
            alt_bin: get("alt-bin", "LOAD_ALT_BIN").map(PathBuf::from),
            only: get("only", "LOAD_ONLY")
                .unwrap_or_else(|| "open,sat,hs,big".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
            servers: get("servers", "LOAD_SERVERS")
                .unwrap_or_else(|| {
                    if std::env::var_os("LOAD_ALT_BIN").is_some() || args.iter().any(|a| a.starts_with("--alt-bin")) {
                        "hallmark,alt,floor".to_owned()
                    } else {
                        "hallmark,floor".to_owned()
                    }
                })
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc readings

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').split_whitespace().next()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples VmRSS of the servers every 10 ms, keeping the maximum since the last reset.
struct RssSampler {
    pids: Vec<u32>,
    max: Vec<AtomicU64>,
    stop: AtomicBool,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Arc<RssSampler> {
        let s = Arc::new(RssSampler {
            max: pids.iter().map(|_| AtomicU64::new(0)).collect(),
            pids,
            stop: AtomicBool::new(false),
        });
        let t = s.clone();
        std::thread::spawn(move || {
            while !t.stop.load(Ordering::Relaxed) {
                for (i, pid) in t.pids.iter().enumerate() {
                    t.max[i].fetch_max(status_kib(*pid, "VmRSS"), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        s
    }

    fn reset(&self, pid: u32) {
        if let Some(i) = self.pids.iter().position(|p| *p == pid) {
            self.max[i].store(status_kib(pid, "VmRSS"), Ordering::Relaxed);
        }
    }

    fn peak(&self, pid: u32) -> u64 {
        self.pids.iter().position(|p| *p == pid).map(|i| self.max[i].load(Ordering::Relaxed)).unwrap_or(0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Child processes

/// A server child process; stopped (SIGTERM, then SIGKILL) when dropped, also on panic.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(name: &'static str, program: &Path, args: &[String], addr: SocketAddr, dir: &Path) -> Server {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .env("HALLMARK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Server { name, child, addr, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("addr")
}

/// `<target>/release`, from this benchmark's own path (`<target>/release/deps/load-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/release").to_path_buf()
}

fn build_floor() {
    if std::env::var("HALLMARK_BENCH_NO_BUILD").is_ok_and(|v| v != "0") {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    eprintln!("load: cargo build --release --example floor");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--example", "floor", "--manifest-path"]).arg(&manifest);
    // Cargo runs this benchmark with its package's variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, ...). Build scripts such as ring's declare `rerun-if-env-changed` on
    // those, so passing them on would rebuild ring and everything above it here, and again
    // in the next `cargo bench`. Keep only the variables that configure cargo itself.
    let keep = ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_INCREMENTAL", "CARGO_TERM_", "CARGO_BUILD_", "CARGO_PROFILE_"];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && !keep.iter().any(|k| name.starts_with(k))) || name == "OUT_DIR" {
            cmd.env_remove(name.as_ref());
        }
    }
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "cargo build --release --example floor failed");
}

// ---------------------------------------------------------------------------------------
// The kube-apiserver-like client

fn connector(ca_pem: &str) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(hallmark::server::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // kube-apiserver pins HTTP/1.1 and does not resume TLS sessions.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("http1: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(format!("{path}?timeout=10s"))
        .header("host", "127.0.0.1")
        .header("user-agent", "kube-apiserver-admission")
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

async fn send(sender: &mut Sender, path: &str, body: Vec<u8>) -> Result<(u16, Bytes), String> {
    sender.ready().await.map_err(|e| format!("connection unusable: {e}"))?;
    let resp = sender.send_request(request(path, body)).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, body))
}

#[derive(serde::Deserialize)]
struct ReviewOut<'a> {
    #[serde(borrow)]
    response: ResponseOut<'a>,
}

#[derive(serde::Deserialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(rename = "patchType", default)]
    patch_type: Option<&'a str>,
    #[serde(default)]
    patch: Option<&'a str>,
}

/// Checks one answer: 200, the uid echoed, allowed, a JSONPatch when one is expected.
fn check(status: u16, body: &[u8], uid: &[u8; 36], expect_patch: bool) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
    }
    let out: ReviewOut = serde_json::from_slice(body).map_err(|e| format!("answer is not a review: {e}"))?;
    if out.response.uid.as_bytes() != uid {
        return Err(format!("uid {} not echoed", String::from_utf8_lossy(uid)));
    }
    if !out.response.allowed {
        return Err("not allowed".to_owned());
    }
    if expect_patch && (out.response.patch.is_none() || out.response.patch_type != Some("JSONPatch")) {
        return Err("no JSONPatch".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Runs

/// One target: a running server and what it is expected to answer.
#[derive(Clone)]
struct Target {
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
    /// hallmark patches on /mutate; the floor never does.
    stamps: bool,
    /// Tells the uids of this target's requests apart from the other's.
    run_id: u32,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    errors: u64,
    first_error: Option<String>,
    done: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally { hist: Some(Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram")), ..Tally::default() }
    }

    fn record(&mut self, micros: u64) {
        if let Some(h) = self.hist.as_mut() {
            h.saturating_record(micros.max(1));
        }
        self.done += 1;
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    fn merge(&mut self, other: Tally) {
        if let (Some(a), Some(b)) = (self.hist.as_mut(), other.hist.as_ref()) {
            a.add(b).expect("same bounds");
        }
        self.errors += other.errors;
        self.done += other.done;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// What one run measured.
struct RunResult {
    scenario: String,
    server: &'static str,
    body: &'static str,
    endpoint: String,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    server_cpu_us_per_req: f64,
    client_cpu_us_per_req: f64,
    /// CPU used by other processes during the run, in % of the whole machine.
    other_cpu_pct: f64,
    rss_peak_kib: u64,
    /// What the server could answer with every core to itself: cores × 1 s / CPU per request.
    capacity: f64,
}

impl RunResult {
    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario, "server": self.server, "body": self.body, "endpoint": self.endpoint,
            "requests": self.requests, "errors": self.errors, "first_error": self.first_error,
            "secs": round(self.secs, 3), "req_per_s": round(self.rate, 1),
            "p50_us": self.p50_us, "p99_us": self.p99_us, "p999_us": self.p999_us, "max_us": self.max_us,
            "server_cpu_us_per_req": round(self.server_cpu_us_per_req, 1),
            "client_cpu_us_per_req": round(self.client_cpu_us_per_req, 1),
            "other_cpu_pct": round(self.other_cpu_pct, 1), "rss_peak_kib": self.rss_peak_kib,
            "cpu_bound_capacity_req_per_s": round(self.capacity, 0),
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// CPU and RSS bookkeeping around one run.
struct Meter<'a> {
    pid: u32,
    ticks_server: u64,
    ticks_self: u64,
    machine: (u64, u64),
    sampler: &'a RssSampler,
    tck: u64,
}

impl<'a> Meter<'a> {
    fn start(pid: u32, sampler: &'a RssSampler, tck: u64) -> Meter<'a> {
        sampler.reset(pid);
        Meter {
            pid,
            ticks_server: cpu_ticks(pid),
            ticks_self: cpu_ticks(std::process::id()),
            machine: machine_ticks(),
            sampler,
            tck,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        scenario: &str,
        target: &Target,
        body: &'static str,
        endpoint: &str,
        tally: Tally,
        secs: f64,
    ) -> RunResult {
        let server = cpu_ticks(self.pid) - self.ticks_server;
        let client = cpu_ticks(std::process::id()) - self.ticks_self;
        let (busy, total) = machine_ticks();
        let busy = busy - self.machine.0;
        let total = (total - self.machine.1).max(1);
        let other = busy.saturating_sub(server + client);
        let to_us = |ticks: u64| ticks as f64 * 1e6 / self.tck as f64;
        let n = tally.done.max(1) as f64;
        let h = tally.hist.as_ref().expect("histogram");
        RunResult {
            scenario: scenario.to_owned(),
            server: target.name,
            body,
            endpoint: endpoint.to_owned(),
            requests: tally.done,
            errors: tally.errors,
            first_error: tally.first_error.clone(),
            secs,
            rate: tally.done as f64 / secs.max(1e-9),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            server_cpu_us_per_req: to_us(server) / n,
            client_cpu_us_per_req: to_us(client) / n,
            other_cpu_pct: other as f64 * 100.0 / total as f64,
            rss_peak_kib: self.sampler.peak(self.pid),
            capacity: cores() as f64 * 1e6 / (to_us(server) / n).max(1e-9),
        }
    }
}

async fn open_conns(target: &Target, tls: &TlsConnector, n: usize) -> Vec<Sender> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect(target.addr, tls).await.unwrap_or_else(|e| panic!("{}: {e}", target.name)));
    }
    conns
}

/// A few requests on every connection before measuring (the server's first requests
/// allocate its buffers; kube-apiserver's connections are long-lived).
async fn warm(target: &Target, conns: &mut [Sender], body: &Body, path: &str, counter: &AtomicU64) {
    for _ in 0..4 {
        for c in conns.iter_mut() {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let _ = send(c, path, body.with_uid(&common::uid(target.run_id, n))).await;
        }
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Open loop: request i is due at start + i/rate; latency counts from then.
async fn open_loop(
    target: &Target,
    tls: &TlsConnector,
    body: &Body,
    path: &str,
    cfg: &Config,
    sampler: &RssSampler,
    tck: u64,
) -> RunResult {
    let counter = Arc::new(AtomicU64::new(1 << 40));
    let mut conns = open_conns(target, tls, cfg.conns).await;
    warm(target, &mut conns, body, path, &counter).await;
    let total = (cfg.rate as f64 * cfg.open_secs).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1) as f64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let meter = Meter::start(target.pid, sampler, tck);
    let start = Instant::now() + Duration::from_millis(20);
    // The pacer: a plain thread, whose sleeps are precise to tens of microseconds (tokio's
    // timer has millisecond granularity, which would show up as latency).
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    let expect_patch = target.stamps && path == "/mutate" && body.mutate_patches;
    let mut workers = Vec::new();
    for mut sender in conns {
        let rx = rx.clone();
        let body = body.clone();
        let path = path.to_owned();
        let target = target.clone();
        let tls = tls.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                let uid = common::uid(target.run_id, i);
                match send(&mut sender, &path, body.with_uid(&uid)).await {
                    Ok((status, out)) => {
                        tally.record(us(due.elapsed()));
                        if let Err(e) = check(status, &out, &uid, expect_patch) {
                            tally.error(e);
                        }
                    }
                    Err(e) => {
                        tally.record(us(due.elapsed()));
                        tally.error(e);
                        if let Ok(s) = connect(target.addr, &tls).await {
                            sender = s;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::new();
    for w in workers {
        tally.merge(w.await.expect("worker"));
    }
    let _ = pacer.join();
    let secs = start.elapsed().as_secs_f64();
    meter.finish(&format!("open {} rps", cfg.rate), target, body.name, path, tally, secs)
}

/// Closed loop: every connection sends its next request as soon as it has the answer.
#[allow(clippy::too_many_arguments)]
async fn saturate(
    target: &Target,
    tls: &TlsConnector,
    body: &Body,
    path: &str,
    secs: f64,
    conns: usize,
    sampler: &RssSampler,
    tck: u64,
) -> RunResult {
    let counter = Arc::new(AtomicU64::new(2 << 40));
    let mut senders = open_conns(target, tls, conns).await;
    warm(target, &mut senders, body, path, &counter).await;
    let expect_patch = target.stamps && path == "/mutate" && body.mutate_patches;
    let meter = Meter::start(target.pid, sampler, tck);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for mut sender in senders {
        let body = body.clone();
        let path = path.to_owned();
        let target = target.clone();
        let counter = counter.clone();
        let tls = tls.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let uid = common::uid(target.run_id, counter.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                match send(&mut sender, &path, body.with_uid(&uid)).await {
                    Ok((status, out)) => {
                        tally.record(us(sent.elapsed()));
                        if let Err(e) = check(status, &out, &uid, expect_patch) {
                            tally.error(e);
                        }
                    }
                    Err(e) => {
                        tally.error(e);
                        if let Ok(s) = connect(target.addr, &tls).await {
                            sender = s;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::new();
    for w in workers {
        tally.merge(w.await.expect("worker"));
    }
    let secs = start.elapsed().as_secs_f64();
    meter.finish("saturation", target, body.name, path, tally, secs)
}

/// A new TCP + TLS connection (full handshake) for every request.
#[allow(clippy::too_many_arguments)]
async fn handshakes(
    target: &Target,
    tls: &TlsConnector,
    body: &Body,
    path: &str,
    secs: f64,
    concurrency: usize,
    sampler: &RssSampler,
    tck: u64,
) -> RunResult {
    let counter = Arc::new(AtomicU64::new(3 << 40));
    let expect_patch = target.stamps && path == "/mutate" && body.mutate_patches;
    let meter = Meter::start(target.pid, sampler, tck);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let body = body.clone();
        let path = path.to_owned();
        let target = target.clone();
        let counter = counter.clone();
        let tls = tls.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let uid = common::uid(target.run_id, counter.fetch_add(1, Ordering::Relaxed));
                let began = Instant::now();
                let result = match connect(target.addr, &tls).await {
                    Ok(mut sender) => send(&mut sender, &path, body.with_uid(&uid)).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok((status, out)) => {
                        tally.record(us(began.elapsed()));
                        if let Err(e) = check(status, &out, &uid, expect_patch) {
                            tally.error(e);
                        }
                    }
                    Err(e) => {
                        tally.error(e);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::new();
    for w in workers {
        tally.merge(w.await.expect("worker"));
    }
    let secs = start.elapsed().as_secs_f64();
    meter.finish("new conn/request", target, body.name, path, tally, secs)
}

/// The 3 MiB review, one at a time on one connection, its answer checked in depth: the
/// patch must decode and stamp the writer.
#[allow(clippy::too_many_arguments)]
async fn big(
    target: &Target,
    tls: &TlsConnector,
    body: &Body,
    path: &str,
    n: usize,
    sampler: &RssSampler,
    tck: u64,
) -> RunResult {
    let counter = AtomicU64::new(4 << 40);
    let mut senders = open_conns(target, tls, 1).await;
    warm(target, &mut senders[..], body, path, &counter).await;
    let mut sender = senders.pop().expect("one connection");
    let expect_patch = target.stamps && path == "/mutate" && body.mutate_patches;
    let meter = Meter::start(target.pid, sampler, tck);
    let mut tally = Tally::new();
    let start = Instant::now();
    for _ in 0..n {
        let uid = common::uid(target.run_id, counter.fetch_add(1, Ordering::Relaxed));
        let sent = Instant::now();
        match send(&mut sender, path, body.with_uid(&uid)).await {
            Ok((status, out)) => {
                tally.record(us(sent.elapsed()));
                if let Err(e) = check(status, &out, &uid, expect_patch).and_then(|()| deep_check(&out, expect_patch)) {
                    tally.error(e);
                }
            }
            Err(e) => {
                tally.error(e);
                if let Ok(s) = connect(target.addr, tls).await {
                    sender = s;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    meter.finish("3 MiB, sequential", target, body.name, path, tally, secs)
}

/// The stamp in the patch names the writer (`dev`) and the channel (`push`).
fn deep_check(out: &[u8], expect_patch: bool) -> Result<(), String> {
    let v: Value = serde_json::from_slice(out).map_err(|e| e.to_string())?;
    let patch = v["response"].get("patch").and_then(Value::as_str);
    if !expect_patch {
        return match patch {
            None => Ok(()),
            Some(_) => Err("unexpected patch".to_owned()),
        };
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.ok_or("no patch")?)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    let ops: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| format!("patch is not JSON: {e}"))?;
    let stamped = |key: &str, want: &str| {
        ops.iter().any(|op| {
            op["op"] == "add"
                && (op["path"] == format!("/metadata/annotations/hallmark.dev~1{key}") && op["value"] == want
                    || op["path"] == "/metadata/annotations" && op["value"][format!("hallmark.dev/{key}")] == want)
        })
    };
    if !stamped("applied-by", "dev") || !stamped("channel", "push") {
        return Err(format!("patch does not stamp applied-by=dev, channel=push: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    let header = [
        "scenario",
        "body",
        "endpoint",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "CPU µs/req",
        "capacity",
        "client µs/req",
        "other CPU%",
        "RSS peak MiB",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in results {
        rows.push(vec![
            r.scenario.clone(),
            r.body.to_owned(),
            r.endpoint.clone(),
            r.server.to_owned(),
            format!("{:.0}", r.rate),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            ms(r.max_us),
            r.errors.to_string(),
            format!("{:.1}", r.server_cpu_us_per_req),
            format!("{:.0}", r.capacity),
            format!("{:.1}", r.client_cpu_us_per_req),
            format!("{:.0}", r.other_cpu_pct),
            mib(r.rss_peak_kib),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = widths[c] - s.chars().count();
                if c < 4 { format!("{s}{}", " ".repeat(pad)) } else { format!("{}{s}", " ".repeat(pad)) }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            out.push('\n');
        }
    }
    out
}

/// Ratios of one server's figures to another's, run by run.
fn ratios(results: &[RunResult], num: &str, den: &str) -> (String, Vec<Value>) {
    let mut out = String::new();
    let mut js = Vec::new();
    let key = |r: &RunResult| format!("{} | {} {}", r.scenario, r.body, r.endpoint);
    let pairs: Vec<(&RunResult, &RunResult)> = results
        .iter()
        .filter(|r| r.server == num)
        .filter_map(|a| results.iter().find(|b| b.server == den && key(b) == key(a)).map(|b| (a, b)))
        .collect();
    if pairs.is_empty() {
        return (out, js);
    }
    let w = pairs.iter().map(|(a, _)| key(a).chars().count()).max().unwrap_or(10).max(20);
    let title = format!("{num} / {den}");
    out.push_str(&format!("{title:<w$}  {:>9}  {:>9}  {:>11}  {:>9}\n", "req/s", "p99", "CPU µs/req", "RSS peak"));
    let f2 = |x: Option<f64>| x.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "-".to_owned());
    for (a, b) in pairs {
        let r_rate = ratio(a.rate, b.rate);
        let r_p99 = ratio(a.p99_us as f64, b.p99_us as f64);
        let r_cpu = ratio(a.server_cpu_us_per_req, b.server_cpu_us_per_req);
        let r_rss = ratio(a.rss_peak_kib as f64, b.rss_peak_kib as f64);
        out.push_str(&format!(
            "{:<w$}  {:>9}  {:>9}  {:>11}  {:>9}\n",
            key(a),
            f2(r_rate),
            f2(r_p99),
            f2(r_cpu),
            f2(r_rss)
        ));
        js.push(json!({"run": key(a), "req_per_s": r_rate.map(|x| round(x, 3)), "p99": r_p99.map(|x| round(x, 3)),
                       "cpu_per_req": r_cpu.map(|x| round(x, 3)), "rss_peak": r_rss.map(|x| round(x, 3))}));
    }
    (out, js)
}

struct Check {
    what: String,
    value: String,
    pass: bool,
}

fn find<'a>(
    results: &'a [RunResult],
    server: &str,
    scenario: &str,
    body: &str,
    endpoint: &str,
) -> Option<&'a RunResult> {
    results
        .iter()
        .find(|r| r.server == server && r.scenario.starts_with(scenario) && r.body == body && r.endpoint == endpoint)
}

fn targets(results: &[RunResult], mem: &[(String, u64, u64, u64)], cfg: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(r) = find(results, "hallmark", "open", "update-16k", &cfg.open_path) {
        let rate_ok = r.rate >= cfg.rate as f64 * 0.97;
        checks.push(Check {
            what: format!("open loop {} rps, 16 KB UPDATE, {} conns: p99 < 1 ms", cfg.rate, cfg.conns),
            value: format!("{} ms", ms(r.p99_us)),
            pass: r.p99_us < 1000,
        });
        checks.push(Check {
            what: "  … p99.9 < 3 ms".to_owned(),
            value: format!("{} ms", ms(r.p999_us)),
            pass: r.p999_us < 3000,
        });
        checks.push(Check {
            what: "  … zero errors, rate held".to_owned(),
            value: format!("{} errors, {:.0} req/s", r.errors, r.rate),
            pass: r.errors == 0 && rate_ok,
        });
    }
    if let Some(h) = find(results, "hallmark", "saturation", "update-16k", "/mutate") {
        checks.push(Check {
            what: "saturation, 16 KB UPDATE /mutate: ≥ 8,000 req/s".to_owned(),
            value: format!("{:.0} req/s (CPU-bound capacity {:.0} req/s)", h.rate, h.capacity),
            pass: h.rate >= 8000.0 && h.errors == 0,
        });
        if let Some(f) = find(results, "floor", "saturation", "update-16k", "/mutate") {
            let r = h.server_cpu_us_per_req / f.server_cpu_us_per_req.max(1e-9);
            checks.push(Check {
                what: "  … CPU/request ≤ 1.3× floor".to_owned(),
                value: format!("{r:.2}× ({:.0} vs {:.0} µs)", h.server_cpu_us_per_req, f.server_cpu_us_per_req),
                pass: r <= 1.3,
            });
        }
    }
    if let Some(h) = find(results, "hallmark", "new conn", "update-16k", "/mutate") {
        checks.push(Check {
            what: "new connection per request: ≥ 1,500 handshakes/s".to_owned(),
            value: format!("{:.0} /s (CPU-bound capacity {:.0} /s)", h.rate, h.capacity),
            pass: h.rate >= 1500.0 && h.errors == 0,
        });
    }
    if let Some(h) = find(results, "hallmark", "3 MiB", "update-3mib", "/mutate") {
        checks.push(Check {
            what: "3 MiB review answered correctly in < 50 ms (every one)".to_owned(),
            value: format!("p50 {} ms, max {} ms, {} errors", ms(h.p50_us), ms(h.max_us), h.errors),
            pass: h.max_us < 50_000 && h.errors == 0,
        });
    }
    if let Some((_, idle, hwm, _)) = mem.iter().find(|m| m.0 == "hallmark") {
        checks.push(Check {
            what: "RSS idle < 30 MiB".to_owned(),
            value: format!("{} MiB", mib(*idle)),
            pass: *idle < 30 * 1024,
        });
        checks.push(Check {
            what: "RSS peak (VmHWM) < 80 MiB".to_owned(),
            value: format!("{} MiB", mib(*hwm)),
            pass: *hwm < 80 * 1024,
        });
    }
    checks
}

// ---------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (or `--all-targets`) runs this
    // binary without it: do not start a 90-second load run from a test command.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("load: skipped (no --bench argument); run it with `cargo bench --bench load`");
        return;
    }
    let cfg = Config::load();
    let tck = clock_ticks();
    let cores = cores();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load: {cfg:?}; {cores} cores, loadavg {}", loadavg.trim());

    build_floor();
    let dir = profile_dir();
    let hallmark_bin = PathBuf::from(env!("CARGO_BIN_EXE_hallmark"));
    let floor_bin = dir.join("examples").join("floor");
    let alt_bin = cfg.alt_bin.clone();
    for b in [&hallmark_bin, &floor_bin] {
        assert!(b.exists(), "{} is missing (cargo build --release --bin hallmark --example floor)", b.display());
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let bundle = hallmark::certs::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()], 2).expect("certs");
    let (cert, key, policy) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"), tmp.path().join("policy.yaml"));
    std::fs::write(&cert, &bundle.cert_pem).expect("write cert");
    std::fs::write(&key, &bundle.key_pem).expect("write key");
    std::fs::write(tmp.path().join("ca.crt"), &bundle.ca_pem).expect("write ca");
    std::fs::write(&policy, common::POLICY_YAML).expect("write policy");

    let bodies = common::all();
    let body = |name: &str| bodies.iter().find(|b| b.name == name).expect("body").clone();
    for b in &bodies {
        eprintln!("load: body {:<12} {:>9} bytes", b.name, b.len());
    }

    let mut servers: Vec<(Server, Target)> = Vec::new();
    for (i, name) in cfg.servers.iter().enumerate() {
        let (addr, maddr) = (free_addr(), free_addr());
        let tls_args = vec![
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ];
        let net_args = vec!["--listen".to_owned(), addr.to_string(), "--metrics-listen".to_owned(), maddr.to_string()];
        let (sname, program, args, stamps): (&'static str, &Path, Vec<String>, bool) = match name.as_str() {
            "hallmark" => {
                let mut a = vec!["serve".to_owned()];
                a.extend(tls_args);
                a.extend(net_args);
                a.extend([
                    "--policy".to_owned(),
                    policy.display().to_string(),
                    "--drain-seconds".to_owned(),
                    "0".to_owned(),
                ]);
                ("hallmark", &hallmark_bin, a, true)
            }
            "floor" => {
                let mut a = tls_args;
                a.extend(net_args);
                ("floor", &floor_bin, a, false)
            }
            "alt" => {
                let mut a = vec!["serve".to_owned()];
                a.extend(tls_args);
                a.extend(net_args);
                a.extend([
                    "--policy".to_owned(),
                    policy.display().to_string(),
                    "--drain-seconds".to_owned(),
                    "0".to_owned(),
                ]);
                ("alt", alt_bin.as_deref().expect("--servers alt needs LOAD_ALT_BIN / --alt-bin"), a, true)
            }
            other => panic!("unknown server {other:?} (hallmark, floor, alt)"),
        };
        let server = Server::start(sname, program, &args, addr, tmp.path());
        let target = Target { name: sname, pid: server.pid(), addr, stamps, run_id: 0x4a11_0000 + i as u32 };
        eprintln!("load: started {sname} (pid {}) on {addr}", server.pid());
        servers.push((server, target));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tls = connector(&bundle.ca_pem);

    // Readiness: every server answers a review over TLS.
    runtime.block_on(async {
        for (server, target) in servers.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("{} exited ({status}) during start-up:\n{}", server.name, server.log_tail());
                }
                if let Ok(mut s) = connect(server.addr, &tls).await {
                    let b = body("create-6k");
                    let uid = common::uid(target.run_id, 0);
                    if let Ok((200, out)) = send(&mut s, "/mutate", b.with_uid(&uid)).await {
                        check(200, &out, &uid, target.stamps).unwrap_or_else(|e| panic!("{}: {e}", server.name));
                        // The policy is in force: a write to a Git-owned field is denied.
                        let owned = common::update_16k_owned_change();
                        let uid = common::uid(target.run_id, 1);
                        let (status, out) = send(&mut s, "/validate", owned.with_uid(&uid)).await.expect("validate");
                        let v: Value = serde_json::from_slice(&out).expect("validate answer");
                        assert!(
                            status == 200 && v["response"]["allowed"] == json!(!target.stamps),
                            "{}: /validate of a change to a Git-owned field answered {status} {v}: is the policy loaded?",
                            server.name
                        );
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "{} did not become ready:\n{}", server.name, server.log_tail());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let idle: Vec<(String, u64)> =
        servers.iter().map(|(s, _)| (s.name.to_owned(), status_kib(s.pid(), "VmRSS"))).collect();
    let sampler = RssSampler::start(servers.iter().map(|(s, _)| s.pid()).collect());
    let targets_list: Vec<Target> = servers.iter().map(|(_, t)| t.clone()).collect();

    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    let progress = |r: RunResult, results: &mut Vec<RunResult>| {
        eprintln!(
            "load: {:<18} {:<11} {:<9} {:<8} {:>7.0} req/s  p50 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  errors {}{}  CPU {:.1} µs/req  (other CPU {:.0}%)",
            r.scenario,
            r.body,
            r.endpoint,
            r.server,
            r.rate,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            r.errors,
            r.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
            r.server_cpu_us_per_req,
            r.other_cpu_pct
        );
        results.push(r);
    };
    runtime.block_on(async {
        let b16 = body("update-16k");
        let run = |name: &str| cfg.only.iter().any(|o| o == name);
        if run("open") {
            for t in &targets_list {
                let r = open_loop(t, &tls, &b16, &cfg.open_path, &cfg, &sampler, tck).await;
                progress(r, &mut results);
            }
        }
        if run("sat") {
            for (b, path) in [
                ("update-16k", "/mutate"),
                ("update-16k", "/validate"),
                ("create-6k", "/mutate"),
                ("update-64k", "/mutate"),
            ] {
                for t in &targets_list {
                    let r = saturate(t, &tls, &body(b), path, cfg.sat_secs, cfg.conns, &sampler, tck).await;
                    progress(r, &mut results);
                }
            }
        }
        if run("hs") {
            for t in &targets_list {
                let r = handshakes(t, &tls, &b16, "/mutate", cfg.hs_secs, cfg.conns, &sampler, tck).await;
                progress(r, &mut results);
            }
        }
        if run("big") {
            let b3 = body("update-3mib");
            for path in ["/mutate", "/validate"] {
                for t in &targets_list {
                    let r = big(t, &tls, &b3, path, cfg.big_n, &sampler, tck).await;
                    progress(r, &mut results);
                }
            }
        }
    });
    drop(runtime);
    // RSS once the load is over and the connections are closed.
    std::thread::sleep(Duration::from_secs(1));
    let mem: Vec<(String, u64, u64, u64)> = servers
        .iter()
        .map(|(s, _)| {
            let idle = idle.iter().find(|(n, _)| n == s.name).map(|(_, k)| *k).unwrap_or(0);
            (s.name.to_owned(), idle, status_kib(s.pid(), "VmHWM"), status_kib(s.pid(), "VmRSS"))
        })
        .collect();
    for (server, _) in servers.iter_mut() {
        if let Ok(Some(status)) = server.child.try_wait() {
            eprintln!("load: WARNING: {} exited during the run ({status}):\n{}", server.name, server.log_tail());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(sampler);
    drop(servers);

    // ---- report
    let mut text = String::new();
    text.push_str(&format!(
        "\nhallmark load benchmark — {cores} cores, loadavg at start {}, measured in {elapsed:.0} s\n\n",
        loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    text.push_str(&table(&results));
    text.push('\n');
    text.push_str(&format!("{:<10}  {:>9}  {:>15}  {:>9}\n", "memory", "idle MiB", "peak (HWM) MiB", "after MiB"));
    for (name, idle, hwm, after) in &mem {
        text.push_str(&format!("{name:<10}  {:>9}  {:>15}  {:>9}\n", mib(*idle), mib(*hwm), mib(*after)));
    }
    text.push('\n');
    let (ratio_text, ratio_json) = ratios(&results, "hallmark", "floor");
    text.push_str(&ratio_text);
    text.push('\n');
    let (alt_text, alt_json) = ratios(&results, "alt", "hallmark");
    if !alt_json.is_empty() {
        text.push_str(&alt_text);
        text.push('\n');
    }
    let checks = targets(&results, &mem, &cfg);
    let w = checks.iter().map(|c| c.what.chars().count()).max().unwrap_or(10);
    text.push_str("targets (reported, never fatal)\n");
    for c in &checks {
        let pad = w - c.what.chars().count();
        text.push_str(&format!(
            "  {}{}  {:<4}  {}\n",
            c.what,
            " ".repeat(pad),
            if c.pass { "PASS" } else { "FAIL" },
            c.value
        ));
    }
    text.push_str(
        "\nlatency: open loop from the intended send time; saturation/3 MiB from the send; new conn from connect().\n\
         CPU µs/req: server utime+stime over the run / requests answered; capacity: cores × 1 s / that, the req/s the \
         server could answer with the machine to itself.\nclient µs/req: this load generator (it shares the cores). \
         other CPU%: everything else on the machine during the run, in % of all cores (contention).\n",
    );
    println!("{text}");

    let report = json!({
        "machine": {"cores": cores, "loadavg_at_start": loadavg.trim(), "clock_ticks_per_s": tck},
        "config": {"rate": cfg.rate, "open_secs": cfg.open_secs, "open_path": cfg.open_path, "sat_secs": cfg.sat_secs,
                   "hs_secs": cfg.hs_secs, "big_n": cfg.big_n, "conns": cfg.conns},
        "bodies": bodies.iter().map(|b| json!({"name": b.name, "bytes": b.len()})).collect::<Vec<_>>(),
        "runs": results.iter().map(RunResult::json).collect::<Vec<_>>(),
        "memory": mem.iter().map(|(n, i, h, a)| json!({"server": n, "idle_kib": i, "peak_hwm_kib": h, "after_kib": a}))
            .collect::<Vec<_>>(),
        "ratios_hallmark_over_floor": ratio_json,
        "ratios_alt_over_hallmark": alt_json,
        "targets": checks.iter().map(|c| json!({"target": c.what.trim_start_matches("  … "), "value": c.value, "pass": c.pass}))
            .collect::<Vec<_>>(),
    });
    let pretty = serde_json::to_string_pretty(&report).expect("json");
    println!("{pretty}");
    let out = dir.parent().map(|t| t.join("bench-load.json")).unwrap_or_else(|| PathBuf::from("bench-load.json"));
    match std::fs::write(&out, &pretty) {
        Ok(()) => eprintln!("load: wrote {}", out.display()),
        Err(e) => eprintln!("load: cannot write {}: {e}", out.display()),
    }
}
