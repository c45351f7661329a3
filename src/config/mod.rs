//! Settings: the TOML file, then `BCPROXY__SECTION__KEY` environment overrides, deserialized
//! into typed sections, then validated. Every error names the key it is about.
//!
//! One module per section, each with its own `validate`; the rules that span sections (the
//! open-proxy rule, the admin port) are checked here. `reload` says which keys a reload
//! applies and which need a restart.

mod admin;
mod budget;
mod cache;
mod clients;
mod cluster;
mod listen;
mod log;
pub mod reload;
mod upstream;
pub(crate) mod values;
mod webhooks;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use admin::Admin;
pub use budget::Budget;
pub use cache::{Cache, CacheRule, Coupling};
pub use clients::ClientEntry;
pub use cluster::Cluster;
pub use listen::Listen;
pub use log::{Log, LogFormat};
pub use upstream::{AuthMode, Upstream, UpstreamUrl};
pub use webhooks::Webhooks;

pub use crate::dialect::Dialect;

/// Prefix of environment overrides: `BCPROXY__UPSTREAM__API_KEY` sets `upstream.api_key`.
pub const ENV_PREFIX: &str = "BCPROXY";
/// Separator between the prefix, the section and the key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";
/// The config file used when neither `--config` nor `$BCPROXY_CONFIG` names one.
pub const DEFAULT_PATH: &str = "config/bcproxy.toml";

/// Keys whose values are secrets: an error about one names the key, never the value.
pub const SECRET_KEYS: &[&str] = &[
    "upstream.api_key",
    "webhooks.header",
    "cluster.redis_password",
];

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
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
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
    /// Store webhooks that drop cached answers.
    pub webhooks: Webhooks,
    /// Several processes, one budget and cache, through Redis.
    pub cluster: Cluster,
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
    /// Check the settings without reading the files they name (key and secret files,
    /// certificates) or looking for state directories: `bcproxy check --offline`, for CI
    /// pipelines that have the config but not the machine's files.
    pub offline: bool,
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
        if !sources.offline {
            settings.upstream.resolve_secret()?;
            settings.webhooks.resolve_secret()?;
            settings.cluster.resolve_secret()?;
        } else {
            settings.upstream.require_secret()?;
        }
        settings.validate(!sources.offline)?;
        Ok(settings)
    }

    /// Loads settings from TOML text and an explicit environment (tests, the demo).
    pub fn from_toml(text: &str, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
        Settings::load(&Sources {
            file: None,
            text: Some(text.to_string()),
            env: Some(env),
            offline: false,
        })
    }

    /// Checks every rule `run` relies on, section by section and then across sections; the
    /// first broken one is returned.
    fn validate(&self, files: bool) -> Result<(), ConfigError> {
        self.listen.validate(files)?;
        self.listen
            .check_open(self.listen.addr, !self.clients.is_empty())?;
        self.upstream.validate(files)?;
        self.budget.validate(files)?;
        self.cache.validate()?;
        clients::validate(&self.clients)?;
        self.log.validate()?;
        self.webhooks.validate()?;
        self.cluster.validate(&self.upstream, self.budget.dialect)?;
        if self.admin.addr == Some(self.listen.addr) {
            return Err(ConfigError::new(
                "admin.addr",
                "must differ from listen.addr (admin endpoints never share the app port)",
            ));
        }
        if let Some(addr) = self.webhooks.addr
            && (addr == self.listen.addr || Some(addr) == self.admin.addr)
        {
            return Err(ConfigError::new(
                "webhooks.addr",
                "must differ from listen.addr and admin.addr",
            ));
        }
        Ok(())
    }

    /// The parsed store URL. Loading guarantees it is set.
    pub fn upstream_url(&self) -> &UpstreamUrl {
        self.upstream.url()
    }

    /// The effective settings as TOML, secrets redacted (for `bcproxy check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// Turns serde's wording into one sentence naming the key.
