//! The GET cache: answers held in memory (moka, weighed by body and header bytes), fresh for
//! their TTL and then stale for `cache.stale`, dropped per resource when something changes.
//!
//! - `key`: what makes two GETs the same answer;
//! - `resource`: what a path names (one name under every path form), the tags an answer
//!   depends on, and what a change drops (writes, couplings, webhooks, purges);
//! - `tracking`: the entries by tag and the drops, so a fetch that began before a drop is never
//!   stored after it;
//! - `policy`: TTLs (`cache.ttl`, built-in rules, `[[cache.rules]]`, `Cache-Control`);
//! - `flight`: coalescing of concurrent identical misses (the cache owns the flights).

pub mod flight;
pub mod key;
pub mod policy;
pub mod resource;
pub mod tracking;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use key::Key;
pub use policy::{Directive, Policy};
pub use resource::{Couplings, Drops, Tag};

use crate::call::Trip;
use crate::config;
use crate::dialect::BUDGET_HEADERS;
use crate::error::CallError;
use flight::{Flight, Flights};

/// The headers in allocations of their own: a parsed answer's values are slices of the
/// connection's read buffer, which an entry would otherwise keep alive whole for its lifetime.
fn own(headers: HeaderMap) -> HeaderMap {
    // Room in the table for the headers every hit adds (`Age`, `x-cache`, the request ids,
    // the budget): a hit's copy is then never re-hashed to grow (see `make_entry`).
    let mut owned = HeaderMap::with_capacity(headers.len() + 6);
    let mut last = None;
    for (name, value) in headers {
        let name = match name {
            Some(name) => {
                last = Some(name.clone());
                name
            }
            None => match &last {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    owned
}

/// Heap an entry takes beyond its body, headers and key: the entry itself and its places in
/// the store and the tag index (measured by `tests/cache_memory.rs`, which holds the count to
/// within 10% of the real heap).
const ENTRY_OVERHEAD: u64 = 1300;
/// Heap a stored header takes beyond its name and value (its slot in the header map).
const HEADER_OVERHEAD: usize = 96;

/// How the cache took part in an answer: the `x-cache` header and the access log's `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh entry.
    Hit,
    /// Fetched from the store (and stored when allowed).
    Miss,
    /// An entry past its TTL, served because the budget or the store could not give a fresh one.
    Stale,
    /// Shared with an identical call already at the store.
    Coalesced,
    /// From the cluster's shared cache (another process fetched it).
    Shared,
    /// The cache took no part.
    Bypass,
}

impl Outcome {
    /// The `x-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Coalesced => "COALESCED",
            Outcome::Shared => "SHARED",
            Outcome::Bypass => "BYPASS",
        }
    }
}

/// The store's answer to a cacheable GET, read whole, shared by every call on its flight.
#[derive(Debug)]
pub struct Fetched {
    /// The store's status.
    pub status: StatusCode,
    /// The store's headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The entry made of it, when it could be cached.
    pub entry: Option<Arc<Entry>>,
    /// The upstream side of the fetch.
    pub trip: Trip,
    /// True when it came from the cluster's shared cache, not the store.
    pub shared: bool,
}

/// What a flight lands for the calls that wait on it.
#[derive(Debug, Clone)]
pub enum Landed {
    /// The store's whole answer (and the entry made of it, when it could be cached).
    Fetched(Arc<Fetched>),
    /// No answer: the store or the budget failed the fetch.
    Failed(CallError),
    /// The answer was larger than one entry may be: each waiting call fetches on its own.
    TooLarge,
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The store's status (always 200 today).
    pub status: StatusCode,
    /// The store's headers, with an `ETag`, without the moment's budget headers.
    pub headers: HeaderMap,
    /// The body, exactly as the store sent it.
    pub body: Bytes,
    /// When it was fetched.
    pub stored: Instant,
    /// Fresh until then.
    pub fresh_until: Instant,
    /// Servable as stale until then.
    pub stale_until: Instant,
    /// The validator: the store's `ETag`, or the proxy's own strong one over the body.
    pub etag: HeaderValue,
    /// The store's `Last-Modified`, if it sent one.
    pub last_modified: Option<SystemTime>,
    /// What it depends on: its collection, and its member or the collection's listing.
    tags: [Tag; 2],
    /// The drop sequence when its fetch began.
    mark: u64,
    /// Set when a change dropped it (it is never served again).
    dropped: AtomicBool,
    weight: u32,
}

