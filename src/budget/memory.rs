//! The in-memory allowance of one proxy process: the ledger of sends, the store's latest
//! report, the pause after a throttle, and (when `budget.state_file` is set) a state file that
//! lets the ledger survive restarts, all behind one mutex on Tokio's clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::allowance::{Allowance, Grant, Observed, Paused, Pending, SendId, Standing, Taken};
use super::ledger::{Ledger, Spent};
use super::persist::StateFile;
use super::policy::{self, Held, Pause};
use crate::dialect::{Dialect, Report};

/// How often the state file is written while the ledger changes.
const STATE_EVERY: Duration = Duration::from_secs(2);

/// The budget's window and count, kept in this process.
#[derive(Debug)]
pub struct MemoryAllowance {
    dialect: Dialect,
    state: Mutex<State>,
    state_file: Option<StateFile>,
}

#[derive(Debug)]
struct State {
    ledger: Ledger,
    /// The store's latest statement of what is left.
    report: Option<Held>,
    pause: Pause,
    /// Grants not yet released: when each was granted.
    outstanding: HashMap<SendId, Instant>,
    next_send: u64,
    /// Header-less 429s in a row.
    backoffs: u32,
    /// True when the ledger changed since the state file was written.
    dirty: bool,
    /// At most this many sends per window, whatever the store states (a share of a budget
    /// this process is one of several spenders of).
    ceiling: Option<u64>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    fn last(&self) -> SendId {
        SendId(self.next_send - 1)
    }

    /// Sends left by the own count, within the ceiling.
    fn own_left(&mut self, now: Instant) -> u64 {
        let left = self.ledger.left(now);
        match self.ceiling {
            Some(ceiling) => left.min(ceiling.saturating_sub(self.ledger.used(now))),
            None => left,
        }
    }

    /// What `need` sends within the ceiling are in the ledger's terms: the sends the ceiling
    /// keeps out of reach come first.
    fn widen(&self, need: u64) -> u64 {
        need + self
            .ceiling
            .map_or(0, |ceiling| self.ledger.limit().saturating_sub(ceiling))
    }

    fn remaining(&mut self, now: Instant) -> u64 {
        let own = self.own_left(now);
        policy::remaining(own, self.report, self.last(), now)
    }

    /// The next moment something could free without anything else happening.
    fn next_change(&mut self, now: Instant) -> Option<Duration> {
        let mut candidates = Vec::with_capacity(3);
        if let Pause::Until { until, .. } = self.pause {
            candidates.push(until);
        }
        if let Some(held) = self.report {
            candidates.push(held.expires);
        }
        let left = self.own_left(now);
        if let Some(at) = self.ledger.free_at(now, self.widen(left + 1)) {
            candidates.push(at);
        }
        candidates
            .into_iter()
            .filter(|&t| t > now)
            .min()
            .map(|t| t - now)
    }

    fn grant(&mut self, now: Instant) -> Grant {
        self.ledger.record(now);
        let id = SendId(self.next_send);
        self.next_send += 1;
        self.outstanding.insert(id, now);
        let probe = self.pause == Pause::Probing(None);
        if probe {
            self.pause = Pause::Probing(Some(id));
        }
        self.dirty = true;
        Grant { id, probe }
    }
}

impl MemoryAllowance {
    /// An allowance of `limit` sends per `window`, its ledger restored from `state_file` when
    /// there is one (which is then written every few seconds while it changes, and by
    /// [`Allowance::flush`]). Must be made inside a Tokio runtime when it has a state file.
    pub fn new(
        dialect: Dialect,
        limit: u64,
        window: Duration,
        state_file: Option<StateFile>,
    ) -> Arc<MemoryAllowance> {
        let now = Instant::now();
        let ledger = match dialect {
            Dialect::Legacy => Ledger::rolling(limit, window),
            Dialect::Oauth => Ledger::fixed(limit, window, now),
        };
        let allowance = Arc::new(MemoryAllowance {
            dialect,
            state: Mutex::new(State {
                ledger,
                report: None,
                pause: Pause::Open,
                outstanding: HashMap::new(),
                next_send: 1,
                backoffs: 0,
                dirty: false,
                ceiling: None,
            }),
            state_file,
        });
        if let Some(file) = &allowance.state_file {
            if let Some(spent) = file.load() {
                lock(&allowance.state)
                    .ledger
                    .restore(Instant::now(), &spent);
            }
            tokio::spawn(keep(Arc::downgrade(&allowance), STATE_EVERY));
        }
        allowance
    }

