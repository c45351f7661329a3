//! One call's context: made when the request arrives, filled in by each stage, and written as
//! the access event exactly once, when it is dropped (after the last body byte is sent, or when
//! the app goes away first).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request};
use tokio::time::Instant;

use crate::budget::{Ask, Class};
use crate::dialect::ErrorShape;
use crate::headers::REQUEST_ID;
use crate::metrics::Metrics;
use crate::telemetry::{self, AccessRecord};

/// Status logged for a call whose app went away before it was answered (as nginx does).
pub const CLIENT_CLOSED: u16 = 499;
/// Longest app-supplied request id that is kept.
const MAX_ID_LEN: usize = 200;

/// The context of one call, passed `&mut` through the stages of [`crate::proxy`].
#[derive(Debug)]
pub struct Call {
    /// Who is calling, and by when the call must be sent: what every stage needs.
    pub ctx: Ctx,
    /// The fields of the access event.
    pub record: AccessRecord,
    /// The error body shape this call gets from the proxy.
    pub shape: ErrorShape,
    /// The `Host` the app called (or the request target's authority), for
    /// [`Call::app_origin`].
    host: Option<HeaderValue>,
    /// `http` or `https`: how the app called.
    scheme: &'static str,
    /// The store's own request id, when the call went upstream and the store sent one.
    pub upstream_id: Option<HeaderValue>,
    /// The request body's share of `listen.body_memory`, held while the call lasts.
    pub body_memory: Option<tokio::sync::OwnedSemaphorePermit>,
    metrics: Option<Arc<Metrics>>,
}

/// What the stages of a call, and the budget, know of it: cheap to clone into a fetch that
/// serves several calls.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The request id as a header value (the app's own, or a new one).
    pub request_id: HeaderValue,
    /// The `[[clients]]` name the app authenticated as.
    pub client: Option<Arc<str>>,
    /// Read or write.
    pub class: Class,
    /// When the request arrived.
    pub arrived: Instant,
    /// When it must have been sent by: `budget.max_wait` after the request was whole.
    pub deadline: Instant,
}

impl Ctx {
    /// The request id as text (ids are visible ASCII).
    pub fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// A request for budget made for this call.
    pub fn ask(&self, resend: bool) -> Ask {
        Ask {
            class: self.class,
            deadline: self.deadline,
            resend,
            client: self.client.clone(),
        }
    }
}

impl Call {
    /// Starts the context of a call: its id (the app's own if it sent a usable one), method,
    /// path, class, error shape and deadline (`max_wait` after now).
    pub fn start<B>(
        req: &Request<B>,
        ids: &RequestIds,
        scheme: &'static str,
        max_wait: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Call {
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| usable_id(v))
            .cloned()
            .unwrap_or_else(|| ids.next());
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let arrived = Instant::now();
        Call {
            record: AccessRecord {
                request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
                method: req.method().to_string(),
                path: path.to_string(),
                status: CLIENT_CLOSED,
                cache: "BYPASS",
                ..AccessRecord::default()
            },
            shape: ErrorShape::for_request(
                req.uri().path(),
                req.headers().get(http::header::ACCEPT),
            ),
            ctx: Ctx {
                request_id,
                client: None,
                class: Class::of(req.method()),
                arrived,
                deadline: arrived + max_wait,
            },
            host,
            scheme,
            upstream_id: None,
            body_memory: None,
            metrics,
        }
    }

    /// `scheme://host[:port]` the app called, for rewriting the store's `Location` (made only
    /// when an answer has one); `None` when the app's `Host` is not a usable authority.
    pub fn app_origin(&self) -> Option<String> {
        let host = self.host.as_ref()?.to_str().ok()?;
        host.parse::<http::uri::Authority>().ok()?;
        Some(format!("{}://{host}", self.scheme))
    }

    /// Records the `[[clients]]` name the app authenticated as.
    pub fn set_client(&mut self, client: Option<Arc<str>>) {
        self.record.client.clone_from(&client);
        self.ctx.client = client;
    }

