//! Load benchmark: the simulator and the proxy as separate processes, driven over loopback by
//! many keep-alive connections, straight at the simulator and through the proxy in one run.
//!
//! `cargo bench --bench load` runs three scenarios (`BENCH_SCENARIOS=throughput,cache,budget`):
//!
//! - **throughput**: the simulator answering with zero latency and an unlimited budget;
//!   requests/s, p50 and p99, direct and through the proxy, and the ratio
//!   (`BENCH_CONNECTIONS`, default 64; `BENCH_SECONDS`, default 10; `BENCH_PATH`;
//!   `BENCH_LOG_LEVEL`, default info).
//! - **cache**: the same load, the proxy answering from its cache (every call a hit) against
//!   the simulator answering with zero latency;
//! - **budget**: a store allowing 300 calls per 6 s and an app asking as fast as 16
//!   connections go for 15 s over 20 products; how many of the app's GETs get a 200 and how
//!   many a 509, direct and through the proxy (whose budget is the store's), cache off and on.
//! - **writes**: the budget scenario with writes mixed in: a store allowing 300 calls per 6 s,
//!   an app asking five times that (250 calls/s for 30 s, paced) over 20 hot products, one PUT
//!   per 20 GETs; store calls per 100 app calls, the share of GETs answered 200, and the calls'
//!   time p50/p99 (`BENCH_BASELINE_BIN` runs an older build first, in the same run).
//! - **hardening** (not in the default set): the proxy's memory (RSS) under attack: an endless
//!   cacheable answer read fast and read not at all, 2,000 idle h2 connections, 100 uploads
//!   that trickle.
//!
//! - **cluster** (not in the default set; needs Redis, `BENCH_REDIS`): a budget decision
//!   through Redis against one in memory, the budget scenario with three proxies sharing one
//!   Redis against three alone, the hit path with the cluster on and off, and how soon a
//!   write through one proxy reaches another (see `load/cluster.rs`).
//!
//! - **speed** (not in the default set): the cache hit beside a bare hyper server and nginx
//!   `proxy_cache` (when installed) in one run, miss and pass-through against direct calls, the
//!   cost curves (entries cached, connections, budget decisions by limit) and memory with a
//!   full cache and 2,000 idle connections (see `load/speed.rs`; wrk drives it when installed).
//!
//! `BENCH_PROXY_BIN=path/to/bcproxy` measures another build of the proxy against the same
//! simulator (to compare commits).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/speed.rs"]
mod speed;

const BIN: &str = env!("CARGO_BIN_EXE_bcproxy");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

async fn wait_for(addr: SocketAddr) -> bool {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn sim_auth() -> HeaderValue {
    let raw = format!(
        "{}:{}",
        bcproxy::sim::DEFAULT_USERNAME,
        bcproxy::sim::DEFAULT_API_KEY
    );
    HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .expect("auth")
}

/// What one run saw.
#[derive(Default)]
struct Run {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Drives `connections` keep-alive HTTP/1.1 connections at `addr` for `seconds`, cycling
/// through `paths`; the first `warmup` is not counted.
async fn drive(
    addr: SocketAddr,
    paths: &[String],
    auth: Option<HeaderValue>,
    connections: usize,
    seconds: f64,
    warmup: Duration,
) -> Run {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let warmup_end = started + warmup;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let paths = paths.to_vec();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let Ok(stream) = TcpStream::connect(addr).await else {
                run.errors += 1;
                return run;
            };
            stream.set_nodelay(true).ok();
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                run.errors += 1;
                return run;
            };
            tokio::spawn(conn);
            let mut i = c;
            while Instant::now() < deadline {
                let path = &paths[i % paths.len()];
                i += 1;
                let mut req = Request::get(path.as_str()).header("host", addr.to_string());
                if let Some(auth) = &auth {
                    req = req.header("authorization", auth.clone());
                }
                let req = req.body(Empty::<Bytes>::new()).expect("request");
                let sent = Instant::now();
                let status = match sender.send_request(req).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.into_body().collect().await.ok().map(|_| status)
                    }
                    Err(_) => None,
                };
                if sent >= warmup_end {
                    match status {
                        Some(status) => {
                            *run.statuses.entry(status).or_default() += 1;
                            if status == 200 {
                                run.latencies_us.push(sent.elapsed().as_micros() as u64);
                            }
                        }
                        None => run.errors += 1,
                    }
                }
                if status.is_none() {
                    break;
                }
            }
            run
        }));
    }
    let mut total = Run {
        seconds: seconds - warmup.as_secs_f64(),
        ..Run::default()
    };
    for task in tasks {
        let run = task.await.expect("task");
        for (status, n) in run.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.errors += run.errors;
        total.latencies_us.extend(run.latencies_us);
    }
    total.latencies_us.sort_unstable();
    total
}

