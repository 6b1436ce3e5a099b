//! Checks the options against each other and against the function, and turns them into a
//! [`Plan`] for `expand`. Every problem found becomes a `syn::Error` pointing at the token that
//! causes it; they are all collected, so the user fixes them in one round.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::visit::Visit;
use syn::{FnArg, GenericParam, Ident, Pat, Receiver, ReturnType, Type};

use crate::args::{Args, DurationArg, InvalidateArg};
use crate::item::{mentions_self_type, CachedFn};

/// The default `lock_timeout`, as in the Python original (and `atomcache::DEFAULT_LOCK_TIMEOUT`).
pub(crate) const DEFAULT_LOCK_TIMEOUT_MS: u64 = 5_000;

/// The longest `exp`, `lock_timeout` or `max_wait`: 100 years, as `atomcache`'s
/// `MAX_LIFETIME` (which `Policy::new` enforces on the direct API).
pub(crate) const MAX_LIFETIME_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Everything `expand` needs, already checked.
pub(crate) struct Plan {
    /// The function, with destructuring patterns in its arguments replaced by plain names.
    pub func: CachedFn,
    /// `let <pattern> = <name>;` to run at the start of the body, for the renamed arguments.
    pub destructure: Vec<(Pat, Ident)>,
    /// An expression of type `&'static str`.
    pub namespace: TokenStream,
    pub exp_ms: u64,
    pub lock_timeout_ms: u64,
    /// `None`: the runtime's default (`atomcache`'s `DEFAULT_MAX_WAIT`).
    pub max_wait_ms: Option<u64>,
    pub codec: Option<Type>,
    pub auto_refresh: bool,
    pub kind: Kind,
    /// The declared return type (`()` when there is none).
    pub ret: TokenStream,
    pub ret_span: Span,
    /// Where the stored type (`T` of `T`, `Result<T, E>`, `Option<T>`) is written.
    pub value_span: Span,
    /// Type-level parts of the id (`Self`, type and const parameters), before the value parts.
    pub scope: Vec<ScopePart>,
    pub id: IdSource,
    /// `None` with `invalidate = false`.
    pub companion: Option<Companion>,
}

/// Which output is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// Every output (`T`, or `Option<T>` with `cache_none`).
    Plain,
    /// `Ok` only.
    Result,
    /// `Some` only.
    Option,
}

pub(crate) enum ScopePart {
    /// `std::any::type_name::<Self>()`: methods of generic impls, and same-named methods of
    /// different types in one module, never share entries.
    SelfType,
    /// `std::any::type_name::<T>()` of a type parameter.
    Type(Ident),
    /// The value of a const parameter.
    Const(Ident),
}

pub(crate) enum IdSource {
    /// The arguments that make up the id, each with the span of its type (for errors).
    Args(Vec<(Ident, Span)>),
    /// `key = <expr>`.
    Key(syn::Expr),
}

/// The `<name>_invalidate` function emitted beside the cached one.
pub(crate) struct Companion {
    pub ident: Ident,
    /// Kept only when the id depends on `self` (`key = ..` on a method).
    pub receiver: Option<Receiver>,
    pub params: Vec<(Ident, Type)>,
}

/// Collects errors in the order they are found.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// What `validate` hands back on failure: the errors, plus the companion signature when it
/// could be worked out (so that the fallback can still declare it and callers do not see a
/// cascade of "cannot find function" errors).
pub(crate) struct Invalid {
    pub error: syn::Error,
    pub companion: Option<Box<Companion>>,
}

/// One argument of the function, as the plan sees it.
struct Arg {
    /// The name the id and the companion use (the original name, or a generated one when the
    /// argument is a destructuring pattern).
    ident: Ident,
    /// Whether the user wrote a plain name (only those can be named in `skip`).
    named: bool,
    ty: Type,
}

