//! The Redis backend: one RESP3 connection through the `redis` crate's reconnecting
//! [`ConnectionManager`], shared by commands and by every waiter's subscription.
//!
//! - The hit path is one `GET`.
//! - Every step of the lease protocol is one Lua script over the keys of one entry (value `v`,
//!   lease `l`, failure memory `f`), which share a Cluster hash slot: the miss that takes the
//!   lease, renewal, the store that only writes while the lease is current, the release, and
//!   `set`/`invalidate`, which revoke a lease in flight. Each script that ends or revokes a lease
//!   `PUBLISH`es a wake-up on the entry's channel.
//! - Waiters: the process subscribes to an entry's channel once (confirmed by the server before
//!   the waiter looks), fans wake-ups out in-process through a [`WakeHub`], and unsubscribes
//!   channels nobody waits on in the background. After a reconnect every waiter is woken to look
//!   again, since wake-ups may have been lost.
//! - Every call is bounded (the connect timeout while reconnecting, then the command timeout),
//!   and goes through a circuit breaker: after a few consecutive timeouts or connection errors
//!   calls fail open at once for a cool-down, then one probe decides whether to close it. TCP
//!   keepalive and `TCP_USER_TIMEOUT` make a half-open connection fail instead of hanging.
//!
//! - On a Redis Cluster ([`RedisBackend::connect_cluster`]) the same commands go through the
//!   `redis` crate's async cluster client, which routes each one by its first key and follows
//!   MOVED/ASK, slot migrations and failovers; wake-ups use sharded pub/sub (`SPUBLISH` inside
//!   the scripts, `SSUBSCRIBE` on a second cluster client that carries subscriptions only),
//!   since an entry's channel shares the hash tag of its keys. A channel whose slot moves is
//!   subscribed again on its new owner.
//! - With Sentinel ([`RedisBackend::connect_sentinel`]) commands go to the primary the
//!   sentinels name, through a reconnecting manager; when commands fail, the sentinels are
//!   asked again and a new primary is followed (see the `sentinel` module).
//!
//! Requires Redis 6 or newer (RESP3). On a cluster, wake-ups use sharded pub/sub where the
//! servers have it (Redis 7+) and fall back to classic `PUBLISH` (broadcast to every node)
//! where they do not.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisFuture};
use redis::{Script, Value};

use redis::sentinel::SentinelClient;

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::sentinel::Primary;
use super::{Backend, Holder, LeaseAttempt, Lookup, Release, Subscription, WakeHub};
use crate::{EntryKey, Error};

/// KEYS: value, lease, failure memory. ARGV: token, lease ms, `1` to return a stored value.
/// Answers `{1, value}`, `{2}` (leased) or `{3, remaining ms, holder, last failed or false}`.
const LEASE: &str = r"
if ARGV[3] == '1' then
  local value = redis.call('GET', KEYS[1])
  if value then return {1, value} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {3, ttl, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
";

/// KEYS: lease. ARGV: token, lease ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// KEYS: value, lease, failure memory. ARGV: bytes, exp ms, token, channel, publish command.
const STORE_LEASED: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call(ARGV[5], ARGV[4], 'v')
return 1
";

/// KEYS: lease, failure memory. ARGV: token, ms to remember a failure (0: abandoned), channel,
/// publish command.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
redis.call(ARGV[4], ARGV[3], 'u')
return 1
";

/// KEYS: value, lease, failure memory. ARGV: bytes, exp ms, channel, publish command.
const SET_REVOKING: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call(ARGV[4], ARGV[3], 'v')
return 1
";

/// KEYS: value, lease, failure memory. ARGV: channel, publish command.
const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call(ARGV[2], ARGV[1], 'i')
return 1
";

/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on one command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often channels nobody waits on are unsubscribed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The connection under every command: one server through the reconnecting manager, or a
/// Redis Cluster through the cluster client, which routes each command (and `EVALSHA`) by its
/// first key. All the keys of an entry share a hash slot, so every script runs on one node.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    /// `true`: sharded pub/sub (Redis 7+); `false`: classic `PUBLISH`, which a cluster
    /// broadcasts to every node (servers older than 7).
    Cluster(ClusterConnection, bool),
    /// The primary of a Sentinel-managed set, followed across failovers.
    Sentinel(Arc<Primary>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn, _) => conn.req_packed_command(cmd),
            Conn::Sentinel(primary) => match primary.manager() {
                Ok(mut conn) => Box::pin(async move { conn.req_packed_command(cmd).await }),
                Err(err) => Box::pin(std::future::ready(Err(err))),
            },
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Conn::Cluster(conn, _) => conn.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(primary) => match primary.manager() {
                Ok(mut conn) => {
                    Box::pin(async move { conn.req_packed_commands(cmd, offset, count).await })
                }
                Err(err) => Box::pin(std::future::ready(Err(err))),
            },
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn, _) => conn.get_db(),
            Conn::Sentinel(primary) => primary.db(),
        }
    }
}

