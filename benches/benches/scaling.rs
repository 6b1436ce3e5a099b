//! Scenario 4: hit throughput as the number of concurrent callers grows (1 → 256), against the
//! raw `redis` GET of the same bytes; and the cost of a miss (GET, lock, store + unlock + notify)
//! against a plain GET + SET.
//!
//! ```text
//! cargo bench -p atomcache-bench --bench scaling
//! ```
//!
//! Starts its own redis-server. Criterion prints each contender's time and throughput; the
//! tables at the end come from an interleaved A/B run (see `atomcache_bench::Paired`).

use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomcache::{Cache, RedisBackend};
use atomcache_bench::{
    fmt_ns, payload, print_header, print_ratios, quick, raw_connection, runtime, timed,
    timed_callers, warn_bimodal, Paired, Row, Timed, VALUE_LEN,
};
use atomcache_tests::RedisServer;
use criterion::{Criterion, Throughput};

const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];
const RAW: &str = "redis GET";
const DISTINCT: &str = "atomcache, distinct keys";
const ONE_KEY: &str = "atomcache, one key";
const MISS: &str = "atomcache miss";
const GET_SET: &str = "redis GET + SET";
/// Lifetime of the values the miss benchmark writes (both contenders), so they do not pile up.
const MISS_EXP: Duration = Duration::from_secs(10);

fn missed<T>() -> T {
    panic!("a warm key missed: the benchmark would measure computations, not hits")
}

