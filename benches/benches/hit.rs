//! Scenario 1: a warm hit, against the raw `redis` GET of the same bytes and, for the memory
//! backend, against `moka::future::Cache::get`.
//!
//! ```text
//! cargo bench -p atomcache-bench --bench hit
//! ```
//!
//! Starts its own redis-server. Criterion prints each contender's time; the ratio tables at the
//! end come from an interleaved A/B run (see `atomcache_bench::Paired`).

use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomcache::{Cache, Codec, MemoryBackend, RedisBackend};
use atomcache_bench::{
    payload, print_header, print_ratios, quick, raw_connection, runtime, timed, timed_callers,
    warn_bimodal, Paired, Row, Timed, VALUE_LEN,
};
use atomcache_tests::RedisServer;
use criterion::{Criterion, Throughput};

/// Concurrent callers of the concurrent variants.
const CALLERS: usize = 64;

/// The function as users write it: `#[atomcache::cached]` on the process-wide Redis backend.
const MACRO: &str = "atomcache #[cached]";
/// The direct API on its own Redis backend (the same `Store::resolve` path, without building
/// the id from the arguments and without the process-wide lookup).
const ATOMCACHE: &str = "atomcache Cache::get_or_compute";
const RAW: &str = "redis GET";
/// What a hand-written cache-aside pays at least: the raw GET, then decoding the same bytes
/// with the same codec (informative; the goal is against the bare GET).
const RAW_DECODE: &str = "redis GET + decode";

/// Computations of [`hit_value`]: 64 during the warm-up, and no more.
static MACRO_COMPUTATIONS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 3600, lock_timeout = 5)]
async fn hit_value(id: u32) -> String {
    MACRO_COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    black_box(id);
    payload(VALUE_LEN)
}

/// The baseline's decode: skip atomcache's header, then the same codec into the same type.
fn decode(bytes: &[u8]) -> String {
    atomcache::Bincode::decode(&bytes[atomcache::codec::HEADER_LEN..]).expect("decodes")
}

fn missed<T>() -> T {
    panic!("a warm key missed: the benchmark would measure computations, not hits")
}

