//! `[[clients]]`: the apps allowed to call, by the SHA-256 of their token.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[[clients]]`: an app allowed to call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The app's name, in logs and as the Basic user name.
    pub name: String,
    /// Hex SHA-256 of the app's token.
    pub token_sha256: String,
}

/// Checks every entry: usable names, each once, and 64-hex-digit hashes.
pub fn validate(clients: &[ClientEntry]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, c) in clients.iter().enumerate() {
        if c.name.is_empty() || c.name.contains(':') || c.name.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("clients[{i}].name"),
                "must be non-empty, without ':' or control characters",
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(ConfigError::new(
                format!("clients[{i}].name"),
                format!("{:?} appears twice", c.name),
            ));
        }
        if c.token_sha256.len() != 64 || !c.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                format!("clients[{i}].token_sha256"),
                "must be 64 hex digits (the SHA-256 of the app's token)",
            ));
        }
    }
    Ok(())
}
