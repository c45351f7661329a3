//! Body types: one boxed body for everything the proxy sends; a request body received whole
//! within its limits ([`receive`]); the upstream body that holds its connection slot and
//! enforces an idle deadline; the relay that streams the store's answer to the app from a task
//! of its own, so an app that stops reading cannot hold the store's connection ([`relay`]);
//! and the response body that counts the bytes sent to the app and writes the access event
//! when it is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

use crate::budget::Slot;
use crate::call::Call;

/// The error type of every body the proxy handles.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body of any origin: streamed from the app or the store, or made by the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Memory that request bodies being received may hold in all (`listen.body_memory`),
/// accounted in KiB.
#[derive(Debug, Clone)]
pub struct BodyMemory(Arc<Semaphore>);

impl BodyMemory {
    /// A bound of `bytes`.
    pub fn new(bytes: u64) -> BodyMemory {
        let kib = bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS as u64) as usize;
        BodyMemory(Arc::new(Semaphore::new(kib)))
    }

    /// KiB free now.
    pub fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

/// The limits a request body is received within.
#[derive(Debug, Clone)]
pub struct Receive {
    /// Larger bodies are refused (`listen.max_body`).
    pub max_body: u64,
    /// Longest gap between reads (`listen.body_timeout`).
    pub gap: Duration,
    /// Shared by every body being received (`listen.body_memory`).
    pub memory: BodyMemory,
}

/// A request body read whole, with the memory it holds accounted until it is dropped.
#[derive(Debug, Default)]
pub struct Received {
    /// The body.
    pub bytes: Bytes,
    /// Its share of `listen.body_memory`.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Why a request body could not be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Larger than `listen.max_body`.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The app paused longer than `listen.body_timeout` between two reads.
    #[error("no byte of the request body for {0:?}")]
    Timeout(Duration),
    /// The app went away (or reset its stream) before the body was whole.
    #[error("the app went away before sending the whole body: {0}")]
    Gone(String),
    /// The body's framing is broken.
    #[error("the request body could not be read: {0}")]
    Malformed(String),
    /// Bodies being received already hold `listen.body_memory`.
    #[error("request bodies being received already hold listen.body_memory")]
    Busy,
}

/// Reads a request body whole: a known length is refused up front when too large, and its
/// memory reserved before a byte is read; a chunked body reserves memory as it arrives. Every
/// read must come within `limits.gap`; waiting for memory counts as a read gap.
pub async fn receive(incoming: &mut Incoming, limits: &Receive) -> Result<Received, ReceiveError> {
    if incoming.is_end_stream() {
        return Ok(Received {
            bytes: Bytes::new(),
            permit: None,
        });
    }
    let known = incoming.size_hint().exact();
    if let Some(length) = known
        && length > limits.max_body
    {
        return Err(ReceiveError::TooLarge(limits.max_body));
    }
    let memory = &limits.memory.0;
    let kib = |bytes: u64| bytes.div_ceil(1024).min(u64::from(u32::MAX)) as u32;
    let reserve = |n: u32| async move {
        tokio::time::timeout(limits.gap, memory.clone().acquire_many_owned(n))
            .await
            .map_err(|_| ReceiveError::Busy)?
            .map_err(|_| ReceiveError::Busy)
    };
    let mut permit = match known {
        Some(length) => Some(reserve(kib(length)).await?),
        None => None,
    };
    let mut held = permit.as_ref().map_or(0, |p| p.num_permits() as u64 * 1024);
    let mut buf = BytesMut::with_capacity(known.unwrap_or(0) as usize);
    loop {
        let frame = match tokio::time::timeout(limits.gap, incoming.frame()).await {
            Err(_) => return Err(ReceiveError::Timeout(limits.gap)),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(classify_read)?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: the store's API uses none
        };
        let total = (buf.len() + data.len()) as u64;
        if total > limits.max_body {
            return Err(ReceiveError::TooLarge(limits.max_body));
        }
        if total > held {
            let more = reserve(kib(total - held)).await?;
            held += more.num_permits() as u64 * 1024;
            match permit.as_mut() {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok(Received {
        bytes: buf.freeze(),
        permit,
    })
}

/// Tells an app that went away from a body that cannot be parsed.
fn classify_read(e: hyper::Error) -> ReceiveError {
    if e.is_parse() || e.is_parse_too_large() {
        ReceiveError::Malformed(e.to_string())
    } else {
        ReceiveError::Gone(e.to_string())
    }
}

/// Reads and throws away the rest of a request body the proxy answered early, so that the
/// app, still sending, gets to read the answer and hyper can keep the connection; gives up
/// (and the connection closes) past `limit` bytes or `time`.
pub fn drain(mut incoming: Incoming, limit: u64, time: Duration) {
    if incoming.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut seen = 0u64;
        let _ = tokio::time::timeout(time, async {
            while let Some(Ok(frame)) = incoming.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > limit {
                    break;
                }
            }
        })
        .await;
    });
}

