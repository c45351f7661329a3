//! The log: one access event per call with the contract's fields, and never a secret.

mod support;

use std::time::Duration;

use bcproxy::sim::{Fault, SimConfig};
use http::Request;
use support::*;

const ACCESS_FIELDS: [&str; 17] = [
    "timestamp",
    "level",
    "message",
    "request_id",
    "client",
    "method",
    "path",
    "status",
    "cache",
    "upstream_status",
    "upstream_ms",
    "upstream_request_id",
    "wait_ms",
    "total_ms",
    "bytes_out",
    "budget_remaining",
    "error",
];

/// Every call that reached the proxy, its own answers included, is one access event with
/// every contract field at the top level, nulls where no upstream call was made.
#[tokio::test]
async fn one_access_event_per_call_with_every_field() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("listen.max_body", "1KiB")])).await;
    let http = Http::default();
    let ok = http
        .get_with(
            &format!("{}/api/v2/products?limit=2", proxy.url()),
            &[("x-request-id", "log-1")],
        )
        .await;
    let too_big = http
        .send(
            Request::post(format!("{}/api/v2/products", proxy.url()))
                .body(body(vec![b'x'; 2048]))
                .unwrap(),
        )
        .await;
    let mut raw = RawConn::connect(proxy.addr).await;
    raw.send(b"GET /api/v2/../x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let bad = raw.read_response(false).await.unwrap();
    assert_eq!((ok.status, too_big.status, bad.status), (200, 413, 400));
    proxy.stop().await;

    let access = logs.access();
    assert_eq!(access.len(), 3, "{}", logs.text());
    for line in &access {
        let object = line.as_object().unwrap();
        for field in ACCESS_FIELDS {
            assert!(object.contains_key(field), "missing {field}: {line}");
        }
        assert!(object.get("fields").is_none());
        assert!(line["status"].is_u64());
        assert!(line["total_ms"].is_number());
    }
    let first = &access[0];
    assert_eq!(first["request_id"], "log-1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v2/products?limit=2");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cache"], "BYPASS");
    assert_eq!(first["upstream_status"], 200);
    assert!(first["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        first["upstream_request_id"]
            .as_str()
            .unwrap()
            .starts_with("sim-")
    );
    assert_eq!(first["bytes_out"], ok.body.len());
    assert!(first["client"].is_null());
    assert!(first["error"].is_null());

    for own in &access[1..] {
        assert!(own["upstream_status"].is_null(), "{own}");
        assert!(own["upstream_ms"].is_null(), "{own}");
        assert!(own["upstream_request_id"].is_null(), "{own}");
        assert_eq!(own["wait_ms"], 0.0);
        assert!(own["error"].is_string());
    }
    assert_eq!(access[1]["status"], 413);
    assert_eq!(access[2]["status"], 400);

    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "start" && l["version"].is_string())
    );
    assert!(lines.iter().any(|l| l["message"] == "shutdown"));
}

/// An app that goes away while its call is at the store is logged once, as 499.
#[tokio::test]
async fn an_app_that_goes_away_is_logged_as_499() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(&sim.url(), "", &[])).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /api/v2/products/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(conn);
    assert!(eventually(Duration::from_secs(3), || !logs.access().is_empty()).await);
    let access = logs.access();
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["status"], 499);
}

/// A redirect from the store is logged as a warning: a moved store URL is a known trap.
#[tokio::test]
async fn upstream_redirects_are_warned_about() {
    let (logs, _guard) = Logs::capture();
    let (sim, proxy) = sim_and_proxy().await;
    sim.sim.inject(
        Fault::Status {
            status: 301,
            location: Some("https://elsewhere.example/api/v2/time".into()),
        },
        1,
    );
    assert_eq!(
        Http::default()
            .get(&format!("{}/api/v2/time", proxy.url()))
            .await
            .status,
        301
    );
    let lines = logs.lines();
    let warning = lines
        .iter()
        .find(|l| l["message"] == "upstream.redirect")
        .expect("a redirect warning");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["status"], 301);
}

/// No log line ever holds the API key, the Basic credential or its base64, or any credential
/// an app sent (right or wrong), whatever the call's fate.
#[tokio::test]
async fn no_secret_ever_reaches_the_log() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("upstream.timeout", "300ms")])).await;
    let http = Http::default();
    let app_basic = "Basic YXBwLXVzZXI6YXBwLXNlY3JldC10b2tlbg=="; // app-user:app-secret-token
    let url = format!("{}/api/v2/products/1", proxy.url());
    http.get_with(&url, &[("authorization", app_basic)]).await;
    http.get_with(
        &url,
        &[
            ("x-auth-token", "app-token-XYZ"),
            ("x-auth-client", "app-client-ABC"),
        ],
    )
    .await;
    sim.sim.inject(Fault::Hang, 1);
    http.get_with(&url, &[("x-auth-token", "app-token-XYZ")])
        .await;
    sim.sim.inject(
        Fault::Status {
            status: 500,
            location: None,
        },
        1,
    );
    http.get(&url).await;
    proxy.stop().await;

    let text = logs.text();
    assert_eq!(logs.access().len(), 4, "{text}");
    for secret in [
        bcproxy::sim::DEFAULT_API_KEY,
        &sim_credential_b64(),
        "YXBwLXVzZXI6YXBwLXNlY3JldC10b2tlbg",
        "app-secret-token",
        "app-token-XYZ",
        "app-client-ABC",
    ] {
        assert!(!text.contains(secret), "the log holds {secret:?}:\n{text}");
    }
}

/// Every event a call causes runs in its span and names its request id: here the retry of a
/// GET the store failed, and the budget's pause after the store throttled a write.
#[tokio::test]
async fn events_a_call_causes_carry_its_request_id() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        limit: 3,
        window: Duration::from_millis(1200),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("budget.limit", "100"),
            ("budget.window", "1200ms"),
            ("budget.reserve_writes", "0"),
        ],
    ))
    .await;
    let http = Http::default();
    sim.sim.inject(
        Fault::Status {
            status: 500,
            location: None,
        },
        1,
    );
    let retried = http
        .get_with(
            &format!("{}/api/v2/time", proxy.url()),
            &[("x-request-id", "retried-call")],
        )
        .await;
    assert_eq!(retried.status, 200);
    sim.sim.spend(10);
    let written = http
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .header("x-request-id", "throttled-write")
                .body(body(r#"{"name":"Spanned"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(written.status, 201, "{}", written.text());
    proxy.stop().await;
    let lines = logs.lines();
    let named = |message: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["message"] == message)
            .map(|l| l["request_id"].as_str().unwrap_or("(none)").to_string())
            .collect()
    };
    assert_eq!(named("upstream.retry"), ["retried-call"]);
    assert!(
        named("budget.throttled_by_store")
            .iter()
            .all(|id| id == "throttled-write"),
        "{:?}",
        named("budget.throttled_by_store")
    );
    assert!(named("budget.paused").contains(&"throttled-write".to_string()));
}
