//! The embedded memory backend behaves like Redis: one computation per cold key across
//! replicas (here: caches with their own single-flight tables on one shared store), takeover of
//! a lapsed lease by exactly one waiter, waiters woken at once, token-checked leases, a holder
//! that renews its lease through a computation longer than `lock_timeout`, `set`/`invalidate`
//! revoking a fill in flight, failures that never queue, and `max_wait`. No server needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, LeaseAttempt, Lookup, MemoryBackend, Release};
use atomcache_tests::support::{
    self, a_computation_longer_than_its_lease_runs_once, a_failure_is_shared_and_not_queued,
    assert_all_answer, assert_holds, assert_one_computation, assert_stale_token_refused,
    cache_and_runtime_cache, cache_on, counted_calls, encoded, hold_lease,
    invalidate_while_callers_wait, lease_holder, stampede, start_holder, takeover_waiters, until,
    Landing,
};
use atomcache_tests::{HookPoint, Hooked};

fn replica(backend: &MemoryBackend, ns: &str, lock_timeout: Duration) -> Cache {
    cache_on(backend.clone(), ns, lock_timeout)
}

/// Two replicas of namespace `ns` on one memory store, and the store.
fn two_replicas(ns: &str, lock_timeout: Duration) -> (MemoryBackend, Cache, Cache) {
    let backend = MemoryBackend::new();
    let a = replica(&backend, ns, lock_timeout);
    let b = replica(&backend, ns, lock_timeout);
    (backend, a, b)
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
    let calls = stampede(
        &caches,
        CALLERS,
        "cold",
        &computations,
        Duration::from_millis(250),
        |n| n,
    );
    for call in calls {
        assert_eq!(call.await.unwrap().0, 1);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let stats = assert_one_computation(&caches);
    assert_eq!(
        stats.iter().filter(|s| s.lock_waits >= 1).count(),
        REPLICAS - 1,
        "{stats:?}"
    );
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
    let calls = stampede(
        [&cache],
        CALLERS,
        "cold",
        &computations,
        Duration::from_millis(300),
        |_| "v".to_string(),
    );
    for call in calls {
        assert_eq!(call.await.unwrap().0, "v");
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
    let caches: Vec<_> = (0..3)
        .map(|_| replica(&backend, "takeover", LOCK_TIMEOUT))
        .collect();
    let (calls, computed_at) = takeover_waiters(&caches, "k", 10);
    let within = LOCK_TIMEOUT + Duration::from_secs(2);
    assert_all_answer(calls, "taken-over", within, "stuck").await;
    let computed_at = computed_at.lock().unwrap().clone();
    assert_eq!(computed_at.len(), 1, "exactly one takeover");
    assert!(computed_at[0] >= leased_at + LOCK_TIMEOUT);
    // The takeover was under a new lease (stored), not an attempt outside the cache.
    for cache in &caches {
        let s = cache.stats();
        assert_eq!((s.own_attempts, s.max_waits), (0, 0), "{s:?}");
    }
    assert_holds(&probe, "k", "taken-over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_are_woken_when_the_value_lands() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let backend = MemoryBackend::new();
    let holder = replica(&backend, "wake", LOCK_TIMEOUT);
    let key = holder.key("k");
    hold_lease(&backend, &key, "holder", LOCK_TIMEOUT).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_see_a_change_at_any_point_of_their_path() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let stored = encoded(&"from-holder".to_string()).await;
    for point in [
        HookPoint::LeaseHeld,
        HookPoint::Subscribed,
        HookPoint::Miss(3),
    ] {
        for landing in Landing::ALL {
            let backend = MemoryBackend::new();
            let holder = replica(&backend, "gap", LOCK_TIMEOUT);
            let key = holder.key("k");
            hold_lease(&backend, &key, "holder", LOCK_TIMEOUT).await;
            let action = landing.land(holder.clone(), backend.clone(), key.clone(), stored.clone());
            let hooked = Hooked::new(backend.clone(), point, action);
            let fired = hooked.fired();
            let waiter = cache_on(hooked, "gap", LOCK_TIMEOUT);
            let v: String = tokio::time::timeout(
                Duration::from_secs(2),
                waiter.get_or_compute("k", || async { "from-waiter".to_string() }),
            )
            .await
            .unwrap_or_else(|_| panic!("{point:?} {landing:?}: wake-up lost"));
            assert!(fired.load(Ordering::SeqCst), "{point:?} {landing:?}");
            let stats = waiter.stats();
            // Failures never queue: the waiter takes the next lease at once and its value is
            // stored.
            assert_eq!(v, landing.expected(), "{point:?} {landing:?}");
            if landing == Landing::Failed {
                assert_holds(&holder, "k", "from-waiter").await;
            }
            let computed = u64::from(landing == Landing::Failed);
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
    assert_stale_token_refused(&backend, &key, "a").await;
    assert_eq!(
        backend.get(&key).await.unwrap(),
        None,
        "A's store was refused"
    );
    let holder = lease_holder(&backend, &key, "c", "B's lease was ended by A").await;
    assert_eq!(holder.token, "b");
    assert!(holder.remaining > Duration::from_secs(9), "{holder:?}");
    assert_eq!(holder.last_failed, None, "A's release did nothing");
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
    let (backend, a, b) = two_replicas("panics", LOCK_TIMEOUT);
    let holder = start_holder(&a, "k", async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        panic!("the computation blew up");
        #[allow(unreachable_code)]
        0u32
    })
    .await;
    let in_a = Arc::new(AtomicUsize::new(0));
    let in_b = Arc::new(AtomicUsize::new(0));
    let callers = [(&b, &in_b), (&a, &in_a), (&a, &in_a)];
    let waiters = counted_calls(&callers, "k", Duration::ZERO, 9u32);
    until("A's callers joined the holder's flight, B waits", || {
        a.stats().coalesced == 2 && b.stats().lock_waits == 1
    })
    .await;
    assert!(holder.await.unwrap_err().is_panic());
    let lapsed = "a waiter got through only after the lease lapsed";
    assert_all_answer(waiters, 9, LOCK_TIMEOUT, lapsed).await;
    // A panic cannot be shared: each follower in A runs its own attempt, at once. Replica B,
    // waiting on the failed lease, takes the next one and stores.
    assert_eq!(in_a.load(Ordering::SeqCst), 2);
    assert_eq!(a.stats().own_attempts, 2, "{:?}", a.stats());
    assert_eq!(in_b.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().own_attempts, 0, "{:?}", b.stats());
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(9));
    // The lease is free again (B's store ended it).
    hold_lease(&backend, &a.key("other"), "x", Duration::from_secs(1)).await;
    hold_lease(&backend, &a.key("k"), "x", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_three_times_the_lease_on_memory_is_not_duplicated() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(300);
    let backend = MemoryBackend::new();
    // Two replicas: a cache with its own backend, and a detached runtime's cache.
    let (a, runtime, b) =
        cache_and_runtime_cache(backend.clone(), backend.clone(), "long", LOCK_TIMEOUT);
    let key = a.key("k");
    // Twice the lease length into the computation, the holder still holds its (renewed) lease.
    let renewed = async {
        tokio::time::sleep(LOCK_TIMEOUT * 2).await;
        let lapsed = "the holder's lease lapsed while it computed";
        let holder = lease_holder(&backend, &key, "probe", lapsed).await;
        assert_ne!(holder.token, "probe");
        // At most one lease length (plus the clock reads' spread: the probe may read the
        // clock just before a renewal on another thread).
        assert!(
            holder.remaining <= LOCK_TIMEOUT + Duration::from_millis(5),
            "{holder:?}"
        );
    };
    let compute = LOCK_TIMEOUT * 3;
    a_computation_longer_than_its_lease_runs_once(
        (&a, &b),
        LOCK_TIMEOUT,
        compute,
        |n| n,
        usize::MAX,
        renewed,
    )
    .await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_memory_computation_refuses_its_value() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let (_, a, b) = two_replicas("revoked", LOCK_TIMEOUT);
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
    assert_holds(&a, "k", "fresh-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_an_invalidated_memory_computation_get_a_fresh_value() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let (backend, a, b) = two_replicas("revoked-waiters", LOCK_TIMEOUT);
    invalidate_while_callers_wait(&a, &b, &backend, "k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_a_memory_computation_wins() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    let (_, a, b) = two_replicas("set-wins", LOCK_TIMEOUT);
    support::set_during_a_computation_wins(&a, &b, "k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_memory_computation_is_shared_in_process_and_not_queued_behind() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    const FOLLOWERS: usize = 4;
    let (_, a, b) = two_replicas("fails", LOCK_TIMEOUT);
    a_failure_is_shared_and_not_queued(&a, &b, "k", FOLLOWERS, LOCK_TIMEOUT).await;
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
    hold_lease(&backend, &key, "stuck", LOCK_TIMEOUT).await;
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
