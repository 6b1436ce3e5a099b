// The examples of `#[cached]`'s documentation (atomcache-macros/src/lib.rs, shown as `ignore`
// there because a proc-macro crate cannot depend on atomcache), compiled and run here.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Item {
    pub id: u32,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct User {
    pub id: u64,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Post;
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rates;
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Limits;
pub struct Pool;
pub struct Repo {
    pub tenant: u32,
}

#[atomcache::cached(exp = 600, lock_timeout = 5)]
pub async fn resources(offset: u32, items: u32) -> Vec<Item> {
    (offset..offset + items).map(|id| Item { id }).collect()
}

#[atomcache::cached(exp = 60, skip(db))]
pub async fn user(db: &Pool, id: u64) -> User {
    let _ = db;
    User { id }
}

#[atomcache::cached(exp = 60, key = format!("{}:{}", user.id, page))]
async fn feed(user: &User, page: u32, trace: bool) -> Vec<Post> {
    let _ = trace;
    vec![Post; page as usize]
}

impl Repo {
    #[atomcache::cached(exp = 60, skip(self))]
    async fn find(&self, id: u32) -> Item {
        Item { id }
    }

    #[atomcache::cached(exp = 60, key = (self.tenant, id))]
    async fn find_for_tenant(&self, id: u32) -> Item {
        Item {
            id: id + self.tenant,
        }
    }
}

#[atomcache::cached(exp = 60)]
async fn config<T>(name: &str) -> Option<T>
where
    T: atomcache::CacheValue + Default,
{
    (!name.is_empty()).then(T::default)
}

#[atomcache::cached(exp = 120, lock_timeout = 5, auto_refresh)]
async fn exchange_rates() -> Rates {
    Rates
}

#[tokio::main]
async fn main() -> Result<(), atomcache::Error> {
    assert_eq!(resources(0, 2).await.len(), 2);
    assert_eq!(user(&Pool, 42).await, User { id: 42 });
    user_invalidate(42).await?; // `db` is skipped, so not needed
    assert_eq!(feed(&User { id: 42 }, 1, false).await, [Post]);
    let repo = Repo { tenant: 1 };
    assert_eq!(repo.find(1).await, Item { id: 1 });
    assert_eq!(repo.find_for_tenant(1).await, Item { id: 2 });
    Repo::find_invalidate(1).await?;
    repo.find_for_tenant_invalidate(1).await?;
    assert_eq!(config::<Limits>("api").await, Some(Limits));
    config_invalidate::<Limits>("api").await?;
    assert_eq!(exchange_rates().await, Rates);
    // The ids the documentation shows.
    let ns = |name: &str| atomcache::Cache::new(format!("{}::{name}", module_path!()));
    assert_eq!(
        ns("resources")
            .get::<Vec<Item>>("[0,2]")
            .await?
            .map(|v| v.len()),
        Some(2)
    );
    assert_eq!(
        ns("feed").get::<Vec<Post>>(r#""42:1""#).await?,
        Some(vec![Post])
    );
    feed_invalidate(&User { id: 42 }, 1, true).await?;
    assert_eq!(ns("feed").get::<Vec<Post>>(r#""42:1""#).await?, None);
    let _ = config::<Limits>("api").await;
    let id = format!(r#"["{}","api"]"#, std::any::type_name::<Limits>());
    assert_eq!(ns("config").get::<Limits>(&id).await?, Some(Limits));
    Ok(())
}
