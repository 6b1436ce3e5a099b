//! One replica of the `#[cached]`-on-Redis test: installs a Redis backend, waits for a common
//! start instant, then 32 concurrent callers call a cached function with reference arguments.
//!
//! Usage: `macro_replica <redis-url> <start-unix-ms>`
//! Prints one line: `value=<pid>-<nonce> computations=N callers=N`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    computed_by: u32,
    nonce: u64,
}

/// Who computed it, and a nonce: equal answers everywhere prove one computation.
#[atomcache::cached(exp = 60, lock_timeout = 5, namespace = "macro_replica::quote")]
async fn quote(symbol: &str, days: &[u32]) -> Quote {
    COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    let _ = (symbol, days);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Quote {
        computed_by: std::process::id(),
        nonce,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, start_ms] = args.as_slice() else {
        return Err("usage: macro_replica <redis-url> <start-unix-ms>".into());
    };
    let start_ms: u64 = start_ms.parse()?;
    let runtime = atomcache::init(atomcache::RedisBackend::connect(url).await?).await?;

    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms))).await;

    let callers: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(async {
                let days = vec![1, 2, 3];
                quote("ACME", &days).await
            })
        })
        .collect();
    let mut values = Vec::new();
    for caller in callers {
        values.push(caller.await?);
    }
    if values.iter().any(|v| *v != values[0]) {
        return Err(format!("callers of one process disagree: {values:?}").into());
    }
    runtime.shutdown().await;
    println!(
        "value={}-{} computations={} callers={}",
        values[0].computed_by,
        values[0].nonce,
        COMPUTATIONS.load(Ordering::SeqCst),
        values.len()
    );
    Ok(())
}
