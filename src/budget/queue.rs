//! The queue in front of every allowance: calls wait in arrival order (a throttled call goes
//! back to the head) until the allowance grants a send and an upstream slot is free, within
//! their deadline and `max_queue`; reads keep off the write reserve and writes may pass reads
//! held back by it. One dispatcher at a time serves the queue: a task of its own when time or
//! a release may free budget, and each arriving call once, so a call that can go at once does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::allowance::{Allowance, Grant, Observed, Taken};
use super::policy::Blocked;
use super::{Ask, Class, Refusal, Refused, Totals, Verdict, View};
use crate::config;
use crate::dialect::{Dialect, Report};

/// The numbers the queue works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// The last N sends of a window are for writes.
    pub reserve_writes: u64,
    /// Most calls waiting.
    pub max_queue: usize,
    /// Most calls at the store at once.
    pub max_concurrency: usize,
}

impl QueueLimits {
    /// The limits of the `[budget]` and `[upstream]` sections.
    pub fn new(budget: &config::Budget, upstream: &config::Upstream) -> QueueLimits {
        QueueLimits {
            reserve_writes: budget.reserve_writes,
            max_queue: budget.max_queue,
            max_concurrency: upstream.max_concurrency,
        }
    }
}

/// The store's budget as the pipeline sees it. Cloning it is cheap; clones share the queue.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    allowance: Arc<dyn Allowance>,
    dialect: Dialect,
    state: Mutex<State>,
    wake: Arc<Notify>,
    /// Held by whoever serves the queue, so one dispatcher runs at a time.
    dispatching: tokio::sync::Mutex<()>,
    sent: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
    store_throttles: AtomicU64,
    /// What the store last reported left of its budget ([`NO_REPORT`] before it did).
    reported: AtomicU64,
    /// What the log has told of the store's throttling and of the queue.
    story: Mutex<Story>,
}

/// `Inner::reported` before the store reported anything.
const NO_REPORT: u64 = u64::MAX;
/// How many of the store's latest throttles the status keeps.
const RECENT_THROTTLES: usize = 10;

/// How often a throttle episode's probes are summed up in a `budget.probe` event.
const PROBE_SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// How often, at most, `budget.queueing` says calls are waiting.
const QUEUEING_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Story {
    /// The store's throttling under way, from its first 509/429 until sends resume.
    episode: Option<Episode>,
    /// When `budget.queueing` was last written.
    queueing_said: Option<Instant>,
    /// When the latest pause this process began ends.
    paused_until: Option<Instant>,
    /// The store's latest throttles, oldest first.
    recent: VecDeque<StoreThrottle>,
}

/// One 509/429 of the store, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreThrottle {
    /// When it came.
    pub at: std::time::SystemTime,
    /// 509 or 429.
    pub status: u16,
    /// The pause it began (none when sends were already paused).
    pub pause: Option<Duration>,
    /// Why sends paused, as the `budget.paused` event says.
    pub reason: Option<&'static str>,
}

#[derive(Debug)]
struct Episode {
    began: Instant,
    /// Throttles by the store since it began (the first included), and those of probes.
    throttles: u64,
    probes: u64,
    /// When the probes were last summed up.
    said: Instant,
    /// Calls queued before it began (the count since start), to tell how many waited.
    queued_before: u64,
}

