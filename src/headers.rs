//! Header names bcproxy itself defines or handles, and the limits on request headers. The
//! store's own budget and error vocabulary lives in [`crate::dialect`].

use http::HeaderName;

/// The call's id, to the app and to the store.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context: the app's trace, kept and passed to the store (one is made when absent).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// How the cache took part in an answer (`HIT`, `MISS`, `STALE`, `BYPASS`, `COALESCED`, `SHARED`).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The store's own request id, returned to the app when its call went upstream.
pub const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
/// What the framing guard puts in the head that replaces a refused one (never forwarded).
pub const REFUSED: HeaderName = HeaderName::from_static("x-bcproxy-refused");

/// Most header fields a request may have; more get `431`.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request headers (HTTP/1 read buffer, h2 header list); more get `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A header map of `(name, value)` pairs (for tests).
#[cfg(test)]
pub(crate) fn test_map(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            let value = http::HeaderValue::from_str(v).expect("a valid test header value");
            (http::HeaderName::from_static(k), value)
        })
        .collect()
}
