//! Listeners: accepting connections (plain or TLS), bounding them, serving HTTP/1.1 and h2
//! through hyper, and draining them on shutdown. Used by the proxy, the admin listener and the
//! simulator alike; knows nothing of BigCommerce.
//!
//! Every connection has a deadline: the TLS handshake, h2 preface and HTTP/1 headers within
//! `header_timeout`; an idle HTTP/1 keep-alive connection closes at `header_timeout` (hyper);
//! an h2 connection with no open stream closes after `header_timeout` too, whatever pings it
//! answers. At `max_connections`, a new connection takes the place of the one idle the
//! longest (as nginx reuses keep-alive connections); only when every connection has a call in
//! flight is it refused.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;
use crate::framing::FramingGuard;
use crate::headers::{MAX_HEADER_BYTES, MAX_HEADERS};

/// The first bytes an h2 client with prior knowledge sends.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection at `max_connections` waits for the idle one it displaces.
const EVICT_WAIT: Duration = Duration::from_secs(1);
/// How long a connection asked to close (displaced, or at shutdown with nothing in flight) may
/// take before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a listener serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Name in log events (`proxy`, `admin`, `sim`).
    pub name: &'static str,
    /// A client must send its request headers (or finish the TLS handshake) within this; an
    /// h2 connection with no open stream is closed after this long.
    pub header_timeout: Duration,
    /// On shutdown, in-flight calls get this long to finish.
    pub shutdown_grace: Duration,
    /// Connections served at once; beyond, the one idle the longest makes way, else the new
    /// one is refused.
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

/// One open connection, as the listener tracks it.
#[derive(Debug)]
struct Conn {
    /// Calls in flight on it (h2: open streams).
    active: AtomicUsize,
    /// When it last had no call in flight, in ms since the listener started.
    idle_since_ms: AtomicU64,
    /// Wakes its task: asked to close, or its last call ended.
    nudge: Notify,
    /// Set when it must close (displaced by a new connection).
    evicted: std::sync::atomic::AtomicBool,
}

/// The open connections of a listener.
#[derive(Debug)]
struct Registry {
    started: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    emptied: Notify,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(self: &Arc<Self>) -> Registered {
        let conn = Arc::new(Conn {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            nudge: Notify::new(),
            evicted: std::sync::atomic::AtomicBool::new(false),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn.clone());
        Registered {
            registry: self.clone(),
            id,
            conn,
        }
    }

    /// Asks the connection idle the longest to close; false when every one has a call in
    /// flight.
    fn evict_oldest_idle(&self) -> bool {
        let conns = self.lock();
        let oldest = conns
            .iter()
            .filter(|(_, c)| {
                c.active.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Acquire)
            })
            .min_by_key(|(id, c)| (c.idle_since_ms.load(Ordering::Acquire), **id))
            .map(|(_, c)| c);
        match oldest {
            Some(conn) => {
                conn.evicted.store(true, Ordering::Release);
                conn.nudge.notify_one();
                true
            }
            None => false,
        }
    }

    fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's place in the registry, given up when its task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut conns = self.registry.lock();
        conns.remove(&self.id);
        if conns.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
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
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let registry = Arc::new(Registry {
        started: Instant::now(),
        conns: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        emptied: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // New connections waiting for an idle one to make way.
    let waiting = Arc::new(AtomicUsize::new(0));
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builders = Arc::new((h1, h2));
    let mismatch = Arc::new(Mismatch::default());

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
        let _ = tcp.set_nodelay(true);
        let service = make_service(ConnInfo { peer, local });
        let (limit, registry, waiting) = (limit.clone(), registry.clone(), waiting.clone());
        let (stop, builders, acceptor) = (stop_rx.clone(), builders.clone(), acceptor.clone());
        let mismatch = mismatch.clone();
        let (name, max, header_timeout) = (
            options.name,
            options.max_connections,
            options.header_timeout,
        );
        let refusal = acceptor.is_none().then(|| options.refusal.clone());
        tokio::spawn(async move {
            let Some(permit) = admit_connection(&limit, &registry, &waiting, max).await else {
                tracing::warn!(listener = name, peer = %peer, max, "connection.refused");
                refuse(tcp, refusal).await;
                return;
            };
            let task = Connection {
                registered: registry.add(),
                _permit: permit,
                stop,
                header_timeout,
                builders,
                mismatch,
            };
            if let Err(e) = task.run(tcp, peer, name, acceptor, service).await {
                tracing::debug!(peer = %peer, error = %e, "connection.error");
            }
        });
    }

    drop(listener);
    let open_connections = registry.count();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        loop {
            let emptied = registry.emptied.notified();
            if registry.count() == 0 {
                return;
            }
            emptied.await;
        }
    })
    .await
    .is_ok();
    Stopped {
        open_connections,
        drained,
    }
}

