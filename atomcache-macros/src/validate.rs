//! Checks the options against each other and against the function, and turns them into a
//! [`Plan`] for `expand`. Every problem found becomes a `syn::Error` pointing at the token that
//! causes it; they are all collected, so the user fixes them in one round.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::visit::Visit;
use syn::{Attribute, FnArg, GenericParam, Ident, Pat, Receiver, ReturnType, Type};

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
    /// `let <pattern> = <name>;` to run at the start of the body, for the renamed arguments,
    /// under the argument's `#[cfg]`s.
    pub destructure: Vec<(Vec<Attribute>, Pat, Ident)>,
    /// An expression of type `&'static str`.
    pub namespace: TokenStream,
    pub exp_ms: u64,
    pub lock_timeout_ms: u64,
    /// `None`: the runtime's default (`atomcache`'s `DEFAULT_MAX_WAIT`).
    pub max_wait_ms: Option<u64>,
    pub codec: Option<Type>,
    pub auto_refresh: bool,
    /// The span of the `cache_none` flag: every output is stored, and the return type must be
    /// an `Option` (checked by type, in the expansion). Otherwise what is stored is chosen by
    /// the return type, as a type (`atomcache::__private::Dispatch`).
    pub cache_none: Option<Span>,
    /// The declared return type (`()` when there is none).
    pub ret: TokenStream,
    pub ret_span: Span,
    /// Where the stored type (`T` of `T`, `Result<T, E>`, `Option<T>`) is written: the `T` of a
    /// literal `Result<T, E>` / `Option<T>`, the whole type otherwise (an alias). For error
    /// spans only.
    pub value_span: Span,
    /// Type-level parts of the id (`Self`, type and const parameters), before the value parts.
    pub scope: Vec<ScopePart>,
    pub id: IdSource,
    /// `None` with `invalidate = false`.
    pub companion: Option<Companion>,
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
    /// The arguments that make up the id (errors about one point at its type).
    Args(Vec<Param>),
    /// `key = <expr>`.
    Key(syn::Expr),
}

/// The `<name>_invalidate` function emitted beside the cached one.
pub(crate) struct Companion {
    pub ident: Ident,
    /// Kept only when the id depends on `self` (`key = ..` on a method).
    pub receiver: Option<Receiver>,
    pub params: Vec<Param>,
}

/// An argument as the id and the companion use it.
pub(crate) struct Param {
    /// Its `#[cfg]` and `#[cfg_attr]` attributes, repeated on its part of the id and on the
    /// companion's parameter: an argument configured out is out of both.
    pub cfgs: Vec<Attribute>,
    pub ident: Ident,
    pub ty: Type,
}

/// Collects errors in the order they are found.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    /// An error built elsewhere (`syn::Error::new_spanned`, to underline several tokens).
    fn push_error(&mut self, error: syn::Error) {
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
    /// The destructuring pattern the user wrote, when not a plain name.
    pattern: Option<Pat>,
    ty: Type,
    cfgs: Vec<Attribute>,
}

impl Arg {
    fn param(&self) -> Param {
        Param {
            cfgs: self.cfgs.clone(),
            ident: self.ident.clone(),
            ty: self.ty.clone(),
        }
    }
}

