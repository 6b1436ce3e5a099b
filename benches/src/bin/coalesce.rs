//! Scenario 3: in-process coalescing. 10 000 concurrent callers of one cold key in one process;
//! how many Redis commands reach the server (`INFO commandstats` of the bench's own server,
//! reset before and read after), for atomcache and for the `cached` crate's Redis-backed
//! `#[concurrent_cached]` on the same workload.
//!
//! ```text
//! cargo run --release -p atomcache-bench --bin coalesce [-- --callers 10000 --compute-ms 50]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use atomcache::{Cache, RedisBackend};
use atomcache_bench::print_header;
use atomcache_tests::{CommandStats, RedisServer};

static CACHED_COMPUTATIONS: AtomicUsize = AtomicUsize::new(0);
static COMPUTE: OnceLock<Duration> = OnceLock::new();
static URL: OnceLock<String> = OnceLock::new();
/// Commands the bench itself sends to read and reset the statistics.
const OWN: [&str; 2] = ["info", "config"];

#[derive(Debug)]
struct BenchError(#[allow(dead_code)] String);

/// The `cached` crate's Redis-backed memoization: no lock, so every caller that misses computes
/// and writes.
#[cached::macros::concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "cached::AsyncRedisCache<String, String>",
    create = r##"{
        cached::AsyncRedisCache::builder("atomcache-bench-coalesce")
            .ttl(Duration::from_secs(60))
            .connection_string(URL.get().expect("url"))
            .build()
            .await
            .expect("cached's AsyncRedisCache")
    }"##
)]
async fn cached_crate(id: String) -> Result<String, BenchError> {
    if id != "warm-up" {
        CACHED_COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(*COMPUTE.get().expect("compute time")).await;
    Ok(format!("value of {id}"))
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        })
}

/// What "a handful" of commands means for the goal: the server-side count, scripts included.
const HANDFUL: u64 = 10;

struct Run {
    computations: usize,
    commands: CommandStats,
    elapsed: Duration,
}

async fn atomcache_round(
    server: &RedisServer,
    cache: &Cache,
    id: &'static str,
    callers: usize,
    compute: Duration,
) -> Run {
    let computations = Arc::new(AtomicUsize::new(0));
    server.reset_stats().await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, computations) = (cache.clone(), computations.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute(id, || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(compute).await;
                        format!("value of {id}")
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("caller"), format!("value of {id}"));
    }
    Run {
        computations: computations.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
        commands: server.command_stats().await,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let callers = arg("--callers", 10_000) as usize;
    let compute = Duration::from_millis(arg("--compute-ms", 50));
    COMPUTE.set(compute).expect("set once");
    print_header("Scenario 3: in-process coalescing");
    println!(
        "{callers} concurrent callers of one cold key in one process, a {} ms computation",
        compute.as_millis()
    );
    let server = RedisServer::start();
    URL.set(server.url()).expect("set once");

    // atomcache.
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connect to the bench server");
    let cache = Cache::builder("bench-coalesce")
        .exp(Duration::from_secs(60))
        .backend(backend)
        .build()
        .expect("cache settings");
    // First round: Redis has not seen atomcache's scripts yet (EVALSHA answers NOSCRIPT and the
    // client loads them). Second round, another cold key: the steady state.
    let first = atomcache_round(&server, &cache, "cold-1", callers, compute).await;
    let steady = atomcache_round(&server, &cache, "cold-2", callers, compute).await;
    println!("atomcache stats: {:?}", cache.stats());

    // The cached crate: one warm-up call connects its store first.
    cached_crate("warm-up".to_owned())
        .await
        .expect("cached warm-up");
    server.reset_stats().await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| tokio::spawn(cached_crate("cold".to_owned())))
        .collect();
    for task in tasks {
        task.await.expect("caller").expect("cached call");
    }
    let cach = Run {
        computations: CACHED_COMPUTATIONS.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
        commands: server.command_stats().await,
    };

    let total = |r: &Run| r.commands.total_excluding(&OWN);
    let breakdown = |r: &Run| {
        r.commands
            .calls
            .iter()
            .filter(|(name, _)| !OWN.iter().any(|o| name.starts_with(o)))
            .map(|(name, n)| format!("{} {n}", name.replace('|', "/")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!("### Scenario 3: {callers} concurrent callers of one cold key, one process");
    println!();
    println!("| contender | computations | Redis commands (server-side, incl. inside scripts) | breakdown | wall time |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        (
            "atomcache `Cache::get_or_compute`, first use (scripts not loaded yet)",
            &first,
        ),
        ("atomcache `Cache::get_or_compute`, steady state", &steady),
        (
            "cached 4.1 `#[concurrent_cached]` + `AsyncRedisCache`",
            &cach,
        ),
    ] {
        println!(
            "| {name} | {} | **{}** | {} | {:.0} ms |",
            r.computations,
            total(r),
            breakdown(r),
            r.elapsed.as_secs_f64() * 1000.0
        );
    }
    println!();
    let evalsha = steady.commands.get("evalsha");
    let client = evalsha + 1;
    println!(
        "ratio of commands, atomcache (steady state) / cached: {:.4}× ({} vs {})",
        total(&steady) as f64 / total(&cach).max(1) as f64,
        total(&steady),
        total(&cach),
    );
    println!(
        "steady state: {client} round trips from the client (1 GET + {evalsha} EVALSHA); the other {} commands run inside those scripts",
        total(&steady).saturating_sub(client)
    );
    println!(
        "goal: a handful (at most {HANDFUL} commands reach Redis for {callers} callers): {}",
        if total(&steady) <= HANDFUL && steady.computations == 1 {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(server);
}
