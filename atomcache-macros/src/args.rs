//! Parses `#[cached(..)]`'s attribute into [`Args`]: which options were given, with the span of
//! each so that later passes can point at the offending token. Only the syntax is checked here;
//! whether the options make sense together (and with the function) is `validate`'s job.

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, Ident, Lit, LitStr, Token, Type};

/// The options of `#[cached(..)]`, custom keywords so that a misspelt option is an error.
pub(crate) mod kw {
    syn::custom_keyword!(exp);
    syn::custom_keyword!(lock_timeout);
    syn::custom_keyword!(max_wait);
    syn::custom_keyword!(auto_refresh);
    syn::custom_keyword!(namespace);
    syn::custom_keyword!(key);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(codec);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(invalidate);
}

/// Every option name, in the order the documentation lists them.
pub(crate) const OPTIONS: &[&str] = &[
    "exp",
    "lock_timeout",
    "max_wait",
    "auto_refresh",
    "namespace",
    "key",
    "skip",
    "cache_none",
    "codec",
    "invalidate",
];

/// The attribute as written.
#[derive(Default)]
pub(crate) struct Args {
    pub exp: Option<DurationArg>,
    pub lock_timeout: Option<DurationArg>,
    pub max_wait: Option<DurationArg>,
    /// The span of the `auto_refresh` flag.
    pub auto_refresh: Option<Span>,
    pub namespace: Option<LitStr>,
    pub key: Option<KeyArg>,
    pub skip: Option<SkipArg>,
    /// The span of the `cache_none` flag.
    pub cache_none: Option<Span>,
    pub codec: Option<Type>,
    pub invalidate: Option<InvalidateArg>,
}

/// `invalidate = false` (no companion) or `invalidate = "name"` (its name).
pub(crate) enum InvalidateArg {
    Off,
    Named(Ident),
}

/// A duration, in milliseconds, with the span of the literal that gave it.
#[derive(Clone, Copy)]
pub(crate) struct DurationArg {
    /// Saturated at `u64::MAX` when the literal does not fit (a number past `u64`, or one
    /// whose milliseconds overflow), so that `validate` reports it as too large, at the
    /// literal, together with the other errors.
    pub millis: u64,
    pub span: Span,
}

/// `key = <expr>`.
pub(crate) struct KeyArg {
    pub keyword: Span,
    pub expr: Expr,
}

