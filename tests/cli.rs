//! The binary as users run it: exit codes, `check`, signals, `demo` and `sim`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bcproxy::sim::SimConfig;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_bcproxy");

fn bcproxy(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("BCPROXY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("BCPROXY__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `bcproxy --config` on a file in `dir`: the listener on a free port, the store at `sim`
/// (plus `upstream` keys), no admin listener, then `extra`; the key from the environment.
fn run_with(dir: &Path, sim: &str, upstream: &str, extra: &str) -> tokio::process::Child {
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"{sim}\"\nusername = \"{}\"\n{upstream}[admin]\naddr = \"\"\n{extra}",
        bcproxy::sim::DEFAULT_USERNAME
    );
    let path = write(dir, "run.toml", &config);
    bcproxy(&["--config", &path])
        .env("BCPROXY__UPSTREAM__API_KEY", bcproxy::sim::DEFAULT_API_KEY)
        .spawn()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const GOOD: &str = r#"
[listen]
addr = "127.0.0.1:0"

[upstream]
url = "https://store-abc123.mybigcommerce.com"
username = "admin"
api_key = "very-secret-key-123"

[admin]
addr = ""
"#;

/// Every config mistake a newcomer makes is one line naming the key, the bad value and the
/// valid ones; names are taken case-insensitively where that is harmless.
#[tokio::test]
async fn config_mistakes_get_a_one_line_fix() {
    let dir = tempfile::tempdir().unwrap();
    let with = |extra: &str| format!("{GOOD}{extra}\n");
    let cases = [
        (
            with("[log]\nformat = \"yaml\""),
            "bcproxy: bad config: log.format: \"yaml\" is not valid: use \"json\" or \"text\"",
        ),
        (
            GOOD.replace(
                "username = \"admin\"",
                "username = \"admin\"\nauth = \"bearer\"",
            ),
            "bcproxy: bad config: upstream.auth: \"bearer\" is not valid: use \"basic\" or \"token\"",
        ),
        (
            with("[budget]\ndialect = \"v3\""),
            "bcproxy: bad config: budget.dialect: \"v3\" is not valid: use \"legacy\" or \"oauth\"",
        ),
        (
            GOOD.replace("127.0.0.1:0", "127.0.0.1:99999"),
            "bcproxy: bad config: listen.addr: \"127.0.0.1:99999\" is not an ip:port address: its port 99999 is above 65535",
        ),
        (
            GOOD.replace("127.0.0.1:0", "localhost:8080"),
            "bcproxy: bad config: listen.addr: \"localhost:8080\" is not an ip:port address: \"localhost\" is not an IP address (host names are not resolved here): use \"127.0.0.1\" for loopback or \"0.0.0.0\" for every interface",
        ),
        (
            GOOD.replace("addr = \"\"", "addr = \"9090\""),
            "bcproxy: bad config: admin.addr: \"9090\" has no port: write ip:port, such as \"127.0.0.1:8080\"",
        ),
        (
            with("[budget]\nlimit = -5"),
            "bcproxy: bad config: budget.limit: -5 is not valid: expected a whole number, 0 or more",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("case{i}.toml"), text);
        let (code, stderr) = check_refused(&["--config", &path]).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.trim(), *expected);
        assert!(!stderr.contains("very-secret-key-123"));
    }
    // Case is forgiven where it is harmless: "Basic", "OAuth", "JSON".
    let path = write(
        dir.path(),
        "case.toml",
        &format!(
            "{}[budget]\ndialect = \"OAuth\"\n[log]\nformat = \"JSON\"\n",
            GOOD.replace(
                "username = \"admin\"",
                "username = \"admin\"\nauth = \"Basic\""
            )
        ),
    );
    let out = check_ok(&path, &[]).await;
    assert!(out.contains("auth = \"basic\""), "{out}");
    assert!(out.contains("dialect = \"oauth\""), "{out}");
    assert!(out.contains("format = \"json\""), "{out}");
}

/// Without a config file anywhere (and no `BCPROXY__*` setting), `run` and `check` say where
/// they looked, not which key the defaults lack.
#[tokio::test]
async fn no_config_file_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    for command in [&[][..], &["check"][..]] {
        let out = bcproxy(command)
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(
                "bcproxy: no config file: looked for --config, $BCPROXY_CONFIG, config/bcproxy.toml (in "
            ),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("api_key"), "{stderr}");
    }
}

