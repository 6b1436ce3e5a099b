//! The embedded backend: one process, no server, the same semantics as Redis (expiry, leases,
//! revocation, wake-ups). It is what atomcache uses when [`init`](crate::init) was never called.
//! Time is tokio's clock, so expiry follows a paused clock in tests (identical otherwise).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backend, Holder, LeaseAttempt, Lookup, Release, Subscription, WakeHub};
use crate::{EntryKey, Error};

/// An in-process store with the semantics of the Redis backend (expiry, leases, wake-ups).
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

/// Everything of one entry, under its value key.
#[derive(Default)]
struct Slot {
    value: Option<(Arc<[u8]>, Instant)>,
    lease: Option<(String, Instant)>,
    failed: Option<(String, Instant)>,
}

impl Slot {
    /// Drops what has expired; `true` when nothing is left.
    fn expire(&mut self, now: Instant) -> bool {
        if matches!(self.value, Some((_, until)) if until <= now) {
            self.value = None;
        }
        if matches!(self.lease, Some((_, until)) if until <= now) {
            self.lease = None;
        }
        if matches!(self.failed, Some((_, until)) if until <= now) {
            self.failed = None;
        }
        self.value.is_none() && self.lease.is_none() && self.failed.is_none()
    }

    fn holder(&self, now: Instant) -> Option<Holder> {
        let (token, until) = self.lease.as_ref()?;
        Some(Holder {
            remaining: until.saturating_duration_since(now),
            token: token.clone(),
            last_failed: self.failed.as_ref().map(|(t, _)| t.clone()),
        })
    }

    fn holds(&self, token: &str) -> bool {
        matches!(&self.lease, Some((t, _)) if t == token)
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Slot>,
    /// Map size after the last sweep; the next sweep runs when it doubles.
    swept_at_len: usize,
}

impl State {
    /// The live slot of `key`, created when missing.
    fn slot(&mut self, key: &str, now: Instant) -> &mut Slot {
        if self.entries.len() >= 2 * self.swept_at_len.max(512) {
            self.entries.retain(|_, slot| !slot.expire(now));
            self.swept_at_len = self.entries.len();
        }
        let slot = self.entries.entry(key.to_owned()).or_default();
        slot.expire(now);
        slot
    }

    /// The live slot of `key`, if there is one (no insertion).
    fn existing(&mut self, key: &str, now: Instant) -> Option<&mut Slot> {
        let slot = self.entries.get_mut(key)?;
        slot.expire(now);
        Some(slot)
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
fn until(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(crate::store::MAX_LIFETIME))
        .unwrap_or(now)
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.state().entries.len())
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
            .entries
            .values()
            .filter(|slot| matches!(slot.value, Some((_, until)) if until > now))
            .count()
    }