    /// An allowance that takes over from another backend: its ledger starts with `seed`'s
    /// sends, its pause with `seed.pause`, and it never allows more than `seed.ceiling` sends
    /// per window (no state file).
    pub fn seeded(
        dialect: Dialect,
        limit: u64,
        window: Duration,
        seed: Seed,
    ) -> Arc<MemoryAllowance> {
        let allowance = MemoryAllowance::new(dialect, limit, window, None);
        {
            let mut state = lock(&allowance.state);
            let now = Instant::now();
            state.ledger.restore(now, &seed.spent);
            state.ceiling = seed.ceiling;
            state.pause = match seed.pause {
                Some((left, true)) if left.is_zero() => Pause::Probing(None),
                Some((left, probe)) => Pause::Until {
                    until: now + left,
                    probe,
                },
                None => Pause::Open,
            };
        }
        allowance
    }

    /// Changes the ceiling of sends per window (see [`MemoryAllowance::seeded`]).
    pub fn set_ceiling(&self, ceiling: Option<u64>) {
        lock(&self.state).ceiling = ceiling;
    }

    /// What the ledger holds, for the state file; with `if_changed`, `None` when nothing
    /// changed since the last call.
    fn ledger_snapshot(&self, if_changed: bool) -> Option<Spent> {
        let mut state = lock(&self.state);
        if if_changed && !state.dirty {
            return None;
        }
        state.dirty = false;
        state.ledger.used(Instant::now());
        Some(state.ledger.spent())
    }

    fn save(&self, if_changed: bool) {
        if let (Some(file), Some(spent)) = (&self.state_file, self.ledger_snapshot(if_changed)) {
            file.save(&spent);
        }
    }

    fn take_now(&self, reserve: u64) -> Taken {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let resumed = state.pause.advance(now);
        let allowed = state
            .pause
            .gate()
            .and_then(|()| policy::admit(state.remaining(now), reserve));
        match allowed {
            Ok(()) => Taken::Granted {
                grant: state.grant(now),
                resumed,
            },
            Err(why) => Taken::Blocked {
                why,
                retry_in: state.next_change(now),
            },
        }
    }

    fn estimate_now(&self, need: u64) -> Option<Duration> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let widened = state.widen(need);
        let mut at = state.ledger.free_at(now, widened)?;
        if let Some(held) = state.report
            && held
                .left_now(state.last(), now)
                .is_some_and(|left| left < need)
        {
            at = at.max(held.expires);
        }
        if let Pause::Until { until, .. } = state.pause {
            at = at.max(until);
        }
        Some(at.saturating_duration_since(now))
    }

    fn observe_now(&self, grant: Grant, report: Report) -> Observed {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if let (Some(quota), Some(window), Some(reset)) =
            (report.quota, report.window, report.reset)
        {
            state.ledger.sync_fixed(quota, window, now + reset);
        }
        if let Some(left) = report.left
            && policy::replaces(state.report, grant.id, now)
        {
            let holds = self.dialect.report_holds(&report, state.ledger.step());
            state.report = Some(Held {
                left,
                send: grant.id,
                expires: now + holds,
            });
        }
        let mut observed = Observed::default();
        if report.throttled {
            let already = matches!(state.pause, Pause::Until { until, .. } if until > now);
            // A throttle of a send made before the probe that is out says nothing the probe
            // will not: re-arming the pause would let a second probe go after it.
            let stale = matches!(state.pause, Pause::Probing(Some(probe)) if probe != grant.id);
            if !stale && (!already || state.pause == Pause::Probing(Some(grant.id))) {
                let free_at = if state.ledger.left(now) == 0 {
                    state.ledger.free_at(now, 1)
                } else {
                    None
                };
                let after = policy::pause_after(
                    self.dialect.after_throttle(&report),
                    now,
                    state.ledger.step(),
                    free_at,
                    state.backoffs,
                    jitter(),
                );
                state.pause = after.pause;
                state.backoffs = after.backoffs;
                let probe = matches!(after.pause, Pause::Until { probe: true, .. });
                observed.paused = Some(Paused {
                    reason: after.reason,
                    length: after.length,
                    probe,
                });
            }
        } else if state.pause == Pause::Probing(Some(grant.id)) {
            state.pause = Pause::Open;
            state.backoffs = 0;
            observed.resumed = true;
        }
        observed
    }
}

