//! The command line: `run` (the default), `check`, `demo` and `sim`. Errors at start-up are one
//! sentence on stderr; exit 2 for bad configuration or arguments, 1 for anything else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use base64::Engine;

use crate::app::App;
use crate::config::{ConfigError, DEFAULT_PATH, Dialect, Settings, Sources};
use crate::server::shutdown_signal;
use crate::sim::{self, Sim, SimConfig};

/// The embedded configuration `bcproxy demo` runs with.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// A throttling-aware caching reverse proxy for the BigCommerce API.
#[derive(Debug, Parser)]
#[command(
    name = "bcproxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Run(ConfigArgs),
    /// Load and validate the config, print the effective settings with secrets redacted.
    Check(CheckArgs),
    /// Start the store simulator and the proxy in front of it on loopback; no credentials needed.
    Demo(DemoArgs),
    /// Run the store simulator alone (offline development, tests, benchmarks).
    Sim(SimArgs),
    /// Print a new random app token and the [[clients]] block with its hash.
    Token(TokenArgs),
    /// Exit 0 when the admin endpoint answers 200 (a container health check without curl).
    Health(HealthArgs),
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// The URL to ask.
    #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
    url: String,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The app's name (its [[clients]] name, and its Basic user name).
    name: String,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Check the file alone: do not read the key, secret and certificate files it names nor
    /// look for its state directory (for CI pipelines; on the machine that runs it, check
    /// without this flag).
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Config file [default: $BCPROXY_CONFIG, then config/bcproxy.toml]
    #[arg(long, short, env = "BCPROXY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where the proxy listens (a free port is used if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    sim_listen: SocketAddr,
    /// Listen with HTTPS (a throwaway CA and certificate for 127.0.0.1 and localhost), as the
    /// official clients need.
    #[arg(long)]
    tls: bool,
    /// An OAuth store (X-Auth-Token, /stores/{hash}/v3/…, 429s) instead of a legacy one (Basic,
    /// /api/v2/…, 509s); the official Node client speaks only OAuth.
    #[arg(long)]
    oauth: bool,
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Requests allowed per window [default: 20000 legacy, 150 oauth].
    #[arg(long)]
    limit: Option<u64>,
    /// The window: rolling in steps of window/60 (legacy), fixed (oauth) [default: 60m legacy,
    /// 30s oauth].
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Latency added to every API call.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The API dialect.
    #[arg(long, value_enum, default_value_t = DialectArg::Legacy)]
    dialect: DialectArg,
    /// Basic auth user name the store accepts.
    #[arg(long, default_value = sim::DEFAULT_USERNAME)]
    username: String,
    /// API key (legacy) or access token (oauth) the store accepts.
    #[arg(long, default_value = sim::DEFAULT_API_KEY)]
    api_key: String,
    /// The store hash in OAuth paths (/stores/{hash}/v3/...).
    #[arg(long, default_value = sim::DEFAULT_STORE_HASH)]
    store_hash: String,
    /// Start with no data instead of the seed data.
    #[arg(long)]
    empty: bool,
    /// PEM certificate: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Deliver signed store webhooks of every change to this URL (the proxy's
    /// /webhooks/bigcommerce).
    #[arg(long, requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// The secret webhooks are signed with (Standard Webhooks; `whsec_…` is base64).
    #[arg(long, requires = "webhook_url")]
    webhook_secret: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DialectArg {
    Legacy,
    Oauth,
}

/// Why a command failed, and the exit code it gets.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("bad config: {0}")]
    Config(#[from] ConfigError),
    #[error("bad arguments: {0}")]
    Args(String),
    /// No config file and nothing in the environment.
    #[error("{0}")]
    NoConfig(String),
    #[error("{0}")]
    Other(String),
}

impl Failure {
    fn code(&self) -> ExitCode {
        match self {
            Failure::Config(_) | Failure::Args(_) | Failure::NoConfig(_) => ExitCode::from(2),
            Failure::Other(_) => ExitCode::from(1),
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bcproxy: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => run(cli.run).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Check(args)) => check(args),
            Some(Command::Demo(args)) => demo(args).await,
            Some(Command::Sim(args)) => run_sim(args).await,
            Some(Command::Token(args)) => token(args),
            Some(Command::Health(args)) => health(args).await,
        }
    });
    // Every buffered log line is written before the process ends.
    crate::telemetry::output::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("bcproxy: {failure}");
            failure.code()
        }
    }
}

