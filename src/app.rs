//! Running the proxy: from validated settings to its parts (upstream, budget, cache, status,
//! proxy), serving them on a bound listener with the start and shutdown events, summaries,
//! and reload. Production passes OS signals as the shutdown; tests pass a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::VERSION;
use crate::budget::{self, Budget};
use crate::cache::Cache;
use crate::cluster::Cluster;
use crate::config::{ConfigError, Settings, Sources, reload};
use crate::dialect::ErrorShape;
use crate::proxy::{Parts, Proxy};
use crate::server::{self, ServeOptions, Stopped};
use crate::status::{Counts, Status};
use crate::telemetry::LevelHandle;
use crate::upstream::{Credential, Upstream, UpstreamError};
use crate::webhooks::Webhooks;

/// The proxy could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The listener's certificate or key could not be used.
    #[error("listen.tls_cert: {0}")]
    ListenTls(#[from] crate::tls::TlsError),
    /// The cluster's Redis settings could not be used.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

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
    parts: Shared,
    reloader: Option<Reloader>,
    webhook_listener: Option<TcpListener>,
}

/// The parts a reload and the admin listener reach besides the proxy.
#[derive(Debug, Clone)]
struct Shared {
    upstream: Arc<Upstream>,
    budget: Budget,
    cache: Arc<Cache>,
    status: Arc<Status>,
    webhooks: Option<Arc<Webhooks>>,
    cluster: Option<Arc<Cluster>>,
}

