//! Shared test harness: the simulator and the proxy on `127.0.0.1:0`, a real HTTP client, a raw
//! TCP client for what real clients refuse to send, and log capture.
#![allow(dead_code)]

pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bcproxy::app::RunningProxy;
use bcproxy::body::BoxError;
use bcproxy::config::Settings;
use bcproxy::sim::{self, RunningSim, Sim, SimConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The body type test requests use.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The store's credential as the simulator expects it (for calling it directly).
pub fn sim_credential() -> HeaderValue {
    let raw = format!("{}:{}", sim::DEFAULT_USERNAME, sim::DEFAULT_API_KEY);
    HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .unwrap()
}

/// The base64 part of the store's Basic credential (must never be logged).
pub fn sim_credential_b64() -> String {
    let raw = format!("{}:{}", sim::DEFAULT_USERNAME, sim::DEFAULT_API_KEY);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A simulator with default behaviour.
pub async fn start_sim() -> RunningSim {
    start_sim_with(SimConfig::default()).await
}

/// A simulator with the given behaviour.
pub async fn start_sim_with(config: SimConfig) -> RunningSim {
    Sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start sim")
}

/// Settings for a proxy in front of `upstream` with the simulator's credentials, plus `extra`
/// TOML (whole sections) and `env` overrides (`("upstream.timeout", "1s")`). The cache is off
/// unless `extra` or `env` say otherwise.
pub fn settings(upstream: &str, extra: &str, env: &[(&str, &str)]) -> Settings {
    try_settings(upstream, extra, env).expect("valid test settings")
}

/// Like [`settings`], returning the validation error.
pub fn try_settings(
    upstream: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Result<Settings, bcproxy::config::ConfigError> {
    let text = format!(
        "[upstream]\nurl = {upstream:?}\nusername = {:?}\n\n[admin]\naddr = \"\"\n\n{extra}\n",
        sim::DEFAULT_USERNAME
    );
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| {
            (
                format!("BCPROXY__{}", k.to_uppercase().replace('.', "__")),
                v.to_string(),
            )
        })
        .collect();
    vars.entry("BCPROXY__UPSTREAM__API_KEY".into())
        .or_insert_with(|| sim::DEFAULT_API_KEY.into());
    // Tests of forwarding and the budget count the store's calls; the cache's own tests turn
    // it on with ("cache.enabled", "true").
    if !extra.contains("[cache]") {
        vars.entry("BCPROXY__CACHE__ENABLED".into())
            .or_insert_with(|| "false".into());
    }
    Settings::from_toml(&text, vars)
}

/// A proxy with `settings` on a free loopback port.
pub async fn start_proxy(settings: Settings) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    RunningProxy::start(settings, listener)
        .await
        .expect("start proxy")
}

/// A simulator and a default proxy in front of it.
pub async fn sim_and_proxy() -> (RunningSim, RunningProxy) {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[])).await;
    (sim, proxy)
}

/// A free loopback port with nothing listening on it.
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP client (hyper-util's pooled client, as apps would use).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, TestBody>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    /// An HTTP/2 client with prior knowledge (cleartext h2).
    pub fn h2() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// A GET whose answer is returned as soon as its head arrives (the body streams after).
    pub async fn open(&self, url: &str) -> hyper::Response<hyper::body::Incoming> {
        let req = Request::get(url).body(body(Bytes::new())).unwrap();
        self.client.request(req).await.expect("request")
    }

    pub async fn send(&self, req: Request<TestBody>) -> Reply {
        let response = self.client.request(req).await.expect("request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(body(Bytes::new())).unwrap())
            .await
    }

    /// A GET with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body(Bytes::new())).unwrap()).await
    }

    /// A GET straight to the simulator with the store's credential.
    pub async fn direct(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(url).header("authorization", sim_credential());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body(Bytes::new())).unwrap()).await
    }
}

/// `n` GETs of `url` at once, each on a task of its own; the replies in the order started.
pub async fn get_many(http: &Http, url: &str, n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("the GET task"));
    }
    replies
}

/// The bytes of an h2 client with prior knowledge that opens the connection and then sends
/// nothing: the preface and an empty SETTINGS frame.
pub const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// One HTTP/1.1 connection driven by hand.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one response (Content-Length, chunked, or no body for 204/304/HEAD).
    pub async fn read_response(&mut self, head_request: bool) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            body = self.buf.drain(..len).collect();
        } else if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if !self.fill().await {
                        return None;
                    }
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end]).trim(),
                    16,
                )
                .ok()?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill().await {
                        return None;
                    }
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        }
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// True when the peer closed the connection (EOF) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// True when the peer closes the connection within `within`, whatever it sends first.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Writes `bytes`, returning whether the peer took them all.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Captured log output of the proxy running on this test's thread.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes a log line to the capture of the thread it is written on, if any.
#[derive(Clone, Copy, Default)]
struct ToCapture;

impl std::io::Write for ToCapture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops a thread's capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

