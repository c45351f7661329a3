//! The in-memory budget of one proxy process: the ledger, the store's latest report, the pause
//! after a store throttle, the write reserve, the upstream concurrency bound, and the queue of
//! waiting calls, served in arrival order by a pump task that wakes when budget may free.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::ledger::{Ledger, Spent};
use super::report::Report;
use super::{Acquire, Ask, Budget, Class, Refusal, Refused, Slot, Totals, Verdict, View};
use crate::config::{Dialect, Settings};

/// Longest back-off after 429s that stated no wait (the platform shedding load).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First back-off after such a 429.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The numbers the budget works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How the store states and enforces its budget.
    pub dialect: Dialect,
    /// Calls per window (oauth: the first guess until the store states its quota).
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// The last N slots of a window are for writes.
    pub reserve_writes: u64,
    /// Most calls waiting.
    pub max_queue: usize,
    /// Most calls at the store at once.
    pub max_concurrency: usize,
}

impl Limits {
    /// The limits the settings give.
    pub fn from_settings(settings: &Settings) -> Limits {
        let b = &settings.budget;
        Limits {
            dialect: b.dialect,
            limit: b.limit,
            window: b.window,
            reserve_writes: b.reserve_writes,
            max_queue: b.max_queue,
            max_concurrency: settings.upstream.max_concurrency,
        }
    }
}

/// The budget of one process, in memory.
#[derive(Debug)]
pub struct LocalBudget {
    state: Mutex<State>,
    wake: Arc<Notify>,
    sent: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
    store_throttles: AtomicU64,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    ledger: Ledger,
    /// The store's latest statement of what is left.
    report: Option<Held>,
    pause: Pause,
    queue: VecDeque<Waiter>,
    /// Slots granted and not yet released: when each was granted.
    outstanding: HashMap<u64, Instant>,
    next_seq: u64,
    next_waiter: u64,
    /// Header-less 429s in a row.
    backoffs: u32,
    /// True when the ledger changed since the state file was written.
    dirty: bool,
}

/// A store report and how long it holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    left: u64,
    /// The send whose answer carried it: later sends are not in `left`.
    seq: u64,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Open,
    /// Nothing goes out until `until`; then one probe if `probe`, else everything.
    Until {
        until: Instant,
        probe: bool,
    },
    /// One call may probe; `Some` while it is at the store.
    Probing(Option<u64>),
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    class: Class,
    tx: oneshot::Sender<u64>,
}

