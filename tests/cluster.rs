//! Several proxies, one store budget, one cache, one set of invalidations, through a real
//! Redis: the machine's (each test under a cluster name of its own) or, for tests that stop
//! and restart it, one of the test's own.

mod support;

use std::time::Duration;

use bcproxy::app::RunningProxy;
use bcproxy::cluster::Mode;
use bcproxy::sim::{Fault, RunningSim, SimConfig};
use http::Request;
use support::redis::{OwnRedis, shared_url, unique_name};
use support::*;

fn legacy_sim(limit: u64, window_ms: u64) -> SimConfig {
    SimConfig {
        limit,
        window: Duration::from_millis(window_ms),
        ..Default::default()
    }
}

/// Proxies `a`, `b`, `c`… in front of `sim`, sharing cluster `name` through `redis`.
async fn cluster(
    sim: &RunningSim,
    redis: &str,
    name: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Vec<RunningProxy> {
    let mut proxies = Vec::new();
    for i in 0..n {
        let instance = ((b'a' + i as u8) as char).to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("cluster.redis_url", redis),
            ("cluster.name", name),
            ("cluster.instance", &instance),
        ];
        vars.extend_from_slice(env);
        proxies.push(start_proxy(settings(&sim.url(), "", &vars)).await);
    }
    proxies
}

fn mode(proxy: &RunningProxy) -> Mode {
    proxy.status().cluster().expect("in a cluster").mode()
}

async fn all_in_mode(proxies: &[RunningProxy], want: fn(&Mode) -> bool) -> bool {
    eventually(Duration::from_secs(8), || {
        proxies.iter().all(|p| want(&mode(p)))
    })
    .await
}

