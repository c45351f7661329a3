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
    /// Collections whose change drops other collections too (beside the built-in ones).
    pub couplings: Vec<Coupling>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: true,
            max_size: ByteSize::mib(256),
            ttl: Duration::from_secs(60),
            stale: Duration::from_secs(24 * 3600),
            rules: Vec::new(),
            couplings: Vec::new(),
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

/// `[[cache.couplings]]`: a change in one collection drops whole other collections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Coupling {
    /// The collection whose change it is about (`/api/v2/orders`).
    pub when: String,
    /// The collections dropped with it (`["/api/v2/products"]`), under every path form.
    pub drop: Vec<String>,
}

impl Cache {
    /// The couplings in effect: the built-in ones and `[[cache.couplings]]`.
    pub fn couplings(&self) -> Result<crate::cache::resource::Couplings, String> {
        crate::cache::resource::Couplings::new(
            self.couplings
                .iter()
                .map(|c| (c.when.as_str(), c.drop.as_slice())),
        )
    }

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
        for (i, c) in self.couplings.iter().enumerate() {
            if let Err(e) = crate::cache::resource::Couplings::new([(c.when.as_str(), &[][..])]) {
                return Err(ConfigError::new(format!("cache.couplings[{i}].when"), e));
            }
            if let Err(e) =
                crate::cache::resource::Couplings::new([("/api/v2/x", c.drop.as_slice())])
            {
                return Err(ConfigError::new(format!("cache.couplings[{i}].drop"), e));
            }
        }
        Ok(())
    }
}