/// Bytes of an answer copied aside while it streams (for the cache), up to a limit; past it
/// the copy is abandoned and the stream goes on.
#[derive(Debug)]
pub struct Tap {
    limit: usize,
    chunks: Vec<Bytes>,
    len: usize,
    abandoned: bool,
    memory: Option<(Arc<Semaphore>, Option<OwnedSemaphorePermit>)>,
}

impl Tap {
    /// A copy of at most `limit` bytes; with `memory`, each KiB copied is also taken from that
    /// shared bound (and a copy that cannot get it is abandoned).
    pub fn new(limit: usize, memory: Option<Arc<Semaphore>>) -> Tap {
        Tap {
            limit,
            chunks: Vec::new(),
            len: 0,
            abandoned: false,
            memory: memory.map(|m| (m, None)),
        }
    }

    fn push(&mut self, data: &Bytes) {
        if self.abandoned {
            return;
        }
        let len = self.len + data.len();
        let fits = len <= self.limit
            && match &mut self.memory {
                None => true,
                Some((memory, held)) => {
                    let have = held.as_ref().map_or(0, |p| p.num_permits());
                    let need = len.div_ceil(1024).saturating_sub(have) as u32;
                    need == 0
                        || match memory.clone().try_acquire_many_owned(need) {
                            Ok(more) => {
                                match held {
                                    Some(p) => p.merge(more),
                                    None => *held = Some(more),
                                }
                                true
                            }
                            Err(_) => false,
                        }
                }
            };
        if fits {
            self.chunks.push(data.clone());
            self.len = len;
        } else {
            self.abandon();
        }
    }

    /// Gives up the copy (and its memory).
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.chunks = Vec::new();
        self.len = 0;
        if let Some((_, held)) = &mut self.memory {
            *held = None;
        }
    }

    /// The whole copy, unless it was abandoned.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.abandoned {
            return None;
        }
        let bytes = match self.chunks.len() {
            0 => Bytes::new(),
            // A copy, not a slice: a slice would keep the connection's whole read buffer
            // alive for as long as the entry lives.
            1 => Bytes::copy_from_slice(&self.chunks[0]),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for chunk in &self.chunks {
                    all.extend_from_slice(chunk);
                }
                all.freeze()
            }
        };
        self.abandon();
        Some(bytes)
    }
}

/// How a relayed answer ended.
#[derive(Debug)]
pub enum Relayed {
    /// The store's whole body went through.
    Complete,
    /// The store's body failed (broke off, stalled, bad framing).
    Broken(String),
    /// Nobody reads any more: the app went away or stopped reading, and no copy is wanted.
    Unread,
}

/// The app's end of a relay.
pub struct Outlet {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    cut: Arc<AtomicBool>,
    size: SizeHint,
    done: bool,
}

