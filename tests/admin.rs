//! The admin listener: health, readiness (without spending budget), metrics and status.

mod support;

use base64::Engine;
use bcproxy::clients::token_sha256;
use support::*;

fn admin_url(proxy: &bcproxy::app::RunningProxy, path: &str) -> String {
    format!("http://{}{path}", proxy.admin_addr.expect("admin listener"))
}

/// `/healthz` is 200 while the process runs; `/readyz` is 200 once the store answered lately,
/// or a connection to it can be made, and that probe spends no budget.
#[tokio::test]
async fn health_and_readiness() {
    let sim = start_sim().await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &[]), None).await;
    let http = Http::default();
    assert_eq!(http.get(&admin_url(&proxy, "/healthz")).await.status, 200);
    let ready = http.get(&admin_url(&proxy, "/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "the readiness probe spent budget"
    );

    let dead = dead_port().await;
    let orphan = start_proxy_with_admin(settings(&format!("http://{dead}"), "", &[]), None).await;
    assert_eq!(http.get(&admin_url(&orphan, "/healthz")).await.status, 200);
    let not_ready = http.get(&admin_url(&orphan, "/readyz")).await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.json()["ready"], false);
    assert_eq!(http.get(&admin_url(&proxy, "/nope")).await.status, 404);
}

/// `/metrics` speaks Prometheus text: calls by method, status, cache result and client;
/// latency and wait histograms; budget, queue and cache.
#[tokio::test]
async fn metrics_in_prometheus_text() {
    let sim = start_sim().await;
    let clients = format!(
        "[[clients]]\nname = \"erp\"\ntoken_sha256 = \"{}\"\n",
        token_sha256("erp-token")
    );
    let proxy = start_proxy_with_admin(
        settings(
            &sim.url(),
            &format!("{clients}[cache]\nenabled = true\n"),
            &[],
        ),
        None,
    )
    .await;
    let http = Http::default();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("erp:erp-token")
    );
    for _ in 0..3 {
        http.get_with(
            &format!("{}/api/v2/products/1", proxy.url()),
            &[("authorization", &auth)],
        )
        .await;
    }
    http.get(&format!("{}/api/v2/products/1", proxy.url()))
        .await;
    let metrics = http.get(&admin_url(&proxy, "/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    for needle in [
        "bcproxy_calls_total{method=\"GET\",status=\"200\",cache=\"MISS\",client=\"erp\"} 1",
        "bcproxy_calls_total{method=\"GET\",status=\"200\",cache=\"HIT\",client=\"erp\"} 2",
        "bcproxy_calls_total{method=\"GET\",status=\"401\",cache=\"BYPASS\",client=\"\"} 1",
        "bcproxy_upstream_seconds_count 1",
        "bcproxy_queue_wait_seconds_count 1",
        "bcproxy_budget_remaining 19999",
        "bcproxy_budget_limit 20000",
        "bcproxy_queue_depth 0",
        "bcproxy_store_throttles_total 0",
        "bcproxy_cache_hits_total 2",
        "bcproxy_cache_misses_total 1",
        "bcproxy_cache_entries ",
        "bcproxy_cache_bytes ",
        "bcproxy_cache_stale_total 0",
        "bcproxy_cache_coalesced_total 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("erp-token"));
}

/// `/status` is JSON: budget, queue, cache, uptime, version.
#[tokio::test]
async fn status_in_json() {
    let sim = start_sim().await;
    let proxy =
        start_proxy_with_admin(settings(&sim.url(), "", &[("budget.limit", "500")]), None).await;
    let http = Http::default();
    http.get(&format!("{}/api/v2/time", proxy.url())).await;
    let status = http.get(&admin_url(&proxy, "/status")).await.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_s"].is_u64());
    assert_eq!(status["budget"]["limit"], 500);
    assert_eq!(status["budget"]["remaining"], 499);
    assert_eq!(status["budget"]["dialect"], "legacy");
    assert_eq!(status["queue"]["depth"], 0);
    assert_eq!(status["cache"]["enabled"], false);
    assert_eq!(status["upstream"]["url"], sim.url());
    assert!(status["upstream"]["last_answer_s_ago"].is_u64());
    assert!(!status.to_string().contains(bcproxy::sim::DEFAULT_API_KEY));
}

/// The store refusing the proxy's own credential (a wrong or revoked key): one
/// `upstream.auth_failed` ERROR event however many calls meet it (at most one a minute), and
/// `/readyz` 503 saying why, so the orchestrator sees the proxy cannot serve.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_credential_is_an_error_event_and_not_ready() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(bcproxy::sim::SimConfig {
        api_key: "the-store-s-real-key".into(),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &[]), None).await;
    let http = Http::default();
    for _ in 0..3 {
        let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
        assert_eq!(reply.status, 401);
    }
    let ready = http.get(&admin_url(&proxy, "/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.json()["reason"]
            .as_str()
            .unwrap()
            .contains("refuses the proxy's credential (401)"),
        "{}",
        ready.text()
    );
    let status = http.get(&admin_url(&proxy, "/status")).await.json();
    assert_eq!(status["credential_refused"], 401);
    let failed: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "upstream.auth_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["level"], "ERROR");
    assert_eq!(failed[0]["status"], 401);
}
