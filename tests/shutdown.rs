//! Graceful shutdown: stop accepting, finish what is in flight, within the grace period.

mod support;

use std::time::Duration;

use bcproxy::sim::SimConfig;
use support::*;

/// A call in flight when shutdown begins still gets its answer; the drain reports success, and
/// the listener is closed afterwards.
#[tokio::test]
async fn shutdown_completes_in_flight_calls() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(settings(&sim.url(), "", &[])).await;
    let addr = proxy.addr;
    let http = Http::default();
    let call = {
        let http = http.clone();
        let url = format!("{}/api/v2/products/1", proxy.url());
        tokio::spawn(async move { http.get(&url).await })
    };
    assert!(
        eventually(Duration::from_secs(3), || sim.sim.stats(false).in_flight
            == 1)
        .await
    );
    let stopped = proxy.stop().await.expect("stopped");
    let reply = call.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], 1);
    assert_eq!(stopped.open_connections, 1);
    assert!(stopped.drained);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

/// From the moment shutdown begins `/readyz` says 503 (so no new traffic is routed here)
/// while the call in flight finishes; `/healthz` stays 200 and `/status` says it drains.
#[tokio::test]
async fn readiness_fails_while_draining() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &[]), None).await;
    let admin = format!("http://{}", proxy.admin_addr.expect("admin listener"));
    let http = Http::default();
    // The store answered lately: ready.
    let warm = http.get(&format!("{}/api/v2/time", proxy.url())).await;
    assert_eq!(warm.status, 200);
    assert_eq!(http.get(&format!("{admin}/readyz")).await.status, 200);
    let call = {
        let http = http.clone();
        let url = format!("{}/api/v2/products/1", proxy.url());
        tokio::spawn(async move { http.get(&url).await })
    };
    assert!(
        eventually(Duration::from_secs(3), || sim.sim.stats(false).in_flight
            == 1)
        .await
    );
    let stopping = tokio::spawn(proxy.stop());
    let mut draining = None;
    for _ in 0..50 {
        let ready = http.get(&format!("{admin}/readyz")).await;
        if ready.status == 503 {
            draining = Some(ready);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let draining = draining.expect("/readyz stayed 200 while draining");
    assert!(
        draining.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("draining"),
        "{}",
        draining.text()
    );
    assert_eq!(http.get(&format!("{admin}/healthz")).await.status, 200);
    assert_eq!(
        http.get(&format!("{admin}/status")).await.json()["draining"],
        true
    );
    assert_eq!(
        call.await.unwrap().status,
        200,
        "the call in flight finished"
    );
    assert!(stopping.await.unwrap().expect("stopped").drained);
}

/// A call that outlives `listen.shutdown_grace` does not hold the shutdown hostage.
#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let sim = start_sim().await;
    sim.sim.inject(bcproxy::sim::Fault::Hang, 1);
    let proxy = start_proxy(settings(
        &sim.url(),
        "",
        &[("listen.shutdown_grace", "300ms")],
    ))
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/products/1", proxy.url());
    let _hung = tokio::spawn(async move { http.get(&url).await });
    assert!(
        eventually(Duration::from_secs(3), || sim.sim.stats(false).in_flight
            == 1)
        .await
    );
    let started = std::time::Instant::now();
    let stopped = proxy.stop().await.expect("stopped");
    assert!(!stopped.drained);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
