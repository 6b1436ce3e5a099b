#[atomcache::cached(exp = 60, max_wait = 0)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
