#[atomcache::cached(ttl = 60)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
