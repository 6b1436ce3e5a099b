//! The Redis backend: one RESP3 connection through the `redis` crate's reconnecting
//! [`ConnectionManager`], shared by commands and by every waiter's subscription.
//!
//! - Locks: `SET lock token NX PX ttl` in a script that also answers the holder's remaining
//!   time; release and extension compare the token in a script.
//! - Store: one script sets the value with its expiry, deletes the lock only if it still holds
//!   the caller's token, and `PUBLISH`es a wake-up on the entry's channel.
//! - Waiters: the process subscribes to an entry's channel once (confirmed by the server before
//!   the waiter looks at the value), fans wake-ups out in-process through a [`WakeHub`], and
//!   unsubscribes channels nobody waits on in the background. After a reconnect every waiter is
//!   woken to look again, since wake-ups may have been lost.
//! - Every call is bounded: by the connect timeout while (re)connecting, then by the command
//!   timeout for the answer.
//!
//! Requires Redis 6 or newer (RESP3).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script, Value};

use super::{Backend, LockAttempt, Subscription, WakeHub};
use crate::{EntryKey, Error};

const TRY_LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return tonumber(ARGV[2]) end
return ttl
";

const STORE_AND_UNLOCK: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local owned = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  owned = 1
end
redis.call('PUBLISH', ARGV[4], 'v')
return owned
";

const SET_AND_WAKE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'v')
return 1
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'u')
  return 1
end
return 0
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on one command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often channels nobody waits on are unsubscribed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A [`Backend`] on a Redis server.
///
/// Cloning is cheap; clones share the connection.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), atomcache::Error> {
/// let backend = atomcache::RedisBackend::builder("redis://:secret@127.0.0.1:6379/2")
///     .command_timeout(std::time::Duration::from_millis(250))
///     .key_prefix("myapp:")
///     .connect()
///     .await?;
/// let runtime = atomcache::init(backend).await?;
/// # runtime.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    hub: WakeHub,
    /// Held (shared) while a channel is being subscribed, (exclusive) while idle ones are
    /// unsubscribed, so an UNSUBSCRIBE can never overtake a newer SUBSCRIBE of the same channel.
    control: tokio::sync::RwLock<()>,
    prefix: String,
    command_timeout: Duration,
    scripts: Scripts,
    sweeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Scripts {
    try_lock: Script,
    store_and_unlock: Script,
    set_and_wake: Script,
    unlock: Script,
    extend: Script,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.command_timeout)
            .field("channels", &self.inner.hub.channels())
            .finish()
    }
}

/// Settings for [`RedisBackend`]; see [`RedisBackend::builder`].
#[derive(Debug, Clone)]
pub struct RedisBackendBuilder {
    url: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    prefix: String,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
}

impl RedisBackendBuilder {
    /// Bound on establishing (and re-establishing) the connection. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on every command; past it the call fails open. Default 1 s.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Prepended to every key (no `{` or `}`). Default `"atomcache:"`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` instead of the bundled web PKI roots,
    /// e.g. for a managed Redis with a private CA. Feature `tls` (on by default).
    ///
    /// ```
    /// let pem = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".to_vec();
    /// let builder = atomcache::RedisBackend::builder("rediss://redis.internal:6380/").tls_root_certificate(pem);
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects now; fails if the server cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisBackend, Error> {
        let timeout = self.connect_timeout;
        let (client, config, hub, prefix, command_timeout) = self.prepare()?;
        let conn =
            match tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
                .await
            {
                Ok(conn) => conn?,
                Err(_) => return Err(Error::Timeout(timeout)),
            };
        Ok(RedisBackend::assemble(conn, hub, prefix, command_timeout))
    }

    /// Returns at once and connects on first use, so a service can start while Redis is down
    /// (its calls fail open until Redis answers). Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Result<RedisBackend, Error> {
        let (client, config, hub, prefix, command_timeout) = self.prepare()?;
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisBackend::assemble(conn, hub, prefix, command_timeout))
    }

    #[allow(clippy::type_complexity)]
    fn prepare(
        self,
    ) -> Result<
        (
            redis::Client,
            ConnectionManagerConfig,
            WakeHub,
            String,
            Duration,
        ),
        Error,
    > {
        crate::key::validate_prefix(&self.prefix)?;
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be greater than zero"
                )));
            }
        }
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::InvalidConfig(format!("invalid Redis URL: {e}")))?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = self
            .client(info)
            .map_err(|e| Error::InvalidConfig(format!("invalid Redis URL: {e}")))?;

        let hub = WakeHub::new();
        let push_hub = hub.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            // One attempt per trigger: a call waiting on a reconnect is bounded by the connect
            // timeout; the next call triggers the next attempt.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(500))
            .set_push_sender(move |push: PushInfo| {
                on_push(&push_hub, push);
                Ok::<(), redis::aio::SendError>(())
            })
            .set_automatic_resubscription();
        Ok((client, config, hub, self.prefix, self.command_timeout))
    }
}

impl RedisBackendBuilder {
    #[cfg(feature = "tls")]
    fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // rustls needs a process-wide crypto provider; install ring unless the program
            // already chose one (Err means one is installed: keep it).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match &self.root_certificate {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        redis::Client::open(info)
    }
}

