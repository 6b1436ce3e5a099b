// Other attribute macros keep working around #[cached].
#[atomcache::cached(exp = 60, skip(label))]
#[tracing::instrument(skip(label))]
async fn traced(label: &str, x: u32) -> u32 {
    tracing::info!(label, "computing");
    x + 1
}

#[tokio::main]
async fn main() {
    assert_eq!(traced("a", 1).await, 2);
    assert_eq!(traced("b", 1).await, 2);
}
