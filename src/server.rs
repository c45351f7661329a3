//! Listeners: accepting connections (plain or TLS), bounding them, serving HTTP/1.1 and h2
//! through hyper-util, and draining them on shutdown. Used by the proxy and the simulator.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;
use crate::framing::FramingGuard;
use crate::headers::{MAX_HEADER_BYTES, MAX_HEADERS};

/// The first bytes an h2 client with prior knowledge sends.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a listener serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Name in log events (`proxy`, `sim`).
    pub name: &'static str,
    /// A client must send its request headers (or finish the TLS handshake) within this.
    pub header_timeout: Duration,
    /// On shutdown, in-flight calls get this long to finish.
    pub shutdown_grace: Duration,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// TLS for the listener; `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What a refused connection is sent before it is closed (plain HTTP only).
    pub refusal: Bytes,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("name", &self.name)
            .field("header_timeout", &self.header_timeout)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address.
    pub local: SocketAddr,
}

/// How a listener stopped.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Connections open when shutdown began.
    pub open_connections: usize,
    /// True when they all finished within the grace period.
    pub drained: bool,
}

/// Serves connections from `listener` until `shutdown` completes, then stops accepting and
/// waits up to `shutdown_grace` for open connections to finish their calls.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    options: ServeOptions,
    make_service: M,
    shutdown: impl Future<Output = ()>,
) -> Stopped
where
    M: Fn(ConnInfo) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);

    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = options.name, error = %e, "accept.failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(listener = options.name, peer = %peer, max = options.max_connections, "connection.refused");
            let refusal = options.refusal.clone();
            let plain = acceptor.is_none();
            tokio::spawn(async move { refuse(tcp, plain.then_some(refusal)).await });
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = make_service(ConnInfo { peer, local });
        let watcher = graceful.watcher();
        let (h1, h2, acceptor) = (h1.clone(), h2.clone(), acceptor.clone());
        let header_timeout = options.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        watcher
                            .watch(h2.serve_connection(TokioIo::new(tls), service).into_owned())
                            .await
                    } else {
                        let io = TokioIo::new(FramingGuard::new(tls));
                        watcher
                            .watch(h1.serve_connection(io, service).into_owned())
                            .await
                    }
                }
                None => {
                    let Ok(Ok(is_h2)) = tokio::time::timeout(header_timeout, sniff_h2(&tcp)).await
                    else {
                        return; // nothing (or not enough) arrived in time: drop the connection
                    };
                    if is_h2 {
                        watcher
                            .watch(h2.serve_connection(TokioIo::new(tcp), service).into_owned())
                            .await
                    } else {
                        let io = TokioIo::new(FramingGuard::new(tcp));
                        watcher
                            .watch(h1.serve_connection(io, service).into_owned())
                            .await
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection.error");
            }
        });
    }

    drop(listener);
    let open_connections = graceful.count();
    let drained = tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_ok();
    Stopped {
        open_connections,
        drained,
    }
}

/// Waits for the first bytes of a plain connection and tells h2 prior knowledge from HTTP/1.
async fn sniff_h2(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: peek again once more bytes had a chance to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tells a connection beyond `max_connections` so (plain HTTP) and closes it.
async fn refuse(mut tcp: TcpStream, refusal: Option<Bytes>) {
    if let Some(refusal) = refusal {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tcp.write_all(&refusal).await?;
            tcp.shutdown().await
        })
        .await;
    }
}

/// A plain HTTP/1.1 `503` with a body, for refusing connections.
pub fn refusal_response(content_type: &str, body: &[u8]) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nretry-after: 1\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C), returning the signal's name.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
