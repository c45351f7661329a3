//! The budget over real sockets, refereed by the simulator: the store never has to throttle,
//! calls wait instead of failing, the store's headers are the truth, writes keep a reserve,
//! and when the store throttles anyway the call goes again instead of failing.

mod support;

use std::time::{Duration, Instant};

use bcproxy::config::Dialect;
use bcproxy::sim::{self, Fault, SimConfig};
use http::Request;
use support::*;

fn legacy_sim(limit: u64, window_ms: u64) -> SimConfig {
    SimConfig {
        limit,
        window: Duration::from_millis(window_ms),
        ..Default::default()
    }
}

fn budget_env<'a>(limit: &'a str, window: &'a str, max_wait: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("budget.limit", limit),
        ("budget.window", window),
        ("budget.max_wait", max_wait),
        ("budget.reserve_writes", "0"),
    ]
}

async fn get_all(http: Http, urls: Vec<String>) -> Vec<Reply> {
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let http = http.clone();
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

/// Three times the store's budget asked at once: every call waits its turn and succeeds, and
/// the store never answers 509.
#[tokio::test]
async fn the_store_never_has_to_throttle() {
    let sim = start_sim_with(legacy_sim(10, 1200)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("10", "1200ms", "10s"))).await;
    let http = Http::default();
    let started = Instant::now();
    let urls = (0..30)
        .map(|i| format!("{}/api/v2/products/{}", proxy.url(), i % 60 + 1))
        .collect();
    let replies = get_all(http.clone(), urls).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let stats = sim.sim.stats(false);
    assert_eq!(stats.throttled, 0, "the store had to throttle");
    assert_eq!(stats.calls, 30);
    // 30 calls at 10 per window take at least two more windows.
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
}

/// A call that cannot be served within `budget.max_wait` gets the store's 509 at once, with
/// `Retry-After` and `X-BC-ApiLimit-Remaining: 0`, and nothing reaches the store.
#[tokio::test]
async fn past_max_wait_the_app_gets_509_with_retry_after() {
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("3", "60s", "2s"))).await;
    let http = Http::default();
    for _ in 0..3 {
        assert_eq!(
            http.get(&format!("{}/api/v2/time", proxy.url()))
                .await
                .status,
            200
        );
    }
    let started = Instant::now();
    let refused = http
        .get_with(
            &format!("{}/api/v2/time", proxy.url()),
            &[("accept", "application/xml")],
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the refusal was not immediate"
    );
    assert_eq!(refused.status, 509);
    assert_eq!(refused.header("x-bc-apilimit-remaining"), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((60..=62).contains(&retry), "Retry-After {retry}");
    assert!(
        refused.text().contains("<status>509</status>"),
        "{}",
        refused.text()
    );
    assert_eq!(sim.sim.stats(false).calls, 3);
}

/// At most `budget.max_queue` calls wait; the next ones get the throttle answer at once, and
/// the waiting ones go when the window frees.
#[tokio::test]
async fn the_queue_is_bounded() {
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let mut env = budget_env("1", "1200ms", "10s");
    env.push(("budget.max_queue", "2"));
    let proxy = start_proxy(settings(&sim.url(), "", &env)).await;
    let http = Http::default();
    assert_eq!(
        http.get(&format!("{}/api/v2/time", proxy.url()))
            .await
            .status,
        200
    );
    let queued = get_all(
        http.clone(),
        (0..2)
            .map(|_| format!("{}/api/v2/time", proxy.url()))
            .collect(),
    );
    let queued = tokio::spawn(queued);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(refused.status, 509);
    assert!(started.elapsed() < Duration::from_millis(300));
    let queued = queued.await.unwrap();
    assert_eq!(
        queued.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200]
    );
    assert_eq!(sim.sim.stats(false).calls, 3);
}

/// An app that gives up while its call waits leaves the queue and spends nothing.
#[tokio::test]
async fn a_call_abandoned_in_the_queue_spends_nothing() {
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("1", "1200ms", "10s"))).await;
    let http = Http::default();
    assert_eq!(
        http.get(&format!("{}/api/v2/time", proxy.url()))
            .await
            .status,
        200
    );
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /api/v2/products/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sim.sim.stats(false).calls,
        1,
        "the abandoned call reached the store"
    );
    // Its slot was never spent: the next call goes at once.
    let started = Instant::now();
    let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
}

