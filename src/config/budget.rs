//! `[budget]`: the store's request budget and how calls wait for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::{at_least_one, duration, opt_path, positive};
use crate::dialect::Dialect;

/// `[budget]`.
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

impl Budget {
    /// Checks the section.
    pub fn validate(&self, files: bool) -> Result<(), ConfigError> {
        at_least_one("budget.limit", self.limit)?;
        positive("budget.window", self.window)?;
        if self.reserve_writes >= self.limit {
            return Err(ConfigError::new(
                "budget.reserve_writes",
                format!("must be below budget.limit ({})", self.limit),
            ));
        }
        positive("budget.max_wait", self.max_wait)?;
        if let Some(dir) = self.state_file.as_deref().and_then(Path::parent)
            && files
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "budget.state_file",
                format!("its directory {} does not exist", dir.display()),
            ));
        }
        Ok(())
    }
}
