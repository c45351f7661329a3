//! Prometheus metrics: calls by method, status, cache result and client, latency and wait
//! histograms recorded per call, and the budget, queue and cache read at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    upstream: Histogram,
    wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: Family::default(),
            upstream: Histogram::new(buckets()),
            wait: Histogram::new(buckets()),
        }
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
        self.calls.get_or_create(&labels).inc();
        if let Some(ms) = r.upstream_ms {
            self.upstream.observe(ms / 1000.0);
        }
        if r.upstream_ms.is_some() || r.wait_ms > 0.0 {
            self.wait.observe(r.wait_ms / 1000.0);
        }
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
        counter(
            &mut e,
            "throttle_answers",
            "Calls answered with the proxy's throttle answer",
            t.throttled,
        )?;
        counter(
            &mut e,
            "upstream_errors",
            "Calls answered 502/504 because the store failed",
            t.upstream_errors,
        )?;
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
