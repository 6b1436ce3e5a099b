//! The namespace registry: every `#[cached]` function claims its namespace at link time
//! (through `inventory`, from an item nested in the function's body), so that two functions of
//! one program never silently share a namespace, and so each other's values.
//!
//! The default namespace is the module path and the function's name, which two functions can
//! share: same-named functions nested in two functions of one module, same-named associated
//! functions of two types, or one explicit `namespace = ".."` given twice. Such a *collision* is
//! loud and never wrong: [`init`](crate::init) and [`Runtime::detached`](crate::Runtime::detached)
//! fail with [`Error::NamespaceCollision`], and the colliding functions bypass the cache (their
//! body runs on every call, their `_invalidate` companion does nothing), with one
//! `tracing::error!` per namespace.
//!
//! A namespace claimed only by *self-scoped* functions (methods, and functions whose signature
//! mentions `Self`) is not a collision: their ids start with the `Self` type's name, so
//! same-named methods of different types in one module never share an entry. The namespace
//! itself stays free of line numbers or hashes, so every replica of a deploy agrees on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::Error;

/// The claim of one `#[cached]` function on its namespace (its `_invalidate` companion shares
/// the namespace on purpose and claims nothing).
#[derive(Debug)]
pub struct NamespaceClaim {
    namespace: &'static str,
    function: &'static str,
    file: &'static str,
    line: u32,
    self_scoped: bool,
}

impl NamespaceClaim {
    /// The claim of `function` (declared at `file:line`) on `namespace`; `self_scoped` when its
    /// ids start with the `Self` type's name.
    pub const fn new(
        namespace: &'static str,
        function: &'static str,
        file: &'static str,
        line: u32,
        self_scoped: bool,
    ) -> Self {
        NamespaceClaim {
            namespace,
            function,
            file,
            line,
            self_scoped,
        }
    }
}

inventory::collect!(NamespaceClaim);

/// One namespace claimed by functions that would read each other's values.
struct Collision {
    /// What is wrong and how to fix it.
    message: String,
    /// Whether a colliding call logged `message` already.
    logged: AtomicBool,
}

/// The collisions among `claims`, by namespace: a namespace claimed twice or more, unless
/// every claim is self-scoped. The message lists the claims ordered by place, so it reads the
/// same whatever order the linker gave them.
fn collisions<'a>(
    claims: impl IntoIterator<Item = &'a NamespaceClaim>,
) -> BTreeMap<&'static str, String> {
    let mut by_namespace: BTreeMap<&'static str, Vec<&NamespaceClaim>> = BTreeMap::new();
    for claim in claims {
        by_namespace.entry(claim.namespace).or_default().push(claim);
    }
    by_namespace
        .into_iter()
        .filter(|(_, claims)| claims.len() > 1 && !claims.iter().all(|c| c.self_scoped))
        .map(|(namespace, mut claims)| {
            claims.sort_by_key(|c| (c.file, c.line, c.function));
            (namespace, message(namespace, &claims))
        })
        .collect()
}

fn message(namespace: &str, claims: &[&NamespaceClaim]) -> String {
    let names: Vec<String> = claims
        .iter()
        .map(|c| format!("`{}` ({}:{})", c.function, c.file, c.line))
        .collect();
    let (last, rest) = names
        .split_last()
        .expect("a collision has two claims or more");
    format!(
        "the #[cached] functions {} and {last} have the same namespace `{namespace}`, so they \
         would read each other's values: give one of them its own `namespace = \"..\"`; until \
         then their calls bypass the cache",
        rest.join(", "),
    )
}

/// The collisions of the program, worked out once from the registry.
fn registered() -> &'static BTreeMap<&'static str, Collision> {
    static COLLISIONS: OnceLock<BTreeMap<&'static str, Collision>> = OnceLock::new();
    COLLISIONS.get_or_init(|| {
        collisions(inventory::iter::<NamespaceClaim>)
            .into_iter()
            .map(|(namespace, message)| {
                let logged = AtomicBool::new(false);
                (namespace, Collision { message, logged })
            })
            .collect()
    })
}

/// `Err(Error::NamespaceCollision)` when functions of the program collide (for `init`).
pub(crate) fn check() -> Result<(), Error> {
    let collisions = registered();
    if collisions.is_empty() {
        return Ok(());
    }
    let messages: Vec<&str> = collisions.values().map(|c| c.message.as_str()).collect();
    Err(Error::NamespaceCollision(messages.join("\n")))
}

