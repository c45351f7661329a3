//! The cache over real sockets, counting the simulator's calls: hits, keys, coalescing,
//! invalidation, stale answers, validators, HEAD, and the bound on its size.

mod support;

use std::time::{Duration, Instant};

use bcproxy::config::Dialect;
use bcproxy::sim::{self, Fault, SimConfig};
use bytes::Bytes;
use http::Request;
use support::*;

fn cache_on<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("cache.enabled", "true")];
    env.extend_from_slice(extra);
    env
}

async fn calls(sim: &bcproxy::sim::RunningSim) -> u64 {
    sim.sim.stats(false).calls
}

fn json_request(method: http::Method, url: &str, body_text: &str) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body(body_text.to_string()))
        .unwrap()
}

/// A second identical GET is answered from memory, with `Age`, without a store call.
#[tokio::test]
async fn hit_after_miss() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/7", proxy.url());
    let miss = http.get(&url).await;
    let hit = http.get(&url).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.header("age"), Some("0"));
    assert!(hit.header("etag").is_some());
    assert!(hit.header("x-bc-apilimit-remaining").is_some());
    assert_eq!(calls(&sim).await, 1);
}

/// JSON and XML answers never stand in for each other, whether asked by `Accept` or suffix.
#[tokio::test]
async fn json_and_xml_are_kept_apart() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/brands/2", proxy.url());
    let json = http.get(&url).await;
    let xml = http.get_with(&url, &[("accept", "application/xml")]).await;
    assert_eq!(
        xml.header("x-cache"),
        Some("MISS"),
        "XML was answered from the JSON entry"
    );
    assert!(xml.text().starts_with("<?xml"));
    assert!(json.text().starts_with('{'));
    assert_eq!(
        http.get_with(&url, &[("accept", "application/xml")])
            .await
            .header("x-cache"),
        Some("HIT")
    );
    let again = http.get(&url).await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert!(again.text().starts_with('{'));
    let suffix = http.get(&format!("{url}.xml")).await;
    assert!(suffix.text().starts_with("<?xml"));
    assert_eq!(calls(&sim).await, 3);
}

/// An app that does not accept gzip never gets a gzip body from the cache, and the other way
/// round (the OAuth gateway gzips for clients that accept it).
#[tokio::test]
async fn gzip_and_identity_are_kept_apart() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &format!("{}/stores/{}", sim.url(), sim::DEFAULT_STORE_HASH),
        "",
        &cache_on(&[("upstream.auth", "token"), ("budget.dialect", "oauth")]),
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/v3/catalog/products/4", proxy.url());
    let gz = http.get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let plain = http.get(&url).await;
    assert_eq!(
        plain.header("x-cache"),
        Some("MISS"),
        "an identity app was answered from the gzip entry"
    );
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(plain.json()["data"]["id"], 4);
    let plain_hit = http
        .get_with(&url, &[("accept-encoding", "identity")])
        .await;
    assert_eq!(plain_hit.header("x-cache"), Some("HIT"));
    assert!(plain_hit.header("content-encoding").is_none());
    let gz_hit = http
        .get_with(&url, &[("accept-encoding", "deflate, gzip;q=0.8")])
        .await;
    assert_eq!(gz_hit.header("x-cache"), Some("HIT"));
    assert_eq!(gz_hit.header("content-encoding"), Some("gzip"));
    assert_eq!(gz_hit.body, gz.body);
    assert_eq!(calls(&sim).await, 2);
}

/// 50 concurrent identical misses with 300 ms store latency make one store call; one caller
/// gets MISS, the others COALESCED, all the same body.
#[tokio::test]
async fn concurrent_misses_make_one_call() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products?limit=20", proxy.url());
    let replies = get_many(&http, &url, 50).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    let misses = replies
        .iter()
        .filter(|r| r.header("x-cache") == Some("MISS"))
        .count();
    let coalesced = replies
        .iter()
        .filter(|r| r.header("x-cache") == Some("COALESCED"))
        .count();
    assert_eq!((misses, coalesced), (1, 49));
    assert_eq!(calls(&sim).await, 1);
}

