#[atomcache::cached(exp = 60)]
fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
