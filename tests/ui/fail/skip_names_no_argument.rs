#[atomcache::cached(exp = 60, skip(client))]
async fn fetch(http: &str, id: u32) -> String {
    format!("{http}/{id}")
}

fn main() {}
