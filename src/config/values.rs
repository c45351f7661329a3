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
/// Reads `ip:port`, saying what is wrong with anything else (a host name, a port out of
/// range, no port) and echoing the value.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port: write ip:port, such as \"127.0.0.1:8080\""
        ));
    };
    let why = match port.parse::<u32>() {
        Err(_) => format!("its port {port:?} is not a number"),
        Ok(p) if p > 65535 => format!("its port {p} is above 65535"),
        Ok(_) if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') => format!(
            "{host:?} is not an IP address (host names are not resolved here): use \"127.0.0.1\" for loopback or \"0.0.0.0\" for every interface"
        ),
        Ok(_) => "IPv6 addresses are written in brackets, such as \"[::1]:8080\"".to_string(),
    };
    Err(format!("{s:?} is not an ip:port address: {why}"))
}

/// `ip:port` with [`parse_addr`]'s messages.
pub(crate) mod addr {
    use super::*;

    pub fn serialize<S: Serializer>(v: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        parse_addr(s.trim()).map_err(serde::de::Error::custom)
    }
}

/// Reads one of a fixed set of names (case-insensitively: `"Basic"` is `basic`), or says which
/// names are valid.
pub(crate) fn one_of<'de, D, T: Copy>(d: D, choices: &[(&str, T)]) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            serde::de::Error::custom(format!("{s:?} is not valid: use {}", names.join(" or ")))
        })
}

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
        parse_addr(s.trim())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod addr_tests {
    use super::parse_addr;

    #[test]
    fn addresses_say_what_is_wrong_and_echo_the_value() {
        assert_eq!(parse_addr("[::1]:8080").unwrap().port(), 8080);
        assert_eq!(parse_addr("0.0.0.0:0").unwrap().port(), 0);
        let wrong = |s: &str| parse_addr(s).unwrap_err();
        assert!(wrong("127.0.0.1:99999").ends_with("its port 99999 is above 65535"));
        assert!(wrong("127.0.0.1:http").contains("its port \"http\" is not a number"));
        assert!(wrong("localhost:80").contains("\"localhost\" is not an IP address"));
        assert!(wrong("::1:80").contains("written in brackets"));
        assert!(wrong("8080").contains("has no port"));
        assert!(wrong("nonsense").starts_with("\"nonsense\""));
    }
}
