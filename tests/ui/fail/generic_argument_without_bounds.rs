// A generic argument without `Serialize`: the suggestion names a public trait.
#[atomcache::cached(exp = 60)]
async fn describe<T: std::fmt::Debug>(value: T) -> String {
    format!("{value:?}")
}

fn main() {}
