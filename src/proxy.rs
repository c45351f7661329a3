//! A call's life, stage by stage, top to bottom:
//!
//! 1. **admit**: the request can be forwarded (target, framing, body size) and the app is one of
//!    `[[clients]]` when any are configured;
//! 2. **cache**: a GET or HEAD the cache may answer gets a fresh entry (`HIT`, or `304`), or
//!    shares one fetch with identical calls (`MISS`/`COALESCED`), or, when the budget or the
//!    store cannot give a fresh answer at once, a stale entry (`STALE`);
//! 3. **wait**: a budget slot ([`Budget::acquire`]): the store's budget allows the send, the
//!    write reserve is kept, upstream concurrency is bounded; at most until `budget.max_wait`
//!    after arrival, else the store's own throttle answer;
//! 4. **forward**: the store's answer, through [`Upstream::send`]; the budget learns from it. A
//!    call the store throttled (509/429) goes back to the head of the queue; a GET or HEAD that
//!    failed is tried once more. A write that may have changed the store drops its family from
//!    the cache;
//! 5. **finish**: the headers every answer carries (request id, `x-cache`, the remaining
//!    budget, `Location` pointing back at the proxy), and the body that writes the access event
//!    when it is done. Every exit, errors included, goes through `finish`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, ETAG, EXPECT,
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    PRAGMA, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{self, Body, Replay, ResponseBody};
use crate::budget::{Ask, Budget, Class, Slot, Verdict};
use crate::cache::flight::{self, Flight, Flights};
use crate::cache::{self, Cache, Directive, Entry, Key, Lookup, Outcome};
use crate::call::{Call, REQUEST_ID, RequestIds, Trip};
use crate::clients::Clients;
use crate::config::{Dialect, Settings};
use crate::error::{CallError, Throttle, error_body};
use crate::metrics::{Metrics, Snapshot};
use crate::telemetry;
use crate::upstream::{Upstream, UpstreamError};

/// Response header saying how the cache took part in the answer.
pub const X_CACHE: &str = "x-cache";

/// Most bytes of an oversized request body read and thrown away so that the connection can
/// stay open for the app's next call; past this the connection is closed.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
/// Longest time spent throwing away an oversized request body.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Running totals of the proxy's own, for the summary event.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls answered.
    pub calls: AtomicU64,
    /// Calls whose store failed them (502/504 made by the proxy).
    pub upstream_errors: AtomicU64,
    /// Calls answered with the throttle answer.
    pub throttled: AtomicU64,
}

/// The proxy: everything a call needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    upstream: Upstream,
    budget: Arc<dyn Budget>,
    cache: Cache,
    flights: Arc<Flights<Shared>>,
    /// What a reload may change while calls go on.
    live: RwLock<Arc<Live>>,
    ids: RequestIds,
    dialect: Dialect,
    remaining_header: HeaderName,
    max_body: u64,
    scheme: &'static str,
    counters: Counters,
    metrics: Arc<Metrics>,
    started: Instant,
    /// When the store last answered (anything), for readiness.
    last_answer: Mutex<Option<Instant>>,
}

/// Settings a reload changes for the calls that follow.
#[derive(Debug)]
struct Live {
    clients: Clients,
    max_wait: Duration,
}

impl Proxy {
    /// Builds the proxy for validated settings, spending `budget`.
    pub fn new(settings: &Settings, budget: Arc<dyn Budget>) -> Result<Proxy, UpstreamError> {
        let dialect = settings.budget.dialect;
        Ok(Proxy {
            upstream: Upstream::new(settings)?,
            budget,
            cache: Cache::new(settings),
            flights: Arc::new(Flights::default()),
            live: RwLock::new(Arc::new(Live {
                clients: Clients::new(&settings.clients),
                max_wait: settings.budget.max_wait,
            })),
            ids: RequestIds::default(),
            dialect,
            remaining_header: HeaderName::from_static(match dialect {
                Dialect::Legacy => crate::budget::report::LEGACY_REMAINING,
                Dialect::Oauth => crate::budget::report::OAUTH_LEFT,
            }),
            max_body: settings.listen.max_body.as_u64(),
            scheme: if settings.listen.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            counters: Counters::default(),
            metrics: Arc::new(Metrics::default()),
            started: Instant::now(),
            last_answer: Mutex::new(None),
        })
    }