fn main() {
    print_header("Scenario 1: warm hit");
    let server = RedisServer::start();
    let rt = runtime();
    let value = payload(VALUE_LEN);

    // atomcache on Redis, with 64 warm entries "0".."63".
    let cache = rt.block_on(async {
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connect atomcache to the bench server");
        let cache = Cache::builder("bench-hit")
            .exp(Duration::from_secs(3600))
            .backend(backend)
            .build()
            .expect("cache settings");
        for i in 0..CALLERS {
            let v = value.clone();
            let _: String = cache.get_or_compute(&i.to_string(), || async { v }).await;
        }
        cache
    });
    // The macro runs on the process-wide backend: a second connection to the same server.
    let installed = rt.block_on(async {
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connect atomcache to the bench server");
        let installed = atomcache::init(backend).await.expect("init");
        for i in 0..CALLERS {
            black_box(hit_value(i as u32).await);
        }
        installed
    });
    assert_eq!(MACRO_COMPUTATIONS.load(Ordering::SeqCst), CALLERS);
    // The raw baseline reads the very bytes atomcache stored (header + bincode), at raw keys.
    let ids: Arc<Vec<String>> = Arc::new((0..CALLERS).map(|i| i.to_string()).collect());
    let raw_keys: Arc<Vec<String>> = Arc::new((0..CALLERS).map(|i| format!("raw:{i}")).collect());
    let stored_len = rt.block_on(async {
        let mut len = 0;
        for (id, raw_key) in ids.iter().zip(raw_keys.iter()) {
            let bytes = server
                .get_raw(cache.key(id).value())
                .await
                .expect("the warm-up stored a value");
            len = bytes.len();
            server.set_raw(raw_key, &bytes, None).await;
        }
        len
    });
    println!("value: a {VALUE_LEN}-byte String, {stored_len} bytes stored (header + bincode); the raw GET reads the same {stored_len} bytes");
    let conn = rt.block_on(raw_connection(&server.url()));

    // Memory backend vs moka.
    let mem_cache = Cache::builder("bench-mem")
        .exp(Duration::from_secs(3600))
        .backend(MemoryBackend::new())
        .build()
        .expect("cache settings");
    let moka: moka::future::Cache<String, String> = moka::future::Cache::builder()
        .time_to_live(Duration::from_secs(3600))
        .build();
    rt.block_on(async {
        let v = value.clone();
        let _: String = mem_cache.get_or_compute("0", || async { v }).await;
        moka.insert("0".to_owned(), value.clone()).await;
    });

    let seq_raw: Timed = {
        let (rt, conn) = (rt.clone(), conn.clone());
        Rc::new(move |iters| {
            let conn = conn.clone();
            timed(&rt, iters, move |_| {
                let mut conn = conn.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg("raw:0")
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(v.unwrap_or_else(missed));
                }
            })
        })
    };
    let seq_atomcache: Timed = {
        let (rt, cache) = (rt.clone(), cache.clone());
        Rc::new(move |iters| {
            let cache = cache.clone();
            timed(&rt, iters, move |_| {
                let cache = cache.clone();
                async move {
                    let v: String = cache.get_or_compute("0", || async { missed() }).await;
                    black_box(v);
                }
            })
        })
    };
    let seq_macro: Timed = {
        let rt = rt.clone();
        Rc::new(move |iters| {
            timed(&rt, iters, move |_| async move {
                black_box(hit_value(0).await);
            })
        })
    };
    let conc_macro = |one_key: bool| -> Timed {
        let rt = rt.clone();
        Rc::new(move |iters| {
            timed_callers(&rt, iters, CALLERS, move |caller, _| async move {
                let id = if one_key { 0 } else { caller as u32 };
                black_box(hit_value(id).await);
            })
        })
    };
    let seq_raw_decode: Timed = {
        let (rt, conn) = (rt.clone(), conn.clone());
        Rc::new(move |iters| {
            let conn = conn.clone();
            timed(&rt, iters, move |_| {
                let mut conn = conn.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg("raw:0")
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(decode(&v.unwrap_or_else(missed)));
                }
            })
        })
    };
    let conc_raw_decode: Timed = {
        let (rt, conn, keys) = (rt.clone(), conn.clone(), raw_keys.clone());
        Rc::new(move |iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            timed_callers(&rt, iters, CALLERS, move |caller, _| {
                let mut conn = conn.clone();
                let keys = keys.clone();
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[caller])
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(decode(&v.unwrap_or_else(missed)));
                }
            })
        })
    };
    let conc_raw = |one_key: bool| -> Timed {
        let (rt, conn, keys) = (rt.clone(), conn.clone(), raw_keys.clone());
        Rc::new(move |iters| {
            let (conn, keys) = (conn.clone(), keys.clone());
            timed_callers(&rt, iters, CALLERS, move |caller, _| {
                let mut conn = conn.clone();
                let keys = keys.clone();
                async move {
                    let key = &keys[if one_key { 0 } else { caller }];
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .expect("raw GET");
                    black_box(v.unwrap_or_else(missed));
                }
            })
        })
    };
    let conc_atomcache = |one_key: bool| -> Timed {
        let (rt, cache, ids) = (rt.clone(), cache.clone(), ids.clone());
        Rc::new(move |iters| {
            let (cache, ids) = (cache.clone(), ids.clone());
            timed_callers(&rt, iters, CALLERS, move |caller, _| {
                let cache = cache.clone();
                let ids = ids.clone();
                async move {
                    let id = &ids[if one_key { 0 } else { caller }];
                    let v: String = cache.get_or_compute(id, || async { missed() }).await;
                    black_box(v);
                }
            })
        })
    };
    let mem_atomcache: Timed = {
        let (rt, cache) = (rt.clone(), mem_cache.clone());
        Rc::new(move |iters| {
            let cache = cache.clone();
            timed(&rt, iters, move |_| {
                let cache = cache.clone();
                async move {
                    let v: String = cache.get_or_compute("0", || async { missed() }).await;
                    black_box(v);
                }
            })
        })
    };
    let mem_moka: Timed = {
        let (rt, moka) = (rt.clone(), moka.clone());
        Rc::new(move |iters| {
            let moka = moka.clone();
            timed(&rt, iters, move |_| {
                let moka = moka.clone();
                async move {
                    black_box(moka.get("0").await.unwrap_or_else(missed));
                }
            })
        })
    };

    let sequential = [
        (RAW, seq_raw),
        (RAW_DECODE, seq_raw_decode),
        (MACRO, seq_macro),
        (ATOMCACHE, seq_atomcache),
    ];
    let distinct = [
        (RAW, conc_raw(false)),
        (RAW_DECODE, conc_raw_decode),
        (MACRO, conc_macro(false)),
        (ATOMCACHE, conc_atomcache(false)),
    ];
    let one_key = [
        (RAW, conc_raw(true)),
        (MACRO, conc_macro(true)),
        (ATOMCACHE, conc_atomcache(true)),
    ];
    let memory = [
        ("moka::future::Cache::get", mem_moka),
        ("atomcache memory get_or_compute", mem_atomcache),
    ];

    // Criterion: each contender on its own, with its statistics.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    criterion_group(&mut c, "hit/sequential", &sequential, 1);
    criterion_group(&mut c, "hit/64 callers, 64 keys", &distinct, CALLERS);
    criterion_group(&mut c, "hit/64 callers, one key", &one_key, CALLERS);
    criterion_group(&mut c, "hit/memory backend", &memory, 1);
    c.final_summary();

    // Interleaved A/B for the ratios.
    let rounds = if quick() { 3 } else { 15 };
    let seq = paired(&sequential).run(rounds, 2_000);
    let dis = paired(&distinct).run(rounds, 40);
    let one = paired(&one_key).run(rounds, 40);
    let mem = paired(&memory).run(rounds, 100_000);
    print_ratios(
        "Scenario 1: warm hit, atomcache / raw redis GET of the same bytes",
        &seq,
        &[
            Row::new("sequential, one caller", MACRO, RAW).goal(1.10),
            Row::new("sequential, one caller", ATOMCACHE, RAW).goal(1.10),
            Row::new("sequential, one caller", MACRO, RAW_DECODE),
            Row::new("sequential, one caller", RAW_DECODE, RAW),
        ],
    );
    warn_bimodal(&seq, &[RAW, RAW_DECODE, MACRO, ATOMCACHE]);
    print_ratios(
        "Scenario 1: warm hit, 64 concurrent callers",
        &dis,
        &[
            Row::new("64 callers, 64 distinct keys", MACRO, RAW)
                .goal(1.10)
                .ops(CALLERS),
            Row::new("64 callers, 64 distinct keys", ATOMCACHE, RAW)
                .goal(1.10)
                .ops(CALLERS),
            Row::new("64 callers, 64 distinct keys", MACRO, RAW_DECODE).ops(CALLERS),
            Row::new("64 callers, 64 distinct keys", RAW_DECODE, RAW).ops(CALLERS),
        ],
    );
    print_ratios(
        "Scenario 1: warm hit, 64 concurrent callers of one hot key (single flight)",
        &one,
        &[
            Row::new("64 callers, one key", MACRO, RAW)
                .goal(1.10)
                .ops(CALLERS),
            Row::new("64 callers, one key", ATOMCACHE, RAW)
                .goal(1.10)
                .ops(CALLERS),
        ],
    );
    print_ratios(
        "Scenario 1: memory backend hit / moka",
        &mem,
        &[Row::new(
            "sequential, one caller",
            "atomcache memory get_or_compute",
            "moka::future::Cache::get",
        )],
    );
    assert_eq!(
        MACRO_COMPUTATIONS.load(Ordering::SeqCst),
        CALLERS,
        "a warm #[cached] call computed"
    );
    println!("atomcache stats, #[cached]: {:?}", installed.stats());
    println!("atomcache stats, Cache: {:?}", cache.stats());
    rt.block_on(installed.shutdown());
    drop(server);
}

fn paired(contenders: &[(&str, Timed)]) -> Paired {
    let mut p = Paired::new();
    for (name, timed) in contenders {
        p.add(*name, timed.clone());
    }
    p
}

fn criterion_group(c: &mut Criterion, name: &str, contenders: &[(&str, Timed)], ops: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(ops as u64));
    for (id, timed) in contenders {
        group.bench_function(*id, |b| b.iter_custom(|iters| timed(iters)));
    }
    group.finish();
}
