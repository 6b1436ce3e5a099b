//! Support for the code that `#[cached]` generates. Not public API: no stability promises.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use crate::cache::{Fallible, Optional, Plain};
use crate::codec::{encode_entry, Codec};
use crate::runtime::current_store;
pub use crate::store::Sharing;
use crate::store::{Outcome, Policy};
use crate::{Bincode, Error};

pub use inventory;
pub use serde;

pub use crate::namespaces::NamespaceClaim;
pub use crate::refresh::{AutoRefresh, Recompute, RefreshSpec};

/// The settings of one `#[cached]` function, as a `static`.
pub struct Spec<C: Codec = Bincode> {
    namespace: &'static str,
    policy: Policy,
    codec: PhantomData<fn() -> C>,
    /// Whether another function claims the namespace (see `crate::namespaces`), looked up on
    /// the first call.
    collision: AtomicU8,
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
            collision: AtomicU8::new(crate::namespaces::UNKNOWN),
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

    /// Whether another `#[cached]` function claims this namespace: the calls then bypass the
    /// cache (one atomic load after the first call).
    fn collides(&self) -> bool {
        crate::namespaces::collides(self.namespace, &self.collision)
    }
}

/// The public bounds, under the paths the generated code uses.
pub use crate::value::{CacheArg, CacheValue};

/// Builds the cache id from the (non-skipped) arguments: their JSON encoding, which is the same
/// in every replica of the same build, followed by what its `null`s stand for when one is not a
/// plain `()` (`null~NaN`, `[1,null]~None`; see `crate::id`). `None` (logged) when they do not
/// serialise, e.g. a map with non-string keys; the call then bypasses the cache.
pub fn cache_id<A: Serialize + ?Sized>(args: &A) -> Option<String> {
    build_id(&[IdPart(crate::id::encode(args))])
}

/// One part of a cache id (a type name, a const parameter, an argument or the `key`), already
/// encoded. Encoding each part on its own keeps the compile error about a bad argument on that
/// argument alone.
pub struct IdPart(Result<crate::id::Encoded, serde_json::Error>);

/// Encodes one argument of a `#[cached]` function (or a type name, or a const parameter).
pub fn id_part<T: CacheArg + ?Sized>(value: &T) -> IdPart {
    IdPart(crate::id::encode(value))
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
    IdPart(crate::id::encode(value))
}

/// Joins the parts into the id: exactly [`cache_id`] of the tuple of the parts (`null` for none,
/// the part alone for one, a JSON array for more, each followed by what its `null`s stand for
/// when needed), so ids read the same in `redis-cli` whichever way they were built. `None`
/// (logged) when a part did not serialise; the call then bypasses the cache.
pub fn build_id(parts: &[IdPart]) -> Option<String> {
    let mut encoded = Vec::with_capacity(parts.len());
    for IdPart(part) in parts {
        match part {
            Ok(part) => encoded.push(part),
            Err(err) => {
                tracing::warn!(%err, "arguments did not serialise into a cache id; calling without the cache");
                return None;
            }
        }
    }
    Some(crate::id::join(&encoded))
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
    sharing: Sharing<O>,
    fut: Fut,
) -> O {
    let Some(id) = id.filter(|_| !spec.collides()) else {
        return fut.await; // no id, or a namespace another function claims too
    };
    let store = current_store();
    let key = store.key(spec.namespace, &id);
    store
        .resolve::<C, O, _, _>(&key, spec.policy, sharing, || fut)
        .await
}