/// Where a [`MemoryAllowance`] taking over from another backend starts.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// The sends already made.
    pub spent: Spent,
    /// A pause under way: how long it has left, and whether one call probes after it.
    pub pause: Option<(Duration, bool)>,
    /// At most this many sends per window.
    pub ceiling: Option<u64>,
}

/// A number in 0..1 that differs from call to call, to spread back-offs.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 1000) as f64 / 1000.0
}

impl Allowance for MemoryAllowance {
    fn take(&self, reserve: u64) -> Pending<'_, Taken> {
        let taken = self.take_now(reserve);
        Box::pin(std::future::ready(taken))
    }

    fn estimate(&self, need: u64) -> Pending<'_, Option<Duration>> {
        let estimate = self.estimate_now(need);
        Box::pin(std::future::ready(estimate))
    }

    fn observe(&self, grant: Grant, report: Report) -> Pending<'_, Observed> {
        let observed = self.observe_now(grant, report);
        Box::pin(std::future::ready(observed))
    }

    fn release(&self, grant: Grant, sent: bool) {
        let mut state = lock(&self.state);
        if let Some(at) = state.outstanding.remove(&grant.id)
            && !sent
        {
            state.ledger.unrecord(at);
            state.dirty = true;
        }
        if state.pause == Pause::Probing(Some(grant.id)) {
            // The probe ended without a verdict (it failed before the store answered).
            state.pause = Pause::Probing(None);
        }
    }

    fn standing(&self) -> Standing {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.pause.advance(now);
        Standing {
            remaining: state.remaining(now),
            limit: state.ledger.limit(),
            window: state.ledger.window(),
            step: state.ledger.step(),
            paused: state.pause.is_paused(),
        }
    }

    fn reconfigure(&self, limit: u64, window: Duration) {
        lock(&self.state).ledger.resize(limit, window);
    }

    fn flush(&self) {
        self.save(false);
    }
}

/// Writes the state file every `every` while the ledger changes; ends when the allowance is
/// dropped.
async fn keep(allowance: std::sync::Weak<MemoryAllowance>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(allowance) = allowance.upgrade() else {
            return;
        };
        // File I/O off the async workers.
        let _ = tokio::task::spawn_blocking(move || allowance.save(true)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(allowance: &MemoryAllowance) -> Option<Grant> {
        match allowance.take_now(0) {
            Taken::Granted { grant, .. } => Some(grant),
            Taken::Blocked { .. } => None,
        }
    }

    fn throttled() -> Report {
        Report {
            throttled: true,
            ..Report::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_throttle_of_an_older_send_never_lets_a_second_probe_go() {
        let allowance = MemoryAllowance::new(Dialect::Legacy, 10, Duration::from_secs(60), None);
        let first = take(&allowance).expect("open");
        let older = take(&allowance).expect("open");
        allowance.observe_now(first, throttled());
        allowance.release(first, true);
        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = take(&allowance).expect("the pause ended: one probe");
        assert!(probe.probe);
        // The send made before the pause comes back throttled while the probe is out.
        let observed = allowance.observe_now(older, throttled());
        assert!(
            observed.paused.is_none(),
            "a stale throttle re-armed the pause"
        );
        allowance.release(older, true);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            take(&allowance).is_none(),
            "a second probe went while one is out"
        );
        // The probe's own verdict still counts.
        allowance.observe_now(probe, Report::default());
        allowance.release(probe, true);
        assert!(take(&allowance).is_some_and(|g| !g.probe));
    }
}
