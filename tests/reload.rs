//! Reloading the configuration while calls go on: clients, cache rules, budget numbers and the
//! store's key change; connections and the ledger stay; an invalid file changes nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use bcproxy::clients::token_sha256;
use bcproxy::config::{Settings, Sources};
use bcproxy::sim::{self, SimConfig};
use support::*;

fn config(sim: &str, client: &str, limit: u64, extra: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"{sim}\"\nusername = \"{}\"\napi_key = \"{}\"\n\
         [budget]\nlimit = {limit}\nreserve_writes = 0\n[admin]\naddr = \"\"\n{extra}\n\
         [[clients]]\nname = \"{client}\"\ntoken_sha256 = \"{}\"\n",
        sim::DEFAULT_USERNAME,
        sim::DEFAULT_API_KEY,
        token_sha256(&format!("{client}-token"))
    )
}

fn sources(path: &Path) -> Sources {
    Sources {
        file: Some(path.to_path_buf()),
        text: None,
        env: Some(Default::default()),
        offline: false,
    }
}

fn basic(name: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{name}-token"))
    )
}

/// Clients, budget numbers and cache rules change on reload; the keep-alive connection and
/// the ledger survive; keys that need a restart are named.
#[tokio::test]
async fn reload_changes_what_it_can_and_keeps_the_rest() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcproxy.toml");
    std::fs::write(
        &path,
        config(&sim.url(), "erp", 100, "[cache]\nenabled = true\n"),
    )
    .unwrap();
    let settings = Settings::load(&sources(&path)).unwrap();
    let proxy = start_proxy_with_admin(settings, Some(sources(&path))).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let call = |who: &str, path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            basic(who)
        )
    };
    for path in [
        "/api/v2/products/1",
        "/api/v2/products/1",
        "/api/v2/brands/1",
    ] {
        conn.send(call("erp", path).as_bytes()).await;
        let response = conn.read_response(false).await.unwrap();
        assert_eq!(response.status, 200);
    }

    let rules =
        "[cache]\nenabled = true\n[[cache.rules]]\nprefix = \"/api/v2/products\"\nttl = \"0s\"\n";
    std::fs::write(&path, config(&sim.url(), "shop", 10, rules)).unwrap();
    let restart = proxy
        .reloader()
        .unwrap()
        .reload()
        .expect("a valid config reloads");
    assert!(restart.needs_restart.is_empty(), "{restart:?}");
    assert_eq!(
        restart.applied,
        ["budget.limit", "cache.rules", "clients"],
        "{restart:?}"
    );

    conn.send(call("erp", "/api/v2/brands/1").as_bytes()).await;
    assert_eq!(
        conn.read_response(false)
            .await
            .expect("the connection survived")
            .status,
        401,
        "a removed client still got in"
    );
    conn.send(call("shop", "/api/v2/products/1").as_bytes())
        .await;
    let response = conn.read_response(false).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("x-cache"),
        Some("BYPASS"),
        "the new cache rule did not apply"
    );
    // Two sends before the reload, one after: the ledger kept them under the new limit.
    assert_eq!(response.header("x-bc-apilimit-remaining"), Some("7"));

    std::fs::write(
        &path,
        config(&sim.url(), "shop", 10, "[listen]\nmax_body = \"1MiB\"\n")
            .replace("[listen]\naddr = \"127.0.0.1:0\"\n", ""),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[upstream]", "[upstream]\ntimeout = \"5s\"");
    std::fs::write(&path, text).unwrap();
    let restart = proxy.reloader().unwrap().reload().unwrap();
    // (This file also drops the listen address and the cache rule.)
    assert_eq!(
        restart.needs_restart,
        ["listen.addr", "listen.max_body", "upstream.timeout"],
        "{restart:?}"
    );
    assert_eq!(restart.applied, ["cache.rules"], "{restart:?}");
    // Back at the running values: nothing needs a restart any more.
    std::fs::write(&path, config(&sim.url(), "shop", 10, rules)).unwrap();
    let restart = proxy.reloader().unwrap().reload().unwrap();
    assert!(restart.needs_restart.is_empty(), "{restart:?}");
}

