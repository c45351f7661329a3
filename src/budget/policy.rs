//! The budget rules every backend applies, as pure functions of its state and the time: what
//! is left (the proxy's own count against the store's latest report), whether a call may go
//! (the write reserve), whether a report replaces the one held, and how long sends pause after
//! the store throttled. A backend keeps the state; a shared backend's scripts mirror these
//! functions, so they are the one place the rules are written.

use std::time::Duration;

use tokio::time::Instant;

use super::SendId;
use crate::dialect::AfterThrottle;

/// Longest back-off after 429s that stated no wait (the platform shedding load).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First back-off after such a 429.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Why a call cannot go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Nothing can go (paused, a probe out, no budget at all).
    All,
    /// Only the write reserve is left: writes may still go.
    Reserve,
}

/// The store's latest statement of what is left, and until when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Requests left, as the store counted them.
    pub left: u64,
    /// The send whose answer carried it: sends after it are not in `left`.
    pub send: SendId,
    /// When the statement stops holding (the store's window moved on).
    pub expires: Instant,
}

impl Held {
    /// What the report says is left now, `last` being the newest send granted; `None` once it
    /// no longer holds.
    pub fn left_now(&self, last: SendId, now: Instant) -> Option<u64> {
        (now < self.expires).then(|| self.left.saturating_sub(last.0.saturating_sub(self.send.0)))
    }
}

/// What is left: the smaller of the proxy's own count and the store's report (less the sends
/// made after the answer that carried it), while that report holds.
pub fn remaining(own_left: u64, report: Option<Held>, last: SendId, now: Instant) -> u64 {
    match report.and_then(|held| held.left_now(last, now)) {
        Some(reported) => own_left.min(reported),
        None => own_left,
    }
}

/// Whether a call that must leave `reserve` untouched may go with `remaining` left.
pub fn admit(remaining: u64, reserve: u64) -> Result<(), Blocked> {
    if remaining > reserve {
        Ok(())
    } else if remaining > 0 {
        Err(Blocked::Reserve)
    } else {
        Err(Blocked::All)
    }
}

/// Whether a report carried by the answer to `send` replaces the one held: it is about a later
/// send, or the held one no longer holds. (Answers arrive out of order; an older send's report
/// knows less.)
pub fn replaces(held: Option<Held>, send: SendId, now: Instant) -> bool {
    held.is_none_or(|held| send >= held.send || now >= held.expires)
}

/// Whether sends may go after a store throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pause {
    /// Sends go.
    #[default]
    Open,
    /// Nothing goes out until `until`; then one probe if `probe`, else everything.
    Until {
        /// When the pause ends.
        until: Instant,
        /// Whether one call must probe before the rest follow.
        probe: bool,
    },
    /// One call may probe; `Some` while it is at the store.
    Probing(Option<SendId>),
}

impl Pause {
    /// Moves a pause whose time is up on; true when sends are open again without a probe.
    pub fn advance(&mut self, now: Instant) -> bool {
        if let Pause::Until { until, probe } = *self
            && now >= until
        {
            *self = if probe {
                Pause::Probing(None)
            } else {
                Pause::Open
            };
            return !probe;
        }
        false
    }

    /// Nothing may go while paused or while the probe is out.
    pub fn gate(&self) -> Result<(), Blocked> {
        match self {
            Pause::Until { .. } | Pause::Probing(Some(_)) => Err(Blocked::All),
            Pause::Open | Pause::Probing(None) => Ok(()),
        }
    }

    /// True while nothing may go: the pause holds, or its probe is out. Once a pause's time is
    /// up it is over (the next call probes), whether or not a call came since.
    pub fn is_paused(&self) -> bool {
        self.gate().is_err()
    }
}

/// The pause after the store throttled a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseAfter {
    /// The new pause.
    pub pause: Pause,
    /// How long it lasts.
    pub length: Duration,
    /// Header-less 429s in a row, counting this one.
    pub backoffs: u32,
    /// Why, for the log.
    pub reason: &'static str,
}

