#[atomcache::cached(exp = 60, lock_timeout = 5, exp = 120)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