/// `bcproxy health` against nothing says "connection refused on ADDR" (hyper says `client
/// error (Connect)`).
#[tokio::test]
async fn health_says_connection_refused_on_the_address() {
    let dead = dead_port().await;
    let out = bcproxy(&["health", "--url", &format!("http://{dead}/healthz")])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!("bcproxy: connection refused on {dead}:")),
        "{stderr}"
    );
}

/// `bcproxy check --offline` checks a file whose key file and state directory exist only on
/// the machine that runs it (deploy/bcproxy.toml here): it passes where plain `check` fails
/// on the missing file, and still refuses a bad value.
#[tokio::test]
async fn check_offline_reads_no_named_files() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bcproxy.toml");
    let (code, stderr) = check_refused(&["--config", deploy]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("upstream.api_key_file: cannot read"),
        "{stderr}"
    );
    let out = bcproxy(&["check", "--offline", "--config", deploy])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("(offline: the files it names were not read"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(deploy)
        .unwrap()
        .replace("auth = \"basic\"", "auth = \"bearer\"");
    let path = write(dir.path(), "bad.toml", &bad);
    let (code, stderr) = check_refused(&["--offline", "--config", &path]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("upstream.auth"), "{stderr}");
}

/// `bcproxy check ARGS`: its exit code and standard error.
async fn check_refused(args: &[&str]) -> (Option<i32>, String) {
    let out = bcproxy(&[&["check"][..], args].concat())
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Each kind of bad config exits 2 with one line naming the key, from `check` and from `run`.
#[tokio::test]
async fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            GOOD.replace("addr = \"127.0.0.1:0\"", "adr = \"127.0.0.1:0\""),
            "listen.adr",
        ),
        (
            "url.toml",
            GOOD.replace("https://store-abc123.mybigcommerce.com", "store-abc123"),
            "upstream.url",
        ),
        (
            "user.toml",
            GOOD.replace("username = \"admin\"", ""),
            "upstream.username",
        ),
        (
            "keyfile.toml",
            GOOD.replace(
                "api_key = \"very-secret-key-123\"",
                "api_key_file = \"/nonexistent/bc.key\"",
            ),
            "upstream.api_key_file",
        ),
        (
            "duration.toml",
            GOOD.replace("[admin]", "timeout = \"soon\"\n[admin]"),
            "upstream.timeout",
        ),
        (
            "open.toml",
            GOOD.replace("127.0.0.1:0", "0.0.0.0:8080"),
            "listen.allow_anonymous",
        ),
        (
            "syntax.toml",
            GOOD.replace("[listen]", "[listen"),
            "syntax.toml",
        ),
        (
            "port.toml",
            GOOD.replace(
                "https://store-abc123.mybigcommerce.com",
                "http://127.0.0.1:99999",
            ),
            "upstream.url",
        ),
    ];
    for (name, text, key) in cases {
        let path = write(dir.path(), name, &text);
        for command in ["check", "run"] {
            let out = bcproxy(&[command, "--config", &path])
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {name}: {stderr}");
            assert!(
                stderr.contains(key),
                "{command} {name}: {stderr:?} does not name {key}"
            );
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{command} {name}: not one line: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(!stderr.contains("very-secret-key-123"), "{stderr}");
        }
    }
    // The [cluster] keys are checked too; a password never shows in the error.
    let cluster_cases = [
        (
            "cluster-key.toml",
            format!("{GOOD}\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nnmae = \"x\"\n"),
            "cluster.nmae",
        ),
        (
            "cluster-pw.toml",
            format!(
                "{GOOD}\n[cluster]\nredis_url = \"redis://app:hunter2-redis@127.0.0.1:6379/0\"\n"
            ),
            "cluster.redis_url",
        ),
        (
            "cluster-scheme.toml",
            format!("{GOOD}\n[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n"),
            "cluster.redis_url",
        ),
        (
            "cluster-oauth.toml",
            format!(
                "{}\n[budget]\ndialect = \"oauth\"\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n",
                GOOD.replace(
                    "username = \"admin\"",
                    "auth = \"token\"\nclient_id = \"c\""
                )
            ),
            "cluster.name",
        ),
        (
            "cluster-n.toml",
            format!(
                "{GOOD}\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nexpected_instances = 0\n"
            ),
            "cluster.expected_instances",
        ),
    ];
    for (name, text, key) in cluster_cases {
        let path = write(dir.path(), name, &text);
        let out = bcproxy(&["check", "--config", &path])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(key),
            "{name}: {stderr:?} does not name {key}"
        );
        assert!(!stderr.contains("hunter2-redis"), "{stderr}");
    }
    let missing = bcproxy(&["check", "--config", "/nonexistent/bcproxy.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let bad_args = bcproxy(&["frobnicate"]).output().await.unwrap();
    assert_eq!(bad_args.status.code(), Some(2));
}

/// `bcproxy check` on `path` with `env`, which must pass; its standard output.
async fn check_ok(path: &str, env: &[(&str, &str)]) -> String {
    let out = bcproxy(&["check", "--config", path])
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `check` prints the effective settings, environment overrides applied, secrets redacted.
#[tokio::test]
async fn check_prints_effective_settings_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.toml", GOOD);
    let stdout = check_ok(
        &path,
        &[
            ("BCPROXY__UPSTREAM__TIMEOUT", "7s"),
            ("BCPROXY__UPSTREAM__API_KEY", "env-secret-456"),
        ],
    )
    .await;
    assert!(stdout.contains("timeout = \"7s\""), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        stdout.contains("#   orders -> products"),
        "the couplings in effect: {stdout}"
    );
    assert!(
        !stdout.contains("env-secret-456") && !stdout.contains("very-secret-key-123"),
        "{stdout}"
    );
    let via_env = bcproxy(&["check"])
        .env("BCPROXY_CONFIG", &path)
        .output()
        .await
        .unwrap();
    assert_eq!(via_env.status.code(), Some(0));
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>, message: &str) -> serde_json::Value {
    let find = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if value["message"] == message {
                return value;
            }
        }
        panic!("no {message} event");
    };
    tokio::time::timeout(Duration::from_secs(20), find)
        .await
        .expect("event in time")
}

