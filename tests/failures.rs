//! When the store fails: the app gets a clear answer in the store's error shape, quickly, and
//! the connection stays usable.

mod support;

use std::time::{Duration, Instant};

use bcproxy::sim::{Fault, SimConfig};
use support::*;

/// A store that refuses connections gives 502 within 2 s, saying it is unreachable; the next
/// call on the same connection is answered too.
#[tokio::test]
async fn store_down_gives_502_fast() {
    let dead = dead_port().await;
    let proxy = start_proxy(settings(&format!("http://{dead}"), "", &[])).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        let started = Instant::now();
        conn.send(b"GET /api/v2/products HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let response = conn
            .read_response(false)
            .await
            .expect("an answer on the same connection");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(response.status, 502);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(response.header("x-request-id").is_some());
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body[0]["status"], 502);
        let message = body[0]["message"].as_str().unwrap();
        assert!(message.contains("unreachable"), "{message}");
        assert!(!message.contains("TLS"), "{message}");
    }
}

/// Errors the proxy makes are XML when a legacy app asked for XML, and the v3 object on
/// `/v3/` paths.
#[tokio::test]
async fn proxy_errors_use_the_shape_the_app_asked_for() {
    let dead = dead_port().await;
    let proxy = start_proxy(settings(&format!("http://{dead}"), "", &[])).await;
    let http = Http::default();
    let xml = http
        .get_with(
            &format!("{}/api/v2/products", proxy.url()),
            &[("accept", "application/xml")],
        )
        .await;
    assert_eq!(xml.status, 502);
    assert_eq!(xml.header("content-type"), Some("application/xml"));
    assert!(
        xml.text()
            .contains("<errors><error><status>502</status><message>"),
        "{}",
        xml.text()
    );
    let suffix = http
        .get(&format!("{}/api/v2/products.xml", proxy.url()))
        .await;
    assert!(suffix.text().starts_with("<?xml"), "{}", suffix.text());
    let v3 = http
        .get(&format!("{}/stores/abc/v3/catalog/products", proxy.url()))
        .await;
    assert_eq!(v3.status, 502);
    assert_eq!(v3.json()["status"], 502);
    assert!(v3.json()["title"].as_str().unwrap().contains("unreachable"));
}

/// A store that hangs gives 504 after `upstream.timeout` (a write is never sent twice); the
/// connection carries the next call.
#[tokio::test]
async fn store_hanging_gives_504_after_the_timeout() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("upstream.timeout", "400ms")])).await;
    sim.sim.inject(Fault::Hang, 1);
    let mut conn = RawConn::connect(proxy.addr).await;
    let started = Instant::now();
    conn.send(b"PUT /api/v2/products/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").await;
    let response = conn.read_response(false).await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status, 504);
    assert!(
        took >= Duration::from_millis(400),
        "504 before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "504 far after the timeout: {took:?}"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 400ms")
    );
    assert_eq!(sim.sim.stats(false).calls, 1, "a write was sent twice");
    conn.send(b"GET /api/v2/products/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
}