/// The shared call belongs to no single app: the first caller going away does not fail the
/// others.
#[tokio::test]
async fn the_first_caller_leaving_does_not_fail_the_others() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let mut first = RawConn::connect(proxy.addr).await;
    first
        .send(b"GET /api/v2/categories/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let http = Http::default();
    let url = format!("{}/api/v2/categories/3", proxy.url());
    let others: Vec<_> = (0..5)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    for other in others {
        let reply = other.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-cache"), Some("COALESCED"));
    }
    assert_eq!(calls(&sim).await, 1);
    assert_eq!(
        http.get(&url).await.header("x-cache"),
        Some("HIT"),
        "the abandoned fetch was still stored"
    );
}

/// A successful write drops what it changed: a PUT or DELETE of a product (or a write under
/// it) that product, its sub-resources and the product lists and count; a POST to the
/// collection its lists and count; other products and other collections stay.
#[tokio::test]
async fn writes_refresh_lists_items_and_counts() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let base = format!("{}/api/v2", proxy.url());
    let urls = [
        format!("{base}/products?limit=250"),
        format!("{base}/products/5"),
        format!("{base}/products/count"),
    ];
    let brand = format!("{base}/brands/1");
    let warm = |http: Http, urls: Vec<String>| async move {
        let mut statuses = Vec::new();
        for url in urls {
            statuses.push(
                http.get(&url)
                    .await
                    .header("x-cache")
                    .unwrap_or("")
                    .to_string(),
            );
        }
        statuses
    };
    let mut all = urls.to_vec();
    all.push(brand.clone());
    warm(http.clone(), all.clone()).await;
    assert!(
        warm(http.clone(), all.clone())
            .await
            .iter()
            .all(|c| c == "HIT")
    );

    let put = http
        .send(json_request(
            http::Method::PUT,
            &format!("{base}/products/5"),
            r#"{"name":"Renamed Ölflasche"}"#,
        ))
        .await;
    assert_eq!(put.status, 200);
    let after_put = warm(http.clone(), all.clone()).await;
    assert_eq!(
        after_put,
        ["MISS", "MISS", "MISS", "HIT"],
        "a PUT left old answers of the product, its list or count"
    );
    assert_eq!(http.get(&urls[1]).await.json()["name"], "Renamed Ölflasche");
    let list = http.get(&urls[0]).await.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Renamed Ölflasche")
    );

    let post = http
        .send(json_request(
            http::Method::POST,
            &format!("{base}/products"),
            r#"{"name":"Brand new","price":"1.00"}"#,
        ))
        .await;
    assert_eq!(post.status, 201);
    assert_eq!(
        warm(http.clone(), all.clone()).await,
        ["MISS", "HIT", "MISS", "HIT"],
        "a POST to the collection drops its lists and counts only"
    );
    assert_eq!(http.get(&urls[2]).await.json()["count"], 61);

    let sku = http
        .send(json_request(
            http::Method::POST,
            &format!("{base}/products/5/skus"),
            r#"{"sku":"S-1"}"#,
        ))
        .await;
    assert_eq!(sku.status, 201);
    assert_eq!(
        warm(http.clone(), all.clone()).await,
        ["MISS", "MISS", "MISS", "HIT"],
        "a sub-resource write spared its product, or the lists"
    );

    let delete = http
        .send(
            Request::delete(format!("{base}/products/61"))
                .body(body(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(delete.status, 204);
    assert_eq!(
        warm(http.clone(), all.clone()).await,
        ["MISS", "HIT", "MISS", "HIT"],
        "deleting product 61 kept product 5"
    );
    assert_eq!(http.get(&urls[2]).await.json()["count"], 60);

    // A write the store refused changes nothing.
    let refused = http
        .send(json_request(
            http::Method::POST,
            &format!("{base}/products"),
            r#"{"name":"No price"}"#,
        ))
        .await;
    assert_eq!(refused.status, 400);
    assert!(warm(http.clone(), all).await.iter().all(|c| c == "HIT"));
}

/// v3 families: a write to `/stores/{hash}/v3/catalog/products/5` drops the v3 product list.
#[tokio::test]
async fn v3_writes_refresh_their_family() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cache_on(&[("upstream.auth", "token"), ("budget.dialect", "oauth")]),
    ))
    .await;
    let http = Http::default();
    let base = format!(
        "{}/stores/{}/v3/catalog",
        proxy.url(),
        sim::DEFAULT_STORE_HASH
    );
    let list = format!("{base}/products?limit=5");
    assert_eq!(http.get(&list).await.header("x-cache"), Some("MISS"));
    assert_eq!(http.get(&list).await.header("x-cache"), Some("HIT"));
    let put = http
        .send(json_request(
            http::Method::PUT,
            &format!("{base}/products/2"),
            r#"{"name":"v3 renamed"}"#,
        ))
        .await;
    assert_eq!(put.status, 200);
    let after = http.get(&list).await;
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert_eq!(after.json()["data"][1]["name"], "v3 renamed");
}

