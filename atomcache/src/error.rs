//! The one error type of the crate.
//!
//! Most callers never see it: the cached paths (`#[cached]`, [`Cache::get_or_compute`](crate::Cache::get_or_compute))
//! are fail-open and answer with the function's own value when the store misbehaves. The error
//! surfaces from set-up ([`init`](crate::init), [`RedisBackend::connect`](crate::RedisBackend::connect),
//! [`CacheBuilder::build`](crate::CacheBuilder::build)) and from the direct calls that talk to the
//! store ([`Cache::get`](crate::Cache::get), [`Cache::set`](crate::Cache::set), ...).

use std::time::Duration;

/// Everything that can go wrong in atomcache.
///
/// ```
/// let err = atomcache::Cache::builder("demo")
///     .exp(std::time::Duration::from_secs(5))
///     .lock_timeout(std::time::Duration::from_secs(5))
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, atomcache::Error::InvalidConfig(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting was rejected (for example `lock_timeout >= exp`, or a key prefix with `{`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// [`init`](crate::init) was called while a [`Runtime`](crate::Runtime) is still installed.
    #[error("atomcache is already initialised; call Runtime::shutdown first")]
    AlreadyInitialized,
    /// The store did not answer within its timeout.
    #[error("the cache backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The store stopped answering and its circuit breaker is open: calls fail open at once,
    /// without waiting for a timeout, until a probe gets an answer again.
    #[error("the cache backend is not answering (circuit breaker open)")]
    Unavailable,
    /// The store answered with an error or could not be reached.
    #[error("cache backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A value could not be encoded, or stored bytes could not be decoded.
    #[error("codec error: {0}")]
    Codec(#[from] crate::codec::CodecError),
    /// Two `#[cached]` functions of the program have the same namespace, so they would read
    /// each other's values: same-named functions nested in two functions of one module,
    /// same-named associated functions without `self` of two types, or one
    /// `namespace = ".."` given twice. Returned by [`init`](crate::init) and
    /// [`Runtime::detached`](crate::Runtime::detached); the message names the namespace and
    /// each function with its file and line. Until one of them gets its own
    /// `namespace = ".."`, the colliding functions bypass the cache (their body runs on every
    /// call, their `_invalidate` companion does nothing) and the first such call logs the
    /// message through `tracing::error!`.
    ///
    /// ```
    /// mod users {
    ///     #[atomcache::cached(exp = 60, namespace = "users")]
    ///     pub async fn name(id: u32) -> String {
    ///         format!("user {id}")
    ///     }
    /// }
    /// mod teams {
    ///     #[atomcache::cached(exp = 60, namespace = "users")] // copied: should be "teams"
    ///     pub async fn name(id: u32) -> String {
    ///         format!("team {id}")
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = atomcache::init(atomcache::MemoryBackend::new()).await.unwrap_err();
    /// assert!(matches!(err, atomcache::Error::NamespaceCollision(_)));
    /// let message = err.to_string();
    /// assert!(message.contains("same namespace `users`"), "{message}");
    /// assert!(message.contains("give one of them its own `namespace = \"..\"`"));
    /// // Never the other one's value: both bypass the cache.
    /// assert_eq!(users::name(1).await, "user 1");
    /// assert_eq!(teams::name(1).await, "team 1");
    /// # }
    /// ```
    #[error("namespace collision: {0}")]
    NamespaceCollision(String),
}

impl Error {
    /// Wraps any error of a custom [`Backend`](crate::Backend) implementation.
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Backend(err.into())
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        Error::Backend(Box::new(err))
    }
}
