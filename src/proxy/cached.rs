//! Stage 2, the cache: for a GET or HEAD the cache may answer, a fresh entry answers at once
//! (`304` when the app's validator matches); otherwise one fetch per key goes to the store
//! (identical calls meanwhile share it). The fetch streams the store's answer to the call that
//! started it as it arrives, copying it aside for an entry (up to a quarter of
//! `cache.max_size`; past that the copy is abandoned and the stream goes on); the calls that
//! joined it get the entry once the answer is whole, or fetch on their own when it was too
//! large. With a stale entry the fetch may not wait for budget: if the budget cannot admit it
//! at once, or the store fails, the stale entry answers. HEAD is answered from the GET's entry.

use std::sync::Arc;
use std::time::Duration;

use http::header::{
    ACCEPT, ACCEPT_ENCODING, AGE, CACHE_CONTROL, CONTENT_LOCATION, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, PRAGMA, RANGE,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::Proxy;
use crate::body::{self, Body, Gathered, Inlet, Relayed};
use crate::cache::flight::{self, Flight, Landing};
use crate::cache::{self, Directive, Entry, Fetched, Key, Landed, Lookup, Outcome};
use crate::call::{Call, Ctx, Trip};
use crate::cluster::shared::{Claim, Lease};
use crate::error::CallError;

/// The head of the store's answer, streamed to the call that started the fetch (with how the
/// cache took part: `MISS`, or `SHARED` when another process of the cluster had fetched it).
type Head = Result<(http::response::Parts, Body, Trip, Outcome), CallError>;

/// What a call gets from a shared fetch.
enum Shared {
    /// The store's answer as it streams (the call that started the fetch).
    Streamed(http::response::Parts, Body, Trip, Outcome),
    /// What the fetch landed.
    Landed(Landed),
}

/// What the cluster's shared cache had for a fetch.
enum Claimed {
    /// A fresh answer, as an entry of the local cache.
    Found(Arc<Entry>),
    /// This process fetches for the cluster.
    Lead(Lease),
    /// This process fetches for itself.
    Alone,
}

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

    /// A fresh local entry answers at once (`HIT`, or `304`); else what the local cache had,
    /// for [`Proxy::cached`]. Synchronous: the hit path waits on nothing.
    pub(super) fn hit(
        &self,
        call: &mut Call,
        req: &Request<Body>,
        plan: &Plan,
    ) -> Result<Response<Body>, Lookup> {
        match self.cache.lookup(&plan.key, Instant::now()) {
            Lookup::Fresh(entry) if plan.directive == Directive::Normal => {
                Ok(self.answer_entry(call, &entry, Outcome::Hit, req.headers()))
            }
            other => Err(other),
        }
    }

    /// The cache stage past a local hit (`found` is what the local cache had): a shared fetch;
    /// a stale entry when the fetch cannot give a fresh answer at once.
    pub(super) async fn cached(
        self: &Arc<Self>,
        call: &mut Call,
        req: Request<Body>,
        plan: Plan,
        found: Lookup,
    ) -> Result<Response<Body>, CallError> {
        let fallback = match found {
            Lookup::Fresh(entry) if plan.directive == Directive::Normal => {
                return Ok(self.answer_entry(call, &entry, Outcome::Hit, req.headers()));
            }
            Lookup::Fresh(entry) | Lookup::Stale(entry) => Some(entry),
            // A local miss asks the cluster's shared cache before spending budget.
            Lookup::Miss => match self.peek_shared(&plan).await {
                Some(entry)
                    if plan.directive == Directive::Normal
                        && Instant::now() < entry.fresh_until =>
                {
                    if let Some(cluster) = &self.cluster {
                        cluster.count_shared_hit();
                    }
                    return Ok(self.answer_entry(call, &entry, Outcome::Shared, req.headers()));
                }
                found => found,
            },
        };
        let mut ctx = call.ctx.clone();
        if fallback.is_some() {
            // With a stale entry to give, the fetch may not wait for budget.
            ctx.deadline = Instant::now();
        }
        let stale = |call: &mut Call, why: String| {
            fallback.as_ref().map(|entry| {
                let response = self.answer_entry(call, entry, Outcome::Stale, req.headers());
                call.record.error = Some(format!("served stale: {why}"));
                response
            })
        };
        // A call with validators waits for the whole answer, to know whether it already has it.
        let stream = !has_validators(req.headers());
        let key = plan.key.clone();
        let asked = Instant::now();
        let (shared, outcome) = self.fetch_shared(ctx, &req, plan, stream).await;
        let landed = match shared {
            Shared::Streamed(head, outlet, trip, outcome) => {
                call.absorb(&trip);
                if head.status.is_server_error()
                    && let Some(response) =
                        stale(call, format!("the store answered {}", head.status))
                {
                    return Ok(response);
                }
                call.record.cache = outcome.as_str();
                self.cache.counters.count(outcome);
                return Ok(Response::from_parts(head, outlet));
            }
            Shared::Landed(landed) => landed,
        };
        match landed {
            Landed::Fetched(fetched) => {
                call.absorb(&fetched.trip);
                if fetched.status.is_server_error()
                    && let Some(response) =
                        stale(call, format!("the store answered {}", fetched.status))
                {
                    return Ok(response);
                }
                Ok(self.answer_fetched(call, &fetched, outcome, req.headers()))
            }
            Landed::Failed(error) => {
                if matches!(error, CallError::Throttled(_)) {
                    // Refused by the budget: the fetch never reached the store, so all this
                    // time was spent waiting for it.
                    call.record.wait_ms += crate::telemetry::ms(asked.elapsed());
                }
                stale(call, error.to_string()).ok_or(error)
            }
            Landed::TooLarge => {
                // Too large to share: this call fetches on its own, streaming.
                self.cache.counters.count(Outcome::Miss);
                call.record.cache = Outcome::Miss.as_str();
                let mut trip = Trip::default();
                let head = fetch_head(&req, &key);
                let result = self
                    .forward(
                        &mut trip,
                        &call.ctx,
                        Request::from_parts(head, body::empty()),
                    )
                    .await;
                call.absorb(&trip);
                let stall = self.receive.gap;
                let (head, answer) = result?.into_parts();
                let answer = body::for_app(answer, stall)
                    .await
                    .map_err(super::broke_off)?;
                Ok(Response::from_parts(head, answer))
            }
        }
    }

    /// The store's answer to a cacheable GET, fetched once for every identical call in
    /// flight: the first caller starts a fetch that runs on its own (an app going away does
    /// not cancel it for the others) and, with `stream`, gets the answer as it arrives; the
    /// others wait for what it lands.
    async fn fetch_shared(
        self: &Arc<Self>,
        ctx: Ctx,
        req: &Request<Body>,
        plan: Plan,
        stream: bool,
    ) -> (Shared, Outcome) {
        match self.cache.join(&plan.key) {
            Flight::Lead(landing) => {
                let arrival = (!stream).then(|| flight::arrival(landing.subscribe()));
                let (head_tx, head_rx) = oneshot::channel();
                let head_tx = stream.then_some(head_tx);
                let proxy = self.clone();
                let parts = fetch_head(req, &plan.key);
                let fetch = async move { proxy.fetch(parts, ctx, plan, landing, head_tx).await };
                tokio::spawn(fetch.instrument(tracing::Span::current()));
                let shared = match arrival {
                    Some(arrival) => Shared::Landed(arrival.await.unwrap_or_else(abandoned)),
                    None => match head_rx.await {
                        Ok(Ok((head, outlet, trip, outcome))) => {
                            Shared::Streamed(head, outlet, trip, outcome)
                        }
                        Ok(Err(error)) => Shared::Landed(Landed::Failed(error)),
                        Err(_) => Shared::Landed(abandoned()),
                    },
                };
                (shared, Outcome::Miss)
            }
            Flight::Follow(rx) => (
                Shared::Landed(flight::arrival(rx).await.unwrap_or_else(abandoned)),
                Outcome::Coalesced,
            ),
        }
    }

    /// One fetch for the cache: from the cluster's shared cache when another process has
    /// the answer or is fetching it, else through the budget to the store; the answer streams
    /// to the call that started it (`head`) while a copy is kept for an entry, stored when the
    /// store allows and no write to its family happened meanwhile (and put in the shared cache
    /// when this process fetched for the cluster); what it lands goes to the calls that joined.
    async fn fetch(
        &self,
        parts: http::request::Parts,
        ctx: Ctx,
        plan: Plan,
        landing: Landing<Landed>,
        head: Option<oneshot::Sender<Head>>,
    ) {
        let mark = self.cache.mark();
        let lease = match self.claim_shared(&plan, &ctx, mark).await {
            Claimed::Found(entry) => {
                if let Some(head) = head {
                    let parts = entry_head(&entry);
                    let body = body::full(entry.body.clone());
                    let _ = head.send(Ok((parts, body, Trip::default(), Outcome::Shared)));
                }
                landing.land(Landed::Fetched(Arc::new(Fetched {
                    status: entry.status,
                    headers: entry.headers.clone(),
                    body: entry.body.clone(),
                    entry: Some(entry),
                    trip: Trip::default(),
                    shared: true,
                })));
                return;
            }
            Claimed::Lead(lease) => Some(lease),
            Claimed::Alone => None,
        };
        let landed = self.fetch_store(parts, &ctx, &plan, mark, head).await;
        if let Landed::Failed(error) = &landed {
            tracing::warn!(error = %error, "cache.fetch_failed");
        }
        if let (Some(lease), Some(cluster)) = (lease, self.cluster.clone()) {
            // The app's stream is not held for it.
            let max_bytes = self.shared_max;
            let landed = landed.clone();
            tokio::spawn(async move {
                match &landed {
                    Landed::Fetched(f) => match &f.entry {
                        Some(entry) => {
                            cluster.put(lease, entry, max_bytes).await;
                        }
                        None => cluster.release_unshared(lease).await,
                    },
                    Landed::TooLarge => cluster.release_unshared(lease).await,
                    Landed::Failed(_) => cluster.release(lease, Duration::ZERO).await,
                }
            });
        }
        landing.land(landed);
    }

    /// The store's side of a fetch: its answer streams to `head` as it arrives; what it
    /// lands for the calls that joined.
    async fn fetch_store(
        &self,
        parts: http::request::Parts,
        ctx: &Ctx,
        plan: &Plan,
        mark: u64,
        head: Option<oneshot::Sender<Head>>,
    ) -> Landed {
        let mut trip = Trip::default();
        let request = Request::from_parts(parts, body::empty());
        let response = match self.forward(&mut trip, ctx, request).await {
            Ok(response) => response,
            Err(error) => {
                if let Some(head) = head {
                    let _ = head.send(Err(error.clone()));
                }
                return Landed::Failed(error);
            }
        };
        let (mut parts, body) = response.into_parts();
        let cacheable = parts.status == StatusCode::OK
            && cache::policy::response_ttl(&parts.headers, plan.ttl).is_some();
        if cacheable && !parts.headers.contains_key(ETAG) {
            parts.headers.insert(ETAG, cache::Cache::fetch_tag());
        }
        // Most answers are small and come whole with their head: no relay for them.
        let limit = body::GATHER_LIMIT.min(self.cache.max_entry());
        let body = match body::gather(body, limit, body::GATHER_PATIENCE).await {
            Gathered::Whole(bytes) => {
                if let Some(head) = head {
                    let streamed = (
                        parts.clone(),
                        body::full(bytes.clone()),
                        trip.clone(),
                        Outcome::Miss,
                    );
                    let _ = head.send(Ok(streamed));
                }
                let entry = self
                    .store(plan, &parts.headers, parts.status, &bytes, mark)
                    .await;
                return Landed::Fetched(Arc::new(Fetched {
                    status: parts.status,
                    headers: parts.headers,
                    body: bytes,
                    entry,
                    trip,
                    shared: false,
                }));
            }
            Gathered::Streaming(body) => body,
            Gathered::Broken(why) => {
                let error = super::broke_off(why);
                if let Some(head) = head {
                    let _ = head.send(Err(error.clone()));
                }
                return Landed::Failed(error);
            }
        };
        let size = http_body::Body::size_hint(&body);
        let (inlet, outlet) = body::relay_pair(size, self.receive.gap);
        let delivered = head.is_some_and(|head| {
            head.send(Ok((
                parts.clone(),
                outlet.boxed(),
                trip.clone(),
                Outcome::Miss,
            )))
            .is_ok()
        });
        let inlet = if delivered { inlet } else { Inlet::closed() };
        let mut tap = self.cache.tap();
        match body::pump(body, inlet, Some(&mut tap)).await {
            Relayed::Broken(why) => Landed::Failed(super::broke_off(why)),
            Relayed::Unread => Landed::TooLarge,
            Relayed::Complete => match tap.take() {
                None => Landed::TooLarge,
                Some(bytes) => {
                    let entry = self
                        .store(plan, &parts.headers, parts.status, &bytes, mark)
                        .await;
                    Landed::Fetched(Arc::new(Fetched {
                        status: parts.status,
                        headers: parts.headers,
                        body: bytes,
                        entry,
                        trip,
                        shared: false,
                    }))
                }
            },
        }
    }

    /// A usable entry (fresh or stale) from the cluster's shared cache, stored locally too;
    /// `None` outside a cluster, while Redis is away, or when it has none.
    async fn peek_shared(&self, plan: &Plan) -> Option<Arc<Entry>> {
        let cluster = self.cluster.as_ref().filter(|c| c.shares_cache())?;
        if plan.directive != Directive::Normal {
            return None;
        }
        let mark = self.cache.mark();
        let found = cluster.peek(&plan.key).await?;
        let entry = self
            .cache
            .shared_entry(&plan.key, &found, mark, Instant::now())?;
        // Refused when a change came after the answer was read: then it is not served.
        self.cache
            .insert(plan.key.clone(), entry.clone())
            .await
            .then_some(entry)
    }

    /// Claims the key in the cluster's shared cache: a fresh answer another process put
    /// there, or the lease to fetch it for everyone; while another process holds the lease,
    /// waits for its answer (within the call's deadline), and takes over if the lease ends
    /// without one.
    async fn claim_shared(&self, plan: &Plan, ctx: &Ctx, mark: u64) -> Claimed {
        let Some(cluster) = self.cluster.as_ref() else {
            return Claimed::Alone;
        };
        if plan.directive != Directive::Normal {
            return Claimed::Alone;
        }
        let mut poll = Duration::from_millis(5);
        loop {
            if !cluster.shares_cache() {
                return Claimed::Alone;
            }
            match cluster.claim(&plan.key, self.lease_for).await {
                Claim::Found(found) => {
                    let entry = self
                        .cache
                        .shared_entry(&plan.key, &found, mark, Instant::now());
                    return match entry {
                        Some(entry) if self.cache.insert(plan.key.clone(), entry.clone()).await => {
                            cluster.count_shared_hit();
                            Claimed::Found(entry)
                        }
                        _ => Claimed::Alone,
                    };
                }
                Claim::Lead(lease) => return Claimed::Lead(lease),
                Claim::Alone => return Claimed::Alone,
                Claim::Wait(left) => {
                    let now = Instant::now();
                    if now >= ctx.deadline {
                        return Claimed::Alone;
                    }
                    let nap = poll.min(left.max(Duration::from_millis(1)));
                    tokio::time::sleep_until((now + nap).min(ctx.deadline)).await;
                    poll = (poll * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Stores a whole answer when it may be cached; the entry made of it.
    async fn store(
        &self,
        plan: &Plan,
        headers: &HeaderMap,
        status: StatusCode,
        body: &bytes::Bytes,
        mark: u64,
    ) -> Option<Arc<Entry>> {
        if status != StatusCode::OK {
            return None;
        }
        let ttl = cache::policy::response_ttl(headers, plan.ttl)?;
        let entry = self.cache.entry(
            &plan.key,
            headers.clone(),
            body.clone(),
            ttl,
            mark,
            Instant::now(),
        )?;
        self.cache
            .insert(plan.key.clone(), entry.clone())
            .await
            .then_some(entry)
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
        let outcome = if fetched.shared && outcome == Outcome::Miss {
            Outcome::Shared
        } else {
            outcome
        };
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
    Landed::Failed(CallError::BadGateway(
        "the shared call to the store was abandoned".into(),
    ))
}

/// True when the app sent a validator (`If-None-Match`, `If-Modified-Since`).
fn has_validators(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE)
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

/// The head of an answer made of an entry (for the call that started a fetch).
fn entry_head(entry: &Entry) -> http::response::Parts {
    let mut parts = Response::new(()).into_parts().0;
    parts.status = entry.status;
    parts.headers = entry.headers.clone();
    parts
        .headers
        .insert(AGE, HeaderValue::from(entry.age(Instant::now())));
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
