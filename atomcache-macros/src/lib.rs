//! The `#[cached]` attribute of atomcache. Use it through `atomcache::cached`; this crate only
//! parses ([`args`](crate::args), [`item`](crate::item)), validates
//! ([`validate`](crate::validate)) and emits ([`expand`](crate::expand), or
//! [`fallback`](crate::fallback) on error) calls into `atomcache::__private`.

use proc_macro::TokenStream;

mod args;
mod expand;
mod fallback;
mod item;
mod validate;

/// DOCS
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let func: item::CachedFn = match syn::parse2(item.clone()) {
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