impl HttpBody for Outlet {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                this.done = true;
                if this.cut.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err("the answer was cut off".into())))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                // A body of known length is whole once that many bytes went by (hyper stops
                // asking then).
                if let (Some(exact), Some(data)) = (this.size.exact(), frame.data_ref()) {
                    let left = exact.saturating_sub(data.len() as u64);
                    this.size.set_exact(left);
                    this.done |= left == 0;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

/// Frames in flight between the store's body and the app's, per relay.
const RELAY_FRAMES: usize = 2;

/// The sending end of a relay, kept by whoever pumps the store's body.
pub struct Inlet {
    tx: Option<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
    cut: Arc<AtomicBool>,
    stall: Duration,
}

/// A relay for a body of `size`: the pump's inlet and the app's outlet; an app that takes
/// nothing for `stall` is cut off.
pub fn relay_pair(size: SizeHint, stall: Duration) -> (Inlet, Outlet) {
    let (tx, rx) = mpsc::channel(RELAY_FRAMES);
    let cut = Arc::new(AtomicBool::new(false));
    (
        Inlet {
            tx: Some(tx),
            cut: cut.clone(),
            stall,
        },
        Outlet {
            rx,
            cut,
            size,
            done: false,
        },
    )
}

impl Inlet {
    /// An inlet nobody reads (the app went away before the answer came).
    pub fn closed() -> Inlet {
        Inlet {
            tx: None,
            cut: Arc::new(AtomicBool::new(false)),
            stall: Duration::ZERO,
        }
    }

    async fn send(&mut self, item: Result<Frame<Bytes>, BoxError>) {
        let Some(tx) = &self.tx else { return };
        match tokio::time::timeout(self.stall, tx.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.tx = None, // the app went away
            Err(_) => {
                tracing::info!(stall = ?self.stall, "relay.unread: the app stopped reading; its answer is cut off");
                self.cut.store(true, Ordering::Release);
                self.tx = None;
            }
        }
    }

    fn is_open(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

/// Moves the store's body to the app's outlet (and into `tap`, when one copies it), frame by
/// frame, until it ends, fails, or nobody wants it any more (then the store's body is dropped,
/// which frees its connection and budget slot).
pub async fn pump(mut body: Body, mut inlet: Inlet, mut tap: Option<&mut Tap>) -> Relayed {
    loop {
        let wanted = inlet.is_open() || tap.as_ref().is_some_and(|t| !t.abandoned);
        if !wanted {
            return Relayed::Unread;
        }
        match body.frame().await {
            None => return Relayed::Complete,
            Some(Err(e)) => {
                let why = e.to_string();
                inlet.send(Err(e)).await;
                return Relayed::Broken(why);
            }
            Some(Ok(frame)) => {
                if let (Some(tap), Some(data)) = (tap.as_deref_mut(), frame.data_ref()) {
                    tap.push(data);
                }
                inlet.send(Ok(frame)).await;
            }
        }
    }
}

/// Streams `body` to the app from a task of its own; the app gets the outlet.
pub fn relay(body: Body, stall: Duration) -> Body {
    if body.is_end_stream() {
        return body;
    }
    let (inlet, outlet) = relay_pair(body.size_hint(), stall);
    tokio::spawn(tracing::Instrument::in_current_span(pump(
        body, inlet, None,
    )));
    outlet.boxed()
}

/// Most bytes of a store answer gathered whole before it is handed over.
pub const GATHER_LIMIT: usize = 256 * 1024;
/// How long a store answer may take to be whole and still be gathered.
pub const GATHER_PATIENCE: Duration = Duration::from_millis(20);

/// What [`gather`] found.
pub enum Gathered {
    /// The whole answer, within the limit and the patience.
    Whole(Bytes),
    /// An answer too large or too slow to wait for: its first frames and the rest.
    Streaming(Body),
    /// The answer broke (bad framing, a short body) before it was whole: nothing of it should
    /// be passed on as if it were an answer.
    Broken(String),
}

/// Reads an answer whole when it is small and quick (most are: the store sends them with
/// their head), so it can be handed over as bytes and the store's connection and budget slot
/// freed at once; anything larger than `limit` or slower than `patience` comes back as a body
/// that yields what was read and then the rest, to be streamed. Never waits longer than
/// `patience` for the first byte of what it returns.
pub async fn gather(mut body: Body, limit: usize, patience: Duration) -> Gathered {
    if body.is_end_stream() {
        return Gathered::Whole(Bytes::new());
    }
    if body.size_hint().lower() > limit as u64 {
        return Gathered::Streaming(body);
    }
    let deadline = Instant::now() + patience;
    let mut read: Vec<Frame<Bytes>> = Vec::new();
    let mut len = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => {
                let mut whole = BytesMut::with_capacity(len);
                for frame in read {
                    if let Ok(data) = frame.into_data() {
                        whole.extend_from_slice(&data);
                    }
                }
                return Gathered::Whole(whole.freeze());
            }
            Ok(Some(Ok(frame))) => {
                len += frame.data_ref().map_or(0, Bytes::len);
                read.push(frame);
                if len > limit {
                    break;
                }
            }
            Ok(Some(Err(e))) => return Gathered::Broken(e.to_string()),
            Err(_) => break,
        }
    }
    let size = body.size_hint();
    Gathered::Streaming(Prefixed { read, rest: body }.with_size(size, len))
}

/// The app's body for a store answer: bytes when it was small and quick, else a relay;
/// `Err` with why, when it broke before anything of it was passed on.
pub async fn for_app(body: Body, stall: Duration) -> Result<Body, String> {
    match gather(body, GATHER_LIMIT, GATHER_PATIENCE).await {
        Gathered::Whole(bytes) => Ok(full(bytes)),
        Gathered::Streaming(body) => Ok(relay(body, stall)),
        Gathered::Broken(why) => Err(why),
    }
}

/// Frames already read, then the rest of the body.
struct Prefixed {
    read: Vec<Frame<Bytes>>,
    rest: Body,
}

impl Prefixed {
    /// Boxed, with the size the whole body had (`size`), `len` bytes of it already read.
    fn with_size(self, size: SizeHint, len: usize) -> Body {
        let mut whole = SizeHint::new();
        whole.set_lower(size.lower() + len as u64);
        if let Some(upper) = size.upper() {
            whole.set_upper(upper + len as u64);
        }
        Sized(self.boxed(), whole).boxed()
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            return Poll::Ready(Some(Ok(this.read.remove(0))));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.rest.size_hint()
    }
}

/// A body whose size hint is known better than the body itself knows it.
struct Sized(Body, SizeHint);

impl HttpBody for Sized {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.0).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            let lower = this.1.lower().saturating_sub(n);
            let upper = this.1.upper().map(|u| u.saturating_sub(n));
            this.1 = SizeHint::new();
            this.1.set_lower(lower);
            if let Some(upper) = upper {
                this.1.set_upper(upper);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.1
    }
}

