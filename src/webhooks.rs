//! Store webhooks: changes made outside the proxy (the control panel, other integrations)
//! arrive as the store's webhook deliveries at `POST /webhooks/bigcommerce`, are verified
//! (Standard Webhooks signature, or a custom header's exact value), and drop from the cache
//! what the change touches, as a write to that resource through the proxy would.
//!
//! A delivery is refused (nothing dropped, not remembered as seen) when it is unverified or
//! too old (401), not the store's payload (400) or over 64 KiB (413); one seen before (same
//! `webhook-id`, or same payload `hash`) is accepted and ignored. Each delivery is one
//! `webhook` log event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use sha2::Sha256;

use crate::cache::Cache;
use crate::cache::resource::{Collection, Couplings, Drops};
use crate::config;

/// Where the store delivers.
pub const PATH: &str = "/webhooks/bigcommerce";
/// Largest delivery accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest a delivery's body may take to arrive.
const READ_TIME: Duration = Duration::from_secs(10);
/// Deliveries remembered as seen, at most.
const SEEN: u64 = 100_000;

/// How a delivery ended, in the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified, new: its change was applied.
    Accepted,
    /// Verified, seen before: nothing done twice.
    Duplicate,
    /// No or a wrong signature or header.
    Unverified,
    /// A signature timestamp further than `webhooks.max_age` from now.
    Stale,
    /// Not the store's payload.
    Malformed,
    /// Over 64 KiB.
    TooLarge,
}