fn spawn(args: &[&str], envs: &[(&str, String)]) -> Child {
    spawn_to(args, envs, None)
}

/// Starts this build (or `BENCH_PROXY_BIN` for a proxy), its stdout into `log` when given.
fn spawn_to(args: &[&str], envs: &[(&str, String)], log: Option<&std::path::Path>) -> Child {
    // `BENCH_PROXY_BIN` runs another build of the proxy (an A/B against an older commit); the
    // simulator is always this one.
    let bin = match std::env::var("BENCH_PROXY_BIN") {
        Ok(other) if args.first() != Some(&"sim") => other,
        _ => BIN.to_string(),
    };
    spawn_bin_to(&bin, args, envs, log)
}

fn spawn_bin_to(
    bin: &str,
    args: &[&str],
    envs: &[(&str, String)],
    log: Option<&std::path::Path>,
) -> Child {
    let stdout = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("the log file")),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn bcproxy")
}

/// A process of ours listening at `addr`, and its config file.
struct Process {
    child: Child,
    addr: SocketAddr,
    config: Option<PathBuf>,
}

impl Process {
    async fn sim(args: &[&str]) -> Process {
        let addr = free_port();
        let mut all = vec!["sim", "--listen"];
        let addr_text = addr.to_string();
        all.push(&addr_text);
        all.extend_from_slice(args);
        let child = spawn(&all, &[]);
        assert!(wait_for(addr).await, "the simulator did not start");
        Process {
            child,
            addr,
            config: None,
        }
    }

    async fn proxy(sim: SocketAddr, extra: &str) -> Process {
        Process::proxy_bin(None, sim, extra, None).await
    }

    /// A proxy of build `bin` (this one when `None`, or `BENCH_PROXY_BIN`), its access log
    /// into `log` when given (else nowhere); no admin listener unless `extra` has one.
    async fn proxy_bin(
        bin: Option<&str>,
        sim: SocketAddr,
        extra: &str,
        log: Option<&std::path::Path>,
    ) -> Process {
        let addr = free_port();
        let config = std::env::temp_dir().join(format!(
            "bcproxy-bench-{}-{}.toml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &config,
            format!(
                "[listen]\naddr = \"{addr}\"\n[upstream]\nurl = \"http://{sim}\"\nusername = \"{}\"\n{extra}\n{}[log]\nlevel = \"{}\"\n",
                bcproxy::sim::DEFAULT_USERNAME,
                if extra.contains("[admin]") { "" } else { "[admin]\naddr = \"\"\n" },
                env_or("BENCH_LOG_LEVEL", "info".to_string()),
            ),
        )
        .expect("write config");
        let args = ["run", "--config", &config.display().to_string()];
        let key = [(
            "BCPROXY__UPSTREAM__API_KEY",
            bcproxy::sim::DEFAULT_API_KEY.to_string(),
        )];
        let mut child = match bin {
            Some(bin) => spawn_bin_to(bin, &args, &key, log),
            None => spawn_to(&args, &key, log),
        };
        if !wait_for(addr).await {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.take() {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    err.push_str(&l);
                }
            }
            panic!("the proxy did not start: {err}");
        }
        Process {
            child,
            addr,
            config: Some(config),
        }
    }

    async fn peak_rss_mib(&self) -> Option<f64> {
        self.rss_mib("VmHWM:").await
    }

    async fn rss_mib(&self, field: &str) -> Option<f64> {
        let pid = self.child.id()?;
        let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
            .await
            .ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        if let Some(config) = self.config.take() {
            let _ = std::fs::remove_file(config);
        }
    }
}

/// The simulator's count of 509s it sent, from its control API.
async fn sim_throttled(sim: SocketAddr) -> u64 {
    sim_stats(sim).await["throttled"].as_u64().unwrap_or(0)
}