/// An invalid file is refused: nothing changes and the proxy keeps serving.
#[tokio::test]
async fn an_invalid_config_changes_nothing() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcproxy.toml");
    std::fs::write(&path, config(&sim.url(), "erp", 100, "")).unwrap();
    let proxy = start_proxy_with_admin(
        Settings::load(&sources(&path)).unwrap(),
        Some(sources(&path)),
    )
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/time", proxy.url());
    std::fs::write(
        &path,
        config(&sim.url(), "shop", 100, "[cache]\nttll = \"3s\"\n"),
    )
    .unwrap();
    let error = proxy.reloader().unwrap().reload().unwrap_err();
    assert!(error.to_string().contains("cache.ttll"), "{error}");
    std::fs::write(&path, "[upstream\nurl = ").unwrap();
    assert!(proxy.reloader().unwrap().reload().is_err());
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("erp"))])
            .await
            .status,
        200,
        "the old config went away"
    );
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("shop"))])
            .await
            .status,
        401
    );
}

/// The store's key can be rotated by a reload, without dropping a call; while the store
/// refuses the old key the proxy is not ready and says why, and it is ready again (with an
/// `upstream.auth_restored` event) once the store accepts the new one.
#[tokio::test]
async fn the_store_key_rotates_on_reload() {
    let (logs, _guard) = Logs::capture();
    let sim = start_sim_with(SimConfig {
        api_key: "new-store-key".into(),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcproxy.toml");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "old-store-key\n").unwrap();
    let text = config(&sim.url(), "erp", 100, "").replace(
        &format!("api_key = \"{}\"", sim::DEFAULT_API_KEY),
        &format!("api_key_file = {:?}", key_file.display().to_string()),
    );
    std::fs::write(&path, &text).unwrap();
    let proxy = start_proxy_with_admin(
        Settings::load(&sources(&path)).unwrap(),
        Some(sources(&path)),
    )
    .await;
    let http = Http::default();
    let url = format!("{}/api/v2/time", proxy.url());
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("erp"))])
            .await
            .status,
        401,
        "the store refuses the old key"
    );
    let readyz = format!("http://{}/readyz", proxy.admin_addr.unwrap());
    let not_ready = http.get(&readyz).await;
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert!(
        not_ready.text().contains("credential (401)"),
        "{}",
        not_ready.text()
    );
    std::fs::write(&key_file, "new-store-key\n").unwrap();
    proxy.reloader().unwrap().reload().unwrap();
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("erp"))])
            .await
            .status,
        200
    );
    assert_eq!(http.get(&readyz).await.status, 200);
    let lines = logs.lines();
    let events: Vec<_> = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.starts_with("upstream.auth_"))
        .collect();
    assert_eq!(events, ["upstream.auth_failed", "upstream.auth_restored"]);
}

/// The binary reloads on SIGHUP and logs a `config` event; a bad file is logged as refused.
#[tokio::test]
async fn sighup_reloads_the_binary() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcproxy.toml");
    std::fs::write(&path, config(&sim.url(), "erp", 100, "")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bcproxy"))
        .args(["run", "--config", &path.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async |message: &str| -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                if value["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                {
                    return value;
                }
            }
            panic!("no {message} event")
        })
        .await
        .expect("in time")
    };
    let start = next("start").await;
    let addr = start["listen"].as_str().unwrap().to_string();
    let hup = || {
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    std::fs::write(&path, config(&sim.url(), "shop", 100, "")).unwrap();
    hup();
    let reloaded = next("config").await;
    assert_eq!(reloaded["reloaded"], true, "{reloaded}");
    let http = Http::default();
    let url = format!("http://{addr}/api/v2/time");
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("shop"))])
            .await
            .status,
        200
    );
    assert_eq!(next("access").await["client"], "shop");

    // The log level changes too: at warn, neither the reload nor the calls are logged ...
    std::fs::write(
        &path,
        config(&sim.url(), "shop", 100, "[log]\nlevel = \"warn\"\n"),
    )
    .unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("shop"))])
            .await
            .status,
        200
    );
    // ... and a refused reload is an error event; the running config stays.
    std::fs::write(&path, "not toml at all [").unwrap();
    hup();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            if value["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config"))
            {
                return (value, seen);
            }
            seen.push(value);
        }
        panic!("no config event")
    })
    .await
    .expect("in time");
    let (refused, between) = refused;
    assert_eq!(refused["reloaded"], false, "{refused}");
    assert_eq!(refused["level"], "ERROR");
    assert!(
        between.iter().all(|l| l["message"] != "access"),
        "logged at warn: {between:?}"
    );
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("shop"))])
            .await
            .status,
        200
    );
}

