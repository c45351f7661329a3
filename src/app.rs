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
        tracing::info!(
            budget_remaining = view.remaining,
            budget_limit = view.limit,
            queue_depth = view.queued,
            in_flight = view.in_flight,
            paused = view.paused,
            calls = now.calls - last.calls,
            sent = now.sent - last.sent,
            queued = now.queued - last.queued,
            throttled = now.throttled - last.throttled,
            store_throttles = now.store_throttles - last.store_throttles,
            upstream_errors = now.upstream_errors - last.upstream_errors,
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
}

impl Summary {
    fn of(proxy: &Proxy) -> Summary {
        use std::sync::atomic::Ordering::Relaxed;
        let totals = proxy.budget().totals();
        let counters = proxy.counters();
        Summary {
            calls: counters.calls.load(Relaxed),
            sent: totals.sent,
            queued: totals.queued,
            throttled: counters.throttled.load(Relaxed),
            store_throttles: totals.store_throttles,
            upstream_errors: counters.upstream_errors.load(Relaxed),
        }
    }
}

/// A proxy running in the background (tests, the demo, benches).
#[derive(Debug)]
pub struct RunningProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Stopped, StartError>>,
}

impl RunningProxy {
    /// Binds `listener` and serves in a background task.
    pub async fn start(settings: Settings, listener: TcpListener) -> std::io::Result<RunningProxy> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Arc::new(settings), listener, async move {
            let _ = stopped.await;
            "requested"
        }));
        Ok(RunningProxy {
            addr,
            stop: Some(stop),
            task,
        })
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
