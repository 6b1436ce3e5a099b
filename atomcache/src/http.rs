//! HTTP caching semantics for cached values: a weak `ETag`, `304 Not Modified` for a matching
//! `If-None-Match`, `Cache-Control: max-age=<remaining lifetime>`, and an opt-in
//! `Cache-Control: no-cache` bypass.
//!
//! [`HttpCache`] wraps one cached call — a `#[cached]` function or a [`Cache`](crate::Cache)
//! method — and turns its value into a [`CachedResponse`]. It works through a task-local request
//! scope: the first cached call made inside [`HttpCache::wrap`] reports the stored bytes (for
//! the ETag) and its lifetime (for `max-age`), and, when the request asked for `no-cache` and
//! the endpoint honours it, is answered with a value computed after the request started.
//! Cached calls nested inside that computation behave normally.
//!
//! With the `axum` feature, `HttpCache` is an extractor and `CachedResponse<T>` a response
//! (JSON body):
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use atomcache::http::{CachedResponse, HttpCache};
//! use axum::{extract::Path, routing::get, Router};
//!
//! #[atomcache::cached(exp = 60, lock_timeout = 5)]
//! async fn item(id: u32) -> String {
//!     format!("item {id}")
//! }
//!
//! async fn get_item(http: HttpCache, Path(id): Path<u32>) -> CachedResponse<String> {
//!     // `honor_no_cache()` lets clients force a recomputation with `Cache-Control: no-cache`.
//!     http.honor_no_cache().wrap(item(id)).await
//! }
//!
//! let app: Router = Router::new().route("/items/{id}", get(get_item));
//! # }
//! ```
//!
//! `no-cache` is opt-in per endpoint because any client could otherwise force recomputations of
//! an expensive value. When it is honoured, concurrent bypassing requests for one entry are
//! still coalesced (in the process and, through the lease, across replicas) and the fresh value
//! is stored for everyone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::codec::{read_meta, HEADER_LEN};
use crate::key::push_hex;

tokio::task_local! {
    static REQUEST: Arc<RequestScope>;
}

/// What one wrapped call reports back.
#[derive(Debug, Clone)]
struct Captured {
    raw: Arc<[u8]>,
    exp: Duration,
}

/// The task-local state of one [`HttpCache::wrap`].
#[derive(Debug)]
pub(crate) struct RequestScope {
    fresh_since: Option<SystemTime>,
    claimed: AtomicBool,
    captured: Mutex<Option<Captured>>,
}

impl RequestScope {
    pub(crate) fn fresh_since(&self) -> Option<SystemTime> {
        self.fresh_since
    }

    pub(crate) fn record(&self, raw: Option<Arc<[u8]>>, exp: Duration) {
        let captured = raw.map(|raw| Captured { raw, exp });
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = captured;
    }
}

/// The scope of the first cached call inside a [`HttpCache::wrap`]; `None` elsewhere and for
/// nested calls.
pub(crate) fn claim() -> Option<Arc<RequestScope>> {
    REQUEST
        .try_with(|scope| scope.clone())
        .ok()
        .filter(|scope| !scope.claimed.swap(true, Ordering::AcqRel))
}

/// The caching headers of one request and what the endpoint allows.
///
/// ```
/// use atomcache::http::HttpCache;
///
/// let http = HttpCache::from_header_values(Some("W/\"abc\""), Some("no-cache"));
/// assert!(http.requested_no_cache());
/// assert!(!http.wants_fresh(), "no-cache is ignored unless the endpoint opts in");
/// assert!(http.honor_no_cache().wants_fresh());
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpCache {
    if_none_match: Option<String>,
    no_cache: bool,
    honor_no_cache: bool,
}

impl HttpCache {
    /// Builds from the raw values of the `If-None-Match` and `Cache-Control` request headers.
    pub fn from_header_values(if_none_match: Option<&str>, cache_control: Option<&str>) -> Self {
        let no_cache = cache_control.is_some_and(|value| {
            value
                .split(',')
                .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"))
        });
        HttpCache {
            if_none_match: if_none_match.map(str::to_owned),
            no_cache,
            honor_no_cache: false,
        }
    }

