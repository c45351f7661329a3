//! The shared budget: an [`Allowance`] whose ledger, store report and pause live in Redis, so
//! that every process of the cluster spends one budget. Each decision is one run of
//! `ledger.lua` (atomic, on Redis's clock), which applies the rules of `budget::policy`.
//!
//! Every process also counts its own sends on its own clock. While Redis is away it spends
//! from a [`MemoryAllowance`] seeded with them: at most `limit / N` per window (N: the larger
//! of `expected_instances` and the instances seen lately), and no more than the budget the
//! cluster had left when it was last seen. When Redis is back (possibly empty) it adds its
//! sends back before it sends anything more, and keeps to its share until the instances it
//! saw before have rejoined too (or a window has passed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Arg, Cluster, Down, int, text};
use crate::budget::allowance::{
    Allowance, Grant, Observed, Paused, Pending, SendId, Standing, Taken,
};
use crate::budget::ledger::{Ledger, STEPS, Spent};
use crate::budget::memory::{MemoryAllowance, Seed};
use crate::budget::policy::Blocked;
use crate::dialect::{AfterThrottle, Dialect, Report};

/// Ids of sends granted while Redis was away carry this bit, so they never meet the cluster's.
const LOCAL: u64 = 1 << 62;
/// Longest a blocked process waits before asking Redis again (budget freed elsewhere, a probe
/// answered by another process).
const POLL: Duration = Duration::from_millis(250);
/// Values after each script's own answer.
const TAIL: usize = 9;

/// The budget of a cluster of processes, kept in Redis.
#[derive(Debug)]
pub struct SharedAllowance {
    cluster: Arc<Cluster>,
    dialect: Dialect,
    state: Mutex<State>,
    wake: OnceLock<Arc<Notify>>,
}

#[derive(Debug)]
struct State {
    /// Configured sends per window, and the window.
    limit: u64,
    window: Duration,
    /// This process's sends still counting, on its own clock.
    own: Ledger,
    /// This process's shared grants not yet released, and when each was made.
    granted: HashMap<SendId, Instant>,
    /// The cluster as the last answer showed it.
    last: Tail,
    /// When that answer came.
    last_at: Option<Instant>,
    /// The shared ledger's epoch as last seen ("" before the first).
    epoch: String,
    /// The instances seen before the link was lost.
    peers_before: Vec<String>,
    /// While Redis is away: the allowance spent alone.
    fallback: Option<Fallback>,
    /// After Redis came back: the share kept until the others have rejoined.
    recovering: Option<Recovering>,
}

#[derive(Debug)]
struct Fallback {
    allowance: Arc<MemoryAllowance>,
    since: Instant,
    /// The cluster's limit when it was made.
    limit: u64,
    /// This process's share of the budget.
    share: u64,
    /// True once the cluster's count from before the outage no longer counts.
    relaxed: bool,
}

#[derive(Debug)]
struct Recovering {
    /// Sends per window this process keeps to meanwhile.
    cap: u64,
    /// Given up waiting then.
    until: Instant,
    /// Redis's clock when this process rejoined: an instance whose heartbeat is later has
    /// rejoined too.
    rejoined: i64,
    /// The instances not yet back.
    waiting: Vec<String>,
}

/// The tail of every script's answer: the cluster's budget now.
#[derive(Debug, Clone, Copy, Default)]
struct Tail {
    remaining: u64,
    limit: u64,
    window: Duration,
    step: Duration,
    /// 0 open, 1 until (for `pause_left`), 2 its time is up (the next send probes), 3 the
    /// probe is out.
    pause: i64,
    pause_left: Duration,
    used: u64,
    /// Redis's clock.
    now: i64,
}

impl Tail {
    fn read(values: &[redis::Value]) -> Tail {
        let at = |i: usize| int(values.get(values.len().saturating_sub(TAIL) + i));
        let ms = |n: i64| Duration::from_millis(n.max(0) as u64);
        Tail {
            remaining: at(0).max(0) as u64,
            limit: at(1).max(0) as u64,
            window: ms(at(2)),
            step: ms(at(3)),
            pause: at(4),
            pause_left: ms(at(5)),
            used: at(6).max(0) as u64,
            now: at(7),
        }
    }
}

