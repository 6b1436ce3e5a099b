#[atomcache::cached(lock_timeout = 5)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
