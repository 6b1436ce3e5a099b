//! The auto-refresh registry: `#[cached(auto_refresh)]` functions submit themselves at link time
//! (through `inventory`), and [`init`](crate::init) starts one background task per function that
//! recomputes the value before it expires, under the lock, while readers keep the old value.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The recomputation of one auto-refresh function: the encoded entry (header + payload), or
/// `None` when the output is not cacheable (`Err`, `None`) or did not encode.
pub type Recompute = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'static>>;

/// What the refresher needs to know about a function's settings.
pub trait RefreshSpec: Sync {
    /// The function's namespace.
    fn namespace(&self) -> &'static str;
    /// Value lifetime.
    fn exp(&self) -> Duration;
    /// Longest lock hold.
    fn lock_timeout(&self) -> Duration;
}

/// One registered auto-refresh function.
pub struct AutoRefresh {
    pub(crate) spec: &'static dyn RefreshSpec,
    pub(crate) recompute: fn() -> Recompute,
}

impl AutoRefresh {
    /// Registers `recompute` (which runs the function's body, bypassing the cache) under `spec`.
    pub const fn new(spec: &'static dyn RefreshSpec, recompute: fn() -> Recompute) -> Self {
        AutoRefresh { spec, recompute }
    }
}

inventory::collect!(AutoRefresh);

/// The registered functions, in no particular order.
pub(crate) fn registered() -> impl Iterator<Item = &'static AutoRefresh> {
    inventory::iter::<AutoRefresh>.into_iter()
}

/// Boxes a recomputation that encodes its output with `encode`.
pub(crate) fn boxed<Fut>(fut: Fut) -> Recompute
where
    Fut: Future<Output = Option<Vec<u8>>> + Send + 'static,
{
    Box::pin(fut)
}

/// Cache id of a zero-argument function (the JSON of `()`).
pub(crate) const ZERO_ARG_ID: &str = "null";

/// Hands out the ids used by `#[cached]` for zero-argument functions, so both sides agree.
#[cfg(test)]
mod tests {
    #[test]
    fn zero_arg_id_matches_the_macro_encoding() {
        assert_eq!(
            crate::__private::cache_id(&()).as_deref(),
            Some(super::ZERO_ARG_ID)
        );
    }
}