/// GETs of `paths` through `proxy`, all at once.
fn spawn_gets(
    http: &Http,
    proxy: &RunningProxy,
    paths: Vec<String>,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    paths
        .into_iter()
        .map(|path| {
            let http = http.clone();
            let url = format!("{}{path}", proxy.url());
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn put(url: &str, json: &str) -> Request<TestBody> {
    Request::put(url)
        .header("content-type", "application/json")
        .body(body(json.to_string()))
        .unwrap()
}

/// Demand five times the budget, spread over three processes: the store never throttles,
/// every write goes through (on the cluster-wide write reserve), and the three together send
/// no more than the one budget. Alone, each would have spent the whole budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_spend_one_budget() {
    let sim = start_sim_with(legacy_sim(30, 4000)).await;
    let name = unique_name("budget");
    let proxies = cluster(
        &sim,
        &shared_url(),
        &name,
        3,
        &[
            ("budget.limit", "30"),
            ("budget.window", "4s"),
            ("budget.max_wait", "1500ms"),
            ("budget.reserve_writes", "6"),
        ],
    )
    .await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let paths = (0..48)
            .map(|k| format!("/api/v2/time?n={}", i * 100 + k))
            .collect();
        reads.extend(spawn_gets(&http, proxy, paths));
        for w in 0..2 {
            let http = http.clone();
            let url = format!("{}/api/v2/brands/1", proxy.url());
            let json = format!(r#"{{"name":"Brand {i}-{w}"}}"#);
            writes.push(tokio::spawn(
                async move { http.send(put(&url, &json)).await },
            ));
        }
    }
    let reads = join(reads).await;
    let writes = join(writes).await;
    let stats = sim.sim.stats(false);
    assert_eq!(stats.throttled, 0, "the store throttled: {stats:?}");
    assert!(
        stats.calls <= 30,
        "three processes sent {} calls on a budget of 30",
        stats.calls
    );
    for w in &writes {
        assert_eq!(w.status, 200, "a write was not made: {}", w.text());
    }
    let ok = reads.iter().filter(|r| r.status == 200).count();
    let refused = reads.iter().filter(|r| r.status == 509).count();
    assert_eq!(
        ok + refused,
        reads.len(),
        "only answers and throttle answers"
    );
    assert_eq!(ok + writes.len(), stats.calls as usize);
    assert!(ok >= 20, "the budget was not used: {ok} reads went");
    // Every process shows the cluster's view of what is left.
    for proxy in &proxies {
        assert!(proxy.status().snapshot().budget.remaining <= 2);
    }
}

/// A 509 seen by one process pauses all three: from the moment the store answered it, the
/// store sees one call at a time (each probe's answer before the next call) until a probe
/// gets through; then every call flows, and none was lost.
#[tokio::test]
async fn a_509_pauses_every_process_and_one_probe_goes_at_a_time() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(legacy_sim(5, 1200)).await;
    let name = unique_name("pause");
    let proxies = cluster(
        &sim,
        &shared_url(),
        &name,
        3,
        &[
            ("budget.limit", "100"),
            ("budget.window", "1200ms"),
            ("budget.max_wait", "10s"),
            ("budget.reserve_writes", "0"),
            ("log.summary_every", "300ms"),
        ],
    )
    .await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    sim.sim.spend(5);
    let http = Http::default();
    let first = spawn_gets(&http, &proxies[0], vec!["/api/v2/products/1".into()]);
    assert!(
        eventually(Duration::from_secs(5), || proxies[0]
            .status()
            .snapshot()
            .budget
            .paused)
        .await,
        "the 509 did not pause the budget"
    );
    let mut rest = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let paths = (0..4)
            .map(|k| format!("/api/v2/products/{}", 2 + i * 4 + k))
            .collect();
        rest.extend(spawn_gets(&http, proxy, paths));
    }
    let mut replies = join(first).await;
    replies.extend(join(rest).await);
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let mut log = sim.sim.stats(true).log;
    log.sort_by_key(|c| c.arrived);
    let first_509 = log.iter().position(|c| c.status == 509).expect("a 509");
    let through = log[first_509..]
        .iter()
        .position(|c| c.status == 200)
        .expect("a probe got through")
        + first_509;
    assert!(
        through > first_509 + 1,
        "no probe was refused: the test proves nothing"
    );
    for pair in log[first_509..=through].windows(2) {
        assert!(
            pair[1].arrived > pair[0].answered,
            "two calls at the store at once while paused: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(log.iter().filter(|c| c.status == 200).count(), 13);
    let lines = logs.lines();
    assert!(lines.iter().any(|l| l["message"] == "budget.paused"));
    // The summary says how many instances share the budget (once their heartbeats were seen).
    assert!(
        eventually(Duration::from_secs(5), || logs
            .lines()
            .iter()
            .any(|l| l["message"] == "summary" && l["instances"] == 3))
        .await,
        "no summary counted the three instances"
    );
}

/// A write through A drops the product from the shared cache and, once B has the
/// invalidation, from B's own cache: B then shows the new product.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_process_is_seen_through_the_others() {
    let sim = start_sim().await;
    let name = unique_name("write");
    let proxies = cluster(
        &sim,
        &shared_url(),
        &name,
        2,
        &[("cache.enabled", "true"), ("cache.ttl", "60s")],
    )
    .await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let (a, b) = (&proxies[0], &proxies[1]);
    let http = Http::default();
    let url = |p: &RunningProxy| format!("{}/api/v2/products/5", p.url());
    let first = http.get(&url(a)).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let old_name = first.json()["name"].as_str().unwrap().to_string();
    let shared = Http::h2().get(&url(b)).await;
    assert_eq!(
        shared.header("x-cache"),
        Some("SHARED"),
        "B asked the shared cache (over h2)"
    );
    assert_eq!(shared.text(), first.text());
    assert_eq!(http.get(&url(b)).await.header("x-cache"), Some("HIT"));
    assert_eq!(sim.sim.stats(false).calls, 1);

    let received = |p: &RunningProxy| {
        p.status()
            .cluster()
            .unwrap()
            .view()
            .counts
            .invalidations_received
    };
    let before = received(b);
    let written = http
        .send(put(&url(a), r#"{"name":"Renamed through A ✓"}"#))
        .await;
    assert_eq!(written.status, 200, "{}", written.text());
    assert!(
        eventually(Duration::from_secs(5), || received(b) > before).await,
        "B never heard of the write"
    );
    let after = http.get(&url(b)).await;
    assert_eq!(
        after.json()["name"],
        "Renamed through A ✓",
        "B served {old_name:?}"
    );
    assert_eq!(after.header("x-cache"), Some("MISS"));
    // And A, whose shared entry went with the write, gets B's fresh answer.
    let a_after = http.get(&url(a)).await;
    assert_eq!(a_after.json()["name"], "Renamed through A ✓");
    assert_eq!(a_after.header("x-cache"), Some("SHARED"));
}

/// Twenty concurrent GETs of one key, over two processes, make one store call: one leads, the
/// others share its answer (in its process) or wait for it in the shared cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_across_processes_make_one_store_call() {
    let sim = start_sim().await;
    sim.sim.set_latency(Duration::from_millis(300));
    let name = unique_name("coalesce");
    let proxies = cluster(&sim, &shared_url(), &name, 2, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    let path = "/api/v2/products?page=1&limit=5".to_string();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        for proxy in &proxies {
            tasks.extend(spawn_gets(&http, proxy, vec![path.clone()]));
        }
    }
    let replies = join(tasks).await;
    assert_eq!(sim.sim.stats(false).calls, 1, "more than one store call");
    let body = replies[0].text();
    let mut outcomes: Vec<&str> = Vec::new();
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), body);
        outcomes.push(r.header("x-cache").unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == "MISS").count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"SHARED"), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| ["MISS", "COALESCED", "SHARED"].contains(o)),
        "{outcomes:?}"
    );
}

