//! Support for the code that `#[cached]` generates. Not public API: no stability promises.

use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

pub use crate::cache::{Fallible, Optional, Plain};
use crate::codec::{encode_entry, Codec};
use crate::runtime::current_store;
use crate::store::{Outcome, Policy};
use crate::{Bincode, Error};

pub use inventory;
pub use serde;

pub use crate::refresh::{AutoRefresh, Recompute, RefreshSpec};

/// The settings of one `#[cached]` function, as a `static`.
pub struct Spec<C: Codec = Bincode> {
    namespace: &'static str,
    policy: Policy,
    codec: PhantomData<fn() -> C>,
}

impl<C: Codec> Spec<C> {
    /// `exp_ms` and `lock_timeout_ms` are checked by the macro (`0 < lock_timeout < exp`).
    pub const fn new(namespace: &'static str, exp_ms: u64, lock_timeout_ms: u64) -> Self {
        Spec {
            namespace,
            policy: Policy {
                exp: Duration::from_millis(exp_ms),
                lock_timeout: Duration::from_millis(lock_timeout_ms),
                max_wait: crate::store::DEFAULT_MAX_WAIT,
            },
            codec: PhantomData,
        }
    }

    /// `max_wait = ..`: checked by the macro (`0 < max_wait <= MAX_LIFETIME`).
    pub const fn with_max_wait(mut self, max_wait_ms: u64) -> Self {
        self.policy.max_wait = Duration::from_millis(max_wait_ms);
        self
    }

    /// The namespace (by default the function's module path and name).
    pub fn namespace(&self) -> &'static str {
        self.namespace
    }
}

/// Values a `#[cached]` function can return (the cached part of `T`, `Result<T, _>`, `Option<T>`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: a #[cached] value must be `Serialize + DeserializeOwned + Send + 'static`",
    label = "the value this function stores",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it; it must also be `Send` and own its data (no borrowed fields)"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Send + 'static {}
// Report the missing bound as this trait's message, not serde's.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> CacheValue for T {}

/// Arguments that make up a cache id.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache id: #[cached] arguments must implement `Serialize`",
    label = "this argument must implement serde's `Serialize`",
    note = "derive `serde::Serialize`, leave the argument out with `skip(..)`, or give a `key = ..` expression"
)]
pub trait CacheArg: Serialize {}
// Report the missing bound as this trait's message, not serde's.
#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> CacheArg for T {}

/// Builds the cache id from the (non-skipped) arguments: their JSON encoding, which is the same
/// in every replica of the same build. `None` (logged) when they do not serialise, e.g. a map
/// with non-string keys; the call then bypasses the cache.
pub fn cache_id<A: Serialize + ?Sized>(args: &A) -> Option<String> {
    match serde_json::to_string(args) {
        Ok(id) => Some(id),
        Err(err) => {
            tracing::warn!(%err, "arguments did not serialise into a cache id; calling without the cache");
            None
        }
    }
}

/// One part of a cache id (a type name, a const parameter, an argument or the `key`), already
/// encoded. Encoding each part on its own keeps the compile error about a bad argument on that
/// argument alone.
pub struct IdPart(Result<String, serde_json::Error>);

/// Encodes one argument of a `#[cached]` function (or a type name, or a const parameter).
pub fn id_part<T: CacheArg + ?Sized>(value: &T) -> IdPart {
    IdPart(serde_json::to_string(value))
}

/// The value of a `key = ..` expression.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cache id: the `key = ..` expression of #[cached] must implement `Serialize`",
    label = "this expression must implement serde's `Serialize`",
    note = "use a string (`key = format!(..)`), a number, or a tuple of serialisable values"
)]
pub trait CacheKey: Serialize {}
// Report the missing bound as this trait's message, not serde's.
#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> CacheKey for T {}

/// Encodes the `key = ..` expression of a `#[cached]` function.
pub fn key_part<T: CacheKey + ?Sized>(value: &T) -> IdPart {
    IdPart(serde_json::to_string(value))
}

/// Joins the parts into the id: exactly [`cache_id`] of the tuple of the parts (`null` for none,
/// the part alone for one, a JSON array for more), so ids read the same in `redis-cli` whichever
/// way they were built. `None` (logged) when a part did not serialise; the call then bypasses the
/// cache.
pub fn build_id(parts: &[IdPart]) -> Option<String> {
    let mut encoded = Vec::with_capacity(parts.len());
    for IdPart(part) in parts {
        match part {
            Ok(json) => encoded.push(json.as_str()),
            Err(err) => {
                tracing::warn!(%err, "arguments did not serialise into a cache id; calling without the cache");
                return None;
            }
        }
    }
    Some(match encoded.as_slice() {
        [] => "null".to_owned(),
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(",")),
    })
}