/// GETs may not use the last `budget.reserve_writes` slots; writes may.
#[tokio::test]
async fn writes_keep_their_reserve() {
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let mut env = budget_env("5", "60s", "300ms");
    env.retain(|(k, _)| *k != "budget.reserve_writes");
    env.push(("budget.reserve_writes", "2"));
    let proxy = start_proxy(settings(&sim.url(), "", &env)).await;
    let http = Http::default();
    for _ in 0..3 {
        assert_eq!(
            http.get(&format!("{}/api/v2/brands/1", proxy.url()))
                .await
                .status,
            200
        );
    }
    let read = http.get(&format!("{}/api/v2/brands/1", proxy.url())).await;
    assert_eq!(read.status, 509, "a GET used the write reserve");
    assert_eq!(read.header("x-bc-apilimit-remaining"), Some("0"));
    let post = |name: &str| {
        Request::post(format!("{}/api/v2/brands", proxy.url()))
            .header("content-type", "application/json")
            .body(body(format!("{{\"name\":\"{name}\"}}")))
            .unwrap()
    };
    assert_eq!(http.send(post("Reserve one")).await.status, 201);
    assert_eq!(http.send(post("Reserve two")).await.status, 201);
    assert_eq!(http.send(post("Reserve three")).await.status, 509);
    assert_eq!(sim.sim.stats(false).calls, 5);
}

/// Other clients of the store spend its budget too: the proxy learns it from the next
/// response's header, reports it to apps, and queues instead of overrunning the store.
#[tokio::test]
async fn the_store_headers_are_the_truth() {
    let sim = start_sim_with(legacy_sim(100, 60_000)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("100", "60s", "300ms"))).await;
    let http = Http::default();
    let first = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(first.header("x-bc-apilimit-remaining"), Some("99"));
    assert_eq!(sim.sim.spend(95), 4);
    let second = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(
        second.header("x-bc-apilimit-remaining"),
        Some("3"),
        "the store's own count wins"
    );
    for left in ["2", "1", "0"] {
        let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-bc-apilimit-remaining"), Some(left));
    }
    let refused = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(refused.status, 509, "the proxy's own throttle answer");
    let stats = sim.sim.stats(false);
    assert_eq!(
        stats.throttled, 0,
        "the proxy overran a budget the store had reported spent"
    );
    assert_eq!(stats.calls, 5);
}

/// When the store throttles anyway (others spent everything), no app sees a 509: sends stop,
/// one call probes per window step until the store answers again, and every call, the write
/// included, is sent again and applied exactly once.
#[tokio::test]
async fn when_the_store_throttles_the_calls_are_sent_again() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(legacy_sim(5, 1200)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("100", "1200ms", "8s"))).await;
    let http = Http::default();
    sim.sim.spend(5);
    let mut urls: Vec<String> = (0..3)
        .map(|i| format!("{}/api/v2/products/{}", proxy.url(), i + 1))
        .collect();
    urls.push(format!("{}/api/v2/time", proxy.url()));
    let reads = tokio::spawn(get_all(http.clone(), urls));
    let write = http
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Sent again, made once ✓"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(write.status, 201, "{}", write.text());
    let reads = reads.await.unwrap();
    assert!(
        reads.iter().all(|r| r.status == 200),
        "{:?}",
        reads.iter().map(|r| r.status).collect::<Vec<_>>()
    );

    let stats = sim.sim.stats(true);
    assert!(stats.throttled >= 1);
    let created: Vec<_> = stats
        .log
        .iter()
        .filter(|c| c.method == "POST" && c.status == 201)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "the write was applied {} times",
        created.len()
    );
    sim.sim.reset(false);
    let brands = Http::default()
        .direct(&format!("{}/api/v2/brands/count", sim.url()), &[])
        .await;
    assert_eq!(brands.json()["count"], 7);
    // No burst into a store that said no: once the first 509 is back (the calls already in
    // flight then could not know), 509s come one at a time, a step (20 ms) apart.
    let refused: Vec<f64> = stats
        .log
        .iter()
        .filter(|c| c.status == 509)
        .map(|c| c.at_ms)
        .collect();
    let first = refused[0];
    let after: Vec<f64> = refused
        .iter()
        .copied()
        .filter(|&t| t > first + 5.0)
        .collect();
    assert!(!after.is_empty(), "no probing: {refused:?}");
    for pair in after.windows(2) {
        assert!(
            pair[1] - pair[0] >= 15.0,
            "509s {:.1} ms apart: {refused:?}",
            pair[1] - pair[0]
        );
    }
    let lines = logs.lines();
    for event in [
        "budget.throttled_by_store",
        "budget.paused",
        "budget.resumed",
    ] {
        assert!(
            lines.iter().any(|l| l["message"] == event),
            "no {event} event"
        );
    }
}

