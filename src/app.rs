//! Running the proxy: from validated settings and a bound listener to serving calls, with the
//! start and shutdown events. Production passes OS signals as the shutdown; tests pass a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::budget::local::{Limits, LocalBudget};
use crate::budget::persist::StateFile;
use crate::config::Settings;
use crate::error::ErrorShape;
use crate::proxy::Proxy;
use crate::server::{self, ServeOptions, Stopped};
use crate::upstream::UpstreamError;

/// The proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The listener's certificate or key could not be used.
    #[error("listen.tls_cert: {0}")]
    ListenTls(#[from] crate::tls::TlsError),
}

/// The crate's version, in the start event.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves the proxy on `listener` until `shutdown` completes (with the reason it gives), then
/// drains in-flight calls for up to `listen.shutdown_grace`.
pub async fn run(
    settings: Arc<Settings>,
    listener: TcpListener,
    shutdown: impl Future<Output = &'static str>,
) -> Result<Stopped, StartError> {
    App::new(settings)?.serve(listener, shutdown).await
}

/// A proxy built from settings (its budget restored from the state file), not yet serving.
#[derive(Debug)]
pub struct App {
    settings: Arc<Settings>,
    proxy: Arc<Proxy>,
    budget: Arc<LocalBudget>,
    state_file: Option<StateFile>,
}

impl App {
    /// Builds the proxy; must be called inside a Tokio runtime (the budget starts its task).
    pub fn new(settings: Arc<Settings>) -> Result<App, StartError> {
        let budget = LocalBudget::new(Limits::from_settings(&settings));
        let state_file = settings
            .budget
            .state_file
            .clone()
            .map(|path| StateFile::new(path, store_identity(&settings)));
        if let Some(file) = &state_file {
            file.load_into(&budget);
        }
        let proxy = Arc::new(Proxy::new(&settings, budget.clone())?);
        Ok(App {
            settings,
            proxy,
            budget,
            state_file,
        })
    }

    /// The proxy (for tests and the admin endpoints).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Serves on `listener` until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<Stopped, StartError> {
        let App {
            settings,
            proxy,
            budget,
            state_file,
        } = self;
        serve(settings, proxy, budget, state_file, listener, shutdown).await
    }
}

async fn serve(
    settings: Arc<Settings>,
    proxy: Arc<Proxy>,
    budget: Arc<LocalBudget>,
    state_file: Option<StateFile>,
    listener: TcpListener,
    shutdown: impl Future<Output = &'static str>,
) -> Result<Stopped, StartError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let url = settings.upstream_url();
    tracing::info!(
        version = VERSION,
        listen = %addr,
        tls = settings.listen.tls_cert.is_some(),
        upstream = %url,
        auth = settings.upstream.auth.as_str(),
        dialect = settings.budget.dialect.as_str(),
        clients = settings.clients.len(),
        max_concurrency = settings.upstream.max_concurrency,
        "start"
    );
    if url.is_cleartext_remote() {
        tracing::warn!(
            upstream = %url,
            "upstream.url is plain http to another host: the store's credentials cross the network in clear"
        );
    }

    let (_, refusal_body) = ErrorShape::LegacyJson.render(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "bcproxy: too many connections (listen.max_connections); retry shortly",
    );
    let options = ServeOptions {
        name: "proxy",
        header_timeout: settings.listen.header_timeout,
        shutdown_grace: settings.listen.shutdown_grace,
        max_connections: settings.listen.max_connections,
        tls: match (&settings.listen.tls_cert, &settings.listen.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        },
        refusal: server::refusal_response("application/json", &refusal_body),
    };

    let grace = humantime::format_duration(settings.listen.shutdown_grace).to_string();
    let (reason_tx, reason_rx) = oneshot::channel();
    let shutdown = async move {
        let reason = shutdown.await;
        tracing::info!(reason, grace = %grace, "shutdown.begin");
        let _ = reason_tx.send(reason);
    };
    let mut background = vec![tokio::spawn(summaries(
        proxy.clone(),
        settings.log.summary_every,
    ))];
    if let Some(file) = &state_file {
        background.push(tokio::spawn(file.clone().keep(budget.clone(), STATE_EVERY)));
    }
    let stopped = server::serve(
        listener,
        options,
        move |_conn| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
            })
        },
        shutdown,
    )
    .await;
    for task in background {
        task.abort();
    }
    if let Some(file) = &state_file {
        file.save_from(&budget, false);
    }
    let reason = reason_rx.await.unwrap_or("stopped");
    tracing::info!(
        reason,
        open_connections = stopped.open_connections,
        drained = stopped.drained,
        "shutdown"
    );
    Ok(stopped)
}

