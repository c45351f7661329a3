//! Body types: one boxed body for everything the proxy sends, the upstream body that holds its
//! connection slot and enforces an idle deadline, and the response body that counts the bytes
//! sent to the app and writes the access event when it is done.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
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
