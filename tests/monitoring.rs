//! The monitoring files that ship in `deploy/`: the Grafana dashboard parses, and every
//! metric the dashboard and the Prometheus alerts name is one a running bcproxy exports
//! (cluster and webhooks on, so that every family shows). `.ci/run` checks the YAML parses.

mod support;

use std::collections::BTreeSet;

use support::redis::{shared_url, unique_name};
use support::*;

/// The `bcproxy_*` names in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("bcproxy_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        found.insert(name);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/bcproxy.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard parses");
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).unwrap();
    assert!(alerts.contains("groups:") && alerts.contains("- alert: "));

    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "a-webhook-secret-of-enough-length\n").unwrap();
    let extra = format!(
        "[webhooks]\nsecret_file = {:?}\n[cluster]\nredis_url = {:?}\nname = {:?}\n",
        secret.display().to_string(),
        shared_url(),
        unique_name("monitoring"),
    );
    let proxy = start_proxy_with_admin(
        settings(&sim.url(), &extra, &[("cache.enabled", "true")]),
        None,
    )
    .await;
    let http = Http::default();
    for _ in 0..2 {
        let reply = http
            .get(&format!("{}/api/v2/products/1", proxy.url()))
            .await;
        assert_eq!(reply.status, 200);
    }
    let metrics = http
        .get(&format!("http://{}/metrics", proxy.admin_addr.unwrap()))
        .await
        .text();
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for (file, text) in [("bcproxy.json", &dashboard), ("alerts.yaml", &alerts)] {
        let named = names(text);
        assert!(named.len() >= 8, "{file} names only {named:?}");
        let missing: Vec<_> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics does not export: {missing:?}\n{metrics}"
        );
    }
}
