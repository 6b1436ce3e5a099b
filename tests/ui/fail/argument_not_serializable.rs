pub struct Filter {
    pub min: u32,
}

#[atomcache::cached(exp = 60)]
async fn search(query: String, filter: Filter) -> Vec<u32> {
    let _ = query;
    vec![filter.min]
}

fn main() {}
