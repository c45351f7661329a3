//! Keeping the cache true over real sockets: a write drops exactly what it changed (the
//! resource in every variant and path form, its sub-resources, its collection's lists and
//! counts, and coupled collections) and nothing else; store webhooks drop what changed outside
//! the proxy, verified, once; a purge drops what it names; and no answer older than a change
//! is ever served after it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bcproxy::config::Dialect;
use bcproxy::sim::{self, Fault, SimConfig};
use hmac::{KeyInit, Mac};
use http::Request;
use proptest::prelude::*;
use support::*;

const SECRET: &str = "whsec_c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3ODkw";

fn cached(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("cache.enabled", "true"), ("cache.ttl", "10m")];
    env.extend_from_slice(extra);
    env
}

/// A proxy with its cache on, its admin listener, and webhooks verified with [`SECRET`].
async fn proxy_with_webhooks(
    sim: &str,
    extra: &str,
) -> (bcproxy::app::RunningProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let text = format!(
        "[webhooks]\nsecret_file = {:?}\nmax_age = \"5m\"\n{extra}",
        secret.display().to_string()
    );
    let proxy = start_proxy_with_admin(settings(sim, &text, &cached(&[])), None).await;
    (proxy, dir)
}

fn put(url: &str, json: &str) -> Request<TestBody> {
    Request::put(url)
        .header("content-type", "application/json")
        .body(body(json.to_string()))
        .unwrap()
}

/// A delivery as the store would send it, signed with [`SECRET`] at `at` (Unix seconds).
fn delivery(
    url: &str,
    id: &str,
    scope: &str,
    data: serde_json::Value,
    at: u64,
) -> Request<TestBody> {
    let payload = serde_json::json!({
        "scope": scope, "store_id": "1001", "data": data,
        "hash": format!("hash-{id}"), "created_at": at, "producer": "stores/abc123",
    })
    .to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{at}.{payload}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Request::post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", format!("v1,{signature}"))
        .body(body(payload))
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn x_cache(http: &Http, url: &str, headers: &[(&str, &str)]) -> String {
    http.get_with(url, headers)
        .await
        .header("x-cache")
        .unwrap_or("")
        .to_string()
}

/// A PUT to product 5 drops product 5 in every variant (JSON, XML, suffix, query), its
/// sub-resources, and the product lists and count; product 7, product 50 and other collections
/// stay cached.
#[tokio::test]
async fn a_write_drops_its_resource_and_nothing_else_of_the_collection() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &cached(&[]))).await;
    let http = Http::default();
    let base = format!("{}/api/v2", proxy.url());
    let dropped: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{base}/products/5"), vec![]),
        (format!("{base}/products/5.json"), vec![]),
        (format!("{base}/products/5.xml"), vec![]),
        (
            format!("{base}/products/5"),
            vec![("accept", "application/xml")],
        ),
        (format!("{base}/products/5?include=skus"), vec![]),
        (format!("{base}/products/5/skus"), vec![]),
        (format!("{base}/products?limit=10"), vec![]),
        (format!("{base}/products/count"), vec![]),
    ];
    let kept: Vec<String> = vec![
        format!("{base}/products/7"),
        format!("{base}/products/50"),
        format!("{base}/brands/1"),
    ];
    for (url, headers) in &dropped {
        assert_eq!(x_cache(&http, url, headers).await, "MISS", "{url}");
    }
    for url in &kept {
        assert_eq!(x_cache(&http, url, &[]).await, "MISS", "{url}");
    }
    let reply = http
        .send(put(
            &format!("{base}/products/5"),
            r#"{"name":"Five, renamed"}"#,
        ))
        .await;
    assert_eq!(reply.status, 200);
    for (url, headers) in &dropped {
        assert_eq!(
            x_cache(&http, url, headers).await,
            "MISS",
            "{url} {headers:?} was kept"
        );
    }
    for url in &kept {
        assert_eq!(x_cache(&http, url, &[]).await, "HIT", "{url} was dropped");
    }
    assert_eq!(
        http.get(&format!("{base}/products/5")).await.json()["name"],
        "Five, renamed"
    );
}

