//! In-process single flight on a real redis-server: 10 000 concurrent callers of one cold key
//! send a handful of Redis commands (counted by the server's own `INFO commandstats`) and
//! compute once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomcache::{Cache, RedisBackend};
use atomcache_tests::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_of_a_cold_key_send_a_handful_of_commands() {
    const CALLERS: usize = 10_000;
    let server = RedisServer::start();
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    let cache = Cache::builder("single-flight")
        .exp(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(5))
        .backend(backend)
        .build()
        .unwrap();
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    server.reset_stats().await;

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
                        vec![7u64; 16]
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), vec![7u64; 16]);
    }

    let commands = server.command_stats().await;
    let total = commands.total_excluding(&["info", "config"]);
    println!(
        "10 000 callers → {total} Redis commands (scripts' inner calls included): {commands:?}"
    );
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert!(
        total < 20,
        "{CALLERS} callers sent {total} commands: {:?}",
        commands.calls
    );
    assert!(commands.get("get") <= 3, "{:?}", commands.calls);
    let stats = cache.stats();
    assert_eq!(stats.computations, 1, "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(
        stats.coalesced + stats.hits,
        CALLERS as u64 - 1,
        "every other caller joined the flight (or came after it landed): {stats:?}"
    );

    // The value is in Redis; a later caller is one GET.
    server.reset_stats().await;
    assert_eq!(
        cache.get_or_compute("cold", || async { vec![0u64] }).await,
        vec![7u64; 16]
    );
    let after = server.command_stats().await;
    assert_eq!(
        after.total_excluding(&["info", "config"]),
        1,
        "{:?}",
        after.calls
    );
    assert_eq!(after.get("get"), 1);
}