/// A connection slot: at once when one is free, else after displacing the connection idle the
/// longest; `None` when every connection has a call in flight (or too many new ones already
/// wait for a place).
async fn admit_connection(
    limit: &Arc<Semaphore>,
    registry: &Registry,
    waiting: &AtomicUsize,
    max: usize,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = limit.clone().try_acquire_owned() {
        return Some(permit);
    }
    if waiting.fetch_add(1, Ordering::AcqRel) >= max.clamp(1, 64) {
        waiting.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let permit = if registry.evict_oldest_idle() {
        tokio::time::timeout(EVICT_WAIT, limit.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    waiting.fetch_sub(1, Ordering::AcqRel);
    permit
}

/// One accepted connection's task.
struct Connection {
    registered: Registered,
    _permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
    header_timeout: Duration,
    builders: Arc<(http1::Builder, http2::Builder<TokioExecutor>)>,
    mismatch: Arc<Mismatch>,
}

/// How often, at most, a listener logs clients speaking the wrong protocol to it (a client
/// retrying in a loop would otherwise write a line per attempt).
const MISMATCH_EVERY: Duration = Duration::from_secs(10);

/// The wrong-protocol warnings of one listener: when one was last logged, and how many
/// were held back since.
#[derive(Debug, Default)]
struct Mismatch {
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Mismatch {
    /// `Some(held back since the last one)` when this one is to be logged.
    fn due(&self) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < MISMATCH_EVERY) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

impl Connection {
    /// Handshakes (TLS, or sniffing h2 prior knowledge), then serves HTTP until the client
    /// leaves, the connection idles out, or it is asked to close.
    async fn run<S, B>(
        mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        listener: &'static str,
        acceptor: Option<TlsAcceptor>,
        service: S,
    ) -> Result<(), hyper::Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let service = Tracked {
            inner: Arc::new(service),
            conn: self.registered.conn.clone(),
            registry: self.registered.registry.clone(),
        };
        let conn = self.registered.conn.clone();
        let handshake = async {
            let first = sniff(&tcp).await.ok()?;
            match (acceptor, first) {
                (Some(_), Sniffed::Http1 | Sniffed::H2) => {
                    if let Some(repeated) = self.mismatch.due() {
                        tracing::warn!(
                            listener,
                            peer = %peer,
                            repeated,
                            hint = "this port speaks HTTPS: use https://, or turn TLS off (empty listen.tls_cert and listen.tls_key)",
                            "listen.plain_on_tls_port"
                        );
                    }
                    answer_plain(tcp, PLAIN_ON_TLS_PORT).await;
                    None
                }
                (Some(acceptor), _) => {
                    let tls = acceptor.accept(tcp).await.ok()?;
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    Some(Io::Tls(Box::new(tls), h2))
                }
                (None, Sniffed::Tls) => {
                    if let Some(repeated) = self.mismatch.due() {
                        tracing::warn!(
                            listener,
                            peer = %peer,
                            repeated,
                            hint = "this port speaks plain HTTP; set listen.tls_cert and listen.tls_key, or use http://",
                            "listen.tls_on_plain_port"
                        );
                    }
                    // A TLS client cannot read an HTTP answer: close at once, so it fails now
                    // rather than at its own timeout.
                    None
                }
                (None, first) => Some(Io::Plain(tcp, first == Sniffed::H2)),
            }
        };
        // Nothing (or not enough) in time, a close asked for, or a shutdown: drop it.
        let io = tokio::select! {
            io = tokio::time::timeout(self.header_timeout, handshake) => match io {
                Ok(Some(io)) => io,
                _ => return Ok(()),
            },
            () = conn.nudge.notified() => return Ok(()),
            _ = self.stop.wait_for(|stop| *stop) => return Ok(()),
        };
        match io {
            Io::Plain(tcp, h2) => self.speak(tcp, h2, service).await,
            Io::Tls(tls, h2) => self.speak(*tls, h2, service).await,
        }
    }

    /// Serves HTTP on a connection: h2, or HTTP/1.1 behind the framing guard.
    async fn speak<IO, S, B>(
        &mut self,
        io: IO,
        h2: bool,
        service: Tracked<S>,
    ) -> Result<(), hyper::Error>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let builders = self.builders.clone();
        if h2 {
            let conn = builders.1.serve_connection(TokioIo::new(io), service);
            self.drive(conn, true).await
        } else {
            let conn = builders
                .0
                .serve_connection(TokioIo::new(FramingGuard::new(io)), service);
            self.drive(conn, false).await
        }
    }

    /// Runs an HTTP connection to its end: asked to close (displaced, or a shutdown), it
    /// finishes its calls and closes; an h2 connection with no open stream for
    /// `header_timeout` closes too.
    async fn drive<C: Closable>(&mut self, conn: C, h2: bool) -> Result<(), hyper::Error> {
        tokio::pin!(conn);
        let state = self.registered.conn.clone();
        let registry = self.registered.registry.clone();
        let mut closing: Option<Instant> = None;
        loop {
            // When to look again: a closing connection is dropped at its deadline; an h2
            // connection checks whether it has been idle for `header_timeout` (calls that end do
            // not wake it: it counts from the last one's end when it looks).
            let deadline = match closing {
                Some(at) => Some(at),
                None if h2 => {
                    let idle_for = match state.active.load(Ordering::Acquire) {
                        0 => registry
                            .now_ms()
                            .saturating_sub(state.idle_since_ms.load(Ordering::Acquire)),
                        _ => 0,
                    };
                    let left = self
                        .header_timeout
                        .saturating_sub(Duration::from_millis(idle_for));
                    Some(Instant::now() + left.max(Duration::from_millis(10)))
                }
                None => None,
            };
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = conn.as_mut() => return result,
                () = state.nudge.notified() => {
                    if state.evicted.load(Ordering::Acquire) && closing.is_none() {
                        if state.active.load(Ordering::Acquire) == 0 {
                            // Idle: nothing to finish, make way at once.
                            return Ok(());
                        }
                        conn.as_mut().close();
                        closing = Some(Instant::now() + CLOSE_WAIT);
                    }
                }
                _ = self.stop.wait_for(|stop| *stop), if closing.is_none() => {
                    conn.as_mut().close();
                    // At shutdown, calls in flight get the whole grace period.
                    closing = Some(Instant::now() + Duration::from_secs(86_400));
                }
                () = wake => {
                    if closing.is_some_and(|at| Instant::now() >= at)
                        && state.active.load(Ordering::Acquire) == 0
                    {
                        return Ok(());
                    }
                    let idle_for = registry
                        .now_ms()
                        .saturating_sub(state.idle_since_ms.load(Ordering::Acquire));
                    if closing.is_none()
                        && state.active.load(Ordering::Acquire) == 0
                        && Duration::from_millis(idle_for) >= self.header_timeout
                    {
                        conn.as_mut().close();
                        closing = Some(Instant::now() + CLOSE_WAIT);
                    }
                }
            }
        }
    }
}

/// A connection after its handshake: plain or TLS, and whether it speaks h2.
enum Io {
    Plain(TcpStream, bool),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, bool),
}

