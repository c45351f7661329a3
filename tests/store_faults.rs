//! A store that misbehaves, over real sockets: endless, dripping, stalled, short and
//! ill-framed answers. Cacheable answers stream to the app as they arrive (the proxy never reads
//! ahead of its reader), past the entry limit caching is abandoned and the stream goes on, and
//! a protocol violation is never cached and never passed off as a good answer.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;

fn cached(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("cache.enabled", "true"), ("upstream.timeout", "1s")];
    env.extend_from_slice(extra);
    env
}

/// An answer with no end streams to the app at once; the proxy reads the store no further
/// ahead of its reader than a few buffers, so a reader that pauses does not make it buffer the
/// store's answer; nothing of it is cached.
#[tokio::test]
async fn an_endless_answer_streams_and_is_never_read_ahead() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let (store, calls) = fake_store(move |mut tcp| {
        let counter = counter.clone();
        async move {
            let _ = tcp
                .write_all(&answer_head("transfer-encoding: chunked\r\n"))
                .await;
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
            while tcp.write_all(chunk.as_bytes()).await.is_ok() {
                counter.fetch_add(64 * 1024, Ordering::SeqCst);
            }
        }
    })
    .await;
    let proxy = start_proxy(settings(&store, "", &cached(&[("cache.max_size", "4MiB")]))).await;
    let http = Http::default();
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(3),
        http.open(&format!("{}/api/v2/products/1", proxy.url())),
    )
    .await
    .expect("the head of an endless answer arrives at once");
    assert_eq!(response.headers()["x-cache"], "MISS");
    let (status, got, _) = read_some(response, 8 * 1024 * 1024).await;
    assert_eq!(status, 200);
    assert!(got.len() >= 8 * 1024 * 1024);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The reader pauses (here, for good): the store may only have written a few buffers more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ahead = written.load(Ordering::SeqCst) - got.len() as u64;
    assert!(
        ahead < 16 * 1024 * 1024,
        "the proxy read {ahead} bytes ahead of its reader"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let snapshot = proxy.status().settled_snapshot().await;
    assert_eq!(snapshot.cache_entries, 0, "a cut-off answer was cached");
}

