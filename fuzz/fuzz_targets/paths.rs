//! Path checks and Location rewriting: no panic, and no accepted path holds a segment that
//! decodes to `.` or `..`.
#![no_main]

use bcproxy::admit::check_path;
use bcproxy::config::UpstreamUrl;
use bcproxy::upstream::rewrite_location;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if check_path(data).is_ok() {
        for segment in data.split('/') {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            assert!(decoded != "." && decoded != "..", "{data:?} was accepted");
        }
        assert!(!data.to_ascii_lowercase().contains("%2f"));
    }
    let url = UpstreamUrl::parse("https://api.bigcommerce.com/stores/abc").unwrap();
    if let Some(rewritten) = rewrite_location(data, &url, Some("http://127.0.0.1:8080")) {
        assert!(rewritten.starts_with("http://127.0.0.1:8080/") || rewritten.starts_with('/'), "{rewritten:?}");
    }
    let _ = UpstreamUrl::parse(data);
});
