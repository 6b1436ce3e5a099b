//! Following a Sentinel-managed primary: the connection under a [`RedisBackend`] built by
//! [`connect_sentinel`](crate::RedisBackend::connect_sentinel).
//!
//! The `redis` crate's [`SentinelClient`] finds the primary (asking a sentinel, then checking
//! that the node it names says `ROLE master`); its [`ConnectionManager`] reconnects, but always to
//! the address it was made for. What neither does is notice that the primary *moved*. This type
//! does: when the connection drops, or a command fails in a way that says "this node is gone or
//! is no longer the primary" (connection refused or dropped, timeout, `READONLY`), one background task asks the sentinels again, every [`FOLLOW_EVERY`] up to
//! [`FOLLOW_MAX_DELAY`], until the primary they name answers. If it is another node, a new
//! manager is connected to it and swapped in; every subscription of the old connection is
//! forgotten ([`WakeHub::forget_all`]), so waiters subscribe again on the new primary and look
//! again (a wake-up published during the switch is not waited for).
//!
//! While the sentinels are being asked, no command goes to the connection in doubt: calls fail
//! open (an error of kind `Client`, which does not count against the circuit breaker). Were they
//! sent, a replica idle during a failover would reconnect to the old primary as soon as it came
//! back, still claiming to be primary until the sentinels demote it, and store values that are
//! lost when it is made a replica. When no sentinel can be reached at all, the current node is
//! asked `ROLE` directly: a primary that answers `master` is used again, so a Sentinel outage
//! alone never stops caching.
//!
//! Every sentinel is asked at once, through one [`SentinelClient`] each, and the first primary
//! that answers wins: a sentinel that is down or frozen costs nothing while another answers
//! (the crate's own multi-sentinel lookup takes the answers in list order, so a frozen first
//! sentinel would hold up every lookup for its timeouts).
//!
//! DESIGN: asking the sentinels when the connection drops or a command fails, rather than
//! subscribing to their `+switch-master` events, keeps one code path for every way a primary
//! goes away (killed, frozen, demoted by a manual `SENTINEL FAILOVER`, partitioned), and costs
//! nothing while the primary answers. Asking on the *drop*, not only on the next failing
//! command, lets an idle replica follow before it needs the connection. The price is latency:
//! the switch is seen at most one poll interval after the sentinels promoted the replica.
//!
//! [`RedisBackend`]: crate::RedisBackend

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::SentinelClient;

use super::redis::within;
use super::WakeHub;
use crate::Error;

/// First delay between two questions to the sentinels while the primary does not answer.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// Longest delay between two questions (a question is a few small commands per sentinel).
const FOLLOW_MAX_DELAY: Duration = Duration::from_millis(250);

/// The current primary's connection, and what is needed to find and connect the next one.
pub(super) struct Primary {
    current: RwLock<Current>,
    /// One client per sentinel, asked concurrently.
    sentinels: Vec<Arc<tokio::sync::Mutex<SentinelClient>>>,
    config: ConnectionManagerConfig,
    hub: WakeHub,
    connect_timeout: Duration,
    following: AtomicBool,
}

struct Current {
    manager: ConnectionManager,
    /// `host:port` of the primary the manager connects to.
    address: String,
}

impl Primary {
    /// Finds the primary through the sentinels and connects to it.
    pub(super) async fn connect(
        sentinels: Vec<SentinelClient>,
        config: ConnectionManagerConfig,
        hub: WakeHub,
        connect_timeout: Duration,
    ) -> Result<Arc<Primary>, Error> {
        let sentinels: Vec<_> = sentinels
            .into_iter()
            .map(|s| Arc::new(tokio::sync::Mutex::new(s)))
            .collect();
        let client = ask(&sentinels, connect_timeout).await?;
        let address = client.get_connection_info().addr().to_string();
        let manager = connect_manager(client, &config, connect_timeout).await?;
        Ok(Arc::new(Primary {
            current: RwLock::new(Current { manager, address }),
            sentinels,
            config,
            hub,
            connect_timeout,
            following: AtomicBool::new(false),
        }))
    }