impl Conn {
    /// The command the scripts publish wake-ups with: sharded pub/sub on a cluster (Redis 7+),
    /// where the entry's channel hashes to the slot of its keys (the shared hash tag).
    fn publish_command(&self) -> &'static [u8] {
        match self {
            Conn::Cluster(_, true) => b"SPUBLISH",
            Conn::Single(_) | Conn::Sentinel(_) | Conn::Cluster(_, false) => b"PUBLISH",
        }
    }

    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn, true) => conn.ssubscribe(channel).await,
            Conn::Cluster(conn, false) => conn.subscribe(channel).await,
            Conn::Sentinel(primary) => primary.manager()?.subscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channels).await,
            Conn::Sentinel(primary) => primary.manager()?.unsubscribe(channels).await,
            // One at a time: channels of different slots cannot share an SUNSUBSCRIBE.
            Conn::Cluster(conn, true) => {
                for channel in channels {
                    conn.sunsubscribe(channel).await?;
                }
                Ok(())
            }
            Conn::Cluster(conn, false) => conn.unsubscribe(channels).await,
        }
    }
}

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
    /// Commands.
    conn: Conn,
    /// Channels whose subscription the server confirmed (see [`Confirmed`]).
    confirmed: Confirmed,
    /// Subscriptions: the same connection on one server or a Sentinel primary; on a cluster
    /// a second client, one connection per shard, that carries nothing but `SSUBSCRIBE` /
    /// `SUNSUBSCRIBE`. A shard that hands a slot over pushes an unsolicited `SUNSUBSCRIBE`,
    /// which the `redis` crate (1.8) takes for the reply of the oldest request in flight on that
    /// connection: on a connection shared with commands it would answer a `GET` with it and
    /// shift every later reply by one.
    subs: Conn,
    hub: WakeHub,
    /// Held (shared) while a channel is being subscribed, (exclusive) while idle ones are
    /// unsubscribed, so an UNSUBSCRIBE can never overtake a newer SUBSCRIBE of the same channel.
    control: tokio::sync::RwLock<()>,
    prefix: String,
    command_timeout: Duration,
    scripts: Scripts,
    breaker: Breaker,
    sweeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Scripts {
    lease: Script,
    renew: Script,
    store_leased: Script,
    release: Script,
    set_revoking: Script,
    invalidate: Script,
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
            .field(
                "wake_ups",
                &String::from_utf8_lossy(self.inner.conn.publish_command()),
            )
            .field("channels", &self.inner.hub.channels())
            .finish()
    }
}

/// Settings for [`RedisBackend`]; see [`RedisBackend::builder`].
#[derive(Clone)]
pub struct RedisBackendBuilder {
    target: Target,
    connect_timeout: Duration,
    command_timeout: Duration,
    prefix: String,
    breaker: BreakerConfig,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
    /// Sentinel only: the primary's user and password, and database.
    primary_auth: Option<(Option<String>, String)>,
    primary_db: Option<i64>,
}

impl std::fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may carry a password: show the host parts only.
        let host = |url: &str| url.rsplit('@').next().unwrap_or_default().to_owned();
        let hosts: Vec<String> = match &self.target {
            Target::Single(url) => vec![host(url)],
            Target::Cluster(urls) | Target::Sentinel { urls, .. } => {
                urls.iter().map(|url| host(url)).collect()
            }
        };
        let mut out = f.debug_struct("RedisBackendBuilder");
        out.field("hosts", &hosts);
        if let Target::Sentinel { service, .. } = &self.target {
            out.field("service", service);
        }
        out.field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("prefix", &self.prefix)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// One server, the seed nodes of a Redis Cluster, or the sentinels of a primary.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
    Sentinel { urls: Vec<String>, service: String },
}

/// The client `prepare` builds: made once per `connect`, never stored, so the size of its
/// variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client, ConnectionManagerConfig),
    /// Commands, and subscriptions (see [`Inner::subs`]).
    Cluster(redis::cluster::ClusterClient, redis::cluster::ClusterClient),
    /// One client per sentinel; the hook its connections' drops call (set once connected).
    Sentinel(Vec<SentinelClient>, ConnectionManagerConfig, FollowHook),
}

/// The channels whose `SUBSCRIBE`/`SSUBSCRIBE` confirmation push arrived (and no unsubscribe
/// since). On a cluster, `ssubscribe` can return `Ok` without being subscribed: the `redis`
/// crate (1.8) takes an unsolicited `SUNSUBSCRIBE` (a shard dropping another channel of a slot
/// it handed over) for the reply of the oldest request in flight, and then discards the real
/// reply, e.g. a `MOVED`. The confirmation push names the channel, so it tells the two apart.
/// On a cluster the pushes reach us through a task of the client, so a confirmation may come a
/// moment after the `Ok`: [`Confirmed::wait`] gives it that moment.
#[derive(Clone, Default)]
struct Confirmed(Arc<ConfirmedInner>);

#[derive(Default)]
struct ConfirmedInner {
    channels: std::sync::Mutex<std::collections::HashSet<String>>,
    arrived: tokio::sync::Notify,
}

