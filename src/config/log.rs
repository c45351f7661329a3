//! `[log]`: the log's format, level and summary interval.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{duration, positive};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

impl Log {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| {
            ConfigError::new(
                "log.level",
                format!("{:?} is not a level or filter: {e}", self.level),
            )
        })?;
        positive("log.summary_every", self.summary_every)
    }
}

impl<'de> serde::Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::values::one_of(d, &[("json", LogFormat::Json), ("text", LogFormat::Text)])
    }
}