    /// Whether no live value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, key: &EntryKey) {
        self.inner.hub.wake(&key.channel());
    }

    /// Takes the lease if it is free; otherwise describes the holder.
    fn lease(slot: &mut Slot, token: &str, lease: Duration, now: Instant) -> LeaseAttempt {
        match slot.holder(now) {
            Some(holder) => LeaseAttempt::Held(holder),
            None => {
                slot.lease = Some((token.to_owned(), until(now, lease)));
                LeaseAttempt::Acquired
            }
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .existing(key.value(), now)
            .and_then(|slot| slot.value.as_ref())
            .map(|(v, _)| v.to_vec()))
    }

    async fn get_or_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<Lookup, Error> {
        let now = Instant::now();
        let mut state = self.state();
        let slot = state.slot(key.value(), now);
        if let Some((value, _)) = &slot.value {
            return Ok(Lookup::Value(value.to_vec()));
        }
        Ok(match Self::lease(slot, token, lease, now) {
            LeaseAttempt::Acquired => Lookup::Leased,
            LeaseAttempt::Held(holder) => Lookup::Held(holder),
        })
    }

    async fn try_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<LeaseAttempt, Error> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(Self::lease(state.slot(key.value(), now), token, lease, now))
    }

    async fn renew_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let mut state = self.state();
        match state.existing(key.value(), now) {
            Some(slot) if slot.holds(token) => {
                slot.lease = Some((token.to_owned(), until(now, lease)));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn store_leased(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let stored = {
            let mut state = self.state();
            match state.existing(key.value(), now) {
                Some(slot) if slot.holds(token) => {
                    slot.value = Some((Arc::from(value), until(now, exp)));
                    slot.lease = None;
                    slot.failed = None;
                    true
                }
                _ => false,
            }
        };
        if stored {
            self.wake(key);
        }
        Ok(stored)
    }

    async fn release_lease(
        &self,
        key: &EntryKey,
        token: &str,
        why: Release,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let released = {
            let mut state = self.state();
            match state.existing(key.value(), now) {
                Some(slot) if slot.holds(token) => {
                    slot.lease = None;
                    if let Release::Failed { remember } = why {
                        slot.failed = Some((token.to_owned(), until(now, remember)));
                    }
                    true
                }
                _ => false,
            }
        };
        if released {
            self.wake(key);
        }
        Ok(released)
    }

    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error> {
        let now = Instant::now();
        {
            let mut state = self.state();
            let slot = state.slot(key.value(), now);
            slot.value = Some((Arc::from(value), until(now, exp)));
            slot.lease = None;
            slot.failed = None;
        }
        self.wake(key);
        Ok(())
    }

    async fn invalidate(&self, key: &EntryKey) -> Result<(), Error> {
        self.state().entries.remove(key.value());
        self.wake(key);
        Ok(())
    }

    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .existing(key.value(), now)
            .and_then(|slot| slot.value.as_ref())
            .map(|(_, until)| until.saturating_duration_since(now)))
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

    const LEASE: Duration = Duration::from_secs(1);
    const EXP: Duration = Duration::from_secs(10);

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
    async fn a_lease_is_exclusive_and_token_checked() {
        let b = MemoryBackend::new();
        let k = key("l");
        assert_eq!(
            b.get_or_lease(&k, "t1", Duration::from_millis(40))
                .await
                .unwrap(),
            Lookup::Leased
        );
        let Lookup::Held(holder) = b.get_or_lease(&k, "t2", LEASE).await.unwrap() else {
            panic!("t1 holds the lease")
        };
        assert_eq!(holder.token, "t1");
        assert!(holder.remaining <= Duration::from_millis(40));
        assert!(!b.release_lease(&k, "t2", Release::Abandoned).await.unwrap());
        // t1's lease lapses; t2 takes it; the slow t1 can neither store nor renew.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            b.get_or_lease(&k, "t2", LEASE).await.unwrap(),
            Lookup::Leased
        );
        assert!(!b.store_leased(&k, "t1", b"late", EXP).await.unwrap());
        assert!(!b.renew_lease(&k, "t1", LEASE).await.unwrap());
        assert!(b.renew_lease(&k, "t2", LEASE).await.unwrap());
        assert!(b.store_leased(&k, "t2", b"v", EXP).await.unwrap());
        assert_eq!(
            b.get_or_lease(&k, "t3", LEASE).await.unwrap(),
            Lookup::Value(b"v".to_vec())
        );
    }

    #[tokio::test]
    async fn set_and_invalidate_revoke_a_lease_in_flight() {
        let b = MemoryBackend::new();
        let k = key("r");
        assert_eq!(
            b.get_or_lease(&k, "t1", LEASE).await.unwrap(),
            Lookup::Leased
        );
        b.set(&k, b"fresh", EXP).await.unwrap();
        assert!(!b.store_leased(&k, "t1", b"stale", EXP).await.unwrap());
        assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"fresh"[..]));

        assert_eq!(
            b.try_lease(&k, "t2", LEASE).await.unwrap(),
            LeaseAttempt::Acquired
        );
        b.invalidate(&k).await.unwrap();
        assert!(!b.store_leased(&k, "t2", b"stale", EXP).await.unwrap());
        assert_eq!(b.get(&k).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failure_is_remembered_for_the_next_holders_waiters() {
        let b = MemoryBackend::new();
        let k = key("f");
        assert_eq!(
            b.get_or_lease(&k, "t1", LEASE).await.unwrap(),
            Lookup::Leased
        );
        let remember = Release::Failed {
            remember: Duration::from_millis(40),
        };
        assert!(b.release_lease(&k, "t1", remember).await.unwrap());
        assert_eq!(
            b.get_or_lease(&k, "t2", LEASE).await.unwrap(),
            Lookup::Leased
        );
        let Lookup::Held(holder) = b.get_or_lease(&k, "t3", LEASE).await.unwrap() else {
            panic!("t2 holds the lease")
        };
        assert_eq!(holder.last_failed.as_deref(), Some("t1"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let Lookup::Held(holder) = b.get_or_lease(&k, "t3", LEASE).await.unwrap() else {
            panic!("t2 still holds the lease")
        };
        assert_eq!(holder.last_failed, None);
    }

    #[tokio::test]
    async fn huge_lifetimes_do_not_panic() {
        let b = MemoryBackend::new();
        let k = key("huge");
        b.set(&k, b"v", Duration::MAX).await.unwrap();
        assert!(b.get(&k).await.unwrap().is_some());
        assert_eq!(
            b.try_lease(&k, "t", Duration::MAX).await.unwrap(),
            LeaseAttempt::Acquired
        );
        assert!(b.renew_lease(&k, "t", Duration::MAX).await.unwrap());
    }

    #[tokio::test]
    async fn store_wakes_subscribers() {
        let b = MemoryBackend::new();
        let k = key("w");
        let mut sub = b.subscribe(&k).await.unwrap();
        b.set(&k, b"v", EXP).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), sub.woken())
            .await
            .unwrap();
    }
}