/// A GET that was in flight while a PUT changed its resource does not put the old answer back
/// into the cache.
#[tokio::test]
async fn no_stale_after_write_race() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/9", proxy.url());
    let old_name = Http::default()
        .direct(&format!("{}/api/v2/products/9", sim.url()), &[])
        .await
        .json()["name"]
        .clone();
    // The GET reads the old record at once, but its answer is held back 400 ms.
    sim.sim.inject(Fault::Delay { ms: 400 }, 1);
    let slow_get = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { http.get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let put = http
        .send(json_request(
            http::Method::PUT,
            &url,
            r#"{"name":"After the write"}"#,
        ))
        .await;
    assert_eq!(put.status, 200);
    let slow = slow_get.await.unwrap();
    assert_eq!(
        slow.json()["name"],
        old_name,
        "the GET should have read before the write"
    );
    let next = http.get(&url).await;
    assert_eq!(
        next.json()["name"],
        "After the write",
        "the old answer was cached after the write"
    );
    assert_eq!(next.header("x-cache"), Some("MISS"));
}

/// While the store is down, a GET with a stale entry gets it (`STALE`), and a write fails
/// visibly.
#[tokio::test]
async fn stale_while_the_store_is_down() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cache_on(&[("cache.ttl", "200ms"), ("cache.stale", "1h")]),
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/3", proxy.url());
    let fresh = http.get(&url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.stop().await;
    let started = Instant::now();
    let stale = http.get(&url).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.body, fresh.body);
    assert!(started.elapsed() < Duration::from_secs(2));
    let write = http
        .send(json_request(http::Method::PUT, &url, r#"{"name":"x"}"#))
        .await;
    assert_eq!(
        write.status, 502,
        "a write must fail visibly, never get a stale answer"
    );
    let uncached = http
        .get(&format!("{}/api/v2/products/4", proxy.url()))
        .await;
    assert_eq!(
        uncached.status, 502,
        "without a stale entry the app gets the failure"
    );
}

/// While sends are paused after a store 509, a GET with a stale entry gets it at once; a
/// write gets the throttle answer.
#[tokio::test]
async fn stale_while_the_budget_is_paused() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        limit: 10,
        window: Duration::from_secs(600),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cache_on(&[
            ("cache.ttl", "200ms"),
            ("budget.max_wait", "1s"),
            ("budget.reserve_writes", "0"),
        ]),
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/3", proxy.url());
    let fresh = http.get(&url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.sim.spend(100);
    // An uncached GET meets the store's 509: sends pause; it waits, then gets the throttle answer.
    let other = http
        .get(&format!("{}/api/v2/products/4", proxy.url()))
        .await;
    assert_eq!(other.status, 509);
    assert!(other.header("retry-after").is_some());
    let started = Instant::now();
    let stale = http.get(&url).await;
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.body, fresh.body);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a stale answer must not wait"
    );
    let write = http
        .send(json_request(http::Method::PUT, &url, r#"{"name":"x"}"#))
        .await;
    assert_eq!(write.status, 509);
    assert!(logs.lines().iter().any(|l| l["message"] == "budget.paused"));
    let refused = sim
        .sim
        .stats(false)
        .by_status
        .get(&509)
        .copied()
        .unwrap_or(0);
    assert!(refused >= 1, "the store never said 509");
}

/// The cache never holds more than `cache.max_size` when three times that passes through.
#[tokio::test]
async fn max_size_holds() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cache_on(&[("cache.max_size", "64KiB")]),
    ))
    .await;
    let http = Http::default();
    let mut passed = 0usize;
    'outer: for limit in 1..=60u32 {
        for page in 1..=60u32.div_ceil(limit) {
            let reply = http
                .get(&format!(
                    "{}/api/v2/products?limit={limit}&page={page}",
                    proxy.url()
                ))
                .await;
            assert_eq!(reply.status, 200);
            passed += reply.body.len();
            if passed >= 3 * 64 * 1024 {
                break 'outer;
            }
        }
    }
    assert!(passed >= 3 * 64 * 1024);
    let snapshot = proxy.status().settled_snapshot().await;
    let (entries, bytes) = (snapshot.cache_entries, snapshot.cache_bytes);
    assert!(entries > 0);
    assert!(bytes <= 64 * 1024, "the cache holds {bytes} bytes");
}

