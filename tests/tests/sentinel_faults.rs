//! `RedisBackend::connect_sentinel` on real processes: a primary, a replica and three sentinels
//! per test ([`SentinelSet`]), the primary killed with SIGKILL under load, with a waiter
//! subscribed, and restarted after the failover; replicas as separate OS processes.
//!
//! What is asserted is semantic: every call is answered (fail-open while no primary answers),
//! within the bounds its settings give it; the backend follows the promoted replica without
//! being rebuilt; caching resumes there (one computation per key, hits); nothing is written to
//! the old primary once the sentinels have moved away from it. The durations are printed as
//! `FIGURE ...` lines, not asserted:
//! ```text
//! cargo test -p atomcache-tests --test sentinel_faults -- --nocapture
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Cache, Error, RedisBackend, RedisBackendBuilder};
use atomcache_tests::spec::sentinel_spec;
use atomcache_tests::support::{ms, until_within};
use atomcache_tests::{
    dead_url, unix_ms, RedisServer, ScriptedOptions, ScriptedReplica, SentinelSet,
};
use axum::http::{header, StatusCode};
use common::http::{concurrently, item_router, request, Answer, Computations, Item};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const SCRIPTED: &str = env!("CARGO_BIN_EXE_scripted_replica");
/// Generous: a loaded 2-core machine (down-after is 1 s; a failover takes 2-4 s here).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const BREAKER_THRESHOLD: u32 = 3;
const BREAKER_COOLDOWN: Duration = Duration::from_millis(500);
/// The backend's default key prefix.
const PREFIX: &str = "atomcache:";

/// `host:port` as [`RedisBackend::sentinel_primary`] names a server of the set.
fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A Sentinel builder on the set's running sentinels with the short timeouts of these tests.
fn builder(set: &SentinelSet) -> RedisBackendBuilder {
    let urls = set.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisBackend::sentinel_builder(&urls, set.service())
        .connect_timeout(CONNECT_TIMEOUT)
        .command_timeout(COMMAND_TIMEOUT)
        .circuit_breaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN)
}

async fn connect(set: &SentinelSet) -> RedisBackend {
    builder(set)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect through the sentinels: {e}\n{}", set.logs()))
}

fn sentinel_cache(
    backend: &RedisBackend,
    ns: &str,
    lock_timeout: Duration,
    max_wait: Duration,
) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .max_wait(max_wait)
        .backend(backend.clone())
        .build()
        .expect("cache settings")
}

/// The raw value key of `id` in `ns` (default prefix).
fn value_key(ns: &str, id: &str) -> String {
    atomcache::EntryKey::new(PREFIX, ns, id).value().to_owned()
}

/// Subscribers of `channel` on `server` (`PUBSUB NUMSUB`).
async fn numsub(server: &RedisServer, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut server.raw().await)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

/// Calls of the commands a client of the cache sends (never replicated: scripts are replicated
/// as their effects) that `server` ran since it started.
async fn cache_commands(server: &RedisServer) -> BTreeMap<&'static str, u64> {
    let stats = server.command_stats().await;
    ["evalsha", "eval", "get", "pttl"]
        .into_iter()
        .map(|name| (name, stats.get(name)))
        .collect()
}

