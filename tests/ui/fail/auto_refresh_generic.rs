#[atomcache::cached(exp = 60, auto_refresh)]
async fn defaults<T: Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
) -> T {
    T::default()
}

fn main() {}