async fn stderr_line(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    let find = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no stderr line with {needle}");
    };
    tokio::time::timeout(Duration::from_secs(20), find)
        .await
        .expect("line in time")
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `run` serves, and on SIGTERM stops accepting, lets the in-flight call finish, logs the
/// shutdown and exits 0. Its output never holds the key.
#[tokio::test]
async fn run_drains_in_flight_calls_on_sigterm() {
    let sim = start_sim_with(SimConfig {
        latency: Duration::from_millis(700),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_with(dir.path(), &sim.url(), "", "");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = next_json(&mut stdout, "start").await;
    let addr: std::net::SocketAddr = start["listen"].as_str().unwrap().parse().unwrap();

    let http = Http::default();
    let in_flight = {
        let http = http.clone();
        tokio::spawn(async move { http.get(&format!("http://{addr}/api/v2/products/4")).await })
    };
    assert!(
        eventually(Duration::from_secs(5), || sim.sim.stats(false).in_flight
            == 1)
        .await
    );
    signal(&child, "TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight call was cut off");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = Vec::new();
    while let Ok(Some(line)) = stdout.next_line().await {
        rest.push(line);
    }
    let rest = rest.join("\n");
    assert!(rest.contains("\"message\":\"access\""), "{rest}");
    assert!(rest.contains("\"message\":\"shutdown\""), "{rest}");
    assert!(rest.contains("\"reason\":\"SIGTERM\""), "{rest}");
    assert!(!rest.contains(bcproxy::sim::DEFAULT_API_KEY));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// In a cluster, `check` names the cluster (the store's host and user by default) and the
/// Redis password stays redacted; `run` puts the instance on every event it logs.
#[tokio::test]
async fn a_cluster_member_names_itself_on_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cluster.toml",
        &format!("{GOOD}\n[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\n"),
    );
    let stdout = check_ok(
        &path,
        &[("BCPROXY__CLUSTER__REDIS_PASSWORD", "redis-pw-77")],
    )
    .await;
    assert!(
        stdout.contains("processes named \"store-abc123.mybigcommerce.com/admin\""),
        "{stdout}"
    );
    assert!(!stdout.contains("redis-pw-77"), "{stdout}");

    let sim = start_sim().await;
    let name = support::redis::unique_name("cli");
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\nusername = \"{}\"\n[admin]\naddr = \"\"\n[cluster]\nredis_url = \"{}\"\nname = \"{name}\"\ninstance = \"pod-7\"\n",
        sim.url(),
        bcproxy::sim::DEFAULT_USERNAME,
        support::redis::shared_url(),
    );
    let path = write(dir.path(), "run.toml", &config);
    let mut child = bcproxy(&["--config", &path])
        .env("BCPROXY__UPSTREAM__API_KEY", bcproxy::sim::DEFAULT_API_KEY)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = next_json(&mut stdout, "start").await;
    let addr: std::net::SocketAddr = start["listen"].as_str().unwrap().parse().unwrap();
    let reply = Http::default()
        .get(&format!("http://{addr}/api/v2/time"))
        .await;
    assert_eq!(reply.status, 200);
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut lines = vec![start];
    while let Ok(Some(line)) = stdout.next_line().await {
        lines.push(serde_json::from_str(&line).unwrap());
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for wanted in ["start", "access", "shutdown"] {
        assert!(messages.contains(&wanted), "{messages:?}");
    }
    for line in &lines {
        assert_eq!(line["instance"], "pod-7", "{line}");
    }
}

/// Log lines are buffered, never lost: a line shows up while the proxy runs (the buffer is
/// written at least every 100 ms), and every access line of a burst is on stdout after a
/// clean stop that follows it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_loses_no_log_line() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_with(
        dir.path(),
        &sim.url(),
        "max_concurrency = 64\n",
        "[budget]\nlimit = 1000000\n[cache]\nenabled = true\n",
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = next_json(&mut stdout, "start").await;
    let addr: std::net::SocketAddr = start["listen"].as_str().unwrap().parse().unwrap();
    let http = Http::default();
    let url = format!("http://{addr}/api/v2/products/1");
    assert_eq!(http.get(&url).await.status, 200);
    // Written by the timer, not by a shutdown.
    let first = tokio::time::timeout(Duration::from_secs(5), next_json(&mut stdout, "access"))
        .await
        .expect("the access line stayed in the buffer");
    assert_eq!(first["path"], "/api/v2/products/1");
    // Read the rest as it comes, as a container runtime does.
    let reader = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Ok(Some(line)) = stdout.next_line().await {
            lines.push(line);
        }
        lines
    });
    let calls = 3000;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..calls / 8 {
                let reply = http.get(&format!("{url}?t={t}&i={i}")).await;
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut access = 0;
    let mut shutdown = false;
    for line in reader.await.unwrap() {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        match line["message"].as_str() {
            Some("access") => access += 1,
            Some("shutdown") => shutdown = true,
            _ => {}
        }
    }
    assert_eq!(access, calls, "access lines were lost");
    assert!(shutdown, "the last line (shutdown) was lost");
}

