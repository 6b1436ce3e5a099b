// The example of the design notes: compiles and runs with nothing but `atomcache` (serde's
// derive is only for the user's own type).
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Item {
    pub id: u32,
}

#[atomcache::cached(exp = 600, lock_timeout = 5)]
pub async fn resources(offset: u32, items: u32) -> Vec<Item> {
    (offset..offset + items).map(|id| Item { id }).collect()
}

#[atomcache::cached(exp = 120, lock_timeout = 5, auto_refresh)]
async fn exchange_rates() -> Vec<(String, f64)> {
    vec![("EUR".into(), 1.08)]
}

#[tokio::main]
async fn main() {
    assert_eq!(resources(1, 2).await, [Item { id: 1 }, Item { id: 2 }]);
    assert_eq!(resources(1, 2).await.len(), 2);
    resources_invalidate(1, 2).await.unwrap();
    assert_eq!(exchange_rates().await[0].1, 1.08);
}
