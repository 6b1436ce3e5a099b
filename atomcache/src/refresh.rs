//! The auto-refresh registry: `#[cached(auto_refresh)]` functions submit themselves at link time
//! (through `inventory`), and [`init`](crate::init) starts one background task per function that
//! recomputes the value before it expires, under the entry's lease (renewed while it computes),
//! while readers keep the old value. A refresh whose lease was revoked by `set`/`invalidate`
//! is not stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{LeaseAttempt, Release};
use crate::lease::{failure_memory, new_token, with_renewal};
use crate::stats::bump;
use crate::store::Store;
use crate::EntryKey;

/// The recomputation of one auto-refresh function: the encoded entry (header + payload), or
/// `None` when the output is not cacheable (`Err`, `None`) or did not encode.
pub type Recompute = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'static>>;

/// What the refresher needs to know about a function's settings.
pub trait RefreshSpec: Sync {
    /// The function's namespace.
    fn namespace(&self) -> &'static str;
    /// Value lifetime.
    fn exp(&self) -> Duration;
    /// Length of the lease.
    fn lock_timeout(&self) -> Duration;
}

/// One registered auto-refresh function.
pub struct AutoRefresh {
    pub(crate) spec: &'static dyn RefreshSpec,
    pub(crate) recompute: fn() -> Recompute,
}

impl AutoRefresh {
    /// Registers `recompute` (which runs the function's body, bypassing the cache) under `spec`.
    pub const fn new(spec: &'static dyn RefreshSpec, recompute: fn() -> Recompute) -> Self {
        AutoRefresh { spec, recompute }
    }
}

inventory::collect!(AutoRefresh);

/// The registered functions, in no particular order.
pub(crate) fn registered() -> impl Iterator<Item = &'static AutoRefresh> {
    inventory::iter::<AutoRefresh>.into_iter()
}

/// Cache id of a zero-argument function (the JSON of `()`, as `#[cached]` builds it).
pub(crate) const ZERO_ARG_ID: &str = "null";

/// Starts one refresher per registered function. Stopped through `stop`.
pub(crate) fn start_all(store: &Arc<Store>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    registered()
        .map(|entry| {
            let refresher = Refresher::new(store.clone(), entry, stop.clone());
            tokio::spawn(refresher.run())
        })
        .collect()
}

/// Smallest pause between two failed attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Largest pause between two failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Refresher {
    store: Arc<Store>,
    entry: &'static AutoRefresh,
    key: EntryKey,
    exp: Duration,
    lock_timeout: Duration,
    stop: watch::Receiver<bool>,
    failures: u32,
}

/// Why a refresher's pause ended.
enum Woke {
    Due,
    Stopped,
}

impl Refresher {
    fn new(store: Arc<Store>, entry: &'static AutoRefresh, stop: watch::Receiver<bool>) -> Self {
        let key = store.key(entry.spec.namespace(), ZERO_ARG_ID);
        Refresher {
            exp: entry.spec.exp(),
            lock_timeout: entry.spec.lock_timeout(),
            store,
            entry,
            key,
            stop,
            failures: 0,
        }
    }