fn lock_story(m: &Mutex<Story>) -> MutexGuard<'_, Story> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct State {
    limits: QueueLimits,
    waiters: VecDeque<Waiter>,
    /// Grants not yet released (calls at the store, or about to be).
    in_flight: usize,
    next_waiter: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    class: Class,
    tx: oneshot::Sender<Grant>,
    /// When it began to wait.
    since: Instant,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Budget {
    /// The queue in front of `allowance`, and its dispatcher task (so it must be made inside a
    /// Tokio runtime).
    pub fn new(dialect: Dialect, limits: QueueLimits, allowance: Arc<dyn Allowance>) -> Budget {
        let inner = Arc::new(Inner {
            allowance,
            dialect,
            state: Mutex::new(State {
                limits,
                waiters: VecDeque::new(),
                in_flight: 0,
                next_waiter: 0,
            }),
            wake: Arc::new(Notify::new()),
            dispatching: tokio::sync::Mutex::new(()),
            sent: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            store_throttles: AtomicU64::new(0),
            reported: AtomicU64::new(NO_REPORT),
            story: Mutex::new(Story::default()),
        });
        inner.allowance.attach(inner.wake.clone());
        tokio::spawn(pump(Arc::downgrade(&inner), inner.wake.clone()));
        Budget { inner }
    }

    /// The dialect the store speaks.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// A slot for one send, waiting in arrival order until budget allows; refused at once when
    /// the queue is full or the budget would not free by the deadline. Dropping the future
    /// leaves the queue and spends nothing.
    pub async fn acquire(&self, ask: Ask) -> Result<Slot, Refused> {
        let inner = &self.inner;
        let reserve = inner.reserve(ask.class);
        // The common case: nobody waits and the budget allows.
        if inner.enter_if_idle() {
            match inner.allowance.take(reserve).await {
                Taken::Granted { grant, resumed } => {
                    inner.log_resumed(resumed);
                    return Ok(self.slot(grant));
                }
                Taken::Blocked { .. } => inner.leave(),
            }
        }
        let queued = {
            let mut state = lock(&inner.state);
            if !ask.resend && state.waiters.len() >= state.limits.max_queue {
                Err(state.waiters.len() as u64)
            } else {
                let id = state.next_waiter;
                state.next_waiter += 1;
                let (tx, rx) = oneshot::channel();
                let waiter = Waiter {
                    id,
                    class: ask.class,
                    tx,
                    since: Instant::now(),
                };
                if ask.resend {
                    state.waiters.push_front(waiter);
                } else {
                    state.waiters.push_back(waiter);
                }
                Ok((id, rx))
            }
        };
        let mut waiting = match queued {
            Ok((id, rx)) => Waiting {
                inner,
                id,
                rx: Some(rx),
            },
            Err(ahead) => {
                // Told to come back when the calls ahead of it could all have gone.
                let wait = inner.allowance.estimate(ahead + 1 + reserve).await;
                let retry = wait.unwrap_or_else(|| inner.allowance.standing().step);
                return Err(inner.refuse(Refusal::QueueFull, retry));
            }
        };
        inner.dispatch().await;
        if let Some(grant) = waiting.granted() {
            return Ok(self.slot(grant));
        }
        // Refuse at once when the budget frees too late for the deadline.
        let need = waiting.ahead(ask.class) as u64 + 1 + reserve;
        let estimate = inner.allowance.estimate(need).await;
        if estimate.is_none_or(|wait| Instant::now() + wait > ask.deadline) {
            if let Some(grant) = waiting.leave() {
                return Ok(self.slot(grant));
            }
            let retry = estimate.unwrap_or_else(|| inner.allowance.standing().step);
            return Err(inner.refuse(Refusal::TooLate, retry));
        }
        inner.queued.fetch_add(1, Ordering::Relaxed);
        inner.tell_queueing();
        inner.wake.notify_one();
        let rx = waiting.rx.as_mut().expect("set when queued");
        if let Ok(Ok(grant)) = tokio::time::timeout_at(ask.deadline, rx).await {
            waiting.rx = None;
            return Ok(self.slot(grant));
        }
        // Out of time: leave the queue, unless the grant came in at the last moment.
        if let Some(grant) = waiting.leave() {
            return Ok(self.slot(grant));
        }
        let retry = inner
            .allowance
            .estimate(1)
            .await
            .unwrap_or_else(|| inner.allowance.standing().step);
        Err(inner.refuse(Refusal::TooLate, retry))
    }

    fn slot(&self, grant: Grant) -> Slot {
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
        Slot {
            inner: self.inner.clone(),
            grant,
            sent: false,
        }
    }

    /// Learns from the store's answer to a send: its report of what is left, and whether it
    /// throttled the call (then sends pause, and the call must go again).
    pub async fn observe(&self, grant: Grant, status: u16, headers: &HeaderMap) -> Verdict {
        let inner = &self.inner;
        let report = Report::read(inner.dialect, status, headers);
        if let Some(left) = report.left {
            inner
                .reported
                .store(left.min(NO_REPORT - 1), Ordering::Relaxed);
        }
        if report.throttled {
            inner.store_throttles.fetch_add(1, Ordering::Relaxed);
        }
        let Observed { paused, resumed } = inner.allowance.observe(grant, report).await;
        if report.throttled {
            inner.tell_throttle(status, grant, paused);
        }
        inner.log_resumed(resumed);
        inner.wake.notify_one();
        if report.throttled {
            Verdict::Resend
        } else {
            Verdict::Keep
        }
    }

    /// The budget now.
    pub fn view(&self) -> View {
        let standing = self.inner.allowance.standing();
        let (queued, in_flight) = {
            let state = lock(&self.inner.state);
            (state.waiters.len(), state.in_flight)
        };
        let pause_left = match standing.paused {
            true => lock_story(&self.inner.story)
                .paused_until
                .map(|until| until.saturating_duration_since(Instant::now())),
            false => None,
        };
        let reported = self.inner.reported.load(Ordering::Relaxed);
        View {
            remaining: standing.remaining,
            limit: standing.limit,
            window: standing.window,
            queued,
            in_flight,
            paused: standing.paused,
            pause_left,
            reported: (reported != NO_REPORT).then_some(reported),
        }
    }

    /// The store's latest 509/429 answers to this process, oldest first.
    pub fn recent_throttles(&self) -> Vec<StoreThrottle> {
        lock_story(&self.inner.story)
            .recent
            .iter()
            .cloned()
            .collect()
    }

    /// Totals since start.
    pub fn totals(&self) -> Totals {
        let i = &self.inner;
        Totals {
            sent: i.sent.load(Ordering::Relaxed),
            queued: i.queued.load(Ordering::Relaxed),
            refused: i.refused.load(Ordering::Relaxed),
            store_throttles: i.store_throttles.load(Ordering::Relaxed),
        }
    }

    /// Takes the numbers of a reloaded configuration (the dialect and the backend stay).
    pub fn reconfigure(&self, budget: &config::Budget, upstream: &config::Upstream) {
        lock(&self.inner.state).limits = QueueLimits::new(budget, upstream);
        self.inner
            .allowance
            .reconfigure(budget.limit, budget.window);
        self.inner.wake.notify_one();
    }

    /// Saves what must survive a restart (at shutdown).
    pub fn flush(&self) {
        self.inner.allowance.flush();
    }
}

