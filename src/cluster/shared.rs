//! The shared cache: GET answers every process of the cluster can serve. A local miss looks
//! here before spending budget; concurrent misses of one key across processes make one store
//! call: the first claims a lease (kept while its fetch runs), the others wait for its
//! answer, and one of them takes over when the lease ends without one. Entries keep their
//! TTL and stale lifetimes, are bounded by `cache.max_size` in all, and answers over
//! [`MAX_SHARED`] are not shared.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::changes::tag_key;
use super::{Arg, Cluster, bytes, int};
use crate::cache::{Entry, Key};

/// The largest answer shared; larger ones stay in each process's own cache.
pub const MAX_SHARED: usize = 1024 * 1024;
/// How long a lease lasts unless its holder renews it (so a holder that died is replaced
/// this soon).
pub const LEASE: Duration = Duration::from_secs(2);
/// After an answer that cannot be shared (not a 200, `no-store`, too large), the others fetch
/// on their own for this long.
const ALONE: Duration = Duration::from_secs(2);

/// An answer found in the shared cache.
#[derive(Debug, Clone)]
pub struct Found {
    /// The store's status.
    pub status: StatusCode,
    /// The stored headers (with the entry's `ETag`).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// How long it stays fresh (zero: stale).
    pub fresh: Duration,
    /// How long it may still be served stale after that.
    pub stale: Duration,
    /// Its age.
    pub age: Duration,
}

/// What a claim on a key found.
#[derive(Debug)]
pub enum Claim {
    /// A fresh answer.
    Found(Found),
    /// This process fetches: the lease is its own until it puts or releases it.
    Lead(Lease),
    /// Another process fetches; its lease has this long to go.
    Wait(Duration),
    /// Fetch on your own (the answer is not shared, or Redis is away).
    Alone,
}