impl Confirmed {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, channel: &str) {
        self.lock().insert(channel.to_owned());
        self.0.arrived.notify_waiters();
    }

    /// Whether `channel`'s confirmation arrives within `patience`.
    async fn wait(&self, channel: &str, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.0.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.lock().contains(channel) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.lock().contains(channel);
            }
        }
    }
}

/// How long a cluster's wake-ups are treated as unreliable after a shard dropped a subscription
/// or a connection dropped: slots are moving or failing over.
const UNSETTLED_AFTER_TOPOLOGY_CHANGE: Duration = Duration::from_secs(2);

/// How a Sentinel connection's push handler reaches the [`Primary`] built after it.
type FollowHook = Arc<std::sync::OnceLock<Weak<Primary>>>;

/// What `prepare` hands to `connect` / `connect_lazy`.
struct Prepared {
    client: Client,
    hub: WakeHub,
    confirmed: Confirmed,
    prefix: String,
    command_timeout: Duration,
    breaker: BreakerConfig,
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

    /// The circuit breaker: after `threshold` consecutive timeouts or connection errors, calls
    /// fail open at once (no command sent, no timeout waited) for `cooldown`; then one call
    /// probes the server and closes the breaker if it answers. Default: 3 and 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = atomcache::RedisBackend::builder("redis://127.0.0.1/")
    ///     .command_timeout(Duration::from_millis(200))
    ///     .circuit_breaker(5, Duration::from_millis(500));
    /// ```
    pub fn circuit_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker = BreakerConfig {
            threshold,
            cooldown,
        };
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

    /// Sentinel only ([`RedisBackend::sentinel_builder`]): the user (`None` for the default
    /// user) and password of the primary the sentinels name. The sentinels' own credentials
    /// go in their URLs: `redis://:sentinel-password@10.0.0.1:26379`.
    ///
    /// ```
    /// let builder = atomcache::RedisBackend::sentinel_builder(&["redis://10.0.0.1:26379"], "cache")
    ///     .primary_auth(None, "primary-password")
    ///     .primary_db(2);
    /// ```
    pub fn primary_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.primary_auth = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// Sentinel only: the database number on the primary. Default 0.
    pub fn primary_db(mut self, db: i64) -> Self {
        self.primary_db = Some(db);
        self
    }

    /// Connects now; fails if the server (on a cluster: the seed nodes; with Sentinel: the
    /// sentinels and the primary they name) cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisBackend, Error> {
        let timeout = self.connect_timeout;
        let p = self.prepare()?;
        let (conn, subs) = match p.client {
            Client::Single(client, config) => {
                let conn = within(timeout, client.get_connection_manager_with_config(config));
                let conn = Conn::Single(conn.await?);
                (conn.clone(), conn)
            }
            Client::Cluster(commands, subs) => {
                let both = async {
                    let mut conn = commands.get_async_connection().await?;
                    let subs = subs.get_async_connection().await?;
                    let sharded = sharded_pubsub(&mut conn).await?;
                    if !sharded {
                        tracing::warn!(
                            "this Redis Cluster has no sharded pub/sub (Redis < 7): wake-ups use \
                             PUBLISH, which the cluster broadcasts to every node"
                        );
                    }
                    Ok::<_, redis::RedisError>((
                        Conn::Cluster(conn, sharded),
                        Conn::Cluster(subs, sharded),
                    ))
                };
                within(timeout, both).await?
            }
            Client::Sentinel(sentinels, config, hook) => {
                let primary = Primary::connect(sentinels, config, p.hub.clone(), timeout).await?;
                let _ = hook.set(Arc::downgrade(&primary));
                let conn = Conn::Sentinel(primary);
                (conn.clone(), conn)
            }
        };
        Ok(RedisBackend::assemble(
            conn,
            subs,
            p.hub,
            p.confirmed,
            p.prefix,
            p.command_timeout,
            p.breaker,
        ))
    }

    /// Returns at once and connects on first use, so a service can start while Redis is down
    /// (its calls fail open until Redis answers). Must be called inside a Tokio runtime.
    ///
    /// One server only: on a Redis Cluster or with Sentinel the topology must be known first
    /// (an error of kind [`Error::InvalidConfig`]; use [`connect`](Self::connect)).
    pub fn connect_lazy(self) -> Result<RedisBackend, Error> {
        let p = self.prepare()?;
        let Client::Single(client, config) = p.client else {
            return Err(Error::InvalidConfig(
                "connect_lazy is only supported for one Redis server, not for a Redis Cluster \
                 or Sentinel; use connect"
                    .into(),
            ));
        };
        let conn = Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?);
        Ok(RedisBackend::assemble(
            conn.clone(),
            conn,
            p.hub,
            p.confirmed,
            p.prefix,
            p.command_timeout,
            p.breaker,
        ))
    }

    fn prepare(self) -> Result<Prepared, Error> {
        crate::key::validate_prefix(&self.prefix)?;
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("the circuit breaker's cooldown", self.breaker.cooldown),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be greater than zero"
                )));
            }
        }
        if self.breaker.threshold == 0 {
            return Err(Error::InvalidConfig(
                "the circuit breaker's threshold must be at least 1".into(),
            ));
        }
        if !matches!(self.target, Target::Sentinel { .. })
            && (self.primary_auth.is_some() || self.primary_db.is_some())
        {
            return Err(Error::InvalidConfig(
                "primary_auth and primary_db are Sentinel settings; for one server or a cluster \
                 put the user, password and database in the URL"
                    .into(),
            ));
        }
        let hub = WakeHub::new();
        let push_hub = hub.clone();
        let confirmed = Confirmed::default();
        let push_confirmed = confirmed.clone();
        let hook = FollowHook::default();
        let push_hook = hook.clone();
        let on_push_fn = move |push: PushInfo| {
            if matches!(push.kind, PushKind::Disconnection) {
                // With Sentinel: the primary may have moved; ask before reconnecting to it.
                if let Some(primary) = push_hook.get().and_then(Weak::upgrade) {
                    primary.suspect();
                }
            }
            on_push(&push_hub, &push_confirmed, push);
            Ok::<(), redis::aio::SendError>(())
        };
        let url = match &self.target {
            Target::Single(url) => url.clone(),
            Target::Cluster(urls) => {
                let commands = self.cluster_client(
                    urls,
                    None::<fn(PushInfo) -> Result<(), redis::aio::SendError>>,
                )?;
                let subs = self.cluster_client(urls, Some(on_push_fn))?;
                return Ok(Prepared {
                    client: Client::Cluster(commands, subs),
                    hub,
                    confirmed,
                    prefix: self.prefix,
                    command_timeout: self.command_timeout,
                    breaker: self.breaker,
                });
            }
            Target::Sentinel { urls, service } => {
                let sentinels = self.sentinel_clients(urls, service)?;
                return Ok(Prepared {
                    client: Client::Sentinel(sentinels, self.manager_config(on_push_fn), hook),
                    hub,
                    confirmed,
                    prefix: self.prefix,
                    command_timeout: self.command_timeout,
                    breaker: self.breaker,
                });
            }
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::InvalidConfig(format!("invalid Redis URL: {e}")))?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(tcp_settings(self.command_timeout));
        let client = self
            .client(info)
            .map_err(|e| Error::InvalidConfig(format!("invalid Redis URL: {e}")))?;

        Ok(Prepared {
            client: Client::Single(client, self.manager_config(on_push_fn)),
            hub,
            confirmed,
            prefix: self.prefix,
            command_timeout: self.command_timeout,
            breaker: self.breaker,
        })
    }
}

