//! Cache keys, families, TTL rules and cache directives for any request target and headers.
#![no_main]

use std::time::Duration;

use bcproxy::cache::key::{Key, accepts_gzip, family};
use bcproxy::cache::policy::{Policy, directive, response_ttl};
use bcproxy::config::CacheRule;
use http::{HeaderMap, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let target = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (name, value) in ["accept", "accept-encoding", "cache-control"].into_iter().zip(parts) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    let _ = accepts_gzip(&headers);
    let _ = directive(&headers);
    let _ = response_ttl(&headers, Duration::from_secs(60));
    let Ok(uri) = std::str::from_utf8(target).unwrap_or("").parse::<Uri>() else { return };
    let key = Key::of(&uri, &headers);
    let fam = family(key.path());
    assert!(fam.len() <= key.path().len() + 1, "a family is a prefix of the path: {fam:?}");
    let policy = Policy::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        &[CacheRule { prefix: "/api/v2/orders".into(), ttl: Duration::from_secs(5) }],
    );
    assert!(policy.ttl_for(key.path()) <= Duration::from_secs(60));
});
