//! Several replicas on one real redis-server: one computation per cold key across all of them,
//! in one process (separate connections) and in separate OS processes; a live holder renews its
//! lease through a computation longer than `lock_timeout` and is not duplicated; a dead holder
//! is taken over by exactly one waiter once its lease lapsed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::{Backend, Cache, Lookup, RedisBackend, Runtime};
use atomcache_tests::{percentiles, unix_ms, RedisServer, ReplicaArgs, ReplicaProcess};

const REPLICA_EXE: &str = env!("CARGO_BIN_EXE_replica");

async fn replica_cache(url: &str, ns: &str, lock_timeout: Duration) -> Cache {
    let backend = RedisBackend::connect(url)
        .await
        .expect("connect to the test server");
    Cache::builder(ns)
        .exp(Duration::from_secs(60))
        .lock_timeout(lock_timeout)
        .backend(backend)
        .build()
        .expect("cache settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_replicas_in_one_process_compute_a_cold_key_once() {
    const REPLICAS: usize = 5;
    const CALLERS: usize = 40;
    const COMPUTE: Duration = Duration::from_millis(250);
    let server = RedisServer::start();

    let mut caches = Vec::new();
    for _ in 0..REPLICAS {
        caches.push(replica_cache(&server.url(), "stampede", Duration::from_secs(5)).await);
    }
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
                        tokio::time::sleep(COMPUTE).await;
                        format!("value-{n}")
                    })
                    .await
            }));
        }
    }
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.expect("caller task"));
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

/// Runs `replicas` × `callers` waiters for `id`, each computing (at most once in total)
/// `"taken-over"`; returns (values, per-call latency, computation start instants).
async fn takeover_waiters(
    url: &str,
    ns: &str,
    id: &str,
    lock_timeout: Duration,
    replicas: usize,
    callers: usize,
) -> (
    Vec<tokio::task::JoinHandle<(String, Duration)>>,
    Arc<std::sync::Mutex<Vec<Instant>>>,
) {
    let computed_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    for _ in 0..replicas {
        let cache = replica_cache(url, ns, lock_timeout).await;
        for _ in 0..callers {
            let (cache, computed_at, id) = (cache.clone(), computed_at.clone(), id.to_owned());
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let value = cache
                    .get_or_compute(&id, || async move {
                        computed_at.lock().unwrap().push(Instant::now());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        "taken-over".to_string()
                    })
                    .await;
                (value, started.elapsed())
            }));
        }
    }
    (calls, computed_at)
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

    let (calls, computed_at) =
        takeover_waiters(&server.url(), &args.ns, &args.id, LOCK_TIMEOUT, 3, 10).await;
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

    let (calls, computed_at) =
        takeover_waiters(&server.url(), "abandoned", "cold", LOCK_TIMEOUT, 4, 8).await;
    for call in calls {
        let (value, elapsed) = call.await.expect("waiter task");
        assert_eq!(value, "taken-over");
        assert!(
            elapsed < LOCK_TIMEOUT + Duration::from_secs(2),
            "a waiter was stuck for {elapsed:?}"
        );
    }
    let computed_at = computed_at.lock().unwrap().clone();
    assert_eq!(computed_at.len(), 1, "exactly one waiter takes over");
    assert!(
        computed_at[0] >= locked_at + LOCK_TIMEOUT - Duration::from_millis(50),
        "the takeover came before the silent lease lapsed"
    );
    assert_eq!(
        probe.get::<String>("cold").await.unwrap().as_deref(),
        Some("taken-over")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_three_times_the_lease_is_not_duplicated_across_replicas() {
    const LOCK_TIMEOUT: Duration = Duration::from_millis(400);
    const COMPUTE: Duration = Duration::from_millis(1200);
    const CALLERS: usize = 8;
    let server = RedisServer::start();
    // Two replicas on their own connections: a cache with its own backend, and a detached
    // runtime's cache.
    let a = replica_cache(&server.url(), "long", LOCK_TIMEOUT).await;
    let runtime = Runtime::detached(RedisBackend::connect(&server.url()).await.unwrap()).unwrap();
    let b = runtime
        .cache("long")
        .exp(Duration::from_secs(60))
        .lock_timeout(LOCK_TIMEOUT)
        .build()
        .unwrap();
    let key = a.key("k");
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * CALLERS));
    let mut calls = Vec::new();
    for cache in [&a, &b] {
        for _ in 0..CALLERS {
            let (cache, computations, barrier) =
                (cache.clone(), computations.clone(), barrier.clone());
            calls.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let v = cache
                    .get_or_compute("k", || async move {
                        let n = computations.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(COMPUTE).await;
                        format!("value-{n}")
                    })
                    .await;
                (v, started.elapsed())
            }));
        }
    }
    // Past the first lease length the holder still holds its lease, renewed.
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
    for call in calls {
        let (v, elapsed) = call.await.unwrap();
        assert_eq!(v, "value-1");
        assert!(
            elapsed < COMPUTE + Duration::from_secs(1),
            "a caller took {elapsed:?}"
        );
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.pttl(&key.lock()).await,
        -2,
        "the store ended the lease"
    );
    // Nobody computes again, later either.
    tokio::time::sleep(LOCK_TIMEOUT).await;
    for cache in [&a, &b] {
        let v = cache
            .get_or_compute("k", || async { "again".to_string() })
            .await;
        assert_eq!(v, "value-1");
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let stats = [a.stats(), b.stats()];
    assert_eq!(
        stats.iter().map(|s| s.computations).sum::<u64>(),
        1,
        "{stats:?}"
    );
    for s in &stats {
        assert_eq!(
            (s.own_attempts, s.max_waits, s.leases_lost, s.backend_errors),
            (0, 0, 0, 0),
            "{s:?}"
        );
    }
    runtime.shutdown().await;
}
