#[atomcache::cached(exp = 60, cache_none)]
async fn load(id: u64) -> String {
    id.to_string()
}

fn main() {}
