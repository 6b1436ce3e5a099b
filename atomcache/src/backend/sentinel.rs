//! Following a Sentinel-managed primary: the connection under a [`RedisBackend`] built by
//! [`connect_sentinel`](crate::RedisBackend::connect_sentinel).
//!
//! The `redis` crate's [`SentinelClient`] finds the primary (asking the sentinels, then checking
//! that the node it names says `ROLE master`); its [`ConnectionManager`] reconnects, but always to
//! the address it was made for. What neither does is notice that the primary *moved*. This type
//! does: when a command fails in a way that says "this node is gone or is no longer the primary"
//! (connection refused or dropped, timeout, `READONLY`), one background task asks the sentinels
//! again, every [`FOLLOW_EVERY`] up to [`FOLLOW_MAX_DELAY`], until the primary they name answers.
//! If it is another node, a new manager is connected to it and swapped in; every subscription of
//! the old connection is forgotten ([`WakeHub::forget_all`]), so waiters subscribe again on the
//! new primary and look again (a wake-up published during the switch is not waited for).
//!
//! DESIGN: polling the sentinels after an error rather than subscribing to their
//! `+switch-master` events keeps one code path for every way a primary goes away (killed,
//! frozen, demoted by a manual `SENTINEL FAILOVER`, partitioned), and costs nothing while the
//! primary answers. The price is latency: the switch is noticed at the first failing command
//! after the sentinels promoted the replica, plus at most one poll interval.
//!
//! [`RedisBackend`]: crate::RedisBackend

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::SentinelClient;

use super::WakeHub;
use crate::Error;

/// First delay between two questions to the sentinels while the primary does not answer.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// Longest delay between two questions.
const FOLLOW_MAX_DELAY: Duration = Duration::from_secs(1);

/// The current primary's connection, and what is needed to find and connect the next one.
pub(super) struct Primary {
    current: RwLock<Current>,
    sentinel: tokio::sync::Mutex<SentinelClient>,
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
        mut sentinel: SentinelClient,
        config: ConnectionManagerConfig,
        hub: WakeHub,
        connect_timeout: Duration,
    ) -> Result<Arc<Primary>, Error> {
        let current = resolve(&mut sentinel, &config, connect_timeout).await?;
        Ok(Arc::new(Primary {
            current: RwLock::new(current),
            sentinel: tokio::sync::Mutex::new(sentinel),
            config,
            hub,
            connect_timeout,
            following: AtomicBool::new(false),
        }))
    }

    /// The manager of the current primary (cheap: a clone shares the connection).
    pub(super) fn manager(&self) -> ConnectionManager {
        self.read().manager.clone()
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
        if self.following.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(follow(weak));
    }
}

/// Asks the sentinels until the primary they name answers; swaps the connection if it moved.
async fn follow(primary: Weak<Primary>) {
    let mut delay = FOLLOW_EVERY;
    loop {
        let Some(p) = primary.upgrade() else { return };
        let found = {
            let mut sentinel = p.sentinel.lock().await;
            match tokio::time::timeout(p.connect_timeout, sentinel.async_get_client()).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        };
        match found {
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
            Err(err) => tracing::debug!(%err, "the sentinels named no reachable primary yet"),
        }
        drop(p);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(FOLLOW_MAX_DELAY);
    }
}

/// The primary the sentinels name, connected.
async fn resolve(
    sentinel: &mut SentinelClient,
    config: &ConnectionManagerConfig,
    connect_timeout: Duration,
) -> Result<Current, Error> {
    let client = match tokio::time::timeout(connect_timeout, sentinel.async_get_client()).await {
        Ok(client) => client?,
        Err(_) => return Err(Error::Timeout(connect_timeout)),
    };
    let address = client.get_connection_info().addr().to_string();
    let manager = connect_manager(client, config, connect_timeout).await?;
    Ok(Current { manager, address })
}

async fn connect_manager(
    client: redis::Client,
    config: &ConnectionManagerConfig,
    connect_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    match tokio::time::timeout(
        connect_timeout,
        client.get_connection_manager_with_config(config.clone()),
    )
    .await
    {
        Ok(manager) => Ok(manager?),
        Err(_) => Err(Error::Timeout(connect_timeout)),
    }
}
