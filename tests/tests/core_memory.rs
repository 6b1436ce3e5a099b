//! The embedded memory backend behaves like Redis: one computation per cold key across
//! replicas (here: caches with their own single-flight tables on one shared store), takeover of
//! an expired lock by exactly one waiter, waiters woken at once, token-checked locks, and a
//! panicking holder releasing its lock. No server needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, LockAttempt, MemoryBackend};
use atomcache_tests::{HookPoint, Hooked};

fn replica(backend: &MemoryBackend, ns: &str, lock_timeout: Duration) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .backend(backend.clone())
        .build()
        .unwrap()
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
async fn an_expired_memory_lock_is_taken_over_by_exactly_one_waiter() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(800);
    let backend = MemoryBackend::new();
    let probe = replica(&backend, "takeover", LOCK_TIMEOUT);
    let key = probe.key("k");
    assert_eq!(
        backend
            .try_lock(&key, "dead-holder", LOCK_TIMEOUT)
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    let locked_at = Instant::now();
    let computed_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    for _ in 0..3 {
        let cache = replica(&backend, "takeover", LOCK_TIMEOUT);
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
    assert!(computed_at[0] >= locked_at + LOCK_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_are_woken_when_the_value_lands() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let backend = MemoryBackend::new();
    let holder = replica(&backend, "wake", LOCK_TIMEOUT);
    let key = holder.key("k");
    assert_eq!(
        backend
            .try_lock(&key, "holder", LOCK_TIMEOUT)
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let cache = replica(&backend, "wake", LOCK_TIMEOUT);
            tokio::spawn(async move {
                let started = Instant::now();
                let v: String = cache
                    .get_or_compute("k", || async { "from-waiter".to_string() })
                    .await;
                (v, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.set("k", &"from-holder".to_string()).await.unwrap();
    assert!(backend.unlock(&key, "holder").await.unwrap());
    for waiter in waiters {
        let (v, elapsed) = waiter.await.unwrap();
        assert_eq!(v, "from-holder");
        assert!(
            elapsed < Duration::from_secs(2),
            "waited {elapsed:?} for the push"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_waiters_see_a_value_landing_at_any_point_of_their_path() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    for point in [
        HookPoint::LockHeld,
        HookPoint::Subscribed,
        HookPoint::Miss(2),
    ] {
        let backend = MemoryBackend::new();
        let holder = replica(&backend, "gap", LOCK_TIMEOUT);
        let key = holder.key("k");
        assert_eq!(
            backend
                .try_lock(&key, "holder", LOCK_TIMEOUT)
                .await
                .unwrap(),
            LockAttempt::Acquired
        );
        let landing = {
            let (holder, backend, key) = (holder.clone(), backend.clone(), key.clone());
            async move {
                holder.set("k", &"from-holder".to_string()).await.unwrap();
                assert!(backend.unlock(&key, "holder").await.unwrap());
            }
        };
        let hooked = Hooked::new(backend.clone(), point, landing);
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
        .unwrap_or_else(|_| panic!("{point:?}: wake-up lost"));
        assert!(fired.load(Ordering::SeqCst), "{point:?}");
        assert_eq!(v, "from-holder", "{point:?}");
        assert_eq!(waiter.stats().computations, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_memory_holder_cannot_delete_a_newer_lock() {
    let backend = MemoryBackend::new();
    let key = atomcache::EntryKey::new("", "tokens", "k");
    assert_eq!(
        backend
            .try_lock(&key, "a", Duration::from_millis(50))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        backend
            .try_lock(&key, "b", Duration::from_secs(10))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    assert!(!backend.unlock(&key, "a").await.unwrap());
    assert!(!backend
        .extend_lock(&key, "a", Duration::from_secs(1))
        .await
        .unwrap());
    assert!(!backend
        .store_and_unlock(&key, "a", b"late", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(matches!(
        backend.try_lock(&key, "c", Duration::from_secs(1)).await.unwrap(),
        LockAttempt::Held { remaining } if remaining > Duration::from_secs(9)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_memory_holder_releases_its_lock() {
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
    let computations = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let computations = computations.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let v = b
                .get_or_compute("k", || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    9u32
                })
                .await;
            (v, started.elapsed())
        })
    };
    assert!(holder.await.unwrap_err().is_panic());
    let (v, elapsed) = waiter.await.unwrap();
    assert_eq!(v, 9);
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert!(
        elapsed < LOCK_TIMEOUT,
        "the waiter got through only after the lock expired ({elapsed:?})"
    );
    // The lock is free again.
    assert_eq!(
        backend
            .try_lock(&a.key("other"), "x", Duration::from_secs(1))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        backend
            .try_lock(&a.key("k"), "x", Duration::from_secs(1))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
}