/// `state` of a [`Spec`](crate::__private::Spec) not looked up yet.
pub(crate) const UNKNOWN: u8 = 0;
/// The function's namespace is its own.
const OWN: u8 = 1;
/// The function's namespace collides: its calls bypass the cache.
const SHARED: u8 = 2;

/// Whether `namespace` collides, remembered in `state` (the cached function's own flag, so
/// every call after the first is one atomic load). The first colliding call of a namespace
/// logs the collision.
#[inline]
pub(crate) fn collides(namespace: &str, state: &AtomicU8) -> bool {
    match state.load(Ordering::Relaxed) {
        OWN => false,
        SHARED => true,
        _ => look_up(namespace, state),
    }
}

#[cold]
fn look_up(namespace: &str, state: &AtomicU8) -> bool {
    let collision = registered().get(namespace);
    if let Some(collision) = collision {
        if !collision.logged.swap(true, Ordering::Relaxed) {
            tracing::error!(namespace, "{}", collision.message);
        }
    }
    let shared = collision.is_some();
    state.store(if shared { SHARED } else { OWN }, Ordering::Relaxed);
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(namespace: &'static str, function: &'static str, line: u32) -> NamespaceClaim {
        NamespaceClaim::new(namespace, function, "src/lib.rs", line, false)
    }

    fn method(namespace: &'static str, function: &'static str, line: u32) -> NamespaceClaim {
        NamespaceClaim::new(namespace, function, "src/lib.rs", line, true)
    }

    #[test]
    fn distinct_namespaces_do_not_collide() {
        let claims = [claim("app::a", "a", 1), claim("app::b", "b", 2)];
        assert!(collisions(&claims).is_empty());
    }

    #[test]
    fn one_namespace_claimed_twice_collides() {
        // Two `helper`s nested in two functions of one module.
        let claims = [
            claim("app::other", "other", 1),
            claim("app::helper", "helper", 20),
            claim("app::helper", "helper", 10),
        ];
        let found = collisions(&claims);
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), ["app::helper"]);
        assert_eq!(
            found["app::helper"],
            "the #[cached] functions `helper` (src/lib.rs:10) and `helper` (src/lib.rs:20) \
             have the same namespace `app::helper`, so they would read each other's values: \
             give one of them its own `namespace = \"..\"`; until then their calls bypass the \
             cache"
        );
    }

    #[test]
    fn an_explicit_namespace_given_twice_collides() {
        let claims = [
            claim("users", "find_user", 3),
            claim("users", "load_user", 8),
            claim("users", "user", 5),
        ];
        let found = collisions(&claims);
        assert!(
            found["users"].starts_with(
                "the #[cached] functions `find_user` (src/lib.rs:3), `user` (src/lib.rs:5) and \
                 `load_user` (src/lib.rs:8) have the same namespace `users`"
            ),
            "{}",
            found["users"]
        );
    }

    #[test]
    fn same_named_methods_of_different_types_do_not_collide() {
        // `Celsius::value(&self)` and `Fahrenheit::value(&self)`: ids start with the type name.
        let claims = [
            method("app::value", "value", 4),
            method("app::value", "value", 9),
        ];
        assert!(collisions(&claims).is_empty());
    }

    #[test]
    fn a_method_and_a_function_without_self_collide() {
        // `Repo::find(&self, id)` and `Other::find(id)`: the second one's ids are bare.
        let claims = [
            method("app::find", "find", 4),
            claim("app::find", "find", 9),
        ];
        assert!(collisions(&claims).contains_key("app::find"));
    }

    #[test]
    fn the_order_of_the_registry_does_not_matter() {
        let a = claim("ns", "a", 1);
        let b = NamespaceClaim::new("ns", "b", "src/a.rs", 7, false);
        assert_eq!(collisions([&a, &b]), collisions([&b, &a]));
        assert!(collisions([&a, &b])["ns"].contains("`b` (src/a.rs:7) and `a` (src/lib.rs:1)"));
    }

    #[test]
    fn the_state_is_looked_up_once() {
        // Nothing in this test binary is `#[cached]`: no namespace collides.
        assert!(check().is_ok());
        let state = AtomicU8::new(UNKNOWN);
        assert!(!collides("app::anything", &state));
        assert_eq!(state.load(Ordering::Relaxed), OWN);
        state.store(SHARED, Ordering::Relaxed);
        assert!(collides("app::anything", &state), "read from the flag");
    }
}
