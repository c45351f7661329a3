//! The `speed` scenario: what a cache hit, a miss and a pass-through cost, beside the anchors
//! in one run, and how the cost grows with the work.
//!
//! - **hit**: a hot set of 100 products of about 2 KiB, answered by a bare hyper server from
//!   memory (this bench re-run as `BENCH_ROLE=bare`: the floor), by nginx `proxy_cache` when
//!   nginx is installed (one worker, the same TTL, a cache lock, the store's Authorization
//!   injected, an access log to a file), by bcproxy's cache (its access log to a file), and by
//!   the simulator directly;
//! - **miss and pass-through**: one connection against a store answering at once, and 64
//!   against one answering in 20 ms: direct, bcproxy (miss: every key new; pass: the cache
//!   off) and nginx, and what each adds to the direct call's p50;
//! - **curves**: hits with 1k, 100k and 1M entries cached (`BENCH_ENTRIES`); hits with 64,
//!   1,000 and 4,000 connections; a budget decision with `limit` 150, 20,000 and 1,000,000;
//! - **memory**: RSS with a full cache and 2,000 idle keep-alive connections against
//!   `cache.max_size` + 30 MiB, and the bytes the cache counts against the RSS it grew by.
//!
//! wrk drives the load when installed (`apt-get install wrk nginx`): one thread pinned to core
//! 0 with `taskset`, as the figures in README were taken; without it, this bench's own client
//! (whose figures are not comparable with wrk's). `BENCH_SECONDS` (default 5) per run;
//! `BENCH_SPEED_PARTS` (default `hit,miss,connections,decisions,entries,memory`) picks parts;
//! `BENCH_ENTRIES` (default `1000,100000,1000000`) the entry counts (1M takes about a minute
//! to fill and 4.5 GiB of memory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bcproxy::budget::{Ask, Class};
use bcproxy::config::Settings;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{Process, drive, env_or, free_port, sim_auth, wait_for};

/// Products in the hot set.
const HOT: usize = 100;
/// The cache TTL every cache in the run is given.
const TTL_SECS: u64 = 600;