/// Chooses what a `#[cached]` function stores by its declared return type `R`, as a type (so
/// aliases such as `type Res<T> = Result<T, MyError>` are seen through, and a user type named
/// `Result` is a plain value). Autoref specialisation: the macro emits
/// `(&&&Dispatch::<R>::new()).call(..)` (and `.recompute(..)` for `auto_refresh`) with the four
/// `Via*` traits in scope, and method resolution takes the first level whose impl applies:
///
/// 1. [`ViaSharedErr`], on `&&Dispatch<Result<T, E>>` with `E: Clone + Send + Sync + 'static`:
///    only `Ok` is stored; an `Err` is shared with the callers waiting on the same computation;
/// 2. [`ViaResult`], on `&Dispatch<Result<T, E>>` (only `Ok` is stored; each waiter runs its own
///    attempt after an `Err`), and [`ViaOption`], on `&Dispatch<Option<T>>` (only `Some` is
///    stored; a `None` is shared);
/// 3. [`ViaPlain`], on `Dispatch<R>`: every value is stored.
///
/// The impls look at the shape of `R` only (and level 1 at `E`): the bounds on the stored value
/// (`T: CacheValue`) are on the methods, so a value that cannot be cached is reported as such, at
/// its `T`, instead of moving the call to another level. The macro calls `check_value` first, so
/// that rustc reports that bound there rather than on `call`'s opaque future type.
pub struct Dispatch<R>(PhantomData<fn() -> R>);

impl<R> Dispatch<R> {
    /// The dispatch for return type `R`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Dispatch(PhantomData)
    }

    /// Checks, by type, that a `cache_none` function returns an `Option` (the macro calls it,
    /// spanned at the flag, so the error points there).
    pub fn cache_none(&self)
    where
        R: CacheNone,
    {
    }
}

/// Level 1: `Result<T, E>` whose `Err` can be shared (see [`Dispatch`]).
pub trait ViaSharedErr<T, E> {
    /// Requires the stored value's bounds, alone: the macro calls it before [`call`](Self::call),
    /// so that rustc reports a value that cannot be cached here (once: the same bound of
    /// `call`, at the same place, is then not reported again).
    fn check_value(&self)
    where
        T: CacheValue,
    {
    }

    /// The cached call: only `Ok` is stored, an `Err` is shared with the waiters.
    fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> impl Future<Output = Result<T, E>>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>>;

    /// The auto-refresh recomputation (`Err` keeps the old value).
    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>> + Send + 'static;
}

impl<T, E: Clone + Send + Sync + 'static> ViaSharedErr<T, E> for &&Dispatch<Result<T, E>> {
    async fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> Result<T, E>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>>,
    {
        run(spec, id, Fallible::SHARING, async { Fallible(fut.await) })
            .await
            .0
    }

    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        recompute(spec, async { Fallible(fut.await) })
    }
}

/// Level 2: any other `Result<T, E>` (see [`Dispatch`]).
pub trait ViaResult<T, E> {
    /// Requires the stored value's bounds, alone: the macro calls it before [`call`](Self::call),
    /// so that rustc reports a value that cannot be cached here (once: the same bound of
    /// `call`, at the same place, is then not reported again).
    fn check_value(&self)
    where
        T: CacheValue,
    {
    }

    /// The cached call: only `Ok` is stored; after an `Err`, each waiter runs its own attempt.
    fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> impl Future<Output = Result<T, E>>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>>;

    /// The auto-refresh recomputation (`Err` keeps the old value).
    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        E: Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static;
}

impl<T, E> ViaResult<T, E> for &Dispatch<Result<T, E>> {
    async fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> Result<T, E>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Result<T, E>>,
    {
        run(spec, id, Sharing::none(), async { Fallible(fut.await) })
            .await
            .0
    }

    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        E: Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        recompute(spec, async { Fallible(fut.await) })
    }
}

/// Level 2: `Option<T>` (see [`Dispatch`]).
pub trait ViaOption<T> {
    /// Requires the stored value's bounds, alone: the macro calls it before [`call`](Self::call),
    /// so that rustc reports a value that cannot be cached here (once: the same bound of
    /// `call`, at the same place, is then not reported again).
    fn check_value(&self)
    where
        T: CacheValue,
    {
    }

    /// The cached call: only `Some` is stored; a `None` is shared with the waiters.
    fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> impl Future<Output = Option<T>>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Option<T>>;

    /// The auto-refresh recomputation (`None` keeps the old value).
    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Option<T>> + Send + 'static;
}

