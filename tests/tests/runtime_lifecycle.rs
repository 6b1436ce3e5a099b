//! `init` returns a handle, not a leash: dropping the `Runtime` of an installed backend leaves
//! it installed and its auto-refresh tasks running; `atomcache::shutdown()` stops them without
//! the handle. (One test in its own binary: the installed backend is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atomcache::MemoryBackend;
use atomcache_tests::support::assert_unchanged;

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = "600ms", lock_timeout = "200ms", auto_refresh)]
async fn ticker() -> usize {
    COMPUTED.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_keeps_refreshing_until_shutdown() {
    #[allow(clippy::let_underscore_future, let_underscore_drop)]
    let _ = atomcache::init(MemoryBackend::new()).await.unwrap();
    // The refresher fills the value at once, then refreshes it every ~400 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refreshed = COMPUTED.load(Ordering::SeqCst);
    assert!(
        refreshed >= 3,
        "the refresher kept running after the handle was dropped ({refreshed} computations)"
    );
    assert!(matches!(
        atomcache::init(MemoryBackend::new()).await,
        Err(atomcache::Error::AlreadyInitialized)
    ));
    assert!(
        atomcache::shutdown().await,
        "the backend was still installed"
    );
    let computed = || COMPUTED.load(Ordering::SeqCst);
    let after_shutdown = Duration::from_millis(1000);
    assert_unchanged(computed, after_shutdown, "no refresh after shutdown").await;
    assert!(!atomcache::shutdown().await, "nothing installed any more");
    // And init works again.
    let runtime = atomcache::init(MemoryBackend::new()).await.unwrap();
    assert_eq!(runtime.refreshers(), 1);
    runtime.shutdown().await;
}
