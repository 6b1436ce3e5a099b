//! Counters of what the cache did, for dashboards and for tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the counters of one store (a [`Runtime`](crate::Runtime), or a
/// [`Cache`](crate::Cache) built with its own backend).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = atomcache::Cache::builder("stats-doc")
///     .backend(atomcache::MemoryBackend::new())
///     .build()
///     .unwrap();
/// cache.get_or_compute("k", || async { 1u8 }).await;
/// cache.get_or_compute("k", || async { 1u8 }).await;
/// let stats = cache.stats();
/// assert_eq!((stats.computations, stats.hits, stats.misses), (1, 1, 1));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Values found in the store and decoded.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Times a caller ran the computation (under the lease, fail-open, or its own attempt).
    pub computations: u64,
    /// Callers that joined an identical call already in flight in this process.
    pub coalesced: u64,
    /// Times a caller waited for another caller's lease (in this replica or another).
    pub lock_waits: u64,
    /// Callers answered with the failure of the computation they waited on in this process
    /// (the output type could share it, e.g. an `Err` whose error type is `Clone`).
    pub shared_failures: u64,
    /// Computations run outside the lease: the computation the caller waited on failed and
    /// could not be shared, or `max_wait` passed. Their values are not stored.
    pub own_attempts: u64,
    /// Callers that gave up waiting after `max_wait` (each then ran its own attempt).
    pub max_waits: u64,
    /// Values computed under a lease that was revoked (`set`/`invalidate`) or lapsed before
    /// they could be stored: not stored, so a stale fill never overwrites an invalidation.
    pub leases_lost: u64,
    /// Stored bytes that did not decode (read as a miss).
    pub decode_errors: u64,
    /// Store calls that failed or timed out (the caller got its value anyway).
    pub backend_errors: u64,
    /// Values that were computed but could not be stored.
    pub store_failures: u64,
    /// Background auto-refreshes that stored a new value.
    pub refreshes: u64,
    /// Background auto-refreshes whose function returned `Err`/`None` or panicked.
    pub refresh_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub computations: AtomicU64,
    pub coalesced: AtomicU64,
    pub lock_waits: AtomicU64,
    pub shared_failures: AtomicU64,
    pub own_attempts: AtomicU64,
    pub max_waits: AtomicU64,
    pub leases_lost: AtomicU64,
    pub decode_errors: AtomicU64,
    pub backend_errors: AtomicU64,
    pub store_failures: AtomicU64,
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            computations: self.computations.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            lock_waits: self.lock_waits.load(Relaxed),
            shared_failures: self.shared_failures.load(Relaxed),
            own_attempts: self.own_attempts.load(Relaxed),
            max_waits: self.max_waits.load(Relaxed),
            leases_lost: self.leases_lost.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            backend_errors: self.backend_errors.load(Relaxed),
            store_failures: self.store_failures.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
        }
    }
}
