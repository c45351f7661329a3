//! Limits over real sockets: body size, header timeout, upstream concurrency, connections.

mod support;

use std::time::{Duration, Instant};

use bcproxy::sim::Fault;
use http::Request;
use support::*;

async fn small_body_proxy() -> (bcproxy::sim::RunningSim, bcproxy::app::RunningProxy) {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("listen.max_body", "1MiB")])).await;
    (sim, proxy)
}

/// A body whose Content-Length is over `listen.max_body` gets 413 in the store's shape, and
/// nothing reaches the store.
#[tokio::test]
async fn oversized_body_gets_413_and_reaches_nothing() {
    let (sim, proxy) = small_body_proxy().await;
    let http = Http::default();
    let reply = http
        .send(
            Request::post(format!("{}/api/v2/products", proxy.url()))
                .header("content-type", "application/json")
                .body(body(vec![b'x'; 2 * 1024 * 1024]))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()[0]["status"], 413);
    assert!(
        reply.json()[0]["message"]
            .as_str()
            .unwrap()
            .contains("listen.max_body")
    );
    let xml = http
        .send(
            Request::put(format!("{}/api/v2/products/1.xml", proxy.url()))
                .body(body(vec![b'x'; 1024 * 1024 + 1]))
                .unwrap(),
        )
        .await;
    assert_eq!(xml.status, 413);
    assert!(
        xml.text().contains("<errors><error><status>413</status>"),
        "{}",
        xml.text()
    );
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "an oversized body reached the store"
    );
    // A body of exactly the limit passes.
    let exact = http
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .body(body(format!(
                    "{{\"name\":\"{}\"}}",
                    "n".repeat(1024 * 1024 - 11)
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(exact.status, 201, "{}", exact.text());
}

/// A chunked body (no length known up front) over the limit gets 413 and nothing reaches the
/// store; the connection stays usable for the next call.
#[tokio::test]
async fn oversized_chunked_body_gets_413_and_the_connection_survives() {
    let (sim, proxy) = small_body_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"POST /api/v2/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..24 {
        conn.send(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        conn.send(&chunk).await;
        conn.send(b"\r\n").await;
    }
    conn.send(b"0\r\n\r\n").await;
    let response = conn.read_response(false).await.expect("413");
    assert_eq!(response.status, 413);
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "an oversized chunked body reached the store"
    );
    conn.send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let next = conn
        .read_response(false)
        .await
        .expect("the connection is still usable");
    assert_eq!(next.status, 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// An app that announces an oversized body and waits for `100 Continue` gets 413 at once and
/// never has to send the body.
#[tokio::test]
async fn expect_continue_gets_413_without_sending_the_body() {
    let (sim, proxy) = small_body_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"POST /api/v2/products HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n").await;
    let response = conn
        .read_response(false)
        .await
        .expect("413 before any body");
    assert_eq!(response.status, 413);
    assert_eq!(sim.sim.stats(false).calls, 0);
}

/// A client that sends nothing, or only part of its headers, is dropped at
/// `listen.header_timeout`; a prompt one is served.
#[tokio::test]
async fn stalled_clients_are_dropped_at_header_timeout() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[("listen.header_timeout", "300ms")],
    ))
    .await;

    let started = Instant::now();
    let mut silent = RawConn::connect(proxy.addr).await;
    assert!(
        silent.closed_within(Duration::from_secs(3)).await,
        "a silent client was kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut trickle = RawConn::connect(proxy.addr).await;
    trickle.send(b"GET /api/v2/time HTTP/1.1\r\nHo").await;
    assert!(
        trickle.closed_within(Duration::from_secs(3)).await,
        "a client stuck in its headers was kept"
    );

    let mut h2_stall = RawConn::connect(proxy.addr).await;
    h2_stall.send(b"PRI * HTTP/2.0\r\n").await;
    assert!(
        h2_stall.closed_within(Duration::from_secs(3)).await,
        "a partial h2 preface was kept"
    );

    let mut prompt = RawConn::connect(proxy.addr).await;
    prompt
        .send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(prompt.read_response(false).await.unwrap().status, 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// No more than `upstream.max_concurrency` calls are at the store at once; the others wait
/// their turn and are all served.
#[tokio::test]
async fn upstream_concurrency_is_bounded() {
    let sim = start_sim_with(bcproxy::sim::SimConfig {
        latency: Duration::from_millis(150),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[("upstream.max_concurrency", "3")],
    ))
    .await;
    let http = Http::default();
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let http = http.clone();
            let url = format!("{}/api/v2/products/{}", proxy.url(), i + 1);
            tokio::spawn(async move { http.get(&url).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let stats = sim.sim.stats(false);
    assert_eq!(stats.calls, 12);
    assert_eq!(
        stats.peak_concurrency, 3,
        "max_concurrency was not held (or never reached)"
    );
}

/// A call that cannot get an upstream slot within `budget.max_wait` gets the store's throttle
/// answer with a Retry-After, not a hang.
#[tokio::test]
async fn waiting_past_max_wait_gets_the_throttle_answer() {
    let sim = start_sim_with(bcproxy::sim::SimConfig {
        latency: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("upstream.max_concurrency", "1"),
            ("budget.max_wait", "200ms"),
        ],
    ))
    .await;
    let http = Http::default();
    let first = {
        let http = http.clone();
        let url = format!("{}/api/v2/products/1", proxy.url());
        tokio::spawn(async move { http.get(&url).await.status })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = http
        .get(&format!("{}/api/v2/products/2", proxy.url()))
        .await;
    assert_eq!(second.status, 509);
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(second.header("x-bc-apilimit-remaining"), Some("0"));
    assert_eq!(second.json()[0]["status"], 509);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// At `listen.max_connections` a new connection takes the place of the one idle the longest
/// (which is closed); when every connection has a call in flight, the new one is refused with
/// a 503 and closed, and a freed slot is usable again.
#[tokio::test]
async fn connections_beyond_the_limit() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("listen.max_connections", "2")])).await;
    let call = b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut a = RawConn::connect(proxy.addr).await;
    let mut b = RawConn::connect(proxy.addr).await;
    for conn in [&mut a, &mut b] {
        conn.send(call).await;
        assert_eq!(conn.read_response(false).await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(call).await;
    assert_eq!(
        c.read_response(false).await.unwrap().status,
        200,
        "an idle one made way"
    );
    assert!(
        a.closed_within(Duration::from_secs(2)).await,
        "the oldest idle one was closed"
    );

    sim.sim.inject(Fault::Delay { ms: 1500 }, 2);
    b.send(call).await;
    c.send(call).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = RawConn::connect(proxy.addr).await;
    let refused = d
        .read_response(false)
        .await
        .expect("a refusal, not silence");
    assert_eq!(refused.status, 503);
    assert!(d.closed_within(Duration::from_secs(2)).await);
    assert_eq!(
        b.read_response(false).await.unwrap().status,
        200,
        "calls in flight finished"
    );
    assert_eq!(c.read_response(false).await.unwrap().status, 200);
    let mut e = RawConn::connect(proxy.addr).await;
    e.send(call).await;
    assert_eq!(e.read_response(false).await.unwrap().status, 200);
}

/// An idle keep-alive connection is closed after `listen.header_timeout` (it is waiting for the
/// next request's headers), and so is an h2 connection with no open stream (it sent only its
/// preface), whatever it answers meanwhile.
#[tokio::test]
async fn idle_connections_close_at_header_timeout() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[("listen.header_timeout", "300ms")],
    ))
    .await;
    let mut h1 = RawConn::connect(proxy.addr).await;
    h1.send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(h1.read_response(false).await.unwrap().status, 200);
    let mut h2 = RawConn::connect(proxy.addr).await;
    h2.send(H2_HELLO).await;
    let started = Instant::now();
    assert!(h1.closed_within(Duration::from_secs(3)).await);
    assert!(
        h2.ends_within(Duration::from_secs(3)).await,
        "an idle h2 connection stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// Uploads that trickle hold neither budget nor an upstream slot (their bodies are received
/// whole first): other apps' calls go at once. An upload that pauses longer than
/// `listen.body_timeout` gets 408, logged as 408.
#[tokio::test]
async fn slow_uploads_hold_no_upstream_slot() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("upstream.max_concurrency", "2"),
            ("budget.max_wait", "1s"),
            ("listen.body_timeout", "1s"),
        ],
    ))
    .await;
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.send(b"POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"na")
            .await;
        uploads.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = Http::default();
    let started = Instant::now();
    for _ in 0..3 {
        let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
        assert_eq!(reply.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    for conn in &mut uploads {
        let response = conn.read_response(false).await.expect("an answer");
        assert_eq!(response.status, 408);
    }
    assert_eq!(
        sim.sim.stats(false).by_method.get("POST"),
        None,
        "an upload reached the store"
    );
    proxy.stop().await;
    let timed_out = logs.access().iter().filter(|l| l["status"] == 408).count();
    assert_eq!(timed_out, 4);
}

/// An app that goes away in the middle of a chunked upload is logged as 499 (it left), not as
/// a malformed request, and nothing is sent.
#[tokio::test]
async fn an_upload_cut_short_is_a_499() {
    let (logs, _guard) = Logs::capture();
    let (sim, proxy) = sim_and_proxy().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.stop().await;
    let access = logs.access();
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(access[0]["status"], 499);
    assert_eq!(sim.sim.stats(false).calls, 0);
}

/// Bodies being received hold at most `listen.body_memory` in all; beyond it a new body waits
/// unread, then gets 503 with `Retry-After`, and nothing is sent.
#[tokio::test]
async fn body_memory_is_bounded() {
    let (sim, proxy) = {
        let sim = start_sim().await;
        let proxy = start_proxy(settings(
            &sim.url(),
            "",
            &[
                ("listen.max_body", "64KiB"),
                ("listen.body_memory", "64KiB"),
                ("listen.body_timeout", "1s"),
            ],
        ))
        .await;
        (sim, proxy)
    };
    // One upload holds nearly all of it and keeps trickling (so it never times out).
    let mut holder = RawConn::connect(proxy.addr).await;
    holder
        .send(b"POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
        .await;
    let trickle = tokio::spawn(async move {
        for _ in 0..15 {
            holder.send(b"x").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        holder
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut second = RawConn::connect(proxy.addr).await;
    second
        .send(b"POST /api/v2/brands HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
        .await;
    let response = second.read_response(false).await.expect("an answer");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let _ = trickle.await;
    assert_eq!(sim.sim.stats(false).calls, 0);
}

/// At a full queue the throttle answer says when the calls ahead could all have gone, not a
/// token second.
#[tokio::test]
async fn a_full_queue_tells_the_real_wait() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("budget.limit", "1"),
            ("budget.window", "6s"),
            ("budget.reserve_writes", "0"),
            ("budget.max_wait", "30s"),
            ("budget.max_queue", "1"),
        ],
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/time", proxy.url());
    assert_eq!(http.get(&url).await.status, 200);
    let waiting = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { http.get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = http.get(&url).await;
    assert_eq!(refused.status, 509);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((10..=14).contains(&retry), "Retry-After {retry}");
    waiting.abort();
}