impl Entry {
    /// Seconds since the entry was fetched (the `Age` header).
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored).as_secs()
    }

    /// True when the app's `If-None-Match` (or, without one, `If-Modified-Since`) says it
    /// already has this answer.
    pub fn not_modified(&self, request: &HeaderMap) -> bool {
        if let Some(inm) = request.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
            let mine = strip_weak(self.etag.to_str().unwrap_or(""));
            return inm
                .split(',')
                .map(|t| t.trim())
                .any(|t| t == "*" || strip_weak(t) == mine);
        }
        let since = request
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        match (since, self.last_modified) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }
}

fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A fresh entry.
    Fresh(Arc<Entry>),
    /// An entry past its TTL but within `cache.stale`.
    Stale(Arc<Entry>),
    /// Nothing usable.
    Miss,
}

/// Running totals, for the summary event and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Fresh answers from the cache.
    pub hits: AtomicU64,
    /// Answers fetched from the store.
    pub misses: AtomicU64,
    /// Stale answers.
    pub stale: AtomicU64,
    /// Answers shared with an identical call.
    pub coalesced: AtomicU64,
    /// Answers from the cluster's shared cache.
    pub shared: AtomicU64,
    /// Answers the cache took no part in.
    pub bypass: AtomicU64,
}

impl Counters {
    /// Counts one answer.
    pub fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::Miss => &self.misses,
            Outcome::Stale => &self.stale,
            Outcome::Coalesced => &self.coalesced,
            Outcome::Shared => &self.shared,
            Outcome::Bypass => &self.bypass,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    flights: Arc<Flights<Landed>>,
    /// Bytes being copied from answers in flight, in KiB: at most one entry's worth in all.
    taps: Arc<tokio::sync::Semaphore>,
    policy: RwLock<Arc<Policy>>,
    couplings: RwLock<Arc<Couplings>>,
    tracking: Arc<tracking::Tracking>,
    enabled: bool,
    max_entry: u64,
    /// The cluster that changes spread to, when there is one.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Answers by outcome.
    pub counters: Counters,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

/// When an entry was stored, and until when it is fresh and servable.
struct Lifetimes {
    stored: Instant,
    fresh_until: Instant,
    stale_until: Instant,
}

/// The two tags an answer for `key` depends on (see [`resource::Named::tags`]).
pub fn tags_of(key: &Key) -> [Tag; 2] {
    resource::named(key.path()).map_or_else(
        || [Tag::All("/".into()), Tag::Listing("/".into())],
        |named| named.tags(),
    )
}

/// Per-entry lifetime: TTL plus stale.
struct Lifetime;

impl moka::Expiry<Key, Arc<Entry>> for Lifetime {
    fn expire_after_create(
        &self,
        _: &Key,
        entry: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.stale_until.saturating_duration_since(entry.stored))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.stale_until.saturating_duration_since(entry.stored))
    }
}