fn describe_serde_error(key: &str, inner: &str) -> ConfigError {
    if SECRET_KEYS.contains(&key) {
        return ConfigError::new(key, "must be a string (the value is not shown)");
    }
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
    ConfigError::new(key, plain_type_error(message))
}

/// serde's "invalid type: 64-bit integer `-5`, expected an unsigned 64 bit or less integer" as
/// "-5 is not valid: expected a whole number, 0 or more".
fn plain_type_error(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_string();
    };
    let Some((got, want)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let got = match got.split_once('`') {
        Some((_, value)) => value.trim_end_matches('`').to_string(),
        None => got.to_string(),
    };
    let want = if want.contains("unsigned") || want.starts_with('u') {
        "a whole number, 0 or more"
    } else if want.contains("integer") || want.starts_with('i') {
        "a whole number"
    } else if want.contains("boolean") {
        "true or false"
    } else if want.contains("string") {
        "a quoted string"
    } else if want.contains("sequence") {
        "a list ([…])"
    } else {
        want
    };
    format!("{got} is not valid: expected {want}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytesize::ByteSize;
    use std::time::Duration;

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
    fn the_cluster_is_named_after_what_shares_a_budget() {
        let cluster = |extra: &str| {
            let s = load(&format!(
                "{BASE}\n[cluster]\nredis_url = \"redis://r:6379\"\n{extra}"
            ))
            .unwrap();
            s.cluster.name_for(&s.upstream, s.budget.dialect)
        };
        // Legacy: the budget is per credential, so the host and the user.
        assert_eq!(
            cluster("").as_deref(),
            Some("store-abc123.mybigcommerce.com/admin")
        );
        assert_eq!(cluster("name = \"erp\"").as_deref(), Some("erp"));
        // OAuth: the quota is per store, so the store's hash from the URL.
        let oauth = "[upstream]\nurl = \"https://api.bigcommerce.com/stores/abc123\"\nauth = \"token\"\napi_key = \"t\"\nclient_id = \"c\"\n[budget]\ndialect = \"oauth\"\n[cluster]\nredis_url = \"redis://r\"\n".to_string();
        let s = load(&oauth).unwrap();
        assert_eq!(
            s.cluster.name_for(&s.upstream, s.budget.dialect).as_deref(),
            Some("stores/abc123")
        );
        let no_hash = oauth.replace("/stores/abc123", "");
        assert_eq!(err_key(&no_hash), "cluster.name");
        assert_eq!(
            err_key(&format!("{no_hash}name = \"a{{b}}\"\n")),
            "cluster.name"
        );
        // The key never names the cluster, and a password never sits in the URL.
        let s = load(BASE).unwrap();
        assert!(!s.cluster.enabled());
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[cluster]\nredis_url = \"redis://u:pw@r:6379\"\n"
            )),
            "cluster.redis_url"
        );
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[cluster]\nredis_url = \"rediss://r:6379/#insecure\"\n"
            )),
            "cluster.redis_url"
        );
        let both = format!(
            "{BASE}\n[cluster]\nredis_url = \"redis://r\"\nredis_password = \"a\"\nredis_password_file = \"/nonexistent\"\n"
        );
        assert_eq!(err_key(&both), "cluster.redis_password");
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
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[[cache.couplings]]\nwhen = \"orders\"\ndrop = [\"/api/v2/products\"]"
            )),
            "cache.couplings[0].when"
        );
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[[cache.couplings]]\nwhen = \"/api/v2/orders\"\ndrop = [\"/api/v2/products/5\"]"
            )),
            "cache.couplings[0].drop"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[webhooks]\nheader = \"no colon here\"")),
            "webhooks.header"
        );
        assert_eq!(
            err_key(&format!("{BASE}\n[webhooks]\naddr = \"127.0.0.1:9999\"")),
            "webhooks.addr"
        );
        assert_eq!(
            err_key(&format!(
                "{BASE}\n[webhooks]\nsecret_file = \"/nonexistent/hook\""
            )),
            "webhooks.secret_file"
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
