//! What the admin listener and the summary event show, from one place: the proxy's running
//! counters, one [`Snapshot`] of every figure with named fields, and readiness (when the store
//! last answered, or whether it can be reached). The app owns the status handle; the proxy
//! counts into it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{Budget, View};
use crate::cache::Cache;
use crate::cluster::Cluster;
use crate::dialect::Dialect;
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
        Status {
            started: Instant::now(),
            calls: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
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

    /// Counts an answered call; `throttled` for the proxy's throttle answer, `upstream_error`
    /// for a 502/504 the store caused.
    pub fn count_call(&self, throttled: bool, upstream_error: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if upstream_error {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
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
