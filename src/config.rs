//! Settings: the TOML file, then `BCPROXY__SECTION__KEY` environment overrides, deserialized
//! into typed sections, then validated. Every error names the key it is about.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use http::uri::{Authority, Scheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

/// Prefix of environment overrides: `BCPROXY__UPSTREAM__API_KEY` sets `upstream.api_key`.
pub const ENV_PREFIX: &str = "BCPROXY";
/// Separator between the prefix, the section and the key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";
/// The config file used when neither `--config` nor `$BCPROXY_CONFIG` names one.
pub const DEFAULT_PATH: &str = "config/bcproxy.toml";

/// A configuration that cannot be used, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted key (`upstream.url`), or the file when the error is about the whole file.
    pub key: String,
    /// One sentence saying what is wrong and, where it helps, what would be right.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything bcproxy can be told. Sections mirror the TOML file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where apps connect.
    pub listen: Listen,
    /// The store and its credentials.
    pub upstream: Upstream,
    /// The store's request budget.
    pub budget: Budget,
    /// The GET response cache.
    pub cache: Cache,
    /// Apps allowed to call; empty means anyone who can reach the listener.
    pub clients: Vec<ClientEntry>,
    /// Log output.
    pub log: Log,
    /// Health, readiness and metrics listener.
    pub admin: Admin,
}

/// `[listen]`: the app-facing listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address apps connect to.
    pub addr: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS.
    #[serde(with = "opt_path")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(with = "opt_path")]
    pub tls_key: Option<PathBuf>,
    /// Larger request bodies get 413 and nothing is sent to the store.
    #[serde(with = "size")]
    pub max_body: ByteSize,
    /// A client that has not sent its request headers by then is dropped.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight calls get this long to finish.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Connections beyond this are refused at once.
    pub max_connections: usize,
    /// Must be true to listen beyond loopback without `[[clients]]`.
    pub allow_anonymous: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            max_body: ByteSize::mib(10),
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 10_000,
            allow_anonymous: false,
        }
    }
}

/// How bcproxy authenticates to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Legacy API account: `Authorization: Basic base64(username:api_key)`.
    #[default]
    Basic,
    /// OAuth API account: `X-Auth-Token: api_key` (and `X-Auth-Client: client_id`).
    Token,
}

impl AuthMode {
    /// The name used in the config file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Basic => "basic",
            AuthMode::Token => "token",
        }
    }
}

/// `[upstream]`: the store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// The store's origin plus optional path prefix.
    pub url: Option<UpstreamUrl>,
    /// `basic` or `token`.
    pub auth: AuthMode,
    /// Basic auth user name (the legacy API account's user).
    pub username: String,
    /// The store's API key or access token. After loading it also holds `api_key_file`'s content.
    pub api_key: Secret,
    /// A file holding the API key (trailing newline trimmed).
    #[serde(with = "opt_path")]
    pub api_key_file: Option<PathBuf>,
    /// Sent as `X-Auth-Client` with `auth = "token"`.
    pub client_id: String,
    /// Extra trusted roots (PEM) beside the platform's.
    #[serde(with = "opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Deadline for the TCP and TLS connection to the store.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline for the store's response headers; then 504.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Upstream calls in flight at once, at most.
    pub max_concurrency: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: None,
            auth: AuthMode::Basic,
            username: String::new(),
            api_key: Secret::default(),
            api_key_file: None,
            client_id: String::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            max_concurrency: 8,
        }
    }
}

/// The store's API dialect: how it states and enforces its budget, and its error shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `X-BC-ApiLimit-Remaining`, 509 past the hourly limit.
    #[default]
    Legacy,
    /// `X-Rate-Limit-*`, 429 past the window's quota.
    Oauth,
}

impl Dialect {
    /// The name used in the config file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Legacy => "legacy",
            Dialect::Oauth => "oauth",
        }
    }
}

/// `[budget]`: the store's request budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// `legacy` or `oauth`.
    pub dialect: Dialect,
    /// Requests the store allows per window.
    pub limit: u64,
    /// The store's window.
    #[serde(with = "duration")]
    pub window: Duration,
    /// The last N requests of a window are for non-GET calls only.
    pub reserve_writes: u64,
    /// Longest a call waits for budget or an upstream slot.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// Waiting calls beyond this get the throttle answer at once.
    pub max_queue: usize,
    /// Where the spent-budget ledger survives restarts.
    #[serde(with = "opt_path")]
    pub state_file: Option<PathBuf>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            dialect: Dialect::Legacy,
            limit: 20_000,
            window: Duration::from_secs(3600),
            reserve_writes: 100,
            max_wait: Duration::from_secs(30),
            max_queue: 10_000,
            state_file: None,
        }
    }
}

