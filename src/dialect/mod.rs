//! One home for what the store's API dialects say and expect: the budget headers, the
//! throttle status and the throttle answer's headers, how to read a store report and how long
//! it holds, what to do after a throttle, the credential headers, and the error body shapes.
//!
//! - `report`: what one response says about the budget;
//! - `shape`: the store's error bodies and content negotiation.
//!
//! The simulator does not use this module: it is the referee, with its own copy of the rules.

pub mod report;
pub mod shape;

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

pub use report::Report;
pub use shape::{ErrorShape, wants_xml};

/// Legacy: requests left in the rolling hour.
pub const LEGACY_REMAINING: &str = "x-bc-apilimit-remaining";
/// OAuth: the window's length.
pub const OAUTH_WINDOW: &str = "x-rate-limit-time-window-ms";
/// OAuth: time until the window resets.
pub const OAUTH_RESET: &str = "x-rate-limit-time-reset-ms";
/// OAuth: requests per window.
pub const OAUTH_QUOTA: &str = "x-rate-limit-requests-quota";
/// OAuth: requests left in the window.
pub const OAUTH_LEFT: &str = "x-rate-limit-requests-left";
/// OAuth: seconds to wait after a 429.
pub const OAUTH_RETRY: &str = "x-retry-after";

/// Headers that describe the budget at the moment of one answer, not the answer itself (a
/// cached answer does not keep them; every answer gets the proxy's view afresh).
pub const BUDGET_HEADERS: [&str; 6] = [
    LEGACY_REMAINING,
    OAUTH_WINDOW,
    OAUTH_RESET,
    OAUTH_QUOTA,
    OAUTH_LEFT,
    OAUTH_RETRY,
];

/// OAuth: the access token (an app sends its own, the proxy replaces it with the store's).
pub const X_AUTH_TOKEN: &str = "x-auth-token";
/// OAuth: the app's client id.
pub const X_AUTH_CLIENT: &str = "x-auth-client";

/// The legacy throttle status, `509 Bandwidth Limit Exceeded`.
pub const BANDWIDTH_LIMIT_EXCEEDED: u16 = 509;

/// The store's API dialect: how it states and enforces its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `X-BC-ApiLimit-Remaining`, 509 past the hourly limit (a rolling window).
    #[default]
    Legacy,
    /// `X-Rate-Limit-*`, 429 past the window's quota (a fixed window the store states).
    Oauth,
}

/// What the app is told when the proxy cannot serve its call in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// How long until a retry may succeed.
    pub retry_after: Duration,
    /// The window the quota applies to (oauth headers).
    pub window: Duration,
    /// Requests per window (oauth headers).
    pub quota: u64,
}

impl Throttle {
    /// Whole seconds, at least 1: a 0 or missing value sends some clients into a tight loop.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

/// How sends resume after the store throttled a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterThrottle {
    /// The store said nothing (legacy 509): wait until its window has moved on, at least one
    /// step, then let one call probe before the rest follow.
    UntilWindowMoves,
    /// The store stated a wait (429 with a reset or `X-Retry-After`): wait that long.
    Wait(Duration),
    /// A 429 that stated nothing: the platform is shedding load; back off harder each time and
    /// let one call probe.
    BackOff,
}

impl Dialect {
    /// The name used in the config file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Legacy => "legacy",
            Dialect::Oauth => "oauth",
        }
    }

    /// The status the store throttles with (and the proxy's own throttle answer uses).
    pub fn throttle_status(self) -> StatusCode {
        match self {
            Dialect::Legacy => StatusCode::from_u16(BANDWIDTH_LIMIT_EXCEEDED)
                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            Dialect::Oauth => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// True when `status` is the store refusing a call for budget (it was not processed).
    pub fn is_throttle(self, status: u16) -> bool {
        status == self.throttle_status().as_u16()
    }

    /// The header carrying what is left of the budget, which every answer gets.
    pub fn remaining_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Dialect::Legacy => LEGACY_REMAINING,
            Dialect::Oauth => OAUTH_LEFT,
        })
    }

    /// The headers of the proxy's own throttle answer: `Retry-After` and the dialect's budget
    /// headers saying nothing is left.
    pub fn throttle_headers(self, t: &Throttle, headers: &mut HeaderMap) {
        let secs = t.retry_after_secs();
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        match self {
            Dialect::Legacy => {
                headers.insert(LEGACY_REMAINING, HeaderValue::from(0));
            }
            Dialect::Oauth => {
                headers.insert(OAUTH_RETRY, HeaderValue::from(secs));
                headers.insert(OAUTH_WINDOW, HeaderValue::from(t.window.as_millis() as u64));
                headers.insert(
                    OAUTH_RESET,
                    HeaderValue::from(t.retry_after.as_millis().max(1) as u64),
                );
                headers.insert(OAUTH_QUOTA, HeaderValue::from(t.quota));
                headers.insert(OAUTH_LEFT, HeaderValue::from(0));
            }
        }
    }

    /// What to do after the store throttled a call with `report`.
    pub fn after_throttle(self, report: &Report) -> AfterThrottle {
        match self {
            Dialect::Legacy => AfterThrottle::UntilWindowMoves,
            Dialect::Oauth => match report.stated_wait() {
                Some(wait) => AfterThrottle::Wait(wait),
                None => AfterThrottle::BackOff,
            },
        }
    }

    /// How long a report of what is left holds: legacy, until the store's window takes its
    /// next step; oauth, until its stated reset (else `step`).
    pub fn report_holds(self, report: &Report, step: Duration) -> Duration {
        match self {
            Dialect::Legacy => step,
            Dialect::Oauth => report.reset.unwrap_or(step),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Dialect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::values::one_of(d, &[("legacy", Dialect::Legacy), ("oauth", Dialect::Oauth)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_answers_carry_the_dialects_headers() {
        let t = Throttle {
            retry_after: Duration::from_millis(2500),
            window: Duration::from_secs(30),
            quota: 150,
        };
        let mut h = HeaderMap::new();
        Dialect::Legacy.throttle_headers(&t, &mut h);
        assert_eq!(h["retry-after"], "3");
        assert_eq!(h[LEGACY_REMAINING], "0");
        let mut h = HeaderMap::new();
        Dialect::Oauth.throttle_headers(&t, &mut h);
        assert_eq!(h[OAUTH_RETRY], "3");
        assert_eq!(h[OAUTH_RESET], "2500");
        assert_eq!(h[OAUTH_WINDOW], "30000");
        assert_eq!(h[OAUTH_QUOTA], "150");
        assert_eq!(h[OAUTH_LEFT], "0");
        assert_eq!(Dialect::Legacy.throttle_status().as_u16(), 509);
        assert!(Dialect::Oauth.is_throttle(429) && !Dialect::Oauth.is_throttle(509));
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        let t = |ms| Throttle {
            retry_after: Duration::from_millis(ms),
            window: Duration::ZERO,
            quota: 1,
        };
        assert_eq!(t(0).retry_after_secs(), 1);
        assert_eq!(t(1).retry_after_secs(), 1);
        assert_eq!(t(1000).retry_after_secs(), 1);
        assert_eq!(t(1001).retry_after_secs(), 2);
    }
}