/// No Nagle delay (commands are small and latency-bound); keepalive probes so an idle
/// half-open connection is noticed; `TCP_USER_TIMEOUT` so unacknowledged writes to a vanished
/// peer fail the connection (and the manager reconnects) instead of hanging.
fn tcp_settings(command_timeout: Duration) -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout((command_timeout * 4).max(Duration::from_secs(5)));
    #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
    let _ = command_timeout;
    settings
}

impl RedisBackendBuilder {
    /// The reconnecting manager's settings (one server, or the current Sentinel primary).
    fn manager_config(
        &self,
        push_sender: impl redis::aio::AsyncPushSender,
    ) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            // One attempt per trigger: a call waiting on a reconnect is bounded by the connect
            // timeout; the next call triggers the next attempt.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(500))
            .set_push_sender(push_sender)
            .set_automatic_resubscription()
    }

    /// The Sentinel client: sentinel addresses and credentials from `urls` (TLS when they are
    /// `rediss://`, and then to the primary too), RESP3 and our TCP settings to the primary.
    fn sentinel_clients(
        &self,
        urls: &[String],
        service: &str,
    ) -> Result<Vec<SentinelClient>, Error> {
        let invalid =
            |e: redis::RedisError| Error::InvalidConfig(format!("invalid Sentinel URL: {e}"));
        if urls.is_empty() {
            return Err(Error::InvalidConfig(
                "Sentinel needs at least one sentinel URL".into(),
            ));
        }
        if service.is_empty() {
            return Err(Error::InvalidConfig(
                "the Sentinel service name is empty".into(),
            ));
        }
        let infos = urls
            .iter()
            .map(|url| url.as_str().into_connection_info().map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        // TLS to the primary when the sentinels are reached over TLS.
        let tls = infos
            .iter()
            .any(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        infos
            .iter()
            .map(|info| self.sentinel_client(info, service, tls).map_err(invalid))
            .collect()
    }

    /// The client of one sentinel, with its own credentials (from its URL).
    fn sentinel_client(
        &self,
        info: &redis::ConnectionInfo,
        service: &str,
        tls: bool,
    ) -> redis::RedisResult<SentinelClient> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let mut builder =
            SentinelClientBuilder::new([info.addr().clone()], service, SentinelServerType::Master)?
                .set_client_to_redis_protocol(ProtocolVersion::RESP3)
                .set_client_to_redis_tcp_settings(tcp_settings(self.command_timeout))
                .set_client_to_sentinel_tcp_settings(tcp_settings(self.command_timeout));
        let settings = info.redis_settings();
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some((user, password)) = &self.primary_auth {
            if let Some(user) = user {
                builder = builder.set_client_to_redis_username(user);
            }
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(db) = self.primary_db {
            builder = builder.set_client_to_redis_db(db);
        }
        if tls {
            #[cfg(not(feature = "tls"))]
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "rediss:// needs the `tls` feature of atomcache",
            )));
            #[cfg(feature = "tls")]
            {
                let _ = rustls::crypto::ring::default_provider().install_default();
                builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if let Some(pem) = &self.root_certificate {
                    let certs = redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    };
                    builder = builder.set_client_to_redis_certificates(certs.clone());
                    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                        builder = builder.set_client_to_sentinel_certificates(certs);
                    }
                }
            }
        }
        builder.build()
    }

    /// A cluster client: RESP3, the same timeouts and TCP settings as a single server; with a
    /// push sender for the subscriptions' client (pushes carry the sharded wake-ups).
    fn cluster_client(
        &self,
        urls: &[String],
        push_sender: Option<impl redis::aio::AsyncPushSender>,
    ) -> Result<redis::cluster::ClusterClient, Error> {
        if urls.is_empty() {
            return Err(Error::InvalidConfig(
                "a Redis Cluster needs at least one node URL".into(),
            ));
        }
        let builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.command_timeout)
            .tcp_settings(tcp_settings(self.command_timeout))
            // Tries to follow MOVED/ASK redirections, topology refreshes and TRYAGAIN (a script
            // over an entry whose keys are partly moved, while its slot migrates), waiting 5 ms,
            // then 20, 40, 80 … ms between tries (the crate's default waits at least 1.28 s, past
            // the command timeout, so a store during a migration would fail and its waiters
            // wait out the lease). Every call stays bounded by the command timeout and the breaker.
            .retries(8)
            .min_retry_wait(5)
            .max_retry_wait(
                u64::try_from((self.command_timeout / 4).as_millis())
                    .unwrap_or(u64::MAX)
                    .max(10),
            )
            .retry_wait_formula(10, 2);
        let builder = match push_sender {
            Some(sender) => builder.push_sender(sender),
            None => builder,
        };
        #[cfg(feature = "tls")]
        let builder = {
            if urls.iter().any(|url| url.starts_with("rediss://")) {
                // As for one server: ring unless the program chose a provider already.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            match &self.root_certificate {
                Some(pem) => builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                }),
                None => builder,
            }
        };
        builder
            .build()
            .map_err(|e| Error::InvalidConfig(format!("invalid Redis Cluster URLs: {e}")))
    }

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

