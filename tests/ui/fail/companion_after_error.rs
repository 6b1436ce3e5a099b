// With a wrong attribute, the companion is still declared: the only error is the attribute's.
#[atomcache::cached(exp = 60, lock_timeout = 90)]
async fn load(id: u32) -> String {
    id.to_string()
}

async fn refresh(id: u32) {
    load_invalidate(id).await.unwrap();
    let _ = load(id).await;
}

fn main() {
    let _ = refresh(1);
}
