//! The direct API: [`Cache`], for code that is not one function (e.g. memoizing calls to an
//! external API), and the [`Outcome`] adapters shared with `#[cached]`.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::Backend;
use crate::codec::{encode_entry, Bincode, Codec, EntryMeta};
use crate::stats::Stats;
use crate::store::{Outcome, Policy, SharedFailure, Sharing, Store, DEFAULT_MAX_WAIT};
use crate::{runtime, EntryKey, Error};

/// Default value lifetime of a [`Cache`]: 600 s.
pub const DEFAULT_EXP: Duration = Duration::from_secs(600);
/// Default lease length (`lock_timeout`): 5 s, as in the Python original. A holder renews its
/// lease while it computes, so this is how fast a dead holder is noticed, not a time limit.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A namespace of cached values with one lifetime policy.
///
/// Without [`CacheBuilder::backend`] a cache uses the process-wide backend installed by
/// [`init`](crate::init) (or the embedded memory backend when nothing was installed), looked up
/// at each call.
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let rates = atomcache::Cache::builder("exchange-rates")
///     .exp(Duration::from_secs(60))
///     .lock_timeout(Duration::from_secs(2))
///     .build()?;
///
/// // Computed once; other callers (in this process or any replica) wait for it and share it.
/// let eur: f64 = rates.get_or_compute("EUR", || async { 1.08 }).await;
/// assert_eq!(rates.get::<f64>("EUR").await?, Some(eur));
///
/// rates.invalidate("EUR").await?;
/// assert_eq!(rates.get::<f64>("EUR").await?, None);
/// # Ok(()) }
/// ```
pub struct Cache<C: Codec = Bincode> {
    namespace: Arc<str>,
    policy: Policy,
    store: Option<Arc<Store>>,
    codec: PhantomData<fn() -> C>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            namespace: self.namespace.clone(),
            policy: self.policy,
            store: self.store.clone(),
            codec: PhantomData,
        }
    }
}

impl<C: Codec> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.namespace)
            .field("exp", &self.policy.exp)
            .field("lock_timeout", &self.policy.lock_timeout)
            .field("own_backend", &self.store.is_some())
            .finish()
    }
}

/// Builds a [`Cache`]; see [`Cache::builder`].
pub struct CacheBuilder<C: Codec = Bincode> {
    namespace: String,
    exp: Duration,
    lock_timeout: Duration,
    max_wait: Duration,
    store: Option<Arc<Store>>,
    /// A setting rejected before `build` (reported by `build`).
    invalid: Option<Error>,
    codec: PhantomData<fn() -> C>,
}

impl CacheBuilder<Bincode> {
    pub(crate) fn on_store(namespace: String, store: Arc<Store>) -> Self {
        CacheBuilder {
            store: Some(store),
            ..Cache::builder(namespace)
        }
    }
}

impl Cache<Bincode> {
    /// A cache with the default lifetimes ([`DEFAULT_EXP`], [`DEFAULT_LOCK_TIMEOUT`]) on the
    /// process-wide backend.
    ///
    /// ```
    /// let cache = atomcache::Cache::new("users");
    /// assert_eq!(cache.namespace(), "users");
    /// ```
    pub fn new(namespace: impl Into<String>) -> Self {
        Cache {
            namespace: Arc::from(namespace.into()),
            policy: Policy {
                exp: DEFAULT_EXP,
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
                max_wait: DEFAULT_MAX_WAIT,
            },
            store: None,
            codec: PhantomData,
        }
    }

