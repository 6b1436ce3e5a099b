// A `Result` is recognised by its type, not by its name: behind an alias, an `Err` is still not
// cached (the next call computes again) and an `Ok` is.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

type Res<T> = Result<T, String>;
type Loaded = Result<u32, std::io::Error>;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600)]
async fn load(id: u32) -> Res<u32> {
    if CALLS.fetch_add(1, SeqCst) == 0 {
        return Err("down".into());
    }
    Ok(id * 10)
}

static PLAIN_ALIAS_CALLS: AtomicUsize = AtomicUsize::new(0);

// An alias without parameters, to a `Result` whose error is neither `Clone` nor `Serialize`.
#[atomcache::cached(exp = 600)]
async fn loaded(id: u32) -> Loaded {
    if PLAIN_ALIAS_CALLS.fetch_add(1, SeqCst) == 0 {
        return Err(std::io::Error::other("down"));
    }
    Ok(id)
}

#[tokio::main]
async fn main() {
    assert_eq!(load(1).await, Err("down".to_string()));
    assert_eq!(load(1).await, Ok(10), "the `Err` was not cached");
    assert_eq!(CALLS.load(SeqCst), 2);
    assert_eq!(load(1).await, Ok(10));
    assert_eq!(CALLS.load(SeqCst), 2, "the `Ok` was cached");

    assert!(loaded(7).await.is_err());
    assert_eq!(loaded(7).await.unwrap(), 7);
    assert_eq!(loaded(7).await.unwrap(), 7);
    assert_eq!(PLAIN_ALIAS_CALLS.load(SeqCst), 2);
}
