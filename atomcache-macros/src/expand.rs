//! Emits the cached function and its `<name>_invalidate` companion from a checked [`Plan`].
//! Every path goes through `::atomcache::__private`, so a user crate needs no other dependency.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::Attribute;

use crate::item::CachedFn;
use crate::validate::{Companion, IdSource, Kind, Plan, ScopePart};

pub(crate) fn expand(plan: &Plan) -> TokenStream {
    let CachedFn {
        attrs,
        vis,
        sig,
        body,
    } = &plan.func;
    let spec = spec_static(plan);
    let id = id_expr(&plan.scope, &plan.id);
    let ret = &plan.ret;
    let (ret_span, value_span) = (plan.ret_span, plan.value_span);
    let call = match plan.kind {
        Kind::Plain => quote!(call),
        Kind::Result => quote!(call_result),
        Kind::Option => quote!(call_option),
    };
    // A `Result` function shares its `Err` with the callers that waited on the same computation
    // when the error type allows it (`Clone + Send + Sync + 'static`), chosen by autoref
    // specialisation on the declared return type. Spanned like the call, so that an error about
    // the stored type is reported once, at `-> X`.
    let sharing = match plan.kind {
        Kind::Result => quote_spanned! {value_span=>
            {
                #[allow(unused_imports)]
                use ::atomcache::__private::{ShareErr as _, ShareNothing as _};
                (&::atomcache::__private::Probe::<#ret>::new()).sharing()
            },
        },
        Kind::Plain | Kind::Option => quote!(),
    };

    let cached_body = if plan.auto_refresh {
        let recompute = match plan.kind {
            Kind::Plain => quote!(recompute_plain),
            Kind::Result => quote!(recompute_result),
            Kind::Option => quote!(recompute_option),
        };
        // The body becomes a nested `async fn`, run both by the cached call and by the
        // background refresher registered through `inventory`. It is named like the function
        // (and shadows it inside), so that rustc's errors about it ("future returned by `motd`
        // is not `Send`") name the user's function.
        let body_fn = &sig.ident;
        let body_call = quote_spanned!(sig.ident.span()=> #body_fn());
        let refresh_call = quote_spanned!(value_span=>
            ::atomcache::__private::#recompute(&__ATOMCACHE_SPEC, #body_call)
        );
        // Spanned at the stored type, so "`X` cannot be cached" points at `-> X` (the call and
        // its `.await` then report the same error at the same place, which rustc shows once).
        let cached_call = quote_spanned!(value_span=>
            ::atomcache::__private::#call(&__ATOMCACHE_SPEC, #id, #sharing #body_fn()).await
        );
        quote! {
            #spec
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
            .map(|(pat, ident)| quote!(let #pat = #ident;));
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
        let fut = quote! {
            async move {
                #pin_return
                #(#destructure)*
                #body
            }
        };
        // Spanned at the stored type, so "`X` cannot be cached" points at `-> X` (the call and
        // its `.await` then report the same error at the same place, which rustc shows once).
        let cached_call = quote_spanned!(value_span=>
            ::atomcache::__private::#call(&__ATOMCACHE_SPEC, #id_var, #sharing #fut).await
        );
        quote! {
            #spec
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
        IdSource::Args(args) => parts.extend(args.iter().map(|(ident, span)| {
            // Located at the argument's type (but resolved as the user's name): "`X` cannot be
            // part of a cache id" points there.
            let mut ident = ident.clone();
            ident.set_span(ident.span().located_at(*span));
            quote_spanned!(*span=> ::atomcache::__private::id_part(&#ident))
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
    let names = companion.params.iter().map(|(name, _)| name);
    let types = companion.params.iter().map(|(_, ty)| ty);
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
        #vis async fn #ident #generics (#(#receiver,)* #(#names: #types),*)
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
