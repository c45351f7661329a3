//! Stage 2, the cache: for a GET or HEAD the cache may answer, a fresh entry answers at once
//! (`304` when the app's validator matches); otherwise one fetch per key goes to the store
//! (identical calls meanwhile share it) and its answer is stored. With a stale entry the fetch
//! may not wait for budget: if the budget cannot admit it at once, or the store fails, the
//! stale entry answers. HEAD is answered from the GET's entry.

use std::sync::Arc;
use std::time::Duration;

use http::header::{
    ACCEPT, ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_LOCATION, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, PRAGMA, RANGE,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::Proxy;
use crate::body::{self, Body};
use crate::cache::flight::{self, Flight};
use crate::cache::{self, Directive, Entry, Fetched, Key, Landed, Lookup, Outcome};
use crate::call::{Call, Ctx, Trip};
use crate::error::CallError;

/// How the cache can take part in a call.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    key: Key,
    ttl: Duration,
    directive: Directive,
}

impl Proxy {
    /// Whether (and how) the cache can answer a request: a GET or HEAD without a body or a
    /// range, whose path may be cached, from an app that did not say `no-store`.
    pub(super) fn plan(&self, req: &Request<Body>) -> Option<Plan> {
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

    /// The cache stage: a fresh entry, else a shared fetch; a stale entry when the fetch
    /// cannot give a fresh answer at once.
    pub(super) async fn cached(
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
        let mut ctx = call.ctx.clone();
        if fallback.is_some() {
            // With a stale entry to give, the fetch may not wait for budget.
            ctx.deadline = Instant::now();
        }
        let (landed, outcome) = self.fetch_shared(ctx, &req, plan).await;
        let stale = |call: &mut Call, why: String| {
            fallback.as_ref().map(|entry| {
                let response = self.answer_entry(call, entry, Outcome::Stale, req.headers());
                call.record.error = Some(format!("served stale: {why}"));
                response
            })
        };
        match landed {
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
        ctx: Ctx,
        req: &Request<Body>,
        plan: Plan,
    ) -> (Landed, Outcome) {
        match self.cache.join(&plan.key) {
            Flight::Lead(landing) => {
                let arrival = flight::arrival(landing.subscribe());
                let proxy = self.clone();
                let parts = fetch_head(req, &plan.key);
                let fetch = async move {
                    let landed = proxy.fetch(parts, ctx, plan).await;
                    landing.land(landed);
                };
                tokio::spawn(fetch.instrument(tracing::Span::current()));
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
    async fn fetch(&self, parts: http::request::Parts, ctx: Ctx, plan: Plan) -> Landed {
        let family = cache::family(plan.key.path());
        let generation = self.cache.generation(&family);
        let mut trip = Trip::default();
        let response = self
            .forward(&mut trip, &ctx, Request::from_parts(parts, body::empty()))
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

    /// An answer from a fetch (`MISS` for the call that started it, `COALESCED` for the
    /// others).
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
}

fn abandoned() -> Landed {
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
