// `cache_none` checks by type that the function returns an `Option`: an alias of `Result` is not
// one.
type Res<T> = Result<T, String>;

#[atomcache::cached(exp = 60, cache_none)]
async fn load(id: u64) -> Res<String> {
    Ok(id.to_string())
}

fn main() {}