impl Inner {
    fn reserve(&self, class: Class) -> u64 {
        match class {
            Class::Read => lock(&self.state).limits.reserve_writes,
            Class::Write => 0,
        }
    }

    /// Takes an upstream slot when nobody waits and one is free.
    fn enter_if_idle(&self) -> bool {
        let mut state = lock(&self.state);
        let idle = state.waiters.is_empty() && state.in_flight < state.limits.max_concurrency;
        if idle {
            state.in_flight += 1;
        }
        idle
    }

    /// Gives an upstream slot back.
    fn leave(&self) {
        lock(&self.state).in_flight -= 1;
        self.wake.notify_one();
    }

    fn refuse(&self, reason: Refusal, retry_after: Duration) -> Refused {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let standing = self.allowance.standing();
        Refused {
            reason,
            retry_after,
            window: standing.window,
            quota: standing.limit,
        }
    }

    /// The story of a throttle episode: its first 509/429 and the pause it started are told
    /// at once (WARN); the probes that meet the store still refusing are summed up every
    /// [`PROBE_SUMMARY_EVERY`] (`budget.probe`), not told one by one.
    fn tell_throttle(&self, status: u16, grant: Grant, paused: Option<super::allowance::Paused>) {
        let now = Instant::now();
        let mut story = lock_story(&self.story);
        if let Some(p) = paused {
            story.paused_until = Some(now + p.length);
        }
        if story.recent.len() == RECENT_THROTTLES {
            story.recent.pop_front();
        }
        story.recent.push_back(StoreThrottle {
            at: std::time::SystemTime::now(),
            status,
            pause: paused.map(|p| p.length),
            reason: paused.map(|p| p.reason),
        });
        match &mut story.episode {
            None => {
                tracing::warn!(status, send = grant.id.0, "budget.throttled_by_store");
                if let Some(p) = paused {
                    tracing::warn!(
                        reason = p.reason,
                        for_ms = p.length.as_millis() as u64,
                        probe = p.probe,
                        "budget.paused"
                    );
                }
                story.episode = Some(Episode {
                    began: now,
                    throttles: 1,
                    probes: u64::from(grant.probe),
                    said: now,
                    queued_before: self.queued.load(Ordering::Relaxed),
                });
            }
            Some(episode) => {
                episode.throttles += 1;
                episode.probes += u64::from(grant.probe);
                if now.duration_since(episode.said) >= PROBE_SUMMARY_EVERY {
                    episode.said = now;
                    tracing::warn!(
                        status,
                        throttles = episode.throttles,
                        probes = episode.probes,
                        last = "throttled",
                        paused_for_ms = now.duration_since(episode.began).as_millis() as u64,
                        next_ms = paused.map(|p| p.length.as_millis() as u64),
                        "budget.probe"
                    );
                }
            }
        }
    }

