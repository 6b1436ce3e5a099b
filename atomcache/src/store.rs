//! The locked path: single flight → GET → lock → compute → store+unlock+notify, with waiters
//! woken by a push, takeover when a holder dies, and fail-open when the store misbehaves.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{Backend, LockAttempt, Subscription};
use crate::codec::{decode_entry, encode_entry, split_entry, Codec, EntryMeta};
use crate::flight::{self, Flights, Joined, Landing};
use crate::stats::{bump, Counters, Stats};
use crate::{EntryKey, Error};

/// Rounds of in-process single flight a caller joins before it walks the locked path itself
/// (bounds how long a caller waits behind leaders that fail or are cancelled).
const MAX_FOLLOW_ROUNDS: usize = 2;
/// Added to a lock's remaining lifetime when waiting for it, so the takeover comes after expiry.
const WAIT_MARGIN: Duration = Duration::from_millis(25);

/// Lifetimes of one cached function or [`Cache`](crate::Cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub exp: Duration,
    pub lock_timeout: Duration,
    /// The longest a caller waits for another holder's computation before it computes without
    /// the cache.
    pub max_wait: Duration,
}

/// Default [`Policy::max_wait`]: 30 s.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// The longest `exp`, `lock_timeout` or `max_wait` accepted: 100 years. Longer lifetimes are
/// not representable by every backend (and are a configuration mistake).
pub const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Policy {
    pub fn new(exp: Duration, lock_timeout: Duration, max_wait: Duration) -> Result<Self, Error> {
        for (name, value) in [
            ("exp", exp),
            ("lock_timeout", lock_timeout),
            ("max_wait", max_wait),
        ] {
            if value > MAX_LIFETIME {
                return Err(Error::InvalidConfig(format!(
                    "{name} ({value:?}) is longer than the longest supported, {MAX_LIFETIME:?} (100 years)"
                )));
            }
        }
        if max_wait.as_millis() == 0 {
            return Err(Error::InvalidConfig(
                "max_wait must be at least one millisecond".into(),
            ));
        }
        if exp.as_millis() == 0 {
            return Err(Error::InvalidConfig(
                "exp must be at least one millisecond".into(),
            ));
        }
        if lock_timeout.as_millis() == 0 {
            return Err(Error::InvalidConfig(
                "lock_timeout must be at least one millisecond".into(),
            ));
        }
        if lock_timeout >= exp {
            return Err(Error::InvalidConfig(format!(
                "lock_timeout ({lock_timeout:?}) must be shorter than exp ({exp:?})"
            )));
        }
        Ok(Policy {
            exp,
            lock_timeout,
            max_wait,
        })
    }
}

/// How a function's output relates to the value that is cached.
///
/// `Plain` caches every output, `Fallible` only `Ok`, `Optional` only `Some`.
pub trait Outcome: Sized {
    /// The cached value.
    type Value: Serialize + DeserializeOwned;
    /// The value to store, if this output is to be stored.
    fn cacheable(&self) -> Option<&Self::Value>;
    /// Rebuilds an output from a cached value.
    fn from_value(value: Self::Value) -> Self;
}

