//! The store simulator: an independent, faithful stand-in for a BigCommerce store, for offline
//! development, tests and benchmarks. It is the referee of the proxy's budget, so it shares no
//! budget code with the proxy.
//!
//! - `api`: resources, methods and status codes; `store`: the data; `format`: JSON and XML;
//!   `quota`: the store's own rolling window.
//! - The control API under `/__sim/` (stats, reset, out-of-band spending, fault injection,
//!   latency) never counts against the quota and never shows up in the stats.

pub mod api;
pub mod format;
pub mod hooks;
pub mod quota;
pub mod store;
pub mod v3;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Dialect;
use crate::server::{self, ServeOptions, Stopped};
use api::{ApiCall, Shape};
use format::Format;
use quota::Quota;
use store::Store;

/// User name the simulator accepts by default.
pub const DEFAULT_USERNAME: &str = "demo";
/// API key the simulator accepts by default (a test value, not a secret).
pub const DEFAULT_API_KEY: &str = "sim-api-key-0000";
/// Store hash the simulator answers to with the oauth dialect.
pub const DEFAULT_STORE_HASH: &str = "abc123";
/// Largest request body the simulator reads.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Calls kept in the stats' call log.
const LOG_CAPACITY: usize = 100_000;
/// How long a `hang` fault holds a call before dropping the connection.
const HANG: Duration = Duration::from_secs(600);
/// The legacy API's base path.
const LEGACY_BASE: &str = "/api/v2/";

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The API dialect: budget headers, throttle status, auth.
    pub dialect: Dialect,
    /// Requests allowed per window.
    pub limit: u64,
    /// The rolling window (moves in steps of window/60).
    pub window: Duration,
    /// Added before every API call is answered.
    pub latency: Duration,
    /// Basic auth user name.
    pub username: String,
    /// Basic auth password (the API key), or the access token with the oauth dialect.
    pub api_key: String,
    /// The store hash in OAuth paths (`/stores/{hash}/v3/...`).
    pub store_hash: String,
    /// Start with the seed data (else empty).
    pub seed: bool,
    /// Serve HTTPS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Deliver signed webhooks of every change here.
    pub webhooks: Option<hooks::Target>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            dialect: Dialect::Legacy,
            limit: 20_000,
            window: Duration::from_secs(3600),
            latency: Duration::ZERO,
            username: DEFAULT_USERNAME.into(),
            api_key: DEFAULT_API_KEY.into(),
            store_hash: DEFAULT_STORE_HASH.into(),
            seed: true,
            tls: None,
            webhooks: None,
        }
    }
}

/// A fault the next calls get instead of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    /// Answer with this status (500, 503, 301 ...) and the store's error body.
    Status {
        /// The status code.
        status: u16,
        /// A `Location` to send with it (for redirects).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// Never answer (until the client gives up).
    Hang,
    /// Drop the connection without an answer.
    Reset,
    /// Answer normally, but hold the answer back this long after the store has read its data
    /// (a slow response, for races).
    Delay {
        /// Milliseconds.
        ms: u64,
    },
}

#[derive(Debug, Deserialize)]
struct FaultRequest {
    #[serde(flatten)]
    fault: Fault,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

/// One API call as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedCall {
    /// Milliseconds since the simulator started, when the call arrived.
    pub at_ms: f64,
    /// Unix time in milliseconds when the call arrived.
    pub unix_ms: u64,
    /// Request method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Status answered; 0 for a hang or reset fault.
    pub status: u16,
    /// `ok`, `bad` or `none`: the credential presented.
    pub auth: String,
    /// The injected fault, if any.
    pub fault: Option<String>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// The `X-Request-ID` the caller sent.
    pub request_id: Option<String>,
    /// The W3C `traceparent` the caller sent.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The `Host` the caller sent (the `:authority` for h2).
    pub host: Option<String>,
    /// The HTTP version the call came in (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
    /// The order of its arrival among every arrival and answer the simulator saw (each counts
    /// one up), so tests can tell which calls were at the store at once without timings.
    #[serde(default)]
    pub arrived: u64,
    /// The order of its answer, on the same count.
    #[serde(default)]
    pub answered: u64,
}

