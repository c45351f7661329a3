//! Coalescing: concurrent identical misses share one upstream call. The first caller leads
//! (its fetch runs as a task of its own, so it belongs to no single client); the others
//! follow and get the same result. A leader that goes away without landing releases its
//! followers instead of stranding them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::Key;

/// The calls in flight, by key.
#[derive(Debug)]
pub struct Flights<T> {
    map: Mutex<HashMap<Key, watch::Receiver<Option<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// A caller's part in a flight.
#[derive(Debug)]
pub enum Flight<T> {
    /// The first caller: it must fetch and land.
    Lead(Landing<T>),
    /// A later caller: it waits for the leader's result.
    Follow(watch::Receiver<Option<T>>),
}

/// The leader's duty: land the result for everyone on the flight.
#[derive(Debug)]
pub struct Landing<T> {
    flights: Arc<Flights<T>>,
    key: Key,
    tx: watch::Sender<Option<T>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Clone> Flights<T> {
    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &Key) -> Flight<T> {
        let mut map = lock(&self.map);
        if let Some(rx) = map.get(key) {
            return Flight::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Flight::Lead(Landing {
            flights: self.clone(),
            key: key.clone(),
            tx,
        })
    }

    /// Calls in flight now.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone> Landing<T> {
    /// A receiver for the leader's own wait.
    pub fn subscribe(&self) -> watch::Receiver<Option<T>> {
        self.tx.subscribe()
    }

    /// Hands the result to every caller on the flight and ends it.
    pub fn land(self, value: T) {
        let _ = self.tx.send(Some(value));
        // Drop removes the flight.
    }
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.flights.map);
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Waits for a flight's result; `None` when its leader went away without one.
pub async fn arrival<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|v| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            target: "/api/v2/products".into(),
            xml: false,
            gzip: false,
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_result() {
        let flights = Arc::new(Flights::<u32>::default());
        let Flight::Lead(landing) = flights.join(&key()) else {
            panic!("first is the leader")
        };
        let Flight::Follow(rx) = flights.join(&key()) else {
            panic!("second follows")
        };
        let mine = landing.subscribe();
        landing.land(7);
        assert_eq!(arrival(rx).await, Some(7));
        assert_eq!(arrival(mine).await, Some(7));
        assert!(flights.is_empty());
        assert!(
            matches!(flights.join(&key()), Flight::Lead(_)),
            "a new flight after landing"
        );
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_releases_its_followers() {
        let flights = Arc::new(Flights::<u32>::default());
        let Flight::Lead(landing) = flights.join(&key()) else {
            panic!()
        };
        let Flight::Follow(rx) = flights.join(&key()) else {
            panic!()
        };
        drop(landing);
        assert_eq!(arrival(rx).await, None);
        assert!(flights.is_empty());
    }
}
