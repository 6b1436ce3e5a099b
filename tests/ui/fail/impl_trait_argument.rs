#[atomcache::cached(exp = 60)]
async fn render(value: impl std::fmt::Display) -> String {
    value.to_string()
}

fn main() {}