/// Why a call cannot go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocked {
    /// Nothing can go (paused, concurrency, no budget at all).
    All,
    /// Only the write reserve is left: writes may still go.
    Reserve,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    fn reserve(&self, class: Class) -> u64 {
        match class {
            Class::Read => self.limits.reserve_writes,
            Class::Write => 0,
        }
    }

    /// What is left by the smaller of the proxy's own count and the store's report (less the
    /// sends made after the answer that carried it).
    fn remaining(&mut self, now: Instant) -> u64 {
        let own = self.ledger.left(now);
        match self.report {
            Some(held) if now < held.expires => {
                let since = (self.next_seq - 1).saturating_sub(held.seq);
                own.min(held.left.saturating_sub(since))
            }
            _ => own,
        }
    }

    /// Moves a finished pause on; true when it ended.
    fn advance_pause(&mut self, now: Instant) {
        if let Pause::Until { until, probe } = self.pause {
            if now >= until {
                self.pause = if probe {
                    Pause::Probing(None)
                } else {
                    Pause::Open
                };
                if !probe {
                    tracing::info!("budget.resumed");
                }
            }
        }
    }

    fn check(&mut self, class: Class, now: Instant) -> Result<(), Blocked> {
        self.advance_pause(now);
        match self.pause {
            Pause::Until { .. } | Pause::Probing(Some(_)) => return Err(Blocked::All),
            Pause::Open | Pause::Probing(None) => {}
        }
        if self.outstanding.len() >= self.limits.max_concurrency {
            return Err(Blocked::All);
        }
        let remaining = self.remaining(now);
        if remaining > self.reserve(class) {
            Ok(())
        } else if remaining > 0 {
            Err(Blocked::Reserve)
        } else {
            Err(Blocked::All)
        }
    }

    fn grant(&mut self, now: Instant) -> u64 {
        self.ledger.record(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(seq, now);
        if self.pause == Pause::Probing(None) {
            self.pause = Pause::Probing(Some(seq));
        }
        self.dirty = true;
        seq
    }

    fn take_back(&mut self, seq: u64, sent: bool) {
        if let Some(at) = self.outstanding.remove(&seq) {
            if !sent {
                self.ledger.unrecord(at);
                self.dirty = true;
            }
        }
        if self.pause == Pause::Probing(Some(seq)) {
            // The probe ended without a verdict (it failed before the store answered).
            self.pause = Pause::Probing(None);
        }
    }

    /// Grants every waiter that may go now, in arrival order; writes may pass reads that are
    /// held back by the write reserve. Returns how many went.
    fn dispatch(&mut self, now: Instant) -> u64 {
        let mut granted = 0;
        let mut i = 0;
        while i < self.queue.len() {
            match self.check(self.queue[i].class, now) {
                Ok(()) => {
                    let Some(waiter) = self.queue.remove(i) else {
                        break;
                    };
                    let seq = self.grant(now);
                    if waiter.tx.send(seq).is_err() {
                        // The caller left between being queued and now.
                        self.take_back(seq, false);
                    } else {
                        granted += 1;
                    }
                }
                Err(Blocked::Reserve) => i += 1,
                Err(Blocked::All) => break,
            }
        }
        granted
    }

    /// When the waiter at `index` could go, at the earliest; `None` when never within a window.
    fn estimate(&mut self, index: usize, class: Class, now: Instant) -> Option<Instant> {
        let need = index as u64 + 1 + self.reserve(class);
        let mut at = self.ledger.free_at(now, need)?;
        if let Some(held) = self.report {
            if now < held.expires {
                let since = (self.next_seq - 1).saturating_sub(held.seq);
                if held.left.saturating_sub(since) < need {
                    at = at.max(held.expires);
                }
            }
        }
        if let Pause::Until { until, .. } = self.pause {
            at = at.max(until);
        }
        Some(at)
    }

    /// The next moment the queue could move without anything else happening.
    fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let mut candidates = Vec::with_capacity(3);
        if let Pause::Until { until, .. } = self.pause {
            candidates.push(until);
        }
        if let Some(held) = self.report {
            if held.expires > now {
                candidates.push(held.expires);
            }
        }
        let left = self.ledger.left(now);
        if let Some(at) = self.ledger.free_at(now, left + 1) {
            candidates.push(at);
        }
        candidates.into_iter().filter(|&t| t > now).min()
    }

    fn throttle_info(&self, reason: Refusal, retry_after: Duration) -> Refused {
        Refused {
            reason,
            retry_after,
            window: self.ledger.window(),
            quota: self.ledger.limit(),
        }
    }
}

impl LocalBudget {
    /// A budget with `limits`, and its pump task (so it must be made inside a Tokio runtime).
    pub fn new(limits: Limits) -> Arc<LocalBudget> {
        let now = Instant::now();
        let ledger = match limits.dialect {
            Dialect::Legacy => Ledger::rolling(limits.limit, limits.window),
            Dialect::Oauth => Ledger::fixed(limits.limit, limits.window, now),
        };
        let budget = Arc::new(LocalBudget {
            state: Mutex::new(State {
                limits,
                ledger,
                report: None,
                pause: Pause::Open,
                queue: VecDeque::new(),
                outstanding: HashMap::new(),
                next_seq: 1,
                next_waiter: 0,
                backoffs: 0,
                dirty: false,
            }),
            wake: Arc::new(Notify::new()),
            sent: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            store_throttles: AtomicU64::new(0),
        });
        tokio::spawn(pump(Arc::downgrade(&budget), budget.wake.clone()));
        budget
    }

    /// Restores sends from a state file (see [`super::persist`]).
    pub fn restore(&self, spent: &Spent) {
        lock(&self.state).ledger.restore(Instant::now(), spent);
        self.wake.notify_one();
    }

    /// What the ledger holds, for the state file; with `if_changed`, `None` when nothing
    /// changed since the last call.
    pub fn ledger_snapshot(&self, if_changed: bool) -> Option<Spent> {
        let mut state = lock(&self.state);
        if if_changed && !state.dirty {
            return None;
        }
        state.dirty = false;
        state.ledger.used(Instant::now());
        Some(state.ledger.spent())
    }

    /// Applies new limits (a config reload) without losing the ledger.
    pub fn set_limits(&self, limits: Limits) {
        let mut state = lock(&self.state);
        state.ledger.resize(limits.limit, limits.window);
        state.limits = limits;
        drop(state);
        self.wake.notify_one();
    }