/// `[cache]`: the GET response cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Whether GETs are cached at all.
    pub enabled: bool,
    /// Bound on body plus header bytes held.
    #[serde(with = "size")]
    pub max_size: ByteSize,
    /// How long an entry is fresh.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How long after `ttl` an entry may still be served while the budget is spent or the
    /// store fails.
    #[serde(with = "duration")]
    pub stale: Duration,
    /// Per path-prefix TTL overrides; the longest prefix wins.
    pub rules: Vec<CacheRule>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: true,
            max_size: ByteSize::mib(256),
            ttl: Duration::from_secs(60),
            stale: Duration::from_secs(24 * 3600),
            rules: Vec::new(),
        }
    }
}

/// `[[cache.rules]]`: a TTL for every path under a prefix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Path prefix the rule applies to, starting with `/`.
    pub prefix: String,
    /// Freshness for matching paths; `0s` never caches.
    #[serde(with = "duration")]
    pub ttl: Duration,
}

/// `[[clients]]`: an app allowed to call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The app's name, in logs and as the Basic user name.
    pub name: String,
    /// Hex SHA-256 of the app's token.
    pub token_sha256: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `json` or `text`.
    pub format: LogFormat,
    /// A level (`info`) or a tracing filter directive (`info,bcproxy::upstream=debug`).
    pub level: String,
    /// How often the summary line is written.
    #[serde(with = "duration")]
    pub summary_every: Duration,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Json,
            level: "info".into(),
            summary_every: Duration::from_secs(60),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin listener; empty disables it.
    #[serde(with = "opt_addr")]
    pub addr: Option<SocketAddr>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        }
    }
}

/// The store's base URL: origin plus optional path prefix, parsed once.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

