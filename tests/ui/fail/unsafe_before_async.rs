// rustc's own error about the order of the qualifiers is the only one.
#[atomcache::cached(exp = 60)]
unsafe async fn load(id: u32) -> String {
    id.to_string()
}

async fn refresh(id: u32) {
    load_invalidate(id).await.unwrap();
}

fn main() {
    let _ = refresh(1);
}
