//! The store's request budget: how many upstream calls may go out, when, and in what order.
//!
//! The call pipeline sees only the [`Budget`] interface: acquire a [`Slot`] (waiting in a
//! bounded queue if need be), send, [`Budget::observe`] the store's answer, drop the slot when
//! the answer is read. [`local::LocalBudget`] keeps the budget in memory for one process; a
//! shared backend can replace it without touching the pipeline.
//!
//! - `ledger`: the proxy's own count of sends in the window (pure);
//! - `report`: what the store's headers say (pure);
//! - `local`: the in-memory budget: ledger, store reports, pause after a store throttle,
//!   write reserve, queue, upstream concurrency;
//! - `persist`: the state file that lets the ledger survive restarts.
//!
//! This module does no network I/O.

pub mod ledger;
pub mod local;
pub mod persist;
pub mod report;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use tokio::time::Instant;

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

/// A request for one upstream send.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// Read or write.
    pub class: Class,
    /// When the call must have been sent by (arrival + `budget.max_wait`).
    pub deadline: Instant,
    /// A call the store throttled, going back to the head of the queue.
    pub resend: bool,
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

/// The future [`Budget::acquire`] returns.
pub type Acquire = Pin<Box<dyn Future<Output = Result<Slot, Refused>> + Send>>;

/// The budget interface the call pipeline uses.
pub trait Budget: Send + Sync + Debug + 'static {
    /// A slot for one send, waiting in arrival order until budget allows (or refusing at once
    /// when it would not allow by the deadline). Dropping the future leaves the queue and
    /// spends nothing.
    fn acquire(self: Arc<Self>, ask: Ask) -> Acquire;
    /// Gives a slot back; `sent` says whether the call went out.
    fn release(&self, seq: u64, sent: bool);
    /// Learns from the store's answer to the send of slot `seq`.
    fn observe(&self, seq: u64, status: u16, headers: &HeaderMap) -> Verdict;
    /// The budget now.
    fn view(&self) -> View;
    /// Totals since start.
    fn totals(&self) -> Totals;
}

/// The right to send one call upstream, held until its answer is read.
pub struct Slot {
    budget: Arc<dyn Budget>,
    seq: u64,
    sent: bool,
}

impl Slot {
    /// Wraps a granted slot (for [`Budget`] implementations).
    pub fn new(budget: Arc<dyn Budget>, seq: u64) -> Slot {
        Slot {
            budget,
            seq,
            sent: false,
        }
    }

    /// The send's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Marks the call as gone to the store: the budget keeps counting it.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }
}

impl Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("seq", &self.seq)
            .field("sent", &self.sent)
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.release(self.seq, self.sent);
    }
}