    /// Takes the upstream side of the call into its access record.
    pub fn absorb(&mut self, trip: &Trip) {
        self.record.upstream_status = trip.upstream_status;
        self.record.upstream_ms = trip.upstream_ms;
        self.record.upstream_request_id = trip
            .upstream_id
            .as_ref()
            .map(|id| String::from_utf8_lossy(id.as_bytes()).into_owned());
        self.upstream_id.clone_from(&trip.upstream_id);
        self.record.wait_ms = trip.wait_ms;
    }
}

/// The upstream side of a call: what the store said and how long it took. Kept apart from the
/// call because a coalesced fetch serves several calls.
#[derive(Debug, Clone, Default)]
pub struct Trip {
    /// The store's status.
    pub upstream_status: Option<u16>,
    /// Time from sending to the store's response headers.
    pub upstream_ms: Option<f64>,
    /// The store's own request id (its `X-Request-ID`).
    pub upstream_id: Option<HeaderValue>,
    /// Time queued for budget.
    pub wait_ms: f64,
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.record.status == CLIENT_CLOSED && self.record.error.is_none() {
            self.record.error = Some("the app went away before it was answered".into());
        }
        self.record.total_ms = telemetry::ms(self.ctx.arrived.elapsed());
        telemetry::access(&self.record);
        if let Some(metrics) = &self.metrics {
            metrics.record(&self.record);
        }
    }
}

fn usable_id(v: &HeaderValue) -> bool {
    !v.is_empty() && v.len() <= MAX_ID_LEN && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// Makes request ids unique across calls and restarts: a random per-process prefix and a
/// counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        RequestIds {
            prefix: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// A new id, as a header value.
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix:016x}-{n:08x}`, without the formatting machinery (one per call).
        let mut id = [0u8; 33];
        let mut len = hex(&mut id, self.prefix, 16);
        id[len] = b'-';
        len += 1;
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(8);
        len += hex(&mut id[len..], n, digits);
        HeaderValue::from_bytes(&id[..len]).unwrap_or_else(|_| HeaderValue::from_static("bcproxy"))
    }
}

/// Writes the last `digits` hex digits of `value` at the start of `out`; how many.
fn hex(out: &mut [u8], value: u64, digits: u32) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, shift) in (0..digits).rev().enumerate() {
        out[i] = HEX[((value >> (shift * 4)) & 0xf) as usize];
    }
    digits as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_apps_keep_theirs() {
        let ids = RequestIds::default();
        assert_ne!(ids.next(), ids.next());
        let id = ids.next();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 25, "{id}");
        assert_eq!(&id[16..], "-00000002");
        assert_eq!(&id[..16], &format!("{:016x}", ids.prefix));
        let req = Request::get("/api/v2/time")
            .header(REQUEST_ID, "app-42")
            .body(())
            .unwrap();
        let call = Call::start(&req, &ids, "http", Duration::ZERO, None);
        assert_eq!(call.ctx.request_id, "app-42");
        let bad = Request::get("/")
            .header(REQUEST_ID, "has space")
            .body(())
            .unwrap();
        assert_ne!(
            Call::start(&bad, &ids, "http", Duration::ZERO, None)
                .ctx
                .request_id,
            "has space"
        );
    }

    #[test]
    fn app_origin_comes_from_host() {
        let ids = RequestIds::default();
        let req = Request::get("/x")
            .header("host", "127.0.0.1:8080")
            .body(())
            .unwrap();
        assert_eq!(
            Call::start(&req, &ids, "http", Duration::ZERO, None)
                .app_origin()
                .as_deref(),
            Some("http://127.0.0.1:8080")
        );
        let bad = Request::get("/x").header("host", "a b").body(()).unwrap();
        assert_eq!(
            Call::start(&bad, &ids, "http", Duration::ZERO, None).app_origin(),
            None
        );
    }
}