impl UpstreamUrl {
    /// Parses and checks a store URL: http(s), a host, no credentials, no query or fragment.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.contains(['?', '#']) {
            return Err("must not have a query or fragment".into());
        }
        let uri: http::Uri = raw.parse().map_err(|e| format!("not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::HTTPS,
            Some("http") => Scheme::HTTP,
            Some(other) => return Err(format!("scheme must be https or http, not {other:?}")),
            None => return Err("must start with https:// (or http://)".into()),
        };
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry credentials; use upstream.username and api_key".into());
        }
        if authority.host().is_empty() {
            return Err("has no host".into());
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Host and optional port: what goes in `Host`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Path prefix without a trailing slash (empty for none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// True for plain http to a host other than loopback: credentials would cross a network
    /// in clear.
    pub fn is_cleartext_remote(&self) -> bool {
        if self.scheme != Scheme::HTTP {
            return false;
        }
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => host != "localhost",
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        UpstreamUrl::parse(&raw).map_err(|e| serde::de::Error::custom(format!("{raw:?} {e}")))
    }
}

/// Where settings come from; tests inject the environment instead of reading the process's.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file; `None` for defaults plus environment only.
    pub file: Option<PathBuf>,
    /// TOML text used instead of a file (the embedded demo config, tests).
    pub text: Option<String>,
    /// Environment variables; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

impl Settings {
    /// Loads, deserializes and validates settings, reading the API key file if one is named.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    path.display().to_string(),
                    "is not a readable config file (pass --config FILE or set BCPROXY_CONFIG)",
                ));
            }
            builder = builder
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
        }
        if let Some(text) = &sources.text {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .separator(ENV_SEPARATOR)
            .source(sources.env.clone());
        let built = builder.add_source(env).build().map_err(|e| {
            let origin = sources
                .file
                .as_ref()
                .map_or_else(|| "config".to_string(), |p| p.display().to_string());
            let why = match e {
                config::ConfigError::FileParse { cause, .. } => {
                    format!("is not valid TOML: {}", one_line(&cause.to_string()))
                }
                other => format!("cannot be read: {}", one_line(&other.to_string())),
            };
            ConfigError::new(origin, why)
        })?;
        let mut settings: Settings = serde_path_to_error::deserialize(built).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            describe_serde_error(&key, &inner)
        })?;
        settings.resolve_secret()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads settings from TOML text and an explicit environment (tests, the demo).
    pub fn from_toml(text: &str, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
        Settings::load(&Sources {
            file: None,
            text: Some(text.to_string()),
            env: Some(env),
        })
    }

    /// Reads `upstream.api_key_file` into `upstream.api_key`, enforcing exactly one of them.
    fn resolve_secret(&mut self) -> Result<(), ConfigError> {
        let up = &mut self.upstream;
        match (&up.api_key_file, up.api_key.is_empty()) {
            (Some(_), false) => Err(ConfigError::new(
                "upstream.api_key",
                "both upstream.api_key and upstream.api_key_file are set; use one of them",
            )),
            (Some(path), true) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        "upstream.api_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let key = text.trim_end_matches(['\n', '\r']);
                if key.is_empty() {
                    return Err(ConfigError::new(
                        "upstream.api_key_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                up.api_key = Secret::new(key);
                Ok(())
            }
            (None, false) => Ok(()),
            (None, true) => Err(ConfigError::new(
                "upstream.api_key",
                format!(
                    "is required with auth = \"{}\": set upstream.api_key_file, \
                     upstream.api_key or {ENV_PREFIX}__UPSTREAM__API_KEY",
                    up.auth.as_str()
                ),
            )),
        }
    }

    /// Checks every rule `run` relies on; the first broken one is returned.
    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.listen;
        if l.tls_cert.is_some() != l.tls_key.is_some() {
            return Err(ConfigError::new(
                "listen.tls_key",
                "listen.tls_cert and listen.tls_key must be set together",
            ));
        }
        if let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) {
            crate::tls::server_config(cert, key)
                .map_err(|e| ConfigError::new("listen.tls_cert", e.to_string()))?;
        }
        positive("listen.header_timeout", l.header_timeout)?;
        at_least_one("listen.max_connections", l.max_connections as u64)?;
        if !l.addr.ip().is_loopback() && self.clients.is_empty() && !l.allow_anonymous {
            return Err(ConfigError::new(
                "listen.allow_anonymous",
                format!(
                    "listen.addr {} is reachable beyond this host and no [[clients]] are \
                     configured; refusing to run an open proxy that holds the store's \
                     credentials (add [[clients]] or set listen.allow_anonymous = true)",
                    l.addr
                ),
            ));
        }

        let up = &self.upstream;
        if up.url.is_none() {
            return Err(ConfigError::new(
                "upstream.url",
                "is required (for example \"https://store-abc123.mybigcommerce.com\")",
            ));
        }
        if up.auth == AuthMode::Basic {
            if up.username.is_empty() {
                return Err(ConfigError::new(
                    "upstream.username",
                    "is required with auth = \"basic\" (the legacy API account's user name)",
                ));
            }
            if up.username.contains(':') {
                return Err(ConfigError::new(
                    "upstream.username",
                    "must not contain ':'",
                ));
            }
        }
        if up.api_key.expose().chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                "upstream.api_key",
                "contains control characters (a stray newline?)",
            ));
        }
        if http::HeaderValue::from_str(&up.client_id).is_err() {
            return Err(ConfigError::new(
                "upstream.client_id",
                "is not a valid header value",
            ));
        }
        if let Some(ca) = &up.ca_file {
            crate::tls::load_certs(ca)
                .map_err(|e| ConfigError::new("upstream.ca_file", e.to_string()))?;
        }
        positive("upstream.connect_timeout", up.connect_timeout)?;
        positive("upstream.timeout", up.timeout)?;
        at_least_one("upstream.max_concurrency", up.max_concurrency as u64)?;

        let b = &self.budget;
        at_least_one("budget.limit", b.limit)?;
        positive("budget.window", b.window)?;
        if b.reserve_writes >= b.limit {
            return Err(ConfigError::new(
                "budget.reserve_writes",
                format!("must be below budget.limit ({})", b.limit),
            ));
        }
        positive("budget.max_wait", b.max_wait)?;
        if let Some(dir) = b.state_file.as_deref().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(ConfigError::new(
                    "budget.state_file",
                    format!("its directory {} does not exist", dir.display()),
                ));
            }
        }

        for (i, rule) in self.cache.rules.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("cache.rules[{i}].prefix"),
                    "must start with '/'",
                ));
            }
        }

        let mut names = HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.name.is_empty() || c.name.contains(':') || c.name.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    format!("clients[{i}].name"),
                    "must be non-empty, without ':' or control characters",
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::new(
                    format!("clients[{i}].name"),
                    format!("{:?} appears twice", c.name),
                ));
            }
            if c.token_sha256.len() != 64 || !c.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(ConfigError::new(
                    format!("clients[{i}].token_sha256"),
                    "must be 64 hex digits (the SHA-256 of the app's token)",
                ));
            }
        }

        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::new(
                "log.level",
                format!("{:?} is not a level or filter: {e}", self.log.level),
            )
        })?;
        positive("log.summary_every", self.log.summary_every)?;

        if self.admin.addr == Some(l.addr) {
            return Err(ConfigError::new(
                "admin.addr",
                "must differ from listen.addr (admin endpoints never share the app port)",
            ));
        }
        Ok(())
    }

    /// The parsed store URL. Loading guarantees it is set.
    pub fn upstream_url(&self) -> &UpstreamUrl {
        self.upstream
            .url
            .as_ref()
            .expect("Settings::load rejects a missing upstream.url")
    }

    /// The effective settings as TOML, secrets redacted (for `bcproxy check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// Turns serde's wording into one sentence naming the key.
