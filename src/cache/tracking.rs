//! Which cached answers a change drops: every entry is indexed under its two tags, and every
//! drop is recorded with a sequence number, so that an answer whose fetch began before a drop
//! of one of its tags is never stored after it (no stale-after-write).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::resource::{Drops, Tag};
use super::{Entry, Key};

/// Drops recorded, beyond which old ones are forgotten (once no entry can still predate them).
const KEEP_BUMPS: usize = 4096;

/// The index of entries by tag, and the drops of each tag.
#[derive(Debug)]
pub struct Tracking {
    /// The sequence of drops: a fetch notes it when it begins ([`Tracking::mark`]).
    seq: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last drop of each tag: its sequence number and when it happened.
    bumps: HashMap<Tag, (u64, Instant)>,
    /// The last drop of everything.
    everything: u64,
    /// The entries stored, by tag.
    index: HashMap<Tag, HashMap<Key, Arc<Entry>>>,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            seq: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl Tracking {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mark a fetch notes when it begins: a drop after it makes the fetch's answer unusable.
    pub fn mark(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Indexes an entry about to be stored; false (and nothing indexed) when one of its tags
    /// was dropped since its fetch began.
    pub fn admit(&self, key: &Key, entry: &Arc<Entry>) -> bool {
        let mut inner = self.lock();
        let predates = |seq: u64| seq >= entry.mark;
        if predates(inner.everything)
            || entry
                .tags
                .iter()
                .any(|tag| inner.bumps.get(tag).is_some_and(|(seq, _)| predates(*seq)))
        {
            return false;
        }
        for tag in &entry.tags {
            inner
                .index
                .entry(tag.clone())
                .or_default()
                .insert(key.clone(), entry.clone());
        }
        true
    }

    /// Forgets an entry the cache let go of (expired, evicted, replaced).
    pub fn forget(&self, key: &Key, entry: &Arc<Entry>) {
        let mut inner = self.lock();
        for tag in &entry.tags {
            if let Some(keys) = inner.index.get_mut(tag) {
                if keys.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                    keys.remove(key);
                }
                if keys.is_empty() {
                    inner.index.remove(tag);
                }
            }
        }
    }

    /// Applies a change: records it (so fetches in flight are not stored) and marks every
    /// entry it touches dropped; returns their keys, for the cache to remove. Drops older than
    /// `outlived` (the longest an entry lives) are forgotten once many are kept.
    pub fn apply(&self, drops: &Drops, outlived: Duration) -> Vec<Key> {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        let mut inner = self.lock();
        let mut victims: Vec<(Key, Arc<Entry>)> = Vec::new();
        if drops.everything {
            inner.everything = seq;
            for keys in std::mem::take(&mut inner.index).into_values() {
                victims.extend(keys);
            }
        }
        for tag in &drops.tags {
            inner.bumps.insert(tag.clone(), (seq, now));
            if let Some(keys) = inner.index.remove(tag) {
                victims.extend(keys);
            }
        }
        let mut dropped = Vec::new();
        for (key, entry) in victims {
            if !entry.dropped.swap(true, Ordering::AcqRel) {
                // Out of its other tag's index too, so it is counted once.
                for tag in &entry.tags {
                    if let Some(keys) = inner.index.get_mut(tag) {
                        keys.remove(&key);
                    }
                }
                dropped.push(key);
            }
        }
        if inner.bumps.len() > KEEP_BUMPS {
            inner
                .bumps
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < outlived);
        }
        dropped
    }

    /// Entries indexed (each once).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner
            .index
            .iter()
            .filter(|(tag, _)| matches!(tag, Tag::All(_)))
            .map(|(_, keys)| keys.len())
            .sum()
    }

    /// True when no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
