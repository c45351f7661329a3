//! The reference the speed benchmark measures bcproxy against: a bare hyper server answering
//! every GET with the same JSON body from memory (keep-alive, HTTP/1.1, the default Tokio
//! runtime). `cargo run --release --example bare -- 127.0.0.1:18099 2048`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18099)));
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let body = Bytes::from(json_of(size));
    let listener = TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let mut response = Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A JSON object of about `size` bytes.
fn json_of(size: usize) -> String {
    let pad = size.saturating_sub(40);
    format!(
        "{{\"id\":1,\"name\":\"bare\",\"description\":\"{}\"}}",
        "x".repeat(pad)
    )
}