/// An HTTP connection that can be asked to finish its calls and close.
trait Closable: Future<Output = Result<(), hyper::Error>> {
    fn close(self: Pin<&mut Self>);
}

impl<I, S, B> Closable for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Closable for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The service of one connection, counting its calls in flight (until each answer's body is
/// done), so that idle connections can be told apart.
struct Tracked<S> {
    inner: Arc<S>,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

/// A call in flight on a connection; when it ends, the connection may be idle.
struct Active {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Active {
    fn enter(conn: &Arc<Conn>, registry: &Arc<Registry>) -> Active {
        conn.active.fetch_add(1, Ordering::AcqRel);
        Active {
            conn: conn.clone(),
            registry: registry.clone(),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            // No wake-up: the connection's task looks at the time when its timer fires.
            self.conn
                .idle_since_ms
                .store(self.registry.now_ms(), Ordering::Release);
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let active = Active::enter(&self.conn, &self.registry);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _active: active,
            }))
        })
    }
}

/// An answer's body, which keeps its call counted as in flight until it is done.
struct TrackedBody<B> {
    inner: B,
    _active: Active,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// HTTP/1 (or anything that is neither of the others: hyper answers it).
    Http1,
    /// HTTP/2 with prior knowledge (its preface).
    H2,
    /// A TLS handshake (a ClientHello record: 0x16, then major version 3).
    Tls,
}

/// What the plain-HTTP client on an HTTPS port is told before the connection closes.
const PLAIN_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 82\r\n\r\nThis port speaks HTTPS: use https:// (a plain HTTP request was sent to TLS port).\n";

/// Waits for the first bytes of a connection and tells TLS, h2 prior knowledge and HTTP/1
/// apart (without consuming them).
async fn sniff(tcp: &TcpStream) -> std::io::Result<Sniffed> {
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[0] == 0x16 {
            if n < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            if buf[1] == 0x03 {
                return Ok(Sniffed::Tls);
            }
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Sniffed::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Sniffed::H2);
        }
        // A partial preface: peek again once more bytes had a chance to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes a short plain answer and closes (bounded: a client that reads nothing is dropped).
async fn answer_plain(mut tcp: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(answer).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Tells a connection beyond `max_connections` so (plain HTTP) and closes it.
async fn refuse(tcp: TcpStream, refusal: Option<Bytes>) {
    if let Some(refusal) = refusal {
        answer_plain(tcp, &refusal).await;
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
pub fn shutdown_signal() -> impl Future<Output = &'static str> + Send {
    // Both are listened for from the moment this is called, not from the first poll: a signal
    // in between would otherwise take the default action and kill the process uncleanly.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wrong_protocol_warnings_are_held_back_and_counted() {
        let m = Mismatch::default();
        assert_eq!(m.due(), Some(0));
        assert_eq!(m.due(), None);
        assert_eq!(m.due(), None);
        tokio::time::advance(MISMATCH_EVERY).await;
        assert_eq!(
            m.due(),
            Some(2),
            "the next one says how many were held back"
        );
        assert_eq!(m.due(), None);
    }
}
