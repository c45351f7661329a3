//! What happened over the last budget window, for the status page and `/status`: the proxy's
//! running figures are sampled every step (a sixtieth of the window, 1 s to 60 s) into a ring
//! that covers the window, and read against the figures now. Nothing is recorded per call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::UpstreamFailure;
use crate::metrics::Spread;
use crate::status::Counts;

/// The proxy's running figures at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// Totals since start.
    pub counts: Counts,
    /// The proxy's view of the remaining budget.
    pub remaining: u64,
    /// What the store last reported left, if it has.
    pub reported: Option<u64>,
    /// Calls answered and throttle answers since start, by client (`None`: no client name).
    pub clients: Vec<(Option<Arc<str>>, u64, u64)>,
    /// Upstream times since start ([`Spread`] counts).
    pub upstream: Vec<u64>,
    /// Queue waits since start ([`Spread`] counts).
    pub wait: Vec<u64>,
    /// Upstream failures since start, by kind (in [`UpstreamFailure::ALL`] order).
    pub errors: [u64; 4],
}

/// One client's calls over the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFigures {
    /// The `[[clients]]` name; `None` for calls without one.
    pub client: Option<Arc<str>>,
    /// Calls answered.
    pub calls: u64,
    /// Of which answered with the proxy's throttle answer.
    pub throttled: u64,
}

/// One step of the window, for the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// How long ago the step ended.
    pub ago: Duration,
    /// Calls sent to the store during the step.
    pub sent: u64,
    /// The proxy's view of the remaining budget at its end.
    pub remaining: u64,
    /// What the store had last reported left at its end.
    pub reported: Option<u64>,
}

/// What happened over (about) the last window: from the newest sample at least a window old,
/// or from start, to now.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The time it covers (a window, or less since start; up to a step more).
    pub span: Duration,
    /// What happened.
    pub counts: Counts,
    /// Calls by client, busiest first.
    pub clients: Vec<ClientFigures>,
    /// Upstream time percentiles (p50, p99), in milliseconds.
    pub upstream_ms: (Option<f64>, Option<f64>),
    /// Queue wait percentiles (p50, p99) of calls sent or waiting, in milliseconds.
    pub wait_ms: (Option<f64>, Option<f64>),
    /// Upstream failures by kind.
    pub errors: Vec<(UpstreamFailure, u64)>,
    /// The window's start (no sends), then its steps, oldest first, the last one ending now.
    pub series: Vec<Point>,
}

