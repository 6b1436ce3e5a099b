// Two `#[cached]` functions nested in two functions of one module have the same default
// namespace (the module path and `helper`): they must not read each other's values. The
// collision makes both bypass the cache (and `init` report it), so each body runs every time.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

static PRICE_CALLS: AtomicUsize = AtomicUsize::new(0);
static STOCK_CALLS: AtomicUsize = AtomicUsize::new(0);

async fn price(x: u32) -> u32 {
    #[atomcache::cached(exp = 60)]
    async fn helper(x: u32) -> u32 {
        PRICE_CALLS.fetch_add(1, SeqCst);
        x + 100
    }
    helper(x).await
}

async fn stock(x: u32) -> u32 {
    #[atomcache::cached(exp = 60)]
    async fn helper(x: u32) -> u32 {
        STOCK_CALLS.fetch_add(1, SeqCst);
        x + 200
    }
    helper(x).await
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..2 {
            assert_eq!(price(1).await, 101);
            assert_eq!(stock(1).await, 201, "not the other helper's value");
        }
        assert_eq!(PRICE_CALLS.load(SeqCst), 2);
        assert_eq!(STOCK_CALLS.load(SeqCst), 2);
        assert!(matches!(
            atomcache::init(atomcache::MemoryBackend::new()).await,
            Err(atomcache::Error::NamespaceCollision(_))
        ));
    });
}
