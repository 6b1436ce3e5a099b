//! atomcache in one screen: a slow function called twice, the second call served from the
//! cache; a stampede of 100 concurrent callers computing once.
//!
//! Runs on the embedded memory backend, no Redis needed:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `REDIS_URL=redis://127.0.0.1:6379/` set, it runs against that Redis instead (start it
//! twice at once to see one replica compute and the other wait for it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

static COMPUTATIONS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Item {
    id: u32,
    name: String,
}

/// A slow query: half a second per page.
#[atomcache::cached(exp = 600, lock_timeout = 5)]
async fn resources(offset: u32, items: u32) -> Vec<Item> {
    COMPUTATIONS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    (offset..offset + items)
        .map(|id| Item {
            id,
            name: format!("item-{id}"),
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), atomcache::Error> {
    tracing_subscriber::fmt()
        .with_env_filter("atomcache=warn")
        .init();

    // `REDIS_URL=` (set but empty) means "not set".
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    let runtime = match redis_url {
        Some(url) => {
            println!("backend: Redis at {}", without_password(&url));
            Some(atomcache::init(atomcache::RedisBackend::connect(&url).await?).await?)
        }
        None => {
            println!("backend: embedded memory (set REDIS_URL to use Redis)");
            None
        }
    };

    let started = Instant::now();
    let first = resources(0, 3).await;
    println!(
        "first call:  {:>7.1?}  {} items",
        started.elapsed(),
        first.len()
    );

    let started = Instant::now();
    let second = resources(0, 3).await;
    println!("second call: {:>7.1?}  (from the cache)", started.elapsed());
    assert_eq!(first, second);

    // A stampede on a cold key: 100 concurrent callers, one computation.
    let before = COMPUTATIONS.load(Ordering::SeqCst);
    let started = Instant::now();
    let pages: Vec<_> = (0..100).map(|_| tokio::spawn(resources(100, 10))).collect();
    for page in pages {
        page.await.expect("caller panicked");
    }
    println!(
        "stampede:    {:>7.1?}  100 callers, {} computation(s)",
        started.elapsed(),
        COMPUTATIONS.load(Ordering::SeqCst) - before
    );

    // The direct API, for code that is not one function.
    let rates = atomcache::Cache::builder("quickstart::rates")
        .exp(Duration::from_secs(60))
        .build()?;
    let eur: f64 = rates.get_or_compute("EUR", || async { 1.08 }).await;
    println!(
        "EUR rate {eur}, lives {:?} more",
        rates.remaining_ttl("EUR").await?.unwrap_or_default()
    );

    if let Some(runtime) = runtime {
        runtime.shutdown().await;
    }
    Ok(())
}

/// The URL without its user and password, for the logs.
fn without_password(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}