/// The right to fetch a key for the whole cluster, renewed in the background while held.
#[derive(Debug)]
pub struct Lease {
    hash: String,
    token: String,
    gens: [i64; 3],
    tags: [String; 2],
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The name of a key in the shared cache: a digest of what makes it one answer.
pub fn hash(key: &Key) -> String {
    let mut h = Sha256::new();
    h.update(key.target.as_bytes());
    h.update([0, u8::from(key.xml), u8::from(key.gzip)]);
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Headers as one block (`name: value\r\n` each); values are bytes, never reinterpreted.
fn header_block(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn parse_block(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.windows(2).position(|w| w == b": ") else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 2..]),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

fn found(values: &[redis::Value]) -> Option<Found> {
    let ms = |i: usize| Duration::from_millis(int(values.get(i)).max(0) as u64);
    Some(Found {
        status: StatusCode::from_u16(int(values.get(1)) as u16).ok()?,
        headers: parse_block(&bytes(values.get(2))?),
        body: bytes(values.get(3))?,
        fresh: ms(4),
        stale: ms(5),
        age: ms(6),
    })
}

impl Cluster {
    fn cache_args<'a>(&'a self, op: &'a str) -> Vec<Arg<'a>> {
        vec![Arg::Str(self.keys.prefix()), Arg::Str(op)]
    }

    /// A usable answer for `key` (fresh or stale), without claiming anything.
    pub async fn peek(&self, key: &Key) -> Option<Found> {
        let h = hash(key);
        let mut args = self.cache_args("peek");
        args.push(Arg::Str(&h));
        let route = self.keys.key(&format!("c:{h}"));
        let values = self
            .eval(&self.scripts.cache, &[&route], &args)
            .await
            .ok()?;
        (int(values.first()) == 1).then(|| found(&values)).flatten()
    }

    /// Claims `key`: a fresh answer, or the lease to fetch it, or the news that another
    /// process is fetching it.
    pub async fn claim(self: &Arc<Self>, key: &Key, keep_for: Duration) -> Claim {
        let h = hash(key);
        let token = format!("{}:{}", self.instance, super::ledger::token());
        let tags = crate::cache::tags_of(key).map(|t| tag_key(&t));
        let lease_ms = LEASE.as_millis().to_string();
        let mut args = self.cache_args("claim");
        args.extend([
            Arg::Str(&h),
            Arg::Str(&token),
            Arg::Str(&lease_ms),
            Arg::Str(&tags[0]),
            Arg::Str(&tags[1]),
        ]);
        let route = self.keys.key(&format!("c:{h}"));
        let Ok(values) = self.eval(&self.scripts.cache, &[&route], &args).await else {
            return Claim::Alone;
        };
        match int(values.first()) {
            1 => found(&values).map_or(Claim::Alone, Claim::Found),
            2 => {
                let gens = [int(values.get(1)), int(values.get(2)), int(values.get(3))];
                let renewal = tokio::spawn(renew(
                    Arc::downgrade(self),
                    h.clone(),
                    token.clone(),
                    keep_for,
                ));
                Claim::Lead(Lease {
                    hash: h,
                    token,
                    gens,
                    tags,
                    renewal,
                })
            }
            3 => Claim::Wait(Duration::from_millis(int(values.get(1)).max(0) as u64)),
            _ => Claim::Alone,
        }
    }

    /// Stores the entry fetched under `lease` (unless a drop came after the fetch began, or
    /// it is too large) and ends the lease; true when stored.
    pub async fn put(&self, lease: Lease, entry: &Entry, max_bytes: u64) -> bool {
        lease.renewal.abort();
        if entry.body.len() > MAX_SHARED {
            self.release(lease, Duration::from_secs(60)).await;
            return false;
        }
        let now = tokio::time::Instant::now();
        let fresh = entry.fresh_until.saturating_duration_since(now);
        let stale = entry
            .stale_until
            .saturating_duration_since(entry.fresh_until);
        let headers = header_block(&entry.headers);
        let weight = (entry.body.len() + headers.len() + 128) as i64;
        let status = entry.status.as_u16().to_string();
        let mut args = self.cache_args("put");
        args.extend([
            Arg::Str(&lease.hash),
            Arg::Str(&lease.token),
            Arg::Str(&status),
            Arg::Bytes(&headers),
            Arg::Bytes(&entry.body),
            Arg::Int(fresh.as_millis() as i64),
            Arg::Int(stale.as_millis() as i64),
            Arg::Int(weight),
            Arg::Int(max_bytes.min(i64::MAX as u64) as i64),
            Arg::Int(lease.gens[0]),
            Arg::Int(lease.gens[1]),
            Arg::Int(lease.gens[2]),
            Arg::Str(&lease.tags[0]),
            Arg::Str(&lease.tags[1]),
        ]);
        let route = self.keys.key(&format!("c:{}", lease.hash));
        match self.eval(&self.scripts.cache, &[&route], &args).await {
            Ok(values) => int(values.first()) == 1,
            Err(_) => false,
        }
    }

    /// Ends a lease without an entry: the others take over at once, or (`alone` > 0) fetch on
    /// their own for that long.
    pub async fn release(&self, lease: Lease, alone: Duration) {
        lease.renewal.abort();
        let mut args = self.cache_args("release");
        args.extend([
            Arg::Str(&lease.hash),
            Arg::Str(&lease.token),
            Arg::Int(alone.as_millis() as i64),
        ]);
        let route = self.keys.key(&format!("c:{}", lease.hash));
        let _ = self.eval(&self.scripts.cache, &[&route], &args).await;
    }

    /// Ends a lease for an answer that is not shared (the others fetch on their own).
    pub async fn release_unshared(&self, lease: Lease) {
        self.release(lease, ALONE).await;
    }
}

/// Keeps a lease alive while its fetch runs, at most `keep_for`.
async fn renew(cluster: std::sync::Weak<Cluster>, hash: String, token: String, keep_for: Duration) {
    let until = tokio::time::Instant::now() + keep_for;
    let lease_ms = LEASE.as_millis().to_string();
    loop {
        tokio::time::sleep(LEASE / 3).await;
        if tokio::time::Instant::now() >= until {
            return;
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let mut args = cluster.cache_args("renew");
        args.extend([Arg::Str(&hash), Arg::Str(&token), Arg::Str(&lease_ms)]);
        let route = cluster.keys.key(&format!("c:{hash}"));
        match cluster.eval(&cluster.scripts.cache, &[&route], &args).await {
            Ok(values) if int(values.first()) == 1 => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_round_trip_bytes() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b: c"));
        h.insert("x-bytes", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let back = parse_block(&header_block(&h));
        assert_eq!(back, h);
    }

    #[test]
    fn keys_name_variants_apart() {
        let k = |target: &str, xml, gzip| Key {
            target: target.into(),
            xml,
            gzip,
        };
        let a = hash(&k("/api/v2/products", false, false));
        assert_eq!(a.len(), 32);
        assert_ne!(a, hash(&k("/api/v2/products", true, false)));
        assert_ne!(a, hash(&k("/api/v2/products", false, true)));
        assert_ne!(a, hash(&k("/api/v2/products?page=2", false, false)));
    }
}