async fn throughput() {
    let connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let seconds: f64 = env_or("BENCH_SECONDS", 10.0);
    let path: String = env_or("BENCH_PATH", "/api/v2/products/1".to_string());
    let sim = Process::sim(&["--limit", "100000000"]).await;
    let proxy = Process::proxy(
        sim.addr,
        &format!(
            "max_concurrency = {connections}\n[budget]\nlimit = 100000000\n[cache]\nenabled = false"
        ),
    )
    .await;

    println!(
        "throughput: {connections} keep-alive connections, {seconds}s per run, GET {path}, simulator latency 0"
    );
    let paths = [path];
    let warmup = Duration::from_millis(500);
    let direct = drive(
        sim.addr,
        &paths,
        Some(sim_auth()),
        connections,
        seconds,
        warmup,
    )
    .await;
    let proxied = drive(proxy.addr, &paths, None, connections, seconds, warmup).await;
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>8}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, run) in [("direct", &direct), ("via proxy", &proxied)] {
        println!(
            "{name:<12} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            run.rps(),
            run.percentile(0.50),
            run.percentile(0.99),
            run.errors
                + run
                    .statuses
                    .iter()
                    .filter(|(s, _)| **s != 200)
                    .map(|(_, n)| n)
                    .sum::<u64>()
        );
    }
    println!(
        "ratio proxy/direct: throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
        proxied.rps() / direct.rps(),
        proxied.percentile(0.50) / direct.percentile(0.50),
        proxied.percentile(0.99) / direct.percentile(0.99)
    );
    if let Some(rss) = proxy.peak_rss_mib().await {
        println!("proxy peak RSS: {rss:.1} MiB");
    }
    proxy.stop().await;
    sim.stop().await;
}

async fn budget() {
    let (limit, window, seconds, connections) = (300, "6s", 15.0, 16);
    let paths: Vec<String> = (1..=20).map(|i| format!("/api/v2/products/{i}")).collect();
    println!(
        "\nbudget: the store allows {limit} calls per {window}; the app asks as fast as {connections} connections go, for {seconds}s, over {} products",
        paths.len()
    );
    println!(
        "{:<24} {:>10} {:>12} {:>12}",
        "", "app 200s", "app 509s", "store 509s"
    );
    let limit_text = limit.to_string();
    let sim = Process::sim(&["--limit", &limit_text, "--window", window]).await;
    let direct = drive(
        sim.addr,
        &paths,
        Some(sim_auth()),
        connections,
        seconds,
        Duration::ZERO,
    )
    .await;
    let store = sim_throttled(sim.addr).await;
    println!(
        "{:<24} {:>10} {:>12} {:>12}",
        "direct",
        direct.ok(),
        direct.statuses.get(&509).copied().unwrap_or(0),
        store
    );
    sim.stop().await;

    for (name, cache) in [
        ("via proxy, cache off", "false"),
        ("via proxy, cache on", "true"),
    ] {
        let sim = Process::sim(&["--limit", &limit_text, "--window", window]).await;
        let proxy = Process::proxy(
            sim.addr,
            &format!("[budget]\nlimit = {limit}\nwindow = \"{window}\"\nmax_wait = \"1s\"\nreserve_writes = 0\n[cache]\nenabled = {cache}"),
        )
        .await;
        let run = drive(
            proxy.addr,
            &paths,
            None,
            connections,
            seconds,
            Duration::ZERO,
        )
        .await;
        let store = sim_throttled(sim.addr).await;
        println!(
            "{name:<24} {:>10} {:>12} {:>12}",
            run.ok(),
            run.statuses.get(&509).copied().unwrap_or(0),
            store
        );
        proxy.stop().await;
        sim.stop().await;
    }
}

