//! Forwarding over real sockets: what an app sees through the proxy is what the store says,
//! and the store only ever sees the proxy's credential.

mod support;

use bytes::Bytes;
use http::Request;
use support::*;

/// Whatever credential an app sends (none, a wrong Basic, its own X-Auth-Token), the store sees
/// only the configured one, and the app gets the store's answer.
#[tokio::test]
async fn the_store_only_sees_the_configured_credential() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/1", proxy.url());
    let none = http.get(&url).await;
    let wrong = http
        .get_with(&url, &[("authorization", "Basic d3Jvbmc6d3Jvbmc=")])
        .await;
    let token = http
        .get_with(
            &url,
            &[
                ("x-auth-token", "app-token"),
                ("x-auth-client", "app-client"),
            ],
        )
        .await;
    for reply in [&none, &wrong, &token] {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["id"], 1);
    }
    let stats = sim.sim.stats(true);
    assert_eq!(stats.calls, 3);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(
        stats.distinct_credentials, 1,
        "the sim saw a credential other than the proxy's"
    );
    assert!(stats.log.iter().all(|c| c.auth == "ok"));
}

/// Reads in JSON and XML are byte-identical to the store's own answers, UTF-8 intact.
#[tokio::test]
async fn reads_are_byte_identical_to_the_store_in_json_and_xml() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("/api/v2/products/3", &[]),
        ("/api/v2/products/3.json", &[]),
        ("/api/v2/products/3.xml", &[]),
        ("/api/v2/products/3", &[("accept", "application/xml")]),
        ("/api/v2/products?page=2&limit=7", &[]),
        (
            "/api/v2/customers?limit=250",
            &[("accept", "application/xml")],
        ),
        ("/api/v2/brands/count", &[]),
        ("/api/v2/products/9999", &[]),
        ("/api/v2/products?page=99", &[]),
        ("/api/v2/products?limit=251", &[]),
    ];
    for (path, headers) in cases {
        let direct = http.direct(&format!("{}{path}", sim.url()), headers).await;
        let proxied = http
            .get_with(&format!("{}{path}", proxy.url()), headers)
            .await;
        assert_eq!(proxied.status, direct.status, "{path}");
        assert_eq!(proxied.body, direct.body, "{path}: body differs");
        assert_eq!(
            proxied.header("content-type"),
            direct.header("content-type"),
            "{path}"
        );
        assert_eq!(proxied.header("x-cache"), Some("BYPASS"), "{path}");
    }
    let name = http
        .get(&format!("{}/api/v2/products/3", proxy.url()))
        .await
        .json()["name"]
        .clone();
    assert_eq!(name, "日本茶セット");
    let xml = http
        .get(&format!("{}/api/v2/products/3.xml", proxy.url()))
        .await
        .text();
    assert!(xml.contains("<name>日本茶セット</name>"), "{xml}");
}

