//! The simulated store's webhooks: after every change made through its API (from the proxy or
//! directly, as the control panel would), it delivers the store's payload to a configured URL,
//! signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; a `whsec_` secret is base64). Deliveries
//! are fire-and-forget, like the real store's first try.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

/// Where and how deliveries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL deliveries are POSTed to.
    pub url: String,
    /// The signing secret (`whsec_…` for base64).
    pub secret: String,
}

/// The sender.
#[derive(Debug)]
pub struct Hooks {
    target: Mutex<Option<Target>>,
    client: Client<HttpConnector, Full<Bytes>>,
    sent: AtomicU64,
    store_hash: String,
}

impl Hooks {
    /// A sender for the store `store_hash`, delivering to `target` if set.
    pub fn new(target: Option<Target>, store_hash: &str) -> Hooks {
        Hooks {
            target: Mutex::new(target),
            client: Client::builder(TokioExecutor::new()).build_http(),
            sent: AtomicU64::new(0),
            store_hash: store_hash.into(),
        }
    }

    /// Changes where deliveries go (`None`: nowhere).
    pub fn set(&self, target: Option<Target>) {
        *self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// Deliveries made so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Notes a change made through the API: `resource` is the path below the API's base
    /// (`products/5`, `catalog/products/5/variants`), `created` the id a POST made.
    pub fn changed(&self, method: &Method, resource: &str, created: Option<&str>) {
        let Some(target) = self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let Some((scope, data)) = payload_of(method, resource, created) else {
            return;
        };
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("msg_sim_{n:08x}_{now:x}");
        let body = serde_json::json!({
            "scope": scope,
            "store_id": "1001",
            "data": data,
            "hash": format!("{:x}", now.wrapping_mul(2654435761) ^ n),
            "created_at": now,
            "producer": format!("stores/{}", self.store_hash),
        })
        .to_string();
        let key = match target.secret.strip_prefix("whsec_") {
            Some(encoded) => BASE64.decode(encoded).unwrap_or_default(),
            None => target.secret.clone().into_bytes(),
        };
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
            return;
        };
        mac.update(format!("{id}.{now}.{body}").as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        let Ok(req) = Request::post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", format!("v1,{signature}"))
            .body(Full::new(Bytes::from(body)))
        else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            match client.request(req).await {
                Ok(response) => {
                    tracing::debug!(status = response.status().as_u16(), id, "sim.webhook")
                }
                Err(e) => tracing::debug!(error = %e, id, "sim.webhook failed"),
            }
        });
    }
}

/// The store's scope and `data` for a change to `resource`; `None` for what it sends no
/// webhook about.
fn payload_of(
    method: &Method,
    resource: &str,
    created: Option<&str>,
) -> Option<(String, serde_json::Value)> {
    let resource = resource
        .split('?')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json")
        .trim_end_matches(".xml");
    let mut segments = resource.split('/').filter(|s| !s.is_empty());
    let mut collection = segments.next()?;
    if collection == "catalog" {
        collection = segments.next()?;
    }
    let kind = match collection {
        "products" => "product",
        "categories" => "category",
        "brands" => "brand",
        "customers" => "customer",
        "orders" => "order",
        _ => return None,
    };
    let id = segments.next().map(str::to_string);
    let under = segments.next().is_some();
    let (event, id) = match (method.as_str(), id) {
        ("POST", None) => ("created", created?.to_string()),
        (_, None) => return None, // a bulk change: the real store sends one per resource
        (_, Some(id)) if under => ("updated", id),
        ("DELETE", Some(id)) => ("deleted", id),
        (_, Some(id)) => ("updated", id),
    };
    let id_value = id.parse::<u64>().map_or_else(
        |_| serde_json::Value::from(id.clone()),
        serde_json::Value::from,
    );
    Some((
        format!("store/{kind}/{event}"),
        serde_json::json!({ "type": kind, "id": id_value }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_the_stores_scopes() {
        let (scope, data) = payload_of(&Method::PUT, "products/5.json", None).unwrap();
        assert_eq!(scope, "store/product/updated");
        assert_eq!(data["id"], 5);
        let (scope, data) = payload_of(&Method::POST, "catalog/products", Some("61")).unwrap();
        assert_eq!(
            (scope.as_str(), data["id"].as_u64()),
            ("store/product/created", Some(61))
        );
        let (scope, _) = payload_of(&Method::POST, "products/5/skus", None).unwrap();
        assert_eq!(scope, "store/product/updated");
        assert_eq!(
            payload_of(&Method::DELETE, "orders/9", None).unwrap().0,
            "store/order/deleted"
        );
        assert!(payload_of(&Method::PUT, "time", None).is_none());
        assert!(payload_of(&Method::DELETE, "products", None).is_none());
    }
}