/// Loads settings: an explicit `--config`/`$BCPROXY_CONFIG` must exist; the default file is
/// used when present, else defaults plus environment.
fn load(args: &ConfigArgs, offline: bool) -> Result<(PathBuf, Sources, Settings), Failure> {
    let (path, file) = match &args.config {
        Some(path) => (path.clone(), Some(path.clone())),
        None => {
            let path = PathBuf::from(DEFAULT_PATH);
            let file = path.is_file().then(|| path.clone());
            (path, file)
        }
    };
    // No file anywhere and no setting in the environment: say where a file was looked for,
    // rather than complain about the first key the defaults lack.
    if file.is_none()
        && !std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("BCPROXY__"))
    {
        return Err(Failure::NoConfig(format!(
            "no config file: looked for --config, $BCPROXY_CONFIG, {DEFAULT_PATH} (in {}); copy config/bcproxy.toml from the repository, or set BCPROXY__* environment variables",
            std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string())
        )));
    }
    let sources = Sources {
        file,
        offline,
        ..Sources::default()
    };
    let settings = Settings::load(&sources)?;
    Ok((path, sources, settings))
}

fn check(args: CheckArgs) -> Result<(), Failure> {
    let (path, _, settings) = load(&args.config, args.offline)?;
    if args.offline {
        println!(
            "# {} is valid (offline: the files it names were not read; check again where it runs);\n# effective settings (secrets redacted):\n",
            path.display()
        );
    } else {
        println!(
            "# {} is valid; effective settings (secrets redacted):\n",
            path.display()
        );
    }
    print!("{}", settings.to_redacted_toml());
    if let Ok(couplings) = settings.cache.couplings() {
        println!("\n# Effective cache couplings (built-in, then [[cache.couplings]]): a change in");
        println!("# the first collection drops the others whole, under every path form.");
        for rule in couplings.describe() {
            println!("#   {rule}");
        }
    }
    let cluster = &settings.cluster;
    if cluster.enabled() {
        let name = cluster
            .name_for(&settings.upstream, settings.budget.dialect)
            .unwrap_or_default();
        println!("\n# Cluster: processes named {name:?} share one budget, pause and cache;");
        println!(
            "# this one is {:?}; keys bcproxy:{{{name}}}:{}:*",
            cluster.instance_name(),
            crate::cluster::FORMAT
        );
    }
    Ok(())
}

async fn run(args: ConfigArgs) -> Result<(), Failure> {
    let (_, sources, settings) = load(&args, false)?;
    if settings.cluster.enabled() {
        crate::telemetry::set_instance(&settings.cluster.instance_name());
    }
    let level = crate::telemetry::init(&settings.log).map_err(|e| Failure::Other(e.to_string()))?;
    let stop = shutdown_signal();
    let listener = bind(settings.listen.addr, "listen.addr").await?;
    let admin = match settings.admin.addr {
        Some(addr) => Some(bind(addr, "admin.addr").await?),
        None => None,
    };
    let webhooks = match settings.webhooks.addr {
        Some(addr) => Some(bind(addr, "webhooks.addr").await?),
        None => None,
    };
    let mut app = App::new(Arc::new(settings)).map_err(|e| Failure::Other(e.to_string()))?;
    if let Some(listener) = webhooks {
        app = app.webhook_listener(listener);
    }
    app.reloadable(sources, Some(level))
        .serve(listener, admin, stop)
        .await
        .map(drop)
        .map_err(|e| Failure::Other(e.to_string()))
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {addr} ({key}): {e}")))
}

/// Asks an admin endpoint; success only for a 200 within five seconds.
async fn health(args: HealthArgs) -> Result<(), Failure> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| Failure::Args(format!("--url: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let ask = async {
        let response = client
            .get(uri.clone())
            .await
            .map_err(|e| health_error(&e, &uri))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), ask).await {
        Ok(Ok(status)) if status == http::StatusCode::OK => Ok(()),
        Ok(Ok(status)) => Err(Failure::Other(format!("{} answered {status}", args.url))),
        Ok(Err(e)) => Err(Failure::Other(format!("{e} ({})", args.url))),
        Err(_) => Err(Failure::Other(format!(
            "timed out: no answer within 5s ({})",
            args.url
        ))),
    }
}

/// Why the health check's call failed, in plain words (hyper says `client error (Connect)`).
fn health_error(e: &hyper_util::client::legacy::Error, uri: &http::Uri) -> String {
    let addr = uri.authority().map_or("", |a| a.as_str());
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let io = cause
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind);
    match io {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            format!(
                "connection refused on {addr}: nothing listens there (is bcproxy running, with admin.addr = {addr:?}?)"
            )
        }
        Some(std::io::ErrorKind::TimedOut) => format!("timed out connecting to {addr}"),
        _ if e.is_connect() => format!("cannot connect to {addr}: {cause}"),
        _ => format!("{e}: {cause}"),
    }
}