/// A reload is judged against the listener that is running: on a listener reachable beyond
/// this host, a file that drops every `[[clients]]` (while its `listen.addr`, which only a
/// restart applies, says loopback) is refused, and anonymous calls stay refused.
#[tokio::test]
async fn a_reload_never_opens_the_running_listener() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcproxy.toml");
    let with_clients = config(&sim.url(), "erp", 100, "").replace("127.0.0.1:0", "0.0.0.0:0");
    std::fs::write(&path, &with_clients).unwrap();
    let settings = Settings::load(&sources(&path)).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy =
        bcproxy::app::RunningProxy::start_with(settings, listener, None, Some(sources(&path)))
            .await
            .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v2/time");
    let http = Http::default();
    assert_eq!(http.get(&url).await.status, 401);

    let open = with_clients
        .replace("0.0.0.0:0", "127.0.0.1:0")
        .split("[[clients]]")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&path, open).unwrap();
    let error = proxy.reloader().unwrap().reload().unwrap_err();
    assert!(
        error.to_string().contains("listen.allow_anonymous"),
        "{error}"
    );
    assert_eq!(
        http.get(&url).await.status,
        401,
        "the running listener was opened"
    );
    assert_eq!(
        http.get_with(&url, &[("authorization", &basic("erp"))])
            .await
            .status,
        200
    );
}

/// The HTTPS listener's certificate rotates on reload: new connections get the new one; a bad
/// pair (a key that is not the certificate's) is refused and the running certificate stays.
#[tokio::test]
async fn the_listener_certificate_rotates_on_reload() {
    use http_body_util::Full;
    let sim = start_sim().await;
    let (a, b) = (tls_files(), tls_files());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let path = dir.path().join("bcproxy.toml");
    let text = config(&sim.url(), "erp", 100, "").replace(
        "[listen]\naddr = \"127.0.0.1:0\"\n",
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let proxy = start_proxy_with_admin(
        Settings::load(&sources(&path)).unwrap(),
        Some(sources(&path)),
    )
    .await;
    let url = format!("https://localhost:{}/api/v2/time", proxy.addr.port());
    // A new client (a new handshake) trusting only `ca`: did it get an answer?
    let trusts = |ca: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let client = https_client(&ca, false);
            let request = http::Request::get(&url)
                .header("authorization", basic("erp"))
                .body(Full::default())
                .unwrap();
            client.request(request).await.is_ok()
        }
    };
    assert!(trusts(a.ca.clone()).await);
    assert!(!trusts(b.ca.clone()).await);

    std::fs::copy(&b.cert, &cert).unwrap();
    std::fs::copy(&b.key, &key).unwrap();
    let reloaded = proxy.reloader().unwrap().reload().unwrap();
    assert!(
        reloaded.applied.contains(&"listen.tls_cert"),
        "{reloaded:?}"
    );
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    assert!(
        trusts(b.ca.clone()).await,
        "new connections get the new certificate"
    );
    assert!(!trusts(a.ca.clone()).await);

    // A's key with B's certificate: refused, B stays.
    std::fs::copy(&a.key, &key).unwrap();
    let error = proxy.reloader().unwrap().reload().unwrap_err();
    assert!(error.to_string().contains("listen.tls_cert"), "{error}");
    assert!(trusts(b.ca.clone()).await);
}
