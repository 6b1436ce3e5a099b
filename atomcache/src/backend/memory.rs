//! The embedded backend: one process, no server, the same semantics as Redis (expiry, token
//! locks, wake-ups). It is what atomcache uses when [`init`](crate::init) was never called.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Backend, LockAttempt, Subscription, WakeHub};
use crate::{EntryKey, Error};

/// An in-process store with Redis semantics.
///
/// Cloning is cheap and clones share the store. Expired entries are dropped lazily and swept
/// as the map grows.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let runtime = atomcache::init(atomcache::MemoryBackend::new()).await?;
/// // ... #[cached] functions and Cache now use it ...
/// runtime.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    hub: WakeHub,
}

#[derive(Default)]
struct State {
    values: HashMap<String, (Arc<[u8]>, Instant)>,
    locks: HashMap<String, (String, Instant)>,
    /// Map size after the last sweep; the next sweep runs when it doubles.
    swept_at_len: usize,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryBackend")
            .field("values", &state.values.len())
            .field("locks", &state.locks.len())
            .finish()
    }
}

impl MemoryBackend {
    /// A new, empty store.
    ///
    /// ```
    /// let backend = atomcache::MemoryBackend::new();
    /// assert_eq!(backend.len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live (unexpired) values.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.state()
            .values
            .values()
            .filter(|(_, until)| *until > now)
            .count()
    }

    /// Whether no live value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn live_value(&mut self, key: &str, now: Instant) -> Option<&(Arc<[u8]>, Instant)> {
        if matches!(self.values.get(key), Some((_, until)) if *until <= now) {
            self.values.remove(key);
        }
        self.values.get(key)
    }

    fn put(&mut self, key: String, value: &[u8], exp: Duration, now: Instant) {
        self.values.insert(key, (Arc::from(value), now + exp));
        if self.values.len() >= 2 * self.swept_at_len.max(512) {
            self.values.retain(|_, (_, until)| *until > now);
            self.locks.retain(|_, (_, until)| *until > now);
            self.swept_at_len = self.values.len();
        }
    }

    fn owns_lock(&self, key: &str, token: &str, now: Instant) -> bool {
        matches!(self.locks.get(key), Some((t, until)) if t == token && *until > now)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error> {
        let mut state = self.state();
        Ok(state
            .live_value(key.value(), Instant::now())
            .map(|(v, _)| v.to_vec()))
    }

    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error> {
        self.state()
            .put(key.value().to_owned(), value, exp, Instant::now());
        self.inner.hub.wake(&key.channel());
        Ok(())
    }

    async fn delete(&self, key: &EntryKey) -> Result<(), Error> {
        self.state().values.remove(key.value());
        Ok(())
    }

    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .live_value(key.value(), now)
            .map(|(_, until)| until.saturating_duration_since(now)))
    }

    async fn try_lock(
        &self,
        key: &EntryKey,
        token: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, Error> {
        let now = Instant::now();
        let mut state = self.state();
        let lock_key = key.lock();
        match state.locks.get(&lock_key) {
            Some((_, until)) if *until > now => Ok(LockAttempt::Held {
                remaining: until.saturating_duration_since(now),
            }),
            _ => {
                state.locks.insert(lock_key, (token.to_owned(), now + ttl));
                Ok(LockAttempt::Acquired)
            }
        }
    }

    async fn store_and_unlock(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let owned = {
            let mut state = self.state();
            state.put(key.value().to_owned(), value, exp, now);
            let lock_key = key.lock();
            let owned = state.owns_lock(&lock_key, token, now);
            if owned {
                state.locks.remove(&lock_key);
            }
            owned
        };
        self.inner.hub.wake(&key.channel());
        Ok(owned)
    }

    async fn unlock(&self, key: &EntryKey, token: &str) -> Result<bool, Error> {
        let now = Instant::now();
        let owned = {
            let mut state = self.state();
            let lock_key = key.lock();
            let owned = state.owns_lock(&lock_key, token, now);
            if owned {
                state.locks.remove(&lock_key);
            }
            owned
        };
        if owned {
            self.inner.hub.wake(&key.channel());
        }
        Ok(owned)
    }

    async fn extend_lock(&self, key: &EntryKey, token: &str, ttl: Duration) -> Result<bool, Error> {
        let now = Instant::now();
        let mut state = self.state();
        let lock_key = key.lock();
        if state.owns_lock(&lock_key, token, now) {
            state.locks.insert(lock_key, (token.to_owned(), now + ttl));
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, Error> {
        let hub = &self.inner.hub;
        if hub.channels() > 1024 {
            hub.take_idle();
        }
        Ok(hub.register(&key.channel()).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> EntryKey {
        EntryKey::new("", "mem", id)
    }

    #[tokio::test]
    async fn values_expire() {
        let b = MemoryBackend::new();
        b.set(&key("a"), b"1", Duration::from_millis(30))
            .await
            .unwrap();
        assert!(b.get(&key("a")).await.unwrap().is_some());
        assert!(b.remaining_ttl(&key("a")).await.unwrap().unwrap() <= Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.get(&key("a")).await.unwrap().is_none());
        assert!(b.remaining_ttl(&key("a")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lock_is_exclusive_and_token_checked() {
        let b = MemoryBackend::new();
        let k = key("l");
        assert_eq!(
            b.try_lock(&k, "t1", Duration::from_millis(40))
                .await
                .unwrap(),
            LockAttempt::Acquired
        );
        assert!(matches!(
            b.try_lock(&k, "t2", Duration::from_secs(1)).await.unwrap(),
            LockAttempt::Held { .. }
        ));
        assert!(!b.unlock(&k, "t2").await.unwrap());
        // t1's lock expires; t2 takes it; the slow t1 cannot delete t2's lock.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            b.try_lock(&k, "t2", Duration::from_secs(1)).await.unwrap(),
            LockAttempt::Acquired
        );
        assert!(!b
            .store_and_unlock(&k, "t1", b"late", Duration::from_secs(1))
            .await
            .unwrap());
        assert!(matches!(
            b.try_lock(&k, "t3", Duration::from_secs(1)).await.unwrap(),
            LockAttempt::Held { .. }
        ));
        assert!(b
            .extend_lock(&k, "t2", Duration::from_secs(2))
            .await
            .unwrap());
        assert!(!b
            .extend_lock(&k, "t1", Duration::from_secs(2))
            .await
            .unwrap());
        assert!(b
            .store_and_unlock(&k, "t2", b"v", Duration::from_secs(1))
            .await
            .unwrap());
        assert_eq!(
            b.try_lock(&k, "t3", Duration::from_secs(1)).await.unwrap(),
            LockAttempt::Acquired
        );
    }

    #[tokio::test]
    async fn store_wakes_subscribers() {
        let b = MemoryBackend::new();
        let k = key("w");
        let mut sub = b.subscribe(&k).await.unwrap();
        b.store_and_unlock(&k, "none", b"v", Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), sub.woken())
            .await
            .unwrap();
    }
}
