pub struct Token(pub u64);

#[atomcache::cached(exp = 60, key = Token(id))]
async fn load(id: u64) -> String {
    id.to_string()
}

fn main() {}
