//! The holder's side of a lease: its token, its renewal while the computation runs, and its
//! release when the holder fails, panics or is cancelled.
//!
//! `lock_timeout` is the length of a lease, so it is how fast a dead holder is noticed, not a
//! cap on how long a computation may take: a live holder renews its lease every third of it
//! (as Redisson's lock watchdog does), and a holder whose renewal is refused (the lease was
//! revoked by `set`/`invalidate`, or lapsed while the holder was frozen) stops renewing; the
//! store it then attempts is refused by the backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Release};
use crate::EntryKey;

/// 128 random bits, hex: the token that names one lease.
pub(crate) fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// How long the backend remembers that a lease ended in a failure: long enough for every
/// waiter of that lease to look again even if its wake-up was lost (a waiter looks at least
/// once per lease length).
pub(crate) fn failure_memory(lease: Duration) -> Duration {
    lease.saturating_mul(2).max(Duration::from_secs(1))
}

/// Runs `fut` while renewing the lease every third of its length. Returns the output and
/// whether the lease was lost on the way (a renewal was refused).
pub(crate) async fn with_renewal<Fut: Future>(
    backend: &dyn Backend,
    key: &EntryKey,
    token: &str,
    lease: Duration,
    fut: Fut,
) -> (Fut::Output, bool) {
    let period = (lease / 3).max(Duration::from_millis(1));
    let renew = async {
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            next += period;
            match backend.renew_lease(key, token, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                // The store is unreachable: keep computing and keep trying; the lease may
                // lapse, and then the store is refused.
                Err(err) => {
                    tracing::debug!(key = key.base(), %err, "could not renew the lease");
                }
            }
        }
    };
    tokio::pin!(fut);
    tokio::pin!(renew);
    tokio::select! {
        out = &mut fut => (out, false),
        () = &mut renew => {
            tracing::debug!(key = key.base(), "the lease was revoked or lapsed during the computation; its value will not be stored");
            (fut.await, true)
        }
    }
}

/// Releases a held lease when the holder gives up: explicitly ([`release`](LeaseGuard::release)),
/// or on drop (cancelled: one waiter takes over; panicked: a failure, so waiters do not queue).
pub(crate) struct LeaseGuard<'a> {
    backend: Option<Arc<dyn Backend>>,
    key: &'a EntryKey,
    token: &'a str,
    lease: Duration,
}

impl<'a> LeaseGuard<'a> {
    pub fn new(
        backend: Arc<dyn Backend>,
        key: &'a EntryKey,
        token: &'a str,
        lease: Duration,
    ) -> Self {
        LeaseGuard {
            backend: Some(backend),
            key,
            token,
            lease,
        }
    }

    /// Ends the lease after a failed computation and wakes its waiters.
    pub async fn release_failed(mut self) {
        if let Some(backend) = self.backend.take() {
            let why = Release::Failed {
                remember: failure_memory(self.lease),
            };
            if let Err(err) = backend.release_lease(self.key, self.token, why).await {
                tracing::warn!(key = self.key.base(), %err, "could not release the lease; it will lapse");
            }
        }
    }

    /// The lease ended otherwise (stored, refused, or the store is unreachable).
    pub fn disarm(mut self) {
        self.backend = None;
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        let why = if std::thread::panicking() {
            Release::Failed {
                remember: failure_memory(self.lease),
            }
        } else {
            Release::Abandoned
        };
        let (key, token) = (self.key.clone(), self.token.to_owned());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(err) = backend.release_lease(&key, &token, why).await {
                        tracing::warn!(key = key.base(), %err, "could not release an abandoned lease; it will lapse");
                    }
                });
            }
            Err(_) => tracing::warn!(
                key = key.base(),
                "no runtime to release an abandoned lease; it will lapse"
            ),
        }
    }
}
