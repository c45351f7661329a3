//! The framing guard, refereed by an independent HTTP/1 parser (httparse plus the RFC 9112
//! chunked grammar written here): whatever requests came before it on a connection, split
//! wherever the network splits them, no request with conflicting framing is ever handed to
//! hyper (so none reaches the store) unless replaced by the guard's refusal, and nothing after
//! a refusal or after bytes the guard cannot follow is handed over at all.

use bcproxy::framing::scan;
use proptest::prelude::*;

/// One request's shape on the wire.
#[derive(Debug, Clone)]
enum Shape {
    NoBody,
    Length {
        zeros: usize,
        body: Vec<u8>,
    },
    Chunked {
        chunks: Vec<(usize, Vec<u8>)>,
        ext: bool,
        trailer: bool,
    },
    // Conflicting or unsupported framing: must never be handed over as it is.
    LengthAndChunked,
    ChunkedAndLength,
    TwoLengths,
    TwoEncodings,
    GzipChunked,
    BadLength,
    // Broken chunking: hyper refuses it; nothing after it may be read.
    BadChunk,
}

impl Shape {
    fn conflicting(&self) -> bool {
        matches!(
            self,
            Shape::LengthAndChunked
                | Shape::ChunkedAndLength
                | Shape::TwoLengths
                | Shape::TwoEncodings
                | Shape::GzipChunked
                | Shape::BadLength
        )
    }

    fn render(&self, i: usize) -> Vec<u8> {
        let body = b"{\"name\":\"smuggled\"}";
        let chunked = format!(
            "{:x}\r\n{}\r\n0\r\n\r\n",
            body.len(),
            String::from_utf8_lossy(body)
        );
        let head =
            |extra: &str| format!("POST /api/v2/brands?n={i} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let text = match self {
            Shape::NoBody => format!("GET /api/v2/time?n={i} HTTP/1.1\r\nHost: x\r\n\r\n"),
            Shape::Length { zeros, body } => {
                let mut out = head(&format!(
                    "Content-Length: {}{}\r\n",
                    "0".repeat(*zeros),
                    body.len()
                ))
                .into_bytes();
                out.extend_from_slice(body);
                return out;
            }
            Shape::Chunked {
                chunks,
                ext,
                trailer,
            } => {
                let mut out = head("Transfer-Encoding: chunked\r\n").into_bytes();
                for (zeros, data) in chunks {
                    let ext = if *ext { ";a=1" } else { "" };
                    out.extend(format!("{}{:x}{ext}\r\n", "0".repeat(*zeros), data.len()).bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if *trailer {
                    out.extend_from_slice(b"X-Trailer: 1\r\n");
                }
                out.extend_from_slice(b"\r\n");
                return out;
            }
            Shape::LengthAndChunked => format!(
                "{}{chunked}",
                head(&format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    chunked.len()
                ))
            ),
            Shape::ChunkedAndLength => format!(
                "{}{chunked}",
                head(&format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    chunked.len()
                ))
            ),
            Shape::TwoLengths => format!(
                "{}{}",
                head(&format!(
                    "Content-Length: {0}\r\nContent-Length: {0}\r\n",
                    body.len()
                )),
                String::from_utf8_lossy(body)
            ),
            Shape::TwoEncodings => format!(
                "{}{chunked}",
                head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")
            ),
            Shape::GzipChunked => {
                format!("{}{chunked}", head("Transfer-Encoding: gzip, chunked\r\n"))
            }
            Shape::BadLength => format!(
                "{}{}",
                head("Content-Length: +19\r\n"),
                String::from_utf8_lossy(body)
            ),
            Shape::BadChunk => format!(
                "{}zz\r\nhello\r\n0\r\n\r\n",
                head("Transfer-Encoding: chunked\r\n")
            ),
        };
        text.into_bytes()
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    let data = prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        3 => Just(Shape::NoBody),
        3 => (0usize..20, data.clone()).prop_map(|(zeros, body)| Shape::Length { zeros, body }),
        3 => (prop::collection::vec((0usize..20, prop::collection::vec(any::<u8>(), 1..16)), 0..4), any::<bool>(), any::<bool>())
            .prop_map(|(chunks, ext, trailer)| Shape::Chunked { chunks, ext, trailer }),
        1 => Just(Shape::LengthAndChunked),
        1 => Just(Shape::ChunkedAndLength),
        1 => Just(Shape::TwoLengths),
        1 => Just(Shape::TwoEncodings),
        1 => Just(Shape::GzipChunked),
        1 => Just(Shape::BadLength),
        1 => Just(Shape::BadChunk),
    ]
}