/// `Cache-Control: no-store` (or `private`) from the store is honoured: nothing is cached.
#[tokio::test]
async fn store_no_store_is_honoured() {
    let sim = start_sim().await;
    let mut headers = http::HeaderMap::new();
    headers.insert("cache-control", http::HeaderValue::from_static("no-store"));
    sim.sim.set_headers(headers);
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/2", proxy.url());
    assert_eq!(http.get(&url).await.header("x-cache"), Some("MISS"));
    assert_eq!(http.get(&url).await.header("x-cache"), Some("MISS"));
    assert_eq!(calls(&sim).await, 2);
    let mut headers = http::HeaderMap::new();
    headers.insert("cache-control", http::HeaderValue::from_static("max-age=0"));
    sim.sim.set_headers(headers);
    http.get(&url).await;
    assert_eq!(
        http.get(&url).await.header("x-cache"),
        Some("MISS"),
        "max-age=0 is an upper bound of nothing"
    );
}

/// A matching `If-None-Match` (or `If-Modified-Since`) gets 304 from the cache, with no store
/// call and no budget spent.
#[tokio::test]
async fn conditional_requests_get_304_from_the_cache() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/6", proxy.url());
    let first = http.get(&url).await;
    let etag = first.header("etag").unwrap().to_string();
    let budget_before = first.header("x-bc-apilimit-remaining").unwrap().to_string();
    let not_modified = http.get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(
        not_modified.header("x-bc-apilimit-remaining"),
        Some(budget_before.as_str())
    );
    let modified = first.header("last-modified").unwrap().to_string();
    assert_eq!(
        http.get_with(&url, &[("if-modified-since", &modified)])
            .await
            .status,
        304
    );
    assert_eq!(
        http.get_with(&url, &[("if-none-match", "\"something-else\"")])
            .await
            .status,
        200
    );
    assert_eq!(calls(&sim).await, 1);
    // On a miss the store is asked for the whole answer, and the app still gets its 304.
    let other = format!("{}/api/v2/products/8", proxy.url());
    let tag = http.get(&other).await.header("etag").unwrap().to_string();
    http.send(
        Request::put(&other)
            .header("content-type", "application/json")
            .body(body(r#"{"sku":"X"}"#))
            .unwrap(),
    )
    .await;
    let after = http.get_with(&other, &[("if-none-match", &tag)]).await;
    assert_eq!(
        after.status, 200,
        "the entry changed: a full answer, not a 304"
    );
    assert_eq!(
        sim.sim
            .stats(true)
            .log
            .iter()
            .filter(|c| c.method == "GET")
            .count(),
        3
    );
}

/// HEAD is answered from the GET entry (and fills it on a miss).
#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/customers/2", proxy.url());
    let get = http.get(&url).await;
    let head = http
        .send(Request::head(&url).body(body(Bytes::new())).unwrap())
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache"), Some("HIT"));
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let other = format!("{}/api/v2/customers/3", proxy.url());
    let head_first = http
        .send(Request::head(&other).body(body(Bytes::new())).unwrap())
        .await;
    assert_eq!(head_first.header("x-cache"), Some("MISS"));
    assert_eq!(http.get(&other).await.header("x-cache"), Some("HIT"));
    let methods: Vec<String> = sim
        .sim
        .stats(true)
        .log
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        methods,
        ["GET", "GET"],
        "HEAD should be served through the GET entry"
    );
}

