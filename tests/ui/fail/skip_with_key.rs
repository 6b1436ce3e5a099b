#[atomcache::cached(exp = 60, key = id, skip(verbose))]
async fn load(id: u64, verbose: bool) -> String {
    let _ = verbose;
    id.to_string()
}

fn main() {}
