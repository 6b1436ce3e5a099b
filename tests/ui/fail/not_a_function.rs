#[atomcache::cached(exp = 60)]
struct Settings {
    ttl: u32,
}

fn main() {}