/// Prints a new random app token and the `[[clients]]` block that lets it in.
fn token(args: TokenArgs) -> Result<(), Failure> {
    let name = args.name;
    if name.is_empty()
        || name.contains(':')
        || name.chars().any(char::is_control)
        || name.contains('"')
    {
        return Err(Failure::Args(format!(
            "{name:?} is not a usable client name (no ':', quotes or control characters)"
        )));
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| Failure::Other(format!("no randomness: {e}")))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    println!(
        "# The token for {name:?}: give it to the app (Basic auth {name}:<token>, or X-Auth-Token: <token>).\n\
         # It is shown once; bcproxy keeps only its hash.\n{token}\n\n\
         # Add this to the proxy's config and reload it (SIGHUP):\n\
         [[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"",
        crate::clients::token_sha256(&token)
    );
    Ok(())
}

async fn run_sim(args: SimArgs) -> Result<(), Failure> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::server_config(cert, key).map_err(|e| Failure::Args(e.to_string()))?)
        }
        _ => None,
    };
    let dialect = match args.dialect {
        DialectArg::Legacy => Dialect::Legacy,
        DialectArg::Oauth => Dialect::Oauth,
    };
    let (default_limit, default_window) = match dialect {
        Dialect::Legacy => (20_000, Duration::from_secs(3600)),
        Dialect::Oauth => (150, Duration::from_secs(30)),
    };
    let limit = args.limit.unwrap_or(default_limit);
    let window = args.window.unwrap_or(default_window);
    if limit == 0 || window.is_zero() {
        return Err(Failure::Args(
            "--limit and --window must be above zero".into(),
        ));
    }
    let config = SimConfig {
        dialect,
        limit,
        window,
        latency: args.latency,
        username: args.username,
        api_key: args.api_key,
        store_hash: args.store_hash,
        seed: !args.empty,
        tls,
        webhooks: args
            .webhook_url
            .zip(args.webhook_secret)
            .map(|(url, secret)| sim::hooks::Target { url, secret }),
    };
    let log = crate::config::Log {
        level: "info,bcproxy::sim=debug".into(),
        ..Default::default()
    };
    crate::telemetry::init(&log).map_err(|e| Failure::Other(e.to_string()))?;
    let stop = shutdown_signal();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {} (--listen): {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let (base, auth) = match config.dialect {
        Dialect::Legacy => (
            format!("{scheme}://{addr}/api/v2/"),
            format!("Basic auth {:?} / {:?}", config.username, config.api_key),
        ),
        Dialect::Oauth => (
            format!("{scheme}://{addr}/stores/{}/v3/", config.store_hash),
            format!("X-Auth-Token {:?}", config.api_key),
        ),
    };
    eprintln!(
        "bcproxy sim: a {} store at {base} ({auth}; {} requests per {}); control API at {scheme}://{addr}/__sim",
        config.dialect.as_str(),
        config.limit,
        humantime::format_duration(config.window),
    );
    tracing::info!(listen = %addr, dialect = config.dialect.as_str(), limit = config.limit, "start");
    let sim = Sim::new(config);
    let stopped = sim
        .serve(listener, async {
            tracing::info!(reason = stop.await, "shutdown.begin")
        })
        .await;
    tracing::info!(
        open_connections = stopped.open_connections,
        drained = stopped.drained,
        "shutdown"
    );
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<(), Failure> {
    let stop = shutdown_signal();
    let sim_config = SimConfig {
        dialect: if args.oauth {
            crate::config::Dialect::Oauth
        } else {
            crate::config::Dialect::Legacy
        },
        ..SimConfig::default()
    };
    let running_sim = Sim::start(sim_config, args.sim_listen).await.map_err(|e| {
        Failure::Other(format!(
            "cannot start the simulator on {}: {e}",
            args.sim_listen
        ))
    })?;
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "bcproxy demo: {} is taken ({e}); using a free port instead",
                args.listen
            );
            TcpListener::bind(SocketAddr::new(args.listen.ip(), 0))
                .await
                .map_err(|e| {
                    Failure::Other(format!("cannot listen on {}: {e}", args.listen.ip()))
                })?
        }
    };
    let proxy_addr = listener
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    let admin = TcpListener::bind(SocketAddr::new(args.listen.ip(), 0))
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {}: {e}", args.listen.ip())))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    // The store's webhooks come back to the proxy, signed with a throwaway secret.
    let mut secret = [0u8; 24];
    getrandom::getrandom(&mut secret).map_err(|e| Failure::Other(format!("no randomness: {e}")))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    // Throwaway files (the webhook secret; with --tls the CA, certificate and key) in a
    // directory of the demo's own, removed when it stops.
    let dir = std::env::temp_dir().join(format!("bcproxy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Other(format!("cannot create {}: {e}", dir.display())))?;
    let _remove = RemoveOnDrop(dir.clone());
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))
            .map(|()| path)
    };
    let secret_file = write("webhook.secret", &secret)?;
    running_sim.sim.set_webhooks(Some(sim::hooks::Target {
        url: format!("http://{admin_addr}{}", crate::webhooks::PATH),
        secret,
    }));
    let mut env = HashMap::from([
        ("BCPROXY__UPSTREAM__URL".to_string(), running_sim.url()),
        (
            "BCPROXY__UPSTREAM__USERNAME".to_string(),
            sim::DEFAULT_USERNAME.to_string(),
        ),
        (
            "BCPROXY__UPSTREAM__API_KEY".to_string(),
            sim::DEFAULT_API_KEY.to_string(),
        ),
        ("BCPROXY__LISTEN__ADDR".to_string(), proxy_addr.to_string()),
        ("BCPROXY__ADMIN__ADDR".to_string(), admin_addr.to_string()),
        (
            "BCPROXY__WEBHOOKS__SECRET_FILE".to_string(),
            secret_file.display().to_string(),
        ),
    ]);
    let ca = match args.tls {
        true => {
            let made = crate::tls::throwaway(&["127.0.0.1", "localhost"])
                .map_err(|e| Failure::Other(format!("cannot make a certificate: {e}")))?;
            let ca = write("ca.pem", &made.ca)?;
            let cert = write("cert.pem", &made.cert)?;
            let key = write("key.pem", &made.key)?;
            env.insert(
                "BCPROXY__LISTEN__TLS_CERT".into(),
                cert.display().to_string(),
            );
            env.insert("BCPROXY__LISTEN__TLS_KEY".into(), key.display().to_string());
            Some(ca)
        }
        false => None,
    };
    if args.oauth {
        env.insert("BCPROXY__UPSTREAM__AUTH".into(), "token".into());
        env.insert("BCPROXY__UPSTREAM__CLIENT_ID".into(), "demo-client".into());
        env.insert("BCPROXY__BUDGET__DIALECT".into(), "oauth".into());
        env.insert("BCPROXY__BUDGET__LIMIT".into(), "150".into());
        env.insert("BCPROXY__BUDGET__WINDOW".into(), "30s".into());
    }
    let settings = Settings::from_toml(DEMO_CONFIG, env)?;
    crate::telemetry::init(&settings.log).map_err(|e| Failure::Other(e.to_string()))?;
    eprint!(
        "{}",
        demo_text(&DemoText {
            sim: running_sim.url(),
            proxy: proxy_addr,
            admin: admin_addr,
            ca: ca.as_deref(),
            oauth: args.oauth,
        })
    );
    let app = App::new(Arc::new(settings)).map_err(|e| Failure::Other(e.to_string()))?;
    let result = app.serve(listener, Some(admin), stop).await;
    running_sim.stop().await;
    result.map(drop).map_err(|e| Failure::Other(e.to_string()))
}