/// `log.format = "text"` writes plain lines into a file or a pipe: no ANSI escape codes
/// (colours are for a terminal only).
#[tokio::test]
async fn text_logs_into_a_pipe_have_no_colour_codes() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_with(dir.path(), &sim.url(), "", "[log]\nformat = \"text\"\n");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
            .await
            .expect("a start line")
            .unwrap()
            .expect("output");
        lines.push(line.clone());
        if let Some(at) = line.find("listen=") {
            let addr: String = line[at + "listen=".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            break addr;
        }
    };
    let reply = Http::default()
        .get(&format!("http://{addr}/api/v2/products/1"))
        .await;
    assert_eq!(reply.status, 200);
    signal(&child, "TERM");
    while let Ok(Some(line)) = stdout.next_line().await {
        lines.push(line);
    }
    child.wait().await.unwrap();
    let text = lines.join("\n");
    assert!(text.contains(" access "), "{text}");
    assert!(text.contains("shutdown"), "{text}");
    assert!(!text.contains('\x1b'), "colour codes in a pipe: {text:?}");
}

/// `bcproxy demo` needs no config or credentials, prints curl lines that work, and stops
/// cleanly on Ctrl-C (SIGINT).
#[tokio::test]
async fn demo_serves_and_stops_on_sigint() {
    let mut child = bcproxy(&["demo", "--listen", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stderr_line(&mut stderr, "curl -s http://").await;
    let url = line.trim().strip_prefix("curl -s ").unwrap().to_string();
    assert!(url.ends_with("/api/v2/products/3.json"), "{url}");
    let reply = Http::default().get(&url).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["name"], "日本茶セット");
    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `bcproxy demo --tls` listens with HTTPS under a throwaway CA (a client trusting only that
/// CA gets the store's answers at `https://localhost:PORT`), prints the official clients'
/// snippets with that CA, and has its admin listener on: the printed status page, `/status`
/// and `/metrics` answer. Its throwaway files are gone once it stops.
#[tokio::test]
async fn demo_with_tls_serves_https_and_its_admin() {
    let (mut child, text) = start_demo(&["--tls"]).await;
    let joined = text.join("\n");
    let curl = text
        .iter()
        .find(|l| l.contains("--cacert") && l.ends_with("/api/v2/products/3.json"))
        .unwrap_or_else(|| panic!("no https curl line: {joined}"));
    let mut words = curl.split_whitespace().skip_while(|w| *w != "--cacert");
    let ca = std::path::PathBuf::from(words.nth(1).expect("the CA's path"));
    let url = words.next().expect("the URL").to_string();
    assert!(url.starts_with("https://localhost:"), "{url}");
    // The Python snippet names the same CA and the proxy's address.
    let port = url
        .trim_start_matches("https://localhost:")
        .split('/')
        .next()
        .unwrap();
    assert!(
        joined.contains(&format!("REQUESTS_CA_BUNDLE={}", ca.display()))
            && joined.contains(&format!("host=\"localhost:{port}\"")),
        "{joined}"
    );
    assert!(joined.contains("demo --tls --oauth"), "{joined}");

    let response = https_client(&ca, false)
        .request(
            http::Request::get(&url)
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .expect("an https call trusting only the demo's CA");
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let product: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(product["name"], "日本茶セット");

    // The admin lines: the status page, /status, /metrics.
    let admin = text
        .iter()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("curl -s ")
                .filter(|u| u.ends_with("/status"))
                .map(|u| u.trim_end_matches("/status").to_string())
        })
        .unwrap_or_else(|| panic!("no /status line: {joined}"));
    assert!(
        text.iter()
            .any(|l| l.trim().starts_with(&format!("{admin}/ "))),
        "no status page line: {joined}"
    );
    let http = Http::default();
    let page = http.get(&format!("{admin}/")).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>bcproxy status</title>"));
    assert_eq!(
        http.get(&format!("{admin}/status")).await.json()["window"]["calls"],
        1
    );
    assert_eq!(http.get(&format!("{admin}/metrics")).await.status, 200);

    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!ca.exists(), "the throwaway CA was left behind");
}

/// `bcproxy sim` runs the simulator alone with the given quota, answering 509 past it.
#[tokio::test]
async fn sim_command_runs_a_store_with_its_quota() {
    let mut child = bcproxy(&[
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--limit",
        "3",
        "--window",
        "60s",
    ])
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stderr_line(&mut stderr, "bcproxy sim:").await;
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches("/api/v2/");
    let http = Http::default();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                http.direct(&format!("{base}/api/v2/time"), &[])
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 509]);
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The example config and the demo config pass `check` (given a key for the example).
#[tokio::test]
async fn shipped_configs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = format!("{root}/config/bcproxy.toml");
    let out = bcproxy(&["check", "--config", &example])
        .env("BCPROXY__UPSTREAM__API_KEY", "example-key")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = format!("{root}/config/demo.toml");
    let out = bcproxy(&["check", "--config", &demo])
        .env("BCPROXY__UPSTREAM__URL", "http://127.0.0.1:1")
        .env("BCPROXY__UPSTREAM__USERNAME", "demo")
        .env("BCPROXY__UPSTREAM__API_KEY", "k")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `bcproxy token NAME` prints a new token and the `[[clients]]` block that lets it in.