impl Cache {
    /// The cache for a validated `[cache]` section.
    pub fn new(c: &config::Cache) -> Cache {
        let max_size = c.max_size.as_u64();
        let tracking = Arc::new(tracking::Tracking::default());
        let forget = tracking.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_: &Key, entry: &Arc<Entry>| entry.weight)
            .expire_after(Lifetime)
            .eviction_listener(move |key: Arc<Key>, entry: Arc<Entry>, _| {
                forget.forget(&key, &entry)
            })
            .build();
        let max_entry = (max_size / 4).min(u32::MAX as u64);
        Cache {
            entries,
            flights: Arc::new(Flights::default()),
            taps: Arc::new(tokio::sync::Semaphore::new(
                max_entry.div_ceil(1024) as usize
            )),
            policy: RwLock::new(Arc::new(Policy::new(c.ttl, c.stale, &c.rules))),
            couplings: RwLock::new(Arc::new(c.couplings().unwrap_or_default())),
            tracking,
            enabled: c.enabled && max_size > 0,
            // One answer may not take more than a quarter of the cache.
            max_entry,
            cluster: std::sync::OnceLock::new(),
            counters: Counters::default(),
        }
    }

    /// False when `cache.enabled = false`.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The TTL rules.
    pub fn policy(&self) -> Arc<Policy> {
        read(&self.policy)
    }

    /// The couplings between collections.
    pub fn couplings(&self) -> Arc<Couplings> {
        read(&self.couplings)
    }

    /// Takes new rules (`cache.ttl`, `cache.stale`, `[[cache.rules]]`,
    /// `[[cache.couplings]]`) from a validated reload. Entries already stored keep the lifetime
    /// they were given.
    pub fn set_policy(&self, c: &config::Cache) {
        write(
            &self.policy,
            Arc::new(Policy::new(c.ttl, c.stale, &c.rules)),
        );
        write(&self.couplings, Arc::new(c.couplings().unwrap_or_default()));
    }

    /// The largest answer one entry may hold, in bytes.
    pub fn max_entry(&self) -> usize {
        self.max_entry as usize
    }

    /// A copy of an answer as it streams, for an entry: at most one entry's worth, and the
    /// copies of every fetch in flight together at most that too.
    pub fn tap(&self) -> crate::body::Tap {
        crate::body::Tap::new(self.max_entry as usize, Some(self.taps.clone()))
    }

    /// Joins the fetch in flight for `key`, or leads a new one.
    pub fn join(&self, key: &Key) -> Flight<Landed> {
        self.flights.join(key)
    }

    /// Entries and bytes now, without waiting for pending maintenance.
    pub fn size_now(&self) -> (u64, u64) {
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// The mark a fetch notes when it begins (see [`Cache::entry`]).
    pub fn mark(&self) -> u64 {
        self.tracking.mark()
    }

    /// Finds a usable entry: fresh, stale, or none (expired, or dropped by a change). Never
    /// waits (the hit path is synchronous).
    pub fn lookup(&self, key: &Key, now: Instant) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        if entry.dropped.load(Ordering::Acquire) {
            return Lookup::Miss;
        }
        if now < entry.fresh_until {
            Lookup::Fresh(entry)
        } else if now < entry.stale_until {
            Lookup::Stale(entry)
        } else {
            Lookup::Miss
        }
    }

    /// A strong validator for an answer the store sent without one: it names this fetch (its
    /// bytes never change), so it can be sent before the body is whole and the entry made of
    /// the answer keeps it.
    pub fn fetch_tag() -> HeaderValue {
        let mut bytes = [0u8; 12];
        let _ = getrandom::getrandom(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::try_from(format!("\"bc-{hex}\"")).unwrap_or(HeaderValue::from_static("\"bc\""))
    }

    /// Makes an entry of a store's 200 answer, fresh for `ttl`, whose fetch began at `mark`;
    /// `None` when it is too big. Without an `ETag` from the store, the entry gets one over its
    /// body.
    pub fn entry(
        &self,
        key: &Key,
        headers: HeaderMap,
        body: Bytes,
        ttl: Duration,
        mark: u64,
        now: Instant,
    ) -> Option<Arc<Entry>> {
        let lifetime = Lifetimes {
            stored: now,
            fresh_until: now + ttl,
            stale_until: now + ttl + self.policy().stale(),
        };
        self.make_entry(key, headers, body, lifetime, mark)
    }

    /// Makes an entry of an answer found in the cluster's shared cache: `age` old, fresh for
    /// `fresh` more, then stale for `stale`.
    pub fn shared_entry(
        &self,
        key: &Key,
        found: &crate::cluster::shared::Found,
        mark: u64,
        now: Instant,
    ) -> Option<Arc<Entry>> {
        let lifetime = Lifetimes {
            stored: now.checked_sub(found.age).unwrap_or(now),
            fresh_until: now + found.fresh,
            stale_until: now + found.fresh + found.stale,
        };
        self.make_entry(
            key,
            found.headers.clone(),
            found.body.clone(),
            lifetime,
            mark,
        )
    }

    fn make_entry(
        &self,
        key: &Key,
        mut headers: HeaderMap,
        body: Bytes,
        lifetime: Lifetimes,
        mark: u64,
    ) -> Option<Arc<Entry>> {
        for name in BUDGET_HEADERS {
            headers.remove(name);
        }
        let mut headers = own(headers);
        let etag = match headers.get(ETAG) {
            Some(tag) => tag.clone(),
            None => {
                let digest = Sha256::digest(&body);
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                let tag = HeaderValue::try_from(format!("\"bc-{hex}\"")).ok()?;
                headers.insert(ETAG, tag.clone());
                tag
            }
        };
        // A clone keeps the table's room but trims the list of headers to its length: the
        // entry holds no unused slots.
        let headers = headers.clone();
        let last_modified = headers
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        // The key is held three times: by the store and under each of the two tags.
        let weight =
            body.len() as u64 + header_bytes as u64 + 3 * key.target.len() as u64 + ENTRY_OVERHEAD;
        if weight > self.max_entry {
            return None;
        }
        Some(Arc::new(Entry {
            status: StatusCode::OK,
            headers,
            body,
            stored: lifetime.stored,
            fresh_until: lifetime.fresh_until,
            stale_until: lifetime.stale_until,
            etag,
            last_modified,
            tags: tags_of(key),
            mark,
            dropped: AtomicBool::new(false),
            weight: weight as u32,
        }))
    }

    /// Stores an entry, unless one of its tags was dropped since its fetch began (then the
    /// answer may predate the change). True when stored.
    pub async fn insert(&self, key: Key, entry: Arc<Entry>) -> bool {
        if !self.tracking.admit(&key, &entry) {
            return false;
        }
        self.entries.insert(key, entry);
        true
    }

    /// What a write to `path` with `method` drops when it may have changed the store.
    pub fn drops_for_write(&self, method: &http::Method, path: &str) -> Drops {
        resource::after_write(method, path, &self.couplings())
    }

    /// Spreads the changes this process makes to `cluster` (its shared cache and every
    /// other process), and lets its invalidations reach this cache.
    pub fn join_cluster(self: &Arc<Self>, cluster: &Arc<crate::cluster::Cluster>) {
        cluster.attach_cache(self);
        let _ = self.cluster.set(cluster.clone());
    }

    /// Applies a change this process made (a write, a webhook, a purge): here, and in a
    /// cluster also in the shared cache and, through it, every other process, before it
    /// returns. Returns how many local entries went.
    pub async fn change(&self, drops: &Drops) -> usize {
        let dropped = self.apply(drops).await;
        if let Some(cluster) = self.cluster.get() {
            cluster.spread(drops).await;
        }
        dropped
    }

    /// Applies a change: the entries it touches are never served again and are removed; a
    /// fetch that began before it is never stored. Returns how many entries went.
    pub async fn apply(&self, drops: &Drops) -> usize {
        if drops.is_empty() {
            return 0;
        }
        let keys = self.tracking.apply(drops, self.policy().longest());
        for key in &keys {
            self.entries.invalidate(key);
        }
        tracing::debug!(?drops, entries = keys.len(), "cache.dropped");
        keys.len()
    }

    /// Entries and their weight in bytes (after pending maintenance).
    pub async fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_size: &str) -> config::Cache {
        config::Cache {
            max_size: max_size.parse().unwrap(),
            ttl: Duration::from_secs(60),
            stale: Duration::from_secs(3600),
            ..config::Cache::default()
        }
    }

    fn key(target: &str) -> Key {
        Key {
            target: target.into(),
            xml: false,
            gzip: false,
        }
    }

    #[tokio::test]
    async fn fresh_then_stale_then_gone() {
        let cache = Cache::new(&settings("1MiB"));
        let now = Instant::now();
        let k = key("/api/v2/products/1");
        let e = cache
            .entry(
                &k,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                Duration::from_secs(60),
                cache.mark(),
                now,
            )
            .unwrap();
        assert!(cache.insert(k.clone(), e).await);
        assert!(matches!(cache.lookup(&k, now), Lookup::Fresh(_)));
        assert!(matches!(
            cache.lookup(&k, now + Duration::from_secs(61)),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.lookup(&k, now + Duration::from_secs(3661)),
            Lookup::Miss
        ));
    }

    #[tokio::test]
    async fn a_change_drops_what_it_names_and_refuses_answers_fetched_before_it() {
        let cache = Cache::new(&settings("1MiB"));
        let now = Instant::now();
        let before = cache.mark();
        let (list, item, sku, other, brand) = (
            key("/api/v2/products?page=1"),
            key("/api/v2/products/5.json"),
            key("/api/v2/products/5/skus"),
            key("/api/v2/products/7"),
            key("/api/v2/brands/1"),
        );
        for k in [&list, &item, &sku, &other, &brand] {
            let e = cache
                .entry(
                    k,
                    HeaderMap::new(),
                    Bytes::from_static(b"[]"),
                    Duration::from_secs(60),
                    cache.mark(),
                    now,
                )
                .unwrap();
            assert!(cache.insert(k.clone(), e).await);
        }
        let put = cache.drops_for_write(&http::Method::PUT, "/stores/h/v3/catalog/products/5");
        assert_eq!(
            cache.apply(&put).await,
            3,
            "the item, its sub-resource and the list"
        );
        assert!(matches!(cache.lookup(&list, now), Lookup::Miss));
        assert!(matches!(cache.lookup(&item, now), Lookup::Miss));
        assert!(matches!(cache.lookup(&sku, now), Lookup::Miss));
        assert!(matches!(cache.lookup(&other, now), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&brand, now), Lookup::Fresh(_)));
        assert_eq!(cache.apply(&put).await, 0, "nothing is dropped twice");
        // An answer whose fetch began before the change is not stored.
        let late = cache
            .entry(
                &list,
                HeaderMap::new(),
                Bytes::from_static(b"old"),
                Duration::from_secs(60),
                before,
                now,
            )
            .unwrap();
        assert!(!cache.insert(list.clone(), late).await);
        assert!(matches!(cache.lookup(&list, now), Lookup::Miss));
        // A bulk write drops the whole collection; a purge of `/` everything.
        let bulk = cache.drops_for_write(&http::Method::DELETE, "/api/v2/products");
        assert_eq!(cache.apply(&bulk).await, 1);
        assert!(matches!(cache.lookup(&other, now), Lookup::Miss));
        assert_eq!(cache.apply(&Drops::named("/", &cache.couplings())).await, 1);
        assert!(matches!(cache.lookup(&brand, now), Lookup::Miss));
    }

    #[tokio::test]
    async fn validators_and_conditional_requests() {
        let cache = Cache::new(&settings("1MiB"));
        let now = Instant::now();
        let k = key("/api/v2/products/1");
        let e = cache
            .entry(
                &k,
                HeaderMap::new(),
                Bytes::from_static(b"{\"id\":1}"),
                Duration::from_secs(60),
                cache.mark(),
                now,
            )
            .unwrap();
        let tag = e.etag.to_str().unwrap().to_string();
        assert!(tag.starts_with("\"bc-"));
        let mut h = HeaderMap::new();
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(e.not_modified(&h));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!e.not_modified(&h));
        let mut stored = HeaderMap::new();
        stored.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Fri, 02 Feb 2024 00:00:00 GMT"),
        );
        let e = cache
            .entry(
                &k,
                stored,
                Bytes::from_static(b"{}"),
                Duration::from_secs(60),
                cache.mark(),
                now,
            )
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            IF_MODIFIED_SINCE,
            HeaderValue::from_static("Sat, 03 Feb 2024 00:00:00 GMT"),
        );
        assert!(e.not_modified(&h));
        h.insert(
            IF_MODIFIED_SINCE,
            HeaderValue::from_static("Thu, 01 Feb 2024 00:00:00 GMT"),
        );
        assert!(!e.not_modified(&h));
    }

    #[tokio::test]
    async fn the_size_bound_holds() {
        let cache = Cache::new(&settings("64KiB"));
        let now = Instant::now();
        for i in 0..200 {
            let k = key(&format!("/api/v2/products?page={i}"));
            let e = cache
                .entry(
                    &k,
                    HeaderMap::new(),
                    Bytes::from(vec![b'x'; 1000]),
                    Duration::from_secs(60),
                    cache.mark(),
                    now,
                )
                .unwrap();
            cache.insert(k, e).await;
        }
        let (_, bytes) = cache.size().await;
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(
            cache
                .entry(
                    &key("/big"),
                    HeaderMap::new(),
                    Bytes::from(vec![0; 17 * 1024]),
                    Duration::from_secs(1),
                    cache.mark(),
                    now
                )
                .is_none()
        );
    }
}
