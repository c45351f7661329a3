//! A guard in front of hyper on HTTP/1 connections that refuses request-smuggling shapes.
//!
//! hyper resolves ambiguous body framing quietly (it keeps `Transfer-Encoding` over
//! `Content-Length` and merges identical duplicate lengths), which is safe for hyper but
//! hides from the proxy a request that a front-end or another hop may have read
//! differently. The guard reads every request head itself before hyper does, follows the body
//! framing to find the next head on a keep-alive connection, and replaces an ambiguous head
//! with one that the proxy answers with `400` and `Connection: close`; nothing after it on the
//! connection is read. It never stops inspecting: bytes it cannot follow (broken chunking, a
//! head beyond every limit) are handed to hyper, which refuses them, and the connection then
//! ends there for hyper (end of stream), so nothing after them is ever read uninspected.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::headers::{MAX_HEADER_BYTES, REFUSED};

/// How much is read from the connection at a time (a head that is larger takes more reads).
const READ_SIZE: usize = 4 * 1024;

/// A random marker only this process knows, so an app cannot forge a refusal.
fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let mut bytes = [0u8; 16];
        let _ = getrandom::getrandom(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// Why the guard refused a request, when `headers` carry its genuine refusal marker.
pub fn refusal(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&REFUSED)?.to_str().ok()?;
    let (mark, why) = value.split_once(' ')?;
    (mark == marker()).then(|| why.to_string())
}

/// What the bytes being read are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A request head, held back until it is whole.
    Head,
    /// A body of known length: bytes left.
    Fixed(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Bytes the guard cannot follow were handed over: after them, the connection ends.
    Poisoned,
    /// After a refusal: nothing more is read.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line: digits seen, significant ones (leading zeros aside).
    Size {
        digits: u32,
        significant: u32,
        value: u64,
        in_ext: bool,
        cr: bool,
    },
    /// Chunk data bytes left.
    Data(u64),
    /// The CRLF after chunk data (bytes of it seen).
    DataEnd(u8),
    /// Trailer lines after the last chunk: length of the current line, and whether a CR ended it.
    Trailer { len: usize, cr: bool },
}

