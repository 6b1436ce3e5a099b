// Does not fit a u64: reported as too large, not as a parser error.
#[atomcache::cached(exp = 99999999999999999999)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
