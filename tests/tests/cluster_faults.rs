//! The claims of issue 11 on a real six-node Redis Cluster (three primaries, one replica each),
//! with faults:
//!
//! 1. replica processes stampeding keys on all three primaries compute each key once, and every
//!    caller is answered with that value;
//! 2. a primary SIGKILLed under load costs each caller at most its command timeouts (fail-open,
//!    no one stuck until the failover), and caching resumes on the promoted replica;
//! 3. slots migrated under load lose no answer and surface no error: under `redis-cli --cluster
//!    reshard`; a waiter whose entry's slot moves is woken by the holder's store on the new
//!    owner (the re-subscription path); a store sent while its slot is MIGRATING (TRYAGAIN);
//!    an `SSUBSCRIBE` in flight while another slot of the same node moves away;
//! 4. `#[cached(auto_refresh)]` and the HTTP helpers work unchanged on a cluster.
//!
//! Each test starts its own cluster and prints its figures as `FIGURE ...` lines:
//! ```text
//! cargo test -p atomcache-tests --test cluster_faults -- --nocapture
//! ```
//! The bounds asserted are semantic (a caller answered before a lease it would have waited out,
//! within the command timeouts of its commands), generous for a loaded 2-core machine.
//!
//! No test here but the auto-refresh one builds a `Runtime`: every runtime starts a refresher
//! for each `#[cached(auto_refresh)]` function of this binary, which would count computations
//! of that test's function on another test's cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomcache::{BreakerState, Cache, RedisBackend, Runtime};
use atomcache_tests::cluster::SLOTS;
use atomcache_tests::spec::cluster_spec;
use atomcache_tests::support::{
    assert_one_refresh_per_period, cache_on, ms, read_refreshed, refresh_periods, until_within,
    wait_first_fill, Gated,
};
use atomcache_tests::{
    key_slot, unix_ms, ClusterNode, Computation, RedisCluster, ScriptedOptions, ScriptedReplica,
};
use axum::http::{header, StatusCode};
use common::http::{concurrently, item_router, request, Computations, Item};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const SCRIPTED: &str = env!("CARGO_BIN_EXE_scripted_replica");
/// Generous: CI is a loaded 2-core machine (the nodes' timeout is 2 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What every computation of `id` returns: any answer can be checked, whoever computed it.
fn value_of(id: &str) -> String {
    format!("value-of-{id}")
}

/// The port of the primary serving `id`'s entry in `cache`, as `view` has it.
fn owner(view: &[ClusterNode], cache: &Cache, id: &str) -> u16 {
    let slot = key_slot(cache.key(id).value().as_bytes());
    view.iter()
        .find(|n| n.primary && !n.failed && n.serves(slot))
        .unwrap_or_else(|| panic!("no primary serves slot {slot}: {view:?}"))
        .port
}

/// The port of a primary with slots other than the one on `port`, as `view` has it.
fn another_primary(view: &[ClusterNode], port: u16) -> u16 {
    view.iter()
        .find(|n| n.primary && n.slot_count() > 0 && n.port != port)
        .unwrap()
        .port
}

/// The port of the primary serving `id`'s entry in `cache`, and of another primary with slots
/// (one to migrate the entry's slot to).
fn owner_and_another(cluster: &RedisCluster, cache: &Cache, id: &str) -> (u16, u16) {
    let view = cluster.cluster_nodes();
    let from = owner(&view, cache, id);
    (from, another_primary(&view, from))
}

/// The first `n` ids `<prefix>-<i>` whose entry (in `cache`) satisfies `keep(slot)`.
fn ids_where(cache: &Cache, prefix: &str, n: usize, keep: impl Fn(u16) -> bool) -> Vec<String> {
    let ids: Vec<String> = (0..200_000)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| keep(key_slot(cache.key(id).value().as_bytes())))
        .take(n)
        .collect();
    assert_eq!(
        ids.len(),
        n,
        "not enough ids {prefix}-* in the wanted slots"
    );
    ids
}

fn scripted_options(cluster: &RedisCluster, ns: &str, lock_timeout: Duration) -> ScriptedOptions {
    ScriptedOptions {
        ns: ns.into(),
        lock_timeout,
        ..ScriptedOptions::new(cluster_spec(&cluster.urls()))
    }
}

/// One `get_or_compute` made by the load of a test.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    /// Which cache (replica) made it.
    replica: &'static str,
    started: Instant,
    elapsed: Duration,
    /// Whether this caller's computation ran (a miss, a fail-open or an own attempt).
    computed: bool,
    value: String,
}

impl Call {
    fn finished(&self) -> Instant {
        self.started + self.elapsed
    }
}

/// What a computation of [`timed_call`] waits for: `open` to turn true, after reporting its
/// start on `started` (when given).
struct Gate {
    open: watch::Receiver<bool>,
    started: Option<mpsc::UnboundedSender<()>>,
}

/// A `get_or_compute` of `id` on `cache` whose computation waits for `gate` (when given), then
/// `compute` (if not zero), and returns [`value_of`]; counted in `computations` (per id) if
/// given.
async fn timed_call(
    cache: &Cache,
    replica: &'static str,
    id: &str,
    compute: Duration,
    gate: Option<Gate>,
    computations: Option<&Mutex<BTreeMap<String, usize>>>,
) -> Call {
    let computed = AtomicBool::new(false);
    let started = Instant::now();
    let value: String = cache
        .get_or_compute(id, || async {
            computed.store(true, Ordering::SeqCst);
            if let Some(counts) = computations {
                *counts.lock().unwrap().entry(id.to_owned()).or_default() += 1;
            }
            if let Some(gate) = gate {
                if let Some(started) = gate.started {
                    started.send(()).unwrap();
                }
                let mut open = gate.open;
                let _ = open.wait_for(|open| *open).await;
            }
            if !compute.is_zero() {
                tokio::time::sleep(compute).await;
            }
            value_of(id)
        })
        .await;
    Call {
        id: id.to_owned(),
        replica,
        started,
        elapsed: started.elapsed(),
        computed: computed.load(Ordering::SeqCst),
        value,
    }
}

/// Asserts that every call answered its id's value.
fn assert_values(calls: &[Call]) {
    let wrong: Vec<&Call> = calls
        .iter()
        .filter(|c| c.value != value_of(&c.id))
        .collect();
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
}

/// Whether `value` is what the `scripted_replica` computation `c` returned:
/// `<pid>:<tag>@<start ms>`, the start as its `COMPUTING` line printed it.
fn is_value_of(value: &str, c: &Computation) -> bool {
    value
        .strip_prefix(&format!("{}:{}@", c.pid, c.tag))
        .and_then(|at| at.parse::<f64>().ok())
        == Some(c.at_unix_ms)
}

