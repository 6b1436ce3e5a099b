// Arguments under `#[cfg]`/`#[cfg_attr]`: one configured out drops out of the cache id and of the
// `_invalidate` companion with it; one configured in is part of both.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[atomcache::cached(exp = 60, namespace = "cfg-parameter")]
async fn load(
    #[cfg(any())] extra: u32,
    #[cfg(all())] id: u32,
    #[cfg_attr(all(), allow(unused_mut))] mut scale: u32,
    #[cfg_attr(any(), cfg(any()))] offset: u32,
    #[cfg(any())] (left, right): (u32, u32),
) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    scale += offset;
    id * scale
}

static SKIPPED_CALLS: AtomicUsize = AtomicUsize::new(0);

// `skip` may name an argument that is configured out: it is out of the id either way.
#[atomcache::cached(exp = 60, skip(verbose))]
async fn quiet(#[cfg(any())] verbose: bool, id: u32) -> u32 {
    SKIPPED_CALLS.fetch_add(1, SeqCst);
    id
}

// With `key`, the companion takes every argument that is configured in.
#[atomcache::cached(exp = 60, key = id)]
async fn keyed(#[cfg(any())] extra: u32, id: u32) -> u32 {
    id + 1
}

#[tokio::main]
async fn main() {
    assert_eq!(load(2, 3, 0).await, 6);
    assert_eq!(load(2, 3, 0).await, 6);
    assert_eq!(CALLS.load(SeqCst), 1, "cached");
    // `id`, `scale` and `offset` are the id, and nothing else.
    assert_eq!(load(4, 3, 0).await, 12);
    assert_eq!(load(2, 5, 0).await, 10);
    assert_eq!(load(2, 3, 1).await, 8);
    assert_eq!(
        CALLS.load(SeqCst),
        4,
        "each configured-in argument is part of the id"
    );
    let cache = atomcache::Cache::builder("cfg-parameter").build().unwrap();
    assert_eq!(cache.get::<u32>("[2,3,0]").await.unwrap(), Some(6));
    // The companion takes the same arguments.
    load_invalidate(2, 3, 0).await.unwrap();
    assert_eq!(cache.get::<u32>("[2,3,0]").await.unwrap(), None);
    assert_eq!(load(2, 3, 0).await, 6);
    assert_eq!(CALLS.load(SeqCst), 5, "computed again");

    assert_eq!(quiet(7).await, 7);
    assert_eq!(quiet(7).await, 7);
    assert_eq!(SKIPPED_CALLS.load(SeqCst), 1);
    quiet_invalidate(7).await.unwrap();
    assert_eq!(quiet(7).await, 7);
    assert_eq!(SKIPPED_CALLS.load(SeqCst), 2);

    assert_eq!(keyed(1).await, 2);
    keyed_invalidate(1).await.unwrap();
}
