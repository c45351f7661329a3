//! Running the proxy: from validated settings and a bound listener to serving calls, with the
//! start and shutdown events. Production passes OS signals as the shutdown; tests pass a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::budget::local::{Limits, LocalBudget};
use crate::budget::persist::StateFile;
use crate::config::{ConfigError, Settings, Sources};
use crate::error::ErrorShape;
use crate::proxy::Proxy;
use crate::server::{self, ServeOptions, Stopped};
use crate::telemetry::LevelHandle;
use crate::upstream::{Credential, UpstreamError};

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
    App::new(settings)?.serve(listener, None, shutdown).await
}

/// A proxy built from settings (its budget restored from the state file), not yet serving.
#[derive(Debug)]
pub struct App {
    settings: Arc<Settings>,
    proxy: Arc<Proxy>,
    budget: Arc<LocalBudget>,
    state_file: Option<StateFile>,
    reloader: Option<Reloader>,
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
            reloader: None,
        })
    }

    /// Lets the configuration be reloaded (on SIGHUP, or through [`App::reloader`]) from the
    /// same sources; `level` changes the log level of the running subscriber.
    pub fn reloadable(mut self, sources: Sources, level: Option<LevelHandle>) -> App {
        self.reloader = Some(Reloader {
            inner: Arc::new(ReloaderInner {
                sources,
                level,
                proxy: self.proxy.clone(),
                budget: self.budget.clone(),
                current: Mutex::new(self.settings.clone()),
            }),
        });
        self
    }

    /// The proxy (for tests and the admin endpoints).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The reload handle, when the app is reloadable.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.clone()
    }

    /// Serves apps on `listener` (and the admin endpoints on `admin`) until `shutdown`
    /// completes, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<Stopped, StartError> {
        let App {
            settings,
            proxy,
            budget,
            state_file,
            reloader,
        } = self;
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let url = settings.upstream_url();
        tracing::info!(
            version = VERSION,
            listen = %addr,
            admin = admin.as_ref().and_then(|a| a.local_addr().ok()).map(|a| a.to_string()),
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
        if let Some(reloader) = reloader {
            background.push(tokio::spawn(reload_on_sighup(reloader)));
        }
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        let admin_task = admin.map(|listener| {
            tokio::spawn(crate::admin::serve(listener, proxy.clone(), async move {
                let _ = admin_stopped.await;
            }))
        });
        let serving = proxy.clone();
        let stopped = server::serve(
            listener,
            options,
            move |_conn| {
                let proxy = serving.clone();
                hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
                })
            },
            shutdown,
        )
        .await;
        let _ = admin_stop.send(());
        if let Some(task) = admin_task {
            let _ = task.await;
        }
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
}

/// Re-reads the configuration and applies it to the running proxy.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<ReloaderInner>,
}

struct ReloaderInner {
    sources: Sources,
    level: Option<LevelHandle>,
    proxy: Arc<Proxy>,
    budget: Arc<LocalBudget>,
    current: Mutex<Arc<Settings>>,
}

impl std::fmt::Debug for ReloaderInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("sources", &self.sources.file)
            .finish()
    }
}

impl Reloader {
    /// Loads the configuration again and applies what can change while calls go on: app
    /// clients, cache rules, log level, budget numbers, `max_wait`, the store's key. Returns
    /// the changed keys that only a restart applies. An invalid configuration changes nothing.
    pub fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let inner = &self.inner;
        let new = Settings::load(&inner.sources)?;
        Credential::from_settings(&new).map_err(|e| ReloadError::Apply(e.to_string()))?;
        let mut current = inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let restart = needs_restart(&current, &new);
        inner
            .proxy
            .reload(&new)
            .map_err(|e| ReloadError::Apply(e.to_string()))?;
        let mut limits = Limits::from_settings(&new);
        limits.dialect = current.budget.dialect;
        inner.budget.set_limits(limits);
        if let Some(level) = &inner.level {
            level(&new.log.level).map_err(ReloadError::Apply)?;
        }
        *current = Arc::new(new);
        Ok(restart)
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error("bad config: {0}")]
    Config(#[from] ConfigError),
    /// It could not be applied.
    #[error("cannot apply the new config: {0}")]
    Apply(String),
}

