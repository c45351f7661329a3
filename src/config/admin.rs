//! `[admin]`: the health, readiness, metrics and status listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::values::opt_addr;

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
