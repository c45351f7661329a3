//! BigCommerce's official Python client (`bigcommerce` from PyPI) against the proxy's HTTPS
//! listener, exactly as an app uses it: Basic auth with a `[[clients]]` credential against the
//! legacy dialect, and OAuth (`BC_API_ENDPOINT`) against the oauth dialect.
//!
//! Needs a Python with `bigcommerce==0.23.4` (`tests/python/requirements.txt`), so the tests
//! are ignored by a plain `cargo test`; `.ci/run` installs the client in a venv, sets
//! `BCPROXY_PYTHON` and runs them with `--include-ignored`. Run without a usable Python they
//! fail, never pass by skipping.

mod support;

use bcproxy::clients::token_sha256;
use bcproxy::config::Dialect;
use bcproxy::sim::{self, SimConfig};
use support::*;

/// How to get a Python with the official client.
const PYTHON_MISSING: &str =
    "set BCPROXY_PYTHON to a Python with tests/python/requirements.txt installed";

/// `$BCPROXY_PYTHON`, else `python3` (which then needs the client installed).
fn python() -> String {
    std::env::var("BCPROXY_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

async fn run_client(python: &str, mode: &str, envs: &[(&str, String)]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/official_client.py"
    );
    let stdout = run_program(python, &[script, mode], None, envs, PYTHON_MISSING).await;
    assert!(stdout.contains("ok"), "{mode}: {stdout}");
}

fn tls_env(files: &TlsFiles) -> Vec<(&'static str, String)> {
    vec![
        ("listen.tls_cert", files.cert.display().to_string()),
        ("listen.tls_key", files.key.display().to_string()),
    ]
}

fn clients() -> String {
    format!(
        "[[clients]]\nname = \"pyapp\"\ntoken_sha256 = \"{}\"\n",
        token_sha256("py-app-token")
    )
}

#[tokio::test]
#[ignore = "needs the official Python client (pip install -r tests/python/requirements.txt; BCPROXY_PYTHON); .ci/run installs it and runs this test"]
async fn official_python_client_basic_auth() {
    let python = python();
    let files = tls_files();
    let sim = start_sim().await;
    let env = tls_env(&files);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = start_proxy(settings(&sim.url(), &clients(), &env)).await;
    run_client(
        &python,
        "basic",
        &[
            ("BCPROXY_HOST", format!("127.0.0.1:{}", proxy.addr.port())),
            ("BCPROXY_CLIENT", "pyapp".into()),
            ("BCPROXY_TOKEN", "py-app-token".into()),
            ("REQUESTS_CA_BUNDLE", files.ca.display().to_string()),
        ],
    )
    .await;
    assert_store_saw_one_credential(
        &sim.sim.stats(false),
        &["POST /api/v2/products", "GET /api/v2/products/count"],
        1,
    );
}

#[tokio::test]
#[ignore = "needs the official Python client (pip install -r tests/python/requirements.txt; BCPROXY_PYTHON); .ci/run installs it and runs this test"]
async fn official_python_client_oauth() {
    let python = python();
    let files = tls_files();
    let sim = start_sim_with(SimConfig {
        dialect: Dialect::Oauth,
        ..Default::default()
    })
    .await;
    let mut env = tls_env(&files);
    env.push(("upstream.auth", "token".into()));
    env.push(("budget.dialect", "oauth".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = start_proxy(settings(&sim.url(), &clients(), &env)).await;
    let host = format!("127.0.0.1:{}", proxy.addr.port());
    run_client(
        &python,
        "oauth",
        &[
            ("BC_API_ENDPOINT", host.clone()),
            ("BCPROXY_HOST", host),
            ("BCPROXY_STORE_HASH", sim::DEFAULT_STORE_HASH.into()),
            ("BCPROXY_TOKEN", "py-app-token".into()),
            ("REQUESTS_CA_BUNDLE", files.ca.display().to_string()),
        ],
    )
    .await;
    let stats = sim.sim.stats(false);
    assert_eq!(stats.distinct_credentials, 1);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(
        stats.by_path.get("POST /stores/abc123/v2/products"),
        Some(&1),
        "{:?}",
        stats.by_path
    );
}

/// The Python snippet `bcproxy demo --tls` prints works as pasted (its `python3` being the one
/// with the client installed).
#[tokio::test]
#[ignore = "needs the official Python client (pip install -r tests/python/requirements.txt; BCPROXY_PYTHON); .ci/run installs it and runs this test"]
async fn the_demos_python_snippet_works_as_printed() {
    let (_demo, text) = start_demo(&["--tls"]).await;
    let snippet = demo_snippet(&text, "REQUESTS_CA_BUNDLE=");
    let command = snippet.replacen(" python3 ", &format!(" {} ", python()), 1);
    let stdout = run_program("sh", &["-c", &command], None, &[], PYTHON_MISSING).await;
    assert_eq!(stdout.trim(), "日本茶セット", "{snippet}");
}