/// What one load run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// What the load asks for.
enum Script<'a> {
    /// The paths in turn.
    Cycle(&'a [String]),
    /// `base?n=…` with a new `n` every call: every call a miss.
    Unique(&'a str),
    /// `base?n=k`, `k` random in 1..=n.
    Random(&'a str, usize),
}

/// The load generator: wrk when installed, else this bench's own client.
struct Load {
    wrk: Option<PathBuf>,
    taskset: Option<PathBuf>,
    dir: PathBuf,
    runs: u64,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// "401.00us", "1.23ms", "2.00s" in ms.
fn wrk_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(out: &str) -> Option<Measured> {
    let mut m = Measured {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(n)) => m.rps = n.parse().ok()?,
            (Some("50%"), Some(t)) => m.p50_ms = wrk_ms(t)?,
            (Some("99%"), Some(t)) => m.p99_ms = wrk_ms(t)?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            m.errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            m.errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (!m.rps.is_nan()).then_some(m)
}

impl Load {
    fn new(dir: &Path) -> Load {
        Load {
            wrk: which("wrk"),
            taskset: which("taskset"),
            dir: dir.to_path_buf(),
            runs: 0,
        }
    }

    fn describe(&self) -> String {
        match (&self.wrk, &self.taskset) {
            (Some(_), Some(_)) => "wrk -t1, pinned to core 0".into(),
            (Some(_), None) => "wrk -t1 (no taskset: not pinned)".into(),
            _ => "the bench's own client (no wrk: not comparable with wrk's figures)".into(),
        }
    }

    /// Runs `script` against `addr` with `connections` for `seconds`.
    async fn run(
        &mut self,
        addr: SocketAddr,
        script: &Script<'_>,
        auth: bool,
        connections: usize,
        seconds: f64,
    ) -> Measured {
        self.runs += 1;
        match self.wrk.clone() {
            Some(wrk) => {
                self.wrk(&wrk, addr, script, auth, connections, seconds)
                    .await
            }
            None => {
                let paths: Vec<String> = match script {
                    Script::Cycle(paths) => paths.to_vec(),
                    Script::Unique(base) => (0..400_000)
                        .map(|n| format!("{base}?n={}-{n}", self.runs))
                        .collect(),
                    Script::Random(base, n) => (0..100_000u64)
                        .map(|i| format!("{base}?n={}", (i * 2_654_435_761) % *n as u64 + 1))
                        .collect(),
                };
                let auth = auth.then(sim_auth);
                let warmup = Duration::from_millis(300);
                let run = drive(addr, &paths, auth, connections, seconds, warmup).await;
                Measured {
                    rps: run.rps(),
                    p50_ms: run.percentile(0.5),
                    p99_ms: run.percentile(0.99),
                    errors: run.errors
                        + run.statuses.iter().filter(|(s, _)| **s != 200).count() as u64,
                }
            }
        }
    }

    async fn wrk(
        &self,
        wrk: &Path,
        addr: SocketAddr,
        script: &Script<'_>,
        auth: bool,
        connections: usize,
        seconds: f64,
    ) -> Measured {
        let mut lua = String::new();
        if auth {
            lua.push_str(&format!(
                "wrk.headers[\"Authorization\"] = {}\n",
                lua_string(sim_auth().to_str().unwrap_or_default())
            ));
        }
        match script {
            Script::Cycle(paths) => {
                let list: Vec<String> = paths.iter().map(|p| lua_string(p)).collect();
                lua.push_str(&format!(
                    "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n",
                    list.join(",")
                ));
            }
            Script::Unique(base) => lua.push_str(&format!(
                "local i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", {} .. \"?n={}-\" .. i)\nend\n",
                lua_string(base),
                self.runs
            )),
            Script::Random(base, n) => lua.push_str(&format!(
                "math.randomseed({})\nrequest = function()\n  return wrk.format(\"GET\", {} .. \"?n=\" .. math.random({n}))\nend\n",
                self.runs,
                lua_string(base)
            )),
        }
        let script_path = self.dir.join(format!("load-{}.lua", self.runs));
        std::fs::write(&script_path, lua).expect("the wrk script");
        let mut args: Vec<String> = Vec::new();
        let program = match &self.taskset {
            Some(taskset) => {
                args.extend(["-c".into(), "0".into(), wrk.display().to_string()]);
                taskset.clone()
            }
            None => wrk.to_path_buf(),
        };
        args.extend([
            "-t1".into(),
            format!("-c{connections}"),
            format!("-d{}s", seconds.max(1.0).round()),
            "--timeout".into(),
            "10s".into(),
            "--latency".into(),
            "-s".into(),
            script_path.display().to_string(),
            format!("http://{addr}"),
        ]);
        let out = Command::new(program)
            .args(&args)
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("run wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        parse_wrk(&text).unwrap_or_else(|| panic!("wrk said:\n{text}"))
    }
}

/// The reference server: answers every request with `BENCH_BARE_BODY`'s bytes from memory
/// (hyper's HTTP/1.1, keep-alive, the default Tokio runtime). Run by this bench as a process of
/// its own.
pub async fn bare_server(addr: SocketAddr, body: Bytes) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let mut response = http::Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn start_bare(dir: &Path, body: &[u8]) -> (Child, SocketAddr) {
    let addr = free_port();
    let file = dir.join("bare-body.json");
    std::fs::write(&file, body).expect("the bare body");
    let child = Command::new(std::env::current_exe().expect("this bench"))
        .env("BENCH_ROLE", "bare")
        .env("BENCH_BARE_ADDR", addr.to_string())
        .env("BENCH_BARE_BODY", &file)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the bare server");
    assert!(wait_for(addr).await, "the bare server did not start");
    (child, addr)
}

/// nginx in front of two stores: a caching and a passing server for each.
struct Nginx {
    /// Killed when dropped.
    _child: Child,
    /// (cache on, cache off) in front of the store answering at once.
    fast: (SocketAddr, SocketAddr),
    /// The same in front of the store answering in 20 ms.
    slow: (SocketAddr, SocketAddr),
}

impl Nginx {
    async fn start(dir: &Path, fast: SocketAddr, slow: SocketAddr) -> Option<Nginx> {
        let nginx = std::env::var_os("BENCH_NGINX")
            .map(PathBuf::from)
            .or_else(|| which("nginx"))?;
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let auth = sim_auth();
        let auth = auth.to_str().unwrap_or_default();
        let server = |listen: SocketAddr, upstream: &str, cache: bool| {
            let cache = if cache {
                format!(
                    "proxy_cache bc; proxy_cache_valid 200 {TTL_SECS}s; proxy_cache_lock on; add_header X-Cache $upstream_cache_status;"
                )
            } else {
                String::new()
            };
            format!(
                "server {{ listen {listen}; location / {{ proxy_pass http://{upstream}; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Authorization \"{auth}\"; {cache} }} }}\n"
            )
        };
        let d = dir.display();
        let conf = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 10000; }}\nhttp {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n  fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n  proxy_cache_path {d}/nginx-cache levels=1:2 keys_zone=bc:64m max_size=4g inactive=1h use_temp_path=off;\n  upstream fast {{ server {fast}; keepalive 64; }}\n  upstream slow {{ server {slow}; keepalive 64; }}\n{}{}{}{}}}\n",
            server(ports[0], "fast", true),
            server(ports[1], "fast", false),
            server(ports[2], "slow", true),
            server(ports[3], "slow", false),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        if !wait_for(ports[0]).await {
            eprintln!("nginx did not start (see {d}/nginx-error.log): no nginx anchor");
            return None;
        }
        Some(Nginx {
            _child: child,
            fast: (ports[0], ports[1]),
            slow: (ports[2], ports[3]),
        })
    }
}

/// Adds `n` products of about 2 KiB to the simulator at `sim`; their paths.
async fn seed(sim: SocketAddr, n: usize) -> Vec<String> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let description = format!("<p>{}</p>", "Lorem ipsum dolor sit amet. ".repeat(66));
    let mut paths = Vec::new();
    for i in 0..n {
        let body = serde_json::json!({
            "name": format!("Bench product {i}"),
            "type": "physical",
            "price": "9.99",
            "weight": "1",
            "description": description,
        });
        let request = Request::post(format!("http://{sim}/api/v2/products"))
            .header("authorization", sim_auth())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = client.request(request).await.expect("seed");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.find("/api/").map(|i| l[i..].to_string()))
            .expect("a location");
        paths.push(location);
    }
    paths
}