    /// Starts building a cache for `namespace`.
    ///
    /// ```
    /// # fn main() -> Result<(), atomcache::Error> {
    /// let cache = atomcache::Cache::builder("users")
    ///     .exp(std::time::Duration::from_secs(30))
    ///     .backend(atomcache::MemoryBackend::new())
    ///     .build()?;
    /// assert_eq!(cache.exp(), std::time::Duration::from_secs(30));
    /// # Ok(()) }
    /// ```
    pub fn builder(namespace: impl Into<String>) -> CacheBuilder<Bincode> {
        CacheBuilder {
            namespace: namespace.into(),
            exp: DEFAULT_EXP,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            max_wait: DEFAULT_MAX_WAIT,
            store: None,
            invalid: None,
            codec: PhantomData,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// How long a stored value lives.
    pub fn exp(mut self, exp: Duration) -> Self {
        self.exp = exp;
        self
    }

    /// The length of the lease of the caller computing a value: how fast a dead holder is
    /// noticed. A live holder renews its lease every third of it while it computes, so a
    /// computation may take longer; if the holder dies, one waiter takes over once the lease
    /// lapses. Must be shorter than `exp`. Default [`DEFAULT_LOCK_TIMEOUT`].
    pub fn lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }

    /// The longest a caller waits for another caller's computation (in this replica or
    /// another) before it computes on its own, without the cache. Default 30 s.
    ///
    /// ```
    /// # fn main() -> Result<(), atomcache::Error> {
    /// let cache = atomcache::Cache::builder("reports")
    ///     .max_wait(std::time::Duration::from_secs(90)) // reports take a minute to compute
    ///     .build()?;
    /// assert_eq!(cache.max_wait(), std::time::Duration::from_secs(90));
    /// # Ok(()) }
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Uses this backend instead of the process-wide one. The cache gets its own single-flight
    /// table and [`Stats`].
    pub fn backend(mut self, backend: impl Backend) -> Self {
        match backend_prefix(&backend) {
            Ok(prefix) => self.store = Some(Arc::new(Store::new(Arc::new(backend), prefix))),
            Err(err) => self.invalid = Some(err),
        }
        self
    }

    /// Chooses the codec of stored values (default [`Bincode`]).
    ///
    /// ```
    /// # #[cfg(feature = "json")] {
    /// let cache = atomcache::Cache::builder("readable").codec::<atomcache::Json>().build().unwrap();
    /// # }
    /// ```
    pub fn codec<C2: Codec>(self) -> CacheBuilder<C2> {
        CacheBuilder {
            namespace: self.namespace,
            exp: self.exp,
            lock_timeout: self.lock_timeout,
            max_wait: self.max_wait,
            store: self.store,
            invalid: self.invalid,
            codec: PhantomData,
        }
    }

    /// Checks the settings and builds the cache.
    pub fn build(self) -> Result<Cache<C>, Error> {
        if let Some(err) = self.invalid {
            return Err(err);
        }
        let policy = Policy::new(self.exp, self.lock_timeout, self.max_wait)?;
        Ok(Cache {
            namespace: Arc::from(self.namespace),
            policy,
            store: self.store,
            codec: PhantomData,
        })
    }
}

/// The backend's key prefix, checked (no hash-tag braces, no control characters).
pub(crate) fn backend_prefix(backend: &dyn Backend) -> Result<String, Error> {
    let prefix = backend.key_prefix();
    crate::key::validate_prefix(prefix)?;
    Ok(prefix.to_owned())
}

/// What [`Cache::entry`] returns: a stored value with its metadata.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// When it was written and how long its computation took.
    pub meta: EntryMeta,
    /// How long it still lives, as far as the store knows.
    pub remaining_ttl: Option<Duration>,
    /// The stored bytes (header + payload); stable across replicas for one stored value.
    pub raw: Arc<[u8]>,
}

impl<C: Codec> Cache<C> {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Value lifetime.
    pub fn exp(&self) -> Duration {
        self.policy.exp
    }

    /// Length of a lease (see [`CacheBuilder::lock_timeout`]).
    pub fn lock_timeout(&self) -> Duration {
        self.policy.lock_timeout
    }

    /// The longest a caller waits for another caller's computation.
    pub fn max_wait(&self) -> Duration {
        self.policy.max_wait
    }

    fn store(&self) -> Arc<Store> {
        match &self.store {
            Some(store) => store.clone(),
            None => runtime::current_store(),
        }
    }

    /// The keys of the entry `id` (for inspection with `redis-cli`).
    pub fn key(&self, id: &str) -> EntryKey {
        self.store().key(&self.namespace, id)
    }

    /// Counters of the store this cache uses.
    pub fn stats(&self) -> Stats {
        self.store().stats()
    }

    /// Reads a value. Bytes that do not decode as `T` read as `None` (and are counted).
    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, Error> {
        Ok(self.entry::<T>(id).await?.map(|e| e.value))
    }

    /// Reads a value with its metadata and remaining lifetime (two store calls).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
    /// let cache = atomcache::Cache::new("entry-doc");
    /// cache.set("a", &"hello").await?;
    /// let entry = cache.entry::<String>("a").await?.unwrap();
    /// assert_eq!(entry.value, "hello");
    /// assert!(entry.remaining_ttl.unwrap() <= cache.exp());
    /// # Ok(()) }
    /// ```
    pub async fn entry<T: DeserializeOwned>(&self, id: &str) -> Result<Option<Entry<T>>, Error> {
        let store = self.store();
        let key = store.key(&self.namespace, id);
        let Some(raw) = store.backend.get(&key).await? else {
            return Ok(None);
        };
        let Some((meta, value)) = store.decode_or_miss::<C, T>(&key, &raw) else {
            return Ok(None);
        };
        let remaining_ttl = store.backend.remaining_ttl(&key).await?;
        Ok(Some(Entry {
            value,
            meta,
            remaining_ttl,
            raw: Arc::from(raw),
        }))
    }

    /// Stores a value for `exp`, replacing any other, and wakes the entry's waiters.
    ///
    /// A computation of the entry already in flight (here or in another replica) loses its
    /// lease: its value is not stored, and no read that starts after `set` returns gets it.
    /// (In another replica, a read that joins a lookup already on its way back from the store
    /// may get that lookup's answer: a window of one round trip.)
    pub async fn set<T: Serialize + ?Sized>(&self, id: &str, value: &T) -> Result<(), Error> {
        let store = self.store();
        let bytes = encode_entry::<C, T>(value, Duration::ZERO)?;
        store
            .set(&store.key(&self.namespace, id), &bytes, self.policy.exp)
            .await
    }

