//! A warm hit in a loop, one contender per run, for instruction counting under callgrind (which
//! counts repeatably on a noisy machine, where timings do not).
//!
//! ```text
//! cargo build --release -p atomcache-bench --bin profile_hit
//! valgrind --tool=callgrind --callgrind-out-file=hit.%p target/release/profile_hit cache 20000
//! ```
//!
//! Contenders: `raw` (redis GET of the same bytes), `cache` (`Cache::get_or_compute` on Redis),
//! `macro` (`#[atomcache::cached]` on the process-wide Redis backend), `memory`
//! (`Cache::get_or_compute` on the memory backend), `moka` (`moka::future::Cache::get`), `key`
//! (`EntryKey::new` alone, and its native time per call).
//! Run each contender twice with different counts; the difference of the totals divided by the
//! difference of the counts is the cost of one hit, without the start-up.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atomcache::{Cache, MemoryBackend, RedisBackend};
use atomcache_bench::{payload, raw_connection, VALUE_LEN};
use atomcache_tests::RedisServer;

static COMPUTATIONS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 3600, lock_timeout = 5)]
async fn hit_value(id: u32) -> String {
    COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    black_box(id);
    payload(VALUE_LEN)
}

fn missed<T>() -> T {
    panic!("a warm key missed")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let contender = args.first().map_or("cache", String::as_str);
    let ops: u64 = args
        .get(1)
        .map_or(Ok(10_000), |n| n.parse())
        .expect("number of hits");
    let server = RedisServer::start();
    let value = payload(VALUE_LEN);
    // Set when the measured loop starts (after the warm-up); its native time is printed.
    let started;
    let redis_cache = || async {
        Cache::builder("profile-hit")
            .exp(Duration::from_secs(3600))
            .backend(RedisBackend::connect(&server.url()).await.expect("connect"))
            .build()
            .expect("cache settings")
    };
    match contender {
        "raw" => {
            let cache = redis_cache().await;
            let v = value.clone();
            let _: String = cache.get_or_compute("0", || async { v }).await;
            let bytes = server
                .get_raw(cache.key("0").value())
                .await
                .expect("stored");
            server.set_raw("raw:0", &bytes, None).await;
            let mut conn = raw_connection(&server.url()).await;
            started = std::time::Instant::now();
            for _ in 0..ops {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg("raw:0")
                    .query_async(&mut conn)
                    .await
                    .expect("GET");
                black_box(v.unwrap_or_else(missed));
            }
        }
        "cache" => {
            let cache = redis_cache().await;
            let v = value.clone();
            let _: String = cache.get_or_compute("0", || async { v }).await;
            started = std::time::Instant::now();
            for _ in 0..ops {
                let v: String = cache.get_or_compute("0", || async { missed() }).await;
                black_box(v);
            }
        }
        "macro" => {
            let backend = RedisBackend::connect(&server.url()).await.expect("connect");
            let installed = atomcache::init(backend).await.expect("init");
            black_box(hit_value(0).await);
            started = std::time::Instant::now();
            for _ in 0..ops {
                black_box(hit_value(0).await);
            }
            assert_eq!(
                COMPUTATIONS.load(Ordering::SeqCst),
                1,
                "a warm call computed"
            );
            installed.shutdown().await;
        }
        "memory" => {
            let cache = Cache::builder("profile-hit")
                .exp(Duration::from_secs(3600))
                .backend(MemoryBackend::new())
                .build()
                .expect("cache settings");
            let v = value.clone();
            let _: String = cache.get_or_compute("0", || async { v }).await;
            started = std::time::Instant::now();
            for _ in 0..ops {
                let v: String = cache.get_or_compute("0", || async { missed() }).await;
                black_box(v);
            }
        }
        "moka" => {
            let moka: moka::future::Cache<String, String> = moka::future::Cache::builder()
                .time_to_live(Duration::from_secs(3600))
                .build();
            moka.insert("0".to_owned(), value.clone()).await;
            started = std::time::Instant::now();
            for _ in 0..ops {
                black_box(moka.get("0").await.unwrap_or_else(missed));
            }
        }
        "key" => {
            // Not a hit: only the naming of an entry (SHA-256 of namespace and id, then the
            // key string), timed natively too, since callgrind's CPU has no SHA extensions.
            started = std::time::Instant::now();
            for i in 0..ops {
                black_box(atomcache::EntryKey::new(
                    black_box("atomcache:"),
                    black_box("profile-hit"),
                    black_box(if i % 2 == 0 { "0" } else { "1" }),
                ));
            }
        }
        other => panic!("unknown contender {other} (raw, cache, macro, memory, moka, key)"),
    }
    println!(
        "{contender}: {:.0} ns per call (native, {ops} calls)",
        started.elapsed().as_secs_f64() * 1e9 / ops as f64
    );
    drop(server);
}