/// Claim 1: several replica processes stampeding keys spread over all three primaries compute
/// each key exactly once in the fleet, and every caller is answered with that computation's
/// value, woken by sharded pub/sub long before the lease (10 s) would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_stampeding_keys_on_every_primary_compute_each_once() {
    const PROCESSES: usize = 4;
    const KEYS: usize = 24;
    const CALLERS: usize = 8;
    const COMPUTE: Duration = Duration::from_millis(300);
    // Long: a caller that missed its wake-up would wait the lease out, far past every answer.
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let cluster = RedisCluster::start();
    let local = cache_on(cluster.backend().await, "stampede", LOCK_TIMEOUT);
    let view = cluster.cluster_nodes();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    let owners: BTreeSet<u16> = keys.iter().map(|k| owner(&view, &local, k)).collect();
    assert_eq!(
        owners.len(),
        3,
        "the keys should land on all three primaries"
    );

    let options = scripted_options(&cluster, "stampede", LOCK_TIMEOUT);
    let mut procs = Vec::new();
    for _ in 0..PROCESSES {
        procs.push(ScriptedReplica::spawn(SCRIPTED, &options).await);
    }
    let t0 = unix_ms() + 500.0;
    for p in procs.iter_mut() {
        for key in &keys {
            p.call(key, key, CALLERS, COMPUTE, false, t0).await;
        }
    }
    for p in procs.iter_mut() {
        for key in &keys {
            p.wait_called(key, Duration::from_secs(60)).await;
        }
    }
    let mut stats = Vec::new();
    for p in procs.iter_mut() {
        stats.push(p.stats().await);
    }
    let (results, computations) = ScriptedReplica::quit_all(procs, Duration::from_secs(60)).await;

    assert_eq!(
        results.len(),
        PROCESSES * KEYS * CALLERS,
        "every caller answered"
    );
    let mut computed: BTreeMap<&str, Vec<&Computation>> = BTreeMap::new();
    for c in &computations {
        computed.entry(&c.key).or_default().push(c);
    }
    let slowest = results.iter().map(|r| r.elapsed_ms).fold(0.0, f64::max);
    eprintln!(
        "FIGURE cluster stampede: {} computations for {KEYS} keys on {} primaries ({PROCESSES} processes x {CALLERS} callers per key, {} calls); slowest call {slowest:.1} ms (compute {} ms, lease {} ms)",
        computations.len(),
        owners.len(),
        results.len(),
        COMPUTE.as_millis(),
        LOCK_TIMEOUT.as_millis()
    );
    let not_once: Vec<_> = keys
        .iter()
        .filter(|k| computed.get(k.as_str()).map_or(0, Vec::len) != 1)
        .map(|k| (k, computed.get(k.as_str()).map_or(0, Vec::len)))
        .collect();
    assert!(
        not_once.is_empty(),
        "keys not computed exactly once: {not_once:?}"
    );
    for r in &results {
        assert!(r.ok, "{r:?}");
        let c = computed[r.key.as_str()][0];
        assert!(is_value_of(&r.value, c), "{r:?} is not the value of {c:?}");
        assert!(
            r.elapsed_ms < LOCK_TIMEOUT.as_millis() as f64,
            "a caller waited the lease out (missed its wake-up): {r:?}"
        );
    }
    for s in &stats {
        for counter in ["own_attempts", "max_waits", "leases_lost", "backend_errors"] {
            assert_eq!(s[counter], 0, "{counter}: {s:?}");
        }
    }
    // The values are stored: an in-process replica reads them, without computing.
    for key in &keys {
        let c = computed[key.as_str()][0];
        let v: String = local
            .get_or_compute(key, || async { panic!("{key} should be stored") })
            .await;
        assert!(is_value_of(&v, c), "{v:?} is not the value of {c:?}");
    }
    eprintln!("test took {:?}", started.elapsed());
}