fn on_push(hub: &WakeHub, confirmed: &Confirmed, push: PushInfo) {
    let channel = || match push.data.first() {
        Some(Value::BulkString(channel)) => std::str::from_utf8(channel).ok(),
        _ => None,
    };
    match push.kind {
        PushKind::Subscribe | PushKind::SSubscribe => {
            if let Some(channel) = channel() {
                confirmed.insert(channel);
            }
        }
        PushKind::Unsubscribe => {
            if let Some(channel) = channel() {
                confirmed.lock().remove(channel);
            }
        }
        // Sharded pub/sub on a cluster delivers the same wake-ups as `smessage`.
        PushKind::Message | PushKind::SMessage => {
            if let Some(Value::BulkString(channel)) = push.data.first() {
                if let Ok(channel) = std::str::from_utf8(channel) {
                    hub.wake(channel);
                }
            }
        }
        // Wake-ups published while the connection was down are lost: everyone looks again, and
        // keeps looking while the client reconnects and resubscribes.
        PushKind::Disconnection => hub.unsettle(UNSETTLED_AFTER_TOPOLOGY_CHANGE),
        // A cluster node drops the sharded subscriptions of a slot that migrated away (and the
        // client stops tracking them): the channel's waiters subscribe again, on the slot's new
        // owner, and look again. The confirmations of the sweeper's own SUNSUBSCRIBEs land
        // here too, for channels the hub no longer has: nothing to do.
        //
        // While slots move, a wake-up can also be published where its waiter is not subscribed
        // (a script redirected to the importing node while the channel is still served by the
        // migrating one), and no push says so: every waiter keeps looking again for a while.
        PushKind::SUnsubscribe => {
            if let Some(channel) = channel() {
                confirmed.lock().remove(channel);
                if hub.forget(channel) {
                    hub.unsettle(UNSETTLED_AFTER_TOPOLOGY_CHANGE);
                }
            }
        }
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
        Self::builder_for(Target::Single(url.to_owned()))
    }

    /// Connects to a Redis Cluster (Redis 7 or newer) with the default settings, through any of
    /// its `nodes` (the client discovers the others). Each entry's keys and wake-up channel
    /// share a hash slot: every script runs on the slot's primary, and waiters are woken by
    /// sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), atomcache::Error> {
    /// let backend = atomcache::RedisBackend::connect_cluster(&[
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    ///     "redis://10.0.0.3:7000",
    /// ])
    /// .await?;
    /// let runtime = atomcache::init(backend).await?;
    /// # runtime.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster(nodes: &[&str]) -> Result<RedisBackend, Error> {
        Self::cluster_builder(nodes).connect().await
    }

    /// Starts configuring a backend on a Redis Cluster, with the same settings as
    /// [`builder`](Self::builder) (timeouts, key prefix, circuit breaker).
    ///
    /// ```
    /// let builder = atomcache::RedisBackend::cluster_builder(&["redis://127.0.0.1:7000"])
    ///     .command_timeout(std::time::Duration::from_millis(250))
    ///     .key_prefix("svc:");
    /// ```
    pub fn cluster_builder(nodes: &[&str]) -> RedisBackendBuilder {
        Self::builder_for(Target::Cluster(
            nodes.iter().map(|n| (*n).to_owned()).collect(),
        ))
    }

    /// Connects to the primary of a Sentinel-managed set with the default settings: the
    /// `sentinels` (`redis://host:26379`, with the sentinels' own user/password if they have
    /// one) name the primary of `service`, and after a failover the backend follows the new
    /// primary on its own (see "Running on Redis Cluster / Sentinel" in the README).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), atomcache::Error> {
    /// let backend = atomcache::RedisBackend::connect_sentinel(
    ///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "cache",
    /// )
    /// .await?;
    /// let runtime = atomcache::init(backend).await?;
    /// # runtime.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel(
        sentinels: &[&str],
        service: &str,
    ) -> Result<RedisBackend, Error> {
        Self::sentinel_builder(sentinels, service).connect().await
    }

    /// Starts configuring a backend on the primary of a Sentinel-managed set, with the same
    /// settings as [`builder`](Self::builder), plus the primary's credentials
    /// ([`primary_auth`](RedisBackendBuilder::primary_auth)) and database
    /// ([`primary_db`](RedisBackendBuilder::primary_db)).
    ///
    /// ```
    /// let builder = atomcache::RedisBackend::sentinel_builder(
    ///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "cache",
    /// )
    /// .command_timeout(std::time::Duration::from_millis(250))
    /// .primary_auth(None, "secret");
    /// ```
    pub fn sentinel_builder(sentinels: &[&str], service: &str) -> RedisBackendBuilder {
        Self::builder_for(Target::Sentinel {
            urls: sentinels.iter().map(|n| (*n).to_owned()).collect(),
            service: service.to_owned(),
        })
    }

    fn builder_for(target: Target) -> RedisBackendBuilder {
        RedisBackendBuilder {
            target,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            prefix: "atomcache:".to_owned(),
            breaker: BreakerConfig::default(),
            #[cfg(feature = "tls")]
            root_certificate: None,
            primary_auth: None,
            primary_db: None,
        }
    }

    fn assemble(
        conn: Conn,
        subs: Conn,
        hub: WakeHub,
        confirmed: Confirmed,
        prefix: String,
        command_timeout: Duration,
        breaker: BreakerConfig,
    ) -> Self {
        let inner = Arc::new(Inner {
            conn,
            confirmed,
            subs,
            hub,
            control: tokio::sync::RwLock::new(()),
            prefix,
            command_timeout,
            scripts: Scripts {
                lease: Script::new(LEASE),
                renew: Script::new(RENEW),
                store_leased: Script::new(STORE_LEASED),
                release: Script::new(RELEASE),
                set_revoking: Script::new(SET_REVOKING),
                invalidate: Script::new(INVALIDATE),
            },
            breaker: Breaker::new(breaker),
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

    /// The state of the circuit breaker in front of this backend's calls.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// How many times the circuit breaker opened.
    pub fn breaker_trips(&self) -> u64 {
        self.inner.breaker.trips()
    }

    /// With Sentinel: `host:port` of the primary this backend sends its commands to now.
    /// `None` on one server or a cluster.
    pub fn sentinel_primary(&self) -> Option<String> {
        match &self.inner.conn {
            Conn::Sentinel(primary) => Some(primary.address()),
            _ => None,
        }
    }

    /// A command through the breaker, bounded by the command timeout.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let result = self.bounded_inner(fut).await;
        if let Err(err) = &result {
            self.failed(err);
        }
        result
    }

    /// With Sentinel, an error that may mean the primary moved (no answer, `READONLY`) sends
    /// the backend asking the sentinels. Not the open breaker's `Unavailable`: no command was
    /// sent, so it says nothing new (the drop or the failures that opened it started the
    /// search already, and its probe will tell), and asking on every such call would hold
    /// commands back again and again after the primary was found.
    fn failed(&self, err: &Error) {
        if let Conn::Sentinel(primary) = &self.inner.conn {
            if unhealthy(err) || read_only(err) {
                primary.suspect();
            }
        }
    }

    async fn bounded_inner<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let timeout = self.inner.command_timeout;
        self.inner
            .breaker
            .call(within(timeout, fut), unhealthy)
            .await
    }

    /// The `LEASE` script: the value first when `with_value`, then the lease or its holder.
    async fn lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
        with_value: bool,
    ) -> Result<Lookup, Error> {
        let (lock, failed) = (key.lock(), key.failed());
        let flag: &[u8] = if with_value { b"1" } else { b"0" };
        let answer: Value = self
            .script(
                &self.inner.scripts.lease,
                &[key.value(), &lock, &failed],
                &[token.as_bytes(), millis(lease).as_bytes(), flag],
            )
            .await?;
        parse_lease(answer)
    }

    /// Runs one of the scripts over the keys of an entry.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, Error> {
        let mut conn = self.conn();
        let mut call = script.prepare_invoke();
        for key in keys {
            call.key(*key);
        }
        for arg in args {
            call.arg(*arg);
        }
        self.bounded(async move { call.invoke_async::<T>(&mut conn).await })
            .await
    }

    fn conn(&self) -> Conn {
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
        let mut conn = inner.subs.clone();
        match tokio::time::timeout(inner.command_timeout, conn.unsubscribe(&idle)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "unsubscribing idle channels failed"),
            Err(_) => tracing::debug!("unsubscribing idle channels timed out"),
        }
    }
}