/// A GET that was at the store when another process wrote the same product never puts the
/// old answer back: not in its own cache, not in the shared one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_in_flight_during_a_write_elsewhere_is_not_stored() {
    let sim = start_sim().await;
    let name = unique_name("inflight");
    let proxies = cluster(&sim, &shared_url(), &name, 3, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let (a, b, c) = (&proxies[0], &proxies[1], &proxies[2]);
    let http = Http::default();
    let path = "/api/v2/products/7";
    // B's GET reads the old product, and its answer is held back at the store.
    sim.sim.inject(Fault::Delay { ms: 800 }, 1);
    let slow = spawn_gets(&http, b, vec![path.into()]);
    assert!(
        eventually(Duration::from_secs(5), || sim.sim.stats(false).calls == 1).await,
        "B's GET never reached the store"
    );
    let written = http
        .send(put(&format!("{}{path}", a.url()), r#"{"name":"New name"}"#))
        .await;
    assert_eq!(written.status, 200);
    let old = join(slow).await.remove(0);
    assert_eq!(old.status, 200);
    assert_ne!(
        old.json()["name"],
        "New name",
        "the delay did not hold the old answer"
    );
    for p in [b, c, a] {
        let now = http.get(&format!("{}{path}", p.url())).await;
        assert_eq!(
            now.json()["name"],
            "New name",
            "{} served the old product",
            p.url()
        );
    }
}

/// A process holding the lease for a key dies (its lease is left in Redis, unrenewed): the
/// others wait for it while it lasts, then one takes over, and the store is called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_taken_over_when_its_lease_ends() {
    let sim = start_sim().await;
    let name = unique_name("takeover");
    let proxies = cluster(&sim, &shared_url(), &name, 1, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let path = "/api/v2/products/3";
    let key = bcproxy::cache::Key {
        target: path.into(),
        xml: false,
        gzip: false,
    };
    let lock = bcproxy::cluster::Keys::new(&name)
        .key(&format!("l:{}", bcproxy::cluster::shared::hash(&key)));
    let mut con = support::redis::connect(&shared_url()).await;
    let _: () = ::redis::cmd("SET")
        .arg(&lock)
        .arg("a-process-that-died")
        .arg("PX")
        .arg(1500)
        .query_async(&mut con)
        .await
        .unwrap();
    let http = Http::default();
    let waiting = spawn_gets(&http, &proxies[0], vec![path.into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "it did not wait for the holder"
    );
    assert!(!waiting[0].is_finished());
    let reply = join(waiting).await.remove(0);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// Redis stops mid-run: every process goes on, degraded, each within its share of what the
/// cluster had left; Redis comes back empty: each adds its own sends back before sending
/// more. The store never throttles.
#[tokio::test]
async fn redis_going_away_and_coming_back_empty_never_overspends() {
    let (logs, _guard) = Logs::capture();
    let mut redis = OwnRedis::start(&[]).await;
    let sim = start_sim_with(legacy_sim(30, 8000)).await;
    let name = unique_name("outage");
    let proxies = cluster(
        &sim,
        &redis.url(),
        &name,
        3,
        &[
            ("budget.limit", "30"),
            ("budget.window", "8s"),
            ("budget.max_wait", "300ms"),
            ("budget.reserve_writes", "0"),
            ("cluster.expected_instances", "3"),
        ],
    )
    .await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    let gets = |round: usize, n: usize| -> Vec<tokio::task::JoinHandle<Reply>> {
        let mut tasks = Vec::new();
        for (i, proxy) in proxies.iter().enumerate() {
            let paths = (0..n)
                .map(|k| format!("/api/v2/time?n={}", round * 1000 + i * 100 + k))
                .collect();
            tasks.extend(spawn_gets(&http, proxy, paths));
        }
        tasks
    };
    // 15 of 30 spent while connected.
    let first = join(gets(1, 5)).await;
    assert!(
        first.iter().all(|r| r.status == 200),
        "{:?}",
        first.iter().map(|r| r.text()).collect::<Vec<_>>()
    );

    redis.stop();
    assert!(
        all_in_mode(&proxies, |m| matches!(m, Mode::Degraded(_))).await,
        "not degraded"
    );
    // Each may now spend at most its share (10), its own 5 included.
    let second = join(gets(2, 20)).await;
    let ok = second.iter().filter(|r| r.status == 200).count();
    assert!(second.iter().all(|r| [200, 509].contains(&r.status)));
    assert!(ok >= 10, "degraded processes refused everything: {ok}");
    assert!(ok <= 15, "degraded processes overspent: {ok} more sends");
    assert_eq!(sim.sim.stats(false).throttled, 0);
    // The process keeps answering while degraded, and readiness is not affected.
    assert!(
        logs.lines()
            .iter()
            .any(|l| l["message"] == "cluster.degraded")
    );

    redis.restart().await;
    assert!(
        all_in_mode(&proxies, |m| *m == Mode::Up).await,
        "not restored"
    );
    // Once every process has rejoined, none keeps to its share any more: the shared ledger
    // alone decides, and it must hold every send made before.
    assert!(
        eventually(Duration::from_secs(5), || proxies.iter().all(|p| !p
            .status()
            .cluster()
            .unwrap()
            .view()
            .recovering))
        .await
    );
    let third = join(gets(3, 10)).await;
    let stats = sim.sim.stats(false);
    assert_eq!(stats.throttled, 0, "{stats:?}");
    assert!(
        stats.calls <= 30,
        "{} calls on a budget of 30: the sends made before the restart were forgotten",
        stats.calls
    );
    assert!(third.iter().all(|r| [200, 509].contains(&r.status)));
    assert!(
        logs.lines()
            .iter()
            .any(|l| l["message"] == "cluster.restored")
    );
    // The shared ledger holds every process's sends again.
    let keys = support::redis::keys_of(&redis.url(), &name).await;
    assert!(keys.iter().any(|k| k.ends_with(":sends")), "{keys:?}");
}

/// A wrong Redis password: the proxy serves, degraded, says why, and the password appears
/// nowhere (logs, `/status`). With the right one (from a file) it connects.
#[tokio::test]
async fn a_wrong_password_is_a_clear_degraded_reason_and_never_shown() {
    let (logs, _guard) = Logs::capture();
    let redis = OwnRedis::start(&["--requirepass", "right-horse-battery"]).await;
    let sim = start_sim().await;
    let name = unique_name("auth");
    let wrong = "wrong-staple-9f3a";
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("cluster.redis_url", &redis.url()),
            ("cluster.name", &name),
            ("cluster.redis_password", wrong),
            ("admin.addr", "127.0.0.1:0"),
        ],
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            mode(&proxy),
            Mode::Degraded(ref r) if r.contains("authentication failed")
        ))
        .await,
        "{:?}",
        mode(&proxy)
    );
    let http = Http::default();
    let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(reply.status, 200, "degraded still serves");
    let status = proxy.status().snapshot();
    let view = status.cluster.as_ref().unwrap();
    assert_eq!(view.mode, "degraded");
    let text = logs.text();
    assert!(text.contains("cluster.degraded"));
    assert!(text.contains("authentication failed"));
    for secret in [wrong, "right-horse-battery"] {
        assert!(!text.contains(secret), "the password reached the log");
        assert!(!format!("{view:?}").contains(secret));
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "right-horse-battery\n").unwrap();
    let right = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("cluster.redis_url", &redis.url()),
            ("cluster.name", &name),
            ("cluster.redis_password_file", file.to_str().unwrap()),
        ],
    ))
    .await;
    assert!(eventually(Duration::from_secs(5), || mode(&right) == Mode::Up).await);
    assert!(!logs.text().contains("right-horse-battery"));
}

