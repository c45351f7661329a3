//! Prometheus metrics: calls by method, status, cache result and client, latency and wait
//! histograms recorded per call, and the budget, queue and cache read at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::status::Snapshot;
use crate::telemetry::AccessRecord;

/// The `Content-Type` of the `/metrics` answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the calls counter (no allocation to count a call).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    status: u16,
    cache: &'static str,
    client: Option<std::sync::Arc<str>>,
}

/// Buckets of the latency histograms, in seconds: 1 ms to about 65 s.
fn buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// The metrics recorded call by call.
#[derive(Debug)]
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    /// Every label set `calls` holds (the family cannot be walked), for per-client sums.
    seen: Mutex<Vec<CallLabels>>,
    upstream: Histogram,
    wait: Histogram,
    /// The same times, finer, for the status page's percentiles.
    upstream_spread: Spread,
    wait_spread: Spread,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: Family::default(),
            seen: Mutex::new(Vec::new()),
            upstream: Histogram::new(buckets()),
            wait: Histogram::new(buckets()),
            upstream_spread: Spread::default(),
            wait_spread: Spread::default(),
        }
    }
}

/// Buckets per doubling of a [`Spread`].
const SPREAD_PER_DOUBLING: f64 = 4.0;
/// Upper bound of a [`Spread`]'s first bucket, in milliseconds.
const SPREAD_FIRST_MS: f64 = 0.05;
/// Buckets of a [`Spread`]: 0.05 ms to about 100 s, then one for the rest.
pub const SPREAD_BUCKETS: usize = 86;

/// A histogram of durations fine enough for percentiles (four buckets per doubling), counted
/// since start; the difference of two readings is the spread between them.
#[derive(Debug)]
pub struct Spread {
    buckets: [AtomicU64; SPREAD_BUCKETS],
}

impl Default for Spread {
    fn default() -> Self {
        Spread {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Spread {
    /// Counts one duration, in milliseconds.
    pub fn observe(&self, ms: f64) {
        let index = if ms.is_nan() || ms <= SPREAD_FIRST_MS {
            0
        } else {
            let i = ((ms / SPREAD_FIRST_MS).log2() * SPREAD_PER_DOUBLING).ceil();
            (i as usize).min(SPREAD_BUCKETS - 1)
        };
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The upper bound of bucket `i`, in milliseconds.
    fn bound(i: usize) -> f64 {
        SPREAD_FIRST_MS * (i as f64 / SPREAD_PER_DOUBLING).exp2()
    }

    /// The `q` quantile (0..=1) of the durations counted between two readings (`earlier`
    /// empty for since start), in milliseconds, interpolated within its bucket; `None` when
    /// nothing was counted.
    pub fn quantile(now: &[u64], earlier: &[u64], q: f64) -> Option<f64> {
        let counts: Vec<u64> = now
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.get(i).copied().unwrap_or(0)))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let low = if i == 0 { 0.0 } else { Spread::bound(i - 1) };
                if i == SPREAD_BUCKETS - 1 {
                    return Some(low);
                }
                let high = Spread::bound(i);
                let into = (rank - below as f64) / n as f64;
                return Some(low + (high - low) * into);
            }
            below += n;
        }
        None
    }
}

