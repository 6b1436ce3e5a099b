#[atomcache::cached(exp = 60, skip())]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
