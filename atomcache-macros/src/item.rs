//! The function `#[cached]` is applied to. Its body is kept as raw tokens (never parsed), so a
//! half-written body still expands and the editor keeps working; rustc reports the body's own
//! errors.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream, Parser as _};
use syn::{Attribute, Signature, Visibility};

#[derive(Clone)]
pub(crate) struct CachedFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// The `{ .. }` group, unparsed.
    pub body: Group,
}

impl Parse for CachedFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body = input.step(|cursor| match cursor.token_tree() {
            Some((TokenTree::Group(group), rest)) if group.delimiter() == Delimiter::Brace => {
                Ok((group, rest))
            }
            _ => Err(cursor.error("expected the function body `{ .. }`")),
        })?;
        Ok(CachedFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

impl ToTokens for CachedFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attr in &self.attrs {
            attr.to_tokens(tokens);
        }
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        self.body.to_tokens(tokens);
    }
}

/// The item with its function qualifiers put in the order Rust requires (`default const async
/// unsafe extern "abi" fn`), or `None` when it is not a function or they already are in order.
/// rustc rejects `unsafe async fn` itself, before the attribute runs (and recovers by reading the
/// qualifiers in order): expanding the function as rustc read it keeps rustc's error the only
/// one.
pub(crate) fn with_qualifiers_in_order(item: TokenStream) -> Option<TokenStream> {
    let reorder = |input: ParseStream<'_>| -> syn::Result<Option<TokenStream>> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let mut qualifiers: Vec<(u8, TokenStream)> = Vec::new();
        while !input.peek(syn::Token![fn]) {
            let tree: TokenTree = input.parse()?;
            let rank = match &tree {
                TokenTree::Ident(ident) if ident == "default" => 0,
                TokenTree::Ident(ident) if ident == "const" => 1,
                TokenTree::Ident(ident) if ident == "async" => 2,
                TokenTree::Ident(ident) if ident == "unsafe" || ident == "safe" => 3,
                TokenTree::Ident(ident) if ident == "extern" => 4,
                _ => return Ok(None),
            };
            let mut qualifier = tree.into_token_stream();
            if rank == 4 && input.peek(syn::LitStr) {
                qualifier.extend([input.parse::<TokenTree>()?]);
            }
            qualifiers.push((rank, qualifier));
        }
        if qualifiers.is_sorted_by_key(|(rank, _)| *rank) {
            return Ok(None);
        }
        qualifiers.sort_by_key(|(rank, _)| *rank);
        let qualifiers = qualifiers.into_iter().map(|(_, qualifier)| qualifier);
        let rest: TokenStream = input.parse()?;
        Ok(Some(quote::quote!(#(#attrs)* #vis #(#qualifiers)* #rest)))
    };
    reorder.parse2(item).ok().flatten()
}

/// Whether `tokens` mention the `Self` type anywhere.
pub(crate) fn mentions_self_type(tokens: TokenStream) -> Option<proc_macro2::Span> {
    for tree in tokens {
        match tree {
            TokenTree::Ident(ident) if ident == "Self" => return Some(ident.span()),
            TokenTree::Group(group) => {
                if let Some(span) = mentions_self_type(group.stream()) {
                    return Some(span);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers_are_put_in_order() {
        let reordered = |item: TokenStream| with_qualifiers_in_order(item).map(|t| t.to_string());
        assert_eq!(
            reordered(quote::quote!(#[doc = "d"] pub unsafe async fn f() {})),
            Some(
                quote::quote!(
                    #[doc = "d"]
                    pub async unsafe fn f() {}
                )
                .to_string()
            )
        );
        assert_eq!(
            reordered(quote::quote!(extern "C" unsafe const fn f() {})),
            Some(
                quote::quote!(
                    const unsafe extern "C" fn f() {}
                )
                .to_string()
            )
        );
        // Already in order, or not a function: nothing to do.
        assert_eq!(
            reordered(quote::quote!(
                async unsafe fn f() {}
            )),
            None
        );
        assert_eq!(
            reordered(quote::quote!(
                pub struct S;
            )),
            None
        );
        assert_eq!(
            reordered(quote::quote!(
                unsafe impl Send for S {}
            )),
            None
        );
    }
}
