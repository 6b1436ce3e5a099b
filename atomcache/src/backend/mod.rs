//! The storage contract ([`Backend`]) and the in-process wake-up hub shared by the backends.
//!
//! A backend stores bytes with an expiry, owns locks that carry a random token, and publishes a
//! wake-up when an entry is stored or a lock is released. Everything above it (single flight,
//! the locked path, codecs, fail-open) lives in the crate and is the same for every backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{EntryKey, Error};

pub(crate) mod breaker;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// The answer to a lock attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller now holds the lock.
    Acquired,
    /// Someone else holds it, for at most this much longer.
    Held {
        /// Remaining lifetime of the other holder's lock.
        remaining: Duration,
    },
}

/// A key-value store with expiring values, token locks and wake-ups.
///
/// Implement it to put atomcache on another store; [`MemoryBackend`](crate::MemoryBackend) is a
/// complete, small example. All methods must answer within a bounded time (the crate adds its
/// own timeout on top) and must never panic on any stored bytes.
///
/// ```
/// use atomcache::{Backend, EntryKey, MemoryBackend};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let backend = MemoryBackend::new();
/// let key = EntryKey::new("", "demo", "1");
/// backend.set(&key, b"bytes", Duration::from_secs(10)).await?;
/// assert_eq!(backend.get(&key).await?.as_deref(), Some(&b"bytes"[..]));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads the bytes stored for the entry.
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error>;

    /// Stores bytes for the entry with an expiry, unconditionally, and wakes its waiters.
    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error>;

    /// Removes the entry's value.
    async fn delete(&self, key: &EntryKey) -> Result<(), Error>;

    /// The remaining lifetime of the entry's value, `None` when there is none.
    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error>;

    /// Takes the entry's lock with `token` for `ttl`, unless someone else holds it.
    async fn try_lock(
        &self,
        key: &EntryKey,
        token: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, Error>;

    /// In one atomic step: stores the value with its expiry, deletes the lock if it still holds
    /// `token`, and wakes the entry's waiters. Returns whether the lock was still ours.
    async fn store_and_unlock(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error>;

    /// Deletes the lock if it holds `token` and wakes the waiters. Returns whether it did.
    async fn unlock(&self, key: &EntryKey, token: &str) -> Result<bool, Error>;

    /// Extends the lock to `ttl` from now if it still holds `token`. Returns whether it did.
    async fn extend_lock(&self, key: &EntryKey, token: &str, ttl: Duration) -> Result<bool, Error>;

    /// Starts listening for the entry's wake-ups. When this returns, every wake-up published
    /// afterwards reaches the subscription: callers subscribe first and then look at the value.
    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, Error>;

    /// Stops background work and closes connections. Called by
    /// [`Runtime::shutdown`](crate::Runtime::shutdown).
    async fn shutdown(&self) {}

    /// Prepended to every key this backend stores (e.g. `"myapp:"`). Default: none.
    fn key_prefix(&self) -> &str {
        ""
    }
}

/// A registration for one entry's wake-ups; dropping it unregisters.
///
/// Built by a backend through [`WakeHub::register`].
pub struct Subscription {
    rx: watch::Receiver<u64>,
    _registration: Registration,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self._registration.channel)
            .finish()
    }
}

impl Subscription {
    /// Resolves at the next wake-up after the subscription was made (or after the previous
    /// `woken` returned). A wake-up that came in between is not lost.
    pub async fn woken(&mut self) {
        if self.rx.changed().await.is_err() {
            // The hub is gone (backend shut down): nothing will wake us; wait for the caller's timeout.
            std::future::pending::<()>().await;
        }
    }
}

struct Slot {
    tx: watch::Sender<u64>,
    subscribers: usize,
    /// Backend-specific readiness (Redis: the SUBSCRIBE was confirmed).
    ready: Arc<tokio::sync::OnceCell<()>>,
}

/// In-process fan-out of wake-ups: one slot per channel, shared by all local waiters.
///
/// A backend calls [`wake`](WakeHub::wake) when a wake-up for a channel arrives and
/// [`register`](WakeHub::register) to build a [`Subscription`].
#[derive(Clone, Default)]
pub struct WakeHub {
    inner: Arc<Mutex<HashMap<String, Slot>>>,
}

impl std::fmt::Debug for WakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeHub")
            .field("channels", &self.lock().len())
            .finish()
    }
}

/// Drops a subscriber from its slot.
struct Registration {
    hub: WakeHub,
    channel: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        if let Some(slot) = map.get_mut(&self.channel) {
            slot.subscribers = slot.subscribers.saturating_sub(1);
        }
    }
}

impl WakeHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map inconsistent: recover.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a local subscriber of `channel`. Returns the subscription and the channel's
    /// readiness cell, which the backend initialises once per channel (e.g. with a confirmed
    /// `SUBSCRIBE`) before the subscription is handed to the caller.
    pub fn register(&self, channel: &str) -> (Subscription, Arc<tokio::sync::OnceCell<()>>) {
        let mut map = self.lock();
        let slot = map.entry(channel.to_owned()).or_insert_with(|| Slot {
            tx: watch::Sender::new(0),
            subscribers: 0,
            ready: Arc::new(tokio::sync::OnceCell::new()),
        });
        slot.subscribers += 1;
        let rx = slot.tx.subscribe();
        let ready = slot.ready.clone();
        drop(map);
        let sub = Subscription {
            rx,
            _registration: Registration {
                hub: self.clone(),
                channel: channel.to_owned(),
            },
        };
        (sub, ready)
    }

    /// Wakes every local subscriber of `channel`.
    pub fn wake(&self, channel: &str) {
        if let Some(slot) = self.lock().get(channel) {
            slot.tx
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes every local subscriber of every channel (e.g. after a reconnect, when wake-ups may
    /// have been lost): they look at the store again.
    pub fn wake_all(&self) {
        for slot in self.lock().values() {
            slot.tx
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Removes the channels nobody listens to and returns their names (the backend
    /// unsubscribes them). Must not run concurrently with a subscription being made ready.
    pub fn take_idle(&self) -> Vec<String> {
        let mut map = self.lock();
        let idle: Vec<String> = map
            .iter()
            .filter(|(_, slot)| slot.subscribers == 0)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &idle {
            map.remove(name);
        }
        idle
    }

    /// Number of channels with a slot (listened to, or idle and not yet swept).
    pub fn channels(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_between_subscribe_and_wait_is_not_lost() {
        let hub = WakeHub::new();
        let (mut sub, _) = hub.register("c");
        hub.wake("c");
        tokio::time::timeout(Duration::from_secs(1), sub.woken())
            .await
            .expect("wake-up lost");
    }

    #[tokio::test]
    async fn wake_all_reaches_every_channel_and_idle_slots_are_swept() {
        let hub = WakeHub::new();
        let (mut a, _) = hub.register("a");
        let (mut b, _) = hub.register("b");
        hub.wake_all();
        tokio::time::timeout(Duration::from_secs(1), a.woken())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), b.woken())
            .await
            .unwrap();
        drop(a);
        assert_eq!(hub.take_idle(), vec!["a".to_string()]);
        assert_eq!(hub.channels(), 1);
    }
}
