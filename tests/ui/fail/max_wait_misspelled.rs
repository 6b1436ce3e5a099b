#[atomcache::cached(exp = 60, wait_timeout = 10)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