/// How long sends pause after a throttle: until the store's window has moved on (the
/// ledger's `window_free_at`, at least one `step`) and then one probe, after a 509; the
/// stated wait after a 429 that states one; an exponential back-off (`jitter` in 0..1 spreads
/// it by a quarter either way) and then one probe after a 429 that states none.
pub fn pause_after(
    plan: AfterThrottle,
    now: Instant,
    step: Duration,
    window_free_at: Option<Instant>,
    backoffs: u32,
    jitter: f64,
) -> PauseAfter {
    let (until, probe, backoffs, reason) = match plan {
        AfterThrottle::UntilWindowMoves => (
            window_free_at.unwrap_or(now).max(now + step),
            true,
            backoffs,
            "509",
        ),
        AfterThrottle::Wait(wait) => (now + wait.max(Duration::from_millis(1)), false, 0, "429"),
        AfterThrottle::BackOff => {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << backoffs.min(6))
                .min(MAX_BACKOFF);
            (
                now + backoff.mul_f64(0.75 + jitter.clamp(0.0, 1.0) * 0.5),
                true,
                backoffs + 1,
                "429 without a stated wait: backing off",
            )
        }
    };
    PauseAfter {
        pause: Pause::Until { until, probe },
        length: until - now,
        backoffs,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_caps_what_is_left_while_it_holds() {
        let now = Instant::now();
        let held = Held {
            left: 10,
            send: SendId(4),
            expires: now + Duration::from_secs(1),
        };
        assert_eq!(remaining(98, Some(held), SendId(6), now), 8);
        assert_eq!(remaining(5, Some(held), SendId(6), now), 5);
        assert_eq!(
            remaining(98, Some(held), SendId(6), now + Duration::from_secs(1)),
            98
        );
        assert!(replaces(Some(held), SendId(4), now));
        assert!(!replaces(Some(held), SendId(3), now));
        assert!(replaces(Some(held), SendId(3), held.expires));
    }

    #[test]
    fn the_reserve_is_for_writes() {
        assert_eq!(admit(3, 2), Ok(()));
        assert_eq!(admit(2, 2), Err(Blocked::Reserve));
        assert_eq!(admit(0, 0), Err(Blocked::All));
    }

    #[test]
    fn pauses_follow_what_the_store_said() {
        let now = Instant::now();
        let step = Duration::from_secs(60);
        let p = pause_after(AfterThrottle::UntilWindowMoves, now, step, None, 0, 0.5);
        assert_eq!(
            p.pause,
            Pause::Until {
                until: now + step,
                probe: true
            }
        );
        let later = now + Duration::from_secs(600);
        let p = pause_after(
            AfterThrottle::UntilWindowMoves,
            now,
            step,
            Some(later),
            0,
            0.5,
        );
        assert_eq!(p.length, Duration::from_secs(600));
        let p = pause_after(
            AfterThrottle::Wait(Duration::from_secs(4)),
            now,
            step,
            None,
            3,
            0.5,
        );
        assert_eq!((p.length, p.backoffs), (Duration::from_secs(4), 0));
        let b0 = pause_after(AfterThrottle::BackOff, now, step, None, 0, 0.5);
        let b1 = pause_after(AfterThrottle::BackOff, now, step, None, b0.backoffs, 0.5);
        assert_eq!(b0.length, FIRST_BACKOFF);
        assert_eq!(b1.length, 2 * FIRST_BACKOFF);
        let capped = pause_after(AfterThrottle::BackOff, now, step, None, 30, 1.0);
        assert_eq!(capped.length, MAX_BACKOFF.mul_f64(1.25));
        let mut pause = b0.pause;
        assert!(pause.gate().is_err());
        assert!(
            !pause.advance(now + FIRST_BACKOFF),
            "a back-off ends in a probe"
        );
        assert_eq!(pause, Pause::Probing(None));
        assert!(pause.gate().is_ok() && !pause.is_paused());
    }
}
