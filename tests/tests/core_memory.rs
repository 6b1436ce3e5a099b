//! The embedded memory backend behaves like Redis: one computation per cold key across
//! replicas (here: caches with their own single-flight tables on one shared store), takeover of
//! a lapsed lease by exactly one waiter, waiters woken at once, token-checked leases, a holder
//! that renews its lease through a computation longer than `lock_timeout`, `set`/`invalidate`
//! revoking a fill in flight, failures that never queue, and `max_wait`. No server needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, LeaseAttempt, Lookup, MemoryBackend, Release, Runtime};
use atomcache_tests::{HookPoint, Hooked};
use serde::{de::DeserializeOwned, Serialize};

fn replica(backend: &MemoryBackend, ns: &str, lock_timeout: Duration) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .backend(backend.clone())
        .build()
        .unwrap()
}

/// The bytes `Cache` stores for `value` (header + bincode payload), for a test that plays the
/// holder and stores under its own lease.
async fn encoded<T: Serialize + DeserializeOwned>(value: &T) -> Vec<u8> {
    let scratch = Cache::builder("scratch")
        .backend(MemoryBackend::new())
        .build()
        .unwrap();
    scratch.set("v", value).await.unwrap();
    scratch.entry::<T>("v").await.unwrap().unwrap().raw.to_vec()
}