impl Metrics {
    /// Records one finished call (from its access record).
    pub fn record(&self, r: &AccessRecord) {
        let method = match r.method.as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        let labels = CallLabels {
            method,
            status: r.status,
            cache: r.cache,
            client: r.client.clone(),
        };
        match self.calls.get(&labels) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.calls.get_or_create(&labels).inc();
                let mut seen = lock(&self.seen);
                if !seen.contains(&labels) {
                    seen.push(labels);
                }
            }
        }
        if let Some(ms) = r.upstream_ms {
            self.upstream.observe(ms / 1000.0);
            self.upstream_spread.observe(ms);
        }
        if r.upstream_ms.is_some() || r.wait_ms > 0.0 {
            self.wait.observe(r.wait_ms / 1000.0);
            self.wait_spread.observe(r.wait_ms);
        }
    }

    /// Calls answered since start, by client (`None`: calls without a `[[clients]]` name).
    pub fn calls_by_client(&self) -> Vec<(Option<Arc<str>>, u64)> {
        let seen = lock(&self.seen).clone();
        let mut sums: Vec<(Option<Arc<str>>, u64)> = Vec::new();
        for labels in seen {
            let n = self.calls.get(&labels).map_or(0, |c| c.get());
            match sums.iter_mut().find(|(client, _)| *client == labels.client) {
                Some((_, sum)) => *sum += n,
                None => sums.push((labels.client, n)),
            }
        }
        sums
    }

    /// The upstream times since start (from sending to the store's response headers).
    pub fn upstream_spread(&self) -> Vec<u64> {
        self.upstream_spread.read()
    }

    /// The queue waits since start (of calls that were sent or waited).
    pub fn wait_spread(&self) -> Vec<u64> {
        self.wait_spread.read()
    }

    /// The metrics in Prometheus' (OpenMetrics) text format.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut registry = Registry::with_prefix("bcproxy");
        registry.register(
            "calls",
            "Calls answered, by method, status, x-cache and client",
            self.calls.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Time from sending a call to the store's response headers",
            self.upstream.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time calls waited for budget",
            self.wait.clone(),
        );
        if let Some(cluster) = &snapshot.cluster {
            registry.register(
                "redis_seconds",
                "Round trips to Redis (scripts of the shared budget and cache)",
                cluster.round_trips.clone(),
            );
        }
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let b = &self.budget;
        gauge(
            &mut e,
            "budget_remaining",
            "The proxy's view of the store's remaining budget",
            b.remaining as i64,
        )?;
        gauge(
            &mut e,
            "budget_limit",
            "Calls the store allows per window",
            b.limit as i64,
        )?;
        gauge(
            &mut e,
            "budget_window_seconds",
            "The store's window",
            b.window.as_secs() as i64,
        )?;
        gauge(
            &mut e,
            "budget_paused",
            "1 while sends are stopped after a store throttle",
            i64::from(b.paused),
        )?;
        gauge(
            &mut e,
            "upstream_credential_refused",
            "1 while the store answers 401/403 to the proxy's own credential",
            i64::from(self.credential_refused.is_some()),
        )?;
        gauge(
            &mut e,
            "queue_depth",
            "Calls waiting for budget",
            b.queued as i64,
        )?;
        gauge(
            &mut e,
            "upstream_in_flight",
            "Calls at the store",
            b.in_flight as i64,
        )?;
        let t = &self.counts;
        counter(&mut e, "upstream_sends", "Calls sent to the store", t.sent)?;
        counter(
            &mut e,
            "queued_calls",
            "Calls that had to wait for budget",
            t.queued,
        )?;
        counter(
            &mut e,
            "store_throttles",
            "509/429 answers from the store",
            t.store_throttles,
        )?;
        let mut family = e.encode_descriptor(
            "throttle_answers",
            "Calls answered with the proxy's throttle answer, by client",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (client, n) in &self.throttled_by_client {
            let labels: Vec<(&str, &str)> = client.iter().map(|c| ("client", &**c)).collect();
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = e.encode_descriptor(
            "upstream_errors",
            "Calls answered 502/504 because the store failed, by kind",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, n) in &self.upstream_errors {
            ConstCounter::new(*n).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
        gauge(
            &mut e,
            "cache_entries",
            "Answers in the cache",
            self.cache_entries as i64,
        )?;
        gauge(
            &mut e,
            "cache_bytes",
            "Bytes held by the cache (bodies and headers)",
            self.cache_bytes as i64,
        )?;
        counter(&mut e, "cache_hits", "Fresh answers from the cache", t.hits)?;
        counter(
            &mut e,
            "cache_misses",
            "Cacheable answers fetched from the store",
            t.misses,
        )?;
        counter(
            &mut e,
            "cache_stale",
            "Stale answers from the cache",
            t.stale,
        )?;
        counter(
            &mut e,
            "cache_coalesced",
            "Answers shared with an identical call",
            t.coalesced,
        )?;
        counter(
            &mut e,
            "cache_bypass",
            "Answers the cache took no part in",
            t.bypass,
        )?;
        counter(
            &mut e,
            "cache_shared",
            "Answers from the cluster's shared cache",
            t.shared,
        )?;
        if let Some(cluster) = &self.cluster {
            gauge(
                &mut e,
                "cluster_up",
                "1 while connected to the cluster's Redis, 0 while degraded",
                i64::from(cluster.mode == "connected"),
            )?;
            gauge(
                &mut e,
                "cluster_instances",
                "Instances seen in the last 30 s",
                cluster.instances.len() as i64,
            )?;
            let n = &cluster.counts;
            counter(
                &mut e,
                "redis_errors",
                "Redis calls that failed or timed out",
                n.errors,
            )?;
            counter(
                &mut e,
                "shared_cache_hits",
                "Answers found in the cluster's shared cache",
                n.shared_hits,
            )?;
            counter(
                &mut e,
                "invalidations_sent",
                "Invalidations published to the other processes",
                n.invalidations_sent,
            )?;
            counter(
                &mut e,
                "invalidations_received",
                "Invalidations received from the other processes",
                n.invalidations_received,
            )?;
        }
        gauge(
            &mut e,
            "uptime_seconds",
            "Time since the proxy started",
            self.uptime.as_secs() as i64,
        )?;
        if !self.webhooks.is_empty() {
            let mut family = e.encode_descriptor(
                "webhooks",
                "Store webhook deliveries, by verdict",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (verdict, n) in &self.webhooks {
                let labels = [("verdict", *verdict)];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_percentiles_are_within_a_bucket() {
        let spread = Spread::default();
        for ms in 1..=100 {
            spread.observe(f64::from(ms));
        }
        let first = spread.read();
        let p50 = Spread::quantile(&first, &[], 0.5).unwrap();
        let p99 = Spread::quantile(&first, &[], 0.99).unwrap();
        assert!((50.0 / 1.19..=50.0 * 1.19).contains(&p50), "p50 {p50}");
        assert!((99.0 / 1.19..=99.0 * 1.19).contains(&p99), "p99 {p99}");
        // Between two readings: only what came after the first.
        for _ in 0..10 {
            spread.observe(2000.0);
        }
        let p50 = Spread::quantile(&spread.read(), &first, 0.5).unwrap();
        assert!((2000.0 / 1.19..=2000.0 * 1.19).contains(&p50), "p50 {p50}");
        assert_eq!(Spread::quantile(&first, &first, 0.5), None);
        // Zero, tiny, huge and NaN land in the end buckets.
        let ends = Spread::default();
        ends.observe(0.0);
        ends.observe(f64::NAN);
        ends.observe(1e12);
        let read = ends.read();
        assert_eq!(read[0], 2);
        assert_eq!(read[SPREAD_BUCKETS - 1], 1);
    }

    #[test]
    fn calls_are_summed_by_client() {
        let m = Metrics::default();
        for (client, status) in [(Some("erp"), 200), (Some("erp"), 404), (None, 401)] {
            m.record(&AccessRecord {
                method: "GET".into(),
                status,
                cache: "MISS",
                client: client.map(Arc::from),
                ..Default::default()
            });
        }
        let mut by = m.calls_by_client();
        by.sort();
        assert_eq!(by, vec![(None, 1), (Some(Arc::from("erp")), 2)]);
    }

    #[test]
    fn renders_calls_histograms_and_the_snapshot() {
        let m = Metrics::default();
        m.record(&AccessRecord {
            method: "GET".into(),
            status: 200,
            cache: "MISS",
            client: Some("erp".into()),
            upstream_ms: Some(12.0),
            ..Default::default()
        });
        m.record(&AccessRecord {
            method: "BREW".into(),
            status: 400,
            cache: "BYPASS",
            ..Default::default()
        });
        let text = m.render(Snapshot {
            counts: crate::status::Counts {
                hits: 3,
                misses: 1,
                bypass: 2,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            text.contains(
                "bcproxy_calls_total{method=\"GET\",status=\"200\",cache=\"MISS\",client=\"erp\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("method=\"OTHER\""), "{text}");
        assert!(text.contains("bcproxy_upstream_seconds_count 1"), "{text}");
        assert!(text.contains("bcproxy_cache_hits_total 3"), "{text}");
        assert!(text.contains("bcproxy_budget_remaining 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