/// The namespaces of the registered `auto_refresh` functions (for tests).
#[doc(hidden)]
pub fn registered_namespaces() -> Vec<&'static str> {
    crate::refresh::registered()
        .map(|entry| entry.spec.namespace())
        .collect()
}

/// The recomputation registered for `namespace` by an `auto_refresh` function (for tests).
#[doc(hidden)]
pub fn registered_recompute(namespace: &str) -> Option<fn() -> Recompute> {
    crate::refresh::registered()
        .find(|entry| entry.spec.namespace() == namespace)
        .map(|entry| entry.recompute)
}

async fn run<C: Codec, O: Outcome, Fut: Future<Output = O>>(
    spec: &'static Spec<C>,
    id: Option<String>,
    fut: Fut,
) -> O {
    let Some(id) = id else { return fut.await };
    let store = current_store();
    let key = store.key(spec.namespace, &id);
    store.resolve::<C, O, _, _>(&key, spec.policy, || fut).await
}

/// The cached path for a function returning `T`.
pub async fn call<C, T, Fut>(spec: &'static Spec<C>, id: Option<String>, fut: Fut) -> T
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = T>,
{
    run(spec, id, async { Plain(fut.await) }).await.0
}

/// The cached path for a function returning `Result<T, E>`: only `Ok` is stored.
pub async fn call_result<C, T, E, Fut>(
    spec: &'static Spec<C>,
    id: Option<String>,
    fut: Fut,
) -> Result<T, E>
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = Result<T, E>>,
{
    run(spec, id, async { Fallible(fut.await) }).await.0
}

/// The cached path for a function returning `Option<T>`: only `Some` is stored.
pub async fn call_option<C, T, Fut>(
    spec: &'static Spec<C>,
    id: Option<String>,
    fut: Fut,
) -> Option<T>
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = Option<T>>,
{
    run(spec, id, async { Optional(fut.await) }).await.0
}

/// Drops the entry of one call (the generated `*_invalidate` companion).
pub async fn invalidate<C: Codec>(spec: &'static Spec<C>, id: Option<String>) -> Result<(), Error> {
    let Some(id) = id else { return Ok(()) };
    let store = current_store();
    store.backend.delete(&store.key(spec.namespace, &id)).await
}

impl<C: Codec> RefreshSpec for Spec<C> {
    fn namespace(&self) -> &'static str {
        self.namespace
    }
    fn exp(&self) -> Duration {
        self.policy.exp
    }
    fn lock_timeout(&self) -> Duration {
        self.policy.lock_timeout
    }
}

fn recompute<C, O, Fut>(_spec: &'static Spec<C>, fut: Fut) -> Recompute
where
    C: Codec,
    O: Outcome,
    Fut: Future<Output = O> + Send + 'static,
{
    Box::pin(async move {
        let started = Instant::now();
        let out = fut.await;
        let value = out.cacheable()?;
        match encode_entry::<C, _>(value, started.elapsed()) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::warn!(%err, "refreshed value did not encode; keeping the old one");
                None
            }
        }
    })
}

/// The auto-refresh recomputation of a function returning `T`.
pub fn recompute_plain<C, T, Fut>(spec: &'static Spec<C>, fut: Fut) -> Recompute
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = T> + Send + 'static,
{
    recompute(spec, async { Plain(fut.await) })
}

/// The auto-refresh recomputation of a function returning `Result<T, E>` (`Err` keeps the old value).
pub fn recompute_result<C, T, E, Fut>(spec: &'static Spec<C>, fut: Fut) -> Recompute
where
    C: Codec,
    T: CacheValue,
    E: Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    recompute(spec, async { Fallible(fut.await) })
}

/// The auto-refresh recomputation of a function returning `Option<T>` (`None` keeps the old value).
pub fn recompute_option<C, T, Fut>(spec: &'static Spec<C>, fut: Fut) -> Recompute
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    recompute(spec, async { Optional(fut.await) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_matches_cache_id_of_the_tuple() {
        assert_eq!(build_id(&[]), cache_id(&()));
        assert_eq!(build_id(&[id_part(&7u32)]), cache_id(&7u32));
        assert_eq!(
            build_id(&[id_part(&7u32), id_part("a,b"), id_part(&[1, 2])]),
            cache_id(&(7u32, "a,b", [1, 2]))
        );
        assert_eq!(
            build_id(&[key_part(&(1, "x"))]).as_deref(),
            Some("[1,\"x\"]")
        );
    }

    #[test]
    fn a_part_that_does_not_serialise_bypasses_the_cache() {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(build_id(&[id_part(&1u8), id_part(&map)]), None);
    }
}
