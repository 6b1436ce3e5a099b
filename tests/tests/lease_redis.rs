//! The lease protocol on real redis-server processes, with replicas as separate OS processes
//! that reach Redis through delaying proxies (a few ms each way, as over a real network).
//!
//! Each test prints its figures as `FIGURE ...` lines (run with `--nocapture` to see them):
//! ```text
//! cargo test --release -p atomcache-tests --test lease_redis -- --nocapture --test-threads 1
//! ```
//! The latency bounds asserted here are generous (a loaded 2-core CI machine, debug build); the
//! printed figures are the measurement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atomcache::{Cache, RedisBackend};
use atomcache_tests::{
    percentiles, unix_ms, CallResult, DelayProxy, RedisServer, ScriptedOptions, ScriptedReplica,
};

const EXE: &str = env!("CARGO_BIN_EXE_scripted_replica");
/// One way, between each replica and Redis.
const NETWORK: Duration = Duration::from_millis(3);
/// How long each replica process may take to finish its calls and exit.
const QUIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default options with namespace `ns` (the URL is set by [`cluster`]).
fn named(ns: &str) -> ScriptedOptions {
    ScriptedOptions {
        ns: ns.into(),
        ..ScriptedOptions::new("")
    }
}

/// The default options with namespace `ns` and leases of `lock_timeout`.
fn leased(ns: &str, lock_timeout: Duration) -> ScriptedOptions {
    ScriptedOptions {
        lock_timeout,
        ..named(ns)
    }
}

/// A redis-server and `n` replica processes with `options`, each behind its own delaying proxy
/// to the server.
async fn cluster(
    n: usize,
    options: ScriptedOptions,
) -> (RedisServer, Vec<ScriptedReplica>, Vec<DelayProxy>) {
    let server = RedisServer::start();
    let mut proxies = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..n {
        let proxy = DelayProxy::start(server.port(), NETWORK);
        let options = ScriptedOptions {
            url: proxy.url(),
            ..options.clone()
        };
        procs.push(ScriptedReplica::spawn(EXE, &options).await);
        proxies.push(proxy);
    }
    (server, procs, proxies)
}

fn max_elapsed(results: &[CallResult]) -> f64 {
    results.iter().map(|r| r.elapsed_ms).fold(0.0, f64::max)
}

/// When the last call answered (Unix ms).
fn last_answer(results: &[CallResult]) -> f64 {
    results
        .iter()
        .map(|r| r.started_unix_ms + r.elapsed_ms)
        .fold(0.0, f64::max)
}