pub(crate) fn validate(args: Args, func: &CachedFn) -> Result<Plan, Invalid> {
    let mut errors = Errors::default();
    let mut func = func.clone();
    let sig = &func.sig;

    // --- the function itself ---------------------------------------------------------------
    if sig.asyncness.is_none() {
        let span = sig
            .constness
            .map_or(sig.fn_token.span, |constness| constness.span);
        errors.push(
            span,
            "#[cached] works on `async fn`s only: the cached call awaits the store; make this an `async fn`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(
            variadic.span(),
            "#[cached] does not support variadic functions",
        );
    }

    // --- exp, lock_timeout and max_wait ------------------------------------------------------
    let exp_ms = match args.exp {
        None => {
            errors.push(
                Span::call_site(),
                "#[cached] needs `exp`, how long a value lives: e.g. `#[cached(exp = 600)]` (seconds) or `#[cached(exp = \"10m\")]`",
            );
            None
        }
        Some(exp) if exp.millis == 0 => {
            errors.push(exp.span, "`exp` must be longer than zero");
            None
        }
        Some(exp) => bounded(exp, "exp", &mut errors),
    };
    let lock_timeout_ms = match args.lock_timeout {
        Some(lock) if lock.millis == 0 => {
            errors.push(
                lock.span,
                "`lock_timeout` must be longer than zero: it is the length of the lease held by the caller computing the value",
            );
            None
        }
        Some(lock) => bounded(lock, "lock_timeout", &mut errors),
        None => Some(DEFAULT_LOCK_TIMEOUT_MS),
    };
    let max_wait_ms = match args.max_wait {
        Some(wait) if wait.millis == 0 => {
            errors.push(
                wait.span,
                "`max_wait` must be longer than zero: it is how long a caller waits for another caller's computation before computing without the cache",
            );
            None
        }
        Some(wait) => bounded(wait, "max_wait", &mut errors),
        None => None,
    };
    if let (Some(exp), Some(lock), Some(exp_arg)) = (exp_ms, lock_timeout_ms, args.exp) {
        if lock >= exp {
            match args.lock_timeout {
                Some(lock_arg) => errors.push(
                    lock_arg.span,
                    format!(
                        "`lock_timeout` ({}) must be shorter than `exp` ({})",
                        human(lock),
                        human(exp)
                    ),
                ),
                None => errors.push(
                    exp_arg.span,
                    format!(
                        "`exp` ({}) must be longer than `lock_timeout`, which defaults to {}: raise `exp`, or set a shorter `lock_timeout = ..`",
                        human(exp),
                        human(DEFAULT_LOCK_TIMEOUT_MS)
                    ),
                ),
            }
        }
    }

    // --- namespace ---------------------------------------------------------------------------
    let fn_name = sig.ident.unraw().to_string();
    let namespace = match &args.namespace {
        Some(ns) if ns.value().is_empty() => {
            errors.push(ns.span(), "`namespace` must not be empty");
            quote!(#ns)
        }
        Some(ns) => quote!(#ns),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };

    // --- arguments ---------------------------------------------------------------------------
    let mut receiver: Option<Receiver> = None;
    let mut fn_args: Vec<Arg> = Vec::new();
    let mut destructure = Vec::new();
    for (index, input) in func.sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(recv) => receiver = Some(recv.clone()),
            FnArg::Typed(typed) => {
                if let Some(span) = find_impl_trait(&typed.ty) {
                    errors.push(
                        span,
                        "#[cached] does not accept `impl Trait` arguments: the cache id needs to name every argument's type; use a generic parameter (`fn f<T: Trait>(x: T)`) or a concrete type",
                    );
                }
                let (ident, named) = match &*typed.pat {
                    Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                        (pat.ident.clone(), true)
                    }
                    _ => {
                        // Destructuring pattern or `_`: give the argument a name, destructure
                        // inside the body.
                        let ident =
                            format_ident!("__atomcache_arg{}", index, span = typed.pat.span());
                        let pat = std::mem::replace(
                            &mut *typed.pat,
                            Pat::Ident(syn::PatIdent {
                                attrs: Vec::new(),
                                by_ref: None,
                                mutability: None,
                                ident: ident.clone(),
                                subpat: None,
                            }),
                        );
                        destructure.push((pat, ident.clone()));
                        (ident, false)
                    }
                };
                fn_args.push(Arg {
                    ident,
                    named,
                    ty: (*typed.ty).clone(),
                });
            }
        }
    }
    let sig = &func.sig;

    // --- skip and key ------------------------------------------------------------------------
    let mut skipped_self = false;
    let mut skipped: Vec<Ident> = Vec::new();
    if let Some(skip) = &args.skip {
        for name in &skip.names {
            if skipped.iter().any(|seen| seen == name) || (name == "self" && skipped_self) {
                errors.push(name.span(), format!("`{name}` is skipped twice"));
            } else if name == "self" {
                if receiver.is_some() {
                    skipped_self = true;
                } else {
                    errors.push(name.span(), "`skip(self)`, but this function has no `self`");
                }
            } else if fn_args.iter().any(|arg| arg.named && arg.ident == *name) {
                skipped.push(name.clone());
            } else {
                let names: Vec<String> = receiver
                    .iter()
                    .map(|_| "self".to_string())
                    .chain(
                        fn_args
                            .iter()
                            .filter(|arg| arg.named)
                            .map(|arg| arg.ident.to_string()),
                    )
                    .collect();
                let known = if names.is_empty() {
                    "this function has no arguments".to_string()
                } else {
                    format!("its arguments are: {}", names.join(", "))
                };
                errors.push(
                    name.span(),
                    format!(
                        "`skip` names `{name}`, which is not an argument of `{fn_name}`; {known}"
                    ),
                );
            }
        }
    }
    if let (Some(skip), Some(_)) = (&args.skip, &args.key) {
        errors.push(
            skip.keyword,
            "`skip` has no effect with `key`: the `key` expression alone makes the cache id; remove `skip(..)`",
        );
    }
    if let Some(recv) = &receiver {
        if args.key.is_none() && !skipped_self && args.auto_refresh.is_none() {
            errors.push(
                recv.self_token.span,
                "`self` cannot be part of the cache id: leave it out with `skip(self)`, or build the id yourself with `key = ..`",
            );
        }
    }

    // --- return type -------------------------------------------------------------------------
    let (ret, ret_span, kind) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span(), Kind::Plain),
        ReturnType::Type(_, ty) => {
            if let Some(span) = find_impl_trait(ty) {
                errors.push(
                    span,
                    "#[cached] cannot return `impl Trait`: a cached value is read back from the store, so it needs a concrete type",
                );
            }
            (ty.to_token_stream(), ty.span(), return_kind(ty))
        }
    };
    let kind = match (args.cache_none, kind) {
        (Some(_), Kind::Option) => Kind::Plain,
        (Some(span), _) => {
            errors.push(
                span,
                "`cache_none` applies to functions returning `Option<T>`: it stores `None` too",
            );
            kind
        }
        (None, kind) => kind,
    };
    let value_span = match &sig.output {
        ReturnType::Default => ret_span,
        ReturnType::Type(_, ty) => stored_type(ty, kind).map_or(ret_span, |value| value.span()),
    };

    // --- generics ----------------------------------------------------------------------------
    let mut scope = Vec::new();
    let signature_mentions_self = mentions_self_type(sig.generics.to_token_stream())
        .or_else(|| mentions_self_type(sig.inputs.to_token_stream()))
        .or_else(|| mentions_self_type(sig.output.to_token_stream()))
        .is_some();
    if receiver.is_some() || signature_mentions_self {
        scope.push(ScopePart::SelfType);
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Type(ty) => scope.push(ScopePart::Type(ty.ident.clone())),
            GenericParam::Const(c) => scope.push(ScopePart::Const(c.ident.clone())),
            GenericParam::Lifetime(_) => {}
        }
    }

    // --- auto_refresh ------------------------------------------------------------------------
    if args.auto_refresh.is_some() {
        if let Some(first) = sig.inputs.first() {
            let span = match first {
                FnArg::Receiver(recv) => recv.self_token.span,
                FnArg::Typed(typed) => typed.span(),
            };
            errors.push(
                span,
                "`auto_refresh` functions take no arguments: the refresher recomputes their one value in the background, so it has no arguments to call them with",
            );
        }
        let generic = sig
            .generics
            .params
            .iter()
            .find(|param| !matches!(param, GenericParam::Lifetime(_)));
        if let Some(param) = generic {
            errors.push(
                param.span(),
                "`auto_refresh` functions cannot be generic: the refresher has no type to call them with",
            );
        }
        if let Some(key) = &args.key {
            errors.push(
                key.keyword,
                "`key` has no effect with `auto_refresh`: the function has one value",
            );
        }
        if let Some(skip) = &args.skip {
            errors.push(
                skip.keyword,
                "`skip` has no effect with `auto_refresh`: the function takes no arguments",
            );
        }
        if sig.inputs.is_empty() {
            let self_in_body = if signature_mentions_self {
                mentions_self_type(sig.to_token_stream())
            } else {
                mentions_self_type(func.body.stream())
            };
            if let Some(span) = self_in_body {
                errors.push(
                    span,
                    "`auto_refresh` functions cannot use `Self`: the refresher runs the body as a free function; name the type instead",
                );
            }
        }
    }

    // --- the id and the companion ------------------------------------------------------------
    let in_id = |arg: &Arg| !arg.named || !skipped.contains(&arg.ident);
    let id = match &args.key {
        Some(key) => IdSource::Key(key.expr.clone()),
        None => IdSource::Args(
            fn_args
                .iter()
                .filter(|arg| in_id(arg))
                .map(|arg| (arg.ident.clone(), arg.ty.span()))
                .collect(),
        ),
    };
    let companion = Companion {
        ident: match &args.invalidate {
            Some(InvalidateArg::Named(ident)) => ident.clone(),
            _ => format_ident!("{}_invalidate", fn_name, span = sig.ident.span()),
        },
        receiver: match (&args.key, receiver) {
            (Some(_), Some(mut recv)) => {
                if recv.reference.is_none() {
                    recv.mutability = None;
                }
                Some(recv)
            }
            _ => None,
        },
        params: fn_args
            .iter()
            .filter(|arg| args.key.is_some() || in_id(arg))
            .map(|arg| (arg.ident.clone(), arg.ty.clone()))
            .collect(),
    };

    let companion = match args.invalidate {
        Some(InvalidateArg::Off) => None,
        _ => Some(companion),
    };

    if let Some(error) = errors.0 {
        return Err(Invalid {
            error,
            companion: companion.map(Box::new),
        });
    }
    Ok(Plan {
        func,
        destructure,
        namespace,
        exp_ms: exp_ms.unwrap_or_default(),
        lock_timeout_ms: lock_timeout_ms.unwrap_or_default(),
        max_wait_ms,
        codec: args.codec,
        auto_refresh: args.auto_refresh.is_some(),
        kind,
        ret,
        ret_span,
        value_span,
        scope,
        id,
        companion,
    })
}