    /// Sends are open again: one `budget.resumed`, with how long the episode lasted, its
    /// throttles and probes, and how many calls had to wait meanwhile.
    fn log_resumed(&self, resumed: bool) {
        if !resumed {
            return;
        }
        match lock_story(&self.story).episode.take() {
            Some(episode) => tracing::info!(
                after_ms = episode.began.elapsed().as_millis() as u64,
                throttles = episode.throttles,
                probes = episode.probes,
                waited = self.queued.load(Ordering::Relaxed) - episode.queued_before,
                "budget.resumed"
            ),
            None => tracing::info!("budget.resumed"),
        }
    }

    /// Calls are waiting: told when they start to, then at most every [`QUEUEING_EVERY`]
    /// while any wait (`depth`, and how long the oldest has waited).
    fn tell_queueing(&self) {
        let now = Instant::now();
        let mut story = lock_story(&self.story);
        if story
            .queueing_said
            .is_some_and(|at| now.duration_since(at) < QUEUEING_EVERY)
        {
            return;
        }
        let (depth, oldest) = {
            let state = lock(&self.state);
            let oldest = state.waiters.iter().map(|w| w.since).min();
            (
                state.waiters.len(),
                oldest.map_or(Duration::ZERO, |at| now - at),
            )
        };
        if depth == 0 {
            return;
        }
        story.queueing_said = Some(now);
        tracing::info!(
            depth,
            oldest_wait_ms = oldest.as_millis() as u64,
            "budget.queueing"
        );
    }

    /// Serves the queue once: grants every waiter that may go now, in arrival order (writes
    /// may pass reads held back by the write reserve). Returns when asking again may succeed,
    /// if time alone can free budget.
    async fn dispatch(&self) -> Option<Duration> {
        let _turn = self.dispatching.lock().await;
        let mut reads_blocked = false;
        let mut retry_in = None;
        loop {
            let (id, class) = {
                let mut state = lock(&self.state);
                if state.in_flight >= state.limits.max_concurrency {
                    return None; // a release wakes the dispatcher
                }
                let next = state
                    .waiters
                    .iter()
                    .find(|w| !(reads_blocked && w.class == Class::Read))
                    .map(|w| (w.id, w.class));
                let Some(next) = next else {
                    return retry_in;
                };
                state.in_flight += 1;
                next
            };
            match self.allowance.take(self.reserve(class)).await {
                Taken::Granted { grant, resumed } => {
                    self.log_resumed(resumed);
                    self.hand_over(id, grant);
                }
                Taken::Blocked { why, retry_in: at } => {
                    lock(&self.state).in_flight -= 1;
                    retry_in = at;
                    if why == Blocked::Reserve && class == Class::Read {
                        reads_blocked = true;
                        continue;
                    }
                    return retry_in;
                }
            }
        }
    }