async fn cache() {
    let connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let seconds: f64 = env_or("BENCH_SECONDS", 10.0);
    let path: String = env_or("BENCH_PATH", "/api/v2/products/1".to_string());
    let sim = Process::sim(&["--limit", "100000000"]).await;
    let proxy = Process::proxy(
        sim.addr,
        "[budget]\nlimit = 100000000\n[cache]\nenabled = true\nttl = \"10m\"",
    )
    .await;
    let paths = [path.clone()];
    // One miss fills the entry; every call after it is a hit.
    drive(proxy.addr, &paths, None, 1, 0.2, Duration::ZERO).await;

    println!(
        "\ncache: {connections} keep-alive connections, {seconds}s per run, GET {path}: the simulator answering (zero latency) vs the proxy answering from its cache"
    );
    let warmup = Duration::from_millis(500);
    let direct = drive(
        sim.addr,
        &paths,
        Some(sim_auth()),
        connections,
        seconds,
        warmup,
    )
    .await;
    let hits = drive(proxy.addr, &paths, None, connections, seconds, warmup).await;
    println!(
        "{:<16} {:>12} {:>10} {:>10}",
        "", "requests/s", "p50 ms", "p99 ms"
    );
    for (name, run) in [("sim direct", &direct), ("proxy cache hit", &hits)] {
        println!(
            "{name:<16} {:>12.0} {:>10.3} {:>10.3}",
            run.rps(),
            run.percentile(0.50),
            run.percentile(0.99)
        );
    }
    println!(
        "ratio hit/direct: throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
        hits.rps() / direct.rps(),
        hits.percentile(0.50) / direct.percentile(0.50),
        hits.percentile(0.99) / direct.percentile(0.99)
    );
    proxy.stop().await;
    sim.stop().await;
}

/// The simulator's stats, from its control API.
async fn sim_stats(sim: SocketAddr) -> serde_json::Value {
    let stream = TcpStream::connect(sim).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/__sim/stats?log=false")
        .header("host", sim.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let body = sender
        .send_request(req)
        .await
        .expect("stats")
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&body).expect("json")
}

/// `BENCH_BASELINE_BIN=path/to/older/bcproxy` runs the writes scenario against that build
/// first, then this one, in the same run.
async fn writes() {
    let (limit, window, seconds, rate) = (300u64, "6s", 30u64, 250u64);
    println!(
        "\nwrites: the store allows {limit} calls per {window}; the app asks {rate} calls/s for {seconds}s (five times that) over 20 products, one PUT per 20 GETs"
    );
    println!(
        "{:<28} {:>14} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "", "store/100 app", "GETs 200", "PUTs 2xx", "p50 ms", "p99 ms", "store 509s"
    );
    let baseline = std::env::var("BENCH_BASELINE_BIN").ok();
    let mut builds: Vec<(String, Option<String>)> = Vec::new();
    if let Some(bin) = baseline {
        builds.push(("baseline".into(), Some(bin)));
    }
    builds.push(("this build".into(), None));
    for (name, bin) in builds {
        writes_with(&name, bin.as_deref(), limit, window, seconds, rate).await;
    }
}

async fn writes_with(
    name: &str,
    bin: Option<&str>,
    limit: u64,
    window: &str,
    seconds: u64,
    rate: u64,
) {
    use http_body_util::Full;
    let limit_text = limit.to_string();
    let sim = Process::sim(&["--limit", &limit_text, "--window", window]).await;
    let proxy = Process::proxy_bin(
        bin,
        sim.addr,
        &format!(
            "[budget]\nlimit = {limit}\nwindow = \"{window}\"\nmax_wait = \"2s\"\nreserve_writes = 10\n[cache]\nenabled = true\nttl = \"60s\""
        ),
        None,
    )
    .await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut calls = Vec::new();
    for n in 0..seconds * rate {
        tick.tick().await;
        let client = client.clone();
        let product = (n * 7919) % 20 + 1;
        let write = n % 21 == 20;
        let url = format!("http://{}/api/v2/products/{product}", proxy.addr);
        calls.push(tokio::spawn(async move {
            let req = if write {
                Request::put(url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        "{{\"name\":\"Product {product} v{n}\"}}"
                    ))))
            } else {
                Request::get(url).body(Full::new(Bytes::new()))
            }
            .expect("request");
            let sent = Instant::now();
            let status = match client.request(req).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            (write, status, sent.elapsed())
        }));
    }
    let (mut gets, mut gets_ok, mut puts, mut puts_ok, mut late) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut times = Vec::new();
    for call in calls {
        let (write, status, took) = call.await.expect("call");
        if write {
            puts += 1;
            puts_ok += u64::from((200..300).contains(&status));
        } else {
            gets += 1;
            gets_ok += u64::from(status == 200);
        }
        late += u64::from(took > Duration::from_millis(2500));
        times.push(took.as_micros() as u64);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let stats = sim_stats(sim.addr).await;
    let store_calls = stats["calls"].as_u64().unwrap_or(0);
    let app_calls = gets + puts;
    println!(
        "{name:<28} {:>14.1} {:>9.1}% {:>9.1}% {:>10.1} {:>10.1} {:>12}",
        store_calls as f64 * 100.0 / app_calls as f64,
        gets_ok as f64 * 100.0 / gets as f64,
        puts_ok as f64 * 100.0 / puts.max(1) as f64,
        pct(0.5),
        pct(0.99),
        stats["throttled"].as_u64().unwrap_or(0),
    );
    println!(
        "  ({app_calls} app calls, {store_calls} store calls, {late} answered after max_wait + 0.5 s)"
    );
    proxy.stop().await;
    sim.stop().await;
}