    async fn pause(&mut self, d: Duration) -> Woke {
        tokio::select! {
            _ = tokio::time::sleep(d) => Woke::Due,
            () = stopped(&mut self.stop) => Woke::Stopped,
        }
    }

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = MIN_BACKOFF.saturating_mul(1 << self.failures.min(8));
        exp.min(MAX_BACKOFF).min(self.lock_timeout.max(MIN_BACKOFF))
    }

    /// Counts and logs a backend failure, then backs off.
    async fn backend_failed(&mut self, err: crate::Error) -> Woke {
        bump(&self.store.counters.backend_errors);
        let pause = self.backoff();
        tracing::warn!(namespace = self.entry.spec.namespace(), %err, ?pause, "auto-refresh: backend failed; retrying");
        self.pause(pause).await
    }

    /// Up to a tenth of the lock timeout (at most 200 ms), so replicas do not wake together.
    fn jitter(&self) -> Duration {
        let max = (self.lock_timeout / 10).min(Duration::from_millis(200));
        let ms = u64::try_from(max.as_millis()).unwrap_or(0);
        if ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::random::<u64>() % ms)
    }

    async fn run(mut self) {
        tracing::debug!(
            namespace = self.entry.spec.namespace(),
            "auto-refresh started"
        );
        loop {
            // 1. When is the value due? (missing: now)
            let wait = match self.store.backend.remaining_ttl(&self.key).await {
                Ok(Some(ttl)) => ttl
                    .saturating_sub(self.lock_timeout)
                    .saturating_sub(self.jitter()),
                Ok(None) => Duration::ZERO,
                Err(err) => {
                    if let Woke::Stopped = self.backend_failed(err).await {
                        return;
                    }
                    continue;
                }
            };
            if let Woke::Stopped = self.pause(wait).await {
                return;
            }
            // 2. One replica refreshes: the one that takes the lease.
            let token = new_token();
            match self
                .store
                .backend
                .try_lease(&self.key, &token, self.lock_timeout)
                .await
            {
                Ok(LeaseAttempt::Acquired) => {
                    if let Woke::Stopped = self.refresh_holding(&token).await {
                        return;
                    }
                }
                Ok(LeaseAttempt::Held(holder)) => {
                    // Another replica (or a reader's miss) is computing; look again after it.
                    let pause = holder.remaining + Duration::from_millis(10);
                    if let Woke::Stopped = self.pause(pause).await {
                        return;
                    }
                }
                Err(err) => {
                    if let Woke::Stopped = self.backend_failed(err).await {
                        return;
                    }
                }
            }
        }
    }

    /// With the lease held: recompute unless another replica just did, store, release.
    async fn refresh_holding(&mut self, token: &str) -> Woke {
        let backend = self.store.backend.clone();
        let failed = Release::Failed {
            remember: failure_memory(self.lock_timeout),
        };
        // Another replica may have refreshed between our look and our lease.
        if let Ok(Some(ttl)) = backend.remaining_ttl(&self.key).await {
            if ttl > self.lock_timeout + self.lock_timeout / 2 && ttl > self.exp / 2 {
                let _ = backend
                    .release_lease(&self.key, token, Release::Abandoned)
                    .await;
                return Woke::Due;
            }
        }
        // A task of its own, so a panic in the user's function is caught and cancellation is
        // ours; the lease is renewed while it runs.
        let mut task = tokio::spawn((self.entry.recompute)());
        let key = self.key.clone();
        let work = with_renewal(&*backend, &key, token, self.lock_timeout, &mut task);
        let (outcome, lost) = tokio::select! {
            done = work => done,
            () = stopped(&mut self.stop) => {
                task.abort();
                let _ = backend.release_lease(&self.key, token, Release::Abandoned).await;
                return Woke::Stopped;
            }
        };
        let namespace = self.entry.spec.namespace();
        match outcome {
            Ok(Some(_)) if lost => {
                bump(&self.store.counters.computations);
                bump(&self.store.counters.leases_lost);
                tracing::debug!(
                    namespace,
                    "auto-refresh: the lease was revoked or lapsed; the new value was not stored"
                );
                return Woke::Due;
            }
            Ok(Some(bytes)) => match backend
                .store_leased(&self.key, token, &bytes, self.exp)
                .await
            {
                Ok(stored) => {
                    bump(&self.store.counters.computations);
                    self.failures = 0;
                    if stored {
                        bump(&self.store.counters.refreshes);
                    } else {
                        bump(&self.store.counters.leases_lost);
                        tracing::debug!(
                            namespace,
                            "auto-refresh: the lease was revoked (set/invalidate); the new value was not stored"
                        );
                    }
                    return Woke::Due;
                }
                Err(err) => {
                    bump(&self.store.counters.backend_errors);
                    bump(&self.store.counters.store_failures);
                    tracing::warn!(namespace, %err, "auto-refresh: could not store the new value");
                }
            },
            Ok(None) => {
                bump(&self.store.counters.refresh_failures);
                tracing::warn!(
                    namespace,
                    "auto-refresh: the function returned no cacheable value; keeping the old one"
                );
                let _ = backend.release_lease(&self.key, token, failed).await;
            }
            Err(join) => {
                bump(&self.store.counters.refresh_failures);
                tracing::error!(namespace, error = %join, "auto-refresh: the function panicked; keeping the old value");
                let _ = backend.release_lease(&self.key, token, failed).await;
            }
        }
        let pause = self.backoff();
        self.pause(pause).await
    }
}

/// Resolves once a stop was requested (the sender sent `true`, or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_arg_id_matches_the_macro_encoding() {
        assert_eq!(
            crate::__private::cache_id(&()).as_deref(),
            Some(super::ZERO_ARG_ID)
        );
    }
}