/// Create, read, update and delete through the proxy, in JSON and XML: the store applies each
/// write once, `Location` points back at the proxy, and later reads match the store's.
#[tokio::test]
async fn writes_round_trip_in_json_and_xml() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let created = http
        .send(
            Request::post(format!("{}/api/v2/products", proxy.url()))
                .header("content-type", "application/json")
                .body(body(
                    r#"{"name":"Crème brûlée set ☕","price":"12.50","type":"physical"}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_u64().unwrap();
    let location = created.header("location").unwrap().to_string();
    assert_eq!(location, format!("{}/api/v2/products/{id}", proxy.url()));

    let via_location = http.get(&location).await;
    let direct = http
        .direct(&format!("{}/api/v2/products/{id}", sim.url()), &[])
        .await;
    assert_eq!(via_location.body, direct.body);
    assert_eq!(via_location.json()["name"], "Crème brûlée set ☕");

    let updated = http
        .send(
            Request::put(format!("{}/api/v2/products/{id}.xml", proxy.url()))
                .header("content-type", "application/xml")
                .body(body(
                    "<product><name>Øresund lamp</name><price>20.00</price></product>",
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert!(updated.text().contains("<name>Øresund lamp</name>"));
    let direct_xml = http
        .direct(&format!("{}/api/v2/products/{id}.xml", sim.url()), &[])
        .await;
    assert_eq!(updated.body, direct_xml.body);

    let deleted = http
        .send(
            Request::delete(format!("{}/api/v2/products/{id}", proxy.url()))
                .body(body(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert_eq!(
        http.direct(&format!("{}/api/v2/products/{id}", sim.url()), &[])
            .await
            .status,
        404
    );

    let patched = http
        .send(
            Request::patch(format!("{}/api/v2/products/1", proxy.url()))
                .body(body("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(patched.status, 501);

    let stats = sim.sim.stats(false);
    assert_eq!(stats.by_path.get("POST /api/v2/products"), Some(&1));
    assert_eq!(
        stats.by_path.get(&format!("PUT /api/v2/products/{id}.xml")),
        Some(&1)
    );
    assert_eq!(
        stats.by_path.get(&format!("DELETE /api/v2/products/{id}")),
        Some(&1)
    );
}

/// A 5 MiB body goes up and comes back down intact, streamed both ways.
#[tokio::test]
async fn five_mib_up_and_down() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let description = "Ünïcödé ✓ ".repeat(5 * 1024 * 1024 / "Ünïcödé ✓ ".len() + 1);
    let payload =
        serde_json::json!({ "name": "Big one", "price": "1.00", "description": description })
            .to_string();
    assert!(payload.len() > 5 * 1024 * 1024);
    let created = http
        .send(
            Request::post(format!("{}/api/v2/products", proxy.url()))
                .header("content-type", "application/json")
                .body(body(payload.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["description"], description.as_str());
    let log = sim.sim.stats(true).log;
    assert_eq!(log.last().unwrap().bytes_in, payload.len() as u64);

    let id = created.json()["id"].as_u64().unwrap();
    let down = http
        .get(&format!("{}/api/v2/products/{id}", proxy.url()))
        .await;
    let direct = http
        .direct(&format!("{}/api/v2/products/{id}", sim.url()), &[])
        .await;
    assert!(down.body.len() > 5 * 1024 * 1024);
    assert_eq!(down.body, direct.body);
}

/// A request in absolute form, with a foreign Host, still goes to the configured store, with
/// the store's own Host.
#[tokio::test]
async fn absolute_form_and_host_never_change_the_target() {
    let (sim, proxy) = sim_and_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET http://evil.example/api/v2/time HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .await;
    let response = conn.read_response(false).await.unwrap();
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    conn.send(b"GET /api/v2/brands/1 HTTP/1.1\r\nHost: attacker.example:443\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    let log = sim.sim.stats(true).log;
    assert_eq!(log.len(), 2);
    for call in &log {
        assert_eq!(call.host.as_deref(), Some(sim.addr.to_string().as_str()));
    }
    assert_eq!(log[0].path, "/api/v2/time");
}

/// The app's request id is kept and sent to the store; without one, the proxy makes one. The
/// store's own id comes back as x-upstream-request-id.
#[tokio::test]
async fn request_ids_are_kept_or_made_and_sent_upstream() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let mine = http
        .get_with(
            &format!("{}/api/v2/time", proxy.url()),
            &[("x-request-id", "app-req-7")],
        )
        .await;
    assert_eq!(mine.header("x-request-id"), Some("app-req-7"));
    assert!(
        mine.header("x-upstream-request-id")
            .unwrap()
            .starts_with("sim-")
    );
    let made = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    let made_id = made.header("x-request-id").unwrap().to_string();
    assert!(!made_id.is_empty() && made_id != "app-req-7");
    let log = sim.sim.stats(true).log;
    assert_eq!(log[0].request_id.as_deref(), Some("app-req-7"));
    assert_eq!(log[1].request_id.as_deref(), Some(made_id.as_str()));
}

/// Cleartext HTTP/2 with prior knowledge works like HTTP/1.1.
#[tokio::test]
async fn h2_prior_knowledge_is_served() {
    let (sim, proxy) = sim_and_proxy().await;
    let h2 = Http::h2();
    let reply = h2.get(&format!("{}/api/v2/products/2", proxy.url())).await;
    assert_eq!(reply.status, 200);
    let direct = Http::default()
        .direct(&format!("{}/api/v2/products/2", sim.url()), &[])
        .await;
    assert_eq!(reply.body, direct.body);
    let created = h2
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Hällo h2"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
}

/// A redirect from the store is passed to the app, not followed, with its Location pointing
/// back at the proxy when it named the store.
#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    let (sim, proxy) = sim_and_proxy().await;
    sim.sim.inject(
        bcproxy::sim::Fault::Status {
            status: 301,
            location: Some(format!("{}/api/v2/time", sim.url())),
        },
        1,
    );
    let reply = Http::default()
        .get(&format!("{}/api/v2/products", proxy.url()))
        .await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some(format!("{}/api/v2/time", proxy.url()).as_str())
    );
    assert_eq!(
        sim.sim.stats(false).calls,
        1,
        "the proxy followed the redirect"
    );
}

/// A keep-alive connection carries many calls, and the store's status codes pass through.
#[tokio::test]
async fn keep_alive_connection_carries_many_calls() {
    let (_sim, proxy) = sim_and_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for path in [
        "/api/v2/products/1",
        "/api/v2/nope",
        "/api/v2/products?page=50",
        "/api/v2/orders/count",
    ] {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let response = conn
            .read_response(false)
            .await
            .expect("response on the same connection");
        let expected = match path {
            "/api/v2/nope" => 404,
            "/api/v2/products?page=50" => 204,
            _ => 200,
        };
        assert_eq!(response.status, expected, "{path}");
    }
}

/// A chunked request body of acceptable size reaches the store whole.
#[tokio::test]
async fn chunked_bodies_within_the_limit_are_forwarded() {
    let (sim, proxy) = sim_and_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let json = r#"{"name":"Chunky ünïcode","price":"3.00"}"#;
    let (a, b) = json.split_at(10);
    let request = format!(
        "POST /api/v2/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    conn.send(request.as_bytes()).await;
    let response = conn.read_response(false).await.unwrap();
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(sim.sim.stats(true).log[0].bytes_in, json.len() as u64);
}

/// HEAD, OPTIONS and unusual methods are forwarded as they are; the store's answer comes back.
#[tokio::test]
async fn every_method_is_forwarded() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/5", proxy.url());
    let get = http.get(&url).await;
    let head = http
        .send(Request::head(&url).body(body(Bytes::new())).unwrap())
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let options = http
        .send(Request::options(&url).body(body(Bytes::new())).unwrap())
        .await;
    assert_eq!(options.status, 405);
    assert_eq!(options.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    let odd = http
        .send(
            Request::builder()
                .method("PROPFIND")
                .uri(&url)
                .body(body(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(odd.status, 405);
    let methods: Vec<String> = sim
        .sim
        .stats(true)
        .log
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "PROPFIND"]);
}

/// A request the proxy refuses as malformed gets the store's 400 shape, reaches nothing, and
/// the connection carries the next call.
#[tokio::test]
async fn malformed_requests_get_400_and_the_connection_survives() {
    let (sim, proxy) = sim_and_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for bad in [
        "/api/v2/../../etc/passwd",
        "/api/v2/%2e%2e/admin",
        "/api/./v2/products",
    ] {
        conn.send(format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let response = conn.read_response(false).await.expect("an answer");
        assert_eq!(response.status, 400, "{bad}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body[0]["status"], 400);
    }
    conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 400);
    conn.send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// OAuth: the proxy injects `X-Auth-Token` (the app's own is replaced), and gzip bodies the
/// gateway sends pass through as they are.
#[tokio::test]
async fn oauth_token_injection_and_gzip_pass_through() {
    use bcproxy::sim::{self, SimConfig};
    use std::io::Read;
    let sim = start_sim_with(SimConfig {
        dialect: bcproxy::config::Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &format!("{}/stores/{}", sim.url(), sim::DEFAULT_STORE_HASH),
        "",
        &[
            ("upstream.auth", "token"),
            ("upstream.client_id", "bcproxy-test"),
            ("budget.dialect", "oauth"),
        ],
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/v3/catalog/products/3", proxy.url());
    let plain = http
        .get_with(&url, &[("x-auth-token", "the-apps-own-token")])
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.json()["data"]["name"], "日本茶セット");
    assert!(plain.header("x-rate-limit-requests-left").is_some());
    let gz = http.get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    let direct = http
        .get_with(
            &format!("{}/stores/abc123/v3/catalog/products/3", sim.url()),
            &[
                ("x-auth-token", sim::DEFAULT_API_KEY),
                ("accept-encoding", "gzip"),
            ],
        )
        .await;
    assert_eq!(
        gz.body, direct.body,
        "the gzip body was not passed through byte for byte"
    );
    let stats = sim.sim.stats(false);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(stats.distinct_credentials, 1);
}

/// W3C trace context: the app's `traceparent` reaches the store as it was sent and its trace
/// id is the access line's `trace_id`; without one (or with an invalid one) the proxy starts a
/// trace, sends it to the store (through the cache's fetch too) and logs its id.
#[tokio::test(flavor = "current_thread")]
async fn trace_context_is_kept_or_started_and_logged() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("cache.enabled", "true")])).await;
    let http = Http::default();
    let app = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let kept = http
        .get_with(
            &format!("{}/api/v2/products/1", proxy.url()),
            &[("traceparent", app)],
        )
        .await;
    assert_eq!(kept.status, 200);
    let started = http
        .get(&format!("{}/api/v2/products/2", proxy.url()))
        .await;
    assert_eq!(started.status, 200);
    let invalid = http
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .header("traceparent", "00-zz-00-01")
                .body(body(r#"{"name":"Traced"}"#.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(invalid.status, 201);
    let seen = sim.sim.stats(true).log;
    let access = logs.access();
    let trace_of = |path: &str| {
        let line = access.iter().find(|l| l["path"] == path).unwrap();
        line["trace_id"].as_str().unwrap().to_string()
    };
    let sent_for = |path: &str| {
        seen.iter()
            .find(|c| c.path == path)
            .and_then(|c| c.traceparent.clone())
            .unwrap_or_else(|| panic!("no traceparent reached the store for {path}"))
    };
    assert_eq!(sent_for("/api/v2/products/1"), app);
    assert_eq!(
        trace_of("/api/v2/products/1"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    for path in ["/api/v2/products/2", "/api/v2/brands"] {
        let sent = sent_for(path);
        assert_eq!(sent.len(), 55, "{sent}");
        assert!(sent.starts_with("00-"), "{sent}");
        assert_eq!(sent[3..35], trace_of(path), "{path}");
    }
    assert_ne!(trace_of("/api/v2/products/2"), trace_of("/api/v2/brands"));
    // A hit has its own trace too (nothing goes upstream).
    let hit = http
        .get(&format!("{}/api/v2/products/2", proxy.url()))
        .await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    let lines = logs.access();
    assert_eq!(
        lines.last().unwrap()["trace_id"].as_str().unwrap().len(),
        32
    );
}