pub(crate) fn validate(args: Args, func: &CachedFn) -> Result<Plan, Invalid> {
    let mut errors = Errors::default();
    let mut func = func.clone();
    let sig = &func.sig;

    // --- the function itself ---------------------------------------------------------------
    if sig.asyncness.is_none() && rewritten_by_async_trait(sig) {
        // The one error: no other check applies to the rewritten method, and the companion is
        // left out (it cannot be declared in a trait or a trait impl).
        return Err(Invalid {
            error: syn::Error::new(
                sig.fn_token.span,
                "#[cached] cannot wrap a method rewritten by `#[async_trait]`: it is no longer an `async fn` but returns `Pin<Box<dyn Future<Output = ..> + Send + 'async_trait>>`, and no order of the attributes helps (`#[async_trait]` is on the trait or impl block, which expands before its methods); write a native `async fn` in the trait instead (Rust 1.75+, no `#[async_trait]`, and `invalidate = false` here), or, for a `dyn` trait, cache an inherent method or a free function and call it from the trait method",
            ),
            companion: None,
        });
    }
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
                let cfgs: Vec<Attribute> = typed
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr"))
                    .cloned()
                    .collect();
                let (ident, pattern) = match &*typed.pat {
                    Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                        (pat.ident.clone(), None)
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
                        destructure.push((cfgs.clone(), pat.clone(), ident.clone()));
                        (ident, Some(pat))
                    }
                };
                fn_args.push(Arg {
                    ident,
                    named: pattern.is_none(),
                    pattern,
                    ty: (*typed.ty).clone(),
                    cfgs,
                });
            }
        }
    }
    let sig = &func.sig;

    // --- skip and key ------------------------------------------------------------------------
    let mut skipped_self = false;
    let mut skipped: Vec<Ident> = Vec::new();
    if let Some(skip) = &args.skip {
        if skip.names.is_empty() {
            errors.push(skip.keyword, "`skip()` names no argument; remove it");
        }
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
                let destructured = fn_args.iter().find_map(|arg| {
                    arg.pattern
                        .as_ref()
                        .filter(|pattern| binds(pattern, name))
                        .map(|pattern| (pattern, &arg.ty))
                });
                let message = match destructured {
                    Some((pattern, ty)) => {
                        let skippable = if names.is_empty() {
                            String::new()
                        } else {
                            format!("; the arguments `skip` can name are: {}", names.join(", "))
                        };
                        format!(
                            "`skip` names `{name}`, which is bound inside the destructured argument `{}` of `{fn_name}`; `skip` takes whole arguments by name, so a destructured argument can only be skipped whole: name it (`args: {}`), destructure it in the body and write `skip(args)`, or leave it out by building the id with `key = ..`{skippable}",
                            written(pattern),
                            written(ty),
                        )
                    }
                    None => {
                        let known = if !names.is_empty() {
                            format!("its arguments are: {}", names.join(", "))
                        } else if fn_args.is_empty() {
                            "this function has no arguments".to_string()
                        } else {
                            "its arguments are all destructured, and `skip` names whole arguments only".to_string()
                        };
                        format!(
                            "`skip` names `{name}`, which is not an argument of `{fn_name}`; {known}"
                        )
                    }
                };
                errors.push(name.span(), message);
            }
        }
    }
    if let (Some(skip), Some(_)) = (&args.skip, &args.key) {
        if !skip.names.is_empty() {
            errors.push(
                skip.keyword,
                "`skip` has no effect with `key`: the `key` expression alone makes the cache id; remove `skip(..)`",
            );
        }
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
    // What is stored (`Ok` only, `Some` only, everything) is chosen by the return type as a
    // type, in the expansion, so aliases count; the tokens only say where errors point.
    let (ret, ret_span, value_span) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span(), sig.ident.span()),
        ReturnType::Type(_, ty) => {
            let stored = match args.cache_none {
                Some(_) => &**ty,
                None => stored_type(ty),
            };
            if let Some(span) = find_impl_trait(ty) {
                errors.push(
                    span,
                    "#[cached] cannot return `impl Trait`: a cached value is read back from the store, so it needs a concrete type",
                );
            } else if let Some(error) = borrowed(stored) {
                errors.push_error(error);
            }
            (ty.to_token_stream(), ty.span(), stored.span())
        }
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
        if let Some(skip) = args.skip.as_ref().filter(|skip| !skip.names.is_empty()) {
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
                .map(Arg::param)
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
            .map(Arg::param)
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
        cache_none: args.cache_none,
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

/// Where the stored value is written: the `T` of a literal `Result<T, ..>` / `Option<T>` (by the
/// last path segment, so `io::Result<T>` too), the whole type otherwise. Only for error spans
/// and the borrowed-value check: what is stored is decided by the type, in the expansion.
fn stored_type(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => stored_type(&group.elem),
        Type::Paren(paren) => stored_type(&paren.elem),
        Type::Path(path) if path.qself.is_none() => match path.path.segments.last() {
            Some(last) if last.ident == "Result" || last.ident == "Option" => {
                match &last.arguments {
                    syn::PathArguments::AngleBracketed(args) => match args.args.first() {
                        Some(syn::GenericArgument::Type(value)) => value,
                        _ => ty,
                    },
                    _ => ty,
                }
            }
            _ => ty,
        },
        _ => ty,
    }
}

