// Every option, every return kind, every place the attribute goes.
use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};

pub struct Pool;

#[derive(Serialize)]
pub struct Query<'a> {
    pub text: &'a str,
}

#[atomcache::cached(exp = "10m", lock_timeout = "500ms", max_wait = "1m30s")]
pub(crate) async fn humane(x: u8) -> u8 {
    x
}

#[atomcache::cached(exp = 60, skip(pool), namespace = "search-v2", max_wait = 120)]
async fn search(pool: &Pool, query: &Query<'_>, tags: &[String]) -> Result<Vec<String>, String> {
    let _ = pool;
    if query.text.is_empty() {
        return Err("empty query".into());
    }
    Ok(tags.to_vec())
}

#[atomcache::cached(exp = 60, key = format!("{}:{}", user, page))]
async fn feed(user: u64, page: u32, trace: bool) -> Option<Vec<u64>> {
    let _ = trace;
    Some(vec![user, u64::from(page)])
}

#[atomcache::cached(exp = 60, cache_none)]
async fn maybe(x: u32) -> Option<u32> {
    x.checked_sub(1)
}

#[atomcache::cached(exp = 60, codec = atomcache::Json)]
async fn readable(x: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("x".to_string(), x)])
}

#[atomcache::cached(exp = 60)]
async fn generic<T: Default + Serialize + DeserializeOwned + Send + 'static>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}

#[atomcache::cached(exp = 60, auto_refresh)]
async fn refreshed() -> Result<u32, std::io::Error> {
    let n: u32 = "7".parse().map_err(std::io::Error::other)?;
    Ok(n)
}

pub struct Service {
    pub region: String,
}

impl Service {
    #[atomcache::cached(exp = 60, skip(self))]
    pub async fn status(&self, code: u16) -> String {
        format!("{}:{code}", self.region)
    }

    #[atomcache::cached(exp = 60, key = (&self.region, code))]
    pub async fn regional(&self, code: u16) -> String {
        format!("{}:{code}", self.region)
    }

    #[atomcache::cached(exp = 60)]
    pub async fn create(region: String) -> Self {
        Service { region }
    }
}

impl serde::Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.region.serialize(s)
    }
}
impl<'de> serde::Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|region| Service { region })
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(humane(3).await, 3);
    let tags = vec!["a".to_string()];
    assert_eq!(
        search(&Pool, &Query { text: "q" }, &tags).await.unwrap(),
        tags
    );
    assert!(search(&Pool, &Query { text: "" }, &tags).await.is_err());
    search_invalidate(&Query { text: "q" }, &tags)
        .await
        .unwrap();
    assert_eq!(feed(1, 2, true).await, Some(vec![1, 2]));
    feed_invalidate(1, 2, false).await.unwrap();
    assert_eq!(maybe(0).await, None);
    assert_eq!(readable(1).await["x"], 1);
    assert_eq!(generic::<String>(2).await.len(), 2);
    generic_invalidate::<String>(2).await.unwrap();
    assert_eq!(refreshed().await.unwrap(), 7);
    let service = Service::create("eu".into()).await;
    assert_eq!(service.status(200).await, "eu:200");
    assert_eq!(service.regional(200).await, "eu:200");
    Service::status_invalidate(200).await.unwrap();
    service.regional_invalidate(200).await.unwrap();
    Service::create_invalidate("eu".into()).await.unwrap();
}