/// The start instant (Unix ms) encoded in a value `<pid>:<tag>@<start>`.
fn computed_at(value: &str) -> f64 {
    value
        .rsplit_once('@')
        .and_then(|(_, at)| at.parse().ok())
        .unwrap_or_else(|| panic!("not a computed value: {value:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_arriving_one_by_one_around_the_store_compute_each_key_once() {
    const KEYS: usize = 40;
    const REPLICAS: usize = 5;
    let (_server, mut procs, _proxies) = cluster(REPLICAS, named("staggered")).await;
    // Replica 0 arrives first and computes; the others arrive one by one around the moment its
    // value is stored (lookup + lease + 40 ms + store, ~55-60 ms after its arrival here), some
    // just before it, some just after.
    let compute = Duration::from_millis(40);
    let t0 = unix_ms() + 500.0;
    for k in 0..KEYS {
        let base = t0 + (k as f64) * 120.0;
        for (i, p) in procs.iter_mut().enumerate() {
            let offset = if i == 0 {
                0.0
            } else {
                40.0 + (i as f64) * 4.0 + ((k * 7 + i * 3) % 9) as f64
            };
            p.call(
                &format!("k{k}r{i}"),
                &format!("key{k}"),
                1,
                compute,
                false,
                base + offset,
            )
            .await;
        }
    }
    let (results, computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;
    assert_eq!(results.len(), KEYS * REPLICAS);
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &computations {
        *per_key.entry(&c.key).or_default() += 1;
    }
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &results {
        assert!(r.ok, "{r:?}");
        values.entry(&r.key).or_default().insert(&r.value);
    }
    eprintln!(
        "FIGURE staggered arrivals: {} computations for {KEYS} keys ({REPLICAS} replicas, {} ms one way); slowest call {:.1} ms",
        computations.len(),
        NETWORK.as_millis(),
        max_elapsed(&results)
    );
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys computed more than once: {twice:?}");
    assert_eq!(computations.len(), KEYS);
    for (key, vals) in values {
        assert_eq!(
            vals.len(),
            1,
            "{key} answered with several values: {vals:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_burst_costs_each_replica_about_one_computation_and_never_queues() {
    const REPLICAS: usize = 8;
    const CALLERS: usize = 64;
    let compute = Duration::from_millis(100);
    let (server, mut procs, _proxies) = cluster(REPLICAS, named("burst")).await;
    server.reset_stats().await;
    let t0 = unix_ms() + 500.0;
    for p in procs.iter_mut() {
        p.call("burst", "upstream-down", CALLERS, compute, true, t0)
            .await;
    }
    for p in procs.iter_mut() {
        p.wait_called("burst", Duration::from_secs(60)).await;
    }
    let command_stats = server.command_stats().await;
    let commands = command_stats.total_excluding(&["info", "config"]);
    eprintln!("FIGURE failure burst commands: {:?}", command_stats.calls);
    let mut stats = Vec::new();
    for p in procs.iter_mut() {
        stats.push(p.stats().await);
    }
    let (results, computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;
    assert_eq!(results.len(), REPLICAS * CALLERS);
    assert!(
        results.iter().all(|r| !r.ok),
        "every caller gets the failure"
    );
    let slowest = max_elapsed(&results);
    let shared: u64 = stats.iter().map(|s| s["shared_failures"]).sum();
    eprintln!(
        "FIGURE failure burst ({REPLICAS} replicas x {CALLERS} callers, {} ms Err): {} computations, slowest caller {slowest:.1} ms, {commands} Redis commands, {shared} callers answered with a shared failure",
        compute.as_millis(),
        computations.len()
    );
    let mut per_replica: BTreeMap<u32, usize> = BTreeMap::new();
    for c in &computations {
        *per_replica.entry(c.pid).or_default() += 1;
    }
    assert!(
        per_replica.values().all(|n| *n == 1),
        "each replica computes once: {per_replica:?}"
    );
    assert!(computations.len() <= REPLICAS);
    // Two computation times plus round trips, with a wide margin for a loaded machine.
    assert!(slowest < 3.0 * 100.0 + 400.0, "slowest caller {slowest} ms");
    // Grows with replicas, not with callers: a few commands per replica (INFO commandstats
    // also counts the commands a script runs, and the first use of each script loads it).
    assert!(
        commands <= 25 * REPLICAS as u64,
        "{commands} commands for {REPLICAS} replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_three_times_longer_than_its_lease_runs_once() {
    let lease = Duration::from_millis(1000);
    let compute = Duration::from_millis(3000);
    let (_server, mut procs, _proxies) = cluster(4, leased("long", lease)).await;
    let t0 = unix_ms() + 500.0;
    for (i, p) in procs.iter_mut().enumerate() {
        // Arrivals before, during, and across several lease lengths of the computation.
        let offset = [0.0, 200.0, 1100.0, 2300.0][i];
        p.call("long", "report", 16, compute, false, t0 + offset)
            .await;
    }
    let (results, computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;
    let values: BTreeSet<&str> = results.iter().map(|r| r.value.as_str()).collect();
    let finished = last_answer(&results);
    let slowest_after_store = finished - (t0 + compute.as_millis() as f64);
    eprintln!(
        "FIGURE long computation ({} ms, lease {} ms): {} computations, slowest caller {:.1} ms, last answer {slowest_after_store:.1} ms after the computation could end",
        compute.as_millis(),
        lease.as_millis(),
        computations.len(),
        max_elapsed(&results)
    );
    assert_eq!(computations.len(), 1, "{computations:?}");
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(results.iter().all(|r| r.ok));
    assert!(
        max_elapsed(&results) < compute.as_millis() as f64 + 1000.0,
        "nobody waits past the computation and a round trip (with a margin)"
    );
}

/// A computation that started before an invalidation (or a `set`) must never be served after
/// it returned: the revoked lease refuses its store, and in-process followers look again.
async fn mid_flight(set_instead: bool) {
    let compute = Duration::from_millis(800);
    let (server, mut procs, _proxies) = cluster(2, named("midflight")).await;
    let direct = Cache::builder("midflight")
        .exp(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(1))
        .backend(RedisBackend::connect(&server.url()).await.unwrap())
        .build()
        .unwrap();
    let key = "user-42";
    // Replica A computes (slowly), with in-process followers.
    procs[0].call("a", key, 8, compute, false, unix_ms()).await;
    let started = procs[0].wait_computing(Duration::from_secs(10)).await;
    // Replica B waits on A's lease.
    procs[1].call("b", key, 8, compute, false, unix_ms()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The data changes; the cache is told.
    let (revoked_at, returned_at) = if set_instead {
        let t = unix_ms();
        direct.set(key, &"fresh-by-set".to_string()).await.unwrap();
        (t, unix_ms())
    } else {
        let t = unix_ms();
        direct.invalidate(key).await.unwrap();
        (t, unix_ms())
    };
    assert!(started.at_unix_ms < revoked_at);
    // Callers arriving after it returned, while A still computes.
    procs[1]
        .call("after", key, 4, compute, false, unix_ms())
        .await;
    procs[0].wait_called("a", Duration::from_secs(10)).await;
    procs[1].wait_called("b", Duration::from_secs(10)).await;
    procs[1].wait_called("after", Duration::from_secs(10)).await;
    // And after A's computation ended.
    let later: Option<String> = direct.get(key).await.unwrap();
    procs[0]
        .call("later", key, 4, compute, false, unix_ms())
        .await;
    procs[0].wait_called("later", Duration::from_secs(10)).await;
    let (results, computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;

    let stale = |value: &str| {
        if set_instead {
            value != "fresh-by-set"
        } else {
            computed_at(value) < revoked_at
        }
    };
    let served_after: Vec<&CallResult> = results
        .iter()
        .filter(|r| r.started_unix_ms >= returned_at && stale(&r.value))
        .collect();
    eprintln!(
        "FIGURE {} during a computation: {} reads started after it returned, {} of them stale; {} computations; stored value afterwards {:?}",
        if set_instead { "set" } else { "invalidate" },
        results.iter().filter(|r| r.started_unix_ms >= returned_at).count(),
        served_after.len(),
        computations.len(),
        later
    );
    assert!(served_after.is_empty(), "stale reads: {served_after:?}");
    if let Some(value) = later {
        assert!(!stale(&value), "stale value stored: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_computation_wins() {
    mid_flight(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_computation_wins() {
    mid_flight(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_computation_is_taken_over_once() {
    let lease = Duration::from_millis(1000);
    let (_server, mut procs, _proxies) = cluster(3, leased("killed", lease)).await;
    procs[0]
        .call("doomed", "k", 4, Duration::from_secs(30), false, unix_ms())
        .await;
    procs[0].wait_computing(Duration::from_secs(10)).await;
    let compute = Duration::from_millis(200);
    procs[1].call("b", "k", 8, compute, false, unix_ms()).await;
    procs[2].call("c", "k", 8, compute, false, unix_ms()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = unix_ms();
    procs[0].kill().await;
    let mut dead = procs.remove(0);
    dead.results.clear();
    let (results, computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;
    let values: BTreeSet<&str> = results.iter().map(|r| r.value.as_str()).collect();
    let last = last_answer(&results);
    eprintln!(
        "FIGURE holder SIGKILLed (lease {} ms): {} takeover computations, all {} waiters answered {:.1} ms after the kill",
        lease.as_millis(),
        computations.len(),
        results.len(),
        last - killed_at
    );
    assert_eq!(
        computations.len(),
        1,
        "exactly one takeover: {computations:?}"
    );
    assert_eq!(values.len(), 1);
    assert!(results.iter().all(|r| r.ok));
    assert_eq!(results.len(), 16);
    assert!(last - killed_at < (lease + compute).as_millis() as f64 + 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_each_call_at_most_one_timeout_and_caching_resumes() {
    let command_timeout = Duration::from_millis(200);
    let compute = Duration::from_millis(10);
    let options = ScriptedOptions {
        command_timeout,
        ..named("frozen")
    };
    let (server, mut procs, _proxies) = cluster(2, options).await;
    // Warm the key, then call it every 50 ms from both replicas for 6 s; Redis is frozen
    // (SIGSTOP) from 1 s to 4 s.
    let t0 = unix_ms() + 300.0;
    for p in procs.iter_mut() {
        p.call("warm", "hot", 1, compute, false, t0).await;
        for i in 0..120 {
            let at = t0 + 200.0 + 50.0 * i as f64;
            p.call(&format!("t{i}"), "hot", 1, compute, false, at).await;
        }
    }
    let frozen_from = t0 + 1200.0;
    tokio::time::sleep(Duration::from_secs_f64((frozen_from - unix_ms()) / 1000.0)).await;
    server.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.resume();
    let resumed_at = unix_ms();
    let (results, _computations) = ScriptedReplica::quit_all(procs, QUIT_TIMEOUT).await;
    assert_eq!(results.len(), 2 * 121, "every call answered");
    let during: Vec<f64> = results
        .iter()
        .filter(|r| r.started_unix_ms >= frozen_from && r.started_unix_ms < resumed_at)
        .map(|r| r.elapsed_ms)
        .collect();
    let during = percentiles(&during);
    // Caching resumed: the calls of the last second are answered from the cache (values
    // computed before them).
    let tail: Vec<&CallResult> = results
        .iter()
        .filter(|r| r.started_unix_ms > resumed_at + 1000.0)
        .collect();
    let tail_hits = tail
        .iter()
        .filter(|r| computed_at(&r.value) < r.started_unix_ms - 1.0)
        .count();
    eprintln!(
        "FIGURE frozen Redis for 3 s (command timeout {} ms): {} calls during the freeze, p50 {:.1} ms, p99 {:.1} ms, slowest {:.1} ms; {}/{} calls in the last second after it were hits",
        command_timeout.as_millis(),
        during.n,
        during.p50,
        during.p99,
        during.max,
        tail_hits,
        tail.len()
    );
    assert!(
        during.max < (command_timeout * 2 + compute).as_millis() as f64 + 400.0,
        "a call during the freeze waited {} ms",
        during.max
    );
    assert!(!tail.is_empty());
    assert!(
        tail_hits * 2 >= tail.len(),
        "caching resumed after the freeze"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_key_without_expiry_cannot_hang_anyone() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(300);
    let cache = Cache::builder("foreign-lock")
        .lock_timeout(lease)
        .backend(RedisBackend::connect(&server.url()).await.unwrap())
        .build()
        .unwrap();
    // Something else wrote the lease key, without an expiry.
    server
        .set_raw(&cache.key("k").lock(), b"not-ours", None)
        .await;
    assert_eq!(server.pttl(&cache.key("k").lock()).await, -1);
    let started = std::time::Instant::now();
    let value = cache.get_or_compute("k", || async { 42u32 }).await;
    let waited = started.elapsed();
    eprintln!("FIGURE lease key without expiry (lease {lease:?}): answered after {waited:?}");
    assert_eq!(value, 42);
    assert_eq!(cache.stats().computations, 1);
    assert!(waited < lease * 5, "waited {waited:?}");
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_costs_each_call_at_most_one_timeout() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port(), NETWORK);
    let command_timeout = Duration::from_millis(200);
    let backend = RedisBackend::builder(&proxy.url())
        .command_timeout(command_timeout)
        .connect()
        .await
        .unwrap();
    let cache = Cache::builder("half-open")
        .backend(backend)
        .build()
        .unwrap();
    assert_eq!(cache.get_or_compute("k", || async { 1u32 }).await, 1);
    // The network black-holes every byte; the connection stays open.
    proxy.freeze();
    let mut during = Vec::new();
    let frozen = std::time::Instant::now();
    while frozen.elapsed() < Duration::from_secs(3) {
        let started = std::time::Instant::now();
        assert_eq!(cache.get_or_compute("k", || async { 1u32 }).await, 1);
        during.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.thaw();
    let stats = percentiles(&during);
    // Caching resumes once a probe gets through.
    let resumed = std::time::Instant::now();
    let hits_before = cache.stats().hits;
    while cache.stats().hits == hits_before {
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "caching did not resume"
        );
        cache.get_or_compute("k", || async { 1u32 }).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "FIGURE half-open connection for 3 s (command timeout {} ms): {} calls, p50 {:.1} ms, p99 {:.1} ms, slowest {:.1} ms; caching resumed {:?} after the network came back",
        command_timeout.as_millis(),
        stats.n,
        stats.p50,
        stats.p99,
        stats.max,
        resumed.elapsed()
    );
    assert!(stats.max < (command_timeout * 2).as_millis() as f64 + 300.0);
    // Most calls were failed open at once by the breaker, not after a timeout each.
    assert!(stats.p50 < command_timeout.as_millis() as f64 / 2.0);
}
