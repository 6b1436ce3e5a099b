//! auto_refresh survives a Redis restart: the refresher backs off while Redis is down and fills
//! the (now empty) server again once it is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atomcache::{RedisBackend, Runtime};
use atomcache_tests::RedisServer;

static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);

#[atomcache::cached(
    exp = 2,
    lock_timeout = 1,
    auto_refresh,
    namespace = "refresh_restart::value"
)]
async fn value() -> u64 {
    COMPUTATIONS.fetch_add(1, Ordering::SeqCst) + 1
}

async fn wait_for_value(cache: &atomcache::Cache, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(v)) = cache.get::<u64>("null").await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the refresher did not fill the value within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresher_survives_a_backend_restart() {
    let mut server = RedisServer::start();
    let backend = RedisBackend::builder(&server.url())
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let replica = Runtime::detached(backend).unwrap();
    let cache = replica
        .cache("refresh_restart::value")
        .exp(Duration::from_secs(2))
        .lock_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let before = wait_for_value(&cache, Duration::from_secs(5)).await;

    server.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        replica.refreshers(),
        1,
        "the refresher died while Redis was down"
    );
    server.restart();

    let after = wait_for_value(&cache, Duration::from_secs(10)).await;
    assert!(
        after > before,
        "the value after the restart ({after}) was not recomputed (before: {before})"
    );
    assert!(
        replica.stats().backend_errors > 0,
        "the outage was not counted"
    );
    assert_eq!(replica.refreshers(), 1);
    replica.shutdown().await;
    // The function is what registered the refresher; the reads above go through `Cache`.
    let _ = value;
}
