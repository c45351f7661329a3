//! The status page (`GET /` on the admin listener): a known mix of calls (hits, misses, a write,
//! a store throttle and the throttle answer it causes) by two clients and an unnamed one, then
//! the page's figures are checked against those counts and against `/status` — once as served,
//! and once as a real browser (headless Chromium) renders it, with a screenshot kept.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bcproxy::app::RunningProxy;
use bcproxy::clients::token_sha256;
use bcproxy::sim::Fault;
use http::Request;
use support::*;

fn basic(name: &str, token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
    )
}

/// What the scenario did, as the page must show it.
struct Scenario {
    sim: bcproxy::sim::RunningSim,
    proxy: RunningProxy,
    admin: String,
}

/// Two named clients and an unnamed one make 11 calls: erp 5 GETs of one product (1 miss, 4
/// hits); storefront 3 GETs of another (1 miss, 2 hits), 1 POST, and 1 GET the store answers
/// 509 (sends then pause for a minute, so the app gets the throttle answer after `max_wait`);
/// one without a credential 1 GET (refused 401: it shows as a call without a client name).
async fn scenario() -> Scenario {
    let sim = start_sim().await;
    let clients = format!(
        "[[clients]]\nname = \"erp\"\ntoken_sha256 = \"{}\"\n\n[[clients]]\nname = \"storefront\"\ntoken_sha256 = \"{}\"\n\n[cache]\nenabled = true\n",
        token_sha256("erp-token"),
        token_sha256("shop-token"),
    );
    let proxy = start_proxy_with_admin(
        settings(
            &sim.url(),
            &clients,
            &[
                ("budget.limit", "900"),
                ("budget.window", "1h"),
                ("budget.max_wait", "300ms"),
            ],
        ),
        None,
    )
    .await;
    let http = Http::default();
    let erp = basic("erp", "erp-token");
    let shop = basic("storefront", "shop-token");
    for _ in 0..5 {
        let r = http
            .get_with(
                &format!("{}/api/v2/products/1", proxy.url()),
                &[("authorization", &erp)],
            )
            .await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..3 {
        let r = http
            .get_with(
                &format!("{}/api/v2/products/2", proxy.url()),
                &[("authorization", &shop)],
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let created = http
        .send(
            Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("authorization", &shop)
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Status page brand"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let anonymous = http
        .get(&format!("{}/api/v2/products/3", proxy.url()))
        .await;
    assert_eq!(anonymous.status, 401, "clients are named here");
    sim.sim.inject(
        Fault::Status {
            status: 509,
            location: None,
        },
        1,
    );
    let throttled = http
        .get_with(
            &format!("{}/api/v2/products/4", proxy.url()),
            &[("authorization", &shop)],
        )
        .await;
    assert_eq!(throttled.status, 509, "{}", throttled.text());
    let admin = format!("http://{}", proxy.admin_addr.expect("admin listener"));
    // Access records (what the per-client figures count) are written as bodies end.
    let status_url = format!("{admin}/status");
    let mut settled = false;
    for _ in 0..50 {
        let status = http.get(&status_url).await.json();
        let calls: u64 = status["window"]["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["calls"].as_u64().unwrap())
            .sum();
        if calls == 11 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "the 11 calls never all showed in /status");
    Scenario { sim, proxy, admin }
}

/// The text of the element carrying `attrs` (e.g. `data-figure="cache_hit"`).
fn figure(html: &str, attrs: &str) -> String {
    let at = html
        .find(attrs)
        .unwrap_or_else(|| panic!("no element with {attrs} in the page:\n{html}"));
    let rest = &html[at..];
    let start = rest.find('>').expect("end of the tag") + 1;
    let end = rest[start..].find('<').expect("end of the text") + start;
    rest[start..end].trim().to_string()
}

fn number(html: &str, name: &str) -> u64 {
    let text = figure(html, &format!("data-figure=\"{name}\""));
    text.parse()
        .unwrap_or_else(|_| panic!("{name} shows {text:?}, not a number"))
}

fn client(html: &str, name: &str, client: &str) -> u64 {
    let text = figure(
        html,
        &format!("data-figure=\"{name}\" data-client=\"{client}\""),
    );
    text.parse()
        .unwrap_or_else(|_| panic!("{name} of {client} shows {text:?}"))
}

/// Checks a page (as served, or as a browser rendered it) against the scenario and `/status`.
fn check_page(html: &str, status: &serde_json::Value) {
    assert_eq!(client(html, "client_calls", "erp"), 5);
    assert_eq!(client(html, "client_calls", "storefront"), 5);
    assert_eq!(client(html, "client_calls", "-"), 1);
    assert_eq!(client(html, "client_throttled", "storefront"), 1);
    assert_eq!(client(html, "client_throttled", "erp"), 0);
    assert_eq!(number(html, "window_calls"), 11);
    assert_eq!(number(html, "cache_hit"), 6);
    assert_eq!(number(html, "window_store_throttles"), 1);
    assert_eq!(number(html, "window_throttle_answers"), 1);
    assert_eq!(figure(html, "data-figure=\"paused\""), "yes");
    assert_eq!(figure(html, "data-figure=\"state\""), "paused");
    // The 509 is listed with its time.
    let throttles = &html[html.find("data-figure=\"recent_throttles\"").unwrap()..];
    assert!(throttles.contains("<time datetime=\""), "{throttles}");
    assert!(throttles.contains(">509<"), "{throttles}");

    // Every figure shown is the one /status gives.
    let w = &status["window"];
    let b = &status["budget"];
    assert_eq!(
        number(html, "budget_remaining"),
        b["remaining"].as_u64().unwrap()
    );
    assert_eq!(number(html, "budget_limit"), 900);
    assert_eq!(number(html, "window_sent"), w["sent"].as_u64().unwrap());
    assert_eq!(
        number(html, "cache_miss"),
        w["cache"]["misses"].as_u64().unwrap()
    );
    assert_eq!(
        number(html, "cache_hit"),
        w["cache"]["hits"].as_u64().unwrap()
    );
    assert_eq!(
        number(html, "cache_entries"),
        status["cache"]["entries"].as_u64().unwrap()
    );
    // Right after the calls, the two answers cached are counted (not the cache's lagging
    // estimate).
    assert_eq!(number(html, "cache_entries"), 2);
    assert_eq!(number(html, "queue_depth"), 0);
    assert_eq!(number(html, "window_queued"), w["queued"].as_u64().unwrap());
    let ms = |v: &serde_json::Value| match v.as_f64() {
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.0} ms"),
        None => "–".to_string(),
    };
    assert_eq!(
        figure(html, "data-figure=\"upstream_p50_ms\""),
        ms(&w["upstream_ms"]["p50"])
    );
    assert_eq!(
        figure(html, "data-figure=\"upstream_p99_ms\""),
        ms(&w["upstream_ms"]["p99"])
    );
    assert_eq!(
        figure(html, "data-figure=\"wait_p99_ms\""),
        ms(&w["queue_wait_ms"]["p99"])
    );
    assert!(w["upstream_ms"]["p50"].as_f64().is_some());
    for kind in ["unreachable", "tls", "bad_answer", "timeout"] {
        assert_eq!(
            figure(
                html,
                &format!("data-figure=\"upstream_errors\" data-kind=\"{kind}\"")
            ),
            "0"
        );
    }
    // The sends chart has a bar for the sends of the window.
    assert!(html.contains("aria-label=\"sends per step over the window\""));
    assert!(html.contains("<rect "), "no bar in the sends chart");
}

/// The page as served: self-contained HTML, every figure true to the calls made and to
/// `/status`; the status JSON has the same figures.
#[tokio::test]
async fn the_status_page_shows_what_happened() {
    let s = scenario().await;
    let http = Http::default();
    let page = http.get(&format!("{}/", s.admin)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = page.text();
    let status = http.get(&format!("{}/status", s.admin)).await.json();
    check_page(&html, &status);
    // Self-contained: no asset from anywhere.
    for outside in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!html.contains(outside), "the page loads {outside}");
    }
    // /status says the same in JSON.
    let w = &status["window"];
    let by_client = |name: Option<&str>| {
        w["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client"].as_str() == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name:?} missing: {w}"))
    };
    assert_eq!(by_client(Some("erp"))["calls"], 5);
    assert_eq!(by_client(Some("storefront"))["throttle_answers"], 1);
    assert_eq!(by_client(None)["calls"], 1);
    assert_eq!(w["store_throttles"], 1);
    let throttles = status["recent_store_throttles"].as_array().unwrap();
    assert_eq!(throttles.len(), 1);
    assert_eq!(throttles[0]["status"], 509);
    assert!(status["budget"]["pause_left_ms"].as_u64().unwrap() > 0);
    assert_eq!(s.sim.sim.stats(false).by_status.get(&509), Some(&1));
    // HEAD is allowed, other methods are not.
    let post = http
        .send(
            Request::post(format!("{}/", s.admin))
                .body(body(""))
                .unwrap(),
        )
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // The app port still proxies `/` to the store (admin paths are never served there).
    let app_root = http.get(&format!("{}/", s.proxy.url())).await;
    assert_ne!(
        app_root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

/// The Chromium binary: `$BCPROXY_CHROMIUM`, else Debian's `chromium`.
fn chromium() -> PathBuf {
    std::env::var_os("BCPROXY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

fn run_chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (install Debian's chromium, or set BCPROXY_CHROMIUM)",
                chromium().display()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page rendered by a real browser shows the same figures, and looks as it should: the
/// screenshot is kept in `target/test-artifacts/status-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium (Debian's `chromium`); .ci/run installs it and runs this test"]
async fn a_browser_renders_the_status_page() {
    let s = scenario().await;
    let url = format!("{}/", s.admin);
    let status = Http::default()
        .get(&format!("{}/status", s.admin))
        .await
        .json();
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || run_chromium(&["--dump-dom"], &url))
            .await
            .unwrap()
    };
    let html = String::from_utf8(dom.stdout).expect("UTF-8 DOM");
    assert!(html.contains("<title>bcproxy status</title>"), "{html}");
    check_page(&html, &status);

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let png = dir.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || run_chromium(&[&shot], &url))
        .await
        .unwrap();
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());
}

/// Names on the page are text, never markup: a client named like a tag shows as written.
#[tokio::test]
async fn names_on_the_page_are_escaped() {
    let sim = start_sim().await;
    let name = "<img src=x onerror=alert(1)>&co";
    let clients = format!(
        "[[clients]]\nname = '{name}'\ntoken_sha256 = \"{}\"\n",
        token_sha256("odd-token")
    );
    let proxy = start_proxy_with_admin(settings(&sim.url(), &clients, &[]), None).await;
    let http = Http::default();
    let r = http
        .get_with(
            &format!("{}/api/v2/time", proxy.url()),
            &[("authorization", &basic(name, "odd-token"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let admin = format!("http://{}", proxy.admin_addr.expect("admin listener"));
    let mut html = String::new();
    for _ in 0..50 {
        html = http.get(&format!("{admin}/")).await.text();
        if html.contains("data-figure=\"client_calls\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;&amp;co</td>"),
        "{html}"
    );
}
