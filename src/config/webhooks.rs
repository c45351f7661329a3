//! `[webhooks]`: store webhooks that drop what changed outside the proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{duration, opt_addr, opt_path, positive};
use crate::secret::Secret;

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// The app's client secret, for Standard Webhooks signatures (`whsec_…` is base64).
    #[serde(with = "opt_path")]
    pub secret_file: Option<PathBuf>,
    /// Alternatively, `Name: value`: a custom header every delivery carries.
    pub header: Secret,
    /// A signed delivery whose timestamp is further from now is refused.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// A listener of its own serving only the webhook path; empty: the admin listener.
    #[serde(with = "opt_addr")]
    pub addr: Option<SocketAddr>,
    /// The secret file's content, read at load (never serialized).
    #[serde(skip)]
    pub secret: Secret,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            secret_file: None,
            header: Secret::default(),
            max_age: Duration::from_secs(300),
            addr: None,
            secret: Secret::default(),
        }
    }
}

impl Webhooks {
    /// True when deliveries can be verified (and so are accepted at all).
    pub fn enabled(&self) -> bool {
        self.secret_file.is_some() || !self.header.is_empty()
    }

    /// The header a delivery must carry, split into name and value.
    pub fn header_pair(&self) -> Option<(&str, &str)> {
        let (name, value) = self.header.expose().split_once(':')?;
        Some((name.trim(), value.trim()))
    }

    /// The HMAC key of Standard Webhooks signatures: the secret's bytes, or, after a `whsec_`
    /// prefix, the base64 they encode; `None` without a secret file or with bad base64.
    pub fn signing_key(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let secret = self.secret.expose();
        if secret.is_empty() {
            return None;
        }
        match secret.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok(),
            None => Some(secret.as_bytes().to_vec()),
        }
    }

    /// Reads the secret file (trailing newline trimmed).
    pub(super) fn resolve_secret(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.secret_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "webhooks.secret_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(ConfigError::new(
                "webhooks.secret_file",
                format!("{} is empty", path.display()),
            ));
        }
        self.secret = Secret::new(secret);
        Ok(())
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.secret_file.is_some() && !self.header.is_empty() {
            return Err(ConfigError::new(
                "webhooks.header",
                "set webhooks.secret_file or webhooks.header, not both",
            ));
        }
        if !self.header.is_empty() {
            let valid = self.header_pair().is_some_and(|(name, value)| {
                http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(value).is_ok()
                    && !value.is_empty()
            });
            if !valid {
                return Err(ConfigError::new(
                    "webhooks.header",
                    "must be \"Name: value\" (a header name, a colon, a non-empty value; the value is not shown)",
                ));
            }
        }
        if self.secret_file.is_some() && self.signing_key().is_none() {
            return Err(ConfigError::new(
                "webhooks.secret_file",
                "holds a whsec_ secret whose rest is not base64",
            ));
        }
        positive("webhooks.max_age", self.max_age)?;
        if self.addr.is_some() && !self.enabled() {
            return Err(ConfigError::new(
                "webhooks.addr",
                "is set but deliveries cannot be verified: set webhooks.secret_file or webhooks.header",
            ));
        }
        Ok(())
    }
}