/// Every key the cluster writes carries its hash tag and format version, and expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_carry_the_hash_tag_the_version_and_an_expiry() {
    let sim = start_sim().await;
    let name = unique_name("keys");
    let proxies = cluster(&sim, &shared_url(), &name, 1, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    http.get(&format!("{}/api/v2/products/1", proxies[0].url()))
        .await;
    let keys = support::redis::keys_of(&shared_url(), &name).await;
    assert!(keys.len() >= 5, "{keys:?}");
    let mut con = support::redis::connect(&shared_url()).await;
    for key in &keys {
        assert!(key.starts_with(&format!("bcproxy:{{{name}}}:v1:")), "{key}");
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        // -1: no expiry (the failure); -2: gone since it was listed (a fetch's lease, released
        // when the fetch ended), which is fine.
        assert!(ttl > 0 || ttl == -2, "{key} never expires ({ttl})");
    }
}

/// `rediss://` trusts what the upstream trusts: with the CA in `upstream.ca_file` it
/// connects; without it, the server's certificate is refused (degraded, saying why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_what_the_upstream_trusts() {
    let files = tls_files();
    let redis = OwnRedis::start_tls(&files).await;
    let sim = start_sim().await;
    let name = unique_name("tls");
    let url = redis.url();
    let trusted = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("cluster.redis_url", &url),
            ("cluster.name", &name),
            ("upstream.ca_file", files.ca.to_str().unwrap()),
        ],
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || mode(&trusted) == Mode::Up).await,
        "{:?}",
        mode(&trusted)
    );
    let stranger = start_proxy(settings(
        &sim.url(),
        "",
        &[("cluster.redis_url", &url), ("cluster.name", &name)],
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            mode(&stranger),
            Mode::Degraded(_)
        ))
        .await,
        "{:?}",
        mode(&stranger)
    );
    let Mode::Degraded(reason) = mode(&stranger) else {
        unreachable!()
    };
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
}

