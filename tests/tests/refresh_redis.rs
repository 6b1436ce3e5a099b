//! auto_refresh across three replicas (separate runtimes and connections) on one real Redis:
//! one computation per period, readers never miss, values change, shutdown stops refreshing.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atomcache::{RedisBackend, Runtime};
use atomcache_tests::support::{
    assert_one_refresh_per_period, read_refreshed, refresh_periods, wait_first_fill,
};
use atomcache_tests::RedisServer;

const NAMESPACE: &str = "refresh_redis::rates";
const EXP: Duration = Duration::from_secs(2);
const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

atomcache_tests::refreshed_counter!(
    rates,
    COMPUTATIONS,
    "refresh_redis::rates",
    Duration::from_millis(50)
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_refresh_once_per_period_and_readers_never_miss() {
    let server = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let backend = RedisBackend::connect(&server.url()).await.expect("connect");
        replicas.push(Runtime::detached(backend).unwrap());
    }
    let caches: Vec<_> = replicas
        .iter()
        .map(|r| {
            r.cache(NAMESPACE)
                .exp(EXP)
                .lock_timeout(LOCK_TIMEOUT)
                .build()
                .unwrap()
        })
        .collect();

    // First fill: one of the refreshers computes it at start-up.
    let first_fill = wait_first_fill(&caches[0], Duration::from_secs(5), &COMPUTATIONS).await;

    // Readers on every replica for several periods.
    let read_for = Duration::from_secs(7);
    let started = Instant::now();
    let mut readers = Vec::new();
    for cache in caches.clone() {
        readers.push(tokio::spawn(async move {
            read_refreshed(&cache, Instant::now() + read_for).await
        }));
    }
    let mut all_seen = BTreeSet::new();
    for reader in readers {
        let (reads, misses, seen) = reader.await.unwrap();
        assert!(reads > 100, "reader made only {reads} reads");
        assert_eq!(misses, 0, "a reader saw {misses} misses during refreshes");
        all_seen.extend(seen);
    }
    let elapsed = started.elapsed();
    let computations = COMPUTATIONS.load(Ordering::SeqCst) - first_fill;
    let periods = refresh_periods(elapsed, EXP, LOCK_TIMEOUT);
    println!(
        "auto_refresh, 3 replicas: {computations} computations over {:.1} periods ({:.2} per period), {} distinct values",
        periods,
        computations as f64 / periods,
        all_seen.len()
    );
    assert_one_refresh_per_period(computations, periods);
    assert!(
        all_seen.len() >= 4,
        "values did not change between periods: {all_seen:?}"
    );

    // Shutdown stops refreshing: the value expires and nobody computes it again.
    for replica in replicas {
        replica.shutdown().await;
    }
    let after_shutdown = COMPUTATIONS.load(Ordering::SeqCst);
    tokio::time::sleep(EXP + Duration::from_millis(500)).await;
    assert_eq!(
        COMPUTATIONS.load(Ordering::SeqCst),
        after_shutdown,
        "a refresher kept running after shutdown"
    );
    assert_eq!(
        caches[0].get::<u64>("null").await.unwrap(),
        None,
        "the value should have expired"
    );
    // The readers above went through `Cache`; the function itself is what registered the refresher.
    let _ = rates;
}