fn main() {
    print_header("Scenario 4: scaling and the cost of a miss");
    let server = RedisServer::start();
    let rt = runtime();
    let value = payload(VALUE_LEN);
    let max = *LEVELS.last().expect("levels");

    let cache = rt.block_on(async {
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connect atomcache to the bench server");
        Cache::builder("bench-scaling")
            .exp(Duration::from_secs(3600))
            .backend(backend)
            .build()
            .expect("cache settings")
    });
    let miss_cache = rt.block_on(async {
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connect atomcache to the bench server");
        Cache::builder("bench-miss")
            .exp(MISS_EXP)
            .lock_timeout(Duration::from_secs(5))
            .backend(backend)
            .build()
            .expect("cache settings")
    });
    let ids: Arc<Vec<String>> = Arc::new((0..max).map(|i| i.to_string()).collect());
    let raw_keys: Arc<Vec<String>> = Arc::new((0..max).map(|i| format!("raw:{i}")).collect());
    rt.block_on(async {
        for (id, raw_key) in ids.iter().zip(raw_keys.iter()) {
            let v = value.clone();
            let _: String = cache.get_or_compute(id, || async { v }).await;
            let bytes = server
                .get_raw(cache.key(id).value())
                .await
                .expect("the warm-up stored a value");
            server.set_raw(raw_key, &bytes, None).await;
        }
    });
    let conn = rt.block_on(raw_connection(&server.url()));

    let raw_at = |callers: usize| -> Timed {
        let (rt, conn, keys) = (rt.clone(), conn.clone(), raw_keys.clone());
        Rc::new(move |iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            timed_callers(&rt, iters, callers, move |caller, _| {
                let (mut conn, keys) = (conn.clone(), keys.clone());
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[caller])
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(v.unwrap_or_else(missed));
                }
            })
        })
    };
    let atomcache_at = |callers: usize, one_key: bool| -> Timed {
        let (rt, cache, ids) = (rt.clone(), cache.clone(), ids.clone());
        Rc::new(move |iters| {
            let (cache, ids) = (cache.clone(), ids.clone());
            timed_callers(&rt, iters, callers, move |caller, _| {
                let (cache, ids) = (cache.clone(), ids.clone());
                async move {
                    let id = &ids[if one_key { 0 } else { caller }];
                    let v: String = cache.get_or_compute(id, || async { missed() }).await;
                    black_box(v);
                }
            })
        })
    };
    let fresh = Arc::new(AtomicU64::new(0));
    let miss_atomcache: Timed = {
        let (rt, cache, fresh, value) =
            (rt.clone(), miss_cache.clone(), fresh.clone(), value.clone());
        Rc::new(move |iters| {
            let (cache, fresh, value) = (cache.clone(), fresh.clone(), value.clone());
            timed(&rt, iters, move |_| {
                let (cache, value) = (cache.clone(), value.clone());
                let id = format!("miss-{}", fresh.fetch_add(1, Ordering::Relaxed));
                async move {
                    let v: String = cache.get_or_compute(&id, || async { value }).await;
                    black_box(v);
                }
            })
        })
    };
    let miss_raw: Timed = {
        let (rt, conn, fresh) = (rt.clone(), conn.clone(), fresh.clone());
        // The same bytes atomcache would store for this value.
        let bytes: Arc<[u8]> = rt
            .block_on(server.get_raw(cache.key("0").value()))
            .expect("warm value")
            .into();
        Rc::new(move |iters| {
            let (conn, fresh, bytes) = (conn.clone(), fresh.clone(), bytes.clone());
            timed(&rt, iters, move |_| {
                let (mut conn, bytes) = (conn.clone(), bytes.clone());
                let key = format!("raw-miss:{}", fresh.fetch_add(1, Ordering::Relaxed));
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    assert!(v.is_none(), "a fresh key hit");
                    let () = redis::cmd("SET")
                        .arg(&key)
                        .arg(&*bytes)
                        .arg("PX")
                        .arg(MISS_EXP.as_millis() as u64)
                        .query_async(&mut conn)
                        .await
                        .expect("raw SET");
                }
            })
        })
    };

    let levels: Vec<(usize, [(&str, Timed); 3])> = LEVELS
        .iter()
        .map(|&n| {
            (
                n,
                [
                    (RAW, raw_at(n)),
                    (DISTINCT, atomcache_at(n, false)),
                    (ONE_KEY, atomcache_at(n, true)),
                ],
            )
        })
        .collect();
    let miss = [(GET_SET, miss_raw), (MISS, miss_atomcache)];

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    for (n, contenders) in &levels {
        let mut group = c.benchmark_group(format!("scaling/{n} callers"));
        group.throughput(Throughput::Elements(*n as u64));
        for (id, timed) in contenders {
            group.bench_function(*id, |b| b.iter_custom(|iters| timed(iters)));
        }
        group.finish();
    }
    {
        let mut group = c.benchmark_group("scaling/miss");
        for (id, timed) in &miss {
            group.bench_function(*id, |b| b.iter_custom(|iters| timed(iters)));
        }
        group.finish();
    }
    c.final_summary();

    let rounds = if quick() { 3 } else { 11 };
    println!();
    println!("### Scenario 4: hit throughput by concurrent callers (interleaved A/B, median of {rounds} rounds)");
    println!();
    println!("| callers | redis GET | atomcache, distinct keys | ratio (time) | atomcache, one key | ratio (time) |");
    println!("|---|---|---|---|---|---|");
    for (n, contenders) in &levels {
        let mut p = Paired::new();
        for (id, timed) in contenders {
            p.add(*id, timed.clone());
        }
        // Rounds of about the same number of operations at every level.
        let iters = (4_000 / *n as u64).max(20);
        let m = p.run(rounds, iters);
        if *n == 1 {
            warn_bimodal(&m, &[RAW, DISTINCT, ONE_KEY]);
        }
        let per_op = |name: &str| m.get(name) / *n as f64;
        let ops = |name: &str| format!("{:.0} ops/s", 1e9 / per_op(name));
        println!(
            "| {n} | {} | {} | **{:.2}×** | {} | **{:.2}×** |",
            ops(RAW),
            ops(DISTINCT),
            per_op(DISTINCT) / per_op(RAW),
            ops(ONE_KEY),
            per_op(ONE_KEY) / per_op(RAW),
        );
    }
    let mut p = Paired::new();
    for (id, timed) in &miss {
        p.add(*id, timed.clone());
    }
    let m = p.run(rounds, 1_000);
    print_ratios(
        "Scenario 4: cost of a miss (GET, lock, store + unlock + notify) / GET + SET",
        &m,
        &[Row::new(
            "sequential miss, fresh key each call",
            MISS,
            GET_SET,
        )],
    );
    println!(
        "a miss costs {} more than GET + SET; stats: {:?}",
        fmt_ns(m.get(MISS) - m.get(GET_SET)),
        miss_cache.stats()
    );
    drop(server);
}