/// How often the budget state file is written while the ledger changes.
const STATE_EVERY: Duration = Duration::from_secs(2);

/// Names the store and credential a budget belongs to, so that a state file written for
/// another one is not used. Holds a short hash of the key, never the key.
fn store_identity(settings: &Settings) -> String {
    let key = crate::clients::token_sha256(settings.upstream.api_key.expose());
    format!(
        "{} {} {} {} key:{}",
        settings.budget.dialect.as_str(),
        settings.upstream_url(),
        settings.upstream.auth.as_str(),
        settings.upstream.username,
        &key[..12]
    )
}

/// Writes the summary event every `every`: the budget now, and what happened since the last.
async fn summaries(proxy: Arc<Proxy>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = Summary::default();
    loop {
        tick.tick().await;
        let now = Summary::of(&proxy);
        let view = proxy.budget().view();
        let (entries, bytes) = proxy.cache().size().await;
        let d = now.since(&last);
        let cacheable = d.hits + d.misses + d.stale + d.coalesced;
        let ratio = |n: u64| {
            if cacheable == 0 {
                0.0
            } else {
                (n as f64 / cacheable as f64 * 1000.0).round() / 1000.0
            }
        };
        tracing::info!(
            budget_remaining = view.remaining,
            budget_limit = view.limit,
            queue_depth = view.queued,
            in_flight = view.in_flight,
            paused = view.paused,
            calls = d.calls,
            sent = d.sent,
            queued = d.queued,
            throttled = d.throttled,
            store_throttles = d.store_throttles,
            upstream_errors = d.upstream_errors,
            cache_hit_ratio = ratio(d.hits),
            cache_stale_ratio = ratio(d.stale),
            cache_coalesced_ratio = ratio(d.coalesced),
            cache_entries = entries,
            cache_bytes = bytes,
            "summary"
        );
        last = now;
    }
}

/// Running totals, for the differences the summary reports.
#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    calls: u64,
    sent: u64,
    queued: u64,
    throttled: u64,
    store_throttles: u64,
    upstream_errors: u64,
    hits: u64,
    misses: u64,
    stale: u64,
    coalesced: u64,
}

impl Summary {
    fn of(proxy: &Proxy) -> Summary {
        use std::sync::atomic::Ordering::Relaxed;
        let totals = proxy.budget().totals();
        let counters = proxy.counters();
        let cache = &proxy.cache().counters;
        Summary {
            calls: counters.calls.load(Relaxed),
            sent: totals.sent,
            queued: totals.queued,
            throttled: counters.throttled.load(Relaxed),
            store_throttles: totals.store_throttles,
            upstream_errors: counters.upstream_errors.load(Relaxed),
            hits: cache.hits.load(Relaxed),
            misses: cache.misses.load(Relaxed),
            stale: cache.stale.load(Relaxed),
            coalesced: cache.coalesced.load(Relaxed),
        }
    }

    fn since(&self, last: &Summary) -> Summary {
        Summary {
            calls: self.calls - last.calls,
            sent: self.sent - last.sent,
            queued: self.queued - last.queued,
            throttled: self.throttled - last.throttled,
            store_throttles: self.store_throttles - last.store_throttles,
            upstream_errors: self.upstream_errors - last.upstream_errors,
            hits: self.hits - last.hits,
            misses: self.misses - last.misses,
            stale: self.stale - last.stale,
            coalesced: self.coalesced - last.coalesced,
        }
    }
}

/// A proxy running in the background (tests, the demo, benches).
#[derive(Debug)]
pub struct RunningProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    proxy: Arc<Proxy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Stopped, StartError>>,
}

impl RunningProxy {
    /// Binds `listener` and serves in a background task.
    pub async fn start(settings: Settings, listener: TcpListener) -> std::io::Result<RunningProxy> {
        let addr = listener.local_addr()?;
        let app = App::new(Arc::new(settings)).map_err(std::io::Error::other)?;
        let proxy = app.proxy().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
            "requested"
        }));
        Ok(RunningProxy {
            addr,
            proxy,
            stop: Some(stop),
            task,
        })
    }

    /// The running proxy.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully and waits for the drain.
    pub async fn stop(mut self) -> Option<Stopped> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok().and_then(Result::ok)
    }
}