/// `skip(a, b)`: the names, `self` included.
pub(crate) struct SkipArg {
    pub keyword: Span,
    pub names: Vec<Ident>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::exp) {
                let keyword: kw::exp = input.parse()?;
                let value = parse_duration_value(input, "exp")?;
                set_once(&mut args.exp, value, keyword.span, "exp")?;
            } else if lookahead.peek(kw::lock_timeout) {
                let keyword: kw::lock_timeout = input.parse()?;
                let value = parse_duration_value(input, "lock_timeout")?;
                set_once(&mut args.lock_timeout, value, keyword.span, "lock_timeout")?;
            } else if lookahead.peek(kw::max_wait) {
                let keyword: kw::max_wait = input.parse()?;
                let value = parse_duration_value(input, "max_wait")?;
                set_once(&mut args.max_wait, value, keyword.span, "max_wait")?;
            } else if lookahead.peek(kw::auto_refresh) {
                let keyword: kw::auto_refresh = input.parse()?;
                no_value(input, "auto_refresh")?;
                set_once(
                    &mut args.auto_refresh,
                    keyword.span,
                    keyword.span,
                    "auto_refresh",
                )?;
            } else if lookahead.peek(kw::cache_none) {
                let keyword: kw::cache_none = input.parse()?;
                no_value(input, "cache_none")?;
                set_once(
                    &mut args.cache_none,
                    keyword.span,
                    keyword.span,
                    "cache_none",
                )?;
            } else if lookahead.peek(kw::namespace) {
                let keyword: kw::namespace = input.parse()?;
                input.parse::<Token![=]>()?;
                let value = parse_str(input, "namespace", "namespace = \"users\"")?;
                set_once(&mut args.namespace, value, keyword.span, "namespace")?;
            } else if lookahead.peek(kw::key) {
                let keyword: kw::key = input.parse()?;
                input.parse::<Token![=]>()?;
                let expr: Expr = input.parse()?;
                let value = KeyArg {
                    keyword: keyword.span,
                    expr,
                };
                set_once(&mut args.key, value, keyword.span, "key")?;
            } else if lookahead.peek(kw::skip) {
                let keyword: kw::skip = input.parse()?;
                if !input.peek(syn::token::Paren) {
                    return Err(syn::Error::new(
                        keyword.span,
                        "`skip` lists the arguments to leave out of the cache id: `skip(db, client)`",
                    ));
                }
                let content;
                syn::parenthesized!(content in input);
                // `Ident::parse_any` so that `skip(self)` works.
                let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                    &content,
                    Ident::parse_any,
                )?;
                let value = SkipArg {
                    keyword: keyword.span,
                    names: names.into_iter().collect(),
                };
                set_once(&mut args.skip, value, keyword.span, "skip")?;
            } else if lookahead.peek(kw::codec) {
                let keyword: kw::codec = input.parse()?;
                input.parse::<Token![=]>()?;
                let codec = parse_codec(input)?;
                set_once(&mut args.codec, codec, keyword.span, "codec")?;
            } else if lookahead.peek(kw::invalidate) {
                let keyword: kw::invalidate = input.parse()?;
                input.parse::<Token![=]>()?;
                let value = parse_invalidate(input)?;
                set_once(&mut args.invalidate, value, keyword.span, "invalidate")?;
            } else if input.peek(Ident::peek_any) {
                let unknown = input.call(Ident::parse_any)?;
                return Err(unknown_option(&unknown));
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, span: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            span,
            format!("`{name}` is given more than once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn no_value(input: ParseStream<'_>, name: &str) -> syn::Result<()> {
    if input.peek(Token![=]) || input.peek(syn::token::Paren) {
        let span = input
            .cursor()
            .token_tree()
            .map_or_else(Span::call_site, |(tt, _)| tt.span());
        return Err(syn::Error::new(
            span,
            format!("`{name}` is a flag and takes no value: write `{name}` alone"),
        ));
    }
    Ok(())
}

fn parse_str(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<LitStr> {
    let expr: Expr = input.parse()?;
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{name}` takes a string literal, e.g. `{example}`"),
        )),
    }
}

/// `= atomcache::Json`: a type. A string (`codec = "json"`) or anything else that is not one
/// is an error saying which types fit.
fn parse_codec(input: ParseStream<'_>) -> syn::Result<Type> {
    const TYPES: &str = "`atomcache::Json` (feature `json`) or `atomcache::Bincode` (the default)";
    if input.peek(Lit) {
        let lit: Lit = input.parse()?;
        let what = if matches!(lit, Lit::Str(_)) {
            "a string"
        } else {
            "a literal"
        };
        return Err(syn::Error::new(
            lit.span(),
            format!("`codec` takes a type, not {what}: {TYPES}, e.g. `codec = atomcache::Json`"),
        ));
    }
    input.parse::<Type>().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`codec` takes a type: {TYPES}, e.g. `codec = atomcache::Json`"),
        )
    })
}

fn parse_invalidate(input: ParseStream<'_>) -> syn::Result<InvalidateArg> {
    let expr: Expr = input.parse()?;
    let wrong = |span: Span| {
        syn::Error::new(
            span,
            "`invalidate` takes `false` (declare no companion) or the companion's name: `invalidate = \"drop_user\"`",
        )
    };
    match &expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) if !flag.value => Ok(InvalidateArg::Off),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(name),
            ..
        }) => match syn::parse_str::<Ident>(&name.value()) {
            Ok(mut ident) => {
                ident.set_span(name.span());
                Ok(InvalidateArg::Named(ident))
            }
            Err(_) => Err(wrong(name.span())),
        },
        other => Err(wrong(other.span())),
    }
}

