//! What the admin listener and the summary event show, from one place: the proxy's running
//! counters, one [`Snapshot`] of every figure with named fields, and readiness (when the store
//! last answered, or whether it can be reached). The app owns the status handle; the proxy
//! counts into it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{Budget, StoreThrottle, View};
use crate::cache::Cache;
use crate::cluster::Cluster;
use crate::dialect::Dialect;
use crate::error::UpstreamFailure;
use crate::history::{History, Sample, Window};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::webhooks::{Verdict, Webhooks};

/// How often `upstream.auth_failed` is repeated while the store refuses the credential.
const AUTH_FAILED_EVERY: Duration = Duration::from_secs(60);

/// The shared status of a running proxy.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    calls: AtomicU64,
    throttled: AtomicU64,
    upstream_errors: AtomicU64,
    /// Upstream failures by kind (in [`UpstreamFailure::ALL`] order).
    failures: [AtomicU64; 4],
    /// Throttle answers by client (touched only when a call is throttled).
    throttled_by_client: Mutex<Vec<(Option<Arc<str>>, u64)>>,
    /// The figures sampled over the last window.
    history: History,
    /// When the store last answered (anything), for readiness.
    last_answer: Mutex<Option<Instant>>,
    /// The store refusing the proxy's own credential: the status (401/403) and when it was
    /// last said to the operator; cleared by the store's next other answer.
    refused: Mutex<Option<(u16, Option<Instant>)>>,
    /// Set when shutdown began: the proxy finishes what it has and takes nothing new.
    draining: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    clients: RwLock<Vec<String>>,
    budget: Budget,
    cache: Arc<Cache>,
    upstream: Arc<Upstream>,
    webhooks: Option<Arc<Webhooks>>,
    cluster: Option<Arc<Cluster>>,
}

/// Every figure at one moment, with named fields: what metrics, `/status` and the summary
/// event read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The budget now.
    pub budget: View,
    /// Running totals since start.
    pub counts: Counts,
    /// Answers in the cache.
    pub cache_entries: u64,
    /// Bytes the cache holds (bodies and headers).
    pub cache_bytes: u64,
    /// Time since start.
    pub uptime: Duration,
    /// Webhook deliveries by verdict (`accepted`, `duplicate`, …); empty when webhooks are off.
    pub webhooks: Vec<(&'static str, u64)>,
    /// The cluster, when the process is part of one.
    pub cluster: Option<crate::cluster::View>,
    /// The store's status while it refuses the proxy's own credential (401/403).
    pub credential_refused: Option<u16>,
    /// Throttle answers since start by client: every `[[clients]]` name and `None` (calls
    /// without one).
    pub throttled_by_client: Vec<(Option<Arc<str>>, u64)>,
    /// Upstream failures since start, by kind.
    pub upstream_errors: Vec<(UpstreamFailure, u64)>,
}

/// Running totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with the proxy's throttle answer.
    pub throttled: u64,
    /// Calls answered 502/504 because the store failed.
    pub upstream_errors: u64,
    /// Calls sent to the store.
    pub sent: u64,
    /// Calls that had to wait for budget.
    pub queued: u64,
    /// Calls the budget refused.
    pub refused: u64,
    /// 509/429 answers from the store.
    pub store_throttles: u64,
    /// Fresh answers from the cache.
    pub hits: u64,
    /// Cacheable answers fetched from the store.
    pub misses: u64,
    /// Stale answers from the cache.
    pub stale: u64,
    /// Answers shared with an identical call.
    pub coalesced: u64,
    /// Answers from the cluster's shared cache.
    pub shared: u64,
    /// Answers the cache took no part in.
    pub bypass: u64,
}

impl Counts {
    /// What happened between `earlier` and these totals.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            calls: self.calls - earlier.calls,
            throttled: self.throttled - earlier.throttled,
            upstream_errors: self.upstream_errors - earlier.upstream_errors,
            sent: self.sent - earlier.sent,
            queued: self.queued - earlier.queued,
            refused: self.refused - earlier.refused,
            store_throttles: self.store_throttles - earlier.store_throttles,
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
            stale: self.stale - earlier.stale,
            coalesced: self.coalesced - earlier.coalesced,
            shared: self.shared - earlier.shared,
            bypass: self.bypass - earlier.bypass,
        }
    }

    /// Answers the cache could have given (hits, misses, stale, coalesced, shared).
    pub fn cacheable(&self) -> u64 {
        self.hits + self.misses + self.stale + self.coalesced + self.shared
    }
}

