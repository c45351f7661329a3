//! A call's life, stage by stage, top to bottom:
//!
//! 1. **admit**: the request can be forwarded (target, framing, body size) and the app is one of
//!    `[[clients]]` when any are configured;
//! 2. **wait**: a budget slot ([`Budget::acquire`]): the store's budget allows the send, the
//!    write reserve is kept, upstream concurrency is bounded; at most until `budget.max_wait`
//!    after arrival, else the store's own throttle answer;
//! 3. **forward**: the store's answer, through [`Upstream::send`]; the budget learns from it. A
//!    call the store throttled (509/429) goes back to the head of the queue; a GET or HEAD that
//!    failed is tried once more;
//! 4. **finish**: the headers every answer carries (request id, `x-cache`, the remaining
//!    budget), and the body that writes the access event when it is done. Every exit, errors
//!    included, goes through `finish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, EXPECT};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{self, Body, Replay, ResponseBody};
use crate::budget::{Ask, Budget, Class, Slot, Verdict};
use crate::call::{Call, REQUEST_ID, RequestIds};
use crate::clients::Clients;
use crate::config::{Dialect, Settings};
use crate::error::{CallError, Throttle, error_body};
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
    clients: Clients,
    ids: RequestIds,
    dialect: Dialect,
    remaining_header: HeaderName,
    max_body: u64,
    max_wait: Duration,
    scheme: &'static str,
    counters: Counters,
}

impl Proxy {
    /// Builds the proxy for validated settings, spending `budget`.
    pub fn new(settings: &Settings, budget: Arc<dyn Budget>) -> Result<Proxy, UpstreamError> {
        let dialect = settings.budget.dialect;
        Ok(Proxy {
            upstream: Upstream::new(settings)?,
            budget,
            clients: Clients::new(&settings.clients),
            ids: RequestIds::default(),
            dialect,
            remaining_header: HeaderName::from_static(match dialect {
                Dialect::Legacy => crate::budget::report::LEGACY_REMAINING,
                Dialect::Oauth => crate::budget::report::OAUTH_LEFT,
            }),
            max_body: settings.listen.max_body.as_u64(),
            max_wait: settings.budget.max_wait,
            scheme: if settings.listen.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            counters: Counters::default(),
        })
    }

    /// The budget the proxy spends.
    pub fn budget(&self) -> &Arc<dyn Budget> {
        &self.budget
    }

    /// The proxy's own totals.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Serves one call from arrival to the response the app gets.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let mut call = Call::start(&req, &self.ids, self.scheme);
        let outcome = self.serve(&mut call, req).await;
        self.finish(call, outcome)
    }

    async fn serve(
        &self,
        call: &mut Call,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, CallError> {
        let req = self.admit(call, req).await?;
        self.forward(call, req).await
    }

    /// Stage 1: is this a call that may go to the store at all?
    async fn admit(
        &self,
        call: &mut Call,
        req: Request<Incoming>,
    ) -> Result<Request<Body>, CallError> {
        check_target(&req)?;
        call.record.client = self
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

    /// Stages 2 and 3, repeated while the store throttles the call (it was not processed, so
    /// it goes again, writes included) or, once, when a GET or HEAD failed.
    async fn forward(
        &self,
        call: &mut Call,
        req: Request<Body>,
    ) -> Result<Response<Body>, CallError> {
        let class = Class::of(req.method());
        let deadline = call.started + self.max_wait;
        let (parts, body) = req.into_parts();
        let body = Replay::new(body);
        let mut resend = false;
        let mut retried = false;
        loop {
            let mut slot = self
                .wait(
                    call,
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
            let response = match self.upstream.send(call, req, Some(slot)).await {
                Ok(response) => response,
                Err(error) if can_retry && error.is_transient() => {
                    tracing::info!(request_id = %call.record.request_id, error = %error, "upstream.retry");
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
                tracing::info!(request_id = %call.record.request_id, status = response.status().as_u16(), "upstream.retry");
                retried = true;
                continue;
            }
            return Ok(response.map(BodyExt::boxed));
        }
    }

    /// Stage 2: a budget slot, waiting in arrival order until `budget.max_wait` after arrival.
    async fn wait(&self, call: &mut Call, ask: Ask) -> Result<Slot, CallError> {
        let started = Instant::now();
        let slot = self.budget.clone().acquire(ask).await;
        call.record.wait_ms += telemetry::ms(started.elapsed());
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
}

/// Rejects targets that cannot name a store resource: CONNECT, `*`, and dot-segments (which
/// could climb out of `upstream.url`'s path prefix).
fn check_target<B>(req: &Request<B>) -> Result<(), CallError> {
    if req.method() == Method::CONNECT {
        return Err(CallError::BadRequest(
            "CONNECT is not supported: this is a reverse proxy".into(),
        ));
    }
    let path = req.uri().path();
    if !path.starts_with('/') {
        return Err(CallError::BadRequest(format!(
            "request target {path:?} is not a path"
        )));
    }
    if path.split('/').any(is_dot_segment) {
        return Err(CallError::BadRequest(
            "dot-segments (. or ..) are not allowed in the path".into(),
        ));
    }
    Ok(())
}

fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused() {
        let ok = |p: &str| check_target(&Request::get(p).body(()).unwrap()).is_ok();
        assert!(ok("/api/v2/products/5"));
        assert!(ok("/api/v2/products.json"));
        assert!(ok("/a/...b/c"));
        assert!(!ok("/api/v2/../admin"));
        assert!(!ok("/api/v2/%2e%2E/admin"));
        assert!(!ok("/api/./v2"));
        assert!(!ok("/api/v2/.%2e"));
    }
}
