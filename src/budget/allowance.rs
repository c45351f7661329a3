//! What a budget backend owns: the count of sends in the store's window, the store's latest
//! report, and the pause after a throttle, on a clock of its own. The queue in front of it
//! ([`super::Budget`]) is the same for every backend; [`super::memory`] keeps the allowance in
//! this process, and a shared backend can keep it for several.
//!
//! Times cross this interface as durations from "now", never as instants, so a backend may
//! decide on its own clock (a shared one on its server's).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::policy::Blocked;
use crate::dialect::Report;

/// A future an allowance returns.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A send's id: unique within the backend (a shared backend: across every process using it)
/// and increasing in the order sends were granted, so a store report can say which sends it
/// already counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendId(pub u64);

/// One send the allowance granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Its id.
    pub id: SendId,
    /// True when it is the one call probing the store after a pause.
    pub probe: bool,
}

/// The answer to a request for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The send may go now.
    Granted {
        /// The grant.
        grant: Grant,
        /// True when this is the first grant after a pause ended by itself.
        resumed: bool,
    },
    /// It may not go now.
    Blocked {
        /// Why.
        why: Blocked,
        /// When asking again may succeed, if time alone can free it.
        retry_in: Option<Duration>,
    },
}

/// What the store's answer changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Sends paused because of it.
    pub paused: Option<Paused>,
    /// It was the probe's answer and sends go again.
    pub resumed: bool,
}

/// A pause that began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paused {
    /// Why (for the log).
    pub reason: &'static str,
    /// For how long.
    pub length: Duration,
    /// Whether one call probes before the rest follow.
    pub probe: bool,
}

/// The allowance as it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// What is left of the store's budget (the write reserve included).
    pub remaining: u64,
    /// Calls per window (oauth: as the store last stated it).
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// How long a store report of the remaining budget holds (legacy: one step).
    pub step: Duration,
    /// True while sends are stopped after the store throttled.
    pub paused: bool,
}

/// A budget backend: decides, atomically, whether one more send fits the store's budget.
pub trait Allowance: Send + Sync + Debug + 'static {
    /// Grants one send now if the budget, the store's report and any pause allow it, leaving
    /// `reserve` sends untouched (the write reserve, for reads).
    fn take(&self, reserve: u64) -> Pending<'_, Taken>;

    /// How long until `need` sends are free (`need` counts the calls ahead and the reserve);
    /// `None` when never within a window.
    fn estimate(&self, need: u64) -> Pending<'_, Option<Duration>>;

    /// Learns from the store's answer to a granted send: its report of what is left, and
    /// whether it throttled the call (which pauses every send).
    fn observe(&self, grant: Grant, report: Report) -> Pending<'_, Observed>;

    /// Ends a grant: `sent` says whether the call went out (a send that never left is given
    /// back). A probe that ends without an observed answer lets another call probe.
    fn release(&self, grant: Grant, sent: bool);

    /// The allowance now.
    fn standing(&self) -> Standing;

    /// Takes new numbers from a reload (the dialect stays).
    fn reconfigure(&self, limit: u64, window: Duration);

    /// Saves what must survive a restart (called at shutdown).
    fn flush(&self) {}

    /// Hands the backend the queue's wake-up, for budget that frees without this process
    /// doing anything (a shared backend: sends given back or a pause ended elsewhere).
    fn attach(&self, _wake: Arc<Notify>) {}
}
