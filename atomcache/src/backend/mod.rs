//! The storage contract ([`Backend`]) and the in-process wake-up hub shared by the backends.
//!
//! A backend stores bytes with an expiry and keeps, beside each value, a *lease*: the lock of
//! the one caller computing the value, named by a random token. Its operations are the steps of
//! the lease protocol, each one atomic:
//!
//! - [`get_or_lease`](Backend::get_or_lease): the value if there is one, otherwise the lease
//!   (taken in the same step that saw the miss), otherwise who holds it and for how long;
//! - [`renew_lease`](Backend::renew_lease): the holder keeps its lease alive while it computes;
//! - [`store_leased`](Backend::store_leased): the value is written only while the caller's lease
//!   is still the current one, which ends the lease and wakes the waiters;
//! - [`release_lease`](Backend::release_lease): the holder gives up (failed or cancelled) and
//!   wakes the waiters; a failure is remembered briefly so they do not queue behind it;
//! - [`set`](Backend::set) and [`invalidate`](Backend::invalidate) revoke any lease, so a fill
//!   that started before them is refused.
//!
//! Everything above it (single flight, renewal, waiting, codecs, fail-open) lives in the crate
//! and is the same for every backend.

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
#[cfg(feature = "redis")]
mod sentinel;

/// Another caller's lease on an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// How long the lease still lives unless its holder renews it.
    pub remaining: Duration,
    /// The holder's token (opaque: whatever the lease key holds).
    pub token: String,
    /// The token of the last lease on this entry that ended in a failed computation, if that
    /// was recent (see [`Backend::release_lease`]).
    pub last_failed: Option<String>,
}

/// The answer of [`Backend::get_or_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The stored bytes.
    Value(Vec<u8>),
    /// There was no value: the caller now holds the lease.
    Leased,
    /// There was no value and another caller holds the lease.
    Held(Holder),
}

/// The answer of [`Backend::try_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The caller now holds the lease.
    Acquired,
    /// Another caller holds it.
    Held(Holder),
}

/// Why a holder gives its lease up without storing a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The computation failed (`Err`, `None`, panic, a value that does not encode). The
    /// backend remembers the token for `remember`, so that the callers that waited on this
    /// lease compute on their own instead of queueing behind the next holder.
    Failed {
        /// How long the failure is remembered.
        remember: Duration,
    },
    /// The holder was cancelled: one waiter takes over.
    Abandoned,
}

