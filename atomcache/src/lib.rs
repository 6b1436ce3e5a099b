//! # atomcache
//!
//! Memoize async functions in Redis so that each value is computed **once across all
//! replicas** of a horizontally scaled service, with no cache stampede.
//!
//! A call walks one path: build the cache id → join an identical call already in flight in
//! this process → `GET` → on a miss, look and take the entry's *lease* in one atomic step → the
//! lease holder computes while renewing its lease, then stores the value only if its lease is
//! still current, which wakes the waiters; the other callers, in every replica, wait for that
//! push and read the value. `invalidate` and `set` revoke a lease in flight, so a stale fill is
//! refused; a failed computation answers its waiters at once instead of queueing them behind
//! the next attempt; every wait is bounded (the holder's lease, `max_wait`).
//!
//! The cache never costs the caller its answer: if the store is down, slow, or holds bytes that
//! do not decode, the computation runs and its value is returned (fail-open, logged through
//! `tracing`, counted in [`Stats`]).
//!
//! ## `#[cached]`
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! pub struct Item { pub id: u32 }
//! pub struct Pool; // a client, pool or handle: not part of the cache id
//!
//! /// Computed once per `(offset, items)` across all replicas, for ten minutes.
//! #[atomcache::cached(exp = "10m", lock_timeout = 5, skip(db))]
//! pub async fn resources(db: &Pool, offset: u32, items: u32) -> Result<Vec<Item>, String> {
//!     let _ = db;
//!     Ok((offset..offset + items).map(|id| Item { id }).collect()) // `Err` is not cached
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
//! // No init: the embedded memory backend. In production:
//! // let runtime = atomcache::init(atomcache::RedisBackend::connect("redis://127.0.0.1/").await?).await?;
//! let page = resources(&Pool, 0, 2).await.unwrap();
//! assert_eq!(resources(&Pool, 0, 2).await.unwrap(), page); // from the cache
//! resources_invalidate(0, 2).await?;                       // the generated companion
//! # Ok(()) }
//! ```
//!
//! Options (`exp`, `lock_timeout`, `max_wait`, `auto_refresh`, `namespace`, `key`, `skip`,
//! `cache_none`, `codec`, `invalidate`) are documented on [`cached`].
//!
//! ## The direct API
//!
//! For code that is not one function, e.g. memoizing calls to an external API: [`Cache`].
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
//! let cache = atomcache::Cache::builder("quotes").exp(Duration::from_secs(60)).build()?;
//! let quote = cache.get_or_compute("ACME", || async { 41.5_f64 }).await;
//! assert_eq!(cache.get::<f64>("ACME").await?, Some(quote));
//! # Ok(()) }
//! ```
//!
//! ## Backends
//!
//! [`MemoryBackend`] (embedded, the default before [`init`]), [`RedisBackend`] (feature `redis`,
//! on by default; `rediss://` with feature `tls`, on by default), or your own [`Backend`].
//! HTTP helpers for axum are in [`http`] (feature `axum`).
#![warn(missing_docs)]

pub mod backend;
mod cache;
pub mod codec;
mod error;
mod flight;
pub mod http;
mod id;
pub mod key;
mod lease;
mod namespaces;
mod refresh;
mod runtime;
mod stats;
mod store;
mod value;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use atomcache_macros::cached;
pub use backend::breaker::BreakerState;
pub use backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBackendBuilder};
pub use backend::{Backend, Holder, LeaseAttempt, Lookup, Release, Subscription, WakeHub};
pub use cache::{Cache, CacheBuilder, Entry, DEFAULT_EXP, DEFAULT_LOCK_TIMEOUT};
#[cfg(feature = "json")]
pub use codec::Json;
pub use codec::{Bincode, Codec, CodecError, EntryMeta};
pub use error::Error;
pub use key::EntryKey;
pub use runtime::{init, shutdown, Runtime};
pub use stats::Stats;
pub use store::Outcome;
pub use value::{CacheArg, CacheValue};