/// `= 600` (whole seconds) or `= "10m"` / `= "1h30m"` / `= "500ms"`.
fn parse_duration_value(input: ParseStream<'_>, name: &str) -> syn::Result<DurationArg> {
    input.parse::<Token![=]>()?;
    let expr: Expr = input.parse()?;
    let wrong = |span: Span| {
        syn::Error::new(
            span,
            format!(
                "`{name}` takes whole seconds or a duration string: `{name} = 600` or `{name} = \"10m\"`"
            ),
        )
    };
    let Expr::Lit(syn::ExprLit { lit, .. }) = &expr else {
        return Err(wrong(expr.span()));
    };
    let span = lit.span();
    let millis = match lit {
        Lit::Int(int) => {
            if !matches!(int.suffix(), "" | "u8" | "u16" | "u32" | "u64" | "usize") {
                return Err(wrong(span));
            }
            // The digits are valid (the tokenizer checked them), so a failure is an overflow.
            let secs: u64 = int.base10_parse().unwrap_or(u64::MAX);
            secs.saturating_mul(1000)
        }
        Lit::Str(text) => parse_humane(&text.value()).map_err(|why| {
            syn::Error::new(
                span,
                format!(
                    "`{name}`: {why}; write e.g. \"90s\", \"10m\", \"1h30m\", \"500ms\" or \"2d\""
                ),
            )
        })?,
        _ => return Err(wrong(span)),
    };
    Ok(DurationArg { millis, span })
}

