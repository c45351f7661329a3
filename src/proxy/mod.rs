//! A call's life, stage by stage, top to bottom:
//!
//! 1. **admit**: the request can be forwarded (target, framing, body size) and the app is one of
//!    `[[clients]]` when any are configured;
//! 2. **cache** (`cached`): a GET or HEAD the cache may answer gets a fresh entry (`HIT`, or
//!    `304`), or shares one fetch with identical calls (`MISS`/`COALESCED`), or, when the budget
//!    or the store cannot give a fresh answer at once, a stale entry (`STALE`);
//! 3. **wait**: a budget slot ([`Budget::acquire`]): the store's budget allows the send, the
//!    write reserve is kept, upstream concurrency is bounded; at most until `budget.max_wait`
//!    after arrival, else the store's own throttle answer;
//! 4. **forward**: the store's answer, through [`Upstream::send`]; the budget learns from it. A
//!    call the store throttled (509/429) goes back to the head of the queue; a GET or HEAD that
//!    failed is tried once more. A write that may have changed the store drops its family from
//!    the cache;
//! 5. **finish**: the headers every answer carries (request id, the store's request id,
//!    `x-cache`, the remaining budget, `Location` pointing back at the proxy), and the body that
//!    writes the access event when it is done. Every exit, errors included, goes through
//!    `finish`.
//!
//! Each call past a cache hit runs in a `call` span carrying its request id, so every event it
//! causes (budget, cache, upstream) names the call.

mod cached;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::Instrument;

use crate::body::{self, Body, BodyMemory, Receive, ReceiveError, Replay, ResponseBody};
use crate::budget::{Budget, Class, Slot, Verdict};
use crate::cache::{Cache, Outcome};
use crate::call::{Call, Ctx, RequestIds, Trip};
use crate::clients::Clients;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::dialect::Dialect;
use crate::error::{CallError, Throttle, error_body};
use crate::headers::{REFUSED, REQUEST_ID, UPSTREAM_REQUEST_ID, X_CACHE};
use crate::status::Status;
use crate::telemetry;
use crate::upstream::Upstream;

/// Most bytes of an oversized request body read and thrown away so that the connection can
/// stay open for the app's next call; past this the connection is closed.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
/// Longest time spent throwing away an oversized request body.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The parts a proxy calls on, built by the app from their sections.
#[derive(Debug)]
pub struct Parts {
    /// The store.
    pub upstream: Arc<Upstream>,
    /// The store's budget.
    pub budget: Budget,
    /// The GET cache.
    pub cache: Arc<Cache>,
    /// What the admin listener shows; the proxy counts into it.
    pub status: Arc<Status>,
    /// The cluster whose shared cache a miss asks, when there is one.
    pub cluster: Option<Arc<Cluster>>,
}

/// The proxy: everything a call needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    upstream: Arc<Upstream>,
    budget: Budget,
    cache: Arc<Cache>,
    status: Arc<Status>,
    cluster: Option<Arc<Cluster>>,
    /// Longest a fetch for the shared cache keeps its lease: a call's wait and the store's time.
    lease_for: Duration,
    /// The shared cache's bound in bytes (`cache.max_size`).
    shared_max: u64,
    /// What a reload may change while calls go on.
    live: RwLock<Arc<Live>>,
    ids: RequestIds,
    dialect: Dialect,
    remaining_header: HeaderName,
    receive: Receive,
    scheme: &'static str,
}

/// Settings a reload changes for the calls that follow.
#[derive(Debug)]
struct Live {
    clients: Clients,
    max_wait: Duration,
}

impl Live {
    fn of(settings: &Settings) -> Live {
        Live {
            clients: Clients::new(&settings.clients),
            max_wait: settings.budget.max_wait,
        }
    }
}

impl Proxy {
    /// The proxy for validated settings, calling on `parts`.
    pub fn new(settings: &Settings, parts: Parts) -> Proxy {
        let dialect = parts.budget.dialect();
        Proxy {
            upstream: parts.upstream,
            budget: parts.budget,
            cache: parts.cache,
            status: parts.status,
            cluster: parts.cluster,
            lease_for: settings.budget.max_wait + settings.upstream.timeout,
            shared_max: settings.cache.max_size.as_u64(),
            live: RwLock::new(Arc::new(Live::of(settings))),
            ids: RequestIds::default(),
            dialect,
            remaining_header: dialect.remaining_header(),
            receive: Receive {
                max_body: settings.listen.max_body.as_u64(),
                gap: settings.listen.body_timeout,
                memory: BodyMemory::new(settings.listen.body_memory.as_u64()),
            },
            scheme: settings.listen.scheme(),
        }
    }

