//! `#[cached(auto_refresh)]`: the function registers itself with the refresh registry at link
//! time (through `inventory`, from items nested in the function's body) and still works as a
//! cached function. The refresh tasks themselves are tested with the runtime.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use atomcache::cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rates {
    eur: f64,
}

static RATES_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 120, lock_timeout = 5, auto_refresh)]
pub async fn exchange_rates() -> Rates {
    RATES_CALLS.fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    Rates { eur: 1.08 }
}

#[cached(exp = "2m", auto_refresh, namespace = "refresh-fallible")]
async fn fallible_rates() -> Result<Rates, std::io::Error> {
    if RATES_CALLS.load(SeqCst) > 1000 {
        return Err(std::io::Error::other("upstream down"));
    }
    Ok(Rates { eur: 1.0 })
}

#[cached(exp = 60, auto_refresh)]
async fn maybe_rates() -> Option<Rates> {
    None
}

mod nested {
    #[atomcache::cached(exp = 60, auto_refresh)]
    pub(crate) async fn motd() -> String {
        "hello".into()
    }
}

#[test]
fn auto_refresh_functions_are_registered() {
    let mut registered = atomcache::__private::registered_namespaces();
    registered.sort_unstable();
    let mut expected = vec![
        concat!(module_path!(), "::exchange_rates"),
        "refresh-fallible",
        concat!(module_path!(), "::maybe_rates"),
        concat!(module_path!(), "::nested::motd"),
    ];
    expected.sort_unstable();
    assert_eq!(registered, expected);
}

#[tokio::test]
async fn auto_refresh_functions_are_cached_functions() {
    assert_eq!(exchange_rates().await, Rates { eur: 1.08 });
    assert_eq!(exchange_rates().await, Rates { eur: 1.08 });
    assert_eq!(RATES_CALLS.load(SeqCst), 1);
    assert_eq!(fallible_rates().await.unwrap(), Rates { eur: 1.0 });
    assert_eq!(maybe_rates().await, None);
    assert_eq!(nested::motd().await, "hello");
    // The refresher stores under the zero-argument id, `null`: the same entry.
    let cache = atomcache::Cache::new(concat!(module_path!(), "::exchange_rates"));
    assert_eq!(
        cache.get::<Rates>("null").await.unwrap(),
        Some(Rates { eur: 1.08 })
    );
    exchange_rates_invalidate().await.unwrap();
    assert_eq!(cache.get::<Rates>("null").await.unwrap(), None);
    assert_eq!(exchange_rates().await, Rates { eur: 1.08 });
    assert_eq!(RATES_CALLS.load(SeqCst), 2);
}

#[tokio::test]
async fn the_registered_recomputation_runs_the_body() {
    let recompute =
        atomcache::__private::registered_recompute(concat!(module_path!(), "::nested::motd"))
            .expect("registered");
    let bytes = recompute().await.expect("a plain value is always stored");
    assert!(bytes.ends_with(b"hello"), "{bytes:?}");
    let recompute = atomcache::__private::registered_recompute("refresh-fallible").unwrap();
    assert!(recompute().await.is_some());
    // `None` keeps the old value: nothing to store.
    let recompute =
        atomcache::__private::registered_recompute(concat!(module_path!(), "::maybe_rates"))
            .unwrap();
    assert_eq!(recompute().await, None);
}
