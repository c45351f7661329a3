//! `[cluster]`: several bcproxy processes sharing one store budget, one pause, one cache and
//! its invalidations through Redis.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::values::opt_path;
use super::{ConfigError, Upstream};
use crate::dialect::Dialect;
use crate::secret::Secret;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// `redis://host:6379/0` (`rediss://` for TLS, a username allowed); empty: this process
    /// alone.
    pub redis_url: String,
    /// A file holding the Redis password.
    #[serde(with = "opt_path")]
    pub redis_password_file: Option<PathBuf>,
    /// The Redis password (prefer the file, or `BCPROXY__CLUSTER__REDIS_PASSWORD`); after
    /// loading it also holds the file's content.
    pub redis_password: Secret,
    /// Processes with the same name share one budget, pause and cache; empty: derived from
    /// the store (see [`Cluster::name_for`]).
    pub name: String,
    /// This process in logs, `/status` and metrics; empty: `hostname-pid`.
    pub instance: String,
    /// While Redis is unreachable, spend at most `limit / N`, N being the larger of this and
    /// the instances seen in the last 30 s.
    pub expected_instances: u64,
    /// Share GET answers through Redis (one store call serves every process).
    pub shared_cache: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis_url: String::new(),
            redis_password_file: None,
            redis_password: Secret::default(),
            name: String::new(),
            instance: String::new(),
            expected_instances: 1,
            shared_cache: true,
        }
    }
}

impl Cluster {
    /// True when the process runs in a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// The cluster's name: `cluster.name`, else, for a legacy store, its host and the user
    /// name (the budget is per credential); for an OAuth store, the store hash of
    /// `upstream.url`'s `/stores/{hash}` (the quota is per store). Never derived from the key.
    pub fn name_for(&self, upstream: &Upstream, dialect: Dialect) -> Option<String> {
        if !self.name.is_empty() {
            return Some(self.name.clone());
        }
        let url = upstream.url.as_ref()?;
        match dialect {
            Dialect::Legacy => Some(format!("{}/{}", url.authority().host(), upstream.username)),
            Dialect::Oauth => {
                let mut segments = url.prefix().split('/').filter(|s| !s.is_empty());
                while let Some(segment) = segments.next() {
                    if segment == "stores" {
                        return segments.next().map(|hash| format!("stores/{hash}"));
                    }
                }
                None
            }
        }
    }

    /// This process's name: `cluster.instance`, else `hostname-pid`.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "bcproxy".into());
        format!("{host}-{}", std::process::id())
    }

    /// Reads `redis_password_file`, enforcing at most one of it and `redis_password`.
    pub(super) fn resolve_secret(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.redis_password_file else {
            return Ok(());
        };
        if !self.redis_password.is_empty() {
            return Err(ConfigError::new(
                "cluster.redis_password",
                "both cluster.redis_password and cluster.redis_password_file are set; use one of them",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "cluster.redis_password_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        self.redis_password = Secret::new(text.trim_end_matches(['\n', '\r']));
        Ok(())
    }

    /// Checks the section against the store it is about.
    pub fn validate(&self, upstream: &Upstream, dialect: Dialect) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let url = self.redis_url.as_str();
        let rest = match url.split_once("://") {
            Some(("redis" | "rediss", rest)) => rest,
            _ => {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    "must start with redis:// (or rediss:// for TLS), like \"redis://127.0.0.1:6379/0\"",
                ));
            }
        };
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "must not carry a password (the value is not shown): use cluster.redis_password_file or BCPROXY__CLUSTER__REDIS_PASSWORD; a user name may stay",
            ));
        }
        if url.contains('#') {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "must not carry a fragment such as #insecure: Redis's TLS certificate is always checked (trust its CA with upstream.ca_file)",
            ));
        }
        if redis::Client::open(url).is_err() {
            return Err(ConfigError::new(
                "cluster.redis_url",
                format!("{url:?} is not a Redis URL like \"redis://127.0.0.1:6379/0\""),
            ));
        }
        if self.redis_password.has_control_chars() {
            return Err(ConfigError::new(
                "cluster.redis_password",
                "contains control characters (a stray newline?)",
            ));
        }
        match self.name_for(upstream, dialect) {
            None => {
                return Err(ConfigError::new(
                    "cluster.name",
                    "is required: upstream.url has no /stores/{hash} to share an OAuth quota by; name the cluster (every process of one store must use the same name)",
                ));
            }
            Some(name) if name.contains(['{', '}']) || name.chars().any(char::is_control) => {
                return Err(ConfigError::new(
                    "cluster.name",
                    "must not contain '{', '}' or control characters",
                ));
            }
            Some(_) => {}
        }
        if self.expected_instances == 0 {
            return Err(ConfigError::new(
                "cluster.expected_instances",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