/// Claim 2: a primary SIGKILLed under continuous load. Workers in two replicas call warm keys
/// and cold keys on all three primaries, and computations are in flight (with waiters in both
/// replicas) on the victim's slots and elsewhere at the kill. Every call is answered with its
/// value, none past its bound (a lease it may wait out, plus the command timeouts of its
/// commands: fail-open, not stuck until the failover), and once the replica is promoted
/// caching resumes there: warm keys are hits again, and a cold key is computed once by the two
/// replicas, then hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_open_and_caching_resumes_on_its_replica() {
    const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
    const COOLDOWN: Duration = Duration::from_millis(500);
    const LOCK_TIMEOUT: Duration = Duration::from_millis(500);
    const COMPUTE: Duration = Duration::from_millis(20);
    const WORKERS: usize = 4;
    // A caller may wait out a lease (its holder's store failed), and each of its commands
    // (GET, lease, subscribe, lease again, store) may time out; plus a margin for a loaded
    // machine. Shorter than any failover (the nodes' timeout is 2 s, then the replica waits
    // at least 500 ms before it asks for votes): a caller stuck until the replica is promoted
    // would exceed it.
    const BOUND: Duration = Duration::from_millis(500 + 5 * 250 + 20 + 500);
    let test_started = Instant::now();
    let mut cluster = RedisCluster::start();
    let connect = |cluster: &RedisCluster| {
        let builder = cluster.backend_builder();
        async move {
            builder
                .connect_timeout(COMMAND_TIMEOUT)
                .command_timeout(COMMAND_TIMEOUT)
                .circuit_breaker(3, COOLDOWN)
                .connect()
                .await
                .expect("connect to the test cluster")
        }
    };
    let (backend_a, backend_b, backend_p) = (
        connect(&cluster).await,
        connect(&cluster).await,
        connect(&cluster).await,
    );
    let cache = |backend: RedisBackend| {
        Cache::builder("failover")
            .exp(Duration::from_secs(60))
            .lock_timeout(LOCK_TIMEOUT)
            .backend(backend)
            .build()
            .expect("cache settings")
    };
    let (a, b, probe) = (
        cache(backend_a.clone()),
        cache(backend_b.clone()),
        cache(backend_p.clone()),
    );

    let view = cluster.cluster_nodes();
    let hot: Vec<String> = (0..30).map(|i| format!("hot-{i}")).collect();
    let owners: BTreeSet<u16> = hot.iter().map(|id| owner(&view, &a, id)).collect();
    assert_eq!(
        owners.len(),
        3,
        "the warm keys should land on all three primaries"
    );
    let victim = owner(&view, &a, &hot[0]);
    let victim_slots: BTreeSet<u16> = view
        .iter()
        .find(|n| n.port == victim)
        .unwrap()
        .slots
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi)
        .collect();
    let on_victim = |id: &str| victim_slots.contains(&key_slot(a.key(id).value().as_bytes()));
    let victim_hot: Vec<String> = hot.iter().filter(|id| on_victim(id)).cloned().collect();
    for id in &hot {
        let v: String = a.get_or_compute(id, || async { value_of(id) }).await;
        assert_eq!(v, value_of(id));
    }

    // Computations in flight at the kill: held in replica A (with followers there), waited on
    // by replica B, on the victim's slots and on the other primaries. They end when the gate
    // opens, right after the kill.
    let mut slow = ids_where(&a, "slow-victim", 3, |s| victim_slots.contains(&s));
    slow.extend(ids_where(&a, "slow-other", 3, |s| {
        !victim_slots.contains(&s)
    }));
    let (gate, gate_rx) = watch::channel(false);
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let mut in_flight: Vec<JoinHandle<Call>> = Vec::new();
    for id in &slow {
        let (a, id) = (a.clone(), id.clone());
        let holding = Gate {
            open: gate_rx.clone(),
            started: Some(started_tx.clone()),
        };
        in_flight.push(tokio::spawn(async move {
            timed_call(&a, "a", &id, Duration::ZERO, Some(holding), None).await
        }));
    }
    for _ in &slow {
        started_rx
            .recv()
            .await
            .expect("a holder's computation started");
    }
    for id in &slow {
        for (cache, replica, n) in [(&a, "a", 2), (&b, "b", 3)] {
            for _ in 0..n {
                let (cache, id) = (cache.clone(), id.clone());
                let following = Gate {
                    open: gate_rx.clone(),
                    started: None,
                };
                in_flight.push(tokio::spawn(async move {
                    timed_call(&cache, replica, &id, COMPUTE, Some(following), None).await
                }));
            }
        }
    }
    until_within(
        "the followers in A joined and B's callers wait on A's leases",
        Duration::from_secs(10),
        || {
            a.stats().coalesced == 2 * slow.len() as u64
                && b.stats().lock_waits == slow.len() as u64
        },
    )
    .await;

    // The load: warm keys and cold keys (each computed by one worker), all primaries.
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (cache, replica) = if w.is_multiple_of(2) {
            (a.clone(), "a")
        } else {
            (b.clone(), "b")
        };
        let (stop, calls, hot) = (stop.clone(), calls.clone(), hot.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let id = if i.is_multiple_of(3) {
                    format!("cold-{w}-{i}")
                } else {
                    hot[(i * 7 + w * 3) % hot.len()].clone()
                };
                let call = timed_call(&cache, replica, &id, COMPUTE, None, None).await;
                calls.lock().unwrap().push(call);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    until_within("the load runs", Duration::from_secs(10), || {
        calls.lock().unwrap().len() >= 40
    })
    .await;
    assert!(
        in_flight.iter().all(|c| !c.is_finished()),
        "the computations in flight ended before the kill"
    );

    let killed_at = Instant::now();
    let killed = cluster.kill_primary_of(a.key(&hot[0]).value());
    assert_eq!(killed, victim);
    gate.send_replace(true);

    // A prober in a third replica reads the victim's warm keys until one is a hit again.
    let prober = {
        let (probe, victim_hot, stop) = (probe.clone(), victim_hot.clone(), stop.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut resumed = None;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = &victim_hot[i % victim_hot.len()];
                let call = timed_call(&probe, "probe", id, COMPUTE, None, None).await;
                if !call.computed && resumed.is_none() {
                    resumed = Some(call.finished());
                }
                calls.push(call);
                if resumed.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (calls, resumed)
        })
    };
    let new_primary = cluster.wait_for_failover(victim, FAILOVER_TIMEOUT).await;
    let failed_over_at = Instant::now();
    let (probe_calls, resumed) = tokio::time::timeout(Duration::from_secs(20), prober)
        .await
        .expect("caching did not resume on the promoted replica within 20 s of the failover")
        .expect("prober task");
    let resumed = resumed.expect("the prober stopped without a hit");

    // Caching works again on the promoted node in each replica, while the load still runs:
    // a round of reads of the victim's warm keys is all hits.
    let mut resumed_in = Vec::new();
    for (cache, backend, replica) in [(&a, &backend_a, "a"), (&b, &backend_b, "b")] {
        let deadline = failed_over_at + Duration::from_secs(15);
        loop {
            let mut round = Vec::new();
            for id in &victim_hot {
                round.push(timed_call(cache, replica, id, COMPUTE, None, None).await);
            }
            assert_values(&round);
            if round.iter().all(|c| !c.computed) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica}: the victim's warm keys are not hits 15 s after the failover: {:?}, breaker {:?}, last round {round:?}",
                cache.stats(),
                backend.breaker_state()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        resumed_in.push(Instant::now());
    }
    let fresh = ids_where(&a, "after-failover", 1, |s| victim_slots.contains(&s)).remove(0);
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let mut stampede = Vec::new();
    for (cache, replica) in [(&a, "a"), (&b, "b")] {
        for _ in 0..8 {
            let (cache, fresh, counts) = (cache.clone(), fresh.clone(), counts.clone());
            stampede.push(tokio::spawn(async move {
                timed_call(
                    &cache,
                    replica,
                    &fresh,
                    Duration::from_millis(200),
                    None,
                    Some(&*counts),
                )
                .await
            }));
        }
    }
    let before = (a.stats(), b.stats());
    let mut after = Vec::new();
    for call in stampede {
        after.push(call.await.expect("caller task"));
    }
    assert_values(&after);
    assert_eq!(
        counts.lock().unwrap().get(&fresh).copied(),
        Some(1),
        "a cold key on the promoted node is computed once by the two replicas; counters before {before:?}, after {:?}; calls {after:?}",
        (a.stats(), b.stats())
    );
    for cache in [&a, &b] {
        let call = timed_call(cache, "a", &fresh, COMPUTE, None, None).await;
        assert!(
            !call.computed,
            "{fresh} is not a hit after its computation: {call:?}"
        );
    }
    assert!(
        cluster
            .node(new_primary)
            .get_raw(a.key(&fresh).value())
            .await
            .is_some(),
        "the cold key is stored on the promoted node"
    );

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker task");
    }
    let mut in_flight_calls = Vec::new();
    for call in in_flight {
        in_flight_calls.push(call.await.expect("in-flight caller task"));
    }
    let load = std::mem::take(&mut *calls.lock().unwrap());
    assert_values(&load);
    assert_values(&in_flight_calls);
    assert_values(&probe_calls);

    // No caller past its bound. The calls in flight at the kill count from the kill (their
    // computations were held until then on purpose).
    let mut everyone: Vec<(Duration, &Call)> = load
        .iter()
        .chain(&probe_calls)
        .map(|c| (c.elapsed, c))
        .collect();
    everyone.extend(
        in_flight_calls
            .iter()
            .map(|c| (c.finished().saturating_duration_since(killed_at), c)),
    );
    let late: Vec<_> = everyone.iter().filter(|(took, _)| *took > BOUND).collect();
    let during: Vec<Duration> = everyone
        .iter()
        .filter(|(_, c)| c.finished() > killed_at && c.started < failed_over_at)
        .map(|(took, _)| *took)
        .collect();
    let longest = during.iter().max().copied().unwrap_or_default();
    let (errors_a, errors_b) = (a.stats().backend_errors, b.stats().backend_errors);
    eprintln!(
        "FIGURE primary SIGKILLed under load (command timeout {} ms, breaker 3/{} ms, lease {} ms): {} calls answered ({} during the failover, {} in flight at the kill), longest call during the failover {:.1} ms (bound {} ms); failover took {:.1} s; caching resumed {:.1} s after the kill (first hit on the victim's slots), all its warm keys hits again in replicas a/b {:.1}/{:.1} s after the kill; breaker trips a/b {}/{}, fail-opens a/b {errors_a}/{errors_b}",
        COMMAND_TIMEOUT.as_millis(),
        COOLDOWN.as_millis(),
        LOCK_TIMEOUT.as_millis(),
        everyone.len() + after.len(),
        during.len(),
        in_flight_calls.len(),
        ms(longest),
        BOUND.as_millis(),
        (failed_over_at - killed_at).as_secs_f64(),
        (resumed - killed_at).as_secs_f64(),
        (resumed_in[0] - killed_at).as_secs_f64(),
        (resumed_in[1] - killed_at).as_secs_f64(),
        backend_a.breaker_trips(),
        backend_b.breaker_trips(),
    );
    assert!(
        late.is_empty(),
        "callers past their bound {BOUND:?}: {late:?}"
    );
    assert!(!during.is_empty(), "no call during the failover");
    assert!(
        errors_a + errors_b > 0,
        "the kill was not noticed by the load"
    );
    for backend in [&backend_a, &backend_b] {
        assert_eq!(backend.breaker_state(), BreakerState::Closed);
    }
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Claim 3, under load: `redis-cli --cluster reshard` moves 400 slots holding live entries
/// (warm keys read by both replicas, cold keys computed by one replica while the other waits on
/// its lease) from one primary to another, back, and over again. No answer is lost and nothing
/// fails open: every call answers its value before a lease it might wait out (5 s), every cold
/// key is computed once by the two replicas, the warm keys never, and no store call fails
/// (MOVED / ASK / TRYAGAIN are followed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_under_load_lose_no_answer_and_nothing_fails_open() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const COLD_COMPUTE: Duration = Duration::from_millis(150);
    const HOT_COMPUTE: Duration = Duration::from_millis(20);
    // A tenth of the keyspace, three times: long enough to overlap many rounds of calls.
    const MOVED_SLOTS: u16 = 1500;
    const RESHARDS: usize = 3;
    const COLD_PER_ROUND: usize = 8;
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let (backend_a, backend_b) = (cluster.backend().await, cluster.backend().await);
    let a = cache_on(backend_a.clone(), "reshard", LOCK_TIMEOUT);
    let b = cache_on(backend_b.clone(), "reshard", LOCK_TIMEOUT);

    // From the primary of slot 0 to another one: `redis-cli --cluster reshard` moves the
    // source's lowest slots first, so slots 0..400 go there, and back (they are the lowest of
    // the other primary too), and there again (checked after each move).
    let view = cluster.cluster_nodes();
    let serving = |slot: u16| {
        view.iter()
            .find(|n| n.primary && n.serves(slot))
            .unwrap()
            .port
    };
    let (from, to) = (serving(0), serving(SLOTS - 1));
    assert_ne!(from, to);
    let moving: BTreeSet<u16> = (0..MOVED_SLOTS).collect();
    assert!(moving.iter().all(|&s| serving(s) == from));
    let mut hot = ids_where(&a, "hot-moving", 12, |s| moving.contains(&s));
    hot.extend(ids_where(&a, "hot-staying", 6, |s| !moving.contains(&s)));
    let cold_pool = ids_where(&a, "cold", 1000, |s| moving.contains(&s));
    for id in &hot {
        let v: String = a.get_or_compute(id, || async { value_of(id) }).await;
        assert_eq!(v, value_of(id));
    }

    // Rounds back to back: each round, fresh cold keys of the moving slots (two callers in
    // each replica), and every warm key read once in each replica.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let load = {
        let (a, b, hot, cold_pool) = (a.clone(), b.clone(), hot.clone(), cold_pool.clone());
        let (stop, rounds, counts) = (stop.clone(), rounds.clone(), counts.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut cold = cold_pool.chunks(COLD_PER_ROUND);
            while !stop.load(Ordering::SeqCst) {
                let ids = cold.next().expect("the pool of cold keys ran out");
                let mut round = Vec::new();
                for id in ids {
                    for (cache, replica) in [(&a, "a"), (&a, "a"), (&b, "b"), (&b, "b")] {
                        round.push((cache.clone(), replica, id.clone(), COLD_COMPUTE));
                    }
                }
                for id in &hot {
                    round.push((a.clone(), "a", id.clone(), HOT_COMPUTE));
                    round.push((b.clone(), "b", id.clone(), HOT_COMPUTE));
                }
                let round: Vec<JoinHandle<Call>> = round
                    .into_iter()
                    .map(|(cache, replica, id, compute)| {
                        let counts = counts.clone();
                        tokio::spawn(async move {
                            timed_call(&cache, replica, &id, compute, None, Some(&*counts)).await
                        })
                    })
                    .collect();
                for call in round {
                    calls.push(call.await.expect("caller task"));
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            calls
        })
    };
    until_within("the load runs", Duration::from_secs(10), || {
        rounds.load(Ordering::SeqCst) >= 3
    })
    .await;
    let mut reshards = Vec::new();
    let (mut source, mut target) = (from, to);
    for _ in 0..RESHARDS {
        let started = Instant::now();
        cluster.reshard(source, target, MOVED_SLOTS).await;
        reshards.push((started, Instant::now()));
        let after = cluster.cluster_nodes();
        let owner_now = after.iter().find(|n| n.port == target).unwrap();
        let stayed: Vec<u16> = moving
            .iter()
            .copied()
            .filter(|s| !owner_now.serves(*s))
            .collect();
        assert!(
            stayed.is_empty(),
            "redis-cli did not move slots 0..{MOVED_SLOTS} to {target}: {} stayed, e.g. {:?}",
            stayed.len(),
            &stayed[..stayed.len().min(10)]
        );
        (source, target) = (target, source);
    }
    let rounds_after = rounds.load(Ordering::SeqCst) + 3;
    until_within(
        "the load runs after the reshards",
        Duration::from_secs(20),
        || rounds.load(Ordering::SeqCst) >= rounds_after,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let calls = load.await.expect("load task");
    let last_owner = source;

    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            reshards
                .iter()
                .any(|(start, end)| c.finished() > *start && c.started < *end)
        })
        .collect();
    let slowest = calls.iter().map(|c| c.elapsed).max().unwrap_or_default();
    let counts = counts.lock().unwrap().clone();
    let cold_used: BTreeSet<&String> = calls
        .iter()
        .filter(|c| c.id.starts_with("cold-"))
        .map(|c| &c.id)
        .collect();
    let (sa, sb) = (a.stats(), b.stats());
    let resharding: Duration = reshards.iter().map(|(s, e)| *e - *s).sum();
    eprintln!(
        "FIGURE {RESHARDS} reshards of {MOVED_SLOTS} slots under load: {:.2} s resharding, {} calls answered ({} during the reshards), slowest call {:.1} ms (lease {} ms), {} cold keys computed {} times, warm keys computed {} times, fail-opens a/b {}/{}, leases lost a/b {}/{}",
        resharding.as_secs_f64(),
        calls.len(),
        during.len(),
        ms(slowest),
        LOCK_TIMEOUT.as_millis(),
        cold_used.len(),
        cold_used
            .iter()
            .map(|id| counts.get(*id).copied().unwrap_or(0))
            .sum::<usize>(),
        hot.iter()
            .map(|id| counts.get(id).copied().unwrap_or(0))
            .sum::<usize>(),
        sa.backend_errors,
        sb.backend_errors,
        sa.leases_lost,
        sb.leases_lost,
    );
    assert!(!during.is_empty(), "no call overlapped the reshards");
    assert_values(&calls);
    // Every violation at once, so that a failure tells the whole story.
    let mut violations = Vec::new();
    let late: Vec<String> = calls
        .iter()
        .filter(|c| c.elapsed >= LOCK_TIMEOUT)
        .map(|c| {
            let slot = key_slot(a.key(&c.id).value().as_bytes());
            format!(
                "{} (slot {slot}) in {} waited {:?} from {:.2} s after the first reshard began",
                c.id,
                c.replica,
                c.elapsed,
                c.started
                    .saturating_duration_since(reshards[0].0)
                    .as_secs_f64()
            )
        })
        .collect();
    if !late.is_empty() {
        violations.push(format!(
            "callers waited a lease out (a lost wake-up or a lost store): {late:?}"
        ));
    }
    let not_once: Vec<(&String, usize)> = cold_used
        .iter()
        .map(|id| (*id, counts.get(*id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    if !not_once.is_empty() {
        violations.push(format!("cold keys not computed exactly once: {not_once:?}"));
    }
    let warm_computed: Vec<(&String, usize)> = hot
        .iter()
        .filter_map(|id| Some((id, *counts.get(id)?)))
        .collect();
    if !warm_computed.is_empty() {
        violations.push(format!("warm keys computed again: {warm_computed:?}"));
    }
    for (replica, s) in [("a", sa), ("b", sb)] {
        if (s.backend_errors, s.own_attempts, s.max_waits, s.leases_lost) != (0, 0, 0, 0) {
            violations.push(format!(
                "replica {replica}: backend errors (fail-opens) {}, store failures {}, own attempts {}, max waits {}, leases lost {}",
                s.backend_errors, s.store_failures, s.own_attempts, s.max_waits, s.leases_lost
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // The moved entries live on their slots' last owner, and both replicas read them there.
    for id in hot
        .iter()
        .filter(|id| moving.contains(&key_slot(a.key(id).value().as_bytes())))
    {
        assert!(
            cluster
                .node(last_owner)
                .get_raw(a.key(id).value())
                .await
                .is_some(),
            "{id} is not on {last_owner}"
        );
        for cache in [&a, &b] {
            let call = timed_call(cache, "a", id, HOT_COMPUTE, None, None).await;
            assert!(
                !call.computed,
                "{id} is not a hit after the reshards: {call:?}"
            );
        }
    }
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Spawns a `get_or_compute` of `id` on `waiter` whose computation counts itself in `computed`
/// and returns `value`; the call answers its value and when it did.
fn spawn_waiter(
    waiter: &Cache,
    id: &str,
    computed: &Arc<AtomicUsize>,
    value: &'static str,
) -> JoinHandle<(String, Instant)> {
    let (waiter, computed, id) = (waiter.clone(), computed.clone(), id.to_owned());
    tokio::spawn(async move {
        let v: String = waiter
            .get_or_compute(&id, || async move {
                computed.fetch_add(1, Ordering::SeqCst);
                value.to_string()
            })
            .await;
        (v, Instant::now())
    })
}

/// Subscribers of a shard channel on `port` (`PUBSUB SHARDNUMSUB`).
async fn shard_subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut cluster.node(port).raw().await)
        .await
        .expect("PUBSUB SHARDNUMSUB");
    n
}

/// Claim 3, the wake-up path: callers in another replica (a separate backend in this process)
/// and in a replica process wait on a holder's lease (10 s) for an entry whose slot is then
/// migrated to another primary. The old owner drops the slot's shard channels, so the waiters
/// must subscribe again on the new owner; the holder's computation ends about 1 s after the
/// migration, and its store (on the new owner) must wake them promptly: within 2 s, not when
/// the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_slot_migrates_is_woken_by_the_store_on_the_new_owner() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    const AFTER_MIGRATION: Duration = Duration::from_secs(1);
    const PROMPTLY: Duration = Duration::from_secs(2);
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let holder = cache_on(cluster.backend().await, "migrate", LOCK_TIMEOUT);
    let waiter_backend = cluster.backend().await;
    let waiter = cache_on(waiter_backend.clone(), "migrate", LOCK_TIMEOUT);
    let mut process = ScriptedReplica::spawn(
        SCRIPTED,
        &ScriptedOptions {
            max_wait: Duration::from_secs(60),
            ..scripted_options(&cluster, "migrate", LOCK_TIMEOUT)
        },
    )
    .await;

    let id = "moving-entry";
    let key = holder.key(id);
    let slot = key_slot(key.value().as_bytes());
    let channel = key.channel();
    let (from, to) = owner_and_another(&cluster, &holder, id);

    let (gated, mut started) = Gated::new(1);
    let holding = gated.call(&holder, id);
    assert_eq!(started.recv().await, Some(0));
    let waiter_computed = Arc::new(AtomicUsize::new(0));
    let waiting: Vec<JoinHandle<(String, Instant)>> = (0..3)
        .map(|_| spawn_waiter(&waiter, id, &waiter_computed, "computed-by-a-waiter"))
        .collect();
    process
        .call("waiter", id, 4, Duration::from_millis(10), false, unix_ms())
        .await;
    until_within(
        "the in-process callers wait on the holder's lease",
        Duration::from_secs(10),
        || waiter.stats().lock_waits == 1 && waiter.stats().coalesced == 2,
    )
    .await;
    // Both replicas (this process's subscription client, and the process's) are subscribed to
    // the entry's channel on its slot's owner.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shard_subscribers(&cluster, from, &channel).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the waiters did not subscribe on {from}: {:?}",
            process.stats().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(process.stats().await["lock_waits"], 1);

    let migration_started = Instant::now();
    let moved_from = cluster.migrate_slot(slot, to).await;
    let migrated = Instant::now();
    assert_eq!(moved_from, from);
    assert_eq!(cluster.primary_for_slot(slot).port(), to);
    // The holder computes for another second. Meanwhile: when do the waiters show up on the
    // new owner? (Observed here, asserted through the wake-up below.)
    let store_at = migrated + AFTER_MIGRATION;
    let mut resubscribed = None;
    while Instant::now() < store_at {
        if resubscribed.is_none() && shard_subscribers(&cluster, to, &channel).await == 2 {
            resubscribed = Some(migrated.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_new_owner = shard_subscribers(&cluster, to, &channel).await;
    assert_eq!(
        waiter_computed.load(Ordering::SeqCst),
        0,
        "a waiter computed before the store"
    );

    let opened = Instant::now();
    let opened_unix = unix_ms();
    gated.open(0);
    assert_eq!(holding.await.expect("holder task"), "computation-0");
    let stored = opened.elapsed();
    let mut in_process = Vec::new();
    for call in waiting {
        let (v, at) = tokio::time::timeout(LOCK_TIMEOUT + Duration::from_secs(10), call)
            .await
            .expect("an in-process waiter was never answered")
            .expect("waiter task");
        in_process.push((v, at.saturating_duration_since(opened)));
    }
    process
        .wait_called("waiter", LOCK_TIMEOUT + Duration::from_secs(10))
        .await;
    let (results, computations) = process.quit(Duration::from_secs(20)).await;
    let from_process: Vec<(String, f64)> = results
        .iter()
        .map(|r| {
            (
                r.value.clone(),
                r.started_unix_ms + r.elapsed_ms - opened_unix,
            )
        })
        .collect();
    let slowest_in_process = in_process.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let slowest_process = from_process.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    eprintln!(
        "FIGURE waiters on a migrated slot (lease {} ms): slot {slot} moved {from} -> {to} in {:.0} ms; waiters re-subscribed on the new owner {} after the migration ({on_new_owner} subscribers there at the store); the holder stored {:.0} ms after its computation ended; waiters answered {:.0} ms (in-process) / {slowest_process:.0} ms (process) after it",
        LOCK_TIMEOUT.as_millis(),
        ms(migrated - migration_started),
        resubscribed.map_or("never (within 1 s)".to_owned(), |d| format!("{:.0} ms", ms(d))),
        ms(stored),
        ms(slowest_in_process),
    );
    assert!(
        cluster.node(to).get_raw(key.value()).await.is_some(),
        "the holder's value is stored on the slot's new owner"
    );
    assert_eq!(
        waiter_computed.load(Ordering::SeqCst),
        0,
        "a waiter computed"
    );
    assert!(
        computations.is_empty(),
        "the process computed: {computations:?}"
    );
    assert_eq!(results.len(), 4);
    for (v, after) in &in_process {
        assert_eq!(v, "computation-0");
        assert!(
            *after < PROMPTLY,
            "an in-process waiter was answered {after:?} after the store (lease {LOCK_TIMEOUT:?}): its wake-up was lost with the migrated slot"
        );
    }
    for r in &results {
        assert!(r.ok, "{r:?}");
        assert_eq!(r.value, "computation-0", "{r:?}");
    }
    for (_, ms) in &from_process {
        assert!(
            *ms < PROMPTLY.as_millis() as f64,
            "a waiter in the process was answered {ms:.0} ms after the store (lease {LOCK_TIMEOUT:?}): its wake-up was lost with the migrated slot"
        );
    }
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Claim 3, a store during a migration: `redis-cli --cluster reshard` marks a slot MIGRATING,
/// then moves its keys. An entry whose lease is held then has its lease key on the source but
/// no value and no failure memory, so the source answers `TRYAGAIN` to the store script (a
/// multi-key command over keys it only partly holds) until the keys moved. Here the keys move
/// 200 ms after the store was sent: the store must land (on the new owner) and wake the
/// waiter promptly, not fail and leave the waiter to wait the lease out and compute again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_while_its_slot_is_migrating_lands_and_wakes_the_waiters() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const KEYS_MOVE_AFTER: Duration = Duration::from_millis(200);
    const PROMPTLY: Duration = Duration::from_secs(2);
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let holder = cache_on(cluster.backend().await, "migrating", LOCK_TIMEOUT);
    let waiter = cache_on(cluster.backend().await, "migrating", LOCK_TIMEOUT);
    let id = "entry";
    let key = holder.key(id);
    let slot = key_slot(key.value().as_bytes());
    let (from, to) = owner_and_another(&cluster, &holder, id);

    let (gated, mut started) = Gated::new(1);
    let holding = gated.call(&holder, id);
    assert_eq!(started.recv().await, Some(0));
    let waiter_computed = Arc::new(AtomicUsize::new(0));
    let waiting = spawn_waiter(&waiter, id, &waiter_computed, "computed-by-the-waiter");
    until_within(
        "the waiter waits on the holder's lease",
        Duration::from_secs(10),
        || waiter.stats().lock_waits == 1,
    )
    .await;

    assert_eq!(cluster.begin_slot_migration(slot, to).await, from);
    // The scenario: the source answers TRYAGAIN to a command over the entry's keys.
    let raw: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("return 1")
        .arg(3)
        .arg(key.value())
        .arg(key.lock())
        .arg(key.failed())
        .query_async(&mut cluster.node(from).raw().await)
        .await;
    let tryagain = raw
        .as_ref()
        .err()
        .is_some_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain));
    assert!(tryagain, "the source answered {raw:?}");

    let opened = Instant::now();
    gated.open(0);
    // The migration goes on: the keys move, the slot is handed over.
    let keys_moved = async {
        tokio::time::sleep(KEYS_MOVE_AFTER).await;
        cluster.finish_slot_migration(slot, from, to).await;
        opened.elapsed()
    };
    let (held, migrated) = tokio::join!(holding, keys_moved);
    assert_eq!(held.expect("holder task"), "computation-0");
    let holder_answered = opened.elapsed();
    let (value, answered) = tokio::time::timeout(LOCK_TIMEOUT + Duration::from_secs(10), waiting)
        .await
        .expect("the waiter was never answered")
        .expect("waiter task");
    let waited = answered.saturating_duration_since(opened);
    let hs = holder.stats();
    eprintln!(
        "FIGURE store during a migration (lease {} ms): slot handed over {:.0} ms after the store was sent; holder answered after {:.0} ms (store failures {}, fail-opens {}); waiter answered {value:?} {:.0} ms after the store was sent, computed {} times",
        LOCK_TIMEOUT.as_millis(),
        ms(migrated),
        ms(holder_answered),
        hs.store_failures,
        hs.backend_errors,
        ms(waited),
        waiter_computed.load(Ordering::SeqCst),
    );
    assert_eq!(
        (hs.store_failures, hs.backend_errors),
        (0, 0),
        "the holder's store failed while its slot was migrating: {hs:?}"
    );
    assert_eq!(
        value, "computation-0",
        "the waiter did not get the stored value"
    );
    assert!(
        waited < PROMPTLY,
        "the waiter was answered {waited:?} after the store (lease {LOCK_TIMEOUT:?})"
    );
    assert!(cluster.node(to).get_raw(key.value()).await.is_some());
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Claim 3, a subscription while another slot moves away. A replica waits on two entries of
/// one primary: on the first one it is subscribed there; the second one's slot already moved
/// to another primary, which that replica's subscription client has not noticed yet (it only
/// ever sent the first `SSUBSCRIBE`). Its `SSUBSCRIBE` for the second entry is in flight to the
/// old owner (`MOVED` is on its way back) just as the old owner hands the first entry's slot
/// over too and drops that channel (an unsolicited `SUNSUBSCRIBE`, sent first). The old owner is
/// frozen (SIGSTOP) for a moment to order the two. Both waiters must then be woken by the
/// holder's stores, within 2 s, not when the lease (5 s) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_in_flight_while_another_slot_moves_away_is_not_lost() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const PROMPTLY: Duration = Duration::from_secs(2);
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let holder = cache_on(cluster.backend().await, "in-flight", LOCK_TIMEOUT);
    let waiter = cache_on(cluster.backend().await, "in-flight", LOCK_TIMEOUT);
    let view = cluster.cluster_nodes();
    let source = view
        .iter()
        .find(|n| n.primary && n.slot_count() > 0)
        .unwrap();
    let from = source.port;
    let to = another_primary(&view, from);
    let ids = ids_where(&holder, "entry", 2, |s| source.serves(s));
    let (first, second) = (ids[0].clone(), ids[1].clone());
    let slot_of = |id: &str| key_slot(holder.key(id).value().as_bytes());
    let (first_slot, second_slot) = (slot_of(&first), slot_of(&second));
    assert_ne!(first_slot, second_slot);
    let channel = |id: &str| holder.key(id).channel();

    let waiter_computed = Arc::new(AtomicUsize::new(0));
    let wait_for = |id: &str| spawn_waiter(&waiter, id, &waiter_computed, "computed-by-the-waiter");

    // The first entry: held, its waiter subscribed on the source.
    let (gated, mut started) = Gated::new(2);
    let holding_first = gated.call(&holder, &first);
    assert_eq!(started.recv().await, Some(0));
    let waiting_first = wait_for(&first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shard_subscribers(&cluster, from, &channel(&first)).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the first waiter did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second entry's slot moves; then it is held (on its new owner).
    cluster.migrate_slot(second_slot, to).await;
    let holding_second = gated.call(&holder, &second);
    assert_eq!(started.recv().await, Some(1));
    // The waiter's command connection learns the new owner (its subscription client does not).
    assert_eq!(waiter.get::<String>(&second).await.expect("get"), None);
    // The first entry's slot: everything but the source's hand-over.
    cluster.begin_slot_migration(first_slot, to).await;
    cluster.move_slot_keys(first_slot, from, to).await;
    cluster.assign_slot(first_slot, to, to).await;

    // Freeze the source; queue its hand-over of the first slot, then the waiter's SSUBSCRIBE
    // of the second entry's channel; thaw it. It handles them in that order.
    let mut admin = cluster.node(from).raw().await;
    let target_id = view.iter().find(|n| n.port == to).unwrap().id.clone();
    cluster.node(from).pause();
    let hand_over = tokio::spawn(async move {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(first_slot)
            .arg("NODE")
            .arg(&target_id)
            .query_async::<()>(&mut admin)
            .await
    });
    // Queued on the frozen source (nothing to poll: it answers nothing while frozen).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting_second = wait_for(&second);
    until_within(
        "the second waiter subscribes",
        Duration::from_secs(5),
        || waiter.stats().lock_waits == 2,
    )
    .await;
    // Its SSUBSCRIBE follows at once (it subscribes right after counting the wait): give it
    // the time to reach the frozen source's socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.node(from).resume();
    hand_over
        .await
        .expect("hand-over task")
        .expect("CLUSTER SETSLOT NODE on the source");
    cluster.wait_for_slot_owner(first_slot, to).await;

    // Where is the waiter subscribed now, a moment before the stores?
    let mut subscribed = Vec::new();
    for id in [&first, &second] {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut on_new_owner = shard_subscribers(&cluster, to, &channel(id)).await;
        while on_new_owner != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            on_new_owner = shard_subscribers(&cluster, to, &channel(id)).await;
        }
        let on_source = shard_subscribers(&cluster, from, &channel(id)).await;
        subscribed.push((id, on_source, on_new_owner));
    }

    let opened = Instant::now();
    gated.open(0);
    gated.open(1);
    assert_eq!(holding_first.await.expect("holder"), "computation-0");
    assert_eq!(holding_second.await.expect("holder"), "computation-1");
    let mut answers = Vec::new();
    for (id, waiting) in [(&first, waiting_first), (&second, waiting_second)] {
        let (v, at) = tokio::time::timeout(LOCK_TIMEOUT + Duration::from_secs(10), waiting)
            .await
            .unwrap_or_else(|_| panic!("the waiter of {id} was never answered"))
            .expect("waiter task");
        answers.push((id, v, at.saturating_duration_since(opened)));
    }
    eprintln!(
        "FIGURE subscription in flight while another slot moves away (lease {} ms): subscribers (entry, on the old owner, on the new owner) {subscribed:?}; waiters answered {:?} after the stores",
        LOCK_TIMEOUT.as_millis(),
        answers
            .iter()
            .map(|(id, _, d)| (id, format!("{:.0} ms", ms(*d))))
            .collect::<Vec<_>>()
    );
    for (i, (id, v, after)) in answers.iter().enumerate() {
        assert_eq!(*v, format!("computation-{i}"), "{id}");
        assert!(
            *after < PROMPTLY,
            "the waiter of {id} was answered {after:?} after the store (lease {LOCK_TIMEOUT:?}); subscribers (entry, on the old owner, on the new owner): {subscribed:?}"
        );
    }
    assert_eq!(
        waiter_computed.load(Ordering::SeqCst),
        0,
        "a waiter computed"
    );
    eprintln!("test took {:?}", test_started.elapsed());
}

atomcache_tests::refreshed_counter!(
    /// Refreshed in the background by every runtime of this binary (see the module docs).
    cluster_rates,
    RATES_COMPUTED,
    "cluster_faults::rates",
    Duration::from_millis(50)
);

/// Claim 4: `#[cached(auto_refresh)]` on a cluster backend, unchanged. Three replicas (the
/// process-wide runtime, through which the function itself is called, and two detached ones)
/// refresh the value once per period between them, and readers never miss: the function's
/// calls are all hits, the other replicas' reads always find a value, and the value changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_refresh_on_a_cluster_refreshes_once_per_period_and_readers_never_miss() {
    const NAMESPACE: &str = "cluster_faults::rates";
    const EXP: Duration = Duration::from_secs(2);
    const LOCK_TIMEOUT: Duration = Duration::from_secs(1);
    const READ_FOR: Duration = Duration::from_secs(5);
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let installed = atomcache::init(cluster.backend().await)
        .await
        .expect("install the cluster backend");
    let mut detached = Vec::new();
    for _ in 0..2 {
        detached.push(Runtime::detached(cluster.backend().await).expect("runtime"));
    }
    let caches: Vec<Cache> = detached
        .iter()
        .map(|r| {
            r.cache(NAMESPACE)
                .exp(EXP)
                .lock_timeout(LOCK_TIMEOUT)
                .build()
                .expect("cache settings")
        })
        .collect();

    // The first fill: one of the refreshers computes it at start-up.
    let first_fill = wait_first_fill(&caches[0], Duration::from_secs(10), &RATES_COMPUTED).await;

    let misses_before = installed.stats().misses;
    let started = Instant::now();
    let mut readers = Vec::new();
    // The function itself, through the process-wide runtime (its misses are counted there).
    readers.push(tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut reads = 0u64;
        while started.elapsed() < READ_FOR {
            seen.insert(cluster_rates().await);
            reads += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (reads, 0, seen)
    }));
    for cache in caches.clone() {
        readers.push(tokio::spawn(async move {
            read_refreshed(&cache, started + READ_FOR).await
        }));
    }
    let mut all_seen = BTreeSet::new();
    let mut total_reads = 0;
    for reader in readers {
        let (reads, misses, seen) = reader.await.expect("reader task");
        assert!(reads > 50, "a reader made only {reads} reads");
        assert_eq!(misses, 0, "a reader saw {misses} misses during refreshes");
        total_reads += reads;
        all_seen.extend(seen);
    }
    let function_misses = installed.stats().misses - misses_before;
    let elapsed = started.elapsed();
    let computations = RATES_COMPUTED.load(Ordering::SeqCst) - first_fill;
    let periods = refresh_periods(elapsed, EXP, LOCK_TIMEOUT);
    let refreshes: u64 =
        detached.iter().map(|r| r.stats().refreshes).sum::<u64>() + installed.stats().refreshes;
    eprintln!(
        "FIGURE auto_refresh on a cluster, 3 replicas: {computations} computations over {periods:.1} periods after the first fill ({refreshes} refreshes stored, the first fill included), {} distinct values, {total_reads} reads, {function_misses} misses of the function",
        all_seen.len()
    );
    assert_eq!(function_misses, 0, "the function's calls missed");
    assert_one_refresh_per_period(computations, periods);
    assert!(
        all_seen.len() >= 3,
        "the value did not change: {all_seen:?}"
    );
    for runtime in detached {
        runtime.shutdown().await;
    }
    installed.shutdown().await;
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Claim 4: the HTTP helpers on a cluster backend, unchanged. Two routers (replicas, each on
/// its own cluster connection) serve items on all three primaries: concurrent requests through
/// both compute each item once and answer the same body and ETag with a `max-age` from the
/// entry's lifetime; `If-None-Match` gets a 304 from the other replica; concurrent `no-cache`
/// requests on the opted-in endpoint recompute once between the two replicas, and the fresh
/// value is what everyone gets afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_helpers_on_a_cluster_compute_once_and_answer_etags_and_304s() {
    let test_started = Instant::now();
    let cluster = RedisCluster::start();
    let computations = Computations::default();
    let mut routers = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..2 {
        let cache = Cache::builder("cluster_faults::items")
            .exp(Duration::from_secs(60))
            .backend(cluster.backend().await)
            .build()
            .expect("cache settings");
        routers.push(item_router(
            cache.clone(),
            &computations,
            Duration::from_millis(150),
        ));
        caches.push(cache);
    }
    // One item per primary.
    let view = cluster.cluster_nodes();
    let mut by_owner: BTreeMap<u16, u32> = BTreeMap::new();
    for id in 1..100u32 {
        by_owner
            .entry(owner(&view, &caches[0], &id.to_string()))
            .or_insert(id);
    }
    assert_eq!(by_owner.len(), 3, "items on all three primaries");
    let ids: Vec<u32> = by_owner.values().copied().collect();

    for &id in &ids {
        let first = concurrently(&routers, 20, &format!("/items/{id}"), &[]).await;
        assert_eq!(
            computations.of(id),
            Some(1),
            "item {id}: two replicas on one cluster must compute once"
        );
        let etag = first[0].etag.clone().expect("ETag header");
        for a in &first {
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.body, first[0].body);
            assert_eq!(
                a.etag.as_deref(),
                Some(etag.as_str()),
                "one ETag in every replica"
            );
            assert!(
                matches!(a.max_age(), Some(1..=60)),
                "max-age {:?}",
                a.max_age()
            );
        }
        let item: Item = serde_json::from_slice(&first[0].body).unwrap();
        assert_eq!(item, Item { id, version: 1 });
        // A revalidation through the other replica.
        let again = request(
            &routers[1],
            &format!("/items/{id}"),
            &[(header::IF_NONE_MATCH, &etag)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());
        assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
        // Forced fresh values: recomputed once between the two replicas, stored for everyone.
        let fresh = concurrently(
            &routers,
            20,
            &format!("/fresh/{id}"),
            &[(header::CACHE_CONTROL, "no-cache")],
        )
        .await;
        assert_eq!(
            computations.of(id),
            Some(2),
            "item {id}: concurrent no-cache requests recompute once"
        );
        assert!(fresh
            .iter()
            .all(|a| a.status == StatusCode::OK && a.body == fresh[0].body));
        let item: Item = serde_json::from_slice(&fresh[0].body).unwrap();
        assert_eq!(item, Item { id, version: 2 });
        assert_ne!(fresh[0].etag.as_deref(), Some(etag.as_str()));
        for router in &routers {
            let after = request(router, &format!("/items/{id}"), &[]).await;
            assert_eq!(after.body, fresh[0].body);
            assert_eq!(after.etag, fresh[0].etag);
        }
    }
    assert_eq!(computations.total(), 2 * ids.len());
    for cache in &caches {
        assert_eq!(cache.stats().backend_errors, 0, "{:?}", cache.stats());
    }
    eprintln!(
        "FIGURE HTTP helpers on a cluster: items {ids:?} (one per primary): 20 concurrent requests through 2 replicas computed each once with one ETag, 304 on revalidation through the other replica, 20 concurrent no-cache requests recomputed each once"
    );
    eprintln!("test took {:?}", test_started.elapsed());
}