    async fn acquire_slot(self: Arc<Self>, ask: Ask) -> Result<Slot, Refused> {
        let (id, rx) = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            // The common case: nobody waits and the budget allows.
            if state.queue.is_empty() && state.check(ask.class, now).is_ok() {
                let seq = state.grant(now);
                drop(state);
                self.sent.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot::new(self.clone(), seq));
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            let (tx, mut rx) = oneshot::channel();
            let waiter = Waiter {
                id,
                class: ask.class,
                tx,
            };
            if ask.resend {
                state.queue.push_front(waiter);
            } else {
                if state.queue.len() >= state.limits.max_queue {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    let retry = state.ledger.step();
                    return Err(state.throttle_info(Refusal::QueueFull, retry));
                }
                state.queue.push_back(waiter);
            }
            state.dispatch(now);
            if let Ok(seq) = rx.try_recv() {
                self.sent.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot::new(self.clone(), seq));
            }
            let index = state.queue.iter().position(|w| w.id == id).unwrap_or(0);
            match state.estimate(index, ask.class, now) {
                Some(at) if at <= ask.deadline => {}
                estimate => {
                    state.queue.retain(|w| w.id != id);
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    let retry = estimate.map_or(state.ledger.step(), |at| at - now);
                    return Err(state.throttle_info(Refusal::TooLate, retry));
                }
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
            (id, rx)
        };
        self.wake.notify_one();

        let mut waiting = Waiting {
            budget: &self,
            id,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("set above");
        match tokio::time::timeout_at(ask.deadline, rx).await {
            Ok(Ok(seq)) => {
                waiting.rx = None;
                self.sent.fetch_add(1, Ordering::Relaxed);
                Ok(Slot::new(self.clone(), seq))
            }
            _ => {
                // Out of time: leave the queue, unless the grant came in at the last moment.
                let mut state = lock(&self.state);
                state.queue.retain(|w| w.id != id);
                if let Some(Ok(seq)) = waiting.rx.take().map(|mut rx| rx.try_recv()) {
                    drop(state);
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(Slot::new(self.clone(), seq));
                }
                self.refused.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let retry = state
                    .estimate(0, Class::Write, now)
                    .map_or(state.ledger.step(), |at| at - now);
                Err(state.throttle_info(Refusal::TooLate, retry))
            }
        }
    }

    fn pause_for(&self, state: &mut State, report: &Report, now: Instant) {
        let (until, probe, reason) = match state.limits.dialect {
            Dialect::Legacy => {
                // The store said nothing about when: wait until its window has moved on, at
                // least one step, then probe with one call.
                let step = state.ledger.step();
                let own = if state.ledger.left(now) == 0 {
                    state.ledger.free_at(now, 1)
                } else {
                    None
                };
                (own.unwrap_or(now).max(now + step), true, "509")
            }
            Dialect::Oauth => match report.stated_wait() {
                Some(wait) => {
                    state.backoffs = 0;
                    (now + wait.max(Duration::from_millis(1)), false, "429")
                }
                None => {
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << state.backoffs.min(6))
                        .min(MAX_BACKOFF);
                    state.backoffs += 1;
                    (
                        now + jitter(backoff),
                        true,
                        "429 without a stated wait: backing off",
                    )
                }
            },
        };
        state.pause = Pause::Until { until, probe };
        tracing::warn!(
            reason,
            for_ms = (until - now).as_millis() as u64,
            probe,
            "budget.paused"
        );
    }
}

/// Spreads a back-off by up to a quarter either way.
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let unit = (h.finish() % 1000) as f64 / 1000.0; // 0..1
    d.mul_f64(0.75 + unit * 0.5)
}

/// Removes a waiter whose caller went away, giving back a grant it never took.
struct Waiting<'a> {
    budget: &'a LocalBudget,
    id: u64,
    rx: Option<oneshot::Receiver<u64>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut state = lock(&self.budget.state);
        state.queue.retain(|w| w.id != self.id);
        if let Ok(seq) = rx.try_recv() {
            state.take_back(seq, false);
            drop(state);
            self.budget.wake.notify_one();
        }
    }
}

