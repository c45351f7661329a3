//! BigCommerce's official Node client (`node-bigcommerce` 4.1.0 from npm) against the proxy's
//! HTTPS listener and an OAuth store, exactly as README "Node (node-bigcommerce)" says to use
//! it: its `agent` dials the proxy (the client itself always dials api.bigcommerce.com:443).
//! List, get, create, update and delete over v3 and v2.
//!
//! Needs Node.js and `npm ci` in `tests/node` (its lockfile is committed), so the tests are
//! ignored by a plain `cargo test`; `.ci/run` installs them and runs them with
//! `--include-ignored`. Run without Node or the package they fail, never pass by skipping.

mod support;

use std::path::Path;

use bcproxy::clients::token_sha256;
use bcproxy::config::Dialect;
use bcproxy::sim::{self, SimConfig};
use support::*;

const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

/// `$BCPROXY_NODE`, else `node`.
fn node() -> String {
    std::env::var("BCPROXY_NODE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// Runs a Node program (a file, or `-e` and its text) from `tests/node`; what it printed.
async fn run_node(args: &[&str], envs: &[(&str, String)]) -> String {
    assert!(
        Path::new(NODE_DIR)
            .join("node_modules/node-bigcommerce")
            .exists(),
        "node-bigcommerce is not installed: run `npm ci` in tests/node (.ci/run does)"
    );
    run_program(
        &node(),
        args,
        Some(NODE_DIR),
        envs,
        "install Node.js, or set BCPROXY_NODE",
    )
    .await
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/node (node-bigcommerce); .ci/run installs them and runs this test"]
async fn official_node_client_through_the_tls_listener() {
    let files = tls_files();
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let clients = format!(
        "[[clients]]\nname = \"nodeapp\"\ntoken_sha256 = \"{}\"\n",
        token_sha256("node-app-token")
    );
    let cert = files.cert.display().to_string();
    let key = files.key.display().to_string();
    let proxy = start_proxy(settings(
        &sim.url(),
        &clients,
        &[
            ("listen.tls_cert", &cert),
            ("listen.tls_key", &key),
            ("upstream.auth", "token"),
            ("budget.dialect", "oauth"),
        ],
    ))
    .await;
    let out = run_node(
        &["official_client.js"],
        &[
            ("BCPROXY_PORT", proxy.addr.port().to_string()),
            ("BCPROXY_CA", files.ca.display().to_string()),
            ("BCPROXY_TOKEN", "node-app-token".into()),
            ("BCPROXY_STORE_HASH", sim::DEFAULT_STORE_HASH.into()),
        ],
    )
    .await;
    assert!(out.contains("ok"), "{out}");
    let hash = sim::DEFAULT_STORE_HASH;
    assert_store_saw_one_credential(
        &sim.sim.stats(false),
        &[
            &format!("POST /stores/{hash}/v3/catalog/products"),
            &format!("POST /stores/{hash}/v2/products"),
            &format!("GET /stores/{hash}/v2/products/count"),
        ],
        2,
    );
}

/// The Node snippet `bcproxy demo --tls --oauth` prints works as pasted (from a directory
/// where node-bigcommerce is installed).
#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/node (node-bigcommerce); .ci/run installs them and runs this test"]
async fn the_demos_node_snippet_works_as_printed() {
    let (_demo, text) = start_demo(&["--tls", "--oauth"]).await;
    let snippet = demo_snippet(&text, "node -e '");
    let script = snippet
        .strip_prefix("node -e '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not one quoted script: {snippet}"));
    let out = run_node(&["-e", script], &[]).await;
    assert_eq!(out.trim(), "日本茶セット", "{snippet}");
}
