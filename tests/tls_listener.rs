//! The HTTPS listener: apps whose clients insist on https talk to the proxy over TLS, with h2
//! or HTTP/1.1 by ALPN.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

/// With `listen.tls_cert`/`tls_key`, a client trusting the test CA gets the store's answers
/// over h2 and over HTTP/1.1, and `Location` points at the proxy's https address.
#[tokio::test]
async fn https_listener_serves_h2_and_http1() {
    let files = tls_files();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("listen.tls_cert", &files.cert.display().to_string()),
            ("listen.tls_key", &files.key.display().to_string()),
        ],
    ))
    .await;
    let https = format!("https://localhost:{}", proxy.addr.port());
    for h2 in [true, false] {
        let tls = bcproxy::tls::client_config(Some(&files.ca)).unwrap();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        let response = client
            .request(
                Request::get(format!("{https}/api/v2/products/3"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .expect("https call");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.version(),
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["name"], "日本茶セット");

        let name = format!("TLS brand {h2}");
        let created = client
            .request(
                Request::post(format!("{https}/api/v2/brands"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!("{{\"name\":\"{name}\"}}"))))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let location = created.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&format!("{https}/api/v2/brands/")),
            "{location}"
        );
    }
    // A plain-HTTP client on the TLS port gets nothing useful, and nothing reaches the store.
    let calls = sim.sim.stats(false).calls;
    let mut plain = RawConn::connect(proxy.addr).await;
    plain
        .send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(plain.read_response(false).await.is_none());
    assert_eq!(sim.sim.stats(false).calls, calls);
}