/// The keys that changed but only take effect after a restart.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    let (o, n) = (&old.listen, &new.listen);
    check(o.addr != n.addr, "listen.addr");
    check(
        o.tls_cert != n.tls_cert || o.tls_key != n.tls_key,
        "listen.tls_cert",
    );
    check(o.max_body != n.max_body, "listen.max_body");
    check(
        o.header_timeout != n.header_timeout,
        "listen.header_timeout",
    );
    check(
        o.shutdown_grace != n.shutdown_grace,
        "listen.shutdown_grace",
    );
    check(
        o.max_connections != n.max_connections,
        "listen.max_connections",
    );
    let (o, n) = (&old.upstream, &new.upstream);
    check(o.url != n.url, "upstream.url");
    check(o.auth != n.auth, "upstream.auth");
    check(o.ca_file != n.ca_file, "upstream.ca_file");
    check(
        o.connect_timeout != n.connect_timeout,
        "upstream.connect_timeout",
    );
    check(o.timeout != n.timeout, "upstream.timeout");
    check(old.budget.dialect != new.budget.dialect, "budget.dialect");
    check(
        old.budget.state_file != new.budget.state_file,
        "budget.state_file",
    );
    check(old.cache.enabled != new.cache.enabled, "cache.enabled");
    check(old.cache.max_size != new.cache.max_size, "cache.max_size");
    check(old.log.format != new.log.format, "log.format");
    check(
        old.log.summary_every != new.log.summary_every,
        "log.summary_every",
    );
    check(old.admin.addr != new.admin.addr, "admin.addr");
    keys
}

/// Reloads on every SIGHUP, logging a `config` event either way.
async fn reload_on_sighup(reloader: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("config: SIGHUP cannot be caught; reload is off");
            return;
        };
        while hangups.recv().await.is_some() {
            apply_reload(&reloader);
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Reloads and logs the outcome as a `config` event.
pub fn apply_reload(reloader: &Reloader) {
    match reloader.reload() {
        Ok(restart) if restart.is_empty() => tracing::info!(reloaded = true, "config"),
        Ok(restart) => tracing::warn!(
            reloaded = true,
            needs_restart = %restart.join(", "),
            "config: reloaded; some changed keys take effect only after a restart"
        ),
        Err(e) => {
            tracing::error!(reloaded = false, error = %e, "config: reload refused; the running config stays")
        }
    }
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
    /// Where its admin endpoints listen, if they do.
    pub admin_addr: Option<SocketAddr>,
    proxy: Arc<Proxy>,
    reloader: Option<Reloader>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Stopped, StartError>>,
}

impl RunningProxy {
    /// Serves on `listener` in a background task.
    pub async fn start(settings: Settings, listener: TcpListener) -> std::io::Result<RunningProxy> {
        RunningProxy::start_with(settings, listener, None, None).await
    }

    /// Serves on `listener`, with the admin endpoints on `admin` and reloads from `sources`.
    pub async fn start_with(
        settings: Settings,
        listener: TcpListener,
        admin: Option<TcpListener>,
        sources: Option<Sources>,
    ) -> std::io::Result<RunningProxy> {
        let addr = listener.local_addr()?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut app = App::new(Arc::new(settings)).map_err(std::io::Error::other)?;
        if let Some(sources) = sources {
            app = app.reloadable(sources, None);
        }
        let proxy = app.proxy().clone();
        let reloader = app.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, admin, async move {
            let _ = stopped.await;
            "requested"
        }));
        Ok(RunningProxy {
            addr,
            admin_addr,
            proxy,
            reloader,
            stop: Some(stop),
            task,
        })
    }

    /// The running proxy.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The reload handle (when started with sources).
    pub fn reloader(&self) -> Option<&Reloader> {
        self.reloader.as_ref()
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
