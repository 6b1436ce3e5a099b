//! The locked path, top to bottom: single flight → `GET` → on a miss, look and take the lease
//! in one step → the holder computes while renewing its lease, then stores only if its lease is
//! still current (which wakes the waiters) → the waiters, woken by a push, look again.
//!
//! The rules it keeps (see DESIGN.md):
//! - one computation per key per lease, whatever the arrival order: a miss and its lease attempt
//!   are one atomic step, so a caller that missed just before a store finds the value there;
//! - `set`/`invalidate` revoke the lease, so a fill that started before them is refused, and
//!   the in-process followers of that fill look again;
//! - failures never queue: a failed computation answers its in-process followers at once (with
//!   the failure itself when the output type can share it, otherwise each runs its own attempt),
//!   and the waiters in other replicas that followed the failed lease compute on their own
//!   instead of waiting for the next holder (one of them takes the next lease);
//! - every wait is bounded by the holder's lease as last renewed and by `max_wait`, after
//!   which the caller computes without the cache;
//! - the cache never costs the caller its answer: any store error runs the computation anyway.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{Backend, LeaseAttempt, Lookup, Subscription};
use crate::codec::{decode_entry, encode_entry, split_entry, Codec, EntryMeta};
pub use crate::flight::SharedFailure;
use crate::flight::{self, Flights, Joined, Landing};
use crate::lease::{new_token, with_renewal, LeaseGuard};
use crate::stats::{bump, Counters, Stats};
use crate::{EntryKey, Error};

/// Added to a lease's remaining lifetime when waiting for it, so the look after a silent
/// holder comes after its lease lapsed.
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

/// How a non-cacheable output (a failure) reaches the callers that waited on the same
/// computation in this process: `share` erases it, `unshare` rebuilds a copy for each follower.
/// Without it, each follower runs its own attempt (concurrently: failures never queue).
pub struct Sharing<O> {
    share: fn(&O) -> Option<SharedFailure>,
    unshare: fn(&SharedFailure) -> Option<O>,
}

impl<O> Clone for Sharing<O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O> Copy for Sharing<O> {}

impl<O> Sharing<O> {
    /// Failures are not shared: each follower of a failed call runs its own attempt.
    pub const fn none() -> Self {
        Sharing {
            share: |_| None,
            unshare: |_| None,
        }
    }

    /// Shares failures through these two functions.
    pub const fn new(
        share: fn(&O) -> Option<SharedFailure>,
        unshare: fn(&SharedFailure) -> Option<O>,
    ) -> Self {
        Sharing { share, unshare }
    }
}

/// A backend plus what one process keeps beside it: in-flight calls and counters.
pub(crate) struct Store {
    pub backend: Arc<dyn Backend>,
    pub prefix: String,
    flights: Flights,
    pub counters: Counters,
}

/// Whether the followers of a leader may take its answer, or must look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Share,
    /// The leader's value was refused (its lease was revoked or lapsed).
    Retry,
}

/// What one call of the locked path produced: the output, the stored bytes when there are any,
/// and whether followers may share it.
type Answer<O> = (O, Option<Vec<u8>>, Fate);

/// The result of looking at an entry on a miss.
enum Look<O> {
    Hit(O, Vec<u8>),
    Leased,
    Held(crate::backend::Holder),
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

    /// Removes the entry's value and revokes any lease in flight, and ends this process's
    /// flight of it for new callers.
    pub async fn invalidate(&self, key: &EntryKey) -> Result<(), Error> {
        let result = self.backend.invalidate(key).await;
        self.flights.detach(key.base());
        result
    }

    /// Stores a value, revoking any lease in flight, and ends this process's flight of it.
    pub async fn set(&self, key: &EntryKey, bytes: &[u8], exp: Duration) -> Result<(), Error> {
        let result = self.backend.set(key, bytes, exp).await;
        self.flights.detach(key.base());
        result
    }

