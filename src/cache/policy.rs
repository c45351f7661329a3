//! How long an answer may be cached: `cache.ttl`, the built-in rules, `[[cache.rules]]`, and
//! what the store's and the app's `Cache-Control` say. Pure.

use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA, SET_COOKIE, VARY};

use crate::config::CacheRule;

/// Freshness of counts (`*/count`) unless a rule says otherwise: they change with every write
/// anywhere in the collection.
pub const COUNT_TTL: Duration = Duration::from_secs(5);
/// Freshness of orders unless a rule says otherwise: they change as they are fulfilled.
pub const ORDERS_TTL: Duration = Duration::from_secs(5);

/// The TTL rules.
#[derive(Debug, Clone)]
pub struct Policy {
    ttl: Duration,
    stale: Duration,
    /// (prefix, ttl), longest prefix first.
    rules: Vec<(String, Duration)>,
}

impl Policy {
    /// Rules from `cache.ttl`, `cache.stale` and `[[cache.rules]]`.
    pub fn new(ttl: Duration, stale: Duration, rules: &[CacheRule]) -> Policy {
        let mut rules: Vec<(String, Duration)> =
            rules.iter().map(|r| (r.prefix.clone(), r.ttl)).collect();
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.0.len()));
        Policy { ttl, stale, rules }
    }

    /// How long an entry may be served stale after its TTL.
    pub fn stale(&self) -> Duration {
        self.stale
    }

    /// The longest any entry lives (the largest TTL of any rule, plus `stale`).
    pub fn longest(&self) -> Duration {
        let ttl = self
            .rules
            .iter()
            .map(|(_, ttl)| *ttl)
            .fold(self.ttl, Duration::max);
        ttl + self.stale
    }

    /// The TTL for a path: the longest matching `[[cache.rules]]` prefix, else the built-in
    /// rules (`/time` never; counts and orders short), else `cache.ttl`. Zero means never cached.
    pub fn ttl_for(&self, path: &str) -> Duration {
        if let Some((_, ttl)) = self
            .rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        {
            return *ttl;
        }
        let trimmed = path.trim_end_matches('/');
        let last = strip_format(&trimmed[trimmed.rfind('/').map_or(0, |i| i + 1)..]);
        if last == "time" {
            Duration::ZERO
        } else if last == "count" {
            self.ttl.min(COUNT_TTL)
        } else if has_orders_segment(path) {
            self.ttl.min(ORDERS_TTL)
        } else {
            self.ttl
        }
    }
}

/// True when a segment of `path` is `orders` (with or without a format suffix).
fn has_orders_segment(path: &str) -> bool {
    static ORDERS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"orders"));
    ORDERS.find_iter(path.as_bytes()).any(|at| {
        (at == 0 || path.as_bytes()[at - 1] == b'/')
            && path[at..].split('/').next().map(strip_format) == Some("orders")
    })
}

/// A path segment without its `.json`/`.xml` suffix.
fn strip_format(segment: &str) -> &str {
    segment
        .strip_suffix(".json")
        .or_else(|| segment.strip_suffix(".xml"))
        .unwrap_or(segment)
}

/// What the app's request says about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Use the cache.
    Normal,
    /// `Cache-Control: no-cache` (or `Pragma: no-cache`): get a fresh answer from the store
    /// (through the budget), and cache it.
    Refresh,
    /// `Cache-Control: no-store`: leave the cache out entirely.
    Bypass,
}

/// Reads the app's `Cache-Control` and `Pragma`.
pub fn directive(headers: &HeaderMap) -> Directive {
    let mut refresh = false;
    for value in headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',').map(|i| i.trim().to_ascii_lowercase()) {
            if item == "no-store" {
                return Directive::Bypass;
            }
            if item == "no-cache" || item == "max-age=0" {
                refresh = true;
            }
        }
    }
    let pragma = headers
        .get(PRAGMA)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
    if refresh || pragma {
        Directive::Refresh
    } else {
        Directive::Normal
    }
}

