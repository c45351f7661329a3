//! `[listen]`: the app-facing listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{at_least_one, duration, opt_path, positive, size};

/// `[listen]`: where apps connect and what a connection may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address apps connect to.
    #[serde(with = "super::values::addr")]
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
    /// A client that has not sent its request headers by then is dropped; an h2 connection
    /// with no open stream is closed after this long.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Longest gap between reads of a request body (then 408), and longest an app may leave
    /// an answer unread (then the answer is cut off and the store's connection freed).
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Memory that request bodies being received may hold in all; beyond it a new body waits
    /// unread for up to `body_timeout`, then gets 503 with `Retry-After`.
    #[serde(with = "size")]
    pub body_memory: ByteSize,
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
            body_timeout: Duration::from_secs(60),
            body_memory: ByteSize::mib(256),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 10_000,
            allow_anonymous: false,
        }
    }
}

impl Listen {
    /// Checks the section on its own (the open-proxy rule also needs `[[clients]]`).
    pub fn validate(&self, files: bool) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::new(
                "listen.tls_key",
                "listen.tls_cert and listen.tls_key must be set together",
            ));
        }
        if let (Some(cert), Some(key), true) = (&self.tls_cert, &self.tls_key, files) {
            crate::tls::server_config(cert, key)
                .map_err(|e| ConfigError::new("listen.tls_cert", e.to_string()))?;
        }
        positive("listen.header_timeout", self.header_timeout)?;
        positive("listen.body_timeout", self.body_timeout)?;
        if self.body_memory < self.max_body {
            return Err(ConfigError::new(
                "listen.body_memory",
                format!(
                    "must be at least listen.max_body ({}), or no body of the largest allowed \
                     size could ever be received",
                    self.max_body
                ),
            ));
        }
        at_least_one("listen.max_connections", self.max_connections as u64)?;
        Ok(())
    }

    /// `https` with a certificate, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The open-proxy rule: a listener reachable beyond this host needs `[[clients]]` unless
    /// anonymous access is allowed explicitly.
    pub fn check_open(&self, addr: SocketAddr, has_clients: bool) -> Result<(), ConfigError> {
        if !addr.ip().is_loopback() && !has_clients && !self.allow_anonymous {
            return Err(ConfigError::new(
                "listen.allow_anonymous",
                format!(
                    "listen.addr {addr} is reachable beyond this host and no [[clients]] are \
                     configured; refusing to run an open proxy that holds the store's \
                     credentials (add [[clients]] or set listen.allow_anonymous = true)"
                ),
            ));
        }
        Ok(())
    }
}
