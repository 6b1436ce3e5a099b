// Cached values are read back from the store, so they own their data.
#[atomcache::cached(exp = 60)]
async fn greeting(id: u32) -> &'static str {
    if id == 0 {
        "hello"
    } else {
        "hi"
    }
}

fn main() {}
