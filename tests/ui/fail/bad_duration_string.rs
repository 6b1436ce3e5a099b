#[atomcache::cached(exp = "10 minutes")]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
