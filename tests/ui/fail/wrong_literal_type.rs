#[atomcache::cached(exp = 1.5)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