/// One resource under its OAuth-gateway v2 and v3 paths is one resource: a write through one
/// drops the other.
#[tokio::test]
async fn one_resource_under_every_path_form() {
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &cached(&[("upstream.auth", "token"), ("budget.dialect", "oauth")]),
    ))
    .await;
    let http = Http::default();
    let store = format!("{}/stores/{}", proxy.url(), sim::DEFAULT_STORE_HASH);
    let (v2, v3, other) = (
        format!("{store}/v2/products/5"),
        format!("{store}/v3/catalog/products/5"),
        format!("{store}/v3/catalog/products/6"),
    );
    for url in [&v2, &v3, &other] {
        assert_eq!(x_cache(&http, url, &[]).await, "MISS");
        assert_eq!(x_cache(&http, url, &[]).await, "HIT");
    }
    let reply = http.send(put(&v3, r#"{"name":"Five via v3"}"#)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        x_cache(&http, &v2, &[]).await,
        "MISS",
        "the v2 path of the same product was kept"
    );
    assert_eq!(x_cache(&http, &v3, &[]).await, "MISS");
    assert_eq!(x_cache(&http, &other, &[]).await, "HIT");
}

/// An order write drops the products (orders move inventory); a configured coupling drops its
/// collections too; `check` lists the couplings in effect.
#[tokio::test]
async fn couplings_drop_coupled_collections() {
    let sim = start_sim().await;
    let extra = "[[cache.couplings]]\nwhen = \"/api/v2/brands\"\ndrop = [\"/api/v2/categories\"]\n";
    let proxy = start_proxy(settings(&sim.url(), extra, &cached(&[]))).await;
    let http = Http::default();
    let base = format!("{}/api/v2", proxy.url());
    let (product, category, customer) = (
        format!("{base}/products/3"),
        format!("{base}/categories/2"),
        format!("{base}/customers/1"),
    );
    for url in [&product, &category, &customer] {
        http.get(url).await;
    }
    let order = http
        .send(
            Request::post(format!("{base}/orders"))
                .header("content-type", "application/json")
                .body(body(
                    r#"{"customer_id":1,"products":[{"product_id":3,"quantity":1}]}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text());
    assert_eq!(
        x_cache(&http, &product, &[]).await,
        "MISS",
        "an order kept products cached"
    );
    assert_eq!(x_cache(&http, &category, &[]).await, "HIT");
    assert_eq!(x_cache(&http, &customer, &[]).await, "HIT");
    let brand = http
        .send(put(&format!("{base}/brands/1"), r#"{"name":"Rebranded"}"#))
        .await;
    assert_eq!(brand.status, 200);
    assert_eq!(
        x_cache(&http, &category, &[]).await,
        "MISS",
        "the configured coupling"
    );
    assert_eq!(x_cache(&http, &product, &[]).await, "HIT");
}

/// A signed webhook drops what it names (the product, its lists, the order's coupled
/// products); a wrong signature, an old timestamp or a malformed body drop nothing and get
/// 401/401/400; a replay is accepted and does nothing twice; an unknown scope drops nothing.
#[tokio::test]
async fn webhooks_drop_what_changed_elsewhere() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let (proxy, _dir) = proxy_with_webhooks(&sim.url(), "").await;
    let http = Http::default();
    let base = format!("{}/api/v2", proxy.url());
    let hook = format!("http://{}/webhooks/bigcommerce", proxy.admin_addr.unwrap());
    let (p5, p7) = (format!("{base}/products/5"), format!("{base}/products/7"));
    let warm = || async {
        for url in [&p5, &p7] {
            http.get(url).await;
        }
    };
    warm().await;
    let product = |id| serde_json::json!({"type": "product", "id": id});

    // Refused: nothing dropped.
    let mut forged = delivery(&hook, "msg_1", "store/product/updated", product(5), now());
    forged
        .headers_mut()
        .insert("webhook-signature", "v1,AAAA".parse().unwrap());
    assert_eq!(http.send(forged).await.status, 401);
    let old = delivery(
        &hook,
        "msg_2",
        "store/product/updated",
        product(5),
        now() - 3600,
    );
    assert_eq!(http.send(old).await.status, 401);
    let mut malformed = delivery(&hook, "msg_3", "store/product/updated", product(5), now());
    *malformed.body_mut() = body("not the payload");
    assert_eq!(
        http.send(malformed).await.status,
        401,
        "the body is part of the signature"
    );
    let no_id = delivery(
        &hook,
        "msg_4",
        "store/product/updated",
        serde_json::json!({}),
        now(),
    );
    assert_eq!(http.send(no_id).await.status, 400);
    let huge = delivery(
        &hook,
        "msg_5",
        "store/product/updated",
        serde_json::json!({"id": 5, "pad": "x".repeat(70_000)}),
        now(),
    );
    assert_eq!(http.send(huge).await.status, 413);
    assert_eq!(
        x_cache(&http, &p5, &[]).await,
        "HIT",
        "a refused delivery dropped something"
    );

    // Accepted: product 5 goes, product 7 stays; once.
    let accepted = http
        .send(delivery(
            &hook,
            "msg_6",
            "store/product/updated",
            product(5),
            now(),
        ))
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json()["dropped"], 1);
    assert_eq!(x_cache(&http, &p5, &[]).await, "MISS");
    assert_eq!(x_cache(&http, &p7, &[]).await, "HIT");
    let replay = http
        .send(delivery(
            &hook,
            "msg_6",
            "store/product/updated",
            product(5),
            now(),
        ))
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.json()["verdict"], "duplicate");
    assert_eq!(
        x_cache(&http, &p5, &[]).await,
        "HIT",
        "a replay dropped again"
    );

    // An order drops the products it coupled; an unknown scope drops nothing.
    let order = http
        .send(delivery(
            &hook,
            "msg_7",
            "store/order/created",
            serde_json::json!({"type": "order", "id": 101}),
            now(),
        ))
        .await;
    assert_eq!(order.status, 200);
    assert_eq!(x_cache(&http, &p7, &[]).await, "MISS", "the order coupling");
    let unknown = http
        .send(delivery(
            &hook,
            "msg_8",
            "store/app/uninstalled",
            serde_json::json!({"id": 1}),
            now(),
        ))
        .await;
    assert_eq!(
        (unknown.status, unknown.json()["dropped"].as_u64()),
        (200, Some(0))
    );
    let metrics = http
        .get(&format!("http://{}/metrics", proxy.admin_addr.unwrap()))
        .await
        .text();
    assert!(
        metrics.contains("bcproxy_webhooks_total{verdict=\"accepted\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bcproxy_webhooks_total{verdict=\"unverified\"} 2"),
        "{metrics}"
    );
    proxy.stop().await;

    let events: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "webhook")
        .collect();
    let verdicts: Vec<_> = events
        .iter()
        .map(|e| e["verdict"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        verdicts,
        [
            "unverified",
            "stale",
            "unverified",
            "malformed",
            "too_large",
            "accepted",
            "duplicate",
            "accepted",
            "accepted"
        ]
    );
    assert_eq!(events[5]["scope"], "store/product/updated");
    assert_eq!(events[5]["id"], "5");
    assert!(!logs.text().contains(SECRET.trim_start_matches("whsec_")));
}

/// With `webhooks.header`, a delivery must carry that header's exact value; `webhooks.addr` is
/// a listener of its own that serves only the webhook path.
#[tokio::test]
async fn header_verification_and_a_listener_of_its_own() {
    let sim = start_sim().await;
    let text = "[webhooks]\nheader = \"X-Hook-Token: t0ken-for-tests\"\n";
    let settings = settings(&sim.url(), text, &cached(&[]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (admin_addr, hooks_addr) = (admin.local_addr().unwrap(), hooks.local_addr().unwrap());
    let proxy =
        bcproxy::app::RunningProxy::start_full(settings, listener, Some(admin), Some(hooks), None)
            .await
            .unwrap();
    let http = Http::default();
    let url = format!("{}/api/v2/products/2", proxy.url());
    http.get(&url).await;
    let payload =
        r#"{"scope":"store/product/updated","data":{"type":"product","id":2},"hash":"h1"}"#;
    let send = |token: &'static str| {
        Request::post(format!("http://{hooks_addr}/webhooks/bigcommerce"))
            .header("x-hook-token", token)
            .body(body(payload))
            .unwrap()
    };
    assert_eq!(http.send(send("wrong")).await.status, 401);
    assert_eq!(x_cache(&http, &url, &[]).await, "HIT");
    assert_eq!(http.send(send("t0ken-for-tests")).await.status, 200);
    assert_eq!(x_cache(&http, &url, &[]).await, "MISS");
    assert_eq!(
        http.get(&format!("http://{hooks_addr}/status"))
            .await
            .status,
        404
    );
    assert_eq!(
        http.get(&format!("http://{admin_addr}/status"))
            .await
            .status,
        200
    );
    let on_admin = Request::post(format!("http://{admin_addr}/webhooks/bigcommerce"))
        .header("x-hook-token", "t0ken-for-tests")
        .body(body(payload))
        .unwrap();
    assert_eq!(
        http.send(on_admin).await.status,
        404,
        "the admin listener served webhooks too"
    );
}

/// A webhook for a resource whose fetch is at the store at that moment does not let the old
/// answer back in: the fetch's answer is not cached.
#[tokio::test]
async fn a_webhook_during_a_fetch_keeps_the_old_answer_out() {
    let sim = start_sim().await;
    let (proxy, _dir) = proxy_with_webhooks(&sim.url(), "").await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/8", proxy.url());
    let hook = format!("http://{}/webhooks/bigcommerce", proxy.admin_addr.unwrap());
    // The store reads product 8 at once, then holds its answer back.
    sim.sim.inject(Fault::Delay { ms: 600 }, 1);
    let in_flight = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { http.get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let direct = Http::default()
        .send(
            Request::put(format!("{}/api/v2/products/8", sim.url()))
                .header("authorization", sim_credential())
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Changed while fetched"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(direct.status, 200);
    let accepted = http
        .send(delivery(
            &hook,
            "msg_race",
            "store/product/updated",
            serde_json::json!({"type": "product", "id": 8}),
            now(),
        ))
        .await;
    assert_eq!(accepted.status, 200);
    let old = in_flight.await.unwrap();
    assert_ne!(
        old.json()["name"],
        "Changed while fetched",
        "the fetch read before the change"
    );
    let after = http.get(&url).await;
    assert_eq!(
        after.header("x-cache"),
        Some("MISS"),
        "the old answer was cached"
    );
    assert_eq!(after.json()["name"], "Changed while fetched");
}

/// `POST /cache/purge` drops what a path names (a resource, a collection, everything), says
/// how many entries went, and logs a `cache.purge` event.
#[tokio::test]
async fn purge_by_hand() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &cached(&[])), None).await;
    let http = Http::default();
    let base = format!("{}/api/v2", proxy.url());
    let admin = format!("http://{}", proxy.admin_addr.unwrap());
    for path in ["products/1", "products/2", "products?limit=3", "brands/1"] {
        http.get(&format!("{base}/{path}")).await;
    }
    let purge = |path: &str| {
        Request::post(format!("{admin}/cache/purge"))
            .header("content-type", "application/json")
            .body(body(serde_json::json!({ "path": path }).to_string()))
            .unwrap()
    };
    let one = http.send(purge("/api/v2/products/1")).await;
    assert_eq!(
        (one.status, one.json()["dropped"].as_u64()),
        (200, Some(2)),
        "product 1 and the list"
    );
    assert_eq!(
        x_cache(&http, &format!("{base}/products/2"), &[]).await,
        "HIT"
    );
    assert_eq!(
        x_cache(&http, &format!("{base}/products/1"), &[]).await,
        "MISS"
    );
    let all = http.send(purge("/api/v2/products")).await;
    assert_eq!(all.json()["dropped"], 2, "{}", all.text());
    assert_eq!(
        x_cache(&http, &format!("{base}/products/2"), &[]).await,
        "MISS"
    );
    let everything = http.send(purge("/")).await;
    assert_eq!(everything.json()["dropped"], 2, "{}", everything.text());
    assert_eq!(
        x_cache(&http, &format!("{base}/brands/1"), &[]).await,
        "MISS"
    );
    assert_eq!(http.send(purge("no-slash")).await.status, 400);
    proxy.stop().await;
    let purges = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "cache.purge")
        .count();
    assert_eq!(purges, 3);
}

/// What a step of the property below does.
#[derive(Debug, Clone)]
enum Step {
    /// GET a product through the proxy.
    Get(u8),
    /// GET the product list through the proxy.
    List,
    /// PUT a product through the proxy.
    Write(u8),
    /// Change a product at the store directly, then deliver the store's webhook.
    Outside(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u8..5).prop_map(Step::Get),
        1 => Just(Step::List),
        2 => (1u8..5).prop_map(Step::Write),
        2 => (1u8..5).prop_map(Step::Outside),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the order of reads, writes through the proxy, and changes made elsewhere
    /// (followed by their webhook), a GET after a change never returns an answer older than it.
    #[test]
    fn no_answer_older_than_a_change(steps in prop::collection::vec(step(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let sim = start_sim().await;
            let (proxy, _dir) = proxy_with_webhooks(&sim.url(), "").await;
            let http = Http::default();
            let base = format!("{}/api/v2", proxy.url());
            let hook = format!("http://{}/webhooks/bigcommerce", proxy.admin_addr.unwrap());
            let mut names: std::collections::HashMap<u8, String> = Default::default();
            for i in 1..5u8 {
                let name = http.get(&format!("{base}/products/{i}")).await.json()["name"].as_str().unwrap().to_string();
                names.insert(i, name);
            }
            for (n, step) in steps.iter().enumerate() {
                match step {
                    Step::Get(i) => {
                        let got = http.get(&format!("{base}/products/{i}")).await.json();
                        prop_assert_eq!(got["name"].as_str(), Some(names[i].as_str()), "step {} {:?}", n, step);
                    }
                    Step::List => {
                        let list = http.get(&format!("{base}/products?limit=4")).await.json();
                        for p in list.as_array().unwrap() {
                            let i = p["id"].as_u64().unwrap() as u8;
                            prop_assert_eq!(p["name"].as_str(), Some(names[&i].as_str()), "step {} list", n);
                        }
                    }
                    Step::Write(i) => {
                        let name = format!("proxy write {n}");
                        let reply = http.send(put(&format!("{base}/products/{i}"), &serde_json::json!({"name": name}).to_string())).await;
                        prop_assert_eq!(reply.status, 200);
                        names.insert(*i, name);
                    }
                    Step::Outside(i) => {
                        let name = format!("outside change {n}");
                        let reply = Http::default().send(
                            Request::put(format!("{}/api/v2/products/{i}", sim.url()))
                                .header("authorization", sim_credential())
                                .header("content-type", "application/json")
                                .body(body(serde_json::json!({"name": name}).to_string()))
                                .unwrap(),
                        ).await;
                        prop_assert_eq!(reply.status, 200);
                        let data = serde_json::json!({"type": "product", "id": i});
                        let hooked = http.send(delivery(&hook, &format!("msg_{n}"), "store/product/updated", data, now())).await;
                        prop_assert_eq!(hooked.status, 200);
                        names.insert(*i, name);
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// The simulator sends the store's signed webhooks of its changes: pointed at the proxy, a
/// change made at the store directly (as the control panel would) drops the cached product.
#[tokio::test]
async fn the_simulators_webhooks_close_the_loop() {
    let sim = start_sim().await;
    let (proxy, _dir) = proxy_with_webhooks(&sim.url(), "").await;
    sim.sim.set_webhooks(Some(sim::hooks::Target {
        url: format!("http://{}/webhooks/bigcommerce", proxy.admin_addr.unwrap()),
        secret: SECRET.into(),
    }));
    let http = Http::default();
    let url = format!("{}/api/v2/products/9", proxy.url());
    http.get(&url).await;
    assert_eq!(x_cache(&http, &url, &[]).await, "HIT");
    let direct = Http::default()
        .send(
            Request::put(format!("{}/api/v2/products/9", sim.url()))
                .header("authorization", sim_credential())
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Changed in the control panel"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(direct.status, 200);
    assert!(eventually(Duration::from_secs(5), || sim.sim.webhooks_sent() == 1).await);
    let mut fresh = None;
    for _ in 0..100 {
        let reply = http.get(&url).await;
        if reply.header("x-cache") == Some("MISS") {
            fresh = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = fresh.expect("the webhook never dropped the product");
    assert_eq!(fresh.json()["name"], "Changed in the control panel");
}