/// Serves the queue whenever budget may have freed: on a notification (a slot released, a
/// store report, a new waiter) or when the next send expires, a report lapses or a pause ends.
/// Holds the budget only weakly, and ends when the budget is dropped.
async fn pump(budget: Weak<LocalBudget>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(budget) = budget.upgrade() else {
                return;
            };
            let mut state = lock(&budget.state);
            let now = Instant::now();
            state.dispatch(now);
            state.next_wake(now)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl Drop for LocalBudget {
    fn drop(&mut self) {
        // Lets the pump see that the budget is gone.
        self.wake.notify_one();
    }
}

impl Budget for LocalBudget {
    fn acquire(self: Arc<Self>, ask: Ask) -> Acquire {
        Box::pin(self.acquire_slot(ask))
    }

    fn release(&self, seq: u64, sent: bool) {
        lock(&self.state).take_back(seq, sent);
        self.wake.notify_one();
    }

    fn observe(&self, seq: u64, status: u16, headers: &HeaderMap) -> Verdict {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let report = Report::read(state.limits.dialect, status, headers);
        if let (Some(quota), Some(window), Some(reset)) =
            (report.quota, report.window, report.reset)
        {
            state.ledger.sync_fixed(quota, window, now + reset);
        }
        if let Some(left) = report.left {
            let holds = match state.limits.dialect {
                Dialect::Legacy => state.ledger.step(),
                Dialect::Oauth => report.reset.unwrap_or_else(|| state.ledger.step()),
            };
            let newer = state
                .report
                .is_none_or(|held| seq >= held.seq || now >= held.expires);
            if newer {
                state.report = Some(Held {
                    left,
                    seq,
                    expires: now + holds,
                });
            }
        }
        let verdict = if report.throttled {
            self.store_throttles.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(status, seq, "budget.throttled_by_store");
            let already = matches!(state.pause, Pause::Until { until, .. } if until > now);
            if !already || state.pause == Pause::Probing(Some(seq)) {
                self.pause_for(&mut state, &report, now);
            }
            Verdict::Resend
        } else {
            if state.pause == Pause::Probing(Some(seq)) {
                state.pause = Pause::Open;
                state.backoffs = 0;
                tracing::info!("budget.resumed");
            }
            Verdict::Keep
        };
        drop(state);
        self.wake.notify_one();
        verdict
    }

    fn view(&self) -> View {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.advance_pause(now);
        View {
            remaining: state.remaining(now),
            limit: state.ledger.limit(),
            window: state.ledger.window(),
            queued: state.queue.len(),
            in_flight: state.outstanding.len(),
            paused: !matches!(state.pause, Pause::Open),
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            store_throttles: self.store_throttles.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limits(limit: u64, window_secs: u64) -> Limits {
        Limits {
            dialect: Dialect::Legacy,
            limit,
            window: Duration::from_secs(window_secs),
            reserve_writes: 0,
            max_queue: 100,
            max_concurrency: 100,
        }
    }

    fn ask(class: Class, wait: Duration) -> Ask {
        Ask {
            class,
            deadline: Instant::now() + wait,
            resend: false,
        }
    }

    async fn get(b: &Arc<LocalBudget>, class: Class, wait: Duration) -> Result<Slot, Refused> {
        b.clone().acquire(ask(class, wait)).await
    }

    fn sent(mut slot: Slot) -> Slot {
        slot.mark_sent();
        slot
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_a_send_expires_then_goes() {
        let b = LocalBudget::new(limits(1, 60));
        let _first = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let started = Instant::now();
        let second = get(&b, Class::Read, Duration::from_secs(120))
            .await
            .unwrap();
        // window + one step (60 s + 1 s)
        assert_eq!(started.elapsed(), Duration::from_secs(61));
        assert_eq!(second.seq(), 2);
        assert_eq!(b.totals().queued, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_when_the_wait_would_pass_the_deadline() {
        let b = LocalBudget::new(limits(1, 60));
        let _first = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let started = Instant::now();
        let refused = get(&b, Class::Read, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(refused.reason, Refusal::TooLate);
        assert_eq!(refused.retry_after, Duration::from_secs(61));
        assert_eq!(b.view().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let mut l = limits(1, 60);
        l.max_queue = 1;
        let b = LocalBudget::new(l);
        let _first = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let waiting = tokio::spawn({
            let b = b.clone();
            async move {
                get(&b, Class::Read, Duration::from_secs(300))
                    .await
                    .map(|s| s.seq())
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.view().queued, 1);
        let refused = get(&b, Class::Read, Duration::from_secs(300))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Refusal::QueueFull);
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_keep_off_the_write_reserve() {
        let mut l = limits(5, 60);
        l.reserve_writes = 2;
        let b = LocalBudget::new(l);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(sent(get(&b, Class::Read, Duration::ZERO).await.unwrap()));
        }
        assert_eq!(b.view().remaining, 2);
        assert!(get(&b, Class::Read, Duration::from_secs(1)).await.is_err());
        // A write queued behind a waiting read still goes.
        let read = tokio::spawn({
            let b = b.clone();
            async move {
                get(&b, Class::Read, Duration::from_secs(300))
                    .await
                    .map(|s| s.seq())
            }
        });
        tokio::task::yield_now().await;
        held.push(sent(get(&b, Class::Write, Duration::ZERO).await.unwrap()));
        held.push(sent(get(&b, Class::Write, Duration::ZERO).await.unwrap()));
        assert!(get(&b, Class::Write, Duration::ZERO).await.is_err());
        assert_eq!(b.view().remaining, 0);
        assert!(
            read.await.unwrap().is_ok(),
            "the read goes once the window frees"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_the_queue_spends_nothing() {
        let b = LocalBudget::new(limits(1, 60));
        let first = get(&b, Class::Read, Duration::ZERO).await.unwrap();
        let waiting = tokio::spawn({
            let b = b.clone();
            async move {
                get(&b, Class::Read, Duration::from_secs(300))
                    .await
                    .map(|s| s.seq())
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.view().queued, 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(b.view().queued, 0);
        // The first slot was never sent: giving it back frees the budget.
        drop(first);
        assert_eq!(b.view().remaining, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_by_slots_in_use() {
        let mut l = limits(100, 60);
        l.max_concurrency = 2;
        let b = LocalBudget::new(l);
        let a = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let _b2 = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let third = tokio::spawn({
            let b = b.clone();
            async move {
                get(&b, Class::Read, Duration::from_secs(5))
                    .await
                    .map(|s| s.seq())
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.view().in_flight, 2);
        drop(a);
        assert_eq!(third.await.unwrap().unwrap(), 3);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_report_caps_the_view_until_the_next_step() {
        let b = LocalBudget::new(limits(100, 60));
        let s = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let _other = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        // Other clients spent most of it: the store says 10 left after call 1.
        assert_eq!(
            b.observe(s.seq(), 200, &headers(&[("x-bc-apilimit-remaining", "10")])),
            Verdict::Keep
        );
        assert_eq!(b.view().remaining, 9, "10 left, less the one sent since");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            b.view().remaining,
            98,
            "after a step the own ledger governs again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_509_pauses_everything_then_one_call_probes() {
        let b = LocalBudget::new(limits(100, 60));
        let s = sent(get(&b, Class::Write, Duration::ZERO).await.unwrap());
        let verdict = b.observe(s.seq(), 509, &headers(&[("x-bc-apilimit-remaining", "0")]));
        assert_eq!(verdict, Verdict::Resend);
        drop(s);
        assert!(b.view().paused);
        let started = Instant::now();
        let probe = sent(get(&b, Class::Read, Duration::from_secs(10)).await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_secs(1), "paused one step");
        // While the probe is out, nothing else goes.
        assert!(
            get(&b, Class::Read, Duration::from_millis(500))
                .await
                .is_err()
        );
        assert_eq!(
            b.observe(
                probe.seq(),
                200,
                &headers(&[("x-bc-apilimit-remaining", "50")])
            ),
            Verdict::Keep
        );
        assert!(!b.view().paused);
        let _next = get(&b, Class::Read, Duration::ZERO).await.unwrap();
        assert_eq!(b.totals().store_throttles, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_until_its_stated_reset() {
        let mut l = limits(150, 30);
        l.dialect = Dialect::Oauth;
        let b = LocalBudget::new(l);
        let s = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let h = headers(&[
            ("x-rate-limit-time-window-ms", "30000"),
            ("x-rate-limit-time-reset-ms", "2500"),
            ("x-rate-limit-requests-quota", "450"),
            ("x-rate-limit-requests-left", "0"),
            ("x-retry-after", "4"),
        ]);
        assert_eq!(b.observe(s.seq(), 429, &h), Verdict::Resend);
        drop(s);
        let started = Instant::now();
        let _ = get(&b, Class::Read, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(4),
            "the longer of reset and X-Retry-After"
        );
        assert_eq!(
            b.view().limit,
            450,
            "the store's stated quota replaces the config's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bare_429_backs_off_harder_each_time() {
        let mut l = limits(150, 30);
        l.dialect = Dialect::Oauth;
        let b = LocalBudget::new(l);
        let mut waits = Vec::new();
        for _ in 0..3 {
            let s = sent(
                get(&b, Class::Read, Duration::from_secs(120))
                    .await
                    .unwrap(),
            );
            assert_eq!(b.observe(s.seq(), 429, &HeaderMap::new()), Verdict::Resend);
            drop(s);
            let started = Instant::now();
            let probe = sent(
                get(&b, Class::Read, Duration::from_secs(120))
                    .await
                    .unwrap(),
            );
            waits.push(started.elapsed());
            drop(probe);
        }
        assert!(
            waits[0] >= Duration::from_millis(750) && waits[0] <= Duration::from_millis(1250),
            "{waits:?}"
        );
        assert!(waits[1] > waits[0] && waits[2] > waits[1], "{waits:?}");
    }
}
