//! An axum service whose endpoints answer from atomcache, with ETag / 304 / max-age and an
//! opt-in `Cache-Control: no-cache`.
//!
//! ```text
//! cargo run --example service                         # embedded memory backend, port 3000
//! REDIS_URL=redis://127.0.0.1:6379/ PORT=3001 cargo run --example service
//! REDIS_CLUSTER=redis://127.0.0.1:7000/,redis://127.0.0.1:7001/ cargo run --example service
//! REDIS_SENTINELS=redis://127.0.0.1:26379/,redis://127.0.0.1:26380/ REDIS_SENTINEL_SERVICE=cache \
//!     cargo run --example service
//! ```
//!
//! Endpoints:
//! - `GET /resources?offset=0&items=3` — a slow (500 ms) query, cached 60 s; honours `no-cache`.
//! - `GET /rates` — an `auto_refresh` value (10 s lifetime), recomputed in the background
//!   before it expires, so readers never wait for it.
//!
//! Each computation prints a line, so with two replicas on one Redis you can watch a value being
//! computed by exactly one of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomcache::http::{CachedResponse, HttpCache};
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resource {
    id: u32,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rates {
    computed_at_ms: u64,
    eur_usd: f64,
}

#[derive(Debug, Deserialize)]
struct Page {
    offset: u32,
    items: u32,
}

fn replica() -> String {
    std::env::var("PORT").unwrap_or_else(|_| "3000".into())
}

/// The slow query: 500 ms per page.
#[atomcache::cached(exp = 60, lock_timeout = 5)]
async fn resources(offset: u32, items: u32) -> Vec<Resource> {
    println!(
        "[replica {}] computing resources({offset}, {items})",
        replica()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    (offset..offset.saturating_add(items.min(1000)))
        .map(|id| Resource {
            id,
            name: format!("resource-{id}"),
        })
        .collect()
}

static RATE_TICKS: AtomicU64 = AtomicU64::new(0);

/// Kept fresh in the background by one replica at a time.
#[atomcache::cached(exp = 10, lock_timeout = 2, auto_refresh)]
async fn exchange_rates() -> Rates {
    let tick = RATE_TICKS.fetch_add(1, Ordering::Relaxed);
    println!("[replica {}] computing exchange_rates", replica());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let computed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Rates {
        computed_at_ms,
        eur_usd: 1.08 + (tick % 10) as f64 / 1000.0,
    }
}

async fn get_resources(http: HttpCache, Query(page): Query<Page>) -> CachedResponse<Vec<Resource>> {
    http.honor_no_cache()
        .wrap(resources(page.offset, page.items))
        .await
}

async fn get_rates(http: HttpCache) -> CachedResponse<Rates> {
    http.wrap(exchange_rates()).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("atomcache=info")
        .init();

    // A variable set but empty means "not set".
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let list = |urls: &str| -> Vec<String> { urls.split(',').map(str::to_owned).collect() };
    let hosts = |urls: &[String]| -> String {
        let shown: Vec<String> = urls.iter().map(|u| without_password(u)).collect();
        shown.join(", ")
    };
    let runtime = if let Some(urls) = var("REDIS_CLUSTER") {
        let urls = list(&urls);
        println!(
            "[replica {}] backend: Redis Cluster at {}",
            replica(),
            hosts(&urls)
        );
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        atomcache::init(atomcache::RedisBackend::connect_cluster(&urls).await?).await?
    } else if let Some(urls) = var("REDIS_SENTINELS") {
        let service = var("REDIS_SENTINEL_SERVICE").unwrap_or_else(|| "mymaster".to_owned());
        let urls = list(&urls);
        println!(
            "[replica {}] backend: the primary of {service:?} named by the sentinels at {}",
            replica(),
            hosts(&urls)
        );
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        atomcache::init(atomcache::RedisBackend::connect_sentinel(&urls, &service).await?).await?
    } else {
        match var("REDIS_URL") {
            Some(url) => {
                println!(
                    "[replica {}] backend: Redis at {}",
                    replica(),
                    without_password(&url)
                );
                atomcache::init(atomcache::RedisBackend::connect(&url).await?).await?
            }
            None => {
                println!(
                    "[replica {}] backend: embedded memory (set REDIS_URL to share one Redis)",
                    replica()
                );
                atomcache::init(atomcache::MemoryBackend::new()).await?
            }
        }
    };

    let app = Router::new()
        .route("/resources", get(get_resources))
        .route("/rates", get(get_rates));
    let addr: SocketAddr = ([127, 0, 0, 1], replica().parse()?).into();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("[replica {}] listening on http://{addr}", replica());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    runtime.shutdown().await;
    Ok(())
}

/// The URL without its user and password, for the logs.
fn without_password(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}