impl Status {
    /// The status of a proxy made of these parts, serving these `[[clients]]`.
    pub fn new(
        budget: Budget,
        cache: Arc<Cache>,
        upstream: Arc<Upstream>,
        clients: Vec<String>,
        webhooks: Option<Arc<Webhooks>>,
        cluster: Option<Arc<Cluster>>,
    ) -> Status {
        let started = Instant::now();
        let first = Sample {
            at: started,
            counts: Counts::default(),
            remaining: budget.view().remaining,
            reported: None,
            clients: Vec::new(),
            upstream: Vec::new(),
            wait: Vec::new(),
            errors: [0; 4],
        };
        let history = History::new(budget.view().window, first);
        Status {
            started,
            calls: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            failures: Default::default(),
            throttled_by_client: Mutex::new(Vec::new()),
            history,
            last_answer: Mutex::new(None),
            draining: std::sync::atomic::AtomicBool::new(false),
            refused: Mutex::new(None),
            metrics: Arc::new(Metrics::default()),
            clients: RwLock::new(clients),
            budget,
            cache,
            upstream,
            webhooks,
            cluster,
        }
    }

    /// The cluster, when the process is part of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The metrics recorded call by call.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts an answered call of `client`; `throttled` for the proxy's throttle answer,
    /// `failure` for a 502/504 the store caused.
    pub fn count_call(
        &self,
        client: Option<&Arc<str>>,
        throttled: bool,
        failure: Option<UpstreamFailure>,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            let mut by_client = lock(&self.throttled_by_client);
            match by_client.iter_mut().find(|(c, _)| c.as_ref() == client) {
                Some((_, n)) => *n += 1,
                None => by_client.push((client.cloned(), 1)),
            }
        }
        if let Some(kind) = failure {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
            self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How often the figures are sampled for the window's history.
    pub fn history_step(&self) -> Duration {
        self.history.step()
    }

    /// Samples the figures into the window's history.
    pub fn record_history(&self) {
        let snapshot = self.snapshot();
        let window = snapshot.budget.window;
        self.history.record(self.sample(&snapshot), window);
    }

    /// Every figure now (the cache's size after its pending maintenance), and what happened
    /// over the last budget window.
    pub async fn window(&self) -> (Snapshot, Window) {
        let snapshot = self.settled_snapshot().await;
        let window = self
            .history
            .over(&self.sample(&snapshot), snapshot.budget.window);
        (snapshot, window)
    }

    /// The store's latest 509/429 answers to this process, oldest first.
    pub fn recent_throttles(&self) -> Vec<StoreThrottle> {
        self.budget.recent_throttles()
    }

    fn sample(&self, snapshot: &Snapshot) -> Sample {
        let mut clients: Vec<(Option<Arc<str>>, u64, u64)> = self
            .metrics
            .calls_by_client()
            .into_iter()
            .map(|(client, calls)| (client, calls, 0))
            .collect();
        for (client, throttled) in &snapshot.throttled_by_client {
            match clients.iter_mut().find(|(c, _, _)| c == client) {
                Some(entry) => entry.2 = *throttled,
                None => clients.push((client.clone(), 0, *throttled)),
            }
        }
        Sample {
            at: Instant::now(),
            counts: snapshot.counts,
            remaining: snapshot.budget.remaining,
            reported: snapshot.budget.reported,
            clients,
            upstream: self.metrics.upstream_spread(),
            wait: self.metrics.wait_spread(),
            errors: std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed)),
        }
    }

    /// Notes the store's answer to a send: a 401 or 403 means it refuses the credential the
    /// proxy sends (apps never send their own), which is logged as `upstream.auth_failed` (at
    /// most once a minute while it lasts) and makes the proxy not ready; any other answer
    /// ends it.
    pub fn note_store_status(&self, status: u16) {
        self.note_answer();
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if status != 401 && status != 403 {
            if refused.take().is_some() {
                tracing::info!(status, "upstream.auth_restored");
            }
            return;
        }
        let said = refused.and_then(|(_, said)| said);
        let due = said.is_none_or(|at| at.elapsed() >= AUTH_FAILED_EVERY);
        if due {
            tracing::error!(
                status,
                hint = "the store refuses the proxy's credential: check upstream.api_key (or the token) and its scopes",
                "upstream.auth_failed"
            );
        }
        *refused = Some((status, if due { Some(Instant::now()) } else { said }));
    }

    /// The store's status while it refuses the proxy's credential.
    pub fn credential_refused(&self) -> Option<u16> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|(status, _)| status)
    }

    /// Notes that the store answered (anything).
    pub fn note_answer(&self) {
        *self
            .last_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Time since the store last answered, if it has.
    pub fn last_answer_ago(&self) -> Option<Duration> {
        self.last_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|at| at.elapsed())
    }

    /// Notes that shutdown began (readiness then fails, so no new traffic is routed here).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// True when the store answered (anything) within `within`; else a connection to it is
    /// tried (TCP and TLS, no API call, no budget spent).
    pub async fn store_reachable(&self, within: Duration) -> bool {
        if self.last_answer_ago().is_some_and(|ago| ago < within) {
            return true;
        }
        let reachable = self.upstream.probe().await;
        if reachable {
            self.note_answer();
        }
        reachable
    }

    /// Throttle answers since start for every `[[clients]]` name, then those without a name.
    fn throttled_by_client(&self) -> Vec<(Option<Arc<str>>, u64)> {
        let counted = lock(&self.throttled_by_client).clone();
        let mut all: Vec<(Option<Arc<str>>, u64)> = self
            .client_names()
            .into_iter()
            .map(|name| (Some(Arc::from(name)), 0))
            .chain(std::iter::once((None, 0)))
            .collect();
        for (client, n) in counted {
            match all.iter_mut().find(|(c, _)| *c == client) {
                Some(entry) => entry.1 = n,
                None => all.push((client, n)),
            }
        }
        all
    }

    /// The `[[clients]]` names.
    pub fn client_names(&self) -> Vec<String> {
        self.clients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes the `[[clients]]` names of a reload.
    pub fn set_client_names(&self, names: Vec<String>) {
        *self
            .clients
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
    }

    /// The store's URL, for display.
    pub fn upstream_url(&self) -> String {
        self.upstream.url_string()
    }

    /// The store's dialect.
    pub fn dialect(&self) -> Dialect {
        self.budget.dialect()
    }

    /// False when `cache.enabled = false`.
    pub fn cache_enabled(&self) -> bool {
        self.cache.enabled()
    }

    /// Drops what `path` names from the cache, as a write to it would; how many entries went.
    pub async fn purge(&self, path: &str) -> usize {
        let drops = crate::cache::Drops::named(path, &self.cache.couplings());
        self.cache.change(&drops).await
    }

    /// Every figure now (the cache's size without waiting for its pending maintenance).
    pub fn snapshot(&self) -> Snapshot {
        let (cache_entries, cache_bytes) = self.cache.size_now();
        self.snapshot_with(cache_entries, cache_bytes)
    }

    /// Every figure, the cache's size after its pending maintenance (for the summary).
    pub async fn settled_snapshot(&self) -> Snapshot {
        let (cache_entries, cache_bytes) = self.cache.size().await;
        self.snapshot_with(cache_entries, cache_bytes)
    }

    fn snapshot_with(&self, cache_entries: u64, cache_bytes: u64) -> Snapshot {
        let totals = self.budget.totals();
        let c = &self.cache.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Snapshot {
            budget: self.budget.view(),
            counts: Counts {
                calls: load(&self.calls),
                throttled: load(&self.throttled),
                upstream_errors: load(&self.upstream_errors),
                sent: totals.sent,
                queued: totals.queued,
                refused: totals.refused,
                store_throttles: totals.store_throttles,
                hits: load(&c.hits),
                misses: load(&c.misses),
                stale: load(&c.stale),
                coalesced: load(&c.coalesced),
                shared: load(&c.shared),
                bypass: load(&c.bypass),
            },
            cache_entries,
            cache_bytes,
            credential_refused: self.credential_refused(),
            throttled_by_client: self.throttled_by_client(),
            upstream_errors: UpstreamFailure::ALL
                .iter()
                .map(|&kind| (kind, load(&self.failures[kind as usize])))
                .collect(),
            uptime: self.started.elapsed(),
            webhooks: self
                .webhooks
                .as_ref()
                .map(|w| {
                    Verdict::ALL
                        .iter()
                        .zip(w.counts())
                        .map(|(v, n)| (v.as_str(), n))
                        .collect()
                })
                .unwrap_or_default(),
            cluster: self.cluster.as_ref().map(|c| c.view()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
