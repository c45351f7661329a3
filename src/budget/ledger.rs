//! The window ledger: the proxy's own count of the upstream calls that still count against the
//! store's budget. Pure: every method takes the time, so tests run hours in microseconds.
//!
//! - **Rolling** (legacy): the store's hour moves in one-minute steps and the proxy cannot see
//!   where the steps fall, so each send counts for `window + step`, never less. Memory is one
//!   timestamp per send still counting: never more than `limit`.
//! - **Fixed** (oauth): the store's own window, whose end and quota its headers state (a
//!   send made in the last tenth of a window, at most a second, counts in the next one too: it
//!   may reach the store after its reset, and the reset the store states is already old when
//!   the proxy reads it); every
//!   send in the current window counts until it ends.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Steps per legacy window: the store's hour moves minute by minute.
pub const STEPS: u32 = 60;

/// The proxy's count of sends against the store's budget.
#[derive(Debug, Clone)]
pub struct Ledger {
    limit: u64,
    window: Duration,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Send times still counting, oldest first.
    Rolling { sends: VecDeque<Instant> },
    /// The current window's end and the sends in it.
    Fixed {
        ends: Instant,
        count: u64,
        /// Sends of this window made in its last [`Ledger::margin`]: they count in the next.
        carry: u64,
    },
}

impl Ledger {
    /// A rolling window of `limit` sends per `window` (legacy).
    pub fn rolling(limit: u64, window: Duration) -> Ledger {
        Ledger {
            limit,
            window,
            kind: Kind::Rolling {
                sends: VecDeque::new(),
            },
        }
    }

    /// A fixed window of `limit` sends per `window`, the first ending `window` after `now`
    /// (oauth, until the store states its own).
    pub fn fixed(limit: u64, window: Duration, now: Instant) -> Ledger {
        Ledger {
            limit,
            window,
            kind: Kind::Fixed {
                ends: now + window,
                count: 0,
                carry: 0,
            },
        }
    }

    /// Sends allowed per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long a store report of the remaining budget holds: legacy, one step (the store's
    /// window moves on at the next one); oauth, until the window resets.
    pub fn step(&self) -> Duration {
        match self.kind {
            Kind::Rolling { .. } => self.window / STEPS,
            Kind::Fixed { .. } => self.window,
        }
    }

    /// Fixed windows: how long before a window's end a send also counts in the next one.
    fn margin(&self) -> Duration {
        (self.window / 10).min(Duration::from_secs(1))
    }

    /// How long one send counts (rolling: window plus one step).
    fn hold(&self) -> Duration {
        self.window + self.window / STEPS
    }

    fn expire(&mut self, now: Instant) {
        let hold = self.hold();
        let window = self.window;
        match &mut self.kind {
            Kind::Rolling { sends } => {
                while sends.front().is_some_and(|&t| t + hold <= now) {
                    sends.pop_front();
                }
            }
            Kind::Fixed { ends, count, carry } => {
                if now >= *ends {
                    let behind = now.duration_since(*ends).as_nanos() / window.as_nanos().max(1);
                    *ends += window * (behind as u32 + 1);
                    // The last window's late sends count in the one right after it.
                    *count = if behind == 0 { *carry } else { 0 };
                    *carry = 0;
                }
            }
        }
    }

    /// Sends counting at `now`.
    pub fn used(&mut self, now: Instant) -> u64 {
        self.expire(now);
        match &self.kind {
            Kind::Rolling { sends } => sends.len() as u64,
            Kind::Fixed { count, .. } => *count,
        }
    }

    /// Sends left at `now` by the proxy's own count.
    pub fn left(&mut self, now: Instant) -> u64 {
        self.limit.saturating_sub(self.used(now))
    }

    /// Counts a send at `now`.
    pub fn record(&mut self, now: Instant) {
        self.expire(now);
        let margin = self.margin();
        match &mut self.kind {
            Kind::Rolling { sends } => {
                // Sends are recorded in time order; keep it so even if a caller's clock lags.
                let at = sends.back().map_or(now, |&last| last.max(now));
                sends.push_back(at);
            }
            Kind::Fixed { ends, count, carry } => {
                *count += 1;
                if now + margin >= *ends {
                    *carry += 1;
                }
            }
        }
    }

    /// Takes back a send recorded at `at` that never went out.
    pub fn unrecord(&mut self, at: Instant) {
        let margin = self.margin();
        match &mut self.kind {
            Kind::Rolling { sends } => {
                if let Some(i) = sends.iter().rposition(|&t| t <= at) {
                    sends.remove(i);
                }
            }
            Kind::Fixed { ends, count, carry } => {
                if at + self.window > *ends {
                    // A send of the current window.
                    *count = count.saturating_sub(1);
                    if at + margin >= *ends {
                        *carry = carry.saturating_sub(1);
                    }
                } else if at + self.window + margin >= *ends {
                    // A late send of the last window, carried into this one.
                    *count = count.saturating_sub(1);
                }
            }
        }
    }

