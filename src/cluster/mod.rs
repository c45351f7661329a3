//! A cluster: several bcproxy processes sharing one store budget, one pause, one cache and its
//! invalidations through Redis (`[cluster]`).
//!
//! - this module: the link to Redis (connect, subscribe, heartbeat, reconnect), the mode
//!   (connected or degraded) and its events, the keys and scripts, and the figures `/status`
//!   and `/metrics` show;
//! - `ledger`: the shared budget backend (an [`crate::budget::Allowance`]) and what it does
//!   while Redis is away;
//! - `shared`: the shared cache (a lookup, a lease lock per key, bounded storage);
//! - `changes`: invalidations: what a change drops, applied to the shared cache and published
//!   to every process in one script, and applied here when another process published it.
//!
//! Every key carries the cluster's name as a hash tag (one Redis Cluster slot) and the format
//! version: `bcproxy:{<name>}:v1:…`. Scripts run atomically on Redis's clock.

pub mod changes;
pub mod ledger;
pub mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Script, Value};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::cache::Cache;
use crate::config::Settings;
use crate::secret::Secret;

/// The key format version: processes of another version never read these keys.
pub const FORMAT: &str = "v1";
/// Longest wait for Redis to answer (and to connect) before it counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// How often a process says it is alive (and checks the link).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a lost link is tried again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Instances seen within this long count as sharing the budget.
pub const SEEN_WITHIN: Duration = Duration::from_secs(30);

/// A cluster that cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis_url` is not usable.
    #[error("cluster.redis_url: {0}")]
    Url(String),
    /// The TLS trust for `rediss://` could not be read.
    #[error("cluster.redis_url: {0}")]
    Tls(String),
}

/// Redis did not answer (the reason is in the `cluster.degraded` event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Down(pub String);

/// Whether the process works with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Not connected yet (the first attempt is under way).
    Connecting,
    /// Connected: the budget, cache and invalidations are shared.
    Up,
    /// Redis is unreachable: the process spends its own share, alone.
    Degraded(String),
}

/// What `/status` shows of the cluster.
#[derive(Debug, Clone)]
pub struct View {
    /// The cluster's name.
    pub name: String,
    /// This process.
    pub instance: String,
    /// `connecting`, `connected` or `degraded`.
    pub mode: &'static str,
    /// Why it is degraded.
    pub reason: Option<String>,
    /// The instances seen in the last 30 s, with how long ago.
    pub instances: Vec<(String, Duration)>,
    /// The count that splits the budget while degraded (the larger of `expected_instances`
    /// and the instances seen).
    pub sharing: u64,
    /// Whether GET answers are shared.
    pub shared_cache: bool,
    /// True while, back from an outage, this process keeps to its share until the others
    /// have rejoined.
    pub recovering: bool,
    /// Running totals.
    pub counts: Counts,
    /// Redis round trips, in seconds.
    pub round_trips: Histogram,
}

/// The cluster's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Redis calls that failed or timed out.
    pub errors: u64,
    /// Answers found in the shared cache.
    pub shared_hits: u64,
    /// Invalidations this process published.
    pub invalidations_sent: u64,
    /// Invalidations received from other processes.
    pub invalidations_received: u64,
    /// Times the link was lost.
    pub degraded: u64,
}

/// The names of the cluster's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of cluster `name`.
    pub fn new(name: &str) -> Keys {
        Keys {
            prefix: format!("bcproxy:{{{name}}}:{FORMAT}:"),
        }
    }

    /// A key by its suffix.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The link to Redis that every shared part goes through.
pub struct Cluster {
    name: String,
    instance: String,
    keys: Keys,
    client: Client,
    password: Secret,
    redis_url: String,
    expected_instances: u64,
    shared_cache: bool,
    /// The connection while up, with its generation.
    link: RwLock<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    mode: watch::Sender<Mode>,
    /// Set by a failed call: the link loop reconnects.
    lost: Notify,
    stop: watch::Sender<bool>,
    /// The first connection attempt ended (either way).
    tried: watch::Sender<bool>,
    peers: Mutex<Peers>,
    allowance: OnceLock<Weak<ledger::SharedAllowance>>,
    cache: OnceLock<Weak<Cache>>,
    changes: changes::Changes,
    scripts: Scripts,
    round_trips: Histogram,
    errors: AtomicU64,
    shared_hits: AtomicU64,
    degraded_count: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("redis_url", &self.redis_url)
            .field("mode", &*self.mode.borrow())
            .finish_non_exhaustive()
    }
}