fn oauth_settings(
    sim: &bcproxy::sim::RunningSim,
    limit: &str,
    window: &str,
    max_wait: &str,
) -> bcproxy::config::Settings {
    settings(
        &format!("{}/stores/{}", sim.url(), sim::DEFAULT_STORE_HASH),
        "",
        &[
            ("upstream.auth", "token"),
            ("budget.dialect", "oauth"),
            ("budget.limit", limit),
            ("budget.window", window),
            ("budget.max_wait", max_wait),
            ("budget.reserve_writes", "0"),
        ],
    )
}

/// OAuth: the proxy follows the store's stated quota and window, so a burst several times the
/// quota is spread over windows without a single 429; the answers carry the proxy's view in
/// `X-Rate-Limit-Requests-Left`.
#[tokio::test]
async fn oauth_follows_the_stores_window() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        limit: 5,
        window: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(oauth_settings(&sim, "5", "800ms", "10s")).await;
    let http = Http::default();
    let first = http
        .get(&format!("{}/v3/catalog/products/1", proxy.url()))
        .await;
    assert_eq!(first.status, 200);
    assert!(first.header("x-rate-limit-requests-left").is_some());
    let urls = (0..15)
        .map(|i| format!("{}/v3/catalog/products/{}", proxy.url(), i + 1))
        .collect();
    let replies = get_all(http.clone(), urls).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        sim.sim.stats(false).throttled,
        0,
        "the store had to answer 429"
    );
}

/// OAuth with a wrong first guess (150 per 30 s against a store allowing 3 per 800 ms): the
/// store's headers correct it, and a call the store answered 429 is sent again after the
/// stated reset, so the app still gets its answer.
#[tokio::test]
async fn oauth_429s_are_absorbed() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        limit: 3,
        window: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(oauth_settings(&sim, "150", "30s", "10s")).await;
    let http = Http::default();
    sim.sim.spend(3);
    let urls = (0..6)
        .map(|i| format!("{}/v3/catalog/brands/{}", proxy.url(), i % 6 + 1))
        .collect();
    let replies = get_all(http.clone(), urls).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(sim.sim.stats(false).throttled >= 1);
    let view = Http::default()
        .get(&format!("{}/v3/catalog/brands/1", proxy.url()))
        .await;
    let left: u64 = view
        .header("x-rate-limit-requests-left")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        left <= 3,
        "the proxy still believes the first guess: {left}"
    );
}

/// A 429 with none of the rate headers (the platform shedding load) is backed off and the call
/// sent again.
#[tokio::test]
async fn a_bare_429_is_backed_off_and_sent_again() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        limit: 100,
        window: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(oauth_settings(&sim, "100", "30s", "10s")).await;
    sim.sim.inject(
        Fault::Status {
            status: 429,
            location: None,
        },
        1,
    );
    let started = Instant::now();
    let reply = Http::default()
        .get(&format!("{}/v3/catalog/products/2", proxy.url()))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "no back-off: {:?}",
        started.elapsed()
    );
    assert_eq!(sim.sim.stats(false).calls, 2);
}

/// The proxy's own throttle answer in the oauth dialect: 429 with the four X-Rate-Limit
/// headers, X-Retry-After and Retry-After, in v3 shape on v3 paths.
#[tokio::test]
async fn oauth_throttle_answer_has_every_header() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        limit: 100,
        window: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(oauth_settings(&sim, "2", "30s", "200ms")).await;
    let http = Http::default();
    sim.sim.set_limit(2);
    for _ in 0..2 {
        assert_eq!(
            http.get(&format!("{}/v3/catalog/products/1", proxy.url()))
                .await
                .status,
            200
        );
    }
    let refused = http
        .get(&format!("{}/v3/catalog/products/1", proxy.url()))
        .await;
    assert_eq!(refused.status, 429);
    for header in [
        "x-rate-limit-time-window-ms",
        "x-rate-limit-time-reset-ms",
        "x-rate-limit-requests-quota",
        "x-rate-limit-requests-left",
        "x-retry-after",
        "retry-after",
    ] {
        assert!(refused.header(header).is_some(), "missing {header}");
    }
    assert_eq!(refused.header("x-rate-limit-requests-left"), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        refused.header("x-retry-after"),
        refused.header("retry-after")
    );
    assert_eq!(refused.json()["status"], 429);
    assert_eq!(sim.sim.stats(false).throttled, 0);
}