/// What the simulator has seen since it started or was reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// API calls received (control calls excluded).
    pub calls: u64,
    /// Calls by method.
    pub by_method: BTreeMap<String, u64>,
    /// Calls by `METHOD path` (query excluded).
    pub by_path: BTreeMap<String, u64>,
    /// Calls by status answered.
    pub by_status: BTreeMap<u16, u64>,
    /// 509 (or 429) answers sent.
    pub throttled: u64,
    /// 401 answers sent.
    pub unauthorized: u64,
    /// Distinct credentials presented (valid or not).
    pub distinct_credentials: u64,
    /// Most calls in flight at once.
    pub peak_concurrency: u64,
    /// Calls in flight now.
    pub in_flight: u64,
    /// The quota's limit.
    pub limit: u64,
    /// Requests left in the current window.
    pub remaining: u64,
    /// Every call, oldest first (the latest 100,000).
    pub log: Vec<LoggedCall>,
}

#[derive(Debug, Default)]
struct Recorder {
    stats: Stats,
    credentials: HashSet<u64>,
    log: VecDeque<LoggedCall>,
}

/// The simulator: data, quota, stats and faults, shared by its connections.
#[derive(Debug, Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    started: Instant,
    latency_us: AtomicU64,
    store: Mutex<Store>,
    quota: Mutex<Quota>,
    recorder: Mutex<Recorder>,
    faults: Mutex<VecDeque<Fault>>,
    extra_headers: Mutex<HeaderMap>,
    hooks: hooks::Hooks,
    in_flight: AtomicU64,
    peak: AtomicU64,
    ids: AtomicU64,
    /// Arrivals and answers, counted together.
    events: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

/// The simulator dropped a connection on purpose (a `reset` or `hang` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub struct Dropped;

/// Locks a mutex, recovering the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulator.
#[derive(Debug)]
pub struct RunningSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, for stats and control.
    pub sim: Sim,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Stopped>,
}

impl RunningSim {
    /// `http://addr` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.sim.inner.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting and drains open calls.
    pub async fn stop(mut self) -> Option<Stopped> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok()
    }
}

impl Sim {
    /// A simulator with the given behaviour.
    pub fn new(config: SimConfig) -> Sim {
        let store = if config.seed {
            Store::seeded()
        } else {
            Store::empty()
        };
        Sim {
            inner: Arc::new(Inner {
                latency_us: AtomicU64::new(config.latency.as_micros() as u64),
                quota: Mutex::new(match config.dialect {
                    Dialect::Legacy => Quota::new(config.limit, config.window),
                    Dialect::Oauth => Quota::fixed(config.limit, config.window),
                }),
                store: Mutex::new(store),
                recorder: Mutex::new(Recorder::default()),
                faults: Mutex::new(VecDeque::new()),
                extra_headers: Mutex::new(HeaderMap::new()),
                hooks: hooks::Hooks::new(config.webhooks.clone(), &config.store_hash),
                in_flight: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                ids: AtomicU64::new(0),
                events: AtomicU64::new(0),
                started: Instant::now(),
                hasher: Default::default(),
                config,
            }),
        }
    }