/// The instances seen at the last heartbeat.
#[derive(Debug, Default)]
struct Peers {
    /// Instance name and its last heartbeat, in Redis milliseconds.
    seen: Vec<(String, i64)>,
    /// Redis's clock then.
    now: i64,
    /// This process's clock then.
    at: Option<Instant>,
}

#[derive(Debug)]
struct Scripts {
    ledger: Script,
    cache: Script,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// The cluster of validated settings (`cluster.redis_url` set), not yet connected: see
    /// [`Cluster::start`].
    pub fn new(settings: &Settings) -> Result<Arc<Cluster>, ClusterError> {
        let c = &settings.cluster;
        let name = c
            .name_for(&settings.upstream, settings.budget.dialect)
            .ok_or_else(|| ClusterError::Url("cluster.name is required".into()))?;
        let mut info = c
            .redis_url
            .as_str()
            .into_connection_info()
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        if !c.redis_password.is_empty() {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(c.redis_password.expose());
            info = info.set_redis_settings(redis);
        }
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let client = if tls {
            let roots = crate::tls::roots_pem(settings.upstream.ca_file.as_deref())
                .map_err(|e| ClusterError::Tls(e.to_string()))?;
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots),
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|e| ClusterError::Url(e.to_string()))?;
        let keys = Keys::new(&name);
        let instance = c.instance_name();
        Ok(Arc::new(Cluster {
            changes: changes::Changes::new(&keys, &instance),
            name,
            instance,
            keys,
            client,
            password: c.redis_password.clone(),
            redis_url: c.redis_url.clone(),
            expected_instances: c.expected_instances.max(1),
            shared_cache: c.shared_cache,
            link: RwLock::new(None),
            generation: AtomicU64::new(0),
            mode: watch::Sender::new(Mode::Connecting),
            lost: Notify::new(),
            stop: watch::Sender::new(false),
            tried: watch::Sender::new(false),
            peers: Mutex::new(Peers::default()),
            allowance: OnceLock::new(),
            cache: OnceLock::new(),
            scripts: Scripts {
                ledger: Script::new(include_str!("ledger.lua")),
                cache: Script::new(include_str!("cache.lua")),
            },
            round_trips: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 14),
            ),
            errors: AtomicU64::new(0),
            shared_hits: AtomicU64::new(0),
            degraded_count: AtomicU64::new(0),
        }))
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's name in the cluster.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The names of the cluster's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// True while connected.
    pub fn is_up(&self) -> bool {
        *self.mode.borrow() == Mode::Up
    }

    /// The mode now.
    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }

    /// Waits for the mode to change (for tests and the admin page).
    pub fn watch_mode(&self) -> watch::Receiver<Mode> {
        self.mode.subscribe()
    }

    /// True when GET answers are shared (and the link is up).
    pub fn shares_cache(&self) -> bool {
        self.shared_cache && self.is_up()
    }

    /// At least `expected_instances`, or more when more were seen lately.
    pub fn sharing(&self) -> u64 {
        let seen = self.seen_lately().len() as u64;
        self.expected_instances.max(seen)
    }

    fn seen_lately(&self) -> Vec<(String, Duration)> {
        let peers = lock(&self.peers);
        let Some(at) = peers.at else {
            return Vec::new();
        };
        let since = at.elapsed();
        peers
            .seen
            .iter()
            .map(|(name, ms)| {
                let ago = Duration::from_millis(peers.now.saturating_sub(*ms).max(0) as u64);
                (name.clone(), ago + since)
            })
            .filter(|(_, ago)| *ago < SEEN_WITHIN)
            .collect()
    }

    /// Lets the budget backend rejoin and heartbeat through the link.
    pub(crate) fn attach_allowance(&self, allowance: &Arc<ledger::SharedAllowance>) {
        let _ = self.allowance.set(Arc::downgrade(allowance));
    }

    /// The local cache that invalidations from other processes reach.
    pub fn attach_cache(&self, cache: &Arc<Cache>) {
        let _ = self.cache.set(Arc::downgrade(cache));
    }

    fn local_cache(&self) -> Option<Arc<Cache>> {
        self.cache.get().and_then(Weak::upgrade)
    }

    fn budget(&self) -> Option<Arc<ledger::SharedAllowance>> {
        self.allowance.get().and_then(Weak::upgrade)
    }

    /// Connects in the background, keeps the link (heartbeats, the subscription), and
    /// reconnects when it is lost, until [`Cluster::leave`].
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(keep_linked(self.clone()));
    }

    /// Waits until the first connection attempt ended, at most `within`.
    pub async fn started(&self, within: Duration) {
        let mut tried = self.tried.subscribe();
        let _ = tokio::time::timeout(within, tried.wait_for(|t| *t)).await;
    }

    /// Leaves the cluster (at shutdown): the heartbeat stops and the instance is no longer
    /// counted.
    pub async fn leave(&self) {
        if let Some(budget) = self.budget() {
            budget.leave().await;
        }
        let _ = self.stop.send(true);
    }

    /// What `/status` shows.
    pub fn view(&self) -> View {
        let (mode, reason) = match self.mode() {
            Mode::Connecting => ("connecting", None),
            Mode::Up => ("connected", None),
            Mode::Degraded(reason) => ("degraded", Some(reason)),
        };
        View {
            name: self.name.clone(),
            instance: self.instance.clone(),
            mode,
            reason,
            instances: self.seen_lately(),
            sharing: self.sharing(),
            shared_cache: self.shared_cache,
            recovering: self.budget().is_some_and(|b| b.recovering()),
            counts: Counts {
                errors: self.errors.load(Ordering::Relaxed),
                shared_hits: self.shared_hits.load(Ordering::Relaxed),
                invalidations_sent: self.changes.sent(),
                invalidations_received: self.changes.received(),
                degraded: self.degraded_count.load(Ordering::Relaxed),
            },
            round_trips: self.round_trips.clone(),
        }
    }

    /// Drops a change this process made from the shared cache and publishes it to every
    /// other process (kept for later while Redis is away).
    pub async fn spread(&self, drops: &crate::cache::Drops) {
        self.changes.spread(self, drops).await;
    }

    /// Counts an answer found in the shared cache.
    pub(crate) fn count_shared_hit(&self) {
        self.shared_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one of the cluster's scripts; a failure (or no answer within [`TIMEOUT`]) marks
    /// the link lost, so the process goes on degraded.
    pub(crate) async fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[Arg<'_>],
    ) -> Result<Vec<Value>, Down> {
        let Some((generation, mut con)) = self
            .link
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return Err(Down("not connected".into()));
        };
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            match arg {
                Arg::Int(n) => invocation.arg(*n),
                Arg::Str(s) => invocation.arg(*s),
                Arg::Bytes(b) => invocation.arg(*b),
            };
        }
        let started = Instant::now();
        // Loading the script after NOSCRIPT is a second round trip: allow for both.
        let result = tokio::time::timeout(2 * TIMEOUT, invocation.invoke_async(&mut con)).await;
        self.round_trips.observe(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(Value::Array(values))) => return Ok(values),
            Ok(Ok(other)) => format!("unexpected answer from a script: {other:?}"),
            Ok(Err(e)) => self.reason(&e),
            Err(_) => "timeout (no answer within 250 ms)".to_string(),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.lose(generation, error.clone());
        Err(Down(error))
    }

    /// Marks the link of `generation` lost; the link loop takes it from there.
    fn lose(&self, generation: u64, reason: String) {
        let mut link = self
            .link
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if link.as_ref().is_some_and(|(g, _)| *g == generation) {
            *link = None;
            drop(link);
            self.go_degraded(reason);
            self.lost.notify_one();
        }
    }

    /// Enters degraded mode (once per outage), with its event.
    fn go_degraded(&self, reason: String) {
        let was = self.mode();
        if matches!(&was, Mode::Degraded(r) if *r == reason) {
            return;
        }
        let first = !matches!(was, Mode::Degraded(_));
        self.mode.send_replace(Mode::Degraded(reason.clone()));
        if first {
            self.degraded_count.fetch_add(1, Ordering::Relaxed);
            let share = self.budget().map(|b| b.degrade());
            let sharing = self.sharing();
            tracing::warn!(
                reason = %reason,
                sharing,
                own_share = share,
                "cluster.degraded"
            );
        }
    }

    /// A Redis error as the `reason` an operator reads: never the password.
    fn reason(&self, e: &RedisError) -> String {
        let text = e.to_string();
        let upper = text.to_ascii_uppercase();
        let reason = if e.kind() == redis::ErrorKind::AuthenticationFailed
            || upper.contains("WRONGPASS")
            || upper.contains("NOAUTH")
            || upper.contains("INVALID PASSWORD")
            || upper.contains("AUTH")
        {
            "authentication failed (check cluster.redis_password_file or BCPROXY__CLUSTER__REDIS_PASSWORD, and the user in cluster.redis_url)".to_string()
        } else if upper.contains("NOPERM") {
            format!(
                "permission denied: the Redis user may not run bcproxy's commands ({})",
                first_line(&text)
            )
        } else if e.is_connection_refusal() {
            "connection refused".to_string()
        } else if e.is_timeout() {
            "timeout (no answer within 250 ms)".to_string()
        } else if e.is_connection_dropped() {
            "connection lost".to_string()
        } else {
            format!("redis error: {}", first_line(&text))
        };
        self.scrub(reason)
    }

    /// Takes the password out of a text, whatever produced it.
    fn scrub(&self, text: String) -> String {
        let password = self.password.expose();
        if password.len() >= 3 && text.contains(password) {
            text.replace(password, crate::secret::REDACTED)
        } else {
            text
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// One argument of a script.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A number.
    Int(i64),
    /// Text.
    Str(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
}

/// Reads an integer from a script's answer (`0` when it is not one).
pub(crate) fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Int(n)) => *n,
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Some(Value::SimpleString(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Reads text from a script's answer (empty when it is not text).
pub(crate) fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Int(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Reads bytes from a script's answer.
pub(crate) fn bytes(value: Option<&Value>) -> Option<bytes::Bytes> {
    match value {
        Some(Value::BulkString(b)) => Some(bytes::Bytes::copy_from_slice(b)),
        _ => None,
    }
}

/// The link loop: connect and subscribe, rejoin the shared ledger, publish what changed while
/// away, drop the local cache (messages may have been missed), then heartbeat and receive
/// invalidations until the link fails; then degrade and try again every [`RETRY`].
async fn keep_linked(cluster: Arc<Cluster>) {
    let mut stop = cluster.stop.subscribe();
    let mut ever_up = false;
    let mut down_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            attempt = connect(&cluster) => attempt,
            _ = stop.wait_for(|s| *s) => return,
        };
        match attempt {
            Ok((con, pubsub)) => {
                let generation = cluster.generation.fetch_add(1, Ordering::Relaxed) + 1;
                *cluster
                    .link
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, con));
                match rejoin(&cluster).await {
                    Ok(restored) => {
                        let was = cluster.mode.send_replace(Mode::Up);
                        cluster.tried.send_replace(true);
                        let since = down_since.take();
                        if !ever_up {
                            tracing::info!(
                                name = %cluster.name,
                                redis = %cluster.redis_url,
                                sharing = cluster.sharing(),
                                shared_cache = cluster.shared_cache,
                                "cluster.connected"
                            );
                        }
                        if matches!(was, Mode::Degraded(_)) {
                            tracing::info!(
                                down_ms = since.map_or(0, |s| s.elapsed().as_millis() as u64),
                                restored_sends = restored,
                                sharing = cluster.sharing(),
                                "cluster.restored"
                            );
                        }
                        ever_up = true;
                        let reason = tokio::select! {
                            reason = linked(&cluster, generation, pubsub) => reason,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        cluster.lose(generation, reason);
                    }
                    Err(Down(reason)) => cluster.lose(generation, reason),
                }
            }
            Err(reason) => cluster.go_degraded(reason),
        }
        cluster.tried.send_replace(true);
        down_since.get_or_insert_with(Instant::now);
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A connection for commands and one subscribed to the cluster's changes; the eviction policy
/// checked.
async fn connect(cluster: &Cluster) -> Result<(MultiplexedConnection, redis::aio::PubSub), String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let attempt = async {
        let mut con = cluster
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut con)
            .await;
        if let Ok(policy) = policy
            && let Some(value) = policy.get(1).filter(|v| v.starts_with("allkeys-"))
        {
            tracing::warn!(
                policy = %value,
                "cluster.eviction_policy: Redis may evict the shared budget's keys under memory pressure; use noeviction or a volatile-* policy"
            );
        }
        let mut pubsub = cluster.client.get_async_pubsub().await?;
        pubsub.subscribe(cluster.changes.channel()).await?;
        Ok::<_, RedisError>((con, pubsub))
    };
    match tokio::time::timeout(4 * TIMEOUT, attempt).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(cluster.reason(&e)),
        Err(_) => Err("timeout (no answer within 250 ms)".into()),
    }
}

