//! Emits the cached function and its `<name>_invalidate` companion from a checked [`Plan`].
//! Every path goes through `::atomcache::__private`, so a user crate needs no other dependency.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::Attribute;

use crate::item::CachedFn;
use crate::validate::{Companion, IdSource, Plan, ScopePart};

pub(crate) fn expand(plan: &Plan) -> TokenStream {
    let CachedFn {
        attrs,
        vis,
        sig,
        body,
    } = &plan.func;
    let spec = spec_static(plan);
    let claim = namespace_claim(plan);
    let id = id_expr(&plan.scope, &plan.id);
    let ret = &plan.ret;
    let (ret_span, value_span) = (plan.ret_span, plan.value_span);
    // What is stored is chosen by the return type as a type (aliases included), by autoref
    // specialisation in `atomcache::__private::Dispatch`: `Ok` only for a `Result` (its `Err`
    // shared with the waiters when `E: Clone + Send + Sync + 'static`), `Some` only for an
    // `Option`, every value otherwise. `cache_none` stores every value, and checks by type
    // that the function returns an `Option`. Spanned at the stored type, so "`X` cannot be
    // cached" points at `-> X`, once (rustc does not repeat an error at the same place).
    let (check, call, recompute) = match plan.cache_none {
        Some(flag) => (
            // At the flag: "`cache_none` applies to functions returning `Option<T>`".
            quote_spanned!(flag=> ::atomcache::__private::Dispatch::<#ret>::new().cache_none();),
            quote_spanned!(value_span=> ::atomcache::__private::call_plain),
            quote_spanned!(value_span=> ::atomcache::__private::recompute_plain),
        ),
        None => {
            let imports = quote_spanned! {value_span=>
                #[allow(unused_imports)]
                use ::atomcache::__private::{
                    ViaOption as _, ViaPlain as _, ViaResult as _, ViaSharedErr as _,
                };
            };
            let dispatch =
                quote_spanned!(value_span=> (&&&::atomcache::__private::Dispatch::<#ret>::new()));
            // `check_value` first: rustc then reports the value's bounds there, once, and not
            // on the opaque future type of `call`.
            (
                quote!(),
                quote_spanned!(value_span=> #imports #dispatch.check_value(); #dispatch.call),
                quote_spanned!(value_span=> #imports #dispatch.recompute),
            )
        }
    };

    let cached_body = if plan.auto_refresh {
        // The body becomes a nested `async fn`, run both by the cached call and by the
        // background refresher registered through `inventory`. It is named like the function
        // (and shadows it inside), so that rustc's errors about it ("future returned by `motd`
        // is not `Send`") name the user's function.
        let body_fn = &sig.ident;
        let body_call = quote_spanned!(sig.ident.span()=> #body_fn());
        let refresh_call = quote_spanned!(value_span=>
            { #recompute(&__ATOMCACHE_SPEC, #body_call) }
        );
        let cached_call = quote_spanned!(value_span=>
            { #call(&__ATOMCACHE_SPEC, #id, #body_fn()).await }
        );
        quote! {
            #spec
            #check
            async fn #body_fn() -> #ret #body
            fn __atomcache_refresh() -> ::atomcache::__private::Recompute {
                #refresh_call
            }
            ::atomcache::__private::inventory::submit! {
                ::atomcache::__private::AutoRefresh::new(&__ATOMCACHE_SPEC, __atomcache_refresh)
            }
            #cached_call
        }
    } else {
        let id_var = quote_spanned!(Span::mixed_site()=> __atomcache_id);
        let destructure = plan
            .destructure
            .iter()
            .map(|(cfgs, pat, ident)| quote!(#(#cfgs)* let #pat = #ident;));
        // The async block's output is pinned to the declared return type before the body runs
        // (the same trick as `tracing::instrument`), so `return` and `?` inside the body infer
        // exactly as they did in the plain function. Spanned at the return type, so rustc's
        // "return type inferred to be `X` here" points at `-> X`.
        let pin_return = quote_spanned! {ret_span=>
            #[allow(
                unknown_lints,
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::let_with_type_underscore,
                clippy::needless_return,
                clippy::unreachable
            )]
            if false {
                let __atomcache_return: #ret = loop {};
                return __atomcache_return;
            }
        };
        // The async block is spanned at the body (as `tracing::instrument` does), so rustc's
        // errors about the block itself land where they would in the plain function: `?` in a
        // function that does not return `Result` says "this function should return `Result` or
        // `Option` to accept `?`" at the body, not at the attribute.
        let fut = quote_spanned! {body.span()=>
            async move {
                #pin_return
                #(#destructure)*
                #body
            }
        };
        let cached_call = quote_spanned!(value_span=>
            { #call(&__ATOMCACHE_SPEC, #id_var, #fut).await }
        );
        quote! {
            #spec
            #check
            let #id_var = #id;
            #cached_call
        }
    };

    let companion = plan.companion.as_ref().map(|companion_fn| {
        companion(
            &plan.func,
            companion_fn,
            &quote! {
                #spec
                ::atomcache::__private::invalidate(&__ATOMCACHE_SPEC, #id).await
            },
        )
    });

    quote! {
        #(#attrs)*
        #vis #sig {
            #claim
            #cached_body
        }

        #companion
    }
}

/// `static __ATOMCACHE_SPEC`, emitted in both the function and its companion (they hold the
/// same namespace, so they address the same entries).
fn spec_static(plan: &Plan) -> TokenStream {
    let ty = match &plan.codec {
        Some(codec) => quote_spanned!(codec.span()=> ::atomcache::__private::Spec<#codec>),
        None => quote!(::atomcache::__private::Spec),
    };
    let namespace = &plan.namespace;
    let exp = Literal::u64_unsuffixed(plan.exp_ms);
    let lock_timeout = Literal::u64_unsuffixed(plan.lock_timeout_ms);
    let max_wait = plan.max_wait_ms.map(|ms| {
        let ms = Literal::u64_unsuffixed(ms);
        quote!(.with_max_wait(#ms))
    });
    quote! {
        static __ATOMCACHE_SPEC: #ty =
            ::atomcache::__private::Spec::new(#namespace, #exp, #lock_timeout) #max_wait;
    }
}

/// The function's claim on its namespace, registered at link time (`inventory`) so that two
/// functions sharing one namespace are reported by `init` and bypass the cache. Emitted in the
/// function only: its companion shares the namespace on purpose. `self_scoped` when the id
/// starts with the `Self` type's name (same-named methods of two types do not collide).
fn namespace_claim(plan: &Plan) -> TokenStream {
    let ident = &plan.func.sig.ident;
    let function = ident.unraw().to_string();
    let namespace = &plan.namespace;
    let self_scoped = plan
        .scope
        .iter()
        .any(|part| matches!(part, ScopePart::SelfType));
    // At the function's name: `file:line` of the claim point at the function.
    let place = quote_spanned!(ident.span()=> ::core::file!(), ::core::line!());
    quote! {
        ::atomcache::__private::inventory::submit! {
            ::atomcache::__private::NamespaceClaim::new(#namespace, #function, #place, #self_scoped)
        }
    }
}

/// The id: the JSON array of its parts (a single part alone; no part at all is `null`).
fn id_expr(scope: &[ScopePart], source: &IdSource) -> TokenStream {
    let mut parts: Vec<TokenStream> = scope
        .iter()
        .map(|part| match part {
            ScopePart::SelfType => {
                quote!(::atomcache::__private::id_part(::core::any::type_name::<
                    Self,
                >()))
            }
            ScopePart::Type(ident) => {
                quote!(::atomcache::__private::id_part(::core::any::type_name::<#ident>()))
            }
            ScopePart::Const(ident) => quote!(::atomcache::__private::id_part(&#ident)),
        })
        .collect();
    match source {
        IdSource::Args(args) => parts.extend(args.iter().map(|param| {
            // Located at the argument's type (but resolved as the user's name): "`X` cannot be
            // part of a cache id" points there.
            let span = param.ty.span();
            let mut ident = param.ident.clone();
            ident.set_span(ident.span().located_at(span));
            // The argument's `#[cfg]`s (accepted on array elements): when it is configured
            // out, so is its part.
            let cfgs = &param.cfgs;
            quote_spanned!(span=> #(#cfgs)* ::atomcache::__private::id_part(&#ident))
        })),
        IdSource::Key(expr) => {
            parts.push(quote_spanned!(expr.span()=> ::atomcache::__private::key_part(&(#expr))))
        }
    }
    quote!(::atomcache::__private::build_id(&[#(#parts),*]))
}

/// `<name>_invalidate`: same visibility and generics, the arguments that make up the id.
pub(crate) fn companion(func: &CachedFn, companion: &Companion, body: &TokenStream) -> TokenStream {
    let CachedFn {
        attrs, vis, sig, ..
    } = func;
    let cfgs = attrs.iter().filter(|attr| is_cfg(attr));
    let ident = &companion.ident;
    let (generics, _, where_clause) = sig.generics.split_for_impl();
    let receiver = companion.receiver.iter();
    let params = companion.params.iter().map(|param| {
        let (cfgs, name, ty) = (&param.cfgs, &param.ident, &param.ty);
        quote!(#(#cfgs)* #name: #ty)
    });
    let doc = format!(
        " Drops the value that the `#[atomcache::cached]` function `{}` stored for these \
         arguments; the next call computes it again.\n\n # Errors\n\n Fails when the store \
         cannot be reached.",
        sig.ident
    );
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[allow(unused_variables, clippy::unused_async)]
        #vis async fn #ident #generics (#(#receiver,)* #(#params),*)
            -> ::core::result::Result<(), ::atomcache::Error>
        #where_clause
        {
            #body
        }
    }
}

fn is_cfg(attr: &Attribute) -> bool {
    attr.path().is_ident("cfg")
}
