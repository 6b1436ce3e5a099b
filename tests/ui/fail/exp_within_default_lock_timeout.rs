// `lock_timeout` defaults to 5 s, so `exp` must be longer.
#[atomcache::cached(exp = 5)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