/// A Redis user from the URL (ACL) with its password from the environment; a user that may
/// not read the server's config still connects (the eviction check is skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_in_the_url_connects() {
    let redis = OwnRedis::start(&[
        "--user",
        "bcproxy",
        "on",
        ">acl-pass-5521",
        "~*",
        "&*",
        "+@all",
        "-config",
    ])
    .await;
    let sim = start_sim().await;
    let name = unique_name("acl");
    let url = format!("redis://bcproxy@127.0.0.1:{}/0", redis.port);
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("cluster.redis_url", &url),
            ("cluster.name", &name),
            ("cluster.redis_password", "acl-pass-5521"),
            ("cache.enabled", "true"),
        ],
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || mode(&proxy) == Mode::Up).await,
        "{:?}",
        mode(&proxy)
    );
    let http = Http::default();
    let reply = http
        .get(&format!("{}/api/v2/products/2", proxy.url()))
        .await;
    assert_eq!(reply.status, 200);
    let keys = support::redis::keys_of(&redis.url(), &name).await;
    assert!(keys.iter().any(|k| k.contains(":c:")), "{keys:?}");
}

/// An eviction policy that could drop the budget's keys gets a warning at connect; the
/// cluster still works.
#[tokio::test]
async fn an_eviction_policy_that_could_drop_budget_keys_is_warned_about() {
    let (logs, _guard) = Logs::capture();
    let redis =
        OwnRedis::start(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]).await;
    let sim = start_sim().await;
    let name = unique_name("evict");
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[("cluster.redis_url", &redis.url()), ("cluster.name", &name)],
    ))
    .await;
    assert!(eventually(Duration::from_secs(5), || mode(&proxy) == Mode::Up).await);
    let lines = logs.lines();
    let warning = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cluster.eviction_policy"))
        })
        .expect("no warning about allkeys-lru");
    assert_eq!(warning["policy"], "allkeys-lru");
    assert!(!lines.iter().any(|l| l["message"] == "cluster.degraded"));
}

