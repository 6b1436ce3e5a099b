// A crate that forbids unsafe code can use every option, auto_refresh included.
#![forbid(unsafe_code)]

#[atomcache::cached(exp = 60, auto_refresh)]
async fn motd() -> String {
    "hello".into()
}

#[atomcache::cached(exp = 60)]
async fn double(x: u32) -> u32 {
    x * 2
}

#[tokio::main]
async fn main() {
    assert_eq!(motd().await, "hello");
    assert_eq!(double(2).await, 4);
}