/// An answer that drips gives the app its first bytes as they come, not when it is whole.
#[tokio::test]
async fn a_dripping_answer_gives_its_first_bytes_at_once() {
    let (store, _) = fake_store(|mut tcp| async move {
        let _ = tcp
            .write_all(&answer_head("transfer-encoding: chunked\r\n"))
            .await;
        for _ in 0..6 {
            let _ = tcp.write_all(b"4\r\ndrip\r\n").await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let _ = tcp.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let proxy = start_proxy(settings(&store, "", &cached(&[]))).await;
    let started = Instant::now();
    let response = Http::default()
        .open(&format!("{}/api/v2/products/2", proxy.url()))
        .await;
    let (_, first, _) = read_some(response, 4).await;
    assert_eq!(first, b"drip");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "first bytes after {:?}",
        started.elapsed()
    );
}

/// A store that stops sending mid-body for longer than `upstream.timeout` cuts the app's stream
/// off (an error, not a short 200), the access line says why, and nothing is cached.
#[tokio::test]
async fn a_stall_mid_body_cuts_the_stream_and_is_not_cached() {
    let (logs, _guard) = Logs::capture();
    let (store, calls) = fake_store(|mut tcp| async move {
        let _ = tcp.write_all(&answer_head("content-length: 100\r\n")).await;
        let _ = tcp.write_all(&[b'a'; 10]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let proxy = start_proxy(settings(&store, "", &cached(&[]))).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/3", proxy.url());
    let (status, got, ended) = read_some(http.open(&url).await, 1000).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), 10);
    assert!(ended.is_err(), "a cut-off answer ended as if whole");
    let again = http.open(&url).await;
    assert_eq!(
        again.headers()["x-cache"],
        "MISS",
        "the cut-off answer was cached"
    );
    drop(again);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    proxy.stop().await;
    let access = logs.access();
    assert!(
        access
            .iter()
            .any(|l| l["error"].as_str().is_some_and(|e| e.contains("stalled"))),
        "{access:?} {}",
        logs.text()
    );
}

/// An answer with both `Content-Length` and `Transfer-Encoding` (a smuggling shape) is a 502
/// in the store's error shape, logged, never cached; so is one with two lengths.
#[tokio::test]
async fn ill_framed_answers_are_502_and_never_cached() {
    for head in [
        "content-length: 3\r\ntransfer-encoding: chunked\r\n",
        "content-length: 5\r\ncontent-length: 7\r\n",
    ] {
        let (logs, _guard) = Logs::capture();
        let (store, calls) = fake_store(move |mut tcp| async move {
            let _ = tcp.write_all(&answer_head(head)).await;
            let _ = tcp.write_all(b"5\r\nhello\r\n0\r\n\r\n").await;
        })
        .await;
        let proxy = start_proxy(settings(&store, "", &cached(&[]))).await;
        let http = Http::default();
        let url = format!("{}/api/v2/products/4", proxy.url());
        let first = http.get(&url).await;
        assert_eq!(first.status, 502, "{head}: {}", first.text());
        assert_eq!(first.json()[0]["status"], 502);
        // hyper refuses two lengths itself; the proxy refuses both framings at once.
        assert!(
            first.text().contains("protocol") || first.text().contains("content-length"),
            "{}",
            first.text()
        );
        let second = http.get(&url).await;
        assert_eq!(second.status, 502, "a bad answer was cached");
        // A GET that fails is tried once more: two tries per call.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        proxy.stop().await;
        assert!(
            logs.access()
                .iter()
                .all(|l| l["status"] == 502 && l["error"].as_str().is_some()),
            "{}",
            logs.text()
        );
    }
}

/// A body shorter than its `Content-Length` is never passed off as an answer: found before any
/// of it reached the app, it is a 502 in the store's shape; either way it is never cached.
#[tokio::test]
async fn a_short_body_is_a_502_and_is_not_cached() {
    let (store, calls) = fake_store(|mut tcp| async move {
        let _ = tcp.write_all(&answer_head("content-length: 100\r\n")).await;
        let _ = tcp.write_all(b"only ten!!").await;
    })
    .await;
    for env in [cached(&[]), vec![("upstream.timeout", "1s")]] {
        let proxy = start_proxy(settings(&store, "", &env)).await;
        let http = Http::default();
        let url = format!("{}/api/v2/products/5", proxy.url());
        let before = calls.load(Ordering::SeqCst);
        for _ in 0..2 {
            let reply = http.get(&url).await;
            assert_eq!(reply.status, 502, "{}", reply.text());
            assert!(reply.text().contains("broke off"), "{}", reply.text());
        }
        // Nothing was cached: every call went to the store.
        assert!(calls.load(Ordering::SeqCst) - before >= 2);
    }
}

/// Calls that joined a fetch whose answer is too large for one entry each fetch on their own
/// (and get the whole answer); the one that started it streams it; nothing is cached.
#[tokio::test]
async fn calls_joining_a_too_large_answer_fetch_on_their_own() {
    let body = "y".repeat(200 * 1024);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let (store, calls) = fake_store(move |mut tcp| {
        let (body, counter) = (body.clone(), counter.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let head = answer_head(&format!("content-length: {}\r\n", body.len()));
            let _ = tcp.write_all(&head).await;
            let _ = tcp.write_all(body.as_bytes()).await;
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let proxy = start_proxy(settings(
        &store,
        "",
        &cached(&[("cache.max_size", "256KiB")]),
    ))
    .await;
    let http = Http::default();
    let replies = get_many(&http, &format!("{}/api/v2/products/6", proxy.url()), 3).await;
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 200 * 1024);
        assert_eq!(reply.header("x-cache"), Some("MISS"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let snapshot = proxy.status().settled_snapshot().await;
    assert_eq!(snapshot.cache_entries, 0);
}

/// A call that could not even connect never left: its budget is given back.
#[tokio::test]
async fn a_refused_connection_spends_no_budget() {
    let dead = dead_port().await;
    let proxy = start_proxy(settings(
        &format!("http://{dead}"),
        "",
        &[("budget.limit", "50"), ("budget.reserve_writes", "0")],
    ))
    .await;
    let http = Http::default();
    for _ in 0..3 {
        let reply = http.get(&format!("{}/api/v2/time", proxy.url())).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.header("x-bc-apilimit-remaining"), Some("50"));
    }
}