impl App {
    /// Builds every part from its section; must be called inside a Tokio runtime (the budget
    /// starts its tasks).
    pub fn new(settings: Arc<Settings>) -> Result<App, StartError> {
        let upstream = Arc::new(Upstream::new(&settings.upstream)?);
        let cluster = match settings.cluster.enabled() {
            true => Some(Cluster::new(&settings)?),
            false => None,
        };
        let budget = budget::build(&settings, cluster.as_ref());
        let cache = Arc::new(Cache::new(&settings.cache));
        if let Some(cluster) = &cluster {
            cache.join_cluster(cluster);
            cluster.start();
        }
        let webhooks = Webhooks::new(&settings.webhooks, cache.clone()).map(Arc::new);
        let status = Arc::new(Status::new(
            budget.clone(),
            cache.clone(),
            upstream.clone(),
            client_names(&settings),
            webhooks.clone(),
            cluster.clone(),
        ));
        let shared = Shared {
            upstream,
            budget,
            cache,
            status,
            webhooks,
            cluster,
        };
        let proxy = Arc::new(Proxy::new(
            &settings,
            Parts {
                upstream: shared.upstream.clone(),
                budget: shared.budget.clone(),
                cache: shared.cache.clone(),
                status: shared.status.clone(),
                cluster: shared.cluster.clone(),
            },
        ));
        Ok(App {
            settings,
            proxy,
            parts: shared,
            reloader: None,
            webhook_listener: None,
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
                parts: self.parts.clone(),
                current: Mutex::new(self.settings.clone()),
                started: self.settings.clone(),
                certs: Mutex::new(None),
                listening: Mutex::new(None),
            }),
        });
        self
    }

    /// What the admin listener shows.
    pub fn status(&self) -> &Arc<Status> {
        &self.parts.status
    }

    /// Serves the store's webhooks on a listener of their own (`webhooks.addr`) instead of the
    /// admin listener.
    pub fn webhook_listener(mut self, listener: TcpListener) -> App {
        self.webhook_listener = Some(listener);
        self
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
            parts,
            reloader,
            webhook_listener,
        } = self;
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let certs = match (&settings.listen.tls_cert, &settings.listen.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::CertStore::load(cert, key)?),
            _ => None,
        };
        let sighup = reloader.map(|reloader| {
            *lock(&reloader.inner.listening) = listener.local_addr().ok();
            *lock(&reloader.inner.certs) = certs.clone();
            reload_on_sighup(reloader)
        });
        let url = settings.upstream_url();
        if let Some(cluster) = &parts.cluster {
            // Calls wait for nothing but one attempt, so the first ones share the budget.
            cluster.started(Duration::from_secs(1)).await;
        }
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
            cluster = parts.cluster.as_ref().map(|c| c.name().to_string()),
            instance = parts.cluster.as_ref().map(|c| c.instance().to_string()),
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
            tls: match &certs {
                Some(store) => Some(store.server_config()?),
                None => None,
            },
            refusal: server::refusal_response("application/json", &refusal_body),
        };

        let grace = humantime::format_duration(settings.listen.shutdown_grace).to_string();
        let (reason_tx, reason_rx) = oneshot::channel();
        let draining = parts.status.clone();
        let shutdown = async move {
            let reason = shutdown.await;
            draining.set_draining();
            tracing::info!(reason, grace = %grace, "shutdown.begin");
            let _ = reason_tx.send(reason);
        };
        let mut background = vec![tokio::spawn(summaries(
            parts.status.clone(),
            settings.log.summary_every,
        ))];
        background.push(tokio::spawn(sample_history(parts.status.clone())));
        if let Some(sighup) = sighup {
            background.push(tokio::spawn(sighup));
        }
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let stopped_signal = move || {
            let mut rx = admin_stopped.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut side_tasks = Vec::new();
        let own_webhooks = webhook_listener.is_some();
        if let Some(listener) = admin {
            let admin = crate::admin::Admin {
                status: parts.status.clone(),
                webhooks: parts.webhooks.clone().filter(|_| !own_webhooks),
            };
            side_tasks.push(tokio::spawn(crate::admin::serve(
                listener,
                admin,
                stopped_signal(),
            )));
        }
        if let (Some(listener), Some(webhooks)) = (webhook_listener, parts.webhooks.clone()) {
            side_tasks.push(tokio::spawn(crate::admin::serve_webhooks(
                listener,
                webhooks,
                stopped_signal(),
            )));
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
        let _ = admin_stop.send(true);
        for task in side_tasks {
            let _ = task.await;
        }
        for task in background {
            task.abort();
        }
        parts.budget.flush();
        if let Some(cluster) = &parts.cluster {
            cluster.leave().await;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn client_names(settings: &Settings) -> Vec<String> {
    settings.clients.iter().map(|c| c.name.clone()).collect()
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
    parts: Shared,
    current: Mutex<Arc<Settings>>,
    /// The settings the process started with: what the keys a reload cannot apply still hold.
    started: Arc<Settings>,
    /// The HTTPS listener's certificate, when it has one (a reload loads it again).
    certs: Mutex<Option<Arc<crate::tls::CertStore>>>,
    /// The address the app listener is bound to: the open-proxy rule is judged against it,
    /// not against the file's `listen.addr` (which needs a restart).
    listening: Mutex<Option<SocketAddr>>,
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
    /// the keys it applied and the keys that differ from what runs but only a restart
    /// applies. An invalid configuration changes nothing.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let inner = &self.inner;
        let new = Settings::load(&inner.sources)?;
        let listening = (*lock(&inner.listening)).unwrap_or(new.listen.addr);
        new.listen
            .check_open(listening, !new.clients.is_empty())
            .map_err(ReloadError::Config)?;
        Credential::from_settings(&new.upstream).map_err(|e| ReloadError::Apply(e.to_string()))?;
        // The certificate files are read again even when their paths did not change (that is
        // how certificates rotate); a bad pair refuses the whole reload.
        let certs = lock(&inner.certs).clone();
        let pair = match (&certs, &new.listen.tls_cert, &new.listen.tls_key) {
            (Some(_), Some(cert), Some(key)) => {
                Some(crate::tls::CertStore::pair(cert, key).map_err(|e| {
                    ReloadError::Apply(format!(
                        "listen.tls_cert/listen.tls_key: {e}; the running certificate stays"
                    ))
                })?)
            }
            _ => None,
        };
        if let Some(level) = &inner.level {
            // The one step that can still fail: before anything else is applied.
            level(&new.log.level).map_err(ReloadError::Apply)?;
        }
        let mut current = lock(&inner.current);
        let mut reloaded = Reloaded {
            applied: reload::applied(&current, &new),
            needs_restart: reload::needs_restart(&inner.started, &new),
        };
        reloaded
            .applied
            .retain(|k| !matches!(*k, "listen.tls_cert" | "listen.tls_key"));
        if inner.started.listen.tls_cert.is_some() != new.listen.tls_cert.is_some() {
            // Turning TLS on or off changes the listener itself.
            reloaded.needs_restart.push("listen.tls_cert");
        }
        let parts = &inner.parts;
        parts
            .upstream
            .set_credential(&new.upstream)
            .map_err(|e| ReloadError::Apply(e.to_string()))?;
        parts.cache.set_policy(&new.cache);
        parts.budget.reconfigure(&new.budget, &new.upstream);
        parts.status.set_client_names(client_names(&new));
        if let (Some(store), Some(pair)) = (certs, pair)
            && store.replace(pair)
        {
            reloaded.applied.push("listen.tls_cert");
        }
        inner.proxy.reload(&new);
        *current = Arc::new(new);
        Ok(reloaded)
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The changed keys it applied.
    pub applied: Vec<&'static str>,
    /// The keys whose new value differs from the running one but takes a restart.
    pub needs_restart: Vec<&'static str>,
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

/// Reloads on every SIGHUP, logging a `config` event either way.
fn reload_on_sighup(reloader: Reloader) -> impl Future<Output = ()> {
    // The handler is in place before this returns (before the start event), so a SIGHUP
    // right after start reloads instead of ending the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hangups) = hangups else {
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
}

/// Reloads and logs the outcome as a `config` event.
pub fn apply_reload(reloader: &Reloader) {
    match reloader.reload() {
        Ok(r) if r.needs_restart.is_empty() => tracing::info!(
            reloaded = true,
            applied = %r.applied.join(", "),
            "config"
        ),
        Ok(r) => tracing::warn!(
            reloaded = true,
            applied = %r.applied.join(", "),
            needs_restart = %r.needs_restart.join(", "),
            "config: reloaded; some changed keys take effect only after a restart"
        ),
        Err(e) => {
            tracing::error!(reloaded = false, error = %e, "config: reload refused; the running config stays")
        }
    }
}

/// Samples the figures for the status page's window, every step.
async fn sample_history(status: Arc<Status>) {
    let mut tick = tokio::time::interval(status.history_step());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        status.record_history();
    }
}

/// Writes the summary event every `every`: the budget now, and what happened since the last.
async fn summaries(status: Arc<Status>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = Counts::default();
    loop {
        tick.tick().await;
        let now = status.settled_snapshot().await;
        let d = now.counts.since(&last);
        let cacheable = d.cacheable();
        let ratio = |n: u64| {
            if cacheable == 0 {
                0.0
            } else {
                (n as f64 / cacheable as f64 * 1000.0).round() / 1000.0
            }
        };
        let view = now.budget;
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
            cache_shared_ratio = ratio(d.shared),
            cache_entries = now.cache_entries,
            cache_bytes = now.cache_bytes,
            instances = now.cluster.as_ref().map(|c| c.sharing),
            cluster_mode = now.cluster.as_ref().map(|c| c.mode),
            "summary"
        );
        last = now.counts;
    }
}

/// A proxy running in the background (tests, the demo, benches).
#[derive(Debug)]
pub struct RunningProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin endpoints listen, if they do.
    pub admin_addr: Option<SocketAddr>,
    status: Arc<Status>,
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
        RunningProxy::start_full(settings, listener, admin, None, sources).await
    }

    /// Serves on `listener`, the admin endpoints on `admin`, the webhooks on a listener of
    /// their own (`webhooks`), and reloads from `sources`.
    pub async fn start_full(
        settings: Settings,
        listener: TcpListener,
        admin: Option<TcpListener>,
        webhooks: Option<TcpListener>,
        sources: Option<Sources>,
    ) -> std::io::Result<RunningProxy> {
        let addr = listener.local_addr()?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut app = App::new(Arc::new(settings)).map_err(std::io::Error::other)?;
        if let Some(sources) = sources {
            app = app.reloadable(sources, None);
        }
        if let Some(webhooks) = webhooks {
            app = app.webhook_listener(webhooks);
        }
        let status = app.status().clone();
        let reloader = app.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, admin, async move {
            let _ = stopped.await;
            "requested"
        }));
        Ok(RunningProxy {
            addr,
            admin_addr,
            status,
            reloader,
            stop: Some(stop),
            task,
        })
    }

    /// What its admin listener shows.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
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
