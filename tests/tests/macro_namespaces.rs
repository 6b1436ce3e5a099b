//! Two `#[cached]` functions never silently share a namespace: `init` and `Runtime::detached`
//! report the collision, naming both functions, and until it is fixed the colliding functions
//! bypass the cache, so neither reads the other's values. The rule itself (self-scoped methods
//! do not collide) is unit-tested in `atomcache/src/namespaces.rs`. In a test binary of its
//! own: the registry is the whole program's, and the collision is logged once per namespace.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use atomcache::{cached, Error, MemoryBackend, Runtime};
use atomcache_tests::EventLog;

static PRICE_CALLS: AtomicUsize = AtomicUsize::new(0);
static STOCK_CALLS: AtomicUsize = AtomicUsize::new(0);

const PRICE_HELPER_LINE: u32 = line!() + 4;
/// A nested `helper` (default namespace: this module's path and `helper`).
async fn price(x: u32) -> u32 {
    #[cached(exp = 60)]
    async fn helper(x: u32) -> u32 {
        PRICE_CALLS.fetch_add(1, SeqCst);
        x + 100
    }
    helper(x).await
}

const STOCK_HELPER_LINE: u32 = line!() + 4;
/// Another nested `helper` in the same module: the same default namespace.
async fn stock(x: u32) -> u32 {
    #[cached(exp = 60)]
    async fn helper(x: u32) -> u32 {
        STOCK_CALLS.fetch_add(1, SeqCst);
        x + 200
    }
    helper(x).await
}

/// One explicit namespace given twice.
#[cached(exp = 60, namespace = "shared")]
async fn load_user(id: u32) -> String {
    format!("user {id}")
}

#[cached(exp = 60, namespace = "shared")]
async fn load_team(id: u32) -> String {
    format!("team {id}")
}

/// Same-named methods of two types in one module: their ids start with the type's name, so
/// they do not collide and keep their cache.
struct Celsius;
struct Fahrenheit;

static BOILING_CALLS: AtomicUsize = AtomicUsize::new(0);

impl Celsius {
    #[cached(exp = 60, skip(self))]
    async fn boiling(&self) -> f64 {
        BOILING_CALLS.fetch_add(1, SeqCst);
        100.0
    }
}

impl Fahrenheit {
    #[cached(exp = 60, skip(self))]
    async fn boiling(&self) -> f64 {
        BOILING_CALLS.fetch_add(1, SeqCst);
        212.0
    }
}

fn collision_message(result: Result<Runtime, Error>) -> String {
    match result {
        Err(Error::NamespaceCollision(message)) => message,
        other => panic!("expected a namespace collision, got {other:?}"),
    }
}

#[tokio::test]
async fn init_reports_every_collision_and_installs_nothing() {
    let message = collision_message(atomcache::init(MemoryBackend::new()).await);
    println!("{message}");
    let helper = concat!(module_path!(), "::helper");
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "one line per namespace: {message}");
    assert_eq!(
        lines[0],
        format!(
            "the #[cached] functions `helper` ({file}:{PRICE_HELPER_LINE}) and `helper` \
             ({file}:{STOCK_HELPER_LINE}) have the same namespace `{helper}`, so they would read \
             each other's values: give one of them its own `namespace = \"..\"`; until then \
             their calls bypass the cache",
            file = file!(),
        )
    );
    assert!(
        lines[1].starts_with("the #[cached] functions `load_user` (")
            && lines[1].contains(") and `load_team` (")
            && lines[1].contains("the same namespace `shared`"),
        "{message}"
    );
    assert!(!message.contains("boiling"), "methods do not collide");
    let err = atomcache::init(MemoryBackend::new()).await.unwrap_err();
    assert!(err
        .to_string()
        .starts_with("namespace collision: the #[cached] functions"));

    assert!(!atomcache::shutdown().await, "nothing was installed");
    assert_eq!(
        collision_message(Runtime::detached(MemoryBackend::new())),
        message
    );
}

#[tokio::test(flavor = "current_thread")]
async fn colliding_functions_bypass_the_cache_and_log_once() {
    let log = EventLog::new();
    let _guard = tracing::subscriber::set_default(log.clone());

    for _ in 0..3 {
        assert_eq!(price(1).await, 101);
        assert_eq!(stock(1).await, 201, "never the other helper's value");
        assert_eq!(load_user(7).await, "user 7");
        assert_eq!(load_team(7).await, "team 7");
    }
    assert_eq!(
        PRICE_CALLS.load(SeqCst),
        3,
        "no cache: the body runs each time"
    );
    assert_eq!(STOCK_CALLS.load(SeqCst), 3);
    // The companions do nothing (and succeed).
    load_user_invalidate(7).await.unwrap();
    load_team_invalidate(7).await.unwrap();
    // Nothing was stored under the shared namespaces.
    let shared = atomcache::Cache::new("shared");
    assert_eq!(shared.get::<String>("7").await.unwrap(), None);

    let errors = log.at(tracing::Level::ERROR);
    assert_eq!(errors.len(), 2, "one error per namespace: {errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("same namespace `shared`")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(concat!("same namespace `", module_path!(), "::helper`"))),
        "{errors:?}"
    );
}

#[tokio::test]
async fn same_named_methods_of_two_types_keep_their_cache() {
    assert_eq!(Celsius.boiling().await, 100.0);
    assert_eq!(Fahrenheit.boiling().await, 212.0);
    assert_eq!(Celsius.boiling().await, 100.0);
    assert_eq!(Fahrenheit.boiling().await, 212.0);
    assert_eq!(BOILING_CALLS.load(SeqCst), 2);
}
