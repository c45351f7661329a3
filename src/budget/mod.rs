//! The store's request budget: how many upstream calls may go out, when, and in what order.
//!
//! The pipeline sees one [`Budget`]: acquire a [`Slot`] (waiting in a bounded queue if need
//! be), send, [`Budget::observe`] the store's answer, drop the slot when the answer is read.
//! The budget is two parts:
//!
//! - `queue` ([`Budget`]), the same for every backend: the FIFO of waiting calls with their
//!   deadlines, `max_queue`, the upstream concurrency cap, the write reserve, and the events
//!   the budget logs;
//! - an [`Allowance`] backend, which owns the count of sends in the window, the store's latest
//!   report and the pause after a throttle: [`memory::MemoryAllowance`] for one process.
//!
//! Both apply the rules of `policy` (pure): what is left, the reserve, the pause after a
//! throttle. `ledger` counts sends in the window (pure); `persist` is the memory backend's
//! state file. [`build`] picks the backend for the settings. This module does no network I/O.

pub mod allowance;
pub mod ledger;
pub mod memory;
pub mod persist;
pub mod policy;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

pub use allowance::{Allowance, Grant, SendId, Standing};
pub use queue::{Budget, QueueLimits, Slot, StoreThrottle};

use crate::config::Settings;

/// What kind of call asks for budget: reads may not use the write reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// GET and HEAD.
    Read,
    /// Every other method.
    Write,
}

impl Class {
    /// The class of a method.
    pub fn of(method: &Method) -> Class {
        if method == Method::GET || method == Method::HEAD {
            Class::Read
        } else {
            Class::Write
        }
    }
}

/// A request for one upstream send, made from the call's context.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Read or write.
    pub class: Class,
    /// When the call must have been sent by (arrival + `budget.max_wait`).
    pub deadline: Instant,
    /// A call the store throttled, going back to the head of the queue.
    pub resend: bool,
    /// The `[[clients]]` name of the app that asked, if any.
    pub client: Option<Arc<str>>,
}

/// Why a call cannot have budget in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `budget.max_queue` calls are already waiting.
    QueueFull,
    /// The budget frees too late for the call's deadline.
    TooLate,
}

/// A refusal, with what the app is told about when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// When a retry may succeed.
    pub retry_after: Duration,
    /// The store's window (for the oauth throttle headers).
    pub window: Duration,
    /// The store's limit per window (for the oauth throttle headers).
    pub quota: u64,
}

/// What the pipeline does after the store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer stands.
    Keep,
    /// The store throttled the call without processing it: send it again when budget allows.
    Resend,
}

/// The budget as it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// The proxy's view of what is left of the store's budget (the write reserve included).
    pub remaining: u64,
    /// Calls per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// Calls waiting.
    pub queued: usize,
    /// Calls at the store.
    pub in_flight: usize,
    /// True while sends are stopped after the store throttled.
    pub paused: bool,
    /// While paused: how long until the pause this process began ends (unknown for a
    /// pause another process of the cluster began).
    pub pause_left: Option<Duration>,
    /// What the store last reported left of its budget (all its clients included), if it has.
    pub reported: Option<u64>,
}

/// Running totals, for the summary event and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Slots granted (calls sent).
    pub sent: u64,
    /// Calls that had to wait.
    pub queued: u64,
    /// Calls refused (the app got the throttle answer).
    pub refused: u64,
    /// 509/429 answers from the store.
    pub store_throttles: u64,
}

/// The budget for validated settings: the backend they call for (shared through `cluster`
/// when there is one), behind the queue. Must be called inside a Tokio runtime (the queue and
/// the state file have tasks of their own).
pub fn build(settings: &Settings, cluster: Option<&Arc<crate::cluster::Cluster>>) -> Budget {
    let b = &settings.budget;
    let allowance: Arc<dyn Allowance> = match cluster {
        Some(cluster) => crate::cluster::ledger::SharedAllowance::new(
            cluster.clone(),
            b.dialect,
            b.limit,
            b.window,
        ),
        None => {
            let state_file = b
                .state_file
                .clone()
                .map(|path| persist::StateFile::new(path, settings.upstream.identity(b.dialect)));
            memory::MemoryAllowance::new(b.dialect, b.limit, b.window, state_file)
        }
    };
    Budget::new(
        b.dialect,
        QueueLimits::new(b, &settings.upstream),
        allowance,
    )
}
