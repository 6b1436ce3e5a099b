//! The `#[cached]` attribute of atomcache. Use it through `atomcache::cached`, which documents
//! it; a crate using it needs no dependency besides `atomcache`.
//!
//! The macro runs in passes, one module each: `args` parses the attribute into a typed model,
//! `item` reads the function (its body stays raw tokens), `validate` checks both and collects
//! span-accurate errors into a plan, `expand` emits the function and its `_invalidate`
//! companion as calls into `atomcache::__private` only, and `fallback` emits, on error, the
//! errors beside the untouched function and a stub companion, so the user sees the attribute's
//! errors and nothing else.

use proc_macro::TokenStream;

mod args;
mod expand;
mod fallback;
mod item;
mod validate;

/// Memoizes an `async fn` in the cache: each value is computed once across all replicas.
///
/// ```ignore
/// #[atomcache::cached(exp = 600, lock_timeout = 5)]
/// pub async fn resources(offset: u32, items: u32) -> Vec<Item> {
///     /* slow */
/// }
/// ```
///
/// A call builds the cache id from the arguments, joins an identical call already in flight in
/// this process, reads the value, and on a miss takes the entry's lease; the holder runs the
/// body and stores its value, every other caller (in every replica) waits for it, for at most
/// `max_wait`. The function keeps its signature, visibility, doc comments and other attributes.
/// If the store fails, the body runs and its value is returned (fail-open).
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `exp = 600` or `exp = "10m"` | **Required.** How long a value lives: whole seconds, or a string of `<number><unit>` with units `ms`, `s`, `m`, `h`, `d` (`"90s"`, `"1h30m"`, `"500ms"`). |
/// | `lock_timeout = 5` or `lock_timeout = "500ms"` | How fast a dead holder is noticed: the caller computing the value holds a lease of this length and renews it every third of it while it computes, so a computation may run longer than `lock_timeout`; if the holder dies, one waiter takes over once the lease lapses. Default 5 s. Must be shorter than `exp`. |
/// | `max_wait = 30` or `max_wait = "2m"` | The longest a caller waits for another caller's computation (the lease holder's, in any replica) before it computes the value itself, without the cache. Default 30 s. |
/// | `auto_refresh` | Recompute the value in the background before it expires, so readers never see a miss. Zero-argument functions only. |
/// | `namespace = "users"` | The namespace of the entries. Default: the module path and the function's name (`my_app::api::resources`). Two functions of a program never share one: when they would (same-named functions nested in two functions of one module, same-named associated functions without `self` of two types, one `namespace` given twice), `atomcache::init` fails with `Error::NamespaceCollision` naming both (file and line), and their calls bypass the cache until one gets its own `namespace`. |
/// | `key = <expr>` | Build the id from this expression of the arguments (any `Serialize` value) instead of from the arguments. |
/// | `skip(a, b)` | Leave these arguments (clients, pools, handles; `self`) out of the id. |
/// | `cache_none` | For `Option<T>`: store `None` too. |
/// | `codec = atomcache::Json` | The format of stored values. Default: `atomcache::Bincode`. |
/// | `invalidate = "forget_user"` or `invalidate = false` | Rename the `_invalidate` companion, or declare none (needed in trait `impl`s). |
///
/// Every option is checked at compile time, with an error at the offending token: a missing
/// `exp`, a duration of zero or longer than 100 years, a `lock_timeout` not shorter than `exp`
/// (mind the 5 s default: `exp = 5` alone is an error), unknown or repeated options, a `skip`
/// that names no argument (or a name bound inside a destructured one), an empty `skip()`, a
/// `codec` that is not a type (`codec = "json"` instead of `codec = atomcache::Json`), a method
/// rewritten by `#[async_trait]`. A `<name>_invalidate` of your own beside a cached `name`
/// clashes with the companion (rustc: "the name `name_invalidate` is defined multiple times",
/// at the attribute): rename the companion (`invalidate = "forget_name"`) or leave it out
/// (`invalidate = false`).
///
/// # The cache id
///
/// By default the id is the JSON of the arguments that are not skipped: one argument alone
/// (`42`, `"ada"`), several as an array (`[0,20]`), none as `null`. JSON is the same in every
/// replica of a build, and readable in `redis-cli`. Every argument must implement
/// `serde::Serialize` (references such as `&str`, `&[T]` and `&MyStruct` are fine), unless it
/// is skipped. An argument under `#[cfg(..)]` (or `#[cfg_attr(..)]`) is part of the id, and of
/// the companion, only when it is configured in.
///
/// JSON writes `None`, `()`, NaN and ±infinity all as `null`, so an id whose JSON holds a
/// `null` that is not a plain `()` ends in `~` and what each `null` stands for, in order:
/// `null~NaN`, `null~-inf`, `[3,null]~None`, `null~Some(NaN)`. Other ids are the JSON alone,
/// and a function without arguments has the id `null`.
///
/// ```ignore
/// #[atomcache::cached(exp = 60, skip(db))]
/// async fn user(db: &Pool, id: u64) -> User { /* id: `42` */ }
///
/// #[atomcache::cached(exp = 60, key = format!("{}:{}", user.id, page))]
/// async fn feed(user: &User, page: u32, trace: bool) -> Vec<Post> { /* id: `"42:1"` */ }
/// ```
///
/// `key` replaces the arguments entirely (it cannot be combined with `skip`): its value, which
/// must implement `Serialize`, is the id. Ids that do not serialise at run time (a map with
/// non-string keys) bypass the cache and are logged.
///
/// # Return types
///
/// | returns | stored | returned without storing |
/// |---|---|---|
/// | any other `T` | every value | — |
/// | `Result<T, E>`, or an alias of it | `Ok(T)` | `Err(E)`; the lease is released at once; callers waiting on the same computation in this process get a clone of the `Err` when `E: Clone + Send + Sync + 'static` (otherwise each runs its own attempt), waiters in other replicas run their own attempt instead of queueing |
/// | `Option<T>`, or an alias of it | `Some(T)` | `None` (store it too with `cache_none`) |
///
/// `Result` and `Option` are recognised by type, not by name: `io::Result<T>`,
/// `anyhow::Result<T>` and your own aliases (`type Res<T> = Result<T, MyError>`,
/// `type Maybe<T> = Option<T>`) count, and a type of yours that is merely named `Result` is a
/// plain `T`. The stored `T` must implement `atomcache::CacheValue` (`Serialize +
/// DeserializeOwned + Send + 'static`); `E` needs nothing. `cache_none` requires (by type too)
/// that the function returns an `Option`. `return` and `?` work in the body as in any function.
///
/// A cached value is read back from the store, so it owns its data: a return type that borrows
/// (`&'static str`, `Cow<'a, str>`, `Item<'static>` with borrowed fields) is an error at that
/// type, which names the owned type to return instead (`String`).
///
/// # The `_invalidate` companion
///
/// Beside each function `name`, the attribute declares `name_invalidate`, with the same
/// visibility and generics, taking the arguments that make up the id (all of them with `key`;
/// the non-skipped ones otherwise), which drops the entry of that call; the next call computes
/// it again. It returns `Result<(), atomcache::Error>`. `invalidate = "name"` renames it;
/// `invalidate = false` leaves it out.
///
/// ```ignore
/// #[atomcache::cached(exp = 60, skip(db))]
/// pub async fn user(db: &Pool, id: u64) -> User { /* .. */ }
///
/// user_invalidate(42).await?; // `db` is skipped, so not needed
/// ```
///
/// # Methods
///
/// In an `impl` block, `self` must be skipped (entries are then shared by every instance) or
/// covered by a `key`. The id also holds the `Self` type's name, so generic impls and
/// same-named methods of different types in one module never share entries. The companion is
/// an associated function (`Repo::find_invalidate(id)`), or a method when the `key` uses
/// `self`.
///
/// ```ignore
/// impl Repo {
///     #[atomcache::cached(exp = 60, skip(self))]
///     async fn find(&self, id: u32) -> Item { /* .. */ }
///
///     #[atomcache::cached(exp = 60, key = (self.tenant, id))]
///     async fn find_for_tenant(&self, id: u32) -> Item { /* .. */ }
/// }
/// ```
///
/// # Generic functions
///
/// Supported: the id starts with the names of the type parameters
/// (`std::any::type_name`) and the values of the const parameters, so `load::<A>` and
/// `load::<B>` never share entries. Lifetime parameters are not part of the id. A generic value
/// type needs the bound `atomcache::CacheValue` (`Serialize + DeserializeOwned + Send +
/// 'static`), a generic argument `atomcache::CacheArg` (`Serialize`):
///
/// ```ignore
/// #[atomcache::cached(exp = 60)]
/// async fn config<T>(name: &str) -> Option<T>
/// where
///     T: atomcache::CacheValue,
/// { /* id: `["my_app::Limits","api"]` */ }
///
/// config_invalidate::<Limits>("api").await?;
/// ```
///
/// `impl Trait` arguments are rejected (the id needs to name every type): use a generic
/// parameter. Type names are stable within one build of a program, which is what replicas
/// share; a new build with different types reads other entries.
///
/// # `auto_refresh`
///
/// ```ignore
/// #[atomcache::cached(exp = 120, lock_timeout = 5, auto_refresh)]
/// async fn exchange_rates() -> Rates { /* .. */ }
/// ```
///
/// The function registers itself at link time; once the backend is installed, a background
/// task recomputes the value at `exp - lock_timeout`, under the entry's lease, while readers
/// keep the old one. The function must take no arguments, not be generic and not use `Self`, and its
/// body's future must be `Send` (it runs on a background task). A refresh that returns `Err`
/// or `None` keeps the old value.
///
/// # Limitations
///
/// - The function must be an `async fn` with a body, so not in a trait definition. In a trait
///   `impl`, add `invalidate = false`: the companion cannot be declared there (rustc says
///   "method `find_invalidate` is not a member of trait"). Under `#[async_trait]` the method is
///   no longer `async` when `#[cached]` sees it, whatever the order of the attributes
///   (`#[async_trait]` is on the impl, which expands first), and `#[cached]` rejects it: use a
///   native `async fn` in the trait (Rust 1.75+) instead, or, for a `dyn` trait, cache an
///   inherent method or a free function and call it from the trait method.
/// - Destructured arguments (`(a, b): (u32, u32)`) are part of the id as a whole: `skip` cannot
///   name their parts (name the argument and destructure it in the body to skip it), nor can a
///   `key` expression.
/// - Two associated functions without `self` and without `Self` in their signature, with the
///   same name, in two `impl` blocks of one module, share the default namespace, as do two
///   same-named functions nested in two functions of one module: `atomcache::init` reports it
///   (`Error::NamespaceCollision`) and their calls bypass the cache; give one a `namespace`.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let parsed = syn::parse2::<item::CachedFn>(item.clone()).or_else(|error| {
        // `unsafe async fn`: rustc has already said that `async` comes first; expand the
        // function as rustc read it, so that this error is the only one.
        item::with_qualifiers_in_order(item.clone())
            .and_then(|item| syn::parse2(item).ok())
            .ok_or(error)
    });
    let func = match parsed {
        Ok(func) => func,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                format!("#[cached] applies to `async fn`s: {error}"),
            )
            .to_compile_error();
            return quote::quote!(#error #item);
        }
    };
    let (error, stub) = match syn::parse2::<args::Args>(args) {
        Ok(args) => match validate::validate(args, &func) {
            Ok(plan) => return expand::expand(&plan),
            Err(invalid) => (invalid.error, invalid.companion),
        },
        Err(error) => {
            // Still declare the companion, with the signature it has when nothing is skipped.
            let stub = validate::validate(args::Args::default(), &func)
                .err()
                .and_then(|invalid| invalid.companion);
            (error, stub)
        }
    };
    fallback::expand(&error, &func, stub.as_deref())
}