    /// Removes a value. The next reader computes it again (under a new lease).
    ///
    /// A computation of the entry already in flight (here or in another replica) loses its
    /// lease: its value is not stored, and no read that starts after `invalidate` returns gets
    /// it; the callers waiting for it look again. (In another replica, a read that joins a
    /// lookup already on its way back from the store may get that lookup's answer: a window of
    /// one round trip.)
    pub async fn invalidate(&self, id: &str) -> Result<(), Error> {
        let store = self.store();
        store.invalidate(&store.key(&self.namespace, id)).await
    }

    /// How long the value still lives; `None` when there is none.
    pub async fn remaining_ttl(&self, id: &str) -> Result<Option<Duration>, Error> {
        let store = self.store();
        store
            .backend
            .remaining_ttl(&store.key(&self.namespace, id))
            .await
    }

    /// Returns the cached value, or computes it under the lease, stores it and wakes the other
    /// waiters. Concurrent calls for `id` in this process share one trip to the store, and
    /// callers in other replicas wait for this computation instead of running their own.
    ///
    /// Fail-open: if the store is down, slow or holds bytes that do not decode, `compute` runs
    /// and its value is returned; the event is logged through `tracing` and counted.
    pub async fn get_or_compute<T, F, Fut>(&self, id: &str, compute: F) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let store = self.store();
        let key = store.key(&self.namespace, id);
        store
            .resolve::<C, Plain<T>, _, _>(&key, self.policy, Sharing::none(), || async {
                Plain(compute().await)
            })
            .await
            .0
    }

    /// Like [`get_or_compute`](Cache::get_or_compute) for a fallible computation: only `Ok` is
    /// stored. An `Err` is returned to its caller and, cloned, to every caller in this process
    /// that waited on the same computation; callers in other replicas that waited on it run
    /// their own attempt at once (one of them under a new lease) instead of queueing. So a
    /// failing upstream costs each replica about one computation per burst of callers.
    ///
    /// The error type must be `Clone + Send + Sync + 'static` to be shared; wrap another error
    /// in an `Arc` (`.map_err(Arc::new)`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = atomcache::Cache::new("try-doc");
    /// let r: Result<u32, String> = cache.try_get_or_compute("x", || async { Err("down".to_string()) }).await;
    /// assert!(r.is_err());
    /// let r: Result<u32, String> = cache.try_get_or_compute("x", || async { Ok(7) }).await;
    /// assert_eq!(r, Ok(7));
    /// # }
    /// ```
    pub async fn try_get_or_compute<T, E, F, Fut>(&self, id: &str, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let store = self.store();
        let key = store.key(&self.namespace, id);
        store
            .resolve::<C, Fallible<T, E>, _, _>(&key, self.policy, Fallible::SHARING, || async {
                Fallible(compute().await)
            })
            .await
            .0
    }
}

/// Every output is cached.
pub struct Plain<T>(pub T);
/// Only `Ok` is cached.
pub struct Fallible<T, E>(pub Result<T, E>);
/// Only `Some` is cached.
pub struct Optional<T>(pub Option<T>);

impl<T: Serialize + DeserializeOwned> Outcome for Plain<T> {
    type Value = T;
    fn cacheable(&self) -> Option<&T> {
        Some(&self.0)
    }
    fn from_value(value: T) -> Self {
        Plain(value)
    }
}

impl<T: Serialize + DeserializeOwned, E> Outcome for Fallible<T, E> {
    type Value = T;
    fn cacheable(&self) -> Option<&T> {
        self.0.as_ref().ok()
    }
    fn from_value(value: T) -> Self {
        Fallible(Ok(value))
    }
}

impl<T: Serialize + DeserializeOwned> Outcome for Optional<T> {
    type Value = T;
    fn cacheable(&self) -> Option<&T> {
        self.0.as_ref()
    }
    fn from_value(value: T) -> Self {
        Optional(Some(value))
    }
}

impl<T, E: Clone + Send + Sync + 'static> Fallible<T, E> {
    /// Shares an `Err` with the callers that waited on the same computation.
    pub const SHARING: Sharing<Self> = Sharing::new(
        |out| {
            out.0
                .as_ref()
                .err()
                .map(|err| Arc::new(err.clone()) as SharedFailure)
        },
        |shared| {
            shared
                .downcast_ref::<E>()
                .map(|err| Fallible(Err(err.clone())))
        },
    );
}

/// What an [`Optional`] leader shares when its computation returned `None`.
struct NoneShared;

impl<T> Optional<T> {
    /// Shares a `None` with the callers that waited on the same computation.
    pub const SHARING: Sharing<Self> = Sharing::new(
        |out| {
            out.0
                .is_none()
                .then(|| Arc::new(NoneShared) as SharedFailure)
        },
        |shared| shared.is::<NoneShared>().then_some(Optional(None)),
    );
}
