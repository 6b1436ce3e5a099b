#[atomcache::cached(exp = 60, namespace = users)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
