//! `RedisBackend::connect_cluster` on a real six-node Redis Cluster: entries on every primary,
//! `set` / `invalidate`, and a stampede of two replicas computing each cold key once, their
//! waiters woken by sharded pub/sub.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Cache, RedisBackend};
use atomcache_tests::support::{cache_on, until_within};
use atomcache_tests::{key_slot, RedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_on_every_primary_are_computed_stored_set_and_invalidated() {
    let cluster = RedisCluster::start();
    let backend = cluster.backend().await;
    // Redis 7 has sharded pub/sub: wake-ups cost the entry's shard only.
    let debug = format!("{backend:?}");
    assert!(debug.contains(r#"wake_ups: "SPUBLISH""#), "{debug}");
    let cache = cache_on(backend, "basic", Duration::from_secs(5));

    let ids: Vec<String> = (0..40).map(|i| format!("id-{i}")).collect();
    let owners: BTreeSet<u16> = ids
        .iter()
        .map(|id| {
            let slot = key_slot(cache.key(id).value().as_bytes());
            cluster.primary_for_slot(slot).port()
        })
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "40 entries should land on all three primaries"
    );

    let computed = Arc::new(AtomicUsize::new(0));
    for id in &ids {
        let n = computed.clone();
        let v: String = cache
            .get_or_compute(id, || async move {
                n.fetch_add(1, Ordering::SeqCst);
                format!("v-{id}")
            })
            .await;
        assert_eq!(v, format!("v-{id}"));
    }
    assert_eq!(computed.load(Ordering::SeqCst), ids.len());
    // Read back: hits, no computation, the value on the slot's primary itself.
    for id in &ids {
        let v: String = cache
            .get_or_compute(id, || async { panic!("{id} should be a hit") })
            .await;
        assert_eq!(v, format!("v-{id}"));
        assert_eq!(
            cache.get::<String>(id).await.expect("get"),
            Some(format!("v-{id}"))
        );
        let key = cache.key(id);
        let owner = cluster.primary_for_slot(key_slot(key.value().as_bytes()));
        assert!(owner.get_raw(key.value()).await.is_some(), "{id}");
    }
    let stats = cache.stats();
    assert_eq!(stats.backend_errors, 0, "{stats:?}");

    for id in &ids {
        cache.set(id, &format!("set-{id}")).await.expect("set");
    }
    for id in &ids {
        assert_eq!(
            cache.get::<String>(id).await.expect("get"),
            Some(format!("set-{id}"))
        );
    }
    for id in ids.iter().step_by(2) {
        cache.invalidate(id).await.expect("invalidate");
    }
    for (i, id) in ids.iter().enumerate() {
        let expected = (i % 2 == 1).then(|| format!("set-{id}"));
        assert_eq!(
            cache.get::<String>(id).await.expect("get"),
            expected,
            "{id}"
        );
    }
    assert!(cache
        .remaining_ttl(&ids[1])
        .await
        .expect("remaining_ttl")
        .is_some());
    assert_eq!(cache.stats().backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_compute_each_cold_key_once_and_waiters_are_woken() {
    const REPLICAS: usize = 2;
    const CALLERS: usize = 16;
    const KEYS: usize = 20;
    const COMPUTE: Duration = Duration::from_millis(300);
    // Long: a waiter that missed its wake-up would wait for the lease, far past the bound below.
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let cluster = RedisCluster::start();

    let mut backends = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..REPLICAS {
        let backend = cluster.backend().await;
        backends.push(backend.clone());
        caches.push(cache_on(backend, "stampede", LOCK_TIMEOUT));
    }
    let owners: BTreeSet<u16> = (0..KEYS)
        .map(|k| {
            let slot = key_slot(caches[0].key(&format!("cold-{k}")).value().as_bytes());
            cluster.primary_for_slot(slot).port()
        })
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "the keys should land on all three primaries"
    );

    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(tokio::sync::Barrier::new(REPLICAS * CALLERS * KEYS));
    let mut calls = Vec::new();
    for cache in &caches {
        for k in 0..KEYS {
            for _ in 0..CALLERS {
                let (cache, counts, barrier) = (cache.clone(), counts.clone(), barrier.clone());
                calls.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let started = Instant::now();
                    let v: String = cache
                        .get_or_compute(&format!("cold-{k}"), || async move {
                            let n = counts[k].fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(COMPUTE).await;
                            format!("value-{k}-{n}")
                        })
                        .await;
                    (k, v, started.elapsed())
                }));
            }
        }
    }
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (k, v, elapsed) = call.await.expect("caller task");
        assert_eq!(v, format!("value-{k}-1"), "key {k}");
        slowest = slowest.max(elapsed);
    }
    for (k, n) in counts.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "computations of key {k}");
    }
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert_eq!(
        stats.iter().map(|s| s.computations).sum::<u64>(),
        KEYS as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.iter().map(|s| s.backend_errors).sum::<u64>(),
        0,
        "{stats:?}"
    );
    eprintln!("slowest caller: {slowest:?}; {stats:?}");
    assert!(
        slowest < COMPUTE + Duration::from_secs(4),
        "a caller took {slowest:?}: it must have missed its wake-up"
    );

    // The waiting replica subscribed (SSUBSCRIBE) to the channels of the keys it waited on;
    // nobody waits any more, so the sweeper unsubscribes them (SUNSUBSCRIBE, one per slot).
    assert!(
        backends
            .iter()
            .map(RedisBackend::subscribed_channels)
            .sum::<usize>()
            > 0
    );
    until_within(
        "idle channels unsubscribed",
        Duration::from_secs(20),
        || backends.iter().all(|b| b.subscribed_channels() == 0),
    )
    .await;
    // ... on the servers too: no shard channel is left on any primary.
    let deadline = Instant::now() + Duration::from_secs(5);
    for primary in cluster.primaries() {
        loop {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .query_async(&mut primary.raw().await)
                .await
                .expect("PUBSUB SHARDCHANNELS");
            if channels.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still has shard channels {channels:?}",
                primary.port()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn cluster_settings_are_checked_before_connecting() {
    let err = RedisBackend::connect_cluster(&[]).await.unwrap_err();
    assert!(matches!(err, atomcache::Error::InvalidConfig(_)), "{err:?}");
    let err = RedisBackend::cluster_builder(&["redis://127.0.0.1:1"])
        .key_prefix("bad{prefix}")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, atomcache::Error::InvalidConfig(_)), "{err:?}");
    // No lazy cluster connection yet: an error, not a backend that never connects.
    let err = RedisBackend::cluster_builder(&["redis://127.0.0.1:1"])
        .connect_lazy()
        .unwrap_err();
    assert!(matches!(err, atomcache::Error::InvalidConfig(_)), "{err:?}");
    // The builder's Debug hides passwords.
    let debug = format!(
        "{:?}",
        RedisBackend::cluster_builder(&["redis://:secret@127.0.0.1:7000"])
    );
    assert!(!debug.contains("secret"), "{debug}");
    // Nothing listens: the connect fails within the connect timeout.
    let started = Instant::now();
    let result = RedisBackend::cluster_builder(&["redis://127.0.0.1:1"])
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await;
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
