//! One replica of a service, as a separate OS process, for the multi-process stampede tests.
//!
//! ```text
//! replica --url <redis URL or atomcache_tests::spec> --ns stampede --id key --callers 50 \
//!         --compute-ms 250 --lock-timeout-ms 5000 [--exp-ms 60000]
//! ```
//!
//! Protocol on stdio (one line each):
//! - prints `READY` once connected to Redis;
//! - reads the common start instant (Unix milliseconds) from stdin and sleeps until then;
//! - runs `--callers` concurrent `get_or_compute` calls of one key; a computation prints
//!   `COMPUTING <unix_ms>` when it starts, then sleeps `--compute-ms`;
//! - prints `CALL <elapsed_ms> <finished_unix_ms> <value>` per call, then
//!   `DONE computations=<n> hits=<h> coalesced=<c> lock_waits=<w> backend_errors=<e>
//!   own_attempts=<o> max_waits=<m> leases_lost=<l>`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomcache::Cache;
use atomcache_tests::unix_ms;

struct Args {
    url: String,
    ns: String,
    id: String,
    callers: usize,
    compute: Duration,
    lock_timeout: Duration,
    exp: Duration,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        ns: "replica".into(),
        id: "key".into(),
        callers: 1,
        compute: Duration::from_millis(250),
        lock_timeout: Duration::from_secs(5),
        exp: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| panic!("missing value after {flag}"));
        let ms = || Duration::from_millis(value.parse().expect("milliseconds"));
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--ns" => args.ns = value.clone(),
            "--id" => args.id = value.clone(),
            "--callers" => args.callers = value.parse().expect("number of callers"),
            "--compute-ms" => args.compute = ms(),
            "--lock-timeout-ms" => args.lock_timeout = ms(),
            "--exp-ms" => args.exp = ms(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url is required");
    args
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let backend = atomcache_tests::spec::builder(&args.url)
        .connect()
        .await
        .expect("connect to Redis");
    let cache = Cache::builder(args.ns.clone())
        .exp(args.exp)
        .lock_timeout(args.lock_timeout)
        .backend(backend)
        .build()
        .expect("cache settings");
    say("READY");

    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("start instant on stdin");
    let start_ms: f64 = line.trim().parse().expect("start instant (unix ms)");
    let wait = start_ms - unix_ms();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }

    let computations = Arc::new(AtomicUsize::new(0));
    let pid = std::process::id();
    let mut calls = Vec::with_capacity(args.callers);
    for _ in 0..args.callers {
        let cache = cache.clone();
        let id = args.id.clone();
        let computations = computations.clone();
        let compute = args.compute;
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let value: String = cache
                .get_or_compute(&id, || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    say(&format!("COMPUTING {:.3}", unix_ms()));
                    tokio::time::sleep(compute).await;
                    format!("computed-by-pid-{pid}")
                })
                .await;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            (elapsed, unix_ms(), value)
        }));
    }
    for call in calls {
        let (elapsed, finished, value) = call.await.expect("caller task");
        say(&format!("CALL {elapsed:.3} {finished:.3} {value}"));
    }
    let stats = cache.stats();
    say(&format!(
        "DONE computations={} hits={} coalesced={} lock_waits={} backend_errors={} \
         own_attempts={} max_waits={} leases_lost={}",
        computations.load(Ordering::SeqCst),
        stats.hits,
        stats.coalesced,
        stats.lock_waits,
        stats.backend_errors,
        stats.own_attempts,
        stats.max_waits,
        stats.leases_lost
    ));
}
