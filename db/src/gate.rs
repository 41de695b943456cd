//! A bound on the API calls that hold a database connection per key (an
//! account, a user), so that one key's blocked calls — all waiting on the
//! same locked row — hold at most a few of the API pool's connections, and
//! every other key still finds one free.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls waiting for a place, per key, beyond which a call is refused at once.
pub const MAX_WAITING_PER_KEY: usize = 1_000;

struct Entry {
    places: Arc<Semaphore>,
    /// Calls holding or waiting for a place.
    interested: usize,
}

/// Lets `limit` calls per key hold a connection at once. Others wait for a
/// place without holding a connection (up to their deadline: a dropped call
/// leaves the queue); past [`MAX_WAITING_PER_KEY`] waiting calls, a call is
/// refused at once (the caller answers UNAVAILABLE, retry later).
pub struct KeyGate<K> {
    limit: usize,
    keys: Arc<Mutex<HashMap<K, Entry>>>,
}

impl<K> std::fmt::Debug for KeyGate<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGate")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<K> Clone for KeyGate<K> {
    fn clone(&self) -> Self {
        Self {
            limit: self.limit,
            keys: Arc::clone(&self.keys),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyGate<K> {
    /// A gate with `limit` (at least 1) places per key.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            keys: Arc::default(),
        }
    }

    /// A place for one call on `key`, held until dropped; waits while
    /// `limit` calls on `key` hold one. `None` when too many already wait.
    pub async fn enter(&self, key: &K) -> Option<Permit<K>> {
        let places = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let entry = keys.entry(key.clone()).or_insert_with(|| Entry {
                places: Arc::new(Semaphore::new(self.limit)),
                interested: 0,
            });
            if entry.interested >= self.limit + MAX_WAITING_PER_KEY {
                metrics::counter!("shop_api_calls_refused_total", "reason" => "key_busy")
                    .increment(1);
                return None;
            }
            entry.interested += 1;
            Arc::clone(&entry.places)
        };
        let interest = Interest {
            key: key.clone(),
            keys: Arc::clone(&self.keys),
        };
        let place = places.acquire_owned().await.ok()?;
        Some(Permit {
            _place: place,
            _interest: interest,
        })
    }
}

/// One admitted call; dropping it frees its place.
#[derive(Debug)]
pub struct Permit<K: Eq + Hash> {
    _place: OwnedSemaphorePermit,
    _interest: Interest<K>,
}

/// A call holding or waiting for a place; the key is forgotten with its last one.
struct Interest<K: Eq + Hash> {
    key: K,
    keys: Arc<Mutex<HashMap<K, Entry>>>,
}

impl<K: Eq + Hash> std::fmt::Debug for Interest<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interest")
    }
}

impl<K: Eq + Hash> Drop for Interest<K> {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = keys.get_mut(&self.key) {
            entry.interested -= 1;
            if entry.interested == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn holds_up_to_the_limit_per_key_and_lets_the_next_in_on_drop() {
        let gate = KeyGate::new(2);
        let a1 = gate.enter(&"a").await.expect("first");
        let _a2 = gate.enter(&"a").await.expect("second");
        let third = tokio::time::timeout(Duration::from_millis(50), gate.enter(&"a")).await;
        assert!(third.is_err(), "a third call on the same key waits");
        let _b = gate.enter(&"b").await.expect("another key is not affected");
        drop(a1);
        let third = tokio::time::timeout(Duration::from_millis(50), gate.enter(&"a")).await;
        assert!(matches!(third, Ok(Some(_))), "a freed place is taken");
    }

    #[tokio::test]
    async fn refuses_past_the_waiting_bound_and_forgets_idle_keys() {
        let gate = KeyGate::new(1);
        let held = gate.enter(&1).await.expect("place");
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING_PER_KEY {
            let gate = gate.clone();
            waiting.push(tokio::spawn(async move { gate.enter(&1).await.is_some() }));
        }
        tokio::task::yield_now().await;
        // Every waiter has registered once the count reaches the bound.
        for _ in 0..100 {
            let interested = gate
                .keys
                .lock()
                .expect("lock")
                .get(&1)
                .map(|e| e.interested);
            if interested == Some(1 + MAX_WAITING_PER_KEY) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(gate.enter(&1).await.is_none(), "refused past the bound");
        drop(held);
        for w in waiting {
            assert!(w.await.expect("task"), "every waiter gets its turn");
        }
        assert!(gate.keys.lock().expect("lock").is_empty());
    }
}