#[tokio::test]
async fn token_prints_a_working_client_block() {
    let out = bcproxy(&["token", "erp"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .to_string();
    assert!(token.len() >= 40, "{token}");
    let block = &stdout[stdout.find("[[clients]]").unwrap()..];
    let again = bcproxy(&["token", "erp"]).output().await.unwrap();
    assert!(
        !String::from_utf8(again.stdout).unwrap().contains(&token),
        "tokens repeat"
    );

    let sim = start_sim().await;
    let proxy = start_proxy(settings(&sim.url(), block, &[])).await;
    let http = Http::default();
    let url = format!("{}/api/v2/time", proxy.url());
    assert_eq!(
        http.get_with(&url, &[("x-auth-token", &token)])
            .await
            .status,
        200
    );
    assert_eq!(
        http.get_with(&url, &[("x-auth-token", "guess")])
            .await
            .status,
        401
    );

    let bad = bcproxy(&["token", "a:b"]).output().await.unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `bcproxy health` (the container health check) exits 0 for a 200 and 1 otherwise.
#[tokio::test]
async fn health_command_checks_the_admin_endpoint() {
    let sim = start_sim().await;
    let proxy = start_proxy_with_admin(settings(&sim.url(), "", &[]), None).await;
    let url = format!("http://{}/healthz", proxy.admin_addr.unwrap());
    let ok = bcproxy(&["health", "--url", &url]).output().await.unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = format!("http://{}/nope", proxy.admin_addr.unwrap());
    assert_eq!(
        bcproxy(&["health", "--url", &missing])
            .output()
            .await
            .unwrap()
            .status
            .code(),
        Some(1)
    );
    let dead = format!("http://{}/healthz", dead_port().await);
    assert_eq!(
        bcproxy(&["health", "--url", &dead])
            .output()
            .await
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}

/// The store's key never reaches any output, whichever way it was given (the file, the
/// environment, user-info in `upstream.url` from the file or the environment, a key file),
/// whether the config is good or bad, from `check`, from `run`'s start and from a refused
/// reload. The output grepped is checked to be there first.
#[tokio::test]
async fn the_key_is_never_echoed_whichever_way_it_came() {
    const SECRET: &str = "SeCrEt-canary-7f3a9";
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = write(dir.path(), "key", &format!("{SECRET}\n"));
    let base = |upstream: &str| {
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"\"\n[upstream]\nusername = \"u\"\n{upstream}\n"
        )
    };
    let url = format!("url = \"{}\"", sim.url());
    // (the config file, extra environment, the exit code `check` must give)
    type Case = (String, Vec<(&'static str, String)>, i32);
    let cases: Vec<Case> = vec![
        // The key in the file, good and bad.
        (base(&format!("{url}\napi_key = \"{SECRET}\"")), vec![], 0),
        (
            base(&format!(
                "{url}\napi_key = \"{SECRET}\"\ntimeout = \"soon\""
            )),
            vec![],
            2,
        ),
        (base(&format!("{url}\napi_key = [\"{SECRET}\"]")), vec![], 2),
        (
            base(&format!("{url}\napi_key = \"{SECRET}\\u0001\"")),
            vec![],
            2,
        ),
        // The key in the environment.
        (
            base(&url),
            vec![("BCPROXY__UPSTREAM__API_KEY", SECRET.to_string())],
            0,
        ),
        (
            base(&format!("{url}\napi_key = \"other\"\ntimeout = \"soon\"")),
            vec![("BCPROXY__UPSTREAM__API_KEY", SECRET.to_string())],
            2,
        ),
        // The key as user-info in the URL, from the file and from the environment.
        (
            base(&format!(
                "url = \"https://admin:{SECRET}@store.example\"\napi_key = \"k\""
            )),
            vec![],
            2,
        ),
        (
            base("api_key = \"k\""),
            vec![(
                "BCPROXY__UPSTREAM__URL",
                format!("http://admin:{SECRET}@127.0.0.1:1"),
            )],
            2,
        ),
        // The key in a key file.
        (
            base(&format!("{url}\napi_key_file = {key_file:?}")),
            vec![],
            0,
        ),
        (
            base(&format!(
                "{url}\napi_key_file = {key_file:?}\napi_key = \"x\""
            )),
            vec![],
            2,
        ),
    ];
    let mut everything = String::new();
    for (i, (text, env, code)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("case{i}.toml"), text);
        let mut check = bcproxy(&["check", "--config", &path]);
        for (k, v) in env {
            check.env(k, v);
        }
        let out = check.output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(*code), "case {i}: {text}");
        assert!(!text.trim().is_empty(), "case {i}: no output to check");
        assert!(!text.contains(SECRET), "case {i} echoed the key: {text}");
        everything.push_str(&text);
    }

    // `run` with the key from the file: its start, then a reload to a URL carrying the key
    // (refused), then its shutdown.
    let path = write(dir.path(), "run.toml", &cases[0].0);
    let mut child = bcproxy(&["run", "--config", &path]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = next_json(&mut stdout, "start").await;
    std::fs::write(&path, &cases[6].0).unwrap();
    signal(&child, "HUP");
    let refused = next_json(
        &mut stdout,
        "config: reload refused; the running config stays",
    )
    .await;
    signal(&child, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let mut rest = vec![start.to_string(), refused.to_string()];
    while let Ok(Some(line)) = stdout.next_line().await {
        rest.push(line);
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut stderr).await;
    }
    let run = format!("{}\n{stderr}", rest.join("\n"));
    assert!(run.contains("\"message\":\"shutdown\""), "{run}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream.url")),
        "{refused}"
    );
    assert!(!run.contains(SECRET), "run echoed the key: {run}");
    everything.push_str(&run);
    assert!(everything.len() > 1000, "too little output was checked");
}