/// Degraded is a mode, not an outage: `/readyz` stays 200, `/metrics` says the cluster is
/// down, `/status` says why, and calls are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_stays_ready_and_says_so() {
    let sim = start_sim().await;
    let name = unique_name("ready");
    let dead = dead_port().await;
    let url = format!("redis://{dead}/0");
    let proxy = start_proxy_with_admin(
        settings(
            &sim.url(),
            "",
            &[
                ("cluster.redis_url", &url),
                ("cluster.name", &name),
                ("cluster.expected_instances", "4"),
                ("budget.limit", "400"),
            ],
        ),
        None,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            mode(&proxy),
            Mode::Degraded(ref r) if r.contains("connection refused")
        ))
        .await,
        "{:?}",
        mode(&proxy)
    );
    let http = Http::default();
    let served = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(served.status, 200, "{}", served.text());
    let admin = format!("http://{}", proxy.admin_addr.expect("admin listener"));
    assert_eq!(http.get(&format!("{admin}/readyz")).await.status, 200);
    let metrics = http.get(&format!("{admin}/metrics")).await.text();
    assert!(metrics.contains("bcproxy_cluster_up 0"), "{metrics}");
    assert!(
        metrics.contains("bcproxy_redis_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bcproxy_invalidations_received_total 0"),
        "{metrics}"
    );
    let status = http.get(&format!("{admin}/status")).await.json();
    assert_eq!(status["cluster"]["mode"], "degraded");
    assert!(
        status["cluster"]["reason"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(status["cluster"]["sharing"], 4);
    // The status page says it too.
    let page = http.get(&format!("{admin}/")).await.text();
    assert!(
        page.contains("data-figure=\"cluster_mode\">degraded<"),
        "{page}"
    );
    assert!(page.contains("connection refused"), "{page}");
    assert!(
        page.contains("data-figure=\"cluster_sharing\">4<"),
        "{page}"
    );
    // Alone, it spends its share: 400 / 4.
    assert_eq!(status["budget"]["limit"], 400);
    assert!(
        status["budget"]["remaining"].as_u64().unwrap() <= 100,
        "{status}"
    );
}

/// The shared cache on its own: an answer fetched under a lease is stored, unless a change
/// to what it depends on came after the lease was claimed (from any process) — then it is
/// refused, even when no invalidation reached the fetching process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_cache_refuses_an_answer_fetched_before_a_change() {
    use bcproxy::cache::{Cache, Drops, Key};
    use bcproxy::cluster::Cluster;
    use bcproxy::cluster::shared::Claim;

    let sim = start_sim().await;
    let name = unique_name("gens");
    let s = settings(
        &sim.url(),
        "",
        &[
            ("cluster.redis_url", &shared_url()),
            ("cluster.name", &name),
            ("cache.enabled", "true"),
        ],
    );
    let cluster = Cluster::new(&s).unwrap();
    cluster.start();
    cluster.started(Duration::from_secs(2)).await;
    assert_eq!(cluster.mode(), Mode::Up);
    let cache = Cache::new(&s.cache);
    let key = |target: &str| Key {
        target: target.into(),
        xml: false,
        gzip: false,
    };
    let entry = |k: &Key| {
        cache
            .entry(
                k,
                http::HeaderMap::new(),
                bytes::Bytes::from_static(b"{\"id\":5}"),
                Duration::from_secs(60),
                cache.mark(),
                tokio::time::Instant::now(),
            )
            .unwrap()
    };
    let max = 1 << 20;

    // Claimed, then a write to the product elsewhere: the answer is refused.
    let product = key("/api/v2/products/5");
    let Claim::Lead(lease) = cluster.claim(&product, Duration::from_secs(5)).await else {
        panic!("the first claim leads")
    };
    assert!(matches!(
        cluster.claim(&product, Duration::from_secs(5)).await,
        Claim::Wait(_)
    ));
    let couplings = cache.couplings();
    let write = bcproxy::cache::resource::after_write(
        &http::Method::PUT,
        "/stores/abc/v3/catalog/products/5",
        &couplings,
    );
    cluster.spread(&write).await;
    assert!(
        !cluster.put(lease, &entry(&product), max).await,
        "stored an answer older than the write"
    );
    assert!(cluster.peek(&product).await.is_none());

    // Claimed after the write: stored, and found by the next claim.
    let Claim::Lead(lease) = cluster.claim(&product, Duration::from_secs(5)).await else {
        panic!("the lease was released")
    };
    assert!(cluster.put(lease, &entry(&product), max).await);
    assert!(matches!(
        cluster.claim(&product, Duration::from_secs(5)).await,
        Claim::Found(_)
    ));

    // Another member of the collection is untouched by a write to this one; a purge of
    // everything drops it, and refuses what was claimed before it.
    let other = key("/api/v2/products/7");
    let Claim::Lead(lease) = cluster.claim(&other, Duration::from_secs(5)).await else {
        panic!()
    };
    cluster.spread(&write).await;
    assert!(
        cluster.put(lease, &entry(&other), max).await,
        "product 7 was not written"
    );
    let list = key("/api/v2/products?page=1");
    let Claim::Lead(lease) = cluster.claim(&list, Duration::from_secs(5)).await else {
        panic!()
    };
    cluster.spread(&Drops::everything()).await;
    assert!(!cluster.put(lease, &entry(&list), max).await);
    assert!(
        cluster.peek(&other).await.is_none(),
        "everything means everything"
    );
}