/// What a heartbeat saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Instances and their last heartbeat (Redis milliseconds).
    pub instances: Vec<(String, i64)>,
    /// Redis's clock.
    pub now: i64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl SharedAllowance {
    /// The shared budget of `limit` sends per `window` in `cluster`.
    pub fn new(
        cluster: Arc<Cluster>,
        dialect: Dialect,
        limit: u64,
        window: Duration,
    ) -> Arc<SharedAllowance> {
        let allowance = Arc::new(SharedAllowance {
            cluster: cluster.clone(),
            dialect,
            state: Mutex::new(State {
                limit,
                window,
                own: Ledger::rolling(u64::MAX, window),
                granted: HashMap::new(),
                last: Tail {
                    remaining: limit,
                    limit,
                    window,
                    step: step_of(dialect, window),
                    ..Tail::default()
                },
                last_at: None,
                epoch: String::new(),
                peers_before: Vec::new(),
                fallback: None,
                recovering: None,
            }),
            wake: OnceLock::new(),
        });
        cluster.attach_allowance(&allowance);
        allowance
    }

    /// Runs `op` of the ledger script with its arguments.
    async fn run(&self, op: &str, extra: &[Arg<'_>]) -> Result<Vec<redis::Value>, Down> {
        let (limit, window) = {
            let state = lock(&self.state);
            (state.limit, state.window)
        };
        let fixed = if self.dialect == Dialect::Oauth {
            "1"
        } else {
            "0"
        };
        let mut args = vec![
            Arg::Str(op),
            Arg::Int(limit as i64),
            Arg::Int(ms(window)),
            Arg::Str(fixed),
        ];
        args.extend_from_slice(extra);
        let keys = ledger_keys(self.cluster.keys());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self
            .cluster
            .eval(&self.cluster.scripts.ledger, &keys, &args)
            .await?;
        let tail = Tail::read(&values);
        let mut state = lock(&self.state);
        let was_paused = state.last.pause != 0;
        state.last = tail;
        state.last_at = Some(Instant::now());
        drop(state);
        if was_paused && tail.pause == 0 {
            self.wake();
        }
        Ok(values)
    }

    fn wake(&self) {
        if let Some(wake) = self.wake.get() {
            wake.notify_one();
        }
    }

    /// The fallback allowance, made when Redis went away.
    fn fallback(&self) -> Arc<MemoryAllowance> {
        let mut state = lock(&self.state);
        if let Some(f) = &state.fallback {
            return f.allowance.clone();
        }
        self.start_fallback(&mut state)
    }

    /// Spends alone from now on: seeded with this process's sends, within its share and what
    /// the cluster had left when last seen; returns the share.
    pub(super) fn degrade(&self) -> u64 {
        let mut state = lock(&self.state);
        if state.fallback.is_none() {
            self.start_fallback(&mut state);
        }
        state.fallback.as_ref().map_or(0, |f| f.share)
    }

    fn start_fallback(&self, state: &mut State) -> Arc<MemoryAllowance> {
        let now = Instant::now();
        let n = self.cluster.sharing();
        let limit = if state.last_at.is_some() {
            state.last.limit
        } else {
            state.limit
        };
        let window = state.window;
        let share = limit / n;
        let mine = state.own.used(now);
        // The cluster's count when last seen still holds until a window has passed.
        let hold = window + window / STEPS;
        let cluster_used = match state.last_at {
            Some(at) if now.duration_since(at) < hold => state.last.used,
            _ => 0,
        };
        let ceiling = share.min(limit.saturating_sub(cluster_used) + mine);
        let spent = match self.dialect {
            Dialect::Legacy => state.own.spent(),
            Dialect::Oauth => {
                // The store's fixed window: the own sends within the last window count.
                let recent = state
                    .own
                    .spent()
                    .sends
                    .iter()
                    .filter(|t| now.duration_since(**t) < window)
                    .count() as u64;
                Spent {
                    sends: Vec::new(),
                    fixed: Some((now + window, recent)),
                }
            }
        };
        let pause = match state.last.pause {
            1 => Some((state.last.pause_left, true)),
            2 | 3 => Some((Duration::ZERO, true)),
            _ => None,
        };
        let allowance = MemoryAllowance::seeded(
            self.dialect,
            limit,
            window,
            Seed {
                spent,
                pause,
                ceiling: Some(ceiling),
            },
        );
        state.peers_before = self
            .cluster
            .seen_lately()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name != self.cluster.instance())
            .collect();
        state.fallback = Some(Fallback {
            allowance: allowance.clone(),
            since: now,
            limit,
            share,
            relaxed: ceiling == share,
        });
        state.recovering = None;
        allowance
    }

    /// Adds this process's sends back to the shared ledger when (re)connecting: those made
    /// while away, or all still in the window when the ledger was lost. Returns how many.
    pub(super) async fn rejoin(&self) -> Result<u64, Down> {
        let (epoch, all, away, fresh) = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state.own.used(now);
            let sends = state.own.spent().sends;
            let age = |t: &Instant| ms(now.duration_since(*t));
            let all: Vec<i64> = sends.iter().map(age).collect();
            let away: Vec<i64> = match &state.fallback {
                Some(f) => sends.iter().filter(|t| **t >= f.since).map(age).collect(),
                None => Vec::new(),
            };
            (state.epoch.clone(), all, away, token())
        };
        let instance = self.cluster.instance().to_string();
        let mut args = vec![
            Arg::Str(&instance),
            Arg::Str(&epoch),
            Arg::Str(&fresh),
            Arg::Int(all.len() as i64),
        ];
        args.extend(all.iter().map(|a| Arg::Int(*a)));
        args.extend(away.iter().map(|a| Arg::Int(*a)));
        let values = self.run("rejoin", &args).await?;
        let added = int(values.get(1)).max(0) as u64;
        let tail = Tail::read(&values);
        let mut state = lock(&self.state);
        state.epoch = text(values.first());
        if let Some(fallback) = state.fallback.take() {
            let window = state.window;
            let waiting = std::mem::take(&mut state.peers_before);
            state.recovering = Some(Recovering {
                cap: fallback.share,
                until: Instant::now() + window + window / STEPS,
                rejoined: tail.now,
                waiting,
            });
        }
        drop(state);
        self.wake();
        Ok(added)
    }

    /// Says this process is alive; returns the instances seen. A ledger found lost (Redis
    /// emptied under a live link) gets this process's sends back.
    pub(super) async fn heartbeat(&self) -> Result<Seen, Down> {
        let instance = self.cluster.instance().to_string();
        let values = self.run("heartbeat", &[Arg::Str(&instance)]).await?;
        let epoch = text(values.first());
        let body = &values[1..values.len().saturating_sub(TAIL)];
        let instances: Vec<(String, i64)> = body
            .chunks(2)
            .map(|pair| (text(pair.first()), int(pair.get(1))))
            .collect();
        let now = Tail::read(&values).now;
        let lost = {
            let mut state = lock(&self.state);
            if let Some(r) = &mut state.recovering {
                r.waiting.retain(|name| {
                    !instances
                        .iter()
                        .any(|(seen, at)| seen == name && *at >= r.rejoined)
                });
                if r.waiting.is_empty() || Instant::now() >= r.until {
                    state.recovering = None;
                }
            }
            epoch != state.epoch
        };
        if lost {
            tracing::warn!("cluster.ledger_lost: adding this process's sends back");
            self.rejoin().await?;
        }
        Ok(Seen { instances, now })
    }

    /// Leaves the cluster: no longer counted among the instances.
    pub(super) async fn leave(&self) {
        let instance = self.cluster.instance().to_string();
        let _ = self.run("leave", &[Arg::Str(&instance)]).await;
    }

    /// While recovering: blocked when this process has spent its share.
    fn recovering_block(&self) -> Option<Taken> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let cap = match &state.recovering {
            Some(r) if now < r.until => r.cap,
            Some(_) => {
                state.recovering = None;
                return None;
            }
            None => return None,
        };
        let used = state.own.used(now);
        (used >= cap).then_some(Taken::Blocked {
            why: Blocked::All,
            retry_in: Some(POLL),
        })
    }

    fn record(&self, id: SendId) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.own.record(now);
        state.granted.insert(id, now);
    }

    fn take_locally(&self, reserve: u64) -> Taken {
        let fallback = self.fallback();
        self.relax_if_due();
        // Alone, the process keeps its share of the write reserve.
        let reserve = {
            let state = lock(&self.state);
            match &state.fallback {
                Some(f) => reserve.saturating_mul(f.share) / f.limit.max(1),
                None => reserve,
            }
        };
        match futures_now(fallback.take(reserve)) {
            Taken::Granted { grant, resumed } => {
                let grant = Grant {
                    id: SendId(grant.id.0 | LOCAL),
                    probe: grant.probe,
                };
                self.record(grant.id);
                Taken::Granted { grant, resumed }
            }
            blocked => blocked,
        }
    }

    /// Once a window has passed while away, the cluster's count from before no longer
    /// counts: only the share does.
    fn relax_if_due(&self) {
        let mut state = lock(&self.state);
        let hold = state.window + state.window / STEPS;
        if let Some(f) = &mut state.fallback
            && !f.relaxed
            && f.since.elapsed() >= hold
        {
            f.relaxed = true;
            f.allowance.set_ceiling(Some(f.share));
        }
    }
}