/// Errors that mean "the server is not answering" (as opposed to an answer that is an error).
fn unhealthy(err: &Error) -> bool {
    match err {
        Error::Timeout(_) => true,
        Error::Backend(err) => err.downcast_ref::<redis::RedisError>().is_none_or(|err| {
            err.is_timeout()
                || err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
        }),
        _ => false,
    }
}

/// Whether the cluster knows `SPUBLISH` (Redis 7+): `COMMAND INFO` answers nil for a command
/// the server does not have.
async fn sharded_pubsub(conn: &mut ClusterConnection) -> redis::RedisResult<bool> {
    let info: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("SPUBLISH")
        .query_async(conn)
        .await?;
    Ok(knows_command(&info))
}

fn knows_command(info: &Value) -> bool {
    match info {
        Value::Array(items) => !matches!(items.first(), None | Some(Value::Nil)),
        Value::Nil => false,
        _ => true,
    }
}

/// `fut` bounded by `timeout`: its error, or [`Error::Timeout`].
pub(super) async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// How long a cluster subscription waits for its confirmation push after the `Ok`.
const CONFIRMATION_PATIENCE: Duration = Duration::from_millis(50);

/// Errors of a cluster command that a moment later may not recur: no connection for the slot
/// yet, a redirection or `TRYAGAIN` while slots move, the cluster failing over.
fn transient_in_cluster(err: &redis::RedisError) -> bool {
    err.is_cluster_error()
        || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || err.is_io_error()
        || err.is_connection_dropped()
}

