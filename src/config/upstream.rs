//! `[upstream]`: the store, its credential and how calls reach it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::values::{at_least_one, duration, opt_path, positive};
use super::{ConfigError, ENV_PREFIX};
use crate::secret::Secret;

/// How bcproxy authenticates to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

impl Upstream {
    /// The parsed store URL. Loading guarantees it is set.
    pub fn url(&self) -> &UpstreamUrl {
        self.url
            .as_ref()
            .expect("Settings::load rejects a missing upstream.url")
    }

    /// Enforces exactly one of `api_key` and `api_key_file` without reading the file.
    pub(super) fn require_secret(&self) -> Result<(), ConfigError> {
        match (&self.api_key_file, self.api_key.is_empty()) {
            (Some(_), true) | (None, false) => Ok(()),
            _ => {
                let mut copy = self.clone();
                copy.api_key_file = None;
                copy.resolve_secret()
            }
        }
    }

    /// Reads `api_key_file` into `api_key`, enforcing exactly one of them.
    pub(super) fn resolve_secret(&mut self) -> Result<(), ConfigError> {
        match (&self.api_key_file, self.api_key.is_empty()) {
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
                self.api_key = Secret::new(key);
                Ok(())
            }
            (None, false) => Ok(()),
            (None, true) => Err(ConfigError::new(
                "upstream.api_key",
                format!(
                    "is required with auth = \"{}\": set upstream.api_key_file, \
                     upstream.api_key or {ENV_PREFIX}__UPSTREAM__API_KEY",
                    self.auth.as_str()
                ),
            )),
        }
    }

    /// Checks the section.
    pub fn validate(&self, files: bool) -> Result<(), ConfigError> {
        if self.url.is_none() {
            return Err(ConfigError::new(
                "upstream.url",
                "is required (for example \"https://store-abc123.mybigcommerce.com\")",
            ));
        }
        if self.auth == AuthMode::Basic {
            if self.username.is_empty() {
                return Err(ConfigError::new(
                    "upstream.username",
                    "is required with auth = \"basic\" (the legacy API account's user name)",
                ));
            }
            if self.username.contains(':') {
                return Err(ConfigError::new(
                    "upstream.username",
                    "must not contain ':'",
                ));
            }
        }
        if self.api_key.has_control_chars() {
            return Err(ConfigError::new(
                "upstream.api_key",
                "contains control characters (a stray newline?)",
            ));
        }
        if http::HeaderValue::from_str(&self.client_id).is_err() {
            return Err(ConfigError::new(
                "upstream.client_id",
                "is not a valid header value",
            ));
        }
        if let Some(ca) = self.ca_file.as_ref().filter(|_| files) {
            crate::tls::load_certs(ca)
                .map_err(|e| ConfigError::new("upstream.ca_file", e.to_string()))?;
        }
        positive("upstream.connect_timeout", self.connect_timeout)?;
        positive("upstream.timeout", self.timeout)?;
        at_least_one("upstream.max_concurrency", self.max_concurrency as u64)?;
        Ok(())
    }

    /// Names the store and credential a budget is spent against, so that state saved for
    /// another one is not used. Holds a short fingerprint of the key, never the key.
    pub fn identity(&self, dialect: crate::dialect::Dialect) -> String {
        format!(
            "{} {} {} {} key:{}",
            dialect.as_str(),
            self.url(),
            self.auth.as_str(),
            self.username,
            self.api_key.fingerprint()
        )
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
    /// Parses and checks a store URL: http(s), a host, a port in range, no credentials, no
    /// query or fragment. Errors never repeat a credential the URL carried.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if has_userinfo(raw) {
            return Err(
                "must not carry credentials (user:password@); the value is not shown. Use \
                 upstream.username and upstream.api_key_file"
                    .into(),
            );
        }
        if raw.contains(['?', '#']) {
            return Err(format!("{raw:?} must not have a query or fragment"));
        }
        let uri: http::Uri = raw
            .parse()
            .map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::HTTPS,
            Some("http") => Scheme::HTTP,
            Some(other) => {
                return Err(format!(
                    "{raw:?}: the scheme must be https or http, not {other:?}"
                ));
            }
            None => return Err(format!("{raw:?} must start with https:// (or http://)")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{raw:?} has no host"))?;
        if authority.host().is_empty() {
            return Err(format!("{raw:?} has no host"));
        }
        // `http` drops a port it cannot read (`:99999` would silently become the default).
        let after_host = &authority.as_str()[authority.host().len()..];
        if let Some(port) = after_host.strip_prefix(':')
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(format!(
                "{raw:?}: the port {port:?} is not a port number from 1 to 65535"
            ));
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
        UpstreamUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// True when a URL names a user (and perhaps a password) before its host.
fn has_userinfo(raw: &str) -> bool {
    let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

impl<'de> serde::Deserialize<'de> for AuthMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::values::one_of(d, &[("basic", AuthMode::Basic), ("token", AuthMode::Token)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_repeating_credentials() {
        let err = UpstreamUrl::parse("https://admin:s3cr3t-KEY@store.example").unwrap_err();
        assert!(!err.contains("s3cr3t") && !err.contains("admin"), "{err}");
        assert!(UpstreamUrl::parse("https://user@store.example/x").is_err());
        for bad in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://[::1]:70000/api",
            "https://x:abc",
            "http://:80",
            "ftp://store.example",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
        let ok = UpstreamUrl::parse("http://[::1]:8081/stores/abc").unwrap();
        assert_eq!(ok.authority().port_u16(), Some(8081));
        assert_eq!(
            UpstreamUrl::parse("http://127.0.0.1:99999").unwrap_err(),
            "\"http://127.0.0.1:99999\": the port \"99999\" is not a port number from 1 to 65535"
        );
    }
}