fn describe_serde_error(key: &str, inner: &str) -> ConfigError {
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        // The path already ends with the unknown key.
        let full = if key == "." || key.is_empty() {
            field.to_string()
        } else {
            key.to_string()
        };
        let expected = expected.trim_start_matches(", ");
        return ConfigError::new(full, format!("unknown key ({expected})"));
    }
    if let Some(rest) = inner.strip_prefix("missing configuration field \"") {
        // config writes `clients[0]token_sha256`; name it `clients[0].token_sha256`.
        let field = rest
            .trim_end_matches('"')
            .replace("]", "].")
            .replace("..", ".");
        return ConfigError::new(field, "is required");
    }
    let key = if key == "." { "config" } else { key };
    // config appends the key itself; it is already named.
    let message = inner.rsplit_once(" for key `").map_or(inner, |(m, _)| m);
    ConfigError::new(key, message.to_string())
}

/// Squeezes a multi-line parser message (TOML errors draw the line in ASCII art) into one
/// line: its first line and its last.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [only] => only.to_string(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than 0s"));
    }
    Ok(())
}

fn at_least_one(key: &str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(())
}

/// Durations as humans write them: `"250ms"`, `"30s"`, `"60m"`, `"24h"`.
mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"250ms\", \"30s\" or \"60m\" ({e})"
            ))
        })
    }
}

/// Sizes as humans write them: `"64MiB"`, `"512KiB"`, `"10MB"`.
mod size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        // Exact, so that `check` output loads back to the same value.
        let bytes = v.as_u64();
        let text = match bytes {
            0 => "0B".to_string(),
            b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
            b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
            b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
            b => format!("{b}B"),
        };
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<ByteSize>().map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a size like \"10MiB\" or \"512KiB\" ({e})"
            ))
        })
    }
}

/// `""` in the file means "not set" for optional paths.
mod opt_path {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            v.as_deref()
                .map(Path::to_string_lossy)
                .as_deref()
                .unwrap_or(""),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

/// `""` in the file means "disabled" for optional addresses.
mod opt_addr {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an ip:port address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [upstream]
        url = "https://store-abc123.mybigcommerce.com"
        username = "admin"
        api_key = "k3y"
    "#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, HashMap::new())
    }

