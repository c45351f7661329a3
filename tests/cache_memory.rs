//! The cache's own count of the bytes it holds (what `cache.max_size` is weighed against, and
//! what `/status` and `/metrics` show) against the heap it really holds, counted by a global
//! allocator: within 10% for small, typical and large answers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bcproxy::cache::{Cache, Key};
use bcproxy::config;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// The system allocator, keeping a count of the bytes live.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The headers a store answer carries into the cache, as hyper parses them: each value a
/// slice of the connection's read buffer (8 KiB here), shared with everything else read.
fn store_headers(i: usize) -> HeaderMap {
    let head = format!(
        "application/json\nWed, 31 Jan 2024 00:00:00 GMT\nsim-{i:08}\nSun, 06 Dec 2026 05:20:49 GMT\n"
    );
    let mut buffer = head.into_bytes();
    buffer.resize(8192, 0);
    let buffer = Bytes::from(buffer);
    let mut headers = HeaderMap::new();
    let mut at = 0;
    for name in ["content-type", "last-modified", "x-request-id", "date"] {
        let end = at + buffer[at..].iter().position(|&b| b == b'\n').unwrap();
        let value = HeaderValue::from_maybe_shared(buffer.slice(at..end)).unwrap();
        headers.insert(name, value);
        at = end + 1;
    }
    headers
}

/// Fills a cache with `n` answers of `size` bytes and returns (bytes the cache counts, heap
/// bytes it took).
async fn fill(n: usize, size: usize) -> (u64, u64) {
    let cache = Cache::new(&config::Cache {
        max_size: "4GiB".parse().unwrap(),
        ttl: Duration::from_secs(600),
        ..config::Cache::default()
    });
    // Warm up what is made once (moka's internals, the policy).
    let warm = Key {
        target: "/api/v2/brands/1".into(),
        xml: false,
        gzip: false,
    };
    let entry = cache
        .entry(
            &warm,
            store_headers(0),
            Bytes::from(vec![b'x'; size]),
            Duration::from_secs(600),
            cache.mark(),
            Instant::now(),
        )
        .unwrap();
    cache.insert(warm, entry).await;
    cache.size().await;
    let before = LIVE.load(Ordering::SeqCst);
    let (_, counted_before) = cache.size().await;
    for i in 0..n {
        let key = Key {
            target: format!("/api/v2/products/{}?include=variants", i + 1),
            xml: false,
            gzip: i % 2 == 0,
        };
        // A fresh allocation per body, as a store answer gathered whole is.
        let body = Bytes::from(vec![b'x'; size]);
        let entry = cache
            .entry(
                &key,
                store_headers(i),
                body,
                Duration::from_secs(600),
                cache.mark(),
                Instant::now(),
            )
            .unwrap();
        assert!(cache.insert(key, entry).await);
    }
    let (entries, counted) = cache.size().await;
    assert_eq!(entries, n as u64 + 1, "nothing was evicted");
    let held = LIVE.load(Ordering::SeqCst) - before;
    drop(cache);
    ((counted - counted_before), held.max(0) as u64)
}

#[tokio::test(flavor = "current_thread")]
async fn the_cache_counts_what_it_holds_within_ten_percent() {
    for size in [16, 2048, 64 * 1024] {
        let n = if size > 10_000 { 500 } else { 20_000 };
        let (counted, held) = fill(n, size).await;
        let ratio = counted as f64 / held as f64;
        println!(
            "{n} answers of {size} bytes: counted {counted}, held {held} ({:.0} vs {:.0} bytes each), ratio {ratio:.3}",
            counted as f64 / n as f64,
            held as f64 / n as f64
        );
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{size}-byte answers: the cache counts {counted} bytes but holds {held}"
        );
    }
}