impl Logs {
    /// Captures JSON logs of everything running on this thread (use a current-thread runtime)
    /// until the guard is dropped. One process-wide subscriber serves every test, so that
    /// tracing's per-callsite interest is the same whichever test hits a callsite first.
    pub fn capture() -> (Logs, CaptureGuard) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let log = bcproxy::config::Log::default();
            let (dispatch, _) = bcproxy::telemetry::subscriber(&log, || ToCapture).unwrap();
            let _ = bcproxy::telemetry::install(dispatch, &log, || ToCapture);
        });
        let logs = Logs::default();
        CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard(()))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Every line, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line ({e}): {l}")))
            .collect()
    }

    /// The access events.
    pub fn access(&self) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["message"] == "access")
            .collect()
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test CA and a certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Makes a fresh CA and server certificate.
pub fn tls_files() -> TlsFiles {
    let made = bcproxy::tls::throwaway(&["localhost", "127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, made.ca).unwrap();
    std::fs::write(&cert, made.cert).unwrap();
    std::fs::write(&key, made.key).unwrap();
    TlsFiles {
        dir,
        ca: ca_path,
        cert,
        key,
    }
}

/// A proxy with `settings` on a free loopback port, its admin endpoints on another, and
/// reloads from `sources`.
pub async fn start_proxy_with_admin(
    settings: Settings,
    sources: Option<bcproxy::config::Sources>,
) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    RunningProxy::start_with(settings, listener, Some(admin), sources)
        .await
        .expect("start proxy")
}

/// A store that misbehaves on purpose: for every request it reads (the head only), `respond`
/// writes whatever bytes it likes on the connection (then the connection closes). Returns the
/// store's URL and how many requests it got.
pub async fn fake_store<F, Fut>(respond: F) -> (String, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (respond, counted) = (respond.clone(), counted.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                respond(tcp).await;
            });
        }
    });
    (format!("http://{addr}"), calls)
}

/// A head of a 200 answer with `extra` header lines (each ending in CRLF).
pub fn answer_head(extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}\r\n").into_bytes()
}

/// Reads a response's head off `response`, then up to `at_most` body bytes, in the order they
/// come; returns the status, the bytes and whether the body ended cleanly.
pub async fn read_some(
    response: hyper::Response<hyper::body::Incoming>,
    at_most: usize,
) -> (u16, Vec<u8>, Result<(), String>) {
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut got = Vec::new();
    while got.len() < at_most {
        match body.frame().await {
            None => return (status, got, Ok(())),
            Some(Err(e)) => return (status, got, Err(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
        }
    }
    (status, got, Ok(()))
}

/// Starts `bcproxy demo` with `args` on a free port; returns it (killed when dropped) and
/// everything it printed to try it (its stderr up to "Ctrl-C stops both").
pub async fn start_demo(args: &[&str]) -> (tokio::process::Child, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bcproxy"));
    cmd.arg("demo")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .env_remove("BCPROXY_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("BCPROXY__") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("bcproxy demo starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let read = async {
        let mut text = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let last = line.contains("Ctrl-C stops both");
            text.push(line);
            if last {
                return text;
            }
        }
        panic!("the demo stopped printing: {text:?}");
    };
    let text = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the demo's text in time");
    (child, text)
}

/// The snippet the demo printed that starts with a line beginning `first` (after its indent)
/// and runs to the next blank line, joined as printed.
pub fn demo_snippet(text: &[String], first: &str) -> String {
    let start = text
        .iter()
        .position(|l| l.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("no snippet starting {first:?}: {text:#?}"));
    text[start..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks what the store saw of an official client's run through the proxy: only the
/// proxy's credential, never refused, each of `once` exactly once, and `writes` PUTs and
/// DELETEs.
pub fn assert_store_saw_one_credential(stats: &bcproxy::sim::Stats, once: &[&str], writes: u64) {
    assert_eq!(
        stats.distinct_credentials, 1,
        "the store saw a credential other than the proxy's"
    );
    assert_eq!(stats.unauthorized, 0);
    for call in once {
        assert_eq!(
            stats.by_path.get(*call),
            Some(&1),
            "{call}: {:?}",
            stats.by_path
        );
    }
    assert_eq!(stats.by_method.get("PUT"), Some(&writes));
    assert_eq!(stats.by_method.get("DELETE"), Some(&writes));
}

/// An HTTPS client trusting only the CA in `ca` (PEM): h2 when `h2`, else HTTP/1.1.
pub fn https_client(
    ca: &std::path::Path,
    h2: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let tls = bcproxy::tls::client_config(Some(ca)).expect("the CA loads");
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

/// Runs an outside program (an official client, a pasted snippet) to its end within a minute
/// and returns its standard output; it must exit 0. `missing` says how to get the program.
pub async fn run_program(
    program: &str,
    args: &[&str],
    dir: Option<&str>,
    envs: &[(&str, String)],
    missing: &str,
) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("in time")
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} ({missing})"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{program} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