/// How long a store's answer may be fresh, given the path's TTL: `None` when the store says it
/// must not be cached (`no-store`, `private`, `no-cache`, `Vary: *`, a `Set-Cookie`), else the
/// TTL capped by its `max-age`/`s-maxage`.
pub fn response_ttl(headers: &HeaderMap, ttl: Duration) -> Option<Duration> {
    if headers.contains_key(SET_COOKIE) {
        return None;
    }
    let vary_star = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|i| i.trim() == "*"));
    if vary_star {
        return None;
    }
    let mut ttl = ttl;
    for value in headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',').map(|i| i.trim().to_ascii_lowercase()) {
            if item == "no-store"
                || item == "private"
                || item == "no-cache"
                || item.starts_with("private=")
            {
                return None;
            }
            let max_age = item
                .strip_prefix("s-maxage=")
                .or_else(|| item.strip_prefix("max-age="));
            if let Some(secs) = max_age.and_then(|s| s.trim_matches('"').parse::<u64>().ok()) {
                ttl = ttl.min(Duration::from_secs(secs));
            }
        }
    }
    (!ttl.is_zero()).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::test_map as headers;

    fn rule(prefix: &str, secs: u64) -> CacheRule {
        CacheRule {
            prefix: prefix.into(),
            ttl: Duration::from_secs(secs),
        }
    }

    #[test]
    fn built_in_and_configured_ttls() {
        let p = Policy::new(Duration::from_secs(60), Duration::from_secs(3600), &[]);
        assert_eq!(p.ttl_for("/api/v2/products/1"), Duration::from_secs(60));
        assert_eq!(p.ttl_for("/api/v2/time"), Duration::ZERO);
        assert_eq!(p.ttl_for("/api/v2/time.json"), Duration::ZERO);
        assert_eq!(p.ttl_for("/api/v2/products/count"), COUNT_TTL);
        assert_eq!(p.ttl_for("/api/v2/orders/5"), ORDERS_TTL);
        assert_eq!(p.ttl_for("/stores/x/v2/orders"), ORDERS_TTL);
        let p = Policy::new(
            Duration::from_secs(60),
            Duration::from_secs(3600),
            &[
                rule("/api/v2/orders", 30),
                rule("/api/v2/orders/7", 0),
                rule("/api/v2/brands", 0),
                rule("/api/v2/time", 10),
            ],
        );
        assert_eq!(p.ttl_for("/api/v2/orders/5"), Duration::from_secs(30));
        assert_eq!(
            p.ttl_for("/api/v2/orders/7"),
            Duration::ZERO,
            "the longest prefix wins"
        );
        assert_eq!(p.ttl_for("/api/v2/brands/1"), Duration::ZERO);
        assert_eq!(
            p.ttl_for("/api/v2/time"),
            Duration::from_secs(10),
            "a rule overrides the built-ins"
        );
    }

    #[test]
    fn app_directives() {
        assert_eq!(directive(&HeaderMap::new()), Directive::Normal);
        assert_eq!(
            directive(&headers(&[("cache-control", "no-cache")])),
            Directive::Refresh
        );
        assert_eq!(
            directive(&headers(&[("pragma", "no-cache")])),
            Directive::Refresh
        );
        assert_eq!(
            directive(&headers(&[("cache-control", "max-age=0, No-Store")])),
            Directive::Bypass
        );
    }

    #[test]
    fn store_cache_control_is_honoured() {
        let ttl = Duration::from_secs(60);
        assert_eq!(response_ttl(&HeaderMap::new(), ttl), Some(ttl));
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "no-store")]), ttl),
            None
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "private, max-age=600")]), ttl),
            None
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "public, max-age=10")]), ttl),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "max-age=600")]), ttl),
            Some(ttl),
            "max-age is an upper bound only"
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "max-age=0")]), ttl),
            None
        );
        assert_eq!(response_ttl(&headers(&[("vary", "Accept, *")]), ttl), None);
        assert_eq!(response_ttl(&headers(&[("set-cookie", "a=b")]), ttl), None);
    }
}
