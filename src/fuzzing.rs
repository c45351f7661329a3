//! The properties the fuzz targets (`fuzz/`) check, one function per target, here so that the
//! committed corpora and every crash ever found replay as ordinary tests
//! (`tests/fuzz_corpus.rs`), without a sanitizer build. Each function panics when its property
//! fails; any input is fine otherwise.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::admit::check_path;
use crate::cache::key::{Key, accepts_gzip};
use crate::cache::policy::{Policy, directive, response_ttl};
use crate::cache::resource::named;
use crate::config::{CacheRule, Settings, UpstreamUrl};
use crate::dialect::{self, Dialect, Report};
use crate::framing::scan;
use crate::upstream::rewrite_location;

/// A property a fuzz target checks: panics when it fails for `data`.
pub type Property = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay.
pub const TARGETS: [(&str, Property); 5] = [
    ("cache_key", cache_key),
    ("config", config),
    ("framing", framing),
    ("paths", paths),
    ("store_headers", store_headers),
];

/// Cache keys, resource names, TTL rules and cache directives for any request target and
/// headers: no panic, a resource's collection is a segment of its path, no TTL beyond the
/// configured one.
pub fn cache_key(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let target = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (name, value) in ["accept", "accept-encoding", "cache-control"]
        .into_iter()
        .zip(parts)
    {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    let _ = accepts_gzip(&headers);
    let _ = directive(&headers);
    let _ = response_ttl(&headers, Duration::from_secs(60));
    let Ok(uri) = std::str::from_utf8(target).unwrap_or("").parse::<Uri>() else {
        return;
    };
    let key = Key::of(&uri, &headers);
    if let Some(named) = named(key.path()) {
        let collection = named.collection().trim_start_matches('/');
        assert!(
            key.path().split('/').any(|s| s.starts_with(collection)),
            "the collection is a segment of the path: {named:?}"
        );
    }
    let policy = Policy::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        &[CacheRule {
            prefix: "/api/v2/orders".into(),
            ttl: Duration::from_secs(5),
        }],
    );
    assert!(policy.ttl_for(key.path()) <= Duration::from_secs(60));
}

/// Config parsing: any text is either settings or one error naming a key; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Settings::from_toml(text, Default::default()) {
        assert!(!e.key.is_empty() || !e.message.is_empty());
    }
}

/// The request-smuggling guard: any byte stream, split anywhere, is either passed through
/// unchanged or cut at a refusal; it never panics.
pub fn framing(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(stream.len());
    let whole = scan(&[stream]);
    let split_up = scan(&[&stream[..at], &stream[at..]]);
    assert_eq!(whole, split_up, "the guard depends on how the bytes arrive");
    if !whole.windows(17).any(|w| w == b"x-bcproxy-refused") {
        assert!(
            stream.starts_with(&whole),
            "bytes were changed without a refusal"
        );
    }
}

/// Path checks and `Location` rewriting: no panic, and no accepted path holds a segment that
/// decodes to `.` or `..`.
pub fn paths(data: &[u8]) {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    if check_path(data).is_ok() {
        for segment in data.split('/') {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            assert!(decoded != "." && decoded != "..", "{data:?} was accepted");
        }
        assert!(!data.to_ascii_lowercase().contains("%2f"));
    }
    if let Ok(url) = UpstreamUrl::parse("https://api.bigcommerce.com/stores/abc")
        && let Some(rewritten) = rewrite_location(data, &url, Some("http://127.0.0.1:8080"))
    {
        assert!(
            rewritten.starts_with("http://127.0.0.1:8080/") || rewritten.starts_with('/'),
            "{rewritten:?}"
        );
    }
    let _ = UpstreamUrl::parse(data);
}

/// The store-header parsers: any status and any header values read without a panic.
pub fn store_headers(data: &[u8]) {
    const NAMES: [&str; 6] = [
        dialect::LEGACY_REMAINING,
        dialect::OAUTH_WINDOW,
        dialect::OAUTH_RESET,
        dialect::OAUTH_QUOTA,
        dialect::OAUTH_LEFT,
        dialect::OAUTH_RETRY,
    ];
    let Some((&status, rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(rest.split(|b| *b == 0)) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    for dialect in [Dialect::Legacy, Dialect::Oauth] {
        let r = Report::read(dialect, 400 + u16::from(status), &headers);
        let _ = r.stated_wait();
    }
}
