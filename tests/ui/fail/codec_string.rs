#[atomcache::cached(exp = 60, codec = "json")]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