/// OAuth: the store's own fixed window and quota, learnt by any process from the store's
/// headers, govern all three: five windows' worth of calls spread over three processes go
/// through without one 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_processes_share_the_stores_window() {
    let sim = start_sim_with(SimConfig {
        dialect: bcproxy::dialect::Dialect::Oauth,
        limit: 6,
        window: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let name = unique_name("oauth");
    let upstream = format!("{}/stores/{}", sim.url(), bcproxy::sim::DEFAULT_STORE_HASH);
    let mut proxies = Vec::new();
    for instance in ["a", "b", "c"] {
        let s = settings(
            &upstream,
            "",
            &[
                ("upstream.auth", "token"),
                ("budget.dialect", "oauth"),
                ("budget.limit", "6"),
                ("budget.window", "800ms"),
                ("budget.max_wait", "10s"),
                ("budget.reserve_writes", "0"),
                ("cluster.redis_url", &shared_url()),
                ("cluster.name", &name),
                ("cluster.instance", instance),
            ],
        );
        proxies.push(start_proxy(s).await);
    }
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    let mut tasks = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let paths = (0..10)
            .map(|k| format!("/v3/catalog/products/{}", 1 + (i * 10 + k) % 20))
            .collect();
        tasks.extend(spawn_gets(&http, proxy, paths));
    }
    let replies = join(tasks).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let stats = sim.sim.stats(false);
    assert_eq!(stats.throttled, 0, "{stats:?}");
    assert_eq!(stats.calls, 30);
    // Every process shows the store's quota, as the store stated it.
    for p in &proxies {
        assert_eq!(p.status().snapshot().budget.limit, 6);
    }
}