/// Parses `"1h30m"`, `"10m"`, `"500ms"`, `"2d"`, `"1h 30m"` into milliseconds. Saturates at
/// `u64::MAX` (a number past `u64`, or milliseconds that overflow): `validate` reports every
/// duration past `MAX_LIFETIME_MS` as too large, so saturation never passes for a valid value.
pub(crate) fn parse_humane(text: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        // Only ASCII digits: a failure is an overflow.
        let number: u64 = rest[..digits].parse().unwrap_or(u64::MAX);
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        let per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{number}` has no unit")),
            other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
        };
        total = total.saturating_add(number.saturating_mul(per_unit));
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

fn unknown_option(unknown: &Ident) -> syn::Error {
    let name = unknown.to_string();
    let suggestion = match name.as_str() {
        "ttl" | "expire" | "expires" | "expiry" | "expiration" | "timeout" => Some("exp"),
        "lock" | "lock_ttl" | "lock_timeout_secs" | "lease" => Some("lock_timeout"),
        "wait" | "wait_timeout" | "max_wait_secs" | "max_wait_ms" | "wait_for"
        | "max_wait_time" => Some("max_wait"),
        "refresh" | "autorefresh" => Some("auto_refresh"),
        "prefix" | "name" => Some("namespace"),
        "skip_args" | "ignore" => Some("skip"),
        _ => OPTIONS
            .iter()
            .copied()
            .filter(|option| edit_distance(option, &name) <= 2)
            .min_by_key(|option| edit_distance(option, &name)),
    };
    let hint = match suggestion {
        Some(option) => format!("; did you mean `{option}`?"),
        None => format!("; expected one of: {}", OPTIONS.join(", ")),
    };
    syn::Error::new(
        unknown.span(),
        format!("unknown #[cached] option `{name}`{hint}"),
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_durations() {
        assert_eq!(parse_humane("10m"), Ok(600_000));
        assert_eq!(parse_humane("500ms"), Ok(500));
        assert_eq!(parse_humane("1h30m"), Ok(5_400_000));
        assert_eq!(parse_humane("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_humane(" 2d "), Ok(172_800_000));
        assert_eq!(parse_humane("0s"), Ok(0));
        assert!(parse_humane("").is_err());
        assert!(parse_humane("10").is_err());
        assert!(parse_humane("m").is_err());
        assert!(parse_humane("10 minutes").is_err());
        assert!(parse_humane("1.5h").is_err());
        assert_eq!(parse_humane("99999999999999999999d"), Ok(u64::MAX));
        assert_eq!(parse_humane("213503982334601d"), Ok(u64::MAX));
        assert_eq!(parse_humane("18446744073709551615ms 1ms"), Ok(u64::MAX));
    }

    #[test]
    fn parses_every_option() {
        let args: Args = syn::parse_quote!(
            exp = "10m",
            lock_timeout = 3,
            max_wait = "1m30s",
            auto_refresh,
            namespace = "n",
            key = a.id,
            skip(self, db),
            cache_none,
            codec = ::atomcache::Json,
            invalidate = false
        );
        assert_eq!(args.exp.map(|d| d.millis), Some(600_000));
        assert_eq!(args.lock_timeout.map(|d| d.millis), Some(3_000));
        assert_eq!(args.max_wait.map(|d| d.millis), Some(90_000));
        assert!(args.auto_refresh.is_some() && args.cache_none.is_some());
        assert_eq!(args.namespace.map(|n| n.value()).as_deref(), Some("n"));
        assert!(args.key.is_some() && args.codec.is_some());
        assert!(matches!(args.invalidate, Some(InvalidateArg::Off)));
        let skip: Vec<String> = args
            .skip
            .unwrap()
            .names
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(skip, ["self", "db"]);
    }

    #[test]
    fn durations_past_u64_saturate() {
        let millis = |tokens: proc_macro2::TokenStream| {
            syn::parse2::<Args>(tokens)
                .ok()
                .and_then(|a| a.exp)
                .map(|d| d.millis)
        };
        assert_eq!(
            millis(quote::quote!(exp = 3153600001)),
            Some(3_153_600_001_000)
        );
        assert_eq!(
            millis(quote::quote!(exp = 18446744073709551)),
            Some(18_446_744_073_709_551_000)
        );
        assert_eq!(
            millis(quote::quote!(exp = 18446744073709552)),
            Some(u64::MAX)
        );
        assert_eq!(
            millis(quote::quote!(exp = 99999999999999999999)),
            Some(u64::MAX)
        );
        assert_eq!(
            millis(quote::quote!(exp = "99999999999999999999d")),
            Some(u64::MAX)
        );
    }

    #[test]
    fn rejects() {
        let err = |tokens: proc_macro2::TokenStream| {
            syn::parse2::<Args>(tokens)
                .err()
                .expect("should fail")
                .to_string()
        };
        assert!(err(quote::quote!(exp = 1, exp = 2)).contains("more than once"));
        assert!(err(quote::quote!(expiry = 1)).contains("did you mean `exp`"));
        for wait in [
            "wait",
            "wait_timeout",
            "max_wait_secs",
            "maxwait",
            "max_wiat",
        ] {
            let wait = Ident::new(wait, Span::call_site());
            assert!(err(quote::quote!(#wait = 1)).contains("did you mean `max_wait`"));
        }
        assert!(err(quote::quote!(max_wait = 1, max_wait = 2)).contains("more than once"));
        assert!(err(quote::quote!(max_wait = 1.5)).contains("`max_wait = 600`"));
        assert!(err(quote::quote!(exp = 1.5)).contains("whole seconds"));
        assert!(err(quote::quote!(exp = "soon")).contains("write e.g."));
        assert!(err(quote::quote!(namespace = users)).contains("string literal"));
        assert!(err(quote::quote!(auto_refresh = true)).contains("flag"));
        assert!(err(quote::quote!(skip = a)).contains("skip(db, client)"));
        assert!(err(quote::quote!(invalidate = true)).contains("companion's name"));
        assert!(
            err(quote::quote!(codec = "json")).starts_with("`codec` takes a type, not a string")
        );
        assert!(err(quote::quote!(codec = 1)).starts_with("`codec` takes a type, not a literal"));
        assert!(err(quote::quote!(codec = +)).contains("`atomcache::Bincode`"));
        assert!(err(quote::quote!(invalidate = "not an ident")).contains("companion's name"));
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("exp", "exp"), 0);
        assert_eq!(edit_distance("exp", "epx"), 2);
        assert_eq!(edit_distance("namespace", "namespac"), 1);
    }
}
