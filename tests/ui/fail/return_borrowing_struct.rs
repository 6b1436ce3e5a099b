// A struct with borrowed fields cannot be read back from the store.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Item<'a> {
    pub name: &'a str,
}

#[atomcache::cached(exp = 60)]
async fn item(id: u32) -> Item<'static> {
    let _ = id;
    Item { name: "lamp" }
}

fn main() {}
