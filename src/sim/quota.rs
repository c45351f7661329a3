//! The simulated store's own request quota: a rolling window that moves in steps of
//! window/60, as the legacy store's hour moves minute by minute. This is the referee of the
//! proxy's budget and deliberately shares no code with `crate::budget`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Steps per window (the store's hour moves in minutes).
pub const STEPS: u64 = 60;

/// Requests counted per step of the rolling window.
#[derive(Debug, Clone)]
pub struct Quota {
    limit: u64,
    step: Duration,
    /// (step index since the Unix epoch, requests in it), oldest first.
    steps: VecDeque<(u64, u64)>,
}

impl Quota {
    /// A quota of `limit` requests per `window`.
    pub fn new(limit: u64, window: Duration) -> Quota {
        let step = (window / STEPS as u32).max(Duration::from_millis(1));
        Quota {
            limit,
            step,
            steps: VecDeque::new(),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> u64 {
        self.limit
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
            if step + STEPS <= now {
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
    fn out_of_band_spending_counts() {
        let mut q = Quota::new(10, Duration::from_secs(60));
        let t = UNIX_EPOCH + Duration::from_secs(120);
        q.add(t, 12);
        assert_eq!(q.remaining(t), 0);
        assert_eq!(q.take(t, 1), None);
    }
}
