//! The store-header parsers: any status and any header values must read without a panic.
#![no_main]

use bcproxy::dialect::{self as report, Report};
use bcproxy::config::Dialect;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    report::LEGACY_REMAINING,
    report::OAUTH_WINDOW,
    report::OAUTH_RESET,
    report::OAUTH_QUOTA,
    report::OAUTH_LEFT,
    report::OAUTH_RETRY,
];

fuzz_target!(|data: &[u8]| {
    let Some((&status, rest)) = data.split_first() else { return };
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
});
