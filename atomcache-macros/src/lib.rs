//! The `#[cached]` attribute of atomcache. Use it through `atomcache::cached`.

use proc_macro::TokenStream;

/// Placeholder; replaced by the real macro.
#[proc_macro_attribute]
pub fn cached(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