/// The store stopped sending a response body for longer than the upstream timeout.
#[derive(Debug, thiserror::Error)]
#[error("the store stalled for {0:?} in the middle of a response body")]
pub struct StalledBody(pub Duration);

/// A response body streaming from the store. It keeps the call's budget slot (which also
/// bounds upstream concurrency) until the last byte is read, and fails if the store stalls
/// longer than `idle`.
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: Option<Slot>,
}

impl UpstreamBody {
    /// Wraps the store's body; `slot` is released when the body is dropped.
    pub fn new(inner: Incoming, idle: Duration, slot: Option<Slot>) -> Self {
        UpstreamBody {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(StalledBody(this.idle).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body sent to the app. It owns the call's context, counts the bytes sent, and, when
/// hyper drops it (finished or aborted), lets the call write its access event.
pub struct ResponseBody {
    inner: Body,
    call: Call,
    ended: bool,
}

impl ResponseBody {
    /// Wraps the body of a call's response.
    pub fn new(inner: Body, call: Call) -> Self {
        ResponseBody {
            inner,
            call,
            ended: false,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.call.record.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.call.record.error = Some(format!("response body failed: {e}"));
                this.ended = true;
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let unsent =
            !self.ended && !self.inner.is_end_stream() && self.call.record.method != "HEAD";
        if unsent && self.call.record.error.is_none() {
            self.call.record.error =
                Some("the app went away before the whole body was sent".into());
        }
    }
}

/// A request body that can be sent more than once: the store may throttle a call (509/429)
/// without processing it, and then the same call, writes included, goes again. The first send
/// streams from the app while keeping the chunks (reference-counted, not copied); a resend
/// replays them and continues with whatever the app had not sent yet.
#[derive(Clone)]
pub struct Replay {
    shared: Option<Arc<Mutex<ReplayState>>>,
    size: SizeHint,
}

struct ReplayState {
    seen: Vec<Bytes>,
    rest: Option<Body>,
    failed: Option<String>,
}

impl Replay {
    /// Wraps a body; an empty one costs nothing to replay.
    pub fn new(body: Body) -> Replay {
        let size = body.size_hint();
        if body.is_end_stream() {
            return Replay { shared: None, size };
        }
        let state = ReplayState {
            seen: Vec::new(),
            rest: Some(body),
            failed: None,
        };
        Replay {
            shared: Some(Arc::new(Mutex::new(state))),
            size,
        }
    }

    /// A body reading from the start.
    pub fn body(&self) -> Body {
        match &self.shared {
            None => empty(),
            Some(shared) => ReplayReader {
                shared: shared.clone(),
                pos: 0,
                size: self.size,
            }
            .boxed(),
        }
    }
}

struct ReplayReader {
    shared: Arc<Mutex<ReplayState>>,
    pos: usize,
    size: SizeHint,
}

/// The app's body failed while it was being sent.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct BodyFailed(pub String);

impl HttpBody for ReplayReader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = this
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(chunk) = state.seen.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if let Some(failed) = &state.failed {
            return Poll::Ready(Some(Err(BodyFailed(failed.clone()).into())));
        }
        let Some(rest) = state.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    state.seen.push(data.clone());
                    this.pos += 1;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                // Trailers are not replayed (the store's API uses none).
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(e))) => {
                state.failed = Some(e.to_string());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                state.rest = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replay_resends_what_was_read_and_the_rest() {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        let replay = Replay::new(rx.boxed());
        let mut first = replay.body();
        tx.send_data(Bytes::from_static(b"hello ")).await.unwrap();
        let got = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(got, "hello ");
        drop(first); // the store answered before reading the rest
        tx.send_data(Bytes::from_static(b"world")).await.unwrap();
        drop(tx);
        let again = replay.body().collect().await.unwrap().to_bytes();
        assert_eq!(again, "hello world");
        let third = replay.body().collect().await.unwrap().to_bytes();
        assert_eq!(third, "hello world");
    }
}