/// The keys `ledger.lua` works on (all under the cluster's hash tag, so one slot).
fn ledger_keys(keys: &super::Keys) -> [String; 4] {
    ["sends", "seq", "state", "instances"].map(|k| keys.key(k))
}

/// A random token: names one life of the shared ledger (its epoch), or one lease.
pub(super) fn token() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn step_of(dialect: Dialect, window: Duration) -> Duration {
    match dialect {
        Dialect::Legacy => window / STEPS,
        Dialect::Oauth => window,
    }
}

/// The memory allowance answers at once: its futures are ready when made.
fn futures_now<T>(pending: Pending<'_, T>) -> T {
    let mut pending = pending;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match pending.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("the memory allowance never waits"),
    }
}

impl Allowance for SharedAllowance {
    fn take(&self, reserve: u64) -> Pending<'_, Taken> {
        Box::pin(async move {
            if let Some(blocked) = self.recovering_block() {
                return blocked;
            }
            if self.cluster.is_up()
                && let Ok(values) = self.run("take", &[Arg::Int(reserve as i64)]).await
            {
                if int(values.first()) == 1 {
                    let grant = Grant {
                        id: SendId(int(values.get(1)).max(0) as u64),
                        probe: int(values.get(2)) == 1,
                    };
                    self.record(grant.id);
                    return Taken::Granted {
                        grant,
                        resumed: int(values.get(3)) == 1,
                    };
                }
                let why = if int(values.get(1)) == 1 {
                    Blocked::Reserve
                } else {
                    Blocked::All
                };
                let retry = int(values.get(2));
                let retry_in = if retry < 0 {
                    POLL
                } else {
                    Duration::from_millis(retry as u64).min(POLL)
                };
                return Taken::Blocked {
                    why,
                    retry_in: Some(retry_in),
                };
            }
            self.take_locally(reserve)
        })
    }

    fn estimate(&self, need: u64) -> Pending<'_, Option<Duration>> {
        Box::pin(async move {
            if self.cluster.is_up()
                && let Ok(values) = self.run("estimate", &[Arg::Int(need as i64)]).await
            {
                let at = int(values.first());
                return (at >= 0).then(|| Duration::from_millis(at as u64));
            }
            self.fallback().estimate(need).await
        })
    }

    fn observe(&self, grant: Grant, report: Report) -> Pending<'_, Observed> {
        Box::pin(async move {
            if grant.id.0 & LOCAL != 0 {
                let local = Grant {
                    id: SendId(grant.id.0 & !LOCAL),
                    probe: grant.probe,
                };
                let observed = self.fallback().observe(local, report).await;
                if report.throttled && self.cluster.is_up() {
                    // Back in the cluster already: the pause is for everyone.
                    let _ = self.observe_shared(SendId(0), report).await;
                }
                return observed;
            }
            if self.cluster.is_up()
                && let Ok(observed) = self.observe_shared(grant.id, report).await
            {
                return observed;
            }
            if report.throttled {
                let local = Grant {
                    id: SendId(0),
                    probe: false,
                };
                return self.fallback().observe(local, report).await;
            }
            Observed::default()
        })
    }

    fn release(&self, grant: Grant, sent: bool) {
        if grant.id.0 & LOCAL != 0 {
            let at = lock(&self.state).granted.remove(&grant.id);
            if let (false, Some(at)) = (sent, at) {
                lock(&self.state).own.unrecord(at);
            }
            let local = Grant {
                id: SendId(grant.id.0 & !LOCAL),
                probe: grant.probe,
            };
            if let Some(f) = &lock(&self.state).fallback {
                f.allowance.release(local, sent);
            }
            return;
        }
        let at = lock(&self.state).granted.remove(&grant.id);
        if let (false, Some(at)) = (sent, at) {
            lock(&self.state).own.unrecord(at);
        }
        if sent && !grant.probe {
            // Nothing to tell the ledger: the send counts.
            return;
        }
        let Some(cluster) = Some(self.cluster.clone()).filter(|c| c.is_up()) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let dialect = self.dialect;
        let (limit, window) = {
            let state = lock(&self.state);
            (state.limit, state.window)
        };
        let wake = self.wake.get().cloned();
        handle.spawn(async move {
            let fixed = if dialect == Dialect::Oauth { "1" } else { "0" };
            let args = [
                Arg::Str("release"),
                Arg::Int(limit as i64),
                Arg::Int(ms(window)),
                Arg::Str(fixed),
                Arg::Int(grant.id.0 as i64),
                Arg::Int(i64::from(sent)),
            ];
            let keys = ledger_keys(cluster.keys());
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let _ = cluster.eval(&cluster.scripts.ledger, &keys, &args).await;
            if let Some(wake) = wake {
                wake.notify_one();
            }
        });
    }

    fn standing(&self) -> Standing {
        let state = lock(&self.state);
        if !self.cluster.is_up()
            && let Some(f) = &state.fallback
        {
            let allowance = f.allowance.clone();
            drop(state);
            return allowance.standing();
        }
        let last = state.last;
        // The view ages: a pause whose time is up no longer holds.
        // Paused while the pause holds or its probe is out; not once its time is up.
        let paused = match (last.pause, state.last_at) {
            (1, Some(at)) => at.elapsed() < last.pause_left,
            (1, None) | (3, _) => true,
            _ => false,
        };
        Standing {
            remaining: last.remaining,
            limit: last.limit,
            window: last.window,
            step: last.step,
            paused,
        }
    }

    fn reconfigure(&self, limit: u64, window: Duration) {
        let mut state = lock(&self.state);
        state.limit = limit;
        state.window = window;
        let n = self.cluster.sharing();
        if let Some(f) = &mut state.fallback {
            f.limit = limit;
            f.share = limit / n;
            f.allowance.reconfigure(limit, window);
            f.allowance.set_ceiling(Some(f.share));
        }
    }

    fn attach(&self, wake: Arc<Notify>) {
        let _ = self.wake.set(wake);
    }
}

