//! bcproxy: a throttling-aware caching reverse proxy for the BigCommerce API.
//!
//! Apps point their store base URL at bcproxy; it injects the store's credentials, spends the
//! store's request budget so the store never has to throttle, answers GETs from its cache,
//! and logs every call as one structured line. The crate is laid out by what each part does:
//!
//! - [`cli`]: the command line (`run`, `check`, `demo`, `sim`, `token`, `health`), the only
//!   place that exits.
//! - [`config`]: settings from TOML and `BCPROXY__SECTION__KEY`, a module per section, what a
//!   reload applies.
//! - [`app`]: building the parts from settings and serving them until shutdown; reload.
//! - [`server`]: listeners, connections (HTTP/1.1, h2, TLS), limits, graceful shutdown.
//! - [`framing`]: the guard that refuses request-smuggling shapes before hyper reads them.
//! - [`fuzzing`]: the properties the fuzz targets check (replayed by the corpus tests).
//! - [`proxy`]: a call's life, stage by stage: admit, cache, wait, forward, finish.
//! - [`call`]: one call's context, which becomes its access event.
//! - [`admit`]: what a request must look like to be forwarded (paths, framing, sizes).
//! - [`clients`]: app credentials (`[[clients]]`).
//! - [`budget`]: the store's request budget: the queue, and an allowance backend.
//! - [`cache`]: the GET cache: keys, TTL policy, coalescing, invalidation by family.
//! - [`upstream`]: the store side: client, request rewriting, credential injection.
//! - [`dialect`]: what the store's API dialects say: budget headers, throttles, error shapes.
//! - [`headers`]: the header names bcproxy defines, and the header limits.
//! - [`error`]: how a call can fail, and the status each failure gets.
//! - [`body`]: the body types that stream between app and store.
//! - [`status`]: what the admin listener shows: one snapshot of the counters, readiness.
//! - [`admin`]: the admin listener: health, readiness, metrics, status, purge.
//! - [`webhooks`]: store webhooks that drop what changed outside the proxy.
//! - [`cluster`]: several processes sharing one budget, cache and invalidations via Redis.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: log setup and the access event.
//! - [`tls`]: PEM loading, server and client TLS configs.
//! - [`secret`]: the redacting secret type.
//! - [`sim`]: the store simulator (the referee: it shares none of the above but `server`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod admit;
pub mod app;
pub mod body;
pub mod budget;
pub mod cache;
pub mod call;
pub mod cli;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod dialect;
pub mod error;
pub mod framing;
pub mod fuzzing;
pub mod headers;
pub mod history;
pub mod metrics;
pub mod page;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod sim;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod webhooks;

/// The crate's version, in the start event and `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
