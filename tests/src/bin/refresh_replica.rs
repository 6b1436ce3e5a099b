//! One replica of the auto-refresh test: installs a Redis backend (which starts the refresher of
//! `ticker`), then reads `ticker()` in a loop for a while and prints what it saw.
//!
//! Usage: `refresh_replica <redis-url> <start-unix-ms> <read-for-ms>`
//! Prints one line: `computations=N reads=N distinct=N p50_us=N p99_us=N max_us=N`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);

/// A value that changes at every computation: the wall-clock millisecond it was computed at.
#[atomcache::cached(
    exp = 2,
    lock_timeout = 1,
    auto_refresh,
    namespace = "refresh_replica::ticker"
)]
async fn ticker() -> u64 {
    COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, start_ms, read_ms] = args.as_slice() else {
        return Err("usage: refresh_replica <redis-url> <start-unix-ms> <read-for-ms>".into());
    };
    let start_ms: u64 = start_ms.parse()?;
    let read_for = Duration::from_millis(read_ms.parse()?);

    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms))).await;

    let runtime = atomcache::init(atomcache::RedisBackend::connect(url).await?).await?;
    // The first value: filled by one refresher (or by this read, under the lock).
    ticker().await;

    let mut latencies = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let until = Instant::now() + read_for;
    while Instant::now() < until {
        let started = Instant::now();
        let value = ticker().await;
        latencies.push(started.elapsed());
        seen.insert(value);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runtime.shutdown().await;

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_micros();
    println!(
        "computations={} reads={} distinct={} p50_us={} p99_us={} max_us={}",
        COMPUTATIONS.load(Ordering::SeqCst),
        latencies.len(),
        seen.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