/// Polls (async) until the raw value of every id is on `server`.
async fn wait_stored(server: &RedisServer, ns: &str, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        while server.get_raw(&value_key(ns, id)).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{id} never reached port {}",
                server.port()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `get_or_compute` of `id` whose computation counts in `computations`, sleeps `compute` and
/// returns `<id>#<n>`.
async fn counted(
    cache: &Cache,
    id: &str,
    computations: &Arc<AtomicUsize>,
    compute: Duration,
) -> String {
    cache
        .get_or_compute(id, || async {
            let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
            if !compute.is_zero() {
                tokio::time::sleep(compute).await;
            }
            format!("{id}#{n}")
        })
        .await
}

/// Polls until the backend sends its commands to `to`; returns how long that took. Panics after
/// `within` with what the backend and the sentinels say.
async fn wait_followed(
    set: &SentinelSet,
    backend: &RedisBackend,
    cache: &Cache,
    to: u16,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    while backend.sentinel_primary() != Some(addr(to)) {
        assert!(
            start.elapsed() < within,
            "the backend did not follow the new primary {to} within {within:?}: it sends its \
             commands to {:?} (the sentinels name {}); breaker {:?}, {} trips; {:?}",
            backend.sentinel_primary(),
            set.current_primary_port(),
            backend.breaker_state(),
            backend.breaker_trips(),
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// How long after the kill the sentinels switched away from the old primary, and the backend
/// followed them.
#[derive(Debug, Clone, Copy)]
struct Switch {
    switched: Duration,
    followed: Duration,
}

/// How long the backend may take to follow once the sentinels switched (they are asked again
/// every 100 ms to 1 s after a failing command).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls the sentinels and the backend after `old` was killed at `kill_at`, until the backend
/// sends its commands to the primary the sentinels switched to. `Err` says what was seen if
/// the sentinels did not switch within [`FAILOVER_TIMEOUT`], or the backend did not follow
/// within [`FOLLOW_TIMEOUT`] after they did.
async fn watch_failover(
    set: &SentinelSet,
    backend: &RedisBackend,
    cache: &Cache,
    old: u16,
    kill_at: Instant,
) -> Result<Switch, String> {
    let (mut switched, mut followed) = (None, None);
    loop {
        let named = set.current_primary_port();
        if switched.is_none() && named != old {
            switched = Some(kill_at.elapsed());
        }
        if followed.is_none() && backend.sentinel_primary() != Some(addr(old)) {
            followed = Some(kill_at.elapsed());
        }
        if let (Some(switched), Some(followed)) = (switched, followed) {
            return Ok(Switch { switched, followed });
        }
        let late = match switched {
            None => kill_at.elapsed() > FAILOVER_TIMEOUT,
            Some(at) => kill_at.elapsed() > at + FOLLOW_TIMEOUT,
        };
        if late {
            return Err(format!(
                "{:?} after the kill the sentinels name {named} (switched after {switched:?}) \
                 but the backend still sends its commands to {:?}: it did not follow within \
                 {FOLLOW_TIMEOUT:?}; breaker {:?}, {} trips; {:?}",
                kill_at.elapsed(),
                backend.sentinel_primary(),
                backend.breaker_state(),
                backend.breaker_trips(),
                cache.stats()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until caching works on `server` again through `cache`: a fresh id computed once, a
/// second call a hit, the value stored on `server`. Returns when that was first true.
async fn wait_caching(cache: &Cache, ns: &str, server: &RedisServer, within: Duration) -> Instant {
    let start = Instant::now();
    for n in 0.. {
        let id = format!("probe-{n}");
        let computations = Arc::new(AtomicUsize::new(0));
        let first = counted(cache, &id, &computations, Duration::ZERO).await;
        let second = counted(cache, &id, &computations, Duration::ZERO).await;
        if computations.load(Ordering::SeqCst) == 1
            && first == second
            && server.get_raw(&value_key(ns, &id)).await.is_some()
        {
            return Instant::now();
        }
        assert!(
            start.elapsed() < within,
            "caching did not resume on port {} within {within:?}: {:?}",
            server.port(),
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// Spawns a `get_or_compute` of `id` on `cache` whose computation returns `value` once the
/// returned gate is notified, and polls until its lease is on `server`; panics with what `never`
/// says after `within`.
async fn hold(
    cache: &Cache,
    id: &str,
    value: &str,
    server: &RedisServer,
    within: Duration,
    never: impl Fn() -> String,
) -> (Arc<Notify>, JoinHandle<String>) {
    let gate = Arc::new(Notify::new());
    let holding = {
        let (cache, id, value, gate) =
            (cache.clone(), id.to_owned(), value.to_owned(), gate.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute(&id, || async move {
                    gate.notified().await;
                    value
                })
                .await
        })
    };
    let lock = cache.key(id).lock();
    let deadline = Instant::now() + within;
    while server.get_raw(&lock).await.is_none() {
        assert!(Instant::now() < deadline, "{}", never());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (gate, holding)
}

/// Kills the primary of `set` while `cache` computes `"inflight"` under its lease, then lets
/// that computation return (its store is the first command to fail); returns when the primary
/// was killed, and the call.
async fn kill_during_a_computation(
    set: &mut SentinelSet,
    cache: &Cache,
) -> (Instant, JoinHandle<String>) {
    let (open, inflight) = hold(
        cache,
        "inflight",
        "inflight",
        set.primary(),
        Duration::from_secs(5),
        || "the lease was never taken".to_owned(),
    )
    .await;
    let kill_at = Instant::now();
    set.kill_primary();
    open.notify_one();
    (kill_at, inflight)
}

/// One answered call of a [`Load`].
#[derive(Debug, Clone)]
struct Call {
    id: String,
    started: Instant,
    elapsed: Duration,
}

/// Tasks calling `get_or_compute` without pause (5 ms apart) on hot ids (`hot0..`) and on ids
/// each asked once (`cold-<task>-<n>`), until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    computations: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Call>>>,
}

impl Load {
    fn start(cache: &Cache, tasks: usize, hot: usize, compute: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let computations = Arc::new(AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|t| {
                let (cache, stop, calls, computations) = (
                    cache.clone(),
                    stop.clone(),
                    calls.clone(),
                    computations.clone(),
                );
                tokio::spawn(async move {
                    let mut answered = Vec::new();
                    let mut i = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let id = if i.is_multiple_of(2) {
                            format!("hot{}", (i / 2 + t) % hot)
                        } else {
                            format!("cold-{t}-{i}")
                        };
                        i += 1;
                        let started = Instant::now();
                        let value = counted(&cache, &id, &computations, compute).await;
                        let elapsed = started.elapsed();
                        assert!(
                            value.starts_with(&format!("{id}#")),
                            "{id} answered {value}"
                        );
                        calls.fetch_add(1, Ordering::SeqCst);
                        answered.push(Call {
                            id,
                            started,
                            elapsed,
                        });
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    answered
                })
            })
            .collect();
        Load {
            stop,
            calls,
            computations,
            tasks,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn computations(&self) -> usize {
        self.computations.load(Ordering::SeqCst)
    }

    /// Stops the tasks; each must end within `within` (else a caller is stuck).
    async fn stop(self, within: Duration) -> Vec<Call> {
        self.stop.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        for task in self.tasks {
            let answered = tokio::time::timeout(within, task)
                .await
                .unwrap_or_else(|_| panic!("a caller is stuck: its task did not end in {within:?}"))
                .expect("load task");
            calls.extend(answered);
        }
        calls
    }
}

/// The ids `hot0..hot<n>` computed once each; returns their values.
async fn warm(cache: &Cache, n: usize) -> Vec<String> {
    let computations = Arc::new(AtomicUsize::new(0));
    let mut values = Vec::new();
    for h in 0..n {
        values.push(counted(cache, &format!("hot{h}"), &computations, Duration::ZERO).await);
    }
    assert_eq!(computations.load(Ordering::SeqCst), n);
    values
}

// ---------------------------------------------------------------------------------------------
// 1. Basics.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_compute_set_invalidate_and_ttl_land_on_the_primary() {
    const NS: &str = "basics";
    let set = SentinelSet::start("faults-basics");
    let (primary, replica) = (set.primary(), set.replica());
    let backend = connect(&set).await;
    assert_eq!(backend.sentinel_primary(), Some(addr(primary.port())));
    let cache = sentinel_cache(
        &backend,
        NS,
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    let computations = Arc::new(AtomicUsize::new(0));

    // get_or_compute: computed once, stored on the primary, then a hit.
    let a = counted(&cache, "a", &computations, Duration::ZERO).await;
    assert_eq!(a, "a#1");
    assert_eq!(counted(&cache, "a", &computations, Duration::ZERO).await, a);
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert!(primary.get_raw(&value_key(NS, "a")).await.is_some());

    // set: on the primary, read back.
    cache.set("b", &"from-set".to_string()).await.unwrap();
    assert!(primary.get_raw(&value_key(NS, "b")).await.is_some());
    assert_eq!(
        cache.get::<String>("b").await.unwrap().as_deref(),
        Some("from-set")
    );
    assert_eq!(
        counted(&cache, "b", &computations, Duration::ZERO).await,
        "from-set"
    );

    // remaining_ttl: the primary's PTTL.
    let ttl = cache.remaining_ttl("b").await.unwrap().expect("a ttl");
    let pttl = primary.pttl(&value_key(NS, "b")).await;
    assert!(
        ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50),
        "{ttl:?}"
    );
    assert!(
        (pttl - ttl.as_millis() as i64).abs() < 5_000,
        "remaining_ttl {ttl:?}, PTTL on the primary {pttl} ms"
    );
    assert_eq!(cache.remaining_ttl("nothing").await.unwrap(), None);

    // invalidate: gone from the primary, computed again.
    cache.invalidate("a").await.unwrap();
    assert_eq!(primary.get_raw(&value_key(NS, "a")).await, None);
    assert_eq!(
        counted(&cache, "a", &computations, Duration::ZERO).await,
        "a#2"
    );

    // Nothing a cache client sends reached the replica (it only got the replication stream).
    let on_replica = cache_commands(replica).await;
    assert!(
        on_replica.values().all(|&n| n == 0),
        "commands reached the replica: {on_replica:?}"
    );
    let on_primary = cache_commands(primary).await;
    assert!(
        on_primary["evalsha"] + on_primary["eval"] > 0,
        "{on_primary:?}"
    );
    let stats = cache.stats();
    assert_eq!(stats.backend_errors, 0, "{stats:?}");

    // primary_db: the database on the primary.
    let db3 = builder(&set).primary_db(3).connect().await.unwrap();
    let cache3 = Cache::builder(NS).backend(db3).build().unwrap();
    cache3.set("in-db3", &1u32).await.unwrap();
    assert_eq!(primary.get_raw(&value_key(NS, "in-db3")).await, None);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/3", primary.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(value_key(NS, "in-db3"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(raw.is_some(), "primary_db(3) did not write to database 3");

    // primary_auth: a user of the primary's ACL (the default user has no password, and a
    // `nopass` user accepts any, so the test uses a user of its own).
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "cache-user", "on", ">right", "~*", "&*", "+@all"])
        .query_async(&mut primary.raw().await)
        .await
        .unwrap();
    let authed = builder(&set)
        .primary_auth(Some("cache-user"), "right")
        .connect()
        .await
        .unwrap();
    let authed_cache = Cache::builder(NS).backend(authed).build().unwrap();
    authed_cache.set("authed", &1u32).await.unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut primary.raw().await)
        .await
        .unwrap();
    assert!(
        clients.contains("user=cache-user"),
        "no connection of cache-user: {clients}"
    );
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        builder(&set)
            .primary_auth(Some("cache-user"), "wrong")
            .connect(),
    )
    .await
    .expect("connect with a wrong primary password hung")
    .expect_err("a wrong primary password must fail the connect");
    eprintln!(
        "wrong primary password: {err} (after {:.0} ms)",
        ms(started.elapsed())
    );
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(2));
}

/// Connects with `builder`; must fail (not hang, not panic) within the connect timeout (plus
/// slack for a loaded machine). Returns the error and how long it took.
async fn connect_fails(builder: RedisBackendBuilder, what: &str) -> (Error, Duration) {
    let started = Instant::now();
    let outcome = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(20), builder.connect()).await
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: connect panicked: {e}"));
    let elapsed = started.elapsed();
    let err = outcome
        .unwrap_or_else(|_| panic!("{what}: connect hung for 20 s"))
        .err()
        .unwrap_or_else(|| panic!("{what}: connect succeeded"));
    eprintln!("{what}: {err} (after {:.0} ms)", ms(elapsed));
    assert!(
        !err.to_string().is_empty(),
        "{what}: an error without a message"
    );
    assert!(
        elapsed < CONNECT_TIMEOUT + Duration::from_secs(2),
        "{what}: the error took {elapsed:?}, connect timeout {CONNECT_TIMEOUT:?}"
    );
    (err, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_service_or_no_reachable_sentinel_is_a_clear_error_within_the_connect_timeout() {
    let set = SentinelSet::start("faults-connect");
    let urls = set.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let with = |urls: &[&str], service: &str| {
        RedisBackend::sentinel_builder(urls, service)
            .connect_timeout(CONNECT_TIMEOUT)
            .command_timeout(COMMAND_TIMEOUT)
    };

    let (err, _) = connect_fails(with(&urls, "no-such-service"), "wrong service").await;
    assert!(matches!(err, Error::Backend(_)), "wrong service: {err:?}");
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("not found") || text.contains("master"),
        "the error should say the service is unknown: {err}"
    );

    // Nothing listens.
    let (dead1, dead2) = (dead_url(), dead_url());
    connect_fails(
        with(&[&dead1, &dead2], set.service()),
        "no sentinel listens",
    )
    .await;

    // Something accepts connections but never answers (a frozen host): bounded by the connect
    // timeout, not by the operating system.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}/", silent.local_addr().unwrap());
    let (err, _) = connect_fails(with(&[&silent_url], set.service()), "a silent sentinel").await;
    assert!(
        matches!(err, Error::Timeout(_) | Error::Backend(_)),
        "a silent sentinel: {err:?}"
    );

    // A server that is no sentinel (the primary itself).
    let primary_url = set.primary().url();
    connect_fails(with(&[&primary_url], set.service()), "not a sentinel").await;

    // The right service through the same kind of list works (the set is fine).
    let backend = with(&urls, set.service()).connect().await.unwrap();
    assert_eq!(backend.sentinel_primary(), Some(addr(set.primary().port())));
}

#[tokio::test]
async fn sentinel_settings_elsewhere_and_incomplete_sentinel_settings_are_invalid_config() {
    let url = dead_url();
    let invalid = |result: Result<RedisBackend, Error>, what: &str| match result {
        Err(Error::InvalidConfig(message)) => eprintln!("{what}: {message}"),
        Err(other) => panic!("{what}: {other:?} instead of InvalidConfig"),
        Ok(_) => panic!("{what}: accepted"),
    };
    invalid(
        RedisBackend::builder(&url)
            .primary_auth(None, "secret")
            .connect()
            .await,
        "primary_auth on one server",
    );
    invalid(
        RedisBackend::builder(&url).primary_db(2).connect().await,
        "primary_db on one server",
    );
    invalid(
        RedisBackend::builder(&url)
            .primary_auth(Some("user"), "secret")
            .connect_lazy(),
        "primary_auth on a lazy server",
    );
    invalid(
        RedisBackend::cluster_builder(&[&url])
            .primary_db(1)
            .connect()
            .await,
        "primary_db on a cluster",
    );
    invalid(
        RedisBackend::cluster_builder(&[&url])
            .primary_auth(None, "secret")
            .connect()
            .await,
        "primary_auth on a cluster",
    );
    invalid(
        RedisBackend::sentinel_builder(&[&url], "svc").connect_lazy(),
        "connect_lazy with Sentinel",
    );
    invalid(
        RedisBackend::sentinel_builder(&[], "svc").connect().await,
        "no sentinel URL",
    );
    invalid(
        RedisBackend::sentinel_builder(&[&url], "").connect().await,
        "empty service name",
    );
    invalid(
        RedisBackend::sentinel_builder(&["not a url"], "svc")
            .connect()
            .await,
        "malformed sentinel URL",
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Replica processes stampeding cold keys.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_stampeding_cold_keys_compute_each_once() {
    const NS: &str = "stampede";
    const PROCS: usize = 4;
    const KEYS: usize = 8;
    const CALLERS: usize = 4;
    let set = SentinelSet::start("faults-stampede");
    let options = ScriptedOptions {
        ns: NS.into(),
        ..ScriptedOptions::new(sentinel_spec(set.service(), &set.sentinel_urls()))
    };
    let mut procs = Vec::new();
    for _ in 0..PROCS {
        procs.push(ScriptedReplica::spawn(SCRIPTED, &options).await);
    }
    let start = unix_ms() + 500.0;
    for k in 0..KEYS {
        for p in procs.iter_mut() {
            let at = start + (k as f64) * 50.0;
            p.call(
                &format!("k{k}"),
                &format!("key{k}"),
                CALLERS,
                Duration::from_millis(100),
                false,
                at,
            )
            .await;
        }
    }
    let (results, computations) = ScriptedReplica::quit_all(procs, Duration::from_secs(30)).await;
    assert_eq!(results.len(), PROCS * KEYS * CALLERS);
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for c in &computations {
        *per_key.entry(c.key.clone()).or_default() += 1;
    }
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &results {
        assert!(r.ok, "{r:?}");
        values.entry(&r.key).or_default().insert(&r.value);
    }
    let slowest = results.iter().map(|r| r.elapsed_ms).fold(0.0, f64::max);
    eprintln!(
        "FIGURE sentinel stampede: {} computations for {KEYS} keys ({PROCS} processes x {CALLERS} callers each); slowest call {slowest:.1} ms",
        computations.len()
    );
    assert_eq!(per_key.len(), KEYS, "{per_key:?}");
    assert!(
        per_key.values().all(|&n| n == 1),
        "keys computed more than once: {per_key:?}"
    );
    for (key, seen) in &values {
        assert_eq!(seen.len(), 1, "{key} answered differently: {seen:?}");
    }
    let ids: Vec<String> = (0..KEYS).map(|k| format!("key{k}")).collect();
    wait_stored(set.primary(), NS, &ids, Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------
// 3. The primary killed under load.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_under_load_every_call_answers_and_the_backend_follows_the_new_primary()
{
    const NS: &str = "load";
    const TASKS: usize = 6;
    const HOT: usize = 4;
    const COMPUTE: Duration = Duration::from_millis(20);
    const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
    const MAX_WAIT: Duration = Duration::from_secs(5);
    // The longest legitimate call: a wait up to max_wait, then its own computation, after a
    // few commands bounded by the timeouts.
    let bound = MAX_WAIT + COMPUTE + CONNECT_TIMEOUT + COMMAND_TIMEOUT * 4 + Duration::from_secs(2);

    let mut set = SentinelSet::start("faults-load");
    let (old, promoted) = (set.primary().port(), set.replica().port());
    let backend = connect(&set).await;
    let cache = sentinel_cache(&backend, NS, LOCK_TIMEOUT, MAX_WAIT);
    let hot = warm(&cache, HOT).await;
    let hot_ids: Vec<String> = (0..HOT).map(|h| format!("hot{h}")).collect();
    wait_stored(set.replica(), NS, &hot_ids, Duration::from_secs(10)).await;

    let load = Load::start(&cache, TASKS, HOT, COMPUTE);
    until_within("the load runs", Duration::from_secs(10), || {
        load.calls() >= 50
    })
    .await;
    let kill_at = Instant::now();
    assert_eq!(set.kill_primary(), old);

    // Until the sentinels name the replica, and until the backend sends its commands to it.
    let switch = match watch_failover(&set, &backend, &cache, old, kill_at).await {
        Ok(switch) => switch,
        Err(why) => {
            // Every call was answered all the same: show how, then fail.
            let calls = load.stop(bound).await;
            let since_kill: Vec<&Call> = calls
                .iter()
                .filter(|c| c.started + c.elapsed >= kill_at)
                .collect();
            let longest = since_kill
                .iter()
                .map(|c| c.elapsed)
                .max()
                .unwrap_or_default();
            eprintln!(
                "FIGURE sentinel kill under load ({TASKS} tasks, command timeout {} ms, breaker {BREAKER_THRESHOLD}/{} ms): {} calls answered since the kill (all fail-open), longest {:.1} ms (bound {:.0} ms); the backend never followed: {why}",
                COMMAND_TIMEOUT.as_millis(),
                BREAKER_COOLDOWN.as_millis(),
                since_kill.len(),
                ms(longest),
                ms(bound)
            );
            assert!(
                calls.iter().all(|c| c.elapsed < bound),
                "a call over {bound:?}"
            );
            panic!("{why}");
        }
    };
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    assert_eq!(new, promoted);
    assert_eq!(
        backend.sentinel_primary(),
        Some(addr(new)),
        "the same backend, not rebuilt, sends its commands to the promoted replica"
    );

    // Caching resumes on the new primary: a cold id computed once then a hit; hot ids hit
    // with the values stored before the kill (replicated to the promoted replica).
    let resumed =
        wait_caching(&cache, NS, set.server(new), Duration::from_secs(15)).await - kill_at;
    // Read, not get_or_compute: a call of the load that started before caching resumed (and
    // fails open) may still be in flight, and a get_or_compute would join it.
    for (h, value) in hot.iter().enumerate() {
        let id = format!("hot{h}");
        assert_eq!(
            cache
                .get::<String>(&id)
                .await
                .expect("read on the new primary"),
            Some(value.clone()),
            "{id} on the new primary"
        );
    }

    let computed = load.computations();
    let calls = load.stop(bound).await;
    for call in &calls {
        assert!(
            call.elapsed < bound,
            "{} took {:?} (bound {bound:?})",
            call.id,
            call.elapsed
        );
    }
    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started + c.elapsed >= kill_at && c.started <= kill_at + resumed)
        .collect();
    let longest = during.iter().map(|c| c.elapsed).max().unwrap_or_default();
    assert!(!during.is_empty(), "no call ran during the failover");
    eprintln!(
        "FIGURE sentinel kill under load ({TASKS} tasks, command timeout {} ms, breaker {BREAKER_THRESHOLD}/{} ms): {} calls answered during the failover, longest {:.1} ms (bound {:.0} ms); {} calls in all, {computed} computations, breaker trips {}",
        COMMAND_TIMEOUT.as_millis(),
        BREAKER_COOLDOWN.as_millis(),
        during.len(),
        ms(longest),
        ms(bound),
        calls.len(),
        backend.breaker_trips()
    );
    eprintln!(
        "FIGURE sentinel kill under load: kill -> sentinels switched {:.0} ms, kill -> backend followed {:.0} ms, switch -> backend followed {:+.0} ms, kill -> caching resumed {:.0} ms",
        ms(switch.switched),
        ms(switch.followed),
        ms(switch.followed) - ms(switch.switched),
        ms(resumed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_idle_during_the_failover_follows_the_new_primary_on_its_next_calls() {
    const NS: &str = "idle";
    let mut set = SentinelSet::start("faults-idle");
    let (old, promoted) = (set.primary().port(), set.replica().port());
    let backend = connect(&set).await;
    let cache = sentinel_cache(&backend, NS, Duration::from_secs(2), Duration::from_secs(5));
    let hot = warm(&cache, 1).await;
    wait_stored(
        set.replica(),
        NS,
        &["hot0".to_owned()],
        Duration::from_secs(10),
    )
    .await;

    // No call while the sentinels fail over.
    set.kill_primary();
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    assert_eq!(new, promoted);
    assert_eq!(backend.sentinel_primary(), Some(addr(old)));

    // The next calls (a reader of a hot id, a cold id) find the old primary gone: they are
    // answered (fail-open), and the backend follows the primary the sentinels name.
    let after = Instant::now();
    let computations = Arc::new(AtomicUsize::new(0));
    let mut calls = 0usize;
    let mut slowest = Duration::ZERO;
    for n in 0.. {
        let started = Instant::now();
        let value = counted(&cache, "hot0", &computations, Duration::ZERO).await;
        assert!(value.starts_with("hot0#"), "{value}");
        let cold = format!("cold-{n}");
        counted(&cache, &cold, &computations, Duration::ZERO).await;
        slowest = slowest.max(started.elapsed());
        calls += 2;
        if backend.sentinel_primary() == Some(addr(new)) {
            break;
        }
        assert!(
            after.elapsed() < Duration::from_secs(10),
            "{calls} calls over {:?} after the failover: the backend still sends its commands \
             to {:?}, the sentinels name {new}; breaker {:?}, {} trips; {:?}",
            after.elapsed(),
            backend.sentinel_primary(),
            backend.breaker_state(),
            backend.breaker_trips(),
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let followed = after.elapsed();
    let resumed = wait_caching(&cache, NS, set.server(new), Duration::from_secs(10)).await - after;
    let again = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        counted(&cache, "hot0", &again, Duration::ZERO).await,
        hot[0]
    );
    assert_eq!(again.load(Ordering::SeqCst), 0);
    eprintln!(
        "FIGURE sentinel idle backend: first call after the failover -> followed {:.0} ms ({calls} calls, slowest {:.1} ms), -> caching resumed {:.0} ms",
        ms(followed),
        ms(slowest),
        ms(resumed)
    );
}

/// Round `r` of the multi-process load: in every process, 2 callers of `hot` and 2 of
/// `cold<r>` (one key per round, computed by one process), started together.
async fn start_round(procs: &mut [ScriptedReplica], r: usize, cold_compute: Duration) {
    let start = unix_ms() + 20.0;
    for p in procs.iter_mut() {
        p.call(
            &format!("h{r}"),
            "hot",
            2,
            Duration::from_millis(20),
            false,
            start,
        )
        .await;
        p.call(
            &format!("c{r}"),
            &format!("cold{r}"),
            2,
            cold_compute,
            false,
            start,
        )
        .await;
    }
}

async fn finish_round(procs: &mut [ScriptedReplica], r: usize, within: Duration) {
    for p in procs.iter_mut() {
        p.wait_called(&format!("h{r}"), within).await;
        p.wait_called(&format!("c{r}"), within).await;
    }
}

/// Whether round `r` was served by the cache: one computation of `cold<r>` in all, none of
/// `hot`.
fn round_cached(procs: &[ScriptedReplica], r: usize) -> bool {
    let (hot, cold) = (format!("h{r}"), format!("c{r}"));
    let count = |tag: &str| {
        procs
            .iter()
            .flat_map(|p| &p.computations)
            .filter(|c| c.tag == tag)
            .count()
    };
    count(&hot) == 0 && count(&cold) == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_keep_answering_across_a_failover_and_cache_again_after_it() {
    const NS: &str = "processes";
    const PROCS: usize = 3;
    const COLD: Duration = Duration::from_millis(300);
    const MAX_WAIT: Duration = Duration::from_secs(5);
    let bound = MAX_WAIT + COLD + CONNECT_TIMEOUT + COMMAND_TIMEOUT * 4 + Duration::from_secs(3);
    let mut set = SentinelSet::start("faults-processes");
    let old = set.primary().port();
    let options = ScriptedOptions {
        ns: NS.into(),
        lock_timeout: Duration::from_secs(2),
        max_wait: MAX_WAIT,
        command_timeout: COMMAND_TIMEOUT,
        ..ScriptedOptions::new(sentinel_spec(set.service(), &set.sentinel_urls()))
    };
    let mut procs = Vec::new();
    for _ in 0..PROCS {
        procs.push(ScriptedReplica::spawn(SCRIPTED, &options).await);
    }

    // Warm: round 0 computes hot once; rounds 1 and 2 are served by the cache.
    for r in 0..3 {
        start_round(&mut procs, r, Duration::from_millis(20)).await;
        finish_round(&mut procs, r, bound).await;
        if r > 0 {
            assert!(round_cached(&procs, r), "round {r} before the kill");
        }
    }
    wait_stored(
        set.replica(),
        NS,
        &["hot".to_owned()],
        Duration::from_secs(10),
    )
    .await;

    // Round 3: the primary is killed while one process computes cold3 under its lease and the
    // others wait on it.
    let kill_round = 3;
    start_round(&mut procs, kill_round, COLD).await;
    let lock = atomcache::EntryKey::new(PREFIX, NS, &format!("cold{kill_round}")).lock();
    let deadline = Instant::now() + Duration::from_secs(5);
    while set.primary().get_raw(&lock).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "nobody took the lease of round 3"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kill_at = Instant::now();
    set.kill_primary();
    finish_round(&mut procs, kill_round, bound).await;

    // Rounds back to back until two in a row are served by the cache again.
    let mut r = kill_round + 1;
    let mut cached_in_a_row = 0;
    let mut first_cached: Option<Duration> = None;
    while cached_in_a_row < 2 {
        assert!(
            kill_at.elapsed() < FAILOVER_TIMEOUT,
            "the processes do not cache again {:?} after the kill (round {r}); the sentinels \
             name {}\n{}",
            kill_at.elapsed(),
            set.current_primary_port(),
            set.logs()
        );
        start_round(&mut procs, r, Duration::from_millis(20)).await;
        finish_round(&mut procs, r, bound).await;
        if round_cached(&procs, r) && set.current_primary_port() != old {
            cached_in_a_row += 1;
            first_cached.get_or_insert(kill_at.elapsed());
        } else {
            cached_in_a_row = 0;
            first_cached = None;
        }
        r += 1;
    }
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    wait_stored(
        set.server(new),
        NS,
        &[format!("cold{}", r - 1)],
        Duration::from_secs(5),
    )
    .await;

    let (results, _) = ScriptedReplica::quit_all(procs, Duration::from_secs(30)).await;
    assert_eq!(results.len(), r * PROCS * 4, "every call answered");
    for result in &results {
        assert!(result.ok, "{result:?}");
        assert!(
            result.elapsed_ms < ms(bound),
            "{result:?} (bound {bound:?})"
        );
    }
    let slowest = results.iter().map(|r| r.elapsed_ms).fold(0.0, f64::max);
    eprintln!(
        "FIGURE sentinel kill, {PROCS} replica processes: {} calls in {r} rounds all answered, slowest {slowest:.1} ms; kill -> first round served by the cache on the new primary {:.0} ms",
        results.len(),
        ms(first_cached.unwrap_or_default())
    );
}

/// The port `sentinel` names as the primary of `service`, if it answers.
async fn named_by(sentinel: &RedisServer, service: &str) -> Option<u16> {
    let mut conn = tokio::time::timeout(Duration::from_secs(1), sentinel.raw())
        .await
        .ok()?;
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(service)
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frozen_sentinel_neither_stops_connecting_nor_following() {
    const NS: &str = "frozen";
    let mut set = SentinelSet::start("faults-frozen");
    let old = set.primary().port();
    let backend = connect(&set).await;
    let cache = sentinel_cache(&backend, NS, Duration::from_secs(2), Duration::from_secs(5));

    // The first sentinel of the list freezes (SIGSTOP), as a hung host would: the kernel
    // still accepts connections to it, nothing answers. The two others are fine.
    set.sentinels()[0].pause();

    // Connecting: the other two sentinels answer at once.
    let started = Instant::now();
    let connected = builder(&set).connect().await;
    let connect_took = started.elapsed();

    // Following: the primary dies while this backend computes under its lease (its store is
    // the first command to fail); the two sentinels still running fail over (quorum 2).
    let (kill_at, inflight) = kill_during_a_computation(&mut set, &cache).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), inflight)
            .await
            .expect("the holder is stuck")
            .unwrap(),
        "inflight"
    );
    let new = loop {
        let named = (
            named_by(&set.sentinels()[1], set.service()).await,
            named_by(&set.sentinels()[2], set.service()).await,
        );
        if let (Some(a), Some(b)) = named {
            if a == b && a != old && atomcache_tests::sentinel::role(a).as_deref() == Some("master")
            {
                break a;
            }
        }
        assert!(
            kill_at.elapsed() < FAILOVER_TIMEOUT,
            "the two running sentinels did not fail over: {named:?}\n{}",
            set.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let switched = kill_at.elapsed();
    let mut followed = None;
    while kill_at.elapsed() < switched + FOLLOW_TIMEOUT {
        if backend.sentinel_primary() == Some(addr(new)) {
            followed = Some(kill_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    set.sentinels()[0].resume();
    eprintln!(
        "FIGURE sentinel, first of 3 sentinels frozen: connect (timeout {} ms) -> {} after {:.0} ms; kill -> the 2 others switched {:.0} ms, kill -> backend followed {}",
        CONNECT_TIMEOUT.as_millis(),
        match &connected {
            Ok(b) => format!("Ok({:?})", b.sentinel_primary()),
            Err(e) => format!("Err({e})"),
        },
        ms(connect_took),
        ms(switched),
        followed.map_or("never (within 10 s)".to_owned(), |f| format!("{:.0} ms", ms(f)))
    );
    assert!(
        connected.is_ok(),
        "connecting with the first of three sentinels frozen failed after {connect_took:?} \
         (connect timeout {CONNECT_TIMEOUT:?}) although two sentinels answer"
    );
    assert!(
        followed.is_some(),
        "with the first of three sentinels frozen the backend did not follow {new} within \
         {FOLLOW_TIMEOUT:?} of the switch: it sends its commands to {:?}; {:?}",
        backend.sentinel_primary(),
        cache.stats()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A waiter subscribed when the primary dies.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_subscribed_when_the_primary_dies_is_answered_and_subscribes_again_on_the_new_one()
{
    const NS: &str = "waiter";
    // Long leases: a waiter answered well before its lease would lapse was woken.
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    const MAX_WAIT: Duration = Duration::from_secs(20);
    let mut set = SentinelSet::start("faults-waiter");
    let old = set.primary().port();
    let (holder_backend, waiter_backend) = (connect(&set).await, connect(&set).await);
    let holder = sentinel_cache(&holder_backend, NS, LOCK_TIMEOUT, MAX_WAIT);
    let waiter = sentinel_cache(&waiter_backend, NS, LOCK_TIMEOUT, MAX_WAIT);

    // Round 1, on the old primary: the holder computes k (until the gate opens), the waiter
    // waits on its lease, subscribed to k's channel there.
    let (open1, holder1) = hold(
        &holder,
        "k",
        "from-holder-1",
        set.primary(),
        Duration::from_secs(5),
        || "the holder never took the lease".to_owned(),
    )
    .await;
    let key = holder.key("k");
    let waiter1 = {
        let waiter = waiter.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let value = waiter
                .get_or_compute("k", || async { "from-waiter-1".to_string() })
                .await;
            (value, started.elapsed(), Instant::now())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub(set.primary(), &key.channel()).await < 1 {
        assert!(Instant::now() < deadline, "the waiter never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(waiter.stats().lock_waits, 1);

    let kill_at = Instant::now();
    set.kill_primary();
    let (value, waited, answered_at) =
        tokio::time::timeout(MAX_WAIT + Duration::from_secs(5), waiter1)
            .await
            .expect("the waiter is stuck after the primary died")
            .expect("waiter task");
    assert!(
        waited < MAX_WAIT,
        "the waiter waited {waited:?} (max_wait {MAX_WAIT:?})"
    );
    assert!(
        value == "from-waiter-1" || value == "from-holder-1",
        "{value}"
    );
    open1.notify_one();
    let holder_value = tokio::time::timeout(Duration::from_secs(10), holder1)
        .await
        .expect("the holder is stuck after the primary died")
        .expect("holder task");
    assert_eq!(holder_value, "from-holder-1");

    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    assert_ne!(new, old);
    // Both backends follow (the holder's renewal or store failed, the waiter's look failed).
    wait_followed(&set, &waiter_backend, &waiter, new, Duration::from_secs(15)).await;
    wait_followed(&set, &holder_backend, &holder, new, Duration::from_secs(15)).await;

    // Round 2, on the new primary, through the same backends: the waiter subscribes there and
    // is woken by the holder's store.
    let waits_before = waiter.stats().lock_waits;
    let new_primary = set.server(new);
    let (open2, holder2) = hold(
        &holder,
        "k2",
        "from-holder-2",
        new_primary,
        Duration::from_secs(10),
        || {
            format!(
                "the holder never took the lease on the new primary: {:?}",
                holder.stats()
            )
        },
    )
    .await;
    let key2 = holder.key("k2");
    let waiter2 = {
        let waiter = waiter.clone();
        tokio::spawn(async move {
            waiter
                .get_or_compute("k2", || async { "from-waiter-2".to_string() })
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while numsub(new_primary, &key2.channel()).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the waiter never subscribed on the new primary: {:?}",
            waiter.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored_at = Instant::now();
    open2.notify_one();
    let value2 = tokio::time::timeout(MAX_WAIT, waiter2)
        .await
        .expect("the waiter on the new primary is stuck")
        .expect("waiter task");
    let woken_after = stored_at.elapsed();
    assert_eq!(value2, "from-holder-2");
    assert_eq!(holder2.await.unwrap(), "from-holder-2");
    assert!(
        woken_after < LOCK_TIMEOUT / 2,
        "the waiter was answered {woken_after:?} after the store: not woken by it (lease {LOCK_TIMEOUT:?})"
    );
    let stats = waiter.stats();
    assert_eq!(stats.lock_waits, waits_before + 1, "{stats:?}");
    eprintln!(
        "FIGURE sentinel waiter: subscribed when the primary was killed, answered {:.0} ms after the kill ({value}); on the new primary woken {:.1} ms after the holder's store",
        ms(answered_at - kill_at),
        ms(woken_after)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The old primary restarted after the failover.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_primary_restarted_as_a_replica_gets_no_writes_and_callers_get_current_values() {
    const NS: &str = "restart";
    const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
    const MAX_WAIT: Duration = Duration::from_secs(5);
    let bound = MAX_WAIT + CONNECT_TIMEOUT + COMMAND_TIMEOUT * 4 + Duration::from_secs(2);
    let mut set = SentinelSet::start("faults-restart");
    let old = set.primary().port();
    let backend = connect(&set).await;
    let cache = sentinel_cache(&backend, NS, LOCK_TIMEOUT, MAX_WAIT);
    warm(&cache, 2).await;
    wait_stored(
        set.replica(),
        NS,
        &["hot0".to_owned(), "hot1".to_owned()],
        Duration::from_secs(10),
    )
    .await;

    // The primary dies while this backend computes a value under its lease: its store is the
    // first command to fail, and the backend follows the promoted replica.
    let (kill_at, inflight) = kill_during_a_computation(&mut set, &cache).await;
    let value = tokio::time::timeout(bound, inflight)
        .await
        .expect("the holder is stuck")
        .unwrap();
    assert_eq!(value, "inflight");
    let switch = watch_failover(&set, &backend, &cache, old, kill_at)
        .await
        .unwrap_or_else(|why| panic!("{why}"));
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    assert_eq!(backend.sentinel_primary(), Some(addr(new)));
    let resumed =
        wait_caching(&cache, NS, set.server(new), Duration::from_secs(10)).await - kill_at;
    eprintln!(
        "FIGURE sentinel kill with a lease in flight: kill -> sentinels switched {:.0} ms, kill -> backend followed {:.0} ms, switch -> backend followed {:+.0} ms, kill -> caching resumed {:.0} ms",
        ms(switch.switched),
        ms(switch.followed),
        ms(switch.followed) - ms(switch.switched),
        ms(resumed)
    );

    // Load from now on, through the restart of the old primary.
    let load = Load::start(&cache, 4, 2, Duration::from_millis(20));
    until_within("the load runs", Duration::from_secs(10), || {
        load.calls() >= 30
    })
    .await;
    let errors_before = cache.stats().backend_errors;

    // The old primary comes back, empty, claiming to be a primary until the sentinels make it
    // a replica of the new one.
    let restarted_at = Instant::now();
    set.server_mut(old).restart();
    eprintln!(
        "restarted {old}: ROLE {:?}",
        atomcache_tests::sentinel::role(old)
    );
    // A backend connected now is given the new primary.
    let late = connect(&set).await;
    assert_eq!(late.sentinel_primary(), Some(addr(new)));
    let late_cache = sentinel_cache(&late, NS, LOCK_TIMEOUT, MAX_WAIT);

    // Until the old primary is a synced replica: writes and reads through both backends
    // always see the current value.
    let mut version = 0u64;
    let mut demoted = None;
    while demoted.is_none() || version < 20 {
        version += 1;
        let v = format!("v{version}");
        cache
            .set("current", &v)
            .await
            .expect("set through the followed backend");
        assert_eq!(
            late_cache
                .get::<String>("current")
                .await
                .unwrap()
                .as_deref(),
            Some(v.as_str()),
            "a stale value through the late backend"
        );
        let read = cache
            .get_or_compute("current", || async { "computed".to_string() })
            .await;
        assert_eq!(
            read, v,
            "a stale or recomputed value through the followed backend"
        );
        late_cache.invalidate("current").await.expect("invalidate");
        assert_eq!(cache.get::<String>("current").await.unwrap(), None);
        if demoted.is_none() && atomcache_tests::sentinel::role(old).as_deref() == Some("slave") {
            set.wait_for_role(old, "slave", Duration::from_secs(10))
                .await;
            demoted = Some(restarted_at.elapsed());
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(35),
            "the sentinels did not make the old primary a replica within 35 s\n{}",
            set.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Caching still works, on the new primary.
    wait_caching(&cache, NS, set.server(new), Duration::from_secs(5)).await;
    wait_caching(&late_cache, NS, set.server(new), Duration::from_secs(5)).await;
    let calls = load.stop(bound).await;
    assert!(calls.iter().all(|c| c.elapsed < bound));

    assert_eq!(backend.sentinel_primary(), Some(addr(new)));
    assert_eq!(late.sentinel_primary(), Some(addr(new)));
    let stats = cache.stats();
    assert_eq!(
        stats.backend_errors, errors_before,
        "an error reached callers of the followed backend after the restart: {stats:?}"
    );
    assert_eq!(
        late_cache.stats().backend_errors,
        0,
        "{:?}",
        late_cache.stats()
    );
    let on_old = cache_commands(set.server(old)).await;
    assert!(
        on_old.values().all(|&n| n == 0),
        "cache commands reached the restarted old primary: {on_old:?}"
    );
    eprintln!(
        "FIGURE sentinel old primary restarted: a synced replica of the new primary {:.0} ms after its restart; {version} set/read/invalidate rounds meanwhile, all current",
        ms(demoted.unwrap_or_default())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_idle_across_the_failover_and_the_restart_does_not_use_the_old_primary() {
    const NS: &str = "idle-restart";
    let mut set = SentinelSet::start("faults-idle-restart");
    let old = set.primary().port();
    let idle_backend = connect(&set).await;
    let idle = sentinel_cache(
        &idle_backend,
        NS,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    idle.set("k", &"v1".to_string()).await.unwrap();
    wait_stored(
        set.replica(),
        NS,
        &["k".to_owned()],
        Duration::from_secs(10),
    )
    .await;

    // The primary dies, the replica is promoted, the old primary comes back (empty, claiming
    // to be a primary for a while): all while this backend sends nothing.
    set.kill_primary();
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    set.server_mut(old).restart();
    let other_backend = connect(&set).await;
    assert_eq!(other_backend.sentinel_primary(), Some(addr(new)));
    let other = sentinel_cache(
        &other_backend,
        NS,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    other.set("k", &"v2".to_string()).await.unwrap();

    // The idle backend's next calls: answered (fail-open at first), then the current value
    // from the new primary; never a value from, nor a write to, the old primary.
    let after = Instant::now();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut calls = 0usize;
    loop {
        let value = idle
            .get_or_compute("k", || async { "computed-by-idle".to_string() })
            .await;
        calls += 1;
        *answers.entry(value.clone()).or_default() += 1;
        if value == "v2" && idle_backend.sentinel_primary() == Some(addr(new)) {
            break;
        }
        assert!(
            after.elapsed() < Duration::from_secs(8),
            "{:?} after its first call the idle backend sends its commands to {:?} (the \
             sentinels name {new}; the old primary answers ROLE {:?}); {calls} calls answered \
             {answers:?}; cache commands on the old primary {:?}; {:?}",
            after.elapsed(),
            idle_backend.sentinel_primary(),
            atomcache_tests::sentinel::role(old),
            cache_commands(set.server(old)).await,
            idle.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_old = cache_commands(set.server(old)).await;
    assert!(
        on_old.values().all(|&n| n == 0),
        "the idle backend sent cache commands to the restarted old primary: {on_old:?}; answers {answers:?}"
    );
    idle.set("k3", &"v3".to_string()).await.unwrap();
    assert!(set
        .server(new)
        .get_raw(&value_key(NS, "k3"))
        .await
        .is_some());
    eprintln!(
        "FIGURE sentinel idle backend, old primary restarted: current value after {:.0} ms ({calls} calls: {answers:?})",
        ms(after.elapsed())
    );
}

// ---------------------------------------------------------------------------------------------
// 6. auto_refresh and the HTTP helpers on a Sentinel backend.
// ---------------------------------------------------------------------------------------------

const RATES_NS: &str = "sentinel_faults::rates";

atomcache_tests::refreshed_counter!(
    rates,
    RATE_COMPUTATIONS,
    "sentinel_faults::rates",
    Duration::from_millis(20)
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_refresh_keeps_a_cached_function_fresh_on_the_sentinel_primary() {
    let set = SentinelSet::start("faults-refresh");
    let runtime = atomcache::init(connect(&set).await).await.unwrap();
    assert_eq!(runtime.refreshers(), 1);
    let key = value_key(RATES_NS, "null");
    let deadline = Instant::now() + Duration::from_secs(10);
    while set.primary().get_raw(&key).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the refresher never filled the value"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = runtime.stats();
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let mut calls = 0u64;
    // Calls for a few periods (a refresh about every exp - lock_timeout = 1 s).
    while seen.len() < 3 {
        let value = rates().await;
        assert!(
            seen.last().is_none_or(|last| value >= *last),
            "{value} after {seen:?}"
        );
        seen.insert(value);
        calls += 1;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the value was not refreshed: {seen:?}, {:?}",
            runtime.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = runtime.stats();
    assert_eq!(after.misses, before.misses, "a caller missed: {after:?}");
    assert!(after.refreshes >= before.refreshes + 2, "{after:?}");
    assert!(set.primary().get_raw(&key).await.is_some());
    eprintln!(
        "FIGURE sentinel auto_refresh: {calls} calls over {:.0} ms, all hits, {} refreshes, values {seen:?}",
        ms(started.elapsed()),
        after.refreshes - before.refreshes
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_helpers_on_two_routers_compute_once_on_the_sentinel_primary() {
    const NS: &str = "sentinel_faults::items";
    let set = SentinelSet::start("faults-http");
    let computations = Computations::default();
    let mut routers = Vec::new();
    for _ in 0..2 {
        let backend = connect(&set).await;
        let cache = sentinel_cache(
            &backend,
            NS,
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        routers.push(item_router(
            cache,
            &computations,
            Duration::from_millis(100),
        ));
    }
    let answers = concurrently(&routers, 20, "/items/9", &[]).await;
    assert_eq!(computations.total(), 1, "two routers computed");
    let Answer {
        status, etag, body, ..
    } = answers[0].clone();
    assert_eq!(status, StatusCode::OK);
    let etag = etag.expect("an ETag");
    for a in &answers {
        assert_eq!(
            (&a.status, a.etag.as_deref(), &a.body),
            (&status, Some(etag.as_str()), &body)
        );
    }
    let item: Item = serde_json::from_slice(&body).unwrap();
    assert_eq!(item, Item { id: 9, version: 1 });
    assert!(set.primary().get_raw(&value_key(NS, "9")).await.is_some());
    for router in &routers {
        let Answer { status, body, .. } =
            request(router, "/items/9", &[(header::IF_NONE_MATCH, &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }
    assert_eq!(computations.total(), 1);
}