/// Each access event carries the budget left and the time queued; a summary event reports the
/// budget, the queue and what happened since the last one.
#[tokio::test]
async fn the_log_shows_the_budget() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let mut env = budget_env("2", "600ms", "5s");
    env.push(("log.summary_every", "300ms"));
    let proxy = start_proxy(settings(&sim.url(), "", &env)).await;
    let http = Http::default();
    let replies = get_all(
        http.clone(),
        (0..3)
            .map(|_| format!("{}/api/v2/time", proxy.url()))
            .collect(),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.stop().await;
    let access = logs.access();
    assert_eq!(access.len(), 3);
    assert!(access.iter().all(|l| l["budget_remaining"].is_u64()));
    let waited = access
        .iter()
        .filter(|l| l["wait_ms"].as_f64().unwrap() > 500.0)
        .count();
    assert_eq!(waited, 1, "one call waited for the window: {access:?}");
    let summary = logs
        .lines()
        .into_iter()
        .find(|l| l["message"] == "summary" && l["calls"].as_u64() > Some(0))
        .expect("a summary");
    for field in [
        "budget_remaining",
        "budget_limit",
        "queue_depth",
        "sent",
        "queued",
        "throttled",
        "store_throttles",
        "upstream_errors",
    ] {
        assert!(
            summary.get(field).is_some(),
            "summary lacks {field}: {summary}"
        );
    }
    assert_eq!(summary["budget_limit"], 2);
    assert_eq!(summary["queued"], 1);
}

/// The ledger survives a restart through `budget.state_file`; a corrupt or foreign file is a
/// warning and a clean start.
#[tokio::test]
async fn the_ledger_survives_restarts() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(legacy_sim(1000, 60_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("budget.json");
    let state_str = state.display().to_string();
    let mut env = budget_env("10", "60s", "300ms");
    env.push(("budget.state_file", &state_str));
    let http = Http::default();

    let first = start_proxy(settings(&sim.url(), "", &env)).await;
    for _ in 0..4 {
        assert_eq!(
            http.get(&format!("{}/api/v2/time", first.url()))
                .await
                .status,
            200
        );
    }
    first.stop().await;
    assert!(state.exists());

    let second = start_proxy(settings(&sim.url(), "", &env)).await;
    let reply = http.get(&format!("{}/api/v2/time", second.url())).await;
    assert_eq!(
        reply.header("x-bc-apilimit-remaining"),
        Some("5"),
        "the restart forgot the budget spent"
    );
    second.stop().await;

    std::fs::write(&state, b"garbage").unwrap();
    let third = start_proxy(settings(&sim.url(), "", &env)).await;
    assert_eq!(
        http.get(&format!("{}/api/v2/time", third.url()))
            .await
            .status,
        200
    );
    third.stop().await;
    assert!(logs.text().contains("is not a bcproxy budget state file"));

    let other = start_sim_with(legacy_sim(1000, 60_000)).await;
    let foreign = start_proxy(settings(&other.url(), "", &env)).await;
    let reply = http.get(&format!("{}/api/v2/time", foreign.url())).await;
    assert_eq!(
        reply.header("x-bc-apilimit-remaining"),
        Some("9"),
        "a foreign ledger was used"
    );
    foreign.stop().await;
    assert!(logs.text().contains("was written for another store"));
}

/// A pause ends on time by itself: once its time is up, `/status` (and the metrics and
/// summaries, which read the same view) say "not paused" without waiting for a call to probe.
#[tokio::test]
async fn a_pause_ends_on_time_without_a_call() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("budget.limit", "1000"),
            // One step is 300 ms: the pause after a 509 lasts that long.
            ("budget.window", "18s"),
            ("budget.max_wait", "50ms"),
        ],
    ))
    .await;
    sim.sim.inject(
        Fault::Status {
            status: 509,
            location: None,
        },
        1,
    );
    // The call meets the 509; its resend would wait past max_wait, so the app gets the
    // throttle answer and no call is left to probe.
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/1", proxy.url()))
        .await;
    assert_eq!(reply.status, 509);
    let paused = || proxy.status().snapshot().budget.paused;
    assert!(paused(), "the 509 did not pause the budget");
    let since = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || !paused()).await,
        "still paused with no call 2 s after a 300 ms pause"
    );
    assert!(
        since.elapsed() >= Duration::from_millis(200),
        "{:?}",
        since.elapsed()
    );
    // The next call is the probe, and it goes at once.
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/1", proxy.url()))
        .await;
    assert_eq!(reply.status, 200);
    assert!(!paused());
}

