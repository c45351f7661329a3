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
