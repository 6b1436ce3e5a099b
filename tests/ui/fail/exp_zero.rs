#[atomcache::cached(exp = 0)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