/// The duration, or `None` (and an error at its literal) when it is longer than
/// [`MAX_LIFETIME_MS`] (saturated literals included).
fn bounded(duration: DurationArg, name: &str, errors: &mut Errors) -> Option<u64> {
    if duration.millis > MAX_LIFETIME_MS {
        errors.push(
            duration.span,
            format!(
                "`{name}` is too large: the longest supported is 100 years ({} s)",
                MAX_LIFETIME_MS / 1000
            ),
        );
        return None;
    }
    Some(duration.millis)
}

/// `Result<..>` / `Option<..>` by the last path segment, so that `io::Result<T>` and
/// `anyhow::Result<T>` count as results.
fn return_kind(ty: &Type) -> Kind {
    match ty {
        Type::Group(group) => return_kind(&group.elem),
        Type::Paren(paren) => return_kind(&paren.elem),
        Type::Path(path) if path.qself.is_none() => {
            match path.path.segments.last().map(|s| s.ident.to_string()) {
                Some(name) if name == "Result" => Kind::Result,
                Some(name) if name == "Option" => Kind::Option,
                _ => Kind::Plain,
            }
        }
        _ => Kind::Plain,
    }
}

/// The stored type: the `T` of `Result<T, _>` and `Option<T>`, or the whole type; `None` when
/// it cannot be read from the tokens (an alias such as `type Result = ..` without arguments).
fn stored_type(ty: &Type, kind: Kind) -> Option<Type> {
    match (ty, kind) {
        (_, Kind::Plain) => Some(ty.clone()),
        (Type::Group(group), _) => stored_type(&group.elem, kind),
        (Type::Paren(paren), _) => stored_type(&paren.elem, kind),
        (Type::Path(path), Kind::Result | Kind::Option) => {
            match path.path.segments.last().map(|s| &s.arguments) {
                Some(syn::PathArguments::AngleBracketed(args)) => match args.args.first() {
                    Some(syn::GenericArgument::Type(value)) => Some(value.clone()),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// The span of the first `impl Trait` inside `ty`.
fn find_impl_trait(ty: &Type) -> Option<Span> {
    struct Finder(Option<Span>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
            if self.0.is_none() {
                self.0 = Some(node.impl_token.span);
            }
        }
    }
    let mut finder = Finder(None);
    finder.visit_type(ty);
    finder.0
}

/// `5s`, `10m`, `1500ms`: a duration as the user would write it.
fn human(ms: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for &(size, unit) in UNITS {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(5_000), "5s");
        assert_eq!(human(600_000), "10m");
        assert_eq!(human(1_500), "1500ms");
        assert_eq!(human(7_200_000), "2h");
    }

    fn check(args: proc_macro2::TokenStream) -> Result<Plan, String> {
        let args: Args = syn::parse2(args).expect("parses");
        let func: CachedFn = syn::parse_quote!(
            async fn f() -> u8 {
                1
            }
        );
        validate(args, &func).map_err(|invalid| {
            invalid
                .error
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn max_wait() {
        let plan = |args| check(args).expect("valid");
        assert_eq!(plan(quote!(exp = 60)).max_wait_ms, None);
        assert_eq!(
            plan(quote!(exp = 60, max_wait = "1m30s")).max_wait_ms,
            Some(90_000)
        );
        // Longer than `exp` is fine: waiting and living are unrelated.
        assert_eq!(
            plan(quote!(exp = 60, max_wait = 3600)).max_wait_ms,
            Some(3_600_000)
        );
        let zero = check(quote!(exp = 60, max_wait = 0)).err().unwrap();
        assert!(
            zero.starts_with("`max_wait` must be longer than zero"),
            "{zero}"
        );
    }

    #[test]
    fn lifetimes_are_bounded_by_100_years() {
        let too_large = |name: &str| {
            format!("`{name}` is too large: the longest supported is 100 years (3153600000 s)")
        };
        assert_eq!(MAX_LIFETIME_MS, 3_153_600_000_000);
        let plan = check(quote!(
            exp = 3153600000,
            lock_timeout = 3153599999,
            max_wait = "36500d"
        ))
        .expect("100 years is accepted");
        assert_eq!(plan.exp_ms, MAX_LIFETIME_MS);
        assert_eq!(plan.max_wait_ms, Some(MAX_LIFETIME_MS));
        assert_eq!(
            check(quote!(exp = 3153600001)).err(),
            Some(too_large("exp"))
        );
        assert_eq!(
            check(quote!(exp = "36500d 1ms")).err(),
            Some(too_large("exp"))
        );
        assert_eq!(
            check(quote!(exp = 99999999999999999999)).err(),
            Some(too_large("exp"))
        );
        assert_eq!(
            check(quote!(exp = 60, max_wait = 18446744073709551615)).err(),
            Some(too_large("max_wait"))
        );
        // Each too large value is reported, and not compared with the others.
        assert_eq!(
            check(quote!(
                exp = 60,
                lock_timeout = "99999999999999999999d",
                max_wait = 3153600001
            ))
            .err(),
            Some(format!(
                "{}\n{}",
                too_large("lock_timeout"),
                too_large("max_wait")
            ))
        );
    }

    #[test]
    fn return_kinds() {
        assert_eq!(return_kind(&syn::parse_quote!(Result<u8, E>)), Kind::Result);
        assert_eq!(
            return_kind(&syn::parse_quote!(std::io::Result<u8>)),
            Kind::Result
        );
        assert_eq!(return_kind(&syn::parse_quote!(Option<u8>)), Kind::Option);
        assert_eq!(
            return_kind(&syn::parse_quote!(Vec<Option<u8>>)),
            Kind::Plain
        );
        assert_eq!(return_kind(&syn::parse_quote!((u8, u8))), Kind::Plain);
    }
}
