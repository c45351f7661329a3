//! The store simulator behaves like the store: auth, resources, formats, quota and 509, and its
//! control API.

mod support;

use std::time::Duration;

use bcproxy::sim::SimConfig;
use bytes::Bytes;
use http::Request;
use support::*;

fn authed(method: http::Method, url: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", sim_credential())
}

/// Missing or wrong credentials get 401 in the store's shape with `WWW-Authenticate: Basic`,
/// and spend no quota.
#[tokio::test]
async fn bad_credentials_get_401_and_spend_nothing() {
    let sim = start_sim_with(SimConfig {
        limit: 5,
        ..Default::default()
    })
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/products", sim.url());
    let none = http.get(&url).await;
    let wrong = http
        .get_with(&url, &[("authorization", "Basic ZGVtbzpub3BlCg==")])
        .await;
    let token = http
        .get_with(&url, &[("x-auth-token", sim::DEFAULT_API_KEY)])
        .await;
    for reply in [&none, &wrong, &token] {
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"Store API\"")
        );
        assert_eq!(reply.json()[0]["status"], 401);
    }
    let stats = sim.sim.stats(false);
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(stats.remaining, 5);
    assert_eq!(stats.distinct_credentials, 1);
}

use bcproxy::sim;

/// Every answer carries `X-BC-ApiLimit-Remaining`; past the limit the store answers 509 with
/// the exact body, remaining 0 and no Retry-After, and does not process the call.
#[tokio::test]
async fn past_the_limit_the_store_answers_509_exactly() {
    let sim = start_sim_with(SimConfig {
        limit: 3,
        ..Default::default()
    })
    .await;
    let http = Http::default();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = http
            .direct(&format!("{}/api/v2/time", sim.url()), &[])
            .await;
        assert_eq!(reply.status, 200);
        remaining.push(reply.header("x-bc-apilimit-remaining").unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = http
        .send(
            authed(http::Method::POST, &format!("{}/api/v2/brands", sim.url()))
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Never made"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(refused.status, 509);
    assert_eq!(
        refused.text(),
        r#"[{"status":509,"message":"The requests-per-hour limit has been reached."}]"#
    );
    assert_eq!(refused.header("x-bc-apilimit-remaining"), Some("0"));
    assert!(refused.header("retry-after").is_none());
    assert_eq!(sim.sim.stats(false).throttled, 1);
    sim.sim.reset(false);
    let count = http
        .direct(&format!("{}/api/v2/brands/count", sim.url()), &[])
        .await;
    assert_eq!(count.json()["count"], 6, "the 509'd POST was processed");
}

/// The quota is a rolling window moving in steps of window/60: calls count until the step that
/// drops them, then the store answers again. Spending by other clients counts too.
#[tokio::test]
async fn the_window_rolls_and_other_clients_spend_it() {
    let sim = start_sim_with(SimConfig {
        limit: 2,
        window: Duration::from_millis(1200),
        ..Default::default()
    })
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/time", sim.url());
    assert_eq!(http.direct(&url, &[]).await.status, 200);
    assert_eq!(http.direct(&url, &[]).await.status, 200);
    assert_eq!(http.direct(&url, &[]).await.status, 509);
    tokio::time::sleep(Duration::from_millis(1200 + 40)).await;
    let again = http.direct(&url, &[]).await;
    assert_eq!(again.status, 200, "the window never rolled");
    assert_eq!(again.header("x-bc-apilimit-remaining"), Some("1"));
    assert_eq!(sim.sim.spend(5), 0);
    assert_eq!(http.direct(&url, &[]).await.status, 509);
}

/// Lists page with `page`/`limit` (at most 250, more is 413); an empty page is 204 with no
/// body; counts, single records, sub-resources and the time answer as the store does.
#[tokio::test]
async fn resources_answer_like_the_store() {
    let sim = start_sim().await;
    let http = Http::default();
    let base = format!("{}/api/v2", sim.url());
    let page = http
        .direct(&format!("{base}/products?page=2&limit=25"), &[])
        .await;
    assert_eq!(page.json().as_array().unwrap().len(), 25);
    assert_eq!(page.json()[0]["id"], 26);
    assert_eq!(
        http.direct(&format!("{base}/products?limit=250"), &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        60
    );
    let too_many = http
        .direct(&format!("{base}/products?limit=251"), &[])
        .await;
    assert_eq!(too_many.status, 413);
    assert_eq!(
        http.direct(&format!("{base}/products?page=0"), &[])
            .await
            .status,
        400
    );
    let empty = http
        .direct(&format!("{base}/products?page=4&limit=20"), &[])
        .await;
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
    assert_eq!(
        http.direct(&format!("{base}/customers/count"), &[])
            .await
            .json(),
        serde_json::json!({"count": 25})
    );
    assert!(
        http.direct(&format!("{base}/time"), &[]).await.json()["time"]
            .as_u64()
            .unwrap()
            > 1_700_000_000
    );
    let one = http.direct(&format!("{base}/customers/5"), &[]).await;
    assert_eq!(one.json()["first_name"], "小龙");
    assert!(one.header("last-modified").is_some());
    assert_eq!(
        http.direct(&format!("{base}/customers/999"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        http.direct(&format!("{base}/widgets"), &[]).await.status,
        404
    );

    let sku = http
        .send(
            authed(http::Method::POST, &format!("{base}/products/2/skus"))
                .header("content-type", "application/json")
                .body(body(r#"{"sku":"ÜBER-1"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(sku.status, 201);
    assert_eq!(
        sku.header("location"),
        Some(format!("{base}/products/2/skus/1").as_str())
    );
    assert_eq!(
        http.direct(&format!("{base}/products/2/skus/count"), &[])
            .await
            .json()["count"],
        1
    );
    assert_eq!(
        http.direct(&format!("{base}/products/999/skus"), &[])
            .await
            .status,
        404
    );
}

/// Writes: 201 with Location, 400 for a missing field or a bad body, 409 for a duplicate, 200
/// on update, 204 on delete, 405 with Allow for a method a resource lacks, 501 for PATCH.
#[tokio::test]
async fn writes_answer_like_the_store() {
    let sim = start_sim().await;
    let http = Http::default();
    let base = format!("{}/api/v2", sim.url());
    let post = |body_text: &'static str, ct: &'static str| {
        authed(http::Method::POST, &format!("{base}/categories"))
            .header("content-type", ct)
            .body(body(body_text))
            .unwrap()
    };
    let created = http
        .send(post(r#"{"name":"Ökologisch"}"#, "application/json"))
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_u64().unwrap();
    assert!(
        created.json()["date_created"]
            .as_str()
            .unwrap()
            .ends_with("+0000")
    );
    assert_eq!(
        http.send(post(r#"{"name":"Ökologisch"}"#, "application/json"))
            .await
            .status,
        409
    );
    let missing = http
        .send(post(r#"{"description":"x"}"#, "application/json"))
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.json()[0]["message"],
        "The field 'name' cannot be blank."
    );
    assert_eq!(
        http.send(post("{not json", "application/json"))
            .await
            .status,
        400
    );
    let xml = http
        .send(post(
            "<category><name>Ünter &amp; Über</name></category>",
            "application/xml",
        ))
        .await;
    assert_eq!(xml.status, 201, "{}", xml.text());
    assert_eq!(xml.json()["name"], "Ünter & Über");
    let xml_reply = http
        .send(
            authed(http::Method::POST, &format!("{base}/categories.xml"))
                .header("content-type", "application/xml")
                .body(body("<category><name>XML in, XML out</name></category>"))
                .unwrap(),
        )
        .await;
    assert_eq!(xml_reply.header("content-type"), Some("application/xml"));
    assert!(
        xml_reply.text().contains("<category><id>"),
        "{}",
        xml_reply.text()
    );

    let put = http
        .send(
            authed(http::Method::PUT, &format!("{base}/categories/{id}"))
                .header("content-type", "application/json")
                .body(body(r#"{"description":"Bio ✓","id":999}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(put.status, 200);
    assert_eq!(put.json()["id"], id);
    assert_eq!(put.json()["description"], "Bio ✓");
    let post_to_item = http
        .send(
            authed(http::Method::POST, &format!("{base}/categories/{id}"))
                .body(body("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(post_to_item.status, 405);
    assert_eq!(post_to_item.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    let patch = http
        .send(
            authed(http::Method::PATCH, &format!("{base}/categories/{id}"))
                .body(body("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(patch.status, 501);
    let delete = http
        .send(
            authed(http::Method::DELETE, &format!("{base}/categories/{id}"))
                .body(body(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(delete.status, 204);
    let again = http
        .send(
            authed(http::Method::DELETE, &format!("{base}/categories/{id}"))
                .body(body(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(again.status, 404);
}

/// The control API reports, resets, injects faults and latency, and never counts against the
/// quota or in the stats.
#[tokio::test]
async fn control_api_over_http() {
    let sim = start_sim_with(SimConfig {
        limit: 100,
        ..Default::default()
    })
    .await;
    let http = Http::default();
    let control = |method: http::Method, path: &str, json: &str| {
        Request::builder()
            .method(method)
            .uri(format!("{}/__sim/{path}", sim.url()))
            .body(body(json.to_string()))
            .unwrap()
    };
    assert_eq!(http.get(&format!("{}/__sim", sim.url())).await.status, 200);
    let faults = http
        .send(control(
            http::Method::POST,
            "faults",
            r#"{"kind":"status","status":500,"count":2}"#,
        ))
        .await;
    assert_eq!(faults.json()["pending"], 2);
    let url = format!("{}/api/v2/products/1", sim.url());
    assert_eq!(http.direct(&url, &[]).await.status, 500);
    assert_eq!(http.direct(&url, &[]).await.status, 500);
    assert_eq!(http.direct(&url, &[]).await.status, 200);
    assert_eq!(
        http.send(control(
            http::Method::POST,
            "faults",
            r#"{"kind":"explode"}"#
        ))
        .await
        .status,
        400
    );

    let spent = http
        .send(control(http::Method::POST, "spend", r#"{"count":40}"#))
        .await;
    assert_eq!(spent.json()["remaining"], 59);
    http.send(control(http::Method::PUT, "latency", r#"{"ms":200}"#))
        .await;
    let started = std::time::Instant::now();
    http.direct(&url, &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(200));

    let stats = http.get(&format!("{}/__sim/stats", sim.url())).await.json();
    assert_eq!(stats["calls"], 4);
    assert_eq!(stats["by_status"]["500"], 2);
    assert_eq!(stats["remaining"], 58);
    assert_eq!(stats["log"].as_array().unwrap().len(), 4);
    assert_eq!(stats["log"][0]["fault"], "status 500");
    assert!(
        stats["log"][3]["at_ms"].as_f64().unwrap() >= stats["log"][0]["at_ms"].as_f64().unwrap()
    );

    http.send(control(http::Method::POST, "reset", "")).await;
    let stats = http
        .get(&format!("{}/__sim/stats?log=false", sim.url()))
        .await
        .json();
    assert_eq!(stats["calls"], 0);
    assert_eq!(stats["remaining"], 100);
}

/// The simulator counts the most calls it had in flight at once.
#[tokio::test]
async fn peak_concurrency_is_measured() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let http = Http::default();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let http = http.clone();
            let url = format!("{}/api/v2/time", sim.url());
            tokio::spawn(async move { http.direct(&url, &[]).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(sim.sim.stats(false).peak_concurrency, 5);
}