impl<T> ViaOption<T> for &Dispatch<Option<T>> {
    async fn call<C, Fut>(&self, spec: &'static Spec<C>, id: Option<String>, fut: Fut) -> Option<T>
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Option<T>>,
    {
        run(spec, id, Optional::SHARING, async { Optional(fut.await) })
            .await
            .0
    }

    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        T: CacheValue,
        Fut: Future<Output = Option<T>> + Send + 'static,
    {
        recompute(spec, async { Optional(fut.await) })
    }
}

/// Level 3: any other return type, every value stored (see [`Dispatch`]).
pub trait ViaPlain<R> {
    /// Requires the stored value's bounds, alone: the macro calls it before [`call`](Self::call),
    /// so that rustc reports a value that cannot be cached here (once: the same bound of
    /// `call`, at the same place, is then not reported again).
    fn check_value(&self)
    where
        R: CacheValue,
    {
    }

    /// The cached call: every value is stored.
    fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> impl Future<Output = R>
    where
        C: Codec,
        R: CacheValue,
        Fut: Future<Output = R>;

    /// The auto-refresh recomputation.
    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        R: CacheValue,
        Fut: Future<Output = R> + Send + 'static;
}

impl<R> ViaPlain<R> for Dispatch<R> {
    fn call<C, Fut>(
        &self,
        spec: &'static Spec<C>,
        id: Option<String>,
        fut: Fut,
    ) -> impl Future<Output = R>
    where
        C: Codec,
        R: CacheValue,
        Fut: Future<Output = R>,
    {
        call_plain(spec, id, fut)
    }

