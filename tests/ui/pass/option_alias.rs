// An `Option` is recognised by its type, not by its name: behind an alias, `None` is not cached
// (the next call computes again) and `Some` is; `cache_none` accepts the alias too.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

type Maybe<T> = Option<T>;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600)]
async fn find(id: u32) -> Maybe<u32> {
    if CALLS.fetch_add(1, SeqCst) == 0 {
        return None;
    }
    Some(id + 1)
}

static NONE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 600, cache_none)]
async fn find_or_none(id: u32) -> Maybe<u32> {
    NONE_CALLS.fetch_add(1, SeqCst);
    id.checked_sub(1)
}

// Generic, and spawned from a generic function: the cached future is `Send` when the body's is.
#[atomcache::cached(exp = 600)]
async fn setting<T: atomcache::CacheValue + Default>(name: String) -> Maybe<T> {
    let _ = name;
    Some(T::default())
}

fn spawn_setting<T: atomcache::CacheValue + Default>() -> tokio::task::JoinHandle<Maybe<T>> {
    tokio::spawn(setting::<T>("retries".into()))
}

#[tokio::main]
async fn main() {
    assert_eq!(spawn_setting::<u32>().await.unwrap(), Some(0));
    assert_eq!(tokio::spawn(find(1)).await.unwrap(), None);
    assert_eq!(find(1).await, Some(2), "`None` was not cached");
    assert_eq!(find(1).await, Some(2));
    assert_eq!(CALLS.load(SeqCst), 2, "`Some` was cached");

    assert_eq!(find_or_none(0).await, None);
    assert_eq!(find_or_none(0).await, None);
    assert_eq!(NONE_CALLS.load(SeqCst), 1, "`cache_none` cached the `None`");
}
