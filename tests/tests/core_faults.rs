//! Faults on a real redis-server: killed and restarted under load, unreachable, frozen,
//! garbage bytes at a key, and holders whose computation panics, fails or is cancelled. The
//! caller always gets its function's value (or its own failure) within the configured timeouts,
//! and a failed or cancelled holder's lease is released at once, not left to lapse.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, Json, RedisBackend};
use atomcache_tests::support::{
    a_failure_is_shared_and_not_queued, assert_all_answer, assert_holds, assert_waited_once,
    cache_on, counted_calls, encoded, hold_lease, start_holder, until_within,
};
use atomcache_tests::{dead_url, RedisServer};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

fn backend_builder(url: &str) -> atomcache::RedisBackendBuilder {
    RedisBackend::builder(url)
        .connect_timeout(CONNECT_TIMEOUT)
        .command_timeout(COMMAND_TIMEOUT)
}

/// A replica: its own connection to `server`.
async fn replica(server: &RedisServer, ns: &str, lock_timeout: Duration) -> Cache {
    cache_on(
        backend_builder(&server.url()).connect().await.unwrap(),
        ns,
        lock_timeout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_no_call_fails_and_caching_resumes() {
    const KEYS: usize = 8;
    const WORKERS: usize = 8;
    const COMPUTE: Duration = Duration::from_millis(20);
    const LOCK_TIMEOUT: Duration = Duration::from_secs(1);
    // The worst legitimate call: a few commands timing out, a lock wait, the computation.
    let bound =
        LOCK_TIMEOUT + COMMAND_TIMEOUT * 4 + CONNECT_TIMEOUT + COMPUTE + Duration::from_secs(2);

    let mut server = RedisServer::start();
    let backend = backend_builder(&server.url()).connect().await.unwrap();
    let cache = cache_on(backend, "under-load", LOCK_TIMEOUT);
    let computations = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (cache, computations, stop) = (cache.clone(), computations.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut calls = 0usize;
            let mut slowest = Duration::ZERO;
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("k{}", i % KEYS);
                i += 1;
                let started = Instant::now();
                let expected = format!("value-of-{id}");
                let computations = computations.clone();
                let value_of_id = expected.clone();
                let call = cache.get_or_compute(&id, || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(COMPUTE).await;
                    value_of_id
                });
                let value = tokio::time::timeout(bound, call)
                    .await
                    .unwrap_or_else(|_| panic!("a call hung for more than {bound:?}"));
                assert_eq!(value, expected);
                slowest = slowest.max(started.elapsed());
                calls += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (calls, slowest)
        }));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = cache.stats();
    assert!(before_kill.hits > 0, "warm-up: {before_kill:?}");
    tokio::task::block_in_place(|| server.kill());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| server.restart());
    let at_restart = cache.stats();
    assert!(
        at_restart.backend_errors > before_kill.backend_errors,
        "the outage was not noticed: {at_restart:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total_calls = 0;
    let mut slowest = Duration::ZERO;
    for worker in workers {
        let (calls, worker_slowest) = worker.await.expect("a call failed or panicked");
        total_calls += calls;
        slowest = slowest.max(worker_slowest);
    }
    let end = cache.stats();
    println!(
        "kill/restart under load: {total_calls} calls, slowest {slowest:?}, {} computations, stats {end:?}",
        computations.load(Ordering::SeqCst)
    );
    assert!(
        end.hits > at_restart.hits,
        "no hit after the restart: caching did not resume ({at_restart:?} → {end:?})"
    );

    // Caching resumed on its own: a cached key answers without computing, and the restarted
    // (empty) server holds the values again.
    let n = computations.load(Ordering::SeqCst);
    let value: String = cache
        .get_or_compute("k0", || async { "recomputed".to_string() })
        .await;
    assert_eq!(value, "value-of-k0");
    assert_eq!(computations.load(Ordering::SeqCst), n);
    assert!(server.get_raw(cache.key("k0").value()).await.is_some());
    assert!(server.dbsize().await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_at_a_value_key_read_as_a_miss_and_are_overwritten() {
    let server = RedisServer::start();
    let backend = backend_builder(&server.url()).connect().await.unwrap();
    let cache = cache_on(backend.clone(), "garbage", Duration::from_secs(5));
    let json = Cache::builder("garbage")
        .backend(backend)
        .codec::<Json>()
        .build()
        .unwrap();

    let mut hostile_length = vec![0xAC, 1, 1];
    hostile_length.extend_from_slice(&[0; 12]);
    hostile_length.push(253);
    hostile_length.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let mut noise = Vec::with_capacity(1 << 20);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..(1 << 20) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"not atomcache bytes at all".to_vec()),
        (
            "future-format",
            vec![0xAC, 99, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        ("hostile-length", hostile_length),
        ("noise-1MiB", noise),
    ];

    let computations = Arc::new(AtomicUsize::new(0));
    let compute = |id: &str| {
        let (computations, id) = (computations.clone(), id.to_owned());
        move || async move {
            computations.fetch_add(1, Ordering::SeqCst);
            format!("fresh-{id}")
        }
    };
    for (i, (name, bytes)) in garbage.iter().enumerate() {
        let value_key = cache.key(name).value().to_owned();
        server.set_raw(&value_key, bytes, None).await;
        let value: String = cache.get_or_compute(name, compute(name)).await;
        assert_eq!(value, format!("fresh-{name}"));
        assert_eq!(
            computations.load(Ordering::SeqCst),
            i + 1,
            "{name}: recomputed"
        );
        let stored = server.get_raw(&value_key).await.expect("overwritten");
        assert_ne!(&stored, bytes, "{name}: the garbage is still there");
        assert!(
            server.pttl(&value_key).await > 0,
            "{name}: stored with an expiry"
        );
        assert_eq!(
            cache.get::<String>(name).await.unwrap(),
            Some(format!("fresh-{name}"))
        );
        // Now a hit.
        let again: String = cache.get_or_compute(name, compute(name)).await;
        assert_eq!(again, value);
        assert_eq!(computations.load(Ordering::SeqCst), i + 1, "{name}: hit");
    }

    // A valid entry of another codec (or of another type) is a miss too, not garbage.
    json.set("other-codec", &vec![1, 2, 3]).await.unwrap();
    let value: String = cache
        .get_or_compute("other-codec", compute("other-codec"))
        .await;
    assert_eq!(value, "fresh-other-codec");
    cache.set("other-type", &u64::MAX).await.unwrap();
    let value: String = cache
        .get_or_compute("other-type", compute("other-type"))
        .await;
    assert_eq!(value, "fresh-other-type");
    assert_eq!(computations.load(Ordering::SeqCst), garbage.len() + 2);
    let stats = cache.stats();
    // At least one per call; exactly one is pinned by
    // `a_value_that_does_not_decode_is_one_decode_error_per_call`.
    assert!(stats.decode_errors >= garbage.len() as u64 + 2, "{stats:?}");
    assert_eq!(stats.backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_is_one_decode_error_per_call() {
    let server = RedisServer::start();
    let backend = backend_builder(&server.url()).connect().await.unwrap();
    let cache = cache_on(backend, "garbage-counted", Duration::from_secs(5));
    server
        .set_raw(cache.key("k").value(), b"not atomcache bytes", None)
        .await;
    assert_eq!(cache.get_or_compute("k", || async { 1u32 }).await, 1);
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1), "overwritten");
    // One stored value that does not decode, read by one call, is one decode error (and one
    // warning), however many looks the call takes on its way to the lease.
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.computations, stats.decode_errors),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_open_within_the_timeouts() {
    const COMPUTE: Duration = Duration::from_millis(50);
    let bound = CONNECT_TIMEOUT + COMMAND_TIMEOUT * 2 + COMPUTE + Duration::from_secs(2);
    let url = dead_url();

    // connect() to a dead port is an error, within the connect timeout.
    let started = Instant::now();
    assert!(backend_builder(&url).connect().await.is_err());
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(2));

    // connect_lazy() starts anyway; every call fails open.
    let backend = backend_builder(&url).connect_lazy().unwrap();
    let cache = cache_on(backend, "unreachable", Duration::from_secs(5));
    let computations = Arc::new(AtomicUsize::new(0));
    for round in 0..3 {
        let computations2 = computations.clone();
        let started = Instant::now();
        let value: u32 = tokio::time::timeout(
            bound,
            cache.get_or_compute("k", || async move {
                computations2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(COMPUTE).await;
                42
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the call hung"));
        assert_eq!(value, 42);
        assert!(started.elapsed() < bound);
    }
    assert_eq!(
        computations.load(Ordering::SeqCst),
        3,
        "nothing can be cached"
    );
    let stats = cache.stats();
    assert!(stats.backend_errors >= 3, "{stats:?}");
    assert_eq!(stats.computations, 3);
    // The direct API reports the error instead of hanging or panicking.
    let started = Instant::now();
    assert!(cache.get::<u32>("k").await.is_err());
    assert!(cache.set("k", &1u32).await.is_err());
    assert!(started.elapsed() < bound);

    // Many concurrent callers while unreachable: all answered, none hung.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    bound,
                    cache.get_or_compute(&format!("c{}", i % 5), || async move { i }),
                )
                .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .unwrap()
            .expect("a call hung while Redis was unreachable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_frozen_server_fails_open_and_recovers() {
    let bound = CONNECT_TIMEOUT + COMMAND_TIMEOUT * 4 + Duration::from_secs(2);
    let mut server = RedisServer::start();
    let backend = backend_builder(&server.url()).connect().await.unwrap();
    let cache = cache_on(backend, "killed", Duration::from_secs(5));
    assert_eq!(cache.get_or_compute("k", || async { 1u32 }).await, 1);
    assert_eq!(
        cache.get_or_compute("k", || async { 2u32 }).await,
        1,
        "cached"
    );

    // Frozen (SIGSTOP): the TCP connection is open but nothing answers; the command timeout
    // bounds every call.
    server.pause();
    let started = Instant::now();
    let value = tokio::time::timeout(bound, cache.get_or_compute("k", || async { 3u32 }))
        .await
        .expect("a call hung on a frozen server");
    assert_eq!(value, 3, "fail-open computes");
    assert!(started.elapsed() >= COMMAND_TIMEOUT / 2);
    let frozen_errors = cache.stats().backend_errors;
    assert!(frozen_errors >= 1);
    server.resume();

    // Killed: connection refused.
    tokio::task::block_in_place(|| server.kill());
    for id in ["k", "new"] {
        let value = tokio::time::timeout(bound, cache.get_or_compute(id, || async { 4u32 }))
            .await
            .expect("a call hung on a dead server");
        assert_eq!(value, 4);
    }
    assert!(cache.stats().backend_errors >= frozen_errors + 2);

    // Back: caching resumes without any action of ours.
    tokio::task::block_in_place(|| server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = cache.get_or_compute("after", || async { 5u32 }).await;
        if cache.get::<u32>("after").await.ok().flatten() == Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = cache.stats().hits;
    assert_eq!(cache.get_or_compute("after", || async { 6u32 }).await, 5);
    assert_eq!(cache.stats().hits, hits + 1);
}

async fn lock_released_within(server: &RedisServer, lock_key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if server.pttl(lock_key).await == -2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn holder_that_dies(panic: bool) {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(4);
    let server = RedisServer::start();
    let ns = if panic { "panics" } else { "cancelled" };
    let a = replica(&server, ns, LOCK_TIMEOUT).await;
    let b = replica(&server, ns, LOCK_TIMEOUT).await;
    let lock_key = a.key("k").lock();

    let holder = start_holder::<String>(&a, "k", async move {
        if panic {
            tokio::time::sleep(Duration::from_millis(300)).await;
            panic!("the computation blew up");
        }
        std::future::pending().await
    })
    .await;
    assert!(server.pttl(&lock_key).await > 0, "A holds the lease");

    // Replica B and more callers of A wait for it.
    let in_a = Arc::new(AtomicUsize::new(0));
    let in_b = Arc::new(AtomicUsize::new(0));
    let callers = [
        (&b, &in_b),
        (&b, &in_b),
        (&b, &in_b),
        (&a, &in_a),
        (&a, &in_a),
    ];
    let value = "after-the-holder".to_string();
    let waiters = counted_calls(&callers, "k", Duration::from_millis(50), value);
    until_within("the callers to join", Duration::from_secs(2), || {
        a.stats().coalesced >= 2 && b.stats().lock_waits >= 1 && b.stats().coalesced >= 2
    })
    .await;

    if panic {
        let err = holder.await.expect_err("the holder panicked");
        assert!(err.is_panic());
    } else {
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
    }
    let died = Instant::now();
    let within = LOCK_TIMEOUT + Duration::from_secs(2);
    assert_all_answer(
        waiters,
        "after-the-holder",
        within,
        "a waiter was stuck for",
    )
    .await;
    assert_eq!(b.stats().own_attempts, 0, "{:?}", b.stats());
    if panic {
        // Replica B, waiting on the failed lease, takes the next one at once and stores: one
        // takeover.
        assert_eq!(in_b.load(Ordering::SeqCst), 1, "one takeover in B");
        // A panic is a failure that cannot be shared: each of A's followers runs its own
        // attempt at once, outside the lease (not stored), instead of queueing.
        assert_eq!(
            in_a.load(Ordering::SeqCst),
            2,
            "A's followers' own attempts"
        );
        assert_eq!(a.stats().own_attempts, 2, "{:?}", a.stats());
    } else {
        // Cancelled: A's followers go round again and wait for B's takeover, or take the
        // lease themselves; either way one computation in all.
        assert_eq!(
            in_a.load(Ordering::SeqCst) + in_b.load(Ordering::SeqCst),
            1,
            "one takeover"
        );
        assert_eq!(a.stats().own_attempts, 0, "{:?}", a.stats());
    }
    // The dead holder's lease was released, not left to lapse.
    assert!(
        died.elapsed() < LOCK_TIMEOUT,
        "the waiters only got through after the lease lapsed: {:?}",
        died.elapsed()
    );
    assert!(lock_released_within(&server, &lock_key, Duration::from_secs(1)).await);
    assert_holds(&b, "k", "after-the-holder").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_computation_panics_releases_its_lease() {
    holder_that_dies(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_is_cancelled_releases_its_lease() {
    holder_that_dies(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_cancelled_leader_in_one_process_are_not_stuck() {
    let server = RedisServer::start();
    let cache = replica(&server, "cancelled-leader", Duration::from_secs(4)).await;
    let leader = start_holder::<String>(&cache, "k", std::future::pending()).await;
    let computations = Arc::new(AtomicUsize::new(0));
    let followers = counted_calls(&[(&cache, &computations); 20], "k", Duration::ZERO, 7u32);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        cache.stats().coalesced >= 1,
        "the followers joined the leader"
    );
    let started = Instant::now();
    leader.abort();
    for follower in followers {
        assert_eq!(follower.await.unwrap().0, 7);
    }
    assert!(started.elapsed() < Duration::from_secs(4) + Duration::from_secs(2));
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert!(lock_released_within(&server, &cache.key("k").lock(), Duration::from_secs(1)).await);
}

/// Waiters of replica W wait for holder H (a lease, 10 s); then `disrupt` runs; then H lands
/// its value (its own store under the lease). Every waiter must answer with H's value without
/// waiting for the lease to lapse.
async fn waiters_survive(disrupt: impl std::future::Future<Output = ()>, server: &RedisServer) {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let h_backend = backend_builder(&server.url()).connect().await.unwrap();
    let h = cache_on(h_backend.clone(), "blip", LOCK_TIMEOUT);
    let w = replica(server, "blip", LOCK_TIMEOUT).await;
    let key = h.key("k");
    hold_lease(&h_backend, &key, "h", LOCK_TIMEOUT).await;
    let bytes = encoded(&"from-holder".to_string()).await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let v: String = w
                    .get_or_compute("k", || async { "from-waiter".to_string() })
                    .await;
                (v, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.stats().lock_waits, 1, "{:?}", w.stats());
    disrupt.await;
    // Give the waiter's connection time to come back (the holder's retries on its own).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match h_backend
            .store_leased(&key, "h", &bytes, Duration::from_secs(60))
            .await
        {
            Ok(stored) => {
                assert!(stored, "the holder's lease was lost");
                break;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "the holder never reconnected");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let landed = Instant::now();
    for waiter in waiters {
        let (v, elapsed) = waiter.await.unwrap();
        assert_eq!(v, "from-holder");
        assert!(elapsed < LOCK_TIMEOUT, "{elapsed:?}");
    }
    assert!(
        landed.elapsed() < Duration::from_secs(2),
        "the waiters were not woken when the value landed ({:?})",
        landed.elapsed()
    );
    let stats = w.stats();
    assert_eq!(stats.computations, 0, "{stats:?}");
    assert_eq!((stats.own_attempts, stats.max_waits), (0, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_still_woken_after_their_connection_dropped() {
    let server = RedisServer::start();
    waiters_survive(
        async {
            assert!(server.kill_clients().await >= 2);
        },
        &server,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_not_stuck_when_redis_restarts_under_them() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
    let mut server = RedisServer::start();
    let h_backend = backend_builder(&server.url()).connect().await.unwrap();
    let key = cache_on(h_backend.clone(), "restart", LOCK_TIMEOUT).key("k");
    hold_lease(&h_backend, &key, "h", LOCK_TIMEOUT).await;
    let computations = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let w = replica(&server, "restart", LOCK_TIMEOUT).await;
        let callers = [(&w, &computations); 5];
        waiters.extend(counted_calls(
            &callers,
            "k",
            Duration::from_millis(100),
            11u32,
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The restarted server is empty: the holder's lease is gone with it.
    tokio::task::block_in_place(|| server.restart());
    let within = LOCK_TIMEOUT + COMMAND_TIMEOUT * 4 + Duration::from_secs(2);
    assert_all_answer(waiters, 11, within, "a waiter was stuck for").await;
    // Each replica computed at most once (its single flight), fail-open or after the restart.
    let n = computations.load(Ordering::SeqCst);
    assert!((1..=3).contains(&n), "{n} computations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_computation_fails_releases_its_lease_at_once() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(4);
    let server = RedisServer::start();
    let a = replica(&server, "fails", LOCK_TIMEOUT).await;
    let b = replica(&server, "fails", LOCK_TIMEOUT).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            a.try_get_or_compute("k", || async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err::<u32, _>("upstream down")
            })
            .await
        })
    };
    started_rx.await.unwrap();
    let started = Instant::now();
    let value: Result<u32, &str> = b.try_get_or_compute("k", || async { Ok(8) }).await;
    assert_eq!(value, Ok(8));
    assert_eq!(holder.await.unwrap(), Err("upstream down"));
    assert!(
        started.elapsed() < LOCK_TIMEOUT,
        "the waiter waited for the failed holder's lease to lapse ({:?})",
        started.elapsed()
    );
    // B waited on A's lease, then took the next one and stored its value.
    assert_waited_once(&b.stats(), "B");
    assert_eq!(
        a.get::<u32>("k").await.unwrap(),
        Some(8),
        "the Err was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_shared_in_process_and_not_queued_behind_in_another_replica() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const CALLERS: usize = 4;
    let server = RedisServer::start();
    let a = replica(&server, "fails-shared", LOCK_TIMEOUT).await;
    let b = replica(&server, "fails-shared", LOCK_TIMEOUT).await;
    a_failure_is_shared_and_not_queued(&a, &b, "k", CALLERS, LOCK_TIMEOUT).await;
    assert_eq!(a.stats().own_attempts, 0, "{:?}", a.stats());
    assert_eq!(
        b.stats().shared_failures,
        CALLERS as u64 - 1,
        "{:?}",
        b.stats()
    );
    // Nothing was stored; no lease is left behind, and the failure is remembered briefly.
    let key = a.key("k");
    assert_eq!(server.get_raw(key.value()).await, None);
    assert_eq!(server.pttl(&key.lock()).await, -2);
    assert!(server.pttl(&key.failed()).await > 0);
    assert_eq!(a.get::<u32>("k").await.unwrap(), None);
}
