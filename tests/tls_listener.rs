//! The HTTPS listener: apps whose clients insist on https talk to the proxy over TLS, with h2
//! or HTTP/1.1 by ALPN.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
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
        let client = https_client(&files.ca, h2);
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
    // A plain-HTTP client on the TLS port is told to use https://, and nothing reaches the
    // store (more in `plain_http_on_the_tls_port_is_told_to_use_https`).
    let calls = sim.sim.stats(false).calls;
    let mut plain = RawConn::connect(proxy.addr).await;
    plain
        .send(b"GET /api/v2/time HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(
        plain.read_response(false).await.map(|r| r.status),
        Some(400)
    );
    assert_eq!(sim.sim.stats(false).calls, calls);
}

/// A TLS client on a plain port (the app says https:// to an http listener) fails at once,
/// not at its own timeout: the proxy recognises the ClientHello, logs one
/// `listen.tls_on_plain_port` saying what to do (at most once per 10 s per listener, with how
/// many it held back), and closes — on the app port and the admin port alike.
#[tokio::test]
async fn a_tls_client_on_the_plain_port_is_told_and_closed_at_once() {
    let (logs, _guard) = Logs::capture();
    let files = tls_files();
    let sim = start_sim().await;
    let proxy = start_proxy_with_admin(
        settings(&sim.url(), "", &[("listen.header_timeout", "30s")]),
        None,
    )
    .await;
    let tls = bcproxy::tls::client_config(Some(&files.ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    for addr in [proxy.addr, proxy.admin_addr.expect("admin")] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let handshake = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connector.connect("localhost".try_into().unwrap(), tcp),
        )
        .await
        .expect("the handshake ended at once, not at the header timeout");
        assert!(
            handshake.is_err(),
            "a TLS handshake succeeded on a plain port"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    // A client retrying in a loop is told once per 10 s per listener, not once per try.
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let again = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await;
        assert!(again.is_err());
    }
    let told: Vec<serde_json::Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "listen.tls_on_plain_port")
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(told[0]["repeated"], 0);
    assert_eq!(told[0]["listener"], "proxy");
    assert_eq!(told[1]["listener"], "admin");
    assert!(
        told[0]["hint"]
            .as_str()
            .unwrap()
            .contains("set listen.tls_cert and listen.tls_key, or use http://"),
        "{told:?}"
    );
    // Plain HTTP on the same port still works.
    let http = Http::default();
    assert_eq!(
        http.get(&format!("{}/api/v2/time", proxy.url()))
            .await
            .status,
        200
    );
    assert_eq!(sim.sim.stats(false).calls, 1);
}

/// The reverse: plain HTTP to the HTTPS port gets a plain `400` saying to use https://, one
/// `listen.plain_on_tls_port` event, and a closed connection (not a TLS alert it cannot read,
/// nor a wait until the header timeout).
#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let (logs, _guard) = Logs::capture();
    let files = tls_files();
    let sim = start_sim().await;
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[
            ("listen.tls_cert", &files.cert.display().to_string()),
            ("listen.tls_key", &files.key.display().to_string()),
            ("listen.header_timeout", "30s"),
        ],
    ))
    .await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /api/v2/time HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_response(false))
        .await
        .expect("answered at once")
        .expect("an answer");
    assert_eq!(answer.status, 400);
    assert!(
        String::from_utf8_lossy(&answer.body).contains("use https://"),
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(conn.closed_within(std::time::Duration::from_secs(2)).await);
    let told = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "listen.plain_on_tls_port")
        .count();
    assert_eq!(told, 1);
    assert_eq!(
        sim.sim.stats(false).calls,
        0,
        "nothing was sent to the store"
    );
}
