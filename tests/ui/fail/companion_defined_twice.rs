// The `_invalidate` companion clashes with a function of the same name: rustc's error points at
// the attribute (fix: `invalidate = "other_name"` or `invalidate = false`).
#[atomcache::cached(exp = 60)]
async fn load(id: u32) -> String {
    id.to_string()
}

async fn load_invalidate(id: u32) {
    let _ = id;
}

fn main() {}
