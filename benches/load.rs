//! Load benchmark: the simulator (zero latency) and the proxy as separate processes, driven
//! over loopback by many keep-alive connections, direct and through the proxy, in one run.
//!
//! `cargo bench --bench load` (env: `BENCH_CONNECTIONS`, default 64; `BENCH_SECONDS`, default 10;
//! `BENCH_PATH`, default `/api/v2/products/1`).

use std::net::SocketAddr;
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

async fn wait_for(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Results of one run.
struct Run {
    requests: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Drives `connections` keep-alive HTTP/1.1 connections at `addr` for `seconds`.
async fn drive(
    addr: SocketAddr,
    path: &str,
    auth: Option<HeaderValue>,
    connections: usize,
    seconds: f64,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let warmup_end = Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.to_string();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let mut req = Request::get(&path).header("host", addr.to_string());
                if let Some(auth) = &auth {
                    req = req.header("authorization", auth.clone());
                }
                let req = req.body(Empty::<Bytes>::new()).expect("request");
                let started = Instant::now();
                let ok = match sender.send_request(req).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if started >= warmup_end {
                    if ok {
                        latencies.push(started.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    break;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("task");
        latencies_us.extend(l);
        errors += e;
    }
    latencies_us.sort_unstable();
    Run {
        requests: latencies_us.len() as u64,
        errors,
        seconds: seconds - 0.5,
        latencies_us,
    }
}

fn spawn(args: &[&str], envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn bcproxy")
}

async fn peak_rss_kib(child: &Child) -> Option<u64> {
    let pid = child.id()?;
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let seconds: f64 = env_or("BENCH_SECONDS", 10.0);
    let path: String = env_or("BENCH_PATH", "/api/v2/products/1".to_string());

    let sim_addr = free_port();
    let mut sim = spawn(
        &[
            "sim",
            "--listen",
            &sim_addr.to_string(),
            "--limit",
            "100000000",
        ],
        &[],
    );
    wait_for(sim_addr).await;
    let proxy_addr = free_port();
    let config = std::env::temp_dir().join(format!("bcproxy-bench-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[listen]\naddr = \"{proxy_addr}\"\n[upstream]\nurl = \"http://{sim_addr}\"\nusername = \"{}\"\n\
             max_concurrency = {connections}\n[budget]\nlimit = 100000000\n[admin]\naddr = \"\"\n[log]\nlevel = \"{}\"\n",
            bcproxy::sim::DEFAULT_USERNAME,
            env_or("BENCH_LOG_LEVEL", "info".to_string()),
        ),
    )
    .expect("write config");
    let mut proxy = spawn(
        &["run", "--config", &config.display().to_string()],
        &[(
            "BCPROXY__UPSTREAM__API_KEY",
            bcproxy::sim::DEFAULT_API_KEY.into(),
        )],
    );
    let proxy_ready = tokio::time::timeout(Duration::from_secs(10), wait_for(proxy_addr)).await;
    if proxy_ready.is_err() {
        let mut err = String::new();
        if let Some(stderr) = proxy.stderr.take() {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                err.push_str(&l);
            }
        }
        panic!("the proxy did not start: {err}");
    }

    let raw = format!(
        "{}:{}",
        bcproxy::sim::DEFAULT_USERNAME,
        bcproxy::sim::DEFAULT_API_KEY
    );
    let auth = HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .expect("auth");

    println!(
        "load: {connections} keep-alive connections, {seconds}s per run, GET {path}, simulator latency 0"
    );
    let direct = drive(sim_addr, &path, Some(auth), connections, seconds).await;
    let proxied = drive(proxy_addr, &path, None, connections, seconds).await;
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
        );
    }
    println!(
        "ratio proxy/direct: throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
        proxied.rps() / direct.rps(),
        proxied.percentile(0.50) / direct.percentile(0.50),
        proxied.percentile(0.99) / direct.percentile(0.99)
    );
    if let Some(rss) = peak_rss_kib(&proxy).await {
        println!("proxy peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    }
    let _ = proxy.kill().await;
    let _ = sim.kill().await;
    let _ = std::fs::remove_file(&config);
}
