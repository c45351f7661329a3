//! `[cache]`: the GET response cache.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{duration, size};

/// `[cache]`.
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

impl Cache {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("cache.rules[{i}].prefix"),
                    "must start with '/'",
                ));
            }
        }
        Ok(())
    }
}
