//! auto_refresh on the embedded memory backend, and its fault handling: a refresh whose function
//! panics or returns `Err` keeps the old value and the task lives on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atomcache_tests::support::assert_unchanged;

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Computation 2 panics, computation 3 returns `Err`; the others succeed with their number.
#[atomcache::cached(exp = 2, lock_timeout = 1, auto_refresh)]
async fn flaky() -> Result<u64, String> {
    let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    match n {
        2 => panic!("computation {n} panics (on purpose)"),
        3 => Err(format!("computation {n} fails (on purpose)")),
        _ => Ok(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_old_value_through_panics_and_errors() {
    let runtime = atomcache::init(atomcache::MemoryBackend::new())
        .await
        .unwrap();
    assert_eq!(runtime.refreshers(), 1);

    let mut seen = Vec::new();
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let started = Instant::now();
        let value = flaky().await.expect("readers always get a value");
        slowest = slowest.max(started.elapsed());
        if seen.last() != Some(&value) {
            seen.push(value);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = runtime.stats();
    println!("values seen {seen:?}, slowest read {slowest:?}, {stats:?}");
    assert_eq!(seen.first(), Some(&1));
    assert!(
        !seen.contains(&2) && !seen.contains(&3),
        "a failed refresh replaced the value: {seen:?}"
    );
    assert!(
        seen.contains(&4),
        "the refresher did not recover after a panic and an error: {seen:?}"
    );
    assert!(stats.refresh_failures >= 2, "{stats:?}");
    assert!(stats.refreshes >= 3, "{stats:?}");
    // At most the very first read (racing the refresher's first fill) is a miss.
    assert!(stats.misses <= 1, "a reader missed: {stats:?}");
    assert_eq!(runtime.refreshers(), 1, "the refresher died");

    runtime.shutdown().await;
    let calls = || CALLS.load(Ordering::SeqCst);
    let after_shutdown = Duration::from_millis(2500);
    assert_unchanged(calls, after_shutdown, "refreshing went on after shutdown").await;
}
