//! Several replicas on one real redis-server: one computation per cold key across all of them,
//! in one process (separate connections) and in separate OS processes; a live holder renews its
//! lease through a computation longer than `lock_timeout` and is not duplicated; a dead holder
//! is taken over by exactly one waiter once its lease lapsed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, Lookup, RedisBackend};
use atomcache_tests::support::{
    a_computation_longer_than_its_lease_runs_once, assert_all_answer, assert_holds,
    cache_and_runtime_cache, cache_on, stampede, takeover_waiters,
};
use atomcache_tests::{percentiles, unix_ms, RedisServer, ReplicaArgs, ReplicaProcess};

const REPLICA_EXE: &str = env!("CARGO_BIN_EXE_replica");

async fn replica_cache(url: &str, ns: &str, lock_timeout: Duration) -> Cache {
    let backend = RedisBackend::connect(url)
        .await
        .expect("connect to the test server");
    cache_on(backend, ns, lock_timeout)
}

/// `n` replicas of namespace `ns`, each on its own connection to `url`.
async fn replica_caches(url: &str, ns: &str, lock_timeout: Duration, n: usize) -> Vec<Cache> {
    let mut caches = Vec::new();
    for _ in 0..n {
        caches.push(replica_cache(url, ns, lock_timeout).await);
    }
    caches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_replicas_in_one_process_compute_a_cold_key_once() {
    const REPLICAS: usize = 5;
    const CALLERS: usize = 40;
    const COMPUTE: Duration = Duration::from_millis(250);
    let server = RedisServer::start();

    let caches = replica_caches(&server.url(), "stampede", Duration::from_secs(5), REPLICAS).await;
    let computations = Arc::new(AtomicUsize::new(0));
    let calls = stampede(&caches, CALLERS, "cold", &computations, COMPUTE, |n| {
        format!("value-{n}")
    });
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.expect("caller task").0);
    }

    assert_eq!(computations.load(Ordering::SeqCst), 1, "computations");
    assert_eq!(values.len(), REPLICAS * CALLERS);
    assert!(
        values.iter().all(|v| v == "value-1"),
        "callers got different values: {:?}",
        values.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert_eq!(stats.iter().map(|s| s.computations).sum::<u64>(), 1);
    assert_eq!(stats.iter().map(|s| s.backend_errors).sum::<u64>(), 0);
    // Every replica but the computing one found the lock taken and waited for the push.
    let waiting = stats.iter().filter(|s| s.computations == 0).count();
    assert_eq!(waiting, REPLICAS - 1);
    for s in stats.iter().filter(|s| s.computations == 0) {
        assert!(s.lock_waits >= 1 || s.hits >= 1, "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_compute_a_cold_key_once() {
    const PROCESSES: usize = 6;
    const CALLERS: usize = 50;
    const COMPUTE: Duration = Duration::from_millis(250);
    let server = RedisServer::start();
    let args = ReplicaArgs {
        url: server.url(),
        ns: "multi-process".into(),
        id: "cold".into(),
        callers: CALLERS,
        compute: COMPUTE,
        lock_timeout: Duration::from_secs(5),
    };

    // All replicas connect first (READY), then start together.
    let mut replicas = Vec::new();
    for _ in 0..PROCESSES {
        replicas.push(ReplicaProcess::spawn(REPLICA_EXE, &args).await);
    }
    let start = unix_ms() + 300.0;
    for replica in &mut replicas {
        replica.start_at(start).await;
    }
    let mut reports = Vec::new();
    for replica in replicas {
        reports.push(replica.finish(Duration::from_secs(30)).await);
    }

    let total: usize = reports.iter().map(|r| r.computations).sum();
    assert_eq!(total, 1, "computations across {PROCESSES} processes");
    let holder = reports
        .iter()
        .find(|r| r.computations == 1)
        .expect("one process computed");
    let expected = format!("computed-by-pid-{}", holder.pid);
    for report in &reports {
        // Every caller answered from the one computation: none gave up waiting, none computed
        // outside the lease, no lease was lost.
        for field in [
            "own_attempts=0",
            "max_waits=0",
            "leases_lost=0",
            "backend_errors=0",
        ] {
            assert!(
                report.done.split_whitespace().any(|f| f == field),
                "pid {}: {}",
                report.pid,
                report.done
            );
        }
        assert_eq!(report.calls.len(), CALLERS, "pid {}", report.pid);
        for call in &report.calls {
            assert_eq!(call.value, expected, "pid {} ({})", report.pid, report.done);
        }
    }

    // The landing instant from the stored entry's header (ms precision).
    let observer = replica_cache(&server.url(), &args.ns, args.lock_timeout).await;
    let entry = observer
        .entry::<String>(&args.id)
        .await
        .expect("read the entry")
        .expect("the value is stored");
    assert_eq!(entry.value, expected);
    let landed_unix_ms = entry
        .meta
        .written_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0;

    let compute_ms = COMPUTE.as_secs_f64() * 1000.0;
    let waiters: Vec<_> = reports
        .iter()
        .filter(|r| r.computations == 0)
        .flat_map(|r| r.calls.iter())
        .collect();
    let over_compute: Vec<f64> = waiters.iter().map(|c| c.elapsed_ms - compute_ms).collect();
    let after_landing: Vec<f64> = waiters
        .iter()
        .map(|c| c.finished_unix_ms - landed_unix_ms)
        .collect();
    let all_calls: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.calls.iter().map(|c| c.elapsed_ms))
        .collect();
    let (a, b, c) = (
        percentiles(&over_compute),
        percentiles(&after_landing),
        percentiles(&all_calls),
    );
    println!(
        "STAMPEDE {PROCESSES} processes x {CALLERS} callers, one cold key, computation {compute_ms} ms: \
         computations = {total}"
    );
    println!(
        "STAMPEDE waiters in non-computing processes (n={}): latency - computation time: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        a.n, a.p50, a.p99, a.max
    );
    println!(
        "STAMPEDE waiters, answer - value written (header written_at, ms precision): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        b.p50, b.p99, b.max
    );
    println!(
        "STAMPEDE all {} calls, total latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        c.n, c.p50, c.p99, c.max
    );
    for report in &reports {
        println!("STAMPEDE pid {}: {}", report.pid, report.done);
    }
    // Correctness bound, not a performance claim: nobody waited for a lock timeout.
    assert!(
        c.max < compute_ms + 4000.0,
        "a caller took {:.0} ms: it must have missed its wake-up",
        c.max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_process_is_taken_over_by_exactly_one_waiter() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(1500);
    let server = RedisServer::start();
    let args = ReplicaArgs {
        url: server.url(),
        ns: "holder-killed".into(),
        id: "cold".into(),
        callers: 1,
        compute: Duration::from_secs(600),
        lock_timeout: LOCK_TIMEOUT,
    };
    let mut holder = ReplicaProcess::spawn(REPLICA_EXE, &args).await;
    holder.start_at(unix_ms()).await;
    holder
        .expect_line("COMPUTING", Duration::from_secs(10))
        .await;
    let lock_key = replica_cache(&server.url(), &args.ns, LOCK_TIMEOUT)
        .await
        .key(&args.id)
        .lock();
    assert!(
        server.pttl(&lock_key).await > 0,
        "the holder process holds the lease"
    );

    let caches = replica_caches(&server.url(), &args.ns, LOCK_TIMEOUT, 3).await;
    let (calls, computed_at) = takeover_waiters(&caches, &args.id, 10);
    // Alive, the holder renews its lease (every third of it) for as long as it computes: twice
    // the lease length later, nobody has taken over.
    tokio::time::sleep(LOCK_TIMEOUT * 2).await;
    let pttl = server.pttl(&lock_key).await;
    assert!(
        pttl > 0 && pttl <= LOCK_TIMEOUT.as_millis() as i64,
        "the live holder's lease was not renewed ({pttl})"
    );
    assert!(
        computed_at.lock().unwrap().is_empty(),
        "a waiter took over from a live holder"
    );
    // Crash the holder: SIGKILL, no destructor, its lease stays until it lapses.
    holder.kill().await;
    let killed_at = Instant::now();
    let pttl = server.pttl(&lock_key).await;
    assert!(pttl > 0, "the dead holder's lease is still there ({pttl})");
    let expires_at = killed_at + Duration::from_millis(pttl as u64);

    for call in calls {
        let (value, _) = call.await.expect("waiter task");
        assert_eq!(value, "taken-over");
    }
    assert!(
        killed_at.elapsed() < LOCK_TIMEOUT + Duration::from_secs(2),
        "the waiters were stuck for {:?} after the holder died",
        killed_at.elapsed()
    );
    let computed_at = computed_at.lock().unwrap().clone();
    assert_eq!(computed_at.len(), 1, "exactly one waiter takes over");
    assert!(
        computed_at[0] + Duration::from_millis(50) >= expires_at,
        "the takeover came {:?} before the lease lapsed",
        expires_at - computed_at[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_lease_is_taken_over_by_exactly_one_waiter() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(1000);
    let server = RedisServer::start();
    let abandoner = RedisBackend::connect(&server.url()).await.unwrap();
    let probe = replica_cache(&server.url(), "abandoned", LOCK_TIMEOUT).await;
    let key = probe.key("cold");
    // A holder that dies at once: it takes the lease on the miss and never renews, stores or
    // releases it.
    assert_eq!(
        abandoner
            .get_or_lease(&key, "holder-that-dies", LOCK_TIMEOUT)
            .await
            .unwrap(),
        Lookup::Leased
    );
    let locked_at = Instant::now();
    drop(abandoner);

    let caches = replica_caches(&server.url(), "abandoned", LOCK_TIMEOUT, 4).await;
    let (calls, computed_at) = takeover_waiters(&caches, "cold", 8);
    let within = LOCK_TIMEOUT + Duration::from_secs(2);
    assert_all_answer(calls, "taken-over", within, "a waiter was stuck for").await;
    let computed_at = computed_at.lock().unwrap().clone();
    assert_eq!(computed_at.len(), 1, "exactly one waiter takes over");
    assert!(
        computed_at[0] >= locked_at + LOCK_TIMEOUT - Duration::from_millis(50),
        "the takeover came before the silent lease lapsed"
    );
    assert_holds(&probe, "cold", "taken-over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_three_times_the_lease_is_not_duplicated_across_replicas() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(400);
    let server = RedisServer::start();
    // Two replicas on their own connections: a cache with its own backend, and a detached
    // runtime's cache.
    let (a, runtime, b) = cache_and_runtime_cache(
        RedisBackend::connect(&server.url()).await.unwrap(),
        RedisBackend::connect(&server.url()).await.unwrap(),
        "long",
        LOCK_TIMEOUT,
    );
    let key = a.key("k");
    // Past the first lease length the holder still holds its lease, renewed.
    let renewed = async {
        let mut holder_token = None;
        for _ in 0..4 {
            tokio::time::sleep(LOCK_TIMEOUT / 2).await;
            let token = server.get_raw(&key.lock()).await.expect("the lease lapsed");
            let pttl = server.pttl(&key.lock()).await;
            assert!(
                pttl > 0 && pttl <= LOCK_TIMEOUT.as_millis() as i64,
                "lease pttl {pttl}"
            );
            assert_eq!(
                *holder_token.get_or_insert_with(|| token.clone()),
                token,
                "the lease changed hands"
            );
        }
    };
    let compute = LOCK_TIMEOUT * 3;
    let value = |n| format!("value-{n}");
    a_computation_longer_than_its_lease_runs_once(
        (&a, &b),
        LOCK_TIMEOUT,
        compute,
        value,
        "again".to_string(),
        renewed,
    )
    .await;
    assert_eq!(
        server.pttl(&key.lock()).await,
        -2,
        "the store ended the lease"
    );
    for s in [a.stats(), b.stats()] {
        assert_eq!(s.backend_errors, 0, "{s:?}");
    }
    runtime.shutdown().await;
}