/// A key-value store with expiring values, leases and wake-ups.
///
/// Implement it to put atomcache on another store; [`MemoryBackend`](crate::MemoryBackend) is a
/// complete, small example. Every method must be atomic with respect to the others on the same
/// entry, answer within a bounded time (the crate adds its own timeout on top), and never panic
/// on any stored bytes. Every method that ends or revokes a lease, or writes a value, wakes the
/// entry's waiters.
///
/// ```
/// use atomcache::{Backend, EntryKey, Lookup, MemoryBackend};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let backend = MemoryBackend::new();
/// let key = EntryKey::new("", "demo", "1");
/// let lease = Duration::from_secs(5);
/// // A miss takes the lease in the same step.
/// assert_eq!(backend.get_or_lease(&key, "token-a", lease).await?, Lookup::Leased);
/// assert!(matches!(backend.get_or_lease(&key, "token-b", lease).await?, Lookup::Held(_)));
/// // The holder stores while its lease is current; the next look finds the value.
/// assert!(backend.store_leased(&key, "token-a", b"bytes", Duration::from_secs(60)).await?);
/// assert_eq!(backend.get_or_lease(&key, "token-b", lease).await?, Lookup::Value(b"bytes".to_vec()));
/// // An invalidation revokes a lease in flight: its store is refused.
/// assert_eq!(backend.get_or_lease(&key, "token-c", lease).await?, Lookup::Value(b"bytes".to_vec()));
/// backend.invalidate(&key).await?;
/// assert_eq!(backend.get_or_lease(&key, "token-c", lease).await?, Lookup::Leased);
/// backend.invalidate(&key).await?;
/// assert!(!backend.store_leased(&key, "token-c", b"stale", Duration::from_secs(60)).await?);
/// assert_eq!(backend.get(&key).await?, None);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads the bytes stored for the entry (the hit path: one plain read).
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error>;

    /// In one atomic step: the value if there is one; otherwise takes the lease with `token`
    /// for `lease` unless another caller holds it; otherwise describes the holder. A lease
    /// without an expiry (written by something else) is given one of `lease`, so it cannot
    /// block anyone for longer.
    async fn get_or_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<Lookup, Error>;

    /// Takes the lease whether or not a value is stored (a refresh of a value that is still
    /// served). Same rules as [`get_or_lease`](Backend::get_or_lease) otherwise.
    async fn try_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<LeaseAttempt, Error>;

    /// Extends the lease to `lease` from now if `token` still holds it. Returns whether it did;
    /// `false` means the lease was revoked or lapsed, and a store with it will be refused.
    async fn renew_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<bool, Error>;

    /// In one atomic step, only if `token` still holds the lease: stores the value with its
    /// expiry, ends the lease, forgets any remembered failure and wakes the waiters. Returns
    /// whether it stored; `false` (the lease was revoked by [`set`](Backend::set) /
    /// [`invalidate`](Backend::invalidate), or lapsed) writes nothing.
    async fn store_leased(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error>;

    /// Ends the lease if `token` still holds it, remembers a failure (see [`Release`]) and
    /// wakes the waiters. Returns whether the lease was still held.
    async fn release_lease(&self, key: &EntryKey, token: &str, why: Release)
        -> Result<bool, Error>;

    /// Stores bytes unconditionally, revokes any lease (a fill in flight will be refused) and
    /// wakes the waiters.
    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error>;

    /// Removes the value, revokes any lease (a fill in flight will be refused) and wakes the
    /// waiters, who look again.
    async fn invalidate(&self, key: &EntryKey) -> Result<(), Error>;

    /// The remaining lifetime of the entry's value, `None` when there is none.
    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error>;

    /// Starts listening for the entry's wake-ups. When this returns, every wake-up published
    /// afterwards reaches the subscription: callers subscribe first and then look.
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
    /// The channel's readiness when this subscription was made; replaced in the hub by
    /// [`WakeHub::forget`].
    ready: Arc<tokio::sync::OnceCell<()>>,
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
    ///
    /// While the hub is [unsettled](WakeHub::unsettle) it also resolves every
    /// [`UNSETTLED_POLL`], since a wake-up may then be lost: the caller looks again.
    pub async fn woken(&mut self) {
        let poll = self
            ._registration
            .hub
            .unsettled_for()
            .map(|left| left.min(UNSETTLED_POLL));
        let changed = async {
            if self.rx.changed().await.is_err() {
                // The hub is gone (backend shut down): nothing will wake us; wait for the
                // caller's timeout.
                std::future::pending::<()>().await;
            }
        };
        match poll {
            Some(poll) => {
                let _ = tokio::time::timeout(poll, changed).await;
            }
            None => changed.await,
        }
    }

    /// Whether the backend lost this subscription's channel since it was made
    /// ([`WakeHub::forget`]): wake-ups may no longer arrive, so the caller subscribes again.
    pub fn lapsed(&self) -> bool {
        let hub = self._registration.hub.lock();
        hub.get(&self._registration.channel)
            .is_none_or(|slot| !Arc::ptr_eq(&slot.ready, &self.ready))
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
    /// Until when wake-ups may be lost ([`WakeHub::unsettle`]).
    unsettled_until: Arc<Mutex<Option<tokio::time::Instant>>>,
}

/// While a hub is unsettled, its subscribers look again at least this often.
pub const UNSETTLED_POLL: Duration = Duration::from_millis(50);

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
            ready: ready.clone(),
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

    /// The backend lost `channel` (e.g. the server dropped it when its slot moved): the next
    /// [`register`](Self::register) makes it ready again, and its subscribers are woken to look
    /// again and subscribe anew ([`Subscription::lapsed`]). Returns whether the channel was known.
    pub fn forget(&self, channel: &str) -> bool {
        match self.lock().get_mut(channel) {
            Some(slot) => {
                slot.ready = Arc::new(tokio::sync::OnceCell::new());
                slot.tx
                    .send_modify(|generation| *generation = generation.wrapping_add(1));
                true
            }
            None => false,
        }
    }

    /// [`forget`](Self::forget) for every channel, e.g. when the backend replaced its connection
    /// by one to another server.
    pub fn forget_all(&self) {
        for slot in self.lock().values_mut() {
            slot.ready = Arc::new(tokio::sync::OnceCell::new());
            slot.tx
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wake-ups may be lost for a while (e.g. slots of a cluster are moving, so a wake-up may be
    /// published on a node where the waiter is not subscribed): wakes every subscriber, and for
    /// `period` makes [`Subscription::woken`] resolve at least every [`UNSETTLED_POLL`], so
    /// waiters look again instead of waiting for a wake-up that may not come.
    pub fn unsettle(&self, period: Duration) {
        let until = tokio::time::Instant::now() + period;
        {
            let mut current = self
                .unsettled_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if current.is_none_or(|c| c < until) {
                *current = Some(until);
            }
        }
        self.wake_all();
    }

    /// How much longer the hub is unsettled, if it is.
    fn unsettled_for(&self) -> Option<Duration> {
        let until = (*self
            .unsettled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()))?;
        let now = tokio::time::Instant::now();
        (until > now).then(|| until - now)
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

    #[tokio::test]
    async fn a_forgotten_channel_wakes_its_subscribers_and_is_made_ready_again() {
        let hub = WakeHub::new();
        let (mut a, ready) = hub.register("a");
        ready.set(()).unwrap();
        let (b, _) = hub.register("b");
        assert!(!a.lapsed());
        assert!(hub.forget("a"));
        assert!(!hub.forget("unknown"));
        tokio::time::timeout(Duration::from_secs(1), a.woken())
            .await
            .expect("forget wakes the subscribers");
        assert!(a.lapsed());
        assert!(!b.lapsed());
        let (again, ready) = hub.register("a");
        assert!(ready.get().is_none(), "the next subscriber subscribes anew");
        assert!(!again.lapsed());
        hub.forget_all();
        assert!(again.lapsed() && b.lapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsettled_hub_makes_its_subscribers_look_again_until_it_settles() {
        let hub = WakeHub::new();
        let (mut sub, _) = hub.register("c");
        // Settled: nothing wakes the subscriber.
        assert!(tokio::time::timeout(Duration::from_secs(60), sub.woken())
            .await
            .is_err());
        hub.unsettle(Duration::from_secs(1));
        sub.woken().await; // the unsettle itself
        let started = tokio::time::Instant::now();
        sub.woken().await;
        assert_eq!(started.elapsed(), UNSETTLED_POLL);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(tokio::time::timeout(Duration::from_secs(60), sub.woken())
            .await
            .is_err());
    }
}