    /// Lets `Cache-Control: no-cache` force a fresh value for this endpoint.
    pub fn honor_no_cache(mut self) -> Self {
        self.honor_no_cache = true;
        self
    }

    /// Whether the request carried `Cache-Control: no-cache`.
    pub fn requested_no_cache(&self) -> bool {
        self.no_cache
    }

    /// Whether the wrapped call will be answered with a fresh value.
    pub fn wants_fresh(&self) -> bool {
        self.no_cache && self.honor_no_cache
    }

    /// Runs one cached call and builds the response: its value, a weak ETag of the stored
    /// bytes, `max-age` from the entry's remaining lifetime, and whether the client's copy is
    /// current (`304`). A call that stored nothing (e.g. returned `Err`) gets no ETag.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use atomcache::http::HttpCache;
    ///
    /// let cache = atomcache::Cache::new("http-doc");
    /// let first = HttpCache::default().wrap(cache.get_or_compute("a", || async { 7u32 })).await;
    /// let etag = first.etag().unwrap().to_owned();
    /// assert!(etag.starts_with("W/\""));
    /// assert!(first.max_age().unwrap() <= cache.exp());
    ///
    /// let again = HttpCache::from_header_values(Some(&etag), None)
    ///     .wrap(cache.get_or_compute("a", || async { 7u32 }))
    ///     .await;
    /// assert!(again.is_not_modified());
    /// # }
    /// ```
    pub async fn wrap<T, Fut: Future<Output = T>>(&self, call: Fut) -> CachedResponse<T> {
        let fresh_since = self.wants_fresh().then(now_millis);
        let scope = Arc::new(RequestScope {
            fresh_since,
            claimed: AtomicBool::new(false),
            captured: Mutex::new(None),
        });
        let value = REQUEST.scope(scope.clone(), call).await;
        let captured = scope
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (etag, max_age) = match captured {
            Some(Captured { raw, exp }) => (Some(weak_etag(&raw)), Some(remaining(&raw, exp))),
            None => (None, None),
        };
        let not_modified = match (&etag, &self.if_none_match) {
            (Some(etag), Some(header)) => etag_matches(header, etag),
            _ => false,
        };
        CachedResponse {
            value,
            etag,
            max_age,
            not_modified,
        }
    }
}

/// Now, truncated to the millisecond resolution of the entry header.
fn now_millis() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `W/"<32 hex digits>"` over the payload (not the header), so the tag is the same in every
/// replica and across refreshes that produce the same value, and changes when the value does.
fn weak_etag(raw: &[u8]) -> String {
    let payload = raw.get(HEADER_LEN..).unwrap_or(raw);
    let digest = Sha256::digest(payload);
    let mut tag = String::with_capacity(36);
    tag.push_str("W/\"");
    push_hex(&mut tag, &digest[..16]);
    tag.push('"');
    tag
}

/// Remaining lifetime from the header's written-at and the entry's `exp` (no round trip).
fn remaining(raw: &[u8], exp: Duration) -> Duration {
    let written_at = (raw.len() >= HEADER_LEN).then(|| read_meta(raw).written_at);
    match written_at.and_then(|w| SystemTime::now().duration_since(w).ok()) {
        Some(age) => exp.saturating_sub(age),
        None => exp,
    }
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal to ours ignoring `W/`.
fn etag_matches(header: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == ours)
}

/// A cached value with its HTTP caching headers; see [`HttpCache::wrap`].
///
/// With the `axum` feature it is a response: `200` with a JSON body, or `304` with no body,
/// both with `ETag` and `Cache-Control: max-age=N` when the value came from (or went into) the
/// cache.
#[derive(Debug, Clone)]
pub struct CachedResponse<T> {
    value: T,
    etag: Option<String>,
    max_age: Option<Duration>,
    not_modified: bool,
}

