// 100 years (3_153_600_000 s) is the longest; one second more is an error.
#[atomcache::cached(exp = 3153600001)]
async fn load(id: u32) -> String {
    id.to_string()
}

fn main() {}