impl Verdict {
    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Unverified => "unverified",
            Verdict::Stale => "stale",
            Verdict::Malformed => "malformed",
            Verdict::TooLarge => "too_large",
        }
    }

    /// Every verdict.
    pub const ALL: [Verdict; 6] = [
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Unverified,
        Verdict::Stale,
        Verdict::Malformed,
        Verdict::TooLarge,
    ];

    fn status(self) -> StatusCode {
        match self {
            Verdict::Accepted | Verdict::Duplicate => StatusCode::OK,
            Verdict::Unverified | Verdict::Stale => StatusCode::UNAUTHORIZED,
            Verdict::Malformed => StatusCode::BAD_REQUEST,
            Verdict::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// How deliveries are verified.
enum Verify {
    /// Standard Webhooks: HMAC-SHA256 of `id.timestamp.body` with this key.
    Signature(Vec<u8>),
    /// A header and its exact value.
    Header(http::HeaderName, Vec<u8>),
}

/// The webhook endpoint: verifies deliveries and drops what they name.
pub struct Webhooks {
    verify: Verify,
    max_age: Duration,
    seen: moka::sync::Cache<String, ()>,
    cache: Arc<Cache>,
    counts: [AtomicU64; 6],
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// What a delivery led to, for the answer and the log.
#[derive(Debug)]
pub struct Delivery {
    /// The verdict.
    pub verdict: Verdict,
    /// The payload's scope, when it could be read.
    pub scope: Option<String>,
    /// The payload's `data.id`, when it could be read.
    pub id: Option<String>,
    /// Cached answers dropped.
    pub dropped: usize,
    /// Why it was refused.
    pub why: Option<&'static str>,
}

impl Webhooks {
    /// The endpoint for a validated `[webhooks]` section; `None` when deliveries cannot be
    /// verified (the section is off).
    pub fn new(settings: &config::Webhooks, cache: Arc<Cache>) -> Option<Webhooks> {
        let verify = match (settings.signing_key(), settings.header_pair()) {
            (Some(key), _) => Verify::Signature(key),
            (None, Some((name, value))) => Verify::Header(
                http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                value.as_bytes().to_vec(),
            ),
            (None, None) => return None,
        };
        Some(Webhooks {
            verify,
            max_age: settings.max_age,
            seen: moka::sync::Cache::builder()
                .max_capacity(SEEN)
                .time_to_live(Duration::from_secs(24 * 3600).max(settings.max_age * 2))
                .build(),
            cache,
            counts: Default::default(),
        })
    }

    /// Deliveries by verdict, in [`Verdict::ALL`] order.
    pub fn counts(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Handles one delivery: its status and JSON answer. Logs one `webhook` event.
    pub async fn deliver(&self, headers: &HeaderMap, body: Incoming) -> (StatusCode, Value) {
        let delivery = self.judge(headers, body).await;
        let index = Verdict::ALL
            .iter()
            .position(|v| *v == delivery.verdict)
            .unwrap_or(0);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let verdict = delivery.verdict.as_str();
        let accepted = delivery.verdict.status().is_success();
        if accepted {
            tracing::info!(
                verdict,
                scope = delivery.scope.as_deref(),
                id = delivery.id.as_deref(),
                dropped = delivery.dropped,
                "webhook"
            );
        } else {
            tracing::warn!(
                verdict,
                scope = delivery.scope.as_deref(),
                id = delivery.id.as_deref(),
                dropped = delivery.dropped,
                error = delivery.why,
                "webhook"
            );
        }
        let answer = serde_json::json!({
            "verdict": verdict,
            "dropped": delivery.dropped,
            "error": delivery.why,
        });
        (delivery.verdict.status(), answer)
    }

    async fn judge(&self, headers: &HeaderMap, body: Incoming) -> Delivery {
        let refused = |verdict, why| Delivery {
            verdict,
            scope: None,
            id: None,
            dropped: 0,
            why: Some(why),
        };
        let body =
            match tokio::time::timeout(READ_TIME, Limited::new(body, MAX_BODY).collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e))
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return refused(Verdict::TooLarge, "the delivery is over 64 KiB");
                }
                _ => return refused(Verdict::Malformed, "the delivery's body could not be read"),
            };
        let delivery_id = match self.verified(headers, &body) {
            Ok(id) => id,
            Err((verdict, why)) => return refused(verdict, why),
        };
        let Some(payload) = Payload::read(&body) else {
            return refused(
                Verdict::Malformed,
                "not the store's payload (JSON with scope and data.id)",
            );
        };
        let seen_as = delivery_id
            .or_else(|| payload.hash.clone())
            .unwrap_or_else(|| format!("{}:{}:{}", payload.scope, payload.id, payload.created_at));
        let mut delivery = Delivery {
            verdict: Verdict::Duplicate,
            scope: Some(payload.scope.clone()),
            id: Some(payload.id.clone()),
            dropped: 0,
            why: None,
        };
        if !self.seen.entry(seen_as).or_insert(()).is_fresh() {
            return delivery;
        }
        delivery.verdict = Verdict::Accepted;
        if let Some(drops) = payload.drops(&self.cache.couplings()) {
            delivery.dropped = self.cache.change(&drops).await;
        }
        delivery
    }

    /// Checks a delivery's signature (and age) or header; its `webhook-id`, if any.
    fn verified(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Option<String>, (Verdict, &'static str)> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match &self.verify {
            Verify::Header(name, expected) => {
                let given = headers.get(name).map_or(&b""[..], |v| v.as_bytes());
                if !same(given, expected) {
                    return Err((
                        Verdict::Unverified,
                        "the webhook header is missing or wrong",
                    ));
                }
                Ok(text("webhook-id").map(str::to_string))
            }
            Verify::Signature(key) => {
                let (Some(id), Some(timestamp), Some(signatures)) = (
                    text("webhook-id"),
                    text("webhook-timestamp"),
                    text("webhook-signature"),
                ) else {
                    return Err((
                        Verdict::Unverified,
                        "webhook-id, webhook-timestamp and webhook-signature are required",
                    ));
                };
                let Ok(at) = timestamp.trim().parse::<i64>() else {
                    return Err((Verdict::Unverified, "webhook-timestamp is not a number"));
                };
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if now.abs_diff(at) > self.max_age.as_secs() {
                    return Err((
                        Verdict::Stale,
                        "webhook-timestamp is further from now than webhooks.max_age",
                    ));
                }
                let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
                let valid = signatures.split_whitespace().any(|candidate| {
                    let Some(encoded) = candidate.strip_prefix("v1,") else {
                        return false;
                    };
                    let Ok(signature) = BASE64.decode(encoded) else {
                        return false;
                    };
                    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
                        return false;
                    };
                    mac.update(&signed);
                    mac.verify_slice(&signature).is_ok()
                });
                if !valid {
                    return Err((Verdict::Unverified, "no webhook-signature matches"));
                }
                Ok(Some(id.to_string()))
            }
        }
    }
}

