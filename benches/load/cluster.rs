//! The `cluster` scenario: what sharing through Redis costs and what it buys. Needs a Redis
//! (`BENCH_REDIS`, default `redis://127.0.0.1:6379/0`); every run uses cluster names of its
//! own.
//!
//! - the cost of one budget decision (a slot taken and given back) through Redis, against the
//!   in-memory budget, p50/p99;
//! - the budget scenario with three proxies (processes) sharing one Redis, against three that
//!   each believe they own the budget: app 200s and 509s, store calls and 509s, call p50/p99;
//! - the hit path with the cluster on and off, in one run;
//! - how long after the app got a write's answer through A the invalidation reached B, p50/p99.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bcproxy::budget::{Ask, Class};
use bcproxy::config::Settings;

use super::{Process, Run, drive, env_or, free_port, sim_stats};

fn redis_url() -> String {
    env_or("BENCH_REDIS", "redis://127.0.0.1:6379/0".to_string())
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench-{what}-{}-{nanos}", std::process::id())
}

/// Settings for an in-process budget or cluster against the store at `sim`, plus `extra`.
pub(super) fn settings(sim: SocketAddr, extra: &str) -> Settings {
    let text = format!(
        "[upstream]\nurl = \"http://{sim}\"\nusername = \"{}\"\n[admin]\naddr = \"\"\n{extra}\n",
        bcproxy::sim::DEFAULT_USERNAME
    );
    let vars = [(
        "BCPROXY__UPSTREAM__API_KEY".to_string(),
        bcproxy::sim::DEFAULT_API_KEY.to_string(),
    )]
    .into_iter()
    .collect();
    Settings::from_toml(&text, vars).expect("bench settings")
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn cluster() {
    decisions().await;
    shared_budget().await;
    hit_path().await;
    invalidations().await;
}

/// A slot taken and given back, `n` times, through the budget of `settings`.
async fn decision_times(settings: &Settings, cluster: bool, n: usize) -> Vec<f64> {
    let cluster = cluster.then(|| {
        let c = bcproxy::cluster::Cluster::new(settings).expect("cluster");
        c.start();
        c
    });
    if let Some(c) = &cluster {
        c.started(Duration::from_secs(2)).await;
        assert!(c.is_up(), "no Redis at {}", redis_url());
    }
    let budget = bcproxy::budget::build(settings, cluster.as_ref());
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let started = Instant::now();
        let mut slot = budget
            .acquire(Ask {
                class: Class::Read,
                deadline: tokio::time::Instant::now() + Duration::from_secs(1),
                resend: false,
                client: None,
            })
            .await
            .expect("a slot");
        slot.mark_sent();
        drop(slot);
        if i >= 200 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    if let Some(c) = cluster {
        c.leave().await;
    }
    times.sort_by(f64::total_cmp);
    times
}

async fn decisions() {
    let n: usize = env_or("BENCH_DECISIONS", 5000);
    let sim = free_port();
    let memory = settings(sim, "[budget]\nlimit = 1000000000\n");
    let shared = settings(
        sim,
        &format!(
            "[budget]\nlimit = 1000000000\n[cluster]\nredis_url = \"{}\"\nname = \"{}\"\n",
            redis_url(),
            unique("decisions")
        ),
    );
    let local = decision_times(&memory, false, n).await;
    let redis = decision_times(&shared, true, n).await;
    println!("\ncluster: one budget decision (a slot taken), {n} in a row, ms");
    println!("{:<22} {:>10} {:>10}", "", "p50", "p99");
    for (name, t) in [("in memory", &local), ("through Redis", &redis)] {
        println!(
            "{name:<22} {:>10.4} {:>10.4}",
            percentile(t, 0.5),
            percentile(t, 0.99)
        );
    }
}

/// Three proxies (processes) in front of one store, the app's load spread over them.
async fn shared_budget() {
    let (limit, window, seconds, connections) = (300, "6s", 15.0, 18);
    let paths: Vec<String> = (1..=20).map(|i| format!("/api/v2/products/{i}")).collect();
    println!(
        "\ncluster budget: the store allows {limit} calls per {window}; the app asks as fast as {connections} connections go for {seconds}s over {} products, spread over 3 proxies (cache off)",
        paths.len()
    );
    println!(
        "{:<26} {:>9} {:>9} {:>12} {:>11} {:>8} {:>8}",
        "", "app 200s", "app 509s", "store calls", "store 509s", "p50 ms", "p99 ms"
    );
    let limit_text = limit.to_string();
    for (name, shared) in [
        ("3 proxies, alone each", false),
        ("3 proxies, one cluster", true),
    ] {
        let sim = Process::sim(&["--limit", &limit_text, "--window", window]).await;
        let cluster_name = unique("budget");
        let mut proxies = Vec::new();
        for i in 0..3 {
            let cluster = if shared {
                format!(
                    "[cluster]\nredis_url = \"{}\"\nname = \"{cluster_name}\"\ninstance = \"p{i}\"\n",
                    redis_url()
                )
            } else {
                String::new()
            };
            proxies.push(
                Process::proxy(
                    sim.addr,
                    &format!(
                        "[budget]\nlimit = {limit}\nwindow = \"{window}\"\nmax_wait = \"1s\"\nreserve_writes = 0\n[cache]\nenabled = false\n{cluster}"
                    ),
                )
                .await,
            );
        }
        let runs = futures_util::future::join_all(proxies.iter().map(|p| {
            drive(
                p.addr,
                &paths,
                None,
                connections / 3,
                seconds,
                Duration::ZERO,
            )
        }))
        .await;
        let mut all = Run::default();
        for run in runs {
            for (status, n) in run.statuses {
                *all.statuses.entry(status).or_default() += n;
            }
            all.latencies_us.extend(run.latencies_us);
        }
        all.latencies_us.sort_unstable();
        let stats = sim_stats(sim.addr).await;
        println!(
            "{name:<26} {:>9} {:>9} {:>12} {:>11} {:>8.2} {:>8.2}",
            all.ok(),
            all.statuses.get(&509).copied().unwrap_or(0),
            stats["calls"].as_u64().unwrap_or(0),
            stats["throttled"].as_u64().unwrap_or(0),
            all.percentile(0.5),
            all.percentile(0.99)
        );
        for p in proxies {
            p.stop().await;
        }
        sim.stop().await;
    }
}

/// The cache-hit path, cluster on and off.
async fn hit_path() {
    let connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let seconds: f64 = env_or("BENCH_SECONDS", 10.0);
    let path = "/api/v2/products/1".to_string();
    let sim = Process::sim(&["--limit", "100000000"]).await;
    let base = "[budget]\nlimit = 100000000\n[cache]\nenabled = true\nttl = \"10m\"\n";
    let clustered = format!(
        "{base}[cluster]\nredis_url = \"{}\"\nname = \"{}\"\n",
        redis_url(),
        unique("hits")
    );
    let paths = [path.clone()];
    println!(
        "\ncluster hit path: {connections} keep-alive connections, {seconds}s per run, GET {path} answered from the cache"
    );
    println!(
        "{:<18} {:>12} {:>10} {:>10}",
        "", "requests/s", "p50 ms", "p99 ms"
    );
    let mut results = Vec::new();
    for (name, extra) in [("cluster off", base.to_string()), ("cluster on", clustered)] {
        let proxy = Process::proxy(sim.addr, &extra).await;
        drive(proxy.addr, &paths, None, 1, 0.3, Duration::ZERO).await;
        let run = drive(
            proxy.addr,
            &paths,
            None,
            connections,
            seconds,
            Duration::from_millis(500),
        )
        .await;
        println!(
            "{name:<18} {:>12.0} {:>10.3} {:>10.3}",
            run.rps(),
            run.percentile(0.5),
            run.percentile(0.99)
        );
        results.push(run);
        proxy.stop().await;
    }
    println!(
        "ratio on/off: throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
        results[1].rps() / results[0].rps(),
        results[1].percentile(0.5) / results[0].percentile(0.5),
        results[1].percentile(0.99) / results[0].percentile(0.99)
    );
    sim.stop().await;
}

/// A write through A, and the time until B has its invalidation (from the app getting the
/// write's answer).
async fn invalidations() {
    let n: usize = env_or("BENCH_INVALIDATIONS", 200);
    let sim = bcproxy::sim::Sim::start(
        bcproxy::sim::SimConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("sim");
    let name = unique("inval");
    let mut proxies = Vec::new();
    for instance in ["a", "b"] {
        let s = settings(
            sim.addr,
            &format!(
                "[cache]\nenabled = true\n[cluster]\nredis_url = \"{}\"\nname = \"{name}\"\ninstance = \"{instance}\"\n",
                redis_url()
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        proxies.push(
            bcproxy::app::RunningProxy::start(s, listener)
                .await
                .expect("proxy"),
        );
    }
    let (a, b) = (&proxies[0], &proxies[1]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let received = |p: &bcproxy::app::RunningProxy| {
        p.status()
            .cluster()
            .map_or(0, |c| c.view().counts.invalidations_received)
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("{}/api/v2/products/{}", b.url(), 1 + i % 20);
        let _ = client.get(url.parse().expect("uri")).await;
        let before = received(b);
        let put = http::Request::put(format!("{}/api/v2/products/{}", a.url(), 1 + i % 20))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "{{\"name\":\"Bench {i}\"}}"
            ))))
            .expect("request");
        let response = client.request(put).await.expect("put");
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        let answered = Instant::now();
        while received(b) == before {
            if answered.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::task::yield_now().await;
        }
        times.push(answered.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "\ncluster invalidation: a write's answer through A to the drop in B, {n} writes: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN)
    );
    for p in proxies {
        p.stop().await;
    }
}