    fn recompute<C, Fut>(&self, spec: &'static Spec<C>, fut: Fut) -> Recompute
    where
        C: Codec,
        R: CacheValue,
        Fut: Future<Output = R> + Send + 'static,
    {
        recompute_plain(spec, fut)
    }
}

/// The cached path that stores every value: [`ViaPlain`], and `cache_none` (which stores a
/// `None` too) whatever the return type.
pub async fn call_plain<C, T, Fut>(spec: &'static Spec<C>, id: Option<String>, fut: Fut) -> T
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = T>,
{
    run(spec, id, Sharing::none(), async { Plain(fut.await) })
        .await
        .0
}

/// Return types that `cache_none` applies to: `Option<T>`, however it is spelt.
#[diagnostic::on_unimplemented(
    message = "`cache_none` applies to functions returning `Option<T>`: it stores `None` too",
    label = "`{Self}` is not an `Option`",
    note = "remove `cache_none`: without it, a `Result` stores its `Ok` only and any other type every value"
)]
pub trait CacheNone {}

impl<T> CacheNone for Option<T> {}

/// Drops the entry of one call (the generated `*_invalidate` companion).
pub async fn invalidate<C: Codec>(spec: &'static Spec<C>, id: Option<String>) -> Result<(), Error> {
    let Some(id) = id.filter(|_| !spec.collides()) else {
        return Ok(()); // a colliding namespace is not cached
    };
    let store = current_store();
    store.invalidate(&store.key(spec.namespace, &id)).await
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

/// The auto-refresh recomputation that stores every value (see [`call_plain`]).
pub fn recompute_plain<C, T, Fut>(spec: &'static Spec<C>, fut: Fut) -> Recompute
where
    C: Codec,
    T: CacheValue,
    Fut: Future<Output = T> + Send + 'static,
{
    recompute(spec, async { Plain(fut.await) })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

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
        // With `null`s too: the tuple's are its elements', in order.
        let none: Option<u8> = None;
        assert_eq!(
            build_id(&[
                id_part(&7u32),
                id_part(&none),
                id_part(&()),
                id_part(&f64::NAN)
            ]),
            cache_id(&(7u32, none, (), f64::NAN))
        );
        assert_eq!(
            build_id(&[id_part(&()), id_part(&((), [(); 2]))]),
            cache_id(&((), ((), [(); 2])))
        );
    }

    #[test]
    fn a_part_that_does_not_serialise_bypasses_the_cache() {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(build_id(&[id_part(&1u8), id_part(&map)]), None);
    }

    fn id<T: Serialize + ?Sized>(value: &T) -> String {
        cache_id(value).expect("serialises")
    }

    #[test]
    fn ids_without_null_are_the_json_alone() {
        #[derive(Serialize)]
        struct Query<'a> {
            text: &'a str,
            page: u32,
            ratio: f64,
            tags: Vec<&'a str>,
            nested: BTreeMap<&'a str, (i8, char)>,
        }
        #[derive(Serialize)]
        enum Shape {
            Dot,
            Circle(f32),
        }
        let query = Query {
            text: "null \"null\" ~None",
            page: 2,
            ratio: -0.0,
            tags: vec!["null", "~"],
            nested: [("k", (-1, 'n'))].into(),
        };
        let json = serde_json::to_string(&query).unwrap();
        assert_eq!(id(&query), json);
        assert_eq!(
            json,
            r#"{"text":"null \"null\" ~None","page":2,"ratio":-0.0,"tags":["null","~"],"nested":{"k":[-1,"n"]}}"#
        );
        for (value, expected) in [
            (id(&42u64), "42"),
            (id(&1.5f64), "1.5"),
            (id(&f64::MAX), "1.7976931348623157e+308"),
            (id("ada"), "\"ada\""),
            (id(&Some(3u8)), "3"),
            (
                id(&(Shape::Dot, Shape::Circle(0.5))),
                r#"["Dot",{"Circle":0.5}]"#,
            ),
            (
                build_id(&[id_part(&0u32), id_part(&20u32)]).unwrap(),
                "[0,20]",
            ),
        ] {
            assert_eq!(value, expected);
        }
    }

    #[test]
    fn a_function_without_arguments_has_the_id_null() {
        assert_eq!(build_id(&[]).as_deref(), Some("null"));
        assert_eq!(cache_id(&()).as_deref(), Some("null"));
        // Plain units tell nothing apart, so they keep their JSON too.
        #[derive(Serialize)]
        struct Marker;
        assert_eq!(id(&Marker), "null");
        assert_eq!(id(&((), Marker)), "[null,null]");
    }

    #[test]
    fn non_finite_floats_none_and_unit_get_distinct_ids() {
        let ids = [
            id(&f64::NAN),
            id(&f64::INFINITY),
            id(&f64::NEG_INFINITY),
            id(&None::<f64>),
            id(&()),
            id(&Some(f64::NAN)),
            id(&Some(f64::INFINITY)),
            id(&Some(None::<f64>)),
            id(&Some(())),
            id(&-f64::NAN),
            id(&f64::from_bits(0x7ff8_0000_0000_0001)),
        ];
        assert_eq!(
            ids,
            [
                "null~NaN",
                "null~inf",
                "null~-inf",
                "null~None",
                "null",
                "null~Some(NaN)",
                "null~Some(inf)",
                "null~Some(None)",
                "null~Some(())",
                "null~-NaN",
                "null~NaN(0x7ff8000000000001)",
            ]
        );
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        // f32 alike.
        assert_eq!(id(&f32::NAN), "null~NaN");
        assert_eq!(id(&f32::NEG_INFINITY), "null~-inf");
        assert_eq!(id(&f32::from_bits(0xffc0_0001)), "null~NaN(0xffc00001)");
        // A NaN always has the same id (it is not equal to itself, its id is).
        assert_eq!(id(&(0.5, f64::NAN)), id(&(0.5, f64::NAN)));
    }

    #[test]
    fn every_null_is_listed_in_order() {
        #[derive(Serialize)]
        struct Point {
            x: f64,
            label: Option<String>,
            unit: (),
            scores: Vec<Option<f32>>,
            by_name: BTreeMap<String, f64>,
        }
        let point = Point {
            x: f64::INFINITY,
            label: None,
            unit: (),
            scores: vec![Some(1.0), None, Some(f32::NAN)],
            by_name: [("a".to_string(), f64::NEG_INFINITY)].into(),
        };
        assert_eq!(
            id(&point),
            r#"{"x":null,"label":null,"unit":null,"scores":[1.0,null,null],"by_name":{"a":null}}~inf,None,(),None,Some(NaN),-inf"#
        );
        assert_eq!(
            build_id(&[
                id_part(&3u8),
                id_part(&None::<u8>),
                id_part(&f64::NEG_INFINITY)
            ])
            .as_deref(),
            Some("[3,null,null]~None,-inf")
        );
        // The list tells apart values whose JSON is equal.
        assert_ne!(id(&(None::<u8>, ())), id(&((), None::<u8>)));
        assert_ne!(
            id(&vec![None, Some(f64::NAN)]),
            id(&vec![Some(f64::NAN), None])
        );
    }
}