    /// The earliest instant at which `n` sends are free by the proxy's own count, assuming
    /// every slot is taken again as soon as it frees (so `n` beyond a window's worth lands in a
    /// later window); `None` only when the limit is 0.
    pub fn free_at(&mut self, now: Instant, n: u64) -> Option<Instant> {
        if self.limit == 0 {
            return None;
        }
        let used = self.used(now);
        let left = self.limit.saturating_sub(used);
        if n <= left {
            return Some(now);
        }
        // The (n - left)-th slot to free; slots past what is counted now free again one whole
        // hold (or window) after they are taken.
        let needed = n - left;
        let hold = self.hold();
        match &self.kind {
            Kind::Rolling { sends } => {
                let counted = sends.len() as u64;
                let rounds = (needed - 1) / counted.max(1);
                let index = ((needed - 1) % counted.max(1)) as usize;
                let first = sends.get(index).map_or(now, |&t| t + hold);
                Some(first + hold * rounds as u32)
            }
            Kind::Fixed { ends, .. } => {
                let rounds = (needed - 1) / self.limit;
                Some(*ends + self.window * rounds as u32)
            }
        }
    }

    /// Adopts the store's stated quota, window and reset (oauth). A reset further away than
    /// the current end means the store's window rolled over: the count starts afresh.
    pub fn sync_fixed(&mut self, quota: u64, window: Duration, resets: Instant) {
        self.limit = quota;
        self.window = window;
        if let Kind::Fixed { ends, count, carry } = &mut self.kind {
            // A reset well beyond the end the proxy expected means the store has moved to a
            // window the proxy's sends were not in (but for the late ones). A sooner reset
            // keeps the count: those sends are in the store's current window.
            if resets > *ends + window / 2 {
                *count = *carry;
                *carry = 0;
            }
            *ends = resets;
        }
    }

    /// Changes the limit and window (a config reload).
    pub fn resize(&mut self, limit: u64, window: Duration) {
        self.limit = limit;
        self.window = window;
    }

    /// What the ledger holds, for the state file.
    pub fn spent(&self) -> Spent {
        match &self.kind {
            Kind::Rolling { sends } => Spent {
                sends: sends.iter().copied().collect(),
                fixed: None,
            },
            Kind::Fixed { ends, count, .. } => Spent {
                sends: Vec::new(),
                fixed: Some((*ends, *count)),
            },
        }
    }

    /// Adds sends from the state file; those no longer counting are dropped.
    pub fn restore(&mut self, now: Instant, spent: &Spent) {
        match &mut self.kind {
            Kind::Rolling { sends: mine } => {
                let mut all: Vec<Instant> = mine.iter().chain(&spent.sends).copied().collect();
                all.sort_unstable();
                *mine = all.into_iter().collect();
            }
            Kind::Fixed { ends, count, .. } => {
                if let Some((saved_end, saved_count)) = spent.fixed
                    && saved_end > now
                {
                    // A window never ends more than a window from now.
                    *ends = saved_end.min(now + self.window);
                    *count += saved_count;
                }
            }
        }
        self.expire(now);
        if let Kind::Rolling { sends } = &mut self.kind {
            // A send never counts from later than now.
            for at in sends.iter_mut() {
                *at = (*at).min(now);
            }
            while sends.len() as u64 > self.limit {
                sends.pop_front();
            }
        }
    }
}