fn on_push(hub: &WakeHub, push: PushInfo) {
    match push.kind {
        PushKind::Message => {
            if let Some(Value::BulkString(channel)) = push.data.first() {
                if let Ok(channel) = std::str::from_utf8(channel) {
                    hub.wake(channel);
                }
            }
        }
        // Wake-ups published while the connection was down are lost: everyone looks again.
        PushKind::Disconnection => hub.wake_all(),
        _ => {}
    }
}

impl RedisBackend {
    /// Connects with the default settings. The URL may be `redis://` or `rediss://` (TLS, feature
    /// `tls`, on by default), with user, password and database: `redis://user:pass@host:6379/3`.
    pub async fn connect(url: &str) -> Result<RedisBackend, Error> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a backend for `url`.
    ///
    /// ```
    /// let builder = atomcache::RedisBackend::builder("redis://127.0.0.1/")
    ///     .connect_timeout(std::time::Duration::from_millis(500))
    ///     .key_prefix("svc:");
    /// ```
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            prefix: "atomcache:".to_owned(),
            #[cfg(feature = "tls")]
            root_certificate: None,
        }
    }

    fn assemble(
        conn: ConnectionManager,
        hub: WakeHub,
        prefix: String,
        command_timeout: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            conn,
            hub,
            control: tokio::sync::RwLock::new(()),
            prefix,
            command_timeout,
            scripts: Scripts {
                try_lock: Script::new(TRY_LOCK),
                store_and_unlock: Script::new(STORE_AND_UNLOCK),
                set_and_wake: Script::new(SET_AND_WAKE),
                unlock: Script::new(UNLOCK),
                extend: Script::new(EXTEND),
            },
            sweeper: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(sweep_idle_channels(Arc::downgrade(&inner)));
        *inner.sweeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        RedisBackend { inner }
    }

    /// Number of channels this process is subscribed to (or about to unsubscribe).
    pub fn subscribed_channels(&self) -> usize {
        self.inner.hub.channels()
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.command_timeout, fut).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Timeout(self.inner.command_timeout)),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

async fn sweep_idle_channels(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let _exclusive = inner.control.write().await;
        let idle = inner.hub.take_idle();
        if idle.is_empty() {
            continue;
        }
        let mut conn = inner.conn.clone();
        match tokio::time::timeout(inner.command_timeout, conn.unsubscribe(&idle)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "unsubscribing idle channels failed"),
            Err(_) => tracing::debug!("unsubscribing idle channels timed out"),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error> {
        // The hot path: no timer of our own. The connection manager bounds it already — one
        // connection attempt (no retries) within the connect timeout, then the response within
        // the command timeout — and a timer registration costs a fifth of a hit's own CPU.
        let mut conn = self.conn();
        Ok(redis::cmd("GET")
            .arg(key.value())
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await?)
    }

    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.set_and_wake.key(key.value());
        call.arg(value).arg(millis(exp)).arg(key.channel());
        self.bounded(call.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    async fn delete(&self, key: &EntryKey) -> Result<(), Error> {
        let mut conn = self.conn();
        self.bounded(
            redis::cmd("DEL")
                .arg(key.value())
                .query_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn remaining_ttl(&self, key: &EntryKey) -> Result<Option<Duration>, Error> {
        let mut conn = self.conn();
        let ms = self
            .bounded(
                redis::cmd("PTTL")
                    .arg(key.value())
                    .query_async::<i64>(&mut conn),
            )
            .await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    async fn try_lock(
        &self,
        key: &EntryKey,
        token: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, Error> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.try_lock.key(key.lock());
        call.arg(token).arg(millis(ttl));
        let answer = self.bounded(call.invoke_async::<i64>(&mut conn)).await?;
        Ok(match u64::try_from(answer) {
            Ok(ms) => LockAttempt::Held {
                remaining: Duration::from_millis(ms),
            },
            Err(_) => LockAttempt::Acquired,
        })
    }

    async fn store_and_unlock(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.store_and_unlock.key(key.value());
        call.key(key.lock())
            .arg(value)
            .arg(millis(exp))
            .arg(token)
            .arg(key.channel());
        Ok(self.bounded(call.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    async fn unlock(&self, key: &EntryKey, token: &str) -> Result<bool, Error> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.unlock.key(key.lock());
        call.arg(token).arg(key.channel());
        Ok(self.bounded(call.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    async fn extend_lock(&self, key: &EntryKey, token: &str, ttl: Duration) -> Result<bool, Error> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.extend.key(key.lock());
        call.arg(token).arg(millis(ttl));
        Ok(self.bounded(call.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, Error> {
        let channel = key.channel();
        let _shared = self.inner.control.read().await;
        let (subscription, ready) = self.inner.hub.register(&channel);
        let mut conn = self.conn();
        let confirm = ready.get_or_try_init(|| async { conn.subscribe(&channel).await });
        self.bounded(confirm).await?;
        Ok(subscription)
    }

    async fn shutdown(&self) {
        if let Some(task) = self
            .inner
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        self.inner.hub.wake_all();
    }

    fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }
}