impl<T> CachedResponse<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, by value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The weak ETag of the stored value.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Remaining lifetime of the stored value.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether the client's `If-None-Match` matches: answer `304` with no body.
    pub fn is_not_modified(&self) -> bool {
        self.not_modified
    }

    /// The `Cache-Control` header value: `max-age=<whole seconds left>`, or `no-store` when
    /// nothing was cached.
    pub fn cache_control(&self) -> String {
        match self.max_age {
            Some(age) => format!("max-age={}", age.as_secs()),
            None => "no-store".to_owned(),
        }
    }
}

impl<T, E> CachedResponse<Result<T, E>> {
    /// Splits off an error: `Err(e)` of a fallible cached function becomes `Err(e)` (to be
    /// answered by the error's own response), `Ok(v)` a `CachedResponse<v>`.
    pub fn transpose(self) -> Result<CachedResponse<T>, E> {
        let CachedResponse {
            value,
            etag,
            max_age,
            not_modified,
        } = self;
        value.map(|value| CachedResponse {
            value,
            etag,
            max_age,
            not_modified,
        })
    }
}

#[cfg(feature = "axum")]
mod axum_impl {
    use std::convert::Infallible;

    use axum::extract::FromRequestParts;
    use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
    use axum::http::request::Parts;
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde::Serialize;

    use super::{CachedResponse, HttpCache};

    impl<S: Send + Sync> FromRequestParts<S> for HttpCache {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
            };
            Ok(HttpCache::from_header_values(
                header(IF_NONE_MATCH),
                header(CACHE_CONTROL),
            ))
        }
    }

    impl<T: Serialize> IntoResponse for CachedResponse<T> {
        fn into_response(self) -> Response {
            let mut response = if self.not_modified {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                axum::Json(&self.value).into_response()
            };
            let headers = response.headers_mut();
            if let Some(tag) = self
                .etag
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                headers.insert(ETAG, tag);
            }
            if let Ok(value) = HeaderValue::from_str(&self.cache_control()) {
                headers.insert(CACHE_CONTROL, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_is_weak_and_handles_lists() {
        let tag = "W/\"abc\"";
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("\"x\", W/\"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("W/\"abd\"", tag));
        assert!(!etag_matches("", tag));
    }

    #[test]
    fn etag_ignores_the_header_and_follows_the_payload() {
        let a = crate::codec::encode_entry::<crate::Bincode, _>(&1u32, Duration::from_millis(5))
            .unwrap();
        let b = crate::codec::encode_entry::<crate::Bincode, _>(&1u32, Duration::from_millis(9))
            .unwrap();
        let c = crate::codec::encode_entry::<crate::Bincode, _>(&2u32, Duration::from_millis(5))
            .unwrap();
        assert_eq!(weak_etag(&a), weak_etag(&b));
        assert_ne!(weak_etag(&a), weak_etag(&c));
        assert!(remaining(&a, Duration::from_secs(10)) <= Duration::from_secs(10));
        assert!(remaining(&a, Duration::from_secs(10)) > Duration::from_secs(9));
    }

    #[test]
    fn no_cache_is_found_among_directives() {
        assert!(
            HttpCache::from_header_values(None, Some("max-age=0, No-Cache")).requested_no_cache()
        );
        assert!(!HttpCache::from_header_values(None, Some("no-store")).requested_no_cache());
    }

    #[tokio::test]
    async fn nested_cached_calls_do_not_steal_the_scope() {
        let cache = crate::Cache::builder("http-nested")
            .backend(crate::MemoryBackend::new())
            .build()
            .unwrap();
        let inner = cache.clone();
        let response = HttpCache::default()
            .wrap(cache.get_or_compute("outer", || async move {
                inner.get_or_compute("inner", || async { 1u8 }).await + 1
            }))
            .await;
        let outer_raw = cache.entry::<u8>("outer").await.unwrap().unwrap().raw;
        assert_eq!(*response.value(), 2);
        assert_eq!(response.etag(), Some(weak_etag(&outer_raw).as_str()));
    }
}
