//! The `timestamp` of a log line: RFC 3339 in UTC with microseconds, as
//! `tracing-subscriber` writes it (`2026-12-01T11:13:49.123456Z`); the date and time of the
//! current second are kept per thread, so a line costs one clock read and six digits.

use std::cell::RefCell;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last formatted on this thread, and its text up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time.
pub fn push_now(out: &mut String) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    push(out, since.as_secs(), since.subsec_micros());
}

fn push(out: &mut String, secs: u64, micros: u32) {
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            second.1.clear();
            write_second(&mut second.1, secs);
            second.0 = secs;
        }
        out.push_str(&second.1);
    });
    let _ = write!(out, ".{micros:06}Z");
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (the civil-from-days algorithm).
fn write_second(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_rfc3339_utc() {
        let mut out = String::new();
        push(&mut out, 0, 7);
        assert_eq!(out, "1970-01-01T00:00:00.000007Z");
        out.clear();
        push(&mut out, 1_796_122_529, 123_456);
        assert_eq!(out, "2026-12-01T10:55:29.123456Z");
        out.clear();
        // A leap day, and the next second reusing nothing stale.
        push(&mut out, 1_709_164_799, 0);
        assert_eq!(out, "2024-02-28T23:59:59.000000Z");
        out.clear();
        push(&mut out, 1_709_164_800, 999_999);
        assert_eq!(out, "2024-02-29T00:00:00.999999Z");
    }
}
