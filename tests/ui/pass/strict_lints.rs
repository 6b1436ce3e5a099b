//! The expansion is clean under strict lints, and keeps the function's attributes in place.
#![deny(
    warnings,
    missing_docs,
    unused,
    unused_qualifications,
    unreachable_pub,
    unsafe_op_in_unsafe_fn
)]

/// A documented cached function; its `_invalidate` companion is documented too.
#[atomcache::cached(exp = 60)]
#[must_use = "the answer is the point"]
#[allow(clippy::needless_pass_by_value)]
pub async fn answer(question: String) -> u32 {
    let _ = question;
    42
}

/// Refreshed in the background.
#[atomcache::cached(exp = 60, auto_refresh)]
pub async fn motd() -> String {
    "hello".into()
}

/// Only with a feature nobody enables: the companion disappears with it.
#[atomcache::cached(exp = 60)]
#[cfg(any())]
pub async fn never(x: u32) -> u32 {
    x
}

/// An argument with a pattern.
#[atomcache::cached(exp = 60)]
pub async fn sum((a, b): (u32, u32), mut scale: u32) -> u32 {
    scale += 1;
    (a + b) * scale
}

#[tokio::main]
async fn main() {
    assert_eq!(answer("life".into()).await, 42);
    answer_invalidate("life".into()).await.unwrap();
    assert_eq!(motd().await, "hello");
    motd_invalidate().await.unwrap();
    assert_eq!(sum((1, 2), 1).await, 6);
    sum_invalidate((1, 2), 1).await.unwrap();
}
