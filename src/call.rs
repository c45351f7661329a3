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
use crate::telemetry::{self, AccessRecord, TraceId};

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
    /// The app's `Accept`, for the shape of an error the proxy answers with.
    accept: Option<HeaderValue>,
    /// The `Host` the app called (or the request target's authority), for
    /// [`Call::app_origin`].
    host: Option<HeaderValue>,
    /// `http` or `https`: how the app called.
    scheme: &'static str,
    /// The store's own request id, when the call went upstream and the store sent one.
    pub upstream_id: Option<HeaderValue>,
    /// A `traceparent` made for the call when the app sent no valid one, to pass upstream
    /// (made into a header only if the call goes past the cache).
    pub new_traceparent: Option<[u8; 55]>,
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
    /// The error body shape this call gets from the proxy (worked out only when it errs).
    pub fn shape(&self) -> ErrorShape {
        let path = self.record.path.split('?').next().unwrap_or("/");
        ErrorShape::for_request(path, self.accept.as_ref())
    }

    /// Gives a request going past the cache the trace this call started, when the app sent
    /// none (a hit needs no header: nothing goes upstream).
    pub fn pass_trace<B>(&mut self, req: &mut Request<B>) {
        if let Some(traceparent) = self.new_traceparent.take()
            && let Ok(value) = HeaderValue::from_bytes(&traceparent)
        {
            req.headers_mut().insert(crate::headers::TRACEPARENT, value);
        }
    }

    /// Starts the context of a call: its id (the app's own if it sent a usable one), method,
    /// path, trace, class and deadline (`max_wait` after now).
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
        let (trace_id, new_traceparent) = match req
            .headers()
            .get(&crate::headers::TRACEPARENT)
            .and_then(trace_id_of)
            .and_then(TraceId::parse)
        {
            Some(id) => (id, None),
            None => {
                let traceparent = ids.traceparent();
                let mut id = [0u8; 32];
                id.copy_from_slice(&traceparent[3..35]);
                (TraceId::made(id), Some(traceparent))
            }
        };
        Call {
            record: AccessRecord {
                request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
                trace_id,
                method: req.method().to_string(),
                path: path.to_string(),
                status: CLIENT_CLOSED,
                cache: "BYPASS",
                ..AccessRecord::default()
            },
            accept: req.headers().get(http::header::ACCEPT).cloned(),
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
            new_traceparent,
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
    traces: AtomicU64,
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
            traces: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// A new trace's `traceparent` (its trace id unique to this process and call, the proxy
    /// as its parent).
    pub fn traceparent(&self) -> [u8; 55] {
        let n = self.traces.fetch_add(1, Ordering::Relaxed);
        // 00-{prefix}{n}-{span}-01
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
        hex16(&mut tp[3..19], self.prefix);
        hex16(&mut tp[19..35], n);
        hex16(&mut tp[36..52], (self.prefix.rotate_left(32) ^ n) | 1);
        tp
    }

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

/// The trace id of a valid W3C `traceparent` (`version-traceid-parentid-flags`, lower-case
/// hex, neither id all zeros, version `ff` invalid, version `00` exactly 55 bytes).
pub fn trace_id_of(value: &HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    let b = v.as_bytes();
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    let shaped = b.len() >= 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[..2])
        && &b[..2] != b"ff"
        && hex(&b[3..35])
        && hex(&b[36..52])
        && hex(&b[53..55])
        && nonzero(&b[3..35])
        && nonzero(&b[36..52])
        && (&b[..2] != b"00" || b.len() == 55)
        && (b.len() == 55 || b[55] == b'-');
    shaped.then(|| &v[3..35])
}

/// Writes `value` as 16 hex digits at the start of `out`, a byte at a time.
fn hex16(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in value.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
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
    fn traces_are_kept_or_started() {
        let ids = RequestIds::default();
        let app = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = Request::get("/api/v2/time")
            .header("traceparent", app)
            .body(())
            .unwrap();
        let call = Call::start(&req, &ids, "http", Duration::ZERO, None);
        assert_eq!(
            call.record.trace_id.as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            call.new_traceparent.is_none(),
            "the app's trace is kept as it is"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let req = Request::get("/")
                .header("traceparent", bad)
                .body(())
                .unwrap();
            let call = Call::start(&req, &ids, "http", Duration::ZERO, None);
            let made = call.new_traceparent.expect(bad);
            let made = std::str::from_utf8(&made).unwrap();
            assert_eq!(made.len(), 55, "{made}");
            assert_eq!(&made[3..35], call.record.trace_id.as_str());
            assert!(
                trace_id_of(&HeaderValue::from_str(made).unwrap()).is_some(),
                "{made}"
            );
        }
        // A later version may carry more fields.
        let later = HeaderValue::from_static(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        );
        assert_eq!(
            trace_id_of(&later),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_ne!(ids.traceparent()[3..35], ids.traceparent()[3..35]);
    }

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