/// `wait_ms` says how long a call waited whatever came of it: a GET (through the cache) and a
/// write that waited for an upstream slot until `max_wait` and then got the throttle answer
/// both log the wait.
#[tokio::test(flavor = "current_thread")]
async fn wait_ms_is_logged_when_the_wait_ends_in_a_refusal() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(900),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("upstream.max_concurrency", "1"),
            ("budget.max_wait", "300ms"),
            ("cache.enabled", "true"),
        ],
    ))
    .await;
    let http = Http::default();
    // Holds the only upstream slot for 900 ms.
    let first = {
        let http = http.clone();
        let url = format!("{}/api/v2/products/1", proxy.url());
        tokio::spawn(async move { http.get(&url).await })
    };
    assert!(
        eventually(Duration::from_secs(3), || sim.sim.stats(false).in_flight
            == 1)
        .await
    );
    let get_url = format!("{}/api/v2/products/2", proxy.url());
    let get = http.get(&get_url);
    let post = http.send(
        Request::post(format!("{}/api/v2/brands", proxy.url()))
            .header("content-type", "application/json")
            .body(body(r#"{"name":"Waited"}"#.to_string()))
            .unwrap(),
    );
    let (get, post) = tokio::join!(get, post);
    assert_eq!(get.status, 509, "{}", get.text());
    assert_eq!(post.status, 509, "{}", post.text());
    assert_eq!(first.await.unwrap().status, 200);
    let access = logs.access();
    for path in ["/api/v2/products/2", "/api/v2/brands"] {
        let line = access
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {access:?}"));
        let waited = line["wait_ms"].as_f64().unwrap();
        assert!(
            (250.0..2000.0).contains(&waited),
            "{path}: wait_ms {waited} after waiting until max_wait"
        );
    }
}

/// The log tells a throttle episode as a story: the store's first 509 and the pause it starts
/// (one WARN each), not a line per probe; one `budget.resumed` with how long it lasted, its
/// throttles and probes, and how many calls waited; and `budget.queueing` once when calls
/// start to wait.
#[tokio::test(flavor = "current_thread")]
async fn a_throttle_episode_is_told_once() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("budget.limit", "1000"),
            // One step is 50 ms: each pause after a 509 lasts that long.
            ("budget.window", "3s"),
            ("budget.max_wait", "10s"),
        ],
    ))
    .await;
    sim.sim.inject(
        Fault::Status {
            status: 509,
            location: None,
        },
        5,
    );
    let http = Http::default();
    let urls: Vec<String> = (1..=4)
        .map(|i| format!("{}/api/v2/products/{i}", proxy.url()))
        .collect();
    let first = {
        let http = http.clone();
        let url = urls[0].clone();
        tokio::spawn(async move { http.get(&url).await })
    };
    assert!(eventually(Duration::from_secs(3), || sim.sim.stats(false).calls >= 1).await);
    // Three more calls arrive while the store refuses: they wait.
    let replies = get_all(http.clone(), urls[1..].to_vec()).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(sim.sim.stats(false).by_status.get(&509), Some(&5));
    let lines = logs.lines();
    let named = |name: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["message"] == name).collect()
    };
    assert_eq!(named("budget.throttled_by_store").len(), 1, "{lines:?}");
    assert_eq!(named("budget.paused").len(), 1);
    let resumed = named("budget.resumed");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["throttles"], 5);
    assert_eq!(resumed[0]["probes"], 4);
    assert!(resumed[0]["waited"].as_u64().unwrap() >= 1, "{resumed:?}");
    assert!(
        resumed[0]["after_ms"].as_u64().unwrap() >= 150,
        "{resumed:?}"
    );
    let queueing = named("budget.queueing");
    assert_eq!(queueing.len(), 1, "{queueing:?}");
    assert!(queueing[0]["depth"].as_u64().unwrap() >= 1);
    let warnings = lines.iter().filter(|l| l["level"] == "WARN").count();
    assert_eq!(warnings, 2, "a WARN per probe: {lines:?}");
}

/// The store's report caps the proxy's view only while it holds (one step on a legacy store):
/// then the view goes back to the proxy's own count by itself, without a call.
#[tokio::test]
async fn the_store_report_cap_expires_on_time_without_a_call() {
    // The store allows 3 per 6 s; the proxy is told 1000 (another client spends the rest).
    let sim = start_sim_with(legacy_sim(3, 6_000)).await;
    let proxy = start_proxy(settings(&sim.url(), "", &budget_env("1000", "6s", "1s"))).await;
    let http = Http::default();
    for _ in 0..3 {
        let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
        assert_eq!(reply.status, 200);
    }
    let remaining = || proxy.status().snapshot().budget.remaining;
    assert_eq!(remaining(), 0, "the store's report of 0 left caps the view");
    // One step is 100 ms: the report no longer holds after it.
    assert!(
        eventually(Duration::from_secs(2), || remaining() == 997).await,
        "the view stayed capped: {}",
        remaining()
    );
}