/// The guard around a connection's IO. Bytes are read into one buffer and handed to hyper
/// from it; only an incomplete request head is held back.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    io: IO,
    state: State,
    /// Read bytes are `buf[..filled]`; the rest is room for the next read (zeroed once).
    buf: Vec<u8>,
    filled: usize,
    /// First byte not yet handed to hyper.
    start: usize,
    /// Bytes before this may be handed to hyper.
    ready: usize,
    /// Bytes before this went through the state machine.
    scanned: usize,
    /// Where the request head being read begins.
    head_start: usize,
    /// The client closed its side.
    eof: bool,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`.
    pub fn new(io: IO) -> FramingGuard<IO> {
        FramingGuard {
            io,
            state: State::Head,
            buf: Vec::new(),
            filled: 0,
            start: 0,
            ready: 0,
            scanned: 0,
            head_start: 0,
            eof: false,
        }
    }

    /// Runs the state machine over the bytes read since the last call.
    fn process(&mut self) {
        while self.scanned < self.filled {
            match self.state.clone() {
                State::Poisoned | State::Closed => {
                    // What follows is never handed over.
                    self.scanned = self.filled;
                }
                State::Head => {
                    let from = self.scanned.saturating_sub(3).max(self.head_start);
                    let limit = MAX_HEADER_BYTES * 2;
                    let end = head_end(&self.buf[from..self.filled]).map(|i| from + i + 4);
                    match end {
                        Some(end) if end - self.head_start <= limit => self.head_complete(end),
                        _ if self.filled - self.head_start > limit => {
                            // Far too big: hand over enough for hyper to refuse it (431).
                            self.ready = self.head_start + limit;
                            self.state = State::Poisoned;
                        }
                        _ => {
                            self.scanned = self.filled;
                            return; // the head is not whole yet
                        }
                    }
                }
                State::Fixed(left) => {
                    let take = left.min((self.filled - self.scanned) as u64);
                    self.scanned += take as usize;
                    self.ready = self.scanned;
                    self.state = if take == left {
                        self.next_head()
                    } else {
                        State::Fixed(left - take)
                    };
                }
                State::Chunked(chunk) => {
                    let (used, next) = step_chunk(chunk, &self.buf[self.scanned..self.filled]);
                    self.scanned += used;
                    self.ready = self.scanned;
                    self.state = if next == State::Head {
                        self.next_head()
                    } else {
                        next
                    };
                }
            }
        }
    }

    fn next_head(&mut self) -> State {
        self.head_start = self.scanned;
        State::Head
    }

    /// A whole head ends at `end`: pass it on and follow its framing, or replace it with a
    /// refusal.
    fn head_complete(&mut self, end: usize) {
        let framing = Framing::of(&self.buf[self.head_start..end]);
        if let Some(why) = framing.ambiguity() {
            let line = &self.buf[self.head_start..end];
            let first = line.split(|b| *b == b'\r').next().unwrap_or_default();
            let mut words = first.split(|b| *b == b' ');
            let method = words
                .next()
                .filter(|m| !m.is_empty() && m.iter().all(u8::is_ascii_alphabetic));
            let path = words
                .next()
                .filter(|p| p.iter().all(|b| b.is_ascii_graphic()));
            let (method, path) = match (method, path) {
                (Some(m), Some(p)) => (
                    String::from_utf8_lossy(m).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                ),
                _ => ("GET".into(), "/".into()),
            };
            let replacement = format!(
                "{method} {path} HTTP/1.1\r\nhost: bcproxy\r\nconnection: close\r\n{}: {} ambiguous body framing: {why}\r\n\r\n",
                REFUSED.as_str(),
                marker()
            );
            self.buf.truncate(self.head_start);
            self.buf.extend_from_slice(replacement.as_bytes());
            self.filled = self.buf.len();
            self.scanned = self.filled;
            self.ready = self.filled;
            self.state = State::Closed;
            return;
        }
        self.scanned = end;
        self.ready = end;
        self.state = match framing.body() {
            Body::None => self.next_head(),
            Body::Fixed(n) => State::Fixed(n),
            Body::Chunked => State::Chunked(Chunk::Size {
                digits: 0,
                significant: 0,
                value: 0,
                in_ext: false,
                cr: false,
            }),
        };
    }

    /// Hands over up to `max` ready bytes; drops what was handed over once all of it was.
    fn take_ready(&mut self, max: usize) -> &[u8] {
        let n = (self.ready - self.start).min(max);
        let from = self.start;
        self.start += n;
        &self.buf[from..from + n]
    }

    /// Forgets bytes already handed over, so the buffer does not grow.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.ready -= self.start;
        self.scanned -= self.start;
        self.head_start = self.head_start.saturating_sub(self.start);
        self.start = 0;
    }
}

/// What a request head says about its body.
#[derive(Debug, Default)]
struct Framing<'a> {
    lengths: Vec<&'a [u8]>,
    encodings: Vec<&'a [u8]>,
}

enum Body {
    None,
    Fixed(u64),
    Chunked,
}

impl<'a> Framing<'a> {
    /// Reads the `Content-Length` and `Transfer-Encoding` fields of a head (the rest is
    /// hyper's to check).
    fn of(head: &'a [u8]) -> Framing<'a> {
        let mut framing = Framing::default();
        let mut starts = memchr::memchr_iter(b'\n', head).map(|i| i + 1);
        let mut start = starts.next().unwrap_or(head.len());
        while start < head.len() {
            let end = starts.next().unwrap_or(head.len());
            let line = &head[start..end];
            start = end;
            // Only two names matter here: skip every other line at its first byte.
            if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                framing.lengths.push(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                framing.encodings.push(value);
            }
        }
        framing
    }

    /// Why the head's framing is refused: any shape but one plain `Content-Length` or one
    /// `Transfer-Encoding: chunked` (the proxy forwards nothing else).
    fn ambiguity(&self) -> Option<&'static str> {
        match (self.lengths.as_slice(), self.encodings.as_slice()) {
            ([_, ..], [_, ..]) => Some("both Content-Length and Transfer-Encoding"),
            ([_, _, ..], _) => Some("more than one Content-Length"),
            (_, [_, _, ..]) => Some("more than one Transfer-Encoding"),
            (_, [te]) if !te.eq_ignore_ascii_case(b"chunked") => {
                Some("a Transfer-Encoding other than chunked")
            }
            ([len], _) if length(len).is_none() => Some("Content-Length is not a single number"),
            _ => None,
        }
    }

    /// The body's framing, once [`Framing::ambiguity`] found none.
    fn body(&self) -> Body {
        match (self.lengths.first(), self.encodings.first()) {
            (_, Some(_)) => Body::Chunked,
            (Some(len), None) => match length(len) {
                Some(0) | None => Body::None,
                Some(n) => Body::Fixed(n),
            },
            (None, None) => Body::None,
        }
    }
}

/// A `Content-Length` value: digits only.
fn length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Where the first `\r\n\r\n` (the end of a head) starts.
fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf)
        .find(|&i| i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n")
        .map(|i| i - 3)
}

/// Follows a chunked body over `data`: how many bytes belong to it, and the state after them.
fn step_chunk(mut chunk: Chunk, data: &[u8]) -> (usize, State) {
    let mut i = 0;
    while i < data.len() {
        let byte = data[i];
        match &mut chunk {
            Chunk::Size {
                digits,
                significant,
                value,
                in_ext,
                cr,
            } => {
                if *cr {
                    if byte != b'\n' || *digits == 0 {
                        return (i, State::Poisoned);
                    }
                    i += 1;
                    chunk = if *value == 0 {
                        Chunk::Trailer { len: 0, cr: false }
                    } else {
                        Chunk::Data(*value)
                    };
                    continue;
                }
                match byte {
                    b'\r' => *cr = true,
                    b';' => *in_ext = true,
                    _ if *in_ext => {}
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if *significant < 16 => {
                        let d = (byte as char).to_digit(16).unwrap_or(0) as u64;
                        *value = *value * 16 + d;
                        *digits += 1;
                        if *value > 0 {
                            *significant += 1;
                        }
                    }
                    b' ' | b'\t' => {}
                    _ => return (i, State::Poisoned),
                }
                i += 1;
            }
            Chunk::Data(left) => {
                let take = (*left).min((data.len() - i) as u64);
                i += take as usize;
                *left -= take;
                if *left == 0 {
                    chunk = Chunk::DataEnd(0);
                }
            }
            Chunk::DataEnd(seen) => {
                let expected = if *seen == 0 { b'\r' } else { b'\n' };
                if byte != expected {
                    return (i, State::Poisoned);
                }
                i += 1;
                if *seen == 1 {
                    chunk = Chunk::Size {
                        digits: 0,
                        significant: 0,
                        value: 0,
                        in_ext: false,
                        cr: false,
                    };
                } else {
                    *seen += 1;
                }
            }
            Chunk::Trailer { len, cr } => {
                i += 1;
                if *cr {
                    if byte != b'\n' {
                        return (i, State::Poisoned);
                    }
                    if *len == 0 {
                        return (i, State::Head);
                    }
                    *len = 0;
                    *cr = false;
                } else if byte == b'\r' {
                    *cr = true;
                } else {
                    *len += 1;
                }
            }
        }
    }
    (i, State::Chunked(chunk))
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.start < this.ready {
                let bytes = this.take_ready(out.remaining());
                out.put_slice(bytes);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Closed | State::Poisoned) {
                // Nothing after a refusal, or after bytes the guard cannot follow, is read. Not
                // an EOF either: hyper would take that for an app gone away and drop its
                // answer; it answers (400, 431) and closes instead.
                return Poll::Pending;
            }
            this.compact();
            let len = this.filled;
            if this.buf.len() < len + READ_SIZE {
                this.buf.resize(len + READ_SIZE, 0);
            }
            let mut read = ReadBuf::new(&mut this.buf[len..]);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut read);
            let n = read.filled().len();
            this.filled = len + n;
            match polled {
                Poll::Ready(Ok(())) if n == 0 => {
                    // EOF: hand over what is left (a partial head) for hyper to judge, then end.
                    this.eof = true;
                    this.ready = this.filled;
                }
                Poll::Ready(Ok(())) => this.process(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The bytes hyper would read from a connection on which `chunks` arrived (for fuzzing).
pub fn scan(chunks: &[&[u8]]) -> Vec<u8> {
    let mut guard = FramingGuard::new(());
    let mut out = Vec::new();
    for chunk in chunks {
        guard.buf.truncate(guard.filled);
        guard.buf.extend_from_slice(chunk);
        guard.filled = guard.buf.len();
        guard.process();
        let ready = guard.take_ready(usize::MAX).to_vec();
        out.extend(ready);
        guard.compact();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]]) -> (Vec<u8>, State) {
        let mut guard = FramingGuard::new(());
        let mut out = Vec::new();
        for part in input {
            guard.buf.truncate(guard.filled);
            guard.buf.extend_from_slice(part);
            guard.filled = guard.buf.len();
            guard.process();
            out.extend(guard.take_ready(usize::MAX).to_vec());
            guard.compact();
        }
        (out, guard.state)
    }

    #[test]
    fn keep_alive_requests_pass_untouched_split_anywhere() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..stream.len() {
            let (out, state) = run(&[&stream[..split], &stream[split..]]);
            assert_eq!(out, stream, "split at {split}");
            assert_eq!(state, State::Head);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes).0, stream);
    }

    #[test]
    fn ambiguous_heads_are_replaced_and_the_rest_dropped() {
        for head in [
            &b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (out, state) = run(&[head]);
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("POST /a HTTP/1.1\r\n"), "{text}");
            assert!(text.contains("connection: close"));
            assert!(!text.contains("smuggled"));
            assert_eq!(state, State::Closed);
            let mut headers = HeaderMap::new();
            let value = text.lines().find_map(|l| l.strip_prefix("x-bcproxy-refused: ")).unwrap();
            headers.insert(REFUSED, value.parse().unwrap());
            assert!(refusal(&headers).unwrap().contains("ambiguous body framing"));
        }
        let mut forged = HeaderMap::new();
        forged.insert(REFUSED, "0000 ambiguous".parse().unwrap());
        assert!(refusal(&forged).is_none());
    }
}