    /// The manager of the current primary (cheap: a clone shares the connection), unless the
    /// sentinels are being asked whether it still is the primary.
    pub(super) fn manager(&self) -> redis::RedisResult<ConnectionManager> {
        if self.following.load(Ordering::Acquire) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the Sentinel primary is being confirmed with the sentinels",
            )));
        }
        Ok(self.read().manager.clone())
    }

    /// The database number on the primary.
    pub(super) fn db(&self) -> i64 {
        use redis::aio::ConnectionLike;
        self.read().manager.get_db()
    }

    /// `host:port` of the primary commands go to now.
    pub(super) fn address(&self) -> String {
        self.read().address.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Only ever replaced whole: a panic elsewhere cannot leave it half-written.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A command failed in a way that may mean the primary moved: ask the sentinels (once; a
    /// search already running covers this failure too).
    pub(super) fn suspect(self: &Arc<Self>) {
        // Called from the connection's push handler too: only where a runtime runs.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.following.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(follow(Arc::downgrade(self)));
    }
}

/// Asks the sentinels until the primary they name answers; swaps the connection if it moved.
async fn follow(primary: Weak<Primary>) {
    let mut delay = FOLLOW_EVERY;
    loop {
        let Some(p) = primary.upgrade() else { return };
        match ask(&p.sentinels, p.connect_timeout).await {
            Ok(client) => {
                let address = client.get_connection_info().addr().to_string();
                if address == p.address() {
                    // Still the primary: its manager reconnects on its own.
                    p.following.store(false, Ordering::Release);
                    return;
                }
                match connect_manager(client, &p.config, p.connect_timeout).await {
                    Ok(manager) => {
                        let old = std::mem::replace(
                            &mut *p.current.write().unwrap_or_else(|e| e.into_inner()),
                            Current {
                                manager,
                                address: address.clone(),
                            },
                        );
                        tracing::warn!(
                            from = %old.address,
                            to = %address,
                            "the Sentinel primary moved; following it"
                        );
                        // The old connection's subscriptions are gone with it.
                        p.hub.forget_all();
                        p.following.store(false, Ordering::Release);
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(%err, %address, "connecting to the new primary failed")
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "the sentinels named no reachable primary yet");
                if !a_sentinel_answered(&err) && still_primary(&p).await {
                    tracing::debug!("no sentinel answers; the current primary says it still is");
                    p.following.store(false, Ordering::Release);
                    return;
                }
            }
        }
        drop(p);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(FOLLOW_MAX_DELAY);
    }
}

/// Whether a failed lookup surely heard from a sentinel (it knows no such primary). Connection
/// errors and timeouts may come from the sentinels or from the primary they name: then the
/// current primary is asked directly.
fn a_sentinel_answered(err: &Error) -> bool {
    match err {
        Error::Timeout(_) => false,
        Error::Backend(err) => err
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|err| err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel),
        _ => true,
    }
}

/// `ROLE` on the current primary's connection answers `master`.
async fn still_primary(p: &Primary) -> bool {
    let mut manager = p.read().manager.clone();
    let role = redis::cmd("ROLE");
    match tokio::time::timeout(p.connect_timeout, role.query_async(&mut manager)).await {
        Ok(Ok(redis::Value::Array(items))) => matches!(
            items.first(),
            Some(redis::Value::BulkString(role)) if role == b"master"
        ),
        _ => false,
    }
}

/// Asks every sentinel at once for the primary (each lookup checks that the node it names says
/// `ROLE master`, and is bounded by `timeout`); the first one found wins. The error of the
/// last lookup to fail when none is found.
async fn ask(
    sentinels: &[Arc<tokio::sync::Mutex<SentinelClient>>],
    timeout: Duration,
) -> Result<redis::Client, Error> {
    let mut lookups = tokio::task::JoinSet::new();
    for sentinel in sentinels {
        let sentinel = sentinel.clone();
        lookups.spawn(async move {
            let mut sentinel = sentinel.lock().await;
            within(timeout, sentinel.async_get_client()).await
        });
    }
    let mut last = Error::InvalidConfig("no sentinel to ask".into());
    while let Some(lookup) = lookups.join_next().await {
        match lookup {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(err)) => last = err,
            Err(join) => last = Error::backend(join.to_string()),
        }
    }
    Err(last)
}

async fn connect_manager(
    client: redis::Client,
    config: &ConnectionManagerConfig,
    connect_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    within(
        connect_timeout,
        client.get_connection_manager_with_config(config.clone()),
    )
    .await
}
