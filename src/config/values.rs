//! How values are written in the config: durations (`"30s"`), sizes (`"64MiB"`), optional
//! paths and addresses (`""` for none), and the checks most sections share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serializer};

use super::ConfigError;

pub(crate) fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than 0s"));
    }
    Ok(())
}

pub(crate) fn at_least_one(key: &str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(())
}

/// Durations as humans write them: `"250ms"`, `"30s"`, `"60m"`, `"24h"`.
pub(crate) mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"250ms\", \"30s\" or \"60m\" ({e})"
            ))
        })
    }
}

/// Sizes as humans write them: `"64MiB"`, `"512KiB"`, `"10MB"`.
pub(crate) mod size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        // Exact, so that `check` output loads back to the same value.
        let bytes = v.as_u64();
        let text = match bytes {
            0 => "0B".to_string(),
            b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
            b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
            b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
            b => format!("{b}B"),
        };
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<ByteSize>().map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a size like \"10MiB\" or \"512KiB\" ({e})"
            ))
        })
    }
}

/// `""` in the file means "not set" for optional paths.
pub(crate) mod opt_path {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            v.as_deref()
                .map(Path::to_string_lossy)
                .as_deref()
                .unwrap_or(""),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

/// `""` in the file means "disabled" for optional addresses.
pub(crate) mod opt_addr {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an ip:port address")))
    }
}