impl SharedAllowance {
    async fn observe_shared(&self, send: SendId, report: Report) -> Result<Observed, Down> {
        let (plan, wait) = match self.dialect.after_throttle(&report) {
            AfterThrottle::UntilWindowMoves => (0, 0),
            AfterThrottle::Wait(wait) => (1, ms(wait)),
            AfterThrottle::BackOff => (2, 0),
        };
        let jitter = {
            let mut b = [0u8; 2];
            let _ = getrandom::getrandom(&mut b);
            i64::from(u16::from_le_bytes(b) % 1000)
        };
        let opt = |v: Option<u64>| v.map_or(-1, |v| v as i64);
        let values = self
            .run(
                "observe",
                &[
                    Arg::Int(send.0 as i64),
                    Arg::Int(opt(report.left)),
                    Arg::Int(opt(report.quota)),
                    Arg::Int(report.window.map_or(-1, ms)),
                    Arg::Int(report.reset.map_or(-1, ms)),
                    Arg::Int(i64::from(report.throttled)),
                    Arg::Int(plan),
                    Arg::Int(wait),
                    Arg::Int(jitter),
                ],
            )
            .await?;
        let paused = (int(values.first()) == 1).then(|| Paused {
            reason: match plan {
                0 => "509",
                1 => "429",
                _ => "429 without a stated wait: backing off",
            },
            length: Duration::from_millis(int(values.get(1)).max(0) as u64),
            probe: int(values.get(2)) == 1,
        });
        let resumed = int(values.get(3)) == 1;
        if resumed {
            self.cluster.changes.resumed(&self.cluster).await;
        }
        Ok(Observed { paused, resumed })
    }

    /// True while, back from an outage, this process keeps to its share until the instances
    /// it saw before have rejoined (or a window has passed).
    pub fn recovering(&self) -> bool {
        lock(&self.state)
            .recovering
            .as_ref()
            .is_some_and(|r| Instant::now() < r.until)
    }

    /// Wakes the queue: budget may have freed elsewhere in the cluster.
    pub(super) fn budget_freed(&self) {
        self.wake();
    }
}