/// Constant-time equality (the length may show).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the store's payload says.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// `store/product/updated` and the like.
    pub scope: String,
    /// `data.id`.
    pub id: String,
    /// `data`, whole (for the ids some scopes carry deeper).
    pub data: Value,
    /// The store's hash of the payload.
    pub hash: Option<String>,
    /// When the change happened.
    pub created_at: String,
}

impl Payload {
    /// Reads the store's payload: a JSON object with a `scope` and a `data.id`.
    pub fn read(body: &[u8]) -> Option<Payload> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let scope = value.get("scope")?.as_str()?.to_string();
        let data = value.get("data")?.clone();
        let id = id_text(data.get("id")?)?;
        Some(Payload {
            scope,
            id,
            data,
            hash: value
                .get("hash")
                .and_then(Value::as_str)
                .map(str::to_string),
            created_at: value
                .get("created_at")
                .map(Value::to_string)
                .unwrap_or_default(),
        })
    }

    /// What the change drops, as a write to the resource would (couplings included);
    /// `None` for a scope the proxy does not know (nothing is dropped).
    pub fn drops(&self, couplings: &Couplings) -> Option<Drops> {
        let mut parts = self.scope.split('/');
        if parts.next() != Some("store") {
            return None;
        }
        let kind = parts.next()?;
        let sub = parts.next();
        let member = |collection: &str, id: &str| {
            Some(Drops::member(&Collection::from(collection), id, couplings))
        };
        let nested = |path: &[&str]| {
            path.iter()
                .try_fold(&self.data, |v, key| v.get(key))
                .and_then(id_text)
        };
        match (kind, sub) {
            ("product", _) => member("products", &self.id),
            ("sku", _) => match nested(&["sku", "product_id"])
                .or_else(|| nested(&["inventory", "product_id"]))
            {
                Some(product) => member("products", &product),
                None => Some(Drops::collection(&Collection::from("products"), couplings)),
            },
            ("category", _) => member("categories", &self.id),
            ("brand", _) => member("brands", &self.id),
            ("customer", Some("address")) => match nested(&["address", "customer_id"]) {
                Some(customer) => member("customers", &customer),
                None => Some(Drops::collection(&Collection::from("customers"), couplings)),
            },
            ("customer", _) => member("customers", &self.id),
            ("order", _) => member("orders", &self.id),
            ("shipment", _) => nested(&["orderId"]).and_then(|order| member("orders", &order)),
            _ => None,
        }
    }
}

/// An id as text: a number or a non-empty string.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::resource::Tag;

    fn payload(scope: &str, data: Value) -> Payload {
        let body = serde_json::json!({"scope": scope, "store_id": "1", "data": data, "hash": "h", "created_at": 1});
        Payload::read(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn scopes_name_what_changed() {
        let c = Couplings::new([]).unwrap();
        let product = payload(
            "store/product/updated",
            serde_json::json!({"type": "product", "id": 42}),
        );
        let drops = product.drops(&c).unwrap();
        assert!(
            drops
                .tags
                .contains(&Tag::Member("products".into(), "42".into()))
        );
        let inventory = payload(
            "store/product/inventory/order/updated",
            serde_json::json!({"id": 42}),
        );
        assert_eq!(inventory.drops(&c), Some(drops));
        let sku = payload(
            "store/sku/updated",
            serde_json::json!({"id": 7, "sku": {"product_id": 42}}),
        );
        assert!(
            sku.drops(&c)
                .unwrap()
                .tags
                .contains(&Tag::Member("products".into(), "42".into()))
        );
        let bare_sku = payload("store/sku/created", serde_json::json!({"id": 7}));
        assert_eq!(
            bare_sku.drops(&c).unwrap().tags,
            vec![Tag::All("products".into())]
        );
        let order = payload("store/order/statusUpdated", serde_json::json!({"id": 9}));
        let drops = order.drops(&c).unwrap();
        assert!(
            drops
                .tags
                .contains(&Tag::Member("orders".into(), "9".into()))
        );
        assert!(
            drops.tags.contains(&Tag::All("products".into())),
            "the order coupling"
        );
        assert_eq!(
            payload("store/app/uninstalled", serde_json::json!({"id": 1})).drops(&c),
            None
        );
        assert!(Payload::read(b"{\"scope\":\"store/product/updated\",\"data\":{}}").is_none());
        assert!(Payload::read(b"not json").is_none());
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