/// A GET or HEAD is tried once more after a hang, a dropped connection or a 5xx, and only once;
/// writes never are.
#[tokio::test]
async fn reads_are_retried_once_writes_never() {
    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), "", &[("upstream.timeout", "300ms")])).await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/1", proxy.url());

    sim.sim.inject(Fault::Hang, 1);
    assert_eq!(
        http.get(&url).await.status,
        200,
        "one hang is absorbed by the retry"
    );
    sim.sim.inject(Fault::Reset, 1);
    assert_eq!(
        http.get(&url).await.status,
        200,
        "one reset is absorbed by the retry"
    );
    sim.sim.inject(
        Fault::Status {
            status: 500,
            location: None,
        },
        1,
    );
    assert_eq!(
        http.get(&url).await.status,
        200,
        "one 500 is absorbed by the retry"
    );
    assert_eq!(sim.sim.stats(false).calls, 6);

    sim.sim.reset(false);
    sim.sim.inject(Fault::Reset, 2);
    let reset = http.get(&url).await;
    assert_eq!(reset.status, 502);
    assert!(
        reset.json()[0]["message"]
            .as_str()
            .unwrap()
            .contains("failed to answer"),
        "{}",
        reset.text()
    );
    sim.sim.inject(
        Fault::Status {
            status: 503,
            location: None,
        },
        2,
    );
    let maintenance = http.get(&url).await;
    assert_eq!(maintenance.status, 503);
    assert_eq!(
        maintenance.json()[0]["message"],
        "The store is down for maintenance."
    );
    assert_eq!(
        sim.sim.stats(false).calls,
        4,
        "each failing GET was tried exactly twice"
    );

    sim.sim.reset(false);
    sim.sim.inject(
        Fault::Status {
            status: 500,
            location: None,
        },
        1,
    );
    let write = http
        .send(
            http::Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Once only"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(write.status, 500, "a write's 5xx is passed on, not retried");
    sim.sim.inject(Fault::Reset, 1);
    let write = http
        .send(
            http::Request::post(format!("{}/api/v2/brands", proxy.url()))
                .header("content-type", "application/json")
                .body(body(r#"{"name":"Once only"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(write.status, 502);
    assert_eq!(sim.sim.stats(false).calls, 2);
}

/// A TLS store whose certificate comes from a private CA works with `upstream.ca_file`, and
/// gives 502 naming the TLS failure without it.
#[tokio::test]
async fn tls_upstream_trusts_ca_file_only() {
    let files = tls_files();
    let tls = bcproxy::tls::server_config(&files.cert, &files.key).unwrap();
    let sim = start_sim_with(SimConfig {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    assert!(sim.url().starts_with("https://"));

    let ca = files.ca.display().to_string();
    let trusted = start_proxy(settings(&sim.url(), "", &[("upstream.ca_file", &ca)])).await;
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/2", trusted.url()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let log = sim.sim.stats(true).log;
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].version, "HTTP/2.0",
        "ALPN should have picked h2 with the TLS store"
    );

    let untrusted = start_proxy(settings(&sim.url(), "", &[])).await;
    let reply = Http::default()
        .get(&format!("{}/api/v2/products/2", untrusted.url()))
        .await;
    assert_eq!(reply.status, 502);
    let message = reply.json()[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("TLS"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(
        message.contains("signed by a CA this proxy does not trust: put that CA's certificate (PEM) in upstream.ca_file"),
        "{message}"
    );
    assert_eq!(
        sim.sim.stats(false).calls,
        1,
        "a call went through an untrusted TLS connection"
    );
}

/// A store whose connections never complete (a full accept queue) gives 502 after
/// `upstream.connect_timeout`, not after the response timeout.
#[tokio::test]
async fn connect_timeout_bounds_connecting() {
    // A listener that never accepts, with a backlog of 1: once it is full, SYNs are dropped.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = socket.listen(1).unwrap();
    let addr = blackhole.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let reply = call_with_connect_timeout(&format!("http://{addr}")).await;
    assert!(
        reply.json()[0]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        reply.text()
    );
}

/// A store that accepts the connection but never answers the TLS handshake costs
/// `upstream.connect_timeout` per try too, not `upstream.timeout`.
#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp); // accepted, never a byte back
        }
    });
    call_with_connect_timeout(&format!("https://{addr}")).await;
}

/// A GET through a proxy with a 300 ms connect timeout (and a 10 s response timeout) to
/// `upstream`: it must be a 502 after the connect timeout (two tries), well before the other.
async fn call_with_connect_timeout(upstream: &str) -> Reply {
    let proxy = start_proxy(settings(
        upstream,
        "",
        &[
            ("upstream.connect_timeout", "300ms"),
            ("upstream.timeout", "10s"),
        ],
    ))
    .await;
    let started = Instant::now();
    let reply = Http::default()
        .get(&format!("{}/api/v2/time", proxy.url()))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    reply
}

/// The store's certificate problems are told in plain words with the fix: a self-signed
/// certificate made as a CA (what `openssl req -x509` makes) used as the store's own, the
/// store's own certificate put in `ca_file`, a certificate for another name, an expired one
/// and one not valid yet.
#[tokio::test]
async fn tls_failures_are_told_in_plain_words() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("self.pem"), dir.path().join("self.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let other = bcproxy::tls::throwaway(&["example.test"]).unwrap();
    let (other_ca, other_cert, other_key) = (
        dir.path().join("other-ca.pem"),
        dir.path().join("other.pem"),
        dir.path().join("other.key"),
    );
    std::fs::write(&other_ca, &other.ca).unwrap();
    std::fs::write(&other_cert, &other.cert).unwrap();
    std::fs::write(&other_key, &other.key).unwrap();

    // Certificates outside their dates, signed by a CA the proxy trusts.
    let dated = |name: &str, from: (i32, u8, u8), to: (i32, u8, u8)| {
        use rcgen::{CertifiedIssuer, KeyUsagePurpose, date_time_ymd};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf_params.not_before = date_time_ymd(from.0, from.1, from.2);
        leaf_params.not_after = date_time_ymd(to.0, to.1, to.2);
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let paths = (
            dir.path().join(format!("{name}-ca.pem")),
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, leaf.pem()).unwrap();
        std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
        paths
    };
    let (expired_ca, expired_cert, expired_key) = dated("expired", (2020, 1, 1), (2021, 1, 1));
    let (future_ca, future_cert, future_key) = dated("future", (2090, 1, 1), (2091, 1, 1));

    for (cert, key, ca, expected) in [
        (
            &future_cert,
            &future_key,
            &future_ca,
            "the store's certificate is not valid yet (is this machine's clock right?)",
        ),
        (
            &other_cert,
            &other_key,
            &other_cert,
            "in upstream.ca_file (the CA that signed it, not the store's own certificate)",
        ),
        (
            &expired_cert,
            &expired_key,
            &expired_ca,
            "the store's certificate has expired (or this machine's clock is wrong)",
        ),
        (
            &cert_path,
            &key_path,
            &cert_path,
            "the store presents a CA certificate (CA:TRUE) as its own",
        ),
        (
            &other_cert,
            &other_key,
            &other_ca,
            "the store's certificate is not for the host in upstream.url",
        ),
    ] {
        let tls = bcproxy::tls::server_config(cert, key).unwrap();
        let sim = start_sim_with(SimConfig {
            tls: Some(tls),
            ..Default::default()
        })
        .await;
        let ca = ca.display().to_string();
        let proxy = start_proxy(settings(&sim.url(), "", &[("upstream.ca_file", &ca)])).await;
        let reply = Http::default()
            .get(&format!("{}/api/v2/products/2", proxy.url()))
            .await;
        assert_eq!(reply.status, 502);
        let message = reply.json()[0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(expected), "{message}");
        assert_eq!(sim.sim.stats(false).calls, 0);
    }
}
