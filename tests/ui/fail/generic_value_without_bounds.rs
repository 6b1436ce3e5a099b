// A generic value type without the bounds of a cached value: the suggestion names a public trait.
#[atomcache::cached(exp = 60)]
async fn config<T: Default>(name: String) -> Option<T> {
    let _ = name;
    Some(T::default())
}

fn main() {}