/// Answers over 1 MiB stay in each process's own cache: B fetches its own, and Redis holds no
/// entry for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_a_mebibyte_are_not_shared() {
    let sim = start_sim().await;
    let name = unique_name("large");
    let proxies = cluster(&sim, &shared_url(), &name, 2, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let http = Http::default();
    let description = "ü".repeat(700 * 1024);
    let created = http
        .send(
            Request::post(format!("{}/api/v2/products", proxies[0].url()))
                .header("content-type", "application/json")
                .body(body(format!(
                    r#"{{"name":"Large","type":"physical","price":"1.00","description":"{description}"}}"#
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_u64().unwrap();
    let path = format!("/api/v2/products/{id}");
    let a = http.get(&format!("{}{path}", proxies[0].url())).await;
    assert!(a.text().len() > 1024 * 1024);
    assert_eq!(a.header("x-cache"), Some("MISS"));
    // A streamed answer is stored once its stream has ended, just after the app has the
    // last byte.
    let stored = {
        let mut stored = false;
        for _ in 0..100 {
            let entries = proxies[0].status().settled_snapshot().await.cache_entries;
            if entries > 0 {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stored
    };
    assert!(stored, "A never stored the answer");
    assert_eq!(
        http.get(&format!("{}{path}", proxies[0].url()))
            .await
            .header("x-cache"),
        Some("HIT"),
        "A keeps it in its own cache"
    );
    let b = http.get(&format!("{}{path}", proxies[1].url())).await;
    assert_eq!(
        b.header("x-cache"),
        Some("MISS"),
        "shared an answer over 1 MiB"
    );
    assert_eq!(b.text(), a.text());
    let keys = support::redis::keys_of(&shared_url(), &name).await;
    assert!(!keys.iter().any(|k| k.contains(":c:")), "{keys:?}");
}

/// Redis stops answering (the process is frozen, connections stay open): within the 250 ms
/// bound the proxy goes degraded with a timeout, calls keep being served, and it is restored
/// once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_is_a_timeout_not_a_stall() {
    let redis = OwnRedis::start(&[]).await;
    let sim = start_sim().await;
    let name = unique_name("hang");
    let proxies = cluster(&sim, &redis.url(), &name, 1, &[("cache.enabled", "true")]).await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    let proxy = &proxies[0];
    redis.signal("STOP");
    let http = Http::default();
    // A call that meets the frozen Redis waits at most its bound, then goes on alone.
    let reply = http
        .get(&format!("{}/api/v2/products/4", proxy.url()))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            mode(proxy),
            Mode::Degraded(ref r) if r.contains("timeout")
        ))
        .await,
        "{:?}",
        mode(proxy)
    );
    for i in 0..5 {
        let reply = http
            .get(&format!("{}/api/v2/products/{}", proxy.url(), 10 + i))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-cache"), Some("MISS"));
    }
    redis.signal("CONT");
    assert!(
        eventually(Duration::from_secs(8), || mode(proxy) == Mode::Up).await,
        "{:?}",
        mode(proxy)
    );
}

/// In a cluster too, a pause ends on time by itself: once its time is up every process says
/// "not paused", without a call having probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_pause_ends_on_time_without_a_call() {
    let sim = start_sim().await;
    let name = unique_name("pause-ends");
    let proxies = cluster(
        &sim,
        &shared_url(),
        &name,
        2,
        &[
            ("budget.limit", "1000"),
            ("budget.window", "18s"),
            ("budget.max_wait", "50ms"),
        ],
    )
    .await;
    assert!(all_in_mode(&proxies, |m| *m == Mode::Up).await);
    sim.sim.inject(
        Fault::Status {
            status: 509,
            location: None,
        },
        1,
    );
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/1", proxies[0].url()))
        .await;
    assert_eq!(reply.status, 509);
    assert!(proxies[0].status().snapshot().budget.paused);
    assert!(
        eventually(Duration::from_secs(4), || proxies.iter().all(|p| !p
            .status()
            .snapshot()
            .budget
            .paused))
        .await,
        "still paused with no call long after a 300 ms pause"
    );
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/1", proxies[1].url()))
        .await;
    assert_eq!(reply.status, 200);
}
