//! A guard in front of hyper on HTTP/1 connections that refuses request-smuggling shapes.
//!
//! hyper resolves ambiguous body framing quietly (it keeps `Transfer-Encoding` over
//! `Content-Length` and merges identical duplicate lengths), which is safe for hyper but
//! hides from the proxy a request that a front-end or another hop may have read
//! differently. The guard reads every request head itself before hyper does, follows the body
//! framing to find the next head on a keep-alive connection, and replaces an ambiguous head
//! with one that the proxy answers with `400` and `Connection: close`; nothing after it on the
//! connection is read.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::{MAX_HEADER_BYTES, MAX_HEADERS};

/// Header the guard puts in the head that replaces a refused one.
pub const REFUSED_HEADER: &str = "x-bcproxy-refused";

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
    let value = headers.get(REFUSED_HEADER)?.to_str().ok()?;
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
    /// Not inspected any more (h1 errors hyper handles itself).
    Through,
    /// After a refusal: nothing more is read.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (digits seen so far).
    Size {
        digits: u32,
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

/// The guard around a connection's IO.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    io: IO,
    state: State,
    head: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`.
    pub fn new(io: IO) -> FramingGuard<IO> {
        FramingGuard {
            io,
            state: State::Head,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Takes newly read bytes through the state machine, into `out`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state.clone() {
                State::Through => {
                    self.emit(data);
                    return;
                }
                State::Closed => return,
                State::Head => {
                    let searched = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(data);
                    data = &[];
                    let limit = MAX_HEADER_BYTES * 2;
                    let end = find(&self.head[searched..], b"\r\n\r\n").map(|i| searched + i + 4);
                    match end {
                        Some(end) if end <= limit => {
                            let mut head = std::mem::take(&mut self.head);
                            let rest = head.split_off(end);
                            self.head_complete(&head);
                            // Whatever followed the head goes through the machine again.
                            if !rest.is_empty() && self.state != State::Closed {
                                self.feed(&rest);
                            }
                        }
                        _ if self.head.len() > limit => {
                            // Far too big: let hyper say so.
                            let head = std::mem::take(&mut self.head);
                            self.emit(&head);
                            self.state = State::Through;
                        }
                        _ => {}
                    }
                }
                State::Fixed(left) => {
                    let take = (left as usize).min(data.len());
                    self.emit(&data[..take]);
                    data = &data[take..];
                    self.state = if left as usize == take {
                        State::Head
                    } else {
                        State::Fixed(left - take as u64)
                    };
                }
                State::Chunked(chunk) => {
                    let (used, next) = step_chunk(chunk, data);
                    self.emit(&data[..used]);
                    data = &data[used..];
                    self.state = next;
                }
            }
        }
    }

    /// A whole head: pass it on and follow its framing, or replace it with a refusal.
    fn head_complete(&mut self, head: &[u8]) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut fields);
        let Ok(httparse::Status::Complete(_)) = request.parse(head) else {
            // hyper answers malformed heads itself.
            self.emit(head);
            self.state = State::Through;
            return;
        };
        let mut lengths = Vec::new();
        let mut encodings = Vec::new();
        for field in request.headers.iter() {
            if field.name.eq_ignore_ascii_case("content-length") {
                lengths.push(field.value);
            } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
                encodings.push(field.value);
            }
        }
        let why = match (lengths.as_slice(), encodings.as_slice()) {
            (_, [_, ..]) if !lengths.is_empty() => {
                Some("both Content-Length and Transfer-Encoding")
            }
            ([_, _, ..], _) => Some("more than one Content-Length"),
            (_, [_, _, ..]) => Some("more than one Transfer-Encoding"),
            _ => None,
        };
        if let Some(why) = why {
            let method = request.method.unwrap_or("GET");
            let path = request.path.unwrap_or("/");
            let replacement = format!(
                "{method} {path} HTTP/1.1\r\nhost: bcproxy\r\nconnection: close\r\n{REFUSED_HEADER}: {} ambiguous body framing: {why}\r\n\r\n",
                marker()
            );
            self.emit(replacement.as_bytes());
            self.state = State::Closed;
            return;
        }
        self.emit(head);
        self.state = match (lengths.first(), encodings.first()) {
            (_, Some(te)) => {
                if std::str::from_utf8(te).is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")) {
                    State::Chunked(Chunk::Size {
                        digits: 0,
                        value: 0,
                        in_ext: false,
                        cr: false,
                    })
                } else {
                    // hyper refuses other transfer codings in requests.
                    State::Through
                }
            }
            (Some(len), None) => match std::str::from_utf8(len)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(0) => State::Head,
                Some(n) => State::Fixed(n),
                None => State::Through,
            },
            (None, None) => State::Head,
        };
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Follows a chunked body over `data`: how many bytes belong to it, and the state after them.
fn step_chunk(mut chunk: Chunk, data: &[u8]) -> (usize, State) {
    let mut i = 0;
    while i < data.len() {
        let byte = data[i];
        match &mut chunk {
            Chunk::Size {
                digits,
                value,
                in_ext,
                cr,
            } => {
                if *cr {
                    if byte != b'\n' || *digits == 0 {
                        return (data.len(), State::Through);
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
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if *digits < 16 => {
                        let d = (byte as char).to_digit(16).unwrap_or(0) as u64;
                        *value = *value * 16 + d;
                        *digits += 1;
                    }
                    b' ' | b'\t' => {}
                    _ => return (data.len(), State::Through),
                }
                i += 1;
            }
            Chunk::Data(left) => {
                let take = (*left as usize).min(data.len() - i);
                i += take;
                *left -= take as u64;
                if *left == 0 {
                    chunk = Chunk::DataEnd(0);
                }
            }
            Chunk::DataEnd(seen) => {
                let expected = if *seen == 0 { b'\r' } else { b'\n' };
                if byte != expected {
                    return (data.len(), State::Through);
                }
                i += 1;
                if *seen == 1 {
                    chunk = Chunk::Size {
                        digits: 0,
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
                        return (data.len(), State::Through);
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
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Closed {
                // Nothing after a refusal is read. Not an EOF either: hyper would take that for
                // an app gone away and drop the answer; it closes after answering instead.
                return Poll::Pending;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    if filled.is_empty() {
                        // EOF: hand over a partial head for hyper to judge.
                        let head = std::mem::take(&mut this.head);
                        if head.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.emit(&head);
                        this.state = State::Through;
                        continue;
                    }
                    let filled = filled.to_vec();
                    this.feed(&filled);
                }
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
    for chunk in chunks {
        guard.feed(chunk);
    }
    guard.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]]) -> (Vec<u8>, State) {
        let mut guard = FramingGuard::new(());
        for part in input {
            guard.feed(part);
        }
        (guard.out, guard.state)
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
            headers.insert(REFUSED_HEADER, value.parse().unwrap());
            assert!(refusal(&headers).unwrap().contains("ambiguous body framing"));
        }
        let mut forged = HeaderMap::new();
        forged.insert(REFUSED_HEADER, "0000 ambiguous".parse().unwrap());
        assert!(refusal(&forged).is_none());
    }
}