/// Polls `cond` every 5 ms until it holds (panics after 5 s).
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_memory_store_compute_a_cold_key_once() {
    const REPLICAS: usize = 5;
    const CALLERS: usize = 40;
    let backend = MemoryBackend::new();
    let caches: Vec<_> = (0..REPLICAS)
        .map(|_| replica(&backend, "stampede", Duration::from_secs(5)))
        .collect();
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(REPLICAS * CALLERS));
    let mut calls = Vec::new();
    for cache in &caches {
        for _ in 0..CALLERS {
            let (cache, computations, barrier) =
                (cache.clone(), computations.clone(), barrier.clone());
            calls.push(tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_compute("cold", || async move {
                        let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        n
                    })
                    .await
            }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 1);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert_eq!(stats.iter().map(|s| s.computations).sum::<u64>(), 1);
    assert_eq!(
        stats.iter().filter(|s| s.lock_waits >= 1).count(),
        REPLICAS - 1,
        "{stats:?}"
    );
    for s in &stats {
        assert_eq!(
            (s.own_attempts, s.max_waits, s.leases_lost),
            (0, 0, 0),
            "{s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_on_memory_compute_once() {
    const CALLERS: usize = 10_000;
    let cache = replica(
        &MemoryBackend::new(),
        "single-flight",
        Duration::from_secs(5),
    );
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, computations, barrier) =
                (cache.clone(), computations.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_compute("cold", || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "v".to_string()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "v");
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.computations, stats.misses), (1, 1), "{stats:?}");
    assert_eq!(
        stats.coalesced + stats.hits,
        CALLERS as u64 - 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_memory_lease_is_taken_over_by_exactly_one_waiter() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(800);
    let backend = MemoryBackend::new();
    let probe = replica(&backend, "takeover", LOCK_TIMEOUT);
    let key = probe.key("k");
    // A holder that dies at once: it takes the lease and never renews, stores or releases it.
    assert_eq!(
        backend
            .get_or_lease(&key, "dead-holder", LOCK_TIMEOUT)
            .await
            .unwrap(),
        Lookup::Leased
    );
    let leased_at = Instant::now();
    let computed_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..3 {
        let cache = replica(&backend, "takeover", LOCK_TIMEOUT);
        caches.push(cache.clone());
        for _ in 0..10 {
            let (cache, computed_at) = (cache.clone(), computed_at.clone());
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let v = cache
                    .get_or_compute("k", || async move {
                        computed_at.lock().unwrap().push(Instant::now());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        "taken-over".to_string()
                    })
                    .await;
                (v, started.elapsed())
            }));
        }
    }
    for call in calls {
        let (v, elapsed) = call.await.unwrap();
        assert_eq!(v, "taken-over");
        assert!(
            elapsed < LOCK_TIMEOUT + Duration::from_secs(2),
            "stuck {elapsed:?}"
        );
    }
    let computed_at = computed_at.lock().unwrap().clone();
    assert_eq!(computed_at.len(), 1, "exactly one takeover");
    assert!(computed_at[0] >= leased_at + LOCK_TIMEOUT);
    // The takeover was under a new lease (stored), not an attempt outside the cache.
    for cache in &caches {
        let s = cache.stats();
        assert_eq!((s.own_attempts, s.max_waits), (0, 0), "{s:?}");
    }
    assert_eq!(
        probe.get::<String>("k").await.unwrap().as_deref(),
        Some("taken-over")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_are_woken_when_the_value_lands() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let backend = MemoryBackend::new();
    let holder = replica(&backend, "wake", LOCK_TIMEOUT);
    let key = holder.key("k");
    assert_eq!(
        backend
            .try_lease(&key, "holder", LOCK_TIMEOUT)
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );
    let bytes = encoded(&"from-holder".to_string()).await;
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let cache = replica(&backend, "wake", LOCK_TIMEOUT);
            tokio::spawn(async move {
                let started = Instant::now();
                let v: String = cache
                    .get_or_compute("k", || async { "from-waiter".to_string() })
                    .await;
                (v, started.elapsed(), cache.stats())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The holder stores under its lease: that ends the lease and wakes the waiters.
    assert!(backend
        .store_leased(&key, "holder", &bytes, Duration::from_secs(60))
        .await
        .unwrap());
    assert!(
        !backend
            .release_lease(&key, "holder", Release::Abandoned)
            .await
            .unwrap(),
        "the store ended the lease"
    );
    for waiter in waiters {
        let (v, elapsed, stats) = waiter.await.unwrap();
        assert_eq!(v, "from-holder");
        assert!(
            elapsed < Duration::from_secs(2),
            "waited {elapsed:?} for the push"
        );
        assert_eq!((stats.computations, stats.lock_waits), (0, 1), "{stats:?}");
    }
}

/// How the entry changes while the waiter walks its path.
#[derive(Debug, Clone, Copy)]
enum Landing {
    /// The holder stores under its lease.
    Stored,
    /// Someone `set`s the value, revoking the holder's lease.
    Set,
    /// The holder's computation fails: it releases its lease.
    Failed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_see_a_change_at_any_point_of_their_path() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let stored = encoded(&"from-holder".to_string()).await;
    for point in [
        HookPoint::LeaseHeld,
        HookPoint::Subscribed,
        HookPoint::Miss(3),
    ] {
        for landing in [Landing::Stored, Landing::Set, Landing::Failed] {
            let backend = MemoryBackend::new();
            let holder = replica(&backend, "gap", LOCK_TIMEOUT);
            let key = holder.key("k");
            assert_eq!(
                backend
                    .try_lease(&key, "holder", LOCK_TIMEOUT)
                    .await
                    .unwrap(),
                LeaseAttempt::Acquired
            );
            let action = {
                let (holder, backend, key, stored) =
                    (holder.clone(), backend.clone(), key.clone(), stored.clone());
                async move {
                    match landing {
                        Landing::Stored => assert!(backend
                            .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                            .await
                            .unwrap()),
                        Landing::Set => {
                            holder.set("k", &"from-set".to_string()).await.unwrap();
                            // The set revoked the lease: the holder's fill is refused.
                            assert!(!backend
                                .store_leased(&key, "holder", &stored, Duration::from_secs(60))
                                .await
                                .unwrap());
                        }
                        Landing::Failed => assert!(backend
                            .release_lease(
                                &key,
                                "holder",
                                Release::Failed {
                                    remember: Duration::from_secs(2)
                                }
                            )
                            .await
                            .unwrap()),
                    }
                }
            };
            let hooked = Hooked::new(backend.clone(), point, action);
            let fired = hooked.fired();
            let waiter = Cache::builder("gap")
                .lock_timeout(LOCK_TIMEOUT)
                .backend(hooked)
                .build()
                .unwrap();
            let v: String = tokio::time::timeout(
                Duration::from_secs(2),
                waiter.get_or_compute("k", || async { "from-waiter".to_string() }),
            )
            .await
            .unwrap_or_else(|_| panic!("{point:?} {landing:?}: wake-up lost"));
            assert!(fired.load(Ordering::SeqCst), "{point:?} {landing:?}");
            let stats = waiter.stats();
            match landing {
                Landing::Stored => assert_eq!(v, "from-holder", "{point:?} {landing:?}"),
                Landing::Set => assert_eq!(v, "from-set", "{point:?} {landing:?}"),
                Landing::Failed => {
                    // Failures never queue: the waiter takes the next lease at once and its
                    // value is stored.
                    assert_eq!(v, "from-waiter", "{point:?} {landing:?}");
                    assert_eq!(
                        holder.get::<String>("k").await.unwrap().as_deref(),
                        Some("from-waiter")
                    );
                }
            }
            let computed = u64::from(matches!(landing, Landing::Failed));
            assert_eq!(
                stats.computations, computed,
                "{point:?} {landing:?}: {stats:?}"
            );
            assert_eq!(stats.own_attempts, 0, "{point:?} {landing:?}: {stats:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_memory_holder_cannot_touch_a_newer_lease() {
    let backend = MemoryBackend::new();
    let key = atomcache::EntryKey::new("", "tokens", "k");
    assert_eq!(
        backend
            .try_lease(&key, "a", Duration::from_millis(50))
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        backend
            .get_or_lease(&key, "b", Duration::from_secs(10))
            .await
            .unwrap(),
        Lookup::Leased
    );
    assert!(!backend
        .release_lease(&key, "a", Release::Abandoned)
        .await
        .unwrap());
    assert!(!backend
        .release_lease(
            &key,
            "a",
            Release::Failed {
                remember: Duration::from_secs(1)
            }
        )
        .await
        .unwrap());
    assert!(!backend
        .renew_lease(&key, "a", Duration::from_secs(1))
        .await
        .unwrap());
    assert!(!backend
        .store_leased(&key, "a", b"late", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        backend.get(&key).await.unwrap(),
        None,
        "A's store was refused"
    );
    match backend
        .try_lease(&key, "c", Duration::from_secs(1))
        .await
        .unwrap()
    {
        LeaseAttempt::Held(holder) => {
            assert_eq!(holder.token, "b");
            assert!(holder.remaining > Duration::from_secs(9), "{holder:?}");
            assert_eq!(holder.last_failed, None, "A's release did nothing");
        }
        LeaseAttempt::Acquired => panic!("B's lease was ended by A"),
    }
    // B itself can renew and store.
    assert!(backend
        .renew_lease(&key, "b", Duration::from_secs(20))
        .await
        .unwrap());
    assert!(backend
        .store_leased(&key, "b", b"fresh", Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        backend.get(&key).await.unwrap().as_deref(),
        Some(&b"fresh"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_memory_holder_releases_its_lease() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(4);
    let backend = MemoryBackend::new();
    let a = replica(&backend, "panics", LOCK_TIMEOUT);
    let b = replica(&backend, "panics", LOCK_TIMEOUT);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            a.get_or_compute("k", || async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("the computation blew up");
                #[allow(unreachable_code)]
                0u32
            })
            .await
        })
    };
    started_rx.await.unwrap();
    let in_a = Arc::new(AtomicUsize::new(0));
    let in_b = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for (cache, computations) in [(&b, &in_b), (&a, &in_a), (&a, &in_a)] {
        let (cache, computations) = (cache.clone(), computations.clone());
        waiters.push(tokio::spawn(async move {
            let started = Instant::now();
            let v = cache
                .get_or_compute("k", || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    9u32
                })
                .await;
            (v, started.elapsed())
        }));
    }
    until("A's callers joined the holder's flight, B waits", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1
    })
    .await;
    assert!(holder.await.unwrap_err().is_panic());
    for waiter in waiters {
        let (v, elapsed) = waiter.await.unwrap();
        assert_eq!(v, 9);
        assert!(
            elapsed < LOCK_TIMEOUT,
            "a waiter got through only after the lease lapsed ({elapsed:?})"
        );
    }
    // A panic cannot be shared: each follower in A runs its own attempt, at once. Replica B,
    // waiting on the failed lease, takes the next one and stores.
    assert_eq!(in_a.load(Ordering::SeqCst), 2);
    assert_eq!(a.stats().own_attempts, 2, "{:?}", a.stats());
    assert_eq!(in_b.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().own_attempts, 0, "{:?}", b.stats());
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(9));
    // The lease is free again (B's store ended it).
    assert_eq!(
        backend
            .try_lease(&a.key("other"), "x", Duration::from_secs(1))
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );
    assert_eq!(
        backend
            .try_lease(&a.key("k"), "x", Duration::from_secs(1))
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_three_times_the_lease_on_memory_is_not_duplicated() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(300);
    const COMPUTE: Duration = Duration::from_millis(900);
    const CALLERS: usize = 8;
    let backend = MemoryBackend::new();
    // Two replicas: a cache with its own backend, and a detached runtime's cache.
    let a = replica(&backend, "long", LOCK_TIMEOUT);
    let runtime = Runtime::detached(backend.clone()).unwrap();
    let b = runtime
        .cache("long")
        .exp(Duration::from_secs(60))
        .lock_timeout(LOCK_TIMEOUT)
        .build()
        .unwrap();
    let key = a.key("k");
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * CALLERS));
    let mut calls = Vec::new();
    for cache in [&a, &b] {
        for _ in 0..CALLERS {
            let (cache, computations, barrier) =
                (cache.clone(), computations.clone(), barrier.clone());
            calls.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let v = cache
                    .get_or_compute("k", || async move {
                        let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(COMPUTE).await;
                        n
                    })
                    .await;
                (v, started.elapsed())
            }));
        }
    }
    // Twice the lease length into the computation, the holder still holds its (renewed) lease.
    tokio::time::sleep(LOCK_TIMEOUT * 2).await;
    match backend
        .try_lease(&key, "probe", LOCK_TIMEOUT)
        .await
        .unwrap()
    {
        LeaseAttempt::Held(holder) => {
            assert_ne!(holder.token, "probe");
            assert!(holder.remaining <= LOCK_TIMEOUT, "{holder:?}");
        }
        LeaseAttempt::Acquired => panic!("the holder's lease lapsed while it computed"),
    }
    for call in calls {
        let (v, elapsed) = call.await.unwrap();
        assert_eq!(v, 1);
        assert!(
            elapsed < COMPUTE + Duration::from_secs(1),
            "a caller took {elapsed:?}"
        );
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    // Nobody computes again, later either.
    tokio::time::sleep(LOCK_TIMEOUT).await;
    for cache in [&a, &b] {
        let v = cache.get_or_compute("k", || async { usize::MAX }).await;
        assert_eq!(v, 1);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let stats = [a.stats(), b.stats()];
    assert_eq!(
        stats.iter().map(|s| s.computations).sum::<u64>(),
        1,
        "{stats:?}"
    );
    for s in &stats {
        assert_eq!(
            (s.own_attempts, s.max_waits, s.leases_lost),
            (0, 0, 0),
            "{s:?}"
        );
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_memory_computation_refuses_its_value() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let backend = MemoryBackend::new();
    let a = replica(&backend, "revoked", LOCK_TIMEOUT);
    let b = replica(&backend, "revoked", LOCK_TIMEOUT);
    let computations = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let (a, computations) = (a.clone(), computations.clone());
        tokio::spawn(async move {
            a.get_or_compute("k", || async move {
                computations.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(());
                let _ = gate_rx.await;
                "stale".to_string()
            })
            .await
        })
    };
    started_rx.await.unwrap();
    b.invalidate("k").await.unwrap();
    gate_tx.send(()).unwrap();
    // The holder's caller still gets its answer; the value is not stored.
    assert_eq!(holder.await.unwrap(), "stale");
    assert_eq!(a.get::<String>("k").await.unwrap(), None);
    assert_eq!(a.stats().leases_lost, 1, "{:?}", a.stats());
    // The next caller computes a fresh value under a new lease.
    let fresh = {
        let computations = computations.clone();
        b.get_or_compute("k", || async move {
            let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
            format!("fresh-{n}")
        })
        .await
    };
    assert_eq!(fresh, "fresh-2");
    assert_eq!(
        a.get::<String>("k").await.unwrap().as_deref(),
        Some("fresh-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_an_invalidated_memory_computation_get_a_fresh_value() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let backend = MemoryBackend::new();
    let a = replica(&backend, "revoked-waiters", LOCK_TIMEOUT);
    let b = replica(&backend, "revoked-waiters", LOCK_TIMEOUT);
    let computations = Arc::new(AtomicUsize::new(0));
    // Computation n waits for gate n.
    let gates: Vec<_> = (0..2)
        .map(|_| Arc::new(tokio::sync::Notify::new()))
        .collect();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let call = |cache: &Cache| {
        let (cache, computations, gates, started_tx) = (
            cache.clone(),
            computations.clone(),
            gates.clone(),
            started_tx.clone(),
        );
        tokio::spawn(async move {
            cache
                .get_or_compute("k", || async move {
                    let n = computations.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(n).unwrap();
                    gates[n].notified().await;
                    format!("computation-{n}")
                })
                .await
        })
    };
    let holder = call(&a);
    assert_eq!(started_rx.recv().await, Some(0));
    let followers_in_a: Vec<_> = (0..2).map(|_| call(&a)).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| call(&b)).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1 && b.stats().coalesced == 2
    })
    .await;

    b.invalidate("k").await.unwrap();
    // B's waiters look again at once: one of them takes a new lease.
    assert_eq!(started_rx.recv().await, Some(1));
    gates[0].notify_one();
    assert_eq!(holder.await.unwrap(), "computation-0");
    assert_eq!(
        a.get::<String>("k").await.unwrap(),
        None,
        "the revoked computation was stored"
    );
    assert_eq!(a.stats().leases_lost, 1);
    gates[1].notify_one();
    for call in followers_in_a.into_iter().chain(waiters_in_b) {
        assert_eq!(call.await.unwrap(), "computation-1");
    }
    assert_eq!(computations.load(Ordering::SeqCst), 2);
    assert_eq!(
        a.get::<String>("k").await.unwrap().as_deref(),
        Some("computation-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_memory_computation_wins() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let backend = MemoryBackend::new();
    let a = replica(&backend, "set-wins", LOCK_TIMEOUT);
    let b = replica(&backend, "set-wins", LOCK_TIMEOUT);
    let computations = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let call = |cache: &Cache| {
        let (cache, computations, gate, started_tx) = (
            cache.clone(),
            computations.clone(),
            gate.clone(),
            started_tx.clone(),
        );
        tokio::spawn(async move {
            cache
                .get_or_compute("k", || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    if let Some(tx) = started_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    gate.notified().await;
                    "computed".to_string()
                })
                .await
        })
    };
    let holder = call(&a);
    started_rx.await.unwrap();
    let followers_in_a: Vec<_> = (0..2).map(|_| call(&a)).collect();
    let waiters_in_b: Vec<_> = (0..3).map(|_| call(&b)).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1 && b.stats().coalesced == 2
    })
    .await;

    b.set("k", &"from-set".to_string()).await.unwrap();
    // The waiters in B are woken by the set and answer with it while the holder still computes.
    for waiter in waiters_in_b {
        let v = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("B's waiters were not woken by the set")
            .unwrap();
        assert_eq!(v, "from-set");
    }
    gate.notify_one();
    assert_eq!(
        holder.await.unwrap(),
        "computed",
        "the holder's caller keeps its answer"
    );
    for follower in followers_in_a {
        assert_eq!(follower.await.unwrap(), "from-set");
    }
    assert_eq!(
        a.get::<String>("k").await.unwrap().as_deref(),
        Some("from-set")
    );
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().leases_lost, 1);
    assert_eq!(b.stats().computations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_memory_computation_is_shared_in_process_and_not_queued_behind() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const FOLLOWERS: usize = 4;
    let backend = MemoryBackend::new();
    let a = replica(&backend, "fails", LOCK_TIMEOUT);
    let b = replica(&backend, "fails", LOCK_TIMEOUT);
    let in_a = Arc::new(AtomicUsize::new(0));
    let in_b = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let call = |cache: &Cache, computations: &Arc<AtomicUsize>, name: &'static str| {
        let (cache, computations, gate, started_tx) = (
            cache.clone(),
            computations.clone(),
            gate.clone(),
            started_tx.clone(),
        );
        tokio::spawn(async move {
            cache
                .try_get_or_compute("k", || async move {
                    let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                    let first = started_tx.lock().unwrap().take();
                    if let Some(tx) = first {
                        let _ = tx.send(());
                        gate.notified().await;
                    }
                    Err::<u32, String>(format!("{name} attempt {n} failed"))
                })
                .await
        })
    };
    let holder = call(&a, &in_a, "A");
    started_rx.await.unwrap();
    let followers_in_a: Vec<_> = (0..FOLLOWERS).map(|_| call(&a, &in_a, "A")).collect();
    let waiters_in_b: Vec<_> = (0..FOLLOWERS).map(|_| call(&b, &in_b, "B")).collect();
    until("callers joined and waited", || {
        a.stats().coalesced == FOLLOWERS as u64
            && b.stats().lock_waits == 1
            && b.stats().coalesced == FOLLOWERS as u64 - 1
    })
    .await;
    let failed_at = Instant::now();
    gate.notify_one();
    assert_eq!(holder.await.unwrap(), Err("A attempt 1 failed".to_string()));
    for follower in followers_in_a {
        assert_eq!(
            follower.await.unwrap(),
            Err("A attempt 1 failed".to_string())
        );
    }
    let mut from_b = Vec::new();
    for waiter in waiters_in_b {
        from_b.push(waiter.await.unwrap());
    }
    assert!(
        failed_at.elapsed() < LOCK_TIMEOUT / 2,
        "a waiter queued behind the failed lease ({:?})",
        failed_at.elapsed()
    );
    assert_eq!(in_a.load(Ordering::SeqCst), 1, "A's followers computed");
    let a_stats = a.stats();
    assert_eq!(a_stats.shared_failures, FOLLOWERS as u64, "{a_stats:?}");
    assert_eq!(a_stats.computations, 1, "{a_stats:?}");
    assert!(
        in_b.load(Ordering::SeqCst) <= 1,
        "B computed more than once"
    );
    assert!(
        from_b
            .iter()
            .all(|r| *r == Err("B attempt 1 failed".to_string())),
        "{from_b:?}"
    );
    assert_eq!(a.get::<u32>("k").await.unwrap(), None, "an Err was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gives_up_after_max_wait_and_computes_without_the_cache() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    const MAX_WAIT: Duration = Duration::from_millis(300);
    let backend = MemoryBackend::new();
    let cache = Cache::builder("max-wait")
        .exp(Duration::from_secs(60))
        .lock_timeout(LOCK_TIMEOUT)
        .max_wait(MAX_WAIT)
        .backend(backend.clone())
        .build()
        .unwrap();
    // A holder that is alive (it renews) but never finishes.
    let key = cache.key("k");
    assert_eq!(
        backend
            .try_lease(&key, "stuck", LOCK_TIMEOUT)
            .await
            .unwrap(),
        LeaseAttempt::Acquired
    );
    let started = Instant::now();
    let v = cache.get_or_compute("k", || async { 5u8 }).await;
    let elapsed = started.elapsed();
    assert_eq!(v, 5);
    assert!(
        elapsed >= MAX_WAIT && elapsed < MAX_WAIT + Duration::from_secs(1),
        "{elapsed:?}"
    );
    let s = cache.stats();
    assert_eq!(
        (s.max_waits, s.own_attempts, s.computations),
        (1, 1, 1),
        "{s:?}"
    );
    // Computed outside the lease: not stored, and the holder's lease is untouched.
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
    assert!(backend
        .renew_lease(&key, "stuck", LOCK_TIMEOUT)
        .await
        .unwrap());
}
