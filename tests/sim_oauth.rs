//! The simulator's OAuth dialect: X-Auth-Token, the four X-Rate-Limit headers, a fixed window
//! with 429, v3 shapes on /v3/ paths, legacy shapes on /v2/ paths, gzip on request.

mod support;

use std::io::Read;
use std::time::Duration;

use bcproxy::config::Dialect;
use bcproxy::sim::{self, SimConfig};
use http::Request;
use support::*;

fn oauth(limit: u64, window: Duration) -> SimConfig {
    SimConfig {
        dialect: Dialect::Oauth,
        limit,
        window,
        ..Default::default()
    }
}

fn token() -> (&'static str, &'static str) {
    ("x-auth-token", sim::DEFAULT_API_KEY)
}

/// Without the right X-Auth-Token the gateway answers 401 in the shape of the path.
#[tokio::test]
async fn token_auth_with_the_paths_shape() {
    let sim = start_sim_with(oauth(150, Duration::from_secs(30))).await;
    let http = Http::default();
    let v3 = format!("{}/stores/abc123/v3/catalog/products", sim.url());
    let v2 = format!("{}/stores/abc123/v2/products", sim.url());
    let missing = http.get(&v3).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["status"], 401);
    assert!(missing.json()["title"].is_string());
    let wrong = http.get_with(&v2, &[("x-auth-token", "nope")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()[0]["status"], 401);
    let basic = http.direct(&v3, &[]).await;
    assert_eq!(
        basic.status, 401,
        "Basic auth is not how the OAuth gateway authenticates"
    );
    assert_eq!(http.get_with(&v3, &[token()]).await.status, 200);
    assert_eq!(
        http.get_with(
            &format!("{}/stores/zzz/v3/catalog/products", sim.url()),
            &[token()]
        )
        .await
        .status,
        404
    );
}

/// Every answer carries the four X-Rate-Limit headers; past the quota the gateway answers 429
/// with the reset and X-Retry-After, and the window resets whole.
#[tokio::test]
async fn fixed_window_with_429() {
    let sim = start_sim_with(oauth(3, Duration::from_millis(1500))).await;
    let http = Http::default();
    let url = format!("{}/stores/abc123/v3/catalog/brands", sim.url());
    // Start right after a window boundary so the three calls share one window.
    let window_ms = 1500u128;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    tokio::time::sleep(Duration::from_millis(
        (window_ms - now_ms % window_ms) as u64 + 20,
    ))
    .await;
    let mut left = Vec::new();
    for _ in 0..3 {
        let reply = http.get_with(&url, &[token()]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-rate-limit-time-window-ms"), Some("1500"));
        assert_eq!(reply.header("x-rate-limit-requests-quota"), Some("3"));
        let reset: u64 = reply
            .header("x-rate-limit-time-reset-ms")
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset <= 1500);
        left.push(
            reply
                .header("x-rate-limit-requests-left")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(left, ["2", "1", "0"]);
    let throttled = http.get_with(&url, &[token()]).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.json()["status"], 429);
    assert_eq!(throttled.header("x-rate-limit-requests-left"), Some("0"));
    let reset: u64 = throttled
        .header("x-rate-limit-time-reset-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > 0 && reset <= 1500);
    let retry: u64 = throttled.header("x-retry-after").unwrap().parse().unwrap();
    assert_eq!(
        retry,
        reset.div_ceil(1000).max(1),
        "X-Retry-After is the reset in whole seconds"
    );
    tokio::time::sleep(Duration::from_millis(reset + 20)).await;
    let after = http.get_with(&url, &[token()]).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.header("x-rate-limit-requests-left"), Some("2"));
    assert_eq!(sim.sim.stats(false).throttled, 1);
}

/// v3 paths answer in v3 shapes; v2 paths on the gateway answer as the legacy API.
#[tokio::test]
async fn v3_and_v2_shapes() {
    let sim = start_sim_with(oauth(150, Duration::from_secs(30))).await;
    let http = Http::default();
    let v3 = format!("{}/stores/abc123/v3", sim.url());
    let list = http
        .get_with(
            &format!("{v3}/catalog/products?limit=10&page=2"),
            &[token()],
        )
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 10);
    assert_eq!(list["data"][0]["id"], 11);
    assert_eq!(list["meta"]["pagination"]["total"], 60);
    assert_eq!(list["meta"]["pagination"]["total_pages"], 6);
    let empty = http
        .get_with(&format!("{v3}/catalog/products?page=99"), &[token()])
        .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["data"], serde_json::json!([]));
    let one = http
        .get_with(&format!("{v3}/catalog/products/3"), &[token()])
        .await
        .json();
    assert_eq!(one["data"]["name"], "日本茶セット");
    let missing = http
        .get_with(&format!("{v3}/catalog/products/999"), &[token()])
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);
    let created = http
        .send(
            Request::post(format!("{v3}/catalog/products"))
                .header("x-auth-token", sim::DEFAULT_API_KEY)
                .header("content-type", "application/json")
                .body(body(r#"{"name":"v3 Ölkanne","price":12.5}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 200);
    assert_eq!(created.json()["data"]["name"], "v3 Ölkanne");
    let invalid = http
        .send(
            Request::post(format!("{v3}/catalog/products"))
                .header("x-auth-token", sim::DEFAULT_API_KEY)
                .body(body(r#"{"price":1}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(invalid.status, 422);
    assert!(invalid.json()["errors"]["name"].is_string());
    let variants = http
        .get_with(&format!("{v3}/catalog/products/1/variants"), &[token()])
        .await;
    assert_eq!(variants.status, 200);

    let v2 = format!("{}/stores/abc123/v2", sim.url());
    let orders = http
        .get_with(&format!("{v2}/orders/count"), &[token()])
        .await;
    assert_eq!(orders.json()["count"], 30);
    let xml = http
        .get_with(&format!("{v2}/orders/1.xml"), &[token()])
        .await;
    assert!(xml.text().starts_with("<?xml"));
    let v2_missing = http.get_with(&format!("{v2}/orders/999"), &[token()]).await;
    assert_eq!(v2_missing.json()[0]["status"], 404);
}

/// The gateway gzips bodies for clients that accept it, and only for them.
#[tokio::test]
async fn gzip_when_accepted() {
    let sim = start_sim_with(oauth(150, Duration::from_secs(30))).await;
    let http = Http::default();
    let url = format!("{}/stores/abc123/v3/catalog/products/3", sim.url());
    let plain = http.get_with(&url, &[token()]).await;
    assert!(plain.header("content-encoding").is_none());
    let gz = http
        .get_with(&url, &[token(), ("accept-encoding", "gzip, deflate")])
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
}