/// A store whose answer never ends: a chunked 200 of 64 KiB chunks, for every request.
async fn endless_store() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.ok() != Some(1) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while tcp.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    addr
}

/// Reads up to `bytes` of a GET's answer (all of it when 0 is given for `pause`), or reads
/// `bytes` and then holds the connection without reading for `pause`.
async fn read_answer(addr: SocketAddr, path: &str, bytes: u64, pause: Duration) -> u64 {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let Ok(response) = sender.send_request(req).await else {
        return 0;
    };
    let mut body = response.into_body();
    let mut got = 0u64;
    while got < bytes {
        match body.frame().await {
            Some(Ok(frame)) => got += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
    tokio::time::sleep(pause).await;
    got
}

async fn report(name: &str, proxy: &Process) {
    let rss = proxy.rss_mib("VmRSS:").await.unwrap_or(f64::NAN);
    let peak = proxy.peak_rss_mib().await.unwrap_or(f64::NAN);
    println!("{name:<52} {rss:>12.1} {peak:>12.1}");
}

async fn hardening() {
    use tokio::io::AsyncWriteExt;
    println!("\nhardening: the proxy's memory under attack (cache.max_size = 64MiB)");
    println!("{:<52} {:>12} {:>12}", "", "RSS MiB", "peak MiB");
    let store = endless_store().await;
    let proxy = Process::proxy(
        store,
        "[cache]\nenabled = true\nmax_size = \"64MiB\"\n[budget]\nlimit = 100000000",
    )
    .await;
    report("at start", &proxy).await;
    let started = Instant::now();
    let got = read_answer(proxy.addr, "/api/v2/products/1", 1 << 30, Duration::ZERO).await;
    let secs = started.elapsed().as_secs_f64();
    let rate = got as f64 / secs / 1048576.0;
    report(
        &format!("endless answer, 1 GiB read at {rate:.0} MiB/s"),
        &proxy,
    )
    .await;
    let held = tokio::spawn(read_answer(
        proxy.addr,
        "/api/v2/products/2",
        1 << 20,
        Duration::from_secs(3),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    report("endless answer, reader stopped after 1 MiB", &proxy).await;
    let _ = held.await;

    let mut idle = Vec::new();
    for _ in 0..2000 {
        if let Ok(mut tcp) = TcpStream::connect(proxy.addr).await {
            let _ = tcp
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .await;
            idle.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    report(&format!("{} idle h2 connections", idle.len()), &proxy).await;
    drop(idle);

    let mut uploads = Vec::new();
    for _ in 0..100 {
        if let Ok(mut tcp) = TcpStream::connect(proxy.addr).await {
            let _ = tcp
                .write_all(b"POST /api/v2/brands HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n{\"name")
                .await;
            uploads.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    report("100 uploads of 10 MB trickling", &proxy).await;
    drop(uploads);
    proxy.stop().await;
}

#[tokio::main]
async fn main() {
    // The speed scenario's reference server is this bench, run again.
    if std::env::var("BENCH_ROLE").as_deref() == Ok("bare") {
        let addr = env_or("BENCH_BARE_ADDR", SocketAddr::from(([127, 0, 0, 1], 18099)));
        let body = std::env::var("BENCH_BARE_BODY")
            .ok()
            .and_then(|path| std::fs::read(path).ok())
            .unwrap_or_default();
        speed::bare_server(addr, Bytes::from(body)).await;
        return;
    }
    let scenarios: String = env_or("BENCH_SCENARIOS", "throughput,cache,budget".to_string());
    for scenario in scenarios.split(',') {
        match scenario.trim() {
            "throughput" => throughput().await,
            "cache" => cache().await,
            "budget" => budget().await,
            "hardening" => hardening().await,
            "writes" => writes().await,
            "cluster" => cluster::cluster().await,
            "speed" => speed::speed().await,
            other => eprintln!(
                "unknown scenario {other:?} (throughput, cache, budget, writes, hardening, cluster, speed)"
            ),
        }
    }
}