    /// Gives a grant to waiter `id`; gives it back if the waiter left meanwhile.
    fn hand_over(&self, id: u64, grant: Grant) {
        let mut state = lock(&self.state);
        let unclaimed = match state.waiters.iter().position(|w| w.id == id) {
            Some(i) => state.waiters.remove(i).and_then(|w| w.tx.send(grant).err()),
            None => Some(grant),
        };
        if let Some(grant) = unclaimed {
            state.in_flight -= 1;
            drop(state);
            self.allowance.release(grant, false);
        }
    }

    fn release(&self, grant: Grant, sent: bool) {
        lock(&self.state).in_flight -= 1;
        self.allowance.release(grant, sent);
        self.wake.notify_one();
    }
}

/// A call in the queue. Dropped (its caller went away, or gave up), it leaves the queue and
/// gives back a grant it never took.
struct Waiting<'a> {
    inner: &'a Inner,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Waiting<'_> {
    /// The grant, if one arrived.
    fn granted(&mut self) -> Option<Grant> {
        let grant = self.rx.as_mut()?.try_recv().ok()?;
        self.rx = None;
        Some(grant)
    }

    /// Calls ahead of this one that must go before it: all of them for a read; for a write,
    /// the writes (reads ahead of it are held back by the write reserve when budget is short,
    /// and the write passes them).
    fn ahead(&self, class: Class) -> usize {
        let state = lock(&self.inner.state);
        let ahead = state.waiters.iter().take_while(|w| w.id != self.id);
        match class {
            Class::Read => ahead.count(),
            Class::Write => ahead.filter(|w| w.class == Class::Write).count(),
        }
    }

    /// Leaves the queue; returns a grant that arrived meanwhile (it is the caller's).
    fn leave(&mut self) -> Option<Grant> {
        let mut state = lock(&self.inner.state);
        state.waiters.retain(|w| w.id != self.id);
        drop(state);
        self.rx.take()?.try_recv().ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.rx.is_some()
            && let Some(grant) = self.leave()
        {
            self.inner.release(grant, false);
        }
    }
}

/// Serves the queue whenever budget may have freed: on a notification (a slot released, a
/// store report, a new waiter) or when the allowance says time will free some. Holds the
/// budget only weakly, and ends when it is dropped.
async fn pump(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let retry_in = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.dispatch().await
        };
        match retry_in {
            Some(wait) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the pump see that the budget is gone.
        self.wake.notify_one();
    }
}

/// The right to send one call upstream, held until its answer is read; dropping it frees
/// the upstream slot (and gives the send back if it never went out).
pub struct Slot {
    inner: Arc<Inner>,
    grant: Grant,
    sent: bool,
}

