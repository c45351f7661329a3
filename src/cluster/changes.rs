//! Invalidations across the cluster: a change this process makes (a write, a webhook, a
//! purge) is, in one script, dropped from the shared cache (its tags' generations counted up,
//! so a fetch under way anywhere is not stored) and published to every process, which drops
//! it from its local cache. Changes made while Redis is away wait, and go out when it is back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::{Arg, Cluster, Down, Keys, int};
use crate::cache::{Drops, Tag};

/// Changes kept while Redis is away; beyond this they become one drop of everything.
const MAX_PENDING: usize = 256;

/// The cluster's invalidation channel and what went through it.
#[derive(Debug)]
pub struct Changes {
    channel: String,
    instance: String,
    pending: Mutex<Vec<Drops>>,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Changes {
    /// The channel of the cluster with `keys`, for `instance`.
    pub fn new(keys: &Keys, instance: &str) -> Changes {
        Changes {
            channel: keys.key("changes"),
            instance: instance.to_string(),
            pending: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Invalidations published.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Invalidations received from other processes.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Drops>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops `drops` from the shared cache and tells every other process; kept for later when
    /// Redis is away. Returns the shared entries dropped.
    pub async fn spread(&self, cluster: &Cluster, drops: &Drops) -> u64 {
        if drops.is_empty() {
            return 0;
        }
        match self.send(cluster, drops).await {
            Ok(dropped) => dropped,
            Err(_) => {
                let mut pending = self.pending();
                if pending.len() >= MAX_PENDING {
                    pending.clear();
                    pending.push(Drops::everything());
                } else if !pending.contains(drops) {
                    pending.push(drops.clone());
                }
                0
            }
        }
    }

    /// Sends the changes kept while Redis was away.
    pub(super) async fn flush(&self, cluster: &Cluster) -> Result<(), Down> {
        let pending = std::mem::take(&mut *self.pending());
        for (i, drops) in pending.iter().enumerate() {
            if let Err(down) = self.send(cluster, drops).await {
                self.pending().extend(pending[i..].iter().cloned());
                return Err(down);
            }
        }
        Ok(())
    }

    async fn send(&self, cluster: &Cluster, drops: &Drops) -> Result<u64, Down> {
        let message = json!({
            "v": 1,
            "from": self.instance,
            "everything": drops.everything,
            "tags": drops.tags.iter().map(tag_json).collect::<Vec<_>>(),
        })
        .to_string();
        let tags: Vec<String> = drops.tags.iter().map(tag_key).collect();
        let keys = cluster.keys();
        let mut args = vec![
            Arg::Str(keys.prefix()),
            Arg::Str("drop"),
            Arg::Str(&self.channel),
            Arg::Str(&message),
            Arg::Str(if drops.everything { "1" } else { "0" }),
        ];
        args.extend(tags.iter().map(|t| Arg::Str(t)));
        let values = cluster
            .eval(&cluster.scripts.cache, &[&keys.key("changes")], &args)
            .await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(int(values.first()).max(0) as u64)
    }

    /// Tells the other processes that a pause ended (their queues wake at once).
    pub(super) async fn resumed(&self, cluster: &Cluster) {
        let message = json!({"v": 1, "from": self.instance, "resumed": true}).to_string();
        let keys = cluster.keys();
        let args = [
            Arg::Str(keys.prefix()),
            Arg::Str("publish"),
            Arg::Str(&self.channel),
            Arg::Str(&message),
        ];
        let _ = cluster
            .eval(&cluster.scripts.cache, &[&keys.key("changes")], &args)
            .await;
    }

    /// Applies a message from another process: its drops to the local cache, or a wake-up
    /// for the queue. Messages from this process, of another format or malformed are ignored.
    pub(super) async fn receive(&self, cluster: &Cluster, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        if message["v"] != 1 || message["from"] == self.instance.as_str() {
            return;
        }
        if message["resumed"] == true {
            if let Some(budget) = cluster.budget() {
                budget.budget_freed();
            }
            return;
        }
        let Some(drops) = drops_of(&message) else {
            tracing::warn!("cluster.bad_message: an invalidation that does not parse was ignored");
            return;
        };
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(cache) = cluster.local_cache() {
            let entries = cache.apply(&drops).await;
            tracing::debug!(from = %message["from"], entries, "cluster.invalidation");
        }
    }
}

/// A tag as a key suffix: `a/products`, `l/products`, `m/products/5` (no path segment holds a
/// `/`).
pub fn tag_key(tag: &Tag) -> String {
    match tag {
        Tag::All(c) => format!("a/{c}"),
        Tag::Listing(c) => format!("l/{c}"),
        Tag::Member(c, id) => format!("m/{c}/{id}"),
    }
}

fn tag_json(tag: &Tag) -> Value {
    match tag {
        Tag::All(c) => json!(["all", &**c]),
        Tag::Listing(c) => json!(["listing", &**c]),
        Tag::Member(c, id) => json!(["member", &**c, &**id]),
    }
}

/// The drops a message carries.
fn drops_of(message: &Value) -> Option<Drops> {
    let everything = message["everything"].as_bool()?;
    let mut tags = Vec::new();
    for tag in message["tags"].as_array()? {
        let parts: Vec<&str> = tag.as_array()?.iter().filter_map(Value::as_str).collect();
        tags.push(match parts.as_slice() {
            ["all", c] => Tag::All((*c).into()),
            ["listing", c] => Tag::Listing((*c).into()),
            ["member", c, id] => Tag::Member((*c).into(), (*id).into()),
            _ => return None,
        });
    }
    Some(Drops { everything, tags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Couplings;

    #[test]
    fn drops_survive_the_message() {
        let couplings = Couplings::new([]).unwrap();
        let drops = crate::cache::resource::after_write(
            &http::Method::PUT,
            "/stores/h/v3/catalog/products/5",
            &couplings,
        );
        let message = json!({
            "v": 1,
            "from": "a",
            "everything": drops.everything,
            "tags": drops.tags.iter().map(tag_json).collect::<Vec<_>>(),
        });
        assert_eq!(drops_of(&message), Some(drops));
        assert_eq!(
            drops_of(&json!({"everything": true, "tags": [["x"]]})),
            None
        );
        assert_eq!(
            tag_key(&Tag::Member("products".into(), "5".into())),
            "m/products/5"
        );
    }
}