/// The sends a ledger holds: send times still counting (rolling), or the fixed window's end
/// and count (oauth).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spent {
    /// Send times, oldest first.
    pub sends: Vec<Instant>,
    /// The fixed window's end and the sends in it.
    pub fixed: Option<(Instant, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_send_counts_for_the_window_plus_a_step() {
        let t0 = Instant::now();
        let mut l = Ledger::rolling(2, HOUR);
        l.record(t0);
        l.record(t0 + MIN);
        assert_eq!(l.left(t0 + MIN), 0);
        assert_eq!(l.free_at(t0 + MIN, 1), Some(t0 + HOUR + MIN));
        assert_eq!(l.free_at(t0 + MIN, 2), Some(t0 + HOUR + 2 * MIN));
        assert_eq!(
            l.free_at(t0 + MIN, 3),
            Some(t0 + 2 * HOUR + 2 * MIN),
            "a slot taken again"
        );
        assert_eq!(Ledger::rolling(0, HOUR).free_at(t0, 1), None);
        assert_eq!(l.left(t0 + HOUR + MIN - Duration::from_millis(1)), 0);
        assert_eq!(l.left(t0 + HOUR + MIN), 1);
        assert_eq!(l.left(t0 + HOUR + 2 * MIN), 2);
    }

    #[test]
    fn a_fixed_window_resets_whole() {
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        let mut l = Ledger::fixed(2, w, t0);
        l.record(t0);
        l.record(t0 + Duration::from_secs(28));
        assert_eq!(l.left(t0 + Duration::from_secs(28)), 0);
        assert_eq!(l.free_at(t0 + Duration::from_secs(28), 1), Some(t0 + w));
        assert_eq!(l.left(t0 + w), 2);
        assert_eq!(l.left(t0 + 5 * w + Duration::from_secs(1)), 2);
    }

    /// A send in a window's last second (a tenth of it, at most a second) may reach the store
    /// after its reset: it counts in the next window too, and only in the next.
    #[test]
    fn a_late_send_counts_in_the_next_fixed_window_too() {
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        let mut l = Ledger::fixed(3, w, t0);
        l.record(t0 + Duration::from_secs(28));
        l.record(t0 + Duration::from_millis(29_500));
        l.record(t0 + Duration::from_millis(29_900));
        assert_eq!(
            l.left(t0 + w),
            1,
            "the two late sends count in the next window"
        );
        // One of them never went out: taken back from the window it was carried into.
        l.unrecord(t0 + Duration::from_millis(29_900));
        assert_eq!(l.left(t0 + w), 2);
        assert_eq!(l.left(t0 + 2 * w), 3, "and no further");
        // A short window's margin is a tenth of it.
        let mut short = Ledger::fixed(1, Duration::from_millis(800), t0);
        short.record(t0 + Duration::from_millis(700));
        assert_eq!(short.left(t0 + Duration::from_millis(800)), 1);
        short.record(t0 + Duration::from_millis(1550));
        assert_eq!(short.left(t0 + Duration::from_millis(1600)), 0);
    }

    #[test]
    fn the_store_sets_the_fixed_window() {
        let t0 = Instant::now();
        let mut l = Ledger::fixed(150, Duration::from_secs(30), t0);
        l.record(t0);
        l.sync_fixed(450, Duration::from_secs(30), t0 + Duration::from_secs(10));
        assert_eq!(l.limit(), 450);
        assert_eq!(l.left(t0 + Duration::from_secs(9)), 449);
        assert_eq!(l.left(t0 + Duration::from_secs(10)), 450);
    }

    #[test]
    fn a_lowered_limit_below_the_count_is_not_a_panic() {
        let t0 = Instant::now();
        let mut l = Ledger::rolling(5, HOUR);
        for _ in 0..5 {
            l.record(t0);
        }
        l.resize(2, HOUR);
        assert_eq!(l.left(t0), 0);
        assert_eq!(l.free_at(t0, 1), Some(t0 + HOUR + MIN));
        let mut f = Ledger::fixed(5, MIN, t0);
        for _ in 0..5 {
            f.record(t0);
        }
        f.sync_fixed(2, MIN, t0 + MIN);
        assert_eq!(f.left(t0), 0);
        assert_eq!(f.free_at(t0, 1), Some(t0 + MIN));
    }

    #[test]
    fn unrecord_takes_a_send_back() {
        let t0 = Instant::now();
        let mut l = Ledger::rolling(5, HOUR);
        l.record(t0);
        l.record(t0 + MIN);
        l.unrecord(t0 + MIN);
        assert_eq!(l.used(t0 + MIN), 1);
        assert_eq!(l.spent().sends, vec![t0]);
    }

    #[test]
    fn restore_never_counts_from_the_future() {
        let t0 = Instant::now();
        let mut l = Ledger::rolling(3, HOUR);
        l.restore(
            t0,
            &Spent {
                sends: vec![t0 + 24 * HOUR],
                fixed: None,
            },
        );
        assert_eq!(
            l.used(t0 + HOUR + MIN),
            0,
            "a send from the future was kept past its hold"
        );
        let mut f = Ledger::fixed(3, MIN, t0);
        f.restore(
            t0,
            &Spent {
                sends: vec![],
                fixed: Some((t0 + 1000 * HOUR, 3)),
            },
        );
        assert_eq!(f.left(t0), 0);
        assert_eq!(
            f.left(t0 + MIN),
            3,
            "a window never ends later than a window from now"
        );
    }

    #[test]
    fn restore_drops_what_no_longer_counts() {
        let t0 = Instant::now() + 2 * HOUR;
        let mut l = Ledger::rolling(3, HOUR);
        let sends = vec![t0 - 2 * HOUR, t0 - MIN, t0 - Duration::from_secs(1)];
        l.restore(t0, &Spent { sends, fixed: None });
        assert_eq!(l.used(t0), 2);
    }
}
