//! Hardening over real sockets: header limits, request smuggling shapes, paths that try to
//! leave the prefix, admin paths on the app port, and the store's credentials never leaving
//! for anywhere but the configured origin.

mod support;

use std::time::Duration;

use bcproxy::sim::Fault;
use support::*;

async fn exchange(proxy: &bcproxy::app::RunningProxy, request: &[u8]) -> Option<RawResponse> {
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(request).await;
    conn.read_response(false).await
}

/// Too many header fields, or too many header bytes, get 431 and reach nothing.
#[tokio::test]
async fn header_limits() {
    let (sim, proxy) = sim_and_proxy().await;
    let mut many = String::from("GET /api/v2/time HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let response = exchange(&proxy, many.as_bytes()).await.expect("an answer");
    assert_eq!(response.status, 431, "too many header fields");

    let big = format!(
        "GET /api/v2/time HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let response = exchange(&proxy, big.as_bytes()).await.map(|r| r.status);
    assert_eq!(response, Some(431), "too many header bytes");

    let fine = format!(
        "GET /api/v2/time HTTP/1.1\r\nHost: x\r\nX-Ok: {}\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    assert_eq!(exchange(&proxy, fine.as_bytes()).await.unwrap().status, 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// Request-smuggling shapes (both Content-Length and Transfer-Encoding, two Content-Lengths,
/// an obfuscated Transfer-Encoding) are refused with 400 and never forwarded.
#[tokio::test]
async fn smuggling_shapes_are_refused() {
    let (sim, proxy) = sim_and_proxy().await;
    // Each body is a valid brand: if a shape got through, the store would make one (201).
    let body = r#"{"name":"smuggled"}"#;
    let len = body.len();
    let chunked = format!("{len:x}\r\n{body}\r\n0\r\n\r\n");
    let shapes = [
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {len}\r\n\r\n{chunked}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nContent-Length: {len}\r\n\r\n{body}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nContent-Length: 99\r\n\r\n{body}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {len}, {len}\r\n\r\n{body}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n{chunked}"
        ),
        format!(
            "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked}"
        ),
    ];
    for shape in &shapes {
        let response = exchange(&proxy, shape.as_bytes()).await;
        let status = response.map(|r| r.status);
        assert_eq!(status, Some(400), "{shape}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "a smuggling shape reached the store"
    );
}

/// With a path prefix in `upstream.url`, no dot-segment, encoded dot-segment, encoded slash or
/// backslash reaches a path outside it.
#[tokio::test]
async fn paths_cannot_leave_the_prefix() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&format!("{}/api/v2", sim.url()), "", &[])).await;
    let http = Http::default();
    assert_eq!(
        http.get(&format!("{}/products/1", proxy.url()))
            .await
            .status,
        200
    );
    for bad in [
        "/../../__sim/stats",
        "/products/../../../__sim/stats",
        "/%2e%2e/%2E%2E/__sim/stats",
        "/.%2e/x",
        "/products%2f..%2f..%2f__sim",
        "/products%2F1",
        "/products\\..\\x",
        "/products/%5c..%5cx",
    ] {
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.send(format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let status = conn.read_response(false).await.map(|r| r.status);
        assert_eq!(status, Some(400), "{bad}");
    }
    let log = sim.sim.stats(true).log;
    assert_eq!(log.len(), 1);
    assert!(log.iter().all(|c| c.path.starts_with("/api/v2/")));
}

/// The admin paths on the app port are only store paths: forwarded like any other.
#[tokio::test]
async fn admin_paths_on_the_app_port_are_store_paths() {
    let (sim, proxy) = sim_and_proxy().await;
    let http = Http::default();
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        let reply = http.get(&format!("{}{path}", proxy.url())).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(
            reply.json()[0]["status"],
            404,
            "{path}: not the store's answer"
        );
    }
    assert_eq!(sim.sim.stats(false).calls, 4);
}

/// The store's credentials go to the configured origin only: not to an absolute-form target,
/// not to a Host the app names, not to where a redirect points.
#[tokio::test]
async fn credentials_go_to_the_origin_only() {
    let (sim, proxy) = sim_and_proxy().await;
    let elsewhere = start_sim().await;
    let other = elsewhere.addr.to_string();
    let requests = [
        format!("GET http://{other}/api/v2/time HTTP/1.1\r\nHost: {other}\r\n\r\n"),
        format!("GET /api/v2/time HTTP/1.1\r\nHost: {other}\r\n\r\n"),
        format!("GET https://{other}/api/v2/time HTTP/1.1\r\nHost: {other}\r\n\r\n"),
    ];
    for request in &requests {
        assert_eq!(
            exchange(&proxy, request.as_bytes()).await.unwrap().status,
            200
        );
    }
    sim.sim.inject(
        Fault::Status {
            status: 302,
            location: Some(format!("http://{other}/api/v2/time")),
        },
        1,
    );
    let redirect = Http::default()
        .get(&format!("{}/api/v2/products", proxy.url()))
        .await;
    assert_eq!(redirect.status, 302);
    let connect = exchange(
        &proxy,
        format!("CONNECT {other} HTTP/1.1\r\nHost: {other}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(connect.map(|r| r.status), Some(400));
    assert_eq!(
        elsewhere.sim.stats(false).calls,
        0,
        "a call (with the store's credential) went elsewhere"
    );
    assert_eq!(sim.sim.stats(false).calls, 4);
}

/// Connections that idle on the admin listener (more than it takes) cannot keep a health probe
/// out: the newest connection takes the place of the one idle the longest.
#[tokio::test]
async fn idle_connections_cannot_starve_the_admin_listener() {
    let sim = start_sim().await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &[]), None).await;
    let admin = proxy.admin_addr.unwrap();
    let mut idle = Vec::new();
    for i in 0..80 {
        let mut conn = RawConn::connect(admin).await;
        if i % 2 == 0 {
            conn.send(H2_HELLO).await;
        }
        idle.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let health = Http::default()
        .get(&format!("http://{admin}/healthz"))
        .await;
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The app listener is untouched by the admin's idlers.
    let app = Http::default()
        .get(&format!("{}/api/v2/time", proxy.url()))
        .await;
    assert_eq!(app.status, 200);
}

/// h2 requests have the same header-count limit as HTTP/1.1: 431, nothing forwarded.
#[tokio::test]
async fn h2_requests_with_too_many_headers_get_431() {
    let (sim, proxy) = sim_and_proxy().await;
    let mut req = http::Request::get(format!("{}/api/v2/time", proxy.url()));
    for i in 0..150 {
        req = req.header(format!("x-filler-{i}"), i.to_string());
    }
    let reply = Http::h2()
        .send(req.body(body(bytes::Bytes::new())).unwrap())
        .await;
    assert_eq!(reply.status, 431);
    assert_eq!(sim.sim.stats(false).calls, 0);
}

/// A request after a valid chunked one with leading zeros in a chunk size, or after one with
/// `Transfer-Encoding: gzip, chunked`, is still inspected: a smuggling shape never reaches the
/// store.
#[tokio::test]
async fn the_framing_guard_never_switches_off() {
    let (sim, proxy) = sim_and_proxy().await;
    let body = r#"{"name":"smuggled"}"#;
    let smuggle = format!(
        "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len() + 9,
        body.len()
    );
    let leading_zeros = format!(
        "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n00000000000000000{:x}\r\n{}\r\n0\r\n\r\n",
        r#"{"name":"zeros"}"#.len(),
        r#"{"name":"zeros"}"#
    );
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(format!("{leading_zeros}{smuggle}").as_bytes())
        .await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 201);
    assert_eq!(conn.read_response(false).await.unwrap().status, 400);
    assert!(conn.ends_within(Duration::from_secs(2)).await);

    let gzip = "POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(format!("{gzip}{smuggle}").as_bytes()).await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 400);
    assert!(
        conn.ends_within(Duration::from_secs(2)).await,
        "the connection stayed open after a refusal"
    );
    let posts: Vec<_> = sim
        .sim
        .stats(true)
        .log
        .into_iter()
        .filter(|c| c.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
}

/// An answer the proxy gives before reading the body (here 401) lets the app finish sending
/// and read it, on a connection that stays usable.
#[tokio::test]
async fn early_answers_let_the_app_finish_sending() {
    let sim = start_sim().await;
    let token = "early-token";
    let extra = format!(
        "[[clients]]\nname = \"erp\"\ntoken_sha256 = \"{}\"\n",
        bcproxy::clients::token_sha256(token)
    );
    let proxy = start_proxy(settings(&sim.url(), &extra, &[])).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let size = 2 * 1024 * 1024;
    conn.send(
        format!("POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        conn.try_send(&vec![b'x'; size]).await,
        "the proxy stopped reading the app's body"
    );
    let refused = conn.read_response(false).await.expect("the answer");
    assert_eq!(refused.status, 401);
    conn.send(
        format!("GET /api/v2/time HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}