/// An app's `no-cache` forces a fresh answer (through the budget); `no-store` leaves the
/// cache out; `/api/v2/time` and a `ttl = "0s"` rule are never cached.
#[tokio::test]
async fn app_directives_and_rules() {
    let sim = start_sim().await;
    let rules = "[[cache.rules]]\nprefix = \"/api/v2/brands\"\nttl = \"0s\"\n";
    let proxy = start_proxy(settings(
        &sim.url(),
        &format!("[cache]\nenabled = true\n{rules}"),
        &[],
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/categories/1", proxy.url());
    assert_eq!(http.get(&url).await.header("x-cache"), Some("MISS"));
    assert_eq!(
        http.get_with(&url, &[("cache-control", "no-cache")])
            .await
            .header("x-cache"),
        Some("MISS")
    );
    assert_eq!(http.get(&url).await.header("x-cache"), Some("HIT"));
    assert_eq!(
        http.get_with(&url, &[("cache-control", "no-store")])
            .await
            .header("x-cache"),
        Some("BYPASS")
    );
    for never in ["/api/v2/time", "/api/v2/brands/1"] {
        let u = format!("{}{never}", proxy.url());
        http.get(&u).await;
        assert_eq!(
            http.get(&u).await.header("x-cache"),
            Some("BYPASS"),
            "{never}"
        );
    }
    assert_eq!(calls(&sim).await, 3 + 4);
}

/// The access log's `cache` field and the summary's cache ratios.
#[tokio::test]
async fn the_log_shows_the_cache() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cache_on(&[("log.summary_every", "300ms")]),
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/1", proxy.url());
    for _ in 0..4 {
        http.get(&url).await;
    }
    http.get(&format!("{}/api/v2/time", proxy.url())).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.stop().await;
    let caches: Vec<String> = logs
        .access()
        .iter()
        .map(|l| l["cache"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(caches, ["MISS", "HIT", "HIT", "HIT", "BYPASS"]);
    let hit = &logs.access()[1];
    assert!(hit["upstream_status"].is_null() && hit["upstream_ms"].is_null());
    assert_eq!(hit["wait_ms"], 0.0);
    let summary = logs
        .lines()
        .into_iter()
        .find(|l| l["message"] == "summary" && l["calls"].as_u64() > Some(0))
        .expect("a summary");
    assert_eq!(summary["cache_hit_ratio"], 0.75);
    assert_eq!(summary["cache_stale_ratio"], 0.0);
    assert_eq!(summary["cache_coalesced_ratio"], 0.0);
    assert!(summary["cache_entries"].as_u64().unwrap() >= 1);
}

/// The store's own request id reaches the app as `x-upstream-request-id` whenever its call went
/// upstream (MISS, COALESCED, BYPASS), and is logged; a HIT made no store call and has none.
#[tokio::test]
async fn the_stores_request_id_comes_back_when_the_call_went_upstream() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(&sim.url(), "", &cache_on(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/4", proxy.url());
    let shared = get_many(&http, &url, 4).await;
    let store_id = sim.sim.stats(true).log[0].request_id.clone();
    assert!(store_id.is_some());
    let stores_own = shared[0]
        .header("x-upstream-request-id")
        .map(str::to_string);
    assert!(
        stores_own
            .as_deref()
            .is_some_and(|id| id.starts_with("sim-")),
        "{:?}",
        shared[0].headers
    );
    for reply in &shared {
        assert!(matches!(
            reply.header("x-cache"),
            Some("MISS" | "COALESCED")
        ));
        assert_eq!(
            reply.header("x-upstream-request-id").map(str::to_string),
            stores_own,
            "{}",
            reply.header("x-cache").unwrap()
        );
        assert_ne!(reply.header("x-request-id"), stores_own.as_deref());
    }
    let hit = http.get(&url).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("x-upstream-request-id"), None);
    let bypass = http.get_with(&url, &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.header("x-cache"), Some("BYPASS"));
    let bypass_id = bypass.header("x-upstream-request-id").expect("a store id");
    assert!(bypass_id.starts_with("sim-") && Some(bypass_id) != stores_own.as_deref());
    assert_eq!(calls(&sim).await, 2);
    proxy.stop().await;
    let access = logs.access();
    let logged: Vec<_> = access
        .iter()
        .map(|l| {
            (
                l["cache"].as_str().unwrap(),
                l["upstream_request_id"].clone(),
            )
        })
        .collect();
    for (cache, id) in &logged {
        match *cache {
            "HIT" => assert!(id.is_null()),
            "BYPASS" => assert_eq!(id.as_str(), Some(bypass_id)),
            _ => assert_eq!(id.as_str(), stores_own.as_deref()),
        }
    }
    assert_eq!(logged.len(), 6);
}
