//! What is emitted when the attribute or the function is wrong: the errors, the function as the
//! user wrote it, and a stub of the `<name>_invalidate` companion. The user then sees the
//! attribute's errors and nothing else: no "cannot find function" at the callers of the
//! companion, and the function itself still type-checks, so editors keep working.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::companion;
use crate::item::CachedFn;
use crate::validate::Companion;

pub(crate) fn expand(error: &syn::Error, func: &CachedFn, stub: Option<&Companion>) -> TokenStream {
    let error = error.to_compile_error();
    let stub = stub.map(|stub| companion(func, stub, &quote!(::core::unreachable!())));
    quote! {
        #error
        #func
        #stub
    }
}
