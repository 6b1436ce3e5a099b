//! Cache ids of `#[cached]` calls whose arguments JSON writes as `null` (NaN, ±infinity, `None`,
//! `()`): each value still gets its own entry. On the embedded memory backend (no `init`); every
//! test uses its own functions, as the backend is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use atomcache::cached;

static FLOAT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 600)]
async fn describe(x: f64) -> String {
    FLOAT_CALLS.fetch_add(1, SeqCst);
    format!("{x}")
}

#[tokio::test]
async fn nan_and_the_infinities_have_their_own_entries() {
    assert_eq!(describe(f64::NAN).await, "NaN");
    assert_eq!(describe(f64::INFINITY).await, "inf");
    assert_eq!(describe(f64::NEG_INFINITY).await, "-inf");
    assert_eq!(describe(1.5).await, "1.5");
    assert_eq!(FLOAT_CALLS.load(SeqCst), 4);
    // Each one is cached, NaN included (it is not equal to itself, its id is).
    assert_eq!(describe(f64::NEG_INFINITY).await, "-inf");
    assert_eq!(describe(f64::INFINITY).await, "inf");
    assert_eq!(describe(f64::NAN).await, "NaN");
    assert_eq!(FLOAT_CALLS.load(SeqCst), 4);
}

static OPTION_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 600)]
async fn maybe(x: Option<f64>, unit: ()) -> String {
    OPTION_CALLS.fetch_add(1, SeqCst);
    let () = unit;
    format!("{x:?}")
}

#[tokio::test]
async fn none_and_some_of_a_non_finite_float_have_their_own_entries() {
    for round in 0..2 {
        assert_eq!(maybe(None, ()).await, "None");
        assert_eq!(maybe(Some(f64::NAN), ()).await, "Some(NaN)");
        assert_eq!(maybe(Some(f64::INFINITY), ()).await, "Some(inf)");
        assert_eq!(maybe(Some(f64::NEG_INFINITY), ()).await, "Some(-inf)");
        assert_eq!(maybe(Some(0.0), ()).await, "Some(0.0)");
        assert_eq!(OPTION_CALLS.load(SeqCst), 5, "round {round}");
    }
    // The companion drops exactly that entry.
    maybe_invalidate(Some(f64::NAN), ()).await.unwrap();
    assert_eq!(maybe(None, ()).await, "None");
    assert_eq!(maybe(Some(f64::INFINITY), ()).await, "Some(inf)");
    assert_eq!(OPTION_CALLS.load(SeqCst), 5);
    assert_eq!(maybe(Some(f64::NAN), ()).await, "Some(NaN)");
    assert_eq!(OPTION_CALLS.load(SeqCst), 6);
}

static KEY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(exp = 600, key = (region, threshold))]
async fn alerts(region: &str, threshold: Option<f32>, verbose: bool) -> String {
    KEY_CALLS.fetch_add(1, SeqCst);
    let _ = verbose;
    format!("{region}:{threshold:?}")
}

#[tokio::test]
async fn a_key_expression_is_told_apart_the_same_way() {
    for _ in 0..2 {
        assert_eq!(alerts("eu", None, true).await, "eu:None");
        assert_eq!(alerts("eu", Some(f32::NAN), false).await, "eu:Some(NaN)");
        assert_eq!(
            alerts("eu", Some(f32::INFINITY), true).await,
            "eu:Some(inf)"
        );
    }
    assert_eq!(KEY_CALLS.load(SeqCst), 3);
}
