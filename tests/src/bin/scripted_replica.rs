//! One replica of a service as a separate OS process, driven line by line on stdin, for the
//! lease-protocol tests (staggered arrivals, failure bursts, long computations, invalidations,
//! killed holders, frozen Redis). See `atomcache_tests::scripted` for the driver.
//!
//! ```text
//! scripted_replica --url redis://127.0.0.1:6379/ --ns lease --exp-ms 60000 \
//!                  --lock-timeout-ms 1000 [--max-wait-ms 30000] [--command-timeout-ms 1000]
//! ```
//!
//! Prints `READY` once connected. Then reads commands, one per line:
//! - `CALL <tag> <key> <callers> <compute_ms> <ok|err> <start_unix_ms>`: at the start instant,
//!   `<callers>` concurrent `try_get_or_compute` calls of `<key>`; a computation prints
//!   `COMPUTING <tag> <key> <unix_ms>` when it starts and returns `Ok("<pid>:<tag>@<start ms>")`
//!   or `Err("failed:<pid>")` after `<compute_ms>`; each call prints
//!   `RESULT <tag> <key> <started_unix_ms> <elapsed_ms> <ok|err> <value>` when it returns, and
//!   `CALLED <tag>` follows the last one. Commands after a `CALL` run at once (calls run in the
//!   background).
//! - `INVALIDATE <key>` / `SET <key> <value>`: prints `INVALIDATED <key> <started> <returned>`
//!   / `SET <key> <started> <returned>` (Unix ms).
//! - `STATS`: prints `STATS computations=.. hits=.. misses=.. coalesced=.. lock_waits=..
//!   shared_failures=.. own_attempts=.. max_waits=.. leases_lost=.. backend_errors=..`.
//! - `QUIT`: waits for the calls in flight, prints `BYE` and exits.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomcache::Cache;
use atomcache_tests::unix_ms;
use tokio::io::AsyncBufReadExt;

struct Args {
    url: String,
    ns: String,
    exp: Duration,
    lock_timeout: Duration,
    max_wait: Duration,
    command_timeout: Duration,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        ns: "scripted".into(),
        exp: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(1),
        max_wait: Duration::from_secs(30),
        command_timeout: Duration::from_secs(1),
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
            "--exp-ms" => args.exp = ms(),
            "--lock-timeout-ms" => args.lock_timeout = ms(),
            "--max-wait-ms" => args.max_wait = ms(),
            "--command-timeout-ms" => args.command_timeout = ms(),
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

async fn sleep_until_unix_ms(at: f64) {
    let wait = at - unix_ms();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let backend = atomcache_tests::spec::builder(&args.url)
        .command_timeout(args.command_timeout)
        .connect()
        .await
        .expect("connect to Redis");
    let cache = Cache::builder(args.ns.clone())
        .exp(args.exp)
        .lock_timeout(args.lock_timeout)
        .max_wait(args.max_wait)
        .backend(backend)
        .build()
        .expect("cache settings");
    say("READY");

    let computations = Arc::new(AtomicUsize::new(0));
    let pid = std::process::id();
    let mut background = Vec::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.expect("stdin") {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CALL", tag, key, callers, compute_ms, mode, start] => {
                let callers: usize = callers.parse().expect("callers");
                let compute = Duration::from_millis(compute_ms.parse().expect("compute ms"));
                let fail = *mode == "err";
                let start: f64 = start.parse().expect("start unix ms");
                let (tag, key) = (tag.to_string(), key.to_string());
                let cache = cache.clone();
                let computations = computations.clone();
                background.push(tokio::spawn(async move {
                    sleep_until_unix_ms(start).await;
                    let mut calls = Vec::with_capacity(callers);
                    for _ in 0..callers {
                        let (cache, computations) = (cache.clone(), computations.clone());
                        let (tag, key) = (tag.clone(), key.clone());
                        calls.push(tokio::spawn(async move {
                            let started = unix_ms();
                            let result: Result<String, String> = cache
                                .try_get_or_compute(&key, || async {
                                    computations.fetch_add(1, Ordering::SeqCst);
                                    let at = unix_ms();
                                    say(&format!("COMPUTING {tag} {key} {at:.3}"));
                                    tokio::time::sleep(compute).await;
                                    if fail {
                                        Err(format!("failed:{pid}"))
                                    } else {
                                        Ok(format!("{pid}:{tag}@{at:.3}"))
                                    }
                                })
                                .await;
                            let elapsed = unix_ms() - started;
                            let (kind, value) = match result {
                                Ok(v) => ("ok", v),
                                Err(e) => ("err", e),
                            };
                            say(&format!(
                                "RESULT {tag} {key} {started:.3} {elapsed:.3} {kind} {value}"
                            ));
                        }));
                    }
                    for call in calls {
                        call.await.expect("caller task");
                    }
                    say(&format!("CALLED {tag}"));
                }));
            }
            ["INVALIDATE", key] => {
                let started = unix_ms();
                cache.invalidate(key).await.expect("invalidate");
                say(&format!("INVALIDATED {key} {started:.3} {:.3}", unix_ms()));
            }
            ["SET", key, value] => {
                let started = unix_ms();
                cache.set(key, &value.to_string()).await.expect("set");
                say(&format!("SET {key} {started:.3} {:.3}", unix_ms()));
            }
            ["STATS"] => {
                let s = cache.stats();
                say(&format!(
                    "STATS computations={} hits={} misses={} coalesced={} lock_waits={} shared_failures={} own_attempts={} max_waits={} leases_lost={} backend_errors={}",
                    computations.load(Ordering::SeqCst),
                    s.hits,
                    s.misses,
                    s.coalesced,
                    s.lock_waits,
                    s.shared_failures,
                    s.own_attempts,
                    s.max_waits,
                    s.leases_lost,
                    s.backend_errors
                ));
            }
            ["QUIT"] => break,
            [] => {}
            other => panic!("unknown command {other:?}"),
        }
    }
    for task in background {
        task.await.expect("call batch");
    }
    say("BYE");
}