/// `READONLY`: the node became a replica (a Sentinel failover demoted it).
fn read_only(err: &Error) -> bool {
    match err {
        Error::Backend(err) => err.downcast_ref::<redis::RedisError>().is_some_and(|err| {
            err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        }),
        _ => false,
    }
}

fn millis(d: Duration) -> String {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64 / 2)
        .to_string()
}

/// Reads the answer of the `LEASE` script.
fn parse_lease(answer: Value) -> Result<Lookup, Error> {
    let bad = || Error::backend(format!("unexpected answer to the lease script: {answer:?}"));
    let Value::Array(items) = &answer else {
        return Err(bad());
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match items.as_slice() {
        [Value::Int(1), Value::BulkString(value)] => Ok(Lookup::Value(value.clone())),
        [Value::Int(2)] => Ok(Lookup::Leased),
        [Value::Int(3), Value::Int(ms), holder, failed] => Ok(Lookup::Held(Holder {
            remaining: Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
            token: text(holder).unwrap_or_default(),
            last_failed: text(failed),
        })),
        _ => Err(bad()),
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &EntryKey) -> Result<Option<Vec<u8>>, Error> {
        // The hot path: no timer of our own. The connection manager bounds it already — one
        // connection attempt (no retries) within the connect timeout, then the response within
        // the command timeout — and a timer registration costs a fifth of a hit's own CPU.
        // The breaker's ticket instead of `Breaker::call`: no future wraps the query, so
        // nothing large is moved on the hot path.
        let ticket = self.inner.breaker.ticket()?;
        let mut conn = self.conn();
        let result = redis::cmd("GET")
            .arg(key.value())
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            .map_err(Error::from);
        ticket.settle(&result, unhealthy);
        if let Err(err) = &result {
            self.failed(err);
        }
        result
    }

    async fn get_or_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<Lookup, Error> {
        self.lease(key, token, lease, true).await
    }

    async fn try_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<LeaseAttempt, Error> {
        match self.lease(key, token, lease, false).await? {
            Lookup::Leased => Ok(LeaseAttempt::Acquired),
            Lookup::Held(holder) => Ok(LeaseAttempt::Held(holder)),
            Lookup::Value(_) => Err(Error::backend("the lease script returned a value")),
        }
    }

    async fn renew_lease(
        &self,
        key: &EntryKey,
        token: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        let renewed: i64 = self
            .script(
                &self.inner.scripts.renew,
                &[&key.lock()],
                &[token.as_bytes(), millis(lease).as_bytes()],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn store_leased(
        &self,
        key: &EntryKey,
        token: &str,
        value: &[u8],
        exp: Duration,
    ) -> Result<bool, Error> {
        let (lock, failed, channel) = (key.lock(), key.failed(), key.channel());
        let stored: i64 = self
            .script(
                &self.inner.scripts.store_leased,
                &[key.value(), &lock, &failed],
                &[
                    value,
                    millis(exp).as_bytes(),
                    token.as_bytes(),
                    channel.as_bytes(),
                    self.inner.conn.publish_command(),
                ],
            )
            .await?;
        Ok(stored == 1)
    }

    async fn release_lease(
        &self,
        key: &EntryKey,
        token: &str,
        why: Release,
    ) -> Result<bool, Error> {
        let remember = match why {
            Release::Failed { remember } => millis(remember),
            Release::Abandoned => "0".to_owned(),
        };
        let (lock, failed, channel) = (key.lock(), key.failed(), key.channel());
        let released: i64 = self
            .script(
                &self.inner.scripts.release,
                &[&lock, &failed],
                &[
                    token.as_bytes(),
                    remember.as_bytes(),
                    channel.as_bytes(),
                    self.inner.conn.publish_command(),
                ],
            )
            .await?;
        Ok(released == 1)
    }

    async fn set(&self, key: &EntryKey, value: &[u8], exp: Duration) -> Result<(), Error> {
        let (lock, failed, channel) = (key.lock(), key.failed(), key.channel());
        self.script::<i64>(
            &self.inner.scripts.set_revoking,
            &[key.value(), &lock, &failed],
            &[
                value,
                millis(exp).as_bytes(),
                channel.as_bytes(),
                self.inner.conn.publish_command(),
            ],
        )
        .await
        .map(drop)
    }

    async fn invalidate(&self, key: &EntryKey) -> Result<(), Error> {
        let (lock, failed, channel) = (key.lock(), key.failed(), key.channel());
        self.script::<i64>(
            &self.inner.scripts.invalidate,
            &[key.value(), &lock, &failed],
            &[channel.as_bytes(), self.inner.conn.publish_command()],
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

    async fn subscribe(&self, key: &EntryKey) -> Result<Subscription, Error> {
        let channel = key.channel();
        let _shared = self.inner.control.read().await;
        let (subscription, ready) = self.inner.hub.register(&channel);
        let mut conn = self.inner.subs.clone();
        let confirmed = &self.inner.confirmed;
        let confirm = ready.get_or_try_init(|| async {
            if !matches!(conn, Conn::Cluster(..)) {
                return conn.subscribe(&channel).await;
            }
            // On a cluster, an `Ok` is trusted only with the channel's own confirmation push
            // (see [`Confirmed`]); without it, subscribe again (the client has meanwhile
            // learned where the slot went). While slots move the client may also briefly have
            // no connection for a slot, or be redirected: try again. All within the command
            // timeout (`bounded`).
            let mut last = None;
            for attempt in 0..8u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(4))).await;
                }
                confirmed.lock().remove(&channel);
                match conn.subscribe(&channel).await {
                    Ok(()) => {
                        if confirmed.wait(&channel, CONFIRMATION_PATIENCE).await {
                            return Ok(());
                        }
                        tracing::debug!(%channel, "a subscription answered without its confirmation; again");
                    }
                    Err(err) if transient_in_cluster(&err) => {
                        tracing::debug!(%channel, %err, "subscribing again");
                        last = Some(err);
                    }
                    Err(err) => return Err(err),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the subscription was answered but never confirmed",
                ))
            }))
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_info_tells_whether_the_server_has_the_command() {
        let known = Value::Array(vec![Value::Array(vec![Value::BulkString(
            b"spublish".to_vec(),
        )])]);
        assert!(knows_command(&known));
        assert!(!knows_command(&Value::Array(vec![Value::Nil])));
        assert!(!knows_command(&Value::Array(vec![])));
        assert!(!knows_command(&Value::Nil));
    }

    #[test]
    fn readonly_replies_are_recognised_and_are_not_unhealthy() {
        let err: Error = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ))
        .into();
        assert!(read_only(&err));
        assert!(!unhealthy(&err));
        assert!(!read_only(&Error::Timeout(Duration::from_secs(1))));
    }

    #[test]
    fn sentinel_settings_are_refused_elsewhere_and_checked_for_sentinel() {
        let err = RedisBackend::builder("redis://127.0.0.1/")
            .primary_db(1)
            .prepare()
            .err()
            .expect("primary_db on one server");
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        let err = RedisBackend::sentinel_builder(&[], "svc")
            .prepare()
            .err()
            .expect("no sentinels");
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        let err = RedisBackend::sentinel_builder(&["redis://127.0.0.1:26379"], "")
            .prepare()
            .err()
            .expect("no service");
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        let debug = format!(
            "{:?}",
            RedisBackend::sentinel_builder(&["redis://:hunter2@127.0.0.1:26379"], "svc")
                .primary_auth(None, "primary-secret")
        );
        assert!(
            debug.contains("svc")
                && !debug.contains("hunter2")
                && !debug.contains("primary-secret"),
            "{debug}"
        );
    }
}
