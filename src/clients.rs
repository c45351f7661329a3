//! App credentials (`[[clients]]`): which apps may call, checked by the SHA-256 of their token.
//! Tokens are never stored or logged in clear.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::config::ClientEntry;
use crate::dialect::X_AUTH_TOKEN;
use crate::error::CallError;

/// The configured apps. Empty means every caller is let in anonymously.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    entries: Vec<(Arc<str>, [u8; 32])>,
}

impl Clients {
    /// Builds the table from validated settings (hashes are 64 hex digits).
    pub fn new(entries: &[ClientEntry]) -> Clients {
        Clients {
            entries: entries
                .iter()
                .filter_map(|e| Some((e.name.as_str().into(), decode_hex(&e.token_sha256)?)))
                .collect(),
        }
    }

    /// The configured names.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// True when no `[[clients]]` are configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the app the request authenticates as; `None` when no clients are
    /// configured. Accepts `X-Auth-Token: token` or `Authorization: Basic name:token`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<str>>, CallError> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        const BAD: CallError =
            CallError::Unauthorized("the credentials supplied to the proxy are invalid");
        if let Some(token) = headers.get(X_AUTH_TOKEN) {
            let digest = sha256(token.as_bytes());
            // Compare against every entry so the time taken does not say which one matched.
            let mut found = None;
            for (name, expected) in &self.entries {
                if equal(&digest, expected) {
                    found = Some(name.clone());
                }
            }
            return found.map(Some).ok_or(BAD);
        }
        let Some(auth) = headers.get(AUTHORIZATION) else {
            return Err(CallError::Unauthorized(
                "no credentials were supplied to the proxy",
            ));
        };
        let (name, token) = parse_basic(auth.as_bytes()).ok_or(BAD)?;
        let digest = sha256(token.as_bytes());
        self.entries
            .iter()
            .find(|(n, expected)| **n == name && equal(&digest, expected))
            .map(|(n, _)| Some(n.clone()))
            .ok_or(BAD)
    }
}

/// Hex SHA-256 of a token, as written in `token_sha256`.
pub fn token_sha256(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Constant-time equality of two digests.
fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))?;
    let decoded = BASE64.decode(encoded.trim_ascii()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, token) = text.split_once(':')?;
    Some((name.to_string(), token.to_string()))
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn clients() -> Clients {
        Clients::new(&[
            ClientEntry {
                name: "erp".into(),
                token_sha256: token_sha256("erp-token"),
            },
            ClientEntry {
                name: "shop".into(),
                token_sha256: token_sha256("shop-token"),
            },
        ])
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
    }

    #[test]
    fn both_forms_are_accepted() {
        let c = clients();
        assert_eq!(
            c.authenticate(&headers("x-auth-token", "shop-token"))
                .unwrap()
                .as_deref(),
            Some("shop")
        );
        assert_eq!(
            c.authenticate(&headers("authorization", &basic("erp", "erp-token")))
                .unwrap()
                .as_deref(),
            Some("erp")
        );
    }

    #[test]
    fn wrong_or_missing_credentials_are_refused() {
        let c = clients();
        assert!(c.authenticate(&HeaderMap::new()).is_err());
        assert!(c.authenticate(&headers("x-auth-token", "nope")).is_err());
        // The token must belong to the named entry.
        assert!(
            c.authenticate(&headers("authorization", &basic("erp", "shop-token")))
                .is_err()
        );
        assert!(
            c.authenticate(&headers("authorization", "Bearer erp-token"))
                .is_err()
        );
    }

    #[test]
    fn no_clients_means_anonymous() {
        assert_eq!(
            Clients::default().authenticate(&HeaderMap::new()).unwrap(),
            None
        );
    }
}