    /// Binds `addr` and serves until [`RunningSim::stop`].
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<RunningSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sim = Sim::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = sim.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(RunningSim {
            addr,
            sim,
            stop: Some(stop),
            task,
        })
    }

    /// Serves connections from `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Stopped {
        let options = ServeOptions {
            name: "sim",
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            max_connections: 100_000,
            tls: self.inner.config.tls.clone(),
            refusal: Bytes::new(),
        };
        let sim = self.clone();
        server::serve(
            listener,
            options,
            move |_conn| {
                let sim = sim.clone();
                hyper::service::service_fn(move |req| {
                    let sim = sim.clone();
                    async move { sim.handle(req).await.map(|r| r.map(Full::new)) }
                })
            },
            shutdown,
        )
        .await
    }

    /// Everything seen so far; `with_log` includes the call log.
    pub fn stats(&self, with_log: bool) -> Stats {
        let mut stats = {
            let recorder = lock(&self.inner.recorder);
            let mut stats = recorder.stats.clone();
            stats.distinct_credentials = recorder.credentials.len() as u64;
            if with_log {
                stats.log = recorder.log.iter().cloned().collect();
            }
            stats
        };
        stats.peak_concurrency = self.inner.peak.load(Ordering::Relaxed);
        stats.in_flight = self.inner.in_flight.load(Ordering::Relaxed);
        let mut quota = lock(&self.inner.quota);
        stats.limit = quota.limit();
        stats.remaining = quota.remaining(SystemTime::now());
        stats
    }

    /// Forgets stats, spent quota and pending faults; `reseed` also restores the seed data.
    pub fn reset(&self, reseed: bool) {
        *lock(&self.inner.recorder) = Recorder::default();
        lock(&self.inner.quota).clear();
        lock(&self.inner.faults).clear();
        self.inner.peak.store(
            self.inner.in_flight.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if reseed {
            *lock(&self.inner.store) = if self.inner.config.seed {
                Store::seeded()
            } else {
                Store::empty()
            };
        }
    }

    /// Spends `n` requests of the quota, as other clients of the same store would; returns
    /// what is left.
    pub fn spend(&self, n: u64) -> u64 {
        let mut quota = lock(&self.inner.quota);
        let now = SystemTime::now();
        quota.add(now, n);
        quota.remaining(now)
    }

    /// The next `count` API calls get `fault`.
    pub fn inject(&self, fault: Fault, count: u32) {
        let mut faults = lock(&self.inner.faults);
        faults.extend(std::iter::repeat_n(fault, count as usize));
    }

    /// Changes the latency added to every API call.
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Headers added to every API answer from now on (`Cache-Control: no-store`, say);
    /// an empty map clears them.
    pub fn set_headers(&self, headers: HeaderMap) {
        *lock(&self.inner.extra_headers) = headers;
    }

    /// Delivers signed webhooks of every change to `target` from now on (`None`: stops).
    pub fn set_webhooks(&self, target: Option<hooks::Target>) {
        self.inner.hooks.set(target);
    }

    /// Webhook deliveries made so far.
    pub fn webhooks_sent(&self) -> u64 {
        self.inner.hooks.sent()
    }

    /// Changes the quota per window (a store changing plans).
    pub fn set_limit(&self, limit: u64) {
        lock(&self.inner.quota).set_limit(limit);
    }

    /// Answers one request: the control API, or an API call.
    pub async fn handle(&self, req: Request<Incoming>) -> Result<Response<Bytes>, Dropped> {
        let path = req.uri().path();
        if path == "/__sim" || path.starts_with("/__sim/") {
            return Ok(self.control(req).await);
        }
        self.api_call(req).await
    }

    async fn api_call(&self, req: Request<Incoming>) -> Result<Response<Bytes>, Dropped> {
        let inner = &self.inner;
        let in_flight = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak.fetch_max(in_flight, Ordering::Relaxed);
        let _leave = Leave(&inner.in_flight);

        let arrived = SystemTime::now();
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut entry = LoggedCall {
            at_ms: inner.started.elapsed().as_secs_f64() * 1000.0,
            unix_ms: arrived
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
            status: 0,
            auth: "none".into(),
            fault: None,
            bytes_in: 0,
            request_id: header("x-request-id"),
            traceparent: header("traceparent"),
            host: header("host").or_else(|| parts.uri.authority().map(|a| a.to_string())),
            version: format!("{:?}", parts.version),
            arrived: inner.events.fetch_add(1, Ordering::SeqCst) + 1,
            answered: 0,
        };
        let route = self.route(parts.uri.path());
        let v3 = matches!(route, Some((Api::V3, _, _)));
        let shape = if v3 { Shape::V3 } else { Shape::Legacy };
        let format = if v3 {
            Format::Json
        } else {
            Format::negotiate(
                parts.uri.path(),
                header(http::header::ACCEPT.as_str()).as_deref(),
            )
        };
        let xml = format == Format::Xml;
        let gzip = inner.config.dialect == Dialect::Oauth
            && header("accept-encoding").is_some_and(|e| e.to_ascii_lowercase().contains("gzip"));
        let finish = |entry, response| self.finish(entry, response, gzip);

        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let status = if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                let response = api::error(
                    shape,
                    format,
                    status,
                    "The request body could not be read.",
                    None,
                );
                return Ok(finish(entry, response));
            }
        };
        entry.bytes_in = body.len() as u64;

        let fault = lock(&inner.faults).pop_front();
        let mut hold_back = None;
        if let Some(fault) = fault {
            match fault {
                Fault::Delay { ms } => {
                    entry.fault = Some(format!("delay {ms}ms"));
                    hold_back = Some(Duration::from_millis(ms));
                }
                Fault::Status { status, location } => {
                    entry.fault = Some(format!("status {status}"));
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let message = match status.as_u16() {
                        503 => "The store is down for maintenance.",
                        429 => "Too many requests.",
                        300..=399 => "The resource has moved.",
                        _ => "Internal Server Error",
                    };
                    let mut response = api::error(shape, format, status, message, None);
                    if let Some(value) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
                        response.headers_mut().insert(http::header::LOCATION, value);
                    }
                    return Ok(finish(entry, response));
                }
                Fault::Hang => {
                    entry.fault = Some("hang".into());
                    self.record(entry);
                    tokio::time::sleep(HANG).await;
                    return Err(Dropped);
                }
                Fault::Reset => {
                    entry.fault = Some("reset".into());
                    self.record(entry);
                    return Err(Dropped);
                }
            }
        }

        let latency = Duration::from_micros(inner.latency_us.load(Ordering::Relaxed));
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let credential = self.check_credential(&parts.headers);
        entry.auth = credential.as_str().into();
        if credential != Credential::Valid {
            let message = if credential == Credential::Missing {
                "No credentials were supplied in the request."
            } else {
                "The credentials supplied in the request are invalid."
            };
            let mut response = api::error(shape, format, StatusCode::UNAUTHORIZED, message, None);
            if inner.config.dialect == Dialect::Legacy {
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Store API\""),
                );
            }
            return Ok(finish(entry, response));
        }

        let now = SystemTime::now();
        let (taken, budget) = {
            let mut quota = lock(&inner.quota);
            let taken = quota.take(now, 1);
            let budget = Spent {
                remaining: quota.remaining(now),
                limit: quota.limit(),
                window: quota.window(),
                reset: quota.until_step_end(now),
            };
            (taken, budget)
        };
        if taken.is_none() {
            let mut response = match inner.config.dialect {
                Dialect::Legacy => api::error(
                    shape,
                    format,
                    StatusCode::from_u16(509).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                    "The requests-per-hour limit has been reached.",
                    None,
                ),
                Dialect::Oauth => {
                    let mut response = api::error(
                        shape,
                        format,
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many requests: the rate limit window has been used up.",
                        None,
                    );
                    let secs = budget.reset.as_millis().div_ceil(1000).max(1) as u64;
                    response
                        .headers_mut()
                        .insert("x-retry-after", HeaderValue::from(secs));
                    response
                }
            };
            self.budget_headers(response.headers_mut(), &budget);
            return Ok(finish(entry, response));
        }

        let scheme = if inner.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let host = entry.host.clone().unwrap_or_else(|| "localhost".into());
        let mut response = match route {
            Some((api, base, resource)) => {
                let base_url = format!("{scheme}://{host}{base}");
                let content_type = header(CONTENT_TYPE.as_str())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let call = ApiCall {
                    method: &parts.method,
                    resource,
                    query: parts.uri.query(),
                    accept_xml: xml,
                    body_is_xml: content_type.contains("xml"),
                    body: &body,
                    base_url: &base_url,
                };
                let response = {
                    let mut store = lock(&inner.store);
                    match api {
                        Api::V2 => api::answer(&mut store, shape, &call, now),
                        Api::V3 => v3::answer(&mut store, &call, now),
                    }
                };
                if parts.method != Method::GET && response.status().is_success() {
                    let created = response
                        .headers()
                        .get(http::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| l.rsplit('/').next())
                        .map(str::to_string)
                        .or_else(|| created_id(response.body()));
                    inner
                        .hooks
                        .changed(&parts.method, resource, created.as_deref());
                }
                response
            }
            None => api::error(
                shape,
                format,
                StatusCode::NOT_FOUND,
                "The requested resource was not found.",
                None,
            ),
        };
        self.budget_headers(response.headers_mut(), &budget);
        if let Some(hold_back) = hold_back {
            tokio::time::sleep(hold_back).await;
        }
        Ok(finish(entry, response))
    }

    /// Which API a path belongs to: its base path and the resource below it.
    fn route<'p>(&self, path: &'p str) -> Option<(Api, String, &'p str)> {
        let config = &self.inner.config;
        match config.dialect {
            Dialect::Legacy => path
                .strip_prefix(LEGACY_BASE)
                .map(|r| (Api::V2, "/api/v2".to_string(), r)),
            Dialect::Oauth => {
                let (hash, rest) = path.strip_prefix("/stores/")?.split_once('/')?;
                if hash != config.store_hash {
                    return None;
                }
                if let Some(resource) = rest.strip_prefix("v3/") {
                    Some((Api::V3, format!("/stores/{hash}/v3"), resource))
                } else {
                    rest.strip_prefix("v2/")
                        .map(|r| (Api::V2, format!("/stores/{hash}/v2"), r))
                }
            }
        }
    }

    /// The dialect's budget headers.
    fn budget_headers(&self, headers: &mut HeaderMap, spent: &Spent) {
        match self.inner.config.dialect {
            Dialect::Legacy => {
                headers.insert(
                    "x-bc-apilimit-remaining",
                    HeaderValue::from(spent.remaining),
                );
            }
            Dialect::Oauth => {
                headers.insert(
                    "x-rate-limit-time-window-ms",
                    HeaderValue::from(spent.window.as_millis() as u64),
                );
                headers.insert(
                    "x-rate-limit-time-reset-ms",
                    HeaderValue::from(spent.reset.as_millis().max(1) as u64),
                );
                headers.insert(
                    "x-rate-limit-requests-quota",
                    HeaderValue::from(spent.limit),
                );
                headers.insert(
                    "x-rate-limit-requests-left",
                    HeaderValue::from(spent.remaining),
                );
            }
        }
    }

    /// Adds the store's own request id, compresses when asked, records the call.
    fn finish(
        &self,
        mut entry: LoggedCall,
        mut response: Response<Bytes>,
        gzip: bool,
    ) -> Response<Bytes> {
        let id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        if let Ok(value) = HeaderValue::try_from(format!("sim-{id:08x}")) {
            response.headers_mut().insert("x-request-id", value);
        }
        for (name, value) in lock(&self.inner.extra_headers).iter() {
            response.headers_mut().insert(name, value.clone());
        }
        if gzip && !response.body().is_empty() {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if std::io::Write::write_all(&mut encoder, response.body()).is_ok()
                && let Ok(compressed) = encoder.finish()
            {
                *response.body_mut() = Bytes::from(compressed);
                response.headers_mut().insert(
                    http::header::CONTENT_ENCODING,
                    HeaderValue::from_static("gzip"),
                );
            }
        }
        if self.inner.config.dialect == Dialect::Oauth {
            response.headers_mut().insert(
                http::header::VARY,
                HeaderValue::from_static("Accept-Encoding"),
            );
        }
        entry.status = response.status().as_u16();
        self.record(entry);
        response
    }

    fn record(&self, mut entry: LoggedCall) {
        entry.answered = self.inner.events.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(method = %entry.method, path = %entry.path, status = entry.status, auth = %entry.auth, "sim.call");
        let mut r = lock(&self.inner.recorder);
        let stats = &mut r.stats;
        stats.calls += 1;
        *stats.by_method.entry(entry.method.clone()).or_default() += 1;
        let path = entry.path.split('?').next().unwrap_or("");
        *stats
            .by_path
            .entry(format!("{} {path}", entry.method))
            .or_default() += 1;
        if entry.status != 0 {
            *stats.by_status.entry(entry.status).or_default() += 1;
        }
        match entry.status {
            401 => stats.unauthorized += 1,
            509 | 429 if entry.fault.is_none() => stats.throttled += 1,
            _ => {}
        }
        if r.log.len() == LOG_CAPACITY {
            r.log.pop_front();
        }
        r.log.push_back(entry);
    }

    fn check_credential(&self, headers: &HeaderMap) -> Credential {
        let config = &self.inner.config;
        let presented = match config.dialect {
            Dialect::Legacy => headers.get(AUTHORIZATION),
            Dialect::Oauth => headers.get("x-auth-token"),
        };
        let Some(value) = presented else {
            return Credential::Missing;
        };
        let mut hasher = self.inner.hasher.build_hasher();
        hasher.write(value.as_bytes());
        lock(&self.inner.recorder)
            .credentials
            .insert(hasher.finish());
        let valid = match config.dialect {
            Dialect::Legacy => value
                .as_bytes()
                .strip_prefix(b"Basic ")
                .and_then(|b| BASE64.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .is_some_and(|s| {
                    s.split_once(':') == Some((config.username.as_str(), config.api_key.as_str()))
                }),
            Dialect::Oauth => value.as_bytes() == config.api_key.as_bytes(),
        };
        if valid {
            Credential::Valid
        } else {
            Credential::Invalid
        }
    }

    async fn control(&self, req: Request<Incoming>) -> Response<Bytes> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, 64 * 1024).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return control_answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({ "error": "body too large" }),
                );
            }
        };
        let query = parts.uri.query().unwrap_or("");
        match (&parts.method, parts.uri.path().trim_end_matches('/')) {
            (&Method::GET, "/__sim") => control_answer(
                StatusCode::OK,
                json!({
                    "endpoints": {
                        "GET /__sim/stats": "what the store saw (add ?log=false to leave out the call log)",
                        "POST /__sim/reset": "forget stats, spent quota and faults; restores the seed data unless ?data=keep",
                        "POST /__sim/spend": "{\"count\": N}: spend N requests of the quota, as other clients of the store would",
                        "POST /__sim/faults": "{\"kind\": \"status\", \"status\": 500, \"count\": N} (optional \"location\") | {\"kind\": \"hang\"} | {\"kind\": \"reset\"} | {\"kind\": \"delay\", \"ms\": N}: the next N calls get it",
                        "DELETE /__sim/faults": "drop pending faults",
                        "PUT /__sim/latency": "{\"ms\": N}: latency added to every API call",
                        "PUT /__sim/quota": "{\"limit\": N}: change the quota per window (a plan change)",
                        "PUT /__sim/headers": "{\"Cache-Control\": \"no-store\"}: headers added to every API answer ({} clears)",
                        "PUT /__sim/webhooks": "{\"url\": \"http://…/webhooks/bigcommerce\", \"secret\": \"…\"}: deliver signed webhooks of every change there ({} stops)",
                    }
                }),
            ),
            (&Method::GET, "/__sim/stats") => {
                let stats = self.stats(!query.contains("log=false"));
                control_answer(
                    StatusCode::OK,
                    serde_json::to_value(stats).unwrap_or_default(),
                )
            }
            (&Method::POST, "/__sim/reset") => {
                self.reset(!query.contains("data=keep"));
                control_answer(StatusCode::OK, json!({ "reset": true }))
            }
            (&Method::POST, "/__sim/spend") => {
                match serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("count").and_then(serde_json::Value::as_u64))
                {
                    Some(n) => {
                        control_answer(StatusCode::OK, json!({ "remaining": self.spend(n) }))
                    }
                    None => control_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "expected {\"count\": N}" }),
                    ),
                }
            }
            (&Method::POST, "/__sim/faults") => match serde_json::from_slice::<FaultRequest>(&body)
            {
                Ok(request) => {
                    self.inject(request.fault, request.count);
                    control_answer(
                        StatusCode::OK,
                        json!({ "pending": lock(&self.inner.faults).len() }),
                    )
                }
                Err(e) => {
                    control_answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }))
                }
            },
            (&Method::DELETE, "/__sim/faults") => {
                lock(&self.inner.faults).clear();
                control_answer(StatusCode::OK, json!({ "pending": 0 }))
            }
            (&Method::PUT | &Method::POST, "/__sim/latency") => {
                match serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("ms").and_then(serde_json::Value::as_u64))
                {
                    Some(ms) => {
                        self.set_latency(Duration::from_millis(ms));
                        control_answer(StatusCode::OK, json!({ "latency_ms": ms }))
                    }
                    None => control_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "expected {\"ms\": N}" }),
                    ),
                }
            }
            (&Method::PUT | &Method::POST, "/__sim/headers") => {
                let parsed = serde_json::from_slice::<BTreeMap<String, String>>(&body)
                    .ok()
                    .and_then(|map| {
                        map.into_iter()
                            .map(|(k, v)| {
                                Some((
                                    http::HeaderName::try_from(k).ok()?,
                                    HeaderValue::try_from(v).ok()?,
                                ))
                            })
                            .collect::<Option<HeaderMap>>()
                    });
                match parsed {
                    Some(headers) => {
                        let count = headers.len();
                        self.set_headers(headers);
                        control_answer(StatusCode::OK, json!({ "headers": count }))
                    }
                    None => control_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "expected {\"Header-Name\": \"value\", ...}" }),
                    ),
                }
            }
            (&Method::PUT | &Method::POST, "/__sim/webhooks") => {
                let value = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
                let url = value.get("url").and_then(serde_json::Value::as_str);
                let secret = value.get("secret").and_then(serde_json::Value::as_str);
                match (url, secret) {
                    (Some(url), Some(secret)) => {
                        self.set_webhooks(Some(hooks::Target {
                            url: url.into(),
                            secret: secret.into(),
                        }));
                        control_answer(StatusCode::OK, json!({ "webhooks": url }))
                    }
                    (None, None) if value.is_object() => {
                        self.set_webhooks(None);
                        control_answer(StatusCode::OK, json!({ "webhooks": null }))
                    }
                    _ => control_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "expected {\"url\": …, \"secret\": …} or {}" }),
                    ),
                }
            }
            (&Method::PUT | &Method::POST, "/__sim/quota") => {
                match serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("limit").and_then(serde_json::Value::as_u64))
                {
                    Some(limit) if limit > 0 => {
                        self.set_limit(limit);
                        control_answer(StatusCode::OK, json!({ "limit": limit }))
                    }
                    _ => control_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "expected {\"limit\": N} with N > 0" }),
                    ),
                }
            }
            _ => control_answer(
                StatusCode::NOT_FOUND,
                json!({ "error": "no such control endpoint; GET /__sim lists them" }),
            ),
        }
    }
}

/// The id a POST's answer carries (v3 wraps it in `data`).
fn created_id(body: &Bytes) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id").or_else(|| value.get("data")?.get("id"))?;
    Some(id.to_string().trim_matches('"').to_string())
}

/// Which API a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// The legacy resources (`/api/v2/`, or `/stores/{hash}/v2/` on the OAuth gateway).
    V2,
    /// The v3 resources (`/stores/{hash}/v3/`).
    V3,
}

/// The quota as it stands after a call, for the budget headers.
struct Spent {
    remaining: u64,
    limit: u64,
    window: Duration,
    reset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Valid,
    Invalid,
    Missing,
}

impl Credential {
    fn as_str(self) -> &'static str {
        match self {
            Credential::Valid => "ok",
            Credential::Invalid => "bad",
            Credential::Missing => "none",
        }
    }
}

struct Leave<'a>(&'a AtomicU64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn control_answer(status: StatusCode, value: serde_json::Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