    /// Applies a reloaded configuration to the calls that follow: app clients, `max_wait`,
    /// cache rules and the store's credential. (The budget's numbers are the budget's.)
    pub fn reload(&self, settings: &Settings) -> Result<(), UpstreamError> {
        self.upstream.set_credential(settings)?;
        self.cache.set_policy(settings);
        let live = Live {
            clients: Clients::new(&settings.clients),
            max_wait: settings.budget.max_wait,
        };
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(live);
        Ok(())
    }

    /// Serves one call from arrival to the response the app gets.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        let mut call = Call::start(&req, &self.ids, self.scheme, Some(self.metrics.clone()));
        let outcome = self.serve(&mut call, req).await;
        self.finish(call, outcome)
    }

    async fn serve(
        self: &Arc<Self>,
        call: &mut Call,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, CallError> {
        let req = self.admit(call, req).await?;
        if let Some(plan) = self.plan(&req) {
            return self.cached(call, req, plan).await;
        }
        self.cache.counters.count(Outcome::Bypass);
        let written =
            (Class::of(req.method()) == Class::Write).then(|| cache::family(req.uri().path()));
        let mut trip = Trip::default();
        let deadline = call.started + self.live().max_wait;
        let result = self
            .forward(&mut trip, &call.request_id, deadline, req)
            .await;
        call.absorb(&trip);
        if let Some(family) = written {
            if may_have_changed_the_store(&result) {
                self.cache.invalidate(&family);
            }
        }
        result
    }

    /// Stage 1: is this a call that may go to the store at all?
    async fn admit(
        &self,
        call: &mut Call,
        mut req: Request<Incoming>,
    ) -> Result<Request<Body>, CallError> {
        if let Some(why) = crate::framing::refusal(req.headers()) {
            return Err(CallError::BadRequest(why));
        }
        req.headers_mut().remove(crate::framing::REFUSED_HEADER);
        crate::admit::check(req.method(), req.uri(), req.headers())?;
        call.record.client = self
            .live()
            .clients
            .authenticate(req.headers())?
            .map(str::to_string);
        let (parts, incoming) = req.into_parts();
        let body = self.admit_body(&parts, incoming).await?;
        Ok(Request::from_parts(parts, body))
    }

    /// A body of known length streams to the store once its length is within
    /// `listen.max_body`; a body of unknown length (chunked) is read up to the limit first, so
    /// that an oversized one never reaches the store.
    async fn admit_body(
        &self,
        parts: &http::request::Parts,
        mut incoming: Incoming,
    ) -> Result<Body, CallError> {
        use http_body::Body as _;
        if incoming.is_end_stream() {
            return Ok(body::empty());
        }
        let expects_continue = parts.headers.contains_key(EXPECT);
        if let Some(length) = incoming.size_hint().exact() {
            if length > self.max_body {
                if !expects_continue {
                    drain(incoming);
                }
                return Err(CallError::BodyTooLarge(self.max_body));
            }
            return Ok(incoming.map_err(Into::into).boxed());
        }
        let mut buf = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                CallError::BadRequest(format!("the request body could not be read: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > self.max_body {
                    drain(incoming);
                    return Err(CallError::BodyTooLarge(self.max_body));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(body::full(buf.freeze()))
    }

    /// Stage 2: the cache, for a GET or HEAD it may answer. A fresh entry answers at once
    /// (`304` when the app's validator matches); otherwise one fetch per key goes to the store
    /// (identical calls meanwhile share it) and its answer is stored. With a stale entry the
    /// fetch may not wait for budget: if the budget cannot admit it at once, or the store
    /// fails, the stale entry answers.
    async fn cached(
        self: &Arc<Self>,
        call: &mut Call,
        req: Request<Body>,
        plan: Plan,
    ) -> Result<Response<Body>, CallError> {
        let fallback = match self.cache.lookup(&plan.key, Instant::now()).await {
            Lookup::Fresh(entry) if plan.directive == Directive::Normal => {
                return Ok(self.answer_entry(call, &entry, Outcome::Hit, req.headers()));
            }
            Lookup::Fresh(entry) | Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        let deadline = if fallback.is_some() {
            Instant::now()
        } else {
            call.started + self.live().max_wait
        };
        let (shared, outcome) = self.fetch_shared(call, &req, plan, deadline).await;
        let stale = |call: &mut Call, why: String| {
            fallback.as_ref().map(|entry| {
                let response = self.answer_entry(call, entry, Outcome::Stale, req.headers());
                call.record.error = Some(format!("served stale: {why}"));
                response
            })
        };
        match shared {
            Ok(fetched) => {
                call.absorb(&fetched.trip);
                if fetched.status.is_server_error() {
                    if let Some(response) =
                        stale(call, format!("the store answered {}", fetched.status))
                    {
                        return Ok(response);
                    }
                }
                Ok(self.answer_fetched(call, &fetched, outcome, req.headers()))
            }
            Err(error) => stale(call, error.to_string()).ok_or(error),
        }
    }

    /// The store's answer to a cacheable GET, fetched once for every identical call in
    /// flight: the first caller starts a fetch that runs on its own (an app going away does
    /// not cancel it for the others), the others wait for it.
    async fn fetch_shared(
        self: &Arc<Self>,
        call: &Call,
        req: &Request<Body>,
        plan: Plan,
        deadline: Instant,
    ) -> (Shared, Outcome) {
        match self.flights.join(&plan.key) {
            Flight::Lead(landing) => {
                let arrival = flight::arrival(landing.subscribe());
                let proxy = self.clone();
                let parts = fetch_head(req, &plan.key);
                let request_id = call.request_id.clone();
                tokio::spawn(async move {
                    let result = proxy.fetch(parts, request_id, plan, deadline).await;
                    landing.land(result);
                });
                (arrival.await.unwrap_or_else(abandoned), Outcome::Miss)
            }
            Flight::Follow(rx) => (
                flight::arrival(rx).await.unwrap_or_else(abandoned),
                Outcome::Coalesced,
            ),
        }
    }

    /// One fetch for the cache: through the budget to the store, the whole body read, the
    /// answer stored when the store allows and no write to its family happened meanwhile.
    async fn fetch(
        &self,
        parts: http::request::Parts,
        request_id: HeaderValue,
        plan: Plan,
        deadline: Instant,
    ) -> Shared {
        let family = cache::family(plan.key.path());
        let generation = self.cache.generation(&family);
        let mut trip = Trip::default();
        let response = self
            .forward(
                &mut trip,
                &request_id,
                deadline,
                Request::from_parts(parts, body::empty()),
            )
            .await?;
        let (head, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| CallError::BadGateway(format!("the store's answer broke off: {e}")))?
            .to_bytes();
        let mut entry = None;
        if head.status == StatusCode::OK {
            if let Some(ttl) = cache::policy::response_ttl(&head.headers, plan.ttl) {
                let made = self.cache.entry(
                    &plan.key,
                    head.headers.clone(),
                    bytes.clone(),
                    ttl,
                    generation,
                    Instant::now(),
                );
                if let Some(made) = made {
                    if self.cache.insert(plan.key, made.clone()).await {
                        entry = Some(made);
                    }
                }
            }
        }
        Ok(Arc::new(Fetched {
            status: head.status,
            headers: head.headers,
            body: bytes,
            entry,
            trip,
        }))
    }

    /// An answer from a cache entry: `304` when the app already has it, else the entry with
    /// its `Age`.
    fn answer_entry(
        &self,
        call: &mut Call,
        entry: &Entry,
        outcome: Outcome,
        request: &HeaderMap,
    ) -> Response<Body> {
        call.record.cache = outcome.as_str();
        self.cache.counters.count(outcome);
        if entry.not_modified(request) {
            return not_modified(entry);
        }
        let mut response = Response::new(body::full(entry.body.clone()));
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response
            .headers_mut()
            .insert(AGE, HeaderValue::from(entry.age(Instant::now())));
        response
    }

    /// An answer from a fetch (`MISS` for the call that started it, `COALESCED` for the others).
    fn answer_fetched(
        &self,
        call: &mut Call,
        fetched: &Fetched,
        outcome: Outcome,
        request: &HeaderMap,
    ) -> Response<Body> {
        call.record.cache = outcome.as_str();
        self.cache.counters.count(outcome);
        let mut response = Response::new(body::full(fetched.body.clone()));
        *response.status_mut() = fetched.status;
        match &fetched.entry {
            Some(entry) if entry.not_modified(request) => return not_modified(entry),
            Some(entry) => *response.headers_mut() = entry.headers.clone(),
            None => *response.headers_mut() = fetched.headers.clone(),
        }
        response
    }

    /// Whether (and how) the cache can answer a request: a GET or HEAD without a body or a
    /// range, whose path may be cached, from an app that did not say `no-store`.
    fn plan(&self, req: &Request<Body>) -> Option<Plan> {
        use http_body::Body as _;
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        if !self.cache.enabled()
            || !read
            || req.headers().contains_key(RANGE)
            || !req.body().is_end_stream()
        {
            return None;
        }
        let directive = cache::policy::directive(req.headers());
        let ttl = self.cache.policy().ttl_for(req.uri().path());
        if directive == Directive::Bypass || ttl.is_zero() {
            return None;
        }
        Some(Plan {
            key: Key::of(req.uri(), req.headers()),
            ttl,
            directive,
        })
    }

    /// Stages 3 and 4 (budget, then the store), repeated while the store throttles the call
    /// (it was not processed, so it goes again, writes included) or, once, when a GET or HEAD
    /// failed.
    async fn forward(
        &self,
        trip: &mut Trip,
        request_id: &HeaderValue,
        deadline: Instant,
        req: Request<Body>,
    ) -> Result<Response<Body>, CallError> {
        let class = Class::of(req.method());
        let (parts, body) = req.into_parts();
        let body = Replay::new(body);
        let mut resend = false;
        let mut retried = false;
        loop {
            let mut slot = self
                .wait(
                    trip,
                    Ask {
                        class,
                        deadline,
                        resend,
                    },
                )
                .await?;
            let seq = slot.seq();
            slot.mark_sent();
            let req = Request::from_parts(parts.clone(), body.body());
            let can_retry = class == Class::Read && !retried;
            let response = match self.upstream.send(req, request_id, Some(slot), trip).await {
                Ok(response) => {
                    self.note_answer();
                    response
                }
                Err(error) if can_retry && error.is_transient() => {
                    tracing::info!(request_id = %String::from_utf8_lossy(request_id.as_bytes()), error = %error, "upstream.retry");
                    retried = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if self
                .budget
                .observe(seq, response.status().as_u16(), response.headers())
                == Verdict::Resend
            {
                resend = true;
                continue;
            }
            if response.status().is_server_error() && can_retry {
                tracing::info!(request_id = %String::from_utf8_lossy(request_id.as_bytes()), status = response.status().as_u16(), "upstream.retry");
                retried = true;
                continue;
            }
            return Ok(response.map(BodyExt::boxed));
        }
    }

    /// Stage 3: a budget slot, waiting in arrival order until the deadline.
    async fn wait(&self, trip: &mut Trip, ask: Ask) -> Result<Slot, CallError> {
        let started = Instant::now();
        let slot = self.budget.clone().acquire(ask).await;
        trip.wait_ms += telemetry::ms(started.elapsed());
        slot.map_err(|refused| {
            CallError::Throttled(Throttle {
                retry_after: refused.retry_after,
                window: refused.window,
                quota: refused.quota,
            })
        })
    }

    /// Stage 4: the headers every answer carries; errors become the store's error shape.
    fn finish(
        &self,
        mut call: Call,
        outcome: Result<Response<Body>, CallError>,
    ) -> Response<ResponseBody> {
        let throttled = matches!(outcome, Err(CallError::Throttled(_)));
        let mut response = match outcome {
            Ok(response) => response,
            Err(error) => self.error_response(&mut call, error),
        };
        let view = self.budget.view();
        let headers = response.headers_mut();
        self.upstream
            .rewrite_locations(headers, call.app_origin.as_deref());
        headers.insert(REQUEST_ID, call.request_id.clone());
        headers.insert(X_CACHE, HeaderValue::from_static(call.record.cache));
        if !throttled {
            // The throttle answer says 0 itself; every other answer gets the proxy's view.
            headers.insert(
                self.remaining_header.clone(),
                HeaderValue::from(view.remaining),
            );
        }
        call.record.budget_remaining = Some(view.remaining);
        call.record.status = response.status().as_u16();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        response.map(|b| ResponseBody::new(b, call))
    }

    fn error_response(&self, call: &mut Call, error: CallError) -> Response<Body> {
        match error {
            CallError::Throttled(_) => self.counters.throttled.fetch_add(1, Ordering::Relaxed),
            CallError::Unreachable(_)
            | CallError::Tls(_)
            | CallError::BadGateway(_)
            | CallError::Timeout(_) => self
                .counters
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let status = error.status(self.dialect);
        let message = error.to_string();
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        error.headers(self.dialect, response.headers_mut());
        let bytes = error_body(call.shape, status, &message, response.headers_mut());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *response.body_mut() = body::full(bytes);
        call.record.error = Some(message);
        response
    }

    // Accessors for the admin endpoints, the summary and tests.

    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The metrics recorded call by call.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Everything the metrics and status endpoints read at once.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.cache.counters;
        let (cache_entries, cache_bytes) = self.cache.size_now();
        Snapshot {
            budget: self.budget.view(),
            totals: self.budget.totals(),
            throttled: self.counters.throttled.load(Ordering::Relaxed),
            upstream_errors: self.counters.upstream_errors.load(Ordering::Relaxed),
            cache_entries,
            cache_bytes,
            cache: [&c.hits, &c.misses, &c.stale, &c.coalesced, &c.bypass]
                .map(|n| n.load(Ordering::Relaxed)),
            uptime: self.started.elapsed(),
        }
    }

    /// True when the store answered (anything) within `within`; else a connection to it is
    /// tried (TCP and TLS, no API call, no budget spent).
    pub async fn store_reachable(&self, within: Duration) -> bool {
        let last = *self
            .last_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < within) {
            return true;
        }
        let reachable = self.upstream.probe().await;
        if reachable {
            self.note_answer();
        }
        reachable
    }

    /// Seconds since the store last answered, if it has.
    pub fn last_answer_ago(&self) -> Option<Duration> {
        let last = *self
            .last_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.map(|at| at.elapsed())
    }

    /// The `[[clients]]` names (for `/status`).
    pub fn client_names(&self) -> Vec<String> {
        self.live().clients.names()
    }

    /// The store's URL and the budget dialect (for `/status`).
    pub fn upstream_description(&self) -> (String, Dialect) {
        (self.upstream.url_string(), self.dialect)
    }

    fn note_answer(&self) {
        *self
            .last_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// The budget the proxy spends.
    pub fn budget(&self) -> &Arc<dyn Budget> {
        &self.budget
    }

    /// The proxy's own totals.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The GET cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// How the cache can take part in a call.
#[derive(Debug, Clone)]
struct Plan {
    key: Key,
    ttl: Duration,
    directive: Directive,
}

/// A fetch's result, shared by every call on its flight.
type Shared = Result<Arc<Fetched>, CallError>;

/// The store's answer to a cacheable GET, read whole.
#[derive(Debug)]
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The entry made of it, when it could be cached.
    entry: Option<Arc<Entry>>,
    trip: Trip,
}

fn abandoned() -> Shared {
    Err(CallError::BadGateway(
        "the shared call to the store was abandoned".into(),
    ))
}

/// The head of the GET a cache fetch sends: the app's request with its validators, ranges and
/// cache directives removed (the answer is for everyone), and `Accept`/`Accept-Encoding`
/// reduced to what the key says, so the answer fits every call that shares it.
fn fetch_head(req: &Request<Body>, key: &Key) -> http::request::Parts {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = Method::GET;
    parts.uri = req.uri().clone();
    parts.headers = req.headers().clone();
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        CACHE_CONTROL,
        PRAGMA,
    ] {
        parts.headers.remove(name);
    }
    let accept = if key.xml {
        "application/xml"
    } else {
        "application/json"
    };
    parts
        .headers
        .insert(ACCEPT, HeaderValue::from_static(accept));
    if key.gzip {
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    } else {
        parts.headers.remove(ACCEPT_ENCODING);
    }
    parts
}

/// `304 Not Modified` for an entry the app already has.
fn not_modified(entry: &Entry) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in [ETAG, LAST_MODIFIED, CACHE_CONTROL, VARY, CONTENT_LOCATION] {
        if let Some(value) = entry.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(AGE, HeaderValue::from(entry.age(Instant::now())));
    response
}

/// False when a write's outcome shows the store did not apply it (a 4xx, a throttle, no
/// connection); true otherwise, timeouts and broken exchanges included.
fn may_have_changed_the_store(result: &Result<Response<Body>, CallError>) -> bool {
    match result {
        Ok(response) => !response.status().is_client_error() && response.status().as_u16() != 509,
        Err(error) => matches!(error, CallError::Timeout(_) | CallError::BadGateway(_)),
    }
}

/// Reads and throws away the rest of an oversized body in the background, so that hyper can
/// keep the connection for the app's next call; gives up (and the connection closes) past
/// [`DRAIN_LIMIT`] or [`DRAIN_TIME`].
fn drain(mut incoming: Incoming) {
    tokio::spawn(async move {
        let mut seen = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = incoming.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        })
        .await;
    });
}
