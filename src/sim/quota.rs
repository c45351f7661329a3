//! The simulated store's own request quota. Legacy: a rolling window that moves in steps of
//! window/60, as the legacy store's hour moves minute by minute. OAuth: a fixed window (one
//! step) that resets whole. This is the referee of the proxy's budget and deliberately shares
//! no code with `crate::budget`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Steps per window of the legacy store (its hour moves in minutes).
pub const STEPS: u64 = 60;

/// Requests counted per step of the window.
#[derive(Debug, Clone)]
pub struct Quota {
    limit: u64,
    step: Duration,
    /// Steps in a window: 60 for the rolling legacy hour, 1 for a fixed window.
    per_window: u64,
    /// (step index since the Unix epoch, requests in it), oldest first.
    steps: VecDeque<(u64, u64)>,
}

impl Quota {
    /// A rolling quota of `limit` requests per `window`, moving in steps of window/60.
    pub fn new(limit: u64, window: Duration) -> Quota {
        let step = (window / STEPS as u32).max(Duration::from_millis(1));
        Quota {
            limit,
            step,
            per_window: STEPS,
            steps: VecDeque::new(),
        }
    }

    /// A fixed-window quota of `limit` requests per `window`, resetting whole at the end of each
    /// window (windows aligned to the Unix epoch).
    pub fn fixed(limit: u64, window: Duration) -> Quota {
        let step = window.max(Duration::from_millis(1));
        Quota {
            limit,
            step,
            per_window: 1,
            steps: VecDeque::new(),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Changes the limit (a store changing plans); spent requests stay spent.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The whole window.
    pub fn window(&self) -> Duration {
        self.step * self.per_window as u32
    }

    /// Time from `at` until the current step ends (for a fixed window: until it resets).
    pub fn until_step_end(&self, at: SystemTime) -> Duration {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let step = self.step.as_nanos().max(1);
        Duration::from_nanos((step - since % step) as u64)
    }

    /// The length of one step.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The step a moment falls in; steps are aligned to the Unix epoch, as the store's are to
    /// the clock's minutes.
    pub fn step_of(&self, at: SystemTime) -> u64 {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        (since.as_nanos() / self.step.as_nanos().max(1)) as u64
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(step, _)) = self.steps.front() {
            if step + self.per_window <= now {
                self.steps.pop_front();
            } else {
                break;
            }
        }
    }

    /// Requests counted in the window that contains `at`.
    pub fn used(&mut self, at: SystemTime) -> u64 {
        self.expire(self.step_of(at));
        self.steps.iter().map(|(_, n)| n).sum()
    }

    /// Requests left in the window that contains `at`.
    pub fn remaining(&mut self, at: SystemTime) -> u64 {
        self.limit.saturating_sub(self.used(at))
    }

    /// Counts `n` requests at `at` if they fit; returns what is left afterwards, or `None`
    /// (and counts nothing) when they do not fit.
    pub fn take(&mut self, at: SystemTime, n: u64) -> Option<u64> {
        let used = self.used(at);
        if used + n > self.limit {
            return None;
        }
        self.add(at, n);
        Some(self.limit - used - n)
    }

    /// Counts `n` requests at `at` whether or not they fit (spending by other clients).
    pub fn add(&mut self, at: SystemTime, n: u64) {
        let step = self.step_of(at);
        match self.steps.back_mut() {
            Some((last, count)) if *last == step => *count += n,
            _ => self.steps.push_back((step, n)),
        }
    }

    /// Forgets every counted request.
    pub fn clear(&mut self) {
        self.steps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_until_the_step_that_drops_them() {
        let mut q = Quota::new(3, Duration::from_secs(3600));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000 * 60);
        assert_eq!(q.take(t0, 1), Some(2));
        assert_eq!(q.take(t0 + Duration::from_secs(30), 2), Some(0));
        assert_eq!(q.take(t0 + Duration::from_secs(59), 1), None);
        // 59 minutes later the first minute's calls still count ...
        assert_eq!(q.remaining(t0 + Duration::from_secs(59 * 60 + 59)), 0);
        // ... and the step that starts the 61st minute drops them.
        assert_eq!(q.remaining(t0 + Duration::from_secs(60 * 60)), 3);
    }

    #[test]
    fn a_fixed_window_resets_whole() {
        let mut q = Quota::fixed(2, Duration::from_secs(30));
        let t0 = UNIX_EPOCH + Duration::from_secs(30 * 1000);
        assert_eq!(q.take(t0 + Duration::from_secs(1), 2), Some(0));
        assert_eq!(q.take(t0 + Duration::from_secs(29), 1), None);
        assert_eq!(
            q.until_step_end(t0 + Duration::from_secs(29)),
            Duration::from_secs(1)
        );
        assert_eq!(q.take(t0 + Duration::from_secs(30), 1), Some(1));
    }

    #[test]
    fn out_of_band_spending_counts() {
        let mut q = Quota::new(10, Duration::from_secs(60));
        let t = UNIX_EPOCH + Duration::from_secs(120);
        q.add(t, 12);
        assert_eq!(q.remaining(t), 0);
        assert_eq!(q.take(t, 1), None);
    }
}