/// The ring of samples.
#[derive(Debug)]
pub struct History {
    step: Duration,
    samples: Mutex<VecDeque<Sample>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl History {
    /// A history for this window, starting from `first` (the figures at start).
    pub fn new(window: Duration, first: Sample) -> History {
        History {
            step: (window / 60).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            samples: Mutex::new(VecDeque::from([first])),
        }
    }

    /// How often to sample.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Keeps a sample, forgetting those no longer needed to cover `window` before it.
    pub fn record(&self, sample: Sample, window: Duration) {
        let mut samples = lock(&self.samples);
        let horizon = sample.at.checked_sub(window);
        samples.push_back(sample);
        if let Some(horizon) = horizon {
            while samples.len() > 1 && samples[1].at <= horizon {
                samples.pop_front();
            }
        }
    }

    /// What happened over the last `window`, `now` being the figures now.
    pub fn over(&self, now: &Sample, window: Duration) -> Window {
        let samples = lock(&self.samples);
        let horizon = now.at.checked_sub(window);
        let base_at = samples
            .iter()
            .rposition(|s| horizon.is_some_and(|h| s.at <= h))
            .unwrap_or(0);
        let Some(base) = samples.get(base_at) else {
            return Window::default();
        };
        let mut series = vec![Point {
            ago: now.at.saturating_duration_since(base.at),
            sent: 0,
            remaining: base.remaining,
            reported: base.reported,
        }];
        let mut before = base;
        for sample in samples.iter().skip(base_at + 1).chain(std::iter::once(now)) {
            if sample.at <= before.at {
                continue;
            }
            series.push(Point {
                ago: now.at.saturating_duration_since(sample.at),
                sent: sample.counts.sent.saturating_sub(before.counts.sent),
                remaining: sample.remaining,
                reported: sample.reported,
            });
            before = sample;
        }
        let mut clients: Vec<ClientFigures> = now
            .clients
            .iter()
            .map(|(client, calls, throttled)| {
                let (was_calls, was_throttled) = base
                    .clients
                    .iter()
                    .find(|(c, _, _)| c == client)
                    .map_or((0, 0), |(_, c, t)| (*c, *t));
                ClientFigures {
                    client: client.clone(),
                    calls: calls.saturating_sub(was_calls),
                    throttled: throttled.saturating_sub(was_throttled),
                }
            })
            .collect();
        clients.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.client.cmp(&b.client)));
        let percentiles = |now: &[u64], then: &[u64]| {
            (
                Spread::quantile(now, then, 0.5),
                Spread::quantile(now, then, 0.99),
            )
        };
        Window {
            span: now.at.saturating_duration_since(base.at),
            counts: now.counts.since(&base.counts),
            clients,
            upstream_ms: percentiles(&now.upstream, &base.upstream),
            wait_ms: percentiles(&now.wait, &base.wait),
            errors: UpstreamFailure::ALL
                .iter()
                .map(|&kind| {
                    let i = kind as usize;
                    (kind, now.errors[i].saturating_sub(base.errors[i]))
                })
                .collect(),
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, calls: u64, sent: u64, erp: u64) -> Sample {
        Sample {
            at,
            counts: Counts {
                calls,
                sent,
                ..Counts::default()
            },
            remaining: 100 - sent,
            reported: None,
            clients: vec![(Some(Arc::from("erp")), erp, 0)],
            upstream: Vec::new(),
            wait: Vec::new(),
            errors: [0; 4],
        }
    }

    #[test]
    fn the_window_reaches_back_to_the_newest_sample_a_window_old() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let window = s(60);
        let history = History::new(window, sample(t0, 0, 0, 0));
        assert_eq!(history.step(), s(1));
        history.record(sample(t0 + s(30), 10, 4, 3), window);
        history.record(sample(t0 + s(70), 25, 9, 8), window);
        let now = sample(t0 + s(100), 40, 12, 20);
        let w = history.over(&now, window);
        // The horizon is t0+40 s: the newest sample at or before it is t0+30 s.
        assert_eq!(w.span, s(70));
        assert_eq!(w.counts.calls, 30);
        assert_eq!(w.counts.sent, 8);
        assert_eq!(w.clients[0].calls, 17);
        // The start, the sample at t0+70 s, and now.
        let sent: Vec<u64> = w.series.iter().map(|p| p.sent).collect();
        assert_eq!(sent, vec![0, 5, 3]);
        let ago: Vec<Duration> = w.series.iter().map(|p| p.ago).collect();
        assert_eq!(ago, vec![s(70), s(30), s(0)]);
        assert_eq!(w.series[0].remaining, 96);
    }

    #[test]
    fn younger_than_a_window_it_counts_since_start() {
        let t0 = Instant::now();
        let window = Duration::from_secs(3600);
        let history = History::new(window, sample(t0, 0, 0, 0));
        assert_eq!(history.step(), Duration::from_secs(60));
        let w = history.over(&sample(t0 + Duration::from_secs(5), 7, 2, 7), window);
        assert_eq!(w.counts.calls, 7);
        assert_eq!(w.clients[0].calls, 7);
        assert_eq!(w.span, Duration::from_secs(5));
    }

    #[test]
    fn the_ring_keeps_only_what_covers_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let history = History::new(window, sample(t0, 0, 0, 0));
        for i in 1..=100 {
            history.record(sample(t0 + Duration::from_secs(i), i, i, i), window);
        }
        let kept = lock(&history.samples).len();
        // t0+90 s (the base for a window ending at t0+100 s) to t0+100 s.
        assert_eq!(kept, 11);
        let w = history.over(
            &sample(t0 + Duration::from_secs(100), 100, 100, 100),
            window,
        );
        assert_eq!(w.counts.calls, 10);
    }
}