async fn get(addr: SocketAddr, path: &str, auth: bool) -> Bytes {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = Request::get(format!("http://{addr}{path}"));
    if auth {
        request = request.header("authorization", sim_auth());
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("get");
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// GETs `base?n=1..=n` through `addr` over `connections` keep-alive connections.
async fn fill(addr: SocketAddr, base: &str, n: usize, connections: usize) {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut k = c + 1;
            while k <= n {
                let request = Request::get(format!("{base}?n={k}"))
                    .header("host", addr.to_string())
                    .body(http_body_util::Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("fill");
                response.into_body().collect().await.expect("fill body");
                k += connections;
            }
        }));
    }
    for task in tasks {
        task.await.expect("fill task");
    }
}

/// `/status` of the admin listener at `admin`.
async fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&get(admin, "/status", false).await).unwrap_or_default()
}

fn row(name: &str, m: &Measured) {
    println!(
        "{name:<34} {:>11.0} {:>9.3} {:>9.3} {:>7}",
        m.rps, m.p50_ms, m.p99_ms, m.errors
    );
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<34} {:>11} {:>9} {:>9} {:>7}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
}

pub async fn speed() {
    let parts: String = env_or(
        "BENCH_SPEED_PARTS",
        "hit,miss,connections,decisions,entries,memory".to_string(),
    );
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let seconds: f64 = env_or("BENCH_SECONDS", 5.0);
    let dir = std::env::temp_dir().join(format!("bcproxy-speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the bench's directory");
    let mut load = Load::new(&dir);

    let fast = Process::sim(&["--limit", "1000000000"]).await;
    let slow = Process::sim(&["--limit", "1000000000", "--latency", "20ms"]).await;
    let hot = seed(fast.addr, HOT).await;
    let slow_hot = seed(slow.addr, HOT).await;
    let body = get(fast.addr, &hot[0], true).await;
    let (bare_child, bare) = start_bare(&dir, &body).await;
    let cache_on = format!(
        "[budget]\nlimit = 1000000000\n[cache]\nenabled = true\nttl = \"{TTL_SECS}s\"\nmax_size = \"1GiB\""
    );
    let cache_off = "[budget]\nlimit = 1000000000\n[cache]\nenabled = false";
    // Each proxy logs to a file of its own, as nginx does.
    let logged = |sim: SocketAddr, extra: String, name: &str| {
        let log = dir.join(format!("{name}.log"));
        async move { Process::proxy_bin(None, sim, &extra, Some(&log)).await }
    };
    // The default upstream.max_concurrency (8) would queue 64 connections to a 20 ms store
    // by design (8 / 20 ms = 400 calls/s); nginx has no such cap, so lift it to compare.
    // (`extra` follows the [upstream] table's keys.)
    let wide = "max_concurrency = 64\n";
    let hit = logged(fast.addr, cache_on.clone(), "bcproxy-hit").await;
    let pass = logged(fast.addr, cache_off.to_string(), "bcproxy-pass").await;
    let slow_hit = logged(slow.addr, format!("{wide}{cache_on}"), "bcproxy-slow").await;
    let slow_pass = logged(slow.addr, format!("{wide}{cache_off}"), "bcproxy-slow-pass").await;
    let nginx = Nginx::start(&dir, fast.addr, slow.addr).await;

    println!(
        "\nspeed: {} bytes per answer, {HOT} hot products, {seconds}s per run, load by {}; access logs to files",
        body.len(),
        load.describe()
    );

    // The hit, beside the anchors.
    let cycle = Script::Cycle(&hot);
    if part("hit") {
        hit_part(
            &mut load,
            &hot,
            bare,
            &hit,
            nginx.as_ref(),
            fast.addr,
            seconds,
        )
        .await;
    }
    if part("miss") {
        miss_part(
            &mut load,
            (fast.addr, slow.addr),
            [&hit, &pass, &slow_hit, &slow_pass],
            nginx.as_ref(),
            (&hot, &slow_hot),
            seconds,
        )
        .await;
    }
    pass.stop().await;
    slow_hit.stop().await;
    slow_pass.stop().await;
    drop(nginx);
    slow.stop().await;

    if part("connections") {
        header("hit by connections (hot set)");
        for connections in [64, 1000, 4000] {
            let b = load.run(bare, &cycle, false, connections, seconds).await;
            row(&format!("bare hyper, {connections} connections"), &b);
            let m = load
                .run(hit.addr, &cycle, false, connections, seconds)
                .await;
            row(&format!("bcproxy hit, {connections} connections"), &m);
        }
    }
    hit.stop().await;
    drop(bare_child);

    if part("decisions") {
        // On a thread and runtime of its own: nothing else in this process runs beside it.
        let _ = std::thread::spawn(decisions_curve).join();
    }
    if part("entries") {
        entries_curve(&mut load, fast.addr, &hot[0], seconds).await;
    }
    if part("memory") {
        memory(fast.addr, &hot[0]).await;
    }
    fast.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn hit_part(
    load: &mut Load,
    hot: &[String],
    bare: SocketAddr,
    hit: &Process,
    nginx: Option<&Nginx>,
    direct: SocketAddr,
    seconds: f64,
) {
    let cycle = Script::Cycle(hot);
    for addr in [Some(hit.addr), nginx.as_ref().map(|n| n.fast.0)]
        .into_iter()
        .flatten()
    {
        load.run(addr, &cycle, false, 64, 1.0).await;
    }
    header("hit: 64 keep-alive connections, GETs over the hot set");
    let bare_m = load.run(bare, &cycle, false, 64, seconds).await;
    row("bare hyper (from memory)", &bare_m);
    let nginx_m = match nginx {
        Some(n) => {
            let m = load.run(n.fast.0, &cycle, false, 64, seconds).await;
            row("nginx proxy_cache hit", &m);
            Some(m)
        }
        None => {
            println!(
                "{:<34} (not installed: apt-get install nginx)",
                "nginx proxy_cache hit"
            );
            None
        }
    };
    let hit_m = load.run(hit.addr, &cycle, false, 64, seconds).await;
    row("bcproxy hit", &hit_m);
    let direct_m = load.run(direct, &cycle, true, 64, seconds).await;
    row("simulator direct", &direct_m);
    print!(
        "bcproxy hit / bare: {:.2}x throughput, p99 {:.2}x",
        hit_m.rps / bare_m.rps,
        hit_m.p99_ms / bare_m.p99_ms
    );
    if let Some(n) = &nginx_m {
        print!(
            "; bcproxy hit / nginx hit: {:.2}x throughput, p99 {:.3} vs {:.3} ms",
            hit_m.rps / n.rps,
            hit_m.p99_ms,
            n.p99_ms
        );
    }
    println!();
}

async fn miss_part(
    load: &mut Load,
    (fast, slow): (SocketAddr, SocketAddr),
    [hit, pass, slow_hit, slow_pass]: [&Process; 4],
    nginx: Option<&Nginx>,
    (hot, slow_hot): (&[String], &[String]),
    seconds: f64,
) {
    for (title, connections, store, proxies, nginx_pair, paths) in [
        (
            "miss and pass-through: 1 connection, the store answering at once",
            1,
            fast,
            (hit, pass),
            nginx.map(|n| n.fast),
            hot,
        ),
        (
            "miss and pass-through: 64 connections, the store answering in 20 ms (bcproxy: upstream.max_concurrency = 64)",
            64,
            slow,
            (slow_hit, slow_pass),
            nginx.map(|n| n.slow),
            slow_hot,
        ),
    ] {
        header(title);
        let base = &paths[1];
        let direct = load
            .run(store, &Script::Unique(base), true, connections, seconds)
            .await;
        row("direct", &direct);
        let mut rows = vec![
            (
                "bcproxy miss",
                load.run(
                    proxies.0.addr,
                    &Script::Unique(base),
                    false,
                    connections,
                    seconds,
                )
                .await,
            ),
            (
                "bcproxy pass-through (cache off)",
                load.run(
                    proxies.1.addr,
                    &Script::Cycle(paths),
                    false,
                    connections,
                    seconds,
                )
                .await,
            ),
        ];
        if let Some((cached, passing)) = nginx_pair {
            rows.push((
                "nginx miss",
                load.run(cached, &Script::Unique(base), false, connections, seconds)
                    .await,
            ));
            rows.push((
                "nginx pass-through",
                load.run(passing, &Script::Cycle(paths), false, connections, seconds)
                    .await,
            ));
        }
        for (name, m) in &rows {
            row(name, m);
        }
        for (name, m) in &rows {
            println!(
                "{name}: adds {:.0} µs at p50 to the direct call",
                (m.p50_ms - direct.p50_ms) * 1000.0
            );
        }
    }
}

/// Hits spread over 1k, 100k and 1M cached entries of one proxy, filled in turn.
async fn entries_curve(load: &mut Load, sim: SocketAddr, base: &str, seconds: f64) {
    let counts: String = env_or("BENCH_ENTRIES", "1000,100000,1000000".to_string());
    let counts: Vec<usize> = counts
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let Some(&most) = counts.iter().max() else {
        return;
    };
    // Room for every entry: about 4.2 KiB each as the cache counts them.
    let max_size = (most as u64 * 4300).max(64 << 20);
    let admin = free_port();
    let proxy = Process::proxy_bin(
        None,
        sim,
        &format!(
            "[budget]\nlimit = 1000000000\n[cache]\nenabled = true\nttl = \"{TTL_SECS}s\"\nmax_size = \"{max_size}B\"\n[admin]\naddr = \"{admin}\""
        ),
        None,
    )
    .await;
    header("hit by entries cached (random keys over all of them; RSS after)");
    let mut filled = 0;
    for n in counts {
        if n > filled {
            let started = Instant::now();
            fill(proxy.addr, base, n, 32).await;
            filled = n;
            eprintln!(
                "filled {n} entries in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        let m = load
            .run(proxy.addr, &Script::Random(base, n), false, 64, seconds)
            .await;
        let entries = status(admin).await["cache"]["entries"]
            .as_u64()
            .unwrap_or(0);
        let rss = proxy.rss_mib("VmRSS:").await.unwrap_or(f64::NAN);
        row(&format!("{n} entries ({entries} held, {rss:.0} MiB)"), &m);
    }
    proxy.stop().await;
}

fn decision_settings(limit: u64) -> Settings {
    super::cluster::settings(
        free_port(),
        &format!("[budget]\nlimit = {limit}\nwindow = \"60m\"\nreserve_writes = 0\n"),
    )
}

fn percentile_us(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    super::cluster::percentile(times, p) * 1e6
}

/// One budget decision with the window holding `limit - 1` sends (a slot granted and given
/// back) and with it full (refused, the wait computed), for three limits.
fn decisions_curve() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(decisions());
}

async fn decisions() {
    println!("\nbudget decision by limit (window 60m, holding limit - 1 sends), 5000 in a row, µs");
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "limit", "grant p50", "grant p99", "refuse p50", "refuse p99"
    );
    {
        for limit in [150u64, 20_000, 1_000_000] {
            let budget = bcproxy::budget::build(&decision_settings(limit), None);
            let ask = |deadline| Ask {
                class: Class::Read,
                deadline,
                resend: false,
                client: None,
            };
            let later = || tokio::time::Instant::now() + Duration::from_secs(1);
            for _ in 0..limit - 1 {
                let mut slot = budget.acquire(ask(later())).await.expect("a slot");
                slot.mark_sent();
            }
            let mut granted = Vec::with_capacity(5000);
            for _ in 0..5000 {
                let started = Instant::now();
                let slot = budget.acquire(ask(later())).await.expect("a slot");
                drop(slot);
                granted.push(started.elapsed().as_secs_f64());
            }
            let mut last = budget.acquire(ask(later())).await.expect("the last slot");
            last.mark_sent();
            drop(last);
            let mut refused = Vec::with_capacity(5000);
            for _ in 0..5000 {
                let started = Instant::now();
                let answer = budget.acquire(ask(tokio::time::Instant::now())).await;
                assert!(answer.is_err(), "the window is full");
                refused.push(started.elapsed().as_secs_f64());
            }
            println!(
                "{limit:<12} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
                percentile_us(&mut granted, 0.5),
                percentile_us(&mut granted, 0.99),
                percentile_us(&mut refused, 0.5),
                percentile_us(&mut refused, 0.99)
            );
        }
    }
}

/// RSS with a full cache and 2,000 idle keep-alive connections, and the cache's count of its
/// bytes against the RSS it grew by.
async fn memory(sim: SocketAddr, base: &str) {
    println!("\nmemory");
    // The count against the growth: room for everything, 40,000 answers.
    let admin = free_port();
    let proxy = Process::proxy_bin(
        None,
        sim,
        &format!(
            "[budget]\nlimit = 1000000000\n[cache]\nenabled = true\nttl = \"{TTL_SECS}s\"\nmax_size = \"1GiB\"\n[admin]\naddr = \"{admin}\""
        ),
        None,
    )
    .await;
    fill(proxy.addr, &format!("{base}-warm"), 2000, 32).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_rss = proxy.rss_mib("VmRSS:").await.unwrap_or(f64::NAN);
    let before = status(admin).await["cache"]["bytes"]
        .as_f64()
        .unwrap_or(0.0)
        / 1048576.0;
    fill(proxy.addr, base, 40_000, 32).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_rss = proxy.rss_mib("VmRSS:").await.unwrap_or(f64::NAN);
    let after = status(admin).await["cache"]["bytes"]
        .as_f64()
        .unwrap_or(0.0)
        / 1048576.0;
    println!(
        "40,000 answers: the cache counts {:.1} MiB more, RSS grew {:.1} MiB (counted/grown {:.2})",
        after - before,
        after_rss - before_rss,
        (after - before) / (after_rss - before_rss)
    );
    proxy.stop().await;

    // A full cache and 2,000 idle keep-alive connections.
    let admin = free_port();
    let proxy = Process::proxy_bin(
        None,
        sim,
        &format!(
            "[budget]\nlimit = 1000000000\n[cache]\nenabled = true\nttl = \"{TTL_SECS}s\"\nmax_size = \"64MiB\"\n[admin]\naddr = \"{admin}\""
        ),
        None,
    )
    .await;
    fill(proxy.addr, base, 40_000, 32).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        let Ok(stream) = TcpStream::connect(proxy.addr).await else {
            continue;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        let request = Request::get(format!("{base}?n=1"))
            .header("host", proxy.addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        if let Ok(response) = sender.send_request(request).await {
            let _ = response.into_body().collect().await;
            idle.push(sender);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(admin).await;
    let rss = proxy.rss_mib("VmRSS:").await.unwrap_or(f64::NAN);
    println!(
        "max_size 64 MiB, full ({} entries, {:.1} MiB counted), {} idle keep-alive connections: RSS {rss:.1} MiB (goal <= 94 MiB)",
        s["cache"]["entries"],
        s["cache"]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        idle.len()
    );
    drop(idle);
    proxy.stop().await;
}