/// What the demo prints to try it.
struct DemoText<'a> {
    sim: String,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// The throwaway CA, when the proxy listens with TLS.
    ca: Option<&'a std::path::Path>,
    oauth: bool,
}

fn demo_text(d: &DemoText<'_>) -> String {
    let port = d.proxy.port();
    let a = format!("http://{}", d.admin);
    let sim = &d.sim;
    let (p, curl) = match d.ca {
        Some(ca) => (
            format!("https://localhost:{port}"),
            format!("curl -s --cacert {}", ca.display()),
        ),
        None => (format!("http://{}", d.proxy), "curl -s".to_string()),
    };
    let base = if d.oauth {
        format!("{p}/stores/{}/v3", sim::DEFAULT_STORE_HASH)
    } else {
        format!("{p}/api/v2")
    };
    let mut out = format!(
        "\nbcproxy demo: the store simulator ({dialect}) is at {sim}, the proxy at {p}, its admin at {a}.\n\
         The proxy adds the store's credentials; your calls need none. Try:\n\n",
        dialect = if d.oauth { "OAuth" } else { "legacy" },
    );
    if d.oauth {
        out += &format!(
            "  {curl} {base}/catalog/products/3\n\
             \x20 {curl} '{base}/catalog/categories?limit=2'\n\
             \x20 {curl} -X POST -H 'Content-Type: application/json' \\\n\
             \x20      -d '{{\"name\":\"Démo ☕ mug\",\"price\":9.5,\"type\":\"physical\",\"weight\":1}}' {base}/catalog/products\n\
             \x20 curl -s {sim}/__sim/stats?log=false      # what the store saw\n\n"
        );
    } else {
        out += &format!(
            "  {curl} {base}/products/3.json\n\
             \x20 {curl} -H 'Accept: application/xml' '{base}/categories?limit=2'\n\
             \x20 {curl} -X POST -H 'Content-Type: application/json' \\\n\
             \x20      -d '{{\"name\":\"Démo ☕ mug\",\"price\":\"9.50\",\"type\":\"physical\"}}' {base}/products\n\
             \x20 {curl} {base}/products/count\n\
             \x20 curl -s {sim}/__sim/stats?log=false      # what the store saw\n\n\
             A change made at the store directly (as the control panel would) reaches the proxy as a\n\
             signed webhook, which drops the cached product (x-cache: MISS on the next GET):\n\n\
             \x20 curl -s -u {user}:{key} -X PUT -H 'Content-Type: application/json' \\\n\
             \x20      -d '{{\"name\":\"Changed in the control panel\"}}' {sim}/api/v2/products/3\n\
             \x20 {curl} -i {base}/products/3.json | grep -i x-cache\n\n",
            user = sim::DEFAULT_USERNAME,
            key = sim::DEFAULT_API_KEY,
        );
    }
    if let Some(ca) = d.ca {
        let ca = ca.display();
        out += "BigCommerce's official clients (they speak only https):\n\n";
        if d.oauth {
            out += &format!(
                "  # Python (pip install bigcommerce)\n\
                 \x20 BC_API_ENDPOINT=localhost:{port} REQUESTS_CA_BUNDLE={ca} python3 -c 'import bigcommerce; \\\n\
                 \x20   api = bigcommerce.api.BigcommerceApi(client_id=\"any\", store_hash=\"{hash}\", access_token=\"any\"); \\\n\
                 \x20   print(api.Products.get(3).name)'\n\n\
                 \x20 # Node (npm install node-bigcommerce@4): it always dials api.bigcommerce.com:443, so its\n\
                 \x20 # `agent` dials the proxy instead\n\
                 \x20 node -e 'const https = require(\"https\"), tls = require(\"tls\"), fs = require(\"fs\");\n\
                 \x20   const agent = new https.Agent({{ keepAlive: true }});\n\
                 \x20   agent.createConnection = (o, cb) => tls.connect({{ ...o, host: \"127.0.0.1\", port: {port},\n\
                 \x20     servername: \"localhost\", ca: fs.readFileSync(\"{ca}\") }}, cb);\n\
                 \x20   const BigCommerce = require(\"node-bigcommerce\");\n\
                 \x20   const bc = new BigCommerce({{ clientId: \"any\", accessToken: \"any\", storeHash: \"{hash}\",\n\
                 \x20     responseType: \"json\", apiVersion: \"v3\", agent }});\n\
                 \x20   bc.get(\"/catalog/products/3\").then(r => console.log(r.data.name));'\n\n",
                hash = sim::DEFAULT_STORE_HASH,
            );
        } else {
            out += &format!(
                "  # Python (pip install bigcommerce)\n\
                 \x20 REQUESTS_CA_BUNDLE={ca} python3 -c 'import bigcommerce; \\\n\
                 \x20   api = bigcommerce.api.BigcommerceApi(host=\"localhost:{port}\", basic_auth=(\"any\", \"any\")); \\\n\
                 \x20   print(api.Products.get(3).name)'\n\n\
                 \x20 # Node: node-bigcommerce speaks only OAuth; run `bcproxy demo --tls --oauth` for it.\n\n"
            );
        }
    }
    out += &format!(
        "The proxy's own view (the admin listener):\n\n\
         \x20 {a}/                                   # the status page, in a browser\n\
         \x20 curl -s {a}/status\n\
         \x20 curl -s {a}/metrics\n\
         \x20 curl -s -X POST '{a}/cache/purge?path=/'   # drop everything cached\n\n\
         Access log lines follow on stdout. Ctrl-C stops both.\n"
    );
    out
}

/// Removes a directory and what it holds when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