/// The error for a stored type that borrows (a reference, a lifetime argument, a `Cow`): a
/// cached value is read back from the store, so it owns its data. Caught here, at the type,
/// because rustc's own errors about it ("implementation of `Deserialize` is not general
/// enough", "`'a` must outlive `'static`") land inside the generated code.
fn borrowed(stored: &Type) -> Option<syn::Error> {
    struct Finder<'ast>(Option<&'ast Type>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type(&mut self, ty: &'ast Type) {
            if self.0.is_some() {
                return;
            }
            match ty {
                Type::Reference(_) => self.0 = Some(ty),
                Type::Path(path) if path.path.segments.iter().any(borrows) => self.0 = Some(ty),
                // Their lifetimes are their own (`fn(&str)`, `dyn Trait + 'a`), and such types
                // are not serialisable anyway.
                Type::BareFn(_) | Type::TraitObject(_) | Type::ImplTrait(_) => {}
                _ => syn::visit::visit_type(self, ty),
            }
        }
    }
    /// A segment with a lifetime argument (`Item<'static>`, `Cow<'a, str>`), except
    /// `Cow<'static, ..>`, which owns what it reads back.
    fn borrows(segment: &syn::PathSegment) -> bool {
        let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
            return false;
        };
        args.args.iter().any(|arg| match arg {
            syn::GenericArgument::Lifetime(lifetime) => {
                !(segment.ident == "Cow" && lifetime.ident == "static")
            }
            _ => false,
        })
    }
    let mut finder = Finder(None);
    finder.visit_type(stored);
    let found = finder.0?;
    let text = type_text(found);
    let fix = match owned_form(found) {
        Some(owned) => format!("return `{owned}` instead of `{text}`"),
        None => format!(
            "return a type that owns its data instead of `{text}` (e.g. with `String` fields instead of `&str`; if its fields already own their data, e.g. `Cow<'static, str>`, name it through an alias without the lifetime: `type Owned = {text};`)"
        ),
    };
    Some(syn::Error::new_spanned(
        found,
        format!(
            "#[cached] values must own their data: a cached value is read back from the store, so it cannot borrow; {fix}"
        ),
    ))
}

/// The owned type to suggest for a reference or a `Cow`: `String` for `&str`, `Vec<T>` for
/// `&[T]`, `T` for `&T`; `None` for a type with a lifetime argument (its owned form is the
/// user's to write).
fn owned_form(ty: &Type) -> Option<String> {
    let borrowed = match ty {
        Type::Reference(reference) => &*reference.elem,
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            if last.ident != "Cow" {
                return None;
            }
            match &last.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::Type(ty) => Some(ty),
                        _ => None,
                    })?
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let owned = match borrowed {
        Type::Slice(slice) => format!("Vec<{}>", type_text(&slice.elem)),
        Type::Path(path) if path.qself.is_none() && path.path.segments.len() == 1 => {
            match path.path.segments[0].ident.to_string().as_str() {
                "str" => "String".to_string(),
                "Path" => "PathBuf".to_string(),
                "OsStr" => "OsString".to_string(),
                "CStr" => "CString".to_string(),
                _ => type_text(borrowed),
            }
        }
        _ => type_text(borrowed),
    };
    Some(owned)
}