    fn err_key(text: &str) -> String {
        load(text).unwrap_err().key
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = load(BASE).unwrap();
        assert_eq!(s.listen.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.listen.max_body, ByteSize::mib(10));
        assert_eq!(s.upstream.timeout, Duration::from_secs(60));
        assert_eq!(s.upstream.max_concurrency, 8);
        assert_eq!(s.budget.limit, 20_000);
        assert_eq!(s.budget.window, Duration::from_secs(3600));
        assert_eq!(s.admin.addr.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(s.upstream.api_key.expose(), "k3y");
    }

    #[test]
    fn env_overrides_the_file() {
        let env = HashMap::from([
            (
                "BCPROXY__UPSTREAM__API_KEY".to_string(),
                "from-env".to_string(),
            ),
            ("BCPROXY__BUDGET__LIMIT".to_string(), "150".to_string()),
            (
                "BCPROXY__LISTEN__HEADER_TIMEOUT".to_string(),
                "3s".to_string(),
            ),
            ("BCPROXY_CONFIG".to_string(), "ignored.toml".to_string()),
        ]);
        let text = BASE.replace("api_key = \"k3y\"", "");
        let s = Settings::from_toml(&text, env).unwrap();
        assert_eq!(s.upstream.api_key.expose(), "from-env");
        assert_eq!(s.budget.limit, 150);
        assert_eq!(s.listen.header_timeout, Duration::from_secs(3));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load(&format!("{BASE}\n[listen]\nadr = \"1.2.3.4:1\"")).unwrap_err();
        assert_eq!(e.key, "listen.adr");
        assert!(e.message.contains("unknown key"), "{e}");
        assert_eq!(
            err_key(&format!("{BASE}\n[lisen]\naddr = \"1.2.3.4:1\"")),
            "lisen"
        );
        let env = HashMap::from([("BCPROXY__UPSTREAM__APIKEY".to_string(), "x".to_string())]);
        assert_eq!(
            Settings::from_toml(BASE, env).unwrap_err().key,
            "upstream.apikey"
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[listen]\nheader_timeout = \"10 parsecs\""
            )),
            "listen.header_timeout"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[listen]\nmax_body = \"lots\"")),
            "listen.max_body"
        );
        assert_eq!(
            err_key(&BASE.replace("https://store-abc123.mybigcommerce.com", "ftp://x")),
            "upstream.url"
        );
        assert_eq!(
            err_key(&BASE.replace("https://store-abc123.mybigcommerce.com", "https://u:p@x")),
            "upstream.url"
        );
        assert_eq!(
            err_key(&BASE.replace("username = \"admin\"", "")),
            "upstream.username"
        );
        assert_eq!(
            err_key(&BASE.replace("api_key = \"k3y\"", "")),
            "upstream.api_key"
        );
        assert_eq!(
            err_key(&BASE.replace("url = \"https://store-abc123.mybigcommerce.com\"", "")),
            "upstream.url"
        );
        assert_eq!(
            err_key(&format!("{BASE}\napi_key_file = \"/nonexistent/key\"")),
            "upstream.api_key"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[budget]\ndialect = \"graphql\"")),
            "budget.dialect"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[log]\nlevel = \"loud=!\"")),
            "log.level"
        );
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[budget]\nstate_file = \"/nonexistent/dir/b.json\""
            )),
            "budget.state_file"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[budget]\nreserve_writes = 20000")),
            "budget.reserve_writes"
        );
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[[clients]]\nname = \"erp\"\ntoken_sha256 = \"abc\""
            )),
            "clients[0].token_sha256"
        );
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = BASE.replace(
            "api_key = \"k3y\"",
            &format!("api_key_file = {:?}", path.display().to_string()),
        );
        assert_eq!(load(&text).unwrap().upstream.api_key.expose(), "s3cret");
        let missing = BASE.replace("api_key = \"k3y\"", "api_key_file = \"/nonexistent/key\"");
        let e = load(&missing).unwrap_err();
        assert_eq!(e.key, "upstream.api_key_file");
        assert!(e.message.contains("/nonexistent/key"), "{e}");
    }

    #[test]
    fn open_proxy_is_refused() {
        let open = format!("{BASE}\n[listen]\naddr = \"0.0.0.0:8080\"");
        assert_eq!(err_key(&open), "listen.allow_anonymous");
        assert!(load(&format!("{open}\nallow_anonymous = true")).is_ok());
    }

    #[test]
    fn upstream_url_splits_origin_and_prefix() {
        let u = UpstreamUrl::parse("https://api.bigcommerce.com/stores/abc/").unwrap();
        assert_eq!(u.origin(), "https://api.bigcommerce.com");
        assert_eq!(u.prefix(), "/stores/abc");
        assert!(!u.is_cleartext_remote());
        assert!(
            UpstreamUrl::parse("http://10.0.0.5:80")
                .unwrap()
                .is_cleartext_remote()
        );
        assert!(
            !UpstreamUrl::parse("http://127.0.0.1:80")
                .unwrap()
                .is_cleartext_remote()
        );
        assert!(UpstreamUrl::parse("https://x/?a=1").is_err());
    }

    #[test]
    fn redacted_output_reloads_and_hides_the_key() {
        let s = load(BASE).unwrap();
        let text = s.to_redacted_toml();
        assert!(!text.contains("k3y"), "{text}");
        assert!(text.contains(crate::secret::REDACTED));
        let again = load(&text.replace(crate::secret::REDACTED, "k3y")).unwrap();
        assert_eq!(again.listen.max_body, s.listen.max_body);
        assert_eq!(again.cache.stale, s.cache.stale);
    }
}