/// Rejoins the shared ledger, publishes the changes made while away, and drops the local
/// cache when it may have missed invalidations; the sends added back.
async fn rejoin(cluster: &Arc<Cluster>) -> Result<u64, Down> {
    let restored = match cluster.budget() {
        Some(budget) => budget.rejoin().await?,
        None => 0,
    };
    cluster.changes.flush(cluster).await?;
    if let Some(cache) = cluster.local_cache() {
        let (entries, _) = cache.size_now();
        if entries > 0 {
            let dropped = cache.apply(&crate::cache::Drops::everything()).await;
            tracing::info!(
                entries = dropped,
                "cluster.cache_dropped: the local cache may have missed invalidations"
            );
        }
    }
    Ok(restored)
}

/// While linked: heartbeats, and invalidations from the other processes. Returns why the link
/// ended.
async fn linked(cluster: &Arc<Cluster>, generation: u64, pubsub: redis::aio::PubSub) -> String {
    use futures_util::StreamExt;
    let mut messages = pubsub.into_on_message();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => cluster.changes.receive(cluster, message.get_payload_bytes()).await,
                None => return "the subscription was lost".into(),
            },
            _ = beat.tick() => {
                if let Some(budget) = cluster.budget() {
                    match budget.heartbeat().await {
                        Ok(seen) => {
                            let mut peers = lock(&cluster.peers);
                            peers.seen = seen.instances;
                            peers.now = seen.now;
                            peers.at = Some(Instant::now());
                        }
                        Err(Down(reason)) => return reason,
                    }
                }
            }
            () = cluster.lost.notified() => {
                let current = cluster
                    .link
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map(|(g, _)| *g);
                if current != Some(generation) {
                    if let Mode::Degraded(reason) = cluster.mode() {
                        return reason;
                    }
                    return "connection lost".into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_hash_tag_and_the_format() {
        let keys = Keys::new("store.example.com/admin");
        assert_eq!(
            keys.key("sends"),
            "bcproxy:{store.example.com/admin}:v1:sends"
        );
        assert!(keys.prefix().contains(":v1:"));
    }

    #[test]
    fn answers_read_loosely() {
        assert_eq!(int(Some(&Value::Int(7))), 7);
        assert_eq!(int(Some(&Value::BulkString(b"12".to_vec()))), 12);
        assert_eq!(int(None), 0);
        assert_eq!(text(Some(&Value::BulkString(b"abc".to_vec()))), "abc");
        assert_eq!(text(Some(&Value::Int(3))), "3");
    }
}