    /// Applies a reloaded configuration's `[[clients]]` and `max_wait` to the calls that
    /// follow.
    pub fn reload(&self, settings: &Settings) {
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Live::of(settings));
    }

    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves one call from arrival to the response the app gets.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        let max_wait = self.live().max_wait;
        let metrics = Some(self.status.metrics().clone());
        let mut call = Call::start(&req, &self.ids, self.scheme, max_wait, metrics);
        let outcome = self.serve(&mut call, req).await;
        self.finish(call, outcome)
    }

    async fn serve(
        self: &Arc<Self>,
        call: &mut Call,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, CallError> {
        let mut req = self.admit(call, req).await?;
        if let Some(plan) = self.plan(&req) {
            // A fresh entry answers at once, without waiting on anything; what may wait (a
            // fetch, the budget) runs in a future of its own, so a hit's stays small.
            return match self.hit(call, &req, &plan) {
                Ok(response) => Ok(response),
                Err(found) => {
                    call.pass_trace(&mut req);
                    let span = call_span(call);
                    Box::pin(self.cached(call, req, plan, found))
                        .instrument(span)
                        .await
                }
            };
        }
        call.pass_trace(&mut req);
        let span = call_span(call);
        Box::pin(self.pass(call, req)).instrument(span).await
    }

    /// A call the cache takes no part in: forwarded, and a write that may have changed the
    /// store drops what it touched.
    async fn pass(
        self: &Arc<Self>,
        call: &mut Call,
        req: Request<Body>,
    ) -> Result<Response<Body>, CallError> {
        self.cache.counters.count(Outcome::Bypass);
        let written = (call.ctx.class == Class::Write)
            .then(|| self.cache.drops_for_write(req.method(), req.uri().path()));
        let mut trip = Trip::default();
        let result = self.forward(&mut trip, &call.ctx, req).await;
        call.absorb(&trip);
        if let Some(drops) = written
            && may_have_changed_the_store(&result, self.dialect)
        {
            self.cache.change(&drops).await;
        }
        let (head, answer) = result?.into_parts();
        let answer = body::for_app(answer, self.receive.gap)
            .await
            .map_err(broke_off)?;
        Ok(Response::from_parts(head, answer))
    }

    /// Stage 1: is this a call that may go to the store at all? Its head is checked, the app
    /// authenticated, then its body received whole (within `listen.max_body`,
    /// `listen.body_timeout` and `listen.body_memory`), so that a slow uploader holds neither
    /// budget nor an upstream slot; `budget.max_wait` counts from when the request is whole.
    /// A call refused before its body was read has the body drained, so the app, still
    /// sending, reads the answer.
    async fn admit(
        &self,
        call: &mut Call,
        req: Request<Incoming>,
    ) -> Result<Request<Body>, CallError> {
        let (mut parts, mut incoming) = req.into_parts();
        if let Err(error) = self.check_head(call, &mut parts) {
            drain(incoming);
            return Err(error);
        }
        // Most calls have no body: only one that does needs the (larger) receiving future.
        let received = if http_body::Body::is_end_stream(&incoming) {
            Ok(body::Received::default())
        } else {
            Box::pin(body::receive(&mut incoming, &self.receive)).await
        };
        let received = received.map_err(|error| match error {
            ReceiveError::TooLarge(limit) => {
                if !parts.headers.contains_key(EXPECT) {
                    drain(incoming);
                }
                CallError::BodyTooLarge(limit)
            }
            ReceiveError::Timeout(gap) => CallError::BodyTimeout(gap),
            ReceiveError::Gone(why) => CallError::ClientGone(format!(
                "the app went away before its request body was whole: {why}"
            )),
            ReceiveError::Malformed(why) => CallError::BadRequest(why),
            ReceiveError::Busy => CallError::Busy,
        })?;
        call.body_memory = received.permit;
        call.ctx.deadline = Instant::now() + self.live().max_wait;
        Ok(Request::from_parts(parts, body::full(received.bytes)))
    }

    /// The request head: no smuggling shape, a target and headers within bounds, and an app
    /// of `[[clients]]` when any are configured.
    fn check_head(
        &self,
        call: &mut Call,
        parts: &mut http::request::Parts,
    ) -> Result<(), CallError> {
        if let Some(why) = crate::framing::refusal(&parts.headers) {
            return Err(CallError::BadRequest(why));
        }
        parts.headers.remove(&REFUSED);
        crate::admit::check(&parts.method, &parts.uri, &parts.headers)?;
        call.set_client(self.live().clients.authenticate(&parts.headers)?);
        Ok(())
    }

    /// Stages 3 and 4 (budget, then the store), repeated while the store throttles the call
    /// (it was not processed, so it goes again, writes included) or, once, when a GET or HEAD
    /// failed.
    async fn forward(
        &self,
        trip: &mut Trip,
        ctx: &Ctx,
        req: Request<Body>,
    ) -> Result<Response<Body>, CallError> {
        let (parts, body) = req.into_parts();
        let body = Replay::new(body);
        let mut resend = false;
        let mut retried = false;
        loop {
            let slot = self.wait(trip, ctx, resend).await?;
            let grant = slot.grant();
            let req = Request::from_parts(parts.clone(), body.body());
            let can_retry = ctx.class == Class::Read && !retried;
            let response = match self
                .upstream
                .send(req, &ctx.request_id, Some(slot), trip)
                .await
            {
                Ok(response) => {
                    self.status.note_store_status(response.status().as_u16());
                    response
                }
                Err(error) if can_retry && error.is_transient() => {
                    tracing::info!(error = %error, "upstream.retry");
                    retried = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let status = response.status();
            if self
                .budget
                .observe(grant, status.as_u16(), response.headers())
                .await
                == Verdict::Resend
            {
                resend = true;
                continue;
            }
            if status.is_server_error() && can_retry {
                tracing::info!(status = status.as_u16(), "upstream.retry");
                retried = true;
                continue;
            }
            return Ok(response.map(BodyExt::boxed));
        }
    }

    /// Stage 3: a budget slot, waiting in arrival order until the call's deadline.
    async fn wait(&self, trip: &mut Trip, ctx: &Ctx, resend: bool) -> Result<Slot, CallError> {
        let started = Instant::now();
        let slot = self.budget.acquire(ctx.ask(resend)).await;
        trip.wait_ms += telemetry::ms(started.elapsed());
        slot.map_err(|refused| {
            CallError::Throttled(Throttle {
                retry_after: refused.retry_after,
                window: refused.window,
                quota: refused.quota,
            })
        })
    }

    /// Stage 5: the headers every answer carries; errors become the store's error shape.
    fn finish(
        &self,
        mut call: Call,
        outcome: Result<Response<Body>, CallError>,
    ) -> Response<ResponseBody> {
        let (throttled, upstream_error) = match &outcome {
            Err(e) => (matches!(e, CallError::Throttled(_)), e.upstream_kind()),
            Ok(_) => (false, None),
        };
        let mut response = match outcome {
            Ok(response) => response,
            Err(error) => self.error_response(&mut call, error),
        };
        let view = self.budget.view();
        let headers = response.headers_mut();
        if headers.contains_key(http::header::LOCATION)
            || headers.contains_key(http::header::CONTENT_LOCATION)
        {
            self.upstream
                .rewrite_locations(headers, call.app_origin().as_deref());
        }
        headers.insert(REQUEST_ID, call.ctx.request_id.clone());
        match &call.upstream_id {
            Some(id) => headers.insert(UPSTREAM_REQUEST_ID, id.clone()),
            None => headers.remove(&UPSTREAM_REQUEST_ID),
        };
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
        self.status
            .count_call(call.record.client.as_ref(), throttled, upstream_error);
        response.map(|b| ResponseBody::new(b, call))
    }

    /// The one place an error becomes an answer: its status and headers, and the store's error
    /// body in the shape the app expects.
    fn error_response(&self, call: &mut Call, error: CallError) -> Response<Body> {
        let status = error.status(self.dialect);
        let message = error.to_string();
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        error.headers(self.dialect, response.headers_mut());
        let bytes = error_body(call.shape(), status, &message, response.headers_mut());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *response.body_mut() = body::full(bytes);
        if matches!(error, CallError::BodyTimeout(_) | CallError::Busy) {
            // The body was not read whole: the connection cannot carry another call.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        call.record.error = Some(message);
        response
    }
}

/// The span of a call that goes past a cache hit: every event it causes (budget, cache,
/// upstream) names the call. A hit causes none but its access event, which names itself, so it
/// makes no span.
fn call_span(call: &Call) -> tracing::Span {
    tracing::info_span!("call", request_id = call.ctx.id())
}

/// The error for a store answer that broke before any of it reached the app.
fn broke_off(why: String) -> CallError {
    CallError::BadGateway(format!("the store's answer broke off: {why}"))
}

/// False when a write's outcome shows the store did not apply it (a 4xx, a throttle, no
/// connection); true otherwise, timeouts and broken exchanges included.
fn may_have_changed_the_store(
    result: &Result<Response<Body>, CallError>,
    dialect: Dialect,
) -> bool {
    match result {
        Ok(response) => {
            let status = response.status();
            !status.is_client_error() && !dialect.is_throttle(status.as_u16())
        }
        Err(error) => matches!(error, CallError::Timeout(_) | CallError::BadGateway(_)),
    }
}

/// Reads and throws away the rest of a body the proxy answered early (see [`body::drain`]).
fn drain(incoming: Incoming) {
    body::drain(incoming, DRAIN_LIMIT, DRAIN_TIME);
}
