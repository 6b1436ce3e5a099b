// A mistake in the body is reported as in a plain function, once.
#[atomcache::cached(exp = 60)]
async fn load(id: u32) -> String {
    if id == 0 {
        return 0;
    }
    id.to_string()
}

fn main() {}