    /// The full cached path for one call.
    pub async fn resolve<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        policy: Policy,
        sharing: Sharing<O>,
        compute: F,
    ) -> O
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
            .coalesced::<C, O, F, Fut>(key, policy, sharing, fresh_since, want_raw, compute)
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
        sharing: Sharing<O>,
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
        // Followers are bounded by `max_wait` too: their leader may be the lease holder, whose
        // computation can outlive it. (Read the clock only when following: not on a hit.)
        let mut deadline: Option<Instant> = None;
        loop {
            let guard = match self.flights.join(&flight_key) {
                Joined::Leader(guard) => guard,
                Joined::Follower(rx) => {
                    bump(&self.counters.coalesced);
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + policy.max_wait);
                    let Ok(landing) = tokio::time::timeout_at(deadline, flight::wait(rx)).await
                    else {
                        self.gave_up(key, policy);
                        return self.own_attempt::<C, O, F, Fut>(compute).await;
                    };
                    match landing {
                        Some(Landing::Value(bytes)) => {
                            if let Some((_, value)) =
                                self.decode_or_miss::<C, O::Value>(key, &bytes)
                            {
                                return (O::from_value(value), Some(bytes));
                            }
                            // The leader validated these bytes; only a codec bug gets here.
                            return self.own_attempt::<C, O, F, Fut>(compute).await;
                        }
                        Some(Landing::Failed(shared)) => {
                            if let Some(out) = shared.as_ref().and_then(sharing.unshare) {
                                bump(&self.counters.shared_failures);
                                return (out, None);
                            }
                            return self.own_attempt::<C, O, F, Fut>(compute).await;
                        }
                        // Revoked, or the leader was cancelled: a new round.
                        Some(Landing::Retry) | None => continue,
                    }
                }
            };
            let (out, mut raw, fate) = self
                .locked_path::<C, O, F, Fut>(key, policy, fresh_since, compute)
                .await;
            let mut shared: Option<Arc<[u8]>> = None;
            guard.land(|| match (fate, raw.take()) {
                (Fate::Retry, bytes) => {
                    raw = bytes;
                    Landing::Retry
                }
                (Fate::Share, Some(bytes)) => {
                    let bytes: Arc<[u8]> = Arc::from(bytes);
                    shared = Some(bytes.clone());
                    Landing::Value(bytes)
                }
                (Fate::Share, None) => Landing::Failed((sharing.share)(&out)),
            });
            if want_raw && shared.is_none() {
                shared = raw.map(Arc::from);
            }
            return (out, shared);
        }
    }

    /// `GET`; on a miss, the lease protocol. Returns the output, the stored bytes and what the
    /// followers may do with them.
    async fn locked_path<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        policy: Policy,
        fresh_since: Option<SystemTime>,
        compute: F,
    ) -> Answer<O>
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        // The hit path: one GET.
        // Bytes this caller found unusable (undecodable, or too old for a no-cache request):
        // it replaces them under a lease, and does not decode (nor count) them again.
        let mut rejected: Option<Vec<u8>> = None;
        match self.backend.get(key).await {
            Ok(Some(raw)) => match self.usable::<C, O>(key, &raw, fresh_since) {
                Some(out) => {
                    bump(&self.counters.hits);
                    return (out, Some(raw), Fate::Share);
                }
                None => rejected = Some(raw),
            },
            Ok(None) => {}
            Err(err) => {
                return self
                    .fail_open::<C, O, F, Fut>(key, "get", err, compute)
                    .await
            }
        }
        bump(&self.counters.misses);

        let token = new_token();
        let deadline = Instant::now() + policy.max_wait;
        let mut subscription: Option<Subscription> = None;
        let mut waited = false;
        // The lease this caller waits on: if it ends in a failure, the caller computes on its
        // own rather than queueing behind the next holder.
        let mut followed: Option<String> = None;
        // Bytes the GET found unusable are replaced: the first look asks for the lease alone.
        let mut replace = rejected.is_some();
        loop {
            let first_replace = std::mem::take(&mut replace);
            let holder = match self
                .look::<C, O>(
                    key,
                    &token,
                    policy,
                    fresh_since,
                    &mut rejected,
                    first_replace,
                )
                .await
            {
                Ok(Look::Hit(out, raw)) => {
                    bump(&self.counters.hits);
                    return (out, Some(raw), Fate::Share);
                }
                Ok(Look::Leased) => {
                    return self
                        .compute_leased::<C, O, F, Fut>(key, &token, policy, compute)
                        .await
                }
                Ok(Look::Held(holder)) => holder,
                Err(err) => {
                    return self
                        .fail_open::<C, O, F, Fut>(key, "lease", err, compute)
                        .await
                }
            };
            if let Some(previous) = &followed {
                if holder.token != *previous && holder.last_failed.as_ref() == Some(previous) {
                    tracing::debug!(
                        key = key.base(),
                        "the computation this caller waited for failed; computing on its own"
                    );
                    return self.own_attempt_answer::<C, O, F, Fut>(compute).await;
                }
            }
            followed = Some(holder.token);
            // Subscribe first, then look again: a release or store between the first look and
            // the subscription is seen by that second look.
            let Some(sub) = subscription.as_mut() else {
                if !waited {
                    waited = true;
                    bump(&self.counters.lock_waits);
                }
                match self.backend.subscribe(key).await {
                    Ok(sub) => subscription = Some(sub),
                    Err(err) => {
                        return self
                            .fail_open::<C, O, F, Fut>(key, "subscribe", err, compute)
                            .await
                    }
                }
                continue;
            };
            let now = Instant::now();
            if now >= deadline {
                self.gave_up(key, policy);
                return self.own_attempt_answer::<C, O, F, Fut>(compute).await;
            }
            let bound = (holder.remaining + WAIT_MARGIN).min(deadline - now);
            // Woken or not, look again: the holder stored, failed, was revoked, renewed, or
            // went silent and its lease lapsed (then one waiter takes over).
            let _ = tokio::time::timeout(bound, sub.woken()).await;
            if sub.lapsed() {
                // The backend lost the channel (its slot moved, or the connection was replaced):
                // subscribe again, then look again, so the next wake-up is not missed.
                subscription = None;
            }
        }
    }

    /// One atomic look on a miss: the value, or the lease, or the holder. Bytes that do not
    /// decode, or that are older than a no-cache request, are replaced: the caller takes the
    /// lease even though bytes are stored. Bytes it already `rejected` are not decoded (nor
    /// counted) again; with `replace`, it knows the stored bytes to be unusable and asks for
    /// the lease alone.
    async fn look<C: Codec, O: Outcome>(
        &self,
        key: &EntryKey,
        token: &str,
        policy: Policy,
        fresh_since: Option<SystemTime>,
        rejected: &mut Option<Vec<u8>>,
        replace: bool,
    ) -> Result<Look<O>, Error> {
        let lease = policy.lock_timeout;
        if !replace {
            match self.backend.get_or_lease(key, token, lease).await? {
                Lookup::Leased => return Ok(Look::Leased),
                Lookup::Held(holder) => return Ok(Look::Held(holder)),
                Lookup::Value(raw) if rejected.as_deref() == Some(&raw[..]) => {}
                Lookup::Value(raw) => match self.usable::<C, O>(key, &raw, fresh_since) {
                    Some(out) => return Ok(Look::Hit(out, raw)),
                    None => *rejected = Some(raw),
                },
            }
        }
        match self.backend.try_lease(key, token, lease).await? {
            LeaseAttempt::Acquired => Ok(Look::Leased),
            LeaseAttempt::Held(holder) => Ok(Look::Held(holder)),
        }
    }

    /// Decodes stored bytes unless they are older than `fresh_since` (a no-cache request wants
    /// a value written after it started; millisecond resolution, so a value written in the
    /// request's own millisecond is too old).
    fn usable<C: Codec, O: Outcome>(
        &self,
        key: &EntryKey,
        raw: &[u8],
        fresh_since: Option<SystemTime>,
    ) -> Option<O> {
        if let (Some(since), Ok((meta, _))) = (fresh_since, split_entry::<C>(raw)) {
            if meta.written_at <= since {
                return None;
            }
        }
        self.decode_or_miss::<C, O::Value>(key, raw)
            .map(|(_, value)| O::from_value(value))
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

    /// The holder's part: compute while renewing the lease, then store if the lease is still
    /// current, or release it as failed.
    async fn compute_leased<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        token: &str,
        policy: Policy,
        compute: F,
    ) -> Answer<O>
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let guard = LeaseGuard::new(self.backend.clone(), key, token, policy.lock_timeout);
        let started = Instant::now();
        let (out, lost) =
            with_renewal(&*self.backend, key, token, policy.lock_timeout, compute()).await;
        let elapsed = started.elapsed();
        bump(&self.counters.computations);
        let bytes = match out.cacheable().map(|v| encode_entry::<C, _>(v, elapsed)) {
            Some(Ok(bytes)) => bytes,
            Some(Err(err)) => {
                bump(&self.counters.store_failures);
                tracing::warn!(key = key.base(), %err, "computed value did not encode; not cached");
                guard.release_failed().await;
                return (out, None, Fate::Share);
            }
            None => {
                guard.release_failed().await;
                return (out, None, Fate::Share);
            }
        };
        if lost {
            // The store would be refused; do not send the bytes.
            guard.disarm();
            bump(&self.counters.leases_lost);
            return (out, Some(bytes), Fate::Retry);
        }
        match self
            .backend
            .store_leased(key, token, &bytes, policy.exp)
            .await
        {
            Ok(true) => {
                guard.disarm();
                (out, Some(bytes), Fate::Share)
            }
            Ok(false) => {
                guard.disarm();
                bump(&self.counters.leases_lost);
                tracing::debug!(
                    key = key.base(),
                    ?elapsed,
                    "the lease was revoked (set/invalidate) or lapsed during the computation; the value was not stored"
                );
                (out, Some(bytes), Fate::Retry)
            }
            Err(err) => {
                // Unknown whether it was stored; the lease lapses on its own.
                guard.disarm();
                bump(&self.counters.backend_errors);
                bump(&self.counters.store_failures);
                tracing::warn!(key = key.base(), %err, "could not store the computed value");
                (out, Some(bytes), Fate::Share)
            }
        }
    }

    /// A caller waited `max_wait` for another caller's computation.
    fn gave_up(&self, key: &EntryKey, policy: Policy) {
        bump(&self.counters.max_waits);
        tracing::warn!(
            key = key.base(),
            max_wait = ?policy.max_wait,
            "waited max_wait for another caller's computation; computing without the cache"
        );
    }

    /// The store failed: run the computation anyway and do not touch the store again.
    async fn fail_open<C, O, F, Fut>(
        &self,
        key: &EntryKey,
        step: &'static str,
        err: Error,
        compute: F,
    ) -> Answer<O>
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        bump(&self.counters.backend_errors);
        if matches!(err, Error::Unavailable) {
            // The breaker logged when it opened; one line per call would flood the logs.
            tracing::debug!(
                key = key.base(),
                step,
                "cache backend unavailable; computing without the cache"
            );
        } else {
            tracing::warn!(key = key.base(), step, %err, "cache backend failed; computing without the cache");
        }
        self.uncached::<C, O, F, Fut>(compute).await
    }

    /// The caller computes on its own, outside the lease (the computation it waited for failed,
    /// or `max_wait` passed); the value is shared with this process's followers, not stored.
    async fn own_attempt_answer<C, O, F, Fut>(&self, compute: F) -> Answer<O>
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        bump(&self.counters.own_attempts);
        self.uncached::<C, O, F, Fut>(compute).await
    }

    /// A follower whose leader failed without a failure it can share: its own attempt.
    async fn own_attempt<C, O, F, Fut>(&self, compute: F) -> (O, Option<Arc<[u8]>>)
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let (out, raw, _) = self.own_attempt_answer::<C, O, F, Fut>(compute).await;
        (out, raw.map(Arc::from))
    }

    /// Runs the computation without the cache; the encoded value, if any, is returned for this
    /// process's followers.
    async fn uncached<C, O, F, Fut>(&self, compute: F) -> Answer<O>
    where
        C: Codec,
        O: Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let started = Instant::now();
        let out = compute().await;
        bump(&self.counters.computations);
        let bytes = out
            .cacheable()
            .and_then(|v| encode_entry::<C, _>(v, started.elapsed()).ok());
        (out, bytes, Fate::Share)
    }
}