impl Slot {
    /// The send this slot is for.
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// Marks the call as gone to the store: the budget keeps counting it.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("grant", &self.grant)
            .field("sent", &self.sent)
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.release(self.grant, self.sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::memory::MemoryAllowance;
    use crate::headers::test_map as headers;

    /// The numbers of a test budget: the allowance's and the queue's.
    struct Limits {
        dialect: Dialect,
        limit: u64,
        window: Duration,
        reserve_writes: u64,
        max_queue: usize,
        max_concurrency: usize,
    }

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

    /// A queue in front of an in-memory allowance.
    fn budget(l: Limits) -> Budget {
        let allowance = MemoryAllowance::new(l.dialect, l.limit, l.window, None);
        let queue = QueueLimits {
            reserve_writes: l.reserve_writes,
            max_queue: l.max_queue,
            max_concurrency: l.max_concurrency,
        };
        Budget::new(l.dialect, queue, allowance)
    }

    fn ask(class: Class, wait: Duration) -> Ask {
        Ask {
            class,
            deadline: Instant::now() + wait,
            resend: false,
            client: None,
        }
    }

    async fn get(b: &Budget, class: Class, wait: Duration) -> Result<Slot, Refused> {
        b.acquire(ask(class, wait)).await
    }

    fn seq(slot: &Slot) -> u64 {
        slot.grant().id.0
    }

    /// A read waiting in a task of its own; its send's id when it gets one.
    fn spawn_read(b: &Budget, wait: Duration) -> tokio::task::JoinHandle<Result<u64, Refused>> {
        let b = b.clone();
        tokio::spawn(async move { get(&b, Class::Read, wait).await.map(|s| seq(&s)) })
    }

    fn sent(mut slot: Slot) -> Slot {
        slot.mark_sent();
        slot
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_a_send_expires_then_goes() {
        let b = budget(limits(1, 60));
        let _first = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let started = Instant::now();
        let second = get(&b, Class::Read, Duration::from_secs(120))
            .await
            .unwrap();
        // window + one step (60 s + 1 s)
        assert_eq!(started.elapsed(), Duration::from_secs(61));
        assert_eq!(seq(&second), 2);
        assert_eq!(b.totals().queued, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_when_the_wait_would_pass_the_deadline() {
        let b = budget(limits(1, 60));
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
        let b = budget(l);
        let _first = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let waiting = spawn_read(&b, Duration::from_secs(300));
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
        let b = budget(l);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(sent(get(&b, Class::Read, Duration::ZERO).await.unwrap()));
        }
        assert_eq!(b.view().remaining, 2);
        assert!(get(&b, Class::Read, Duration::from_secs(1)).await.is_err());
        // A write queued behind a waiting read still goes.
        let read = spawn_read(&b, Duration::from_secs(300));
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
        let b = budget(limits(1, 60));
        let first = get(&b, Class::Read, Duration::ZERO).await.unwrap();
        let waiting = spawn_read(&b, Duration::from_secs(300));
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
        let b = budget(l);
        let a = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let _b2 = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let third = spawn_read(&b, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.view().in_flight, 2);
        drop(a);
        assert_eq!(third.await.unwrap().unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_report_caps_the_view_until_the_next_step() {
        let b = budget(limits(100, 60));
        let s = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let _other = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        // Other clients spent most of it: the store says 10 left after call 1.
        assert_eq!(
            b.observe(
                s.grant(),
                200,
                &headers(&[("x-bc-apilimit-remaining", "10")])
            )
            .await,
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
        let b = budget(limits(100, 60));
        let s = sent(get(&b, Class::Write, Duration::ZERO).await.unwrap());
        let verdict = b
            .observe(
                s.grant(),
                509,
                &headers(&[("x-bc-apilimit-remaining", "0")]),
            )
            .await;
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
                probe.grant(),
                200,
                &headers(&[("x-bc-apilimit-remaining", "50")])
            )
            .await,
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
        let b = budget(l);
        let s = sent(get(&b, Class::Read, Duration::ZERO).await.unwrap());
        let h = headers(&[
            ("x-rate-limit-time-window-ms", "30000"),
            ("x-rate-limit-time-reset-ms", "2500"),
            ("x-rate-limit-requests-quota", "450"),
            ("x-rate-limit-requests-left", "0"),
            ("x-retry-after", "4"),
        ]);
        assert_eq!(b.observe(s.grant(), 429, &h).await, Verdict::Resend);
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
        let b = budget(l);
        let mut waits = Vec::new();
        for _ in 0..3 {
            let s = sent(
                get(&b, Class::Read, Duration::from_secs(120))
                    .await
                    .unwrap(),
            );
            assert_eq!(
                b.observe(s.grant(), 429, &HeaderMap::new()).await,
                Verdict::Resend
            );
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
