//! Running the proxy: from validated settings and a bound listener to serving calls, with the
//! start and shutdown events. Production passes OS signals as the shutdown; tests pass a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
    let proxy = Arc::new(Proxy::new(&settings)?);
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
    let reason = reason_rx.await.unwrap_or("stopped");
    tracing::info!(
        reason,
        open_connections = stopped.open_connections,
        drained = stopped.drained,
        "shutdown"
    );
    Ok(stopped)
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