/// A backend plus what one process keeps beside it: in-flight calls and counters.
pub(crate) struct Store {
    pub backend: Arc<dyn Backend>,
    pub prefix: String,
    flights: Flights,
    pub counters: Counters,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, prefix: String) -> Self {
        Store {
            backend,
            prefix,
            flights: Flights::default(),
            counters: Counters::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    pub fn key(&self, namespace: &str, id: &str) -> EntryKey {
        EntryKey::new(&self.prefix, namespace, id)
    }

    /// The full cached path for one call.
    pub async fn resolve<C, O, F, Fut>(&self, key: &EntryKey, policy: Policy, compute: F) -> O
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        // An HTTP request scope (see `crate::http`) may ask for a fresh value and wants the bytes.
        let request = crate::http::claim();
        let fresh_since = request.as_ref().and_then(|r| r.fresh_since());
        let want_raw = request.is_some();
        let (out, raw) = self
            .coalesced::<C, O, F, Fut>(key, policy, fresh_since, want_raw, compute)
            .await;
        if let Some(request) = request {
            request.record(raw, policy.exp);
        }
        out
    }

    /// Single flight in front of the locked path. Fresh requests (no-cache) fly separately: they
    /// must not be answered with the value a normal flight read. The stored bytes are returned
    /// when `want_raw` (and may be otherwise); they are copied into an `Arc` only when someone
    /// wants them.
    async fn coalesced<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        policy: Policy,
        fresh_since: Option<SystemTime>,
        want_raw: bool,
        compute: F,
    ) -> (O, Option<Arc<[u8]>>)
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let flight_key = match fresh_since {
            None => Cow::Borrowed(key.base()),
            Some(_) => Cow::Owned(format!("{}!fresh", key.base())),
        };
        let mut rounds = 0;
        while rounds < MAX_FOLLOW_ROUNDS {
            match self.flights.join(&flight_key) {
                Joined::Follower(rx) => {
                    bump(&self.counters.coalesced);
                    match flight::wait(rx).await {
                        Some(Landing::Value(bytes)) => match decode_entry::<C, O::Value>(&bytes) {
                            Ok((_, value)) => return (O::from_value(value), Some(bytes)),
                            Err(err) => {
                                // The leader validated these bytes; this can only be a codec bug.
                                tracing::warn!(key = key.base(), %err, "shared value did not decode");
                                break;
                            }
                        },
                        Some(Landing::Failed) | None => rounds += 1,
                    }
                }
                Joined::Leader(guard) => {
                    let (out, mut raw) = self
                        .locked_path::<C, O, F, Fut>(key, policy, fresh_since, compute)
                        .await;
                    let mut shared: Option<Arc<[u8]>> = None;
                    guard.land(|| {
                        shared = raw.take().map(Arc::from);
                        shared.clone().map_or(Landing::Failed, Landing::Value)
                    });
                    if want_raw && shared.is_none() {
                        shared = raw.map(Arc::from);
                    }
                    return (out, shared);
                }
            }
        }
        let (out, raw) = self
            .locked_path::<C, O, F, Fut>(key, policy, fresh_since, compute)
            .await;
        (out, raw.filter(|_| want_raw).map(Arc::from))
    }

    /// GET, then on a miss the distributed lock. Returns the output and the stored bytes.
    async fn locked_path<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        policy: Policy,
        fresh_since: Option<SystemTime>,
        compute: F,
    ) -> (O, Option<Vec<u8>>)
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        match self.peek::<C, O>(key, fresh_since).await {
            Ok(Some(hit)) => return hit,
            Ok(None) => bump(&self.counters.misses),
            Err(err) => {
                return self
                    .fail_open::<C, O, F, Fut>(key, "get", err, compute)
                    .await
            }
        }
        let token = new_token();
        let mut subscription: Option<Subscription> = None;
        loop {
            let remaining = match self
                .backend
                .try_lock(key, &token, policy.lock_timeout)
                .await
            {
                Ok(LockAttempt::Acquired) => {
                    drop(subscription);
                    return self
                        .compute_and_store::<C, O, F, Fut>(key, &token, policy, compute)
                        .await;
                }
                Ok(LockAttempt::Held { remaining }) => remaining,
                Err(err) => {
                    return self
                        .fail_open::<C, O, F, Fut>(key, "lock", err, compute)
                        .await
                }
            };
            bump(&self.counters.lock_waits);
            // Subscribe first, then look: a value stored after the look wakes us.
            let sub = match subscription.as_mut() {
                Some(sub) => sub,
                None => match self.backend.subscribe(key).await {
                    Ok(sub) => subscription.insert(sub),
                    Err(err) => {
                        return self
                            .fail_open::<C, O, F, Fut>(key, "subscribe", err, compute)
                            .await
                    }
                },
            };
            match self.peek::<C, O>(key, fresh_since).await {
                Ok(Some(hit)) => return hit,
                Ok(None) => {}
                Err(err) => {
                    return self
                        .fail_open::<C, O, F, Fut>(key, "get", err, compute)
                        .await
                }
            }
            let bound = remaining.min(policy.lock_timeout) + WAIT_MARGIN;
            let woken = tokio::time::timeout(bound, sub.woken()).await.is_ok();
            if woken {
                match self.peek::<C, O>(key, fresh_since).await {
                    Ok(Some(hit)) => return hit,
                    Ok(None) => {}
                    Err(err) => {
                        return self
                            .fail_open::<C, O, F, Fut>(key, "get", err, compute)
                            .await
                    }
                }
            }
            // The holder released without a value, or died: try the lock again. Exactly one
            // waiter wins it; the others wait for that one.
        }
    }

    /// Reads and decodes the entry; bytes that do not decode count as a miss, and so does a
    /// value written no later than `fresh_since` (a no-cache request wants a newer one).
    async fn peek<C: Codec, O: Outcome>(
        &self,
        key: &EntryKey,
        fresh_since: Option<SystemTime>,
    ) -> Result<Option<(O, Option<Vec<u8>>)>, Error> {
        let Some(raw) = self.backend.get(key).await? else {
            return Ok(None);
        };
        if let (Some(since), Ok((meta, _))) = (fresh_since, split_entry::<C>(&raw)) {
            // Millisecond resolution: a value written in the request's own millisecond was
            // computed before the request started.
            if meta.written_at <= since {
                return Ok(None);
            }
        }
        Ok(self
            .decode_or_miss::<C, O::Value>(key, &raw)
            .map(|(_, value)| {
                bump(&self.counters.hits);
                (O::from_value(value), Some(raw))
            }))
    }

    /// Decodes stored bytes; bytes that do not decode are a miss, counted and logged.
    pub fn decode_or_miss<C: Codec, T: DeserializeOwned>(
        &self,
        key: &EntryKey,
        raw: &[u8],
    ) -> Option<(EntryMeta, T)> {
        match decode_entry::<C, T>(raw) {
            Ok(decoded) => Some(decoded),
            Err(err) => {
                bump(&self.counters.decode_errors);
                tracing::warn!(key = key.base(), %err, "stored bytes did not decode; treating as a miss");
                None
            }
        }
    }

    async fn compute_and_store<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        token: &str,
        policy: Policy,
        compute: F,
    ) -> (O, Option<Vec<u8>>)
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let guard = LockGuard {
            backend: Some(self.backend.clone()),
            key,
            token,
        };
        let started = Instant::now();
        let out = compute().await;
        let elapsed = started.elapsed();
        bump(&self.counters.computations);
        let bytes = match out.cacheable().map(|v| encode_entry::<C, _>(v, elapsed)) {
            Some(Ok(bytes)) => bytes,
            Some(Err(err)) => {
                bump(&self.counters.store_failures);
                tracing::warn!(key = key.base(), %err, "computed value did not encode; not cached");
                guard.release().await;
                return (out, None);
            }
            None => {
                guard.release().await;
                return (out, None);
            }
        };
        match self
            .backend
            .store_and_unlock(key, token, &bytes, policy.exp)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = key.base(),
                ?elapsed,
                lock_timeout = ?policy.lock_timeout,
                "the computation outlived its lock; the value was stored, but another caller may have computed too"
            ),
            Err(err) => {
                bump(&self.counters.backend_errors);
                bump(&self.counters.store_failures);
                tracing::warn!(key = key.base(), %err, "could not store the computed value");
            }
        }
        guard.disarm();
        (out, Some(bytes))
    }

    /// The store failed: run the computation anyway and do not touch the store again.
    async fn fail_open<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        step: &'static str,
        err: Error,
        compute: F,
    ) -> (O, Option<Vec<u8>>)
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        bump(&self.counters.backend_errors);
        tracing::warn!(key = key.base(), step, %err, "cache backend failed; computing without the cache");
        let started = Instant::now();
        let out = compute().await;
        bump(&self.counters.computations);
        // Still share the value with this process's followers.
        let shared = out
            .cacheable()
            .and_then(|v| encode_entry::<C, _>(v, started.elapsed()).ok());
        (out, shared)
    }
}

/// Releases a held lock when the computation panics or the caller is cancelled.
struct LockGuard<'a> {
    backend: Option<Arc<dyn Backend>>,
    key: &'a EntryKey,
    token: &'a str,
}

impl LockGuard<'_> {
    async fn release(mut self) {
        if let Some(backend) = self.backend.take() {
            if let Err(err) = backend.unlock(self.key, self.token).await {
                tracing::warn!(key = self.key.base(), %err, "could not release the lock; it will expire");
            }
        }
    }

    fn disarm(mut self) {
        self.backend = None;
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        let (key, token) = (self.key.clone(), self.token.to_owned());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(err) = backend.unlock(&key, &token).await {
                        tracing::warn!(key = key.base(), %err, "could not release an abandoned lock; it will expire");
                    }
                });
            }
            Err(_) => tracing::warn!(
                key = key.base(),
                "no runtime to release an abandoned lock; it will expire"
            ),
        }
    }
}

/// 128 random bits, hex.
pub(crate) fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}
