//! The function `#[cached]` is applied to. Its body is kept as raw tokens (never parsed), so a
//! half-written body still expands and the editor keeps working; rustc reports the body's own
//! errors.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
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
