//! A string that must never reach a log line, an error message or `bcproxy check` output.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret value (the store's API key, an app's token). `Debug`, `Display` and `Serialize`
/// print [`REDACTED`]; only [`Secret::expose`] gives the value, and only the code that must
/// put it on the wire calls it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only to put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the value holds a control character (a stray newline, say), which no header
    /// can carry.
    pub fn has_control_chars(&self) -> bool {
        self.0.chars().any(char::is_control)
    }

    /// The first 12 hex digits of the value's SHA-256: enough to tell two secrets apart (a
    /// rotated key, state saved for another credential), useless for recovering either.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.fingerprint().len(), 12);
        assert!(!s.fingerprint().contains("hunter2"));
        assert_ne!(s.fingerprint(), Secret::new("hunter3").fingerprint());
    }
}
