//! The Redis Sentinel harness: a primary, a replica and three sentinels from real binaries,
//! failed over by killing the primary.

use std::time::{Duration, Instant};

use atomcache_tests::sentinel::role;
use atomcache_tests::SentinelSet;

/// Generous: CI is a loaded 2-core machine (down-after is 1 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_over_to_the_replica() {
    let t = Instant::now();
    let mut set = SentinelSet::start("atomcache-svc");
    eprintln!("sentinel set started in {:?}", t.elapsed());
    assert_eq!(set.service(), "atomcache-svc");
    assert_eq!(set.sentinel_urls().len(), 3);
    let primary = set.primary().port();
    let replica = set.replica().port();
    assert_eq!(set.current_primary_port(), primary);
    assert_eq!(role(primary).as_deref(), Some("master"));
    assert_eq!(role(replica).as_deref(), Some("slave"));
    for sentinel in set.sentinels() {
        assert_eq!(role(sentinel.port()).as_deref(), Some("sentinel"));
    }

    // A write on the primary reaches the replica.
    set.primary().set_raw("k", b"v", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while set.replica().get_raw("k").await.is_none() {
        assert!(Instant::now() < deadline, "the replica never got the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(set.kill_primary(), primary);
    assert!(!set.primary().is_running());
    let t = Instant::now();
    let new = set.wait_for_failover(FAILOVER_TIMEOUT).await;
    eprintln!(
        "sentinel failover {primary} -> {new} took {:?}",
        t.elapsed()
    );
    assert_eq!(new, replica);
    assert_eq!(set.current_primary_port(), replica);
    assert_eq!(role(replica).as_deref(), Some("master"));
    // The promoted replica takes writes and kept the replicated key.
    assert_eq!(set.replica().get_raw("k").await, Some(b"v".to_vec()));
    set.replica().set_raw("k2", b"v2", None).await;
    assert_eq!(set.replica().get_raw("k2").await, Some(b"v2".to_vec()));
}
