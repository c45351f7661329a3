//! Reading what the store says about its budget from a response: the remaining count, the
//! oauth window and reset, and whether (and for how long) it throttled the call. Pure.

use std::time::Duration;

use http::HeaderMap;

use super::{
    Dialect, LEGACY_REMAINING, OAUTH_LEFT, OAUTH_QUOTA, OAUTH_RESET, OAUTH_RETRY, OAUTH_WINDOW,
};

/// What one response says about the store's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests left, as the store counts them (all its clients included).
    pub left: Option<u64>,
    /// OAuth: requests per window.
    pub quota: Option<u64>,
    /// OAuth: the window.
    pub window: Option<Duration>,
    /// OAuth: time until the window resets.
    pub reset: Option<Duration>,
    /// OAuth: `X-Retry-After`.
    pub retry_after: Option<Duration>,
    /// The store refused the call for budget (509, or 429).
    pub throttled: bool,
}

impl Report {
    /// Reads a response's status and headers (names are matched case-insensitively, as
    /// `HeaderMap` stores them lower-case).
    pub fn read(dialect: Dialect, status: u16, headers: &HeaderMap) -> Report {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match dialect {
            Dialect::Legacy => Report {
                left: number(LEGACY_REMAINING),
                throttled: dialect.is_throttle(status),
                ..Report::default()
            },
            Dialect::Oauth => Report {
                left: number(OAUTH_LEFT),
                quota: number(OAUTH_QUOTA).filter(|q| *q > 0),
                window: number(OAUTH_WINDOW)
                    .filter(|w| *w > 0)
                    .map(Duration::from_millis),
                reset: number(OAUTH_RESET).map(Duration::from_millis),
                retry_after: headers
                    .get(OAUTH_RETRY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
                throttled: dialect.is_throttle(status),
            },
        }
    }

    /// After a 429: how long the store asked to wait (the longer of the reset and
    /// `X-Retry-After`); `None` when it said neither (it is shedding load).
    pub fn stated_wait(&self) -> Option<Duration> {
        match (self.reset, self.retry_after) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default().max(b.unwrap_or_default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::test_map as headers;

    #[test]
    fn legacy_remaining_and_509() {
        let r = Report::read(
            Dialect::Legacy,
            200,
            &headers(&[(LEGACY_REMAINING, "19876")]),
        );
        assert_eq!(r.left, Some(19876));
        assert!(!r.throttled);
        let r = Report::read(Dialect::Legacy, 509, &headers(&[(LEGACY_REMAINING, "0")]));
        assert!(r.throttled);
        assert_eq!(
            Report::read(
                Dialect::Legacy,
                200,
                &headers(&[(LEGACY_REMAINING, "lots")])
            )
            .left,
            None
        );
    }

    #[test]
    fn oauth_headers_and_429_waits() {
        let h = headers(&[
            (OAUTH_WINDOW, "30000"),
            (OAUTH_RESET, "1500"),
            (OAUTH_QUOTA, "150"),
            (OAUTH_LEFT, "0"),
            (OAUTH_RETRY, "3"),
        ]);
        let r = Report::read(Dialect::Oauth, 429, &h);
        assert_eq!(r.left, Some(0));
        assert_eq!(r.quota, Some(150));
        assert_eq!(r.window, Some(Duration::from_secs(30)));
        assert!(r.throttled);
        assert_eq!(r.stated_wait(), Some(Duration::from_secs(3)));
        let bare = Report::read(Dialect::Oauth, 429, &HeaderMap::new());
        assert_eq!(bare.stated_wait(), None);
        let reset_only = Report::read(Dialect::Oauth, 429, &headers(&[(OAUTH_RESET, "2500")]));
        assert_eq!(reset_only.stated_wait(), Some(Duration::from_millis(2500)));
    }
}