/// A type as the user would write it (`&'static str`, `Cow<'a, str>`), for messages.
fn type_text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" ::", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        text = text.replace(from, to);
    }
    text
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

/// `#[async_trait]`'s shape: `fn f<'life0, 'async_trait>(..) -> Pin<Box<dyn Future<Output = ..>
/// + Send + 'async_trait>>`, the `async` gone.
fn rewritten_by_async_trait(sig: &syn::Signature) -> bool {
    sig.generics.params.iter().any(
        |param| matches!(param, GenericParam::Lifetime(def) if def.lifetime.ident == "async_trait"),
    )
}

/// `tokens` as the user would write them, for messages: `&Db`, not `& Db`.
fn written(tokens: &impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (spaced, tight) in [
        ("& ", "&"),
        (" ,", ","),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

/// Whether `pattern` binds `name`.
fn binds(pattern: &Pat, name: &Ident) -> bool {
    struct Finder<'a>(&'a Ident, bool);
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_pat_ident(&mut self, node: &'ast syn::PatIdent) {
            self.1 |= node.ident == *self.0;
            syn::visit::visit_pat_ident(self, node);
        }
    }
    let mut finder = Finder(name, false);
    finder.visit_pat(pattern);
    finder.1
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

    fn errors_of(args: proc_macro2::TokenStream, func: CachedFn) -> Vec<String> {
        let args: Args = syn::parse2(args).expect("parses");
        match validate(args, &func) {
            Ok(_) => Vec::new(),
            Err(invalid) => invalid.error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn skip_names_whole_arguments() {
        let func: CachedFn = syn::parse_quote!(
            async fn load((db, id): (&Db, u32), page: u32) -> u8 {
                1
            }
        );
        assert_eq!(
            errors_of(quote!(exp = 60, skip(db)), func.clone()),
            ["`skip` names `db`, which is bound inside the destructured argument `(db, id)` of `load`; `skip` takes whole arguments by name, so a destructured argument can only be skipped whole: name it (`args: (&Db, u32)`), destructure it in the body and write `skip(args)`, or leave it out by building the id with `key = ..`; the arguments `skip` can name are: page"]
        );
        assert_eq!(
            errors_of(quote!(exp = 60, skip(client)), func),
            ["`skip` names `client`, which is not an argument of `load`; its arguments are: page"]
        );
        let only_patterns: CachedFn = syn::parse_quote!(
            async fn load(Wrapper { db }: Wrapper) -> u8 {
                1
            }
        );
        let errors = errors_of(quote!(exp = 60, skip(db)), only_patterns.clone());
        assert!(
            errors[0].ends_with("or leave it out by building the id with `key = ..`"),
            "{errors:?}"
        );
        assert_eq!(
            errors_of(quote!(exp = 60, skip(client)), only_patterns),
            ["`skip` names `client`, which is not an argument of `load`; its arguments are all destructured, and `skip` names whole arguments only"]
        );
    }

    #[test]
    fn empty_skip() {
        let func: CachedFn = syn::parse_quote!(
            async fn load(id: u32) -> u8 {
                1
            }
        );
        let empty = ["`skip()` names no argument; remove it"];
        assert_eq!(errors_of(quote!(exp = 60, skip()), func.clone()), empty);
        // Reported alone, not also as useless beside `key`.
        assert_eq!(errors_of(quote!(exp = 60, skip(), key = id), func), empty);
    }

    #[test]
    fn cfg_arguments_keep_their_cfgs() {
        let func: CachedFn = syn::parse_quote!(
            async fn load(
                #[cfg(any())] extra: u32,
                #[cfg_attr(all(), allow(unused))]
                #[doc = "x"]
                id: u32,
            ) -> u8 {
                1
            }
        );
        let plan = validate(syn::parse_quote!(exp = 60), &func)
            .ok()
            .expect("valid");
        let IdSource::Args(params) = &plan.id else {
            panic!("an id of arguments")
        };
        let cfgs: Vec<Vec<String>> = params
            .iter()
            .map(|param| {
                param
                    .cfgs
                    .iter()
                    .map(|attr| attr.to_token_stream().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            cfgs,
            [
                ["# [cfg (any ())]"],
                ["# [cfg_attr (all () , allow (unused))]"]
            ]
        );
        assert_eq!(plan.companion.expect("declared").params.len(), 2);
    }

    #[test]
    fn async_trait_methods_are_one_error() {
        let func: CachedFn = syn::parse_quote!(
            fn find<'life0, 'async_trait>(
                &'life0 self,
                id: u32,
            ) -> ::core::pin::Pin<
                Box<
                    dyn ::core::future::Future<Output = String>
                        + ::core::marker::Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { id.to_string() })
            }
        );
        let args: Args = syn::parse_quote!(exp = 60);
        let invalid = validate(args, &func).err().expect("rejected");
        let errors: Vec<String> = invalid.error.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("#[cached] cannot wrap a method rewritten by `#[async_trait]`")
        );
        assert!(invalid.companion.is_none());
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
    fn stored_types_are_read_for_spans_only() {
        let stored = |ty: Type| type_text(stored_type(&ty));
        assert_eq!(stored(syn::parse_quote!(Result<Vec<u8>, E>)), "Vec<u8>");
        assert_eq!(stored(syn::parse_quote!(std::io::Result<u8>)), "u8");
        assert_eq!(stored(syn::parse_quote!(Option<u8>)), "u8");
        // An alias, or a type that holds an `Option`: the whole type.
        assert_eq!(stored(syn::parse_quote!(Res<u8>)), "Res<u8>");
        assert_eq!(
            stored(syn::parse_quote!(Vec<Option<u8>>)),
            "Vec<Option<u8>>"
        );
        assert_eq!(stored(syn::parse_quote!((u8, u8))), "(u8, u8)");
    }

    #[test]
    fn borrowed_values_are_refused_with_their_owned_form() {
        let message = |ty: Type| borrowed(stored_type(&ty)).map(|error| error.to_string());
        let fix = |fix: &str| {
            Some(format!("#[cached] values must own their data: a cached value is read back from the store, so it cannot borrow; {fix}"))
        };
        assert_eq!(
            message(syn::parse_quote!(&'static str)),
            fix("return `String` instead of `&'static str`")
        );
        assert_eq!(
            message(syn::parse_quote!(Result<&'static [u8], E>)),
            fix("return `Vec<u8>` instead of `&'static [u8]`")
        );
        assert_eq!(
            message(syn::parse_quote!(Option<Vec<&'static Item>>)),
            fix("return `Item` instead of `&'static Item`")
        );
        assert_eq!(
            message(syn::parse_quote!(std::borrow::Cow<'a, str>)),
            fix("return `String` instead of `std::borrow::Cow<'a, str>`")
        );
        // `Cow<'static, _>` owns what it reads back.
        assert_eq!(message(syn::parse_quote!(Cow<'static, Path>)), None);
        assert_eq!(
            message(syn::parse_quote!(Item<'static>)),
            fix("return a type that owns its data instead of `Item<'static>` (e.g. with `String` fields instead of `&str`; if its fields already own their data, e.g. `Cow<'static, str>`, name it through an alias without the lifetime: `type Owned = Item<'static>;`)")
        );
        // The error of a `Result` is not stored: it may borrow.
        assert_eq!(
            message(syn::parse_quote!(Result<String, &'static str>)),
            None
        );
        for owned in [
            quote!(String),
            quote!(Vec<Option<u8>>),
            quote!(Box<dyn std::error::Error + 'static>),
            quote!(fn(&str) -> u8),
            quote!((u8, [String; 2])),
        ] {
            assert_eq!(message(syn::parse2(owned).unwrap()), None);
        }
    }
}
