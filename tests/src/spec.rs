//! Which Redis a replica process connects to, as one command-line string:
//!
//! - `redis://127.0.0.1:6379/` — one server;
//! - `cluster:redis://127.0.0.1:7000/,redis://127.0.0.1:7001/` — a Redis Cluster (seed nodes);
//! - `sentinel:<service>@redis://127.0.0.1:26379/,redis://127.0.0.1:26380/` — the primary of a
//!   Sentinel-managed set.

use atomcache::{RedisBackend, RedisBackendBuilder};

/// The spec of a Redis Cluster with these seed URLs.
pub fn cluster_spec(urls: &[String]) -> String {
    format!("cluster:{}", urls.join(","))
}

/// The spec of the primary of `service`, named by these sentinels.
pub fn sentinel_spec(service: &str, sentinel_urls: &[String]) -> String {
    format!("sentinel:{service}@{}", sentinel_urls.join(","))
}

/// A backend builder for `spec` (see the module docs).
///
/// Panics on a malformed spec.
pub fn builder(spec: &str) -> RedisBackendBuilder {
    if let Some(urls) = spec.strip_prefix("cluster:") {
        let urls: Vec<&str> = urls.split(',').collect();
        RedisBackend::cluster_builder(&urls)
    } else if let Some(rest) = spec.strip_prefix("sentinel:") {
        let (service, urls) = rest
            .split_once('@')
            .unwrap_or_else(|| panic!("sentinel spec without `service@`: {spec}"));
        let urls: Vec<&str> = urls.split(',').collect();
        RedisBackend::sentinel_builder(&urls, service)
    } else {
        RedisBackend::builder(spec)
    }
}
