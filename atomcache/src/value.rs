//! The bounds `#[cached]` puts on what it stores and on what makes up a cache id, public so that
//! generic functions can name them (and rustc's "consider restricting type parameter" suggests
//! them by these paths).

use serde::{de::DeserializeOwned, Serialize};

/// A value a `#[cached]` function can store: the `T` of `-> T`, `-> Result<T, E>` and
/// `-> Option<T>`. Implemented for every `Serialize + DeserializeOwned + Send + 'static` type:
/// derive `serde::Serialize` and `serde::Deserialize` for your types; borrowed data (`&str`,
/// `Cow<'a, str>`, structs with borrowed fields) cannot be read back from the store, use owned
/// types (`String`, `Vec<T>`).
///
/// Write it as the bound of a generic value type:
///
/// ```
/// #[atomcache::cached(exp = 60)]
/// async fn setting<T: atomcache::CacheValue + Default>(name: String) -> Option<T> {
///     let _ = name;
///     Some(T::default())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(setting::<u32>("retries".into()).await, Some(0));
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: a #[cached] value must be `Serialize + DeserializeOwned + Send + 'static`",
    label = "the value this function stores",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it; it must also be `Send` and own its data (no borrowed fields)"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Send + 'static {}
// Report the missing bound as this trait's message, not serde's.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> CacheValue for T {}

/// An argument that makes up a `#[cached]` function's cache id (the arguments that are not
/// skipped). Implemented for every `Serialize` type, unsized ones included (`str`, `[T]`), so
/// references such as `&str` and `&MyStruct` are fine.
///
/// Write it as the bound of a generic argument:
///
/// ```
/// #[atomcache::cached(exp = 60)]
/// async fn describe<T: atomcache::CacheArg + std::fmt::Debug>(value: T) -> String {
///     format!("{value:?}")
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(describe(7u8).await, "7");
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache id: #[cached] arguments must implement `Serialize`",
    label = "this argument must implement serde's `Serialize`",
    note = "derive `serde::Serialize`, leave the argument out with `skip(..)`, or give a `key = ..` expression"
)]
pub trait CacheArg: Serialize {}
// Report the missing bound as this trait's message, not serde's.
#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> CacheArg for T {}
