//! What a request must look like to be forwarded at all: a path that cannot leave
//! `upstream.url`'s prefix, unambiguous body framing (no request-smuggling shapes), and
//! headers within bounds. Pure, so it can be fuzzed.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Uri};

use crate::error::CallError;
use crate::headers::{MAX_HEADER_BYTES, MAX_HEADERS};

/// Checks a request head; the error says what is wrong.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), CallError> {
    if method == Method::CONNECT {
        return Err(CallError::BadRequest(
            "CONNECT is not supported: this is a reverse proxy".into(),
        ));
    }
    check_path(uri.path())?;
    check_framing(headers)?;
    // HTTP/1 connections refuse more at parse time; h2 header blocks are only bounded in bytes.
    if headers.len() > MAX_HEADERS {
        return Err(CallError::TooManyHeaders(MAX_HEADERS));
    }
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let size: usize = target
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > MAX_HEADER_BYTES {
        return Err(CallError::HeadersTooLarge(MAX_HEADER_BYTES));
    }
    Ok(())
}

/// A path is forwarded only if it cannot name anything outside the prefix it is appended to:
/// no `.` or `..` segments (plain or percent-encoded), no encoded slashes, no backslashes.
pub fn check_path(path: &str) -> Result<(), CallError> {
    if !path.starts_with('/') {
        return Err(CallError::BadRequest(format!(
            "request target {path:?} is not a path"
        )));
    }
    let bytes = path.as_bytes();
    let encoded = |at: usize, hex: &[u8; 2]| {
        bytes
            .get(at + 1..at + 3)
            .is_some_and(|h| h.eq_ignore_ascii_case(hex))
    };
    // Most paths hold none of the bytes that matter here.
    if memchr::memchr3(b'\\', b'%', b'.', bytes).is_none() {
        return Ok(());
    }
    // One pass over the path; segments are only looked at when a dot could make one.
    let mut dotted = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(slash_error()),
            b'%' if encoded(i, b"2f") || encoded(i, b"5c") => return Err(slash_error()),
            b'%' | b'.' => dotted = true,
            _ => {}
        }
    }
    if dotted && path.split('/').any(is_dot_segment) {
        return Err(CallError::BadRequest(
            "dot-segments (. or ..) are not allowed in the path".into(),
        ));
    }
    Ok(())
}

fn slash_error() -> CallError {
    CallError::BadRequest("encoded slashes and backslashes are not allowed in the path".into())
}

/// `.` or `..`, each dot plain or percent-encoded (`%2e`, any case).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = if rest[0] == b'.' {
            &rest[1..]
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1..3].eq_ignore_ascii_case(b"2e") {
            &rest[3..]
        } else {
            return false;
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// One way to know where the body ends: `Content-Length` once with one value, or
/// `Transfer-Encoding: chunked` alone. Anything else is how requests get smuggled.
pub fn check_framing(headers: &HeaderMap) -> Result<(), CallError> {
    let smuggling = |why: &str| {
        Err(CallError::BadRequest(format!(
            "ambiguous body framing: {why}"
        )))
    };
    let lengths = headers.get_all(CONTENT_LENGTH).iter().count();
    let encodings: Vec<_> = headers.get_all(TRANSFER_ENCODING).iter().collect();
    if lengths > 1 {
        return smuggling("more than one Content-Length");
    }
    if let Some(length) = headers.get(CONTENT_LENGTH)
        && (!length.as_bytes().iter().all(u8::is_ascii_digit) || length.is_empty())
    {
        return smuggling("Content-Length is not a single number");
    }
    if encodings.is_empty() {
        return Ok(());
    }
    if lengths > 0 {
        return smuggling("both Content-Length and Transfer-Encoding");
    }
    let chunked_only = encodings.len() == 1
        && encodings[0]
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !chunked_only {
        return smuggling("a Transfer-Encoding other than chunked");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn paths_that_could_leave_the_prefix_are_refused() {
        for ok in [
            "/api/v2/products/5",
            "/api/v2/products.json",
            "/a/...b/c",
            "/a/%2e%2ex",
            "/a/...",
            "/a/%2E%2e%2e",
            "/%2",
            "/a%",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/api/v2/../admin",
            "/api/v2/%2e%2E/admin",
            "/api/./v2",
            "/api/v2/.%2e",
            "/a%2fb",
            "/a%5C..",
            "/a\\b",
            "/a/%2E",
            "/a/.%2E/b",
            "/x%2F",
            "*",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn framing_must_be_unambiguous() {
        assert!(check_framing(&headers(&[("content-length", "12")])).is_ok());
        assert!(check_framing(&headers(&[("transfer-encoding", "Chunked")])).is_ok());
        assert!(check_framing(&headers(&[])).is_ok());
        assert!(
            check_framing(&headers(&[
                ("content-length", "2"),
                ("content-length", "2")
            ]))
            .is_err()
        );
        assert!(check_framing(&headers(&[("content-length", "2, 2")])).is_err());
        assert!(check_framing(&headers(&[("content-length", "+2")])).is_err());
        assert!(
            check_framing(&headers(&[
                ("content-length", "2"),
                ("transfer-encoding", "chunked")
            ]))
            .is_err()
        );
        assert!(check_framing(&headers(&[("transfer-encoding", "gzip, chunked")])).is_err());
        assert!(
            check_framing(&headers(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]))
            .is_err()
        );
    }
}