/// What the referee reads of a stream: each request head with its framing headers, and
/// whether it is the guard's refusal.
#[derive(Debug)]
struct Seen {
    lengths: Vec<String>,
    encodings: Vec<String>,
    refusal: bool,
}

/// Reads requests off `bytes` as an HTTP/1 server would, stopping at the first thing it cannot
/// parse (hyper would refuse it and read no further).
fn referee(mut bytes: &[u8]) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = req.parse(bytes) else {
            return seen;
        };
        let values = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                .collect()
        };
        let one = Seen {
            lengths: values("content-length"),
            encodings: values("transfer-encoding"),
            refusal: !values("x-bcproxy-refused").is_empty(),
        };
        bytes = &bytes[n..];
        let chunked = one
            .encodings
            .last()
            .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
        let length = one.lengths.first().and_then(|l| l.parse::<usize>().ok());
        let refusal = one.refusal;
        seen.push(one);
        if refusal {
            return seen;
        }
        if chunked {
            match dechunk(bytes) {
                Some(rest) => bytes = rest,
                None => return seen,
            }
        } else if let Some(length) = length {
            if bytes.len() < length {
                return seen;
            }
            bytes = &bytes[length..];
        }
    }
}

/// RFC 9112 §7.1 chunked-body: the bytes after it, or `None` when it is cut short or broken.
fn dechunk(mut bytes: &[u8]) -> Option<&[u8]> {
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = line.split(';').next()?.trim();
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let size = usize::from_str_radix(size.trim_start_matches('0'), 16)
            .or_else(|_| {
                if size.trim_start_matches('0').is_empty() {
                    Ok(0)
                } else {
                    Err(())
                }
            })
            .ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let end = bytes.windows(2).position(|w| w == b"\r\n")?;
                let empty = end == 0;
                bytes = &bytes[end + 2..];
                if empty {
                    return Some(bytes);
                }
            }
        }
        if bytes.len() < size + 2 || &bytes[size..size + 2] != b"\r\n" {
            return None;
        }
        bytes = &bytes[size + 2..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_conflicting_framing_is_ever_handed_over(
        shapes in prop::collection::vec(shape(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut input = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            input.extend(s.render(i));
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&input[last..p]);
            last = p;
        }
        chunks.push(&input[last..]);
        let output = scan(&chunks);

        let handed = referee(&output);
        for (i, seen) in handed.iter().enumerate() {
            let conflicting = seen.lengths.len() + seen.encodings.len() > 1
                || seen.encodings.iter().any(|te| !te.eq_ignore_ascii_case("chunked"))
                || seen.lengths.iter().any(|l| !l.bytes().all(|b| b.is_ascii_digit()) || l.is_empty());
            prop_assert!(
                !conflicting || seen.refusal,
                "request {i} was handed over with conflicting framing: {seen:?}\n{}",
                String::from_utf8_lossy(&output)
            );
        }
        // What was handed over is the input, in order, up to where the guard stopped; a
        // refusal only replaces the head of the request it refused.
        let refused_at = handed.iter().position(|s| s.refusal);
        match refused_at {
            None => prop_assert!(input.starts_with(&output), "the guard changed bytes it let through"),
            Some(_) => {
                let head_start = output.windows(6).rposition(|w| w == b"POST /" || w == b"GET /a").unwrap_or(0);
                prop_assert!(input.starts_with(&output[..head_start]));
            }
        }
        // Every request before the first conflicting or broken one is handed over whole.
        let first_bad = shapes.iter().position(|s| s.conflicting() || matches!(s, Shape::BadChunk));
        let expected = first_bad.unwrap_or(shapes.len());
        prop_assert!(handed.len() >= expected, "{} of {expected} good requests were handed over", handed.len());
        if let Some(bad) = first_bad
            && shapes[bad].conflicting() {
                prop_assert!(handed.get(bad).is_some_and(|s| s.refusal), "the conflicting request {bad} was not refused");
                prop_assert_eq!(handed.len(), bad + 1, "something after a refusal was handed over");
            }
    }
}
