//! Fail-open is logged through `tracing`. In a test binary of its own: `tracing` caches
//! per-callsite interest process-wide, and a callsite first hit by a concurrent test on another
//! thread can race with this test's thread-scoped subscriber.

use std::time::Duration;

use atomcache::{Cache, RedisBackend};
use atomcache_tests::{dead_url, EventLog, RedisServer};

fn cache_on(backend: RedisBackend, ns: &str) -> Cache {
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(5))
        .backend(backend)
        .build()
        .expect("cache settings")
}

fn backend_builder(url: &str) -> atomcache::RedisBackendBuilder {
    RedisBackend::builder(url)
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "current_thread")]
async fn failing_open_and_garbage_are_logged_as_warnings() {
    let log = EventLog::new();
    let _guard = tracing::subscriber::set_default(log.clone());

    let cache = cache_on(
        backend_builder(&dead_url()).connect_lazy().unwrap(),
        "logged",
    );
    assert_eq!(cache.get_or_compute("k", || async { 5u8 }).await, 5);
    let warnings = log.at(tracing::Level::WARN);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("computing without the cache")),
        "no warning logged for a fail-open call: {warnings:?}"
    );
    println!("fail-open warning: {}", warnings[0]);

    let server = RedisServer::start();
    let cache = cache_on(
        backend_builder(&server.url()).connect().await.unwrap(),
        "logged",
    );
    server
        .set_raw(cache.key("g").value(), b"garbage", None)
        .await;
    let before = log.at(tracing::Level::WARN).len();
    assert_eq!(cache.get_or_compute("g", || async { 6u8 }).await, 6);
    let warnings = log.at(tracing::Level::WARN);
    assert!(
        warnings[before..]
            .iter()
            .any(|w| w.contains("did not decode")),
        "no warning for garbage bytes: {warnings:?}"
    );
}
