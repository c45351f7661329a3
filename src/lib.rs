//! bcproxy: a throttling-aware caching reverse proxy for the BigCommerce API.
//!
//! Apps point their store base URL at bcproxy; it injects the store's credentials, forwards
//! every call and logs it as one structured line. The crate is laid out by what each part does:
//!
//! - [`admin`]: the admin listener: health, readiness, metrics, status.
//! - [`cli`]: the command line (`run`, `check`, `demo`, `sim`), the only place that exits.
//! - [`config`]: settings from TOML and `BCPROXY__SECTION__KEY`, validated, secrets redacted.
//! - [`admit`]: what a request must look like to be forwarded (paths, framing, sizes).
//! - [`app`]: running the proxy on a bound listener until shutdown.
//! - [`server`]: listeners, connections (HTTP/1.1, h2, TLS), limits, graceful shutdown.
//! - [`proxy`]: a call's life, stage by stage: admit, wait, forward, finish.
//! - [`budget`]: the store's request budget: ledger, store reports, queue, pause, state file.
//! - [`cache`]: the GET cache: keys, TTL policy, coalescing, invalidation by family.
//! - [`call`]: one call's context, which becomes its access event.
//! - [`upstream`]: the store side: client, request rewriting, credential injection.
//! - [`clients`]: app credentials (`[[clients]]`).
//! - [`error`]: how a call can fail, rendered in the store's own error shapes.
//! - [`body`]: the body types that stream between app and store.
//! - [`framing`]: the guard that refuses request-smuggling shapes before hyper reads them.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: log setup and the access event.
//! - [`tls`]: PEM loading, server and client TLS configs.
//! - [`secret`]: the redacting secret type.
//! - [`sim`]: the store simulator.
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
pub mod config;
pub mod error;
pub mod framing;
pub mod metrics;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod sim;
pub mod telemetry;
pub mod tls;
pub mod upstream;
